/**
 * TUN read benchmark: a kernel TCP sender in a network namespace pushes a
 * bulk transfer into a TUN; the batch reader (native addon -> one JS call
 * per batch) takes every packet and a minimal receiver ACKs once per batch.
 * Reports packets/s and bytes/s through the reader, per configuration.
 *   sudo node dist/bench/tun.bench.js [megabytes]
 */
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Lab, waitForJsonLine, type TestLike } from '../test/harness/netns.js';
import { BenchContext } from './bench-lab.js';
import { printRows, type BenchRow } from './wire.bench.js';

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test/fixtures/tun-responder.js');

interface Summary {
  bytes: number;
  rxPackets: number;
  rxBatches: number;
  superPackets: number;
}

async function measure(megabytes: number, mtu: number, offload: boolean, split: boolean): Promise<BenchRow[]> {
  const ctx = new BenchContext();
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'tunbench');
    const ns = await lab.netns('host');
    const args = [process.execPath, fixture, '--name', 'sl0', '--mtu', String(mtu)];
    if (offload) args.push('--offload');
    if (!split) args.push('--no-split');
    const child = ns.spawn(args);
    await waitForJsonLine(child, (m: { event?: string }) => m.event === 'ready');
    await ns.ipBatch(['addr add 198.51.100.1/24 dev sl0', 'route add 203.0.113.0/24 dev sl0']);
    const done = waitForJsonLine<Summary & { event: string }>(child, (m) => m.event === 'tcp-summary', 120_000);
    const bytes = megabytes * 1024 * 1024;
    const start = process.hrtime.bigint();
    await ns.exec(['bash', '-c', `head -c ${bytes} /dev/zero > /dev/tcp/203.0.113.7/9000`], { timeoutMs: 120_000 });
    const s = await done;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const label = `MTU ${mtu}${offload ? (split ? ', offload + gsoSplit' : ', offload (super-packets whole)') : ''}`;
    return [
      { name: `${label}: throughput`, value: (s.bytes * 8) / seconds / 1e9, unit: 'Gbit/s' },
      { name: `${label}: packets read`, value: s.rxPackets / seconds / 1e3, unit: 'kpps' },
      { name: `${label}: packets per JS call`, value: s.rxPackets / s.rxBatches, unit: 'pkt/batch' },
    ];
  } finally {
    await ctx.finish();
  }
}

export async function runTunBench(megabytes = 1024): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  rows.push(...(await measure(megabytes, 1500, false, false)));
  rows.push(...(await measure(megabytes, 9000, false, false)));
  rows.push(...(await measure(megabytes, 1500, true, false)));
  rows.push(...(await measure(megabytes, 1500, true, true)));
  return rows;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const mb = Number(process.argv[2] ?? 1024);
  runTunBench(mb).then(
    (rows) => printRows(`TUN batch reader, kernel TCP sender, ${mb} MiB per run`, rows),
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
