/** TCP configuration: every limit a connection has, with defaults. */
import { SluiceError } from '../errors.js';

export interface TcpConfig {
  /** MSS we announce for IPv4 (IPv6 announces 20 bytes less); from the link MTU. */
  mss: number;
  recvBufferBytes: number;
  /**
   * Bytes the send ring may hold: everything sent and not yet acknowledged,
   * plus what waits for the window. It bounds the bytes in flight toward the
   * client, so it must cover the path's bandwidth-delay product, and the
   * delay here includes sluice's own turn-around (reading upstream, the
   * event loop, the TUN write): at 256 KiB a single download was
   * ring-limited near 7 Gbit/s on a 2-core machine, at 1 MiB it runs at
   * about 13 (bench/bulk-cpu.bench.ts). The store grows with what the ring
   * holds (ByteRing), so only a flow with that much in flight pays for it.
   */
  sendBufferBytes: number;
  windowScale: boolean;
  sack: boolean;
  timestamps: boolean;
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  /** Retransmissions of one segment before the connection is abandoned. */
  maxRetries: number;
  /** SYN-ACK retransmissions before a half-open connection is abandoned. */
  synRetries: number;
  delayedAckMs: number;
  /**
   * How long, in request/response mode (TcpOutput.interactive), the ACK of
   * a small pushed segment waits for our answer to carry it. Short: an
   * answer from a near upstream comes well within it, and a client that
   * holds the rest of its request for that ACK (Nagle, no TCP_NODELAY)
   * waits this long, not the 40 ms of a delayed ACK (Linux's pingpong
   * mode waits its delayed-ACK time).
   */
  interactiveAckMs: number;
  /**
   * TIME-WAIT length. RFC 9293 3.4.2 asks for 2*MSL (4 minutes); sluice
   * terminates flows from the local kernel, whose old duplicates cannot
   * wander a real network, so a short bound keeps the table small.
   */
  timeWaitMs: number;
  /**
   * FIN-WAIT-2 silence bound: after our FIN was acknowledged, the flow ends
   * when the peer sends nothing in the window for this long (restarted by
   * every acceptable segment, so a half-closed upload runs as long as it runs).
   */
  finWait2TimeoutMs: number;
  /** 0 disables keepalive (the default, as RFC 9293 3.8.4 says it MUST be). */
  keepAliveIdleMs: number;
  keepAliveIntervalMs: number;
  keepAliveProbes: number;
  /** Out-of-order ranges held at once (hole-tracking bound). */
  maxOutOfOrderRanges: number;
  congestion: 'cubic' | 'reno';
  /** RFC 6928. */
  initialCwndSegments: number;
}

export function defaultTcpConfig(): TcpConfig {
  return {
    mss: 1460,
    recvBufferBytes: 256 * 1024,
    sendBufferBytes: 1024 * 1024,
    windowScale: true,
    sack: true,
    timestamps: true,
    initialRtoMs: 1000,
    minRtoMs: 200,
    maxRtoMs: 60_000,
    maxRetries: 12,
    synRetries: 5,
    delayedAckMs: 40,
    interactiveAckMs: 5,
    timeWaitMs: 2000,
    finWait2TimeoutMs: 60_000,
    keepAliveIdleMs: 0,
    keepAliveIntervalMs: 75_000,
    keepAliveProbes: 9,
    maxOutOfOrderRanges: 64,
    congestion: 'cubic',
    initialCwndSegments: 10,
  };
}

export class TcpConfigError extends SluiceError {
  readonly code = 'SLUICE_TCP_CONFIG';
}

/** Throws TcpConfigError naming the field when a value cannot work. */
export function validateTcpConfig(c: TcpConfig): TcpConfig {
  const positive: (keyof TcpConfig)[] = ['recvBufferBytes', 'sendBufferBytes', 'initialRtoMs', 'minRtoMs', 'maxRtoMs', 'delayedAckMs', 'interactiveAckMs', 'initialCwndSegments', 'maxOutOfOrderRanges'];
  for (const k of positive) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new TcpConfigError(`tcp.${k}: expected a positive number, got ${String(v)}`);
  }
  if (c.mss < 88 || c.mss > 65495) throw new TcpConfigError(`tcp.mss: expected 88..65495, got ${c.mss}`);
  if (c.recvBufferBytes > 1 << 30) throw new TcpConfigError('tcp.recvBufferBytes: at most 1 GiB (window scale 14)');
  if (c.minRtoMs > c.maxRtoMs) throw new TcpConfigError('tcp.minRtoMs: must not exceed tcp.maxRtoMs');
  if (c.congestion !== 'cubic' && c.congestion !== 'reno') throw new TcpConfigError(`tcp.congestion: expected "cubic" or "reno", got ${String(c.congestion)}`);
  return c;
}
