// Turns tap's closing "# { total: N, pass: P, fail: F, ... }" into the plain
// "N passed, N failed, N skipped" line CI reads.
import { readFileSync } from 'node:fs';

const text = readFileSync(process.argv[2], 'utf8');
const m = [...text.matchAll(/^# \{ total: (\d+)(.*)\}$/gm)].pop();
if (!m) {
  console.log('tests: 0 passed, 1 failed (no tap summary found)');
  process.exit(0);
}
const field = (name) => Number((new RegExp(`${name}: (\\d+)`).exec(m[2]) ?? [0, 0])[1]);
console.log(`tests: ${field('pass')} passed, ${field('fail')} failed, ${field('skip') + field('todo')} skipped`);
