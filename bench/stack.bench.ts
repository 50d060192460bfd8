/**
 * End-to-end benchmark in namespaces: client -> gateway -> server, first
 * routed by the kernel (the baseline), then steered into sluice's stack on
 * a TUN in the gateway with a relay to the original destination. iperf3
 * single-flow and 8-flow throughput in both directions, at MTU 1500 with
 * and without TUN offloads.
 *   sudo node dist/bench/stack.bench.js [seconds]
 */
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Lab, waitForJsonLine, type Netns, type TestLike } from '../test/harness/netns.js';
import { threeNamespaces, steerIntoTun, SERVER_V4, STEER_PRIORITY, STEER_TABLE } from '../test/harness/topology.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const relay = path.resolve(here, '../test/fixtures/stack-relay.js');

class BenchContext {
  readonly hooks: (() => unknown)[] = [];
  teardown(fn: () => unknown): void {
    this.hooks.push(fn);
  }
  plan(): void {}
  comment(): void {}
  async finish(): Promise<void> {
    for (const fn of this.hooks.reverse()) await fn();
  }
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
}

export async function runStackBench(seconds = 5): Promise<StackRow[]> {
  const ctx = new BenchContext();
  const rows: StackRow[] = [];
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'stackbench');
    const { client, gateway, server } = await threeNamespaces(lab);
    server.spawn(['iperf3', '-s']);
    await new Promise((r) => setTimeout(r, 500));
    const measure = async (name: string): Promise<void> => {
      rows.push({
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
  } finally {
    await ctx.finish();
  }
  return rows;
}

export function printStackRows(rows: StackRow[]): void {
  const f = (v: number) => (Number.isNaN(v) ? '  fail' : v.toFixed(2).padStart(6));
  console.log('\niperf3 through the gateway namespace, Gbit/s (client->server = up, -R = down)');
  console.log(`  ${'path'.padEnd(40)} ${'1 up'.padStart(6)} ${'1 down'.padStart(6)} ${'8 up'.padStart(6)} ${'8 down'.padStart(6)}`);
  for (const r of rows) console.log(`  ${r.path.padEnd(40)} ${f(r.up1)} ${f(r.down1)} ${f(r.up8)} ${f(r.down8)}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runStackBench(Number(process.argv[2] ?? 5)).then(printStackRows, (err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
