/**
 * Addresses for the DNS layer: text and CIDRs from the one address module
 * (src/wire/ip-address.ts), and reverse-lookup names (RFC 1035 3.5
 * in-addr.arpa, RFC 3596 2.5 ip6.arpa). Nothing here throws on bad input:
 * parsers return null.
 */
import { parseIpv4Into, parseIpv6Text } from '../wire/ip-address.js';

// Address text and CIDRs are the wire layer's (src/wire/ip-address.ts): the
// DNS layer prints and parses them as the rest of sluice does.
export { canonicalIp, cidrContains, formatIp, formatIpv4, formatIpv6, parseCidr, parseIp, type Cidr } from '../wire/ip-address.js';

/** Dotted-quad IPv4 into `out` (4 new bytes when omitted), or null. */
export function parseIpv4(s: string, out?: Uint8Array, off = 0): Uint8Array | null {
  const dst = out ?? new Uint8Array(4);
  return parseIpv4Into(s, dst, off) ? dst : null;
}

/** IPv6 text (RFC 4291 2.2) into `out` (16 new bytes when omitted), or null. */
export function parseIpv6(s: string, out?: Uint8Array, off = 0): Uint8Array | null {
  const dst = out ?? new Uint8Array(16);
  return parseIpv6Text(s, dst, off) ? dst : null;
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
