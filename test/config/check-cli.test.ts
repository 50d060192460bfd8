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

/** Runs `sluice run` on a file that must fail before anything is opened (the state beside it). */
async function runFails(file: string, dir: string): Promise<Result> {
  return sluice('run', '--config', file, '--state', join(dir, 'state.json'));
}

t.test('check reports a run.user or run.group this machine lacks, with the text sluice run fails with', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-check-user-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const user = join(dir, 'user.yaml');
  writeFileSync(user, 'run: { user: sluice-no-such-user }\n');
  const r = await checkInProcess('--config', user);
  t.equal(r.code, 1);
  t.equal(r.stdout, '');
  const message = `${user}: run.user: no such user "sluice-no-such-user"; create it (useradd --system --no-create-home --shell /usr/sbin/nologin sluice-no-such-user) or name an existing one such as nobody`;
  t.equal(r.stderr, `${message}\nsluice check: ${user}: 1 problem\n`);
  const run = await runFails(user, dir);
  t.equal(run.code, 1, 'run refuses it too');
  t.match(run.stderr, `sluice run: ${message}\n`, 'with the same text');

  const group = join(dir, 'group.yaml');
  writeFileSync(group, 'run: { user: nobody, group: sluice-no-such-group }\n');
  const g = await checkInProcess('--config', group);
  t.equal(g.code, 1);
  t.equal(g.stderr, `${group}: run.group: no such group "sluice-no-such-group"\nsluice check: ${group}: 1 problem\n`);

  const root = join(dir, 'root.yaml');
  writeFileSync(root, 'run: { user: root }\n');
  const rr = await checkInProcess('--config', root);
  t.equal(rr.code, 1);
  t.match(rr.stderr, `${root}: run.user: "root" is uid 0 (root); name an unprivileged user such as nobody\n`);

  const fine = join(dir, 'fine.yaml');
  writeFileSync(fine, 'run: { user: nobody, group: nogroup }\n');
  const f = await checkInProcess('--config', fine);
  t.equal(f.code, 0, 'an existing unprivileged user passes (the root-only checks stay with run)');
  t.equal(f.stderr, '');
});

t.test('check reports a DoH upstream by host name that nothing can resolve, as sluice run does', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-check-doh-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'doh.yaml');
  writeFileSync(file, 'dns:\n  hostsFile: null\n  upstreams:\n    - { address: "https://doh.example/dns-query" }\n');
  const r = await checkInProcess('--config', file);
  t.equal(r.code, 1);
  const message = `${file}:4:18: dns.upstreams[0].address: the DoH host doh.example needs a plain DNS server to resolve it: add dns.bootstrap (udp://IP:53) or a udp:// / tcp:// upstream, set dns.hostsFile, or write the URL with an IP address`;
  t.equal(r.stderr, `${message}\nsluice check: ${file}: 1 problem\n`);
  const run = await runFails(file, dir);
  t.equal(run.code, 1);
  t.equal(run.stderr, `${message}\nsluice run: ${file}: 1 problem; nothing was started\n`, 'run: the same problem, nothing started');

  // In a dns group too; each of the ways out is accepted.
  const grouped = join(dir, 'group.yaml');
  writeFileSync(grouped, 'dns:\n  hostsFile: null\n  upstreams: [{ address: "https://192.0.2.53/dns-query" }]\n  groups:\n    corp: [{ address: "https://doh.corp.example/dns-query" }]\n');
  const g = await checkInProcess('--config', grouped);
  t.equal(g.code, 1);
  t.match(g.stderr, /:5:23: dns\.groups\.corp\[0\]\.address: the DoH host doh\.corp\.example needs a plain DNS server/);
  const ways: Record<string, string> = {
    'the default hosts file': 'dns:\n  upstreams: [{ address: "https://doh.example/dns-query" }]\n',
    'dns.bootstrap': 'dns:\n  hostsFile: null\n  bootstrap: [udp://192.0.2.53:53]\n  upstreams: [{ address: "https://doh.example/dns-query" }]\n',
    'a plain upstream': 'dns:\n  hostsFile: null\n  upstreams: [{ address: "https://doh.example/dns-query" }, { address: "udp://192.0.2.53:53" }]\n',
    'an IP literal': 'dns:\n  hostsFile: null\n  upstreams: [{ address: "https://[2001:db8::53]/dns-query" }]\n',
    'a proxy outbound (it resolves the name)':
      'outbounds: [{ name: direct, type: direct }, { name: proxy, type: socks5, server: 192.0.2.1, port: 1080 }]\ndns:\n  hostsFile: null\n  upstreams: [{ address: "https://doh.example/dns-query", outbound: proxy }]\n',
  };
  for (const [what, text] of Object.entries(ways)) {
    const ok = join(dir, 'ok.yaml');
    writeFileSync(ok, text);
    const c = await checkInProcess('--config', ok);
    t.equal(c.code, 0, `accepted with ${what}`);
    t.equal(c.stderr, '', what);
  }
});
