/**
 * The userspace TCP/IP stack's driver: wires link -> ip -> tcp | udp | icmp
 * and owns the one timer (ENGINEERING.md). Every packet the kernel routes
 * into the TUN is answered as if sluice were its destination: a SYN to any
 * address and port becomes a flow the application above accepts, resets or
 * drops (src/tcp/forwarder.ts), a UDP datagram joins a session
 * (src/udp/sessions.ts), ICMP is answered or matched to its flow
 * (src/ip/icmp.ts); IP input and demux are src/ip/input.ts.
 *
 * Per batch: parse every record and feed the layers (connections
 * `process`), then run the stream-side notifications and `dispatch` every
 * connection on the dirty list, and let the link flush once. The timers of
 * every flow, session and fragment live on one wheel behind one setTimeout;
 * `poll(now)` drives them with an explicit clock. Nothing here allocates
 * per packet on the established-flow path.
 */
import { FlowTable } from './ip/flow-table.js';
import { FragmentReassembler } from './ip/reassembly.js';
import { IcmpHandler, type UnreachableKind } from './ip/icmp.js';
import { IpInput, isBareSyn } from './ip/input.js';
import { EchoRelay, type EchoPolicy } from './ip/echo-relay.js';
import type { LinkEndpoint, LinkReceiver } from './link/link.js';
import { readRecordLength, recordSize } from './link/records.js';
import { VNET_HDR_LEN } from './wire/vnet.js';
import type { TcpRepr } from './wire/tcp.js';
import type { TcpConnection, SegmentSink } from './tcp/connection.js';
import { defaultTcpConfig, validateTcpConfig, type TcpConfig } from './tcp/config.js';
import { TcpForwarder, type TcpFlowRequest } from './tcp/forwarder.js';
import { PacketWriter } from './stack/packet-writer.js';
import { TcpFlow, type FlowHost } from './stack/tcp-flow.js';
import { TimerWheel, type WheelEntry } from './stack/timer-wheel.js';
import { newStackStats, type DropReason, type StackStats, type TcpConnectionCounts } from './stack/counters.js';
import type { StackDriver } from './stack/driver.js';
import { UdpSessions } from './udp/sessions.js';
import type { UdpSession } from './udp/session.js';

export type { UnreachableKind } from './ip/icmp.js';
export { StackError, type TcpFlowRequest } from './tcp/forwarder.js';
export type { DropReason, StackStats } from './stack/counters.js';

export interface StackHandlers {
  /** Called once per new TCP flow (the first SYN). Decide now or later. */
  onTcpFlow(request: TcpFlowRequest): void;
  /** Called once per new UDP session; without a handler UDP gets port unreachable. */
  onUdpSession?(session: UdpSession): void;
}

export interface StackOptions {
  tcp?: Partial<TcpConfig>;
  /**
   * SYNs waiting for a decision at once. When full, a new SYN evicts the
   * oldest waiting one if that has waited at least `pendingEvictAfterMs`
   * (SYN flood defence: spoofed SYNs never complete, so they age out first
   * while real clients' retransmitted SYNs get a place); otherwise the new
   * SYN is dropped and counted.
   */
  maxPendingFlows?: number;
  /** Default 1000 ms. */
  pendingEvictAfterMs?: number;
  /** A flow undecided this long is dropped. */
  pendingTimeoutMs?: number;
  /**
   * Half-open flows (SYNs waiting for a decision plus SYN-RECEIVED
   * connections) from which new SYNs are answered statelessly with SYN
   * cookies (RFC 4987 3.6) and handed to the application only once the
   * client completes the handshake. 0 answers every SYN with a cookie.
   * Default 128.
   */
  synCookieThreshold?: number;
  /**
   * New SYNs handled per input batch while half-open flows are at
   * synCookieThreshold (SYNs past this are dropped and counted as
   * syn_budget): a SYN flood costs bounded work per batch. Below the
   * threshold every SYN of a batch is handled. Either way a batch's other
   * segments go first, so established flows are served first. Default 32.
   */
  synsPerBatch?: number;
  /** SYN-cookie secret lifetime; a cookie is good for one to two of these. Default 30000. */
  synCookiePeriodMs?: number;
  maxTcpFlows?: number;
  maxUdpSessions?: number;
  udpIdleTimeoutMs?: number;
  /** Answer ICMP echo requests locally (default) or drop them. */
  icmpEcho?: 'reply' | 'drop';
  /** Send TSO super-segments when the TUN accepts them. Default true. */
  tso?: boolean;
  /** Injected monotonic clock in ms (tests). */
  clock?: () => number;
}

/**
 * Told of every dropped packet (src/link/trace.ts): the reason, and the
 * offset of its record in the batch being input (-1 outside a batch).
 */
export interface DropObserver {
  packetDropped(reason: DropReason, recordOff: number): void;
}

export class Stack implements LinkReceiver, FlowHost, SegmentSink, StackDriver {
  /** Live counters: read them at any time (the control-plane API does). */
  readonly stats: StackStats;
  readonly writer: PacketWriter;
  readonly wheel: TimerWheel<WheelEntry>;
  now: number;
  inBatch = false;
  closed = false;
  private readonly link: LinkEndpoint;
  private readonly clock: () => number;
  private readonly tcpFlows = new FlowTable<TcpFlow>();
  private readonly reassembler = new FragmentReassembler();
  private readonly icmp: IcmpHandler;
  private readonly forwarder: TcpForwarder;
  private readonly udp: UdpSessions;
  private readonly ip: IpInput;
  private readonly vnetLen: number;
  private dropObserver: DropObserver | null = null;
  private dirtyHead: TcpFlow | null = null;
  private dirtyTail: TcpFlow | null = null;
  private flushScheduled = false;
  private timer: NodeJS.Timeout | null = null;
  private timerDeadline = Infinity;
  private currentFlow: TcpFlow | null = null;
  private readonly flushBound = (): void => this.flushDeferred();
  private readonly timerBound = (): void => this.onTimerFired();

  constructor(link: LinkEndpoint, handlers: StackHandlers, opts: StackOptions = {}) {
    this.link = link;
    this.clock = opts.clock ?? (() => performance.now());
    this.now = this.clock();
    this.vnetLen = link.vnetHdr ? VNET_HDR_LEN : 0;
    this.writer = new PacketWriter(link, { tso: opts.tso ?? true });
    const tcpConfig = validateTcpConfig({ ...defaultTcpConfig(), mss: link.mtu - 40, ...opts.tcp });
    this.wheel = new TimerWheel<WheelEntry>(this.now, 4, 1024);
    this.icmp = new IcmpHandler(this, this.tcpFlows, (opts.icmpEcho ?? 'reply') === 'reply');
    this.forwarder = new TcpForwarder(this, this, this.tcpFlows, this.icmp, (r) => handlers.onTcpFlow(r), tcpConfig, {
      maxPending: opts.maxPendingFlows ?? 1024,
      pendingTimeoutMs: opts.pendingTimeoutMs ?? 30_000,
      pendingEvictAfterMs: opts.pendingEvictAfterMs ?? 1000,
      synCookieThreshold: opts.synCookieThreshold ?? 128,
      synsPerBatch: opts.synsPerBatch ?? 32,
      synCookiePeriodMs: opts.synCookiePeriodMs ?? 30_000,
      maxTcpFlows: opts.maxTcpFlows ?? 65_536,
    });
    const onUdp = handlers.onUdpSession;
    this.udp = new UdpSessions(this, this.icmp, onUdp === undefined ? undefined : (s) => onUdp.call(handlers, s), opts.maxUdpSessions ?? 16_384, opts.udpIdleTimeoutMs ?? 60_000);
    this.ip = new IpInput(this, link.vnetHdr, this.reassembler, this.forwarder, this.udp, this.icmp);
    this.stats = newStackStats(this.forwarder);
  }

  /** Starts reading the link. */
  start(): void {
    this.link.start(this);
  }

  /** Stops the timer and closes the link; flows are abandoned. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.link.close();
  }

  /** Tells `o` of every dropped packet from now on (null: nobody; one check per drop). */
  observeDrops(o: DropObserver | null): void {
    this.dropObserver = o;
  }

  // ------------------------------------------------------------------ input

  onBatch(buf: Uint8Array, count: number): void {
    this.now = this.clock();
    this.inBatch = true;
    const fw = this.forwarder;
    fw.beginBatch(buf);
    const vlen = this.vnetLen;
    let off = 0;
    for (let i = 0; i < count; i++) {
      const len = readRecordLength(buf, off);
      fw.recordOff = off;
      // Past the batch's SYN budget a bare SYN is dropped before any parsing
      // or checksum: under a flood most SYNs cost only this look.
      if (fw.synBudgetFull && isBareSyn(buf, off + 4 + vlen, len - vlen)) {
        this.stats.rxPackets++;
        this.stats.rxBytes += len;
        this.drop('syn_budget');
      } else {
        this.inputGuarded(buf, off + 4, len);
      }
      off += recordSize(len);
    }
    // Established flows first: the batch's new SYNs only now, and a bounded
    // number of them (a flood costs bounded work per batch).
    const deferred = fw.endFirstPass();
    for (let i = 0; i < deferred; i++) {
      const o = fw.deferredAt(i);
      fw.recordOff = o;
      this.inputGuarded(buf, o + 4, readRecordLength(buf, o));
    }
    fw.endBatch();
    this.inBatch = false;
    this.runDirty();
  }

  private inputGuarded(buf: Uint8Array, off: number, len: number): void {
    try {
      this.ip.input(buf, off, len);
    } catch (err) {
      // A bug reached by some packet must cost that packet, not every
      // flow: count it and say it once; the tests assert it stays 0.
      this.drop('internal_error');
      if (this.stats.drops.internal_error === 1) process.emitWarning(`packet input failed: ${(err as Error).stack ?? String(err)}`, { code: 'SLUICE_STACK_INTERNAL' });
    }
  }

  onLinkError(err: Error): void {
    // The device is gone; nothing more will arrive. Surface it once.
    process.emitWarning(err.message, { code: 'SLUICE_LINK' });
  }

  /**
   * From now on echo requests follow `policy` (src/ip/echo-relay.ts:
   * forwarded upstream for real, answered, refused or dropped) instead of
   * being answered here. Returns the relay, whose upstream sockets deliver to it.
   */
  forwardEchoes(policy: EchoPolicy): EchoRelay {
    const relay = new EchoRelay(this, this.icmp, policy);
    this.icmp.forwarder = relay;
    return relay;
  }

  /** Processes one packet (with its virtio header when the link has one). */
  input(buf: Uint8Array, off: number, len: number): void {
    this.ip.input(buf, off, len);
  }

  /**
   * An ICMP destination unreachable quoting `quote` (an IP header as the
   * client sent it and the start of its payload), written into the TUN: its
   * source is the quote's destination, and the kernel routes it to the
   * client. For sessions that did not come through the TUN (TPROXY), so the
   * client fails at once as it would behind the TUN.
   */
  injectUnreachable(family: number, kind: UnreachableKind, quote: Uint8Array): void {
    if (this.closed) return;
    this.icmp.sendUnreachable(family, kind, quote, 0, quote.length);
    this.scheduleFlush();
  }

  /** SegmentSink: called by TcpConnection.dispatch for the current flow. */
  emitSegment(_conn: TcpConnection, repr: TcpRepr, data: Uint8Array | null, dataOff: number, dataLen: number): void {
    const flow = this.currentFlow!;
    // The connection knows no addresses or ports: we answer as the destination.
    repr.srcPort = flow.dstPort;
    repr.dstPort = flow.srcPort;
    this.writer.tcp(flow, repr, data, dataOff, dataLen, flow.connection!.sendMss);
  }

  // ------------------------------------------------------- dispatch & timers

  markDirty(flow: TcpFlow): void {
    if (flow.inDirtyList) return;
    flow.inDirtyList = true;
    flow.nextDirty = null;
    if (this.dirtyTail === null) this.dirtyHead = flow;
    else this.dirtyTail.nextDirty = flow;
    this.dirtyTail = flow;
    if (!this.inBatch) this.scheduleFlush();
  }

  /** StackDriver: the dirty list dispatches the flow again at the end of the batch (which then finds little due). */
  dispatchNow(flow: TcpFlow): void {
    const conn = flow.connection;
    if (conn === null || this.closed) return;
    const outer = this.currentFlow;
    this.currentFlow = flow;
    conn.dispatch(this.now, this);
    this.currentFlow = outer;
  }

  /** FlowHost */
  handshakeDone(flow: TcpFlow): void {
    this.forwarder.handshakeDone(flow);
  }

  /** FlowHost */
  flowClosed(flow: TcpFlow): void {
    this.forwarder.flowClosed(flow);
  }

  /** FlowHost: the forwarder's running loss counts (the stack's stats read them). */
  get tcpTotals(): TcpConnectionCounts {
    return this.forwarder.tcpTotals;
  }

  refreshNow(): number {
    return (this.now = this.clock());
  }

  /**
   * Work queued outside a TUN batch (the application wrote, ended or
   * destroyed a stream; a timer fired elsewhere) runs once the event loop's
   * poll phase is over, not after each callback: every socket event of one
   * poll (a response and its EOF, many flows' replies) leaves in one TUN
   * write (issue 10: the handshake's and teardown's segments coalesce).
   */
  scheduleFlush(): void {
    if (this.flushScheduled || this.inBatch) return;
    this.flushScheduled = true;
    setImmediate(this.flushBound);
  }

  private flushDeferred(): void {
    this.flushScheduled = false;
    if (this.closed) return;
    this.now = this.clock();
    this.runDirty();
    this.link.flush();
  }

  /** Stream notifications, then dispatch, for every flow touched this turn. */
  private runDirty(): void {
    let guard = 0;
    while (this.dirtyHead !== null) {
      const flow = this.dirtyHead;
      this.dirtyHead = flow.nextDirty;
      if (this.dirtyHead === null) this.dirtyTail = null;
      flow.nextDirty = null;
      flow.inDirtyList = false;
      if (++guard > 1_000_000) break; // a flow re-marking itself forever is a bug; never hang
      if (flow.deliverNotifications()) continue;
      const conn = flow.connection;
      if (conn === null) continue;
      this.currentFlow = flow;
        conn.dispatch(this.now, this);
      this.currentFlow = null;
      let at = conn.pollAt();
      if (flow.decisionDeadline < at) at = flow.decisionDeadline;
      if (at === Infinity) this.wheel.cancel(flow);
      else this.wheel.schedule(flow, at);
    }
    this.armTimer();
  }

  /** The earliest deadline of any flow, session or fragment queue (Infinity when none), as smoltcp's poll_at. */
  pollAt(): number {
    const next = this.wheel.nextDeadline();
    const frag = this.reassembler.pollAt();
    return frag < next ? frag : next;
  }

  armTimer(): void {
    if (this.closed) return;
    const next = this.pollAt();
    if (next === Infinity) return;
    if (this.timer !== null && next >= this.timerDeadline) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerDeadline = next;
    const delay = next - this.clock();
    this.timer = setTimeout(this.timerBound, delay > 1 ? Math.ceil(delay) : 1);
    this.timer.unref();
  }

  private onTimerFired(): void {
    this.timer = null;
    this.timerDeadline = Infinity;
    this.poll(this.clock());
  }

  /**
   * Runs every timer due by `now` (pending decisions, connection timers,
   * UDP idle, fragment reassembly), dispatches what they produced and
   * flushes the link: the timer's own work, with the clock given. Tests
   * drive the stack's time with it instead of sleeping; `now` comes from
   * the same clock as the `clock` option, and never goes backwards.
   */
  poll(now: number): void {
    if (this.closed) return;
    this.now = now;
    this.reassembler.expire(now);
    this.wheel.advance(now, this);
    this.runDirty();
    this.link.flush();
  }

  /** WheelHandler: a flow's or session's deadline passed. */
  onTimer(entry: WheelEntry, now: number): void {
    if (entry instanceof TcpFlow) this.forwarder.onTimer(entry, now);
    else this.udp.onTimer(entry as UdpSession, now);
  }

  /** Counts a dropped packet (StackDriver). */
  drop(reason: DropReason): void {
    this.stats.drops[reason]++;
    if (this.dropObserver !== null) this.dropObserver.packetDropped(reason, this.inBatch ? this.forwarder.recordOff : -1);
  }
}
