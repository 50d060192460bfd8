/**
 * The sender's scoreboard (RFC 6675 3, RFC 8985 5.2): one record per
 * transmitted piece of at most one MSS, in sequence order, with the time it
 * was last (re)transmitted and whether it is SACKed, marked lost, or was
 * retransmitted.
 *
 * Positions are stream offsets: bytes since the first data byte, as plain
 * numbers that never wrap (the connection converts sequence numbers). A TSO
 * super-segment is recorded as the MSS-sized pieces the kernel cuts it into
 * on the wire, so the loss of one wire segment marks one piece lost and
 * SACK blocks naming sub-ranges of the super-segment mark exactly those
 * pieces: the scoreboard works in bytes, never in the segments we handed to
 * the TUN. A SACK edge that falls inside a record splits it (after a path
 * MTU change the wire segments no longer line up with older records).
 *
 * Bounded: the record count is capped; when full, new bytes extend the
 * last record rather than adding one (coarser, never unbounded). The
 * arrays grow by doubling up to the cap, so an idle connection holds little.
 */

export const SEG_SACKED = 1;
export const SEG_LOST = 2;
export const SEG_RETRANSMITTED = 4;

/** Called for each record newly delivered (cumulatively ACKed or SACKed). */
export interface DeliveryListener {
  onDelivered(xmitAt: number, order: number, end: number, retransmitted: boolean): void;
}

const NO_RECORDS = new Float64Array(0);
const NO_FLAGS = new Uint8Array(0);

export class SendScoreboard {
  private ends: Float64Array;
  private xmits: Float64Array;
  /**
   * Transmission order: a counter bumped per transmission, so "sent after"
   * (RFC 8985 6.2) is exact even when an explicit clock gives a whole burst,
   * retransmissions included, the same time.
   */
  private orders: Float64Array;
  private nextOrder = 1;
  private flagBits: Uint8Array;
  private head = 0;
  /** Number of records. */
  count = 0;
  /** Stream position of the first record's first byte (SND.UNA). */
  base = 0;
  sackedBytes = 0;
  lostBytes = 0;
  /** Records split because a SACK edge or a retransmission fell inside them. */
  splits = 0;
  /** Highest SACKed or ACKed end position seen (RFC 8985 RACK.fack). */
  fack = 0;

  constructor(readonly maxRecords: number) {
    // Nothing until the first record, then 8 (small enough for V8 to keep
    // the arrays on its heap, not as external buffers): an idle connection
    // costs no arrays (issue 10).
    this.ends = NO_RECORDS;
    this.xmits = NO_RECORDS;
    this.orders = NO_RECORDS;
    this.flagBits = NO_FLAGS;
  }

  /** End position of everything recorded (the base when empty). */
  get endPos(): number {
    return this.count === 0 ? this.base : this.ends[this.slot(this.count - 1)]!;
  }

  /** Bytes recorded (SND.NXT - SND.UNA for data). */
  get outstanding(): number {
    return this.endPos - this.base;
  }

  /** RFC 6675 "pipe" (RFC 8985 inflight): outstanding, less SACKed and lost-not-yet-resent bytes. */
  get pipe(): number {
    return this.endPos - this.base - this.sackedBytes - this.lostBytes;
  }

  startOf(k: number): number {
    return k === 0 ? this.base : this.ends[this.slot(k - 1)]!;
  }

  endOf(k: number): number {
    return this.ends[this.slot(k)]!;
  }

  xmitOf(k: number): number {
    return this.xmits[this.slot(k)]!;
  }

  orderOf(k: number): number {
    return this.orders[this.slot(k)]!;
  }

  flagsOf(k: number): number {
    return this.flagBits[this.slot(k)]!;
  }

  /** Records first transmissions of [endPos, endPos+len) at `now`, cut into `mss` pieces. */
  append(len: number, mss: number, now: number): void {
    let pos = this.endPos;
    const end = pos + len;
    const order = this.nextOrder++;
    while (pos < end) {
      let next = pos + mss;
      if (next > end) next = end;
      if (this.count >= this.maxRecords) {
        // At the cap: the last record grows instead (it is newest anyway).
        const s = this.slot(this.count - 1);
        this.ends[s] = end;
        this.xmits[s] = now;
        this.orders[s] = order;
        return;
      }
      if (this.count === this.ends.length) this.grow();
      const s = this.slot(this.count);
      this.ends[s] = next;
      this.xmits[s] = now;
      this.orders[s] = order;
      this.flagBits[s] = 0;
      this.count++;
      pos = next;
    }
  }

  /**
   * The cumulative ACK reached `pos`: forget what lies below it. Returns the
   * bytes newly delivered (not SACKed before), for PRR's DeliveredData.
   */
  ackTo(pos: number, listener: DeliveryListener): number {
    if (pos <= this.base) return 0;
    let delivered = 0;
    while (this.count > 0) {
      const s = this.head;
      const start = this.base;
      const end = this.ends[s]!;
      const f = this.flagBits[s]!;
      if (end > pos) {
        // Partly acknowledged: trim the record's front.
        const cut = pos - start;
        if ((f & SEG_SACKED) !== 0) this.sackedBytes -= cut;
        else {
          delivered += cut;
          if ((f & SEG_LOST) !== 0) this.lostBytes -= cut;
        }
        this.base = pos;
        if ((f & SEG_SACKED) === 0) listener.onDelivered(this.xmits[s]!, this.orders[s]!, pos, (f & SEG_RETRANSMITTED) !== 0);
        break;
      }
      const len = end - start;
      if ((f & SEG_SACKED) !== 0) this.sackedBytes -= len;
      else {
        delivered += len;
        if ((f & SEG_LOST) !== 0) this.lostBytes -= len;
        listener.onDelivered(this.xmits[s]!, this.orders[s]!, end, (f & SEG_RETRANSMITTED) !== 0);
      }
      this.base = end;
      this.head = this.head + 1 === this.ends.length ? 0 : this.head + 1;
      this.count--;
    }
    if (this.base < pos) this.base = pos; // the ACK covered a FIN or all we recorded
    if (pos > this.fack) this.fack = pos;
    return delivered;
  }

  /** A SACK block [left, right) (positions). Returns the bytes newly SACKed. */
  sack(left: number, right: number, listener: DeliveryListener): number {
    if (left < this.base) left = this.base;
    const top = this.endPos;
    if (right > top) right = top;
    if (left >= right) return 0;
    let k = this.find(left);
    if (k < 0) return 0;
    if (this.startOf(k) < left) {
      // The block starts inside record k: split it so that only its tail is
      // SACKed; at the cap (or when already SACKed) skip the record.
      if (!this.isSacked(k)) this.splitAt(k, left);
      k++;
    }
    let newly = 0;
    for (; k < this.count; k++) {
      const start = this.startOf(k);
      if (start >= right) break;
      let end = this.ends[this.slot(k)]!;
      if (end > right) {
        if (this.isSacked(k) || !this.splitAt(k, right)) break;
        end = right;
      }
      const s = this.slot(k);
      const f = this.flagBits[s]!;
      if ((f & SEG_SACKED) !== 0) continue;
      const len = end - start;
      if ((f & SEG_LOST) !== 0) this.lostBytes -= len;
      this.flagBits[s] = (f & ~SEG_LOST) | SEG_SACKED;
      this.sackedBytes += len;
      newly += len;
      listener.onDelivered(this.xmits[s]!, this.orders[s]!, end, (f & SEG_RETRANSMITTED) !== 0);
    }
    if (right > this.fack && newly > 0) this.fack = right;
    return newly;
  }

  markLost(k: number): void {
    const s = this.slot(k);
    const f = this.flagBits[s]!;
    if ((f & (SEG_SACKED | SEG_LOST)) !== 0) return;
    this.flagBits[s] = f | SEG_LOST;
    this.lostBytes += this.endOf(k) - this.startOf(k);
  }

  /**
   * RFC 8985 6.3 / RFC 6675 5.1 after a timeout: every un-SACKed record is
   * lost (SACK state kept), and the one at SND.UNA is resent even if it was
   * SACKed: an RTO with that SACKed means the receiver reneged (RFC 2018 8).
   */
  markAllLost(): void {
    if (this.count > 0) {
      const s = this.head;
      const f = this.flagBits[s]!;
      if ((f & SEG_SACKED) !== 0) {
        this.flagBits[s] = f & ~SEG_SACKED;
        this.sackedBytes -= this.ends[s]! - this.base;
      }
    }
    for (let k = 0; k < this.count; k++) this.markLost(k);
  }

  /** Index of the first record marked lost at or after index `from`, or -1. */
  nextLost(from: number): number {
    if (this.lostBytes <= 0) return -1;
    for (let k = from; k < this.count; k++) if ((this.flagBits[this.slot(k)]! & SEG_LOST) !== 0) return k;
    return -1;
  }

  /** Index of the last record not SACKed, or -1 (the tail loss probe resends it). */
  lastUnsacked(): number {
    for (let k = this.count - 1; k >= 0; k--) if ((this.flagBits[this.slot(k)]! & SEG_SACKED) === 0) return k;
    return -1;
  }

  /** A new transmission order for records sent together (one call per emitted segment). */
  takeOrder(): number {
    return this.nextOrder++;
  }

  /** Record k was sent again at `now` as transmission `order`: no longer lost, counted in flight again. */
  markRetransmitted(k: number, now: number, order: number): void {
    const s = this.slot(k);
    const f = this.flagBits[s]!;
    if ((f & SEG_LOST) !== 0) this.lostBytes -= this.endOf(k) - this.startOf(k);
    this.flagBits[s] = (f & ~SEG_LOST) | SEG_RETRANSMITTED;
    this.xmits[s] = now;
    this.orders[s] = order;
  }

  /** Index of the record containing position `pos`, or -1. */
  find(pos: number): number {
    if (this.count === 0 || pos < this.base || pos >= this.endPos) return -1;
    let lo = 0;
    let hi = this.count - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[this.slot(mid)]! <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Splits record k at `pos` (strictly inside it) into two with the same
   * time and flags. Returns false when the cap forbids it (nothing changes).
   */
  splitAt(k: number, pos: number): boolean {
    const start = this.startOf(k);
    const end = this.endOf(k);
    if (pos <= start || pos >= end) return false;
    if (this.count >= this.maxRecords) return false;
    if (this.count === this.ends.length) this.grow();
    // Shift records k+1.. one place up (rare: SACK edges inside a record).
    for (let j = this.count; j > k + 1; j--) {
      const to = this.slot(j);
      const from = this.slot(j - 1);
      this.ends[to] = this.ends[from]!;
      this.xmits[to] = this.xmits[from]!;
      this.orders[to] = this.orders[from]!;
      this.flagBits[to] = this.flagBits[from]!;
    }
    const s = this.slot(k);
    const n = this.slot(k + 1);
    this.ends[n] = end;
    this.xmits[n] = this.xmits[s]!;
    this.orders[n] = this.orders[s]!;
    this.flagBits[n] = this.flagBits[s]!;
    this.ends[s] = pos;
    this.count++;
    this.splits++;
    return true;
  }

  clear(base: number): void {
    this.head = 0;
    this.count = 0;
    this.base = base;
    this.sackedBytes = 0;
    this.lostBytes = 0;
    if (this.fack < base) this.fack = base;
  }

  private isSacked(k: number): boolean {
    return (this.flagBits[this.slot(k)]! & SEG_SACKED) !== 0;
  }

  private slot(k: number): number {
    const i = this.head + k;
    return i >= this.ends.length ? i - this.ends.length : i;
  }

  private grow(): void {
    const cap = Math.min(this.ends.length === 0 ? 8 : this.ends.length * 2, this.maxRecords);
    const ends = new Float64Array(cap);
    const xmits = new Float64Array(cap);
    const orders = new Float64Array(cap);
    const flags = new Uint8Array(cap);
    for (let k = 0; k < this.count; k++) {
      const s = this.slot(k);
      ends[k] = this.ends[s]!;
      xmits[k] = this.xmits[s]!;
      orders[k] = this.orders[s]!;
      flags[k] = this.flagBits[s]!;
    }
    this.ends = ends;
    this.xmits = xmits;
    this.orders = orders;
    this.flagBits = flags;
    this.head = 0;
  }
}
