/**
 * IPv4 header codec (RFC 791 section 3.1). Parsing fills a caller-owned
 * repr and returns a WireError; it never throws and never allocates.
 * Addresses are not copied: the repr gives their offsets in the buffer.
 */
import { WireError } from './errors.js';
import { internetChecksum } from './checksum.js';

export const IPV4_HEADER_LEN = 20;
/** Field offsets from the start of the header. */
export const IPV4_TOTAL_LENGTH = 2;
export const IPV4_ID = 4;
export const IPV4_FLAGS_FRAGMENT = 6;
export const IPV4_TTL = 8;
export const IPV4_PROTOCOL = 9;
export const IPV4_CHECKSUM = 10;
export const IPV4_SRC = 12;
export const IPV4_DST = 16;

/** IANA protocol numbers of the protocol field (IPv6 next headers use the same: NH_TCP, NH_UDP). */
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;
const OPTION_EOL = 0;
const OPTION_NOP = 1;

export interface Ipv4Repr {
  headerLength: number;
  totalLength: number;
  tos: number;
  id: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Fragment offset in bytes (the field counts 8-byte units). */
  fragmentOffset: number;
  ttl: number;
  protocol: number;
  checksum: number;
  /** Absolute offsets of the 4-byte addresses in the parsed buffer. */
  srcOffset: number;
  dstOffset: number;
  payloadOffset: number;
  payloadLength: number;
  optionsLength: number;
}

export function newIpv4Repr(): Ipv4Repr {
  return {
    headerLength: 0,
    totalLength: 0,
    tos: 0,
    id: 0,
    dontFragment: false,
    moreFragments: false,
    fragmentOffset: 0,
    ttl: 0,
    protocol: 0,
    checksum: 0,
    srcOffset: 0,
    dstOffset: 0,
    payloadOffset: 0,
    payloadLength: 0,
    optionsLength: 0,
  };
}

/**
 * Parses the IPv4 header at buf[off]. `len` is what the link delivered;
 * bytes beyond the total length (link padding) are ignored.
 */
export function parseIpv4(buf: Uint8Array, off: number, len: number, r: Ipv4Repr, verifyChecksum = true): WireError {
  if (len < IPV4_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
  const vihl = buf[off]!;
  if (vihl >> 4 !== 4) return WireError.BadVersion;
  const ihl = (vihl & 0x0f) * 4;
  if (ihl < IPV4_HEADER_LEN) return WireError.BadHeaderLength;
  if (ihl > len) return WireError.Truncated;
  const total = (buf[off + IPV4_TOTAL_LENGTH]! << 8) | buf[off + IPV4_TOTAL_LENGTH + 1]!;
  if (total < ihl) return WireError.BadTotalLength;
  if (total > len) return WireError.Truncated;
  if (verifyChecksum && internetChecksum(buf, off, ihl) !== 0) return WireError.BadChecksum;
  if (ihl > IPV4_HEADER_LEN && !optionsWellFormed(buf, off + IPV4_HEADER_LEN, off + ihl)) return WireError.BadOption;
  const ff = (buf[off + IPV4_FLAGS_FRAGMENT]! << 8) | buf[off + IPV4_FLAGS_FRAGMENT + 1]!;
  const fragmentOffset = (ff & 0x1fff) * 8;
  // RFC 791: a datagram is at most 65535 bytes, so no fragment may reach
  // beyond that (the "ping of death" shape).
  if (fragmentOffset + (total - ihl) > 65535) return WireError.BadLength;
  if ((ff & 0x8000) !== 0) return WireError.BadOption; // reserved flag bit must be zero
  r.headerLength = ihl;
  r.totalLength = total;
  r.tos = buf[off + 1]!;
  r.id = (buf[off + IPV4_ID]! << 8) | buf[off + IPV4_ID + 1]!;
  r.dontFragment = (ff & FLAG_DF) !== 0;
  r.moreFragments = (ff & FLAG_MF) !== 0;
  r.fragmentOffset = fragmentOffset;
  r.ttl = buf[off + IPV4_TTL]!;
  r.protocol = buf[off + IPV4_PROTOCOL]!;
  r.checksum = (buf[off + IPV4_CHECKSUM]! << 8) | buf[off + IPV4_CHECKSUM + 1]!;
  r.srcOffset = off + IPV4_SRC;
  r.dstOffset = off + IPV4_DST;
  r.payloadOffset = off + ihl;
  r.payloadLength = total - ihl;
  r.optionsLength = ihl - IPV4_HEADER_LEN;
  return WireError.Ok;
}

/** RFC 791 3.1 option list: EOL ends it, NOP is one byte, others carry a length >= 2 within the header. */
function optionsWellFormed(buf: Uint8Array, start: number, end: number): boolean {
  let i = start;
  while (i < end) {
    const type = buf[i]!;
    if (type === OPTION_EOL) return true;
    if (type === OPTION_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return false;
    const olen = buf[i + 1]!;
    if (olen < 2 || i + olen > end) return false;
    i += olen;
  }
  return true;
}

export function isFragment(r: Ipv4Repr): boolean {
  return r.moreFragments || r.fragmentOffset !== 0;
}

/** What emitIpv4 writes: a 20-byte header without options. */
export interface Ipv4EmitRepr {
  /** Addresses as uint32 numbers. */
  src: number;
  dst: number;
  protocol: number;
  ttl: number;
  id: number;
  tos: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Bytes; must be a multiple of 8. */
  fragmentOffset: number;
  payloadLength: number;
}

export function newIpv4EmitRepr(): Ipv4EmitRepr {
  return { src: 0, dst: 0, protocol: 0, ttl: 64, id: 0, tos: 0, dontFragment: true, moreFragments: false, fragmentOffset: 0, payloadLength: 0 };
}

/** Writes a 20-byte header with its checksum at buf[off]; returns 20. Never throws for an in-bounds buffer. */
export function emitIpv4(r: Ipv4EmitRepr, buf: Uint8Array, off: number): number {
  const total = IPV4_HEADER_LEN + r.payloadLength;
  buf[off] = 0x45;
  buf[off + 1] = r.tos & 0xff;
  buf[off + IPV4_TOTAL_LENGTH] = (total >>> 8) & 0xff;
  buf[off + IPV4_TOTAL_LENGTH + 1] = total & 0xff;
  buf[off + IPV4_ID] = (r.id >>> 8) & 0xff;
  buf[off + IPV4_ID + 1] = r.id & 0xff;
  const ff = (r.dontFragment ? FLAG_DF : 0) | (r.moreFragments ? FLAG_MF : 0) | ((r.fragmentOffset >>> 3) & 0x1fff);
  buf[off + IPV4_FLAGS_FRAGMENT] = ff >>> 8;
  buf[off + IPV4_FLAGS_FRAGMENT + 1] = ff & 0xff;
  buf[off + IPV4_TTL] = r.ttl & 0xff;
  buf[off + IPV4_PROTOCOL] = r.protocol & 0xff;
  buf[off + IPV4_CHECKSUM] = 0;
  buf[off + IPV4_CHECKSUM + 1] = 0;
  writeIpv4Addr(buf, off + IPV4_SRC, r.src);
  writeIpv4Addr(buf, off + IPV4_DST, r.dst);
  const c = internetChecksum(buf, off, IPV4_HEADER_LEN);
  buf[off + IPV4_CHECKSUM] = c >>> 8;
  buf[off + IPV4_CHECKSUM + 1] = c & 0xff;
  return IPV4_HEADER_LEN;
}

/** Recomputes the header checksum in place (after editing a field). */
export function refreshIpv4Checksum(buf: Uint8Array, off: number): void {
  const ihl = (buf[off]! & 0x0f) * 4;
  buf[off + IPV4_CHECKSUM] = 0;
  buf[off + IPV4_CHECKSUM + 1] = 0;
  const c = internetChecksum(buf, off, ihl);
  buf[off + IPV4_CHECKSUM] = c >>> 8;
  buf[off + IPV4_CHECKSUM + 1] = c & 0xff;
}

export function readIpv4Addr(buf: Uint8Array, off: number): number {
  return ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
}

export function writeIpv4Addr(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 24) & 0xff;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

// Address text lives in ip-address.ts, the one parser and printer; these are its IPv4 forms.
export { formatIpv4, parseIpv4Text } from './ip-address.js';
