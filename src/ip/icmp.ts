/**
 * ICMP in and out for the stack (RFC 792, RFC 4443):
 * - in: echo requests handed to the echo forwarder when there is one
 *   (src/ip/echo-relay.ts: forwarded for real, per policy), else answered
 *   locally (RFC 1122 3.2.2.6), and errors about
 *   segments we sent toward the TUN side matched to their TCP flow from the
 *   quoted headers (parseIcmpQuote), which the connection then judges (RFC
 *   5927: path MTU, hard errors);
 * - out: destination unreachable quoting a client's packet, for a refused
 *   flow or session (RFC 1122 4.2.3.9 / 4.1.3.1).
 */
import type { FlowTable } from './flow-table.js';
import type { IpPacket } from './packet.js';
import type { StackDriver } from '../stack/driver.js';
import type { TcpFlow } from '../stack/tcp-flow.js';
import { WireError } from '../wire/errors.js';
import { IPPROTO_TCP, IPV4_HEADER_LEN } from '../wire/ipv4.js';
import { IPV6_HEADER_LEN } from '../wire/ipv6.js';
import { isUnicastAt } from '../wire/address-class.js';
import {
  ICMP_DEST_UNREACHABLE,
  ICMP_ECHO_REQUEST,
  ICMP_TIME_EXCEEDED,
  ICMP_UNREACH_ADMIN_PROHIBITED,
  ICMP_UNREACH_FRAG_NEEDED,
  ICMP_UNREACH_HOST,
  ICMP_UNREACH_NET,
  ICMP_UNREACH_PORT,
  ICMP_UNREACH_PROTOCOL,
  parseIcmpQuote,
} from '../wire/icmp.js';
import {
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_PACKET_TOO_BIG,
  ICMPV6_UNREACH_ADDRESS,
  ICMPV6_UNREACH_ADMIN,
  ICMPV6_UNREACH_NO_ROUTE,
  ICMPV6_UNREACH_PORT,
  isIcmpv6Error,
} from '../wire/icmpv6.js';

export type UnreachableKind = 'port' | 'host' | 'net' | 'admin';

/** Takes the echo requests the stack does not answer itself (src/ip/echo-relay.ts). */
export interface EchoForwarder {
  /** An echo request, parsed into p.icmp, between unicast addresses. */
  echoRequest(p: IpPacket): void;
}

export class IcmpHandler {
  /** When set, echo requests go there instead of being answered here. */
  forwarder: EchoForwarder | null = null;

  constructor(
    private readonly d: StackDriver,
    private readonly tcpFlows: FlowTable<TcpFlow>,
    /** Answer echo requests (or drop them silently). */
    private readonly echo: boolean,
  ) {}

  /** An ICMP or ICMPv6 message, parsed into `p.icmp`. */
  input(p: IpPacket): void {
    const m = p.icmp;
    const family = p.family;
    const isEcho = family === 4 ? m.type === ICMP_ECHO_REQUEST : m.type === ICMPV6_ECHO_REQUEST;
    if (isEcho) {
      // RFC 1122 3.2.2.6: replies go from a unicast address to a unicast address.
      if (!isUnicastAt(family, p.abuf, p.srcOff) || !isUnicastAt(family, p.abuf, p.dstOff)) return this.d.drop('bad_address');
      if (this.forwarder !== null) return this.forwarder.echoRequest(p);
      if (!this.echo) return;
      // abuf and l4buf differ when reassembled; echo data is in l4buf.
      this.d.writer.echoReply(family, p.abuf, p.srcOff, p.dstOff, m.identifier, m.sequence, p.l4buf, m.payloadOffset, m.payloadLength);
      this.d.stats.icmpEchoReplies++;
      return;
    }
    if (family === 4 ? m.type === ICMP_DEST_UNREACHABLE || m.type === ICMP_TIME_EXCEEDED : isIcmpv6Error(m.type)) {
      this.d.stats.icmpErrorsIn++;
      this.errorForFlow(p);
      return;
    }
    this.d.drop('icmp_other');
  }

  /**
   * An ICMP error quoting a TCP segment we sent toward the TUN side (a router
   * between sluice and the client, in gateway mode, or the kernel itself):
   * find the flow from the quoted headers and let the connection judge it
   * (RFC 5927 sequence check inside). Only "fragmentation needed" / "packet
   * too big" and the hard unreachables of RFC 5927 4.1 are understood, and
   * only quotes whose (IPv6: first) next header is TCP; others are counted.
   */
  private errorForFlow(p: IpPacket): void {
    const { family, icmp: m } = p;
    const type = m.type;
    const code = m.code;
    let kind: 'too-big' | 'hard' | null = null;
    if (family === 4) {
      if (type === ICMP_DEST_UNREACHABLE && code === ICMP_UNREACH_FRAG_NEEDED) kind = 'too-big';
      else if (type === ICMP_DEST_UNREACHABLE && (code === ICMP_UNREACH_PROTOCOL || code === ICMP_UNREACH_PORT || code === ICMP_UNREACH_ADMIN_PROHIBITED)) kind = 'hard';
    } else if (type === ICMPV6_PACKET_TOO_BIG) {
      kind = 'too-big';
    } else if (type === ICMPV6_DEST_UNREACHABLE && (code === ICMPV6_UNREACH_PORT || code === ICMPV6_UNREACH_ADMIN)) {
      kind = 'hard';
    }
    if (kind === null) return this.d.drop('icmp_error_ignored');
    const q = p.quote;
    const buf = p.l4buf;
    if (parseIcmpQuote(buf, m.payloadOffset, m.payloadLength, family, q) !== WireError.Ok || q.protocol !== IPPROTO_TCP) return this.d.drop('icmp_error_ignored');
    // We sent the quoted segment, so its source is ours and its destination
    // the client; the flow is keyed as the client sent it.
    const flow = this.tcpFlows.lookup(family, IPPROTO_TCP, buf, q.dstOffset, q.srcOffset, q.dstPort, q.srcPort);
    const conn = flow === null ? null : flow.connection;
    if (conn === null || !conn.icmpError(this.d.now, kind, q.seq, m.nextHopMtu, family === 4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN)) return this.d.drop('icmp_error_unmatched');
    this.d.stats.icmpErrorsApplied++;
    this.d.markDirty(flow!);
  }

  /**
   * Writes an ICMP destination unreachable quoting `quote[off, off+len)` (an
   * IP header as the client sent it and the start of its payload): its
   * source is the quote's destination, so the kernel routes it to the client.
   */
  sendUnreachable(family: number, kind: UnreachableKind, quote: Uint8Array, off: number, len: number): void {
    if (family === 4) {
      const code = kind === 'port' ? ICMP_UNREACH_PORT : kind === 'host' ? ICMP_UNREACH_HOST : kind === 'net' ? ICMP_UNREACH_NET : ICMP_UNREACH_ADMIN_PROHIBITED;
      this.d.writer.icmpError(4, ICMP_DEST_UNREACHABLE, code, 0, quote, off, len);
    } else {
      const code = kind === 'port' ? ICMPV6_UNREACH_PORT : kind === 'host' ? ICMPV6_UNREACH_ADDRESS : kind === 'net' ? ICMPV6_UNREACH_NO_ROUTE : ICMPV6_UNREACH_ADMIN;
      this.d.writer.icmpError(6, ICMPV6_DEST_UNREACHABLE, code, 0, quote, off, len);
    }
    this.d.stats.icmpErrorsOut++;
  }
}
