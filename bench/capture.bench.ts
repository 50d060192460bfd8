/**
 * What the capture link wrapper (src/link/capture.ts) costs per packet, CPU
 * time: a receive batch of 64 records handed on, and 64 packets reserved
 * and committed on the transmit side, through (a) a bare link, (b) the
 * wrapper with no capture running, (c) a capture whose filter matches
 * nothing, (d) a capture of every packet (queue drained each batch).
 *   node dist/bench/capture.bench.js [batches]
 */
import { pathToFileURL } from 'node:url';
import type { LinkEndpoint, LinkReceiver } from '../src/link/link.js';
import { recordSize, writeRecordLength } from '../src/link/records.js';
import { CaptureLink, parseCaptureFilter, type CaptureFilter } from '../src/link/capture.js';
import { tcpSegment } from '../test/stack/packets.js';

const BATCH = 64;

/** A link whose transmit path only moves an offset (the cheapest a real one could be). */
class NullLink implements LinkEndpoint {
  readonly name = 'null0';
  readonly mtu = 1500;
  readonly vnetHdr = false;
  readonly offloads = 0;
  readonly txBuffer = new Uint8Array(1 << 20);
  private at = 0;
  committed = 0;
  start(_r: LinkReceiver): void {}
  txReserve(maxLen: number): number {
    if (this.at + maxLen + 8 > this.txBuffer.length) this.at = 0;
    return this.at + 4;
  }
  txCommit(len: number): void {
    this.at += recordSize(len);
    this.committed++;
  }
  flush(): void {
    this.at = 0;
  }
  close(): void {}
}

function rxBatch(): { buf: Uint8Array; end: number; pkt: Uint8Array } {
  const pkt = tcpSegment({ srcPort: 40000, dstPort: 80, seq: 1, ack: 1, flags: 0x10, payload: new Uint8Array(1400) });
  const buf = new Uint8Array(BATCH * recordSize(pkt.length));
  let off = 0;
  for (let i = 0; i < BATCH; i++) {
    writeRecordLength(buf, off, pkt.length);
    buf.set(pkt, off + 4);
    off += recordSize(pkt.length);
  }
  return { buf, end: off, pkt };
}

interface Row {
  name: string;
  nsPerPacket: number;
}

function measure(name: string, link: LinkEndpoint & LinkReceiver | null, inner: NullLink, batches: number, drain: (() => void) | null): Row {
  const { buf, end, pkt } = rxBatch();
  let seen = 0;
  const receiver: LinkReceiver = { onBatch: (_b, n) => (seen += n), onLinkError: () => {} };
  const target: LinkEndpoint = link ?? inner;
  const rx: LinkReceiver = link ?? receiver;
  if (link !== null) link.start(receiver);
  const run = (n: number): void => {
    for (let b = 0; b < n; b++) {
      rx.onBatch(buf, BATCH, end);
      for (let i = 0; i < BATCH; i++) {
        const at = target.txReserve(pkt.length);
        target.txBuffer.set(pkt.subarray(0, 40), at); // headers only: the wrapper's cost, not a payload copy
        target.txCommit(pkt.length);
      }
      target.flush();
      drain?.();
    }
  };
  run(Math.min(2000, batches)); // warm up
  const t0 = process.cpuUsage();
  run(batches);
  const dt = process.cpuUsage(t0);
  void seen;
  return { name, nsPerPacket: ((dt.user + dt.system) * 1000) / (batches * BATCH * 2) };
}

export function runCaptureBench(batches = 50_000, reps = 5): Row[] {
  const rows: Row[][] = [];
  for (let r = 0; r < reps; r++) {
    const out: Row[] = [];
    out.push(measure('bare link', null, new NullLink(), batches, null));
    const idleInner = new NullLink();
    out.push(measure('capture wrapper, no capture', new CaptureLink(idleInner), idleInner, batches, null));
    const noneInner = new NullLink();
    const none = new CaptureLink(noneInner);
    none.capture({ filter: parseCaptureFilter('9') as CaptureFilter });
    out.push(measure('capture running, filter matches nothing', none, noneInner, batches, null));
    const allInner = new NullLink();
    const all = new CaptureLink(allInner);
    const cap = all.capture({ snaplen: 96, queueBytes: 1 << 20 });
    out.push(measure('capture running, every packet (96-byte snaplen)', all, allInner, batches, () => void cap.take()));
    rows.push(out);
  }
  // median over the repetitions
  return rows[0]!.map((row, i) => {
    const v = rows.map((rs) => rs[i]!.nsPerPacket).sort((a, b) => a - b);
    return { name: row.name, nsPerPacket: v[Math.floor(v.length / 2)]! };
  });
}

export function printCaptureRows(rows: Row[]): void {
  console.log('\ncapture link wrapper: CPU ns per packet (rx batch of 64 + 64 tx reserve/commit; median of 5 runs)');
  for (const r of rows) console.log(`  ${r.name.padEnd(50)} ${r.nsPerPacket.toFixed(1).padStart(8)} ns`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  printCaptureRows(runCaptureBench(Number(process.argv[2] ?? 50_000)));
}
