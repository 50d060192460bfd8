/**
 * The record format shared with the native addon, both directions:
 *     [u32 little-endian length][packet bytes][pad to a multiple of 4]
 */

/** Bytes a record of `len` packet bytes occupies, header and padding included. */
export function recordSize(len: number): number {
  return 4 + ((len + 3) & ~3);
}

export function readRecordLength(buf: Uint8Array, off: number): number {
  return (buf[off]! | (buf[off + 1]! << 8) | (buf[off + 2]! << 16) | (buf[off + 3]! << 24)) >>> 0;
}

export function writeRecordLength(buf: Uint8Array, off: number, len: number): void {
  buf[off] = len & 0xff;
  buf[off + 1] = (len >>> 8) & 0xff;
  buf[off + 2] = (len >>> 16) & 0xff;
  buf[off + 3] = (len >>> 24) & 0xff;
}
