// Turns tap's closing "# { total: N, pass: P, fail: F, ... }" into the plain
// "N passed, N failed, N skipped" line CI reads. Before it, it lists every
// failed assertion with the file and subtests it sits in, and the first
// lines of its diagnostic, so the tail of a CI log names what failed.
import { readFileSync } from 'node:fs';

const text = readFileSync(process.argv[2], 'utf8');
const lines = text.split('\n');

/** Subtest names by indentation depth (4 spaces a level, as tap prints). */
const path = [];
const failures = [];
for (let i = 0; i < lines.length; i++) {
  const line = lines[i];
  const subtest = /^(\s*)# Subtest: (.*)$/.exec(line);
  if (subtest) {
    const depth = subtest[1].length / 4;
    path.length = depth;
    path[depth] = subtest[2];
    continue;
  }
  const notOk = /^(\s*)not ok \d+ - (.*?)(?: # time=.*)?$/.exec(line);
  if (!notOk) continue;
  const depth = notOk[1].length / 4;
  const next = lines[i + 1] ?? '';
  const diag = [];
  if (/^\s*---$/.test(next)) {
    for (let j = i + 2; j < lines.length && !/^\s*\.\.\.$/.test(lines[j]) && diag.length < 8; j++) diag.push(lines[j].trim());
  }
  const prefix = path.slice(0, depth).join(' > ');
  failures.push({ full: prefix ? `${prefix} > ${notOk[2]}` : notOk[2], diag });
}

// A subtest's own "not ok" repeats its children's, which tap prints first:
// report only failures no earlier failure sits under.
const reported = failures.filter((f, k) => !failures.slice(0, k).some((g) => g.full.startsWith(`${f.full} > `)));
if (reported.length > 0) {
  console.log(`== failed (${reported.length}):`);
  for (const f of reported.slice(0, 40)) {
    console.log(`not ok: ${f.full}`);
    for (const d of f.diag) console.log(`    ${d}`);
  }
}

const m = [...text.matchAll(/^# \{ total: (\d+)(.*)\}$/gm)].pop();
if (!m) {
  console.log('tests: 0 passed, 1 failed (no tap summary found)');
  process.exit(0);
}
const field = (name) => Number((new RegExp(`${name}: (\\d+)`).exec(m[2]) ?? [0, 0])[1]);
console.log(`tests: ${field('pass')} passed, ${field('fail')} failed, ${field('skip') + field('todo')} skipped`);
