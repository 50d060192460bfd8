/**
 * The multi-queue benchmark (issue 10, "every core"): the same client /
 * gateway / server namespaces, sluice in the gateway (gateway.mode tun,
 * flow log on) at tun.queues 1 and at N, in one run:
 *   8 flows up     iperf3 -P 8 -t SECONDS (receiver's rate)
 *   8 flows down   iperf3 -P 8 -R -t SECONDS
 *   conn/s         16 concurrent loops of connect, one small request, close (3 s)
 * and sluice's CPU time per GB of each bulk run (utime + stime of the whole
 * process, every thread, from /proc/PID/stat).
 *   sudo node dist/bench/workers.bench.js [seconds] [rounds] [N]
 * Prints the medians of `rounds` runs per row and the load average before
 * and after (the machine is shared: read the figures against it).
 */
import path from 'node:path';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { Lab, waitForJsonLine, type Netns, type TestLike } from '../test/harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../test/harness/topology.js';
import { childEnv, Engine, SLUICE_BIN, TUN } from '../test/fixtures/engine/lab.js';
import { BenchContext, CONN_CLIENT, CONN_SERVER, cpuSeconds } from './bench-lab.js';

export interface WorkersRow {
  queues: number;
  upGbps: number;
  downGbps: number;
  upCpuMsPerGB: number;
  downCpuMsPerGB: number;
  connPerSec: number;
}

function cpuMs(pid: number): number {
  return cpuSeconds(pid) * 1000;
}

async function bulk(client: Netns, pid: number, seconds: number, reverse: boolean): Promise<{ gbps: number; cpuMsPerGB: number }> {
  const c0 = cpuMs(pid);
  const r = await client.exec(['iperf3', '-c', SERVER_V4, '-P', '8', '-t', String(seconds), '-J', ...(reverse ? ['-R'] : [])], { timeoutMs: (seconds + 30) * 1000 });
  const c1 = cpuMs(pid);
  const j = JSON.parse(r.stdout) as { end: { sum_received: { bytes: number; bits_per_second: number } } };
  return { gbps: j.end.sum_received.bits_per_second / 1e9, cpuMsPerGB: ((c1 - c0) / j.end.sum_received.bytes) * 1e9 };
}

async function startSluice(ns: Netns, dir: string, yaml: string): Promise<Engine> {
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, yaml);
  const engine = new Engine(ns.spawn(['env', '-u', 'NODE_OPTIONS', process.execPath, SLUICE_BIN, 'run', '--config', cfg, '--state', path.join(dir, 'state.json')], { env: { ...childEnv, SLUICE_TEST_TUN_QUEUES: '' } }));
  await engine.waitFor((l) => l.msg === 'ready', 60_000, '"ready"');
  return engine;
}

const config = (queues: number): string => `
log: { level: info, format: json }
tun: { name: ${TUN}, mtu: 8500, queues: ${queues} }
dns: { mode: real-ip, hijack: false }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tun }
api: { listen: null }
`;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

export async function runWorkersBench(seconds = 5, rounds = 3, n = Math.max(2, os.availableParallelism())): Promise<WorkersRow[]> {
  const ctx = new BenchContext();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-workers-'));
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'wqbench');
    const { client, gateway, server } = await threeNamespaces(lab);
    await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
    for (const ns of [client, gateway, server]) await ns.sh('for d in $(ls /sys/class/net); do ip link set dev $d mtu 8500 2>/dev/null || true; done');
    server.spawn(['iperf3', '-s']);
    const cs = server.spawn([process.execPath, '-e', CONN_SERVER], { env: { ...process.env, NODE_OPTIONS: '' } });
    await waitForJsonLine(cs, (m: { event?: string }) => m.event === 'ready');
    await new Promise((r) => setTimeout(r, 500));
    const samples = new Map<number, WorkersRow[]>();
    for (let round = 0; round < rounds; round++) {
      // Alternate which count goes first, so a change in the machine's load hurts both alike.
      for (const q of round % 2 === 0 ? [1, n] : [n, 1]) {
        const engine = await startSluice(gateway, dir, config(q));
        await gateway.sh(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0`);
        try {
          const pid = engine.proc.pid!;
          const up = await bulk(client, pid, seconds, false);
          const down = await bulk(client, pid, seconds, true);
          const conn = await client.exec([process.execPath, '-e', CONN_CLIENT, SERVER_V4, '3000'], { timeoutMs: 30_000, env: { ...process.env, NODE_OPTIONS: '' } });
          const cr = JSON.parse(conn.stdout.trim()) as { done: number; failed: number };
          const row = { queues: q, upGbps: up.gbps, downGbps: down.gbps, upCpuMsPerGB: up.cpuMsPerGB, downCpuMsPerGB: down.cpuMsPerGB, connPerSec: cr.done / 3 };
          process.stderr.write(`round ${round + 1}, queues ${q}: ${JSON.stringify(row)}\n`);
          const list = samples.get(q) ?? [];
          list.push(row);
          samples.set(q, list);
        } finally {
          await engine.stop();
        }
      }
    }
    return [...samples.entries()].map(([q, rs]) => ({
      queues: q,
      upGbps: median(rs.map((r) => r.upGbps)),
      downGbps: median(rs.map((r) => r.downGbps)),
      upCpuMsPerGB: median(rs.map((r) => r.upCpuMsPerGB)),
      downCpuMsPerGB: median(rs.map((r) => r.downCpuMsPerGB)),
      connPerSec: median(rs.map((r) => r.connPerSec)),
    }));
  } finally {
    await ctx.finish();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function printWorkersRows(rows: WorkersRow[], seconds: number, rounds: number, load: string): void {
  console.log(`\ntun.queues: 8 flows (iperf3 -P 8 -t ${seconds}, TUN MTU 8500, offloads on, flow log on), connection rate (16 loops, 3 s), sluice CPU (all threads) per GB; medians of ${rounds}; load average ${load}`);
  console.log('| queues | 8 flows up Gbit/s | 8 flows down Gbit/s | CPU ms/GB up | CPU ms/GB down | new conn/s |');
  console.log('|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.queues} | ${r.upGbps.toFixed(2)} | ${r.downGbps.toFixed(2)} | ${r.upCpuMsPerGB.toFixed(0)} | ${r.downCpuMsPerGB.toFixed(0)} | ${r.connPerSec.toFixed(0)} |`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const seconds = Number(process.argv[2] ?? 5);
  const rounds = Number(process.argv[3] ?? 3);
  const n = Number(process.argv[4] ?? Math.max(2, os.availableParallelism()));
  const before = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const rows = await runWorkersBench(seconds, rounds, n);
  const after = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  printWorkersRows(rows, seconds, rounds, `${before} before, ${after} after`);
}
