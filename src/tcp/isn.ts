/**
 * Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport,
 * remoteip, remoteport, secretkey), M a 4-microsecond timer. F is a keyed
 * SHA-256 truncated to 32 bits; the key is random per process.
 */
import { createHash, randomBytes } from 'node:crypto';

export class IsnGenerator {
  private readonly secret: Buffer;

  constructor(secret: Uint8Array = randomBytes(32)) {
    this.secret = Buffer.from(secret);
  }

  /** `tuple`: local address (16), remote address (16), local port (2), remote port (2). */
  next(nowMs: number, tuple: Uint8Array): number {
    const h = createHash('sha256').update(this.secret).update(tuple).digest();
    const f = h.readUInt32BE(0);
    const m = Math.floor(nowMs * 250) >>> 0; // 4 µs ticks (RFC 6528 3)
    return (f + m) >>> 0;
  }
}
