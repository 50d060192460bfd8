/**
 * ICMPv6 codec (RFC 4443): echo, destination unreachable, packet too big,
 * time exceeded, parameter problem. The checksum covers the IPv6
 * pseudo-header (RFC 4443 2.3), so callers pass its unfolded sum.
 */
import { WireError } from './errors.js';
import { fold, sum16 } from './checksum.js';
import type { IcmpRepr } from './icmp.js';

export const ICMPV6_DEST_UNREACHABLE = 1;
export const ICMPV6_PACKET_TOO_BIG = 2;
export const ICMPV6_TIME_EXCEEDED = 3;
export const ICMPV6_PARAM_PROBLEM = 4;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;

export const ICMPV6_UNREACH_NO_ROUTE = 0;
export const ICMPV6_UNREACH_ADMIN = 1;
export const ICMPV6_UNREACH_ADDRESS = 3;
export const ICMPV6_UNREACH_PORT = 4;

export const ICMPV6_HEADER_LEN = 8;
/** RFC 4443 2.4(c): an error must not exceed the minimum MTU, 1280 - 40 - 8. */
export const ICMPV6_MAX_QUOTE = 1232;

/** Error messages have types 0..127, informational ones 128..255 (RFC 4443 2.1). */
export function isIcmpv6Error(type: number): boolean {
  return type < 128;
}

/** Parses an ICMPv6 message; verifies the checksum when pseudoSum is given. */
export function parseIcmpv6(buf: Uint8Array, off: number, len: number, r: IcmpRepr, pseudoSum: number | null): WireError {
  if (len < ICMPV6_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
  if (pseudoSum !== null && fold(sum16(buf, off, len, pseudoSum)) !== 0xffff) return WireError.BadChecksum;
  r.type = buf[off]!;
  r.code = buf[off + 1]!;
  r.checksum = (buf[off + 2]! << 8) | buf[off + 3]!;
  r.identifier = 0;
  r.sequence = 0;
  r.nextHopMtu = 0;
  if (r.type === ICMPV6_ECHO_REQUEST || r.type === ICMPV6_ECHO_REPLY) {
    r.identifier = (buf[off + 4]! << 8) | buf[off + 5]!;
    r.sequence = (buf[off + 6]! << 8) | buf[off + 7]!;
  } else if (r.type === ICMPV6_PACKET_TOO_BIG) {
    r.nextHopMtu = ((buf[off + 4]! << 24) | (buf[off + 5]! << 16) | (buf[off + 6]! << 8) | buf[off + 7]!) >>> 0;
  }
  r.payloadOffset = off + ICMPV6_HEADER_LEN;
  r.payloadLength = len - ICMPV6_HEADER_LEN;
  return WireError.Ok;
}

function storeChecksum(buf: Uint8Array, off: number, len: number, pseudoSum: number): void {
  const c = ~fold(sum16(buf, off, len, pseudoSum)) & 0xffff;
  buf[off + 2] = c >>> 8;
  buf[off + 3] = c & 0xff;
}

/**
 * Writes an echo request/reply. pseudoSum: pseudoHeaderSumV6 over the
 * packet's addresses with next header 58 and this message's length
 * (ICMPV6_HEADER_LEN + dataLen).
 */
export function emitIcmpv6Echo(
  type: number,
  identifier: number,
  sequence: number,
  data: Uint8Array | null,
  dataOff: number,
  dataLen: number,
  pseudoSum: number,
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
  if (data !== null && dataLen > 0) buf.set(data.subarray(dataOff, dataOff + dataLen), off + ICMPV6_HEADER_LEN);
  const len = ICMPV6_HEADER_LEN + dataLen;
  storeChecksum(buf, off, len, pseudoSum);
  return len;
}

/** Length of the error message emitIcmpv6Error writes for a quote of `quotedLen` bytes. */
export function icmpv6ErrorLength(quotedLen: number): number {
  return ICMPV6_HEADER_LEN + (quotedLen > ICMPV6_MAX_QUOTE ? ICMPV6_MAX_QUOTE : quotedLen);
}

/**
 * Writes an error message quoting the offending packet (clamped so the
 * whole message fits 1280 bytes). `param` is the MTU for packet-too-big,
 * the pointer for parameter-problem, else 0. pseudoSum must use
 * icmpv6ErrorLength(quotedLen) as the length.
 */
export function emitIcmpv6Error(
  type: number,
  code: number,
  param: number,
  quoted: Uint8Array,
  quotedOff: number,
  quotedLen: number,
  pseudoSum: number,
  buf: Uint8Array,
  off: number,
): number {
  const q = quotedLen > ICMPV6_MAX_QUOTE ? ICMPV6_MAX_QUOTE : quotedLen;
  buf[off] = type;
  buf[off + 1] = code;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = (param >>> 24) & 0xff;
  buf[off + 5] = (param >>> 16) & 0xff;
  buf[off + 6] = (param >>> 8) & 0xff;
  buf[off + 7] = param & 0xff;
  buf.set(quoted.subarray(quotedOff, quotedOff + q), off + ICMPV6_HEADER_LEN);
  const len = ICMPV6_HEADER_LEN + q;
  storeChecksum(buf, off, len, pseudoSum);
  return len;
}
