/**
 * A packet tracer: a link wrapper that logs every packet in and out at
 * `trace` level, one line each, with the reason the stack dropped it (the
 * stack tells it through Stack.observeDrops, keyed by the record's offset
 * in the batch). A received batch's lines are written after the stack has
 * handled the batch, so each line carries its verdict.
 *
 * Costs nothing when off: `sluice run` inserts it only when log.level is
 * trace, and the stack's only trace of it is one null check per drop.
 * Tracing itself formats text per packet: it is for debugging, not for
 * production rates.
 */
import type { LinkEndpoint } from './link.js';
import { ForwardingLink } from './forwarding.js';
import { readRecordLength, recordSize } from './records.js';
import type { DropObserver, DropReason } from '../stack.js';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, formatIpv4 } from '../wire/ipv4.js';
import { NH_ICMPV6, formatIpv6, newIpv6Repr, parseIpv6 } from '../wire/ipv6.js';
import { newIpv4Repr, parseIpv4 } from '../wire/ipv4.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../wire/tcp.js';
import { WireError, wireErrorName } from '../wire/errors.js';

/** Where trace lines go: a pino logger fits. */
export interface TraceSink {
  trace(fields: Record<string, unknown>, msg: string): void;
}

/** What one line says about a packet. */
export interface PacketSummary {
  len: number;
  family?: number;
  proto?: string;
  src?: string;
  dst?: string;
  flags?: string;
  seq?: number;
  ack?: number;
  /** Why the headers could not be read (the stack drops it for the same reason). */
  malformed?: string;
}

const FLAG_NAMES: [number, string][] = [
  [TCP_SYN, 'S'],
  [TCP_FIN, 'F'],
  [TCP_RST, 'R'],
  [TCP_PSH, 'P'],
  [TCP_ACK, '.'],
];

const ip4 = newIpv4Repr();
const ip6 = newIpv6Repr();

/** Reads the headers of one IP packet for a trace line (never throws). */
export function summarizePacket(buf: Uint8Array, off: number, len: number): PacketSummary {
  const s: PacketSummary = { len };
  const v = len > 0 ? buf[off]! >> 4 : 0;
  let l4 = 0;
  let l4Len = 0;
  let proto = 0;
  if (v === 4) {
    const e = parseIpv4(buf, off, len, ip4, false);
    if (e !== WireError.Ok) return { ...s, malformed: wireErrorName(e) };
    s.family = 4;
    s.src = formatIpv4(buf, ip4.srcOffset);
    s.dst = formatIpv4(buf, ip4.dstOffset);
    proto = ip4.protocol;
    l4 = ip4.payloadOffset;
    l4Len = ip4.fragmentOffset === 0 ? ip4.payloadLength : 0;
  } else if (v === 6) {
    const e = parseIpv6(buf, off, len, ip6);
    if (e !== WireError.Ok) return { ...s, malformed: wireErrorName(e) };
    s.family = 6;
    s.src = formatIpv6(buf, ip6.srcOffset);
    s.dst = formatIpv6(buf, ip6.dstOffset);
    proto = ip6.upperProtocol;
    l4 = ip6.upperOffset;
    l4Len = ip6.fragmentOffset === 0 ? ip6.upperLength : 0;
  } else {
    return { ...s, malformed: 'bad_version' };
  }
  const port = (at: number) => (buf[at]! << 8) | buf[at + 1]!;
  const u32 = (at: number) => ((buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!) >>> 0;
  const join = (a: string, p: number) => (s.family === 6 ? `[${a}]:${p}` : `${a}:${p}`);
  if (proto === IPPROTO_TCP) {
    s.proto = 'tcp';
    if (l4Len >= 20) {
      s.src = join(s.src!, port(l4));
      s.dst = join(s.dst!, port(l4 + 2));
      s.seq = u32(l4 + 4);
      s.ack = u32(l4 + 8);
      const f = buf[l4 + 13]!;
      s.flags = FLAG_NAMES.filter(([bit]) => (f & bit) !== 0)
        .map(([, n]) => n)
        .join('');
    }
  } else if (proto === IPPROTO_UDP) {
    s.proto = 'udp';
    if (l4Len >= 8) {
      s.src = join(s.src!, port(l4));
      s.dst = join(s.dst!, port(l4 + 2));
    }
  } else if ((proto === IPPROTO_ICMP && v === 4) || (proto === NH_ICMPV6 && v === 6)) {
    s.proto = v === 4 ? 'icmp' : 'icmpv6';
    if (l4Len >= 2) s.flags = `type ${buf[l4]} code ${buf[l4 + 1]}`;
  } else {
    s.proto = String(proto);
  }
  return s;
}

export class PacketTracer extends ForwardingLink implements DropObserver {
  /** Drop reasons of the batch being handled, by record offset. */
  private readonly drops = new Map<number, DropReason>();
  private txAt = 0;

  constructor(
    inner: LinkEndpoint,
    private readonly sink: TraceSink,
  ) {
    super(inner);
  }

  onBatch(buf: Uint8Array, count: number, end: number): void {
    this.drops.clear();
    this.receiver!.onBatch(buf, count, end);
    let off = 0;
    for (let i = 0; i < count; i++) {
      const len = readRecordLength(buf, off);
      const s = summarizePacket(buf, off + 4 + this.skip, len - this.skip);
      const drop = this.drops.get(off);
      this.sink.trace(drop === undefined ? { dir: 'rx', ...s } : { dir: 'rx', ...s, drop }, drop === undefined ? 'packet in' : `packet in dropped: ${drop}`);
      off += recordSize(len);
    }
  }

  /** DropObserver: remembered for the batch's lines (the first reason wins). */
  packetDropped(reason: DropReason, recordOff: number): void {
    if (recordOff < 0) {
      this.sink.trace({ dir: 'rx', drop: reason }, `packet dropped outside a batch: ${reason}`);
      return;
    }
    if (!this.drops.has(recordOff)) this.drops.set(recordOff, reason);
  }

  txReserve(maxLen: number): number {
    this.txAt = this.inner.txReserve(maxLen);
    return this.txAt;
  }

  txCommit(len: number): void {
    this.sink.trace({ dir: 'tx', ...summarizePacket(this.inner.txBuffer, this.txAt + this.skip, len - this.skip) }, 'packet out');
    this.inner.txCommit(len);
  }
}
