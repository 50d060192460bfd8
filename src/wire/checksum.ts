/**
 * The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
 *
 * Sums are accumulated unfolded in a JS number: 32-bit words are added as
 * two 16-bit halves, so the running total stays an exact integer far below
 * 2^53 for any packet up to 64 KiB (at most 2^15 words of at most 2^16).
 * Folding happens once at the end, as RFC 1071 section 2(C) allows
 * ("deferred carries").
 */

/**
 * Unfolded sum of the 16-bit big-endian words of buf[off, off+len) plus
 * `initial`. An odd trailing byte is padded with zero (RFC 1071 4.1).
 */
export function sum16(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  let i = off;
  const end = off + len;
  // Unrolled by 16 bytes: eight words per iteration.
  const end16 = end - 15;
  while (i < end16) {
    sum +=
      ((buf[i]! << 8) | buf[i + 1]!) +
      ((buf[i + 2]! << 8) | buf[i + 3]!) +
      ((buf[i + 4]! << 8) | buf[i + 5]!) +
      ((buf[i + 6]! << 8) | buf[i + 7]!) +
      ((buf[i + 8]! << 8) | buf[i + 9]!) +
      ((buf[i + 10]! << 8) | buf[i + 11]!) +
      ((buf[i + 12]! << 8) | buf[i + 13]!) +
      ((buf[i + 14]! << 8) | buf[i + 15]!);
    i += 16;
  }
  const end2 = end - 1;
  while (i < end2) {
    sum += (buf[i]! << 8) | buf[i + 1]!;
    i += 2;
  }
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

/** Folds an unfolded sum to 16 bits with end-around carry (not complemented). */
export function fold(sum: number): number {
  // Two rounds of folding suffice below 2^32; sums here can exceed 2^32 in
  // theory (huge initial seeds), so split with division first.
  let s = (sum % 0x10000) + Math.floor(sum / 0x10000);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** The one's-complement checksum of buf[off, off+len) seeded with `initial`. */
export function internetChecksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~fold(sum16(buf, off, len, initial)) & 0xffff;
}

/** Unfolded IPv4 pseudo-header sum (RFC 9293 3.1; RFC 768) with the addresses read in place. */
export function pseudoHeaderSumV4(buf: Uint8Array, srcOff: number, dstOff: number, protocol: number, l4Length: number): number {
  return (
    ((buf[srcOff]! << 8) | buf[srcOff + 1]!) +
    ((buf[srcOff + 2]! << 8) | buf[srcOff + 3]!) +
    ((buf[dstOff]! << 8) | buf[dstOff + 1]!) +
    ((buf[dstOff + 2]! << 8) | buf[dstOff + 3]!) +
    protocol +
    l4Length
  );
}

/** Unfolded IPv6 pseudo-header sum (RFC 8200 8.1) with the addresses read in place. */
export function pseudoHeaderSumV6(buf: Uint8Array, srcOff: number, dstOff: number, nextHeader: number, l4Length: number): number {
  return sum16(buf, srcOff, 16, sum16(buf, dstOff, 16, nextHeader + (l4Length >>> 16) + (l4Length & 0xffff)));
}

/**
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), the new checksum after one
 * 16-bit word of the covered data changed from `oldWord` to `newWord`.
 * (Eqn. 3 avoids the -0 ambiguity of eqn. 2 noted in RFC 1624 section 3.)
 */
export function updateChecksum16(oldChecksum: number, oldWord: number, newWord: number): number {
  const sum = (~oldChecksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  return ~fold(sum) & 0xffff;
}

/** RFC 1624 update for a 32-bit field (an IPv4 address) changing. */
export function updateChecksum32(oldChecksum: number, oldValue: number, newValue: number): number {
  const sum =
    (~oldChecksum & 0xffff) +
    (~(oldValue >>> 16) & 0xffff) +
    (~oldValue & 0xffff) +
    ((newValue >>> 16) & 0xffff) +
    (newValue & 0xffff);
  return ~fold(sum) & 0xffff;
}
