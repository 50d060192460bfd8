/**
 * sluice's CPU per GB of bulk at a fixed offered rate (issue 10, ask 3).
 * On a shared machine the throughput of an unlimited iperf3 run swings by
 * 2x between repetitions of one build, and with it how much work each
 * batch amortises; at a rate every build sustains (iperf3 -b), each one
 * moves the same bytes in the same time, so CPU time per GB (utime +
 * stime of the sluice process, all threads, from /proc/PID/stat) compares
 * builds rather than load. The standard three namespaces; `sluice run` in
 * the gateway as bench:peers runs it (gateway tun, the default policy, the
 * flow log on, TUN MTU 8500, offloads on); one iperf3 flow up, then down
 * (-R). `--ab` alternates builds round by round (a directory whose
 * bin/sluice.js sets an environment variable and imports another build's
 * is a variant too).
 *   sudo node dist/bench/bulk-cpu.bench.js [seconds] [rounds] [--rate 2G] [--mtu 8500] [--queues N] [--prof DIR] [--only up|down] [--ab OTHER/bin/sluice.js]
 */
import path from 'node:path';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { Lab, type Netns, type TestLike } from '../test/harness/netns.js';
import { threadCpu, threadSplit, type ThreadCpu } from './thread-cpu.js';
import { threeNamespaces, SERVER_V4 } from '../test/harness/topology.js';
import { SLUICE_BIN, TUN } from '../test/fixtures/engine/lab.js';
import { BenchContext, takeFlag } from './bench-lab.js';
import { median } from './peers-table.js';
import { cpuMicros, startGatewaySluice } from './conn-setup.bench.js';

export interface BulkCpuRound {
  bin: string;
  direction: 'up' | 'down';
  gbps: number;
  cpuMsPerGB: number;
  /** Packets sluice wrote to the TUN / read from it, per MB moved (super-packets count once): the syscalls behind the CPU. */
  tunWritesPerMB: number;
  tunReadsPerMB: number;
  /** Minor page faults of the sluice process per MB: the allocator giving memory back and taking it again. */
  faultsPerMB: number;
  /** CPU ms per GB by thread group (bench/thread-cpu.ts: main, each worker, V8's and libuv's helpers as `other`): where the time goes. */
  threads: Record<string, number>;
  load1: number;
}

/** Minor page faults of `pid` (all threads). */
function minorFaults(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
}

/** CPU ms per GB of each thread group (bench/thread-cpu.ts: main, sluice-q<N>, other) between two snapshots. */
function msPerGbByThread(pid: number, before: ThreadCpu, after: ThreadCpu, gb: number): Record<string, number> {
  const split = threadSplit(pid, before, after);
  return Object.fromEntries(Object.entries(split).map(([k, us]) => [k, Math.round(us / 1000 / gb)]));
}

/** --only up|down: one direction per round (the other's garbage and heap state then do not carry over). */
let DIRECTIONS: boolean[] = [false, true];

function config(mtu: number, queues: number | null): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN}, mtu: ${mtu}, offload: true${queues === null ? '' : `, queues: ${queues}`} }
dns: { fakeIp: { persistPath: null } }
gateway: { enabled: true, lan: [lan0], mode: tun }
`;
}

/** The TUN's packet counts in the gateway: the kernel's rx is what sluice wrote, its tx what sluice read. */
async function tunPackets(gateway: Netns): Promise<{ written: number; read: number }> {
  const out = await gateway.sh(`cat /sys/class/net/${TUN}/statistics/rx_packets /sys/class/net/${TUN}/statistics/tx_packets`);
  const [rx, tx] = out.trim().split(/\s+/).map(Number);
  return { written: rx!, read: tx! };
}

async function transfer(client: Netns, gateway: Netns, pid: number, seconds: number, rate: string, reverse: boolean): Promise<{ gbps: number; cpuMsPerGB: number; tunWritesPerMB: number; tunReadsPerMB: number; faultsPerMB: number; threads: Record<string, number> }> {
  const argv = ['iperf3', '-c', SERVER_V4, '-t', String(seconds), '-b', rate, '-i', '0', '-J', ...(reverse ? ['-R'] : [])];
  const p0 = await tunPackets(gateway);
  const c0 = cpuMicros(pid);
  const t0 = threadCpu(pid);
  const f0 = minorFaults(pid);
  const r = await client.exec(argv, { timeoutMs: (seconds + 30) * 1000, allowFail: true });
  const c1 = cpuMicros(pid);
  const t1 = threadCpu(pid);
  const f1 = minorFaults(pid);
  const p1 = await tunPackets(gateway);
  const j = JSON.parse(r.stdout || '{}') as { error?: string; end?: { sum_received?: { bytes: number; bits_per_second: number } } };
  const sum = j.end?.sum_received;
  if (j.error !== undefined || sum === undefined || sum.bytes === 0) throw new Error(`iperf3 ${reverse ? '-R ' : ''}failed: ${j.error ?? r.stderr.trim().slice(0, 300)}`);
  const mb = sum.bytes / 1e6;
  return { gbps: sum.bits_per_second / 1e9, cpuMsPerGB: (c1 - c0) / 1000 / (sum.bytes / 1e9), tunWritesPerMB: (p1.written - p0.written) / mb, tunReadsPerMB: (p1.read - p0.read) / mb, faultsPerMB: (f1 - f0) / mb, threads: msPerGbByThread(pid, t0, t1, sum.bytes / 1e9) };
}

async function oneRound(client: Netns, gateway: Netns, dir: string, bin: string, seconds: number, rate: string, mtu: number, queues: number | null, profDir: string | null): Promise<BulkCpuRound[]> {
  const engine = await startGatewaySluice(gateway, dir, config(mtu, queues), bin, profDir);
  try {
    const pid = engine.proc.pid!;
    // Warm-up: the JIT and the rings' first growth are not the steady state.
    await transfer(client, gateway, pid, 1, rate, false);
    const out: BulkCpuRound[] = [];
    for (const reverse of DIRECTIONS) {
      const m = await transfer(client, gateway, pid, seconds, rate, reverse);
      out.push({ bin, direction: reverse ? 'down' : 'up', ...m, load1: os.loadavg()[0]! });
      engine.lines.length = 0;
    }
    return out;
  } finally {
    await engine.stop(10_000);
  }
}

export async function runBulkCpuBench(seconds: number, rounds: number, rate: string, mtu: number, bins: string[], queues: number | null = null, profDir: string | null = null): Promise<BulkCpuRound[]> {
  const ctx = new BenchContext();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-bulkcpu-'));
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'bulkcpu');
    const { client, gateway, server } = await threeNamespaces(lab);
    await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
    server.spawn(['iperf3', '-s']);
    await new Promise((r) => setTimeout(r, 500));
    const out: BulkCpuRound[] = [];
    for (let i = 0; i < rounds * bins.length; i++) {
      const rows = await oneRound(client, gateway, dir, bins[i % bins.length]!, seconds, rate, mtu, queues, profDir);
      for (const row of rows) process.stderr.write(`round ${i + 1}: ${JSON.stringify(row)}\n`);
      out.push(...rows);
    }
    return out;
  } finally {
    await ctx.finish();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const flag = (name: string): string | null => takeFlag(args, name);
  const other = flag('--ab');
  const rate = flag('--rate') ?? '2G';
  const mtu = Number(flag('--mtu') ?? 8500);
  // --queues N writes tun.queues: N into the config; without it the build's default applies (an old build may not know the key).
  const queuesArg = flag('--queues');
  const queues = queuesArg === null ? null : Number(queuesArg);
  // --prof DIR: sluice under node --cpu-prof (one profile per thread and round, written at exit).
  const only = flag('--only');
  if (only !== null) DIRECTIONS = [only === 'down'];
  const profArg = flag('--prof');
  const profDir = profArg === null ? null : path.resolve(profArg);
  if (profDir !== null) mkdirSync(profDir, { recursive: true });
  const bins = other === null ? [SLUICE_BIN] : [path.resolve(other), SLUICE_BIN];
  const seconds = Number(args[0] ?? 10);
  const rounds = Number(args[1] ?? 3);
  runBulkCpuBench(seconds, rounds, rate, mtu, bins, queues, profDir).then(
    (rows) => {
      console.log(`sluice CPU ms per GB at iperf3 -b ${rate}, 1 flow, TUN MTU ${mtu}, tun.queues ${queues ?? 'default'}, ${seconds} s, ${rounds} rounds (medians; every round above)`);
      for (const bin of bins) {
        for (const direction of ['up', 'down'] as const) {
          const mine = rows.filter((r) => r.bin === bin && r.direction === direction);
          if (mine.length === 0) continue; // --only the other direction
          console.log(`  ${bin} ${direction}: ${median(mine.map((r) => r.cpuMsPerGB)).toFixed(0)} ms/GB at ${median(mine.map((r) => r.gbps)).toFixed(2)} Gbit/s (rounds ${mine.map((r) => r.cpuMsPerGB.toFixed(0)).join(' ')}; TUN writes/MB ${median(mine.map((r) => r.tunWritesPerMB)).toFixed(1)}, reads/MB ${median(mine.map((r) => r.tunReadsPerMB)).toFixed(1)}, faults/MB ${median(mine.map((r) => r.faultsPerMB)).toFixed(1)}; load ${mine.map((r) => r.load1.toFixed(1)).join(' ')})`);
        }
      }
    },
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
