/**
 * The vocabulary of DNS messages (RFC 1035 4.1, RFC 6891 6.1): type, class
 * and rcode numbers, the parse error codes, the header layout and flag
 * bits, the size limits, and the shapes a decoded message takes. The codec
 * is split by concern: names.ts (name text and wire labels), decode.ts
 * (hostile bytes in), encode.ts (messages out), message.ts (patching an
 * answer for a client, TCP framing, and the one import for all of it).
 */

export const DnsType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  DNAME: 39,
  OPT: 41,
  SVCB: 64,
  HTTPS: 65,
  ANY: 255,
} as const;

export const DnsClass = { IN: 1, CH: 3, ANY: 255 } as const;

/** RFC 1035 4.1.1 RCODE values (the 4 header bits). */
export const DnsRcode = {
  NoError: 0,
  FormErr: 1,
  ServFail: 2,
  NxDomain: 3,
  NotImp: 4,
  Refused: 5,
} as const;

/** Why decodeMessage refused bytes; a stable snake_case name per code for counters. */
export const DnsParseError = {
  Ok: 0,
  Truncated: 1,
  NameTooLong: 2,
  BadLabelType: 3,
  BadPointer: 4,
  PointerLoop: 5,
  BadRdata: 6,
  BadOpt: 7,
  MessageTooLong: 8,
} as const;
export type DnsParseError = (typeof DnsParseError)[keyof typeof DnsParseError];

const PARSE_ERROR_NAMES: readonly string[] = [
  'ok',
  'truncated',
  'name_too_long',
  'bad_label_type',
  'bad_pointer',
  'pointer_loop',
  'bad_rdata',
  'bad_opt',
  'message_too_long',
];

export function dnsParseErrorName(code: DnsParseError): string {
  return PARSE_ERROR_NAMES[code] ?? 'unknown';
}

// RFC 1035 4.1.1 header layout.
export const HEADER_LEN = 12;
export const ID = 0;
export const FLAGS = 2;
export const QDCOUNT = 4;
export const ANCOUNT = 6;
export const NSCOUNT = 8;
export const ARCOUNT = 10;

export const FLAG_QR = 0x8000;
export const FLAG_AA = 0x0400;
export const FLAG_TC = 0x0200;
export const FLAG_RD = 0x0100;
export const FLAG_RA = 0x0080;
export const FLAG_AD = 0x0020;
export const FLAG_CD = 0x0010;

/** RFC 1035 2.3.4: 255 octets of wire name, 63 per label. */
export const MAX_NAME_WIRE = 255;
/** RFC 1035 2.3.4: 63 octets per label. */
export const MAX_LABEL = 63;
/** A DNS message over TCP cannot exceed the 16-bit length prefix. */
export const MAX_MESSAGE_LEN = 65535;
/** RFC 1035 4.2.1: UDP messages without EDNS are limited to 512 bytes. */
export const CLASSIC_UDP_MAX = 512;
/** EDNS UDP size we advertise (DNS flag day 2020). */
export const DEFAULT_EDNS_UDP_SIZE = 1232;

export interface DnsQuestion {
  name: string;
  type: number;
  class: number;
  /** Offset of the name's first byte in the parsed message. */
  offset: number;
  /** Offset just past the name's in-place bytes (pointer included). */
  nameEnd: number;
}

export interface SoaData {
  mname: string;
  rname: string;
  serial: number;
  refresh: number;
  retry: number;
  expire: number;
  /** RFC 2308 4: the negative-caching TTL cap. */
  minimum: number;
}

export interface DnsRecord {
  name: string;
  type: number;
  class: number;
  ttl: number;
  /** Raw RDATA (a view into the parsed message; may hold compression pointers). */
  data: Uint8Array;
  /** A/AAAA: canonical address text. */
  address: string | null;
  /** CNAME / NS / PTR / DNAME: the target name. */
  target: string | null;
  soa: SoaData | null;
  /** Offset of the 32-bit TTL field in the parsed message (for TTL rewriting). */
  ttlOffset: number;
  /** Record span [offset, end) in the parsed message. */
  offset: number;
  end: number;
}

/** RFC 6891 6.1.3: the OPT pseudo-record's fields. */
export interface DnsOpt {
  udpSize: number;
  extendedRcode: number;
  version: number;
  dnssecOk: boolean;
  /** Raw option TLVs, passed through. */
  options: Uint8Array;
  offset: number;
  end: number;
}

export interface DnsMessage {
  id: number;
  /** The whole 16-bit flags word. */
  flags: number;
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  ad: boolean;
  cd: boolean;
  rcode: number;
  questions: DnsQuestion[];
  answers: DnsRecord[];
  authorities: DnsRecord[];
  /** Additional records, without the OPT pseudo-record. */
  additionals: DnsRecord[];
  opt: DnsOpt | null;
  /** Offset just past the question section. */
  questionEnd: number;
  size: number;
}

export interface DnsDecodeResult {
  message: DnsMessage | null;
  error: DnsParseError;
  /** The header id when at least two bytes arrived, else -1 (for FORMERR replies). */
  id: number;
  /** The flags word when the header arrived, else -1. */
  flags: number;
}
