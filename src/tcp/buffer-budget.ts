/**
 * The process's budget for TCP buffer memory (`limits.tcpBufferMiB`): the
 * bytes of ring stores (ring-pool.ts) that every connection of every thread
 * holds, and the limit past which send rings stop growing. Linux has the
 * same bound as tcp_mem (tcp(7)): under memory pressure a socket's send
 * buffer no longer grows. Without it, each slow client of a bulk download
 * may hold a full send ring (tcp.sendBufferBytes, 1 MiB), so ten thousand
 * of them would hold 10 GiB.
 *
 * A send ring grows only into the headroom left under the limit, and
 * always to FLOOR_BYTES, so every flow keeps moving. Soft, as tcp_mem is:
 * a store a ring holds is never taken from it (the bytes in it are in
 * flight); receive rings are not held back (their window is advertised
 * already, and a window must not shrink: RFC 9293 3.8.6.2.2), and they
 * count toward the total. The total may then exceed the limit by
 * FLOOR_BYTES per flow and by the receive rings; and the headroom a thread
 * reads is refreshed only as it takes and gives back stores, so threads may
 * grow into the same headroom (the send rings hold at most the limit per
 * thread, plus the floors).
 *
 * One SharedArrayBuffer for the process (multi-queue: every worker gets the
 * main thread's), one slot per thread that only that thread writes: a
 * worker that dies takes its slot's count with it (WorkerPool clears it
 * before the replacement starts), so a crash never leaks budget.
 * Counts are in 4 KiB pages (the smallest store), so an Int32 holds 8 TiB.
 */

/** A send ring past the limit still grows to this (one upstream read, READ_BYTES in upstream-read.ts). */
export const FLOOR_BYTES = 64 * 1024;
/** Threads with a slot: the main thread and up to 64 queues' workers (tun.queues' cap). */
export const BUDGET_SLOTS = 65;

const PAGE = 4096;
const LIMIT = 0;
/** Times a thread found the total at or past the limit after being under it. */
const PRESSURE = 1;
/** The highest total a thread saw when it took a store. */
const PEAK = 2;
/** One past the highest slot any thread has used: what headroom() sums. */
const SLOTS_USED = 3;
const SLOT0 = 4;

export interface BufferBudgetStats {
  /** Store bytes held by every thread's connections now. */
  usedBytes: number;
  limitBytes: number;
  peakBytes: number;
  /** Times the total reached the limit (per thread, counted as it went over). */
  pressureEvents: number;
}

export class BufferBudget {
  private readonly cells: Int32Array;

  /**
   * @param shared  another thread's budget (`shared` of it), or none for a new one.
   * @param slot    this thread's slot: 0 the main thread, queue + 1 a worker.
   */
  constructor(
    shared: SharedArrayBuffer | null = null,
    readonly slot = 0,
  ) {
    if (!Number.isInteger(slot) || slot < 0 || slot >= BUDGET_SLOTS) throw new RangeError(`buffer budget slot ${slot} out of 0..${BUDGET_SLOTS - 1}`);
    this.cells = new Int32Array(shared ?? new SharedArrayBuffer((SLOT0 + BUDGET_SLOTS) * 4));
    if (shared === null) this.cells[LIMIT] = 0x7fffffff;
    // Raise SLOTS_USED to slot + 1 (workers start at once: compare and swap).
    for (;;) {
      const seen = Atomics.load(this.cells, SLOTS_USED);
      if (seen > slot || Atomics.compareExchange(this.cells, SLOTS_USED, seen, slot + 1) === seen) break;
    }
  }

  /** The memory to hand to other threads. */
  get shared(): SharedArrayBuffer {
    return this.cells.buffer as SharedArrayBuffer;
  }

  /** Sets the limit for every thread (rounded up to whole pages; at most 8 TiB). */
  setLimitBytes(bytes: number): void {
    const pages = Math.ceil(bytes / PAGE);
    Atomics.store(this.cells, LIMIT, pages > 0x7fffffff ? 0x7fffffff : pages);
  }

  /** This thread took (positive) or gave back (negative) `bytes` of store. */
  add(bytes: number): void {
    Atomics.add(this.cells, SLOT0 + this.slot, bytes / PAGE);
  }

  /**
   * The bytes left under the limit, all threads together (0 or less: over).
   * Counts a pressure event when it is over and `wasOver` was false, and
   * keeps the peak.
   */
  headroom(wasOver: boolean): number {
    const c = this.cells;
    const used = this.usedPages();
    // A new peak (rare): compare and swap, another thread may be raising it too.
    for (let seen = c[PEAK]!; used > seen; seen = c[PEAK]!) {
      if (Atomics.compareExchange(c, PEAK, seen, used) === seen) break;
    }
    const left = c[LIMIT]! - used;
    if (left <= 0 && !wasOver) Atomics.add(c, PRESSURE, 1);
    return left * PAGE;
  }

  /** Pages held by every thread that has a slot. */
  private usedPages(): number {
    const c = this.cells;
    const end = SLOT0 + Atomics.load(c, SLOTS_USED);
    let used = 0;
    for (let i = SLOT0; i < end; i++) used += Atomics.load(c, i);
    return used;
  }

  /** A thread that is gone (a worker that died): its stores went with it. */
  clearSlot(slot: number): void {
    Atomics.store(this.cells, SLOT0 + slot, 0);
  }

  stats(): BufferBudgetStats {
    const c = this.cells;
    return { usedBytes: this.usedPages() * PAGE, limitBytes: Atomics.load(c, LIMIT) * PAGE, peakBytes: Atomics.load(c, PEAK) * PAGE, pressureEvents: Atomics.load(c, PRESSURE) };
  }
}
