/**
 * End-to-end benchmark in namespaces: client -> gateway -> server, first
 * routed by the kernel (the baseline), then steered into sluice's stack on
 * a TUN in the gateway with a relay to the original destination, then
 * through `sluice run` in gateway mode tproxy (nftables TPROXY to its
 * transparent listener, the engine relaying direct; no TUN, no userspace
 * TCP). iperf3 single-flow and 8-flow throughput in both directions, at MTU
 * 1500 with and without TUN offloads.
 *   sudo node dist/bench/stack.bench.js [seconds]
 */
import path from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Lab, waitForJsonLine, type Netns, type TestLike } from '../test/harness/netns.js';
import { BenchContext } from './bench-lab.js';
import { threeNamespaces, steerIntoTun, SERVER_V4, STEER_PRIORITY, STEER_TABLE } from '../test/harness/topology.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const relay = path.resolve(here, '../test/fixtures/stack-relay.js');
const holder = path.resolve(here, '../test/fixtures/conn-holder.js');
const sluiceBin = path.resolve(here, '../../bin/sluice.js');

/**
 * The TPROXY row's config: gateway mode tproxy on lan0, everything direct,
 * no DNS hijack, sniffing off (iperf3 and the holder speak no TLS/HTTP, and
 * the row measures the steering and relay path), flow lines off (warn).
 */
const TPROXY_CONFIG = `
log: { level: warn, format: json }
tun: { name: sl0, queues: 1 }
sniff: { timeoutMs: 0 }
dns: { mode: real-ip, hijack: false, upstreams: [ { address: "udp://${SERVER_V4}:53" } ] }
gateway: { enabled: true, lan: [lan0], mode: tproxy }
`;

/** New connections per second through the path (each one connects upstream too). */
async function connectionRate(client: Netns, count: number): Promise<number> {
  const p = client.spawn([process.execPath, holder, 'rate', SERVER_V4, '9000', String(count)]);
  const r = await waitForJsonLine<{ event: string; perSecond: number }>(p, (m) => m.event === 'rate', 120_000).catch(() => ({ perSecond: NaN }));
  return r.perSecond;
}

/** Round trips of 64 bytes on one connection: p50 and p99 in microseconds. */
async function latency(client: Netns, count: number): Promise<{ p50: number; p99: number }> {
  const p = client.spawn([process.execPath, holder, 'latency', SERVER_V4, '9000', String(count)]);
  return waitForJsonLine<{ event: string; p50: number; p99: number }>(p, (m) => m.event === 'latency', 60_000).catch(() => ({ p50: NaN, p99: NaN }));
}

async function iperf(client: Netns, seconds: number, streams: number, reverse: boolean): Promise<number> {
  const args = ['iperf3', '-c', SERVER_V4, '-t', String(seconds), '-P', String(streams), '-J'];
  if (reverse) args.push('-R');
  const res = await client.exec(args, { timeoutMs: (seconds + 30) * 1000, allowFail: true });
  try {
    const j = JSON.parse(res.stdout) as { end: { sum_received: { bits_per_second: number } } };
    return j.end.sum_received.bits_per_second / 1e9;
  } catch {
    return NaN;
  }
}

export interface StackRow {
  path: string;
  up1: number;
  down1: number;
  up8: number;
  down8: number;
  connPerSecond: number;
  p50us: number;
  p99us: number;
}

export async function runStackBench(seconds = 5): Promise<StackRow[]> {
  const ctx = new BenchContext();
  const rows: StackRow[] = [];
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'stackbench');
    const { client, gateway, server } = await threeNamespaces(lab);
    server.spawn(['iperf3', '-s']);
    const echo = server.spawn([process.execPath, holder, 'server', '9000']);
    await waitForJsonLine(echo, (m: { event?: string }) => m.event === 'ready');
    await new Promise((r) => setTimeout(r, 500));
    const measure = async (name: string): Promise<void> => {
      const lat = await latency(client, 5000);
      rows.push({
        connPerSecond: await connectionRate(client, 5000),
        p50us: lat.p50,
        p99us: lat.p99,
        path: name,
        up1: await iperf(client, seconds, 1, false),
        down1: await iperf(client, seconds, 1, true),
        up8: await iperf(client, seconds, 8, false),
        down8: await iperf(client, seconds, 8, true),
      });
    };
    await measure('kernel routing (baseline)');
    for (const offload of [false, true]) {
      const args = [process.execPath, relay, '--name', 'sl0'];
      if (offload) args.push('--offload');
      const gw = gateway.spawn(args);
      await waitForJsonLine(gw, (m: { event?: string }) => m.event === 'ready');
      await steerIntoTun(gateway, 'sl0');
      await measure(`sluice stack, MTU 1500${offload ? ', TUN offloads' : ''}`);
      gw.kill('SIGTERM');
      await new Promise((r) => gw.once('exit', r));
      await gateway.exec(['ip', 'rule', 'del', 'priority', String(STEER_PRIORITY)], { allowFail: true });
      await gateway.exec(['ip', '-6', 'rule', 'del', 'priority', String(STEER_PRIORITY)], { allowFail: true });
      await gateway.exec(['ip', 'route', 'flush', 'table', String(STEER_TABLE)], { allowFail: true });
      await gateway.exec(['ip', '-6', 'route', 'flush', 'table', String(STEER_TABLE)], { allowFail: true });
    }
    const dir = mkdtempSync(path.join(tmpdir(), 'sluice-bench-tproxy-'));
    ctx.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const cfg = path.join(dir, 'sluice.yaml');
    writeFileSync(cfg, TPROXY_CONFIG);
    const sl = gateway.spawn([process.execPath, sluiceBin, 'run', '--config', cfg, '--state', path.join(dir, 'state.json')], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    // The nftables table is installed last, after the listener: its presence means ready.
    for (let i = 0; ; i++) {
      if ((await gateway.exec(['nft', 'list', 'table', 'inet', 'sluice_gw'], { allowFail: true })).code === 0) break;
      if (sl.exitCode !== null || i > 200) throw new Error('sluice run (gateway tproxy) did not come up');
      await new Promise((r) => setTimeout(r, 50));
    }
    await measure('sluice TPROXY path');
    sl.kill('SIGTERM');
    await new Promise((r) => (sl.exitCode !== null ? r(null) : sl.once('exit', r)));
  } finally {
    await ctx.finish();
  }
  return rows;
}

export function printStackRows(rows: StackRow[]): void {
  const f = (v: number) => (Number.isNaN(v) ? '  fail' : v.toFixed(2).padStart(6));
  const n = (v: number, w: number) => (Number.isNaN(v) ? 'fail'.padStart(w) : String(v).padStart(w));
  console.log('\nthrough the gateway namespace: iperf3 Gbit/s (client->server = up, -R = down), new connections/s, 64-byte round trip µs');
  console.log(`  ${'path'.padEnd(40)} ${'1 up'.padStart(6)} ${'1 down'.padStart(6)} ${'8 up'.padStart(6)} ${'8 down'.padStart(6)} ${'conn/s'.padStart(7)} ${'p50'.padStart(5)} ${'p99'.padStart(5)}`);
  for (const r of rows) console.log(`  ${r.path.padEnd(40)} ${f(r.up1)} ${f(r.down1)} ${f(r.up8)} ${f(r.down8)} ${n(r.connPerSecond, 7)} ${n(r.p50us, 5)} ${n(r.p99us, 5)}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runStackBench(Number(process.argv[2] ?? 5)).then(printStackRows, (err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
