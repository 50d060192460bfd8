/**
 * Honest ping: echo requests from the TUN side forwarded upstream through
 * ICMP sockets (src/link/icmp-socket.ts), and what really comes back (an
 * echo reply, a router's time exceeded or unreachable, or nothing) handed
 * to the client with its own identifier and sequence.
 *
 * Each forwarded request takes a slot in a fixed table (a bounded number in
 * flight; the oldest slot is reused): the outgoing sequence number names the
 * slot, the socket's identifier names sluice, and the slot keeps the
 * client's addresses, identifier, sequence and the first bytes of its
 * datagram (the quote a relayed ICMP error needs, RFC 792 / RFC 4443 2.4(c)).
 *
 * TTL: a request is sent with the TTL / hop limit it reached the TUN with.
 * In gateway mode the kernel already counted this host's hop when it
 * forwarded the packet into the TUN; for this host's own packets there is
 * no hop to count. So `traceroute -I` lists the same hops with sluice as
 * without it, each answering from its own address.
 *
 * The errors sluice itself generates (unreachable for a refused or
 * unroutable ping, relayed time exceeded) share one token bucket (RFC 1812
 * 4.3.2.8, RFC 4443 2.4(f)); those over it are counted, not sent.
 */
import type { IcmpReceiver, IcmpSocket } from '../link/icmp-socket.js';
import type { EchoForwarder, IcmpHandler, UnreachableKind } from './icmp.js';
import type { IpPacket } from './packet.js';
import type { StackDriver } from '../stack/driver.js';
import { UdpErrorRelay } from './udp-error-relay.js';
import { internetChecksum } from '../wire/checksum.js';
import { ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_TIME_EXCEEDED, ICMP_UNREACH_FRAG_NEEDED } from '../wire/icmp.js';
import { ICMPV6_DEST_UNREACHABLE, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMPV6_TIME_EXCEEDED } from '../wire/icmpv6.js';

/** What happens to one echo request, per policy (src/engine/icmp-route.ts). */
export const enum EchoAction {
  /** Sent upstream through `route.socket` to `route.target`. */
  Forward = 0,
  /** Answered here (the old behaviour; `icmp.echo: reply`). */
  Reply = 1,
  /** Administratively prohibited unreachable. */
  Unreachable = 2,
  /** Silence. */
  Drop = 3,
  /** Not known yet (a fake-IP name being resolved): silence this time, counted. */
  Pending = 4,
}

/** Filled by the route per request (one object, reused). */
export class EchoRoute {
  socket: IcmpSocket | null = null;
  /** The real destination: 4 or 16 bytes at 0 (a fake IP's resolved address, else the request's own destination). */
  readonly target = new Uint8Array(16);
}

export interface EchoPolicy {
  /** Decides for an echo request to buf[dstOff] (4 or 16 bytes); for Forward, fills `out`. */
  route(family: 4 | 6, buf: Uint8Array, dstOff: number, out: EchoRoute): EchoAction;
}

export interface EchoRelayStats {
  /** Requests sent upstream. */
  forwarded: number;
  /** Replies from upstream handed to a client. */
  replies: number;
  /** Requests answered here (action reply). */
  answeredLocally: number;
  /** Upstream ICMP errors (time exceeded, unreachable, too big) relayed to a client. */
  errorsRelayed: number;
  /** Requests refused with unreachable, or dropped, by policy. */
  refused: number;
  dropped: number;
  /** Requests not forwarded while their route was being found (a fake-IP name resolving). */
  pending: number;
  /** Upstream send failures (ENETUNREACH, EHOSTUNREACH, EACCES...): answered with the matching unreachable. */
  sendErrors: number;
  /** Upstream messages that matched no slot (late, foreign, or for another process). */
  unmatched: number;
  /** A slot reused while its request was still unanswered (more in flight than slots). */
  evicted: number;
  /** ICMP errors not sent because the rate limit was reached. */
  rateLimited: number;
}

/** Requests in flight at once (a power of two). */
const SLOTS = 4096;
/** An answer this late is ignored (ping gives up long before). */
const SLOT_TTL_MS = 30_000;
/** Quote bytes kept per slot: an IPv4 header with options (60) or an IPv6 header (40), plus 8. */
const QUOTE = 68;
/** RFC 1812 4.3.2.8 / RFC 4443 2.4(f): errors generated per second, and the burst. */
const ERRORS_PER_SECOND = 100;
const ERROR_BURST = 50;

const ENETUNREACH = 101;
const EHOSTUNREACH = 113;
const EACCES = 13;
const EPERM = 1;

export function newEchoRelayStats(): EchoRelayStats {
  return { forwarded: 0, replies: 0, answeredLocally: 0, errorsRelayed: 0, refused: 0, dropped: 0, pending: 0, sendErrors: 0, unmatched: 0, evicted: 0, rateLimited: 0 };
}

export class EchoRelay implements EchoForwarder, IcmpReceiver {
  readonly stats = newEchoRelayStats();
  private readonly route = new EchoRoute();
  private nextSeq = 0;
  private readonly sentAt = new Float64Array(SLOTS);
  private readonly slotSeq = new Int32Array(SLOTS).fill(-1);
  private readonly slotFamily = new Uint8Array(SLOTS);
  private readonly clientId = new Uint16Array(SLOTS);
  private readonly clientSeq = new Uint16Array(SLOTS);
  /** Per slot: client source (16), the destination it pinged (16), the real target (16). */
  private readonly addrs = new Uint8Array(SLOTS * 48);
  private readonly quote = new Uint8Array(SLOTS * QUOTE);
  private readonly quoteLen = new Uint8Array(SLOTS);
  private readonly slotSocket: (IcmpSocket | null)[] = new Array<IcmpSocket | null>(SLOTS).fill(null);
  private readonly tx = new Uint8Array(65536);
  private readonly budget: IcmpErrorBudget;
  /** Errors about sluice's upstream UDP datagrams (traceroute -U), seen by the same raw sockets. */
  readonly udpErrors: UdpErrorRelay;

  constructor(
    private readonly d: StackDriver,
    private readonly icmp: IcmpHandler,
    private readonly policy: EchoPolicy,
  ) {
    this.budget = new IcmpErrorBudget(this.stats);
    this.udpErrors = new UdpErrorRelay(d, this.budget);
  }

  /** EchoForwarder: an echo request from the TUN side (p.icmp parsed, addresses unicast). */
  echoRequest(p: IpPacket): void {
    const family = p.family === 6 ? 6 : 4;
    const r = this.route;
    const action = this.policy.route(family, p.abuf, p.dstOff, r);
    const m = p.icmp;
    switch (action) {
      case EchoAction.Reply:
        this.d.writer.echoReply(family, p.abuf, p.srcOff, p.dstOff, m.identifier, m.sequence, p.l4buf, m.payloadOffset, m.payloadLength);
        this.d.stats.icmpEchoReplies++;
        this.stats.answeredLocally++;
        return;
      case EchoAction.Unreachable:
        this.stats.refused++;
        return this.unreachable(p, 'admin');
      case EchoAction.Drop:
        this.stats.dropped++;
        return;
      case EchoAction.Pending:
        this.stats.pending++;
        return;
      default:
        break;
    }
    const sock = r.socket!;
    const ttl = p.pkt[p.pktOff + (family === 4 ? 8 : 7)]!;
    if (ttl === 0) {
      // Cannot come from the kernel (it never forwards TTL 0): expired here.
      if (this.budget.take(this.d.now)) this.d.writer.icmpError(family, family === 4 ? ICMP_TIME_EXCEEDED : ICMPV6_TIME_EXCEEDED, 0, 0, p.pkt, p.pktOff, p.pktLen);
      return;
    }
    const seq = (this.nextSeq = (this.nextSeq + 1) & 0xffff);
    const slot = seq & (SLOTS - 1);
    const now = this.d.now;
    if (this.slotSeq[slot] !== -1 && now - this.sentAt[slot]! < SLOT_TTL_MS) this.stats.evicted++;
    this.slotSeq[slot] = seq;
    this.sentAt[slot] = now;
    this.slotFamily[slot] = family;
    this.clientId[slot] = m.identifier;
    this.clientSeq[slot] = m.sequence;
    this.slotSocket[slot] = sock;
    const alen = family === 4 ? 4 : 16;
    const a = slot * 48;
    const addrs = this.addrs;
    addrs.set(p.abuf.subarray(p.srcOff, p.srcOff + alen), a);
    addrs.set(p.abuf.subarray(p.dstOff, p.dstOff + alen), a + 16);
    addrs.set(r.target.subarray(0, alen), a + 32);
    // The client's IP header and the first 8 bytes of its ICMP message.
    const hl = family === 4 ? (p.pkt[p.pktOff]! & 0x0f) * 4 : 40;
    let ql = hl + 8;
    if (ql > QUOTE) ql = QUOTE;
    if (ql > p.pktLen) ql = p.pktLen;
    const q = slot * QUOTE;
    this.quote.set(p.pkt.subarray(p.pktOff, p.pktOff + ql), q);
    if (p.pkt !== p.l4buf) {
      // Reassembled: the stored first header is followed by the ICMP header only in l4buf.
      ql = hl + 8 > QUOTE ? QUOTE : hl + 8;
      this.quote.set(p.pkt.subarray(p.pktOff, p.pktOff + hl), q);
      this.quote.set(p.l4buf.subarray(p.l4Off, p.l4Off + (ql - hl)), q + hl);
    }
    this.quoteLen[slot] = ql;
    // The request as sluice sends it: our identifier, the slot's sequence, the client's data.
    const tx = this.tx;
    const len = 8 + m.payloadLength;
    tx[0] = family === 4 ? ICMP_ECHO_REQUEST : ICMPV6_ECHO_REQUEST;
    tx[1] = 0;
    tx[2] = 0;
    tx[3] = 0;
    tx[4] = sock.ident >>> 8;
    tx[5] = sock.ident & 0xff;
    tx[6] = seq >>> 8;
    tx[7] = seq & 0xff;
    tx.set(p.l4buf.subarray(m.payloadOffset, m.payloadOffset + m.payloadLength), 8);
    if (family === 4) {
      // The kernel sums ICMPv6 (RFC 4443 2.3) for us, and a ping socket ICMP too; a raw IPv4 socket sends what it gets.
      const c = internetChecksum(tx, 0, len);
      tx[2] = c >>> 8;
      tx[3] = c & 0xff;
    }
    const err = sock.send(r.target, 0, tx, 0, len, ttl);
    if (err === 0) {
      this.stats.forwarded++;
      return;
    }
    // What the kernel says is what the client hears (RFC 1122 3.2.2.1).
    this.stats.sendErrors++;
    this.slotSeq[slot] = -1;
    if (err === ENETUNREACH) this.unreachable(p, 'net');
    else if (err === EHOSTUNREACH) this.unreachable(p, 'host');
    else if (err === EACCES || err === EPERM) this.unreachable(p, 'admin');
  }

  /** IcmpReceiver: one ICMP message from upstream; its source is 16 bytes at buf[srcOff]. */
  upstreamMessage(sock: IcmpSocket, buf: Uint8Array, srcOff: number, off: number, len: number): void {
    if (this.d.closed || len < 8) return;
    this.d.refreshNow();
    const family = sock.family;
    const type = buf[off]!;
    if (type === (family === 4 ? ICMP_ECHO_REPLY : ICMPV6_ECHO_REPLY)) {
      if (buf[off + 1] !== 0) return;
      const slot = this.match(sock, buf, off + 4, srcOff);
      if (slot < 0) return;
      const a = slot * 48;
      this.d.writer.echoReply(family, this.addrs, a, a + 16, this.clientId[slot]!, this.clientSeq[slot]!, buf, off + 8, len - 8);
      this.stats.replies++;
      this.d.scheduleFlush();
      return;
    }
    const relayed =
      family === 4 ? type === ICMP_DEST_UNREACHABLE || type === ICMP_TIME_EXCEEDED : type === ICMPV6_DEST_UNREACHABLE || type === ICMPV6_PACKET_TOO_BIG || type === ICMPV6_TIME_EXCEEDED;
    if (!relayed || !sock.raw) return;
    // The quote: our request's IP header, then at least its first 8 bytes (RFC 792, RFC 4443 2.4(c)).
    const q = off + 8;
    let hl: number;
    let proto: number;
    if (family === 4) {
      if (len < 8 + 20 + 8 || buf[q]! >> 4 !== 4) return;
      proto = buf[q + 9]!;
      hl = (buf[q]! & 0x0f) * 4;
      if (hl < 20 || len < 8 + hl + 8) return;
    } else {
      if (len < 8 + 40 + 8 || buf[q]! >> 4 !== 6) return;
      proto = buf[q + 6]!;
      hl = 40;
    }
    if (proto === 17) return this.udpErrors.relay(family, buf, srcOff, off, hl);
    if (proto !== (family === 4 ? 1 : 58)) return;
    const t = q + hl;
    if (buf[t] !== (family === 4 ? ICMP_ECHO_REQUEST : ICMPV6_ECHO_REQUEST)) return;
    // Matched against the quoted destination, not the error's source (a router).
    const slot = this.match(sock, buf, t + 4, q + (family === 4 ? 16 : 24));
    if (slot < 0) return;
    if (!this.budget.take(this.d.now)) return;
    const code = buf[off + 1]!;
    const a = slot * 48;
    // An error from the target itself comes from the address the client pinged (a fake IP stays fake).
    const fromTarget = sameAddress(buf, srcOff, this.addrs, a + 32, family === 4 ? 4 : 16);
    const from = fromTarget ? this.addrs : buf;
    const fromOff = fromTarget ? a + 16 : srcOff;
    let param = 0;
    if (family === 4 && type === ICMP_DEST_UNREACHABLE && code === ICMP_UNREACH_FRAG_NEEDED) param = (buf[off + 6]! << 8) | buf[off + 7]!;
    else if (family === 6 && type === ICMPV6_PACKET_TOO_BIG) param = ((buf[off + 4]! << 24) | (buf[off + 5]! << 16) | (buf[off + 6]! << 8) | buf[off + 7]!) >>> 0;
    this.d.writer.icmpErrorFrom(family, type, code, param, from, fromOff, this.quote, slot * QUOTE, this.quoteLen[slot]!);
    this.d.stats.icmpErrorsOut++;
    this.stats.errorsRelayed++;
    this.d.scheduleFlush();
  }

  /** The slot whose request this is (id/seq at buf[idOff], target at buf[addrOff]), or -1. */
  private match(sock: IcmpSocket, buf: Uint8Array, idOff: number, addrOff: number): number {
    const id = (buf[idOff]! << 8) | buf[idOff + 1]!;
    const seq = (buf[idOff + 2]! << 8) | buf[idOff + 3]!;
    const slot = seq & (SLOTS - 1);
    // A raw socket sees every echo reply this host gets: ours carry our identifier.
    if (id !== sock.ident || this.slotSeq[slot] !== seq || this.slotSocket[slot] !== sock || this.d.now - this.sentAt[slot]! > SLOT_TTL_MS) {
      this.stats.unmatched++;
      return -1;
    }
    const family = this.slotFamily[slot]!;
    if (!sameAddress(buf, addrOff, this.addrs, slot * 48 + 32, family === 4 ? 4 : 16)) {
      this.stats.unmatched++;
      return -1;
    }
    return slot;
  }

  private unreachable(p: IpPacket, kind: UnreachableKind): void {
    if (!this.budget.take(this.d.now)) return;
    this.icmp.sendUnreachable(p.family, kind, p.pkt, p.pktOff, p.pktLen);
  }

}

/**
 * The one token bucket for the ICMP errors sluice sends toward clients
 * (RFC 1812 4.3.2.8, RFC 4443 2.4(f)): ERRORS_PER_SECOND, bursts of
 * ERROR_BURST; an error over it is counted in `rateLimited`, not sent.
 */
export class IcmpErrorBudget {
  private tokens = ERROR_BURST;
  private at = 0;

  constructor(private readonly stats: { rateLimited: number }) {}

  take(now: number): boolean {
    this.tokens += ((now - this.at) * ERRORS_PER_SECOND) / 1000;
    this.at = now;
    if (this.tokens > ERROR_BURST) this.tokens = ERROR_BURST;
    if (this.tokens < 1) {
      this.stats.rateLimited++;
      return false;
    }
    this.tokens -= 1;
    return true;
  }
}

function sameAddress(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number, len: number): boolean {
  for (let i = 0; i < len; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}
