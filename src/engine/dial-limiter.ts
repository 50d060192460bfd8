/**
 * Caps on upstream dials in progress (config `limits.dials` and
 * `limits.dialsPerSource`): however many SYNs a client sends, sluice opens
 * at most this many upstream connections at a time for flows that are not
 * yet relaying, in all and per client address. A dial over a cap is refused
 * at once and counted; nothing queues, so the limiter's own memory is one
 * map entry per source with a dial in progress. A SYN still waiting for its
 * dial is then dropped, as a full listen backlog drops it in Linux: the
 * client retransmits it, so a burst of legitimate clients gets through
 * as dials finish, and a flood costs nothing. A flow already accepted
 * (sniffed first) gets a RST.
 */
import { SluiceError } from '../errors.js';

/** The dials of every engine of the process (tun.queues > 1: src/workers/shared-dials.ts). */
export interface DialTable {
  tryAcquire(source: string, maxDials: number, maxPerSource: number): 'ok' | 'global' | 'source';
  release(source: string): void;
}

/** A dial refused because `limits.dials` or `limits.dialsPerSource` dials were in progress. */
export class DialLimitError extends SluiceError {
  override readonly name = 'DialLimitError';
  readonly code = 'SLUICE_DIAL_LIMIT';
  constructor() {
    super('too many dials in progress (limits.dials / limits.dialsPerSource)');
  }
}

export interface DialLimiterCounters {
  /** Dials in progress now. */
  active: number;
  /** Dials refused because `limits.dials` were in progress. */
  refusedGlobal: number;
  /** Dials refused because that client had `limits.dialsPerSource` in progress. */
  refusedPerSource: number;
}

export class DialLimiter {
  readonly counters: DialLimiterCounters = { active: 0, refusedGlobal: 0, refusedPerSource: 0 };
  private readonly perSource = new Map<string, number>();

  constructor(
    private readonly maxDials: number,
    private readonly maxPerSource: number,
    /** With worker threads: the caps hold over every engine's dials; `counters` stay this engine's. */
    private readonly shared: DialTable | null = null,
  ) {}

  /** Takes a slot for a dial on behalf of `source`; false (and counted) when a cap is reached. */
  tryAcquire(source: string): boolean {
    if (this.shared !== null) return this.sharedAcquire(source, this.shared);
    if (this.counters.active >= this.maxDials) {
      this.counters.refusedGlobal++;
      return false;
    }
    const n = this.perSource.get(source) ?? 0;
    if (n >= this.maxPerSource) {
      this.counters.refusedPerSource++;
      return false;
    }
    this.perSource.set(source, n + 1);
    this.counters.active++;
    return true;
  }

  private sharedAcquire(source: string, shared: DialTable): boolean {
    const v = shared.tryAcquire(source, this.maxDials, this.maxPerSource);
    if (v === 'global') this.counters.refusedGlobal++;
    else if (v === 'source') this.counters.refusedPerSource++;
    if (v !== 'ok') return false;
    this.perSource.set(source, (this.perSource.get(source) ?? 0) + 1);
    this.counters.active++;
    return true;
  }

  /** Gives back a slot taken by tryAcquire (once per successful acquire). */
  release(source: string): void {
    const n = this.perSource.get(source);
    if (n === undefined) return;
    this.shared?.release(source);
    if (n <= 1) this.perSource.delete(source);
    else this.perSource.set(source, n - 1);
    this.counters.active--;
  }

  /** Sources with a dial in progress (the map's size: bounded by `limits.dials`). */
  get sources(): number {
    return this.perSource.size;
  }
}
