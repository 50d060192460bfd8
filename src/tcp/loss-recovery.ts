/**
 * Loss detection and recovery for the data we send, behind one interface
 * (gVisor's `lossRecovery` in snd.go, with its sackRecovery and
 * renoRecovery, and Linux's tcp_recovery.c are the models). The connection
 * picks the implementation once SACK is negotiated:
 *
 *   - RackTlpRecovery (rack-tlp.ts), with SACK: RACK (RFC 8985 6) marks
 *     segments lost by time, lost retransmissions included, and TLP (RFC
 *     8985 7) probes a flight whose tail was lost.
 *   - NewRenoRecovery (below), without SACK: three duplicate ACKs mark
 *     SND.UNA's segment lost, each partial ACK the next one (RFC 6582), and
 *     early retransmit (RFC 5827) lowers the threshold for short flights.
 *
 * Both share the byte scoreboard (RFC 6675 3; scoreboard.ts), the recovery
 * state, PRR (RFC 6937: during fast recovery the sending rate follows what
 * the ACKs say was delivered, down to ssthresh without stalls or bursts)
 * and the congestion response to a loss or a timeout.
 *
 * Sans-IO: every method takes `now`; it emits nothing itself. The
 * connection asks it what to retransmit (the scoreboard's lost records)
 * and how much it may send (`allowance`). Positions are stream offsets, as
 * on the scoreboard: `unaPos` is SND.UNA's, `nxtPos` SND.NXT's (data only).
 */
import { SendScoreboard, SEG_LOST, SEG_RETRANSMITTED, SEG_SACKED } from './scoreboard.js';
import type { CongestionControl } from './congestion/index.js';
import { newTcpConnectionCounts, type TcpConnectionCounts } from '../stack/counters.js';

export type RecoveryState = 'open' | 'fast-recovery' | 'loss';

export interface LossRecovery {
  /** The sender's scoreboard: one record per transmitted piece of at most one MSS. */
  readonly scoreboard: SendScoreboard;
  readonly state: RecoveryState;
  /** Time the reordering timer is due (Infinity when off). */
  readonly reorderAt: number;
  /** Time the tail loss probe is due (Infinity when off). */
  readonly probeAt: number;
  /** Bytes marked lost and not yet resent. */
  readonly lostBytes: number;
  /** Retransmissions found lost again (RFC 8985 6.2), resent without a timeout. */
  readonly lostRetransmits: number;
  /** Tail loss probes sent. */
  readonly lossProbes: number;
  /** DeliveredData (RFC 6937) of the ACK being processed, in bytes. */
  readonly delivered: number;
  /** An ACK arrived at `now`; call before ackTo/sack, then finishAck. */
  beginAck(now: number, minRtt: number): void;
  /** The cumulative ACK reached stream position `pos`. */
  ackTo(pos: number): void;
  /** A SACK block [left, right) in stream positions. */
  sack(left: number, right: number): void;
  /** SND.UNA advanced (data or our FIN). */
  onAdvance(): void;
  /** A duplicate ACK (RFC 5681 2). */
  onDuplicateAck(mss: number): void;
  /**
   * The ACK is recorded: detect losses, enter or leave recovery, and set
   * PRR's allowance. `moreToSend`: new data could go out now. Returns true
   * when it entered fast recovery (the caller's RTT timing is void: Karn).
   */
  finishAck(now: number, unaPos: number, nxtPos: number, srtt: number, mss: number, moreToSend: boolean): boolean;
  /** The reordering timer fired (RFC 8985 6.3). Returns true when it entered fast recovery. */
  onReorderTimer(now: number, nxtPos: number, srtt: number, mss: number): boolean;
  /** The retransmission timer fired: everything un-SACKed is lost, cwnd to one segment. */
  onTimeout(now: number, nxtPos: number, flightBytes: number): void;
  /** Bytes that may be sent now by the congestion window or PRR. */
  allowance(cwnd: number): number;
  onSent(bytes: number): void;
  /**
   * (Re)schedules the tail loss probe after a transmission or an ACK that
   * advanced SND.UNA (RFC 8985 7.2). `flight`: data bytes sent and not
   * acknowledged; `rtoAt`: the retransmission timer (never probe after it).
   */
  armProbe(now: number, srtt: number, hasRttSample: boolean, flight: number, mss: number, delayedAckMs: number, rtoAt: number): void;
  cancelProbe(): void;
  /** Whether another probe is allowed before an ACK advances SND.UNA. */
  readonly mayProbe: boolean;
  onProbeSent(): void;
}

/** RFC 6675 DupThresh, also RACK's "SACKed segments" test (RFC 8985 6.2 step 4). */
export const DUP_THRESH = 3;

/** The scoreboard, the recovery state and PRR, shared by both algorithms. */
export abstract class RecoveryBase {
  readonly scoreboard: SendScoreboard;
  state: RecoveryState = 'open';
  /** Position that ends the recovery (RFC 6675 RecoveryPoint): SND.NXT at entry. */
  recoveryPoint = 0;
  reorderAt = Infinity;
  probeAt = Infinity;
  protected readonly cc: CongestionControl;

  // PRR (RFC 6937 3)
  private prrDelivered = 0;
  private prrOut = 0;
  private recoverFs = 0;
  private ssthresh = 0;
  /** Bytes PRR allows to send on this ACK (sndcnt). */
  private sndcnt = 0;
  /** DeliveredData of the ACK being processed. */
  delivered = 0;

  // Counters
  /** Retransmissions found lost again (RACK only: NewReno cannot tell). */
  lostRetransmits = 0;
  fastRecoveries = 0;
  lossProbes = 0;

  /** The connection's totals (TcpConnection.totals): lostRetransmits and lossProbes go there too. */
  protected readonly totals: TcpConnectionCounts;

  constructor(maxRecords: number, cc: CongestionControl, totals: TcpConnectionCounts = newTcpConnectionCounts()) {
    this.scoreboard = new SendScoreboard(maxRecords);
    this.cc = cc;
    this.totals = totals;
  }

  /** Positions of lost data still to resend. */
  get lostBytes(): number {
    return this.scoreboard.lostBytes;
  }

  /** RFC 6675 5 / RFC 6582 3.2 step 3: everything outstanding at entry is acknowledged. */
  protected maybeExit(now: number, unaPos: number): void {
    if (this.state !== 'open' && unaPos >= this.recoveryPoint) {
      this.state = 'open';
      this.sndcnt = 0;
      this.cc.onRecoveryExit(now);
    }
  }

  /** A loss found while open: one window reduction per episode (RFC 6675 5 / RFC 5681 3.2), then fast recovery. */
  protected startRecovery(now: number, nxtPos: number, mss: number): void {
    this.cc.onLoss(now, this.scoreboard.outstanding);
    this.state = 'fast-recovery';
    this.recoveryPoint = nxtPos;
    this.fastRecoveries++;
    this.ssthresh = this.cc.ssthresh;
    this.recoverFs = this.scoreboard.outstanding;
    this.prrDelivered = 0;
    this.prrOut = 0;
    // The ACK that started recovery counts: and the first retransmission
    // goes out at once (RFC 6675 5 step 4, the fast retransmit).
    this.prrUpdate(mss);
    if (this.sndcnt < mss) this.sndcnt = mss;
  }

  onTimeout(now: number, nxtPos: number, flightBytes: number): void {
    // RFC 5681 3.1: cwnd to one segment, slow start. RFC 8985 6.3: every
    // un-SACKed segment is lost; the SACK scoreboard is kept (as Linux
    // does; RFC 6675 5.1 allows it), so SACKed data is not sent again.
    this.cc.onTimeout(now, flightBytes);
    this.probeAt = Infinity;
    this.state = 'loss';
    this.recoveryPoint = nxtPos;
    this.scoreboard.markAllLost();
    this.reorderAt = Infinity;
    this.sndcnt = 0;
    this.afterTimeout();
  }

  protected abstract afterTimeout(): void;

  /** RFC 6937 3, on every ACK in fast recovery: how much may go out for it. */
  protected prrUpdate(mss: number): void {
    if (this.state !== 'fast-recovery') return;
    this.prrDelivered += this.delivered;
    const pipe = this.scoreboard.pipe;
    let sndcnt: number;
    if (pipe > this.ssthresh) {
      // Proportional rate reduction.
      sndcnt = Math.ceil((this.prrDelivered * this.ssthresh) / (this.recoverFs > 0 ? this.recoverFs : 1)) - this.prrOut;
    } else {
      // Slow start reduction bound (PRR-SSRB): regrow towards ssthresh.
      let limit = this.prrDelivered - this.prrOut;
      if (this.delivered > limit) limit = this.delivered;
      limit += mss;
      sndcnt = this.ssthresh - pipe;
      if (sndcnt > limit) sndcnt = limit;
    }
    this.sndcnt = sndcnt > 0 ? sndcnt : 0;
  }

  allowance(cwnd: number): number {
    if (this.state === 'fast-recovery') return this.sndcnt;
    const a = cwnd - this.scoreboard.pipe;
    return a > 0 ? a : 0;
  }

  onSent(bytes: number): void {
    if (this.state !== 'fast-recovery') return;
    this.prrOut += bytes;
    this.sndcnt -= bytes;
    if (this.sndcnt < 0) this.sndcnt = 0;
  }

  cancelProbe(): void {
    this.probeAt = Infinity;
  }
}

/**
 * Without SACK: NewReno (RFC 6582) on the scoreboard, where nothing is ever
 * SACKed. Duplicate ACKs stand for delivered segments (RFC 6675 / RFC 6937
 * without SACK); there is no tail loss probe (RFC 8985 7.2 needs SACK to
 * learn what the probe repaired) and no reordering timer.
 */
export class NewRenoRecovery extends RecoveryBase implements LossRecovery {
  /** Duplicate ACKs in a row (RFC 5681 2). */
  dupAcks = 0;
  readonly mayProbe = false;
  /** SND.UNA advanced on the ACK being processed. */
  private advanced = false;

  beginAck(_now: number, _minRtt: number): void {
    this.delivered = 0;
    this.advanced = false;
  }

  ackTo(pos: number): void {
    this.delivered += this.scoreboard.ackTo(pos, NO_LISTENER);
  }

  sack(_left: number, _right: number): void {}

  onAdvance(): void {
    this.dupAcks = 0;
    this.advanced = true;
  }

  onDuplicateAck(mss: number): void {
    this.dupAcks++;
    this.delivered += mss;
  }

  finishAck(now: number, unaPos: number, nxtPos: number, _srtt: number, mss: number, moreToSend: boolean): boolean {
    this.maybeExit(now, unaPos);
    let lost = false;
    if (this.state === 'fast-recovery' && this.advanced) {
      // RFC 6582 3.2 step 5: a partial ACK; the next segment is lost too.
      lost = this.markHeadLost();
    } else if (this.state === 'open' && this.dupAcks > 0) {
      // RFC 5827 early retransmit: with fewer than four segments outstanding
      // and nothing new to send, three duplicate ACKs can never arrive.
      let threshold = DUP_THRESH;
      const outstanding = Math.ceil(this.scoreboard.outstanding / mss);
      if (outstanding < 4 && !moreToSend) threshold = outstanding > 1 ? outstanding - 1 : 1;
      if (this.dupAcks >= threshold) lost = this.markHeadLost();
    }
    if (lost && this.state === 'open') {
      this.startRecovery(now, nxtPos, mss);
      return true;
    }
    this.prrUpdate(mss);
    return false;
  }

  onReorderTimer(): boolean {
    this.reorderAt = Infinity;
    return false;
  }

  armProbe(): void {}

  onProbeSent(): void {}

  protected afterTimeout(): void {
    this.dupAcks = 0;
  }

  /** The segment at SND.UNA is lost (RFC 6582 3.2). */
  private markHeadLost(): boolean {
    const sb = this.scoreboard;
    if (sb.count === 0) return false;
    if ((sb.flagsOf(0) & (SEG_LOST | SEG_SACKED)) !== 0) return false;
    sb.markLost(0);
    return true;
  }
}

const NO_LISTENER = { onDelivered(): void {} };

export { SEG_LOST, SEG_RETRANSMITTED, SEG_SACKED };
