/**
 * Port lists for the `port` / `sourcePort` keys: single ports (443, "443")
 * and inclusive ranges ("8000-8100"), 0..65535.
 *
 * `PortSet` answers "is this port in the list" by binary search over merged
 * ranges (what one rule needs). `PortIndex` answers "smallest rule index
 * whose port list holds this port" in one array read (what the policy's
 * shared index needs for port-only rules); it costs 256 KiB per index.
 */
import { InvalidStateError } from '../../errors.js';
import { NO_VALUE } from './cidr-trie.js';

export type PortParse = { ok: true; lo: number; hi: number } | { ok: false; reason: string };

const EXPECTED = 'expected a port 0..65535 or a range "lo-hi" like "8000-8100"';

/** Parses one list item: an integer, or a string holding one port or `lo-hi`. */
export function parsePortItem(item: unknown): PortParse {
  if (typeof item === 'number') {
    if (Number.isInteger(item) && item >= 0 && item <= 65535) return { ok: true, lo: item, hi: item };
    return { ok: false, reason: `${EXPECTED}, got ${item}` };
  }
  if (typeof item !== 'string') return { ok: false, reason: `${EXPECTED}, got ${item === null ? 'null' : typeof item}` };
  const m = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(item);
  if (m === null) return { ok: false, reason: `${EXPECTED}, got ${JSON.stringify(item)}` };
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > 65535 || hi > 65535) return { ok: false, reason: `port ${Math.max(lo, hi)} in ${JSON.stringify(item)} is above 65535` };
  if (lo > hi) return { ok: false, reason: `range ${JSON.stringify(item)} ends before it starts; write "${hi}-${lo}"` };
  return { ok: true, lo, hi };
}

/** Immutable set of ports as sorted, merged, inclusive ranges. */
export class PortSet {
  /** [lo0, hi0, lo1, hi1, ...], sorted, non-overlapping, non-adjacent. */
  private readonly ranges: Uint16Array;
  private readonly n: number;

  constructor(ranges: readonly (readonly [number, number])[]) {
    const sorted = ranges.map((r) => [r[0], r[1]] as [number, number]).sort((a, b) => a[0] - b[0]);
    const merged: number[] = [];
    for (const [lo, hi] of sorted) {
      const k = merged.length;
      if (k > 0 && lo <= merged[k - 1]! + 1) {
        if (hi > merged[k - 1]!) merged[k - 1] = hi;
      } else merged.push(lo, hi);
    }
    this.ranges = Uint16Array.from(merged);
    this.n = merged.length / 2;
  }

  has(port: number): boolean {
    const r = this.ranges;
    let lo = 0;
    let hi = this.n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (port < r[2 * mid]!) hi = mid - 1;
      else if (port > r[2 * mid + 1]!) lo = mid + 1;
      else return true;
    }
    return false;
  }

  get rangeCount(): number {
    return this.n;
  }

  toString(): string {
    const parts: string[] = [];
    for (let i = 0; i < this.n; i++) {
      const lo = this.ranges[2 * i]!;
      const hi = this.ranges[2 * i + 1]!;
      parts.push(lo === hi ? String(lo) : `${lo}-${hi}`);
    }
    return parts.join(',');
  }
}

/**
 * Smallest value per port. Ranges are added in any order and applied in
 * `build()` in ascending value order, each filling only ports still unset;
 * a "next unset port" union-find makes the whole build O(65536 + ranges),
 * however wide and overlapping the ranges are.
 */
export class PortIndex {
  private readonly pending: number[] = []; // triples lo, hi, value
  private table: Int32Array | null = null;
  private count = 0;

  add(lo: number, hi: number, value: number): void {
    if (this.table !== null) throw new InvalidStateError('PortIndex.add after build()');
    if (lo > hi || lo < 0 || hi > 65535) throw new RangeError(`PortIndex.add: bad range ${lo}-${hi}`);
    this.pending.push(lo, hi, value);
    this.count++;
  }

  /** Ranges added. */
  get size(): number {
    return this.count;
  }

  build(): this {
    if (this.table !== null || this.count === 0) return this;
    const table = new Int32Array(65536).fill(NO_VALUE);
    const order: number[] = [];
    for (let i = 0; i < this.pending.length; i += 3) order.push(i);
    order.sort((a, b) => this.pending[a + 2]! - this.pending[b + 2]!);
    // next[p] = smallest unset port >= p (65536 = none), with path halving.
    const next = new Int32Array(65537);
    for (let p = 0; p <= 65536; p++) next[p] = p;
    const findNext = (p: number): number => {
      while (next[p] !== p) {
        next[p] = next[next[p]!]!;
        p = next[p]!;
      }
      return p;
    };
    for (const i of order) {
      const lo = this.pending[i]!;
      const hi = this.pending[i + 1]!;
      const v = this.pending[i + 2]!;
      for (let p = findNext(lo); p <= hi; p = findNext(p + 1)) {
        table[p] = v;
        next[p] = p + 1;
      }
    }
    this.table = table;
    this.pending.length = 0;
    return this;
  }

  /** Smallest value whose ranges hold `port`, or -1. */
  minMatch(port: number): number {
    const t = this.table;
    if (t === null) return -1;
    const v = t[port & 0xffff]!;
    return v === NO_VALUE ? -1 : v;
  }
}
