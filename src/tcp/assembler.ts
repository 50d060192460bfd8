/**
 * Out-of-order receive tracking (RFC 9293 3.10.7.4 "segment text"; SACK
 * reporting per RFC 2018 4).
 *
 * Ranges are byte offsets relative to RCV.NXT, kept sorted and merged in
 * preallocated arrays. Their number is capped: a segment that would open
 * one more hole than allowed is refused (the caller drops it and counts the
 * drop; the sender will retransmit), so hostile reordering cannot make the
 * state grow.
 */
const NO_RANGES = new Float64Array(0);

export class Assembler {
  /** Allocated on the first out-of-order segment: most connections never see one (issue 10: idle flows cost little). */
  private starts: Float64Array = NO_RANGES;
  private ends: Float64Array = NO_RANGES;
  private count = 0;
  /** Range most recently extended, reported first in SACK (RFC 2018 4). */
  private recentStart = -1;
  private recentEnd = -1;
  refused = 0;

  constructor(readonly maxRanges: number) {}

  get ranges(): number {
    return this.count;
  }

  get isEmpty(): boolean {
    return this.count === 0;
  }

  /**
   * Records bytes [offset, offset+len) beyond RCV.NXT (offset > 0). Returns
   * false when that would exceed the range cap; nothing changes then.
   */
  add(offset: number, len: number): boolean {
    if (len <= 0) return true;
    if (this.starts.length === 0) {
      this.starts = new Float64Array(this.maxRanges + 1);
      this.ends = new Float64Array(this.maxRanges + 1);
    }
    let start = offset;
    let end = offset + len;
    // Find the first range that ends at or after `start` (touching merges).
    let i = 0;
    while (i < this.count && this.ends[i]! < start) i++;
    let j = i;
    while (j < this.count && this.starts[j]! <= end) {
      if (this.starts[j]! < start) start = this.starts[j]!;
      if (this.ends[j]! > end) end = this.ends[j]!;
      j++;
    }
    const merged = j - i;
    if (merged === 0 && this.count >= this.maxRanges) {
      this.refused++;
      return false;
    }
    // Replace ranges i..j-1 with [start, end).
    const shift = 1 - merged;
    if (shift !== 0) {
      if (shift > 0) {
        for (let k = this.count - 1; k >= j; k--) {
          this.starts[k + shift] = this.starts[k]!;
          this.ends[k + shift] = this.ends[k]!;
        }
      } else {
        for (let k = j; k < this.count; k++) {
          this.starts[k + shift] = this.starts[k]!;
          this.ends[k + shift] = this.ends[k]!;
        }
      }
      this.count += shift;
    }
    this.starts[i] = start;
    this.ends[i] = end;
    this.recentStart = start;
    this.recentEnd = end;
    return true;
  }

  /**
   * RCV.NXT advanced by `n` bytes of in-order data. Returns how many more
   * bytes became contiguous (a range starting at or before the new RCV.NXT);
   * the caller advances RCV.NXT by that too. Offsets are rebased.
   */
  advance(n: number): number {
    let extra = 0;
    if (this.count > 0 && this.starts[0]! <= n) {
      extra = this.ends[0]! > n ? this.ends[0]! - n : 0;
      this.removeFirst();
    }
    const delta = n + extra;
    let w = 0;
    for (let k = 0; k < this.count; k++) {
      const s = this.starts[k]! - delta;
      const e = this.ends[k]! - delta;
      if (e <= 0) continue; // fully covered already
      this.starts[w] = s < 0 ? 0 : s;
      this.ends[w] = e;
      w++;
    }
    this.count = w;
    if (this.recentEnd >= 0) {
      this.recentStart -= delta;
      this.recentEnd -= delta;
      if (this.recentEnd <= 0) this.recentStart = this.recentEnd = -1;
    }
    return extra;
  }

  /** End of the range containing `offset`, or -1 when no range does (sender-side SACK skipping). */
  rangeEndAt(offset: number): number {
    for (let k = 0; k < this.count; k++) {
      if (this.starts[k]! > offset) return -1;
      if (this.ends[k]! > offset) return this.ends[k]!;
    }
    return -1;
  }

  /** Total bytes held in ranges. */
  get heldBytes(): number {
    let n = 0;
    for (let k = 0; k < this.count; k++) n += this.ends[k]! - this.starts[k]!;
    return n;
  }

  /** End of the highest range (0 when empty). */
  get highestEnd(): number {
    return this.count === 0 ? 0 : this.ends[this.count - 1]!;
  }

  /** True when [offset, offset+len) is already held entirely. */
  covers(offset: number, len: number): boolean {
    for (let k = 0; k < this.count; k++) {
      if (this.starts[k]! <= offset && this.ends[k]! >= offset + len) return true;
    }
    return false;
  }

  /**
   * Writes up to `max` SACK blocks as absolute sequence numbers given
   * RCV.NXT; the most recently changed range first, then the others in
   * ascending order. Returns the block count.
   */
  sackBlocks(rcvNxt: number, left: Uint32Array, right: Uint32Array, max: number): number {
    let n = 0;
    let recentIndex = -1;
    if (this.recentEnd > 0) {
      for (let k = 0; k < this.count; k++) {
        if (this.starts[k]! <= this.recentStart && this.ends[k]! >= this.recentEnd) {
          recentIndex = k;
          break;
        }
      }
    }
    if (recentIndex >= 0 && n < max) {
      left[n] = (rcvNxt + this.starts[recentIndex]!) >>> 0;
      right[n] = (rcvNxt + this.ends[recentIndex]!) >>> 0;
      n++;
    }
    for (let k = 0; k < this.count && n < max; k++) {
      if (k === recentIndex) continue;
      left[n] = (rcvNxt + this.starts[k]!) >>> 0;
      right[n] = (rcvNxt + this.ends[k]!) >>> 0;
      n++;
    }
    return n;
  }

  clear(): void {
    this.count = 0;
    this.recentStart = this.recentEnd = -1;
  }

  private removeFirst(): void {
    for (let k = 1; k < this.count; k++) {
      this.starts[k - 1] = this.starts[k]!;
      this.ends[k - 1] = this.ends[k]!;
    }
    this.count--;
  }
}
