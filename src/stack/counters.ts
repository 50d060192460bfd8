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

/** Where the stack's TCP loss counters come from. */
export interface TcpCounterSource {
  /**
   * Running totals of every connection's counts since the stack started:
   * each connection adds to them as it counts (TcpConnection's `totals`),
   * so reading them walks nothing (issue 10: a worker's report read the
   * six getters several times a second, each a walk of every flow).
   */
  readonly tcpTotals: TcpConnectionCounts;
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
      return tcp.tcpTotals.retransmits;
    },
    get tcpTimeouts() {
      return tcp.tcpTotals.timeouts;
    },
    get tcpLostRetransmits() {
      return tcp.tcpTotals.lostRetransmits;
    },
    get tcpLossProbes() {
      return tcp.tcpTotals.lossProbes;
    },
    get tcpZeroWindowsSent() {
      return tcp.tcpTotals.zeroWindowsSent;
    },
    get tcpWindowProbes() {
      return tcp.tcpTotals.windowProbes;
    },
    icmpErrorsApplied: 0,
    icmpErrorsOut: 0,
    resetsSent: 0,
    fragmentsReassembled: 0,
    drops,
  };
}
