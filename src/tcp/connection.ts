/**
 * One TCP connection, sans-IO (smoltcp socket/tcp.rs is the model): it never
 * touches a clock, a timer or a socket. The driver calls
 *   process(now, segment)   for every segment of this connection,
 *   dispatch(now, sink)     to let it emit what is due,
 *   pollAt()                for the earliest time it needs dispatch again.
 *
 * Connections are opened passively from a received SYN (sluice plays every
 * destination); `TcpConnection.connect` opens actively, for tests and the
 * simulator. States and transitions follow RFC 9293 3.3.2 and 3.10; each
 * arm of `process` cites the rule it implements or where it departs.
 *
 * This file is the receiving half (lwIP's tcp_in.c): SEGMENT ARRIVES and the
 * application's calls. The state, the timers and everything sent are in
 * output.ts (TcpOutput, which this class extends); loss recovery is behind
 * LossRecovery (loss-recovery.ts, rack-tlp.ts).
 */
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type TcpRepr } from '../wire/tcp.js';
import { inWindow, seqAdd, seqGt, seqLeq, seqLt, seqSub } from './seq.js';
import { DEFAULT_PEER_MSS, TS_OPTION_BYTES } from './options.js';
import { TcpOutput } from './output.js';
import { peerMaySendIn, type ConnectionOptions, type ConnectionOwner, type TcpState } from './state.js';
import type { TcpConfig } from './config.js';

export type { CloseReason, ConnectionOptions, ConnectionOwner, ExclusiveTimer, SegmentSink, StateChange, StateChangeReason, TcpState } from './state.js';
export { TCP_STATE_CHANNEL } from './state.js';
export { CHALLENGE_ACKS_PER_SECOND, OUT_OF_WINDOW_ACK_INTERVAL_MS } from './answer-limit.js';
export { receiveWindowShift, tcpTimestampClock } from './options.js';

export class TcpConnection extends TcpOutput {
  private constructor(config: TcpConfig, now: number, opts: ConnectionOptions, owner: ConnectionOwner, state: TcpState, sack: boolean) {
    super(config, now, opts, owner, state, sack);
  }

  /** A connection for a received SYN (passive open, RFC 9293 3.10.7.2). */
  static accept(config: TcpConfig, now: number, syn: TcpRepr, opts: ConnectionOptions, owner: ConnectionOwner): TcpConnection {
    const c = new TcpConnection(config, now, opts, owner, 'SYN-RECEIVED', config.sack && syn.sackPermitted);
    c.irs = syn.seq;
    c.rcvNxt = seqAdd(syn.seq, 1);
    c.negotiate(syn);
    // RFC 7323 2.2: the window field of a SYN is never scaled.
    c.sndWnd = syn.window;
    c.sndWl1 = syn.seq;
    c.sndWl2 = syn.ack;
    c.maxSndWnd = c.sndWnd;
    c.synPending = true;
    // Data on the SYN (RFC 9293 3.10.7.2): queue it once established; here
    // it is simply not acknowledged, so the peer retransmits it.
    return c;
  }

  /**
   * A connection whose SYN was answered statelessly with a SYN cookie
   * (RFC 4987 3.6; src/tcp/syn-cookie.ts): `syn` is rebuilt from the cookie
   * ACK (SEQ-1, the MSS, window scale and SACK the cookie carried, the ACK's
   * timestamp) and `opts.iss` is the cookie. It starts in SYN-RECEIVED as if
   * its SYN-ACK had just gone out (which the stack sent, with the same
   * options and window this connection would have), and the caller feeds
   * it the ACK next, which establishes it.
   */
  static acceptCookie(config: TcpConfig, now: number, syn: TcpRepr, opts: ConnectionOptions, owner: ConnectionOwner): TcpConnection {
    const c = TcpConnection.accept(config, now, syn, opts, owner);
    c.synPending = false;
    const wnd = c.currentWindow();
    c.rcvAdvertised = wnd > 0xffff ? 0xffff : wnd;
    c.rcvEdge = seqAdd(c.rcvNxt, c.rcvAdvertised);
    return c;
  }

  /** An active open (SYN-SENT), used by tests and the simulator. */
  static connect(config: TcpConfig, now: number, opts: ConnectionOptions, owner: ConnectionOwner): TcpConnection {
    const c = new TcpConnection(config, now, opts, owner, 'SYN-SENT', config.sack);
    c.synPending = true;
    return c;
  }

  private negotiate(syn: TcpRepr): void {
    const cfg = this.config;
    const sack = cfg.sack && syn.sackPermitted;
    // An active open learns only now whether the peer does SACK.
    if (this.st === 'SYN-SENT' && cfg.sack && !sack) this.setRecoverySack(false);
    this.sackOk = sack;
    this.tsOk = cfg.timestamps && syn.hasTimestamps;
    if (this.tsOk) this.tsRecent = syn.tsVal;
    if (cfg.windowScale && syn.windowScale >= 0) {
      this.sndShift = syn.windowScale;
    } else {
      // RFC 7323 2.2: both must send the option, else neither side scales.
      this.sndShift = 0;
      this.rcvShift = 0;
    }
    const peerMss = syn.mss > 0 ? syn.mss : DEFAULT_PEER_MSS;
    const mss = Math.min(peerMss, this.announcedMss);
    // RFC 6691: the MSS excludes options; fixed options shrink every segment.
    this.sendMss = this.tsOk ? mss - TS_OPTION_BYTES : mss;
    if (!this.tso || this.segmentBytes < this.sendMss) this.segmentBytes = this.sendMss;
  }

  // ------------------------------------------------------------ app side

  get recvAvailable(): number {
    return this.recvRing.length;
  }

  get sendSpace(): number {
    if (this.finQueued || this.st === 'CLOSED') return 0;
    return this.sendRing.free;
  }

  /** Queues bytes to send; returns how many fit (0 when full or closing). */
  send(src: Uint8Array, off: number, len: number): number {
    if (this.finQueued || this.st === 'CLOSED' || this.st === 'TIME-WAIT') return 0;
    return this.sendRing.write(src, off, len);
  }

  /** Copies received bytes out; reading opens the receive window. */
  recv(dst: Uint8Array, off: number, len: number): number {
    const n = this.recvRing.read(dst, off, len);
    if (n > 0) {
      // RFC 9293 3.8.6.2.2 (receiver SWS avoidance): announce the larger
      // window only once it grew by min(half the buffer, 2*MSS)... we use
      // the RFC 1122 4.2.3.3 threshold min(RCV.BUFF/2, MSS).
      // Once the peer's FIN is in (CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT)
      // it sends no more data, so a window update has nothing to open: and
      // after our ACK of its FIN a LAST-ACK peer is CLOSED, and answers a
      // late window update with a RST (RFC 9293 3.10.7.1).
      // And only while what the peer may still send (our right edge less
      // RCV.NXT) is under two segments: with more it is not held back, and
      // the larger window rides on our next segment. (Right after the
      // handshake the peer has the SYN-ACK's unscaled 64 KiB: the first
      // read would otherwise send a window update of its own on every
      // connection, just before the answer that carries it.)
      const grown = this.currentWindow() - this.rcvAdvertised;
      if (grown >= Math.min(this.config.recvBufferBytes / 2, this.announcedMss) && seqSub(this.rcvEdge, this.rcvNxt) < 2 * this.announcedMss && peerMaySendIn(this.st)) this.ackNow = true;
    }
    return n;
  }

  /** No more data from the application: FIN after the queued bytes. */
  shutdownWrite(): void {
    this.finQueued = true;
  }

  /** Abortive close: RST now (RFC 9293 3.10.4 ABORT). */
  abort(): void {
    if (this.st === 'CLOSED') return;
    if (this.st === 'SYN-SENT' || this.st === 'TIME-WAIT') {
      this.enterClosed('aborted');
      return;
    }
    this.rstPending = true;
  }

  /**
   * An ICMP error quoting one of our segments (the stack found the flow).
   * RFC 5927 4.1: act only when the quoted sequence number lies in
   * [SND.UNA, SND.MAX), which a blind attacker cannot guess. Returns whether
   * it was accepted.
   * - 'too-big': RFC 1191 / RFC 8201 path MTU discovery: shrink the segment
   *   size to fit `mtu` and resend what is unacknowledged at once, without
   *   the congestion penalty of a loss (the segments were not congestion).
   * - 'hard': port/protocol unreachable, administratively prohibited. RFC
   *   1122 4.2.3.9 aborts a connection still in SYN-RECEIVED; RFC 5461 treats
   *   it as soft once synchronized, so we only count it then.
   */
  icmpError(now: number, kind: 'too-big' | 'hard', quotedSeq: number, mtu: number, ipHeaderBytes: number): boolean {
    if (this.st === 'CLOSED' || this.st === 'TIME-WAIT') return false;
    if (!seqLeq(this.sndUna, quotedSeq) || !seqLt(quotedSeq, this.sndNxt)) return false;
    if (kind === 'hard') {
      if (this.st === 'SYN-RECEIVED') this.enterClosed('reset');
      else this.softErrors++;
      return true;
    }
    // The smallest paths we accept: RFC 8201 5 (IPv6: 1280), RFC 1191 / Linux
    // min_pmtu 552 for IPv4, so a forged tiny MTU cannot make segments absurd.
    const floor = ipHeaderBytes === 40 ? 1280 : 552;
    const pathMtu = mtu < floor ? floor : mtu;
    let mss = pathMtu - ipHeaderBytes - 20;
    if (this.tsOk) mss -= TS_OPTION_BYTES;
    if (mss >= this.sendMss) return true;
    this.sendMss = mss;
    if (!this.tso) this.segmentBytes = mss; // without TSO: one segment per write
    this.pmtuReductions++;
    // Everything un-SACKed is resent in the new size (records larger than
    // it are split as they go out), without entering recovery.
    this.lossRecovery?.scoreboard.markAllLost(); // none: nothing sent, nothing to mark
    return true;
  }

  get isClosed(): boolean {
    return this.st === 'CLOSED';
  }

  get srtt(): number {
    return this.rtt.srtt;
  }

  get cwnd(): number {
    return this.cc.cwnd;
  }

  /** Retransmissions that RACK found lost again (and resent without a timeout). */
  get lostRetransmits(): number {
    return this.lossRecovery === null ? 0 : this.lossRecovery.lostRetransmits;
  }

  /** An ACK for an out-of-order (or hole-filling) segment is owed and must go before the next segment is processed. */
  get owesSackAck(): boolean {
    return this.sackAckOwed;
  }

  /** In fast recovery or in the loss state after a timeout. */
  get inRecovery(): boolean {
    return this.lossRecovery !== null && this.lossRecovery.state !== 'open';
  }

  // -------------------------------------------------------------- input

  /** RFC 9293 3.10.7: SEGMENT ARRIVES. `payload[off, off+len)` is the data. */
  process(now: number, seg: TcpRepr, payload: Uint8Array, off: number, len: number): void {
    this.segmentsIn++;
    this.lastActivity = now;
    if (this.keepAliveAt !== Infinity || this.config.keepAliveIdleMs > 0) this.armKeepAlive(now);
    switch (this.st) {
      case 'CLOSED':
        return;
      case 'SYN-SENT':
        return this.processSynSent(now, seg);
      case 'SYN-RECEIVED':
        if ((seg.flags & TCP_SYN) !== 0 && (seg.flags & TCP_ACK) === 0 && seg.seq === this.irs) {
          // A retransmitted SYN: our SYN-ACK was lost (RFC 9293 3.10.7.4 first check fails
          // for it; answering with the SYN-ACK again is what every stack does).
          this.synPending = true;
          return;
        }
        break;
      default:
        break;
    }
    this.processSynchronized(now, seg, payload, off, len);
  }

  private processSynSent(now: number, seg: TcpRepr): void {
    // RFC 9293 3.10.7.3
    const f = seg.flags;
    if ((f & TCP_ACK) !== 0 && (seqLeq(seg.ack, this.iss) || seqGt(seg.ack, this.sndNxt))) {
      if ((f & TCP_RST) === 0) this.rstPending = true;
      return;
    }
    if ((f & TCP_RST) !== 0) {
      if ((f & TCP_ACK) !== 0) this.enterClosed('reset');
      return;
    }
    if ((f & TCP_SYN) === 0) return;
    this.irs = seg.seq;
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.negotiate(seg);
    if ((f & TCP_ACK) !== 0) {
      this.sndUna = seg.ack;
      this.sndWnd = seg.window; // unscaled in a SYN
      this.sndWl1 = seg.seq;
      this.sndWl2 = seg.ack;
      this.maxSndWnd = this.sndWnd;
      this.takeRttSample(now, seg, true);
      this.stopTimer('retransmit');
      this.retries = 0;
      this.setState('ESTABLISHED', 'syn-ack');
      this.ackNow = true;
      this.owner.onEstablished(this);
      this.owner.onWritable(this);
    } else {
      // Simultaneous open: RFC 9293 3.10.7.3 fourth check.
      this.setState('SYN-RECEIVED', 'simultaneous-open');
      this.synPending = true;
    }
  }

  private processSynchronized(now: number, seg: TcpRepr, payload: Uint8Array, off: number, len: number): void {
    const f = seg.flags;
    // RFC 7323 5.3 PAWS: an old timestamp marks an old duplicate.
    if (this.tsOk && seg.hasTimestamps && (f & TCP_RST) === 0 && seqLt(seg.tsVal, this.tsRecent)) {
      if (this.st === 'SYN-RECEIVED') this.challenge(now);
      else this.ackNow = true;
      return;
    }
    // First check: sequence number acceptability (RFC 9293 3.10.7.4, the four cases).
    let segLen = len;
    if ((f & TCP_SYN) !== 0) segLen++;
    if ((f & TCP_FIN) !== 0) segLen++;
    const wnd = this.rcvWindowForCheck();
    let acceptable: boolean;
    if (segLen === 0) acceptable = wnd === 0 ? seg.seq === this.rcvNxt : inWindow(seg.seq, this.rcvNxt, wnd);
    else acceptable = wnd > 0 && (inWindow(seg.seq, this.rcvNxt, wnd) || inWindow(seqAdd(seg.seq, segLen - 1), this.rcvNxt, wnd));
    // A zero window still takes pure ACKs and lets the peer probe.
    if (!acceptable && !(wnd === 0 && seg.seq === this.rcvNxt)) {
      // Before the handshake completes that ACK is a SYN-ACK, and a blind
      // flood onto the tuple must not turn into a SYN-ACK flood (RFC 5961 7).
      if ((f & TCP_RST) === 0) {
        if (this.st === 'SYN-RECEIVED') this.challenge(now);
        else if (segLen > 0 || this.limiter.spendOutOfWindowAck(now)) this.ackNow = true;
      }
      // RFC 9293 3.10.7.4 TIME-WAIT: "the only thing that can arrive is a
      // retransmission of the remote FIN. Acknowledge it, and restart the
      // 2 MSL timeout." It ends just below RCV.NXT, so it lands here.
      if (this.st === 'TIME-WAIT' && (f & (TCP_FIN | TCP_RST)) === TCP_FIN && seqAdd(seg.seq, segLen) === this.rcvNxt) {
        this.setTimer('time-wait', now + this.config.timeWaitMs);
      }
      // The ACK field of an unacceptable segment still carries window
      // updates the peer needs us to see when our window was zero.
      return;
    }

    // FIN-WAIT-2 is a half-close, not an orphan: the peer may keep sending
    // as long as it likes (RFC 9293 3.6 has no FIN-WAIT-2 timer; Linux's
    // tcp_fin_timeout applies only once the application closed). Our bound
    // (config.finWait2TimeoutMs) is therefore one of silence, restarted by
    // every in-window segment, which a blind attacker cannot send.
    if (this.st === 'FIN-WAIT-2') this.setTimer('fin-wait-2', now + this.config.finWait2TimeoutMs);

    // Second check: RST (RFC 5961 3.2 over RFC 9293).
    if ((f & TCP_RST) !== 0) {
      if (seg.seq === this.rcvNxt) {
        this.enterClosed('reset');
      } else {
        this.challenge(now);
      }
      return;
    }

    // Fourth check: SYN in a synchronized state (RFC 5961 4.2): challenge ACK.
    if ((f & TCP_SYN) !== 0) {
      this.challenge(now);
      return;
    }

    // Fifth check: ACK (RFC 9293 3.10.7.4; RFC 5961 5.2).
    if ((f & TCP_ACK) === 0) return;
    if (this.st === 'SYN-RECEIVED') {
      if (seqGt(seg.ack, this.sndUna) && seqLeq(seg.ack, this.sndNxt)) {
        this.setState('ESTABLISHED', 'handshake');
        this.sndWnd = seg.window << this.sndShift;
        this.sndWl1 = seg.seq;
        this.sndWl2 = seg.ack;
        this.maxSndWnd = this.sndWnd;
        if (this.retries > 0) this.rtt.resetAfterHandshakeRetransmit();
        this.takeRttSample(now, seg, this.retries === 0);
        this.sndUna = seg.ack;
        this.stopTimer('retransmit');
        this.retries = 0;
        this.owner.onEstablished(this);
        this.owner.onWritable(this);
      } else {
        // RFC 9293 3.10.7.4: <SEQ=SEG.ACK><CTL=RST> for an unacceptable ACK,
        // sent to whoever sent it; the half-open connection stays as it is
        // (aborting it here let blind ACKs kill handshakes), and the reset
        // is rate limited like a challenge ACK (RFC 5961 7).
        if (this.limiter.spendChallenge(now)) {
          this.rstReplyPending = true;
          this.rstReplySeq = seg.ack;
        }
        return;
      }
    } else if (!this.processAck(now, seg, len)) {
      return;
    }

    // Seventh: segment text (ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2).
    if (len > 0 && (this.st === 'ESTABLISHED' || this.st === 'FIN-WAIT-1' || this.st === 'FIN-WAIT-2')) {
      this.receiveData(now, seg.seq, payload, off, len, (f & TCP_PSH) !== 0);
    }

    // Eighth: FIN, only once everything before it arrived.
    if ((f & TCP_FIN) !== 0 && seqAdd(seg.seq, len) === this.rcvNxt && this.st !== 'CLOSED') {
      this.receiveFin(now);
    }
    if (this.tsOk && seg.hasTimestamps && seqLeq(seg.seq, this.rcvNxt)) this.tsRecent = seg.tsVal; // RFC 7323 4.3
  }

  /** RFC 9293 3.10.7.4 fifth check, ESTABLISHED and later. Returns false to stop processing. */
  private processAck(now: number, seg: TcpRepr, len: number): boolean {
    const ack = seg.ack;
    // RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT].
    if (seqGt(ack, this.sndNxt)) {
      this.ackNow = true;
      return false;
    }
    if (seqLt(ack, seqSub(this.sndUna, this.maxSndWnd) >>> 0)) {
      this.challenge(now);
      return false;
    }
    const window = seg.window << this.sndShift;
    // No recovery yet: no data was ever sent (output.ts lossRecovery), and
    // on its empty scoreboard a fresh one would record nothing of this ACK
    // (no delivery, no SACK, no duplicate, no loss, no PRR step).
    const lr = this.lossRecovery;
    if (lr !== null) lr.beginAck(now, this.rtt.minRtt);
    const advanced = seqGt(ack, this.sndUna);
    if (advanced) this.onNewAck(now, seg, ack);
    if (lr !== null) {
      if (this.sackOk && seg.sackCount > 0) this.recordSack(seg);
      if (!advanced && ack === this.sndUna && len === 0 && (seg.flags & TCP_FIN) === 0 && this.sentBytes > 0 && (window === this.sndWnd || lr.delivered > 0)) {
        // RFC 5681 2: a duplicate ACK (RFC 6675 2: with SACK, one that SACKs
        // new data counts even when the window changed, as Linux receivers
        // grow it all the time while auto-tuning).
        lr.onDuplicateAck(this.sendMss);
      }
      // Only NewReno's early retransmit (RFC 5827) asks whether new data could go: not computed per ACK with SACK.
      const moreToSend = !this.sackOk && this.canSendData();
      if (lr.finishAck(now, this.ringBase, this.nxtPos, this.rtt.srtt, this.sendMss, moreToSend)) this.rttSentAt = -1; // Karn: the timed segment may be retransmitted
    }
    // Window update (RFC 9293 3.10.7.4: SND.WL1 < SEG.SEQ or (= and SND.WL2 <= SEG.ACK)).
    if (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLeq(this.sndWl2, ack))) {
      const opened = this.sndWnd === 0 && window > 0;
      this.sndWnd = window;
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
      if (window > this.maxSndWnd) this.maxSndWnd = window;
      if (opened) {
        this.stopTimer('persist');
        this.persistBackoff = 0;
      }
    }
    // Our FIN acknowledged?
    if (this.finSent && ack === seqAdd(this.finSeq, 1)) {
      this.finLost = false;
      switch (this.st) {
        case 'FIN-WAIT-1':
          this.setState('FIN-WAIT-2', 'fin-acked');
          this.setTimer('fin-wait-2', now + this.config.finWait2TimeoutMs);
          break;
        case 'CLOSING':
          this.enterTimeWait(now, 'fin-acked');
          return false;
        case 'LAST-ACK':
          this.enterClosed('fin');
          return false;
        default:
          break;
      }
    }
    return true;
  }

  /** Stream position of a sequence number within [SND.UNA - 2^31, SND.UNA + 2^31). */
  private posOf(seq: number): number {
    return this.ringBase + seqSub(seq, this.ringSeq);
  }

  private onNewAck(now: number, seg: TcpRepr, ack: number): void {
    const acked = seqSub(ack, this.sndUna);
    this.sndUna = ack;
    let dataAcked = seqSub(ack, this.ringSeq);
    if (dataAcked > this.sendRing.length) dataAcked = this.sendRing.length; // the rest is our FIN
    if (dataAcked > 0) {
      this.sendRing.discard(dataAcked);
      this.ringSeq = seqAdd(this.ringSeq, dataAcked);
      this.ringBase += dataAcked;
      this.sentBytes = Math.max(0, this.sentBytes - dataAcked);
      this.recovery.ackTo(this.ringBase);
      this.bytesSent += dataAcked;
      this.owner.onWritable(this);
    }
    this.takeRttSample(now, seg, false);
    this.retries = 0;
    const lr = this.lossRecovery; // none: nothing sent, the state is open (output.ts lossRecovery)
    if (lr !== null) lr.onAdvance();
    // In fast recovery PRR paces sending; after a timeout slow start regrows cwnd (RFC 5681 3.1).
    if ((lr === null || lr.state !== 'fast-recovery') && acked > 0) this.cc.onAck(now, acked, this.rtt.srtt);
    // RFC 6298 5.2/5.3: stop the timer when all is acknowledged, else restart it.
    if (this.sndUna === this.sndNxt) this.stopTimer('retransmit');
    else this.setTimer('retransmit', now + this.rtt.rto);
    this.armLossProbe(now);
  }

  private recordSack(seg: TcpRepr): void {
    for (let i = 0; i < seg.sackCount; i++) {
      const l = seg.sackLeft[i]!;
      const r = seg.sackRight[i]!;
      // RFC 2018 / RFC 6675: only blocks within [SND.UNA, SND.NXT] count
      // (a D-SACK below SND.UNA, RFC 2883, carries nothing to record).
      if (!seqLt(this.ringSeq, r) || seqGt(r, this.sndNxt) || !seqLt(l, r)) continue;
      const start = seqLt(l, this.ringSeq) ? this.ringBase : this.posOf(l);
      this.recovery.sack(start, this.posOf(r));
    }
  }

  private takeRttSample(now: number, seg: TcpRepr, allowWithoutTs: boolean): void {
    if (this.tsOk && seg.hasTimestamps && seg.tsEcr !== 0) {
      // RFC 7323 4.1: echoed timestamps identify the transmission (Karn-safe).
      const rtt = ((this.tsClock(now) - seg.tsEcr) >>> 0) & 0x7fffffff;
      if (rtt < 600_000) this.rtt.sample(rtt);
      return;
    }
    if (this.rttSentAt >= 0 && seqGt(seg.ack, this.rttSeq)) {
      this.rtt.sample(now - this.rttSentAt);
      this.rttSentAt = -1;
    } else if (allowWithoutTs && this.rttSentAt >= 0) {
      this.rtt.sample(now - this.rttSentAt);
      this.rttSentAt = -1;
    }
  }

  private receiveData(now: number, seq: number, payload: Uint8Array, off: number, len: number, push: boolean): void {
    // New data: the peer has seen our window (no need to repeat a window update, output.ts WINDOW_UPDATE_RESENDS).
    this.windowUpdateAt = Infinity;
    // Trim what we already have (RFC 9293 3.10.7.4 seventh, "segment text").
    let skip = seqSub(this.rcvNxt, seq);
    if (skip > 0) {
      if (skip >= len) {
        this.ackNow = true; // a pure duplicate: ACK so the sender moves on
        return;
      }
      off += skip;
      len -= skip;
      seq = this.rcvNxt;
      skip = 0;
    }
    const gap = seqSub(seq, this.rcvNxt);
    if (gap === 0) {
      // RFC 5681 4.2: a segment that fills all or part of a hole is ACKed at once.
      if (!this.oooEmpty) this.ackNow = this.sackAckOwed = true;
      const n = this.recvRing.write(payload, off, len);
      if (n === 0) {
        this.ackNow = true;
        return;
      }
      this.rcvNxt = seqAdd(this.rcvNxt, n);
      this.bytesReceived += n;
      const filled = this.oooEmpty ? 0 : this.ooo.advance(n);
      if (filled > 0) {
        this.recvRing.commit(filled);
        this.rcvNxt = seqAdd(this.rcvNxt, filled);
        this.bytesReceived += filled;
        this.ackNow = true; // RFC 5681 4.2: ACK at once when a hole fills
      }
      this.owner.onReadable(this);
      // RFC 5681 4.2 / RFC 1122 4.2.3.2: ACK at least every second full segment.
      this.segmentsSinceAck += Math.max(1, Math.floor(n / this.announcedMss));
      // A small pushed segment (a request) is ACKed at once, so a sender
      // that waits on it (Nagle) does not wait for our timer; in
      // request/response mode our answer carries the ACK (TcpOutput.interactive).
      const small = push && n < this.announcedMss;
      if (small) this.awaitingReply = true;
      if (this.segmentsSinceAck >= 2 || (small && !this.interactive)) this.ackNow = true;
      else {
        // A request in request/response mode waits interactiveAckMs for the answer, any other segment the delayed-ACK time.
        const at = now + (small ? this.config.interactiveAckMs : this.config.delayedAckMs);
        if (at < this.delayedAckAt) this.delayedAckAt = at;
      }
      return;
    }
    // Out of order: place it, remember the range, ACK at once with SACK.
    const room = this.recvRing.free - gap;
    const n = len < room ? len : room;
    if (n <= 0 || this.ooo.covers(gap, n) || !this.ooo.add(gap, n) || !this.recvRing.writeAt(gap, payload, off, n)) {
      if (n > 0 && !this.ooo.covers(gap, n)) this.outOfOrderDrops++;
    }
    this.ackNow = this.sackAckOwed = true;
  }

  private receiveFin(now: number): void {
    this.rcvNxt = seqAdd(this.rcvNxt, 1);
    this.ackNow = true;
    this.owner.onPeerFin(this);
    switch (this.st) {
      case 'SYN-RECEIVED':
      case 'ESTABLISHED':
        this.setState('CLOSE-WAIT', 'peer-fin');
        break;
      case 'FIN-WAIT-1':
        // Our FIN not yet acknowledged: simultaneous close (RFC 9293 3.6).
        this.setState('CLOSING', 'peer-fin');
        break;
      case 'FIN-WAIT-2':
        this.enterTimeWait(now, 'peer-fin');
        break;
      case 'TIME-WAIT':
        this.setTimer('time-wait', now + this.config.timeWaitMs); // restart (RFC 9293 3.10.7.4)
        break;
      default:
        break;
    }
  }

  private challenge(now: number): void {
    // RFC 5961 3.2/4.2/5.2: a challenge ACK; the genuine peer answers with
    // an exact RST or a fresh ACK, a blind attacker cannot.
    if (!this.limiter.spendChallenge(now)) return;
    this.challengePending = true;
    this.challengeAcks++;
  }

}
