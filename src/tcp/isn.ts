/**
 * Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport,
 * remoteip, remoteport, secretkey), M a 4-microsecond timer. F is a keyed
 * SHA-256 truncated to 32 bits; the key is random per process.
 */
import { hash, randomBytes } from 'node:crypto';

/** Bytes of the secret. */
const SECRET_LEN = 32;
/** Local address (16), remote address (16), local port (2), remote port (2). */
const TUPLE_LEN = 36;

export class IsnGenerator {
  /**
   * The hash input, secret then tuple: one buffer, hashed in one call
   * (crypto.hash), instead of a Hash object per SYN (issue 10; the same
   * digest as update(secret).update(tuple)).
   */
  private readonly input: Buffer;
  private readonly secretLen: number;

  constructor(secret: Uint8Array = randomBytes(SECRET_LEN)) {
    this.secretLen = secret.length;
    this.input = Buffer.alloc(secret.length + TUPLE_LEN);
    this.input.set(secret, 0);
  }

  /** `tuple`: local address (16), remote address (16), local port (2), remote port (2). */
  next(nowMs: number, tuple: Uint8Array): number {
    this.input.set(tuple.length === TUPLE_LEN ? tuple : tuple.subarray(0, TUPLE_LEN), this.secretLen);
    const h = hash('sha256', this.input, 'buffer');
    const f = h.readUInt32BE(0);
    const m = Math.floor(nowMs * 250) >>> 0; // 4 µs ticks (RFC 6528 3)
    return (f + m) >>> 0;
  }
}
