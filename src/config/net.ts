/**
 * Address arithmetic for configuration checks: parse IPv4/IPv6 addresses and
 * CIDR blocks into bigints, test host bits and overlap, and print the
 * canonical form (RFC 5952 for IPv6) in "did you mean" hints.
 *
 * This runs once per config load, never per packet, so bigints are fine.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { formatIpv6 } from '../wire/ipv6.js';

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

function parseIpv4Value(s: string): bigint {
  let v = 0n;
  for (const octet of s.split('.')) v = (v << 8n) | BigInt(Number(octet));
  return v;
}

/** Parses a bare IPv4 or IPv6 address (no brackets, no zone). */
export function parseIp(s: string): IpAddress | null {
  if (isIPv4(s)) return { family: 4, value: parseIpv4Value(s) };
  if (!isIPv6(s) || s.includes('%')) return null;
  // Embedded IPv4 tail (RFC 4291 2.2 form 3) becomes two 16-bit groups.
  let text = s;
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = parseIpv4Value(tail);
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = text.split('::');
  const head = halves[0] === '' ? [] : halves[0]!.split(':');
  const rest = halves.length === 2 ? (halves[1] === '' ? [] : halves[1]!.split(':')) : [];
  const groups: string[] =
    halves.length === 2 ? [...head, ...new Array<string>(8 - head.length - rest.length).fill('0'), ...rest] : head;
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(parseInt(g, 16));
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
