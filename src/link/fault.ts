/**
 * A fault injector for tests: a link wrapper that drops, corrupts (one byte
 * of the IP packet changed) and reorders (a packet held back until after
 * the next one) packets in either direction, chosen by a seeded generator,
 * so a failing run replays exactly. What it did is counted.
 *
 * Received batches are rebuilt in the injector's own buffer (the records
 * are valid only during the call, as from any link); transmitted packets
 * are written into the injector's buffer and copied on to the inner link's
 * batch unless dropped or held.
 */
import type { LinkEndpoint } from './link.js';
import { ForwardingLink } from './forwarding.js';
import { readRecordLength, recordSize, writeRecordLength } from './records.js';

export interface FaultOptions {
  /** Seed of the generator (any 32-bit integer). */
  seed: number;
  /** Probabilities per packet, 0..1, each direction alike. Defaults 0. */
  drop?: number;
  corrupt?: number;
  reorder?: number;
  /** Which direction suffers: into the stack (rx), out of it (tx), or both (default). */
  direction?: 'rx' | 'tx' | 'both';
}

export interface FaultCounters {
  rxDropped: number;
  rxCorrupted: number;
  rxReordered: number;
  txDropped: number;
  txCorrupted: number;
  txReordered: number;
}

/** mulberry32: small, fast, good enough to pick faults; the same seed gives the same run. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const NONE = 0;
const DROP = 1;
const CORRUPT = 2;
const REORDER = 3;

export class FaultInjector extends ForwardingLink {
  readonly counters: FaultCounters = { rxDropped: 0, rxCorrupted: 0, rxReordered: 0, txDropped: 0, txCorrupted: 0, txReordered: 0 };
  /** Where the stack writes a packet; copied on to the inner link unless dropped or held. */
  private readonly tx: Uint8Array;
  private readonly random: () => number;
  private readonly rx: Uint8Array;
  private readonly onRx: boolean;
  private readonly onTx: boolean;
  /** A packet held back (reordered) in each direction, sent after the next one. */
  private heldRx: Uint8Array | null = null;
  private heldTx: Uint8Array | null = null;

  constructor(
    inner: LinkEndpoint,
    private readonly o: FaultOptions,
  ) {
    super(inner);
    this.random = generator(o.seed);
    this.tx = new Uint8Array(inner.txBuffer.length);
    this.rx = new Uint8Array(4 << 20);
    const dir = o.direction ?? 'both';
    this.onRx = dir !== 'tx';
    this.onTx = dir !== 'rx';
  }

  override get txBuffer(): Uint8Array {
    return this.tx;
  }

  private pick(): number {
    const r = this.random();
    const drop = this.o.drop ?? 0;
    const corrupt = this.o.corrupt ?? 0;
    const reorder = this.o.reorder ?? 0;
    if (r < drop) return DROP;
    if (r < drop + corrupt) return CORRUPT;
    if (r < drop + corrupt + reorder) return REORDER;
    return NONE;
  }

  /** Changes one byte of the IP packet in buf[off, off+len) (never to its own value). */
  private corrupt(buf: Uint8Array, off: number, len: number): void {
    if (len <= this.skip) return;
    const at = off + this.skip + Math.floor(this.random() * (len - this.skip));
    buf[at] = buf[at]! ^ (1 + Math.floor(this.random() * 255));
  }

  onBatch(buf: Uint8Array, count: number, _end: number): void {
    if (!this.onRx) {
      this.receiver!.onBatch(buf, count, _end);
      return;
    }
    const out = this.rx;
    let w = 0;
    let n = 0;
    const put = (src: Uint8Array, off: number, len: number): void => {
      writeRecordLength(out, w, len);
      out.set(src.subarray(off, off + len), w + 4);
      w += recordSize(len);
      n++;
    };
    let off = 0;
    for (let i = 0; i < count; i++) {
      const len = readRecordLength(buf, off);
      const at = off + 4;
      off += recordSize(len);
      const f = this.pick();
      if (f === DROP) {
        this.counters.rxDropped++;
        continue;
      }
      if (f === REORDER && this.heldRx === null) {
        this.counters.rxReordered++;
        this.heldRx = buf.slice(at, at + len);
        continue;
      }
      put(buf, at, len);
      if (f === CORRUPT) {
        this.counters.rxCorrupted++;
        this.corrupt(out, w - recordSize(len) + 4, len);
      }
      if (this.heldRx !== null) {
        put(this.heldRx, 0, this.heldRx.length);
        this.heldRx = null;
      }
    }
    if (n > 0) this.receiver!.onBatch(out, n, w);
  }

  txReserve(_maxLen: number): number {
    // One packet at a time: it is committed (copied on) before the next reserve.
    return 0;
  }

  txCommit(len: number): void {
    const f = this.onTx ? this.pick() : NONE;
    if (f === DROP) {
      this.counters.txDropped++;
      return;
    }
    if (f === REORDER && this.heldTx === null) {
      this.counters.txReordered++;
      this.heldTx = this.tx.slice(0, len);
      return;
    }
    if (f === CORRUPT) {
      this.counters.txCorrupted++;
      this.corrupt(this.tx, 0, len);
    }
    this.forward(this.tx, len);
    if (this.heldTx !== null) {
      const h = this.heldTx;
      this.heldTx = null;
      this.forward(h, h.length);
    }
  }

  private forward(src: Uint8Array, len: number): void {
    const at = this.inner.txReserve(len);
    this.inner.txBuffer.set(src.subarray(0, len), at);
    this.inner.txCommit(len);
  }
}
