/**
 * HTTP/1.x request-head sniffer (sans-IO): method, request target and the
 * host the client wants, from the first bytes of a TCP stream.
 *
 * Grammar (RFC 9112): request-line = method SP request-target SP HTTP-version
 * CRLF (§3), then field lines until an empty line (§2.1). A bare LF is accepted
 * as a line terminator (§2.2 permits it) and up to two empty lines before the
 * request line are skipped (§2.2 "SHOULD ignore at least one").
 *
 * The host comes from the target when it is absolute-form or authority-form
 * (§3.2.2: the Host field is then ignored), else from the single Host field
 * (§3.2: more than one Host, or Host folded across lines, is a 400 for a
 * server, so we refuse to route on it: serverName null).
 */
import { Buffer } from 'node:buffer';
import { DEFAULT_MAX_BYTES, NEED_MORE, NOT_THIS, NO_ALPN, checkLimit, type HttpFound, type SniffResult } from './result.js';
import { hostnameFromBytes, ipv6FromBytes } from './hostname.js';

const SP = 0x20;
const HTAB = 0x09;
const CR = 0x0d;
const LF = 0x0a;
const COLON = 0x3a;
const MAX_METHOD = 32;
const MAX_LEADING_EMPTY_LINES = 2;
const VERSION_PREFIX = [0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e]; // "HTTP/1."

/** RFC 9110 §5.6.2 tchar. */
const TCHAR = new Uint8Array(256);
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;
for (const ch of "!#$%&'*+-.^_`|~") TCHAR[ch.charCodeAt(0)] = 1;

function latin1(b: Uint8Array, s: number, e: number): string {
  return Buffer.from(b.buffer, b.byteOffset + s, e - s).toString('latin1');
}

/** Finds LF in [p, limit); -1 when absent. */
function findLf(b: Uint8Array, p: number, limit: number): number {
  const i = b.subarray(0, limit).indexOf(LF, p);
  return i;
}

/**
 * host [":" port] or "[" IPv6 "]" [":" port] (RFC 3986 §3.2.2-3.2.3) in
 * b[s, e). Returns the normal-form host or null.
 */
export function hostFromAuthority(b: Uint8Array, s: number, e: number): string | null {
  if (s >= e) return null;
  if (b[s] === 0x5b) {
    let close = -1;
    for (let i = s + 1; i < e; i++) {
      if (b[i] === 0x5d) {
        close = i;
        break;
      }
    }
    if (close < 0) return null;
    if (close + 1 < e && (b[close + 1] !== COLON || !portDigits(b, close + 2, e))) return null;
    return ipv6FromBytes(b, s + 1, close);
  }
  let colon = -1;
  for (let i = s; i < e; i++) {
    if (b[i] === COLON) {
      if (colon >= 0) return null; // a bare IPv6 without brackets, or garbage
      colon = i;
    }
  }
  if (colon >= 0) {
    if (!portDigits(b, colon + 1, e)) return null;
    e = colon;
  }
  return hostnameFromBytes(b, s, e, true);
}

/** RFC 3986 §3.2.3 port = *DIGIT (empty allowed), bounded to 5 digits. */
function portDigits(b: Uint8Array, s: number, e: number): boolean {
  if (e - s > 5) return false;
  for (let i = s; i < e; i++) if (b[i]! < 0x30 || b[i]! > 0x39) return false;
  return true;
}

function isAlpha(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** CONNECT (exactly, methods are case-sensitive: RFC 9110 §9.1). */
function isConnect(b: Uint8Array, s: number, e: number): boolean {
  return (
    e - s === 7 &&
    b[s] === 0x43 && b[s + 1] === 0x4f && b[s + 2] === 0x4e && b[s + 3] === 0x4e &&
    b[s + 4] === 0x45 && b[s + 5] === 0x43 && b[s + 6] === 0x54
  );
}

/** Field name "host" in any case (RFC 9110 §5.1: field names are case-insensitive). */
function isHostName(b: Uint8Array, s: number, e: number): boolean {
  return (
    e - s === 4 &&
    (b[s]! | 0x20) === 0x68 && (b[s + 1]! | 0x20) === 0x6f && (b[s + 2]! | 0x20) === 0x73 && (b[s + 3]! | 0x20) === 0x74
  );
}

/**
 * Sniffs an HTTP/1.x request head. At most `maxBytes` are examined; once
 * that many arrived (or `final`), a head whose request line is complete is
 * reported from what was read (`complete: false`), else `not-this`.
 */
export function sniffHttpRequest(buf: Uint8Array, maxBytes: number = DEFAULT_MAX_BYTES, final = false): SniffResult {
  checkLimit('maxBytes', maxBytes, 1, 1 << 24);
  const limit = buf.length < maxBytes ? buf.length : maxBytes;
  const atLimit = final || buf.length >= maxBytes;
  const more = atLimit ? NOT_THIS : NEED_MORE;
  const b = buf;
  let p = 0;
  for (let i = 0; i < MAX_LEADING_EMPTY_LINES; i++) {
    if (p < limit && b[p] === CR) {
      if (p + 1 >= limit) return more;
      if (b[p + 1] !== LF) return NOT_THIS;
      p += 2;
    } else if (p < limit && b[p] === LF) p++;
  }

  // method = token
  const mStart = p;
  while (p < limit && TCHAR[b[p]!] === 1) {
    if (p - mStart >= MAX_METHOD) return NOT_THIS;
    p++;
  }
  if (p >= limit) return more;
  if (p === mStart || b[p] !== SP) return NOT_THIS;
  const mEnd = p++;

  // request-target: no CTL, no SP (RFC 9112 §3.2); bytes >= 0x80 tolerated.
  const tStart = p;
  while (p < limit) {
    const c = b[p]!;
    if (c === SP) break;
    if (c < 0x21 || c === 0x7f) return NOT_THIS;
    p++;
  }
  if (p >= limit) return more;
  if (p === tStart) return NOT_THIS;
  const tEnd = p++;

  // HTTP-version = "HTTP/1." DIGIT, then CRLF or LF
  for (let i = 0; i < VERSION_PREFIX.length; i++, p++) {
    if (p >= limit) return more;
    if (b[p] !== VERSION_PREFIX[i]) return NOT_THIS;
  }
  if (p >= limit) return more;
  if (b[p]! < 0x30 || b[p]! > 0x39) return NOT_THIS;
  p++;
  if (p >= limit) return more;
  if (b[p] === CR) {
    p++;
    if (p >= limit) return more;
  }
  if (b[p] !== LF) return NOT_THIS;
  p++;

  // It is an HTTP/1.x request from here on; what remains is where the host is.
  let hostCount = 0;
  let hostBad = false;
  let hostStart = 0;
  let hostEnd = 0;
  let lastWasHost = false;
  let complete = false;
  while (true) {
    const lf = findLf(b, p, limit);
    if (lf < 0) {
      if (!atLimit) return NEED_MORE;
      break; // cut by the bound: use what we have
    }
    let lineEnd = lf;
    if (lineEnd > p && b[lineEnd - 1] === CR) lineEnd--;
    if (lineEnd === p) {
      complete = true;
      break;
    }
    const c0 = b[p]!;
    if (c0 === SP || c0 === HTAB) {
      // obs-fold (RFC 9112 §5.2): a folded Host value is ambiguous
      if (lastWasHost) hostBad = true;
    } else {
      let q = p;
      while (q < lineEnd && TCHAR[b[q]!] === 1) q++;
      if (q === p || q >= lineEnd || b[q] !== COLON) {
        // RFC 9112 §5.1: no whitespace before ':'; a malformed field line ends what we trust.
        hostBad = true;
        complete = true;
        break;
      }
      lastWasHost = isHostName(b, p, q);
      if (lastWasHost) {
        hostCount++;
        let vs = q + 1;
        let ve = lineEnd;
        while (vs < ve && (b[vs] === SP || b[vs] === HTAB)) vs++;
        while (ve > vs && (b[ve - 1] === SP || b[ve - 1] === HTAB)) ve--;
        hostStart = vs;
        hostEnd = ve;
      }
    }
    p = lf + 1;
  }

  // Target form (RFC 9112 §3.2.1-3.2.4) decides where the host comes from.
  let serverName: string | null = null;
  let path: string;
  let fromTarget = false;
  if (isConnect(b, mStart, mEnd)) {
    fromTarget = true;
    serverName = hostFromAuthority(b, tStart, tEnd);
    path = '';
  } else if (b[tStart] === 0x2f || (tEnd - tStart === 1 && b[tStart] === 0x2a)) {
    path = latin1(b, tStart, tEnd);
  } else {
    // absolute-form: scheme "://" authority path-abempty [ "?" query ]
    let q = tStart;
    if (isAlpha(b[q]!)) {
      q++;
      while (q < tEnd && (isAlpha(b[q]!) || (b[q]! >= 0x30 && b[q]! <= 0x39) || b[q] === 0x2b || b[q] === 0x2d || b[q] === 0x2e)) q++;
    }
    if (q > tStart && q + 3 <= tEnd && b[q] === COLON && b[q + 1] === 0x2f && b[q + 2] === 0x2f) {
      fromTarget = true;
      const aStart = q + 3;
      let aEnd = aStart;
      while (aEnd < tEnd && b[aEnd] !== 0x2f && b[aEnd] !== 0x3f && b[aEnd] !== 0x23) aEnd++;
      let hStart = aStart;
      for (let i = aStart; i < aEnd; i++) if (b[i] === 0x40) hStart = i + 1; // userinfo "@"
      serverName = hostFromAuthority(b, hStart, aEnd);
      path = aEnd < tEnd ? (b[aEnd] === 0x2f ? latin1(b, aEnd, tEnd) : '/' + latin1(b, aEnd, tEnd)) : '/';
    } else {
      path = latin1(b, tStart, tEnd);
    }
  }
  if (!fromTarget && hostCount === 1 && !hostBad) serverName = hostFromAuthority(b, hostStart, hostEnd);
  const result: HttpFound = {
    kind: 'found',
    protocol: 'http',
    serverName,
    alpn: NO_ALPN,
    method: String.fromCharCode.apply(null, b.subarray(mStart, mEnd) as unknown as number[]),
    path,
    complete,
  };
  return result;
}
