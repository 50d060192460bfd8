/**
 * The stack's counters: plain fields, live (a test or the control-plane API
 * reading them mid-flow sees the truth, ENGINEERING.md), and the drop
 * reasons, which are the codecs' WireError names (src/wire/errors.ts) plus
 * the stack's own. Drop counters are keyed by those stable names, so an
 * operator reads *why* a packet went.
 */
import { WIRE_ERROR_NAMES, type WireErrorName } from '../wire/errors.js';

/** Why the stack itself dropped a packet (beyond a codec's refusal). */
export const STACK_DROP_REASONS = [
  'unknown_protocol',
  'pending_full',
  'pending_evicted',
  'syn_budget',
  'pending_rst_ignored',
  'pending_segment_ignored',
  'cookie_ack_unusable',
  'flows_full',
  'udp_full',
  /** A new session took the place of the oldest one never answered (the table was full). */
  'udp_evicted',
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

export type DropReason = WireErrorName | (typeof STACK_DROP_REASONS)[number];

/** Every drop reason, codec reasons first (their order in wire/errors.ts), then the stack's. */
export const DROP_REASONS: readonly DropReason[] = [...(WIRE_ERROR_NAMES.slice(1) as WireErrorName[]), ...STACK_DROP_REASONS];

/** What the TCP loss counters are summed from: every connection open now, and those closed. */
export interface TcpCounterSource {
  /** Totals of connections already closed. */
  readonly closed: TcpConnectionCounts;
  /** Calls `fn` with each open connection's counts. */
  forEachOpen(fn: (c: TcpConnectionCounts) => void): void;
  /**
   * Bumped before anything can change a count (a segment processed, a
   * connection dispatched, a flow closed): a sum made at the same value is
   * still the truth. Absent: every read sums again.
   */
  readonly countsGeneration?: number;
}

/** The per-connection counters of a TcpConnection the stack reports. */
export interface TcpConnectionCounts {
  retransmits: number;
  timeouts: number;
  lostRetransmits: number;
  lossProbes: number;
  zeroWindowsSent: number;
  windowProbes: number;
}

export function newTcpConnectionCounts(): TcpConnectionCounts {
  return { retransmits: 0, timeouts: 0, lostRetransmits: 0, lossProbes: 0, zeroWindowsSent: 0, windowProbes: 0 };
}

export function addTcpConnectionCounts(into: TcpConnectionCounts, c: TcpConnectionCounts): void {
  into.retransmits += c.retransmits;
  into.timeouts += c.timeouts;
  into.lostRetransmits += c.lostRetransmits;
  into.lossProbes += c.lossProbes;
  into.zeroWindowsSent += c.zeroWindowsSent;
  into.windowProbes += c.windowProbes;
}

/** Counters, all plain numbers read live; `drops` is keyed by reason. */
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
  /**
   * Of every connection, open and closed: segments retransmitted, RTO
   * expiries, lost retransmissions repaired by SACK, tail loss probes, zero
   * windows advertised, zero-window probes sent. Summed when read (the
   * connections count them; nothing is added per packet here).
   */
  readonly tcpRetransmits: number;
  readonly tcpTimeouts: number;
  readonly tcpLostRetransmits: number;
  readonly tcpLossProbes: number;
  readonly tcpZeroWindowsSent: number;
  readonly tcpWindowProbes: number;
  /** ICMP errors that matched a flow and passed the RFC 5927 check. */
  icmpErrorsApplied: number;
  icmpErrorsOut: number;
  resetsSent: number;
  fragmentsReassembled: number;
  drops: Record<DropReason, number>;
}

const SCRATCH = newTcpConnectionCounts();
/** The source and generation SCRATCH was summed for: the six getters read together (a spread, a structured clone, a worker's report) walk the flows once, not six times (issue 10). */
let summedFor: TcpCounterSource | null = null;
let summedAt = -1;

function sumTcp(src: TcpCounterSource): TcpConnectionCounts {
  const s = SCRATCH;
  const g = src.countsGeneration;
  if (g !== undefined && src === summedFor && g === summedAt) return s;
  summedFor = g === undefined ? null : src;
  summedAt = g ?? -1;
  s.retransmits = s.timeouts = s.lostRetransmits = s.lossProbes = s.zeroWindowsSent = s.windowProbes = 0;
  addTcpConnectionCounts(s, src.closed);
  src.forEachOpen((c) => addTcpConnectionCounts(s, c));
  return s;
}

/**
 * A fresh set of counters. The TCP loss counters are getters (own and
 * enumerable, so a spread or JSON.stringify of the object carries them).
 */
export function newStackStats(tcp: TcpCounterSource): StackStats {
  const drops = {} as Record<DropReason, number>;
  for (const r of DROP_REASONS) drops[r] = 0;
  return {
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
    get tcpRetransmits() {
      return sumTcp(tcp).retransmits;
    },
    get tcpTimeouts() {
      return sumTcp(tcp).timeouts;
    },
    get tcpLostRetransmits() {
      return sumTcp(tcp).lostRetransmits;
    },
    get tcpLossProbes() {
      return sumTcp(tcp).lossProbes;
    },
    get tcpZeroWindowsSent() {
      return sumTcp(tcp).zeroWindowsSent;
    },
    get tcpWindowProbes() {
      return sumTcp(tcp).windowProbes;
    },
    icmpErrorsApplied: 0,
    icmpErrorsOut: 0,
    resetsSent: 0,
    fragmentsReassembled: 0,
    drops,
  };
}
