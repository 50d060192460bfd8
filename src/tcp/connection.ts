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
import { RackTlpRecovery, DUP_THRESH, SEG_LOST } from './loss-recovery.js';
import type { TcpConfig } from './config.js';

export type TcpState =
  | 'SYN-SENT'
  | 'SYN-RECEIVED'
  | 'ESTABLISHED'
  | 'FIN-WAIT-1'
  | 'FIN-WAIT-2'
  | 'CLOSING'
  | 'TIME-WAIT'
  | 'CLOSE-WAIT'
  | 'LAST-ACK'
  | 'CLOSED';

export type CloseReason = 'fin' | 'reset' | 'timeout' | 'aborted';

/** Receives the connection's segments; `repr` is scratch owned by the connection. */
export interface SegmentSink {
  emitSegment(conn: TcpConnection, repr: TcpRepr, data: Uint8Array | null, dataOff: number, dataLen: number): void;
}

/** Notifications, called synchronously from process/dispatch: set flags only. */
export interface ConnectionOwner {
  onEstablished(conn: TcpConnection): void;
  onReadable(conn: TcpConnection): void;
  onWritable(conn: TcpConnection): void;
  onPeerFin(conn: TcpConnection): void;
  onClosed(conn: TcpConnection, reason: CloseReason): void;
}

export interface ConnectionOptions {
  iss: number;
  /** MSS this side announces (the link MTU minus IP and TCP headers). */
  mss: number;
}

/** Timestamps option bytes (10, padded to 12), taken from every segment's MSS. */
const TS_OPTION_BYTES = 12;
/** RFC 9293 3.7.1: the MSS to assume when the peer sent none. */
const DEFAULT_PEER_MSS = 536;
/**
 * RFC 5961 7: challenge ACKs (and, before the handshake completes, the
 * SYN-ACKs and resets that answer unacceptable segments) are rate limited,
 * so a blind flood onto one 4-tuple draws at most this many per second.
 */
export const CHALLENGE_ACKS_PER_SECOND = 10;

/**
 * An unacceptable segment is answered with an ACK (RFC 9293 3.10.7.4); for
 * one without data (a pure ACK: keepalives, zero-window probes, or a blind
 * flood onto the tuple) at most one such answer per this many ms, as
 * Linux's tcp_invalid_ratelimit does. Segments with data are always
 * answered: a retransmission of data we already have needs its ACK.
 */
export const OUT_OF_WINDOW_ACK_INTERVAL_MS = 500;

/** The timestamp clock of a connection with this ISS (the SYN-cookie path needs it before the connection exists). */
export function tcpTimestampClock(now: number, iss: number): number {
  return (Math.floor(now) + timestampOffset(iss)) >>> 0;
}

/** RFC 7323 7.1: a per-connection offset (from the ISS) hides the clock from peers. */
function timestampOffset(iss: number): number {
  return (iss * 2654435761) >>> 0;
}

/** RFC 7323 2.3: the largest shift that keeps the receive buffer within 16 bits (0 without window scaling). */
export function receiveWindowShift(config: TcpConfig): number {
  let shift = 0;
  while (shift < 14 && config.recvBufferBytes >>> shift > 0xffff) shift++;
  return config.windowScale ? shift : 0;
}

export class TcpConnection {
  state: TcpState;
  readonly config: TcpConfig;
  private readonly owner: ConnectionOwner;
  readonly rtt: RttEstimator;
  readonly cc: CongestionControl;
  readonly sendRing: ByteRing;
  readonly recvRing: ByteRing;
  private readonly ooo: Assembler;
  /** Loss detection and recovery of our sent data: RACK-TLP, PRR, the byte scoreboard. */
  readonly recovery: RackTlpRecovery;

  // Send sequence space (RFC 9293 3.3.1)
  readonly iss: number;
  sndUna: number;
  sndNxt: number;
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
   * Bytes of sendRing sent at least once (from the ring head). SND.NXT
   * never moves back: retransmissions are chosen by the scoreboard.
   */
  private sentBytes = 0;
  private finQueued = false;
  private finSent = false;
  private finSeq = 0;
  /** A timeout found our FIN unacknowledged: send it again once the lost data is out. */
  private finRexmit = false;

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
  /** Largest payload of one emitted segment; the driver raises it for TSO. */
  maxSegmentBytes: number;

  // Timers (absolute ms; Infinity when off). Timers are data (ENGINEERING.md).
  private rtoAt = Infinity;
  private delayedAckAt = Infinity;
  private persistAt = Infinity;
  private timeWaitAt = Infinity;
  private finWait2At = Infinity;
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
  /** RFC 5961 7 rate limit: the current one-second window and what it has spent. */
  private challengeWindowAt = -Infinity;
  private challengeBudgetUsed = 0;
  private outOfWindowAckAt = -Infinity;
  private segmentsSinceAck = 0;
  /** Duplicate ACKs in a row (RFC 5681 2); drives NewReno recovery when the peer has no SACK. */
  private dupAcks = 0;
  /**
   * Tail loss probe (RFC 8985 7): when the last segments of a flight are
   * lost no duplicate ACKs come back, and only the RTO (200 ms or more)
   * would repair them. After about two round trips without an ACK we send
   * one probe segment instead; its SACK lets RACK find the losses.
   */
  private tlpAt = Infinity;
  /**
   * Probes sent since SND.UNA last advanced. RFC 8985 7.3 allows one; we
   * allow a second because on a path that loses ACKs as often as data the
   * first probe's answer is lost often enough that the 200 ms RTO would
   * dominate. The RTO takes over after the second.
   */
  private probesSinceAck = 0;
  /** Segments that advertised a zero window (our reader was slow). */
  zeroWindowsSent = 0;
  /** Zero-window probes sent (the peer's reader was slow). */
  windowProbes = 0;
  /** Tail loss probes sent. */
  lossProbes = 0;
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
  /** Challenge ACKs (and SYN-RECEIVED answers) not sent because of the RFC 5961 7 rate limit. */
  challengesSuppressed = 0;
  /** ACKs not sent to unacceptable pure ACKs (OUT_OF_WINDOW_ACK_INTERVAL_MS). */
  outOfWindowAcksSuppressed = 0;

  private readonly out = newTcpRepr();

  private constructor(config: TcpConfig, now: number, opts: ConnectionOptions, owner: ConnectionOwner, state: TcpState) {
    this.config = config;
    this.owner = owner;
    this.state = state;
    this.rtt = new RttEstimator({ initialRtoMs: config.initialRtoMs, minRtoMs: config.minRtoMs, maxRtoMs: config.maxRtoMs, granularityMs: 4 });
    this.sendRing = new ByteRing(config.sendBufferBytes);
    this.recvRing = new ByteRing(config.recvBufferBytes);
    this.ooo = new Assembler(config.maxOutOfOrderRanges);
    // Records of at most one MSS for a full send buffer, with room for small writes.
    this.recovery = new RackTlpRecovery(Math.max(64, Math.ceil(config.sendBufferBytes / 256)));
    this.iss = opts.iss >>> 0;
    this.sndUna = this.iss;
    this.sndNxt = seqAdd(this.iss, 1);
    this.ringSeq = seqAdd(this.iss, 1);
    this.announcedMss = opts.mss;
    this.sendMss = DEFAULT_PEER_MSS;
    this.maxSegmentBytes = DEFAULT_PEER_MSS;
    this.cc = createCongestionControl(config.congestion, opts.mss, config.initialCwndSegments);
    this.tsOffset = timestampOffset(opts.iss);
    this.lastActivity = now;
    this.rcvShift = receiveWindowShift(config);
  }

  /** A connection for a received SYN (passive open, RFC 9293 3.10.7.2). */
  static accept(config: TcpConfig, now: number, syn: TcpRepr, opts: ConnectionOptions, owner: ConnectionOwner): TcpConnection {
    const c = new TcpConnection(config, now, opts, owner, 'SYN-RECEIVED');
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
    const c = new TcpConnection(config, now, opts, owner, 'SYN-SENT');
    c.synPending = true;
    return c;
  }

  private negotiate(syn: TcpRepr): void {
    const cfg = this.config;
    this.sackOk = cfg.sack && syn.sackPermitted;
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
    if (this.maxSegmentBytes < this.sendMss || this.maxSegmentBytes === DEFAULT_PEER_MSS) this.maxSegmentBytes = this.sendMss;
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
      if (grown >= Math.min(this.config.recvBufferBytes / 2, this.announcedMss) && this.peerMaySend()) this.ackNow = true;
    }
    return n;
  }

  /** Whether the peer may still send data: its FIN has not arrived (RFC 9293 3.3.2). */
  private peerMaySend(): boolean {
    return this.state === 'ESTABLISHED' || this.state === 'FIN-WAIT-1' || this.state === 'FIN-WAIT-2' || this.state === 'SYN-RECEIVED';
  }

  /** No more data from the application: FIN after the queued bytes. */
  shutdownWrite(): void {
    if (this.finQueued) return;
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
    if (this.maxSegmentBytes < DEFAULT_PEER_MSS * 4) this.maxSegmentBytes = mss; // not TSO: one segment per write
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
    switch (this.state) {
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
      this.rtoAt = Infinity;
      this.retries = 0;
      this.state = 'ESTABLISHED';
      this.ackNow = true;
      this.owner.onEstablished(this);
      this.owner.onWritable(this);
    } else {
      // Simultaneous open: RFC 9293 3.10.7.3 fourth check.
      this.state = 'SYN-RECEIVED';
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
        else if (segLen > 0 || this.spendOutOfWindowAck(now)) this.ackNow = true;
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
    if (this.state === 'FIN-WAIT-2') this.finWait2At = now + this.config.finWait2TimeoutMs;

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
        this.state = 'ESTABLISHED';
        this.sndWnd = seg.window << this.sndShift;
        this.sndWl1 = seg.seq;
        this.sndWl2 = seg.ack;
        this.maxSndWnd = this.sndWnd;
        if (this.retries > 0) this.rtt.resetAfterHandshakeRetransmit();
        this.takeRttSample(now, seg, this.retries === 0);
        this.sndUna = seg.ack;
        this.rtoAt = Infinity;
        this.retries = 0;
        this.owner.onEstablished(this);
        this.owner.onWritable(this);
      } else {
        // RFC 9293 3.10.7.4: <SEQ=SEG.ACK><CTL=RST> for an unacceptable ACK,
        // sent to whoever sent it; the half-open connection stays as it is
        // (aborting it here let blind ACKs kill handshakes), and the reset
        // is rate limited like a challenge ACK (RFC 5961 7).
        if (this.spendChallenge(now)) {
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
    if ((f & TCP_FIN) !== 0 && seqAdd(seg.seq, len) === this.rcvNxt && this.state !== 'CLOSED') {
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
      this.dupAcks++;
      // RFC 6675 / RFC 6937: without SACK each duplicate stands for one segment delivered.
      if (!this.sackOk) lr.delivered += this.sendMss;
    }
    this.detectAndRecover(now, advanced);
    // Window update (RFC 9293 3.10.7.4: SND.WL1 < SEG.SEQ or (= and SND.WL2 <= SEG.ACK)).
    if (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLeq(this.sndWl2, ack))) {
      const opened = this.sndWnd === 0 && window > 0;
      this.sndWnd = window;
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
      if (window > this.maxSndWnd) this.maxSndWnd = window;
      if (opened) {
        this.persistAt = Infinity;
        this.persistBackoff = 0;
      }
    }
    // Our FIN acknowledged?
    if (this.finSent && ack === seqAdd(this.finSeq, 1)) {
      this.finRexmit = false;
      switch (this.state) {
        case 'FIN-WAIT-1':
          this.state = 'FIN-WAIT-2';
          this.finWait2At = now + this.config.finWait2TimeoutMs;
          break;
        case 'CLOSING':
          this.enterTimeWait(now);
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
    this.dupAcks = 0;
    this.probesSinceAck = 0;
    // In fast recovery PRR paces sending; after a timeout slow start regrows cwnd (RFC 5681 3.1).
    if (this.recovery.state !== 'fast-recovery' && acked > 0) this.cc.onAck(now, acked, this.rtt.srtt);
    // RFC 6298 5.2/5.3: stop the timer when all is acknowledged, else restart it.
    this.rtoAt = this.sndUna === this.sndNxt ? Infinity : now + this.rtt.rto;
    this.armLossProbe(now);
  }

  /**
   * After an ACK's cumulative and selective parts were recorded: RACK loss
   * detection (or NewReno's dupack rule without SACK), entering or leaving
   * recovery, and PRR's sending allowance for this ACK.
   */
  private detectAndRecover(now: number, advanced: boolean): void {
    const lr = this.recovery;
    const sb = lr.scoreboard;
    if (lr.state !== 'open' && this.ringBase >= lr.recoveryPoint) {
      // RFC 6675 5 / RFC 6582 3.2 step 3: everything outstanding at entry is acknowledged.
      lr.exitRecovery();
      this.cc.onRecoveryExit(now);
    }
    let lost = false;
    if (this.sackOk) {
      lost = lr.finishAck(now, this.rtt.srtt, this.sendMss);
    } else if (lr.state === 'fast-recovery' && advanced) {
      // RFC 6582 3.2 step 5: a partial ACK; the next segment is lost too.
      lost = lr.markHeadLost();
    } else if (lr.state === 'open' && this.dupAcks > 0) {
      // RFC 5827 early retransmit: with fewer than four segments outstanding
      // and nothing new to send, three duplicate ACKs can never arrive.
      let threshold = DUP_THRESH;
      const outstanding = Math.ceil(sb.outstanding / this.sendMss);
      if (outstanding < 4 && !this.canSendData()) threshold = outstanding > 1 ? outstanding - 1 : 1;
      if (this.dupAcks >= threshold) lost = lr.markHeadLost();
    }
    if (lost && lr.state === 'open') {
      // RFC 6675 5 / RFC 5681 3.2: one window reduction per loss episode.
      this.cc.onLoss(now, sb.outstanding);
      this.rttSentAt = -1; // Karn: the timed segment may be retransmitted
      lr.enterFastRecovery(this.ringBase + this.sentBytes, this.cc.ssthresh, this.sendMss);
    } else {
      lr.prrUpdate(this.sendMss);
    }
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
    switch (this.state) {
      case 'SYN-RECEIVED':
      case 'ESTABLISHED':
        this.state = 'CLOSE-WAIT';
        break;
      case 'FIN-WAIT-1':
        // Our FIN not yet acknowledged: simultaneous close (RFC 9293 3.6).
        this.state = 'CLOSING';
        break;
      case 'FIN-WAIT-2':
        this.enterTimeWait(now);
        break;
      case 'TIME-WAIT':
        this.timeWaitAt = now + this.config.timeWaitMs; // restart (RFC 9293 3.10.7.4)
        break;
      default:
        break;
    }
  }

  private challenge(now: number): void {
    // RFC 5961 3.2/4.2/5.2: a challenge ACK; the genuine peer answers with
    // an exact RST or a fresh ACK, a blind attacker cannot.
    if (!this.spendChallenge(now)) return;
    this.challengePending = true;
    this.challengeAcks++;
  }

  /** At most one ACK per OUT_OF_WINDOW_ACK_INTERVAL_MS to unacceptable segments without data. */
  private spendOutOfWindowAck(now: number): boolean {
    if (now - this.outOfWindowAckAt < OUT_OF_WINDOW_ACK_INTERVAL_MS) {
      this.outOfWindowAcksSuppressed++;
      return false;
    }
    this.outOfWindowAckAt = now;
    return true;
  }

  /** RFC 5961 7: at most CHALLENGE_ACKS_PER_SECOND answers to suspect segments per second. */
  private spendChallenge(now: number): boolean {
    if (now - this.challengeWindowAt >= 1000) {
      this.challengeWindowAt = now;
      this.challengeBudgetUsed = 0;
    }
    if (this.challengeBudgetUsed >= CHALLENGE_ACKS_PER_SECOND) {
      this.challengesSuppressed++;
      return false;
    }
    this.challengeBudgetUsed++;
    return true;
  }

  private enterTimeWait(now: number): void {
    this.state = 'TIME-WAIT';
    this.timeWaitAt = now + this.config.timeWaitMs;
    this.rtoAt = Infinity;
    this.tlpAt = Infinity;
    this.persistAt = Infinity;
    this.finWait2At = Infinity;
    this.keepAliveAt = Infinity;
  }

  private enterClosed(reason: CloseReason): void {
    if (this.state === 'CLOSED') return;
    this.state = 'CLOSED';
    this.closeReason = reason;
    this.rtoAt = this.delayedAckAt = this.persistAt = this.timeWaitAt = this.finWait2At = this.keepAliveAt = this.tlpAt = Infinity;
    this.owner.onClosed(this, reason);
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
    if (this.timeWaitAt <= now) {
      this.enterClosed('fin');
      return;
    }
    if (this.finWait2At <= now && this.state === 'FIN-WAIT-2' && this.recvRing.length > 0) {
      // Our reader, not the peer, is the one stalling (the window is shut
      // on bytes it has not taken): the peer is not silent, wait on.
      this.finWait2At = now + this.config.finWait2TimeoutMs;
    }
    if (this.finWait2At <= now && this.state === 'FIN-WAIT-2') {
      this.enterClosed('timeout');
      return;
    }
    if (this.rtoAt <= now && !this.onRetransmitTimeout(now, sink)) return;
    if (this.recovery.reorderAt <= now) this.onReorderTimeout(now);
    if (this.tlpAt <= now) this.sendLossProbe(now, sink);
    if (this.keepAliveAt <= now && !this.onKeepAlive(now, sink)) return;

    if (this.synPending) {
      this.synPending = false;
      this.emitSyn(now, sink);
      return;
    }
    if (this.state === 'SYN-SENT' || this.state === 'SYN-RECEIVED') {
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
    if (this.recovery.lostBytes > 0) sent = this.retransmitLost(now, sink);
    sent = this.sendData(now, sink) || sent;
    sent = this.sendFin(now, sink) || sent;
    sent = this.resendFin(now, sink) || sent;
    if (this.persistAt <= now) {
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
    if (this.state !== 'SYN-SENT' && this.state !== 'SYN-RECEIVED') {
      if (this.recovery.lostBytes > 0 && this.recovery.allowance(this.cc.cwnd) > 0) return 0;
      if (this.canSendData() || this.finReady() || (this.finRexmit && this.recovery.lostBytes === 0)) return 0;
    }
    let t = this.rtoAt;
    if (this.delayedAckAt < t) t = this.delayedAckAt;
    if (this.persistAt < t) t = this.persistAt;
    if (this.timeWaitAt < t) t = this.timeWaitAt;
    if (this.finWait2At < t) t = this.finWait2At;
    if (this.keepAliveAt < t) t = this.keepAliveAt;
    if (this.tlpAt < t) t = this.tlpAt;
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
    return this.finQueued && !this.finSent && this.sentBytes === this.sendRing.length && (this.state === 'ESTABLISHED' || this.state === 'CLOSE-WAIT');
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
      let size = this.maxSegmentBytes;
      if (size > this.sendMss) size -= size % this.sendMss; // TSO: whole segments
      if (size > usable) size = usable;
      if (size > unsent) size = unsent;
      if (size < this.sendMss && size < unsent && this.sentBytes > 0) break; // SWS avoidance
      this.sendNew(now, sink, size, size === unsent);
      sent = true;
    }
    // Zero window with data waiting and nothing in flight: probe later (RFC 9293 3.8.6.1).
    if (this.sndWnd === 0 && this.sendRing.length > this.sentBytes && this.sentBytes === 0 && this.persistAt === Infinity) {
      this.persistAt = now + Math.min(this.rtt.rto * 2 ** this.persistBackoff, this.config.maxRtoMs);
    }
    return sent;
  }

  /** First transmission of up to `size` bytes at SND.NXT: recorded in MSS pieces on the scoreboard. */
  private sendNew(now: number, sink: SegmentSink, size: number, last: boolean): number {
    const n = this.emitData(now, sink, this.sentBytes, size, last);
    this.sentBytes += n;
    this.sndNxt = seqAdd(this.ringSeq, this.sentBytes);
    this.recovery.scoreboard.append(n, this.sendMss, now);
    this.recovery.onSent(n);
    if (this.rtoAt === Infinity) this.rtoAt = now + this.rtt.rto;
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
    let max = this.maxSegmentBytes;
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
      if (this.rtoAt === Infinity) this.rtoAt = now + this.rtt.rto;
      this.armLossProbe(now);
    }
    return sent;
  }

  /** RFC 8985 6.3: the reordering window of a delivered-around segment has passed. */
  private onReorderTimeout(now: number): void {
    const lr = this.recovery;
    if (!lr.onReorderTimer(now, this.rtt.srtt, this.sendMss)) return;
    if (lr.state === 'open') {
      this.cc.onLoss(now, lr.scoreboard.outstanding);
      this.rttSentAt = -1;
      lr.delivered = 0;
      lr.enterFastRecovery(this.ringBase + this.sentBytes, this.cc.ssthresh, this.sendMss);
    }
  }

  private sendFin(now: number, sink: SegmentSink): boolean {
    if (!this.finReady()) return false;
    this.finSent = true;
    this.finSeq = seqAdd(this.ringSeq, this.sentBytes);
    this.emitControl(sink, this.finSeq, TCP_FIN | TCP_ACK, now);
    this.sndNxt = seqAdd(this.finSeq, 1);
    this.state = this.state === 'ESTABLISHED' ? 'FIN-WAIT-1' : 'LAST-ACK';
    if (this.rtoAt === Infinity) this.rtoAt = now + this.rtt.rto;
    return true;
  }

  /** A timeout found the FIN unacknowledged: resend it once no lost data waits (the state stays). */
  private resendFin(now: number, sink: SegmentSink): boolean {
    if (!this.finRexmit || this.recovery.lostBytes > 0) return false;
    this.finRexmit = false;
    this.emitControl(sink, this.finSeq, TCP_FIN | TCP_ACK, now);
    this.retransmits++;
    if (this.rtoAt === Infinity) this.rtoAt = now + this.rtt.rto;
    return true;
  }

  /** RFC 6298 5.4-5.6 (and RFC 9293 3.8.1): retransmit, back off, or give up. */
  private onRetransmitTimeout(now: number, sink: SegmentSink): boolean {
    this.retries++;
    const limit = this.state === 'SYN-RECEIVED' || this.state === 'SYN-SENT' ? this.config.synRetries : this.config.maxRetries;
    if (this.retries > limit) {
      if (this.state !== 'SYN-SENT') this.emitControl(sink, this.sndNxt, TCP_RST | TCP_ACK, now);
      this.enterClosed('timeout');
      return false;
    }
    this.timeouts++;
    this.tlpAt = Infinity;
    this.rtt.backoff();
    this.rtoAt = now + this.rtt.rto;
    this.rttSentAt = -1; // Karn
    if (this.state === 'SYN-RECEIVED' || this.state === 'SYN-SENT') {
      this.synPending = true;
      return true;
    }
    // RFC 5681 3.1: cwnd to one segment, slow start. RFC 8985 6.3: every
    // un-SACKed segment is lost; the SACK scoreboard is kept (as Linux
    // does; RFC 6675 5.1 allows it), so SACKed data is not sent again.
    // SND.NXT stays: the scoreboard, not a rewound pointer, picks what to resend.
    this.cc.onTimeout(now, this.flightBytes);
    this.dupAcks = 0;
    this.probesSinceAck = 0;
    this.recovery.enterLoss(this.ringBase + this.sentBytes);
    // The FIN, when unacknowledged, follows the data (retransmitLost and resendFin count what they resend).
    if (this.finSent) this.finRexmit = true;
    return true;
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
  private armLossProbe(now: number): void {
    // No RTT sample yet: only the RTO (a zero SRTT is a real sample: sub-ms paths and ms timestamps).
    // RFC 8985 7.2: (re)scheduled after every transmission and every ACK
    // that advances SND.UNA, so a burst's last segment decides the PTO.
    this.tlpAt = Infinity;
    // RFC 8985 7.2: only with SACK, which is how the probe's answer reveals the losses.
    // Not after a timeout (the 'loss' state): the RTO and its backoff pace an unresponsive peer.
    if (!this.sackOk || this.sentBytes === 0 || this.rtt.samples === 0 || this.probesSinceAck >= 2 || this.recovery.state === 'loss') return;
    let pto = 2 * this.rtt.srtt;
    if (pto < 1) pto = 1;
    // RFC 8985 7.2: FlightSize (SND.NXT - SND.UNA), not the pipe: with SACKed
    // data above a hole the receiver ACKs a segment filling it at once
    // (RFC 5681 4.2), so one segment left in the pipe of a larger flight
    // waits for no delayed ACK.
    if (this.sentBytes <= this.sendMss) pto += this.config.delayedAckMs;
    if (now + pto < this.rtoAt) this.tlpAt = now + pto;
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
    this.tlpAt = Infinity;
    if (this.sentBytes === 0 || this.probesSinceAck >= 2) return;
    const sb = this.recovery.scoreboard;
    const unsent = this.sendRing.length - this.sentBytes;
    if (unsent > 0 && !this.finSent && this.sndWnd - this.sentBytes >= Math.min(unsent, this.sendMss)) {
      let size = Math.min(unsent, this.maxSegmentBytes >= 2 * this.sendMss ? 2 * this.sendMss : this.sendMss, this.sndWnd - this.sentBytes);
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
    this.lossProbes++;
    this.probesSinceAck++;
    this.armLossProbe(now);
  }

  private sendWindowProbe(now: number, sink: SegmentSink): void {
    // RFC 9293 3.8.6.1: probe a zero window. Like Linux, with a segment
    // carrying SND.UNA-1, which the peer must answer with its window.
    this.emitControl(sink, seqSub(this.sndUna, 1) >>> 0, TCP_ACK, now);
    this.windowProbes++;
    this.persistBackoff++;
    this.persistAt = this.sndWnd === 0 ? now + Math.min(this.rtt.rto * 2 ** this.persistBackoff, this.config.maxRtoMs) : Infinity;
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
    if (this.rtoAt === Infinity) this.rtoAt = now + this.rtt.rto;
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
