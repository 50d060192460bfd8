/**
 * UDP through the TUN: datagrams grouped into sessions by 4-tuple (one
 * client address:port to one destination address:port), each handed once to
 * the application (StackHandlers.onUdpSession), which answers from the
 * destination. The application may also open a session from another
 * remote endpoint to a known client (`sibling`): how a datagram from any
 * source reaches the client with its true source address and port (the
 * NAT above decides which, src/udp/nat.ts). Bounded by `maxUdpSessions`; a
 * session ends after `udpIdleTimeoutMs` without a datagram either way
 * (RFC 4787 REQ-5), on the driver's one timer wheel; sessions to port 53
 * after at most DNS_IDLE_MS (REQ-5a allows shorter timers for well-known
 * ports, and a resolver uses a fresh port per query).
 *
 * A full table evicts the oldest session that never got a reply to make room
 * for a new one (`udp_evicted`; the policy is in src/udp/unreplied-list.ts).
 * Only when every session has been answered is a new one refused
 * (`udp_full`). A sibling never evicts: a datagram from outside must not
 * push out a client's session.
 */
import { FlowTable } from '../ip/flow-table.js';
import type { IpPacket } from '../ip/packet.js';
import type { IcmpHandler, UnreachableKind } from '../ip/icmp.js';
import type { StackDriver } from '../stack/driver.js';
import { copyAddresses, endpointsOf, writeAddressText } from '../ip/flow-addresses.js';
import { IPPROTO_UDP, IPV4_HEADER_LEN } from '../wire/ipv4.js';
import { isUnicastAt, isUsablePort } from '../wire/address-class.js';
import { ICMP_HEADER_LEN, ICMP_MAX_QUOTE } from '../wire/icmp.js';
import { UdpSession, type UdpHost } from './session.js';
import { UnrepliedList } from './unreplied-list.js';

/** RFC 1812 4.3.2.3: an ICMP error carries at most 576 bytes, IP header and ICMP header included. */
const QUOTE_LEN = ICMP_MAX_QUOTE + IPV4_HEADER_LEN + ICMP_HEADER_LEN;
/** RFC 4787 REQ-5a: the idle timeout of a session to port 53 is at most this. */
export const DNS_IDLE_MS = 30_000;

/** The session's idle timeout: the configured one, shorter for DNS (REQ-5a). */
export function sessionIdleMs(idleMs: number, dstPort: number): number {
  return dstPort === 53 && idleMs > DNS_IDLE_MS ? DNS_IDLE_MS : idleMs;
}

export class UdpSessions implements UdpHost {
  private readonly table = new FlowTable<UdpSession>();
  /** Client address then remote address, for a sibling's table lookup (no allocation). */
  private readonly scratch = new Uint8Array(32);
  /** Unreplied sessions, oldest first: the eviction candidates. */
  private readonly unreplied = new UnrepliedList<UdpSession>();

  constructor(
    private readonly d: StackDriver,
    private readonly icmp: IcmpHandler,
    /** Without a handler every datagram gets port unreachable. */
    private readonly onSession: ((session: UdpSession) => void) | undefined,
    private readonly maxSessions: number,
    private readonly idleMs: number,
  ) {}

  get size(): number {
    return this.table.size;
  }

  /** A UDP datagram, parsed into `p.udp` and its checksum verified. */
  input(p: IpPacket): void {
    const u = p.udp;
    const family = p.family;
    let s = this.table.lookup(family, IPPROTO_UDP, p.abuf, p.srcOff, p.dstOff, u.srcPort, u.dstPort);
    if (s === null) {
      s = this.open(p);
      if (s === null) return;
    } else {
      s.lastActivity = this.d.now;
    }
    s.ttl = p.pkt[p.pktOff + (family === 4 ? 8 : 7)]!;
    s.df = family !== 4 || (p.pkt[p.pktOff + 6]! & 0x40) !== 0;
    // The application gets its own copy: datagrams outlive the batch.
    s.deliver(Buffer.from(p.l4buf.subarray(u.payloadOffset, u.payloadOffset + u.payloadLength)));
  }

  private open(p: IpPacket): UdpSession | null {
    const u = p.udp;
    const { family, abuf, srcOff, dstOff } = p;
    const d = this.d;
    if (this.onSession === undefined) {
      this.icmp.sendUnreachable(family, 'port', p.pkt, p.pktOff, p.pktLen);
      return null;
    }
    if (!isUnicastAt(family, abuf, srcOff) || !isUnicastAt(family, abuf, dstOff)) {
      d.drop('bad_address');
      return null;
    }
    if (u.dstPort === 0) {
      // Port 0 is reserved (RFC 6335 6); a datagram to it would reach the
      // outbound's socket as an invalid port. Answered as a host with no
      // socket there: ICMP port unreachable (RFC 1122 4.1.3.1).
      d.drop('port_zero');
      this.icmp.sendUnreachable(family, 'port', p.pkt, p.pktOff, p.pktLen < QUOTE_LEN ? p.pktLen : QUOTE_LEN);
      d.scheduleFlush();
      return null;
    }
    // Source port 0 means "no reply expected" (RFC 768): a relay could never answer it.
    if (u.srcPort === 0) {
      d.drop('port_zero');
      return null;
    }
    if (this.table.size >= this.maxSessions) {
      const victim = this.unreplied.oldest;
      if (victim === null) {
        d.drop('udp_full');
        return null;
      }
      d.drop('udp_evicted');
      victim.evicted = true;
      this.closeUdp(victim);
    }
    const s = new UdpSession(this, family, u.srcPort, u.dstPort);
    // Kept for an ICMP error should the forwarder refuse the session (one
    // small copy per session, not per datagram).
    s.firstQuote = p.pkt.slice(p.pktOff, p.pktOff + (p.pktLen < QUOTE_LEN ? p.pktLen : QUOTE_LEN));
    copyAddresses(family, abuf, srcOff, dstOff, s);
    const e = endpointsOf(family, abuf, srcOff, dstOff, u.srcPort, u.dstPort);
    s.remoteAddress = e.remoteAddress;
    s.localAddress = e.localAddress;
    this.table.insert(s);
    this.unreplied.push(s);
    d.stats.udpSessionsActive = this.table.size;
    d.stats.udpSessionsTotal++;
    s.lastActivity = d.now;
    s.idleMs = sessionIdleMs(this.idleMs, u.dstPort);
    d.wheel.schedule(s, d.now + s.idleMs);
    d.armTimer();
    try {
      this.onSession(s);
    } catch (err) {
      // As for onTcpFlow: a throwing handler costs its session, not the stack.
      d.drop('handler_error');
      this.closeUdp(s);
      process.emitWarning(`onUdpSession handler threw: ${(err as Error).message}`, { code: 'SLUICE_HANDLER' });
      return null;
    }
    return s;
  }

  /** The wheel fired for a session: ends it when it has been idle long enough. */
  onTimer(s: UdpSession, now: number): void {
    const idleUntil = s.lastActivity + s.idleMs;
    if (idleUntil > now) this.d.wheel.schedule(s, idleUntil);
    else this.closeUdp(s);
  }

  // UdpHost
  sendUdp(s: UdpSession, data: Uint8Array, off: number, len: number): boolean {
    if (this.d.closed) return false;
    this.d.writer.udp(s, s.dstPort, s.srcPort, data, off, len);
    this.d.scheduleFlush();
    return true;
  }

  siblingUdp(s: UdpSession, host: string, port: number): UdpSession | null {
    const d = this.d;
    const family = s.family;
    const len = family === 4 ? 4 : 16;
    const b = this.scratch;
    b.set(family === 4 ? s.srcAddr.subarray(12, 16) : s.srcAddr, 0);
    if (!writeAddressText(family, host, b, len) || !isUsablePort(port) || !isUnicastAt(family, b, len)) {
      d.drop('bad_address');
      return null;
    }
    const found = this.table.lookup(family, IPPROTO_UDP, b, 0, len, s.srcPort, port);
    if (found !== null) return found;
    if (this.table.size >= this.maxSessions) {
      d.drop('udp_full');
      return null;
    }
    const sib = new UdpSession(this, family, s.srcPort, port);
    sib.fromRemote = true;
    // Opened to carry a datagram to the client: answered from the start,
    // so never on the eviction list.
    sib.replied = true;
    copyAddresses(family, b, 0, len, sib);
    const e = endpointsOf(family, b, 0, len, s.srcPort, port);
    sib.remoteAddress = e.remoteAddress;
    sib.localAddress = e.localAddress;
    this.table.insert(sib);
    d.stats.udpSessionsActive = this.table.size;
    d.stats.udpSessionsTotal++;
    sib.lastActivity = d.refreshNow();
    sib.idleMs = sessionIdleMs(this.idleMs, port);
    d.wheel.schedule(sib, sib.lastActivity + sib.idleMs);
    d.armTimer();
    return sib;
  }

  touchUdp(s: UdpSession): void {
    s.lastActivity = this.d.refreshNow();
    if (!s.replied) {
      s.replied = true;
      this.unreplied.remove(s);
    }
  }

  unreachableUdp(s: UdpSession, kind: UnreachableKind): void {
    const q = s.firstQuote;
    if (q !== null && !this.d.closed) {
      this.icmp.sendUnreachable(s.family, kind, q, 0, q.length);
      this.d.scheduleFlush();
    }
    this.closeUdp(s);
  }

  closeUdp(s: UdpSession): void {
    if (!s.replied) this.unreplied.remove(s);
    this.table.remove(s);
    this.d.wheel.cancel(s);
    this.d.stats.udpSessionsActive = this.table.size;
    s.markClosed();
  }
}
