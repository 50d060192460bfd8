/**
 * A byte ring per connection direction, with a logical capacity (what the
 * window advertises / what the application may queue) and a store that
 * grows with what it holds.
 *
 * Send side: the application appends with `write`; bytes stay until the
 * peer acknowledges them (`discard`); segments are cut with `contiguous`,
 * which names a run of the backing store so the emitter copies straight
 * from it (no intermediate buffer).
 *
 * Receive side: in-order data is appended with `write`; out-of-order data is
 * placed ahead of the tail with `writeAt` and becomes readable with `commit`
 * once the hole before it fills (the assembler tracks which bytes are where).
 *
 * The store (issue 10) comes from the thread's RingPool: none while the ring
 * is empty (an idle connection, 10,000 of them a normal load for a gateway,
 * costs no buffer memory), a power-of-two class just large enough on the
 * first byte, doubled (contents moved once, amortised) when the window
 * fills further, and given back whenever the ring empties and when the
 * connection closes. Stores are never zero-filled: a previous flow's bytes
 * may be in one, so nothing reads outside what this ring wrote; reads
 * (`read`, `peek`, `contiguous`) are bounded by `length`, and `commit` only
 * exposes bytes `writeAt` placed.
 *
 * A send ring (`yieldsToBudget`) grows only into the headroom left under
 * the process's TCP buffer budget (buffer-budget.ts), and always to
 * FLOOR_BYTES; it keeps the store it has. `free` says so, so the
 * application queues no more than that until the peer's ACKs make room.
 */
import { FLOOR_BYTES } from './buffer-budget.js';
import { classSize, ringPool, type RingPool } from './ring-pool.js';

const UNALLOCATED = new Uint8Array(0);

export class ByteRing {
  /** The store (length 0 when none is held); its length is a power of two >= the bytes held. */
  backing: Uint8Array = UNALLOCATED;
  readonly capacity: number;
  private head = 0;
  private size = 0;
  /**
   * Bytes from the head to the end of the furthest byte written (readable
   * or placed by writeAt): what a move to a larger store must carry, and
   * 0 when the store can go back to the pool.
   */
  private reach = 0;
  /** Store size held last: a ring that empties and fills again (bulk) starts there, not at the smallest class. */
  private lastSize = 0;
  private readonly pool: RingPool;

  constructor(
    capacity: number,
    pool: RingPool = ringPool,
    /** A send ring: grows only into the pool's budget headroom (and to FLOOR_BYTES). */
    private readonly yieldsToBudget = false,
  ) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new RangeError('ByteRing capacity must be a positive integer');
    this.capacity = capacity;
    this.pool = pool;
  }

  /** Whether a store is held now. */
  get allocated(): boolean {
    return this.backing.length !== 0;
  }

  /** Bytes held (readable / unacknowledged). */
  get length(): number {
    return this.size;
  }

  /**
   * Bytes that may be added now: up to the capacity; a send ring, only up
   * to its store plus the budget's headroom, and at least to FLOOR_BYTES.
   */
  get free(): number {
    if (!this.yieldsToBudget) return this.capacity - this.size;
    const room = this.pool.headroom;
    let cap = this.backing.length + (room > 0 ? room : 0);
    if (cap <= FLOOR_BYTES) cap = FLOOR_BYTES;
    // Stores are powers of two: the largest that fits, so the growth stays inside the headroom.
    else if (cap < this.capacity) cap = 2 ** (31 - Math.clz32(cap));
    if (cap > this.capacity) cap = this.capacity;
    return cap > this.size ? cap - this.size : 0;
  }

  /** Appends up to `len` bytes; returns how many fit. */
  write(src: Uint8Array, off: number, len: number): number {
    const n = len < this.free ? len : this.free;
    if (n <= 0) return 0;
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
    if (len > 0) this.copyIn(this.size + gap, src, off, len);
    return true;
  }

  /** Makes `n` bytes already placed after the tail (by writeAt) readable. */
  commit(n: number): void {
    if (n < 0 || n > this.free) throw new RangeError('ByteRing.commit beyond capacity');
    if (this.size + n > this.reach) throw new RangeError('ByteRing.commit of bytes never placed');
    this.size += n;
  }

  /** Consumes up to `len` bytes into dst; returns the count. */
  read(dst: Uint8Array, off: number, len: number): number {
    const n = this.peek(0, dst, off, len);
    // No rebasing to 0 when emptied here: out-of-order bytes may sit beyond
    // the tail (writeAt), and they must stay where the assembler thinks.
    this.consume(n);
    return n;
  }

  /** Copies up to `len` bytes starting `from` bytes after the head, without consuming. */
  peek(from: number, dst: Uint8Array, off: number, len: number): number {
    if (from >= this.size) return 0;
    const n = len < this.size - from ? len : this.size - from;
    const cap = this.backing.length;
    let start = this.head + from;
    if (start >= cap) start -= cap;
    const first = cap - start < n ? cap - start : n;
    dst.set(this.backing.subarray(start, start + first), off);
    if (first < n) dst.set(this.backing.subarray(0, n - first), off + first);
    return n;
  }

  /**
   * Drops `n` bytes from the head (send side: acknowledged). An emptied ring
   * gives its store back; the next write starts at 0 so later segments are
   * long contiguous runs.
   */
  discard(n: number): void {
    this.consume(n < this.size ? n : this.size);
  }

  /** Index in `backing` of the byte `from` bytes after the head. */
  indexOf(from: number): number {
    const i = this.head + from;
    const cap = this.backing.length;
    return i >= cap ? i - cap : i;
  }

  /** Length of the contiguous run in `backing` that starts `from` bytes after the head, capped at `max`. */
  contiguous(from: number, max: number): number {
    if (from >= this.size) return 0;
    const avail = this.size - from;
    const start = this.indexOf(from);
    const run = this.backing.length - start;
    let n = avail < run ? avail : run;
    if (n > max) n = max;
    return n;
  }

  /**
   * Gives the store back to the pool and forgets every byte (the
   * connection is gone, or nothing will read what is left).
   */
  release(): void {
    if (this.backing.length !== 0) {
      this.pool.release(this.backing);
      this.backing = UNALLOCATED;
    }
    this.head = 0;
    this.size = 0;
    this.reach = 0;
  }

  private consume(n: number): void {
    if (n <= 0) return;
    this.size -= n;
    this.reach -= n;
    if (this.reach <= 0) {
      // Empty, nothing placed beyond the tail: the store goes back.
      this.pool.release(this.backing);
      this.backing = UNALLOCATED;
      this.head = 0;
      this.size = 0;
      this.reach = 0;
      return;
    }
    this.head += n;
    if (this.head >= this.backing.length) this.head -= this.backing.length;
  }

  /** Makes the store hold at least `need` bytes from the head, keeping every byte's offset from the head. */
  private ensure(need: number): void {
    const cap = this.backing.length;
    if (need <= cap) return;
    // A bulk ring starts again at the size it last had, unless that is past the budget's headroom (then what it needs: `free` bounds that).
    const again = this.lastSize > need && (!this.yieldsToBudget || this.lastSize - cap <= this.pool.headroom);
    const want = classSize(again ? this.lastSize : need);
    const next = this.pool.acquire(want);
    if (cap !== 0) {
      // Unwrap: the bytes from the head (and anything placed beyond the tail) to the start of the new store.
      const carry = this.reach;
      const first = cap - this.head < carry ? cap - this.head : carry;
      next.set(this.backing.subarray(this.head, this.head + first), 0);
      if (first < carry) next.set(this.backing.subarray(0, carry - first), first);
      this.pool.release(this.backing);
    }
    this.backing = next;
    this.head = 0;
    this.lastSize = want;
  }

  private copyIn(at: number, src: Uint8Array, off: number, n: number): void {
    const end = at + n;
    this.ensure(end);
    const cap = this.backing.length;
    let start = this.head + at;
    if (start >= cap) start -= cap;
    const first = cap - start < n ? cap - start : n;
    this.backing.set(src.subarray(off, off + first), start);
    if (first < n) this.backing.set(src.subarray(off + first, off + n), 0);
    if (end > this.reach) this.reach = end;
  }
}
