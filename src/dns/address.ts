/**
 * IP address text <-> bytes for the DNS layer, and reverse-lookup names
 * (RFC 1035 3.5 in-addr.arpa, RFC 3596 2.5 ip6.arpa). Nothing here throws on
 * bad input: parsers return null.
 */
import { parseIpv4Text, writeIpv4Addr } from '../wire/ipv4.js';
import { parseIpv6Text } from '../wire/ipv6.js';

/** Parses dotted-quad IPv4 (no leading zeros beyond a lone "0"); the wire codec's parser. */
export function parseIpv4(s: string, out?: Uint8Array, off = 0): Uint8Array | null {
  const v = parseIpv4Text(s);
  if (v === null) return null;
  const dst = out ?? new Uint8Array(4);
  writeIpv4Addr(dst, off, v);
  return dst;
}

/** Parses IPv6 text (RFC 4291 2.2, including "::" and a trailing dotted quad); the wire codec's parser. */
export function parseIpv6(s: string, out?: Uint8Array, off = 0): Uint8Array | null {
  const dst = out ?? new Uint8Array(16);
  return parseIpv6Text(s, dst, off) ? dst : null;
}

/** Parses either family; returns 4 or 16 bytes, or null. */
export function parseIp(s: string): Uint8Array | null {
  return s.includes(':') ? parseIpv6(s) : parseIpv4(s);
}

export function formatIpv4(b: Uint8Array, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** RFC 5952 canonical text: lowercase, longest run (>= 2) of zero groups as "::". */
export function formatIpv6(b: Uint8Array, off = 0): string {
  let bestStart = -1;
  let bestLen = 0;
  let runStart = -1;
  for (let g = 0; g <= 8; g++) {
    const zero = g < 8 && b[off + g * 2] === 0 && b[off + g * 2 + 1] === 0;
    if (zero) {
      if (runStart === -1) runStart = g;
    } else if (runStart !== -1) {
      if (g - runStart > bestLen) {
        bestLen = g - runStart;
        bestStart = runStart;
      }
      runStart = -1;
    }
  }
  if (bestLen < 2) bestStart = -1;
  let s = '';
  for (let g = 0; g < 8; g++) {
    if (g === bestStart) {
      s += '::';
      g += bestLen - 1;
      continue;
    }
    if (s.length > 0 && !s.endsWith(':')) s += ':';
    s += (((b[off + g * 2]! << 8) | b[off + g * 2 + 1]!) >>> 0).toString(16);
  }
  return s;
}

export function formatIp(b: Uint8Array, off = 0, len = b.length - off): string {
  return len === 4 ? formatIpv4(b, off) : formatIpv6(b, off);
}

/** Canonical text of an address string, or null when it does not parse. */
export function canonicalIp(s: string): string | null {
  const b = parseIp(s);
  return b === null ? null : formatIp(b);
}

/** A CIDR block: network bytes (host bits cleared) and prefix length. */
export interface Cidr {
  family: 4 | 6;
  bytes: Uint8Array;
  prefix: number;
}

export function parseCidr(s: string): Cidr | null {
  const slash = s.indexOf('/');
  const addr = slash === -1 ? s : s.slice(0, slash);
  const bytes = parseIp(addr);
  if (bytes === null) return null;
  const max = bytes.length * 8;
  let prefix = max;
  if (slash !== -1) {
    const p = s.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > max) return null;
  }
  for (let bit = prefix; bit < max; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family: bytes.length === 4 ? 4 : 6, bytes, prefix };
}

/** Whether addr (4 or 16 bytes at off) lies inside the block. */
export function cidrContains(c: Cidr, addr: Uint8Array, off = 0): boolean {
  const full = c.prefix >> 3;
  for (let i = 0; i < full; i++) if (addr[off + i] !== c.bytes[i]) return false;
  const rest = c.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff00 >> rest) & 0xff;
  return (addr[off + full]! & mask) === c.bytes[full];
}

const HEX = '0123456789abcdef';

/** "10.2.0.192.in-addr.arpa" / nibble ip6.arpa name of an address. */
export function reverseName(b: Uint8Array): string {
  if (b.length === 4) return `${b[3]}.${b[2]}.${b[1]}.${b[0]}.in-addr.arpa`;
  let s = '';
  for (let i = 15; i >= 0; i--) s += `${HEX[b[i]! & 0xf]}.${HEX[b[i]! >> 4]}.`;
  return `${s}ip6.arpa`;
}

/**
 * The address a PTR query name stands for, or null when the name is not a
 * complete reverse name (partial zones such as "2.0.192.in-addr.arpa" are
 * not single addresses).
 */
export function addressFromReverseName(name: string): Uint8Array | null {
  const lower = name.toLowerCase().replace(/\.$/, '');
  if (lower.endsWith('.in-addr.arpa')) {
    const parts = lower.slice(0, -'.in-addr.arpa'.length).split('.');
    if (parts.length !== 4) return null;
    return parseIpv4(`${parts[3]}.${parts[2]}.${parts[1]}.${parts[0]}`);
  }
  if (lower.endsWith('.ip6.arpa')) {
    const parts = lower.slice(0, -'.ip6.arpa'.length).split('.');
    if (parts.length !== 32) return null;
    const out = new Uint8Array(16);
    for (let i = 0; i < 32; i++) {
      const p = parts[i]!;
      if (p.length !== 1) return null;
      const v = HEX.indexOf(p);
      if (v < 0) return null;
      const byte = 15 - (i >> 1);
      out[byte] = (i & 1) === 0 ? out[byte]! | v : out[byte]! | (v << 4);
    }
    return out;
  }
  return null;
}
