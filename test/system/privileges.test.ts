/**
 * The privilege drop (`run.user: nobody`) in the client / gateway / server
 * topology, sluice in gateway mode in the gateway namespace:
 *   - after "ready", /proc/PID/task/* /status shows uid and gid 65534 on every
 *     thread, no thread holding more than the kept set, and the main thread
 *     holding exactly the kept set (permitted, effective, inheritable,
 *     ambient, bounding) with NoNewPrivs 1;
 *   - everything still works after the drop: TCP (new upstream sockets get
 *     SO_MARK, which needs CAP_NET_ADMIN), UDP, DNS (hijacked fake-IP answers,
 *     then a name resolved upstream by sluice), a SIGHUP reload that re-reads
 *     a rule-set file as nobody and changes the policy, and in tproxy mode
 *     UDP replies from port 53 (CAP_NET_BIND_SERVICE);
 *   - with tun.queues 2 the worker threads start after the drop, cloned from
 *     the main thread's credentials: flows on both queues get their SO_MARK,
 *     and a worker killed and restarted after the drop serves flows again;
 *   - SIGTERM, as nobody, removes everything: rules, routes, nftables and the
 *     forwarding sysctls are exactly as before (the ip/nft children run with
 *     the ambient CAP_NET_ADMIN, the sysctls are written with it), the state
 *     file is gone and the fake-IP table was saved by nobody.
 *
 * Needs root, /dev/net/tun, curl, dig, dnsmasq, ip, nft.
 */
import t from 'tap';
import type { Test } from 'tap';
import path from 'node:path';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { childEnv, createLab, curl, describe, requireCommands, SLUICE_BIN, startDnsmasq, startWebServer, tempDir, timed, TUN, type Engine } from '../fixtures/engine/lab.js';
import { nobodyTapEnv, snapshot, startSluice } from './workstation.js';
import { SUITE_WORKERS } from '../fixtures/suite-queues.js';
import { WORKER_SCRIPT } from '../../src/workers/pool.js';
import { checkReadableBy } from '../../src/system/privileges.js';
import { fileURLToPath } from 'node:url';

const NOBODY = 65534;
const CAP_NET_BIND_SERVICE = 10;
const CAP_NET_ADMIN = 12;
const CAP_NET_RAW = 13;

function config(dir: string, gateway: string, more = ''): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN}${more} }
dns:
  mode: fake-ip
  fakeIp: { persistPath: ${path.join(dir, 'lib', 'fakeip.json')} }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
outbounds:
  - { name: direct, type: direct, mark: 0x162 }
  - { name: block, type: reject }
ruleSets:
  blocked: { type: domain, path: ${path.join(dir, 'rules', 'blocked.txt')} }
rules:
  - { ruleSet: [blocked], outbound: block }
final: direct
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], ${gateway} }
run: { user: nobody }
`;
}


/** The kernel's fe80::/64 and local routes settle before the first snapshot (as in gateway.test.ts). */
async function settle(ns: Netns): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const tentative = await ns.sh('ip -6 addr show tentative');
    const linkLocal = await ns.sh('ip -6 -o addr show scope link');
    const local = await ns.sh('ip -6 route show table local');
    if (tentative.trim() === '' && ['lan0', 'wan0'].every((d) => linkLocal.includes(` ${d} `) && new RegExp(`local fe80::\\S+ dev ${d} `).test(local))) return;
    if (Date.now() > deadline) throw new Error(`IPv6 did not settle:\n${tentative}\n${linkLocal}\n${local}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function gatewaySnapshot(ns: Netns): Promise<string> {
  return (await snapshot(ns)) + '## forwarding\n' + (await ns.sh('sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv4.conf.lan0.forwarding net.ipv6.conf.wan0.forwarding'));
}

const UDP_ECHO = `const d = require('dgram'); let n = 0; for (const t of ['udp4', 'udp6']) { const s = d.createSocket({ type: t, ipv6Only: t === 'udp6' }); s.on('message', (m, r) => s.send(m, r.port, r.address)); s.bind(7000, () => { if (++n === 2) console.log('ready'); }); }`;
const UDP_PING = `const d = require('dgram'); const s = d.createSocket(process.argv[2]); s.on('message', (m) => { console.log(String(m)); process.exit(0); }); s.send('ping over udp', 7000, process.argv[1]); setTimeout(() => process.exit(3), 3000);`;

async function udpRoundTrip(client: Netns, host: string, family: 'udp4' | 'udp6'): Promise<string> {
  const r = await client.exec([process.execPath, '-e', UDP_PING, host, family], { allowFail: true, env: { ...process.env, NODE_OPTIONS: '' } });
  return r.stdout.trim();
}

interface Creds {
  tid: string;
  uid: number[];
  gid: number[];
  groups: number[];
  inh: bigint;
  prm: bigint;
  eff: bigint;
  bnd: bigint;
  amb: bigint;
  nnp: string;
}

function parse(tid: string, text: string): Creds {
  const f = (k: string): string => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim() ?? '';
  const ids = (k: string): number[] => f(k).split(/\s+/).filter(Boolean).map(Number);
  const hex = (k: string): bigint => BigInt(`0x${f(k) || '0'}`);
  return { tid, uid: ids('Uid'), gid: ids('Gid'), groups: ids('Groups'), inh: hex('CapInh'), prm: hex('CapPrm'), eff: hex('CapEff'), bnd: hex('CapBnd'), amb: hex('CapAmb'), nnp: f('NoNewPrivs') };
}

/** Checks the credentials of every thread of `pid` from /proc against `kept`. */
function checkProc(t: Test, pid: number, kept: bigint): void {
  const main = parse(String(pid), readFileSync(`/proc/${pid}/status`, 'utf8'));
  const want = `0x${kept.toString(16)}`;
  t.same(main.uid, [NOBODY, NOBODY, NOBODY, NOBODY], '/proc/PID/status: Uid real/effective/saved/fs all nobody');
  t.same(main.gid, [NOBODY, NOBODY, NOBODY, NOBODY], 'Gid all nogroup');
  t.same(main.groups, [NOBODY], 'supplementary groups: only nogroup');
  for (const [name, v] of [['CapPrm', main.prm], ['CapEff', main.eff], ['CapAmb', main.amb], ['CapInh', main.inh], ['CapBnd', main.bnd]] as const) {
    t.equal(`0x${v.toString(16)}`, want, `${name} is exactly the kept set ${want}`);
  }
  t.equal(main.nnp, '1', 'NoNewPrivs: 1');
  const tids = readdirSync(`/proc/${pid}/task`);
  t.ok(tids.length > 1, `the process has ${tids.length} threads (libuv threadpool, V8 platform)`);
  const bad: string[] = [];
  for (const tid of tids) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    } catch {
      continue;
    }
    const c = parse(tid, text);
    if (!c.uid.every((u) => u === NOBODY) || !c.gid.every((g) => g === NOBODY)) bad.push(`${tid}: uid ${c.uid.join('/')} gid ${c.gid.join('/')}`);
    for (const [name, v] of [['prm', c.prm], ['eff', c.eff], ['amb', c.amb]] as const) if ((v & ~kept) !== 0n) bad.push(`${tid}: cap${name} 0x${v.toString(16)}`);
  }
  t.same(bad, [], `every one of the ${tids.length} threads has uid/gid nobody and no capability beyond ${want}`);
}

async function lab(t: Test, tag: string, dir: string): Promise<{ client: Netns; gateway: Netns; server: Netns }> {
  const l = await createLab(t, tag);
  const topo = await threeNamespaces(l);
  // Forwarding off (and per-interface flags set), so the test sees sluice put them back.
  await topo.gateway.sh('sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0');
  await settle(topo.gateway);
  await startWebServer(t, topo.server);
  await startDnsmasq(t, topo.server, { 'web.example': SERVER_V4, 'added.example': SERVER_V4 });
  const echo = topo.server.spawn([process.execPath, '-e', UDP_ECHO], { env: { ...process.env, NODE_OPTIONS: '' } });
  await new Promise<void>((resolve) => echo.stdout!.once('data', () => resolve()));
  // nobody must reach what sluice reads and writes after the drop: the
  // temporary directory is root's 0700 otherwise.
  chmodSync(dir, 0o755);
  mkdirSync(path.join(dir, 'rules'));
  writeFileSync(path.join(dir, 'rules', 'blocked.txt'), 'blocked.example\n');
  return topo;
}

/** dig through the gateway; returns the answer's addresses. */
async function dig(client: Netns, name: string): Promise<string> {
  const r = await timed(client, ['dig', `@${SERVER_V4}`, name, 'A', '+short', '+time=3', '+tries=2'], 20_000);
  return r.stdout.trim();
}

async function stopAndCompare(t: Test, engine: Engine, gateway: Netns, before: string, state: string): Promise<void> {
  const stop = await engine.stop(15_000);
  t.equal(stop.code, 0, `SIGTERM as nobody exits 0 (${stop.code ?? stop.signal})`);
  t.notOk(/EPERM|EACCES|could not remove|cannot write/.test(engine.stdoutRaw + engine.stderr), 'no permission error anywhere in the log');
  t.notOk(existsSync(state), 'the state file is gone (its directory was handed to nobody)');
  t.equal(await gatewaySnapshot(gateway), before, 'after SIGTERM: rules, routes, nftables and forwarding sysctls identical to before');
}

t.test('run.user nobody, gateway mode tun: /proc shows the drop; TCP, UDP, DNS, SIGHUP and SIGTERM still work', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'dig', '/usr/sbin/dnsmasq', 'ip', 'nft'])) return;
  const dir = tempDir(t, 'privtun');
  const state = path.join(dir, 'run', 'state.json');
  const { client, gateway } = await lab(t, 'privtunx', dir);
  await gateway.sh('sysctl -qw net.ipv4.conf.lan0.forwarding=0 net.ipv6.conf.wan0.forwarding=0');
  const before = await gatewaySnapshot(gateway);

  const engine = await startSluice(t, gateway, dir, config(dir, 'mode: tun'), state, nobodyTapEnv(dir));
  const dropped = await engine.waitFor((l) => l.msg === 'privileges dropped', 1000, '"privileges dropped" (before "ready")');
  const kept = (1n << BigInt(CAP_NET_ADMIN)) | (SUITE_WORKERS ? 1n << BigInt(CAP_NET_RAW) : 0n);
  t.match(dropped, { user: 'nobody', uid: NOBODY, gid: NOBODY, keep: SUITE_WORKERS ? ['CAP_NET_ADMIN', 'CAP_NET_RAW'] : ['CAP_NET_ADMIN'] }, 'sluice logs the drop to nobody, keeping CAP_NET_ADMIN (and CAP_NET_RAW for worker threads)');
  checkProc(t, engine.proc.pid!, kept);
  t.equal(statSync(path.join(dir, 'run')).uid, NOBODY, 'the state directory was handed to nobody');

  // TCP, both families: each upstream socket gets SO_MARK 0x162 after the drop.
  for (const target of [SERVER_V4, `[${SERVER_V6}]`]) {
    const r = await curl(client, ['-g', `http://${target}/`]);
    t.equal(r.code, 0, `TCP to ${target} through sluice after the drop (${describe(r)})`);
  }
  for (const dst of [`${SERVER_V4}:80`, `[${SERVER_V6}]:80`]) {
    const f = await engine.waitFor((l) => l.msg === 'flow' && l.dst === dst, 10_000, `the flow line to ${dst}`);
    t.equal(f.outbound, 'direct', `flow line to ${dst}: outbound direct`);
  }
  // UDP, both families.
  t.equal(await udpRoundTrip(client, SERVER_V4, 'udp4'), 'ping over udp', 'IPv4 UDP round trip after the drop');
  t.equal(await udpRoundTrip(client, SERVER_V6, 'udp6'), 'ping over udp', 'IPv6 UDP round trip after the drop');
  // DNS: the hijacked query gets a fake IP; a connection to it makes sluice
  // resolve the name upstream (dnsmasq) with its own, marked socket.
  const fake = await dig(client, 'web.example');
  t.match(fake, /^198\.18\.\d+\.\d+$/, `DNS: a fake-IP answer for web.example (${fake})`);
  const byName = await curl(client, ['-H', 'Host: web.example', `http://${fake}/`]);
  t.equal(byName.code, 0, `TCP to the fake IP reaches the server resolved upstream (${describe(byName)})`);
  const flow = await engine.waitFor((l) => l.msg === 'flow' && l.domain === 'web.example', 5000, 'the flow line of web.example');
  t.equal(flow.outbound, 'direct', 'web.example went direct');

  // SIGHUP: the rule-set file is re-read as nobody; the new entry is refused.
  writeFileSync(path.join(dir, 'rules', 'blocked.txt'), 'blocked.example\nadded.example\n');
  const n = engine.lines.length;
  engine.proc.kill('SIGHUP');
  await engine.waitFor((l) => engine.lines.indexOf(l) >= n && (l.msg === 'reloaded' || l.msg === 'reload failed; the previous policy stays'), 10_000, 'the reload line');
  t.ok(engine.lines.slice(n).some((l) => l.msg === 'reloaded'), 'SIGHUP reloaded the rule sets (read as nobody)');
  const addedIp = await dig(client, 'added.example');
  const added = await curl(client, ['-H', 'Host: added.example', `http://${addedIp}/`], 5);
  t.not(added.code, 0, `added.example is refused after the reload (${describe(added)})`);
  const rejected = await engine.waitFor((l) => l.msg === 'flow' && l.domain === 'added.example', 5000, 'the flow line of added.example');
  t.equal(rejected.outbound, 'block', 'its flow line shows the reject outbound');
  checkProc(t, engine.proc.pid!, kept);

  await stopAndCompare(t, engine, gateway, before, state);
  const saved = path.join(dir, 'lib', 'fakeip.json');
  t.ok(existsSync(saved), 'the fake-IP table was saved at stop');
  t.equal(statSync(saved).uid, NOBODY, 'by nobody');
  t.match(readFileSync(saved, 'utf8'), /web\.example/, 'and holds the mapping of web.example');
});

t.test('run.user nobody, gateway mode tproxy: CAP_NET_BIND_SERVICE kept for UDP replies from port 53', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'dig', '/usr/sbin/dnsmasq', 'ip', 'nft'])) return;
  const dir = tempDir(t, 'privtp');
  const state = path.join(dir, 'run', 'state.json');
  const { client, gateway } = await lab(t, 'privtpxx', dir);
  const before = await gatewaySnapshot(gateway);

  const engine = await startSluice(t, gateway, dir, config(dir, 'mode: tproxy'), state, nobodyTapEnv(dir));
  const kept = (1n << BigInt(CAP_NET_ADMIN)) | (1n << BigInt(CAP_NET_BIND_SERVICE)) | (SUITE_WORKERS ? 1n << BigInt(CAP_NET_RAW) : 0n);
  const dropped = await engine.waitFor((l) => l.msg === 'privileges dropped', 1000, '"privileges dropped"');
  t.same(dropped.keep, SUITE_WORKERS ? ['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_NET_BIND_SERVICE'] : ['CAP_NET_ADMIN', 'CAP_NET_BIND_SERVICE'], 'tproxy mode keeps CAP_NET_BIND_SERVICE too');
  checkProc(t, engine.proc.pid!, kept);

  for (const target of [SERVER_V4, `[${SERVER_V6}]`]) {
    const r = await curl(client, ['-g', `http://${target}/`]);
    t.equal(r.code, 0, `TCP to ${target} through TPROXY after the drop (${describe(r)})`);
  }
  t.equal(await udpRoundTrip(client, SERVER_V4, 'udp4'), 'ping over udp', 'IPv4 UDP through TPROXY after the drop (transparent reply socket)');
  // The reply socket binds SERVER_V4:53: a port below 1024.
  t.match(await dig(client, 'web.example'), /^198\.18\.\d+\.\d+$/, 'DNS through TPROXY is answered (fake IP) from the reply socket bound to port 53');
  await stopAndCompare(t, engine, gateway, before, state);
});

const API = '127.0.0.1:19191';
const SECRET = 'privqueues';

t.test('run.user nobody, tun.queues 2: the workers start after the drop with the kept set; both queues and a restarted worker still dial', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'dig', '/usr/sbin/dnsmasq', 'ip', 'nft'])) return;
  const dir = tempDir(t, 'privq');
  const state = path.join(dir, 'run', 'state.json');
  const { client, gateway } = await lab(t, 'privqxxx', dir);
  const before = await gatewaySnapshot(gateway);
  const yaml = config(dir, 'mode: tun', ', queues: 2') + `api: { listen: "${API}", secret: ${SECRET} }\n`;
  // This case needs its two queues whatever count the suite runs at (SLUICE_TEST_TUN_QUEUES=1 would override the file; empty: no override).
  const env = { ...nobodyTapEnv(dir), SLUICE_TEST_TUN_QUEUES: '' };
  // Worker threads load sluice's code as nobody: from a checkout nobody
  // cannot read (under /root, say) sluice must refuse at start, naming the directory.
  let unreadable: string | null = null;
  try {
    checkReadableBy(fileURLToPath(WORKER_SCRIPT), { user: 'nobody', uid: NOBODY, gid: NOBODY }, 'test', 'worker threads load it');
  } catch (err) {
    unreadable = (err as Error).message;
  }
  if (unreadable !== null) {
    writeFileSync(path.join(dir, 'refused.yaml'), yaml);
    const r = await gateway.exec([process.execPath, SLUICE_BIN, 'run', '--config', path.join(dir, 'refused.yaml'), '--state', state], { allowFail: true, timeoutMs: 30_000, env: { ...childEnv, ...env } });
    t.not(r.code, 0, `this checkout is not readable by nobody (${unreadable}): start-up is refused`);
    t.match(r.stderr, /run\.user: nobody cannot (search|read) .*tun\.queues: 2 starts worker threads after the drop/, 'the error names the directory and why');
    t.equal(await gatewaySnapshot(gateway), before, 'nothing was installed');
    return;
  }
  const engine = await startSluice(t, gateway, dir, yaml, state, env);
  const kept = (1n << BigInt(CAP_NET_ADMIN)) | (1n << BigInt(CAP_NET_RAW));
  const dropped = await engine.waitFor((l) => l.msg === 'privileges dropped', 1000, '"privileges dropped"');
  t.same(dropped.keep, ['CAP_NET_ADMIN', 'CAP_NET_RAW'], 'the drop keeps CAP_NET_ADMIN, and CAP_NET_RAW for the workers\' raw ICMP sockets');
  const pool = await engine.waitFor((l) => l.msg === 'worker threads serving the TUN queues', 10_000, 'the worker pool line');
  await engine.waitFor((l) => l.msg === 'ready', 10_000, '"ready"');
  t.ok(engine.lines.indexOf(pool) > engine.lines.indexOf(dropped), 'the worker threads started after the drop');
  checkProc(t, engine.proc.pid!, kept);
  // Threads cloned after the drop hold the kept set: the main thread and at least the two workers.
  const holding = readdirSync(`/proc/${engine.proc.pid!}/task`).filter((tid) => {
    try {
      return parse(tid, readFileSync(`/proc/${engine.proc.pid!}/task/${tid}/status`, 'utf8')).eff === kept;
    } catch {
      return false;
    }
  });
  t.ok(holding.length >= 3, `${holding.length} threads hold the kept set effective (the main thread and the workers, created after the drop)`);

  /** Connections until each queue in `want` carried one; every one must succeed (its upstream socket gets SO_MARK in a worker). */
  const untilQueues = async (want: number[], label: string): Promise<void> => {
    const seen = new Set<number>();
    let failed = 0;
    for (let i = 0; i < 60 && want.some((q) => !seen.has(q)); i++) {
      const n = engine.lines.length;
      const r = await curl(client, [`http://${SERVER_V4}/`]);
      if (r.code !== 0) failed++;
      const f = await engine.waitFor((l) => engine.lines.indexOf(l) >= n && l.msg === 'flow' && l.dst === `${SERVER_V4}:80`, 10_000, 'the flow line');
      if (typeof f.queue === 'number' && f.outbound === 'direct') seen.add(f.queue);
    }
    t.equal(failed, 0, `${label}: every connection succeeded`);
    t.same([...seen].sort(), want, `${label}: flows went direct on queues ${want.join(' and ')}`);
  };
  await untilQueues([0, 1], 'after the drop');

  const killed = await gateway.exec(['curl', '-sS', '--max-time', '10', '-X', 'POST', '-H', `Authorization: Bearer ${SECRET}`, `http://${API}/v1/workers/1/kill`], { timeoutMs: 20_000 });
  t.match(killed.stdout, /"killed":1/, 'worker 1 killed through the control API');
  await engine.waitFor((l) => l.msg === 'worker restarted' && l.queue === 1, 30_000, '"worker restarted" for queue 1');
  await untilQueues([0, 1], 'after worker 1 was restarted as nobody');
  checkProc(t, engine.proc.pid!, kept);
  await stopAndCompare(t, engine, gateway, before, state);
});
