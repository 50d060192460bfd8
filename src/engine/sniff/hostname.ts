/**
 * Turning untrusted name bytes into a routing key. Every sniffer funnels its
 * candidate name through here so the policy engine sees one normal form:
 * ASCII, lowercase, no trailing dot, labels of 1-63 characters from
 * [a-z0-9_-], at most 253 characters (RFC 1035 §2.3.4, RFC 1123 §2.1; the
 * underscore is tolerated because service labels such as `_dmarc` are real).
 * Anything else is refused (null) rather than repaired.
 */
import { isIPv6 } from 'node:net';

const MAX_NAME = 253;
const MAX_LABEL = 63;

/** Byte classes: 1 = lowercase-able letter, 2 = allowed as is, 0 = refused. */
const CLASS = new Uint8Array(256);
for (let c = 0x41; c <= 0x5a; c++) CLASS[c] = 1; // A-Z
for (let c = 0x61; c <= 0x7a; c++) CLASS[c] = 2; // a-z
for (let c = 0x30; c <= 0x39; c++) CLASS[c] = 2; // 0-9
CLASS[0x2d] = 2; // '-'
CLASS[0x5f] = 2; // '_'

const scratch = new Uint8Array(MAX_NAME + 1);

function bytesToString(n: number): string {
  // Names are short (<= 253); one apply over a view is cheaper than n concatenations.
  return String.fromCharCode.apply(null, scratch.subarray(0, n) as unknown as number[]);
}

/** Whether the normalised scratch copy is a dotted-quad IPv4 literal (no leading zeros, each part <= 255). */
function isDottedQuad(n: number): boolean {
  let parts = 0;
  let i = 0;
  while (i <= n) {
    const partStart = i;
    let value = 0;
    while (i < n && scratch[i] !== 0x2e) {
      const c = scratch[i]!;
      if (c < 0x30 || c > 0x39) return false;
      value = value * 10 + (c - 0x30);
      i++;
    }
    const len = i - partStart;
    if (len === 0 || len > 3 || value > 255 || (len > 1 && scratch[partStart] === 0x30)) return false;
    parts++;
    i++; // past the dot (or past the end)
  }
  return parts === 4;
}

/**
 * Validates and lowercases `buf[start, end)` as a DNS host name.
 * `allowIpv4` accepts a dotted-quad IPv4 literal (HTTP Host may carry one,
 * RFC 9110 §7.2; TLS SNI may not, RFC 6066 §3). An all-numeric last label
 * that is not a valid IPv4 literal is refused (RFC 3696 §2).
 */
export function hostnameFromBytes(buf: Uint8Array, start: number, end: number, allowIpv4: boolean): string | null {
  if (end > start && buf[end - 1] === 0x2e) end--; // one trailing dot: absolute form of the same name
  const n = end - start;
  if (n <= 0 || n > MAX_NAME) return null;
  let label = 0;
  let lastLabelAllDigits = true;
  for (let i = 0; i < n; i++) {
    let c = buf[start + i]!;
    if (c === 0x2e) {
      if (label === 0) return null;
      label = 0;
      lastLabelAllDigits = true;
      scratch[i] = c;
      continue;
    }
    const k = CLASS[c]!;
    if (k === 0) return null;
    if (k === 1) c |= 0x20;
    if (c < 0x30 || c > 0x39) lastLabelAllDigits = false;
    if (++label > MAX_LABEL) return null;
    scratch[i] = c;
  }
  if (label === 0) return null;
  if (lastLabelAllDigits) {
    if (!allowIpv4 || !isDottedQuad(n)) return null;
  }
  return bytesToString(n);
}

/** Validates the inside of an IPv6 literal `[...]` (RFC 3986 §3.2.2) and lowercases it; zone ids are refused. */
export function ipv6FromBytes(buf: Uint8Array, start: number, end: number): string | null {
  const n = end - start;
  if (n < 2 || n > 45) return null;
  for (let i = 0; i < n; i++) {
    let c = buf[start + i]!;
    const hexDigit = (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
    if (!hexDigit && c !== 0x3a && c !== 0x2e) return null;
    if (c >= 0x41 && c <= 0x46) c |= 0x20;
    scratch[i] = c;
  }
  const s = bytesToString(n);
  return isIPv6(s) ? s : null;
}

/** True when `s` is already in the normal form `hostnameFromBytes` produces (for tests and assertions). */
export function isNormalHostname(s: string, allowIp: boolean): boolean {
  if (allowIp && isIPv6(s)) return s === s.toLowerCase();
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) return false;
    b[i] = c;
  }
  return hostnameFromBytes(b, 0, b.length, allowIp) === s;
}
