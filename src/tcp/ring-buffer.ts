/**
 * A fixed-capacity byte ring, allocated once per connection direction.
 *
 * Send side: the application appends with `write`; bytes stay until the
 * peer acknowledges them (`discard`); segments are cut with `contiguous`,
 * which names a run of the backing store so the emitter copies straight
 * from it (no intermediate buffer).
 *
 * Receive side: in-order data is appended with `write`; out-of-order data is
 * placed ahead of the tail with `writeAt` and becomes readable with `commit`
 * once the hole before it fills (the assembler tracks which bytes are where).
 */
const UNALLOCATED = new Uint8Array(0);

export class ByteRing {
  /**
   * The store, allocated on the first write: an idle connection (10,000 of
   * them are a normal load for a gateway) costs no buffer memory at all.
   */
  backing: Uint8Array = UNALLOCATED;
  readonly capacity: number;
  private head = 0;
  private size = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new RangeError('ByteRing capacity must be a positive integer');
    this.capacity = capacity;
  }

  /** Whether the store has been allocated yet. */
  get allocated(): boolean {
    return this.backing.length !== 0;
  }

  /** Bytes held (readable / unacknowledged). */
  get length(): number {
    return this.size;
  }

  get free(): number {
    return this.capacity - this.size;
  }

  /** Appends up to `len` bytes; returns how many fit. */
  write(src: Uint8Array, off: number, len: number): number {
    const n = len < this.free ? len : this.free;
    this.copyIn(this.size, src, off, n);
    this.size += n;
    return n;
  }

  /**
   * Stores bytes `gap` bytes beyond the current tail without making them
   * readable. Returns false (and stores nothing) when they would not fit.
   */
  writeAt(gap: number, src: Uint8Array, off: number, len: number): boolean {
    if (gap < 0 || gap + len > this.free) return false;
    this.copyIn(this.size + gap, src, off, len);
    return true;
  }

  /** Makes `n` bytes already placed after the tail (by writeAt) readable. */
  commit(n: number): void {
    if (n < 0 || n > this.free) throw new RangeError('ByteRing.commit beyond capacity');
    this.size += n;
  }

  /** Consumes up to `len` bytes into dst; returns the count. */
  read(dst: Uint8Array, off: number, len: number): number {
    const n = this.peek(0, dst, off, len);
    // No rebasing to 0 when emptied here: out-of-order bytes may sit beyond
    // the tail (writeAt), and they must stay where the assembler thinks.
    this.head += n;
    if (this.head >= this.capacity) this.head -= this.capacity;
    this.size -= n;
    return n;
  }

  /** Copies up to `len` bytes starting `from` bytes after the head, without consuming. */
  peek(from: number, dst: Uint8Array, off: number, len: number): number {
    if (from >= this.size) return 0;
    const n = len < this.size - from ? len : this.size - from;
    let start = this.head + from;
    if (start >= this.capacity) start -= this.capacity;
    const first = this.capacity - start < n ? this.capacity - start : n;
    dst.set(this.backing.subarray(start, start + first), off);
    if (first < n) dst.set(this.backing.subarray(0, n - first), off + first);
    return n;
  }

  /**
   * Drops `n` bytes from the head (send side: acknowledged). An emptied ring
   * starts again at 0 so later segments are long contiguous runs; the send
   * side never holds bytes beyond the tail, so that is safe there.
   */
  discard(n: number): void {
    const k = n < this.size ? n : this.size;
    this.head += k;
    if (this.head >= this.capacity) this.head -= this.capacity;
    this.size -= k;
    if (this.size === 0) this.head = 0; // keep runs long: the next segment starts at 0
  }

  /** Index in `backing` of the byte `from` bytes after the head. */
  indexOf(from: number): number {
    const i = this.head + from;
    return i >= this.capacity ? i - this.capacity : i;
  }

  /** Length of the contiguous run in `backing` that starts `from` bytes after the head, capped at `max`. */
  contiguous(from: number, max: number): number {
    if (from >= this.size) return 0;
    const avail = this.size - from;
    const start = this.indexOf(from);
    const run = this.capacity - start;
    let n = avail < run ? avail : run;
    if (n > max) n = max;
    return n;
  }

  private copyIn(at: number, src: Uint8Array, off: number, n: number): void {
    if (n <= 0) return;
    if (this.backing.length === 0) this.backing = new Uint8Array(this.capacity);
    let start = this.head + at;
    if (start >= this.capacity) start -= this.capacity;
    const first = this.capacity - start < n ? this.capacity - start : n;
    this.backing.set(src.subarray(off, off + first), start);
    if (first < n) this.backing.set(src.subarray(off + first, off + n), 0);
  }
}
