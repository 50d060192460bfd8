/**
 * Builds the packets the stack sends toward the TUN side, straight into the
 * link's transmit batch: TCP segments (marked for kernel segmentation when
 * the TUN takes offloads), UDP datagrams, ICMP echo replies and ICMP errors.
 * One preallocated emit repr per family; nothing allocates per packet
 * except the `subarray` view used to copy payload bytes.
 */
import type { LinkEndpoint } from '../link/link.js';
import { fold, pseudoHeaderSumV4, pseudoHeaderSumV6, sum16 } from '../wire/checksum.js';
import { emitIpv4, newIpv4EmitRepr, readIpv4Addr } from '../wire/ipv4.js';
import { emitIpv6, emitIpv6FragmentHeader, newIpv6EmitRepr } from '../wire/ipv6.js';
import { emitTcp, finishL4Checksum, finishUdpChecksum, tcpHeaderLength, type TcpRepr } from '../wire/tcp.js';
import { emitUdp } from '../wire/udp.js';
import { emitIcmpv4Echo, emitIcmpv4Error, ICMP_ECHO_REPLY, ICMP_MAX_QUOTE } from '../wire/icmp.js';
import { emitIcmpv6Echo, emitIcmpv6Error, icmpv6ErrorLength, ICMPV6_ECHO_REPLY } from '../wire/icmpv6.js';
import { emitVnetNone, VNET_HDR_LEN } from '../wire/vnet.js';
import { prepareTso } from '../wire/gso.js';

/** The addresses of a flow as the client sent them (we answer from dst to src). */
export interface FlowAddresses {
  readonly family: number;
  /** 16 bytes each; IPv4 as IPv4-mapped. */
  readonly srcAddr: Uint8Array;
  readonly dstAddr: Uint8Array;
  /** IPv4 addresses as uint32 (unused for IPv6). */
  readonly src4: number;
  readonly dst4: number;
}

export class PacketWriter {
  private readonly v4 = newIpv4EmitRepr();
  private readonly v6 = newIpv6EmitRepr();
  private ipId = 0;
  private fragmentId = 0;
  /** A whole ICMP message before it is cut into fragments (echo replies over the MTU). */
  private readonly scratch = new Uint8Array(65536);
  /** Bytes of virtio header before each packet (0 or 10). */
  private readonly vnetLen: number;
  readonly tso: boolean;

  constructor(
    private readonly link: LinkEndpoint,
    opts: { tso: boolean },
  ) {
    this.vnetLen = link.vnetHdr ? VNET_HDR_LEN : 0;
    // TUN_F_TSO4 | TUN_F_TSO6: the kernel accepts GSO super-packets we write.
    this.tso = opts.tso && link.vnetHdr && (link.offloads & 0x06) === 0x06;
    this.v4.ttl = 64;
    this.v6.hopLimit = 64;
  }

  /** Largest TCP payload one write may carry. */
  get maxTcpPayload(): number {
    return this.tso ? 65535 - 60 - 60 : this.link.mtu - 40 - 60;
  }

  /** Writes an IP header from flow.dst to flow.src at buf[at]; returns the L3 length. */
  private ipHeader(f: FlowAddresses, protocol: number, l4Len: number, buf: Uint8Array, at: number): number {
    if (f.family === 4) {
      const e = this.v4;
      e.src = f.dst4;
      e.dst = f.src4;
      e.protocol = protocol;
      e.payloadLength = l4Len;
      this.ipId = (this.ipId + 1) & 0xffff;
      e.id = this.ipId;
      return emitIpv4(e, buf, at);
    }
    const e = this.v6;
    // Copied, not referenced: the other emitters write into e.src / e.dst,
    // which must never be a flow's own key (nor an address shared by flows).
    e.src.set(f.dstAddr);
    e.dst.set(f.srcAddr);
    e.nextHeader = protocol;
    e.payloadLength = l4Len;
    return emitIpv6(e, buf, at);
  }

  private pseudo(f: FlowAddresses, buf: Uint8Array, l3: number, protocol: number, l4Len: number): number {
    return f.family === 4
      ? pseudoHeaderSumV4(buf, l3 + 12, l3 + 16, protocol, l4Len)
      : pseudoHeaderSumV6(buf, l3 + 8, l3 + 24, protocol, l4Len);
  }

  /**
   * One TCP segment. `mss` is the peer's segment size: larger payloads are
   * only passed when TSO is on, and the kernel cuts them into `mss` pieces.
   */
  tcp(f: FlowAddresses, r: TcpRepr, data: Uint8Array | null, dataOff: number, dataLen: number, mss: number): void {
    const hl = tcpHeaderLength(r);
    const l4Len = hl + dataLen;
    const l3Len = f.family === 4 ? 20 : 40;
    const total = this.vnetLen + l3Len + l4Len;
    const at = this.link.txReserve(total);
    const buf = this.link.txBuffer;
    const l3 = at + this.vnetLen;
    this.ipHeader(f, 6, l4Len, buf, l3);
    const l4 = l3 + l3Len;
    emitTcp(r, buf, l4);
    if (dataLen > 0) buf.set(data!.subarray(dataOff, dataOff + dataLen), l4 + hl);
    if (this.vnetLen !== 0) {
      // CHECKSUM_PARTIAL: the kernel treats the packet as verified (local
      // delivery) or completes the checksum per segment (forwarding).
      prepareTso(buf, l3, l3Len + l4Len, l3Len, mss, f.family === 6, buf, at);
    } else {
      finishL4Checksum(buf, l4, l4Len, l4 + 16, this.pseudo(f, buf, l3, 6, l4Len));
    }
    this.link.txCommit(total);
  }

  /** One UDP datagram from flow.dst:srcPort to flow.src:dstPort. */
  udp(f: FlowAddresses, srcPort: number, dstPort: number, data: Uint8Array, dataOff: number, dataLen: number): void {
    const l4Len = 8 + dataLen;
    const l3Len = f.family === 4 ? 20 : 40;
    if (l3Len + l4Len > this.link.mtu) return this.udpFragmented(f, srcPort, dstPort, data, dataOff, dataLen);
    const total = this.vnetLen + l3Len + l4Len;
    const at = this.link.txReserve(total);
    const buf = this.link.txBuffer;
    if (this.vnetLen !== 0) emitVnetNone(buf, at);
    const l3 = at + this.vnetLen;
    this.ipHeader(f, 17, l4Len, buf, l3);
    const l4 = l3 + l3Len;
    emitUdp(srcPort, dstPort, dataLen, buf, l4);
    buf.set(data.subarray(dataOff, dataOff + dataLen), l4 + 8);
    finishUdpChecksum(buf, l4, l4Len, this.pseudo(f, buf, l3, 17, l4Len));
    this.link.txCommit(total);
  }

  /**
   * A datagram larger than the TUN's MTU (a big DNS answer, a UDP relay
   * payload): as its source we fragment it (see `fragmented`). The UDP
   * checksum covers the whole datagram, computed before cutting.
   */
  private udpFragmented(f: FlowAddresses, srcPort: number, dstPort: number, data: Uint8Array, dataOff: number, dataLen: number): void {
    const v4 = f.family === 4;
    const l4Total = 8 + dataLen;
    const s = this.scratch;
    emitUdp(srcPort, dstPort, dataLen, s, 0);
    s.set(data.subarray(dataOff, dataOff + dataLen), 8);
    // Pseudo-header from flow.dst to flow.src (IPv4 as the last 4 bytes of the mapped form).
    const a = v4 ? 12 : 0;
    const n = v4 ? 4 : 16;
    let sum = sum16(f.dstAddr, a, n, sum16(f.srcAddr, a, n, 17 + l4Total));
    sum = sum16(s, 0, l4Total, sum);
    let c = ~fold(sum) & 0xffff;
    if (c === 0) c = 0xffff; // RFC 768: zero means "no checksum"
    s[6] = c >>> 8;
    s[7] = c & 0xff;
    this.fragmented(f.family, f.dstAddr, a, f.srcAddr, a, 17, s, l4Total);
  }

  /**
   * Echo reply to an echo request whose addresses are at [srcOff]/[dstOff]
   * of `addrs` (sent from its destination to its source), carrying
   * data[dataOff, dataOff+dataLen): the request's own data when answered
   * here, the upstream reply's when forwarded. A reply larger than the
   * TUN's MTU (`ping -s 3000`) is fragmented as its source would.
   */
  echoReply(family: number, addrs: Uint8Array, srcOff: number, dstOff: number, id: number, seq: number, data: Uint8Array, dataOff: number, dataLen: number): void {
    const l4Len = 8 + dataLen;
    const l3Len = family === 4 ? 20 : 40;
    if (l3Len + l4Len > this.link.mtu) {
      const s = this.scratch;
      if (family === 4) emitIcmpv4Echo(ICMP_ECHO_REPLY, id, seq, data, dataOff, dataLen, s, 0);
      else emitIcmpv6Echo(ICMPV6_ECHO_REPLY, id, seq, data, dataOff, dataLen, pseudoHeaderSumV6(addrs, dstOff, srcOff, 58, l4Len), s, 0);
      return this.fragmented(family, addrs, dstOff, addrs, srcOff, family === 4 ? 1 : 58, s, l4Len);
    }
    const total = this.vnetLen + l3Len + l4Len;
    const at = this.link.txReserve(total);
    const buf = this.link.txBuffer;
    if (this.vnetLen !== 0) emitVnetNone(buf, at);
    const l3 = at + this.vnetLen;
    const l4 = l3 + l3Len;
    this.addressedHeader(family, addrs, dstOff, srcOff, family === 4 ? 1 : 58, l4Len, buf, l3);
    if (family === 4) emitIcmpv4Echo(ICMP_ECHO_REPLY, id, seq, data, dataOff, dataLen, buf, l4);
    else emitIcmpv6Echo(ICMPV6_ECHO_REPLY, id, seq, data, dataOff, dataLen, pseudoHeaderSumV6(buf, l3 + 8, l3 + 24, 58, l4Len), buf, l4);
    this.link.txCommit(total);
  }

  /** An IP header from addrs[fromOff] to addrs[toOff] (4 or 16 bytes each) at buf[l3]. */
  private addressedHeader(family: number, addrs: Uint8Array, fromOff: number, toOff: number, protocol: number, l4Len: number, buf: Uint8Array, l3: number): void {
    if (family === 4) {
      const e = this.v4;
      e.src = readIpv4Addr(addrs, fromOff);
      e.dst = readIpv4Addr(addrs, toOff);
      e.protocol = protocol;
      e.payloadLength = l4Len;
      this.ipId = (this.ipId + 1) & 0xffff;
      e.id = this.ipId;
      emitIpv4(e, buf, l3);
    } else {
      const e = this.v6;
      e.src.set(addrs.subarray(fromOff, fromOff + 16));
      e.dst.set(addrs.subarray(toOff, toOff + 16));
      e.nextHeader = protocol;
      e.payloadLength = l4Len;
      emitIpv6(e, buf, l3);
    }
  }

  /**
   * A finished transport message body[0, len) larger than the MTU, cut into
   * fragments from from[fromOff] to to[toOff] (4 or 16 address bytes): IPv4
   * per RFC 791 3.2 (DF clear), IPv6 with a Fragment header (RFC 8200 4.5).
   */
  private fragmented(family: number, from: Uint8Array, fromOff: number, to: Uint8Array, toOff: number, protocol: number, body: Uint8Array, len: number): void {
    const v4 = family === 4;
    const l3Len = v4 ? 20 : 48;
    const perFragment = (this.link.mtu - l3Len) & ~7;
    const id = v4 ? (this.ipId = (this.ipId + 1) & 0xffff) : (this.fragmentId = (this.fragmentId + 1) >>> 0);
    for (let offset = 0; offset < len; offset += perFragment) {
      const fragLen = len - offset < perFragment ? len - offset : perFragment;
      const more = offset + fragLen < len;
      const total = this.vnetLen + l3Len + fragLen;
      const at = this.link.txReserve(total);
      const buf = this.link.txBuffer;
      if (this.vnetLen !== 0) emitVnetNone(buf, at);
      const l3 = at + this.vnetLen;
      if (v4) {
        const e = this.v4;
        e.src = readIpv4Addr(from, fromOff);
        e.dst = readIpv4Addr(to, toOff);
        e.protocol = protocol;
        e.payloadLength = fragLen;
        e.id = id;
        e.dontFragment = false;
        e.moreFragments = more;
        e.fragmentOffset = offset;
        emitIpv4(e, buf, l3);
        e.dontFragment = true;
        e.moreFragments = false;
        e.fragmentOffset = 0;
      } else {
        const e = this.v6;
        e.src.set(from.subarray(fromOff, fromOff + 16));
        e.dst.set(to.subarray(toOff, toOff + 16));
        e.nextHeader = 44;
        e.payloadLength = 8 + fragLen;
        emitIpv6(e, buf, l3);
        emitIpv6FragmentHeader(protocol, offset, more, id, buf, l3 + 40);
      }
      buf.set(body.subarray(offset, offset + fragLen), l3 + l3Len);
      this.link.txCommit(total);
    }
  }

  /**
   * An ICMP error about the packet pkt[off, off+len) (its IP header first),
   * sent from that packet's destination back to its source: "the
   * destination says no", as a real host or firewall would.
   */
  icmpError(family: number, type: number, code: number, param: number, pkt: Uint8Array, off: number, len: number): void {
    this.icmpErrorFrom(family, type, code, param, pkt, off + (family === 4 ? 16 : 24), pkt, off, len);
  }

  /**
   * An ICMP error about pkt[off, off+len) from the address at from[fromOff]
   * (a router beyond sluice whose time-exceeded or unreachable we relay, or
   * the TUN's own address) to that packet's source.
   */
  icmpErrorFrom(family: number, type: number, code: number, param: number, from: Uint8Array, fromOff: number, pkt: Uint8Array, off: number, len: number): void {
    const l3Len = family === 4 ? 20 : 40;
    const l4Len = family === 4 ? 8 + (len > ICMP_MAX_QUOTE ? ICMP_MAX_QUOTE : len) : icmpv6ErrorLength(len);
    const total = this.vnetLen + l3Len + l4Len;
    const at = this.link.txReserve(total);
    const buf = this.link.txBuffer;
    if (this.vnetLen !== 0) emitVnetNone(buf, at);
    const l3 = at + this.vnetLen;
    const l4 = l3 + l3Len;
    if (family === 4) {
      const e = this.v4;
      e.src = readIpv4Addr(from, fromOff);
      e.dst = readIpv4Addr(pkt, off + 12);
      e.protocol = 1;
      e.payloadLength = l4Len;
      this.ipId = (this.ipId + 1) & 0xffff;
      e.id = this.ipId;
      emitIpv4(e, buf, l3);
      emitIcmpv4Error(type, code, param, pkt, off, len, buf, l4);
    } else {
      const e = this.v6;
      e.src.set(from.subarray(fromOff, fromOff + 16));
      e.dst.set(pkt.subarray(off + 8, off + 24));
      e.nextHeader = 58;
      e.payloadLength = l4Len;
      emitIpv6(e, buf, l3);
      emitIcmpv6Error(type, code, param, pkt, off, len, pseudoHeaderSumV6(buf, l3 + 8, l3 + 24, 58, l4Len), buf, l4);
    }
    this.link.txCommit(total);
  }
}
