/**
 * `run.user` / `run.group`: the config keys (shape errors and the semantic
 * check naming the field), the plan of the privilege drop (an unknown user,
 * uid 0, gid 0, a shared or foreign state directory are refused before
 * anything starts, each naming the field), the kept capability set per
 * config, and the /proc status parser. The drop itself is tested in a
 * namespace by privileges.test.ts.
 */
import t from 'tap';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { isConfigError } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import { defaultConfig, type SluiceConfig } from '../../src/config/types.js';
import { capMask, checkReadableBy, keptCapabilities, parseStatus, planPrivilegeDrop, PrivilegeError } from '../../src/system/privileges.js';
import { requireRoot } from '../harness/netns.js';
import { readState } from '../../src/system/state.js';
import { loadNative } from '../../src/link/native.js';

async function problems(text: string): Promise<string[]> {
  try {
    await parseConfig(text, 'c.yaml');
    return [];
  } catch (err) {
    if (!isConfigError(err)) throw err;
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
}

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-privs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function withRun(run: Partial<SluiceConfig['run']>, persist: string | null = null): SluiceConfig {
  const c = defaultConfig();
  c.run = { ...c.run, ...run };
  c.dns.fakeIp.persistPath = persist;
  return c;
}

t.test('config: run.user and run.group', async (t) => {
  const ok = await parseConfig('run: { user: nobody, group: nogroup }', 'c.yaml');
  t.same(ok.run, { user: 'nobody', group: 'nogroup' }, 'names are kept');
  t.same((await parseConfig('{}', 'c.yaml')).run, { user: null, group: null }, 'default: no drop');
  t.same((await parseConfig('run: { user: "65534" }', 'c.yaml')).run.user, '65534', 'a numeric uid is accepted');
  t.match((await problems('run: { user: "no body" }')).join('\n'), /run\.user: .*a user name such as sluice or nobody, or a numeric uid/, 'a malformed name names run.user');
  t.match((await problems('run: { group: nogroup }')).join('\n'), /run\.group: run\.group needs run\.user/, 'run.group alone is refused');
  t.match((await problems('run: { usr: nobody }')).join('\n'), /run/, 'an unknown key under run is refused');
});

t.test('kept capabilities follow the config', async (t) => {
  const c = defaultConfig();
  t.same(keptCapabilities(c), ['CAP_NET_ADMIN'], 'default: CAP_NET_ADMIN only');
  c.outbounds = [{ name: 'direct', type: 'direct', mark: null, interface: 'eth0' }];
  t.same(keptCapabilities(c), ['CAP_NET_ADMIN', 'CAP_NET_RAW'], 'an outbound interface (SO_BINDTODEVICE) adds CAP_NET_RAW');
  const g = defaultConfig();
  g.gateway = { ...g.gateway, enabled: true, lan: ['lan0'], mode: 'tproxy' };
  t.same(keptCapabilities(g), ['CAP_NET_ADMIN', 'CAP_NET_BIND_SERVICE'], 'tproxy mode (UDP replies from low ports) adds CAP_NET_BIND_SERVICE');
  t.same(keptCapabilities(defaultConfig(), 2), ['CAP_NET_ADMIN', 'CAP_NET_RAW'], 'worker threads (2 queues) open raw ICMP echo sockets after the drop: CAP_NET_RAW');
  const quiet = defaultConfig();
  quiet.icmp = { ...quiet.icmp, echo: 'reply' };
  t.same(keptCapabilities(quiet, 2), ['CAP_NET_ADMIN'], 'with echo requests not forwarded, workers need no CAP_NET_RAW');
  t.same(keptCapabilities(defaultConfig(), 1), ['CAP_NET_ADMIN'], 'one queue: the ICMP sockets are opened before the drop');
  t.equal(capMask(['CAP_NET_ADMIN', 'CAP_NET_RAW']), 0x3000, 'mask of NET_ADMIN + NET_RAW');
});

t.test('the /proc status parser', async (t) => {
  const text = 'Name:\tnode\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t65534 \nCapInh:\t0000000000001000\nCapPrm:\t0000000000001000\nCapEff:\t0000000000001000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000001000\nNoNewPrivs:\t1\n';
  const s = parseStatus(7, text);
  t.same(s.uid, [65534, 65534, 65534, 65534]);
  t.same(s.groups, [65534]);
  t.equal(s.capEff, 0x1000n);
  t.equal(s.capBnd, 0x1ffffffffffn);
  t.equal(s.noNewPrivs, true);
  t.throws(() => parseStatus(7, 'Name:\tx\n'), PrivilegeError, 'a status without Uid is an error');
});

t.test('the plan refuses, naming the field, before anything starts', async (t) => {
  if (!requireRoot(t)) return;
  const dir = tempDir(t);
  const state = join(dir, 'run', 'state.json');
  t.equal(planPrivilegeDrop(withRun({}), 'c.yaml', state), null, 'no run.user: no plan');
  t.throws(() => planPrivilegeDrop(withRun({ user: 'sluice-no-such-user' }), 'c.yaml', state), { message: /^c\.yaml: run\.user: no such user "sluice-no-such-user"; create it \(useradd --system/ }, 'an unknown user');
  t.throws(() => planPrivilegeDrop(withRun({ user: 'root' }), 'c.yaml', state), { message: /run\.user: "root" is uid 0/ }, 'root');
  t.throws(() => planPrivilegeDrop(withRun({ user: '0' }), 'c.yaml', state), { message: /run\.user: "0" is uid 0/ }, 'uid 0');
  t.throws(() => planPrivilegeDrop(withRun({ user: 'nobody', group: 'sluice-no-such-group' }), 'c.yaml', state), { message: /run\.group: no such group "sluice-no-such-group"/ }, 'an unknown group');
  t.throws(() => planPrivilegeDrop(withRun({ user: 'nobody', group: 'root' }), 'c.yaml', state), { message: /run\.group: the group would be gid 0/ }, 'group root');
  t.throws(() => planPrivilegeDrop(withRun({ user: '4000123' }), 'c.yaml', state), { message: /run\.group: uid 4000123 has no user entry/ }, 'a bare uid needs run.group');
  const p = planPrivilegeDrop(withRun({ user: 'nobody' }, join(dir, 'lib', 'fakeip.json')), 'c.yaml', state);
  t.match(p, { user: 'nobody', uid: 65534, keep: ['CAP_NET_ADMIN'], keepMask: 0x1000 }, 'nobody: the primary group, CAP_NET_ADMIN kept');
  t.same(p!.dirs.map((d) => d.field), ['--state', 'dns.fakeIp.persistPath'], 'both written directories are listed');
  t.throws(() => planPrivilegeDrop(withRun({ user: 'nobody' }), 'c.yaml', '/tmp/state.json'), { message: /run\.user: the state file's directory \/tmp \(--state\) is shared/ }, '/tmp is never handed over');
  const shared = join(dir, 'etc');
  mkdirSync(shared);
  writeFileSync(join(shared, 'passwd'), 'x');
  writeFileSync(join(shared, 'state.json'), '{}');
  t.throws(() => planPrivilegeDrop(withRun({ user: 'nobody' }), 'c.yaml', join(shared, 'state.json')), { message: /run\.user: the state file's directory .* holds other files \(passwd\)/ }, 'a directory with foreign files is never handed over');
  t.throws(() => planPrivilegeDrop(withRun({ user: 'nobody' }, join(shared, 'fakeip.json')), 'c.yaml', state), { message: /the directory .*etc of dns\.fakeIp\.persistPath holds other files/ }, 'the same for the fake-IP file, naming its field');
});

t.test('a state file (writable by run.user after the drop) may only list forms sluice writes', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'state.json');
  const base = { version: 1, pid: 1, createdAt: '2026-01-01T00:00:00Z', rules: [], routes: [], nftTables: [] };
  const refused = (extra: Record<string, unknown>): string => {
    writeFileSync(file, JSON.stringify({ ...base, ...extra }));
    try {
      readState(file);
      return 'accepted';
    } catch (err) {
      return (err as Error).message;
    }
  };
  t.equal(refused({ nftTables: [{ family: 'inet', name: 'sluice_gw' }], sysctls: [{ key: 'net.ipv4.ip_forward', value: '0' }] }), 'accepted', 'sluice\'s own forms are read');
  t.match(refused({ sysctls: [{ key: 'kernel.randomize_va_space', value: '0' }] }), /(malformed sysctl|sysctl .* is not one sluice writes)/, 'a kernel.* sysctl is refused');
  t.match(refused({ nftTables: [{ family: 'inet', name: 'filter' }] }), /nft table .* is not one sluice writes/, 'a foreign nftables table is refused');
  t.match(refused({ rules: [{ family: 4, priority: 9000, selector: ['lookup', '2022\nrule del priority 0'] }] }), /rule .* is not one sluice writes/, 'a selector smuggling another ip -batch line is refused');
  t.match(refused({ routes: [{ family: 4, dst: '0.0.0.0/0 x', dev: 'sl0', table: 2022 }] }), /route .* is not one sluice writes/, 'a route with whitespace is refused');
  t.equal(refused({ routes: [{ family: 4, dst: '0.0.0.0/0', dev: '', table: 2022, type: 'unreachable', metric: 4294967295 }] }), 'accepted', 'the kill switch\'s unreachable route (no device) is read');
  t.match(refused({ routes: [{ family: 4, dst: '0.0.0.0/0', dev: '', table: 2022 }] }), /route .* is not one sluice writes/, 'a device-less route of any other type is refused');
});

t.test('native: usage errors and sd_notify failures name the cause', async (t) => {
  const native = loadNative();
  t.throws(() => native.dropPrivileges(0, 0, [], 0x1000), { code: 'SLUICE_NATIVE_USAGE', message: /uid 0 is not a drop/ }, 'uid 0 is refused before anything changes');
  t.throws(() => native.dropPrivileges(65534, 65534, new Array(65).fill(1), 0x1000), { code: 'SLUICE_NATIVE_USAGE' }, 'more than 64 groups');
  t.throws(() => native.dropPrivileges(65534, 65534, [], -1), { code: 'SLUICE_NATIVE_USAGE' }, 'a negative mask');
  t.throws(() => native.sdNotify('relative/path', 'READY=1'), { code: 'SLUICE_NATIVE_USAGE', message: /absolute path or an @abstract name/ }, 'a relative NOTIFY_SOCKET');
  t.throws(() => native.sdNotify(`/${'x'.repeat(120)}`, 'READY=1'), { code: 'SLUICE_NATIVE_USAGE' }, 'a path longer than sun_path');
  const dir = tempDir(t);
  t.throws(() => native.sdNotify(join(dir, 'none.sock'), 'READY=1'), { code: 'ENOENT', message: /^sendto NOTIFY_SOCKET: ENOENT \(nothing listens on NOTIFY_SOCKET\)$/ }, 'no socket there');
  t.throws(() => native.sdNotify(`@sluice-test-nobody-listens-${process.pid}`, 'READY=1'), { code: 'ECONNREFUSED', message: /nothing listens on NOTIFY_SOCKET/ }, 'an abstract name nobody bound');
  t.same(native.lookupUser('sluice-no-such-user'), null, 'lookupUser: null for an unknown name');
  t.match(native.lookupUser(0), { name: 'root', uid: 0, gid: 0 }, 'lookupUser by uid');
  t.same(native.lookupGroup('sluice-no-such-group'), null, 'lookupGroup: null for an unknown name');
});

t.test('sd-notify: no NOTIFY_SOCKET is a no-op; an unusable one is reported once; the variable leaves the environment', async (t) => {
  const mod = new URL('../../src/system/sd-notify.js', import.meta.url).href;
  const probe = (socket: string | undefined): { sent: boolean; env: string | null; warned: string[] } => {
    const script = `import(${JSON.stringify(mod)}).then((m) => { const warned = []; const log = { warn: (o, msg) => warned.push(msg) }; const sent = m.sdNotify('READY=1', log) || m.sdNotify('STOPPING=1', log); console.log(JSON.stringify({ sent, env: process.env.NOTIFY_SOCKET ?? null, warned })); })`;
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '' };
    if (socket === undefined) delete env.NOTIFY_SOCKET;
    else env.NOTIFY_SOCKET = socket;
    return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8' })) as { sent: boolean; env: string | null; warned: string[] };
  };
  t.same(probe(undefined), { sent: false, env: null, warned: [] }, 'not under systemd: nothing sent, nothing said');
  t.same(probe('vsock:2:1234'), { sent: false, env: null, warned: ['NOTIFY_SOCKET is neither an absolute path nor an @abstract name; readiness is not signalled'] }, 'a vsock address: one warning, and the variable is removed');
  const gone = probe(join(tempDir(t), 'none.sock'));
  t.equal(gone.sent, false, 'a socket nobody listens on: not sent');
  t.same(gone.warned, ['sd_notify failed', 'sd_notify failed'], 'each failed send is a warning, never a throw');
});

t.test('worker code readable by run.user: every directory searchable, the file readable', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-readable-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o755);
  const nested = join(dir, 'app', 'dist');
  mkdirSync(nested, { recursive: true, mode: 0o755 });
  const file = join(nested, 'worker-main.js');
  writeFileSync(file, '', { mode: 0o644 });
  const plan = { user: 'nobody', uid: 65534, gid: 65534 };
  t.doesNotThrow(() => checkReadableBy(file, plan, 'c.yaml', 'workers load it'), 'world-searchable directories and a world-readable file pass');
  chmodSync(join(dir, 'app'), 0o700);
  let refused = '';
  try {
    checkReadableBy(file, plan, 'c.yaml', 'workers load it');
  } catch (err) {
    refused = (err as Error).message;
  }
  t.equal(refused.split(';')[0], `c.yaml: run.user: nobody cannot search ${join(dir, 'app')} (mode 700), and workers load it`, 'a root-only directory on the way is named, with its mode');
  chmodSync(join(dir, 'app'), 0o755);
  chmodSync(file, 0o600);
  t.throws(() => checkReadableBy(file, plan, 'c.yaml', 'workers load it'), { message: /nobody cannot read .*worker-main\.js \(mode 600\)/ }, 'an unreadable file is named');
  chownSync(file, 65534, 65534);
  t.doesNotThrow(() => checkReadableBy(file, plan, 'c.yaml', 'workers load it'), 'a file nobody owns (owner bits) passes');
});
