/** TCP option arithmetic shared by the connection and the SYN-cookie path (RFC 7323, RFC 9293 3.7.1). */
import type { TcpConfig } from './config.js';

/** Timestamps option bytes (10, padded to 12), taken from every segment's MSS. */
export const TS_OPTION_BYTES = 12;
/** RFC 9293 3.7.1: the MSS to assume when the peer sent none. */
export const DEFAULT_PEER_MSS = 536;

/** The timestamp clock of a connection with this ISS (the SYN-cookie path needs it before the connection exists). */
export function tcpTimestampClock(now: number, iss: number): number {
  return (Math.floor(now) + timestampOffset(iss)) >>> 0;
}

/** RFC 7323 7.1: a per-connection offset (from the ISS) hides the clock from peers. */
export function timestampOffset(iss: number): number {
  return (iss * 2654435761) >>> 0;
}

/** RFC 7323 2.3: the largest shift that keeps the receive buffer within 16 bits (0 without window scaling). */
export function receiveWindowShift(config: TcpConfig): number {
  let shift = 0;
  while (shift < 14 && config.recvBufferBytes >>> shift > 0xffff) shift++;
  return config.windowScale ? shift : 0;
}
