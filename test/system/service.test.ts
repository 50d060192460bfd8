/**
 * The systemd unit (docs/sluice.service) and readiness:
 *   - `systemd-analyze verify` accepts the unit without a single warning (a
 *     copy whose ExecStart/ExecStopPost point at this checkout's
 *     bin/sluice.js, since verify checks the binary exists); the unit says
 *     Type=notify, Restart=on-failure, ExecStopPost=sluice down and the
 *     hardening settings, its bounding set holds every capability sluice
 *     can keep or needs for the drop, and package.json ships it;
 *   - sd_notify: a unix datagram socket stands in for systemd's
 *     NOTIFY_SOCKET (python3); `sluice run` in a namespace sends READY=1
 *     once it is ready (after the privilege drop: at that moment /proc
 *     already shows uid nobody) and STOPPING=1 on SIGTERM; with a path
 *     socket and with an abstract "@name" one.
 *
 *   - the unit's CapabilityBoundingSet and NoNewPrivileges are enough
 *     (applied with setpriv, as systemd would; no systemd runs here): sluice
 *     with route.auto, strictDns and run.user nobody reaches ready, serves a
 *     flow and stops cleanly; after a kill -9, `sluice down` (ExecStopPost)
 *     under the same set removes everything from the directory nobody now
 *     owns, and without CAP_DAC_OVERRIDE it could not.
 *
 * Needs systemd-analyze; the notify part needs root, /dev/net/tun,
 * /usr/bin/python3; the bounding-set part setpriv, ip, nft, curl.
 */
import t from 'tap';
import type { Test } from 'tap';
import path from 'node:path';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { requireRoot, type Netns } from '../harness/netns.js';
import { childEnv, createLab, curl, describe, Engine, REPO, requireCommands, SLUICE_BIN, tempDir, TUN } from '../fixtures/engine/lab.js';
import { CAP } from '../../src/system/privileges.js';
import { SUITE_WORKERS } from '../fixtures/suite-queues.js';
import { config as workstationConfig, nobodyTapEnv, SERVER_V4, snapshot, startSluice, workstation } from './workstation.js';

const UNIT = path.join(REPO, 'docs', 'sluice.service');

/** The unit's [Service] settings (last value per key, as systemd reads single-valued keys). */
function settings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m === null) continue;
    out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

t.test('docs/sluice.service passes systemd-analyze verify and says what the issue asks', async (t) => {
  if (!requireCommands(t, ['systemd-analyze'])) return;
  const text = readFileSync(UNIT, 'utf8');
  const s = settings(text);
  const one = (k: string): string | undefined => s.get(k)?.at(-1);
  t.equal(one('Type'), 'notify', 'Type=notify');
  t.equal(one('Restart'), 'on-failure', 'Restart=on-failure');
  t.match(one('ExecStart'), /\/sluice run --config /, 'ExecStart runs sluice run');
  t.match(one('ExecStopPost'), /\/sluice down$/, 'ExecStopPost=sluice down');
  for (const [k, v] of [['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes']]) t.equal(one(k!), v, `${k}=${v}`);
  t.match(one('ReadWritePaths'), /\/run\/sluice/, 'the state directory is writable');
  t.same(one('RestrictAddressFamilies')?.split(/\s+/).sort(), ['AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_UNIX'], 'address families: unix, inet, inet6, netlink');
  const bounding = new Set(one('CapabilityBoundingSet')?.split(/\s+/));
  for (const cap of Object.keys(CAP)) t.ok(bounding.has(cap), `the bounding set has ${cap} (kept or needed for the drop)`);
  t.ok(bounding.has('CAP_CHOWN'), 'and CAP_CHOWN (handing the state directories to run.user)');
  t.notOk(bounding.has('CAP_SYS_ADMIN'), 'but not CAP_SYS_ADMIN');
  const pkg = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { files: string[] };
  t.ok(pkg.files.includes('docs/sluice.service'), 'package.json "files" ships the unit');

  // verify wants the ExecStart binary to exist: a copy pointing at this checkout.
  const dir = tempDir(t, 'unit');
  const copy = path.join(dir, 'sluice.service');
  writeFileSync(copy, text.replaceAll('/usr/local/bin/sluice', SLUICE_BIN));
  const verify = await run(['systemd-analyze', 'verify', copy]);
  t.equal(verify.code, 0, 'systemd-analyze verify exits 0');
  t.equal(verify.stderr.trim(), '', `and prints no warning (${verify.stderr.trim()})`);
  // The same check catches a typo: it is not a check that cannot fail.
  const bad = path.join(dir, 'bad.service');
  writeFileSync(bad, text.replaceAll('/usr/local/bin/sluice', SLUICE_BIN).replace('ProtectHome=yes', 'ProtectHom=yes'));
  t.match((await run(['systemd-analyze', 'verify', bad])).stderr, /Unknown key/, 'a misspelt key would be reported');
  const security = await run(['systemd-analyze', 'security', '--offline=yes', copy]);
  const level = /Overall exposure level for \S+: ([0-9.]+ \S+)/.exec(security.stdout + security.stderr)?.[1];
  t.comment(`systemd-analyze security --offline=yes: exposure ${level ?? 'not reported'}`);
});

function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.once('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** Binds a unix datagram socket (a path, or "@name" for an abstract one) and prints each datagram as a JSON line. */
const RECEIVER = `
import json, os, socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + name[1:] if name.startswith('@') else name)
if not name.startswith('@'):
    os.chmod(name, 0o777)  # as systemd's /run/systemd/notify: any uid may send
print(json.dumps({'listening': True}), flush=True)
while True:
    print(json.dumps({'datagram': s.recv(4096).decode()}), flush=True)
`;

interface Receiver {
  datagrams: string[];
  next(what: string, timeoutMs: number): Promise<string>;
}

async function receiver(t: Test, proc: ChildProcess): Promise<Receiver> {
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  const datagrams: string[] = [];
  const waiters: Array<() => void> = [];
  let listening: () => void = () => {};
  const up = new Promise<void>((resolve) => (listening = resolve));
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as { listening?: boolean; datagram?: string };
    if (m.listening === true) listening();
    if (m.datagram !== undefined) {
      datagrams.push(m.datagram);
      for (const w of waiters.splice(0)) w();
    }
  });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await Promise.race([up, new Promise((_, reject) => setTimeout(() => reject(new Error(`receiver did not start: ${err}`)), 10_000))]);
  let seen = 0;
  return {
    datagrams,
    next(what, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no datagram (${what}) within ${timeoutMs} ms; got ${JSON.stringify(datagrams)}`)), timeoutMs);
        const check = (): void => {
          if (datagrams.length > seen) {
            clearTimeout(timer);
            resolve(datagrams[seen++]!);
          } else waiters.push(check);
        };
        check();
      });
    },
  };
}

const CONFIG = (user: string): string => `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { fakeIp: { persistPath: null } }
${user}
`;

async function readiness(t: Test, ns: Netns, dir: string, socket: string, rx: Receiver, drop: boolean): Promise<void> {
  const engine = await startSluice(t, ns, dir, CONFIG(drop ? 'run: { user: nobody }' : ''), path.join(dir, 'run', 'state.json'), { ...nobodyTapEnv(dir), NOTIFY_SOCKET: socket });
  const ready = await rx.next('READY=1', 10_000);
  // Read at once: the drop happens before READY=1 is sent.
  const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${engine.proc.pid!}/status`, 'utf8'))?.[1];
  t.match(ready, /^READY=1$/m, `READY=1 received (${JSON.stringify(ready)})`);
  t.match(ready, new RegExp(`^STATUS=serving on ${TUN}$`, 'm'), 'with a STATUS line naming the TUN');
  t.ok(engine.lines.some((l) => l.msg === 'ready'), 'sluice logged "ready"');
  if (drop) t.equal(uid, '65534', 'when READY=1 arrives, sluice already runs as nobody');
  t.equal(rx.datagrams.length, 1, 'nothing else was sent while running');
  engine.proc.kill('SIGTERM');
  t.equal(await rx.next('STOPPING=1', 10_000), 'STOPPING=1', 'STOPPING=1 on SIGTERM');
  const exit = await engine.stop(15_000);
  t.equal(exit.code, 0, 'and sluice exits 0');
}

t.test('sd_notify: READY=1 after ready, STOPPING=1 on SIGTERM (path socket, run.user nobody)', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['/usr/bin/python3'])) return;
  const dir = tempDir(t, 'notify');
  chmodSync(dir, 0o755);
  const socket = path.join(dir, 'notify.sock');
  // The path socket lives in the file system, reachable from any namespace.
  const rx = await receiver(t, spawn('/usr/bin/python3', ['-c', RECEIVER, socket], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const lab = await createLab(t, 'notifyps');
  await readiness(t, await lab.netns('svc'), dir, socket, rx, true);
});

t.test('sd_notify: an abstract @socket works too', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['/usr/bin/python3'])) return;
  const dir = tempDir(t, 'notifya');
  chmodSync(dir, 0o755);
  const lab = await createLab(t, 'notifyab');
  const ns = await lab.netns('svc');
  // Abstract unix names belong to the network namespace: the receiver runs in sluice's.
  const socket = `@sluice-test-notify-${process.pid}`;
  const rx = await receiver(t, ns.spawn(['/usr/bin/python3', '-c', RECEIVER, socket]));
  await readiness(t, ns, dir, socket, rx, false);
});

/** setpriv's arguments for the unit's CapabilityBoundingSet (minus `without`) and NoNewPrivileges. */
function unitPrivileges(without: string[] = []): string[] {
  const caps = settings(readFileSync(UNIT, 'utf8')).get('CapabilityBoundingSet')!.at(-1)!.split(/\s+/).filter((c) => !without.includes(c));
  return ['setpriv', `--bounding-set=-all,${caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`).join(',')}`, '--no-new-privs', '--'];
}

t.test("the unit's bounding set and NoNewPrivileges suffice: run, drop, serve, stop; kill -9 + sluice down", { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['setpriv', 'ip', 'nft', 'curl'])) return;
  const dir = tempDir(t, 'unitcaps');
  chmodSync(dir, 0o755);
  const state = path.join(dir, 'run', 'state.json');
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, workstationConfig('  strictDns: true\nrun: { user: nobody }'));
  const { ws } = await workstation(t, 'unitcaps');
  const before = await snapshot(ws);
  const env = { ...childEnv, ...nobodyTapEnv(dir) };
  const start = async (): Promise<Engine> => {
    const engine = new Engine(ws.spawn([...unitPrivileges(), process.execPath, SLUICE_BIN, 'run', '--config', cfg, '--state', state], { env }));
    t.teardown(() => {
      if (!t.passing()) t.comment(`sluice:\n${engine.transcript()}`);
    });
    await engine.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');
    return engine;
  };
  let engine = await start();
  const bnd = /^CapBnd:\s+(\S+)/m.exec(readFileSync(`/proc/${engine.proc.pid!}/status`, 'utf8'))?.[1];
  // SLUICE_TEST_TUN_QUEUES=2: worker threads keep CAP_NET_RAW for their ICMP echo sockets (src/system/privileges.ts).
  const workers = SUITE_WORKERS;
  t.equal(bnd, workers ? '0000000000003000' : '0000000000001000', `under the unit's set, sluice still drops to CAP_NET_ADMIN alone${workers ? ' (and CAP_NET_RAW for its worker threads)' : ''}`);
  const r = await curl(ws, [`http://${SERVER_V4}/`]);
  t.equal(r.code, 0, `a flow through the TUN (${describe(r)})`);
  t.equal((await engine.stop(15_000)).code, 0, 'SIGTERM exits 0');
  t.equal(await snapshot(ws), before, 'after SIGTERM: identical to before');

  engine = await start();
  engine.proc.kill('SIGKILL');
  await engine.exited;
  t.not(await snapshot(ws), before, 'after kill -9: leftovers remain');
  const down = (without: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    ws.exec([...unitPrivileges(without), process.execPath, SLUICE_BIN, 'down', '--state', state], { allowFail: true, env: childEnv });
  const denied = await down(['CAP_DAC_OVERRIDE']);
  t.not(denied.code, 0, `without CAP_DAC_OVERRIDE, root's sluice down cannot finish: the state directory is nobody's (${denied.stderr.trim().split('\n')[0] ?? ''})`);
  const ok = await down([]);
  t.equal(ok.code, 0, `with the unit's set, sluice down (ExecStopPost) exits 0 (${ok.stdout.trim()} ${ok.stderr.trim()})`);
  t.equal(await snapshot(ws), before, 'after kill -9 + sluice down: identical to before');
});
