/**
 * ICMPv4 codec (RFC 792): echo, destination unreachable (with the
 * next-hop MTU of RFC 1191 for "fragmentation needed"), time exceeded.
 */
import { WireError } from './errors.js';
import { internetChecksum } from './checksum.js';
import { IPV4_DST, IPV4_HEADER_LEN, IPV4_PROTOCOL, IPV4_SRC } from './ipv4.js';
import { IPV6_DST, IPV6_HEADER_LEN, IPV6_NEXT_HEADER, IPV6_SRC } from './ipv6.js';

export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACHABLE = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;

export const ICMP_UNREACH_NET = 0;
export const ICMP_UNREACH_HOST = 1;
export const ICMP_UNREACH_PROTOCOL = 2;
export const ICMP_UNREACH_PORT = 3;
export const ICMP_UNREACH_FRAG_NEEDED = 4;
export const ICMP_UNREACH_ADMIN_PROHIBITED = 13;

export const ICMP_HEADER_LEN = 8;
/**
 * RFC 1812 4.3.2.3: an error quotes as much of the original datagram as fits
 * in 576 bytes total; 576 - 20 (IP) - 8 (ICMP).
 */
export const ICMP_MAX_QUOTE = 548;

export interface IcmpRepr {
  type: number;
  code: number;
  checksum: number;
  /** Echo identifier and sequence (0 otherwise). */
  identifier: number;
  sequence: number;
  /** Next-hop MTU of a "fragmentation needed" error (RFC 1191 4). */
  nextHopMtu: number;
  /** Echo data, or the quoted datagram of an error. */
  payloadOffset: number;
  payloadLength: number;
}

export function newIcmpRepr(): IcmpRepr {
  return { type: 0, code: 0, checksum: 0, identifier: 0, sequence: 0, nextHopMtu: 0, payloadOffset: 0, payloadLength: 0 };
}

export function parseIcmpv4(buf: Uint8Array, off: number, len: number, r: IcmpRepr, verifyChecksum = true): WireError {
  if (len < ICMP_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
  if (verifyChecksum && internetChecksum(buf, off, len) !== 0) return WireError.BadChecksum;
  r.type = buf[off]!;
  r.code = buf[off + 1]!;
  r.checksum = (buf[off + 2]! << 8) | buf[off + 3]!;
  r.identifier = 0;
  r.sequence = 0;
  r.nextHopMtu = 0;
  if (r.type === ICMP_ECHO_REQUEST || r.type === ICMP_ECHO_REPLY) {
    r.identifier = (buf[off + 4]! << 8) | buf[off + 5]!;
    r.sequence = (buf[off + 6]! << 8) | buf[off + 7]!;
  } else if (r.type === ICMP_DEST_UNREACHABLE && r.code === ICMP_UNREACH_FRAG_NEEDED) {
    r.nextHopMtu = (buf[off + 6]! << 8) | buf[off + 7]!;
  }
  r.payloadOffset = off + ICMP_HEADER_LEN;
  r.payloadLength = len - ICMP_HEADER_LEN;
  return WireError.Ok;
}

/** Writes an echo request/reply with `data` and its checksum; returns its length. */
export function emitIcmpv4Echo(
  type: number,
  identifier: number,
  sequence: number,
  data: Uint8Array | null,
  dataOff: number,
  dataLen: number,
  buf: Uint8Array,
  off: number,
): number {
  buf[off] = type;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = (identifier >>> 8) & 0xff;
  buf[off + 5] = identifier & 0xff;
  buf[off + 6] = (sequence >>> 8) & 0xff;
  buf[off + 7] = sequence & 0xff;
  if (data !== null && dataLen > 0) buf.set(data.subarray(dataOff, dataOff + dataLen), off + ICMP_HEADER_LEN);
  const len = ICMP_HEADER_LEN + dataLen;
  const c = internetChecksum(buf, off, len);
  buf[off + 2] = c >>> 8;
  buf[off + 3] = c & 0xff;
  return len;
}

/**
 * Writes an error message quoting `quoted` (the offending datagram from its
 * IP header on, clamped to ICMP_MAX_QUOTE bytes); returns its length.
 * `mtu` is used for "fragmentation needed" only.
 */
export function emitIcmpv4Error(
  type: number,
  code: number,
  mtu: number,
  quoted: Uint8Array,
  quotedOff: number,
  quotedLen: number,
  buf: Uint8Array,
  off: number,
): number {
  const q = quotedLen > ICMP_MAX_QUOTE ? ICMP_MAX_QUOTE : quotedLen;
  buf[off] = type;
  buf[off + 1] = code;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = 0;
  buf[off + 5] = 0;
  const m = type === ICMP_DEST_UNREACHABLE && code === ICMP_UNREACH_FRAG_NEEDED ? mtu : 0;
  buf[off + 6] = (m >>> 8) & 0xff;
  buf[off + 7] = m & 0xff;
  buf.set(quoted.subarray(quotedOff, quotedOff + q), off + ICMP_HEADER_LEN);
  const len = ICMP_HEADER_LEN + q;
  const c = internetChecksum(buf, off, len);
  buf[off + 2] = c >>> 8;
  buf[off + 3] = c & 0xff;
  return len;
}

/**
 * The headers of the invoking packet an ICMP error carries: its IP header
 * and at least the first 8 bytes of its transport header (RFC 792; RFC 1812
 * 4.3.2.3 and RFC 4443 2.4(c) allow more). Offsets are absolute in the
 * parsed buffer. IPv6 extension headers are not walked: a quote whose next
 * header is not the transport protocol names that header as `protocol`.
 */
export interface IcmpQuoteRepr {
  protocol: number;
  srcOffset: number;
  dstOffset: number;
  transportOffset: number;
  /** The quoted transport header's ports (TCP and UDP alike) and, for TCP, SEG.SEQ. */
  srcPort: number;
  dstPort: number;
  seq: number;
}

export function newIcmpQuoteRepr(): IcmpQuoteRepr {
  return { protocol: 0, srcOffset: 0, dstOffset: 0, transportOffset: 0, srcPort: 0, dstPort: 0, seq: 0 };
}

/** Bytes of the transport header an ICMP error must quote (RFC 792: "64 bits of Data Datagram"). */
export const ICMP_QUOTED_TRANSPORT_LEN = 8;

/** Parses the quote of an ICMP error (`family` 4 or 6) at buf[off], `len` bytes. */
export function parseIcmpQuote(buf: Uint8Array, off: number, len: number, family: number, r: IcmpQuoteRepr): WireError {
  if (off < 0 || off + len > buf.length) return WireError.Truncated;
  let ipLen: number;
  if (family === 4) {
    if (len < IPV4_HEADER_LEN) return WireError.Truncated;
    if (buf[off]! >> 4 !== 4) return WireError.BadVersion;
    ipLen = (buf[off]! & 0x0f) * 4;
    if (ipLen < IPV4_HEADER_LEN) return WireError.BadHeaderLength;
    r.protocol = buf[off + IPV4_PROTOCOL]!;
    r.srcOffset = off + IPV4_SRC;
    r.dstOffset = off + IPV4_DST;
  } else {
    if (len < IPV6_HEADER_LEN) return WireError.Truncated;
    if (buf[off]! >> 4 !== 6) return WireError.BadVersion;
    ipLen = IPV6_HEADER_LEN;
    r.protocol = buf[off + IPV6_NEXT_HEADER]!;
    r.srcOffset = off + IPV6_SRC;
    r.dstOffset = off + IPV6_DST;
  }
  if (len < ipLen + ICMP_QUOTED_TRANSPORT_LEN) return WireError.Truncated;
  const t = off + ipLen;
  r.transportOffset = t;
  r.srcPort = (buf[t]! << 8) | buf[t + 1]!;
  r.dstPort = (buf[t + 2]! << 8) | buf[t + 3]!;
  r.seq = ((buf[t + 4]! << 24) | (buf[t + 5]! << 16) | (buf[t + 6]! << 8) | buf[t + 7]!) >>> 0;
  return WireError.Ok;
}
