/**
 * TCP header codec (RFC 9293 section 3.1) with the options sluice speaks:
 * MSS (RFC 9293 3.2), window scale and timestamps (RFC 7323),
 * SACK-permitted and SACK blocks (RFC 2018).
 */
import { WireError } from './errors.js';
import { fold, sum16 } from './checksum.js';

export const TCP_HEADER_LEN = 20;
export const TCP_CHECKSUM_OFFSET = 16;
const OPT_EOL = 0;
const OPT_NOP = 1;
const OPT_MSS = 2;
const OPT_WINDOW_SCALE = 3;
const OPT_SACK_PERMITTED = 4;
const OPT_SACK = 5;
const OPT_TIMESTAMPS = 8;
/** RFC 7323 2.3: a shift above 14 is treated as 14. */
const MAX_WINDOW_SCALE = 14;

/** Flag bits of the 13th header byte (RFC 9293 3.1; ECE/CWR RFC 3168). */
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

/** Most SACK blocks one segment can carry (4 without timestamps, RFC 2018 3). */
export const TCP_MAX_SACK_BLOCKS = 4;

/**
 * Plain representation of a TCP header. Parsers fill a caller-owned,
 * reused instance (no allocation per packet); emitters read one.
 * Sequence numbers are uint32 held in JS numbers (always `>>> 0`).
 */
export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** Bitmask of TCP_* flags. */
  flags: number;
  /** The raw 16-bit window field, not yet scaled. */
  window: number;
  urgent: number;
  /** MSS option value, or 0 when absent. */
  mss: number;
  /** Window-scale shift count (0..14), or -1 when the option is absent. */
  windowScale: number;
  sackPermitted: boolean;
  /** Number of valid SACK blocks in `sackLeft`/`sackRight` (0..4). */
  sackCount: number;
  sackLeft: Uint32Array;
  sackRight: Uint32Array;
  /** True when the timestamps option is present; then tsVal/tsEcr are valid. */
  hasTimestamps: boolean;
  tsVal: number;
  tsEcr: number;
  /** Header length in bytes (20..60), set by parse; computed by emit. */
  headerLength: number;
  /** Offset and length of the payload in the parsed buffer (set by parse). */
  payloadOffset: number;
  payloadLength: number;
}

export function newTcpRepr(): TcpRepr {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    urgent: 0,
    mss: 0,
    windowScale: -1,
    sackPermitted: false,
    sackCount: 0,
    sackLeft: new Uint32Array(TCP_MAX_SACK_BLOCKS),
    sackRight: new Uint32Array(TCP_MAX_SACK_BLOCKS),
    hasTimestamps: false,
    tsVal: 0,
    tsEcr: 0,
    headerLength: 20,
    payloadOffset: 0,
    payloadLength: 0,
  };
}

function u32(buf: Uint8Array, off: number): number {
  return ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
}

function put32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 24) & 0xff;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

/**
 * Parses the TCP header at buf[off] of a segment `len` bytes long (the IP
 * payload). Every option field of `r` is reset first, so nothing leaks from
 * the previous segment parsed into the same repr. Checksums are checked
 * separately (verifyL4Checksum), because offloaded reads skip them.
 */
export function parseTcp(buf: Uint8Array, off: number, len: number, r: TcpRepr): WireError {
  if (len < TCP_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
  const hl = (buf[off + 12]! >> 4) * 4;
  if (hl < TCP_HEADER_LEN) return WireError.BadDataOffset;
  if (hl > len) return WireError.Truncated;
  r.srcPort = (buf[off]! << 8) | buf[off + 1]!;
  r.dstPort = (buf[off + 2]! << 8) | buf[off + 3]!;
  r.seq = u32(buf, off + 4);
  r.ack = u32(buf, off + 8);
  r.flags = buf[off + 13]!;
  r.window = (buf[off + 14]! << 8) | buf[off + 15]!;
  r.urgent = (buf[off + 18]! << 8) | buf[off + 19]!;
  r.mss = 0;
  r.windowScale = -1;
  r.sackPermitted = false;
  r.sackCount = 0;
  r.hasTimestamps = false;
  r.tsVal = 0;
  r.tsEcr = 0;
  r.headerLength = hl;
  r.payloadOffset = off + hl;
  r.payloadLength = len - hl;
  let i = off + TCP_HEADER_LEN;
  const end = off + hl;
  while (i < end) {
    const kind = buf[i]!;
    if (kind === OPT_EOL) break;
    if (kind === OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return WireError.BadOption;
    const olen = buf[i + 1]!;
    if (olen < 2 || i + olen > end) return WireError.BadOption;
    switch (kind) {
      case OPT_MSS:
        if (olen !== 4) return WireError.BadOption;
        r.mss = (buf[i + 2]! << 8) | buf[i + 3]!;
        break;
      case OPT_WINDOW_SCALE: {
        if (olen !== 3) return WireError.BadOption;
        const shift = buf[i + 2]!;
        r.windowScale = shift > MAX_WINDOW_SCALE ? MAX_WINDOW_SCALE : shift;
        break;
      }
      case OPT_SACK_PERMITTED:
        if (olen !== 2) return WireError.BadOption;
        r.sackPermitted = true;
        break;
      case OPT_SACK: {
        const n = (olen - 2) >> 3;
        if ((olen - 2) % 8 !== 0 || n < 1 || n > TCP_MAX_SACK_BLOCKS) return WireError.BadOption;
        for (let b = 0; b < n; b++) {
          r.sackLeft[b] = u32(buf, i + 2 + b * 8);
          r.sackRight[b] = u32(buf, i + 6 + b * 8);
        }
        r.sackCount = n;
        break;
      }
      case OPT_TIMESTAMPS:
        if (olen !== 10) return WireError.BadOption;
        r.hasTimestamps = true;
        r.tsVal = u32(buf, i + 2);
        r.tsEcr = u32(buf, i + 6);
        break;
      default:
        // Unknown options with a sane length are skipped (RFC 9293 3.2).
        break;
    }
    i += olen;
  }
  return WireError.Ok;
}

/** Header length emitTcp will write for `r` (options padded to 4 bytes). */
export function tcpHeaderLength(r: TcpRepr): number {
  let n = TCP_HEADER_LEN;
  if (r.mss > 0) n += 4;
  if (r.sackPermitted) n += 2;
  if (r.hasTimestamps) n += 10;
  if (r.windowScale >= 0) n += 3;
  if (r.sackCount > 0) {
    // Same rule as emitTcp: drop SACK blocks that would not fit in 60 bytes.
    let blocks = r.sackCount > TCP_MAX_SACK_BLOCKS ? TCP_MAX_SACK_BLOCKS : r.sackCount;
    while (blocks > 0 && n + 2 + 8 * blocks > 60) blocks--;
    if (blocks > 0) n += 2 + 8 * blocks;
  }
  return (n + 3) & ~3;
}

/**
 * Writes header and options at buf[off] with a zero checksum; returns the
 * header length. Options that would exceed 40 bytes are dropped from the
 * tail (SACK blocks first), so the result always fits the data offset.
 */
export function emitTcp(r: TcpRepr, buf: Uint8Array, off: number): number {
  buf[off] = (r.srcPort >>> 8) & 0xff;
  buf[off + 1] = r.srcPort & 0xff;
  buf[off + 2] = (r.dstPort >>> 8) & 0xff;
  buf[off + 3] = r.dstPort & 0xff;
  put32(buf, off + 4, r.seq);
  put32(buf, off + 8, r.ack);
  buf[off + 13] = r.flags & 0xff;
  buf[off + 14] = (r.window >>> 8) & 0xff;
  buf[off + 15] = r.window & 0xff;
  buf[off + 16] = 0;
  buf[off + 17] = 0;
  buf[off + 18] = (r.urgent >>> 8) & 0xff;
  buf[off + 19] = r.urgent & 0xff;
  let i = off + TCP_HEADER_LEN;
  const limit = off + 60;
  if (r.mss > 0) {
    buf[i] = OPT_MSS;
    buf[i + 1] = 4;
    buf[i + 2] = (r.mss >>> 8) & 0xff;
    buf[i + 3] = r.mss & 0xff;
    i += 4;
  }
  if (r.sackPermitted) {
    buf[i] = OPT_SACK_PERMITTED;
    buf[i + 1] = 2;
    i += 2;
  }
  if (r.hasTimestamps) {
    buf[i] = OPT_TIMESTAMPS;
    buf[i + 1] = 10;
    put32(buf, i + 2, r.tsVal);
    put32(buf, i + 6, r.tsEcr);
    i += 10;
  }
  if (r.windowScale >= 0) {
    buf[i] = OPT_WINDOW_SCALE;
    buf[i + 1] = 3;
    buf[i + 2] = r.windowScale;
    i += 3;
  }
  if (r.sackCount > 0) {
    let n = r.sackCount > TCP_MAX_SACK_BLOCKS ? TCP_MAX_SACK_BLOCKS : r.sackCount;
    while (n > 0 && i + 2 + 8 * n > limit) n--;
    if (n > 0) {
      buf[i] = OPT_SACK;
      buf[i + 1] = 2 + 8 * n;
      for (let b = 0; b < n; b++) {
        put32(buf, i + 2 + b * 8, r.sackLeft[b]!);
        put32(buf, i + 6 + b * 8, r.sackRight[b]!);
      }
      i += 2 + 8 * n;
    }
  }
  while (((i - off) & 3) !== 0) buf[i++] = OPT_NOP;
  const hl = i - off;
  buf[off + 12] = (hl / 4) << 4;
  return hl;
}

/**
 * Completes a TCP or ICMPv6 checksum: the field at
 * buf[checksumFieldOffset] must be zero; pseudoSum is the unfolded
 * pseudo-header sum (0 for ICMPv4).
 */
export function finishL4Checksum(buf: Uint8Array, l4Off: number, l4Len: number, checksumFieldOffset: number, pseudoSum: number): void {
  const c = ~fold(sum16(buf, l4Off, l4Len, pseudoSum)) & 0xffff;
  buf[checksumFieldOffset] = c >>> 8;
  buf[checksumFieldOffset + 1] = c & 0xff;
}

/** UDP variant: a computed 0 is sent as 0xffff (RFC 768, RFC 8200 8.1). */
export function finishUdpChecksum(buf: Uint8Array, l4Off: number, l4Len: number, pseudoSum: number): void {
  let c = ~fold(sum16(buf, l4Off, l4Len, pseudoSum)) & 0xffff;
  if (c === 0) c = 0xffff;
  buf[l4Off + 6] = c >>> 8;
  buf[l4Off + 7] = c & 0xff;
}

/** True when the L4 checksum (over pseudo-header and segment) verifies. */
export function verifyL4Checksum(buf: Uint8Array, l4Off: number, l4Len: number, pseudoSum: number): boolean {
  return fold(sum16(buf, l4Off, l4Len, pseudoSum)) === 0xffff;
}

/** Copies every field of a repr (SACK blocks included) without allocating. */
export function copyTcpRepr(from: TcpRepr, to: TcpRepr): void {
  to.srcPort = from.srcPort;
  to.dstPort = from.dstPort;
  to.seq = from.seq;
  to.ack = from.ack;
  to.flags = from.flags;
  to.window = from.window;
  to.urgent = from.urgent;
  to.mss = from.mss;
  to.windowScale = from.windowScale;
  to.sackPermitted = from.sackPermitted;
  to.sackCount = from.sackCount;
  to.sackLeft.set(from.sackLeft);
  to.sackRight.set(from.sackRight);
  to.hasTimestamps = from.hasTimestamps;
  to.tsVal = from.tsVal;
  to.tsEcr = from.tsEcr;
  to.headerLength = from.headerLength;
  to.payloadOffset = from.payloadOffset;
  to.payloadLength = from.payloadLength;
}
