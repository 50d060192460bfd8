/**
 * TLS ClientHello sniffer (sans-IO): the server name (SNI, RFC 6066 §3) and
 * the ALPN list (RFC 7301 §3.1) from the first bytes a client sent.
 *
 * Two layers:
 * - `parseClientHelloMessage` walks one handshake message (RFC 8446 §4.1.2)
 *   that may be cut short; QUIC reuses it on the reassembled CRYPTO stream
 *   (RFC 9001 §4.1.3 carries handshake messages without records).
 * - `sniffTlsClientHello` walks TLSPlaintext records (RFC 8446 §5.1) over
 *   concatenated TCP segments; a ClientHello may span several records
 *   (§5.1: handshake messages MAY be fragmented across records).
 *
 * Nothing here throws on hostile bytes: every length is checked against both
 * the enclosing structure and the bytes available, and a walk ends in one of
 * OK / TRUNCATED / INVALID. Offsets are recorded in a caller-owned
 * `ClientHelloInfo`; strings are made only for a `found` verdict.
 */
import {
  DEFAULT_MAX_BYTES,
  NEED_MORE,
  NOT_THIS,
  checkLimit,
  type SniffResult,
  type TlsFound,
} from './result.js';
import { hostnameFromBytes } from './hostname.js';

/** Outcome of walking a (possibly partial) ClientHello. */
export const HelloStatus = {
  Ok: 0,
  /** Consistent so far, but the bytes end before the message does. */
  Truncated: 1,
  /** Not a ClientHello: a length overruns its container or a fixed field is wrong. */
  Invalid: 2,
} as const;
export type HelloStatus = (typeof HelloStatus)[keyof typeof HelloStatus];

const CONTENT_HANDSHAKE = 22; // RFC 8446 §5.1 ContentType.handshake
const HS_CLIENT_HELLO = 1; // RFC 8446 §4 HandshakeType.client_hello
const EXT_SERVER_NAME = 0; // RFC 6066 §3
const EXT_ALPN = 16; // RFC 7301 §3.1
const NAME_TYPE_HOST = 0; // RFC 6066 §3 NameType.host_name
const MAX_RECORD = 16384; // RFC 8446 §5.1: length MUST NOT exceed 2^14
/** legacy_version(2) random(32) session_id<1> cipher_suites<2>(>=2) compression<1>(>=1). */
const MIN_HELLO_BODY = 2 + 32 + 1 + 2 + 2 + 1 + 1;
const MAX_HELLO_BODY = 2 + 32 + 33 + 2 + 0xfffe + 256 + 2 + 0xffff;
const MAX_ALPN = 32;

/** SNI outcome recorded by the walk. */
const SNI_NONE = 0;
const SNI_OK = 1;
/** Present but unusable: malformed list, no host_name entry, or the extension repeated. */
const SNI_BAD = 2;

/** Offsets into the walked buffer; owned by one sniffer and reused across calls. */
export interface ClientHelloInfo {
  /** Handshake header + body length declared by the message (0 until the header is read). */
  messageLength: number;
  sniState: number;
  sniStart: number;
  sniEnd: number;
  alpnCount: number;
  /** start,end pairs of ALPN names. */
  alpn: Int32Array;
}

export function newClientHelloInfo(): ClientHelloInfo {
  return { messageLength: 0, sniState: SNI_NONE, sniStart: 0, sniEnd: 0, alpnCount: 0, alpn: new Int32Array(MAX_ALPN * 2) };
}

function u16(b: Uint8Array, p: number): number {
  return (b[p]! << 8) | b[p + 1]!;
}

/** 0 when [p, p+n) is available, Truncated when it runs past `avail`, Invalid when past `limit`. */
function room(p: number, n: number, avail: number, limit: number): number {
  if (p + n > limit) return HelloStatus.Invalid;
  if (p + n > avail) return HelloStatus.Truncated;
  return 0;
}

/** RFC 6066 §3: ServerNameList; the first host_name wins, a second host_name is a protocol error. */
function readServerName(b: Uint8Array, p: number, end: number, info: ClientHelloInfo): void {
  if (info.sniState !== SNI_NONE) {
    info.sniState = SNI_BAD; // RFC 8446 §4.2: no two extensions of one type
    return;
  }
  info.sniState = SNI_BAD;
  if (end - p < 2 || p + 2 + u16(b, p) !== end) return;
  p += 2;
  let found = false;
  while (p < end) {
    if (end - p < 3) return;
    const type = b[p]!;
    const len = u16(b, p + 1);
    p += 3;
    if (p + len > end) return;
    if (type === NAME_TYPE_HOST) {
      if (found) return; // "MUST NOT contain more than one name of the same name_type"
      found = true;
      info.sniStart = p;
      info.sniEnd = p + len;
    }
    p += len;
  }
  if (found) info.sniState = SNI_OK;
}

/** RFC 7301 §3.1: ProtocolNameList, each name 1..255 bytes; names kept only if printable ASCII. */
function readAlpn(b: Uint8Array, p: number, end: number, info: ClientHelloInfo): void {
  if (info.alpnCount !== 0 || end - p < 2 || p + 2 + u16(b, p) !== end) return;
  p += 2;
  let count = 0;
  while (p < end && count < MAX_ALPN) {
    const len = b[p]!;
    p++;
    if (len === 0 || p + len > end) break;
    let printable = true;
    for (let i = p; i < p + len; i++) {
      const c = b[i]!;
      if (c < 0x21 || c > 0x7e) {
        printable = false;
        break;
      }
    }
    if (printable) {
      info.alpn[count * 2] = p;
      info.alpn[count * 2 + 1] = p + len;
      count++;
    }
    p += len;
  }
  info.alpnCount = count;
}

/**
 * Walks the handshake message at `b[start, avail)`: HandshakeType(1) length(3)
 * then ClientHello (RFC 8446 §4.1.2). Records SNI and ALPN offsets in `info`.
 */
export function parseClientHelloMessage(b: Uint8Array, start: number, avail: number, info: ClientHelloInfo): HelloStatus {
  info.messageLength = 0;
  info.sniState = SNI_NONE;
  info.alpnCount = 0;
  if (avail > b.length) avail = b.length;
  if (avail <= start) return HelloStatus.Truncated;
  if (b[start] !== HS_CLIENT_HELLO) return HelloStatus.Invalid;
  if (avail - start < 4) {
    // A length's high byte is already visible: refuse absurd sizes early.
    if (avail - start >= 2 && b[start + 1]! > 0) return HelloStatus.Invalid;
    return HelloStatus.Truncated;
  }
  const bodyLen = (b[start + 1]! << 16) | (b[start + 2]! << 8) | b[start + 3]!;
  // The fixed fields plus <2^16 of cipher suites and <2^16 of extensions; a larger claim is not a ClientHello.
  if (bodyLen < MIN_HELLO_BODY || bodyLen > MAX_HELLO_BODY) return HelloStatus.Invalid;
  info.messageLength = 4 + bodyLen;
  const limit = start + 4 + bodyLen;
  if (avail > limit) avail = limit;
  let p = start + 4;
  let r: number;

  // legacy_version: 0x0303 in TLS 1.3; older clients 0x0300..0x0302 (RFC 8446 §4.1.2, Appendix D).
  if ((r = room(p, 2, avail, limit))) return r as HelloStatus;
  if (b[p] !== 3 || b[p + 1]! > 4) return HelloStatus.Invalid;
  p += 2 + 32; // random
  if ((r = room(p, 1, avail, limit))) return r as HelloStatus;
  const sidLen = b[p]!;
  if (sidLen > 32) return HelloStatus.Invalid;
  p += 1 + sidLen;
  if ((r = room(p, 2, avail, limit))) return r as HelloStatus;
  const csLen = u16(b, p);
  if (csLen < 2 || (csLen & 1) !== 0) return HelloStatus.Invalid;
  p += 2 + csLen;
  if ((r = room(p, 1, avail, limit))) return r as HelloStatus;
  const compLen = b[p]!;
  if (compLen < 1) return HelloStatus.Invalid;
  p += 1 + compLen;
  if (p > limit) return HelloStatus.Invalid;
  if (p === limit) return avail === limit ? HelloStatus.Ok : HelloStatus.Truncated; // no extensions (pre-TLS 1.3)
  if ((r = room(p, 2, avail, limit))) return r as HelloStatus;
  const extEnd = p + 2 + u16(b, p);
  if (extEnd !== limit) return HelloStatus.Invalid;
  p += 2;
  while (p < extEnd) {
    if ((r = room(p, 4, avail, extEnd))) return r as HelloStatus;
    const type = u16(b, p);
    const len = u16(b, p + 2);
    p += 4;
    if (p + len > extEnd) return HelloStatus.Invalid;
    if (p + len > avail) return HelloStatus.Truncated;
    if (type === EXT_SERVER_NAME) readServerName(b, p, p + len, info);
    else if (type === EXT_ALPN) readAlpn(b, p, p + len, info);
    p += len;
  }
  return HelloStatus.Ok;
}

/** The validated server name recorded by the last walk over `b`, or null. */
export function helloServerName(b: Uint8Array, info: ClientHelloInfo): string | null {
  if (info.sniState !== SNI_OK) return null;
  return hostnameFromBytes(b, info.sniStart, info.sniEnd, false);
}

/** The ALPN names recorded by the last walk over `b` (a fresh array). */
export function helloAlpn(b: Uint8Array, info: ClientHelloInfo): string[] {
  const n = info.alpnCount;
  const out = new Array<string>(n);
  for (let i = 0; i < n; i++) {
    const s = info.alpn[i * 2]!;
    const e = info.alpn[i * 2 + 1]!;
    out[i] = String.fromCharCode.apply(null, b.subarray(s, e) as unknown as number[]);
  }
  return out;
}

let gather = new Uint8Array(0);

function gatherBuffer(n: number): Uint8Array {
  if (gather.length < n) {
    let size = 4096;
    while (size < n) size *= 2;
    gather = new Uint8Array(size);
  }
  return gather;
}

/** RFC 8446 §5.1 record header check; 0 ok, 1 need more, 2 not TLS. */
function recordHeader(b: Uint8Array, p: number, limit: number): number {
  if (p < limit && b[p] !== CONTENT_HANDSHAKE) return 2;
  if (p + 1 < limit && b[p + 1] !== 3) return 2;
  if (p + 2 < limit && b[p + 2]! > 4) return 2;
  if (p + 5 > limit) {
    if (p + 3 < limit && b[p + 3]! > 0x40) return 2; // length high byte already says > 2^14
    return 1;
  }
  const len = u16(b, p + 3);
  if (len === 0 || len > MAX_RECORD) return 2;
  return 0;
}

function found(b: Uint8Array, info: ClientHelloInfo, complete: boolean): TlsFound {
  return { kind: 'found', protocol: 'tls', serverName: helloServerName(b, info), alpn: helloAlpn(b, info), complete };
}

/** A reusable walker state for callers that sniff many flows (the one-shot entry point uses a module-level one). */
const sharedInfo = newClientHelloInfo();

/**
 * Sniffs a ClientHello from the start of a TCP stream.
 *
 * `buf` is everything the client sent so far. At most `maxBytes` are
 * examined; once that many arrived (or `final` says no more will come) a
 * ClientHello still incomplete is reported from its prefix with
 * `complete: false` if the prefix is consistent (it is TLS; the name may have
 * been beyond the bound), and `not-this` if not even the handshake header was seen.
 */
export function sniffTlsClientHello(
  buf: Uint8Array,
  maxBytes: number = DEFAULT_MAX_BYTES,
  final = false,
  info: ClientHelloInfo = sharedInfo,
): SniffResult {
  checkLimit('maxBytes', maxBytes, 1, 1 << 24);
  const limit = buf.length < maxBytes ? buf.length : maxBytes;
  const atLimit = final || buf.length >= maxBytes;
  const h = recordHeader(buf, 0, limit);
  if (h === 2) return NOT_THIS;
  if (h === 1) return atLimit ? NOT_THIS : NEED_MORE;
  const firstEnd = 5 + u16(buf, 3);

  // Fast path: the message fits in the first record (the usual case); walk it in place.
  let status: HelloStatus;
  let walked: Uint8Array = buf;
  status = parseClientHelloMessage(buf, 5, firstEnd < limit ? firstEnd : limit, info);
  if (status === HelloStatus.Invalid) return NOT_THIS;
  if (status === HelloStatus.Truncated && (info.messageLength === 0 || 5 + info.messageLength > firstEnd)) {
    // The message continues past this record (or we cannot tell yet): gather fragments.
    const g = gatherBuffer(limit);
    let n = 0;
    let p = 0;
    while (p < limit) {
      const hr = recordHeader(buf, p, limit);
      if (hr === 2) return NOT_THIS; // RFC 8446 §5.1: no other record type interleaves a handshake message
      if (hr === 1) break;
      const recEnd = p + 5 + u16(buf, p + 3);
      const fragEnd = recEnd < limit ? recEnd : limit;
      g.set(buf.subarray(p + 5, fragEnd), n);
      n += fragEnd - (p + 5);
      p = recEnd;
      if (n >= 4) {
        const need = 4 + ((g[1]! << 16) | (g[2]! << 8) | g[3]!);
        if (n >= need) break;
      }
    }
    walked = g;
    status = parseClientHelloMessage(g, 0, n, info);
    if (status === HelloStatus.Invalid) return NOT_THIS;
  }
  if (status === HelloStatus.Ok) return found(walked, info, true);
  if (!atLimit) return NEED_MORE;
  return info.messageLength > 0 ? found(walked, info, false) : NOT_THIS;
}
