/** UDP header codec (RFC 768). */
import { WireError } from './errors.js';

export const UDP_HEADER_LEN = 8;
export const UDP_CHECKSUM_OFFSET = 6;

export interface UdpRepr {
  srcPort: number;
  dstPort: number;
  /** The length field: header plus payload. */
  length: number;
  checksum: number;
  payloadOffset: number;
  payloadLength: number;
}

export function newUdpRepr(): UdpRepr {
  return { srcPort: 0, dstPort: 0, length: 0, checksum: 0, payloadOffset: 0, payloadLength: 0 };
}

/** Parses the UDP header; `len` is the IP payload length (the length field may not exceed it). */
export function parseUdp(buf: Uint8Array, off: number, len: number, r: UdpRepr): WireError {
  if (len < UDP_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
  const length = (buf[off + 4]! << 8) | buf[off + 5]!;
  if (length < UDP_HEADER_LEN) return WireError.BadLength;
  if (length > len) return WireError.Truncated;
  r.srcPort = (buf[off]! << 8) | buf[off + 1]!;
  r.dstPort = (buf[off + 2]! << 8) | buf[off + 3]!;
  r.length = length;
  r.checksum = (buf[off + UDP_CHECKSUM_OFFSET]! << 8) | buf[off + UDP_CHECKSUM_OFFSET + 1]!;
  r.payloadOffset = off + UDP_HEADER_LEN;
  r.payloadLength = length - UDP_HEADER_LEN;
  return WireError.Ok;
}

/** Writes the 8-byte header with a zero checksum (the caller fills it in); returns 8. */
export function emitUdp(srcPort: number, dstPort: number, payloadLength: number, buf: Uint8Array, off: number): number {
  const length = UDP_HEADER_LEN + payloadLength;
  buf[off] = (srcPort >>> 8) & 0xff;
  buf[off + 1] = srcPort & 0xff;
  buf[off + 2] = (dstPort >>> 8) & 0xff;
  buf[off + 3] = dstPort & 0xff;
  buf[off + 4] = (length >>> 8) & 0xff;
  buf[off + 5] = length & 0xff;
  buf[off + UDP_CHECKSUM_OFFSET] = 0;
  buf[off + UDP_CHECKSUM_OFFSET + 1] = 0;
  return UDP_HEADER_LEN;
}
