/**
 * The dials in progress of every engine of a multi-queue `sluice run`
 * (tun.queues > 1), in one SharedArrayBuffer, so `limits.dials` and
 * `limits.dialsPerSource` cap the process as they do with one queue. The
 * kernel hashes each flow's 4-tuple to a queue, so one client's
 * connections land on several workers: per-worker limiters would let a
 * client have dialsPerSource dials per worker.
 *
 * Layout (Int32Array): [0] a lock, [1] dials in progress in all, [2] the
 * table's capacity (a power of two), then `capacity` keys and `capacity`
 * counts. A key is a 32-bit FNV-1a hash of the source address text (never
 * 0, the empty slot): two sources with the same hash share one count, so
 * the cap may hold for them together (a 1 in 2^32 chance per pair).
 * Open addressing with linear probing; deletion shifts the following
 * entries back (no tombstones), so a lookup stops at the first empty slot.
 *
 * The lock is a spin lock on [0] (Atomics.compareExchange): what it guards
 * is a few probes, taken once per dial and once per dial's end, never per
 * packet; the main thread takes it too (TPROXY flows), and may not
 * Atomics.wait, so nobody waits, everybody spins.
 */

const LOCK = 0;
const ACTIVE = 1;
const CAPACITY = 2;
const HEADER = 3;
/** Largest table: entries beyond it (more than this many sources dialling at once) are refused as over limits.dials. */
const MAX_CAPACITY = 1 << 17;

export type DialVerdict = 'ok' | 'global' | 'source';

/** A table for `maxDials` dials in progress: twice as many slots (at most MAX_CAPACITY), at least 64. */
export function newDialTable(maxDials: number): SharedArrayBuffer {
  let cap = 64;
  while (cap < maxDials * 2 && cap < MAX_CAPACITY) cap *= 2;
  const sab = new SharedArrayBuffer((HEADER + cap * 2) * 4);
  new Int32Array(sab)[CAPACITY] = cap;
  return sab;
}

function hashSource(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h === 0 ? 1 : h | 0;
}

export class SharedDialTable {
  private readonly a: Int32Array;
  private readonly cap: number;
  private readonly mask: number;

  constructor(sab: SharedArrayBuffer) {
    this.a = new Int32Array(sab);
    this.cap = this.a[CAPACITY]!;
    this.mask = this.cap - 1;
  }

  /** Dials in progress in all engines. */
  get active(): number {
    return Atomics.load(this.a, ACTIVE);
  }

  /** Takes a slot for a dial on behalf of `source`, or says which cap refused it. */
  tryAcquire(source: string, maxDials: number, maxPerSource: number): DialVerdict {
    const key = hashSource(source);
    const a = this.a;
    this.lock();
    try {
      if (a[ACTIVE]! >= maxDials) return 'global';
      let i = key & this.mask;
      for (let n = 0; n < this.cap; n++, i = (i + 1) & this.mask) {
        const k = a[HEADER + i]!;
        if (k === key) {
          if (a[HEADER + this.cap + i]! >= maxPerSource) return 'source';
          a[HEADER + this.cap + i] = a[HEADER + this.cap + i]! + 1;
          a[ACTIVE] = a[ACTIVE]! + 1;
          return 'ok';
        }
        if (k === 0) {
          a[HEADER + i] = key;
          a[HEADER + this.cap + i] = 1;
          a[ACTIVE] = a[ACTIVE]! + 1;
          return 'ok';
        }
      }
      return 'global'; // every slot taken: more sources dialling than the table holds
    } finally {
      Atomics.store(a, LOCK, 0);
    }
  }

  /** Gives back a slot taken by tryAcquire for `source`. */
  release(source: string): void {
    const key = hashSource(source);
    const a = this.a;
    const cap = this.cap;
    this.lock();
    try {
      let i = key & this.mask;
      for (let n = 0; n < cap; n++, i = (i + 1) & this.mask) {
        const k = a[HEADER + i]!;
        if (k === 0) return;
        if (k !== key) continue;
        a[ACTIVE] = a[ACTIVE]! - 1;
        a[HEADER + cap + i] = a[HEADER + cap + i]! - 1;
        if (a[HEADER + cap + i]! > 0) return;
        this.remove(i);
        return;
      }
    } finally {
      Atomics.store(a, LOCK, 0);
    }
  }

  /** Backward-shift deletion of slot `hole` (linear probing): later entries of the same run move up. */
  private remove(hole: number): void {
    const a = this.a;
    const cap = this.cap;
    const mask = this.mask;
    let j = hole;
    for (;;) {
      j = (j + 1) & mask;
      const k = a[HEADER + j]!;
      if (k === 0) break;
      const home = k & mask;
      // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
      const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (between) continue;
      a[HEADER + hole] = k;
      a[HEADER + cap + hole] = a[HEADER + cap + j]!;
      hole = j;
    }
    a[HEADER + hole] = 0;
    a[HEADER + cap + hole] = 0;
  }

  private lock(): void {
    while (Atomics.compareExchange(this.a, LOCK, 0, 1) !== 0);
  }
}
