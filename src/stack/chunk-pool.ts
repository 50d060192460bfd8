/**
 * The 64 KiB Buffers a TcpStream reads its receive ring into, kept for
 * reuse by a consumer that hands each one back once it is done with it
 * (the relay, after the upstream socket's write callback: src/engine/relay.ts).
 * A fresh Buffer per chunk was one malloc of 64 KiB, one free when the GC
 * found it dead, and the page faults of an allocator that gave the memory
 * back to the kernel in between (issue 10: ~75 minor faults per MB of a
 * bulk upload). One pool per thread (module state: each worker has its own).
 *
 * A chunk is only ever handed out again after its consumer gave it back,
 * and a reader is shown only the bytes it just wrote into it (TcpStream
 * pushes the [0, got) view): no flow sees another's bytes.
 */

/** Size of every pooled chunk: the largest read TcpStream.pull makes. */
export const CHUNK_BYTES = 64 * 1024;

/** Chunks kept free at most (1 MiB per thread): one bulk flow's writes in flight are a few. */
const MAX_FREE = 16;

const free: Buffer[] = [];
const counts = { allocated: 0, reused: 0, returned: 0 };

/** A chunk to fill: a returned one when there is one. */
export function takeChunk(): Buffer {
  const b = free.pop();
  if (b !== undefined) {
    counts.reused++;
    return b;
  }
  counts.allocated++;
  return Buffer.allocUnsafeSlow(CHUNK_BYTES);
}

/**
 * Gives back a chunk takeChunk lent (or a view from its start), once
 * nothing reads it any more: after the write callback of the write that
 * carried it.
 */
export function giveBackChunk(c: Buffer): void {
  if (free.length >= MAX_FREE || c.byteOffset !== 0 || c.buffer.byteLength !== CHUNK_BYTES) return;
  counts.returned++;
  free.push(c.byteLength === CHUNK_BYTES ? c : Buffer.from(c.buffer, 0, CHUNK_BYTES));
}

/** For tests: chunks allocated, handed out again, given back, and free now. */
export function chunkPoolStats(): { allocated: number; reused: number; returned: number; free: number } {
  return { ...counts, free: free.length };
}
