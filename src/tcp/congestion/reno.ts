/** NewReno (RFC 5681, RFC 6582): slow start, congestion avoidance, halve on loss. */
import type { CongestionControl } from './index.js';

export class Reno implements CongestionControl {
  readonly name = 'reno';
  cwnd: number;
  ssthresh = Infinity;
  /** Bytes acked in congestion avoidance since cwnd last grew (RFC 5681 3.1 byte counting). */
  private acked = 0;

  constructor(
    private readonly mss: number,
    initialSegments: number,
  ) {
    this.cwnd = initialSegments * mss;
  }

  onAck(_now: number, ackedBytes: number): void {
    if (this.cwnd < this.ssthresh) {
      // RFC 5681 3.1 eq. 2 with RFC 3465 L = 2*SMSS.
      this.cwnd += Math.min(ackedBytes, 2 * this.mss);
      return;
    }
    this.acked += ackedBytes;
    if (this.acked >= this.cwnd) {
      this.acked -= this.cwnd;
      this.cwnd += this.mss;
    }
  }

  onLoss(_now: number, flight: number): void {
    this.ssthresh = Math.max(flight / 2, 2 * this.mss);
    this.cwnd = this.ssthresh + 3 * this.mss;
    this.acked = 0;
  }

  onTimeout(_now: number, flight: number): void {
    this.ssthresh = Math.max(flight / 2, 2 * this.mss);
    this.cwnd = this.mss;
    this.acked = 0;
  }

  onRecoveryExit(): void {
    this.cwnd = this.ssthresh;
  }
}
