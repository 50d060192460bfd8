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
 */
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, newTcpRepr, type TcpRepr } from '../wire/tcp.js';
import { inWindow, seqAdd, seqGt, seqLeq, seqLt, seqSub } from './seq.js';
import { RttEstimator } from './rtt.js';
import { ByteRing } from './ring-buffer.js';
import { Assembler } from './assembler.js';
import { createCongestionControl, type CongestionControl } from './congestion/index.js';
import { NewRenoRecovery, SEG_LOST, type LossRecovery } from './loss-recovery.js';
import { RackTlpRecovery } from './rack-tlp.js';
import { AnswerLimiter } from './answer-limit.js';
import { DEFAULT_PEER_MSS, TS_OPTION_BYTES, receiveWindowShift, timestampOffset } from './options.js';
import {
  finSentIn,
  peerMaySendIn,
  stateChannel,
  type CloseReason,
  type ConnectionOwner,
  type ExclusiveTimer,
  type SegmentSink,
  type StateChangeReason,
  type TcpState,
  type TimerKind,
} from './state.js';
import type { TcpConfig } from './config.js';

export type { CloseReason, ConnectionOwner, ExclusiveTimer, SegmentSink, StateChange, StateChangeReason, TcpState } from './state.js';
export { TCP_STATE_CHANNEL } from './state.js';
export { CHALLENGE_ACKS_PER_SECOND, OUT_OF_WINDOW_ACK_INTERVAL_MS } from './answer-limit.js';
export { receiveWindowShift, tcpTimestampClock } from './options.js';

export interface ConnectionOptions {
  iss: number;
  /** MSS this side announces (the link MTU minus IP and TCP headers). */
  mss: number;
}

/** Records of at most one MSS for a full send buffer, with room for small writes. */
function scoreboardRecords(config: TcpConfig): number {
  return Math.max(64, Math.ceil(config.sendBufferBytes / 256));
}

function createLossRecovery(sack: boolean, config: TcpConfig, cc: CongestionControl): LossRecovery {
  return sack ? new RackTlpRecovery(scoreboardRecords(config), cc) : new NewRenoRecovery(scoreboardRecords(config), cc);
}

export class TcpConnection {
  private st: TcpState;
  readonly config: TcpConfig;
  private readonly owner: ConnectionOwner;
  readonly rtt: RttEstimator;
  readonly cc: CongestionControl;
  readonly sendRing: ByteRing;
  readonly recvRing: ByteRing;
  private readonly ooo: Assembler;
  /** Loss detection and recovery of our sent data (RACK-TLP with SACK, NewReno without), PRR, the scoreboard. */
  recovery: LossRecovery;
  private readonly limiter = new AnswerLimiter();

  // Send sequence space (RFC 9293 3.3.1). One fact per field; SND.NXT, the
  // FIN's sequence number and whether it was sent are derived (getters).
  readonly iss: number;
  sndUna: number;
  /** The peer's window in bytes (scaled). */
  sndWnd = 0;
  private sndWl1 = 0;
  private sndWl2 = 0;
  private maxSndWnd = 0;
  /** Sequence number of the first byte in sendRing. */
  private ringSeq: number;
  /**
   * Stream position (bytes since the first data byte, never wrapping) of
   * the first byte in sendRing: the scoreboard's coordinates.
   */
  private ringBase = 0;
  /**
   * Bytes of sendRing sent at least once (from the ring head): SND.NXT is
   * ringSeq + sentBytes (+1 once our FIN is out). It never moves back: a
   * timeout marks data lost on the scoreboard, which picks what to resend
   * (smoltcp rewinds a send pointer; neither touches the RFC state).
   */
  private sentBytes = 0;
  /** The application will send no more (RFC 9293 3.10.4 CLOSE): our FIN follows the queued data. */
  private finQueued = false;
  /** A timeout found our FIN unacknowledged: send it again once the lost data is out. */
  private finLost = false;

  // Receive sequence space
  irs = 0;
  rcvNxt = 0;
  /** Window we last advertised (bytes), and its right edge. */
  private rcvAdvertised = 0;
  private rcvEdge = 0;

  // Negotiated options
  private sndShift = 0;
  private rcvShift = 0;
  private sackOk = false;
  private tsOk = false;
  private tsRecent = 0;
  private readonly tsOffset: number;
  /** The peer's MSS for our segments' payload (options subtracted). */
  sendMss: number;
  private readonly announcedMss: number;
  /** The driver's link cuts super-segments (TSO/GSO): one emitted segment may carry many MSS (`useTso`). */
  private tso = false;
  private segmentBytes: number;

  // Timers (absolute ms; Infinity when off). Timers are data (ENGINEERING.md):
  // the exclusive one is a kind and a deadline (see `timer`), the others beside it.
  private timerKind: TimerKind = 'idle';
  private timerAt = Infinity;
  private delayedAckAt = Infinity;
  private keepAliveAt = Infinity;
  private persistBackoff = 0;
  private keepAliveSent = 0;
  private retries = 0;

  // Pending work for dispatch
  private ackNow = false;
  private synPending = false;
  private rstPending = false;
  private challengePending = false;
  /** RFC 9293 3.10.7.4 (SYN-RECEIVED, bad ACK): a <SEQ=SEG.ACK><CTL=RST> owed to the sender; the connection stays. */
  private rstReplyPending = false;
  private rstReplySeq = 0;
  private segmentsSinceAck = 0;
  /** Segments that advertised a zero window (our reader was slow). */
  zeroWindowsSent = 0;
  /** Zero-window probes sent (the peer's reader was slow). */
  windowProbes = 0;
  private rttSeq = 0;
  private rttSentAt = -1;
  private lastActivity: number;
  private closeReason: CloseReason | null = null;

  // Counters
  bytesReceived = 0;
  bytesSent = 0;
  retransmits = 0;
  /** Retransmission timeouts (each one a go-back-N with cwnd at one segment). */
  timeouts = 0;
  /** ICMP errors accepted for this connection that did not end it (RFC 5461). */
  softErrors = 0;
  /** Times a Packet Too Big / Fragmentation Needed shrank the segment size. */
  pmtuReductions = 0;
  segmentsIn = 0;
  segmentsOut = 0;
  outOfOrderDrops = 0;
  challengeAcks = 0;

  private readonly out = newTcpRepr();

  private constructor(config: TcpConfig, now: number, opts: ConnectionOptions, owner: ConnectionOwner, state: TcpState, sack: boolean) {
    this.config = config;
    this.owner = owner;
    this.st = state;
    this.rtt = new RttEstimator({ initialRtoMs: config.initialRtoMs, minRtoMs: config.minRtoMs, maxRtoMs: config.maxRtoMs, granularityMs: 4 });
    this.sendRing = new ByteRing(config.sendBufferBytes);
    this.recvRing = new ByteRing(config.recvBufferBytes);
    this.ooo = new Assembler(config.maxOutOfOrderRanges);
    this.iss = opts.iss >>> 0;
    this.sndUna = this.iss;
    this.ringSeq = seqAdd(this.iss, 1);
    this.announcedMss = opts.mss;
    this.sendMss = DEFAULT_PEER_MSS;
    this.segmentBytes = DEFAULT_PEER_MSS;
    this.cc = createCongestionControl(config.congestion, opts.mss, config.initialCwndSegments);
    this.recovery = createLossRecovery(sack, config, this.cc);
    this.tsOffset = timestampOffset(opts.iss);
    this.lastActivity = now;
    this.rcvShift = receiveWindowShift(config);
  }

  get state(): TcpState {
    return this.st;
  }

  /** Every state change goes through here, and is traced (TCP_STATE_CHANNEL). */
  private setState(next: TcpState, reason: StateChangeReason): void {
    const from = this.st;
    this.st = next;
    if (stateChannel.hasSubscribers) stateChannel.publish({ connection: this, from, to: next, reason });
  }

  /** SND.NXT (RFC 9293 3.3.1): the sequence number after everything sent, our FIN included. */
  get sndNxt(): number {
    const nxt = seqAdd(this.ringSeq, this.sentBytes);
    return this.finSent ? seqAdd(nxt, 1) : nxt;
  }

  /** Our FIN is out (RFC 9293 3.3.2: FIN-WAIT-1 and the states after it, and LAST-ACK); in CLOSED, if it was queued. */
  private get finSent(): boolean {
    return this.finQueued && (finSentIn(this.st) || this.st === 'CLOSED');
  }

  /** Sequence number of our FIN: after every queued byte (valid once the FIN is queued). */
  private get finSeq(): number {
    return seqAdd(this.ringSeq, this.sendRing.length);
  }

  /** Stream position of SND.NXT's data (the scoreboard's end). */
  private get nxtPos(): number {
    return this.ringBase + this.sentBytes;
  }

  /** The running exclusive timer (retransmit, persist, TIME-WAIT or FIN-WAIT-2), as data. */
  get timer(): ExclusiveTimer {
    return this.timerKind === 'idle' ? { kind: 'idle' } : { kind: this.timerKind, at: this.timerAt };
  }

  private setTimer(kind: TimerKind, at: number): void {
    this.timerKind = kind;
    this.timerAt = at;
  }

  /** Stops the exclusive timer if `kind` is the one running. */
  private stopTimer(kind: TimerKind): void {
    if (this.timerKind !== kind) return;
    this.timerKind = 'idle';
    this.timerAt = Infinity;
  }

  /** RFC 6298 5.1: start the retransmission timer when it is not running. */
  private startRetransmitTimer(now: number): void {
    if (this.timerKind !== 'retransmit') this.setTimer('retransmit', now + this.rtt.rto);
  }

  private get rtoAt(): number {
    return this.timerKind === 'retransmit' ? this.timerAt : Infinity;
  }

  /**
   * Largest payload of one emitted segment: the send MSS, or with TSO what
   * the link takes in one super-segment (which the kernel cuts on the wire).
   */
  get maxSegmentBytes(): number {
    return this.segmentBytes;
  }

  /** The driver's link takes TCP super-segments of up to `maxPayload` bytes (TSO/GSO). */
  useTso(maxPayload: number): void {
    this.tso = true;
    this.segmentBytes = maxPayload;
  }

  get challengesSuppressed(): number {
    return this.limiter.challengesSuppressed;
  }

  get outOfWindowAcksSuppressed(): number {
    return this.limiter.outOfWindowAcksSuppressed;
  }

  /** Tail loss probes sent. */
  get lossProbes(): number {
    return this.recovery.lossProbes;
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
    if (this.st === 'SYN-SENT' && cfg.sack && !sack) this.recovery = createLossRecovery(false, cfg, this.cc);
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
    if (this.finQueued || this.state === 'CLOSED') return 0;
    return this.sendRing.free;
  }

  /** Queues bytes to send; returns how many fit (0 when full or closing). */
  send(src: Uint8Array, off: number, len: number): number {
    if (this.finQueued || this.state === 'CLOSED' || this.state === 'TIME-WAIT') return 0;
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
      const grown = this.currentWindow() - this.rcvAdvertised;
      if (grown >= Math.min(this.config.recvBufferBytes / 2, this.announcedMss) && peerMaySendIn(this.st)) this.ackNow = true;
    }
    return n;
  }

  /** No more data from the application: FIN after the queued bytes. */
  shutdownWrite(): void {
    this.finQueued = true;
  }

  /** Abortive close: RST now (RFC 9293 3.10.4 ABORT). */
  abort(): void {
    if (this.state === 'CLOSED') return;
    if (this.state === 'SYN-SENT' || this.state === 'TIME-WAIT') {
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
    if (this.state === 'CLOSED' || this.state === 'TIME-WAIT') return false;
    if (!seqLeq(this.sndUna, quotedSeq) || !seqLt(quotedSeq, this.sndNxt)) return false;
    if (kind === 'hard') {
      if (this.state === 'SYN-RECEIVED') this.enterClosed('reset');
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
    this.recovery.scoreboard.markAllLost();
    return true;
  }

  get isClosed(): boolean {
    return this.state === 'CLOSED';
  }

  get srtt(): number {
    return this.rtt.srtt;
  }

  get cwnd(): number {
    return this.cc.cwnd;
  }

  /** Bytes in flight (sent, not yet cumulatively acknowledged). */
  get flightBytes(): number {
    return seqSub(this.sndNxt, this.sndUna);
  }

  /** Retransmissions that RACK found lost again (and resent without a timeout). */
  get lostRetransmits(): number {
    return this.recovery.lostRetransmits;
  }

  /** In fast recovery or in the loss state after a timeout. */
  get inRecovery(): boolean {
    return this.recovery.state !== 'open';
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
      if (this.state === 'SYN-RECEIVED') this.challenge(now);
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
        if (this.state === 'SYN-RECEIVED') this.challenge(now);
        else if (segLen > 0 || this.limiter.spendOutOfWindowAck(now)) this.ackNow = true;
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
    if (this.state === 'SYN-RECEIVED') {
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
    if (len > 0 && (this.state === 'ESTABLISHED' || this.state === 'FIN-WAIT-1' || this.state === 'FIN-WAIT-2')) {
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
    const lr = this.recovery;
    lr.beginAck(now, this.rtt.minRtt);
    const advanced = seqGt(ack, this.sndUna);
    if (advanced) this.onNewAck(now, seg, ack);
    if (this.sackOk && seg.sackCount > 0) this.recordSack(seg);
    if (!advanced && ack === this.sndUna && len === 0 && (seg.flags & TCP_FIN) === 0 && this.sentBytes > 0 && (window === this.sndWnd || lr.delivered > 0)) {
      // RFC 5681 2: a duplicate ACK (RFC 6675 2: with SACK, one that SACKs
      // new data counts even when the window changed, as Linux receivers
      // grow it all the time while auto-tuning).
      lr.onDuplicateAck(this.sendMss);
    }
    if (lr.finishAck(now, this.ringBase, this.nxtPos, this.rtt.srtt, this.sendMss, this.canSendData())) this.rttSentAt = -1; // Karn: the timed segment may be retransmitted
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
    this.recovery.onAdvance();
    // In fast recovery PRR paces sending; after a timeout slow start regrows cwnd (RFC 5681 3.1).
    if (this.recovery.state !== 'fast-recovery' && acked > 0) this.cc.onAck(now, acked, this.rtt.srtt);
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
      if (!this.ooo.isEmpty) this.ackNow = true;
      const n = this.recvRing.write(payload, off, len);
      if (n === 0) {
        this.ackNow = true;
        return;
      }
      this.rcvNxt = seqAdd(this.rcvNxt, n);
      this.bytesReceived += n;
      const filled = this.ooo.isEmpty ? 0 : this.ooo.advance(n);
      if (filled > 0) {
        this.recvRing.commit(filled);
        this.rcvNxt = seqAdd(this.rcvNxt, filled);
        this.bytesReceived += filled;
        this.ackNow = true; // RFC 5681 4.2: ACK at once when a hole fills
      }
      this.owner.onReadable(this);
      // RFC 5681 4.2 / RFC 1122 4.2.3.2: ACK at least every second full segment.
      this.segmentsSinceAck += Math.max(1, Math.floor(n / this.announcedMss));
      if (this.segmentsSinceAck >= 2 || push && n < this.announcedMss) this.ackNow = true;
      else if (this.delayedAckAt === Infinity) this.delayedAckAt = now + this.config.delayedAckMs;
      return;
    }
    // Out of order: place it, remember the range, ACK at once with SACK.
    const room = this.recvRing.free - gap;
    const n = len < room ? len : room;
    if (n <= 0 || this.ooo.covers(gap, n) || !this.ooo.add(gap, n) || !this.recvRing.writeAt(gap, payload, off, n)) {
      if (n > 0 && !this.ooo.covers(gap, n)) this.outOfOrderDrops++;
    }
    this.ackNow = true;
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

  private enterTimeWait(now: number, reason: StateChangeReason): void {
    this.setState('TIME-WAIT', reason);
    // The exclusive timer becomes TIME-WAIT's: no retransmission, probe or FIN-WAIT-2 bound is left.
    this.setTimer('time-wait', now + this.config.timeWaitMs);
    this.recovery.cancelProbe();
    this.keepAliveAt = Infinity;
  }

  private enterClosed(reason: CloseReason | 'time-wait-expired'): void {
    if (this.st === 'CLOSED') return;
    this.setState('CLOSED', reason);
    const why: CloseReason = reason === 'time-wait-expired' ? 'fin' : reason;
    this.closeReason = why;
    this.setTimer('idle', Infinity);
    this.delayedAckAt = this.keepAliveAt = Infinity;
    this.recovery.cancelProbe();
    this.owner.onClosed(this, why);
  }

  get closedBecause(): CloseReason | null {
    return this.closeReason;
  }

  // -------------------------------------------------------------- output

  /** Emits everything due at `now`. */
  dispatch(now: number, sink: SegmentSink): void {
    if (this.state === 'CLOSED') return;
    if (this.rstPending) {
      this.rstPending = false;
      this.emitControl(sink, this.sndNxt, TCP_RST | TCP_ACK);
      this.enterClosed('aborted');
      return;
    }
    if (this.rstReplyPending) {
      this.rstReplyPending = false;
      const owed = this.ackNow; // the reset acknowledges nothing
      this.emitControl(sink, this.rstReplySeq, TCP_RST, now);
      this.ackNow = owed;
    }
    if (this.timerAt <= now) {
      switch (this.timerKind) {
        case 'time-wait':
          this.enterClosed('time-wait-expired');
          return;
        case 'fin-wait-2':
          // Our reader, not the peer, is the one stalling when bytes wait
          // unread (the window is shut on them): the peer is not silent, wait on.
          if (this.recvRing.length > 0) {
            this.setTimer('fin-wait-2', now + this.config.finWait2TimeoutMs);
            break;
          }
          this.enterClosed('timeout');
          return;
        case 'retransmit':
          if (!this.onRetransmitTimeout(now, sink)) return;
          break;
        default:
          break; // persist: below, after any data the window now takes
      }
    }
    const lr = this.recovery;
    if (lr.reorderAt <= now && lr.onReorderTimer(now, this.nxtPos, this.rtt.srtt, this.sendMss)) this.rttSentAt = -1;
    if (lr.probeAt <= now) this.sendLossProbe(now, sink);
    if (this.keepAliveAt <= now && !this.onKeepAlive(now, sink)) return;

    if (this.synPending) {
      this.synPending = false;
      this.emitSyn(now, sink);
      return;
    }
    if (this.st === 'SYN-SENT' || this.st === 'SYN-RECEIVED') {
      if (this.ackNow || this.challengePending) {
        this.ackNow = false;
        this.challengePending = false;
        // Before the handshake completes our acknowledgment is the SYN-ACK
        // itself (RFC 9293 3.10.7.4 answers an unacceptable segment with an
        // ACK; in SYN-RECEIVED that is the SYN-ACK, as Linux does too).
        if (this.state === 'SYN-RECEIVED') this.emitSyn(now, sink);
      }
      return;
    }

    let sent = false;
    if (lr.lostBytes > 0) sent = this.retransmitLost(now, sink);
    sent = this.sendData(now, sink) || sent;
    sent = this.sendFin(now, sink) || sent;
    sent = this.resendFin(now, sink) || sent;
    if (this.timerKind === 'persist' && this.timerAt <= now) {
      this.sendWindowProbe(now, sink);
      sent = true;
    }
    if (this.challengePending) {
      this.challengePending = false;
      if (!sent) this.emitAck(now, sink);
      sent = true;
    }
    if (!sent && (this.ackNow || this.delayedAckAt <= now)) this.emitAck(now, sink);
  }

  /** The earliest time dispatch has work; 0 when it has work now. */
  pollAt(): number {
    if (this.state === 'CLOSED') return Infinity;
    if (this.rstPending || this.rstReplyPending || this.synPending || this.ackNow || this.challengePending) return 0;
    if (this.st !== 'SYN-SENT' && this.st !== 'SYN-RECEIVED') {
      if (this.recovery.lostBytes > 0 && this.recovery.allowance(this.cc.cwnd) > 0) return 0;
      if (this.canSendData() || this.finReady() || (this.finLost && this.recovery.lostBytes === 0)) return 0;
    }
    let t = this.timerAt;
    if (this.delayedAckAt < t) t = this.delayedAckAt;
    if (this.keepAliveAt < t) t = this.keepAliveAt;
    if (this.recovery.probeAt < t) t = this.recovery.probeAt;
    if (this.recovery.reorderAt < t) t = this.recovery.reorderAt;
    return t;
  }

  private canSendData(): boolean {
    const unsent = this.sendRing.length - this.sentBytes;
    if (unsent <= 0) return false;
    const usable = this.usableWindow();
    if (usable <= 0) return false;
    // Sender SWS avoidance (RFC 9293 3.8.6.2.1): a full segment, or all we have.
    return usable >= this.sendMss || unsent <= usable || this.sentBytes === 0;
  }

  private finReady(): boolean {
    return this.finQueued && this.sentBytes === this.sendRing.length && (this.st === 'ESTABLISHED' || this.st === 'CLOSE-WAIT');
  }

  /**
   * New bytes we may send now: what the congestion window (or PRR in fast
   * recovery) allows beyond the pipe, within the peer's window.
   */
  private usableWindow(): number {
    const inWnd = this.sndWnd - this.sentBytes; // the peer's window counts from SND.UNA
    const byCwnd = Math.floor(this.recovery.allowance(this.cc.cwnd)); // CUBIC's cwnd is fractional; segments are whole bytes
    return inWnd < byCwnd ? inWnd : byCwnd;
  }

  private sendData(now: number, sink: SegmentSink): boolean {
    let sent = false;
    for (let guard = 0; guard < 1024; guard++) {
      const unsent = this.sendRing.length - this.sentBytes;
      if (unsent <= 0) break;
      const usable = this.usableWindow();
      if (usable <= 0) break;
      let size = this.segmentBytes;
      if (size > this.sendMss) size -= size % this.sendMss; // TSO: whole segments
      if (size > usable) size = usable;
      if (size > unsent) size = unsent;
      if (size < this.sendMss && size < unsent && this.sentBytes > 0) break; // SWS avoidance
      this.sendNew(now, sink, size, size === unsent);
      sent = true;
    }
    // Zero window with data waiting and nothing in flight: probe later (RFC 9293 3.8.6.1).
    if (this.sndWnd === 0 && this.sendRing.length > this.sentBytes && this.sentBytes === 0 && this.timerKind !== 'persist') {
      this.setTimer('persist', now + Math.min(this.rtt.rto * 2 ** this.persistBackoff, this.config.maxRtoMs));
    }
    return sent;
  }

  /** First transmission of up to `size` bytes at SND.NXT: recorded in MSS pieces on the scoreboard. */
  private sendNew(now: number, sink: SegmentSink, size: number, last: boolean): number {
    const n = this.emitData(now, sink, this.sentBytes, size, last);
    this.sentBytes += n;
    this.recovery.scoreboard.append(n, this.sendMss, now);
    this.recovery.onSent(n);
    this.startRetransmitTimer(now);
    this.armLossProbe(now);
    return n;
  }

  /** Emits data at ring offset `from`; returns the bytes sent (a wrap may shorten it). */
  private emitData(now: number, sink: SegmentSink, from: number, size: number, last: boolean): number {
    const run = this.sendRing.contiguous(from, size);
    const r = this.prepare(now, seqAdd(this.ringSeq, from), TCP_ACK | (last && run === size ? TCP_PSH : 0));
    if (this.rttSentAt < 0 && from >= this.sentBytes) {
      this.rttSeq = seqAdd(this.ringSeq, from);
      this.rttSentAt = now;
    }
    sink.emitSegment(this, r, this.sendRing.backing, this.sendRing.indexOf(from), run);
    this.afterEmit();
    return run;
  }

  /**
   * Resends what the scoreboard marks lost, lowest first (RFC 6675 NextSeg
   * rule 1), within the congestion window or PRR's allowance. Adjacent lost
   * pieces go out together as one TSO super-segment; the kernel cuts it
   * back into the same MSS pieces on the wire.
   */
  private retransmitLost(now: number, sink: SegmentSink): boolean {
    const lr = this.recovery;
    const sb = lr.scoreboard;
    let sent = false;
    let k = sb.nextLost(0);
    let max = this.segmentBytes;
    if (max > this.sendMss) max -= max % this.sendMss;
    for (let guard = 0; k >= 0 && guard < 1024; guard++) {
      const budget = lr.allowance(this.cc.cwnd);
      if (budget <= 0) break;
      const start = sb.startOf(k);
      // A record larger than the segment size (older than a PMTU change) goes out in pieces.
      if (sb.endOf(k) - start > this.sendMss) sb.splitAt(k, start + this.sendMss);
      let end = sb.endOf(k);
      let last = k;
      const limit = budget < max ? budget : max;
      while (last + 1 < sb.count && (sb.flagsOf(last + 1) & SEG_LOST) !== 0 && sb.endOf(last + 1) - start <= limit && sb.endOf(last + 1) - sb.startOf(last + 1) <= this.sendMss) {
        last++;
        end = sb.endOf(last);
      }
      const from = start - this.ringBase;
      const n = this.emitData(now, sink, from, end - start, false);
      // A wrap of the ring may shorten the run: the record it ends in is split there.
      if (n < end - start) {
        last = sb.find(start + n - 1);
        if (sb.endOf(last) > start + n) sb.splitAt(last, start + n);
      }
      const order = sb.takeOrder();
      for (let j = k; j <= last; j++) sb.markRetransmitted(j, now, order);
      lr.onSent(n);
      this.retransmits += last - k + 1; // wire segments, as a capture counts them
      sent = true;
      k = sb.nextLost(last + 1);
    }
    if (sent) {
      this.startRetransmitTimer(now);
      this.armLossProbe(now);
    }
    return sent;
  }

  private sendFin(now: number, sink: SegmentSink): boolean {
    if (!this.finReady()) return false;
    this.emitControl(sink, this.finSeq, TCP_FIN | TCP_ACK, now);
    // The state records that the FIN is out (finSent, sndNxt follow from it).
    this.setState(this.st === 'ESTABLISHED' ? 'FIN-WAIT-1' : 'LAST-ACK', 'fin-sent');
    this.startRetransmitTimer(now);
    return true;
  }

  /** A timeout found the FIN unacknowledged: resend it once no lost data waits (the state stays). */
  private resendFin(now: number, sink: SegmentSink): boolean {
    if (!this.finLost || this.recovery.lostBytes > 0) return false;
    this.finLost = false;
    this.emitControl(sink, this.finSeq, TCP_FIN | TCP_ACK, now);
    this.retransmits++;
    this.startRetransmitTimer(now);
    return true;
  }

  /** RFC 6298 5.4-5.6 (and RFC 9293 3.8.1): retransmit, back off, or give up. */
  private onRetransmitTimeout(now: number, sink: SegmentSink): boolean {
    this.retries++;
    const limit = this.st === 'SYN-RECEIVED' || this.st === 'SYN-SENT' ? this.config.synRetries : this.config.maxRetries;
    if (this.retries > limit) {
      if (this.st !== 'SYN-SENT') this.emitControl(sink, this.sndNxt, TCP_RST | TCP_ACK, now);
      this.enterClosed('timeout');
      return false;
    }
    this.timeouts++;
    this.recovery.cancelProbe();
    this.rtt.backoff();
    this.setTimer('retransmit', now + this.rtt.rto);
    this.rttSentAt = -1; // Karn
    if (this.st === 'SYN-RECEIVED' || this.st === 'SYN-SENT') {
      this.synPending = true;
      return true;
    }
    // Every un-SACKed byte is marked lost and cwnd drops to one segment
    // (loss-recovery.ts). Neither SND.NXT nor the RFC state moves back: the
    // scoreboard, not a rewound pointer, picks what to resend.
    this.recovery.onTimeout(now, this.nxtPos, this.flightBytes);
    // The FIN, when unacknowledged, follows the data (retransmitLost and resendFin count what they resend).
    if (this.finSent) this.finLost = true;
    return true;
  }

  /** RFC 8985 7.2: (re)schedules the tail loss probe (loss-recovery.ts; only with SACK). */
  private armLossProbe(now: number): void {
    this.recovery.armProbe(now, this.rtt.srtt, this.rtt.samples > 0, this.sentBytes, this.sendMss, this.config.delayedAckMs, this.rtoAt);
  }

  /**
   * RFC 8985 7.3: a probe, new data if the peer's window allows, else the
   * last segment not yet SACKed again. Its acknowledgment moves RACK
   * forward, which then finds whatever else of the flight was lost (a lost
   * retransmission in recovery included). New data goes as two segments
   * where there is that much: a receiver ACKs a second full segment at once
   * (RFC 5681 4.2) but may hold the ACK of a lone one for its delayed-ACK
   * timer (40 ms on Linux), which would stall the probe's answer.
   */
  private sendLossProbe(now: number, sink: SegmentSink): void {
    const lr = this.recovery;
    lr.cancelProbe();
    if (this.sentBytes === 0 || !lr.mayProbe) return;
    const sb = lr.scoreboard;
    const unsent = this.sendRing.length - this.sentBytes;
    if (unsent > 0 && !this.finSent && this.sndWnd - this.sentBytes >= Math.min(unsent, this.sendMss)) {
      let size = Math.min(unsent, this.segmentBytes >= 2 * this.sendMss ? 2 * this.sendMss : this.sendMss, this.sndWnd - this.sentBytes);
      if (size > unsent) size = unsent;
      this.sendNew(now, sink, size, size === unsent);
    } else {
      const k = sb.lastUnsacked();
      if (k < 0) return;
      const start = sb.startOf(k);
      if (sb.endOf(k) - start > this.sendMss) sb.splitAt(k, start + this.sendMss);
      const n = this.emitData(now, sink, start - this.ringBase, sb.endOf(k) - start, true);
      if (sb.endOf(k) > start + n) sb.splitAt(k, start + n);
      sb.markRetransmitted(k, now, sb.takeOrder());
      this.retransmits++;
    }
    lr.onProbeSent();
    this.armLossProbe(now);
  }

  private sendWindowProbe(now: number, sink: SegmentSink): void {
    // RFC 9293 3.8.6.1: probe a zero window. Like Linux, with a segment
    // carrying SND.UNA-1, which the peer must answer with its window.
    this.emitControl(sink, seqSub(this.sndUna, 1) >>> 0, TCP_ACK, now);
    this.windowProbes++;
    this.persistBackoff++;
    if (this.sndWnd === 0) this.setTimer('persist', now + Math.min(this.rtt.rto * 2 ** this.persistBackoff, this.config.maxRtoMs));
    else this.stopTimer('persist');
  }

  private armKeepAlive(now: number): void {
    if (this.config.keepAliveIdleMs <= 0) return;
    this.keepAliveSent = 0;
    this.keepAliveAt = now + this.config.keepAliveIdleMs;
  }

  private onKeepAlive(now: number, sink: SegmentSink): boolean {
    if (this.keepAliveSent >= this.config.keepAliveProbes) {
      this.enterClosed('timeout');
      return false;
    }
    this.keepAliveSent++;
    // RFC 9293 3.8.4: SEG.SEQ = SND.NXT-1 with no data elicits an ACK.
    this.emitControl(sink, seqSub(this.sndNxt, 1) >>> 0, TCP_ACK, now);
    this.keepAliveAt = now + this.config.keepAliveIntervalMs;
    return true;
  }

  private emitSyn(now: number, sink: SegmentSink): void {
    const r = this.out;
    r.srcPort = 0;
    r.dstPort = 0;
    r.seq = this.iss;
    r.ack = this.state === 'SYN-SENT' ? 0 : this.rcvNxt;
    r.flags = this.state === 'SYN-SENT' ? TCP_SYN : TCP_SYN | TCP_ACK;
    const wnd = this.currentWindow();
    r.window = wnd > 0xffff ? 0xffff : wnd; // never scaled in a SYN
    r.urgent = 0;
    r.mss = this.announcedMss;
    const active = this.state === 'SYN-SENT';
    r.windowScale = this.config.windowScale && (active || this.rcvShift > 0 || this.sndShift > 0) ? this.rcvShift : -1;
    if (!active && this.sndShift === 0 && this.rcvShift === 0) r.windowScale = -1;
    r.sackPermitted = active ? this.config.sack : this.sackOk;
    r.hasTimestamps = active ? this.config.timestamps : this.tsOk;
    r.tsVal = this.tsClock(now);
    r.tsEcr = active ? 0 : this.tsRecent;
    r.sackCount = 0;
    this.rcvAdvertised = r.window;
    this.rcvEdge = seqAdd(this.rcvNxt, r.window);
    this.startRetransmitTimer(now);
    if (this.retries === 0) this.rttSentAt = now;
    sink.emitSegment(this, r, null, 0, 0);
    this.afterEmit();
  }

  private emitAck(now: number, sink: SegmentSink): void {
    this.emitControl(sink, this.sndNxt, TCP_ACK, now);
  }

  private emitControl(sink: SegmentSink, seq: number, flags: number, now = -1): void {
    const r = this.prepare(now, seq, flags);
    sink.emitSegment(this, r, null, 0, 0);
    this.afterEmit();
  }

  /** Fills the scratch repr with the fields every synchronized segment carries. */
  private prepare(now: number, seq: number, flags: number): TcpRepr {
    const r = this.out;
    r.srcPort = 0;
    r.dstPort = 0;
    r.seq = seq;
    r.ack = this.rcvNxt;
    r.flags = flags;
    const wnd = this.currentWindow();
    let field = wnd >>> this.rcvShift;
    if (field > 0xffff) field = 0xffff;
    // RFC 9293 3.8.6.2.2: never shrink the window we offered (move the right edge back).
    const edge = seqAdd(this.rcvNxt, field << this.rcvShift);
    if (seqLt(edge, this.rcvEdge) && (flags & TCP_RST) === 0) {
      field = Math.min(0xffff, Math.ceil(seqSub(this.rcvEdge, this.rcvNxt) / 2 ** this.rcvShift));
    }
    r.window = field;
    if (field === 0) this.zeroWindowsSent++;
    this.rcvAdvertised = field << this.rcvShift;
    const newEdge = seqAdd(this.rcvNxt, this.rcvAdvertised);
    if (seqGt(newEdge, this.rcvEdge)) this.rcvEdge = newEdge;
    r.urgent = 0;
    r.mss = 0;
    r.windowScale = -1;
    r.sackPermitted = false;
    r.hasTimestamps = this.tsOk;
    if (this.tsOk) {
      r.tsVal = this.tsClock(now < 0 ? this.lastActivity : now);
      r.tsEcr = this.tsRecent;
    }
    r.sackCount = this.sackOk && !this.ooo.isEmpty ? this.ooo.sackBlocks(this.rcvNxt, r.sackLeft, r.sackRight, this.tsOk ? 3 : 4) : 0;
    return r;
  }

  private afterEmit(): void {
    this.segmentsOut++;
    this.ackNow = false;
    this.delayedAckAt = Infinity;
    this.segmentsSinceAck = 0;
  }

  /**
   * The window we can offer: free receive space, but none at all while it
   * is less than min(RCV.BUFF/2, MSS) (receiver SWS avoidance, RFC 9293
   * 3.8.6.2.2). A sliver of a few hundred bytes would be neither used by a
   * sender that avoids SWS nor zero, so a stalled reader never showed a
   * closed window and the peer never probed it.
   */
  private currentWindow(): number {
    const free = this.recvRing.free;
    const half = this.config.recvBufferBytes / 2;
    return free < (half < this.announcedMss ? half : this.announcedMss) ? 0 : free;
  }

  /** The window used by the acceptability test: what we last advertised from RCV.NXT. */
  private rcvWindowForCheck(): number {
    const w = seqSub(this.rcvEdge, this.rcvNxt);
    return w > 0 ? w : 0;
  }

  private tsClock(now: number): number {
    return (Math.floor(now) + this.tsOffset) >>> 0;
  }
}
