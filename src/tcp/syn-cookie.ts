/**
 * SYN cookies (RFC 4987 3.6): under a SYN flood the stack answers a SYN
 * without keeping any state; the ISN of its SYN-ACK is a keyed hash of the
 * 4-tuple and the client's ISN, so the ACK that completes the handshake
 * proves the client saw the SYN-ACK (it cannot be spoofed blindly) and
 * carries everything needed to build the connection then.
 *
 * ISN layout (32 bits), after Linux's `__cookie_v4_init_sequence`:
 *   bits 31..29  the secret's period counter t (mod 8)
 *   bits 28..27  index of the MSS in a 4-entry table (IPv4 and IPv6 tables)
 *   bits 26..0   HalfSipHash-2-4(key_t, tuple | client ISN | t | mss index)
 * Window scale and SACK-permitted do not fit beside the hash; as Linux does
 * (`cookie_init_timestamp`), they ride in the low 5 bits of our timestamp
 * when the SYN offered timestamps (bits 3..0 the shift, 15 = none; bit 4
 * SACK), and without timestamps the SYN-ACK offers neither.
 *
 * The secret rotates every `periodMs`: a cookie made in period t is taken in
 * t and t+1 (so it lives between one and two periods), a forged counter
 * or an older one fails. Sans-IO: the clock is an argument, randomness is
 * injected; nothing here allocates per call.
 */

export interface SynCookieOptions {
  /** Secret lifetime; a cookie is valid for one to two of these. Default 30 s. */
  periodMs?: number;
  /** Fills `out` with random 32-bit words (tests pass a seeded one). Default: crypto.getRandomValues. */
  random?: (out: Uint32Array) => void;
}

/** RFC 879 / Linux msstab: common MSS values; an index fits in two bits. */
export const COOKIE_MSS_V4: readonly number[] = [536, 1300, 1440, 1460];
export const COOKIE_MSS_V6: readonly number[] = [1220, 1420, 1440, 8940];

const HASH_MASK = 0x07ffffff;
/** Low timestamp bits holding the options (RFC 7323 leaves the value opaque to the peer). */
export const COOKIE_TS_BITS = 5;
const TS_MASK = (1 << COOKIE_TS_BITS) - 1;
const WSCALE_NONE = 15;

function rotl(x: number, b: number): number {
  return (x << b) | (x >>> (32 - b));
}

/**
 * HalfSipHash-2-4 with a 32-bit tag (Aumasson and Bernstein's reference
 * `halfsiphash`, as Linux's hsiphash on 32-bit machines) over `n` whole
 * little-endian words. `k0`/`k1`: the 64-bit key as two little-endian words.
 */
export function halfSipHash24(k0: number, k1: number, words: Uint32Array, n: number): number {
  let v0 = k0 | 0;
  let v1 = k1 | 0;
  let v2 = 0x6c796765 ^ k0;
  let v3 = 0x74656462 ^ k1;
  for (let i = 0; i <= n; i++) {
    // The final block: no tail bytes (whole words only), the byte length on top.
    const m = i < n ? words[i]! | 0 : (n * 4) << 24;
    v3 ^= m;
    for (let r = 0; r < 2; r++) {
      v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
      v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
      v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
      v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
    }
    v0 ^= m;
  }
  v2 ^= 0xff;
  for (let r = 0; r < 4; r++) {
    v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
    v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  }
  return (v1 ^ v3) >>> 0;
}

function defaultRandom(out: Uint32Array): void {
  globalThis.crypto.getRandomValues(out);
}

export class SynCookies {
  private readonly periodMs: number;
  private readonly random: (out: Uint32Array) => void;
  /** [k0, k1] of the current period, then of the previous one. */
  private readonly keys = new Uint32Array(4);
  private period: number;
  private readonly words = new Uint32Array(11);
  /** Cookies made and cookie ACKs checked, for the stats. */
  issued = 0;
  validated = 0;
  rejected = 0;

  constructor(now: number, opts: SynCookieOptions = {}) {
    this.periodMs = opts.periodMs ?? 30_000;
    if (!(this.periodMs > 0)) throw new RangeError('SynCookies: periodMs must be positive');
    this.random = opts.random ?? defaultRandom;
    this.random(this.keys);
    this.period = Math.floor(now / this.periodMs);
  }

  /** Rotates the secrets so that keys[0..1] belong to the period of `now`. */
  private advance(now: number): number {
    const t = Math.floor(now / this.periodMs);
    if (t === this.period) return t;
    if (t === this.period + 1) {
      this.keys[2] = this.keys[0]!;
      this.keys[3] = this.keys[1]!;
      const fresh = this.words.subarray(0, 2);
      this.random(fresh);
      this.keys[0] = fresh[0]!;
      this.keys[1] = fresh[1]!;
    } else {
      // A jump (or the clock went back): neither old secret may stay valid.
      this.random(this.keys);
    }
    this.period = t;
    return t;
  }

  /**
   * The ISN for a SYN-ACK answering `clientIsn` from src to dst (16-byte
   * addresses, IPv4 mapped as the flow table stores them).
   */
  isn(now: number, family: number, src: Uint8Array, dst: Uint8Array, srcPort: number, dstPort: number, clientIsn: number, clientMss: number): number {
    const t = this.advance(now);
    const table = family === 4 ? COOKIE_MSS_V4 : COOKIE_MSS_V6;
    let idx = 0;
    for (let i = table.length - 1; i > 0; i--) {
      if (clientMss >= table[i]!) {
        idx = i;
        break;
      }
    }
    this.issued++;
    return ((((t & 7) << 29) | (idx << 27) | (this.mac(this.keys[0]!, this.keys[1]!, t, idx, src, dst, srcPort, dstPort, clientIsn) & HASH_MASK)) >>> 0);
  }

  /**
   * Checks the cookie an ACK returns (`cookie` = SEG.ACK - 1, `clientIsn` =
   * SEG.SEQ - 1). Returns the MSS it encodes, or 0 when it is not ours, was
   * made for another tuple or has expired.
   */
  check(now: number, family: number, src: Uint8Array, dst: Uint8Array, srcPort: number, dstPort: number, clientIsn: number, cookie: number): number {
    const t = this.advance(now);
    const c = cookie >>> 29;
    let k0: number;
    let k1: number;
    let tc: number;
    if (c === (t & 7)) {
      tc = t;
      k0 = this.keys[0]!;
      k1 = this.keys[1]!;
    } else if (c === ((t - 1) & 7)) {
      tc = t - 1;
      k0 = this.keys[2]!;
      k1 = this.keys[3]!;
    } else {
      this.rejected++;
      return 0;
    }
    const idx = (cookie >>> 27) & 3;
    if ((this.mac(k0, k1, tc, idx, src, dst, srcPort, dstPort, clientIsn) & HASH_MASK) !== (cookie & HASH_MASK)) {
      this.rejected++;
      return 0;
    }
    this.validated++;
    return (family === 4 ? COOKIE_MSS_V4 : COOKIE_MSS_V6)[idx]!;
  }

  private mac(k0: number, k1: number, t: number, idx: number, src: Uint8Array, dst: Uint8Array, srcPort: number, dstPort: number, clientIsn: number): number {
    const w = this.words;
    for (let i = 0; i < 4; i++) {
      const o = i * 4;
      w[i] = (src[o]! | (src[o + 1]! << 8) | (src[o + 2]! << 16) | (src[o + 3]! << 24)) >>> 0;
      w[4 + i] = (dst[o]! | (dst[o + 1]! << 8) | (dst[o + 2]! << 16) | (dst[o + 3]! << 24)) >>> 0;
    }
    w[8] = ((srcPort << 16) | dstPort) >>> 0;
    w[9] = clientIsn >>> 0;
    w[10] = ((t << 2) | idx) >>> 0;
    return halfSipHash24(k0, k1, w, 11);
  }
}

/**
 * The timestamp value of a cookie SYN-ACK: `clockTs` (what the connection's
 * timestamp clock reads now) with the options in its low bits, never above
 * `clockTs`, so the connection's later timestamps only grow and the client's
 * PAWS check (RFC 7323 5) passes (Linux `cookie_init_timestamp` does the same).
 */
export function cookieTimestamp(clockTs: number, windowScale: number, sackPermitted: boolean): number {
  const opts = (windowScale >= 0 && windowScale <= 14 ? windowScale : WSCALE_NONE) | (sackPermitted ? 16 : 0);
  let ts = ((clockTs & ~TS_MASK) | opts) >>> 0;
  if (ts !== clockTs && ((ts - clockTs) | 0) > 0) ts = (ts - (1 << COOKIE_TS_BITS)) >>> 0;
  return ts;
}

/** The window shift echoed in a cookie ACK's TSecr (-1: none). */
export function cookieWindowScale(tsEcr: number): number {
  const w = tsEcr & 15;
  return w === WSCALE_NONE ? -1 : w;
}

/** Whether the echoed timestamp says the SYN offered SACK. */
export function cookieSackPermitted(tsEcr: number): boolean {
  return (tsEcr & 16) !== 0;
}
