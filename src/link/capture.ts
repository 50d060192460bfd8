/**
 * Packet capture at the link: a LinkEndpoint wrapper that copies what
 * crosses the device, both directions, into pcap records (pcap-writer.ts),
 * for `sluice capture`, the `/v1/capture` API route and the integration
 * tests' failure pcaps. The models are smoltcp's PcapWriter (a device
 * wrapper) and gVisor's sniffer link endpoint.
 *
 * Cost while no capture runs: the receive side pays one null check per
 * batch (`onBatch`); the transmit side pays nothing beyond the forwarding
 * call a wrapper is, because `txReserve` / `txCommit` are instance fields
 * that point at plain forwarders and are swapped for the capturing ones
 * only while a capture is active (no per-packet test of "is a capture
 * on?"). Nothing allocates per packet either way: a capture copies each
 * matching packet into its own preallocated queue.
 *
 * Each capture (at most MAX_CAPTURES at once) has a filter (a host address
 * or a port, matched against either end), an optional packet count after
 * which it stops by itself, and a bounded queue of pcap records. A slow
 * consumer does not make sluice buffer: a record that does not fit is
 * counted in `dropped` and the packet still goes through.
 */
import { SluiceError } from '../errors.js';
import type { LinkEndpoint } from './link.js';
import { ForwardingLink } from './forwarding.js';
import { readRecordLength, recordSize } from './records.js';
import { DEFAULT_SNAPLEN, PCAP_RECORD_HEADER_LEN, pcapGlobalHeader, pcapRecordSize, writePcapRecord, type PcapResolution } from './pcap-writer.js';
import { parseIpv4Text } from '../wire/ipv4.js';
import { parseIpv6Text } from '../wire/ipv6.js';

/** Captures running at once on one link. */
export const MAX_CAPTURES = 4;
/** Default queue per capture: about 700 full-size packets. */
export const DEFAULT_QUEUE_BYTES = 1 << 20;
/** Largest queue a capture may ask for. */
export const MAX_QUEUE_BYTES = 64 << 20;

/** What a capture keeps: every packet, those to or from one address, or those with one TCP/UDP port at either end. */
export type CaptureFilter = { kind: 'all' } | { kind: 'host'; family: 4 | 6; addr: Uint8Array; text: string } | { kind: 'port'; port: number };

/** `HOST|PORT` (203.0.113.7, 2001:db8::1, 443) into a filter; empty or undefined = all. Returns a message for bad input. */
export function parseCaptureFilter(text: string | undefined | null): CaptureFilter | string {
  if (text === undefined || text === null || text.trim() === '') return { kind: 'all' };
  const s = text.trim();
  if (/^\d+$/.test(s)) {
    const port = Number(s);
    if (port < 1 || port > 65535) return `a port filter is 1-65535, got ${s}`;
    return { kind: 'port', port };
  }
  const v4 = parseIpv4Text(s);
  if (v4 !== null) {
    const addr = new Uint8Array([v4 >>> 24, (v4 >>> 16) & 0xff, (v4 >>> 8) & 0xff, v4 & 0xff]);
    return { kind: 'host', family: 4, addr, text: s };
  }
  const six = new Uint8Array(16);
  const bare = s.startsWith('[') && s.endsWith(']') ? s.slice(1, -1) : s;
  if (parseIpv6Text(bare, six, 0)) return { kind: 'host', family: 6, addr: six, text: bare };
  return `expected an IP address (HOST) or a port number (PORT), got ${JSON.stringify(s)}`;
}

function sameBytes(a: Uint8Array, b: Uint8Array, off: number): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[off + i]) return false;
  return true;
}

/** Whether the raw IP packet at buf[off..off+len) passes `f`. Never throws on short or odd packets (they pass only `all`). */
export function filterMatches(f: CaptureFilter, buf: Uint8Array, off: number, len: number): boolean {
  if (f.kind === 'all') return true;
  if (len < 1) return false;
  const version = buf[off]! >>> 4;
  let proto: number;
  let l4: number;
  if (version === 4) {
    if (len < 20) return false;
    if (f.kind === 'host') return f.family === 4 && (sameBytes(f.addr, buf, off + 12) || sameBytes(f.addr, buf, off + 16));
    // Only the first fragment carries the ports.
    if ((((buf[off + 6]! & 0x1f) << 8) | buf[off + 7]!) !== 0) return false;
    proto = buf[off + 9]!;
    l4 = off + (buf[off]! & 0x0f) * 4;
  } else if (version === 6) {
    if (len < 40) return false;
    if (f.kind === 'host') return f.family === 6 && (sameBytes(f.addr, buf, off + 8) || sameBytes(f.addr, buf, off + 24));
    // Ports only when TCP or UDP follows the fixed header (no extension headers walked).
    proto = buf[off + 6]!;
    l4 = off + 40;
  } else {
    return false;
  }
  if ((proto !== 6 && proto !== 17) || l4 + 4 > off + len) return false;
  const sport = (buf[l4]! << 8) | buf[l4 + 1]!;
  const dport = (buf[l4 + 2]! << 8) | buf[l4 + 3]!;
  return sport === f.port || dport === f.port;
}

export interface CaptureOptions {
  filter?: CaptureFilter;
  /** Stop after this many packets (0 or absent: until stopped). */
  count?: number;
  /** Queue bytes (pcap records waiting for the consumer). */
  queueBytes?: number;
  snaplen?: number;
  resolution?: PcapResolution;
}

export interface CaptureStats {
  captured: number;
  /** Matching packets lost because the queue was full (the consumer was slow). */
  dropped: number;
  /** Bytes queued now. */
  queued: number;
}

/**
 * One running capture: a bounded queue of pcap records. The consumer sets
 * `onReadable` (called at most once per event-loop turn after records were
 * queued) and takes the bytes with `take()`; `onEnd` fires once when the
 * capture stops (its count reached, `stop()`, or the link closed).
 */
export class Capture {
  readonly filter: CaptureFilter;
  readonly count: number;
  readonly snaplen: number;
  readonly resolution: PcapResolution;
  captured = 0;
  dropped = 0;
  ended = false;
  onReadable: (() => void) | null = null;
  onEnd: (() => void) | null = null;
  private readonly queue: Uint8Array;
  private used = 0;
  private notifyScheduled = false;
  private readonly notifyBound = (): void => this.notify();
  private readonly owner: CaptureLink;

  constructor(owner: CaptureLink, opts: CaptureOptions) {
    this.owner = owner;
    this.filter = opts.filter ?? { kind: 'all' };
    this.count = opts.count !== undefined && opts.count > 0 ? Math.floor(opts.count) : 0;
    this.snaplen = opts.snaplen ?? DEFAULT_SNAPLEN;
    this.resolution = opts.resolution ?? 'us';
    const q = opts.queueBytes ?? DEFAULT_QUEUE_BYTES;
    // At least one full record fits, so a big packet is never dropped by construction.
    this.queue = new Uint8Array(Math.min(Math.max(q, pcapRecordSize(this.snaplen, this.snaplen)), MAX_QUEUE_BYTES));
  }

  /** The 24-byte pcap file header for this capture's records. */
  fileHeader(): Uint8Array {
    return pcapGlobalHeader(this.snaplen, this.resolution);
  }

  stats(): CaptureStats {
    return { captured: this.captured, dropped: this.dropped, queued: this.used };
  }

  /** Called by the link for each packet while this capture is active. */
  offer(buf: Uint8Array, off: number, len: number, timeMs: number): void {
    if (this.ended || !filterMatches(this.filter, buf, off, len)) return;
    const size = pcapRecordSize(len, this.snaplen);
    if (this.used + size > this.queue.length) {
      this.dropped++;
    } else {
      this.used = writePcapRecord(this.queue, this.used, timeMs, this.resolution, this.snaplen, buf, off, len);
    }
    this.counted();
  }

  /**
   * Records captured elsewhere with this capture's filter, snaplen and
   * resolution (a worker thread's queue, tun.queues > 1): queued whole, as
   * if offered one by one; those past the count or that do not fit are
   * left out (the latter counted in `dropped`).
   */
  offerRecords(records: Uint8Array): void {
    let at = 0;
    while (!this.ended && at + PCAP_RECORD_HEADER_LEN <= records.length) {
      const cap = records[at + 8]! | (records[at + 9]! << 8) | (records[at + 10]! << 16) | (records[at + 11]! << 24);
      const size = PCAP_RECORD_HEADER_LEN + cap;
      if (cap < 0 || at + size > records.length) break;
      if (this.used + size > this.queue.length) this.dropped++;
      else {
        this.queue.set(records.subarray(at, at + size), this.used);
        this.used += size;
      }
      at += size;
      this.counted();
    }
  }

  private counted(): void {
    // A dropped packet counts towards --count too: the count bounds how long the capture runs.
    this.captured++;
    if (this.count > 0 && this.captured >= this.count) this.owner.detach(this);
    if (!this.notifyScheduled) {
      this.notifyScheduled = true;
      setImmediate(this.notifyBound);
    }
  }

  /** The queued records (a copy), emptying the queue; null when empty. */
  take(): Buffer | null {
    if (this.used === 0) return null;
    const out = Buffer.from(this.queue.subarray(0, this.used));
    this.used = 0;
    return out;
  }

  /** Ends the capture; what is queued can still be taken. */
  stop(): void {
    this.owner.detach(this);
  }

  /** @internal the link removed it. */
  finish(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.notifyScheduled) {
      this.notifyScheduled = true;
      setImmediate(this.notifyBound);
    }
  }

  private notify(): void {
    this.notifyScheduled = false;
    if (this.used > 0) this.onReadable?.();
    if (this.ended) {
      const end = this.onEnd;
      this.onEnd = null;
      end?.();
    }
  }
}

export class CaptureError extends SluiceError {
  readonly code = 'SLUICE_CAPTURE_LIMIT';
}

function wallClock(): number {
  return performance.timeOrigin + performance.now();
}

// The transmit-path methods, as module-level functions assigned to instance
// fields: plain forwarders while no capture runs, capturing ones while one does.
function passReserve(this: CaptureLink, maxLen: number): number {
  return this.inner.txReserve(maxLen);
}
function passCommit(this: CaptureLink, len: number): void {
  this.inner.txCommit(len);
}
function tapReserve(this: CaptureLink, maxLen: number): number {
  const at = this.inner.txReserve(maxLen);
  this.reservedAt = at;
  return at;
}
function tapCommit(this: CaptureLink, len: number): void {
  // Read the packet before the commit: a device may hand it on at once.
  this.tapTx(this.inner.txBuffer, this.reservedAt, len);
  this.inner.txCommit(len);
}

/** A LinkEndpoint that forwards to `inner` and lets captures see every packet. */
export class CaptureLink extends ForwardingLink {
  txReserve: (maxLen: number) => number = passReserve;
  txCommit: (len: number) => void = passCommit;
  /** @internal offset of the packet being written (capturing transmit path only). */
  reservedAt = 0;
  /** Null while no capture runs: the receive path's only test. */
  private active: Capture[] | null = null;
  private readonly clock: () => number;
  /** Told when a capture starts or ends (the worker pool, tun.queues > 1). */
  private changed: (() => void) | null = null;

  constructor(inner: LinkEndpoint, opts: { clock?: () => number } = {}) {
    super(inner);
    this.clock = opts.clock ?? wallClock;
  }

  /** The captures running now. */
  get activeCaptures(): readonly Capture[] {
    return this.active ?? [];
  }

  /** Calls `fn` after every capture start and end (one listener). */
  onCapturesChanged(fn: () => void): void {
    this.changed = fn;
  }

  /** Captures running now. */
  get captures(): number {
    return this.active === null ? 0 : this.active.length;
  }

  override close(): void {
    const list = this.active;
    if (list !== null) for (const c of [...list]) this.detach(c);
    super.close();
  }

  onBatch(buf: Uint8Array, count: number, end: number): void {
    if (this.active !== null) this.tapRx(buf, count);
    this.receiver!.onBatch(buf, count, end);
  }

  /** Starts a capture; throws CaptureError past MAX_CAPTURES. */
  capture(opts: CaptureOptions = {}): Capture {
    const n = this.captures;
    if (n >= MAX_CAPTURES) throw new CaptureError(`at most ${MAX_CAPTURES} captures run at once`);
    const c = new Capture(this, opts);
    this.active = n === 0 ? [c] : [...this.active!, c];
    this.txReserve = tapReserve;
    this.txCommit = tapCommit;
    this.changed?.();
    return c;
  }

  /** @internal removes a capture (its count reached, stopped, or the link closing). */
  detach(c: Capture): void {
    const list = this.active;
    if (list !== null && list.includes(c)) {
      const rest = list.filter((x) => x !== c);
      this.active = rest.length === 0 ? null : rest;
      if (rest.length === 0) {
        this.txReserve = passReserve;
        this.txCommit = passCommit;
      }
      c.finish();
      this.changed?.();
      return;
    }
    c.finish();
  }

  private tapRx(buf: Uint8Array, count: number): void {
    const list = this.active!;
    const now = this.clock();
    const hdr = this.skip;
    let off = 0;
    for (let i = 0; i < count; i++) {
      const len = readRecordLength(buf, off);
      if (len > hdr) for (let k = 0; k < list.length; k++) list[k]!.offer(buf, off + 4 + hdr, len - hdr, now);
      off += recordSize(len);
    }
  }

  /** @internal one transmitted packet (virtio header included when the link has one). */
  tapTx(buf: Uint8Array, at: number, len: number): void {
    const list = this.active;
    if (list === null || len <= this.skip) return;
    const now = this.clock();
    // A capture reaching its count detaches itself from `active`, not from this list.
    for (let k = 0; k < list.length; k++) list[k]!.offer(buf, at + this.skip, len - this.skip, now);
  }
}

/** What streamCapture writes to: a file stream, an HTTP response. */
export interface CaptureSink {
  write(chunk: Uint8Array): boolean;
  /** A sink that went away (the HTTP client left) takes nothing more. */
  readonly destroyed?: boolean;
  once(event: 'drain', fn: () => void): unknown;
}

/**
 * Pours a capture into `out` as a pcap stream (the file header first unless
 * `header` is false), honouring backpressure: while `out` is full nothing is
 * taken, so the capture's own bounded queue fills and counts drops instead
 * of sluice buffering. Resolves when the capture has ended and everything
 * queued was written.
 */
export function streamCapture(cap: Capture, out: CaptureSink, header = true): Promise<void> {
  return new Promise((resolve) => {
    let blocked = false;
    if (header) blocked = !out.write(cap.fileHeader());
    const pump = (): void => {
      if (out.destroyed === true) {
        while (cap.take() !== null);
        blocked = false;
        return;
      }
      if (blocked) return;
      for (let chunk = cap.take(); chunk !== null; chunk = cap.take()) {
        if (!out.write(chunk)) {
          blocked = true;
          out.once('drain', () => {
            blocked = false;
            pump();
            if (cap.ended && cap.stats().queued === 0) resolve();
          });
          return;
        }
      }
    };
    cap.onReadable = pump;
    cap.onEnd = () => {
      pump();
      if (!blocked) resolve();
    };
    if (cap.ended) cap.onEnd();
  });
}
