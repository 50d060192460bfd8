/**
 * Loss detection and recovery for the data we send, behind one interface
 * (gVisor's snd.go and Linux's tcp_recovery.c are the models):
 *
 *   - RACK (RFC 8985 6): a segment is lost when a segment sent after it
 *     was delivered and more than RACK.rtt + RACK.reo_wnd has passed since
 *     it was sent. Time-based, so lost retransmissions are detected like
 *     any other loss and a reordering allowance replaces the dupack count.
 *   - TLP (RFC 8985 7): when a flight's tail is lost nothing comes back to
 *     drive RACK; after PTO = 2*SRTT one probe (new data or the last
 *     un-SACKed segment) elicits the SACK that does.
 *   - PRR (RFC 6937): during fast recovery the sending rate follows what
 *     the ACKs say was delivered, so the window comes down to ssthresh
 *     smoothly instead of stalling (RFC 6675's pipe rule) or bursting.
 *   - The scoreboard (RFC 6675 3) in bytes: see scoreboard.ts.
 *   - Without SACK, NewReno (RFC 6582): three duplicate ACKs mark SND.UNA's
 *     segment lost, each partial ACK the next one.
 *
 * Sans-IO: every method takes `now`; it emits nothing itself. The
 * connection asks it what to retransmit and how much it may send.
 */
import { SendScoreboard, SEG_LOST, SEG_RETRANSMITTED, SEG_SACKED, type DeliveryListener } from './scoreboard.js';

export type RecoveryState = 'open' | 'fast-recovery' | 'loss';

export interface LossRecovery {
  readonly scoreboard: SendScoreboard;
  readonly state: RecoveryState;
  /** Time the reordering timer is due (Infinity when off). */
  readonly reorderAt: number;
  /** An ACK arrived at `now`; call before ackTo/sack, then finishAck. */
  beginAck(now: number, minRtt: number): void;
  ackTo(pos: number): void;
  sack(left: number, right: number): void;
  /** Runs loss detection; returns true when it newly marked something lost. */
  finishAck(now: number, srtt: number, mss: number): boolean;
  /** The reordering timer fired (RFC 8985 6.3). */
  onReorderTimer(now: number, srtt: number, mss: number): boolean;
  /** Bytes that may be sent now by the congestion window or PRR. */
  allowance(cwnd: number): number;
  onSent(bytes: number): void;
}

/** RFC 6675 DupThresh, also RACK's "SACKed segments" test (RFC 8985 6.2 step 4). */
export const DUP_THRESH = 3;

export class RackTlpRecovery implements LossRecovery, DeliveryListener {
  readonly scoreboard: SendScoreboard;
  state: RecoveryState = 'open';
  /** Position that ends the recovery (RFC 6675 RecoveryPoint): SND.NXT at entry. */
  recoveryPoint = 0;
  reorderAt = Infinity;

  // RACK (RFC 8985 6.1)
  /** Transmit time of the most recently sent delivered segment (-1: none yet). */
  rackXmit = -1;
  /** Its transmission order (the scoreboard's counter; "most recently sent" compares these). */
  rackOrder = 0;
  rackEnd = 0;
  rackRtt = 0;
  /** Reordering was observed (a segment delivered below RACK.fack that was never retransmitted). */
  reorderingSeen = false;
  /** Multiplier of the reordering window (RFC 8985 6.2 step 4; 1 without DSACK feedback). */
  reoWndMult = 1;
  private rackAdvanced = false;
  private ackTime = 0;
  private minRtt = 0;

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
  /** Segments RACK marked lost (lost retransmissions included). */
  rackLosses = 0;
  /** Of those, retransmissions found lost again. */
  lostRetransmits = 0;
  fastRecoveries = 0;

  constructor(maxRecords: number) {
    this.scoreboard = new SendScoreboard(maxRecords);
  }

  beginAck(now: number, minRtt: number): void {
    this.ackTime = now;
    this.minRtt = minRtt;
    this.delivered = 0;
    this.rackAdvanced = false;
  }

  ackTo(pos: number): void {
    this.delivered += this.scoreboard.ackTo(pos, this);
  }

  sack(left: number, right: number): void {
    this.delivered += this.scoreboard.sack(left, right, this);
  }

  /** DeliveryListener: RFC 8985 6.2 steps 2 and 3. */
  onDelivered(xmitAt: number, order: number, end: number, retransmitted: boolean): void {
    const rtt = this.ackTime - xmitAt;
    // Step 2: an ACK sooner than the minimum RTT after a retransmission was
    // most likely for the original: it says nothing about the resent copy.
    if (retransmitted && rtt < this.minRtt) return;
    // Step 3: delivered below the highest delivered end, never retransmitted: reordering.
    if (!retransmitted && end < this.scoreboard.fack) this.reorderingSeen = true;
    if (order > this.rackOrder || (order === this.rackOrder && end > this.rackEnd)) {
      this.rackXmit = xmitAt;
      this.rackOrder = order;
      this.rackEnd = end;
      this.rackRtt = rtt < 0 ? 0 : rtt;
      this.rackAdvanced = true;
    }
  }

  finishAck(now: number, srtt: number, mss: number): boolean {
    if (!this.rackAdvanced && this.reorderAt === Infinity) return false;
    return this.detectLoss(now, srtt, mss);
  }

  onReorderTimer(now: number, srtt: number, mss: number): boolean {
    this.reorderAt = Infinity;
    return this.detectLoss(now, srtt, mss);
  }

  /** RFC 8985 6.2 step 4. */
  reoWnd(srtt: number, mss: number): number {
    if (!this.reorderingSeen && (this.state !== 'open' || this.scoreboard.sackedBytes >= DUP_THRESH * mss)) return 0;
    const w = (this.reoWndMult * this.minRtt) / 4;
    return srtt > 0 && w > srtt ? srtt : w;
  }

  /**
   * RFC 8985 6.2 step 5: walk the records in sequence order. First
   * transmissions go out in sequence order, so the first one sent after
   * RACK.segment ends the walk; retransmissions are checked wherever they are.
   */
  private detectLoss(now: number, srtt: number, mss: number): boolean {
    this.reorderAt = Infinity;
    if (this.rackXmit < 0) return false;
    const sb = this.scoreboard;
    const reo = this.reoWnd(srtt, mss);
    let marked = false;
    let wait = Infinity;
    for (let k = 0; k < sb.count; k++) {
      const f = sb.flagsOf(k);
      if ((f & (SEG_SACKED | SEG_LOST)) !== 0) continue;
      const o = sb.orderOf(k);
      if (o > this.rackOrder || (o === this.rackOrder && sb.endOf(k) >= this.rackEnd)) {
        if ((f & SEG_RETRANSMITTED) === 0) break;
        continue;
      }
      const remaining = sb.xmitOf(k) + this.rackRtt + reo - now;
      if (remaining <= 0) {
        sb.markLost(k);
        this.rackLosses++;
        if ((f & SEG_RETRANSMITTED) !== 0) this.lostRetransmits++;
        marked = true;
      } else if (remaining < wait) {
        wait = remaining;
      }
    }
    if (wait !== Infinity) this.reorderAt = now + wait;
    return marked;
  }

  /** NewReno without SACK (RFC 6582 3.2): the segment at SND.UNA is lost. */
  markHeadLost(): boolean {
    const sb = this.scoreboard;
    if (sb.count === 0) return false;
    const f = sb.flagsOf(0);
    if ((f & (SEG_LOST | SEG_SACKED)) !== 0) return false;
    sb.markLost(0);
    return true;
  }

  /** RFC 6675 5 / RFC 6937 3: enter fast recovery with `ssthresh` already computed. */
  enterFastRecovery(recoveryPoint: number, ssthresh: number, mss: number): void {
    this.state = 'fast-recovery';
    this.recoveryPoint = recoveryPoint;
    this.fastRecoveries++;
    this.ssthresh = ssthresh;
    this.recoverFs = this.scoreboard.outstanding;
    this.prrDelivered = 0;
    this.prrOut = 0;
    // The ACK that started recovery counts: and the first retransmission
    // goes out at once (RFC 6675 5 step 4, the fast retransmit).
    this.prrUpdate(mss);
    if (this.sndcnt < mss) this.sndcnt = mss;
  }

  /** After a retransmission timeout (RFC 8985 6.3): everything un-SACKed is lost, slow start from one segment. */
  enterLoss(recoveryPoint: number): void {
    this.state = 'loss';
    this.recoveryPoint = recoveryPoint;
    this.scoreboard.markAllLost();
    this.reorderAt = Infinity;
    this.sndcnt = 0;
  }

  exitRecovery(): void {
    this.state = 'open';
    this.sndcnt = 0;
  }

  /** RFC 6937 3, on every ACK in fast recovery: how much may go out for it. */
  prrUpdate(mss: number): void {
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

  /** Positions of lost data still to resend. */
  get lostBytes(): number {
    return this.scoreboard.lostBytes;
  }
}

export { SEG_LOST, SEG_RETRANSMITTED, SEG_SACKED };
