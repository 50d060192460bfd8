/**
 * A hashed timer wheel (Varghese and Lauck, 1987) for the stack's one timer.
 *
 * Every connection exposes `pollAt()`: the next instant it needs the CPU.
 * With ten thousand connections, taking the minimum over all of them on
 * every event would be linear; a wheel re-arms in O(1). Entries are
 * intrusive (the scheduled object carries its own links), so scheduling
 * allocates nothing. Sans-IO: the owner calls `advance(now)` from its single
 * `setTimeout` and asks `nextDeadline()` when to wake next.
 *
 * Deadlines are kept exactly; the wheel only buckets them. A deadline further
 * away than one revolution stays in its bucket and is skipped until its
 * revolution comes round.
 */

export interface WheelEntry {
  /** Absolute deadline in ms, or Infinity when not scheduled. Owned by the wheel. */
  wheelDeadline: number;
  wheelPrev: WheelEntry | null;
  wheelNext: WheelEntry | null;
  /** Slot index, or -1 when not scheduled. Owned by the wheel. */
  wheelSlot: number;
}

/** Fields to spread into a constructor so every WheelEntry has the same shape. */
export function wheelEntryFields(): WheelEntry {
  return { wheelDeadline: Infinity, wheelPrev: null, wheelNext: null, wheelSlot: -1 };
}

export interface WheelHandler<T extends WheelEntry> {
  /** Called for each entry whose deadline has passed; it is already unscheduled. */
  onTimer(entry: T, now: number): void;
}

export class TimerWheel<T extends WheelEntry> {
  private readonly slots: (WheelEntry | null)[];
  private readonly mask: number;
  /** The slot index (in ticks) up to which every due entry has fired. */
  private cursorTick: number;
  private count = 0;

  /**
   * @param tickMs granularity in ms (timers fire up to one tick late)
   * @param slotCount a power of two; one revolution covers tickMs * slotCount
   */
  constructor(
    now: number,
    readonly tickMs = 4,
    slotCount = 1024,
  ) {
    if ((slotCount & (slotCount - 1)) !== 0) throw new RangeError('slotCount must be a power of two');
    this.slots = new Array<WheelEntry | null>(slotCount).fill(null);
    this.mask = slotCount - 1;
    this.cursorTick = Math.floor(now / tickMs);
  }

  get size(): number {
    return this.count;
  }

  /** Schedules (or re-schedules) `entry` at `deadline`; Infinity unschedules. */
  schedule(entry: T, deadline: number): void {
    if (entry.wheelSlot !== -1) {
      if (entry.wheelDeadline === deadline) return;
      this.unlink(entry);
    }
    if (deadline === Infinity) return;
    // Never place an entry behind the cursor: it would wait a whole revolution.
    const tick = Math.max(Math.floor(deadline / this.tickMs), this.cursorTick);
    const slot = tick & this.mask;
    entry.wheelDeadline = deadline;
    entry.wheelSlot = slot;
    entry.wheelPrev = null;
    entry.wheelNext = this.slots[slot]!;
    if (entry.wheelNext !== null) entry.wheelNext.wheelPrev = entry;
    this.slots[slot] = entry;
    this.count++;
  }

  cancel(entry: T): void {
    if (entry.wheelSlot !== -1) this.unlink(entry);
  }

  /** Fires every entry whose deadline is at or before `now`. Returns how many fired. */
  advance(now: number, handler: WheelHandler<T>): number {
    const endTick = Math.floor(now / this.tickMs);
    let fired = 0;
    // Visiting more than one revolution of slots would only revisit them.
    const last = Math.min(endTick, this.cursorTick + this.mask);
    for (let tick = this.cursorTick; tick <= last && this.count > 0; tick++) {
      let e = this.slots[tick & this.mask]!;
      while (e !== null) {
        const next: WheelEntry | null = e.wheelNext;
        if (e.wheelDeadline <= now) {
          this.unlink(e as T);
          handler.onTimer(e as T, now);
          fired++;
        }
        e = next!;
      }
    }
    this.cursorTick = Math.max(this.cursorTick, endTick);
    return fired;
  }

  /**
   * Earliest instant at which `advance` has work, or Infinity. Scans slots
   * from the cursor; cost is bounded by the slot count and only paid when
   * the owner re-arms its timer.
   */
  nextDeadline(): number {
    if (this.count === 0) return Infinity;
    let best = Infinity;
    for (let i = 0; i <= this.mask; i++) {
      let e = this.slots[(this.cursorTick + i) & this.mask]!;
      while (e !== null) {
        if (e.wheelDeadline < best) best = e.wheelDeadline;
        e = e.wheelNext!;
      }
      // Anything found in this revolution's slot beats later slots' entries
      // unless a later slot holds an entry due in an earlier revolution,
      // which cannot happen: entries are never placed behind the cursor.
      if (best !== Infinity && best < (this.cursorTick + i + 1) * this.tickMs) return best;
    }
    return best;
  }

  private unlink(entry: WheelEntry): void {
    if (entry.wheelPrev !== null) entry.wheelPrev.wheelNext = entry.wheelNext;
    else this.slots[entry.wheelSlot] = entry.wheelNext;
    if (entry.wheelNext !== null) entry.wheelNext.wheelPrev = entry.wheelPrev;
    entry.wheelPrev = null;
    entry.wheelNext = null;
    entry.wheelSlot = -1;
    entry.wheelDeadline = Infinity;
    this.count--;
  }
}
