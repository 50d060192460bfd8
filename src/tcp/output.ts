/**
 * The sending half of a TCP connection, and its state (lwIP's tcp_out.c
 * beside tcp_in.c): every field, the exclusive timer, setState,
 * `dispatch(now, sink)`, `pollAt()` and the segments it builds. The
 * receiving half, `process(now, segment)` and the application side, is
 * TcpConnection (connection.ts), which extends it. Sans-IO: it never
 * touches a clock, a timer or a socket.
 */
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, newTcpRepr, type TcpRepr } from '../wire/tcp.js';
import { seqAdd, seqGt, seqLt, seqSub } from './seq.js';
import { RttEstimator, sharedRttConfig } from './rtt.js';
import { ByteRing } from './ring-buffer.js';
import { ringPool } from './ring-pool.js';
import { Assembler } from './assembler.js';
import { createCongestionControl, type CongestionControl } from './congestion/index.js';
import { NewRenoRecovery, SEG_LOST, type LossRecovery } from './loss-recovery.js';
import { RackTlpRecovery } from './rack-tlp.js';
import { AnswerLimiter } from './answer-limit.js';
import { DEFAULT_PEER_MSS, receiveWindowShift, timestampOffset } from './options.js';
import { peerMaySendIn } from './state.js';
import {
  stateChannel,
  finSentIn,
  type CloseReason,
  type ConnectionOptions,
  type ConnectionOwner,
  type ExclusiveTimer,
  type SegmentSink,
  type StateChangeReason,
  type TcpState,
  type TimerKind,
} from './state.js';
import type { TcpConfig } from './config.js';
import type { TcpConnection } from './connection.js';
import { newTcpConnectionCounts, type TcpConnectionCounts } from '../stack/counters.js';

/** Records of at most one MSS for a full send buffer, with room for small writes. */
function scoreboardRecords(config: TcpConfig): number {
  return Math.max(64, Math.ceil(config.sendBufferBytes / 256));
}

export function createLossRecovery(sack: boolean, config: TcpConfig, cc: CongestionControl, totals: TcpConnectionCounts): LossRecovery {
  return sack ? new RackTlpRecovery(scoreboardRecords(config), cc, totals) : new NewRenoRecovery(scoreboardRecords(config), cc, totals);
}

/**
 * After a zero window, the ACK that reopens it is a single segment; if it
 * is lost, only the peer's persist timer recovers, and its probes back off
 * exponentially to two minutes (Linux: TCP_RTO_MAX), so a lossy path could
 * stall an upload for minutes after the window reopened. Sluice repeats the
 * update while the peer sends nothing after it: at RTO, 2 RTO, 4 RTO, ...,
 * this many times (cleared by the first data segment, or by closing the
 * window again). RFC 9293 3.8.6.1 leaves the recovery to the sender's
 * probes; repeating a pure ACK is always allowed and costs a few segments.
 */
export const WINDOW_UPDATE_RESENDS = 6;

const SCRATCH_REPR = newTcpRepr();

/** Request/response mode is left for good after this many timer runs without an answer (TcpOutput.interactive). */
export const INTERACTIVE_MISSES = 2;

export abstract class TcpOutput {
  protected st: TcpState;
  readonly config: TcpConfig;
  protected readonly owner: ConnectionOwner;
  readonly rtt: RttEstimator;
  readonly cc: CongestionControl;
  readonly sendRing: ByteRing;
  readonly recvRing: ByteRing;
  /** Out-of-order ranges: made for the first segment that arrives above a hole (issue 10: most connections never need one). */
  private assembler: Assembler | null = null;
  /**
   * Loss detection and recovery of our sent data (RACK-TLP with SACK,
   * NewReno without), PRR, the scoreboard: made on first need (the
   * `recovery` getter), as a rule the first data segment sent (issue 10:
   * a connection that never sends data, an idle flow whose peer speaks
   * first or not at all, does without its ~400 bytes). While it is null the
   * connection behaves as with a fresh one: every step a fresh recovery
   * would answer without a change of state (the ACK's bookkeeping with
   * nothing on the scoreboard, a probe with nothing in flight) is skipped;
   * every other step makes it first. Invariant: sentBytes > 0 implies it
   * exists (sendNew goes through the getter).
   */
  protected lossRecovery: LossRecovery | null = null;
  /** Whether the recovery to make is RACK-TLP (SACK; an active open expects it until the SYN-ACK says otherwise). */
  private recoverySack: boolean;
  /** Made when the first unacceptable segment needs an answer (most connections never see one; issue 10: idle flows). */
  private answerLimiter: AnswerLimiter | null = null;

  // Send sequence space (RFC 9293 3.3.1). One fact per field; SND.NXT, the
  // FIN's sequence number and whether it was sent are derived (getters).
  readonly iss: number;
  sndUna: number;
  /** The peer's window in bytes (scaled). */
  sndWnd = 0;
  protected sndWl1 = 0;
  protected sndWl2 = 0;
  protected maxSndWnd = 0;
  /** Sequence number of the first byte in sendRing. */
  protected ringSeq: number;
  /**
   * Stream position (bytes since the first data byte, never wrapping) of
   * the first byte in sendRing: the scoreboard's coordinates.
   */
  protected ringBase = 0;
  /**
   * Bytes of sendRing sent at least once (from the ring head): SND.NXT is
   * ringSeq + sentBytes (+1 once our FIN is out). It never moves back: a
   * timeout marks data lost on the scoreboard, which picks what to resend
   * (smoltcp rewinds a send pointer; neither touches the RFC state).
   */
  protected sentBytes = 0;
  /** The application will send no more (RFC 9293 3.10.4 CLOSE): our FIN follows the queued data. */
  protected finQueued = false;
  /** A timeout found our FIN unacknowledged: send it again once the lost data is out. */
  protected finLost = false;

  // Receive sequence space
  irs = 0;
  rcvNxt = 0;
  /** Window we last advertised (bytes), and its right edge. */
  protected rcvAdvertised = 0;
  protected rcvEdge = 0;

  // Negotiated options
  protected sndShift = 0;
  protected rcvShift = 0;
  protected sackOk = false;
  protected tsOk = false;
  protected tsRecent = 0;
  protected readonly tsOffset: number;
  /** The peer's MSS for our segments' payload (options subtracted). */
  sendMss: number;
  protected readonly announcedMss: number;
  /** The driver's link cuts super-segments (TSO/GSO): one emitted segment may carry many MSS (`useTso`). */
  protected tso = false;
  protected segmentBytes: number;

  // Timers (absolute ms; Infinity when off). Timers are data (ENGINEERING.md):
  // the exclusive one is a kind and a deadline (see `timer`), the others beside it.
  protected timerKind: TimerKind = 'idle';
  protected timerAt = Infinity;
  protected delayedAckAt = Infinity;
  protected keepAliveAt = Infinity;
  /** When to repeat the window update that reopened a zero window (see WINDOW_UPDATE_RESENDS). */
  protected windowUpdateAt = Infinity;
  private windowUpdateTries = 0;
  /** The last window we advertised was zero. */
  private advertisedZero = false;
  protected persistBackoff = 0;
  protected keepAliveSent = 0;
  protected retries = 0;

  // Pending work for dispatch
  protected ackNow = false;
  /**
   * The ACK owed reports a change of the out-of-order state (a segment
   * placed above a hole, or one filling a hole): RFC 5681 4.2 wants it sent
   * for that segment, not merged with the next one's. The driver sends it
   * before it gives this connection its next segment (the forwarder's
   * input), so a batch of segments read from the TUN at once gets one ACK
   * per out-of-order segment, each SACK option led by the range that segment
   * changed (RFC 2018 4), as a kernel receiver sends them.
   */
  protected sackAckOwed = false;
  protected synPending = false;
  protected rstPending = false;
  protected challengePending = false;
  /** RFC 9293 3.10.7.4 (SYN-RECEIVED, bad ACK): a <SEQ=SEG.ACK><CTL=RST> owed to the sender; the connection stays. */
  protected rstReplyPending = false;
  protected rstReplySeq = 0;
  protected segmentsSinceAck = 0;
  /**
   * Request/response mode (Linux's "pingpong", RFC 1122 4.2.3.2 delayed
   * ACKs): once our data has answered a small pushed segment, the ACK of
   * the next one waits for our answer to carry it (up to
   * interactiveAckMs) instead of going out alone at once: one packet per
   * request fewer on a kept-alive HTTP connection. Left when that timer
   * runs out with no answer, as Linux leaves it; after INTERACTIVE_MISSES
   * such misses the connection stays out of it (its answers come later
   * than the timer, or the client holds part of each request for our ACK:
   * Nagle with the request in two writes), and small pushes are ACKed at
   * once again. A connection starts in it (Linux starts in quick-ACK
   * mode): the first request of a short connection is answered with its
   * ACK on the answer, one packet fewer per connection (conn-setup bench:
   * 5.05 -> 4.05 TUN packets, 254 -> 238 µs per connection).
   */
  protected interactive = true;
  /** Times interactiveAckMs ran out in request/response mode without an answer. */
  protected interactiveMisses = 0;
  /** A small pushed segment came in and no new data went out since: the next data answers it. */
  protected awaitingReply = false;
  /** Segments that advertised a zero window (our reader was slow). */
  zeroWindowsSent = 0;
  /** Window updates repeated because the peer sent nothing after our window reopened (WINDOW_UPDATE_RESENDS). */
  windowUpdatesResent = 0;
  /** Zero-window probes sent (the peer's reader was slow). */
  windowProbes = 0;
  protected rttSeq = 0;
  protected rttSentAt = -1;
  protected lastActivity: number;
  protected closeReason: CloseReason | null = null;

  /** Where each loss count also goes: the stack's running totals (ConnectionOwner.tcpTotals), or this connection's own. */
  protected readonly totals: TcpConnectionCounts;

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

  /**
   * The segment being built: one scratch for every connection of the thread
   * (each segment is filled from scratch and handed to the sink, which
   * copies what it keeps, before the next is built), not two Uint32Arrays
   * of SACK blocks per connection (issue 10: idle flows).
   */
  protected readonly out = SCRATCH_REPR;
  /** This connection as its sink and owner see it (TcpConnection is the only subclass). */
  protected readonly self: TcpConnection;

  protected constructor(config: TcpConfig, now: number, opts: ConnectionOptions, owner: ConnectionOwner, state: TcpState, sack: boolean) {
    this.self = this as unknown as TcpConnection;
    this.config = config;
    this.owner = owner;
    this.totals = owner.tcpTotals ?? newTcpConnectionCounts();
    this.st = state;
    this.rtt = new RttEstimator(sharedRttConfig(config, 4));
    // The send ring yields to the process's TCP buffer budget (limits.tcpBufferMiB); the receive ring's window is promised already.
    this.sendRing = new ByteRing(config.sendBufferBytes, ringPool, true);
    this.recvRing = new ByteRing(config.recvBufferBytes);
    this.iss = opts.iss >>> 0;
    this.sndUna = this.iss;
    this.ringSeq = seqAdd(this.iss, 1);
    this.announcedMss = opts.mss;
    this.sendMss = DEFAULT_PEER_MSS;
    this.segmentBytes = DEFAULT_PEER_MSS;
    this.cc = createCongestionControl(config.congestion, opts.mss, config.initialCwndSegments);
    this.recoverySack = sack;
    this.tsOffset = timestampOffset(opts.iss);
    this.lastActivity = now;
    this.rcvShift = receiveWindowShift(config);
  }

  get state(): TcpState {
    return this.st;
  }

  /** The loss recovery, made now if it does not exist yet (see lossRecovery). */
  get recovery(): LossRecovery {
    return this.lossRecovery ?? this.makeRecovery();
  }

  private makeRecovery(): LossRecovery {
    return (this.lossRecovery = createLossRecovery(this.recoverySack, this.config, this.cc, this.totals));
  }

  /** The handshake settled whether the peer does SACK (an active open learns it from the SYN-ACK). */
  protected setRecoverySack(sack: boolean): void {
    if (sack === this.recoverySack) return;
    this.recoverySack = sack;
    if (this.lossRecovery !== null) this.lossRecovery = createLossRecovery(sack, this.config, this.cc, this.totals);
  }

  protected get ooo(): Assembler {
    return (this.assembler ??= new Assembler(this.config.maxOutOfOrderRanges));
  }

  /** No out-of-order data is held (without making the assembler). */
  protected get oooEmpty(): boolean {
    return this.assembler === null || this.assembler.isEmpty;
  }

  /** Every state change goes through here, and is traced (TCP_STATE_CHANNEL). */
  protected setState(next: TcpState, reason: StateChangeReason): void {
    const from = this.st;
    this.st = next;
    if (stateChannel.hasSubscribers) stateChannel.publish({ connection: this, from, to: next, reason });
  }

  /** SND.NXT (RFC 9293 3.3.1): the sequence number after everything sent, our FIN included. */
  get sndNxt(): number {
    const nxt = seqAdd(this.ringSeq, this.sentBytes);
    return this.finSent ? seqAdd(nxt, 1) : nxt;
  }

  /** Bytes in flight (sent, not yet cumulatively acknowledged). */
  get flightBytes(): number {
    return seqSub(this.sndNxt, this.sndUna);
  }

  /** Our FIN is out (RFC 9293 3.3.2: FIN-WAIT-1 and the states after it, and LAST-ACK); in CLOSED, if it was queued. */
  protected get finSent(): boolean {
    return this.finQueued && (finSentIn(this.st) || this.st === 'CLOSED');
  }

  /** Sequence number of our FIN: after every queued byte (valid once the FIN is queued). */
  protected get finSeq(): number {
    return seqAdd(this.ringSeq, this.sendRing.length);
  }

  /** Stream position of SND.NXT's data (the scoreboard's end). */
  protected get nxtPos(): number {
    return this.ringBase + this.sentBytes;
  }

  /** The running exclusive timer (retransmit, persist, TIME-WAIT or FIN-WAIT-2), as data. */
  get timer(): ExclusiveTimer {
    return this.timerKind === 'idle' ? { kind: 'idle' } : { kind: this.timerKind, at: this.timerAt };
  }

  protected setTimer(kind: TimerKind, at: number): void {
    this.timerKind = kind;
    this.timerAt = at;
  }

  /** Stops the exclusive timer if `kind` is the one running. */
  protected stopTimer(kind: TimerKind): void {
    if (this.timerKind !== kind) return;
    this.timerKind = 'idle';
    this.timerAt = Infinity;
  }

  /** RFC 6298 5.1: start the retransmission timer when it is not running. */
  protected startRetransmitTimer(now: number): void {
    if (this.timerKind !== 'retransmit') this.setTimer('retransmit', now + this.rtt.rto);
  }

  protected get rtoAt(): number {
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

  /** The rate limits on answers to unacceptable segments (RFC 5961 7). */
  protected get limiter(): AnswerLimiter {
    return (this.answerLimiter ??= new AnswerLimiter());
  }

  get challengesSuppressed(): number {
    return this.answerLimiter === null ? 0 : this.answerLimiter.challengesSuppressed;
  }

  get outOfWindowAcksSuppressed(): number {
    return this.answerLimiter === null ? 0 : this.answerLimiter.outOfWindowAcksSuppressed;
  }

  /** Tail loss probes sent. */
  get lossProbes(): number {
    return this.lossRecovery === null ? 0 : this.lossRecovery.lossProbes;
  }

  protected enterTimeWait(now: number, reason: StateChangeReason): void {
    this.setState('TIME-WAIT', reason);
    // The exclusive timer becomes TIME-WAIT's: no retransmission, probe or FIN-WAIT-2 bound is left.
    this.setTimer('time-wait', now + this.config.timeWaitMs);
    this.lossRecovery?.cancelProbe();
    // Everything sent is acknowledged (our FIN too) and nothing more is sent
    // but ACKs: the loss recovery (RACK-TLP, the scoreboard) has nothing
    // left to do, and a TIME-WAIT connection need not hold it.
    this.lossRecovery = null;
    this.keepAliveAt = Infinity;
  }

  protected enterClosed(reason: CloseReason | 'time-wait-expired'): void {
    if (this.st === 'CLOSED') return;
    this.setState('CLOSED', reason);
    const why: CloseReason = reason === 'time-wait-expired' ? 'fin' : reason;
    this.closeReason = why;
    this.setTimer('idle', Infinity);
    this.delayedAckAt = this.keepAliveAt = this.windowUpdateAt = Infinity;
    this.lossRecovery?.cancelProbe();
    // The rings' stores go back to the pool: nothing is sent any more, and
    // after anything but a graceful close nothing is read either. After a
    // FIN the application may still read what is left; the receive store
    // goes back once that is read (ByteRing) or the stream is destroyed.
    this.sendRing.release();
    if (why !== 'fin') this.recvRing.release();
    this.owner.onClosed(this.self, why);
  }

  /** The application will read no more: the receive store goes back to the pool (only once CLOSED). */
  releaseReceiveBuffer(): void {
    if (this.st === 'CLOSED') this.recvRing.release();
  }

  get closedBecause(): CloseReason | null {
    return this.closeReason;
  }

  // -------------------------------------------------------------- output

  /** Emits everything due at `now`. */
  dispatch(now: number, sink: SegmentSink): void {
    if (this.st === 'CLOSED') return;
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
    const lr = this.lossRecovery;
    if (lr !== null) {
      if (lr.reorderAt <= now && lr.onReorderTimer(now, this.nxtPos, this.rtt.srtt, this.sendMss)) this.rttSentAt = -1;
      if (lr.probeAt <= now) this.sendLossProbe(now, sink);
    }
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
        if (this.st === 'SYN-RECEIVED') this.emitSyn(now, sink);
      }
      return;
    }

    let sent = false;
    if (lr !== null && lr.lostBytes > 0) sent = this.retransmitLost(now, sink);
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
    if (this.windowUpdateAt <= now && !peerMaySendIn(this.st)) this.windowUpdateAt = Infinity; // its FIN is in: nothing to open
    if (this.windowUpdateAt <= now) {
      // The peer sent nothing since our window reopened: the update may be lost (WINDOW_UPDATE_RESENDS).
      const tries = ++this.windowUpdateTries;
      this.windowUpdateAt = tries < WINDOW_UPDATE_RESENDS ? now + this.rtt.rto * 2 ** tries : Infinity;
      this.windowUpdatesResent++;
      if (!sent) this.emitAck(now, sink);
      sent = true;
    }
    if (!sent && (this.ackNow || this.delayedAckAt <= now)) {
      // The delayed ACK's timer ran out before an answer carried it: ACK small pushes at once again.
      if (!this.ackNow && this.interactive) {
        this.interactive = false;
        this.interactiveMisses++;
      }
      this.emitAck(now, sink);
    }
  }

  /** The earliest time dispatch has work; 0 when it has work now. */
  pollAt(): number {
    if (this.st === 'CLOSED') return Infinity;
    if (this.rstPending || this.rstReplyPending || this.synPending || this.ackNow || this.challengePending) return 0;
    const lr = this.lossRecovery;
    if (this.st !== 'SYN-SENT' && this.st !== 'SYN-RECEIVED') {
      if (lr !== null && lr.lostBytes > 0 && lr.allowance(this.cc.cwnd) > 0) return 0;
      if (this.canSendData() || this.finReady() || (this.finLost && (lr === null || lr.lostBytes === 0))) return 0;
    }
    let t = this.timerAt;
    if (this.delayedAckAt < t) t = this.delayedAckAt;
    if (this.keepAliveAt < t) t = this.keepAliveAt;
    if (this.windowUpdateAt < t) t = this.windowUpdateAt;
    if (lr !== null) {
      if (lr.probeAt < t) t = lr.probeAt;
      if (lr.reorderAt < t) t = lr.reorderAt;
    }
    return t;
  }

  protected canSendData(): boolean {
    const unsent = this.sendRing.length - this.sentBytes;
    if (unsent <= 0) return false;
    const usable = this.usableWindow();
    if (usable <= 0) return false;
    // Sender SWS avoidance (RFC 9293 3.8.6.2.1): a full segment, or all we have.
    return usable >= this.sendMss || unsent <= usable || this.sentBytes === 0;
  }

  protected finReady(): boolean {
    return this.finQueued && this.sentBytes === this.sendRing.length && (this.st === 'ESTABLISHED' || this.st === 'CLOSE-WAIT');
  }

  /**
   * New bytes we may send now: what the congestion window (or PRR in fast
   * recovery) allows beyond the pipe, within the peer's window.
   */
  protected usableWindow(): number {
    const inWnd = this.sndWnd - this.sentBytes; // the peer's window counts from SND.UNA
    const byCwnd = Math.floor(this.recovery.allowance(this.cc.cwnd)); // CUBIC's cwnd is fractional; segments are whole bytes
    return inWnd < byCwnd ? inWnd : byCwnd;
  }

  protected sendData(now: number, sink: SegmentSink): boolean {
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
      // A window that ends inside a segment while more data waits sends the
      // whole segments only (sender SWS avoidance, RFC 9293 3.8.6.2.1; Linux
      // cuts at tcp_mss_split_point): CUBIC's byte-granular cwnd would
      // otherwise end every flight with a sliver of a few hundred bytes, one
      // more wire packet per flight to lose and a short segment that a Linux
      // receiver holds its ACK for.
      if (size < unsent && size > this.sendMss) size -= size % this.sendMss;
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
  protected sendNew(now: number, sink: SegmentSink, size: number, last: boolean): number {
    const n = this.emitData(now, sink, this.sentBytes, size, last);
    this.sentBytes += n;
    if (this.awaitingReply) {
      this.awaitingReply = false;
      if (this.interactiveMisses < INTERACTIVE_MISSES) this.interactive = true;
    }
    this.recovery.scoreboard.append(n, this.sendMss, now);
    this.recovery.onSent(n);
    this.startRetransmitTimer(now);
    this.armLossProbe(now);
    return n;
  }

  /** Emits data at ring offset `from`; returns the bytes sent (a wrap may shorten it). */
  protected emitData(now: number, sink: SegmentSink, from: number, size: number, last: boolean): number {
    const run = this.sendRing.contiguous(from, size);
    const r = this.prepare(now, seqAdd(this.ringSeq, from), TCP_ACK | (last && run === size ? TCP_PSH : 0));
    if (this.rttSentAt < 0 && from >= this.sentBytes) {
      this.rttSeq = seqAdd(this.ringSeq, from);
      this.rttSentAt = now;
    }
    sink.emitSegment(this.self, r, this.sendRing.backing, this.sendRing.indexOf(from), run);
    this.afterEmit();
    return run;
  }

  /**
   * Resends what the scoreboard marks lost, lowest first (RFC 6675 NextSeg
   * rule 1), within the congestion window or PRR's allowance. Adjacent lost
   * pieces go out together as one TSO super-segment; the kernel cuts it
   * back into the same MSS pieces on the wire.
   */
  protected retransmitLost(now: number, sink: SegmentSink): boolean {
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
      this.totals.retransmits += last - k + 1;
      sent = true;
      k = sb.nextLost(last + 1);
    }
    if (sent) {
      this.startRetransmitTimer(now);
      this.armLossProbe(now);
    }
    return sent;
  }

  protected sendFin(now: number, sink: SegmentSink): boolean {
    if (!this.finReady()) return false;
    this.emitControl(sink, this.finSeq, TCP_FIN | TCP_ACK, now);
    // The state records that the FIN is out (finSent, sndNxt follow from it).
    this.setState(this.st === 'ESTABLISHED' ? 'FIN-WAIT-1' : 'LAST-ACK', 'fin-sent');
    this.startRetransmitTimer(now);
    return true;
  }

  /** A timeout found the FIN unacknowledged: resend it once no lost data waits (the state stays). */
  protected resendFin(now: number, sink: SegmentSink): boolean {
    if (!this.finLost || (this.lossRecovery !== null && this.lossRecovery.lostBytes > 0)) return false;
    this.finLost = false;
    this.emitControl(sink, this.finSeq, TCP_FIN | TCP_ACK, now);
    this.retransmits++;
    this.totals.retransmits++;
    this.startRetransmitTimer(now);
    return true;
  }

  /** RFC 6298 5.4-5.6 (and RFC 9293 3.8.1): retransmit, back off, or give up. */
  protected onRetransmitTimeout(now: number, sink: SegmentSink): boolean {
    this.retries++;
    const limit = this.st === 'SYN-RECEIVED' || this.st === 'SYN-SENT' ? this.config.synRetries : this.config.maxRetries;
    if (this.retries > limit) {
      if (this.st !== 'SYN-SENT') this.emitControl(sink, this.sndNxt, TCP_RST | TCP_ACK, now);
      this.enterClosed('timeout');
      return false;
    }
    this.timeouts++;
    this.totals.timeouts++;
    this.lossRecovery?.cancelProbe();
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
  protected armLossProbe(now: number): void {
    // Without a recovery nothing was ever sent: a fresh one would arm nothing.
    this.lossRecovery?.armProbe(now, this.rtt.srtt, this.rtt.samples > 0, this.sentBytes, this.sendMss, this.config.delayedAckMs, this.rtoAt);
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
  protected sendLossProbe(now: number, sink: SegmentSink): void {
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
      this.totals.retransmits++;
    }
    lr.onProbeSent();
    this.armLossProbe(now);
  }

  protected sendWindowProbe(now: number, sink: SegmentSink): void {
    // RFC 9293 3.8.6.1: probe a zero window. Like Linux, with a segment
    // carrying SND.UNA-1, which the peer must answer with its window.
    this.emitControl(sink, seqSub(this.sndUna, 1) >>> 0, TCP_ACK, now);
    this.windowProbes++;
    this.totals.windowProbes++;
    this.persistBackoff++;
    if (this.sndWnd === 0) this.setTimer('persist', now + Math.min(this.rtt.rto * 2 ** this.persistBackoff, this.config.maxRtoMs));
    else this.stopTimer('persist');
  }

  protected armKeepAlive(now: number): void {
    if (this.config.keepAliveIdleMs <= 0) return;
    this.keepAliveSent = 0;
    this.keepAliveAt = now + this.config.keepAliveIdleMs;
  }

  protected onKeepAlive(now: number, sink: SegmentSink): boolean {
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

  protected emitSyn(now: number, sink: SegmentSink): void {
    const r = this.out;
    r.srcPort = 0;
    r.dstPort = 0;
    r.seq = this.iss;
    r.ack = this.st === 'SYN-SENT' ? 0 : this.rcvNxt;
    r.flags = this.st === 'SYN-SENT' ? TCP_SYN : TCP_SYN | TCP_ACK;
    const wnd = this.currentWindow();
    r.window = wnd > 0xffff ? 0xffff : wnd; // never scaled in a SYN
    r.urgent = 0;
    r.mss = this.announcedMss;
    const active = this.st === 'SYN-SENT';
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
    sink.emitSegment(this.self, r, null, 0, 0);
    this.afterEmit();
  }

  protected emitAck(now: number, sink: SegmentSink): void {
    this.emitControl(sink, this.sndNxt, TCP_ACK, now);
  }

  protected emitControl(sink: SegmentSink, seq: number, flags: number, now = -1): void {
    const r = this.prepare(now, seq, flags);
    sink.emitSegment(this.self, r, null, 0, 0);
    this.afterEmit();
  }

  /** Fills the scratch repr with the fields every synchronized segment carries. */
  protected prepare(now: number, seq: number, flags: number): TcpRepr {
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
    if (field === 0) {
      this.zeroWindowsSent++;
      this.totals.zeroWindowsSent++;
      this.advertisedZero = true;
      this.windowUpdateAt = Infinity;
    } else if (this.advertisedZero && (flags & TCP_RST) === 0) {
      // This segment reopens a zero window: if the peer still sends nothing, say it again (WINDOW_UPDATE_RESENDS).
      this.advertisedZero = false;
      this.windowUpdateTries = 0;
      if (peerMaySendIn(this.st)) this.windowUpdateAt = (now < 0 ? this.lastActivity : now) + this.rtt.rto;
    }
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
    r.sackCount = this.sackOk && !this.oooEmpty ? this.ooo.sackBlocks(this.rcvNxt, r.sackLeft, r.sackRight, this.tsOk ? 3 : 4) : 0;
    return r;
  }

  protected afterEmit(): void {
    this.segmentsOut++;
    this.ackNow = false;
    this.sackAckOwed = false;
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
  protected currentWindow(): number {
    const free = this.recvRing.free;
    const half = this.config.recvBufferBytes / 2;
    return free < (half < this.announcedMss ? half : this.announcedMss) ? 0 : free;
  }

  /** The window used by the acceptability test: what we last advertised from RCV.NXT. */
  protected rcvWindowForCheck(): number {
    const w = seqSub(this.rcvEdge, this.rcvNxt);
    return w > 0 ? w : 0;
  }

  protected tsClock(now: number): number {
    return (Math.floor(now) + this.tsOffset) >>> 0;
  }
}
