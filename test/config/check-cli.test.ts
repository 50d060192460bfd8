import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runCheck } from '../../src/commands/check.js';

const execFileP = promisify(execFile);
const bin = new URL('../../../bin/sluice.js', import.meta.url).pathname;
const routes = new URL('../../../routes/', import.meta.url).pathname;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The children run without tap's NODE_OPTIONS (its --import hooks for
 * coverage and process tracking), which otherwise cost about a second per
 * spawn on a loaded machine.
 */
const env = { ...process.env, NODE_OPTIONS: '' };

/** Runs the real launcher (bin/sluice.js -> dist/src/cli.js) as a child process. */
async function sluice(...args: string[]): Promise<Result> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [bin, ...args], { env });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Runs the command in-process, capturing what it writes. */
async function checkInProcess(...args: string[]): Promise<Result> {
  let stdout = '';
  let stderr = '';
  const io = { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } };
  const code = await runCheck(args, io);
  return { code, stdout, stderr };
}

t.test('sluice check accepts each shipped policy', async (t) => {
  const expected: Record<string, string> = {
    'workstation-split.yaml': '6 rules, 4 outbounds, 0 rule sets',
    'vm-gateway.yaml': '6 rules, 5 outbounds, 0 rule sets',
    'blocklist.yaml': '5 rules, 3 outbounds, 3 rule sets',
  };
  for (const [file, summary] of Object.entries(expected)) {
    const path = join(routes, file);
    const r = await checkInProcess('--config', path);
    t.equal(r.code, 0, `${file} is valid`);
    t.equal(r.stdout, `ok: ${path} (${summary})\n`);
    t.equal(r.stderr, '');
  }
  // And once through the real launcher.
  const path = join(routes, 'blocklist.yaml');
  const r = await sluice('check', '--config', path);
  t.same(r, { code: 0, stdout: `ok: ${path} (5 rules, 3 outbounds, 3 rule sets)\n`, stderr: '' });
});

t.test('sluice check lists every problem on stderr and exits 1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-check-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, 'dns: { mode: fake }\nrules:\n  - { ipCidr: [300.1.2.3/8], outbound: nowhere }\n');
  const r = await sluice('check', '-c', file);
  t.equal(r.code, 1);
  t.equal(r.stdout, '');
  t.equal(
    r.stderr,
    [
      `${file}:1:14: dns.mode: expected one of fake-ip, real-ip, got "fake"`,
      `${file}:3:16: rules[0].ipCidr[0]: expected a CIDR such as 192.0.2.0/24, got "300.1.2.3/8"`,
      `${file}:3:40: rules[0].outbound: names an undefined outbound "nowhere" (defined: direct)`,
      `sluice check: ${file}: 3 problems`,
      '',
    ].join('\n'),
  );

  const missing = await checkInProcess('--config', join(dir, 'absent.yaml'));
  t.equal(missing.code, 1);
  t.equal(missing.stderr, `${join(dir, 'absent.yaml')}: cannot read config: no such file (ENOENT)\nsluice check: ${join(dir, 'absent.yaml')}: 1 problem\n`);
});

t.test('usage errors exit 2', async (t) => {
  const none = await sluice('check');
  t.equal(none.code, 2);
  t.equal(none.stdout, '');
  t.match(none.stderr, /--config FILE is required/);
  t.match(none.stderr, /Usage: sluice check --config FILE/);

  const unknown = await checkInProcess('--config', 'x.yaml', '--frob');
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /Unknown option '--frob'/);

  const stray = await checkInProcess('x.yaml');
  t.equal(stray.code, 2, 'a positional file without --config is a usage error');

  const noValue = await checkInProcess('--config');
  t.equal(noValue.code, 2);

  const empty = await checkInProcess('--config', '');
  t.equal(empty.code, 2);
});

t.test('check --help prints the command usage; global flags still work', async (t) => {
  const help = await sluice('check', '--help');
  t.equal(help.code, 0);
  t.match(help.stdout, /^Usage: sluice check --config FILE/);
  const global = await sluice('--help');
  t.match(global.stdout, /sluice check --config FILE/);
  const other = await sluice('frobnicate');
  t.equal(other.code, 2, 'an unknown command is a usage error');
  t.match(other.stderr, /unknown command "frobnicate"/);
  // `run --help` prints its usage and starts nothing (no TUN on this host).
  const runHelp = await sluice('run', '--help');
  t.equal(runHelp.code, 0);
  t.match(runHelp.stdout, /^Usage: sluice run \[--config FILE\]/);
});
