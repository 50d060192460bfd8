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
const NO_FLAGS = new Uint8Array(0);

/**
 * Ranges remembered in the order they last changed (RFC 2018 4: the first
 * block reports the segment that triggered the ACK, the others repeat the
 * most recently reported ones). Eight: more than the three or four blocks
 * an ACK has room for, so ranges opened in one batch of segments that gets
 * one ACK are still reported on the next ones (see sackBlocks).
 */
const RECENT = 8;

export class Assembler {
  /** Allocated on the first out-of-order segment: most connections never see one (issue 10: idle flows cost little). */
  private starts: Float64Array = NO_RANGES;
  private ends: Float64Array = NO_RANGES;
  private count = 0;
  /** Ranges by recency (RECENT), most recently changed first; each equals one of the ranges. */
  private recentStarts: Float64Array = NO_RANGES;
  private recentEnds: Float64Array = NO_RANGES;
  /** Whether recent range k has been in a SACK option since it last changed. */
  private recentReported: Uint8Array = NO_FLAGS;
  private recentCount = 0;
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
      this.recentStarts = new Float64Array(RECENT);
      this.recentEnds = new Float64Array(RECENT);
      this.recentReported = new Uint8Array(RECENT);
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
    this.touch(start, end);
    return true;
  }

  /** [start, end) changed (new, extended or merged): first by recency, not yet reported; what it absorbed goes. */
  private touch(start: number, end: number): void {
    let w = 0;
    for (let k = 0; k < this.recentCount; k++) {
      const s = this.recentStarts[k]!;
      if (s >= start && this.recentEnds[k]! <= end) continue; // merged into it
      if (w === RECENT - 1) break; // the oldest falls off
      this.recentStarts[w] = s;
      this.recentEnds[w] = this.recentEnds[k]!;
      this.recentReported[w] = this.recentReported[k]!;
      w++;
    }
    for (let k = w; k > 0; k--) {
      this.recentStarts[k] = this.recentStarts[k - 1]!;
      this.recentEnds[k] = this.recentEnds[k - 1]!;
      this.recentReported[k] = this.recentReported[k - 1]!;
    }
    this.recentStarts[0] = start;
    this.recentEnds[0] = end;
    this.recentReported[0] = 0;
    this.recentCount = w + 1;
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
    // The same rebasing for the recency list; delivered ranges leave it.
    w = 0;
    for (let k = 0; k < this.recentCount; k++) {
      const s = this.recentStarts[k]! - delta;
      const e = this.recentEnds[k]! - delta;
      if (e <= 0 || s <= 0) continue;
      this.recentStarts[w] = s;
      this.recentEnds[w] = e;
      this.recentReported[w] = this.recentReported[k]!;
      w++;
    }
    this.recentCount = w;
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
   * RCV.NXT (RFC 2018 4): the most recently changed range first (it holds
   * the segment that triggered the ACK), then ranges that changed and were
   * never reported, then the most recently reported ones, newest first;
   * other ranges fill what room is left, lowest first. Reporting the lowest
   * ranges every time instead (as before) hid every range above the third
   * from the sender when loss left many holes: its RACK then took the data
   * there for lost and sent it again. Returns the block count.
   */
  sackBlocks(rcvNxt: number, left: Uint32Array, right: Uint32Array, max: number): number {
    let n = 0;
    const rc = this.recentCount;
    /** Bit k: recent range k is in this option. */
    let used = 0;
    if (rc > 0 && max > 0) {
      left[n] = (rcvNxt + this.recentStarts[0]!) >>> 0;
      right[n] = (rcvNxt + this.recentEnds[0]!) >>> 0;
      used = 1;
      n++;
    }
    // First the never reported, then the others.
    for (let pass = 0; pass < 2; pass++) {
      for (let k = 1; k < rc && n < max; k++) {
        if ((used & (1 << k)) !== 0 || (pass === 0 && this.recentReported[k] !== 0)) continue;
        left[n] = (rcvNxt + this.recentStarts[k]!) >>> 0;
        right[n] = (rcvNxt + this.recentEnds[k]!) >>> 0;
        used |= 1 << k;
        n++;
      }
    }
    for (let k = 0; k < rc; k++) if ((used & (1 << k)) !== 0) this.recentReported[k] = 1;
    for (let k = 0; k < this.count && n < max; k++) {
      if (this.isRecent(this.starts[k]!)) continue;
      left[n] = (rcvNxt + this.starts[k]!) >>> 0;
      right[n] = (rcvNxt + this.ends[k]!) >>> 0;
      n++;
    }
    return n;
  }

  private isRecent(start: number): boolean {
    for (let k = 0; k < this.recentCount; k++) if (this.recentStarts[k] === start) return true;
    return false;
  }

  clear(): void {
    this.count = 0;
    this.recentCount = 0;
  }

  private removeFirst(): void {
    for (let k = 1; k < this.count; k++) {
      this.starts[k - 1] = this.starts[k]!;
      this.ends[k - 1] = this.ends[k]!;
    }
    this.count--;
  }
}
