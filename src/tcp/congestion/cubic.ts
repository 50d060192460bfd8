/**
 * CUBIC (RFC 9438): W_cubic(t) = C*(t-K)^3 + W_max in segments, with
 * beta = 0.7, C = 0.4, and the Reno-friendly estimate of section 4.3.
 */
import type { CongestionControl } from './index.js';

const C = 0.4;
const BETA = 0.7;

export class Cubic implements CongestionControl {
  readonly name = 'cubic';
  cwnd: number;
  ssthresh = Infinity;
  private wMax = 0;
  private k = 0;
  private epochStart = -1;
  /** Reno-friendly window estimate in segments (RFC 9438 4.3). */
  private wEst = 0;
  private acked = 0;

  constructor(
    private readonly mss: number,
    initialSegments: number,
  ) {
    this.cwnd = initialSegments * mss;
  }

  onAck(now: number, ackedBytes: number, srttMs: number): void {
    if (this.cwnd < this.ssthresh) {
      this.cwnd += Math.min(ackedBytes, 2 * this.mss);
      return;
    }
    const seg = this.cwnd / this.mss;
    if (this.epochStart < 0) {
      this.epochStart = now;
      if (seg < this.wMax) {
        this.k = Math.cbrt((this.wMax * (1 - BETA)) / C);
      } else {
        this.k = 0;
        this.wMax = seg;
      }
      this.wEst = seg;
      this.acked = 0;
    }
    // RFC 9438 4.2: target for t + RTT.
    const t = (now - this.epochStart + (srttMs > 0 ? srttMs : 0)) / 1000;
    const target = C * (t - this.k) ** 3 + this.wMax;
    // RFC 9438 4.3: alpha_cubic = 3 * (1 - beta) / (1 + beta) per RTT.
    this.acked += ackedBytes;
    this.wEst += ((3 * (1 - BETA)) / (1 + BETA)) * (ackedBytes / this.cwnd);
    let next = seg;
    if (this.wEst > target) {
      next = this.wEst; // Reno-friendly region
    } else if (target > seg) {
      // RFC 9438 4.4: grow by (target - cwnd) / cwnd per acked segment, capped at 1.5x.
      const capped = Math.min(target, 1.5 * seg);
      next = seg + ((capped - seg) * (ackedBytes / this.mss)) / seg;
    }
    this.cwnd = Math.max(next * this.mss, 2 * this.mss);
  }

  /**
   * RFC 9438 4.6: ssthresh = cwnd * beta_cubic, from the congestion window,
   * not the flight, as Linux and Windows CUBIC do (RFC 9438 4.6 allows
   * either). The flight at the moment of detection is a poor measure of the
   * window in use: the ACK that reveals the loss has just acknowledged most
   * of a burst, and nothing new has gone out for it yet, so with a receiver
   * that acknowledges a whole burst at once the flight was a fraction of
   * cwnd, and each random loss cut the window to its two-segment floor
   * instead of to 70 % (the 5 % wire-loss downloads of issue 12 item 4).
   */
  onLoss(_now: number, _flight: number): void {
    this.reduce(this.cwnd);
    this.cwnd = this.ssthresh;
  }

  /**
   * RFC 5681 3.1 eq. 4 on a timeout: from the flight, which after a first
   * timeout (cwnd one segment) is what was really in the network; then one
   * segment.
   */
  onTimeout(_now: number, flight: number): void {
    this.reduce(flight);
    this.cwnd = this.mss;
  }

  /** W_max with fast convergence (RFC 9438 4.7) and ssthresh = window * beta_cubic (RFC 9438 4.6). */
  private reduce(window: number): void {
    const seg = this.cwnd / this.mss;
    this.wMax = seg < this.wMax ? (seg * (1 + BETA)) / 2 : seg;
    this.ssthresh = Math.max(window * BETA, 2 * this.mss);
    this.epochStart = -1;
  }

  onRecoveryExit(): void {
    this.cwnd = Math.max(this.ssthresh, 2 * this.mss);
    this.epochStart = -1;
  }
}
