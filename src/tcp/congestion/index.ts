/**
 * Congestion control behind one interface (as gVisor's snd.go does), for
 * the data sluice sends toward the TUN side. Windows are in bytes.
 */
import { Reno } from './reno.js';
import { Cubic } from './cubic.js';

export interface CongestionControl {
  readonly name: string;
  cwnd: number;
  ssthresh: number;
  /** New data acknowledged (not during fast recovery). */
  onAck(nowMs: number, ackedBytes: number, srttMs: number): void;
  /** Loss detected by duplicate ACKs or SACK: enter recovery (RFC 5681 3.2 / RFC 6675 5). */
  onLoss(nowMs: number, flightBytes: number): void;
  /** The retransmission timer fired (RFC 5681 3.1 eq. 4, then cwnd = 1 segment). */
  onTimeout(nowMs: number, flightBytes: number): void;
  /** Recovery ended: deflate to ssthresh (RFC 6582 3.2 step 3). */
  onRecoveryExit(nowMs: number): void;
}

export function createCongestionControl(name: 'reno' | 'cubic', mss: number, initialSegments: number): CongestionControl {
  return name === 'reno' ? new Reno(mss, initialSegments) : new Cubic(mss, initialSegments);
}
