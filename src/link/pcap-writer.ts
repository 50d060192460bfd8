/**
 * The classic pcap file format (the one `tcpdump -r` and Wireshark read),
 * for raw IP packets: LINKTYPE_RAW (101), so each record is an IPv4 or IPv6
 * packet with no link-layer header. Like smoltcp's PcapWriter, this only
 * lays out bytes; where they go (a file, an HTTP response) is the caller's.
 *
 * File: a 24-byte global header, then per packet a 16-byte record header
 * (seconds, microseconds or nanoseconds, captured length, original length)
 * and the captured bytes. Little-endian; the magic number tells readers the
 * byte order and the timestamp unit.
 */

/** LINKTYPE_RAW: the packet begins with an IPv4 or IPv6 header. */
export const LINKTYPE_RAW = 101;
export const PCAP_GLOBAL_HEADER_LEN = 24;
export const PCAP_RECORD_HEADER_LEN = 16;
/** Microsecond timestamps. */
export const PCAP_MAGIC_US = 0xa1b2c3d4;
/** Nanosecond timestamps. */
export const PCAP_MAGIC_NS = 0xa1b23c4d;
/** Big enough for a TSO/GRO super-packet (64 KiB) and its headers. */
export const DEFAULT_SNAPLEN = 262144;

export type PcapResolution = 'us' | 'ns';

/** The 24-byte file header: version 2.4, no time zone offset, `snaplen`, LINKTYPE_RAW. */
export function pcapGlobalHeader(snaplen = DEFAULT_SNAPLEN, resolution: PcapResolution = 'us'): Uint8Array {
  const out = new Uint8Array(PCAP_GLOBAL_HEADER_LEN);
  const v = new DataView(out.buffer);
  v.setUint32(0, resolution === 'ns' ? PCAP_MAGIC_NS : PCAP_MAGIC_US, true);
  v.setUint16(4, 2, true);
  v.setUint16(6, 4, true);
  v.setInt32(8, 0, true); // thiszone
  v.setUint32(12, 0, true); // sigfigs
  v.setUint32(16, snaplen, true);
  v.setUint32(20, LINKTYPE_RAW, true);
  return out;
}

/** Bytes a record of a `len`-byte packet takes when cut at `snaplen`. */
export function pcapRecordSize(len: number, snaplen: number): number {
  return PCAP_RECORD_HEADER_LEN + (len < snaplen ? len : snaplen);
}

function putU32(out: Uint8Array, off: number, x: number): void {
  out[off] = x & 0xff;
  out[off + 1] = (x >>> 8) & 0xff;
  out[off + 2] = (x >>> 16) & 0xff;
  out[off + 3] = (x >>> 24) & 0xff;
}

/**
 * Writes one record at `out[at]` (the caller checked it fits: pcapRecordSize)
 * and returns the offset after it. `timeMs` is milliseconds since the epoch
 * with a fraction (performance.timeOrigin + performance.now()). No allocation.
 */
export function writePcapRecord(
  out: Uint8Array,
  at: number,
  timeMs: number,
  resolution: PcapResolution,
  snaplen: number,
  pkt: Uint8Array,
  pktOff: number,
  len: number,
): number {
  const sec = Math.floor(timeMs / 1000);
  const fracMs = timeMs - sec * 1000;
  let frac = resolution === 'ns' ? Math.round(fracMs * 1e6) : Math.round(fracMs * 1e3);
  const limit = resolution === 'ns' ? 1e9 : 1e6;
  if (frac >= limit) frac = limit - 1;
  const cap = len < snaplen ? len : snaplen;
  putU32(out, at, sec >>> 0);
  putU32(out, at + 4, frac);
  putU32(out, at + 8, cap);
  putU32(out, at + 12, len);
  out.set(pkt.subarray(pktOff, pktOff + cap), at + PCAP_RECORD_HEADER_LEN);
  return at + PCAP_RECORD_HEADER_LEN + cap;
}

export interface PcapRecord {
  timeSec: number;
  /** Microseconds or nanoseconds, per the file's magic. */
  timeFrac: number;
  origLen: number;
  data: Uint8Array;
}

/** Reads a whole pcap file back (tests, and `sluice capture` printing lines). Throws on a malformed file. */
export function parsePcap(buf: Uint8Array): { snaplen: number; linktype: number; resolution: PcapResolution; records: PcapRecord[] } {
  if (buf.length < PCAP_GLOBAL_HEADER_LEN) throw new Error('pcap: shorter than the global header');
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = v.getUint32(0, true);
  if (magic !== PCAP_MAGIC_US && magic !== PCAP_MAGIC_NS) throw new Error(`pcap: bad magic 0x${magic.toString(16)}`);
  const records: PcapRecord[] = [];
  const stream = new PcapStreamParser();
  stream.push(buf.subarray(PCAP_GLOBAL_HEADER_LEN), (r) => records.push(r));
  if (stream.pending !== 0) throw new Error(`pcap: ${stream.pending} trailing bytes`);
  return { snaplen: v.getUint32(16, true), linktype: v.getUint32(20, true), resolution: magic === PCAP_MAGIC_NS ? 'ns' : 'us', records };
}

/** Splits a stream of pcap records (after the global header) as chunks arrive. */
export class PcapStreamParser {
  private buf: Uint8Array = new Uint8Array(0);

  get pending(): number {
    return this.buf.length;
  }

  push(chunk: Uint8Array, onRecord: (r: PcapRecord) => void): void {
    let b = this.buf.length === 0 ? chunk : concat(this.buf, chunk);
    let off = 0;
    while (b.length - off >= PCAP_RECORD_HEADER_LEN) {
      const v = new DataView(b.buffer, b.byteOffset + off, PCAP_RECORD_HEADER_LEN);
      const cap = v.getUint32(8, true);
      if (b.length - off < PCAP_RECORD_HEADER_LEN + cap) break;
      onRecord({ timeSec: v.getUint32(0, true), timeFrac: v.getUint32(4, true), origLen: v.getUint32(12, true), data: b.slice(off + PCAP_RECORD_HEADER_LEN, off + PCAP_RECORD_HEADER_LEN + cap) });
      off += PCAP_RECORD_HEADER_LEN + cap;
    }
    b = b.subarray(off);
    this.buf = b.length === 0 ? new Uint8Array(0) : b.slice();
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
