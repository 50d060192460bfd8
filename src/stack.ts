/**
 * The userspace TCP/IP stack: wires link -> ip -> tcp | udp | icmp and owns
 * the one timer (ENGINEERING.md). Every packet the kernel routes into the
 * TUN is answered as if sluice were its destination: a SYN to any address
 * and port becomes a flow the application above accepts, resets or drops
 * (possibly later, after asking an upstream), and accepted flows are handed
 * over as Duplex streams carrying the original 4-tuple.
 *
 * SYN floods (RFC 4987): past `synCookieThreshold` half-open flows a SYN is
 * answered statelessly with a SYN cookie (src/tcp/syn-cookie.ts) and the
 * application hears of the flow only when the client's ACK returns the
 * cookie; a batch's new SYNs are handled after its other segments and at
 * most `synsPerBatch` of them. Segments onto a pending SYN's tuple change it
 * only when they pass the RFC 5961 checks (pendingSegment).
 *
 * Per batch: parse every record, feed connections (`process`), then run the
 * stream-side notifications and `dispatch` every connection that has
 * something to send, and let the link flush once. Nothing here allocates
 * per packet on the established-flow path.
 */
import { FlowTable, mapIpv4 } from './ip/flow-table.js';
import { FragmentReassembler } from './ip/reassembly.js';
import { TimerWheel, type WheelEntry } from './timer-wheel.js';
import type { LinkEndpoint, LinkReceiver } from './link/link.js';
import { readRecordLength, recordSize } from './link/records.js';
import { WireError, wireErrorName } from './wire/errors.js';
import { newIpv4Repr, parseIpv4, isFragment, readIpv4Addr, formatIpv4 } from './wire/ipv4.js';
import { newIpv6Repr, parseIpv6, isIpv6Fragment, formatIpv6 } from './wire/ipv6.js';
import { TCP_ACK, TCP_RST, TCP_SYN, TCP_FIN, copyTcpRepr, newTcpRepr, parseTcp, verifyL4Checksum, type TcpRepr } from './wire/tcp.js';
import { newUdpRepr, parseUdp } from './wire/udp.js';
import { pseudoHeaderSumV4, pseudoHeaderSumV6 } from './wire/checksum.js';
import { isUnicastAt } from './wire/address-class.js';
import {
  ICMP_DEST_UNREACHABLE,
  ICMP_ECHO_REQUEST,
  ICMP_TIME_EXCEEDED,
  ICMP_UNREACH_ADMIN_PROHIBITED,
  ICMP_UNREACH_FRAG_NEEDED,
  ICMP_UNREACH_HOST,
  ICMP_UNREACH_NET,
  ICMP_UNREACH_PORT,
  ICMP_UNREACH_PROTOCOL,
  newIcmpRepr,
  parseIcmpv4,
} from './wire/icmp.js';
import {
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_PACKET_TOO_BIG,
  ICMPV6_UNREACH_ADDRESS,
  ICMPV6_UNREACH_ADMIN,
  ICMPV6_UNREACH_NO_ROUTE,
  ICMPV6_UNREACH_PORT,
  isIcmpv6Error,
  parseIcmpv6,
} from './wire/icmpv6.js';
import { GSO_NONE, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_HDR_LEN, newVnetRepr, parseVnet } from './wire/vnet.js';
import { TcpConnection, receiveWindowShift, tcpTimestampClock, type SegmentSink } from './tcp/connection.js';
import { SynCookies, cookieSackPermitted, cookieTimestamp, cookieWindowScale } from './tcp/syn-cookie.js';
import { defaultTcpConfig, validateTcpConfig, type TcpConfig } from './tcp/config.js';
import { IsnGenerator } from './tcp/isn.js';
import { PacketWriter } from './stack/packet-writer.js';
import { TcpFlow, type FlowHost } from './stack/tcp-flow.js';
import type { TcpStream, FlowEndpoints } from './stack/tcp-stream.js';
import { UdpSession, type UdpHost } from './stack/udp-session.js';

export type UnreachableKind = 'port' | 'host' | 'net' | 'admin';

/** A new TCP flow waiting for the application's decision. */
export interface TcpFlowRequest extends FlowEndpoints {
  /** Completes the handshake (SYN-ACK goes out now) and returns the stream. */
  accept(): TcpStream;
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
}

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
   * New SYNs handled per input batch (the batch's other segments go first;
   * SYNs past this are dropped and counted as syn_budget): a SYN flood costs
   * bounded work per batch, and established flows are served first. Default 32.
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

/** Counters, all plain numbers; `drops` is keyed by reason. */
export interface StackStats {
  rxPackets: number;
  rxBytes: number;
  tcpFlowsAccepted: number;
  tcpFlowsRejected: number;
  tcpFlowsActive: number;
  pendingFlows: number;
  /** SYNs waiting for a decision plus connections in SYN-RECEIVED. */
  halfOpenFlows: number;
  /** SYN-ACKs sent with a SYN cookie; cookie ACKs that made a connection; ACKs whose cookie failed. */
  synCookiesSent: number;
  synCookiesValidated: number;
  synCookiesRejected: number;
  udpSessionsActive: number;
  udpSessionsTotal: number;
  icmpEchoReplies: number;
  icmpErrorsIn: number;
  /** Of closed connections: segments retransmitted, RTO expiries, lost retransmissions repaired by SACK. */
  tcpRetransmits: number;
  tcpTimeouts: number;
  tcpLostRetransmits: number;
  tcpLossProbes: number;
  tcpZeroWindowsSent: number;
  tcpWindowProbes: number;
  /** ICMP errors that matched a flow and passed the RFC 5927 check. */
  icmpErrorsApplied: number;
  icmpErrorsOut: number;
  resetsSent: number;
  fragmentsReassembled: number;
  drops: Record<string, number>;
}

const DROP_REASONS = [
  'truncated',
  'bad_version',
  'bad_header_length',
  'bad_total_length',
  'bad_checksum',
  'bad_option',
  'bad_extension_header',
  'bad_data_offset',
  'unsupported',
  'bad_gso',
  'bad_length',
  'unknown_protocol',
  'pending_full',
  'pending_evicted',
  'syn_budget',
  'pending_rst_ignored',
  'pending_segment_ignored',
  'cookie_ack_unusable',
  'flows_full',
  'udp_full',
  'no_flow',
  'fragment',
  'icmp_other',
  'icmp_error_ignored',
  'icmp_error_unmatched',
  'internal_error',
  'bad_address',
  'port_zero',
  'handler_error',
] as const;

/** RFC 6528 needs the local/remote pair; our "local" is the client's destination. */
const ISN_SCRATCH = new Uint8Array(36);

class FlowRequest implements TcpFlowRequest {
  decided = false;
  readonly established: boolean;
  readonly family: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;

  constructor(
    private readonly stack: Stack,
    readonly flow: TcpFlow,
  ) {
    const e = flow.endpoints!;
    this.family = e.family;
    this.remoteAddress = e.remoteAddress;
    this.remotePort = e.remotePort;
    this.localAddress = e.localAddress;
    this.localPort = e.localPort;
    this.established = flow.connection !== null;
  }

  private controller: AbortController | null = null;

  get signal(): AbortSignal {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.flow.closedReason !== null) this.controller.abort(new StackError(`flow ${this.flow.closedReason} before a decision`, 'SLUICE_FLOW_EXPIRED'));
    }
    return this.controller.signal;
  }

  /** @internal the stack forgot the flow before a decision */
  cancelled(): void {
    if (this.controller !== null && !this.controller.signal.aborted) {
      this.controller.abort(new StackError(`flow ${this.flow.closedReason ?? 'timeout'} before a decision`, 'SLUICE_FLOW_EXPIRED'));
    }
  }

  accept(): TcpStream {
    this.decide('accept');
    return this.stack.acceptFlow(this.flow);
  }

  reset(): void {
    this.decide('reset');
    this.stack.refuseFlow(this.flow, 'reset');
  }

  unreachable(kind: UnreachableKind): void {
    this.decide('unreachable');
    this.stack.refuseFlow(this.flow, kind);
  }

  drop(): void {
    this.decide('drop');
    this.stack.refuseFlow(this.flow, 'drop');
  }

  private decide(what: string): void {
    if (this.decided) throw new StackError(`flow already decided; cannot ${what} it`, 'SLUICE_FLOW_DECIDED');
    if (this.flow.closedReason !== null) throw new StackError('flow expired before a decision', 'SLUICE_FLOW_EXPIRED');
    this.decided = true;
  }
}

export class StackError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** Per-flow state the stack keeps while a SYN waits for a decision. */
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

const NO_QUOTE = new Uint8Array(0);
/** Resets per pending SYN per second answering ACK-bearing segments (same budget as challenge ACKs). */
const PENDING_RSTS_PER_SECOND = 10;


export class Stack implements LinkReceiver, FlowHost, UdpHost, SegmentSink {
  readonly stats: StackStats;
  private readonly link: LinkEndpoint;
  private readonly handlers: StackHandlers;
  private readonly clock: () => number;
  private readonly tcpConfig: TcpConfig;
  private readonly writer: PacketWriter;
  private readonly tcpFlows = new FlowTable<TcpFlow>();
  private readonly udpSessions = new FlowTable<UdpSession>();
  private readonly pending = new Map<TcpFlow, PendingSyn>();
  private readonly wheel: TimerWheel<WheelEntry>;
  private readonly reassembler = new FragmentReassembler();
  private readonly isn = new IsnGenerator();
  private readonly cookies: SynCookies;
  private readonly synCookieThreshold: number;
  private readonly synsPerBatch: number;
  /** Until when cookie ACKs are looked for (two secret periods after the last cookie). */
  private cookiesValidUntil = -Infinity;
  private readonly cookiePeriodMs: number;
  private synReceivedCount = 0;
  /** Record offsets of this batch's new SYNs, handled after its other segments. */
  private readonly deferredSyns: Int32Array;
  private deferredCount = 0;
  private synsThisBatch = 0;
  private batchBuf: Uint8Array | null = null;
  private recordOff = 0;
  private deferring = false;
  private readonly maxPending: number;
  private readonly pendingTimeoutMs: number;
  private readonly pendingEvictAfterMs: number;
  private readonly maxTcpFlows: number;
  private readonly maxUdpSessions: number;
  private readonly udpIdleMs: number;
  private readonly icmpEcho: boolean;
  // scratch reprs, reused for every packet
  private readonly vnet = newVnetRepr();
  private readonly ip4 = newIpv4Repr();
  private readonly ip6 = newIpv6Repr();
  private readonly tcp = newTcpRepr();
  private readonly reply = newTcpRepr();
  private readonly udp = newUdpRepr();
  private readonly icmp = newIcmpRepr();
  private now: number;
  private dirtyHead: TcpFlow | null = null;
  private dirtyTail: TcpFlow | null = null;
  private inBatch = false;
  private flushScheduled = false;
  private timer: NodeJS.Timeout | null = null;
  private timerDeadline = Infinity;
  private currentFlow: TcpFlow | null = null;
  private closed = false;
  private readonly flushBound = (): void => this.flushDeferred();
  private readonly timerBound = (): void => this.onTimerFired();

  constructor(link: LinkEndpoint, handlers: StackHandlers, opts: StackOptions = {}) {
    this.link = link;
    this.handlers = handlers;
    this.clock = opts.clock ?? (() => performance.now());
    this.now = this.clock();
    this.writer = new PacketWriter(link, { tso: opts.tso ?? true });
    const mss = link.mtu - 40;
    this.tcpConfig = validateTcpConfig({ ...defaultTcpConfig(), mss, ...opts.tcp });
    this.wheel = new TimerWheel<WheelEntry>(this.now, 4, 1024);
    this.maxPending = opts.maxPendingFlows ?? 1024;
    this.pendingTimeoutMs = opts.pendingTimeoutMs ?? 30_000;
    this.pendingEvictAfterMs = opts.pendingEvictAfterMs ?? 1000;
    this.synCookieThreshold = opts.synCookieThreshold ?? 128;
    this.synsPerBatch = opts.synsPerBatch ?? 32;
    this.cookiePeriodMs = opts.synCookiePeriodMs ?? 30_000;
    this.cookies = new SynCookies(this.now, { periodMs: this.cookiePeriodMs });
    this.deferredSyns = new Int32Array(this.synsPerBatch);
    this.maxTcpFlows = opts.maxTcpFlows ?? 65_536;
    this.maxUdpSessions = opts.maxUdpSessions ?? 16_384;
    this.udpIdleMs = opts.udpIdleTimeoutMs ?? 60_000;
    this.icmpEcho = (opts.icmpEcho ?? 'reply') === 'reply';
    const drops: Record<string, number> = {};
    for (const r of DROP_REASONS) drops[r] = 0;
    this.stats = {
      rxPackets: 0,
      rxBytes: 0,
      tcpFlowsAccepted: 0,
      tcpFlowsRejected: 0,
      tcpFlowsActive: 0,
      pendingFlows: 0,
      halfOpenFlows: 0,
      synCookiesSent: 0,
      synCookiesValidated: 0,
      synCookiesRejected: 0,
      udpSessionsActive: 0,
      udpSessionsTotal: 0,
      icmpEchoReplies: 0,
      icmpErrorsIn: 0,
      tcpRetransmits: 0,
      tcpTimeouts: 0,
      tcpLostRetransmits: 0,
      tcpLossProbes: 0,
      tcpZeroWindowsSent: 0,
      tcpWindowProbes: 0,
      icmpErrorsApplied: 0,
      icmpErrorsOut: 0,
      resetsSent: 0,
      fragmentsReassembled: 0,
      drops,
    };
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

  // ------------------------------------------------------------------ input

  onBatch(buf: Uint8Array, count: number): void {
    this.now = this.clock();
    this.inBatch = true;
    this.batchBuf = buf;
    this.deferring = true;
    this.deferredCount = 0;
    this.synsThisBatch = 0;
    let off = 0;
    for (let i = 0; i < count; i++) {
      const len = readRecordLength(buf, off);
      this.recordOff = off;
      // Past the batch's SYN budget a bare SYN is dropped before any parsing
      // or checksum: under a flood most SYNs cost only this look.
      if (this.deferredCount >= this.deferredSyns.length && isBareSyn(buf, off + 4 + (this.link.vnetHdr ? VNET_HDR_LEN : 0), len - (this.link.vnetHdr ? VNET_HDR_LEN : 0))) {
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
    this.deferring = false;
    for (let i = 0; i < this.deferredCount; i++) {
      const o = this.deferredSyns[i]!;
      this.inputGuarded(buf, o + 4, readRecordLength(buf, o));
    }
    this.batchBuf = null;
    this.inBatch = false;
    this.runDirty();
  }

  private inputGuarded(buf: Uint8Array, off: number, len: number): void {
    try {
      this.input(buf, off, len);
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

  /** Processes one packet (with its virtio header when the link has one). */
  input(buf: Uint8Array, off: number, len: number): void {
    this.stats.rxPackets++;
    this.stats.rxBytes += len;
    let checksumTrusted = false;
    if (this.link.vnetHdr) {
      const e = parseVnet(buf, off, len, this.vnet);
      if (e !== WireError.Ok) return this.drop(wireErrorName(e));
      // NEEDS_CSUM: the field holds only the pseudo-header seed; the data
      // came from the local kernel, so there is nothing to verify.
      // DATA_VALID: the kernel verified it.
      checksumTrusted = (this.vnet.flags & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)) !== 0 || this.vnet.gsoType !== GSO_NONE;
      off += VNET_HDR_LEN;
      len -= VNET_HDR_LEN;
      if (len <= 0) return this.drop('truncated');
    }
    const version = buf[off]! >> 4;
    if (version === 4) this.ipv4Input(buf, off, len, checksumTrusted);
    else if (version === 6) this.ipv6Input(buf, off, len, checksumTrusted);
    else this.drop('bad_version');
  }

  private ipv4Input(buf: Uint8Array, off: number, len: number, trusted: boolean): void {
    const ip = this.ip4;
    const e = parseIpv4(buf, off, len, ip, !trusted);
    if (e !== WireError.Ok) return this.drop(wireErrorName(e));
    if (isFragment(ip)) {
      const key = `4|${readIpv4Addr(buf, ip.srcOffset)}|${readIpv4Addr(buf, ip.dstOffset)}|${ip.protocol}|${ip.id}`;
      const header = ip.fragmentOffset === 0 ? buf.subarray(off, off + ip.headerLength) : null;
      const done = this.reassembler.push(
        this.now,
        key,
        ip.fragmentOffset,
        ip.moreFragments,
        buf.subarray(ip.payloadOffset, ip.payloadOffset + ip.payloadLength),
        header,
      );
      this.armTimer();
      if (done === null) return;
      this.stats.fragmentsReassembled++;
      const h = done.firstHeader;
      // Checksums of a reassembled datagram are always verified: fragments
      // never come with offload metadata.
      return this.transportInput(4, h, 12, 16, h[9]!, done.payload, 0, done.payload.length, false, h, 0, h.length);
    }
    this.transportInput(4, buf, ip.srcOffset, ip.dstOffset, ip.protocol, buf, ip.payloadOffset, ip.payloadLength, trusted, buf, off, ip.totalLength);
  }

  private ipv6Input(buf: Uint8Array, off: number, len: number, trusted: boolean): void {
    const ip = this.ip6;
    const e = parseIpv6(buf, off, len, ip);
    if (e !== WireError.Ok) return this.drop(wireErrorName(e));
    if (isIpv6Fragment(ip)) {
      const key = `6|${formatIpv6(buf, ip.srcOffset)}|${formatIpv6(buf, ip.dstOffset)}|${ip.fragmentId}`;
      let header: Uint8Array | null = null;
      if (ip.fragmentOffset === 0) {
        // Keep the fixed header with the upper protocol in its next-header
        // byte: the reassembled datagram is delivered as if unfragmented.
        buf[off + 6] = ip.upperProtocol;
        header = buf.subarray(off, off + 40);
      }
      const done = this.reassembler.push(this.now, key, ip.fragmentOffset, ip.moreFragments, buf.subarray(ip.upperOffset, ip.upperOffset + ip.upperLength), header);
      this.armTimer();
      if (done === null) return;
      this.stats.fragmentsReassembled++;
      const h = done.firstHeader;
      return this.transportInput(6, h, 8, 24, h[6]!, done.payload, 0, done.payload.length, false, h, 0, h.length);
    }
    this.transportInput(6, buf, ip.srcOffset, ip.dstOffset, ip.upperProtocol, buf, ip.upperOffset, ip.upperLength, trusted, buf, off, 40 + ip.payloadLength);
  }

  /**
   * Transport demux. Addresses live in `abuf` (the IP header), the L4 bytes
   * in `l4buf` (the same buffer unless reassembled). `pkt`/`pktOff`/`pktLen`
   * name the IP packet for ICMP quotes.
   */
  private transportInput(
    family: number,
    abuf: Uint8Array,
    srcOff: number,
    dstOff: number,
    protocol: number,
    l4buf: Uint8Array,
    l4Off: number,
    l4Len: number,
    trusted: boolean,
    pkt: Uint8Array,
    pktOff: number,
    pktLen: number,
  ): void {
    if (protocol === 6) {
      if (!trusted) {
        const pseudo = family === 4 ? pseudoHeaderSumV4(abuf, srcOff, dstOff, 6, l4Len) : pseudoHeaderSumV6(abuf, srcOff, dstOff, 6, l4Len);
        if (!verifyL4Checksum(l4buf, l4Off, l4Len, pseudo)) return this.drop('bad_checksum');
      }
      const e = parseTcp(l4buf, l4Off, l4Len, this.tcp);
      if (e !== WireError.Ok) return this.drop(wireErrorName(e));
      this.tcpInput(family, abuf, srcOff, dstOff, l4buf, pkt, pktOff, pktLen, l4Off);
    } else if (protocol === 17) {
      const e = parseUdp(l4buf, l4Off, l4Len, this.udp);
      if (e !== WireError.Ok) return this.drop(wireErrorName(e));
      // RFC 768: checksum 0 means "none" (IPv4 only; RFC 8200 8.1 forbids it for IPv6).
      if (!trusted && (this.udp.checksum !== 0 || family === 6)) {
        const pseudo = family === 4 ? pseudoHeaderSumV4(abuf, srcOff, dstOff, 17, this.udp.length) : pseudoHeaderSumV6(abuf, srcOff, dstOff, 17, this.udp.length);
        if (!verifyL4Checksum(l4buf, l4Off, this.udp.length, pseudo)) return this.drop('bad_checksum');
      }
      this.udpInput(family, abuf, srcOff, dstOff, l4buf, pkt, pktOff, pktLen);
    } else if (protocol === 1 && family === 4) {
      const e = parseIcmpv4(l4buf, l4Off, l4Len, this.icmp, !trusted);
      if (e !== WireError.Ok) return this.drop(wireErrorName(e));
      this.icmpInput(4, abuf, srcOff, dstOff, l4buf);
    } else if (protocol === 58 && family === 6) {
      const pseudo = trusted ? null : pseudoHeaderSumV6(abuf, srcOff, dstOff, 58, l4Len);
      const e = parseIcmpv6(l4buf, l4Off, l4Len, this.icmp, pseudo);
      if (e !== WireError.Ok) return this.drop(wireErrorName(e));
      this.icmpInput(6, abuf, srcOff, dstOff, l4buf);
    } else {
      this.drop('unknown_protocol');
      // RFC 1122 3.2.2.1 / RFC 4443 3.1: protocol unreachable would be honest,
      // but the TUN carries only what the policy routes here; stay silent.
    }
  }

  // -------------------------------------------------------------------- TCP

  private tcpInput(
    family: number,
    abuf: Uint8Array,
    srcOff: number,
    dstOff: number,
    l4buf: Uint8Array,
    pkt: Uint8Array,
    pktOff: number,
    pktLen: number,
    l4Off: number,
  ): void {
    const seg = this.tcp;
    const flow = this.tcpFlows.lookup(family, 6, abuf, srcOff, dstOff, seg.srcPort, seg.dstPort);
    if (flow !== null) {
      const conn = flow.connection;
      if (conn !== null) {
        conn.process(this.now, seg, l4buf, seg.payloadOffset, seg.payloadLength);
        this.markDirty(flow);
        return;
      }
      this.pendingSegment(flow, seg);
      return;
    }
    if ((seg.flags & TCP_RST) !== 0) return; // RFC 9293 3.10.7.1: never answer a RST
    // Only unicast endpoints can be answered or relayed (src/wire/address-class.ts):
    // nothing goes back to a multicast, broadcast or unspecified address.
    if (!isUnicastAt(family, abuf, srcOff) || !isUnicastAt(family, abuf, dstOff)) return this.drop('bad_address');
    if ((seg.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) {
      // Port 0 is reserved (RFC 6335 6): no upstream can be dialled to it.
      // Refused as a host without a listener would: RFC 9293 3.10.7.1 RST.
      if (seg.dstPort === 0 || seg.srcPort === 0) {
        this.drop('port_zero');
        return this.sendResetFor(family, abuf, srcOff, dstOff, seg);
      }
      if (this.inBatch) {
        if (this.deferring && l4buf === this.batchBuf) {
          if (this.deferredCount >= this.deferredSyns.length) return this.drop('syn_budget');
          this.deferredSyns[this.deferredCount++] = this.recordOff;
          return;
        }
        if (++this.synsThisBatch > this.synsPerBatch) return this.drop('syn_budget');
      }
      if (this.halfOpenCount() >= this.synCookieThreshold) {
        this.sendCookie(family, abuf, srcOff, dstOff);
        return;
      }
      this.newFlow(family, abuf, srcOff, dstOff, pkt, pktOff, pktLen, l4Off);
      return;
    }
    if ((seg.flags & (TCP_SYN | TCP_ACK)) === TCP_ACK && this.now <= this.cookiesValidUntil && this.cookieFlow(family, abuf, srcOff, dstOff, l4buf)) return;
    // RFC 9293 3.10.7.1 (CLOSED): anything else gets a reset.
    this.drop('no_flow');
    this.sendResetFor(family, abuf, srcOff, dstOff, seg);
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
    const f = seg.flags;
    if ((f & TCP_RST) !== 0) {
      if (seg.seq === ((p.syn.seq + 1) >>> 0)) this.forgetPending(flow, 'reset');
      else this.drop('pending_rst_ignored');
      return;
    }
    if ((f & TCP_SYN) !== 0 && (f & TCP_ACK) === 0) return;
    if ((f & TCP_ACK) === 0) return this.drop('pending_segment_ignored');
    if (this.now - p.rstWindowAt >= 1000) {
      p.rstWindowAt = this.now;
      p.rstsInWindow = 0;
    }
    if (p.rstsInWindow >= PENDING_RSTS_PER_SECOND) return this.drop('pending_segment_ignored');
    p.rstsInWindow++;
    const r = this.reply;
    resetRepr(r, flow.dstPort, flow.srcPort, seg.ack, 0, TCP_RST);
    this.writer.tcp(flow, r, null, 0, 0, 0);
    this.stats.resetsSent++;
  }

  private halfOpenCount(): number {
    return this.pending.size + this.synReceivedCount;
  }

  /**
   * RFC 4987 3.6: answers the SYN in `this.tcp` with a SYN-ACK whose ISN is
   * a cookie and keeps nothing. The options are the ones the connection
   * built from the cookie ACK will use (TcpConnection.acceptCookie): our MSS,
   * and window scale and SACK only when the SYN offered timestamps, whose
   * low bits carry them back (syn-cookie.ts).
   */
  private sendCookie(family: number, abuf: Uint8Array, srcOff: number, dstOff: number): void {
    const seg = this.tcp;
    const cfg = this.tcpConfig;
    const f = this.scratchAddresses;
    f.family = family;
    copyAddresses(family, abuf, srcOff, dstOff, f);
    const clientMss = seg.mss > 0 ? seg.mss : 536;
    const iss = this.cookies.isn(this.now, family, f.srcAddr, f.dstAddr, seg.srcPort, seg.dstPort, seg.seq, clientMss);
    const r = this.reply;
    r.srcPort = seg.dstPort;
    r.dstPort = seg.srcPort;
    r.seq = iss;
    r.ack = (seg.seq + 1) >>> 0;
    r.flags = TCP_SYN | TCP_ACK;
    r.window = cfg.recvBufferBytes > 0xffff ? 0xffff : cfg.recvBufferBytes;
    r.urgent = 0;
    r.mss = family === 4 ? cfg.mss : cfg.mss - 20;
    const ts = cfg.timestamps && seg.hasTimestamps;
    r.hasTimestamps = ts;
    r.windowScale = ts && cfg.windowScale && seg.windowScale >= 0 ? receiveWindowShift(cfg) : -1;
    r.sackPermitted = ts && cfg.sack && seg.sackPermitted;
    if (ts) {
      r.tsVal = cookieTimestamp(tcpTimestampClock(this.now, iss), r.windowScale >= 0 ? (seg.windowScale > 14 ? 14 : seg.windowScale) : -1, r.sackPermitted);
      r.tsEcr = seg.tsVal;
    }
    r.sackCount = 0;
    this.writer.tcp(f, r, null, 0, 0, 0);
    this.stats.synCookiesSent++;
    this.cookiesValidUntil = this.now + 2 * this.cookiePeriodMs;
  }

  /**
   * An ACK with no flow while cookies are out: when SEG.ACK - 1 is a cookie
   * we made for this tuple and SEG.SEQ - 1, the client completed a
   * handshake we answered statelessly. Builds the connection (ESTABLISHED
   * by this very ACK, its data kept) and only now asks the application,
   * which may dial: spoofed SYNs never get this far. Returns false when the
   * ACK is not a cookie ACK (the caller resets it as before).
   */
  private cookieFlow(family: number, abuf: Uint8Array, srcOff: number, dstOff: number, l4buf: Uint8Array): boolean {
    const seg = this.tcp;
    const f = this.scratchAddresses;
    f.family = family;
    copyAddresses(family, abuf, srcOff, dstOff, f);
    const cookie = (seg.ack - 1) >>> 0;
    const clientIsn = (seg.seq - 1) >>> 0;
    const mss = this.cookies.check(this.now, family, f.srcAddr, f.dstAddr, seg.srcPort, seg.dstPort, clientIsn, cookie);
    if (mss === 0) {
      this.stats.synCookiesRejected++;
      return false;
    }
    if (this.pending.size >= this.maxPending) {
      this.drop('pending_full');
      return false;
    }
    if (this.tcpFlows.size >= this.maxTcpFlows) {
      this.drop('flows_full');
      return false;
    }
    const cfg = this.tcpConfig;
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
    const flow = new TcpFlow(this, family, seg.srcPort, seg.dstPort);
    copyAddresses(family, abuf, srcOff, dstOff, flow);
    flow.endpoints = endpointsOf(family, abuf, srcOff, dstOff, seg.srcPort, seg.dstPort);
    const ourMss = family === 4 ? cfg.mss : cfg.mss - 20;
    const conn = TcpConnection.acceptCookie(cfg, this.now, syn, { iss: cookie, mss: ourMss }, flow);
    if (this.writer.tso) conn.useTso(this.writer.maxTcpPayload);
    conn.process(this.now, seg, l4buf, seg.payloadOffset, seg.payloadLength);
    if (conn.state !== 'ESTABLISHED' && conn.state !== 'CLOSE-WAIT') {
      this.drop('cookie_ack_unusable');
      return true;
    }
    this.stats.synCookiesValidated++;
    flow.connection = conn;
    this.tcpFlows.insert(flow);
    this.stats.tcpFlowsActive++;
    const pendingSyn: PendingSyn = { request: null, syn, quote: NO_QUOTE, arrivedAt: this.now, rstWindowAt: -Infinity, rstsInWindow: 0 };
    this.pending.set(flow, pendingSyn);
    this.stats.pendingFlows = this.pending.size;
    this.stats.halfOpenFlows = this.halfOpenCount();
    flow.decisionDeadline = this.now + this.pendingTimeoutMs;
    this.markDirty(flow);
    const request = new FlowRequest(this, flow);
    pendingSyn.request = request;
    this.askApplication(request);
    return true;
  }

  private askApplication(request: FlowRequest): void {
    try {
      this.handlers.onTcpFlow(request);
    } catch (err) {
      // A throwing handler must not take the stack down; the flow is reset.
      if (!request.decided) request.reset();
      process.emitWarning(`onTcpFlow handler threw: ${(err as Error).message}`, { code: 'SLUICE_HANDLER' });
    }
  }

  private newFlow(family: number, abuf: Uint8Array, srcOff: number, dstOff: number, pkt: Uint8Array, pktOff: number, pktLen: number, l4Off: number): void {
    if (this.pending.size >= this.maxPending && !this.evictOldestPending()) return this.drop('pending_full');
    if (this.tcpFlows.size >= this.maxTcpFlows) return this.drop('flows_full');
    const seg = this.tcp;
    const flow = new TcpFlow(this, family, seg.srcPort, seg.dstPort);
    copyAddresses(family, abuf, srcOff, dstOff, flow);
    flow.endpoints = endpointsOf(family, abuf, srcOff, dstOff, seg.srcPort, seg.dstPort);
    const syn = newTcpRepr();
    copyTcpRepr(seg, syn);
    // The quote of an ICMP error: IP header and the TCP header.
    const quoteLen = Math.min(pktLen, l4Off - pktOff + seg.headerLength);
    const quote = pkt.slice(pktOff, pktOff + quoteLen);
    const pendingSyn: PendingSyn = { request: null, syn, quote, arrivedAt: this.now, rstWindowAt: -Infinity, rstsInWindow: 0 };
    this.pending.set(flow, pendingSyn);
    this.stats.pendingFlows = this.pending.size;
    this.stats.halfOpenFlows = this.halfOpenCount();
    this.tcpFlows.insert(flow);
    this.wheel.schedule(flow, this.now + this.pendingTimeoutMs);
    this.armTimer();
    const request = new FlowRequest(this, flow);
    pendingSyn.request = request;
    this.askApplication(request);
  }

  /** @internal FlowRequest.accept */
  acceptFlow(flow: TcpFlow): TcpStream {
    const p = this.pending.get(flow)!;
    this.pending.delete(flow);
    this.stats.pendingFlows = this.pending.size;
    this.stats.halfOpenFlows = this.halfOpenCount();
    this.now = this.clock();
    if (flow.connection !== null) {
      // Completed by a SYN cookie: the connection is open already.
      flow.decisionDeadline = Infinity;
      this.stats.tcpFlowsAccepted++;
      const open = flow.openStream();
      this.markDirty(flow);
      return open;
    }
    const iss = this.isnFor(flow);
    const mss = flow.family === 4 ? this.tcpConfig.mss : this.tcpConfig.mss - 20;
    const conn = TcpConnection.accept(this.tcpConfig, this.now, p.syn, { iss, mss }, flow);
    if (this.writer.tso) conn.useTso(this.writer.maxTcpPayload);
    flow.connection = conn;
    flow.halfOpen = true;
    this.synReceivedCount++;
    this.stats.halfOpenFlows = this.halfOpenCount();
    this.wheel.cancel(flow);
    this.stats.tcpFlowsAccepted++;
    this.stats.tcpFlowsActive++;
    const stream = flow.openStream();
    this.markDirty(flow);
    return stream;
  }

  /** @internal FlowRequest.reset/unreachable/drop */
  refuseFlow(flow: TcpFlow, how: 'reset' | 'drop' | UnreachableKind): void {
    const p = this.pending.get(flow);
    if (p === undefined) return;
    this.stats.tcpFlowsRejected++;
    const conn = flow.connection;
    if (conn !== null) {
      // Completed by a SYN cookie: whatever the refusal, the open connection ends with a RST.
      this.pending.delete(flow);
      this.stats.pendingFlows = this.pending.size;
      this.stats.halfOpenFlows = this.halfOpenCount();
      flow.decisionDeadline = Infinity;
      conn.abort();
      this.markDirty(flow);
      this.scheduleFlush();
      return;
    }
    if (how === 'reset') {
      // RFC 9293 3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
      const r = this.reply;
      resetRepr(r, flow.dstPort, flow.srcPort, 0, (p.syn.seq + 1 + p.syn.payloadLength) >>> 0, TCP_RST | TCP_ACK);
      this.writer.tcp(flow, r, null, 0, 0, 0);
      this.stats.resetsSent++;
    } else if (how !== 'drop') {
      this.sendUnreachable(flow.family, how, p.quote, 0, p.quote.length);
    }
    this.forgetPending(flow, 'aborted');
    this.scheduleFlush();
  }

  /** Makes room under a SYN flood: the oldest waiting SYN goes if it is old enough. */
  private evictOldestPending(): boolean {
    for (const [flow, p] of this.pending) {
      if (this.now - p.arrivedAt < this.pendingEvictAfterMs) return false;
      this.forgetPending(flow, 'timeout');
      this.drop('pending_evicted');
      return true;
    }
    return false;
  }

  private forgetPending(flow: TcpFlow, reason: 'reset' | 'aborted' | 'timeout'): void {
    const p = this.pending.get(flow);
    this.pending.delete(flow);
    this.stats.pendingFlows = this.pending.size;
    this.stats.halfOpenFlows = this.halfOpenCount();
    this.tcpFlows.remove(flow);
    this.wheel.cancel(flow);
    flow.closedReason = reason;
    if (p !== undefined && p.request !== null && !p.request.decided) p.request.cancelled();
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
    this.sendUnreachable(family, kind, quote, 0, quote.length);
    this.scheduleFlush();
  }

  private sendUnreachable(family: number, kind: UnreachableKind, quote: Uint8Array, off: number, len: number): void {
    if (family === 4) {
      const code = kind === 'port' ? ICMP_UNREACH_PORT : kind === 'host' ? ICMP_UNREACH_HOST : kind === 'net' ? ICMP_UNREACH_NET : ICMP_UNREACH_ADMIN_PROHIBITED;
      this.writer.icmpError(4, ICMP_DEST_UNREACHABLE, code, 0, quote, off, len);
    } else {
      const code = kind === 'port' ? ICMPV6_UNREACH_PORT : kind === 'host' ? ICMPV6_UNREACH_ADDRESS : kind === 'net' ? ICMPV6_UNREACH_NO_ROUTE : ICMPV6_UNREACH_ADMIN;
      this.writer.icmpError(6, ICMPV6_DEST_UNREACHABLE, code, 0, quote, off, len);
    }
    this.stats.icmpErrorsOut++;
  }

  private sendResetFor(family: number, abuf: Uint8Array, srcOff: number, dstOff: number, seg: TcpRepr): void {
    const r = this.reply;
    if ((seg.flags & TCP_ACK) !== 0) {
      // <SEQ=SEG.ACK><CTL=RST>
      resetRepr(r, seg.dstPort, seg.srcPort, seg.ack, 0, TCP_RST);
    } else {
      let len = seg.payloadLength;
      if ((seg.flags & TCP_SYN) !== 0) len++;
      if ((seg.flags & TCP_FIN) !== 0) len++;
      resetRepr(r, seg.dstPort, seg.srcPort, 0, (seg.seq + len) >>> 0, TCP_RST | TCP_ACK);
    }
    const f = this.scratchAddresses;
    f.family = family;
    copyAddresses(family, abuf, srcOff, dstOff, f);
    this.writer.tcp(f, r, null, 0, 0, 0);
    this.stats.resetsSent++;
  }

  private readonly scratchAddresses = { family: 4, srcAddr: new Uint8Array(16), dstAddr: new Uint8Array(16), src4: 0, dst4: 0 };

  private isnFor(flow: TcpFlow): number {
    // local = the destination the client asked for (we play it), remote = the client.
    ISN_SCRATCH.set(flow.dstAddr, 0);
    ISN_SCRATCH.set(flow.srcAddr, 16);
    ISN_SCRATCH[32] = flow.dstPort >>> 8;
    ISN_SCRATCH[33] = flow.dstPort & 0xff;
    ISN_SCRATCH[34] = flow.srcPort >>> 8;
    ISN_SCRATCH[35] = flow.srcPort & 0xff;
    return this.isn.next(this.now, ISN_SCRATCH);
  }

  /** SegmentSink: called by TcpConnection.dispatch for the current flow. */
  emitSegment(_conn: TcpConnection, repr: TcpRepr, data: Uint8Array | null, dataOff: number, dataLen: number): void {
    const flow = this.currentFlow!;
    // The connection knows no addresses or ports: we answer as the destination.
    repr.srcPort = flow.dstPort;
    repr.dstPort = flow.srcPort;
    this.writer.tcp(flow, repr, data, dataOff, dataLen, flow.connection!.sendMss);
  }

  // -------------------------------------------------------------------- UDP

  private udpInput(family: number, abuf: Uint8Array, srcOff: number, dstOff: number, l4buf: Uint8Array, pkt: Uint8Array, pktOff: number, pktLen: number): void {
    const u = this.udp;
    let s = this.udpSessions.lookup(family, 17, abuf, srcOff, dstOff, u.srcPort, u.dstPort);
    if (s === null) {
      if (this.handlers.onUdpSession === undefined) {
        this.sendUnreachable(family, 'port', pkt, pktOff, pktLen);
        return;
      }
      if (!isUnicastAt(family, abuf, srcOff) || !isUnicastAt(family, abuf, dstOff)) return this.drop('bad_address');
      if (u.dstPort === 0) {
        // Port 0 is reserved (RFC 6335 6); a datagram to it would reach the
        // outbound's socket as an invalid port. Answered as a host with no
        // socket there: ICMP port unreachable (RFC 1122 4.1.3.1).
        this.drop('port_zero');
        this.sendUnreachable(family, 'port', pkt, pktOff, pktLen < 576 ? pktLen : 576);
        return this.scheduleFlush();
      }
      // Source port 0 means "no reply expected" (RFC 768): a relay could never answer it.
      if (u.srcPort === 0) return this.drop('port_zero');
      if (this.udpSessions.size >= this.maxUdpSessions) return this.drop('udp_full');
      s = new UdpSession(this, family, u.srcPort, u.dstPort);
      // Kept for an ICMP error should the forwarder refuse the session (one
      // small copy per session, not per datagram).
      s.firstQuote = pkt.slice(pktOff, pktOff + (pktLen < 576 ? pktLen : 576));
      copyAddresses(family, abuf, srcOff, dstOff, s);
      const e = endpointsOf(family, abuf, srcOff, dstOff, u.srcPort, u.dstPort);
      s.remoteAddress = e.remoteAddress;
      s.localAddress = e.localAddress;
      this.udpSessions.insert(s);
      this.stats.udpSessionsActive = this.udpSessions.size;
      this.stats.udpSessionsTotal++;
      s.lastActivity = this.now;
      this.wheel.schedule(s, this.now + this.udpIdleMs);
      this.armTimer();
      try {
        this.handlers.onUdpSession(s);
      } catch (err) {
        // As for onTcpFlow: a throwing handler costs its session, not the stack.
        this.drop('handler_error');
        this.closeUdp(s);
        process.emitWarning(`onUdpSession handler threw: ${(err as Error).message}`, { code: 'SLUICE_HANDLER' });
        return;
      }
    } else {
      s.lastActivity = this.now;
    }
    // The application gets its own copy: datagrams outlive the batch.
    s.deliver(Buffer.from(l4buf.subarray(u.payloadOffset, u.payloadOffset + u.payloadLength)));
  }

  sendUdp(s: UdpSession, data: Uint8Array, off: number, len: number): boolean {
    if (this.closed) return false;
    this.writer.udp(s, s.dstPort, s.srcPort, data, off, len);
    this.scheduleFlush();
    return true;
  }

  touchUdp(s: UdpSession): void {
    s.lastActivity = this.now = this.clock();
  }

  unreachableUdp(s: UdpSession, kind: UnreachableKind): void {
    const q = s.firstQuote;
    if (q !== null && !this.closed) {
      this.sendUnreachable(s.family, kind, q, 0, q.length);
      this.scheduleFlush();
    }
    this.closeUdp(s);
  }

  closeUdp(s: UdpSession): void {
    this.udpSessions.remove(s);
    this.wheel.cancel(s);
    this.stats.udpSessionsActive = this.udpSessions.size;
    s.markClosed();
  }

  // ------------------------------------------------------------------- ICMP

  private icmpInput(family: number, abuf: Uint8Array, srcOff: number, dstOff: number, l4buf: Uint8Array): void {
    const m = this.icmp;
    const isEcho = family === 4 ? m.type === ICMP_ECHO_REQUEST : m.type === ICMPV6_ECHO_REQUEST;
    if (isEcho) {
      if (!this.icmpEcho) return;
      // RFC 1122 3.2.2.6: replies go from a unicast address to a unicast address.
      if (!isUnicastAt(family, abuf, srcOff) || !isUnicastAt(family, abuf, dstOff)) return this.drop('bad_address');
      // abuf and l4buf are the same buffer unless reassembled; echo data is in l4buf.
      if (abuf !== l4buf) return this.drop('fragment');
      this.writer.echoReply(family, abuf, srcOff, dstOff, m.identifier, m.sequence, m.payloadOffset, m.payloadLength);
      this.stats.icmpEchoReplies++;
      return;
    }
    if (family === 4 ? m.type === ICMP_DEST_UNREACHABLE || m.type === ICMP_TIME_EXCEEDED : isIcmpv6Error(m.type)) {
      this.stats.icmpErrorsIn++;
      this.icmpErrorForFlow(family, l4buf, m.type, m.code, m.nextHopMtu, m.payloadOffset, m.payloadLength);
      return;
    }
    this.drop('icmp_other');
  }

  /**
   * An ICMP error quoting a TCP segment we sent toward the TUN side (a router
   * between sluice and the client, in gateway mode, or the kernel itself):
   * find the flow from the quoted headers and let the connection judge it
   * (RFC 5927 sequence check inside). Only IPv4 without options problems and
   * IPv6 whose quoted next header is TCP are understood; others are counted.
   */
  private icmpErrorForFlow(family: number, q: Uint8Array, type: number, code: number, mtu: number, off: number, len: number): void {
    let kind: 'too-big' | 'hard' | null = null;
    if (family === 4) {
      if (type === ICMP_DEST_UNREACHABLE && code === ICMP_UNREACH_FRAG_NEEDED) kind = 'too-big';
      else if (type === ICMP_DEST_UNREACHABLE && (code === ICMP_UNREACH_PROTOCOL || code === ICMP_UNREACH_PORT || code === ICMP_UNREACH_ADMIN_PROHIBITED)) kind = 'hard';
    } else if (type === ICMPV6_PACKET_TOO_BIG) {
      kind = 'too-big';
    } else if (type === ICMPV6_DEST_UNREACHABLE && (code === ICMPV6_UNREACH_PORT || code === ICMPV6_UNREACH_ADMIN)) {
      kind = 'hard';
    }
    if (kind === null) return this.drop('icmp_error_ignored');
    let ipLen: number;
    let ourOff: number;
    let peerOff: number;
    if (family === 4) {
      if (len < 20 || q[off]! >>> 4 !== 4 || q[off + 9] !== 6) return this.drop('icmp_error_ignored');
      ipLen = (q[off]! & 0x0f) * 4;
      ourOff = off + 12;
      peerOff = off + 16;
    } else {
      if (len < 40 || q[off]! >>> 4 !== 6 || q[off + 6] !== 6) return this.drop('icmp_error_ignored');
      ipLen = 40;
      ourOff = off + 8;
      peerOff = off + 24;
    }
    const t = off + ipLen;
    if (len < ipLen + 8) return this.drop('icmp_error_ignored'); // RFC 792: at least 8 bytes of the transport header
    const ourPort = (q[t]! << 8) | q[t + 1]!;
    const peerPort = (q[t + 2]! << 8) | q[t + 3]!;
    const seq = ((q[t + 4]! << 24) | (q[t + 5]! << 16) | (q[t + 6]! << 8) | q[t + 7]!) >>> 0;
    // The flow is keyed as the client sent it: client = the quoted destination.
    const flow = this.tcpFlows.lookup(family, 6, q, peerOff, ourOff, peerPort, ourPort);
    const conn = flow === null ? null : flow.connection;
    if (conn === null || !conn.icmpError(this.now, kind, seq, mtu, family === 4 ? 20 : 40)) return this.drop('icmp_error_unmatched');
    this.stats.icmpErrorsApplied++;
    this.markDirty(flow!);
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

  handshakeDone(_flow: TcpFlow): void {
    this.synReceivedCount--;
    this.stats.halfOpenFlows = this.halfOpenCount();
  }

  flowClosed(flow: TcpFlow): void {
    if (flow.halfOpen) {
      flow.halfOpen = false;
      this.synReceivedCount--;
      this.stats.halfOpenFlows = this.halfOpenCount();
    }
    const p = this.pending.get(flow);
    if (p !== undefined) {
      // A cookie-completed connection that ended before the decision.
      this.pending.delete(flow);
      this.stats.pendingFlows = this.pending.size;
      this.stats.halfOpenFlows = this.halfOpenCount();
      flow.decisionDeadline = Infinity;
      if (p.request !== null && !p.request.decided) p.request.cancelled();
    }
    const c = flow.connection;
    if (c !== null) {
      this.stats.tcpRetransmits += c.retransmits;
      this.stats.tcpTimeouts += c.timeouts;
      this.stats.tcpLostRetransmits += c.lostRetransmits;
      this.stats.tcpLossProbes += c.lossProbes;
      this.stats.tcpZeroWindowsSent += c.zeroWindowsSent;
      this.stats.tcpWindowProbes += c.windowProbes;
    }
    if (this.tcpFlows.remove(flow)) this.stats.tcpFlowsActive--;
    this.wheel.cancel(flow);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.inBatch) return;
    this.flushScheduled = true;
    queueMicrotask(this.flushBound);
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

  private armTimer(): void {
    if (this.closed) return;
    let next = this.wheel.nextDeadline();
    const frag = this.reassembler.pollAt();
    if (frag < next) next = frag;
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
    this.now = this.clock();
    this.reassembler.expire(this.now);
    this.wheel.advance(this.now, this);
    this.runDirty();
    this.link.flush();
  }

  /** WheelHandler: a flow's deadline passed. */
  onTimer(entry: WheelEntry, now: number): void {
    if (entry instanceof TcpFlow) {
      if (entry.connection === null) {
        // Undecided for too long.
        if (this.pending.has(entry)) {
          this.stats.tcpFlowsRejected++;
          this.forgetPending(entry, 'timeout');
        }
        return;
      }
      if (now >= entry.decisionDeadline && this.pending.has(entry)) {
        // A cookie-completed connection left undecided too long: reset it.
        const p = this.pending.get(entry)!;
        this.stats.tcpFlowsRejected++;
        this.pending.delete(entry);
        this.stats.pendingFlows = this.pending.size;
        this.stats.halfOpenFlows = this.halfOpenCount();
        entry.decisionDeadline = Infinity;
        entry.connection.abort();
        if (p.request !== null && !p.request.decided) p.request.cancelled();
      }
      this.markDirty(entry);
      return;
    }
    const s = entry as UdpSession;
    const idleUntil = s.lastActivity + this.udpIdleMs;
    if (idleUntil > now) this.wheel.schedule(s, idleUntil);
    else this.closeUdp(s);
  }

  private drop(reason: string): void {
    const d = this.stats.drops;
    d[reason] = (d[reason] ?? 0) + 1;
  }
}

/** An unfragmented IPv4 or IPv6 (no extension headers) TCP segment with SYN set and neither ACK nor RST. */
function isBareSyn(buf: Uint8Array, off: number, len: number): boolean {
  if (len < 40) return false;
  const v = buf[off]! >> 4;
  let l4: number;
  if (v === 4) {
    if (buf[off + 9] !== 6 || (((buf[off + 6]! & 0x3f) << 8) | buf[off + 7]!) !== 0) return false;
    l4 = off + (buf[off]! & 0x0f) * 4;
  } else if (v === 6) {
    if (buf[off + 6] !== 6) return false;
    l4 = off + 40;
  } else {
    return false;
  }
  if (l4 + 20 > off + len) return false;
  return (buf[l4 + 13]! & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN;
}

function copyAddresses(
  family: number,
  abuf: Uint8Array,
  srcOff: number,
  dstOff: number,
  into: { srcAddr: Uint8Array; dstAddr: Uint8Array; src4: number; dst4: number },
): void {
  if (family === 4) {
    mapIpv4(abuf, srcOff, into.srcAddr);
    mapIpv4(abuf, dstOff, into.dstAddr);
    into.src4 = readIpv4Addr(abuf, srcOff);
    into.dst4 = readIpv4Addr(abuf, dstOff);
  } else {
    into.srcAddr.set(abuf.subarray(srcOff, srcOff + 16));
    into.dstAddr.set(abuf.subarray(dstOff, dstOff + 16));
    into.src4 = 0;
    into.dst4 = 0;
  }
}

function endpointsOf(family: number, abuf: Uint8Array, srcOff: number, dstOff: number, srcPort: number, dstPort: number): FlowEndpoints {
  return {
    family,
    remoteAddress: family === 4 ? formatIpv4(abuf, srcOff) : formatIpv6(abuf, srcOff),
    remotePort: srcPort,
    localAddress: family === 4 ? formatIpv4(abuf, dstOff) : formatIpv6(abuf, dstOff),
    localPort: dstPort,
  };
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
