/**
 * Loss detection with SACK (RFC 8985), behind the LossRecovery interface
 * (loss-recovery.ts; Linux's tcp_recovery.c is the model):
 *
 *   - RACK (RFC 8985 6): a segment is lost when a segment sent after it
 *     was delivered and more than RACK.rtt + RACK.reo_wnd has passed since
 *     it was sent. Time-based, so lost retransmissions are detected like
 *     any other loss and a reordering allowance replaces the dupack count.
 *   - TLP (RFC 8985 7): when a flight's tail is lost nothing comes back to
 *     drive RACK; after PTO = 2*SRTT one probe (new data or the last
 *     un-SACKed segment, sent by the connection) elicits the SACK that does.
 */
import { DUP_THRESH, RecoveryBase, type LossRecovery } from './loss-recovery.js';
import { SEG_LOST, SEG_RETRANSMITTED, SEG_SACKED, type DeliveryListener } from './scoreboard.js';

/**
 * Probes sent since SND.UNA last advanced. RFC 8985 7.3 allows one; we
 * allow four, the third and fourth after a PTO doubled per unanswered
 * probe (PTO_BACKOFF_FROM): on a path that loses ACKs as often as data
 * and whose receiver acknowledges a whole burst with one ACK (Linux does,
 * when its reader drains the socket), a flight's only ACK and the answers
 * to two probes were all lost a few times per 200 MB at 5 % loss, and each
 * time the 200 ms RTO, a thousand round trips on a LAN, cost more than the
 * rest of the recovery together. Four probes leave that to chance
 * (0.05^4) while bounding what an unresponsive peer gets: at most eight
 * segments over 8 PTOs, well inside the RTO, which takes over after them.
 */
export const MAX_PROBES = 4;
/** Unanswered probes after which each further PTO doubles. */
const PTO_BACKOFF_FROM = 2;

export class RackTlpRecovery extends RecoveryBase implements LossRecovery, DeliveryListener {
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
  private probesSinceAck = 0;
  /** Segments RACK marked lost (lost retransmissions included). */
  rackLosses = 0;

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

  onAdvance(): void {
    this.probesSinceAck = 0;
  }

  /** With SACK a duplicate ACK's news is in its blocks, which `sack` recorded. */
  onDuplicateAck(_mss: number): void {}

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

  finishAck(now: number, unaPos: number, nxtPos: number, srtt: number, mss: number, _moreToSend: boolean): boolean {
    this.maybeExit(now, unaPos);
    const lost = (this.rackAdvanced || this.reorderAt !== Infinity) && this.detectLoss(now, srtt, mss);
    if (lost && this.state === 'open') {
      this.startRecovery(now, nxtPos, mss);
      return true;
    }
    this.prrUpdate(mss);
    return false;
  }

  /** RFC 8985 6.3: the reordering window of a delivered-around segment has passed. */
  onReorderTimer(now: number, nxtPos: number, srtt: number, mss: number): boolean {
    this.reorderAt = Infinity;
    if (!this.detectLoss(now, srtt, mss) || this.state !== 'open') return false;
    this.delivered = 0;
    this.startRecovery(now, nxtPos, mss);
    return true;
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
        if ((f & SEG_RETRANSMITTED) !== 0) {
          this.lostRetransmits++;
          this.totals.lostRetransmits++;
        }
        marked = true;
      } else if (remaining < wait) {
        wait = remaining;
      }
    }
    if (wait !== Infinity) this.reorderAt = now + wait;
    return marked;
  }

  protected afterTimeout(): void {
    this.probesSinceAck = 0;
  }

  get mayProbe(): boolean {
    return this.probesSinceAck < MAX_PROBES;
  }

  onProbeSent(): void {
    this.lossProbes++;
    this.totals.lossProbes++;
    this.probesSinceAck++;
  }

  /**
   * RFC 8985 7.2: PTO = 2 * SRTT, at least 1 ms: one tick of our clock
   * (Node's timers and the millisecond timestamps SRTT comes from; Linux's
   * TCP_TIMEOUT_MIN is two jiffies for the same reason). On a sub-ms path
   * every tail loss waits the floor, so 2 ms cost a quarter of the goodput
   * under 5 % loss; a probe too early costs one segment. Plus the peer's delayed
   * ACK when at most one segment is in flight (no ACK would come sooner),
   * and never after the RTO.
   */
  armProbe(now: number, srtt: number, hasRttSample: boolean, flight: number, mss: number, delayedAckMs: number, rtoAt: number): void {
    // RFC 8985 7.2: (re)scheduled after every transmission and every ACK
    // that advances SND.UNA, so a burst's last segment decides the PTO.
    this.probeAt = Infinity;
    // No RTT sample yet: only the RTO (a zero SRTT is a real sample: sub-ms paths and ms timestamps).
    // Not after a timeout (the 'loss' state): the RTO and its backoff pace an unresponsive peer.
    if (flight === 0 || !hasRttSample || this.probesSinceAck >= MAX_PROBES || this.state === 'loss') return;
    let pto = 2 * srtt;
    if (pto < 1) pto = 1;
    // Past the second unanswered probe, back off (MAX_PROBES).
    if (this.probesSinceAck >= PTO_BACKOFF_FROM) pto *= 2 ** (this.probesSinceAck - PTO_BACKOFF_FROM + 1);
    // RFC 8985 7.2: FlightSize (SND.NXT - SND.UNA), not the pipe: with SACKed
    // data above a hole the receiver ACKs a segment filling it at once
    // (RFC 5681 4.2), so one segment left in the pipe of a larger flight
    // waits for no delayed ACK.
    if (flight <= mss) pto += delayedAckMs;
    if (now + pto < rtoAt) this.probeAt = now + pto;
  }
}
