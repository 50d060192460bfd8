/**
 * The contract between the engine and the outbounds.
 *
 * The engine holds a client flow half-open (the TUN-side TCP handshake is not
 * completed yet) and calls `connectTcp`. The promise resolves only once the
 * upstream path is established end to end (direct: TCP connect done; socks5:
 * CONNECT reply succeeded; http: CONNECT answered 2xx); it rejects with an
 * `OutboundError` whose `reaction` tells the engine what the client should
 * see (RST, ICMP unreachable, or nothing).
 *
 * Outbounds that never connect (`reject`, `drop`) say so up front through
 * `action`, so the engine can answer without an async round trip; their
 * `connectTcp` / `openUdp` still reject with a typed error for callers that
 * do not look at `action`.
 */
import type { Duplex } from 'node:stream';

export type OutboundType = 'direct' | 'socks5' | 'http' | 'reject' | 'drop' | 'select' | 'urltest' | 'fallback' | 'loadbalance';

/** What the outbound does with a flow: connect upstream, or block it. */
export type OutboundAction = 'connect' | 'reject' | 'drop';

/** Where a flow goes. `host` is an IP literal (v4 or v6, no brackets) or a domain name. */
export interface Target {
  host: string;
  port: number;
  /** Address family to prefer when `host` is a domain name. */
  family?: 4 | 6;
  /**
   * gateway.preserveSource: the LAN client's address, for an outbound that
   * can leave from it (direct, through an IP_TRANSPARENT socket). Outbounds
   * that relay through a proxy ignore it.
   */
  source?: string;
}

/** The sender of a datagram received on an association. */
export interface UdpSource {
  /** IP literal; a domain only when a SOCKS5 relay reports one (RFC 1928 §7 allows ATYP 3). */
  host: string;
  port: number;
}

export type UdpMessageHandler = (payload: Uint8Array, src: UdpSource) => void;
export type UdpCloseHandler = (err: Error | null) => void;

/**
 * One UDP session's path upstream. Datagrams to any destination may be sent;
 * datagrams from any source that reaches it are delivered (see each
 * outbound for its filtering behaviour).
 */
export interface UdpAssociation {
  /**
   * Queues one datagram. Never throws for network reasons: failures are
   * counted in `stats` (UDP is lossy anyway). `payload` may be reused by the
   * caller once this returns.
   */
  send(payload: Uint8Array, dst: Target): void;
  /** Sets the one receive handler (replaces the previous one). `payload` is only valid during the call. */
  onMessage(cb: UdpMessageHandler): void;
  /** Called once when the association ends (closed locally, control connection lost, socket error). */
  onClose(cb: UdpCloseHandler): void;
  /** Releases sockets; idempotent. */
  close(): void;
  readonly closed: boolean;
  readonly stats: UdpAssociationStats;
  /** Sends from OpenUdpOptions.source (a direct outbound that could bind it). */
  readonly preservedSource?: boolean;
  /**
   * Direct only: the TTL / hop limit of the datagrams sent from now on (the
   * client's, so traceroute -U sees the real hops); a setsockopt only when
   * it changes.
   */
  setTtl?(ttl: number): void;
}

export interface UdpAssociationStats {
  sent: number;
  received: number;
  /** Datagrams that could not be sent (resolution failure, socket error, closed, queue full). */
  sendDropped: number;
  /** Datagrams received and discarded (SOCKS5: fragments, bad header, wrong source). */
  receiveDropped: number;
}

export interface OpenUdpOptions {
  /** Address family the session's destinations are expected to use; sockets for the other family are made on demand. */
  family?: 4 | 6;
  /**
   * gateway.preserveSource: the LAN client's own endpoint. A direct
   * outbound binds its socket of that family there (IP_TRANSPARENT), and
   * falls back to an ephemeral port of its own when it cannot (the
   * association's `preservedSource` says which); other outbounds ignore it.
   */
  source?: { address: string; port: number };
}

export interface Outbound {
  readonly name: string;
  readonly type: OutboundType;
  /** 'connect' outbounds carry flows; 'reject' and 'drop' never do (the engine answers the client itself). */
  readonly action: OutboundAction;
  /** Whether `openUdp` can carry UDP sessions. */
  readonly supportsUdp: boolean;
  /**
   * Establishes the upstream path. Resolves with a Duplex carrying the
   * target's byte stream, with no bytes consumed from it. Rejects with
   * OutboundError. Aborting `signal` destroys any half-made connection and
   * rejects with SLUICE_OUTBOUND_ABORTED.
   */
  connectTcp(target: Target, signal?: AbortSignal): Promise<Duplex>;
  /** Present when `supportsUdp`. Rejects with OutboundError. */
  openUdp?(options: OpenUdpOptions, signal?: AbortSignal): Promise<UdpAssociation>;
}

/** TCP socket options applied to every upstream socket an outbound makes. */
export interface SocketTuning {
  /** TCP_NODELAY. Default true: the stream carries interactive traffic as often as bulk. */
  noDelay?: boolean;
  /** SO_KEEPALIVE with this initial delay in ms; 0 or undefined disables it. */
  keepAliveMs?: number;
}

/** Address lookup used for domain targets (injectable so sluice's own resolver can be used). */
export type LookupFn = (host: string, family: 4 | 6 | undefined) => Promise<{ address: string; family: 4 | 6 }>;

/** Options every socket-making outbound accepts. */
export interface DialerOptions extends SocketTuning {
  /** SO_MARK on every socket (keeps them out of the TUN by policy routing). 0 or undefined: no mark. */
  mark?: number;
  /** SO_BINDTODEVICE on every socket. */
  interface?: string;
  /** Budget for establishing a path (TCP connect plus any proxy handshake), ms. Default 10000. */
  connectTimeoutMs?: number;
  lookup?: LookupFn;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
