/**
 * ICMP errors about sluice's own upstream UDP datagrams, handed back to the
 * TUN-side client whose datagram it was: what makes `traceroute -U` (and
 * any UDP client that listens for errors) see the path beyond sluice.
 *
 * A direct UDP association's socket is unconnected, so the kernel keeps
 * the time exceeded / unreachable a router or the destination sends about
 * it to itself; the raw ICMP sockets of the echo relay (src/ip/echo-relay.ts)
 * see every such error too. The quote names the upstream socket's local
 * port; registered here per association, it leads to the session, and the
 * client gets the error from the router's own address (or, from the
 * destination itself, from the address it sent to: a fake IP stays fake),
 * quoting its own datagram as it sent it (RFC 792, RFC 4443 2.4(c)), so
 * its kernel matches the error to its socket.
 *
 * The upstream socket sends with the TTL / hop limit the client's latest
 * datagram reached the TUN with (DirectUdpAssociation.setTtl), for the
 * same reason echo requests do (echo-relay.ts).
 */
import type { IcmpErrorBudget } from './echo-relay.js';
import type { StackDriver } from '../stack/driver.js';
import type { UdpSession } from '../udp/session.js';
import { ICMP_DEST_UNREACHABLE, ICMP_UNREACH_FRAG_NEEDED } from '../wire/icmp.js';
import { ICMPV6_PACKET_TOO_BIG } from '../wire/icmpv6.js';

/** The kernel's path MTU toward an address for sockets with this mark / interface (0: unknown). */
export type PathMtuFn = (family: 4 | 6, address: string, mark: number, device: string | undefined, now: number) => number;

/** IPv6's minimum MTU (RFC 8200 5): a datagram this small passes every path, so it is never checked. */
const MIN_MTU = 1280;

export interface UdpErrorStats {
  /** Errors about our UDP datagrams relayed to a client. */
  relayed: number;
  /** Errors quoting a UDP port no session has (another socket of this host's, or a session gone). */
  unmatched: number;
  /** DF datagrams (IPv6: any) larger than the path MTU beyond sluice, answered "fragmentation needed" / "packet too big". */
  tooBig: number;
}

export class UdpErrorRelay {
  readonly stats: UdpErrorStats = { relayed: 0, unmatched: 0, tooBig: 0 };
  /** Set by the engine: without it datagrams are not checked against the path MTU. */
  pathMtu: PathMtuFn | null = null;
  /**
   * family * 65536 + upstream local port -> the sessions that send from it
   * (several: one mapping carries every session of a client socket,
   * src/udp/nat.ts).
   */
  private readonly byPort = new Map<number, UdpSession[]>();

  constructor(
    private readonly d: StackDriver,
    private readonly budget: IcmpErrorBudget,
  ) {}

  /**
   * Whether a datagram of `payloadLen` bytes from session `s` to `address`
   * (an IP literal) cannot leave without being fragmented where its client
   * forbade it: an IPv4 datagram with DF set, or any IPv6 one (routers never
   * fragment, RFC 8200 5), larger than the kernel's path MTU for sluice's
   * sockets. Then the client is told as a router would tell it, with the MTU (RFC 1191 4 "fragmentation needed", RFC 8201
   * / RFC 4443 3.2 "packet too big"), and the datagram is not sent; without
   * this, sluice's socket would fragment it silently. The error comes
   * from the datagram's destination address: a packet the TUN delivers
   * from one of this host's own addresses (the TUN's) is a martian the
   * kernel drops, and the client's kernel matches the error by its quote.
   */
  tooBig(s: UdpSession, payloadLen: number, address: string, mark: number, device: string | undefined): boolean {
    const family = s.family === 6 ? 6 : 4;
    const size = payloadLen + (family === 4 ? 28 : 48);
    if (size <= MIN_MTU || !s.df || this.pathMtu === null || s.firstQuote === null) return false;
    const now = this.d.refreshNow();
    const mtu = this.pathMtu(family, address, mark, device, now);
    if (mtu === 0 || size <= mtu) return false;
    this.stats.tooBig++;
    if (!this.budget.take(now)) return true;
    const q = s.firstQuote;
    if (family === 4) this.d.writer.icmpError(4, ICMP_DEST_UNREACHABLE, ICMP_UNREACH_FRAG_NEEDED, mtu, q, 0, q.length);
    else this.d.writer.icmpError(6, ICMPV6_PACKET_TOO_BIG, 0, mtu, q, 0, q.length);
    this.d.stats.icmpErrorsOut++;
    this.d.scheduleFlush();
    return true;
  }

  /** The session `s` sends upstream from local UDP port `port` of `family`. */
  register(family: 4 | 6, port: number, s: UdpSession): void {
    const k = family * 65536 + port;
    const list = this.byPort.get(k);
    if (list === undefined) this.byPort.set(k, [s]);
    else if (!list.includes(s)) list.push(s);
  }

  unregister(family: 4 | 6, port: number, s: UdpSession): void {
    const k = family * 65536 + port;
    const list = this.byPort.get(k);
    if (list === undefined) return;
    const i = list.indexOf(s);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.byPort.delete(k);
  }

  /**
   * The session of the quoted datagram (destination port at its UDP header,
   * destination address at buf[dstAt]): the one to that port and address,
   * else the one to that port (a fake-IP session sent to the real address).
   */
  private sessionFor(list: UdpSession[] | undefined, family: 4 | 6, dstPort: number, buf: Uint8Array, dstAt: number): UdpSession | undefined {
    if (list === undefined) return undefined;
    let byPort: UdpSession | undefined;
    for (const s of list) {
      if (s.closed || s.family !== family || s.dstPort !== dstPort) continue;
      if (sameDst(s, family, buf, dstAt)) return s;
      byPort ??= s;
    }
    return byPort;
  }

  get size(): number {
    return this.byPort.size;
  }

  /**
   * An ICMP error (type and code at buf[off], quote at off + 8 whose IP
   * header is `hl` bytes and names UDP), its source 16 bytes at buf[srcOff].
   */
  relay(family: 4 | 6, buf: Uint8Array, srcOff: number, off: number, hl: number): void {
    const q = off + 8;
    const t = q + hl;
    const port = (buf[t]! << 8) | buf[t + 1]!;
    const dstPort = (buf[t + 2]! << 8) | buf[t + 3]!;
    // One socket carries datagrams to several destinations: the quote names the one this error is about.
    const s = this.sessionFor(this.byPort.get(family * 65536 + port), family, dstPort, buf, q + (family === 4 ? 16 : 24));
    const quote = s?.firstQuote ?? null;
    if (s === undefined || quote === null) {
      this.stats.unmatched++;
      return;
    }
    if (!this.budget.take(this.d.refreshNow())) return;
    const type = buf[off]!;
    const code = buf[off + 1]!;
    const alen = family === 4 ? 4 : 16;
    // From the destination itself: from the address the client sent to.
    const dstAt = q + (family === 4 ? 16 : 24);
    let fromDestination = true;
    for (let i = 0; i < alen; i++) if (buf[srcOff + i] !== buf[dstAt + i]) fromDestination = false;
    let param = 0;
    if (family === 4 && type === ICMP_DEST_UNREACHABLE && code === ICMP_UNREACH_FRAG_NEEDED) param = (buf[off + 6]! << 8) | buf[off + 7]!;
    else if (family === 6 && type === ICMPV6_PACKET_TOO_BIG) param = ((buf[off + 4]! << 24) | (buf[off + 5]! << 16) | (buf[off + 6]! << 8) | buf[off + 7]!) >>> 0;
    if (fromDestination) this.d.writer.icmpErrorFrom(family, type, code, param, quote, family === 4 ? 16 : 24, quote, 0, quote.length);
    else this.d.writer.icmpErrorFrom(family, type, code, param, buf, srcOff, quote, 0, quote.length);
    this.d.stats.icmpErrorsOut++;
    this.stats.relayed++;
    this.d.scheduleFlush();
  }
}

/** Whether the session's destination is the address at buf[at] (4 or 16 bytes; the session keeps IPv4 mapped). */
function sameDst(s: UdpSession, family: 4 | 6, buf: Uint8Array, at: number): boolean {
  const a = s.dstAddr;
  if (family === 4) return a[12] === buf[at] && a[13] === buf[at + 1] && a[14] === buf[at + 2] && a[15] === buf[at + 3];
  for (let i = 0; i < 16; i++) if (a[i] !== buf[at + i]) return false;
  return true;
}
