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
import { inWindow, seqAdd, seqGeq, seqGt, seqLeq, seqLt, seqSub } from './seq.js';
import { RttEstimator } from './rtt.js';
import { ByteRing } from './ring-buffer.js';
import { Assembler } from './assembler.js';
import { createCongestionControl, type CongestionControl } from './congestion/index.js';
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
const DUPACK_THRESHOLD = 3; // RFC 5681 3.2, RFC 6675 DupThresh
/** RFC 9293 3.7.1: the MSS to assume when the peer sent none. */
const DEFAULT_PEER_MSS = 536;
/**
 * RFC 5961 7: challenge ACKs (and, before the handshake completes, the
 * SYN-ACKs and resets that answer unacceptable segments) are rate limited,
 * so a blind flood onto one 4-tuple draws at most this many per second.
 */
export const CHALLENGE_ACKS_PER_SECOND = 10;

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
  /** SACKed ranges of our sent data, relative to the first unacknowledged data byte. */
  private readonly sacked: Assembler;

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
  /** Bytes of sendRing already sent at least once (from the ring head). */
  private sentBytes = 0;
  /** Highest data offset ever sent (for retransmission accounting). */
  private highSent = 0;
  private finQueued = false;
  private finSent = false;
  private finSeq = 0;
  /**
   * SND.MAX (the BSD name): the highest sequence number ever sent. A
   * retransmission timeout rewinds SND.NXT to SND.UNA (go-back-N), so ACKs
   * up to SND.MAX stay acceptable (RFC 9293 3.10.7.4 judges against SND.NXT
   * because it never rewinds it).
   */
  private sndMax = 0;
  /** The closing state a timeout rewound from, restored when the FIN is acknowledged or resent. */
  private rewoundFrom: TcpState | null = null;

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
  private segmentsSinceAck = 0;
  private dupAcks = 0;
  private inRecovery = false;
  private recoveryPoint = 0;
  /**
   * highSent when the current round of hole retransmissions began (-1 when
   * none). A SACK for data beyond it, while holes we retransmitted before
   * it are still missing, proves those retransmissions were lost too: send
   * them again now rather than wait for the RTO (the idea of Linux's lost
   * retransmit detection; RFC 6675 alone leaves it to the timer).
   */
  private rexmitMark = -1;
  /** When the segment at SND.UNA was last retransmitted in this recovery (-1: not yet). */
  private unaRexmitAt = -1;
  /** Retransmissions found lost by SACK and resent without a timeout. */
  lostRetransmits = 0;
  /**
   * Tail loss probe (RFC 8985 7): when the last segments of a flight are
   * lost no duplicate ACKs come back, and only the RTO (200 ms or more)
   * would repair them. After about two round trips without an ACK we send
   * one probe segment instead; its SACK starts fast recovery.
   */
  private tlpAt = Infinity;
  /** Segments that advertised a zero window (our reader was slow). */
  zeroWindowsSent = 0;
  /** Zero-window probes sent (the peer's reader was slow). */
  windowProbes = 0;
  /** Tail loss probes sent. */
  lossProbes = 0;
  /** Probes since the last new ACK; a second one covers a lost first probe, then the RTO takes over. */
  private probesSinceAck = 0;
  /** Offset (from the ring head) of the next hole to retransmit in recovery. */
  private retransmitCursor = 0;
  private retransmitBudget = 0;
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

  private readonly out = newTcpRepr();

  private constructor(config: TcpConfig, now: number, opts: ConnectionOptions, owner: ConnectionOwner, state: TcpState) {
    this.config = config;
    this.owner = owner;
    this.state = state;
    this.rtt = new RttEstimator({ initialRtoMs: config.initialRtoMs, minRtoMs: config.minRtoMs, maxRtoMs: config.maxRtoMs, granularityMs: 4 });
    this.sendRing = new ByteRing(config.sendBufferBytes);
    this.recvRing = new ByteRing(config.recvBufferBytes);
    this.ooo = new Assembler(config.maxOutOfOrderRanges);
    this.sacked = new Assembler(config.maxOutOfOrderRanges);
    this.iss = opts.iss >>> 0;
    this.sndUna = this.iss;
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
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
      const grown = this.currentWindow() - this.rcvAdvertised;
      if (grown >= Math.min(this.config.recvBufferBytes / 2, this.announcedMss)) this.ackNow = true;
    }
    return n;
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
    if (!seqLeq(this.sndUna, quotedSeq) || !seqLt(quotedSeq, this.sndMax)) return false;
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
    this.rewindForRetransmit();
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
        else this.ackNow = true;
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
    if (seqGt(ack, this.sndMax)) {
      this.ackNow = true;
      return false;
    }
    if (seqLt(ack, seqSub(this.sndUna, this.maxSndWnd) >>> 0)) {
      this.challenge(now);
      return false;
    }
    const window = seg.window << this.sndShift;
    if (seqGt(ack, this.sndUna)) {
      this.onNewAck(now, seg, ack);
    } else if (ack === this.sndUna && len === 0 && (seg.flags & TCP_FIN) === 0 && this.sentBytes > 0 && window === this.sndWnd) {
      // RFC 5681 2: a duplicate ACK.
      this.onDupAck(now, seg);
    } else if (ack === this.sndUna && len === 0 && (seg.flags & TCP_FIN) === 0 && this.sentBytes > 0 && this.sackOk && seg.sackCount > 0) {
      // RFC 6675 2: with SACK, an ACK that SACKs new data is a duplicate
      // ACK even when the window changed (Linux receivers grow it all the
      // time while auto-tuning; counting only equal windows misses losses).
      const before = this.sacked.heldBytes;
      this.recordSack(seg);
      if (this.sacked.heldBytes > before) this.onDupAck(now, seg);
    } else if (this.sackOk && seg.sackCount > 0) {
      this.recordSack(seg);
    }
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

  private onNewAck(now: number, seg: TcpRepr, ack: number): void {
    let acked = seqSub(ack, this.sndUna);
    this.sndUna = ack;
    let dataAcked = seqSub(ack, this.ringSeq);
    if (dataAcked > this.sendRing.length) dataAcked = this.sendRing.length; // the rest is our FIN
    if (dataAcked > 0) {
      this.sendRing.discard(dataAcked);
      this.ringSeq = seqAdd(this.ringSeq, dataAcked);
      this.sentBytes = Math.max(0, this.sentBytes - dataAcked);
      this.highSent = Math.max(0, this.highSent - dataAcked);
      this.retransmitCursor = Math.max(0, this.retransmitCursor - dataAcked);
      if (this.rexmitMark >= 0) this.rexmitMark = Math.max(0, this.rexmitMark - dataAcked);
      this.sacked.advance(dataAcked);
      this.bytesSent += dataAcked;
      this.owner.onWritable(this);
    }
    if (seqGt(ack, this.sndNxt)) {
      // An ACK for data (or a FIN) sent before a timeout rewound SND.NXT:
      // the go-back-N retransmission need not resend it.
      if (this.rewoundFrom !== null && ack === seqAdd(this.finSeq, 1)) {
        this.finSent = true;
        this.state = this.rewoundFrom;
        this.rewoundFrom = null;
      }
      this.sndNxt = ack;
    }
    if (this.sackOk && seg.sackCount > 0) this.recordSack(seg);
    this.takeRttSample(now, seg, false);
    this.retries = 0;
    this.dupAcks = 0;
    if (this.inRecovery) {
      if (seqGeq(ack, this.recoveryPoint)) {
        this.inRecovery = false;
        this.rexmitMark = -1;
        this.cc.onRecoveryExit(now);
      } else {
        // RFC 6582 3.2 step 5: a partial ACK; retransmit the next hole.
        this.retransmitBudget = 1;
        acked = 0;
        this.unaRexmitAt = -1; // SND.UNA moved: the next hole's retransmission is timed afresh
        this.detectLostRetransmit(now);
      }
    }
    if (!this.inRecovery && acked > 0) this.cc.onAck(now, acked, this.rtt.srtt);
    // RFC 6298 5.2/5.3: stop the timer when all is acknowledged, else restart it.
    this.rtoAt = this.sndUna === this.sndNxt ? Infinity : now + this.rtt.rto;
    this.tlpAt = Infinity;
    this.probesSinceAck = 0;
    if (this.rtoAt !== Infinity) this.armLossProbe(now);
  }

  private onDupAck(now: number, seg: TcpRepr): void {
    if (this.sackOk && seg.sackCount > 0) this.recordSack(seg);
    this.dupAcks++;
    const sackSaysLoss = this.sackOk && this.sacked.heldBytes >= DUPACK_THRESHOLD * this.sendMss;
    // RFC 5827 early retransmit: with fewer than four segments outstanding
    // and nothing new to send, three duplicate ACKs can never arrive.
    let threshold = DUPACK_THRESHOLD;
    const outstanding = Math.ceil(this.sentBytes / this.sendMss);
    if (outstanding < 4 && !this.canSendData()) threshold = outstanding > 1 ? outstanding - 1 : 1;
    if (!this.inRecovery && (this.dupAcks >= threshold || sackSaysLoss)) {
      // RFC 5681 3.2 / RFC 6675 5: enter loss recovery, retransmit the first hole.
      this.inRecovery = true;
      this.recoveryPoint = this.sndNxt;
      this.cc.onLoss(now, this.flightBytes);
      this.retransmitCursor = 0;
      this.retransmitBudget = 1;
      this.rexmitMark = this.highSent;
      this.rttSentAt = -1; // Karn: the timed segment may be retransmitted
    } else if (this.inRecovery) {
      // Each further dupack means a segment left the network: room for one more.
      this.retransmitBudget++;
      this.detectLostRetransmit(now);
    }
  }

  private detectLostRetransmit(now: number): void {
    if (this.rexmitMark < 0 || this.retransmitCursor === 0) return;
    // Either data sent after the retransmission was SACKed, or (RACK-like,
    // RFC 8985 6.2) the retransmission at SND.UNA is older than a round trip
    // plus a reordering allowance while SACKs keep arriving.
    const newerDelivered = this.sacked.highestEnd > this.rexmitMark;
    const srtt = this.rtt.srtt > 0 ? this.rtt.srtt : this.rtt.rto;
    const overdue = this.unaRexmitAt >= 0 && now - this.unaRexmitAt > srtt * 1.25 + 2;
    if (!newerDelivered && !overdue) return;
    this.unaRexmitAt = -1;
    this.retransmitCursor = 0;
    this.rexmitMark = this.highSent;
    if (this.retransmitBudget < 1) this.retransmitBudget = 1;
    this.lostRetransmits++;
  }

  private recordSack(seg: TcpRepr): void {
    for (let i = 0; i < seg.sackCount; i++) {
      const l = seg.sackLeft[i]!;
      const r = seg.sackRight[i]!;
      // RFC 2018 / RFC 6675: only blocks within [SND.UNA, SND.NXT] count.
      if (!seqLt(this.ringSeq, r) || seqGt(r, this.sndMax) || !seqLt(l, r)) continue;
      const start = seqLt(l, this.ringSeq) ? 0 : seqSub(l, this.ringSeq);
      const end = seqSub(r, this.ringSeq);
      this.sacked.add(start, end - start);
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
    if (this.inRecovery && this.retransmitBudget > 0) sent = this.retransmitHoles(now, sink) || sent;
    sent = this.sendData(now, sink) || sent;
    sent = this.sendFin(now, sink) || sent;
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
      if (this.inRecovery && this.retransmitBudget > 0) return 0;
      if (this.canSendData() || this.finReady()) return 0;
    }
    let t = this.rtoAt;
    if (this.delayedAckAt < t) t = this.delayedAckAt;
    if (this.persistAt < t) t = this.persistAt;
    if (this.timeWaitAt < t) t = this.timeWaitAt;
    if (this.finWait2At < t) t = this.finWait2At;
    if (this.keepAliveAt < t) t = this.keepAliveAt;
    if (this.tlpAt < t) t = this.tlpAt;
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

  /** Bytes we may send now: min(cwnd, peer window) minus what is in flight. */
  private usableWindow(): number {
    const flight = this.sentBytes - (this.sackOk ? this.sacked.heldBytes : 0);
    const wnd = this.sndWnd < this.cc.cwnd ? this.sndWnd : this.cc.cwnd;
    const inWnd = this.sndWnd - this.sentBytes; // the peer's window counts from SND.UNA
    const byCwnd = wnd - flight;
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
      size = this.emitData(now, sink, this.sentBytes, size, size === unsent);
      this.sentBytes += size;
      if (this.sentBytes > this.highSent) this.highSent = this.sentBytes;
      this.sndNxt = seqAdd(this.ringSeq, this.sentBytes);
      if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
      if (this.rtoAt === Infinity) this.rtoAt = now + this.rtt.rto;
      this.armLossProbe(now);
      sent = true;
    }
    // Zero window with data waiting and nothing in flight: probe later (RFC 9293 3.8.6.1).
    if (this.sndWnd === 0 && this.sendRing.length > this.sentBytes && this.sentBytes === 0 && this.persistAt === Infinity) {
      this.persistAt = now + Math.min(this.rtt.rto * 2 ** this.persistBackoff, this.config.maxRtoMs);
    }
    return sent;
  }

  /** Emits data at ring offset `from`; returns the bytes sent (a wrap may shorten it). */
  private emitData(now: number, sink: SegmentSink, from: number, size: number, last: boolean): number {
    const run = this.sendRing.contiguous(from, size);
    const r = this.prepare(now, seqAdd(this.ringSeq, from), TCP_ACK | (last && run === size ? TCP_PSH : 0));
    if (this.rttSentAt < 0 && from >= this.highSent) {
      this.rttSeq = seqAdd(this.ringSeq, from);
      this.rttSentAt = now;
    }
    sink.emitSegment(this, r, this.sendRing.backing, this.sendRing.indexOf(from), run);
    this.afterEmit();
    return run;
  }

  private retransmitHoles(now: number, sink: SegmentSink): boolean {
    let sent = false;
    const limit = seqSub(this.recoveryPoint, this.ringSeq);
    while (this.retransmitBudget > 0 && this.retransmitCursor < limit && this.retransmitCursor < this.sentBytes) {
      const end = this.sacked.rangeEndAt(this.retransmitCursor);
      if (end >= 0) {
        this.retransmitCursor = end;
        continue;
      }
      let size = this.sendMss;
      if (this.retransmitCursor + size > this.sentBytes) size = this.sentBytes - this.retransmitCursor;
      if (size <= 0) break;
      if (this.retransmitCursor === 0) this.unaRexmitAt = now;
      const n = this.emitData(now, sink, this.retransmitCursor, size, false);
      this.retransmitCursor += n;
      this.retransmitBudget--;
      this.retransmits++;
      sent = true;
      if (!this.sackOk) break; // NewReno: one segment per partial ACK
    }
    // Nothing left below the recovery point to repair: the unused budget
    // must not keep pollAt() at "now" (it would spin the driver).
    if (this.retransmitCursor >= limit || this.retransmitCursor >= this.sentBytes) this.retransmitBudget = 0;
    if (sent) {
      this.rtoAt = now + this.rtt.rto;
      this.armLossProbe(now);
    }
    return sent;
  }

  private sendFin(now: number, sink: SegmentSink): boolean {
    if (!this.finReady()) return false;
    this.finSent = true;
    this.finSeq = seqAdd(this.ringSeq, this.sentBytes);
    this.emitControl(sink, this.finSeq, TCP_FIN | TCP_ACK, now);
    this.sndNxt = seqAdd(this.finSeq, 1);
    if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
    this.state = this.rewoundFrom ?? (this.state === 'ESTABLISHED' ? 'FIN-WAIT-1' : 'LAST-ACK');
    this.rewoundFrom = null;
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
    // Go back to SND.UNA (RFC 5681 3.1: cwnd to one segment, slow start).
    this.cc.onTimeout(now, this.flightBytes);
    this.inRecovery = false;
    this.rexmitMark = -1;
    this.dupAcks = 0;
    this.retransmits++;
    // RFC 6675 5.1: after a timeout the SACK scoreboard is not trusted.
    this.sacked.clear();
    this.rewindForRetransmit();
    return true;
  }

  /** Go back to SND.UNA: everything unacknowledged (and a FIN) is sent again. */
  private rewindForRetransmit(): void {
    this.sentBytes = 0;
    if (this.finSent) {
      // Retransmit the FIN too once the data is out again.
      this.finSent = false;
      this.rewoundFrom = this.state;
      this.state = this.state === 'FIN-WAIT-1' ? 'ESTABLISHED' : this.state === 'LAST-ACK' || this.state === 'CLOSING' ? 'CLOSE-WAIT' : this.state;
    }
    this.sndNxt = this.ringSeq;
  }

  /**
   * RFC 8985 7.2: PTO = 2 * SRTT (at least 10 ms here), and never after the
   * RTO. In recovery the same timer guards the retransmission at SND.UNA:
   * if it has not been acknowledged within the PTO it is sent again (what
   * RACK's reordering timer achieves, RFC 8985 6.2), instead of stalling
   * until the RTO when a retransmission is lost and nothing else is in flight.
   */
  private armLossProbe(now: number): void {
    if (this.sentBytes === 0 || this.rtt.srtt <= 0 || this.tlpAt !== Infinity) return;
    const pto = Math.max(2 * this.rtt.srtt, 10);
    if (now + pto < this.rtoAt) this.tlpAt = now + pto;
  }

  /** RFC 8985 7.3: new data if the peer's window allows, else the last segment again. */
  private sendLossProbe(now: number, sink: SegmentSink): void {
    this.tlpAt = Infinity;
    if (this.sentBytes === 0) return;
    if (this.inRecovery) {
      if (this.sacked.rangeEndAt(0) < 0) {
        this.emitData(now, sink, 0, Math.min(this.sendMss, this.sentBytes), false);
        this.unaRexmitAt = now;
        if (this.retransmitCursor === 0) this.retransmitCursor = Math.min(this.sendMss, this.sentBytes);
        this.retransmits++;
        this.lossProbes++;
      }
      this.armLossProbe(now);
      return;
    }
    if (this.finSent || this.probesSinceAck >= 2) return;
    this.lossProbes++;
    this.probesSinceAck++;
    const unsent = this.sendRing.length - this.sentBytes;
    if (unsent > 0 && this.sndWnd - this.sentBytes >= Math.min(unsent, this.sendMss)) {
      const size = Math.min(unsent, this.sendMss);
      const n = this.emitData(now, sink, this.sentBytes, size, size === unsent);
      this.sentBytes += n;
      if (this.sentBytes > this.highSent) this.highSent = this.sentBytes;
      this.sndNxt = seqAdd(this.ringSeq, this.sentBytes);
      if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
    } else {
      const from = this.sentBytes > this.sendMss ? this.sentBytes - this.sendMss : 0;
      this.emitData(now, sink, from, this.sentBytes - from, true);
      this.retransmits++;
    }
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

  /** Free receive space: the window we can offer. */
  private currentWindow(): number {
    return this.recvRing.free;
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
