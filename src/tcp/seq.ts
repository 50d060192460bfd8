/**
 * TCP sequence-number arithmetic modulo 2^32 (RFC 9293 3.4). Every
 * comparison of sequence numbers in sluice goes through these functions;
 * raw `<` on sequence numbers is a bug at wraparound.
 *
 * `(a - b) | 0` is the signed 32-bit distance from b to a; it is negative
 * when a is "before" b in the circular space (RFC 1982-style serial
 * arithmetic with a 2^31 horizon).
 */

/** a + n, wrapped to uint32. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** Signed distance a - b in [-2^31, 2^31). */
export function seqSub(a: number, b: number): number {
  return (a - b) | 0;
}

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLeq(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGeq(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/** start <= seq < start + len (RFC 9293 3.4 "window" test); false for len 0. */
export function inWindow(seq: number, start: number, len: number): boolean {
  const d = (seq - start) >>> 0;
  return d < len;
}

/** The later of two sequence numbers. */
export function seqMax(a: number, b: number): number {
  return ((a - b) | 0) >= 0 ? a : b;
}

/** The earlier of two sequence numbers. */
export function seqMin(a: number, b: number): number {
  return ((a - b) | 0) <= 0 ? a : b;
}
