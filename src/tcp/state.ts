/**
 * The vocabulary of one TCP connection: its RFC 9293 3.3.2 states, the
 * exclusive timer, the callbacks its driver implements, and the one place
 * a state change is traced.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import type { TcpRepr } from '../wire/tcp.js';
import type { TcpConnection } from './connection.js';
import type { TcpConnectionCounts } from '../stack/counters.js';

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

/** Why a connection changed state: the rule that moved it. */
export type StateChangeReason =
  | 'syn-ack' // RFC 9293 3.10.7.3: our SYN acknowledged (active open)
  | 'simultaneous-open' // RFC 9293 3.10.7.3 fourth check
  | 'handshake' // RFC 9293 3.10.7.4: the ACK of our SYN-ACK
  | 'fin-sent' // RFC 9293 3.10.4 CLOSE: our FIN went out after the queued data
  | 'fin-acked' // RFC 9293 3.10.7.4: our FIN acknowledged
  | 'peer-fin' // RFC 9293 3.10.7.4 eighth check
  | 'time-wait-expired' // RFC 9293 3.10.8 (2 MSL, our configured bound)
  | CloseReason;

/** RFC 9293 3.3.2: the states in which our FIN has been sent. */
export function finSentIn(state: TcpState): boolean {
  return state === 'FIN-WAIT-1' || state === 'FIN-WAIT-2' || state === 'CLOSING' || state === 'TIME-WAIT' || state === 'LAST-ACK';
}

/** RFC 9293 3.3.2: the states in which the peer may still send data (its FIN has not arrived). */
export function peerMaySendIn(state: TcpState): boolean {
  return state === 'ESTABLISHED' || state === 'FIN-WAIT-1' || state === 'FIN-WAIT-2' || state === 'SYN-RECEIVED';
}

/**
 * The timers of which at most one runs at a time (timers are data,
 * ENGINEERING.md): the retransmission timer runs while anything is in
 * flight, the persist timer only when nothing is and the peer's window is
 * shut on waiting data (RFC 9293 3.8.6.1), and TIME-WAIT and FIN-WAIT-2
 * only once both are over. The delayed ACK, keepalive, tail loss probe and
 * reordering timers run beside it.
 */
export type ExclusiveTimer =
  | { kind: 'idle' }
  | { kind: 'retransmit'; at: number }
  | { kind: 'persist'; at: number }
  | { kind: 'time-wait'; at: number }
  | { kind: 'fin-wait-2'; at: number };

export type TimerKind = ExclusiveTimer['kind'];

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
  /**
   * Totals the connection adds each loss count to as well as its own (the
   * stack's, TcpCounterSource); absent, the connection keeps its own only.
   */
  readonly tcpTotals?: TcpConnectionCounts;
}

export interface ConnectionOptions {
  iss: number;
  /** MSS this side announces (the link MTU minus IP and TCP headers). */
  mss: number;
}

export interface StateChange {
  connection: TcpConnection;
  from: TcpState;
  to: TcpState;
  reason: StateChangeReason;
}

/**
 * Every state change is published here (`diagnostics_channel.subscribe(
 * TCP_STATE_CHANNEL, fn)`); with no subscriber it costs one property read.
 */
export const TCP_STATE_CHANNEL = 'sluice:tcp:state';
export const stateChannel = diagnostics_channel.channel(TCP_STATE_CHANNEL);
