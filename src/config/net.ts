/**
 * Address arithmetic for configuration checks: parse IPv4/IPv6 addresses and
 * CIDR blocks into bigints, test host bits and overlap, and print the
 * canonical form (RFC 5952 for IPv6) in "did you mean" hints.
 *
 * This runs once per config load, never per packet, so bigints are fine.
 */
import { formatIpv6, parseIpv4Text, parseIpv6Text } from '../wire/ip-address.js';

export interface IpAddress {
  family: 4 | 6;
  value: bigint;
}

export interface Cidr {
  family: 4 | 6;
  /** The address as written (host bits possibly set). */
  value: bigint;
  prefix: number;
}

function bitsOf(family: 4 | 6): number {
  return family === 4 ? 32 : 128;
}

/** Parses a bare IPv4 or IPv6 address (no brackets, no zone) with the wire codec's parsers. */
export function parseIp(s: string): IpAddress | null {
  if (!s.includes(':')) {
    const v4 = parseIpv4Text(s);
    return v4 === null ? null : { family: 4, value: BigInt(v4) };
  }
  const bytes = new Uint8Array(16);
  if (!parseIpv6Text(s, bytes, 0)) return null;
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return { family: 6, value: v };
}

/** Parses "address/prefix"; null when either part is malformed. */
export function parseCidr(s: string): Cidr | null {
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const ip = parseIp(s.slice(0, slash));
  const prefixText = s.slice(slash + 1);
  if (ip === null || !/^(?:0|[1-9][0-9]{0,2})$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  if (prefix > bitsOf(ip.family)) return null;
  return { family: ip.family, value: ip.value, prefix };
}

function hostMask(c: { family: 4 | 6; prefix: number }): bigint {
  return (1n << BigInt(bitsOf(c.family) - c.prefix)) - 1n;
}

/** The block's network address (host bits cleared). */
export function networkOf(c: Cidr): Cidr {
  return { family: c.family, value: c.value & ~hostMask(c), prefix: c.prefix };
}

export function hasHostBits(c: Cidr): boolean {
  return (c.value & hostMask(c)) !== 0n;
}

/** Number of addresses in the block. */
export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt(bitsOf(c.family) - c.prefix);
}

export function cidrContains(c: Cidr, ip: IpAddress): boolean {
  return c.family === ip.family && (ip.value & ~hostMask(c)) === (c.value & ~hostMask(c));
}

/** CIDR blocks either nest or are disjoint, so overlap means one holds the other's network address. */
export function cidrOverlap(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const wider = a.prefix <= b.prefix ? a : b;
  const narrower = wider === a ? b : a;
  return cidrContains(wider, { family: narrower.family, value: narrower.value });
}

export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) {
    const v = Number(ip.value);
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i++) bytes[i] = Number((ip.value >> BigInt(120 - 8 * i)) & 0xffn);
  return formatIpv6(bytes, 0);
}

export function formatCidr(c: Cidr): string {
  return `${formatIp({ family: c.family, value: c.value })}/${c.prefix}`;
}
