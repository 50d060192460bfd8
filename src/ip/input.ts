/**
 * IP input and demux: one packet from the link (after its virtio header,
 * when the link has one) is parsed as IPv4 or IPv6, fragments go through
 * reassembly (RFC 791 3.2, RFC 8200 4.5), the transport checksum is
 * verified unless the kernel vouched for it, the transport header is parsed
 * into the stack's one packet context (IpPacket), and the packet goes up to
 * TCP, UDP or ICMP. Every refusal is a counted drop under the codec's or the
 * stack's reason; nothing here throws on hostile bytes or allocates on the
 * unfragmented path.
 */
import type { FragmentReassembler, Reassembled } from './reassembly.js';
import { IpPacket } from './packet.js';
import type { IcmpHandler } from './icmp.js';
import type { StackDriver } from '../stack/driver.js';
import type { TcpForwarder } from '../tcp/forwarder.js';
import type { UdpSessions } from '../udp/sessions.js';
import { WireError, wireErrorName } from '../wire/errors.js';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_DST, IPV4_FLAGS_FRAGMENT, IPV4_HEADER_LEN, IPV4_PROTOCOL, IPV4_SRC, isFragment, newIpv4Repr, parseIpv4, readIpv4Addr } from '../wire/ipv4.js';
import { IPV6_DST, IPV6_HEADER_LEN, IPV6_NEXT_HEADER, IPV6_SRC, NH_ICMPV6, NH_TCP, NH_UDP, formatIpv6, isIpv6Fragment, newIpv6Repr, parseIpv6 } from '../wire/ipv6.js';
import { TCP_ACK, TCP_HEADER_LEN, TCP_RST, TCP_SYN, parseTcp, verifyL4Checksum } from '../wire/tcp.js';
import { parseUdp } from '../wire/udp.js';
import { parseIcmpv4 } from '../wire/icmp.js';
import { parseIcmpv6 } from '../wire/icmpv6.js';
import { pseudoHeaderSumV4, pseudoHeaderSumV6 } from '../wire/checksum.js';
import { GSO_NONE, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_HDR_LEN, newVnetRepr, parseVnet } from '../wire/vnet.js';

/** Offset of the TCP flags byte in the TCP header (RFC 9293 3.1). */
const TCP_FLAGS = 13;

export class IpInput {
  /** The packet context handed to the transport layers, reused for every packet. */
  readonly packet = new IpPacket();
  private readonly vnet = newVnetRepr();
  private readonly ip4 = newIpv4Repr();
  private readonly ip6 = newIpv6Repr();

  constructor(
    private readonly d: StackDriver,
    private readonly vnetHdr: boolean,
    private readonly reassembler: FragmentReassembler,
    private readonly tcp: TcpForwarder,
    private readonly udp: UdpSessions,
    private readonly icmp: IcmpHandler,
  ) {}

  /** One packet: buf[off, off+len), with its virtio header when the link has one. */
  input(buf: Uint8Array, off: number, len: number): void {
    const d = this.d;
    d.stats.rxPackets++;
    d.stats.rxBytes += len;
    let checksumTrusted = false;
    if (this.vnetHdr) {
      const e = parseVnet(buf, off, len, this.vnet);
      if (e !== WireError.Ok) return d.drop(wireErrorName(e));
      // NEEDS_CSUM: the field holds only the pseudo-header seed; the data
      // came from the local kernel, so there is nothing to verify.
      // DATA_VALID: the kernel verified it.
      checksumTrusted = (this.vnet.flags & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)) !== 0 || this.vnet.gsoType !== GSO_NONE;
      off += VNET_HDR_LEN;
      len -= VNET_HDR_LEN;
      if (len <= 0) return d.drop('truncated');
    }
    const version = buf[off]! >> 4;
    if (version === 4) this.ipv4Input(buf, off, len, checksumTrusted);
    else if (version === 6) this.ipv6Input(buf, off, len, checksumTrusted);
    else d.drop('bad_version');
  }

  private ipv4Input(buf: Uint8Array, off: number, len: number, trusted: boolean): void {
    const ip = this.ip4;
    const e = parseIpv4(buf, off, len, ip, !trusted);
    if (e !== WireError.Ok) return this.d.drop(wireErrorName(e));
    const p = this.packet;
    p.family = 4;
    if (isFragment(ip)) {
      const key = `4|${readIpv4Addr(buf, ip.srcOffset)}|${readIpv4Addr(buf, ip.dstOffset)}|${ip.protocol}|${ip.id}`;
      const header = ip.fragmentOffset === 0 ? buf.subarray(off, off + ip.headerLength) : null;
      const done = this.reassembler.push(this.d.now, key, ip.fragmentOffset, ip.moreFragments, buf.subarray(ip.payloadOffset, ip.payloadOffset + ip.payloadLength), header);
      return this.reassembled(p, done, IPV4_SRC, IPV4_DST, IPV4_PROTOCOL);
    }
    setAddresses(p, buf, ip.srcOffset, ip.dstOffset, ip.protocol);
    setL4(p, buf, ip.payloadOffset, ip.payloadLength, trusted);
    setDatagram(p, buf, off, ip.totalLength);
    this.transportInput(p);
  }

  private ipv6Input(buf: Uint8Array, off: number, len: number, trusted: boolean): void {
    const ip = this.ip6;
    const e = parseIpv6(buf, off, len, ip);
    if (e !== WireError.Ok) return this.d.drop(wireErrorName(e));
    const p = this.packet;
    p.family = 6;
    if (isIpv6Fragment(ip)) {
      const key = `6|${formatIpv6(buf, ip.srcOffset)}|${formatIpv6(buf, ip.dstOffset)}|${ip.fragmentId}`;
      let header: Uint8Array | null = null;
      if (ip.fragmentOffset === 0) {
        // Keep the fixed header with the upper protocol in its next-header
        // byte: the reassembled datagram is delivered as if unfragmented.
        buf[off + IPV6_NEXT_HEADER] = ip.upperProtocol;
        header = buf.subarray(off, off + IPV6_HEADER_LEN);
      }
      const done = this.reassembler.push(this.d.now, key, ip.fragmentOffset, ip.moreFragments, buf.subarray(ip.upperOffset, ip.upperOffset + ip.upperLength), header);
      return this.reassembled(p, done, IPV6_SRC, IPV6_DST, IPV6_NEXT_HEADER);
    }
    setAddresses(p, buf, ip.srcOffset, ip.dstOffset, ip.upperProtocol);
    setL4(p, buf, ip.upperOffset, ip.upperLength, trusted);
    setDatagram(p, buf, off, IPV6_HEADER_LEN + ip.payloadLength);
    this.transportInput(p);
  }

  /**
   * A fragment was taken by the reassembler: when it completed a datagram,
   * the context points at the kept first header (its address and protocol
   * bytes at the family's fixed offsets) and the joined payload. Checksums
   * of a reassembled datagram are always verified: fragments never come
   * with offload metadata.
   */
  private reassembled(p: IpPacket, done: Reassembled | null, srcOff: number, dstOff: number, protocolOff: number): void {
    this.d.armTimer();
    if (done === null) return;
    this.d.stats.fragmentsReassembled++;
    const h = done.firstHeader;
    setAddresses(p, h, srcOff, dstOff, h[protocolOff]!);
    setL4(p, done.payload, 0, done.payload.length, false);
    setDatagram(p, h, 0, h.length);
    this.transportInput(p);
  }

  /** Transport demux: checksum, parse into the context, hand up. */
  private transportInput(p: IpPacket): void {
    const d = this.d;
    const { family, protocol, l4buf, l4Off, l4Len, trusted } = p;
    if (protocol === IPPROTO_TCP) {
      if (!trusted) {
        const pseudo = family === 4 ? pseudoHeaderSumV4(p.abuf, p.srcOff, p.dstOff, IPPROTO_TCP, l4Len) : pseudoHeaderSumV6(p.abuf, p.srcOff, p.dstOff, NH_TCP, l4Len);
        if (!verifyL4Checksum(l4buf, l4Off, l4Len, pseudo)) return d.drop('bad_checksum');
      }
      const e = parseTcp(l4buf, l4Off, l4Len, p.tcp);
      if (e !== WireError.Ok) return d.drop(wireErrorName(e));
      this.tcp.input(p);
    } else if (protocol === IPPROTO_UDP) {
      const u = p.udp;
      const e = parseUdp(l4buf, l4Off, l4Len, u);
      if (e !== WireError.Ok) return d.drop(wireErrorName(e));
      // RFC 768: checksum 0 means "none" (IPv4 only; RFC 8200 8.1 forbids it for IPv6).
      if (!trusted && (u.checksum !== 0 || family === 6)) {
        const pseudo = family === 4 ? pseudoHeaderSumV4(p.abuf, p.srcOff, p.dstOff, IPPROTO_UDP, u.length) : pseudoHeaderSumV6(p.abuf, p.srcOff, p.dstOff, NH_UDP, u.length);
        if (!verifyL4Checksum(l4buf, l4Off, u.length, pseudo)) return d.drop('bad_checksum');
      }
      this.udp.input(p);
    } else if (protocol === IPPROTO_ICMP && family === 4) {
      const e = parseIcmpv4(l4buf, l4Off, l4Len, p.icmp, !trusted);
      if (e !== WireError.Ok) return d.drop(wireErrorName(e));
      this.icmp.input(p);
    } else if (protocol === NH_ICMPV6 && family === 6) {
      const pseudo = trusted ? null : pseudoHeaderSumV6(p.abuf, p.srcOff, p.dstOff, NH_ICMPV6, l4Len);
      const e = parseIcmpv6(l4buf, l4Off, l4Len, p.icmp, pseudo);
      if (e !== WireError.Ok) return d.drop(wireErrorName(e));
      this.icmp.input(p);
    } else {
      d.drop('unknown_protocol');
      // RFC 1122 3.2.2.1 / RFC 4443 3.1: protocol unreachable would be honest,
      // but the TUN carries only what the policy routes here; stay silent.
    }
  }
}

/** Where the addresses sit (abuf at srcOff/dstOff) and the upper protocol. */
function setAddresses(p: IpPacket, abuf: Uint8Array, srcOff: number, dstOff: number, protocol: number): void {
  p.abuf = abuf;
  p.srcOff = srcOff;
  p.dstOff = dstOff;
  p.protocol = protocol;
}

function setL4(p: IpPacket, buf: Uint8Array, off: number, len: number, trusted: boolean): void {
  p.l4buf = buf;
  p.l4Off = off;
  p.l4Len = len;
  p.trusted = trusted;
}

function setDatagram(p: IpPacket, buf: Uint8Array, off: number, len: number): void {
  p.pkt = buf;
  p.pktOff = off;
  p.pktLen = len;
}

/**
 * An unfragmented IPv4 or IPv6 (no extension headers) TCP segment with SYN
 * set and neither ACK nor RST, by a look at a few bytes (no parsing, no
 * checksum): what a SYN flood costs once a batch's SYN budget is spent.
 */
export function isBareSyn(buf: Uint8Array, off: number, len: number): boolean {
  if (len < IPV4_HEADER_LEN + TCP_HEADER_LEN) return false;
  const v = buf[off]! >> 4;
  let l4: number;
  if (v === 4) {
    if (buf[off + IPV4_PROTOCOL] !== IPPROTO_TCP || (((buf[off + IPV4_FLAGS_FRAGMENT]! & 0x3f) << 8) | buf[off + IPV4_FLAGS_FRAGMENT + 1]!) !== 0) return false;
    l4 = off + (buf[off]! & 0x0f) * 4;
  } else if (v === 6) {
    if (buf[off + IPV6_NEXT_HEADER] !== NH_TCP) return false;
    l4 = off + IPV6_HEADER_LEN;
  } else {
    return false;
  }
  if (l4 + TCP_HEADER_LEN > off + len) return false;
  return (buf[l4 + TCP_FLAGS]! & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN;
}
