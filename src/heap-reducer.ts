/**
 * Gives the heap back after a burst (issue 10: 10,000 idle flows under
 * 100 MB). Setting up 10,000 connections leaves ~50 MB of garbage promoted
 * to the old generation; V8's memory reducer is meant to collect it with
 * compacting GCs once the program goes quiet, but it decides from its
 * allocation-rate samples, and when no GC came after the burst those are
 * the burst's: measured with 10,000 idle flows through `sluice run`
 * (test/engine/idle-memory.test.ts), in 3 of 16 runs it did not run within
 * 22 s and the process stayed at 137-168 MB instead of 115-118 MB, old
 * space holding ~97 MB for ~50 MB live.
 *
 * So each thread that carries flows (the main thread, every queue worker)
 * watches its own heap every CHECK_MS. Once the used heap has grown by
 * GROWTH_BYTES above the lowest it was seen at, and then stops growing
 * (less than STEADY_BYTES more than at the last check), the thread asks V8
 * for a memory-reducing collection (native reduceHeap: incremental, no
 * long pause; native/src/heap.cc), and asks again, up to MAX_ASKS in all,
 * while the heap still holds more than SLACK_BYTES of committed but unused
 * memory: one such collection compacts only part of the old generation
 * (measured: old space 98 -> 69 MB committed for 49 MB live; a second
 * brought it to ~50 MB). The low mark follows the heap down, so a heap
 * that settles asks again only after it has grown by GROWTH_BYTES more;
 * steady traffic, whose heap does not keep growing, never asks.
 * SLUICE_HEAP_REDUCER=0 turns it off.
 */
import { getHeapStatistics } from 'node:v8';
import type { SluiceNative } from './link/native.js';

const CHECK_MS = 4000;
const GROWTH_BYTES = 16 * 1024 * 1024;
const STEADY_BYTES = 2 * 1024 * 1024;
const SLACK_BYTES = 8 * 1024 * 1024;
const MAX_ASKS = 3;

/** The decision, apart from the timer and V8 (heap sizes in, "ask now" out). */
export class HeapWatch {
  private lowest: number;
  private last: number;
  /** Requests left for the current growth; 0: none pending. */
  private asks = 0;

  constructor(used: number) {
    this.lowest = used;
    this.last = used;
  }

  /** One check of the used and the committed (physical) heap: true to ask V8 for a memory-reducing collection now. */
  check(used: number, committed: number): boolean {
    if (used < this.lowest) this.lowest = used;
    if (used - this.lowest > GROWTH_BYTES) {
      this.asks = MAX_ASKS;
      this.lowest = used;
    }
    const steady = used - this.last < STEADY_BYTES;
    this.last = used;
    if (this.asks === 0 || !steady) return false;
    // After the first: only while compaction has something left to give back.
    if (this.asks < MAX_ASKS && committed - used < SLACK_BYTES) {
      this.asks = 0;
      return false;
    }
    this.asks--;
    return true;
  }
}

/** Starts this thread's watch (an unref'd timer: it never holds the process); null when turned off. */
export function startHeapReducer(native: Pick<SluiceNative, 'reduceHeap'>): NodeJS.Timeout | null {
  if (process.env.SLUICE_HEAP_REDUCER === '0') return null;
  const watch = new HeapWatch(getHeapStatistics().used_heap_size);
  const timer = setInterval(() => {
    const h = getHeapStatistics();
    if (watch.check(h.used_heap_size, h.total_physical_size)) native.reduceHeap();
  }, CHECK_MS);
  timer.unref();
  return timer;
}
