/**
 * IP address text and CIDR blocks: the one place sluice parses and prints
 * addresses. The packet codecs (ipv4.ts, ipv6.ts), the DNS layer, the policy
 * trie, the SOCKS5 codec and the config checks all use these, so an address
 * reads and prints the same everywhere (a flow's address, a snooped DNS
 * answer and a rule agree on `::ffff:192.0.2.1`).
 *
 * Text forms accepted:
 *   - IPv4: the dotted quad, exactly four decimal octets, no leading zeros
 *     ("010" is 8 to inet_aton and 10 to others, so it is refused), no
 *     shorthand ("10.1", "0x7f.1").
 *   - IPv6: RFC 4291 2.2: eight hex groups of one to four digits, at most
 *     one "::", an optional dotted-quad tail (form 3) in the last 32 bits.
 *   - A bare parse refuses brackets and zone ids: "[2001:db8::1]" is a URI
 *     host (RFC 3986 3.2.2) and "fe80::1%eth0" names an interface (RFC 4007
 *     11.2); callers that take those forms strip them first with
 *     `unbracket` / `withoutZone`, so a rule or a config key never silently
 *     means an interface-scoped address.
 * Printed forms: IPv4 dotted quad; IPv6 RFC 5952 (lowercase, leading zeros
 * dropped, the longest run of two or more zero groups as "::", the first of
 * equal runs), and IPv4-mapped addresses in mixed notation "::ffff:a.b.c.d"
 * (RFC 5952 5), as Node prints a mapped socket address.
 *
 * Parsers never throw and return null/false on bad text; they work on char
 * codes without regular expressions and, given an output buffer, allocate
 * nothing (a TPROXY socket's addresses are parsed once per flow; TUN flows bring bytes).
 */

/** The longest IPv6 text: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255". */
const MAX_IPV6_TEXT = 45;

const CH_DOT = 46;
const CH_COLON = 58;
const CH_0 = 48;

/**
 * Parses a dotted quad in s[start, end) into out[at..at+4). Exactly four
 * decimal octets of one to three digits, each at most 255, no leading zero.
 */
function parseQuad(s: string, start: number, end: number, out: Uint8Array, at: number): boolean {
  let i = start;
  for (let part = 0; part < 4; part++) {
    if (part > 0) {
      if (i >= end || s.charCodeAt(i) !== CH_DOT) return false;
      i++;
    }
    const first = i;
    let v = 0;
    while (i < end && i - first < 4) {
      const d = s.charCodeAt(i) - CH_0;
      if (d < 0 || d > 9) break;
      v = v * 10 + d;
      i++;
    }
    const digits = i - first;
    if (digits === 0 || digits > 3 || v > 255 || (digits > 1 && s.charCodeAt(first) === CH_0)) return false;
    out[at + part] = v;
  }
  return i === end;
}

const QUAD = new Uint8Array(4);

/** Dotted-quad text to a uint32 (host order), or null. */
export function parseIpv4Text(s: string): number | null {
  if (!parseQuad(s, 0, s.length, QUAD, 0)) return null;
  return ((QUAD[0]! << 24) | (QUAD[1]! << 16) | (QUAD[2]! << 8) | QUAD[3]!) >>> 0;
}

/** Dotted-quad text into out[off..off+4); false (out untouched or partly written) on bad text. */
export function parseIpv4Into(s: string, out: Uint8Array, off = 0): boolean {
  return parseQuad(s, 0, s.length, out, off);
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/**
 * Parses bare IPv6 text (RFC 4291 2.2, no brackets, no zone id) into
 * out[outOff..outOff+16). Returns false on bad text; out may then hold
 * partial bytes.
 */
export function parseIpv6Text(s: string, out: Uint8Array, outOff = 0): boolean {
  const n = s.length;
  if (n < 2 || n > MAX_IPV6_TEXT) return false;
  // Groups are written at out[outOff + 2k] as they are read; a "::" leaves
  // its gap position, and the groups after it are moved to the end.
  let count = 0;
  let gap = -1;
  let i = 0;
  if (s.charCodeAt(0) === CH_COLON) {
    if (s.charCodeAt(1) !== CH_COLON) return false;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    let j = i;
    let v = 0;
    while (j < n && j - i < 5) {
      const h = hexDigit(s.charCodeAt(j));
      if (h < 0) break;
      v = (v << 4) | h;
      j++;
    }
    if (j < n && s.charCodeAt(j) === CH_DOT) {
      // The dotted-quad tail (form 3): the last thing in the text, 32 bits.
      if (count > 6 || !parseQuad(s, i, n, out, outOff + 2 * count)) return false;
      count += 2;
      i = n;
      break;
    }
    if (j === i || j - i > 4 || count === 8) return false;
    out[outOff + 2 * count] = v >>> 8;
    out[outOff + 2 * count + 1] = v & 0xff;
    count++;
    i = j;
    if (i === n) break;
    if (s.charCodeAt(i) !== CH_COLON) return false;
    i++;
    if (i < n && s.charCodeAt(i) === CH_COLON) {
      if (gap >= 0) return false; // a second "::"
      gap = count;
      i++;
    } else if (i === n) {
      return false; // a trailing single colon
    }
  }
  if (gap < 0) return count === 8;
  if (count > 7) return false;
  // Move the groups after the gap to the end and zero the gap.
  const tail = count - gap;
  const shift = 8 - count;
  for (let k = tail - 1; k >= 0; k--) {
    out[outOff + 2 * (gap + shift + k)] = out[outOff + 2 * (gap + k)]!;
    out[outOff + 2 * (gap + shift + k) + 1] = out[outOff + 2 * (gap + k) + 1]!;
  }
  for (let k = gap; k < gap + shift; k++) {
    out[outOff + 2 * k] = 0;
    out[outOff + 2 * k + 1] = 0;
  }
  return true;
}

/** Bare IPv4 or IPv6 text to 4 or 16 new bytes, or null. */
export function parseIp(s: string): Uint8Array | null {
  if (s.indexOf(':') >= 0) {
    const b = new Uint8Array(16);
    return parseIpv6Text(s, b, 0) ? b : null;
  }
  const b = new Uint8Array(4);
  return parseQuad(s, 0, s.length, b, 0) ? b : null;
}

/**
 * 4 or 6 for an address literal, 0 for anything else (a name, bad text).
 * With `zone`, an IPv6 literal may carry a zone id ("fe80::1%eth0"), as
 * Node's net.isIP allows; an IPv4 one never does.
 */
export function ipFamilyOf(s: string, zone = false): 0 | 4 | 6 {
  if (s.indexOf(':') >= 0) return parseIpv6Text(zone ? withoutZone(s) : s, SCRATCH6, 0) ? 6 : 0;
  return parseQuad(s, 0, s.length, QUAD, 0) ? 4 : 0;
}

const SCRATCH6 = new Uint8Array(16);

/** "[2001:db8::1]" to "2001:db8::1" (a URI or host:port host, RFC 3986 3.2.2); other text unchanged. */
export function unbracket(s: string): string {
  return s.length >= 2 && s.charCodeAt(0) === 0x5b && s.charCodeAt(s.length - 1) === 0x5d ? s.slice(1, -1) : s;
}

/** "fe80::1%eth0" to "fe80::1": the address without its zone id (RFC 4007 11.2); other text unchanged. */
export function withoutZone(s: string): string {
  const z = s.indexOf('%');
  return z < 0 ? s : s.slice(0, z);
}

/** Whether the 16 bytes at buf[off] are an IPv4-mapped address, ::ffff:0:0/96 (RFC 4291 2.5.5.2). */
export function isIpv4Mapped(buf: Uint8Array, off: number): boolean {
  for (let i = 0; i < 10; i++) if (buf[off + i] !== 0) return false;
  return buf[off + 10] === 0xff && buf[off + 11] === 0xff;
}

/** The dotted quad of an IPv4-mapped text form ("::ffff:192.0.2.1" -> "192.0.2.1"); other text unchanged. */
export function unmapIpv4Text(s: string): string {
  if (s.length > 7 && s.charCodeAt(0) === CH_COLON && s.toLowerCase().startsWith('::ffff:')) {
    const rest = s.slice(7);
    if (parseQuad(rest, 0, rest.length, QUAD, 0)) return rest;
  }
  return s;
}

export function formatIpv4(buf: Uint8Array, off = 0): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** RFC 5952 text of the 16 bytes at buf[off]; IPv4-mapped in mixed notation (RFC 5952 5). */
export function formatIpv6(buf: Uint8Array, off = 0): string {
  if (isIpv4Mapped(buf, off)) return `::ffff:${buf[off + 12]}.${buf[off + 13]}.${buf[off + 14]}.${buf[off + 15]}`;
  // The longest run of zero groups, the first of equal runs (RFC 5952 4.2.3);
  // a single zero group is not compressed (4.2.2).
  let bestStart = -1;
  let bestLen = 1;
  for (let g = 0; g < 8; ) {
    if (buf[off + 2 * g] !== 0 || buf[off + 2 * g + 1] !== 0) {
      g++;
      continue;
    }
    let e = g;
    while (e < 8 && buf[off + 2 * e] === 0 && buf[off + 2 * e + 1] === 0) e++;
    if (e - g > bestLen) {
      bestStart = g;
      bestLen = e - g;
    }
    g = e;
  }
  let s = '';
  for (let g = 0; g < 8; g++) {
    if (g === bestStart) {
      s += '::';
      g += bestLen - 1;
      continue;
    }
    if (s.length > 0 && s.charCodeAt(s.length - 1) !== CH_COLON) s += ':';
    s += ((buf[off + 2 * g]! << 8) | buf[off + 2 * g + 1]!).toString(16);
  }
  return s;
}

/** Text of the 4- or 16-byte address at b[off, off+len). */
export function formatIp(b: Uint8Array, off = 0, len = b.length - off): string {
  return len === 4 ? formatIpv4(b, off) : formatIpv6(b, off);
}

/** The printed form of an address text, or null when it is not a bare address. */
export function canonicalIp(s: string): string | null {
  const b = parseIp(s);
  return b === null ? null : formatIp(b);
}

// ---------------------------------------------------------------- CIDR blocks

/** A CIDR block: network-order bytes with host bits cleared, and its prefix length. */
export interface Cidr {
  family: 4 | 6;
  bytes: Uint8Array;
  prefix: number;
  /** The text had bits set beyond the prefix ("10.0.0.1/8"); they were cleared. */
  hostBitsSet: boolean;
}

/** Clears the bits of b past `prefix`; whether any was set. */
export function clearHostBits(b: Uint8Array, prefix: number): boolean {
  let changed = false;
  for (let i = 0; i < b.length; i++) {
    const keep = prefix >= (i + 1) * 8 ? 8 : Math.max(0, prefix - i * 8);
    const m = keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
    if ((b[i]! & ~m) !== 0) changed = true;
    b[i] = b[i]! & m;
  }
  return changed;
}

/**
 * A prefix length 0..max in s[start, end): decimal, no leading zero, or -1.
 */
function parsePrefix(s: string, start: number, max: number): number {
  const n = s.length - start;
  if (n < 1 || n > 3 || (n > 1 && s.charCodeAt(start) === CH_0)) return -1;
  let v = 0;
  for (let i = start; i < s.length; i++) {
    const d = s.charCodeAt(i) - CH_0;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v <= max ? v : -1;
}

/**
 * Parses "address/prefix", or a bare address as a host block (/32, /128).
 * Host bits are cleared and reported (`hostBitsSet`), as `ip route` does.
 * Null on bad text.
 */
export function parseCidr(s: string): Cidr | null {
  const slash = s.indexOf('/');
  const bytes = parseIp(slash < 0 ? s : s.slice(0, slash));
  if (bytes === null) return null;
  const max = bytes.length * 8;
  const prefix = slash < 0 ? max : parsePrefix(s, slash + 1, max);
  if (prefix < 0) return null;
  const hostBitsSet = clearHostBits(bytes, prefix);
  return { family: bytes.length === 4 ? 4 : 6, bytes, prefix, hostBitsSet };
}

/** Whether the address of the block's family at addr[off] lies inside it. */
export function cidrContains(c: { bytes: Uint8Array; prefix: number }, addr: Uint8Array, off = 0): boolean {
  const full = c.prefix >> 3;
  for (let i = 0; i < full; i++) if (addr[off + i] !== c.bytes[i]) return false;
  const rest = c.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff00 >> rest) & 0xff;
  return (addr[off + full]! & mask) === c.bytes[full];
}
