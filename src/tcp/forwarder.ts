/**
 * The TCP forwarder: every segment the TUN delivers is answered as if
 * sluice were its destination. A SYN to any address and port becomes a flow
 * the application accepts, resets or drops (possibly later, after asking an
 * upstream: the SYN waits in a bounded backlog), and accepted flows get a
 * TcpConnection and a stream carrying the original 4-tuple.
 *
 * SYN floods (RFC 4987): past `synCookieThreshold` half-open flows a SYN is
 * answered statelessly with a SYN cookie (syn-cookie.ts) and the
 * application hears of the flow only when the client's ACK returns the
 * cookie; a batch's new SYNs are handled after its other segments, and
 * under that pressure at most `synsPerBatch` of them (without it, every SYN
 * of the batch: a burst of legitimate clients must not wait out a SYN
 * retransmission). Segments onto a pending SYN's tuple change it
 * only when they pass the RFC 5961 checks (pendingSegment).
 */
import { SluiceError } from '../errors.js';
import type { FlowTable } from '../ip/flow-table.js';
import type { IpPacket } from '../ip/packet.js';
import type { IcmpHandler, UnreachableKind } from '../ip/icmp.js';
import { addressBytesOf, copyAddresses, endpointsOf, setFlowAddresses, type FlowAddressBytes } from '../ip/flow-addresses.js';
import type { StackDriver } from '../stack/driver.js';
import { type TcpCounterSource, newTcpConnectionCounts, type TcpConnectionCounts } from '../stack/counters.js';
import { TcpFlow, type FlowApp, type FlowHost } from '../stack/tcp-flow.js';
import type { TcpStream, FlowEndpoints } from '../stack/tcp-stream.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, copyTcpRepr, newTcpRepr, type TcpRepr } from '../wire/tcp.js';
import { IPV6_HEADER_LEN } from '../wire/ipv6.js';
import { IPV4_HEADER_LEN } from '../wire/ipv4.js';
import { isUnicastAt } from '../wire/address-class.js';
import { TcpConnection, receiveWindowShift, tcpTimestampClock } from './connection.js';
import { SynCookies, cookieSackPermitted, cookieTimestamp, cookieWindowScale } from './syn-cookie.js';
import type { TcpConfig } from './config.js';

/**
 * SYNs one batch can hold back until its other segments are done: above the
 * TUN's read budget (256 records a readiness), so outside SYN-cookie
 * pressure no SYN of a batch is dropped for want of room.
 */
const MAX_DEFERRED_SYNS = 1024;
import { IsnGenerator } from './isn.js';

/** A new TCP flow waiting for the application's decision. */
export interface TcpFlowRequest extends FlowEndpoints, FlowAddressBytes {
  /** Completes the handshake (SYN-ACK goes out now) and returns the stream. */
  accept(): TcpStream;
  /**
   * Completes the handshake as accept() does, but hands the flow to `app`
   * (made by `make` from it, before anything is delivered), which drives
   * the connection itself: no Node stream (src/engine/socket-relay.ts).
   */
  acceptWith<A extends FlowApp>(make: (flow: TcpFlow) => A): A;
  /** Answers the SYN with RST: the client sees "connection refused" at once. */
  reset(): void;
  /** Answers with ICMP destination unreachable of the given kind. */
  unreachable(kind: UnreachableKind): void;
  /** Forgets the SYN: the client retries and eventually times out. */
  drop(): void;
  readonly decided: boolean;
  /**
   * True when the client already completed the handshake (a SYN cookie
   * answered its SYN under a SYN flood, RFC 4987): the connection is open,
   * so reset(), drop() and unreachable() all end it with a RST.
   */
  readonly established: boolean;
  /**
   * Aborted when the flow goes away before a decision (the client gave up
   * with a RST, the decision took longer than pendingTimeoutMs, or a SYN
   * flood evicted it): pass it to the upstream connect so it stops too.
   */
  readonly signal: AbortSignal;
  /**
   * Aborts `controller` when the flow goes away before a decision (at once
   * if it already has): the caller's own controller stands in for
   * `signal`, so the dial needs no second one and no AbortSignal.any.
   */
  abortOnCancel(controller: AbortController): void;
}

export class StackError extends SluiceError {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

export interface ForwarderOptions {
  maxPending: number;
  pendingTimeoutMs: number;
  pendingEvictAfterMs: number;
  synCookieThreshold: number;
  synsPerBatch: number;
  synCookiePeriodMs: number;
  maxTcpFlows: number;
}

/** RFC 6528 needs the local/remote pair; our "local" is the client's destination. */
const ISN_SCRATCH = new Uint8Array(36);
/** MSS bytes an IPv6 header costs over IPv4's (the config's mss is for IPv4). */
const V6_MSS_PENALTY = IPV6_HEADER_LEN - IPV4_HEADER_LEN;
/** RFC 9293 3.7.1: the MSS to assume when a SYN carries none. */
const DEFAULT_SEND_MSS = 536;
/** Resets per pending SYN per second answering ACK-bearing segments (same budget as challenge ACKs). */
const PENDING_RSTS_PER_SECOND = 10;
const NO_QUOTE = new Uint8Array(0);

/** Per-flow state kept while a SYN waits for a decision. */
interface PendingSyn {
  request: FlowRequest | null;
  syn: TcpRepr;
  /** IP header + TCP header of the SYN, quoted in an ICMP error if refused. */
  quote: Uint8Array;
  arrivedAt: number;
  /** RFC 5961 7-style budget for the resets answering ACKs onto this tuple (RFC 9293 3.10.7.2). */
  rstWindowAt: number;
  rstsInWindow: number;
}

class FlowRequest implements TcpFlowRequest {
  decided = false;
  readonly established: boolean;
  readonly family: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteBytes: Uint8Array;
  readonly localBytes: Uint8Array;
  private controller: AbortController | null = null;

  constructor(
    private readonly forwarder: TcpForwarder,
    readonly flow: TcpFlow,
  ) {
    const e = flow.endpoints!;
    this.family = e.family;
    this.remoteAddress = e.remoteAddress;
    this.remotePort = e.remotePort;
    this.localAddress = e.localAddress;
    this.localPort = e.localPort;
    this.remoteBytes = addressBytesOf(e.family, flow.srcAddr, flow.src4);
    this.localBytes = addressBytesOf(e.family, flow.dstAddr, flow.dst4);
    this.established = flow.connection !== null;
  }

  get signal(): AbortSignal {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.flow.closedReason !== null) this.controller.abort(new StackError(`flow ${this.flow.closedReason} before a decision`, 'SLUICE_FLOW_EXPIRED'));
    }
    return this.controller.signal;
  }

  abortOnCancel(controller: AbortController): void {
    if (this.controller !== null && this.controller !== controller) {
      // Someone holds `signal` already: keep it, and chain.
      if (this.controller.signal.aborted) controller.abort(this.controller.signal.reason);
      else this.controller.signal.addEventListener('abort', () => controller.abort(this.controller!.signal.reason), { once: true });
      return;
    }
    this.controller = controller;
    if (this.flow.closedReason !== null && !controller.signal.aborted) controller.abort(new StackError(`flow ${this.flow.closedReason} before a decision`, 'SLUICE_FLOW_EXPIRED'));
  }

  /** @internal the stack forgot the flow before a decision */
  cancelled(): void {
    if (this.controller !== null && !this.controller.signal.aborted) {
      this.controller.abort(new StackError(`flow ${this.flow.closedReason ?? 'timeout'} before a decision`, 'SLUICE_FLOW_EXPIRED'));
    }
  }

  accept(): TcpStream {
    this.decide('accept');
    // Decided: nothing cancels it now (`cancelled` is for undecided flows),
    // so an accepted flow holds no controller while it lives (issue 10).
    this.controller = null;
    const stream = this.flow.openStream();
    this.forwarder.acceptFlow(this.flow);
    return stream;
  }

  acceptWith<A extends FlowApp>(make: (flow: TcpFlow) => A): A {
    this.decide('accept');
    this.controller = null;
    const app = make(this.flow);
    this.flow.attach(app);
    this.forwarder.acceptFlow(this.flow);
    return app;
  }

  reset(): void {
    this.decide('reset');
    this.forwarder.refuseFlow(this.flow, 'reset');
  }

  unreachable(kind: UnreachableKind): void {
    this.decide('unreachable');
    this.forwarder.refuseFlow(this.flow, kind);
  }

  drop(): void {
    this.decide('drop');
    this.forwarder.refuseFlow(this.flow, 'drop');
  }

  private decide(what: string): void {
    if (this.decided) throw new StackError(`flow already decided; cannot ${what} it`, 'SLUICE_FLOW_DECIDED');
    if (this.flow.closedReason !== null) throw new StackError('flow expired before a decision', 'SLUICE_FLOW_EXPIRED');
    this.decided = true;
  }
}

export class TcpForwarder implements TcpCounterSource {
  /** TcpCounterSource: every connection's loss counts, open and closed, added as they happen (FlowHost.tcpTotals). */
  readonly tcpTotals: TcpConnectionCounts = newTcpConnectionCounts();
  private readonly pending = new Map<TcpFlow, PendingSyn>();
  private readonly isn = new IsnGenerator();
  private readonly cookies: SynCookies;
  /** Until when cookie ACKs are looked for (two secret periods after the last cookie). */
  private cookiesValidUntil = -Infinity;
  private synReceivedCount = 0;
  // The batch's SYN deferral (onBatch): record offsets of its new SYNs, handled after its other segments.
  private readonly deferredSyns: Int32Array;
  private deferredCount = 0;
  /** The batch's SYN budget: synsPerBatch under SYN-cookie pressure, else the whole deferral capacity. */
  private batchSynLimit = 0;
  private synsThisBatch = 0;
  private batchBuf: Uint8Array | null = null;
  /** Offset of the record being input (set by the driver per record). */
  recordOff = 0;
  private deferring = false;
  private readonly reply = newTcpRepr();
  private readonly scratchAddresses = { family: 4, srcAddr: new Uint8Array(16), dstAddr: new Uint8Array(16), src4: 0, dst4: 0 };

  constructor(
    private readonly d: StackDriver,
    private readonly host: FlowHost,
    private readonly flows: FlowTable<TcpFlow>,
    private readonly icmp: IcmpHandler,
    private readonly onTcpFlow: (request: TcpFlowRequest) => void,
    private readonly cfg: TcpConfig,
    private readonly o: ForwarderOptions,
  ) {
    this.cookies = new SynCookies(d.now, { periodMs: o.synCookiePeriodMs });
    this.deferredSyns = new Int32Array(Math.max(o.synsPerBatch, MAX_DEFERRED_SYNS));
  }

  // ----------------------------------------------------------- batch SYNs

  /** A batch starts: its new SYNs (from `buf`) wait for the end of its first pass. */
  beginBatch(buf: Uint8Array): void {
    this.batchBuf = buf;
    this.deferring = true;
    this.deferredCount = 0;
    this.synsThisBatch = 0;
    this.batchSynLimit = this.halfOpenCount() >= this.o.synCookieThreshold ? this.o.synsPerBatch : this.deferredSyns.length;
  }

  /** The batch already holds as many SYNs as it will handle: later bare SYNs need no parsing. */
  get synBudgetFull(): boolean {
    return this.deferredCount >= this.batchSynLimit;
  }

  /** The first pass is over; returns how many SYN records were deferred (see deferredAt). */
  endFirstPass(): number {
    this.deferring = false;
    return this.deferredCount;
  }

  deferredAt(i: number): number {
    return this.deferredSyns[i]!;
  }

  endBatch(): void {
    this.batchBuf = null;
  }

  // ---------------------------------------------------------------- input

  /** A TCP segment, parsed into `p.tcp` and its checksum verified. */
  input(p: IpPacket): void {
    const seg = p.tcp;
    const d = this.d;
    const flow = this.flows.lookup(p.family, p.protocol, p.abuf, p.srcOff, p.dstOff, seg.srcPort, seg.dstPort);
    if (flow !== null) {
      const conn = flow.connection;
      if (conn !== null) {
        // RFC 5681 4.2: the previous segment's out-of-order ACK goes first (output.ts sackAckOwed).
        if (conn.owesSackAck) d.dispatchNow(flow);
        conn.process(d.now, seg, p.l4buf, seg.payloadOffset, seg.payloadLength);
        d.markDirty(flow);
        return;
      }
      this.pendingSegment(flow, seg);
      return;
    }
    if ((seg.flags & TCP_RST) !== 0) return; // RFC 9293 3.10.7.1: never answer a RST
    // Only unicast endpoints can be answered or relayed (src/wire/address-class.ts):
    // nothing goes back to a multicast, broadcast or unspecified address.
    if (!isUnicastPair(p)) return d.drop('bad_address');
    if ((seg.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) {
      // Port 0 is reserved (RFC 6335 6): no upstream can be dialled to it.
      // Refused as a host without a listener would: RFC 9293 3.10.7.1 RST.
      if (seg.dstPort === 0 || seg.srcPort === 0) {
        d.drop('port_zero');
        return this.sendResetFor(p);
      }
      if (d.inBatch) {
        if (this.deferring && p.l4buf === this.batchBuf) {
          if (this.deferredCount >= this.batchSynLimit) return d.drop('syn_budget');
          this.deferredSyns[this.deferredCount++] = this.recordOff;
          return;
        }
        if (++this.synsThisBatch > this.batchSynLimit) return d.drop('syn_budget');
      }
      if (this.halfOpenCount() >= this.o.synCookieThreshold) {
        this.sendCookie(p);
        return;
      }
      this.newFlow(p);
      return;
    }
    if ((seg.flags & (TCP_SYN | TCP_ACK)) === TCP_ACK && d.now <= this.cookiesValidUntil && this.cookieFlow(p)) return;
    // RFC 9293 3.10.7.1 (CLOSED): anything else gets a reset.
    d.drop('no_flow');
    this.sendResetFor(p);
  }

  /**
   * A segment onto the 4-tuple of a SYN still waiting for its decision (the
   * upstream dial, usually). We are in LISTEN with the SYN queued, and a
   * blind attacker who floods the tuple must change nothing:
   * - RST: only one whose sequence number is exactly the SYN's + 1 (RCV.NXT,
   *   RFC 5961 3.2) cancels the SYN; any other is dropped and counted. (A
   *   challenge ACK, RFC 5961's answer to an inexact RST, needs a sequence
   *   space of ours, and there is none before our SYN-ACK; the client in
   *   SYN-SENT would only answer it with a reset of its own.)
   * - SYN: a retransmission (RFC 9293 3.10.7.2 keeps one SYN per tuple);
   *   the decision will answer it.
   * - anything bearing an ACK: RFC 9293 3.10.7.2 LISTEN answers
   *   <SEQ=SEG.ACK><CTL=RST>, rate limited per tuple (RFC 5961 7), and the
   *   pending SYN stays. The real client, in SYN-SENT, ignores a reset that
   *   acknowledges nothing (3.10.7.3), so this never hurts it.
   * - the rest (no ACK, no SYN, no RST) is dropped (3.10.7.2).
   */
  private pendingSegment(flow: TcpFlow, seg: TcpRepr): void {
    const p = this.pending.get(flow);
    if (p === undefined) return;
    const d = this.d;
    const f = seg.flags;
    if ((f & TCP_RST) !== 0) {
      if (seg.seq === ((p.syn.seq + 1) >>> 0)) this.forgetPending(flow, 'reset');
      else d.drop('pending_rst_ignored');
      return;
    }
    if ((f & TCP_SYN) !== 0 && (f & TCP_ACK) === 0) return;
    if ((f & TCP_ACK) === 0) return d.drop('pending_segment_ignored');
    if (d.now - p.rstWindowAt >= 1000) {
      p.rstWindowAt = d.now;
      p.rstsInWindow = 0;
    }
    if (p.rstsInWindow >= PENDING_RSTS_PER_SECOND) return d.drop('pending_segment_ignored');
    p.rstsInWindow++;
    const r = this.reply;
    resetRepr(r, flow.dstPort, flow.srcPort, seg.ack, 0, TCP_RST);
    d.writer.tcp(flow, r, null, 0, 0, 0);
    d.stats.resetsSent++;
  }

  private halfOpenCount(): number {
    return this.pending.size + this.synReceivedCount;
  }

  private updatePendingStats(): void {
    this.d.stats.pendingFlows = this.pending.size;
    this.d.stats.halfOpenFlows = this.halfOpenCount();
  }

  private ourMss(family: number): number {
    return family === 4 ? this.cfg.mss : this.cfg.mss - V6_MSS_PENALTY;
  }

  /**
   * RFC 4987 3.6: answers the SYN in `p.tcp` with a SYN-ACK whose ISN is a
   * cookie and keeps nothing. The options are the ones the connection
   * built from the cookie ACK will use (TcpConnection.acceptCookie): our MSS,
   * and window scale and SACK only when the SYN offered timestamps, whose
   * low bits carry them back (syn-cookie.ts).
   */
  private sendCookie(p: IpPacket): void {
    const seg = p.tcp;
    const cfg = this.cfg;
    const d = this.d;
    const f = this.scratchAddresses;
    f.family = p.family;
    copyAddresses(p.family, p.abuf, p.srcOff, p.dstOff, f);
    const clientMss = seg.mss > 0 ? seg.mss : DEFAULT_SEND_MSS;
    const iss = this.cookies.isn(d.now, p.family, f.srcAddr, f.dstAddr, seg.srcPort, seg.dstPort, seg.seq, clientMss);
    const r = this.reply;
    r.srcPort = seg.dstPort;
    r.dstPort = seg.srcPort;
    r.seq = iss;
    r.ack = (seg.seq + 1) >>> 0;
    r.flags = TCP_SYN | TCP_ACK;
    r.window = cfg.recvBufferBytes > 0xffff ? 0xffff : cfg.recvBufferBytes;
    r.urgent = 0;
    r.mss = this.ourMss(p.family);
    const ts = cfg.timestamps && seg.hasTimestamps;
    r.hasTimestamps = ts;
    r.windowScale = ts && cfg.windowScale && seg.windowScale >= 0 ? receiveWindowShift(cfg) : -1;
    r.sackPermitted = ts && cfg.sack && seg.sackPermitted;
    if (ts) {
      r.tsVal = cookieTimestamp(tcpTimestampClock(d.now, iss), r.windowScale >= 0 ? (seg.windowScale > 14 ? 14 : seg.windowScale) : -1, r.sackPermitted);
      r.tsEcr = seg.tsVal;
    }
    r.sackCount = 0;
    d.writer.tcp(f, r, null, 0, 0, 0);
    d.stats.synCookiesSent++;
    this.cookiesValidUntil = d.now + 2 * this.o.synCookiePeriodMs;
  }

  /**
   * An ACK with no flow while cookies are out: when SEG.ACK - 1 is a cookie
   * we made for this tuple and SEG.SEQ - 1, the client completed a
   * handshake we answered statelessly. Builds the connection (ESTABLISHED
   * by this very ACK, its data kept) and only now asks the application,
   * which may dial: spoofed SYNs never get this far. Returns false when the
   * ACK is not a cookie ACK (the caller resets it as before).
   */
  private cookieFlow(p: IpPacket): boolean {
    const seg = p.tcp;
    const d = this.d;
    const family = p.family;
    const f = this.scratchAddresses;
    f.family = family;
    copyAddresses(family, p.abuf, p.srcOff, p.dstOff, f);
    const cookie = (seg.ack - 1) >>> 0;
    const clientIsn = (seg.seq - 1) >>> 0;
    const mss = this.cookies.check(d.now, family, f.srcAddr, f.dstAddr, seg.srcPort, seg.dstPort, clientIsn, cookie);
    if (mss === 0) {
      d.stats.synCookiesRejected++;
      return false;
    }
    if (this.pending.size >= this.o.maxPending) {
      d.drop('pending_full');
      return false;
    }
    if (this.flows.size >= this.o.maxTcpFlows) {
      d.drop('flows_full');
      return false;
    }
    const cfg = this.cfg;
    const syn = newTcpRepr();
    syn.srcPort = seg.srcPort;
    syn.dstPort = seg.dstPort;
    syn.seq = clientIsn;
    syn.flags = TCP_SYN;
    syn.window = seg.window;
    syn.mss = mss;
    const ts = cfg.timestamps && seg.hasTimestamps;
    syn.hasTimestamps = ts;
    syn.tsVal = ts ? seg.tsVal : 0;
    syn.windowScale = ts ? cookieWindowScale(seg.tsEcr) : -1;
    syn.sackPermitted = ts && cookieSackPermitted(seg.tsEcr);
    const flow = new TcpFlow(this.host, family, seg.srcPort, seg.dstPort);
    setFlowAddresses(family, p.abuf, p.srcOff, p.dstOff, flow);
    flow.endpoints = endpointsOf(family, p.abuf, p.srcOff, p.dstOff, seg.srcPort, seg.dstPort);
    const conn = TcpConnection.acceptCookie(cfg, d.now, syn, { iss: cookie, mss: this.ourMss(family) }, flow);
    if (d.writer.tso) conn.useTso(d.writer.maxTcpPayload);
    conn.process(d.now, seg, p.l4buf, seg.payloadOffset, seg.payloadLength);
    if (conn.state !== 'ESTABLISHED' && conn.state !== 'CLOSE-WAIT') {
      d.drop('cookie_ack_unusable');
      return true;
    }
    d.stats.synCookiesValidated++;
    flow.connection = conn;
    this.flows.insert(flow);
    d.stats.tcpFlowsActive++;
    const pendingSyn: PendingSyn = { request: null, syn, quote: NO_QUOTE, arrivedAt: d.now, rstWindowAt: -Infinity, rstsInWindow: 0 };
    this.pending.set(flow, pendingSyn);
    this.updatePendingStats();
    flow.decisionDeadline = d.now + this.o.pendingTimeoutMs;
    d.markDirty(flow);
    const request = new FlowRequest(this, flow);
    pendingSyn.request = request;
    this.askApplication(request);
    return true;
  }

  private askApplication(request: FlowRequest): void {
    try {
      this.onTcpFlow(request);
    } catch (err) {
      // A throwing handler must not take the stack down; the flow is reset.
      if (!request.decided) request.reset();
      process.emitWarning(`onTcpFlow handler threw: ${(err as Error).message}`, { code: 'SLUICE_HANDLER' });
    }
  }

  private newFlow(p: IpPacket): void {
    const d = this.d;
    if (this.pending.size >= this.o.maxPending && !this.evictOldestPending()) return d.drop('pending_full');
    if (this.flows.size >= this.o.maxTcpFlows) return d.drop('flows_full');
    const seg = p.tcp;
    const family = p.family;
    const flow = new TcpFlow(this.host, family, seg.srcPort, seg.dstPort);
    setFlowAddresses(family, p.abuf, p.srcOff, p.dstOff, flow);
    flow.endpoints = endpointsOf(family, p.abuf, p.srcOff, p.dstOff, seg.srcPort, seg.dstPort);
    const syn = newTcpRepr();
    copyTcpRepr(seg, syn);
    // The quote of an ICMP error: IP header and the TCP header.
    const quoteLen = Math.min(p.pktLen, p.l4Off - p.pktOff + seg.headerLength);
    const quote = p.pkt.slice(p.pktOff, p.pktOff + quoteLen);
    const pendingSyn: PendingSyn = { request: null, syn, quote, arrivedAt: d.now, rstWindowAt: -Infinity, rstsInWindow: 0 };
    this.pending.set(flow, pendingSyn);
    this.updatePendingStats();
    this.flows.insert(flow);
    d.wheel.schedule(flow, d.now + this.o.pendingTimeoutMs);
    d.armTimer();
    const request = new FlowRequest(this, flow);
    pendingSyn.request = request;
    this.askApplication(request);
  }

  /** @internal FlowRequest.accept / acceptWith, once the flow's app is attached */
  acceptFlow(flow: TcpFlow): void {
    const d = this.d;
    const p = this.pending.get(flow)!;
    this.pending.delete(flow);
    this.updatePendingStats();
    const now = d.refreshNow();
    if (flow.connection !== null) {
      // Completed by a SYN cookie: the connection is open already.
      flow.decisionDeadline = Infinity;
      d.stats.tcpFlowsAccepted++;
      d.markDirty(flow);
      return;
    }
    const iss = this.isnFor(flow, now);
    const conn = TcpConnection.accept(this.cfg, now, p.syn, { iss, mss: this.ourMss(flow.family) }, flow);
    if (d.writer.tso) conn.useTso(d.writer.maxTcpPayload);
    flow.connection = conn;
    flow.halfOpen = true;
    this.synReceivedCount++;
    d.stats.halfOpenFlows = this.halfOpenCount();
    d.wheel.cancel(flow);
    d.stats.tcpFlowsAccepted++;
    d.stats.tcpFlowsActive++;
    d.markDirty(flow);
  }

  /** @internal FlowRequest.reset/unreachable/drop */
  refuseFlow(flow: TcpFlow, how: 'reset' | 'drop' | UnreachableKind): void {
    const p = this.pending.get(flow);
    if (p === undefined) return;
    const d = this.d;
    d.stats.tcpFlowsRejected++;
    const conn = flow.connection;
    if (conn !== null) {
      // Completed by a SYN cookie: whatever the refusal, the open connection ends with a RST.
      this.pending.delete(flow);
      this.updatePendingStats();
      flow.decisionDeadline = Infinity;
      conn.abort();
      d.markDirty(flow);
      d.scheduleFlush();
      return;
    }
    if (how === 'reset') {
      // RFC 9293 3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
      const r = this.reply;
      resetRepr(r, flow.dstPort, flow.srcPort, 0, (p.syn.seq + 1 + p.syn.payloadLength) >>> 0, TCP_RST | TCP_ACK);
      d.writer.tcp(flow, r, null, 0, 0, 0);
      d.stats.resetsSent++;
    } else if (how !== 'drop') {
      this.icmp.sendUnreachable(flow.family, how, p.quote, 0, p.quote.length);
    }
    this.forgetPending(flow, 'aborted');
    d.scheduleFlush();
  }

  /** Makes room under a SYN flood: the oldest waiting SYN goes if it is old enough. */
  private evictOldestPending(): boolean {
    for (const [flow, p] of this.pending) {
      if (this.d.now - p.arrivedAt < this.o.pendingEvictAfterMs) return false;
      this.forgetPending(flow, 'timeout');
      this.d.drop('pending_evicted');
      return true;
    }
    return false;
  }

  private forgetPending(flow: TcpFlow, reason: 'reset' | 'aborted' | 'timeout'): void {
    const p = this.pending.get(flow);
    this.pending.delete(flow);
    this.updatePendingStats();
    this.flows.remove(flow);
    this.d.wheel.cancel(flow);
    flow.closedReason = reason;
    if (p !== undefined && p.request !== null && !p.request.decided) p.request.cancelled();
  }

  /** RFC 9293 3.10.7.1: the reset answering a segment that has no connection. */
  private sendResetFor(p: IpPacket): void {
    const seg = p.tcp;
    const r = this.reply;
    if ((seg.flags & TCP_ACK) !== 0) {
      // <SEQ=SEG.ACK><CTL=RST>
      resetRepr(r, seg.dstPort, seg.srcPort, seg.ack, 0, TCP_RST);
    } else {
      // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
      let len = seg.payloadLength;
      if ((seg.flags & TCP_SYN) !== 0) len++;
      if ((seg.flags & TCP_FIN) !== 0) len++;
      resetRepr(r, seg.dstPort, seg.srcPort, 0, (seg.seq + len) >>> 0, TCP_RST | TCP_ACK);
    }
    const f = this.scratchAddresses;
    f.family = p.family;
    copyAddresses(p.family, p.abuf, p.srcOff, p.dstOff, f);
    this.d.writer.tcp(f, r, null, 0, 0, 0);
    this.d.stats.resetsSent++;
  }

  private isnFor(flow: TcpFlow, now: number): number {
    // local = the destination the client asked for (we play it), remote = the client.
    ISN_SCRATCH.set(flow.dstAddr, 0);
    ISN_SCRATCH.set(flow.srcAddr, 16);
    ISN_SCRATCH[32] = flow.dstPort >>> 8;
    ISN_SCRATCH[33] = flow.dstPort & 0xff;
    ISN_SCRATCH[34] = flow.srcPort >>> 8;
    ISN_SCRATCH[35] = flow.srcPort & 0xff;
    return this.isn.next(now, ISN_SCRATCH);
  }

  // ------------------------------------------------- flow life (FlowHost)

  /** A half-open (SYN-RECEIVED) flow completed its handshake. */
  handshakeDone(_flow: TcpFlow): void {
    this.synReceivedCount--;
    this.d.stats.halfOpenFlows = this.halfOpenCount();
  }

  /** The connection reached CLOSED (or never opened): forget the flow. */
  flowClosed(flow: TcpFlow): void {
    const d = this.d;
    if (flow.halfOpen) {
      flow.halfOpen = false;
      this.synReceivedCount--;
      d.stats.halfOpenFlows = this.halfOpenCount();
    }
    const p = this.pending.get(flow);
    if (p !== undefined) {
      // A cookie-completed connection that ended before the decision.
      this.pending.delete(flow);
      this.updatePendingStats();
      flow.decisionDeadline = Infinity;
      if (p.request !== null && !p.request.decided) p.request.cancelled();
    }
    if (this.flows.remove(flow)) d.stats.tcpFlowsActive--;
    d.wheel.cancel(flow);
  }

  /** The wheel fired for a flow: a pending decision expired, or its connection has a deadline. */
  onTimer(flow: TcpFlow, now: number): void {
    const d = this.d;
    if (flow.connection === null) {
      // Undecided for too long.
      if (this.pending.has(flow)) {
        d.stats.tcpFlowsRejected++;
        this.forgetPending(flow, 'timeout');
      }
      return;
    }
    if (now >= flow.decisionDeadline && this.pending.has(flow)) {
      // A cookie-completed connection left undecided too long: reset it.
      const p = this.pending.get(flow)!;
      d.stats.tcpFlowsRejected++;
      this.pending.delete(flow);
      this.updatePendingStats();
      flow.decisionDeadline = Infinity;
      flow.connection.abort();
      if (p.request !== null && !p.request.decided) p.request.cancelled();
    }
    d.markDirty(flow);
  }
}

function isUnicastPair(p: IpPacket): boolean {
  return isUnicastAt(p.family, p.abuf, p.srcOff) && isUnicastAt(p.family, p.abuf, p.dstOff);
}

function resetRepr(r: TcpRepr, srcPort: number, dstPort: number, seq: number, ack: number, flags: number): void {
  r.srcPort = srcPort;
  r.dstPort = dstPort;
  r.seq = seq;
  r.ack = ack;
  r.flags = flags;
  r.window = 0;
  r.urgent = 0;
  r.mss = 0;
  r.windowScale = -1;
  r.sackPermitted = false;
  r.sackCount = 0;
  r.hasTimestamps = false;
}
