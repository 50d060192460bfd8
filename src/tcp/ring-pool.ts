/**
 * The pool the connections' byte rings take their stores from (issue 10):
 * power-of-two size classes from MIN_CLASS up, never zero-filled
 * (Buffer.allocUnsafeSlow: a ring only ever exposes bytes written into it,
 * see ByteRing), the small classes carved out of shared slabs so ten
 * thousand small rings are not ten thousand ArrayBuffers. A released store
 * goes on its class's free list (last in, first out: the next connection
 * gets a store that is still in the cache) until the list holds
 * `retainBytes` in all; past that it is left to the garbage collector.
 *
 * One pool per thread (module state): a worker thread has its own. Every
 * store handed out counts toward the process's BufferBudget
 * (buffer-budget.ts, limits.tcpBufferMiB), and `headroom` tells send
 * rings how far they may grow; it is refreshed whenever this thread takes
 * or gives back a store.
 */
import { BufferBudget } from './buffer-budget.js';

/** Smallest store a ring gets: one or two segments' worth. */
export const MIN_CLASS = 4096;
/** Stores up to this size come from slabs of SLAB_BYTES. */
const SLAB_CARVE_MAX = 32 * 1024;
const SLAB_BYTES = 256 * 1024;
const CLASSES = 31;

export interface RingPoolStats {
  /** Stores handed out and not yet returned. */
  inUse: number;
  inUseBytes: number;
  /** Stores waiting on the free lists. */
  free: number;
  freeBytes: number;
  /** Stores handed out from a free list (a reuse) / freshly carved or allocated. */
  reused: number;
  fresh: number;
  slabs: number;
}

/** Index of the power-of-two class holding `size` bytes (size a power of two >= MIN_CLASS). */
function classOf(size: number): number {
  return 31 - Math.clz32(size);
}

/** The smallest class size >= n (n <= 2^30). */
export function classSize(n: number): number {
  if (n <= MIN_CLASS) return MIN_CLASS;
  return 2 ** (32 - Math.clz32(n - 1));
}

export class RingPool {
  private readonly lists: Uint8Array[][] = [];
  private slab: Uint8Array | null = null;
  private slabOff = 0;
  private readonly stats: RingPoolStats = { inUse: 0, inUseBytes: 0, free: 0, freeBytes: 0, reused: 0, fresh: 0, slabs: 0 };

  /** The process's TCP buffer budget; a worker thread replaces it with the main thread's (useBudget). */
  budget: BufferBudget = new BufferBudget();
  /** Bytes left under the budget's limit, all threads together (0 or less: over; send rings then grow only to FLOOR_BYTES). */
  headroom = 0x7fffffff;

  constructor(public retainBytes = 32 * 1024 * 1024) {
    for (let i = 0; i < CLASSES; i++) this.lists.push([]);
  }

  /** Sets the budget's limit (for every thread sharing it: limits.tcpBufferMiB) and this thread's headroom under it. */
  setBudgetLimit(bytes: number): void {
    this.budget.setLimitBytes(bytes);
    this.headroom = this.budget.headroom(this.headroom <= 0);
  }

  /** Counts this pool's stores in `budget` from now on (a worker: the main thread's, in its own slot). */
  useBudget(budget: BufferBudget): void {
    const held = this.stats.inUseBytes;
    this.budget.add(-held);
    budget.add(held);
    this.budget = budget;
    this.headroom = budget.headroom(false);
  }

  /**
   * A store of exactly `size` bytes (a class size, from classSize), with
   * whatever bytes a previous owner left in it: the caller must never read
   * a byte it did not write.
   */
  acquire(size: number): Uint8Array {
    const list = this.lists[classOf(size)]!;
    const s = this.stats;
    s.inUse++;
    s.inUseBytes += size;
    this.budget.add(size);
    this.headroom = this.budget.headroom(this.headroom <= 0);
    const got = list.pop();
    if (got !== undefined) {
      s.free--;
      s.freeBytes -= size;
      s.reused++;
      return got;
    }
    s.fresh++;
    if (size > SLAB_CARVE_MAX) return Buffer.allocUnsafeSlow(size);
    if (this.slab === null || this.slabOff + size > SLAB_BYTES) {
      this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.slabOff = 0;
      s.slabs++;
    }
    const view = this.slab.subarray(this.slabOff, this.slabOff + size);
    this.slabOff += size;
    return view;
  }

  /** Gives a store from acquire() back. The caller must drop every reference to it. */
  release(store: Uint8Array): void {
    const size = store.length;
    const s = this.stats;
    s.inUse--;
    s.inUseBytes -= size;
    this.budget.add(-size);
    this.headroom = this.budget.headroom(true);
    if (s.freeBytes + size > this.retainBytes) return;
    this.lists[classOf(size)]!.push(store);
    s.free++;
    s.freeBytes += size;
  }

  /** A snapshot of the counts. */
  snapshot(): RingPoolStats {
    return { ...this.stats };
  }

  /** Drops every free store (tests; memory pressure). */
  trim(): void {
    for (const l of this.lists) l.length = 0;
    this.stats.free = 0;
    this.stats.freeBytes = 0;
    this.slab = null;
  }
}

/** The thread's pool. */
export const ringPool = new RingPool();
