/**
 * QUIC Initial sniffer (sans-IO): the server name and ALPN from a client's
 * first datagrams, for QUIC v1 (RFC 9000, RFC 9001) and v2 (RFC 9369).
 *
 * Per datagram: walk the coalesced long-header packets (RFC 9000 §12.2,
 * §17.2), open every client Initial whose DCID matches the first one seen
 * (RFC 9001 §5.2 keys from that DCID; §5.4 header protection; §5.3 AEAD),
 * collect CRYPTO frames (§19.6) into a bounded stream buffer (they may come
 * out of order, overlap, and span datagrams), and once the stream has a
 * contiguous prefix, run the TLS ClientHello walker over it (RFC 9001 §4.1.3:
 * CRYPTO carries handshake messages without TLS records).
 *
 * Bounds: `maxCryptoBytes` of stream, `maxDatagrams` datagrams, 64 disjoint
 * stream ranges. Time is the caller's (`sniff.timeoutMs`); `finish()` gives
 * the best verdict when the caller stops waiting.
 */
import { Buffer } from 'node:buffer';
import {
  DEFAULT_MAX_BYTES,
  NEED_MORE,
  NOT_THIS,
  checkLimit,
  type QuicFound,
  type SniffResult,
} from './result.js';
import {
  HelloStatus,
  helloAlpn,
  helloServerName,
  newClientHelloInfo,
  parseClientHelloMessage,
  type ClientHelloInfo,
} from './tls-client-hello.js';
import {
  QUIC_V1,
  QUIC_V2,
  SAMPLE_LEN,
  deriveClientInitialKeys,
  headerProtectionMask,
  openPayload,
  type InitialKeys,
} from './quic-keys.js';

export { QUIC_V1, QUIC_V2 } from './quic-keys.js';

export interface QuicSniffOptions {
  /** Bound on the reassembled CRYPTO stream (default 16 KiB). */
  maxCryptoBytes?: number;
  /** Datagrams examined before settling for a partial verdict (default 8). */
  maxDatagrams?: number;
  /** RFC 9000 §14.1: datagrams carrying a client Initial are >= 1200 bytes; 0 disables the check. */
  minDatagramSize?: number;
}

const MAX_RANGES = 64;
const EMPTY = new Uint8Array(0);
const MAX_CID = 20; // RFC 9000 §17.2 (v1 and v2)
const MIN_FIRST_DCID = 8; // RFC 9000 §7.2: the client's first DCID is at least 8 bytes
const FRAME_PADDING = 0x00;
const FRAME_PING = 0x01;
const FRAME_ACK = 0x02;
const FRAME_ACK_ECN = 0x03;
const FRAME_CRYPTO = 0x06;
const FRAME_CONNECTION_CLOSE = 0x1c;

/** Varint reads set this to the offset past the integer; -1 when truncated (RFC 9000 §16). */
let varintEnd = 0;

function readVarint(b: Uint8Array, p: number, end: number): number {
  if (p >= end) {
    varintEnd = -1;
    return 0;
  }
  const first = b[p]!;
  const len = 1 << (first >> 6);
  if (p + len > end) {
    varintEnd = -1;
    return 0;
  }
  let v = first & 0x3f;
  for (let i = 1; i < len; i++) v = v * 256 + b[p + i]!; // beyond 2^53 precision is lost; such values are rejected by bounds anyway
  varintEnd = p + len;
  return v;
}

/** Whether the long-header type bits name an Initial for this version (RFC 9000 §17.2.2, RFC 9369 §3.2). */
function isInitialType(version: number, first: number): boolean {
  const type = (first >> 4) & 3;
  return version === QUIC_V1 ? type === 0 : type === 1;
}

function isRetryType(version: number, first: number): boolean {
  const type = (first >> 4) & 3;
  return version === QUIC_V1 ? type === 3 : type === 0;
}

/**
 * Cheap pre-check before any crypto: a long header with the fixed bit, a
 * version we can open, the Initial type and a DCID of 8..20 bytes.
 */
export function looksLikeQuicInitial(d: Uint8Array): boolean {
  if (d.length < 7 || (d[0]! & 0xc0) !== 0xc0) return false;
  const version = ((d[1]! << 24) | (d[2]! << 16) | (d[3]! << 8) | d[4]!) >>> 0;
  if (version !== QUIC_V1 && version !== QUIC_V2) return false;
  const dcidLen = d[5]!;
  return isInitialType(version, d[0]!) && dcidLen >= MIN_FIRST_DCID && dcidLen <= MAX_CID;
}

export class QuicInitialSniffer {
  private readonly maxCrypto: number;
  private readonly maxDatagrams: number;
  private readonly minDatagram: number;
  private version: number;
  private dcid: Uint8Array | null;
  private keys: InitialKeys | null;
  private crypto: Uint8Array | null;
  private readonly ranges: Int32Array;
  private rangeCount: number;
  private datagrams: number;
  private opened: number;
  private verdict: SniffResult | null;
  private readonly info: ClientHelloInfo;

  constructor(options: QuicSniffOptions = {}) {
    this.maxCrypto = checkLimit('maxCryptoBytes', options.maxCryptoBytes ?? DEFAULT_MAX_BYTES, 64, 1 << 20);
    this.maxDatagrams = checkLimit('maxDatagrams', options.maxDatagrams ?? 8, 1, 1024);
    this.minDatagram = checkLimit('minDatagramSize', options.minDatagramSize ?? 1200, 0, 65535);
    this.version = 0;
    this.dcid = null;
    this.keys = null;
    this.crypto = null;
    this.ranges = new Int32Array(MAX_RANGES * 2);
    this.rangeCount = 0;
    this.datagrams = 0;
    this.opened = 0;
    this.verdict = null;
    this.info = newClientHelloInfo();
  }

  /** Initial packets opened so far (0 means nothing proved this flow is QUIC). */
  get initialsOpened(): number {
    return this.opened;
  }

  /** Feeds the next client datagram (the UDP payload); returns the current verdict. */
  push(datagram: Uint8Array): SniffResult {
    if (this.verdict !== null) return this.verdict;
    this.datagrams++;
    const before = this.opened;
    this.walkDatagram(datagram);
    if (this.opened === 0) {
      // The first datagram of a QUIC flow is a client Initial; anything else is not QUIC we can read.
      this.verdict = NOT_THIS;
      return NOT_THIS;
    }
    if (this.opened === before) return this.datagrams >= this.maxDatagrams ? this.finish() : NEED_MORE;
    const contiguous = this.rangeCount > 0 && this.ranges[0] === 0 ? this.ranges[1]! : 0;
    const status = parseClientHelloMessage(this.crypto ?? EMPTY, 0, contiguous, this.info);
    if (status === HelloStatus.Ok) return (this.verdict = this.found(true));
    if (status === HelloStatus.Invalid) return (this.verdict = this.found(false));
    if (contiguous >= this.maxCrypto || this.datagrams >= this.maxDatagrams) return this.finish();
    return NEED_MORE;
  }

  /**
   * The verdict now, for a caller that stops waiting: `found` (maybe
   * `complete: false`, serverName from the prefix) once any Initial opened,
   * else `not-this`. Later pushes return the same verdict.
   */
  finish(): SniffResult {
    if (this.verdict !== null) return this.verdict;
    if (this.opened === 0) return (this.verdict = NOT_THIS);
    const contiguous = this.rangeCount > 0 && this.ranges[0] === 0 ? this.ranges[1]! : 0;
    const status = parseClientHelloMessage(this.crypto ?? EMPTY, 0, contiguous, this.info);
    return (this.verdict = this.found(status === HelloStatus.Ok));
  }

  private found(complete: boolean): QuicFound {
    const crypto = this.crypto ?? EMPTY;
    // An Invalid walk leaves no usable offsets: parseClientHelloMessage resets them first.
    return {
      kind: 'found',
      protocol: 'quic',
      serverName: helloServerName(crypto, this.info),
      alpn: helloAlpn(crypto, this.info),
      version: this.version,
      complete,
    };
  }

  /** Walks coalesced packets (RFC 9000 §12.2); stops at the first short header or malformed packet. */
  private walkDatagram(d: Uint8Array): void {
    let p = 0;
    while (p + 7 <= d.length) {
      const first = d[p]!;
      if ((first & 0xc0) !== 0xc0) return; // short header (rest is 1-RTT) or fixed bit clear
      const version = ((d[p + 1]! << 24) | (d[p + 2]! << 16) | (d[p + 3]! << 8) | d[p + 4]!) >>> 0;
      if (version !== QUIC_V1 && version !== QUIC_V2) return;
      if (this.version !== 0 && version !== this.version) return;
      if (isRetryType(version, first)) return; // servers send Retry, not clients
      let q = p + 5;
      const dcidLen = d[q]!;
      if (dcidLen > MAX_CID) return;
      const dcidStart = q + 1;
      q = dcidStart + dcidLen;
      if (q >= d.length) return;
      const scidLen = d[q]!;
      if (scidLen > MAX_CID) return;
      q += 1 + scidLen;
      const initial = isInitialType(version, first);
      if (initial) {
        const tokenLen = readVarint(d, q, d.length);
        if (varintEnd < 0 || tokenLen > d.length) return;
        q = varintEnd + tokenLen;
      }
      const length = readVarint(d, q, d.length);
      if (varintEnd < 0) return;
      const pnOffset = varintEnd;
      const end = pnOffset + length;
      if (end > d.length) return;
      if (initial && d.length >= this.minDatagram) this.openInitial(d, p, pnOffset, end, version, dcidStart, dcidLen);
      p = end;
    }
  }

  private sameDcid(d: Uint8Array, s: number, n: number): boolean {
    const dcid = this.dcid!;
    if (dcid.length !== n) return false;
    for (let i = 0; i < n; i++) if (dcid[i] !== d[s + i]) return false;
    return true;
  }

  private openInitial(d: Uint8Array, start: number, pnOffset: number, end: number, version: number, dcidStart: number, dcidLen: number): void {
    if (pnOffset + 4 + SAMPLE_LEN > end) return; // RFC 9001 §5.4.2: the sample must exist
    if (this.keys === null) {
      if (dcidLen < MIN_FIRST_DCID) return;
      this.dcid = d.slice(dcidStart, dcidStart + dcidLen);
      this.keys = deriveClientInitialKeys(version, this.dcid);
      this.version = version;
    } else if (!this.sameDcid(d, dcidStart, dcidLen)) {
      return;
    }
    const keys = this.keys;
    const mask = headerProtectionMask(keys, d.subarray(pnOffset + 4, pnOffset + 4 + SAMPLE_LEN));
    const first = d[start]! ^ (mask[0]! & 0x0f); // RFC 9001 §5.4.1: long header, low 4 bits
    const pnLen = (first & 3) + 1;
    const headerLen = pnOffset + pnLen - start;
    const aad = Buffer.allocUnsafe(headerLen);
    aad.set(d.subarray(start, pnOffset + pnLen));
    aad[0] = first;
    let pn = 0;
    for (let i = 0; i < pnLen; i++) {
      const byte = aad[pnOffset - start + i]! ^ mask[1 + i]!;
      aad[pnOffset - start + i] = byte;
      pn = pn * 256 + byte;
    }
    // The truncated number is the full number for a client's first packets (RFC 9000 §17.1, Appendix A.3 with no prior packets).
    const plain = openPayload(keys, pn, aad, d.subarray(pnOffset + pnLen, end));
    if (plain === null) {
      if (this.opened === 0) {
        // Keys came from an unverified packet; let a later datagram start over.
        this.keys = null;
        this.dcid = null;
        this.version = 0;
      }
      return;
    }
    this.opened++;
    this.readFrames(plain);
  }

  /** RFC 9000 §19 frames allowed in Initial packets (§12.4 Table 3); anything else ends the walk. */
  private readFrames(f: Uint8Array): void {
    let p = 0;
    const n = f.length;
    while (p < n) {
      const type = readVarint(f, p, n);
      if (varintEnd < 0) return;
      p = varintEnd;
      switch (type) {
        case FRAME_PADDING:
        case FRAME_PING:
          break;
        case FRAME_ACK:
        case FRAME_ACK_ECN: {
          readVarint(f, p, n); // largest acknowledged
          if (varintEnd < 0) return;
          readVarint(f, varintEnd, n); // ack delay
          if (varintEnd < 0) return;
          const ranges = readVarint(f, varintEnd, n);
          if (varintEnd < 0 || ranges > n) return;
          readVarint(f, varintEnd, n); // first range
          if (varintEnd < 0) return;
          p = varintEnd;
          const fields = ranges * 2 + (type === FRAME_ACK_ECN ? 3 : 0);
          for (let i = 0; i < fields; i++) {
            readVarint(f, p, n);
            if (varintEnd < 0) return;
            p = varintEnd;
          }
          break;
        }
        case FRAME_CRYPTO: {
          const offset = readVarint(f, p, n);
          if (varintEnd < 0) return;
          const length = readVarint(f, varintEnd, n);
          if (varintEnd < 0) return;
          const dataStart = varintEnd;
          if (length > n - dataStart) return;
          this.storeCrypto(offset, f, dataStart, length);
          p = dataStart + length;
          break;
        }
        case FRAME_CONNECTION_CLOSE:
        default:
          return;
      }
    }
  }

  /** Copies a CRYPTO fragment into the bounded stream buffer and merges its range. */
  private storeCrypto(offset: number, f: Uint8Array, s: number, length: number): void {
    if (length === 0 || offset >= this.maxCrypto) return;
    const endOff = Math.min(offset + length, this.maxCrypto);
    if (this.crypto === null) this.crypto = new Uint8Array(this.maxCrypto);
    if (!this.addRange(offset, endOff)) return;
    this.crypto.set(f.subarray(s, s + (endOff - offset)), offset);
  }

  /** Inserts [s, e) into the sorted disjoint range list, merging neighbours; false when the list is full. */
  private addRange(s: number, e: number): boolean {
    const r = this.ranges;
    let n = this.rangeCount;
    let i = 0;
    while (i < n && r[i * 2 + 1]! < s) i++; // first range that ends at or after s
    let j = i;
    let ns = s;
    let ne = e;
    while (j < n && r[j * 2]! <= e) {
      if (r[j * 2]! < ns) ns = r[j * 2]!;
      if (r[j * 2 + 1]! > ne) ne = r[j * 2 + 1]!;
      j++;
    }
    const removed = j - i;
    if (removed === 0 && n >= MAX_RANGES) return false;
    // Replace ranges [i, j) by the merged one.
    const shift = 1 - removed;
    if (shift !== 0) {
      r.copyWithin((i + 1) * 2, j * 2, n * 2);
      n += shift;
    }
    r[i * 2] = ns;
    r[i * 2 + 1] = ne;
    this.rangeCount = n;
    return true;
  }
}

/** One-shot: sniffs the given datagrams of one flow in order. */
export function sniffQuicInitial(datagrams: Uint8Array | readonly Uint8Array[], options?: QuicSniffOptions): SniffResult {
  const s = new QuicInitialSniffer(options);
  if (datagrams instanceof Uint8Array) return s.push(datagrams);
  let r: SniffResult = NEED_MORE;
  for (const d of datagrams) {
    r = s.push(d);
    if (r.kind !== 'need-more') break;
  }
  return r;
}
