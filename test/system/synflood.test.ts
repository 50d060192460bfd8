/**
 * Issue 12 item 2: a SYN flood from a spoofed source range must not become
 * an upstream connection flood, and must not starve the flows sluice
 * already carries. `sluice run` in gateway mode (tun) in the standard
 * client / gateway / server lab, with no name-dependent rule, so every SYN
 * is dialled before it is answered unless the SYN-cookie defence steps in.
 *
 * Twice, each in its own lab: a 15 s flood of SYNs from 198.51.100.1-254
 * (random ports and ISNs, test/fixtures/syn-flood.py, as fast as one process
 * can send through a raw socket), then `hping3 --flood -S` from one spoofed
 * source (198.51.100.7; its source port changes per packet). Both run at
 * nice 19: the attacker would be another machine, and on a shared 2-core
 * box the generator must not take sluice's CPU (17,000-117,000 SYNs/s seen
 * here, depending on the machine's load). Before, during and after, the
 * test measures:
 *   - the goodput of one download that started before the flood (the
 *     server's link shaped to 200 Mbit/s, so the reference is the shaper,
 *     not the loaded machine): at least half kept during the flood;
 *   - new legitimate HTTP requests every 250 ms: at least 90 % succeed
 *     during the flood;
 *   - 300 idle connections: all still answer afterwards, none closed;
 *   - sluice's fd count and RSS (/proc), bounded;
 *   - the connections the server sees from the gateway: no dial flood
 *     (bounded by limits.synCookieThreshold plus the legitimate ones).
 * Figures go in tap comments.
 *
 * Needs root, /dev/net/tun, ip, tc, /usr/bin/python3, hping3.
 */
import t from 'tap';
import type { Test } from 'tap';
import path from 'node:path';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { requireRoot, waitForJsonLine, type Netns } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { BLOB_SERVER, childEnv, createLab, requireCommands, tempDir, TUN } from '../fixtures/engine/lab.js';
import { startSluice } from './workstation.js';
import { SUITE_QUEUES } from '../fixtures/suite-queues.js';
import { holdCpuLock } from '../fixtures/cpu-lock.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FLOOD = path.resolve(here, '../../../test/fixtures/syn-flood.py');
const CLIENTS = path.resolve(here, '../fixtures/flood-clients.js');
const HOLDER = path.resolve(here, '../fixtures/conn-holder.js');
const IDLE = 300;
const FLOOD_S = 15;
const THRESHOLD = 128;
/** Each TUN queue's stack keeps its own half-open count (SLUICE_TEST_TUN_QUEUES=2 runs two): the bound is per queue. */
const QUEUES = SUITE_QUEUES;
const HALF_OPEN_CAP = THRESHOLD * QUEUES;

const config = `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: fake-ip, hijack: false, fakeIp: { persistPath: null }, upstreams: [ { address: "udp://${SERVER_V4}:53" } ] }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tun }
limits: { synCookieThreshold: ${THRESHOLD}, dials: 256, dialsPerSource: 64 }
`;

interface JsonLine {
  event?: string;
  [k: string]: unknown;
}

/** Collects a child's JSON stdout lines. */
function lines(child: ChildProcess): JsonLine[] {
  const out: JsonLine[] = [];
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        out.push(JSON.parse(line) as JsonLine);
      } catch {
        // not JSON
      }
    }
  });
  return out;
}

function procFigures(pid: number): { fds: number; rssMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
  let fds = 0;
  try {
    fds = readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    fds = -1;
  }
  return { fds, rssMb: Math.round(rss) };
}

async function serverConnections(server: Netns): Promise<number> {
  // Every TCP connection to the server's download port (the gateway's upstreams), any state.
  // TIME-WAIT ones are closed connections (the probes'), not open upstreams.
  const out = await server.sh(`ss -Htn exclude time-wait '( sport = :8080 )' | grep -vc LISTEN || true`);
  return Number(out.trim()) || 0;
}

function goodputMbit(progress: JsonLine[], from: number, to: number): number {
  const inRange = progress.filter((p) => p.event === 'progress' && (p.t as number) >= from && (p.t as number) <= to);
  if (inRange.length < 2) return 0;
  const first = inRange[0]!;
  const last = inRange[inRange.length - 1]!;
  const ms = (last.t as number) - (first.t as number);
  return ms > 0 ? (((last.bytes as number) - (first.bytes as number)) * 8) / ms / 1000 : 0;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Tool = 'raw' | 'hping3';

async function floodRun(t: Test, tool: Tool): Promise<void> {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', tool === 'raw' ? '/usr/bin/python3' : 'hping3'])) return;
  // The generators run at nice 19: not while another file loads every core on purpose (test/fixtures/cpu-lock.ts).
  await holdCpuLock(t);
  const dir = tempDir(t, 'synflood');
  const l = await createLab(t, tool === 'raw' ? 'synflraw' : 'synflhpg');
  const { client, gateway, server } = await threeNamespaces(l);
  // SYN-ACKs to the spoofed sources go back out on the LAN (the client drops them), as on a real LAN.
  await gateway.sh('ip route add 198.51.100.0/24 via 192.0.2.2 dev lan0');
  await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.lan0.rp_filter=0');
  // The reference goodput is a shaper on the server's side, not whatever the loaded machine gives.
  await server.sh('tc qdisc add dev eth0 root tbf rate 200mbit burst 512kb latency 100ms');
  const blob = server.spawn([process.execPath, BLOB_SERVER, '8080'], { env: childEnv });
  const holder = server.spawn([process.execPath, HOLDER, 'server', '9000'], { env: childEnv });
  await waitForJsonLine(holder, (m: { event?: string }) => m.event === 'ready');
  await sleep(300);
  void blob;

  const engine = await startSluice(t, gateway, dir, config, path.join(dir, 'state.json'));
  const pid = engine.proc.pid!;
  await engine.waitFor((x) => x.msg === 'gateway installed', 10_000, '"gateway installed"');

  const idle = client.spawn([process.execPath, CLIENTS, 'idle', SERVER_V4, '9000', String(IDLE)], { env: childEnv });
  const idleOut = lines(idle);
  const connected = await waitForJsonLine<{ event?: string; connected?: number; failed?: number }>(idle, (m) => m.event === 'connected', 30_000);
  t.equal(connected.connected, IDLE, `${IDLE} idle connections open through sluice (failed ${connected.failed})`);

  const download = client.spawn([process.execPath, CLIENTS, 'download', `http://${SERVER_V4}:8080/bytes/100000000000`], { env: childEnv });
  const progress = lines(download);
  const probe = client.spawn([process.execPath, CLIENTS, 'probe', `http://${SERVER_V4}:8080/bytes/1000`, '250'], { env: childEnv });
  const probes = lines(probe);
  // The same over IPv6 (the cookie path's IPv6 MSS table, through the real kernel).
  const probe6 = client.spawn([process.execPath, CLIENTS, 'probe', `http://[${SERVER_V6}]:8080/bytes/1000`, '500'], { env: childEnv });
  const probes6 = lines(probe6);

  const samples: { t: number; fds: number; rssMb: number; upstream: number }[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const f = procFigures(pid);
      samples.push({ t: Date.now(), ...f, upstream: await serverConnections(server) });
      await sleep(1000);
    }
  })();

  await sleep(6000);
  const floodStart = Date.now();
  // The attacker would be another machine: on this shared 2-core box the
  // generator runs at the lowest priority so it floods with the CPU sluice
  // does not use rather than take sluice's.
  const flood =
    tool === 'raw'
      ? client.spawn(['nice', '-n', '19', '/usr/bin/python3', FLOOD, 'syn', SERVER_V4, '8080', String(FLOOD_S), '198.51.100'], { env: childEnv })
      : // hping3 spoofs one source (its ports change per packet); --rand-source would leave the documentation ranges.
        client.spawn(['timeout', '-s', 'INT', String(FLOOD_S), 'nice', '-n', '19', 'hping3', '--flood', '-S', '-p', '8080', '-a', '198.51.100.7', SERVER_V4], { env: childEnv });
  const floodOut = lines(flood);
  let floodErr = '';
  flood.stderr!.on('data', (d: Buffer) => (floodErr += d.toString()));
  await new Promise<void>((resolve) => flood.once('exit', () => resolve()));
  const floodEnd = Date.now();
  await sleep(6000);
  const afterEnd = Date.now();
  idle.kill('SIGUSR2');
  const idleReport = await waitForJsonLine<{ event?: string; held?: number; alive?: number; answered?: number; died?: number }>(idle, (m) => m.event === 'idle', 15_000).catch(() => null);
  sampling = false;
  await sampler;
  void idleOut;

  const hpingSent = /(\d+) packets transmitted/.exec(floodErr + floodOut.map((x) => JSON.stringify(x)).join(''));
  const sent = tool === 'raw' ? floodOut.find((x) => x.sent !== undefined) : hpingSent !== null ? { sent: Number(hpingSent[1]), pps: Math.round(Number(hpingSent[1]) / FLOOD_S) } : undefined;
  if (tool === 'hping3' && sent === undefined) t.comment(`hping3 said: ${floodErr.slice(-500)}`);
  t.comment(`flood (${tool}): ${JSON.stringify(sent)} from ${tool === 'raw' ? '198.51.100.1-254' : '198.51.100.7'} to ${SERVER_V4}:8080 for ${FLOOD_S} s`);
  t.ok(sent !== undefined && (sent.sent as number) > 50_000, `the flood sent more than 50,000 SYNs (${sent?.sent})`);

  // Goodput, skipping the first second of each phase (ramp, phase change).
  const before = goodputMbit(progress, floodStart - 5000, floodStart);
  const during = goodputMbit(progress, floodStart + 1000, floodEnd);
  const after = goodputMbit(progress, floodEnd + 1000, afterEnd);
  t.comment(`established download goodput (Mbit/s): before ${before.toFixed(1)}, during ${during.toFixed(1)}, after ${after.toFixed(1)}`);
  t.ok(before > 50, `the download ran before the flood (${before.toFixed(1)} Mbit/s)`);
  t.ok(during >= before / 2, `at least half the goodput kept during the flood (${during.toFixed(1)} of ${before.toFixed(1)} Mbit/s)`);

  const phase = (from: number, to: number, list = probes): { ok: number; n: number } => {
    const p = list.filter((x) => x.event === 'probe' && (x.t as number) >= from && (x.t as number) < to);
    return { ok: p.filter((x) => x.ok === true).length, n: p.length };
  };
  const pb = phase(floodStart - 6000, floodStart);
  // Requests started in the last 15 s of the flood may finish after it; they count for "during".
  const pd = phase(floodStart, floodEnd);
  const pa = phase(floodEnd, afterEnd - 3000);
  t.comment(`new connections succeeded: before ${pb.ok}/${pb.n}, during ${pd.ok}/${pd.n}, after ${pa.ok}/${pa.n}`);
  const failures = probes.filter((x) => x.event === 'probe' && x.ok !== true).slice(0, 5);
  if (failures.length > 0) t.comment(`first failures: ${JSON.stringify(failures)}`);
  t.ok(pd.n >= 20 && pd.ok >= 0.9 * pd.n, `at least 90 % of new connections during the flood succeed (${pd.ok}/${pd.n})`);
  t.ok(pa.n > 0 && pa.ok === pa.n, `all new connections after the flood succeed (${pa.ok}/${pa.n})`);
  const p6 = phase(floodStart, floodEnd, probes6);
  t.comment(`new IPv6 connections during the flood: ${p6.ok}/${p6.n}`);
  t.ok(p6.n >= 10 && p6.ok >= 0.9 * p6.n, `at least 90 % of new IPv6 connections during the flood succeed (${p6.ok}/${p6.n})`);

  t.ok(idleReport !== null, 'the idle connections reported');
  if (idleReport !== null) {
    t.comment(`idle connections: ${JSON.stringify(idleReport)}`);
    t.equal(idleReport.died, 0, 'no idle connection closed');
    t.equal(idleReport.answered, IDLE, `all ${IDLE} idle connections still echo`);
  }

  const phaseMax = (from: number, to: number, k: 'fds' | 'rssMb' | 'upstream'): number => Math.max(0, ...samples.filter((s) => s.t >= from && s.t < to).map((s) => s[k]));
  const fig = (k: 'fds' | 'rssMb' | 'upstream'): string => `before ${phaseMax(0, floodStart, k)}, during ${phaseMax(floodStart, floodEnd, k)}, after ${phaseMax(floodEnd, Infinity, k)}`;
  t.comment(`sluice fds (max): ${fig('fds')}`);
  t.comment(`sluice RSS MB (max): ${fig('rssMb')}`);
  t.comment(`connections at the server's port 8080 (max): ${fig('upstream')}`);
  const fdsBefore = phaseMax(0, floodStart, 'fds');
  const rssBefore = phaseMax(0, floodStart, 'rssMb');
  // Each half-open flow dialled before the threshold holds one upstream socket; cookies hold nothing.
  t.ok(phaseMax(floodStart, Infinity, 'fds') <= fdsBefore + HALF_OPEN_CAP + 64, `fds bounded: at most before + synCookieThreshold per queue + 64 (${phaseMax(floodStart, Infinity, 'fds')} vs ${fdsBefore}, ${QUEUES} queue(s))`);
  t.ok(phaseMax(floodStart, Infinity, 'rssMb') <= rssBefore + 200, `RSS bounded: at most 200 MB above before (${phaseMax(floodStart, Infinity, 'rssMb')} vs ${rssBefore} MB)`);
  t.ok(phaseMax(floodStart, Infinity, 'upstream') <= HALF_OPEN_CAP + 64, `no dial flood: at most synCookieThreshold per queue + 64 connections at the server (${phaseMax(floodStart, Infinity, 'upstream')}, ${QUEUES} queue(s))`);

  // The defence's own counters (SIGUSR2 counters line).
  engine.proc.kill('SIGUSR2');
  const counters = await engine.waitFor((x) => x.msg === 'counters', 20_000, 'the counters line').catch(() => null);
  if (counters !== null) t.comment(`sluice counters: ${JSON.stringify(counters.synFlood)}`);
  t.ok(counters !== null && (counters.synFlood as { cookiesSent: number }).cookiesSent > 10_000, 'SYNs were answered with cookies');

  for (const c of [download, probe, probe6, idle]) c.kill('SIGTERM');
  // How it stops with half-open flows is item 5's business (another test); only recorded here.
  t.comment(`sluice stop: ${JSON.stringify(await engine.stop())}`);
}

t.test('a SYN flood from a spoofed /24 (raw-socket generator) is answered with cookies: no dial flood, established and idle flows survive, new clients connect', { timeout: 150_000 }, (t) => floodRun(t, 'raw'));

t.test('the same with hping3 --flood -S from a spoofed source', { timeout: 150_000 }, (t) => floodRun(t, 'hping3'));
