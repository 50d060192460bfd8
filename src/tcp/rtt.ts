/**
 * Retransmission timeout per RFC 6298, with Karn's algorithm (RFC 6298 3,
 * 5) and the timestamp exception of RFC 7323 4.
 *
 * Deliberate departures, as Linux does: the lower bound is configurable
 * (default 200 ms rather than RFC 6298 2.4's 1 s, which is a SHOULD written
 * for 1990s clocks), and the clock granularity G is the timer wheel's tick.
 */

export interface RttConfig {
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  /** Clock granularity G of RFC 6298 2.2 (the timer tick). */
  granularityMs: number;
}

export const DEFAULT_RTT_CONFIG: RttConfig = { initialRtoMs: 1000, minRtoMs: 200, maxRtoMs: 60_000, granularityMs: 4 };

const shared = new WeakMap<object, RttConfig>();

/**
 * The RTT settings of a stack's TCP settings (`owner`), one object shared by
 * its connections rather than a copy each (issue 10: ~56 bytes per flow).
 * Made again should the owner's values have changed since.
 */
export function sharedRttConfig(owner: { initialRtoMs: number; minRtoMs: number; maxRtoMs: number }, granularityMs: number): RttConfig {
  const c = shared.get(owner);
  if (c !== undefined && c.initialRtoMs === owner.initialRtoMs && c.minRtoMs === owner.minRtoMs && c.maxRtoMs === owner.maxRtoMs && c.granularityMs === granularityMs) return c;
  const made: RttConfig = { initialRtoMs: owner.initialRtoMs, minRtoMs: owner.minRtoMs, maxRtoMs: owner.maxRtoMs, granularityMs };
  shared.set(owner, made);
  return made;
}

/** RFC 6298 2.3: alpha = 1/8, beta = 1/4, K = 4. */
const ALPHA = 1 / 8;
const BETA = 1 / 4;
const K = 4;

export class RttEstimator {
  /** Smoothed RTT in ms; 0 until the first sample. */
  srtt = 0;
  rttvar = 0;
  /** The RTO without backoff. */
  private baseRto: number;
  /** Number of consecutive backoffs (RFC 6298 5.5). */
  backoffs = 0;
  samples = 0;
  /** Smallest RTT measured (ms; 0 until the first sample): RACK's min_rtt (RFC 8985 6.1). */
  minRtt = 0;

  constructor(private readonly config: RttConfig = DEFAULT_RTT_CONFIG) {
    this.baseRto = config.initialRtoMs;
  }

  /** The current RTO including exponential backoff, clamped to the maximum. */
  get rto(): number {
    const r = this.baseRto * 2 ** this.backoffs;
    return r > this.config.maxRtoMs ? this.config.maxRtoMs : r;
  }

  /**
   * A new RTT measurement in ms. The caller applies Karn's rule: no sample
   * from a retransmitted segment unless a timestamp echo identifies the
   * transmission (RFC 7323 4).
   */
  sample(rttMs: number): void {
    const r = rttMs < 0 ? 0 : rttMs;
    if (this.samples === 0 || r < this.minRtt) this.minRtt = r;
    if (this.samples === 0) {
      // RFC 6298 2.2
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      // RFC 6298 2.3: RTTVAR first, with the old SRTT.
      this.rttvar = (1 - BETA) * this.rttvar + BETA * Math.abs(this.srtt - r);
      this.srtt = (1 - ALPHA) * this.srtt + ALPHA * r;
    }
    this.samples++;
    const g = this.config.granularityMs;
    let rto = this.srtt + Math.max(g, K * this.rttvar);
    if (rto < this.config.minRtoMs) rto = this.config.minRtoMs; // RFC 6298 2.4
    if (rto > this.config.maxRtoMs) rto = this.config.maxRtoMs; // RFC 6298 2.5
    this.baseRto = rto;
    // A valid sample after retransmissions ends the backoff (RFC 6298 5.7 note).
    this.backoffs = 0;
  }

  /** RFC 6298 5.5: the retransmission timer expired; double the RTO. */
  backoff(): void {
    if (this.rto < this.config.maxRtoMs) this.backoffs++;
  }

  /**
   * RFC 6298 5.7: after the SYN (or its answer) was retransmitted and the
   * connection then establishes, the RTO for data restarts at 3 s unless a
   * sample was taken.
   */
  resetAfterHandshakeRetransmit(): void {
    if (this.samples === 0) {
      this.baseRto = Math.max(3000, this.config.minRtoMs);
      this.backoffs = 0;
    }
  }
}
