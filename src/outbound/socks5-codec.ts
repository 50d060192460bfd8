/**
 * SOCKS5 messages (RFC 1928) and username/password sub-negotiation
 * (RFC 1929), sans-IO: encoders return exact buffers, parsers take untrusted
 * bytes and return null / a typed result instead of throwing.
 */
import { formatIpv4, formatIpv6, ipFamilyOf, parseIpv4Into, parseIpv6Text, withoutZone } from '../wire/ip-address.js';

export const SOCKS_VERSION = 0x05;

/** RFC 1928 §3 METHOD values. */
export const Method = {
  NO_AUTH: 0x00,
  USERNAME_PASSWORD: 0x02,
  NO_ACCEPTABLE: 0xff,
} as const;

/** RFC 1928 §4 CMD values. */
export const Command = {
  CONNECT: 0x01,
  BIND: 0x02,
  UDP_ASSOCIATE: 0x03,
} as const;

/** RFC 1928 §4 ATYP values. */
export const AddressType = {
  IPV4: 0x01,
  DOMAIN: 0x03,
  IPV6: 0x04,
} as const;

/** RFC 1928 §6 REP values. */
export const REPLY_TEXT: Readonly<Record<number, string>> = {
  0x00: 'succeeded',
  0x01: 'general SOCKS server failure',
  0x02: 'connection not allowed by ruleset',
  0x03: 'network unreachable',
  0x04: 'host unreachable',
  0x05: 'connection refused',
  0x06: 'TTL expired',
  0x07: 'command not supported',
  0x08: 'address type not supported',
};

export function replyText(rep: number): string {
  return REPLY_TEXT[rep] ?? `unassigned reply 0x${rep.toString(16).padStart(2, '0')}`;
}

/** RFC 1929 §2: ULEN and PLEN are one octet each, 1..255. */
export const MAX_CREDENTIAL_LEN = 255;
/** RFC 1928 §5: the domain is prefixed by a one-octet length. */
export const MAX_DOMAIN_LEN = 255;

export interface SocksAddress {
  host: string;
  port: number;
}

/** VER NMETHODS METHODS... (RFC 1928 §3). */
export function encodeGreeting(methods: readonly number[]): Buffer {
  const b = Buffer.allocUnsafe(2 + methods.length);
  b[0] = SOCKS_VERSION;
  b[1] = methods.length;
  for (let i = 0; i < methods.length; i++) b[2 + i] = methods[i]!;
  return b;
}

/** VER METHOD → the method, or null when VER is wrong. */
export function parseMethodSelection(b: Uint8Array): number | null {
  if (b.length < 2 || b[0] !== SOCKS_VERSION) return null;
  return b[1]!;
}

/** VER(1)=0x01 ULEN UNAME PLEN PASSWD (RFC 1929 §2). Lengths must already be validated. */
export function encodeUserPass(username: Uint8Array, password: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(3 + username.length + password.length);
  b[0] = 0x01;
  b[1] = username.length;
  b.set(username, 2);
  b[2 + username.length] = password.length;
  b.set(password, 3 + username.length);
  return b;
}

/**
 * VER STATUS (RFC 1929 §2): 0 is success. Servers disagree on VER (RFC 1929
 * says 0x01; some answer 0x05), so only STATUS is checked.
 */
export function parseUserPassStatus(b: Uint8Array): number | null {
  if (b.length < 2) return null;
  return b[1]!;
}

/** Byte length of ATYP+ADDR+PORT for an address. */
export function addressLength(host: string): number {
  const fam = ipFamilyOf(host, true);
  if (fam === 4) return 1 + 4 + 2;
  if (fam === 6) return 1 + 16 + 2;
  return 1 + 1 + Buffer.byteLength(host) + 2;
}

/** Writes ATYP ADDR PORT at offset; returns the offset after it. `host` must fit (see validateDomain). */
export function writeAddress(b: Buffer, offset: number, host: string, port: number): number {
  const fam = ipFamilyOf(host, true);
  let o = offset;
  if (fam === 4) {
    b[o++] = AddressType.IPV4;
    parseIpv4Into(host, b, o);
    o += 4;
  } else if (fam === 6) {
    b[o++] = AddressType.IPV6;
    // A zone id names the sender's interface; the peer cannot use it.
    parseIpv6Text(withoutZone(host), b, o);
    o += 16;
  } else {
    b[o++] = AddressType.DOMAIN;
    const len = b.write(host, o + 1, 'utf8');
    b[o] = len;
    o += 1 + len;
  }
  b.writeUInt16BE(port, o);
  return o + 2;
}

/** Null when the domain can be sent in ATYP 3, else why not. */
export function validateDomain(host: string): string | null {
  const len = Buffer.byteLength(host);
  if (len === 0) return 'empty domain';
  if (len > MAX_DOMAIN_LEN) return `domain longer than ${MAX_DOMAIN_LEN} bytes`;
  return null;
}

/** VER CMD RSV ATYP DST.ADDR DST.PORT (RFC 1928 §4). */
export function encodeRequest(cmd: number, host: string, port: number): Buffer {
  const b = Buffer.allocUnsafe(3 + addressLength(host));
  b[0] = SOCKS_VERSION;
  b[1] = cmd;
  b[2] = 0x00;
  writeAddress(b, 3, host, port);
  return b;
}

/**
 * The first 5 bytes of a reply (VER REP RSV ATYP + the first address byte)
 * are enough to know its full length. Returns that length, or null when VER
 * or ATYP is invalid.
 */
export function replyLength(head: Uint8Array): number | null {
  if (head.length < 5 || head[0] !== SOCKS_VERSION) return null;
  switch (head[3]) {
    case AddressType.IPV4:
      return 4 + 4 + 2;
    case AddressType.IPV6:
      return 4 + 16 + 2;
    case AddressType.DOMAIN:
      return 4 + 1 + head[4]! + 2;
    default:
      return null;
  }
}

export interface SocksReply {
  rep: number;
  bound: SocksAddress;
}

/** A complete reply (length from replyLength) → REP and BND.ADDR/BND.PORT. */
export function parseReply(b: Uint8Array): SocksReply | null {
  if (b.length < 4 || b[0] !== SOCKS_VERSION) return null;
  const addr = readAddress(b, 3);
  if (addr === null) return null;
  return { rep: b[1]!, bound: { host: addr.host, port: addr.port } };
}

/** Reads ATYP ADDR PORT at offset; null when truncated or ATYP unknown. */
export function readAddress(b: Uint8Array, offset: number): { host: string; port: number; end: number } | null {
  if (b.length < offset + 1) return null;
  const atyp = b[offset]!;
  let o = offset + 1;
  let host: string;
  if (atyp === AddressType.IPV4) {
    if (b.length < o + 4 + 2) return null;
    host = formatIpv4(b, o);
    o += 4;
  } else if (atyp === AddressType.IPV6) {
    if (b.length < o + 16 + 2) return null;
    host = formatIpv6(b, o);
    o += 16;
  } else if (atyp === AddressType.DOMAIN) {
    if (b.length < o + 1) return null;
    const len = b[o]!;
    if (b.length < o + 1 + len + 2) return null;
    host = Buffer.from(b.buffer, b.byteOffset + o + 1, len).toString('utf8');
    o += 1 + len;
  } else {
    return null;
  }
  const port = (b[o]! << 8) | b[o + 1]!;
  return { host, port, end: o + 2 };
}

/** RFC 1928 §7 UDP request header: RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT. */
export function encodeUdpHeader(host: string, port: number): Buffer {
  const b = Buffer.allocUnsafe(3 + addressLength(host));
  b[0] = 0;
  b[1] = 0;
  b[2] = 0; // FRAG: we never fragment
  writeAddress(b, 3, host, port);
  return b;
}

export interface UdpDatagram {
  frag: number;
  host: string;
  port: number;
  /** Offset of DATA inside the datagram. */
  dataOffset: number;
}

/** Parses the RFC 1928 §7 header of a datagram from the relay; null when malformed. */
export function parseUdpHeader(b: Uint8Array): UdpDatagram | null {
  if (b.length < 4 || b[0] !== 0 || b[1] !== 0) return null;
  const addr = readAddress(b, 3);
  if (addr === null) return null;
  return { frag: b[2]!, host: addr.host, port: addr.port, dataOffset: addr.end };
}

/** RFC 5952 text of 16 bytes (src/wire/ip-address.ts). */
export { formatIpv6 as formatIPv6 } from '../wire/ip-address.js';
