/**
 * Connection setup cost (issue 10, ask 1): new connections per second and
 * sluice's CPU time per proxied short connection. The standard three
 * namespaces; `sluice run` in the gateway (gateway.mode tun, the default
 * policy: every flow direct, flow log on at level info, written to a pipe
 * as in production under systemd); nginx in the server namespace serving a
 * 1 KiB file; wrk in the client namespace making one request per
 * connection (`Connection: close`). Sluice's CPU is utime + stime of its
 * process from /proc/PID/stat over the wrk run, divided by the requests
 * wrk completed. The machine may be shared: every round is reported, with
 * medians and the load average, and CPU per connection is the robust
 * figure (the rate depends on how much CPU the other processes leave).
 *   sudo node dist/bench/conn-setup.bench.js [seconds] [rounds] [--connections N] [--queues N] [--warmup S] [--prof DIR] [--ab OTHER/bin/sluice.js] [--syscalls] [--keepalive]
 * --warmup S: seconds of the same load before the measured run (default 1).
 * One second leaves V8 still optimising (TurboFan on its platform threads,
 * the `other` column): at two queues each worker isolate compiles the same
 * functions again with half the calls each, and in the measured 5 s it
 * still made ~120 optimised compilations per worker (--log-code), which
 * the `other` threads' CPU per connection showed (40-100 µs, more the fewer
 * connections a busy machine let through). A long-running gateway pays
 * that once.
 * --queues N sets tun.queues (default 1: one thread; N > 1 is the worker
 * mode of src/workers/, and the CPU figure is the whole process's, every
 * thread's time summed, as /proc/PID/stat counts it). Each round also
 * splits it by thread (bench/thread-cpu.ts): the main thread, each worker
 * (`sluice-q<N>`), and the rest (V8's and libuv's helper threads).
 * Each round's second split is the system (kernel) part of the same CPU,
 * by the same groups. --syscalls runs `perf stat --per-thread` on sluice
 * over the measured run and prints system calls (raw_syscalls:sys_enter),
 * TUN-side reads and writes, futex calls, context switches and
 * inter-processor interrupts sent and taken per connection by the same
 * thread groups (perf must be installed; tracepoints need root).
 * --keepalive measures keep-alive requests instead (wrk's connections
 * stay open, nginx keeps them: keepalive_requests unbounded): conn/s is
 * then requests/s and CPU µs/conn CPU per request, the keep-alive row of
 * bench:peers with a profile (--prof) and an A/B of its own.
 * --prof DIR runs sluice under `node --cpu-prof --cpu-prof-dir DIR` (one
 * profile per thread and round, the workers' too: they inherit the
 * flags; written when sluice exits) and prints the top self-time entries
 * of each.
 */
import path from 'node:path';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { Lab, type Netns, type TestLike } from '../test/harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../test/harness/topology.js';
import { childEnv, Engine, SLUICE_BIN, TUN } from '../test/fixtures/engine/lab.js';
import { BenchContext, peakRssMiB, takeFlag } from './bench-lab.js';
import { median } from './peers-table.js';
import { threadCpu, threadSplit } from './thread-cpu.js';
import { writeNginxConf } from '../test/fixtures/nginx-conf.js';

export interface ConnSetupRound {
  connPerSec: number;
  requests: number;
  errors: number;
  cpuUsPerConn: number;
  rssMb: number;
  /** VmHWM: the most the process held at once (warm-up included), MiB. */
  peakMb: number;
  load1: number;
  /** Packets sluice wrote to the TUN per completed request (sluice_tun_transmit_packets_total), NaN when the metrics could not be read. */
  txPerConn: number;
  /** CPU µs per completed request by thread group (bench/thread-cpu.ts: main, sluice-q0.., other). */
  threads: Record<string, number>;
  /** The system (kernel) part of `threads`. */
  threadsSys: Record<string, number>;
  /** With --syscalls: per completed request, by event (`syscalls`, `read`, `write`, `cs`) and thread group, as "event group". */
  perfPerConn: Record<string, number>;
}

/** The events --syscalls counts, by the short names the rows print. */
const PERF_EVENTS: Record<string, string> = {
  syscalls: 'raw_syscalls:sys_enter',
  read: 'syscalls:sys_enter_read',
  write: 'syscalls:sys_enter_write',
  futex: 'syscalls:sys_enter_futex',
  epoll: 'syscalls:sys_enter_epoll_wait',
  cs: 'context-switches',
  /** Inter-processor interrupts this thread sent (waking a thread on the other CPU; in a VM each is an exit to the hypervisor). */
  ipiSent: 'ipi:ipi_send_cpu',
  /** Reschedule interrupts taken while this thread ran (another CPU woke a thread here). */
  reschedIn: 'irq_vectors:reschedule_entry',
};

/**
 * `perf stat --per-thread` on `pid` until the returned stop() is called;
 * stop() resolves to the counts by "event group" (groups as threadSplit's).
 */
function perfStat(pid: number): () => Promise<Record<string, number>> {
  const names = Object.fromEntries(Object.entries(PERF_EVENTS).map(([k, v]) => [v, k]));
  const p = spawn('perf', ['stat', '--per-thread', '-x,', ...Object.values(PERF_EVENTS).flatMap((e) => ['-e', e]), '-p', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<void>((r) => p.on('exit', () => r()));
  return async () => {
    p.kill('SIGINT');
    await done;
    const out: Record<string, number> = {};
    for (const line of err.split('\n')) {
      // comm-tid,count,unit,event,...
      const f = line.split(',');
      const m = /^(.*)-(\d+)$/.exec(f[0] ?? '');
      const ev = names[f[3] ?? ''];
      if (m === null || ev === undefined || !/^\d+$/.test(f[1] ?? '')) continue;
      const group = Number(m[2]) === pid ? 'main' : m[1]!.startsWith('sluice-q') ? m[1]! : 'other';
      const key = `${ev} ${group}`;
      out[key] = (out[key] ?? 0) + Number(f[1]);
    }
    return out;
  };
}

/** The control API's secret in the bench's config (the /metrics read below). */
const API_SECRET = 'conn-setup-bench';

/** sluice_tun_transmit_packets_total from the control API's /metrics (127.0.0.1:9090 in the gateway namespace), NaN when unreadable. */
async function tunTxPackets(gateway: Netns): Promise<number> {
  const r = await gateway.exec(['curl', '-s', '-m', '5', '-H', `Authorization: Bearer ${API_SECRET}`, 'http://127.0.0.1:9090/metrics'], { timeoutMs: 10_000, allowFail: true });
  const m = /^sluice_tun_transmit_packets_total(?:\{[^}]*\})? (\d+)/m.exec(r.stdout);
  return m === null ? NaN : Number(m[1]);
}

/** utime + stime of `pid` in µs (clock ticks of 10 ms). */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10_000;
}

/** VmRSS of `pid` in bytes. */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) * 1024;
}

/** --keepalive: requests over kept-alive connections, not a connection each. */
let keepAlive = false;
const closeHeader = (): string[] => (keepAlive ? [] : ['-H', 'Connection: close']);

function nginxConf(dir: string): string {
  const root = path.join(dir, 'www');
  mkdirSync(root, { recursive: true });
  writeFileSync(path.join(root, '1k'), Buffer.alloc(1024, 0x61));
  return writeNginxConf(dir, {
    main: ['worker_processes 1;', 'worker_rlimit_nofile 8192;'],
    errorLog: 'stderr crit',
    workerConnections: 4096,
    http: ['default_type application/octet-stream;', keepAlive ? 'keepalive_timeout 75s; keepalive_requests 100000000;' : 'keepalive_timeout 0;'],
    server: [`listen ${SERVER_V4}:80 backlog=4096 reuseport;`, `root ${root};`],
  });
}

const config = (queues: number): string => `
log: { level: info, format: json }
tun: { name: ${TUN}, queues: ${queues} }
dns: { mode: real-ip, hijack: false }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tun }
api: { listen: '127.0.0.1:9090', secret: ${API_SECRET} }
`;

/** wrk's summary: "N requests in Xs", "Requests/sec: R", socket errors. */
function parseWrk(out: string): { requests: number; perSec: number; errors: number } {
  const req = /(\d+) requests in/.exec(out);
  const rate = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const err = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const errors = (err ? Number(err[1]) + Number(err[3]) + Number(err[4]) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return { requests: req ? Number(req[1]) : 0, perSec: rate ? Number(rate[1]) : 0, errors };
}

/**
 * `sluice run` of `bin` in the gateway with `configText`, ready to carry
 * flows (the TUN's rp_filter off); under `node --cpu-prof` into `profDir`
 * when given. The caller stops it.
 */
export async function startGatewaySluice(gateway: Netns, dir: string, configText: string, bin: string, profDir: string | null): Promise<Engine> {
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, configText);
  const nodeArgs = profDir !== null ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [];
  const engine = new Engine(gateway.spawn(['env', '-u', 'NODE_OPTIONS', process.execPath, ...nodeArgs, bin, 'run', '--config', cfg, '--state', path.join(dir, 'state.json')], { env: childEnv }));
  try {
    await engine.waitFor((l) => l.msg === 'ready', 30_000, '"ready"');
    await gateway.sh(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0`);
  } catch (err) {
    await engine.stop(10_000);
    throw err;
  }
  return engine;
}

async function oneRound(client: Netns, gateway: Netns, dir: string, seconds: number, connections: number, queues: number, profDir: string | null, bin: string, warmup: number, syscalls: boolean): Promise<ConnSetupRound> {
  const engine = await startGatewaySluice(gateway, dir, config(queues), bin, profDir);
  try {
    const pid = engine.proc.pid!;
    const url = `http://${SERVER_V4}/1k`;
    // Warm-up: JIT and the first allocations are not what a steady state costs
    // (each worker thread is an isolate of its own that compiles the same
    // code again, with half the calls: see --warmup above).
    await client.exec(['wrk', '-t1', `-c${connections}`, `-d${warmup}s`, ...closeHeader(), url], { timeoutMs: (warmup + 30) * 1000, allowFail: true });
    engine.lines.length = 0;
    const tx0 = await tunTxPackets(gateway);
    const stopPerf = syscalls ? perfStat(pid) : null;
    const t0 = threadCpu(pid);
    const c0 = cpuMicros(pid);
    const r = await client.exec(['wrk', '-t1', `-c${connections}`, `-d${seconds}s`, ...closeHeader(), url], { timeoutMs: (seconds + 30) * 1000 });
    const c1 = cpuMicros(pid);
    const t1 = threadCpu(pid);
    const split = threadSplit(pid, t0, t1);
    const splitSys = threadSplit(pid, t0, t1, 'sys');
    const perf = stopPerf === null ? {} : await stopPerf();
    const w = parseWrk(r.stdout);
    const rss = rssBytes(pid);
    const tx1 = await tunTxPackets(gateway);
    engine.lines.length = 0;
    return {
      connPerSec: w.perSec,
      requests: w.requests,
      errors: w.errors,
      cpuUsPerConn: w.requests > 0 ? (c1 - c0) / w.requests : NaN,
      rssMb: rss / 2 ** 20,
      peakMb: peakRssMiB(pid),
      load1: os.loadavg()[0]!,
      txPerConn: w.requests > 0 ? (tx1 - tx0) / w.requests : NaN,
      threads: perConn(split, w.requests),
      threadsSys: perConn(splitSys, w.requests),
      perfPerConn: perConn(perf, w.requests),
    };
  } finally {
    await engine.stop(10_000);
  }
}

function perConn(counts: Record<string, number>, requests: number): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, requests > 0 ? v / requests : NaN]));
}

/**
 * `bins` (default: this checkout's) are run in turn, round by round, so an
 * A/B comparison of two builds shares the machine's load; rounds[i] is bins[i % bins.length].
 */
export async function runConnSetupBench(seconds = 5, rounds = 3, connections = 16, profDir: string | null = null, bins: string[] = [SLUICE_BIN], queues = 1, warmup = 1, syscalls = false): Promise<ConnSetupRound[]> {
  const ctx = new BenchContext();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-connsetup-'));
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'connbnch');
    const { client, gateway, server } = await threeNamespaces(lab);
    await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
    // The client's ports cycle fast: TIME-WAIT reuse keeps wrk from running out of them.
    await client.sh('sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000"');
    await server.sh('sysctl -qw net.core.somaxconn=4096');
    const conf = nginxConf(dir);
    server.spawn(['nginx', '-c', conf, '-p', dir]);
    await new Promise((r) => setTimeout(r, 500));
    const out: ConnSetupRound[] = [];
    for (let i = 0; i < rounds * bins.length; i++) {
      const bin = bins[i % bins.length]!;
      const round = await oneRound(client, gateway, dir, seconds, connections, queues, profDir, bin, warmup, syscalls);
      process.stderr.write(`round ${i + 1} (${bin}): ${JSON.stringify(round)}\n`);
      out.push(round);
    }
    return out;
  } finally {
    await ctx.finish();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function printConnSetupRows(rounds: ConnSetupRound[], seconds: number, connections: number, queues = 1): void {
  console.log(`\n${keepAlive ? 'keep-alive requests (conn/s: requests/s, µs/conn: per request)' : 'connection setup'}: wrk -c${connections} -d${seconds}s${keepAlive ? '' : " 'Connection: close'"} to nginx (1 KiB) through sluice run (gateway, tun, tun.queues ${queues}, flow log on)`);
  console.log(`  ${'round'.padEnd(8)} ${'conn/s'.padStart(8)} ${'CPU µs/conn'.padStart(12)} ${'TUN tx/conn'.padStart(12)} ${'errors'.padStart(7)} ${'RSS MB'.padStart(7)} ${'peak MB'.padStart(8)} ${'load1'.padStart(6)}`);
  rounds.forEach((r, i) => console.log(`  ${String(i + 1).padEnd(8)} ${r.connPerSec.toFixed(0).padStart(8)} ${r.cpuUsPerConn.toFixed(0).padStart(12)} ${r.txPerConn.toFixed(2).padStart(12)} ${String(r.errors).padStart(7)} ${r.rssMb.toFixed(0).padStart(7)} ${r.peakMb.toFixed(0).padStart(8)} ${r.load1.toFixed(2).padStart(6)}`));
  const groups = [...new Set(rounds.flatMap((r) => Object.keys(r.threads)))].sort((a, b) => (a === 'main' ? -1 : b === 'main' ? 1 : a === 'other' ? 1 : b === 'other' ? -1 : a.localeCompare(b)));
  const perThread = (r: ConnSetupRound): string => groups.map((g) => `${g} ${(r.threads[g] ?? 0).toFixed(0)}`).join(', ');
  rounds.forEach((r, i) => console.log(`  ${String(i + 1).padEnd(8)} CPU µs/conn by thread: ${perThread(r)}`));
  console.log(`  ${'median'.padEnd(8)} CPU µs/conn by thread: ${groups.map((g) => `${g} ${median(rounds.map((r) => r.threads[g] ?? 0)).toFixed(0)}`).join(', ')}`);
  console.log(`  ${'median'.padEnd(8)} of it system:         ${groups.map((g) => `${g} ${median(rounds.map((r) => r.threadsSys[g] ?? 0)).toFixed(0)}`).join(', ')}`);
  const perfKeys = [...new Set(rounds.flatMap((r) => Object.keys(r.perfPerConn)))].sort();
  if (perfKeys.length > 0) console.log(`  ${'median'.padEnd(8)} per conn (perf):      ${perfKeys.map((k) => `${k} ${median(rounds.map((r) => r.perfPerConn[k] ?? 0)).toFixed(1)}`).join(', ')}`);
  console.log(`  ${'median'.padEnd(8)} ${median(rounds.map((r) => r.connPerSec)).toFixed(0).padStart(8)} ${median(rounds.map((r) => r.cpuUsPerConn)).toFixed(0).padStart(12)} ${median(rounds.map((r) => r.txPerConn)).toFixed(2).padStart(12)} ${''.padStart(7)} ${median(rounds.map((r) => r.rssMb)).toFixed(0).padStart(7)} ${median(rounds.map((r) => r.peakMb)).toFixed(0).padStart(8)} ${median(rounds.map((r) => r.load1)).toFixed(2).padStart(6)}`);
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** The `top` self-time entries of a .cpuprofile, as "percent name (file:line)". */
export function topSelfTime(file: string, top = 15): string[] {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[] };
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const counts = new Map<string, number>();
  for (const id of prof.samples) {
    const n = byId.get(id)!;
    const f = n.callFrame;
    const key = `${f.functionName || '(anonymous)'} (${path.basename(f.url) || '-'}:${f.lineNumber + 1})`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const total = prof.samples.length;
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, c]) => `${((100 * c) / total).toFixed(1).padStart(5)} %  ${k}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const flag = (name: string): string | null => takeFlag(args, name);
  const profDir = flag('--prof');
  // --ab /other/checkout/bin/sluice.js: that build and this one, alternating.
  const other = flag('--ab');
  const bins = other === null ? [SLUICE_BIN] : [path.resolve(other), SLUICE_BIN];
  const connections = Number(flag('--connections') ?? 16);
  const queues = Number(flag('--queues') ?? 1);
  const warmup = Number(flag('--warmup') ?? 1);
  const keepAliveAt = args.indexOf('--keepalive');
  keepAlive = keepAliveAt >= 0;
  if (keepAlive) args.splice(keepAliveAt, 1);
  const syscallsAt = args.indexOf('--syscalls');
  const syscalls = syscallsAt >= 0;
  if (syscalls) args.splice(syscallsAt, 1);
  if (!Number.isInteger(warmup) || warmup < 1) throw new Error(`--warmup: expected a whole number of seconds, at least 1, got ${warmup}`);
  if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new Error(`--queues: expected a whole number from 1 to 64, got ${queues}`);
  const seconds = Number(args[0] ?? 5);
  const rounds = Number(args[1] ?? 3);
  if (profDir !== null) mkdirSync(profDir, { recursive: true });
  const before = profDir !== null ? new Set(readdirSync(profDir)) : new Set<string>();
  runConnSetupBench(seconds, rounds, connections, profDir === null ? null : path.resolve(profDir), bins, queues, warmup, syscalls).then(
    (r) => {
      bins.forEach((bin, b) => {
        if (bins.length > 1) console.log(`\n${bin}:`);
        printConnSetupRows(r.filter((_, i) => i % bins.length === b), seconds, connections, queues);
      });
      if (profDir !== null) {
        for (const f of readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile') && !before.has(f))) {
          console.log(`\nprofile ${path.join(profDir, f)}: top self time`);
          for (const line of topSelfTime(path.join(profDir, f))) console.log(`  ${line}`);
        }
      }
    },
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
