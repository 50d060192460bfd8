/**
 * TCP header codec (RFC 9293 section 3.1) with the options sluice speaks:
 * MSS (RFC 9293 3.2), window scale and timestamps (RFC 7323),
 * SACK-permitted and SACK blocks (RFC 2018).
 */

/** Flag bits of the 13th header byte (RFC 9293 3.1; ECE/CWR RFC 3168). */
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

/** Most SACK blocks one segment can carry (4 without timestamps, RFC 2018 3). */
export const TCP_MAX_SACK_BLOCKS = 4;

/**
 * Plain representation of a TCP header. Parsers fill a caller-owned,
 * reused instance (no allocation per packet); emitters read one.
 * Sequence numbers are uint32 held in JS numbers (always `>>> 0`).
 */
export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** Bitmask of TCP_* flags. */
  flags: number;
  /** The raw 16-bit window field, not yet scaled. */
  window: number;
  urgent: number;
  /** MSS option value, or 0 when absent. */
  mss: number;
  /** Window-scale shift count (0..14), or -1 when the option is absent. */
  windowScale: number;
  sackPermitted: boolean;
  /** Number of valid SACK blocks in `sackLeft`/`sackRight` (0..4). */
  sackCount: number;
  sackLeft: Uint32Array;
  sackRight: Uint32Array;
  /** True when the timestamps option is present; then tsVal/tsEcr are valid. */
  hasTimestamps: boolean;
  tsVal: number;
  tsEcr: number;
  /** Header length in bytes (20..60), set by parse; computed by emit. */
  headerLength: number;
  /** Offset and length of the payload in the parsed buffer (set by parse). */
  payloadOffset: number;
  payloadLength: number;
}

export function newTcpRepr(): TcpRepr {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    urgent: 0,
    mss: 0,
    windowScale: -1,
    sackPermitted: false,
    sackCount: 0,
    sackLeft: new Uint32Array(TCP_MAX_SACK_BLOCKS),
    sackRight: new Uint32Array(TCP_MAX_SACK_BLOCKS),
    hasTimestamps: false,
    tsVal: 0,
    tsEcr: 0,
    headerLength: 20,
    payloadOffset: 0,
    payloadLength: 0,
  };
}
