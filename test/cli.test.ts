import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);
const bin = new URL('../../bin/sluice.js', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

t.test('--version prints the package version', async (t) => {
  const { stdout } = await run(process.execPath, [bin, '--version']);
  t.equal(stdout.trim(), pkg.version);
});

t.test('--help lists the commands', async (t) => {
  const { stdout } = await run(process.execPath, [bin, '--help']);
  for (const cmd of ['run', 'check', 'down']) t.match(stdout, new RegExp(`sluice ${cmd}`));
});

t.test('an unknown command exits 2 with the usage', async (t) => {
  const err = await run(process.execPath, [bin, 'frobnicate']).then(
    () => null,
    (e: { code: number; stderr: string }) => e,
  );
  t.ok(err, 'the command fails');
  t.equal(err!.code, 2);
  t.match(err!.stderr, /unknown command "frobnicate"/);
});
