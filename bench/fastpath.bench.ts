/**
 * The fast-path benchmark (issue 14): one run, the same client / gateway /
 * server namespaces, sluice in the gateway steering the client's traffic
 * four ways, plus the workstation's own direct traffic with and without
 * route.kernelPath:
 *   kernel          classifier + gateway, the server's prefix direct: forwarded by the kernel
 *   TUN             gateway.mode tun (the userspace stack)
 *   nftables TPROXY gateway.mode tproxy
 *   eBPF TPROXY     gateway.mode tproxy-ebpf (bpf_sk_assign)
 *   workstation direct, route.auto without / with route.kernelPath
 * Each row: bulk (iperf3 -t SECONDS, receiver's rate), connection rate
 * (16 concurrent loops of connect, one small HTTP request and response,
 * close, for 3 s; a request the sniffer recognises at once) and
 * sluice's CPU time per GB of the bulk run (utime + stime of the sluice
 * process from /proc/PID/stat; kernel forwarding and TPROXY work done in
 * softirq context is not in it, which is the point: it is what sluice
 * costs).
 *   sudo node dist/bench/fastpath.bench.js [seconds] [rounds]
 */
import path from 'node:path';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { Lab, waitForJsonLine, type Netns, type TestLike } from '../test/harness/netns.js';
import { BenchContext, CONN_CLIENT, CONN_SERVER, cpuSeconds } from './bench-lab.js';
import { threeNamespaces, SERVER_V4 } from '../test/harness/topology.js';
import { childEnv, Engine, SLUICE_BIN, TUN } from '../test/fixtures/engine/lab.js';

export interface FastPathRow {
  name: string;
  gbps: number;
  connPerSec: number;
  cpuMsPerGB: number;
  seconds: number;
}

function cpuMs(pid: number): number {
  return cpuSeconds(pid) * 1000;
}

async function measureFrom(client: Netns, host: string, pid: number | null, seconds: number, name: string): Promise<FastPathRow> {
  const c0 = pid !== null ? cpuMs(pid) : 0;
  const r = await client.exec(['iperf3', '-c', host, '-t', String(seconds), '-J'], { timeoutMs: (seconds + 30) * 1000 });
  const c1 = pid !== null ? cpuMs(pid) : 0;
  const j = JSON.parse(r.stdout) as { end: { sum_received: { bytes: number; bits_per_second: number } } };
  const conn = await client.exec([process.execPath, '-e', CONN_CLIENT, host, '3000'], { timeoutMs: 30_000, env: { ...process.env, NODE_OPTIONS: '' } });
  const cr = JSON.parse(conn.stdout.trim()) as { done: number; failed: number };
  process.stderr.write(`${name}: ${JSON.stringify(cr)}\n`);
  return { name, gbps: j.end.sum_received.bits_per_second / 1e9, connPerSec: cr.done / 3, cpuMsPerGB: ((c1 - c0) / j.end.sum_received.bytes) * 1e9, seconds };
}

async function startSluice(ns: Netns, dir: string, yaml: string): Promise<Engine> {
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, yaml);
  const engine = new Engine(ns.spawn(['env', '-u', 'NODE_OPTIONS', process.execPath, SLUICE_BIN, 'run', '--config', cfg, '--state', path.join(dir, 'state.json')], { env: childEnv }));
  await engine.waitFor((l) => l.msg === 'ready', 30_000, '"ready"');
  return engine;
}

const BASE = `
log: { level: info, format: json }
tun: { name: ${TUN}, queues: 1 }
dns: { mode: real-ip, hijack: false }
route: { table: 2022, priority: 9000 }
`;

async function gatewayRows(seconds: number): Promise<FastPathRow[]> {
  const ctx = new BenchContext();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-fastpath-'));
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'fpbench');
    const { client, gateway, server } = await threeNamespaces(lab);
    await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
    server.spawn(['iperf3', '-s']);
    const cs = server.spawn([process.execPath, '-e', CONN_SERVER], { env: { ...process.env, NODE_OPTIONS: '' } });
    await waitForJsonLine(cs, (m: { event?: string }) => m.event === 'ready');
    await new Promise((r) => setTimeout(r, 500));
    writeFileSync(path.join(dir, 'fast.txt'), '203.0.113.0/24\n');
    const setups: [string, string][] = [
      [
        'kernel (classifier + gateway, direct prefix)',
        `${BASE}ruleSets: { fast: { type: cidr, path: ${path.join(dir, 'fast.txt')} } }\nrules:\n  - { ruleSet: [fast], outbound: direct }\n  - { domainSuffix: [never.example], outbound: direct }\ngateway: { enabled: true, lan: [lan0], mode: tun }\nclassifier: { enabled: true }\n`,
      ],
      // TUN before the TPROXY rows: a TPROXY row leaves thousands of TIME-WAIT sockets in the gateway's
      // kernel (its transparent socket, the server's side to the client, closes first; 60 s each). A
      // client SYN whose 4-tuple matches one is early-demuxed to it and then dropped by ip_forward
      // ("if (unlikely(skb->sk)) goto drop;", net/ipv4/ip_forward.c) instead of being routed into the
      // TUN: every connection reusing such a port stalls until the client's timeout. The TPROXY rows
      // themselves are not hurt (nf_tproxy hands a SYN for a TIME-WAIT socket to the listener), and
      // a TUN row leaves no TIME-WAIT in the gateway's kernel (sluice's stack is the one that closes).
      ['TUN (gateway.mode tun)', `${BASE}gateway: { enabled: true, lan: [lan0], mode: tun }\n`],
      ['nftables TPROXY (gateway.mode tproxy)', `${BASE}gateway: { enabled: true, lan: [lan0], mode: tproxy }\n`],
      ['eBPF TPROXY (gateway.mode tproxy-ebpf)', `${BASE}gateway: { enabled: true, lan: [lan0], mode: tproxy-ebpf }\n`],
    ];
    const rows: FastPathRow[] = [];
    for (const [name, yaml] of setups) {
      const engine = await startSluice(gateway, dir, yaml);
      await gateway.sh(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0`);
      try {
        rows.push(await measureFrom(client, SERVER_V4, engine.proc.pid!, seconds, name));
      } finally {
        await engine.stop();
      }
    }
    return rows;
  } finally {
    await ctx.finish();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function workstationRows(seconds: number): Promise<FastPathRow[]> {
  const ctx = new BenchContext();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-fastpath-'));
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'fpbenchw');
    const ws = await lab.netns('workstation');
    const server = await lab.netns('server');
    await lab.veth(ws, 'eth0', server, 'eth0', { a: ['203.0.113.1/24'], b: ['203.0.113.2/24', '203.0.113.130/24'] });
    server.spawn(['iperf3', '-s']);
    const cs = server.spawn([process.execPath, '-e', CONN_SERVER], { env: { ...process.env, NODE_OPTIONS: '' } });
    await waitForJsonLine(cs, (m: { event?: string }) => m.event === 'ready');
    await new Promise((r) => setTimeout(r, 500));
    const rows: FastPathRow[] = [];
    for (const kernelPath of [false, true]) {
      const yaml = `${BASE.replace('route: { table: 2022, priority: 9000 }', `route: { auto: true, table: 2022, priority: 9000, kernelPath: ${kernelPath} }`)}rules:\n  - { ipCidr: [203.0.113.128/25], outbound: direct }\n  - { domainSuffix: [never.example], outbound: direct }\n`;
      const engine = await startSluice(ws, dir, yaml);
      try {
        rows.push(await measureFrom(ws, '203.0.113.130', engine.proc.pid!, seconds, `workstation direct, route.kernelPath ${kernelPath ? 'on' : 'off'}`));
      } finally {
        await engine.stop();
      }
    }
    return rows;
  } finally {
    await ctx.finish();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `reps` rounds of every row; each row reports the median round (by bulk rate) and the spread. */
export async function runFastPathBench(seconds = 5, reps = 1): Promise<(FastPathRow & { spread: string })[]> {
  const rounds: FastPathRow[][] = [];
  for (let i = 0; i < reps; i++) rounds.push([...(await gatewayRows(seconds)), ...(await workstationRows(seconds))]);
  return rounds[0]!.map((_, i) => {
    const all = rounds.map((r) => r[i]!);
    const med = (f: (r: FastPathRow) => number): number => {
      const v = all.map(f).sort((a, b) => a - b);
      return v[Math.floor(v.length / 2)]!;
    };
    const range = (f: (r: FastPathRow) => number, d: number): string => `${Math.min(...all.map(f)).toFixed(d)}-${Math.max(...all.map(f)).toFixed(d)}`;
    return {
      name: all[0]!.name,
      seconds,
      gbps: med((r) => r.gbps),
      connPerSec: med((r) => r.connPerSec),
      cpuMsPerGB: med((r) => r.cpuMsPerGB),
      spread: reps > 1 ? `${range((r) => r.gbps, 2)} Gbit/s, ${range((r) => r.connPerSec, 0)} conn/s, ${range((r) => r.cpuMsPerGB, 0)} ms/GB` : '',
    };
  });
}

export function printFastPathRows(rows: (FastPathRow & { spread?: string })[]): void {
  console.log(`\nfast path: bulk (iperf3 -t ${rows[0]?.seconds ?? '?'}), connection rate (16 loops, 3 s), sluice CPU per GB of the bulk run (medians)`);
  console.log(`  ${'path'.padEnd(48)} ${'bulk Gbit/s'.padStart(11)} ${'conn/s'.padStart(8)} ${'CPU ms/GB'.padStart(10)}  spread`);
  for (const r of rows) console.log(`  ${r.name.padEnd(48)} ${r.gbps.toFixed(2).padStart(11)} ${r.connPerSec.toFixed(0).padStart(8)} ${r.cpuMsPerGB.toFixed(0).padStart(10)}  ${r.spread ?? ''}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runFastPathBench(Number(process.argv[2] ?? 5), Number(process.argv[3] ?? 1)).then(printFastPathRows, (err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
