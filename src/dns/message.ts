/**
 * DNS message codec: RFC 1035 4 (header, question, resource records, name
 * compression 4.1.4), RFC 3596 (AAAA), RFC 6891 (EDNS0 OPT pseudo-record,
 * passed through raw), RFC 7766 / RFC 1035 4.2.2 (TCP two-byte length
 * framing).
 *
 * Parsing is for hostile bytes (clients on the TUN, upstream answers): it
 * never throws, it returns a `DnsParseError` code. Every compression pointer
 * must point strictly before the previous one in the same name (so a chain
 * always ends), the number of jumps is capped, and names are capped at 255
 * wire bytes (RFC 1035 2.3.4).
 *
 * Names are kept in presentation form without the trailing dot (the root is
 * ""), with bytes outside [A-Za-z0-9_-] escaped as "\DDD" and "." / "\" in a
 * label escaped, as dig prints them, so any wire name round-trips.
 *
 * Building messages is API use, not hostile input: an invalid name or an
 * oversized message throws DnsError.
 */
import { formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from './address.js';
import { DnsError } from './errors.js';

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
const ID = 0;
const FLAGS = 2;
const QDCOUNT = 4;
const ANCOUNT = 6;
const NSCOUNT = 8;
const ARCOUNT = 10;

export const FLAG_QR = 0x8000;
export const FLAG_AA = 0x0400;
export const FLAG_TC = 0x0200;
export const FLAG_RD = 0x0100;
export const FLAG_RA = 0x0080;
export const FLAG_AD = 0x0020;
export const FLAG_CD = 0x0010;

/** RFC 1035 2.3.4: 255 octets of wire name, 63 per label. */
export const MAX_NAME_WIRE = 255;
const MAX_LABEL = 63;
/** More jumps than labels a legal name can have means something is wrong. */
const MAX_POINTER_JUMPS = 127;
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

// ---------------------------------------------------------------------------
// Name decoding

/** Scratch results of readName (module-level so the hot loop allocates nothing extra). */
let nameEnd = 0;
let nameError: DnsParseError = DnsParseError.Ok;

function isPlainLabelByte(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f
  );
}

function appendLabel(out: string, buf: Uint8Array, start: number, len: number): string {
  let label = '';
  for (let i = start; i < start + len; i++) {
    const c = buf[i]!;
    if (isPlainLabelByte(c)) label += String.fromCharCode(c);
    else if (c === 0x2e || c === 0x5c) label += '\\' + String.fromCharCode(c);
    else if (c > 0x20 && c < 0x7f) label += String.fromCharCode(c);
    else label += '\\' + String(c).padStart(3, '0');
  }
  return out.length === 0 ? label : out + '.' + label;
}

/**
 * Reads the name at `start`; on success returns it and sets `nameEnd` to
 * the offset after its in-place bytes; on failure returns null and sets
 * `nameError`. `limit` bounds the in-place bytes (the RDATA end for names
 * inside a record).
 */
function readName(buf: Uint8Array, start: number, limit: number): string | null {
  let pos = start;
  let end = -1;
  // RFC 1035 4.1.4 pointers refer to a *prior* occurrence; requiring each
  // jump to land strictly before the previous landing point makes every
  // chain finite, so a pointer loop is rejected rather than walked.
  let floor = start;
  let jumps = 0;
  let wire = 1;
  let out = '';
  let bound = limit;
  for (;;) {
    if (pos >= bound) {
      nameError = DnsParseError.Truncated;
      return null;
    }
    const len = buf[pos]!;
    if (len === 0) {
      if (end === -1) end = pos + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= bound) {
        nameError = DnsParseError.Truncated;
        return null;
      }
      const ptr = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (end === -1) end = pos + 2;
      if (ptr >= floor) {
        nameError = ptr === pos || ptr === floor ? DnsParseError.PointerLoop : DnsParseError.BadPointer;
        return null;
      }
      if (++jumps > MAX_POINTER_JUMPS) {
        nameError = DnsParseError.PointerLoop;
        return null;
      }
      floor = ptr;
      pos = ptr;
      // Once we jump, the target may lie anywhere earlier in the message.
      bound = buf.length;
      continue;
    }
    if (kind !== 0) {
      // 0x40 (RFC 6891 extended label, obsolete) and 0x80 are not valid.
      nameError = DnsParseError.BadLabelType;
      return null;
    }
    wire += len + 1;
    if (wire > MAX_NAME_WIRE) {
      nameError = DnsParseError.NameTooLong;
      return null;
    }
    if (pos + 1 + len > bound) {
      nameError = DnsParseError.Truncated;
      return null;
    }
    out = appendLabel(out, buf, pos + 1, len);
    pos += 1 + len;
  }
  nameEnd = end;
  return out;
}

// ---------------------------------------------------------------------------
// Message decoding

function u16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

let recError: DnsParseError = DnsParseError.Ok;
let recEnd = 0;

function readRecord(buf: Uint8Array, start: number): DnsRecord | null {
  const name = readName(buf, start, buf.length);
  if (name === null) {
    recError = nameError;
    return null;
  }
  const p = nameEnd;
  if (p + 10 > buf.length) {
    recError = DnsParseError.Truncated;
    return null;
  }
  const type = u16(buf, p);
  const klass = u16(buf, p + 2);
  const ttl = u32(buf, p + 4);
  const rdlen = u16(buf, p + 8);
  const rd = p + 10;
  const end = rd + rdlen;
  if (end > buf.length) {
    recError = DnsParseError.Truncated;
    return null;
  }
  const rec: DnsRecord = {
    name,
    type,
    class: klass,
    // RFC 2181 8: a TTL with the top bit set is treated as zero.
    ttl: ttl > 0x7fffffff ? 0 : ttl,
    data: buf.subarray(rd, end),
    address: null,
    target: null,
    soa: null,
    ttlOffset: p + 4,
    offset: start,
    end,
  };
  if (klass === DnsClass.IN || type === DnsType.CNAME || type === DnsType.PTR || type === DnsType.NS || type === DnsType.SOA) {
    switch (type) {
      case DnsType.A:
        if (klass !== DnsClass.IN) break;
        if (rdlen !== 4) return badRdata();
        rec.address = formatIpv4(buf, rd);
        break;
      case DnsType.AAAA:
        if (klass !== DnsClass.IN) break;
        if (rdlen !== 16) return badRdata();
        rec.address = formatIpv6(buf, rd);
        break;
      case DnsType.CNAME:
      case DnsType.NS:
      case DnsType.PTR:
      case DnsType.DNAME: {
        const t = readName(buf, rd, end);
        if (t === null || nameEnd !== end) return badRdata();
        rec.target = t;
        break;
      }
      case DnsType.SOA: {
        const mname = readName(buf, rd, end);
        if (mname === null) return badRdata();
        const rnameStart = nameEnd;
        const rname = readName(buf, rnameStart, end);
        if (rname === null || nameEnd + 20 !== end) return badRdata();
        const q = nameEnd;
        rec.soa = {
          mname,
          rname,
          serial: u32(buf, q),
          refresh: u32(buf, q + 4),
          retry: u32(buf, q + 8),
          expire: u32(buf, q + 12),
          minimum: u32(buf, q + 16),
        };
        break;
      }
      default:
        break; // kept raw (RFC 3597 unknown types)
    }
  }
  recEnd = end;
  return rec;
}

function badRdata(): null {
  recError = DnsParseError.BadRdata;
  return null;
}

function fail(error: DnsParseError, buf: Uint8Array): DnsDecodeResult {
  return {
    message: null,
    error,
    id: buf.length >= 2 ? u16(buf, ID) : -1,
    flags: buf.length >= 4 ? u16(buf, FLAGS) : -1,
  };
}

/** Decodes a DNS message from untrusted bytes. Never throws. */
export function decodeMessage(buf: Uint8Array): DnsDecodeResult {
  if (buf.length < HEADER_LEN) return fail(DnsParseError.Truncated, buf);
  if (buf.length > MAX_MESSAGE_LEN) return fail(DnsParseError.MessageTooLong, buf);
  const flags = u16(buf, FLAGS);
  const qd = u16(buf, QDCOUNT);
  const an = u16(buf, ANCOUNT);
  const ns = u16(buf, NSCOUNT);
  const ar = u16(buf, ARCOUNT);
  // Cheap bound before allocating: a question needs >= 5 bytes, a record >= 11.
  if (HEADER_LEN + qd * 5 + (an + ns + ar) * 11 > buf.length) return fail(DnsParseError.Truncated, buf);
  let pos = HEADER_LEN;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < qd; i++) {
    const name = readName(buf, pos, buf.length);
    if (name === null) return fail(nameError, buf);
    const ne = nameEnd;
    if (ne + 4 > buf.length) return fail(DnsParseError.Truncated, buf);
    questions.push({ name, type: u16(buf, ne), class: u16(buf, ne + 2), offset: pos, nameEnd: ne });
    pos = ne + 4;
  }
  const questionEnd = pos;
  const sections: DnsRecord[][] = [[], [], []];
  const counts = [an, ns, ar];
  let opt: DnsOpt | null = null;
  for (let s = 0; s < 3; s++) {
    const list = sections[s]!;
    for (let i = 0; i < counts[s]!; i++) {
      const rec = readRecord(buf, pos);
      if (rec === null) return fail(recError, buf);
      pos = recEnd;
      if (rec.type === DnsType.OPT) {
        // RFC 6891 6.1.1: one OPT, in the additional section, owned by the root.
        if (s !== 2 || opt !== null || rec.name !== '') return fail(DnsParseError.BadOpt, buf);
        const t = buf[rec.ttlOffset]!;
        opt = {
          udpSize: rec.class,
          extendedRcode: t,
          version: buf[rec.ttlOffset + 1]!,
          dnssecOk: (buf[rec.ttlOffset + 2]! & 0x80) !== 0,
          options: rec.data,
          offset: rec.offset,
          end: rec.end,
        };
        continue;
      }
      list.push(rec);
    }
  }
  // Trailing bytes after the counted sections are ignored (RFC 1035 does not
  // forbid padding and some middleboxes add it).
  const message: DnsMessage = {
    id: u16(buf, ID),
    flags,
    qr: (flags & FLAG_QR) !== 0,
    opcode: (flags >> 11) & 0xf,
    aa: (flags & FLAG_AA) !== 0,
    tc: (flags & FLAG_TC) !== 0,
    rd: (flags & FLAG_RD) !== 0,
    ra: (flags & FLAG_RA) !== 0,
    ad: (flags & FLAG_AD) !== 0,
    cd: (flags & FLAG_CD) !== 0,
    rcode: flags & 0xf,
    questions,
    answers: sections[0]!,
    authorities: sections[1]!,
    additionals: sections[2]!,
    opt,
    questionEnd,
    size: buf.length,
  };
  return { message, error: DnsParseError.Ok, id: message.id, flags };
}

/** decodeMessage without the reason. */
export function parseMessage(buf: Uint8Array): DnsMessage | null {
  return decodeMessage(buf).message;
}

// ---------------------------------------------------------------------------
// Name encoding

/** Splits a presentation name into wire labels; null when invalid. */
export function nameToLabels(name: string): Uint8Array[] | null {
  let n = name;
  if (n.endsWith('.') && !n.endsWith('\\.')) n = n.slice(0, -1);
  if (n === '') return [];
  const labels: Uint8Array[] = [];
  const cur: number[] = [];
  let wire = 1;
  for (let i = 0; i <= n.length; i++) {
    if (i === n.length || n.charCodeAt(i) === 0x2e) {
      if (cur.length === 0 || cur.length > MAX_LABEL) return null;
      wire += cur.length + 1;
      labels.push(Uint8Array.from(cur));
      cur.length = 0;
      continue;
    }
    let c = n.charCodeAt(i);
    if (c === 0x5c) {
      // "\DDD" decimal byte or "\X" literal.
      const d = n.slice(i + 1, i + 4);
      if (/^[0-9]{3}$/.test(d)) {
        c = Number(d);
        if (c > 255) return null;
        i += 3;
      } else if (i + 1 < n.length) {
        c = n.charCodeAt(++i);
      } else {
        return null;
      }
    }
    if (c > 255) return null;
    cur.push(c);
  }
  return wire > MAX_NAME_WIRE ? null : labels;
}

/** Whether two presentation names are equal under DNS case folding (ASCII only, RFC 4343). */
export function namesEqual(a: string, b: string): boolean {
  return a.length === b.length && a.toLowerCase() === b.toLowerCase();
}

/** Lowercased name without a trailing dot: the key for caches and pools. */
export function canonicalName(name: string): string {
  const n = name.endsWith('.') && !name.endsWith('\\.') ? name.slice(0, -1) : name;
  return n.toLowerCase();
}

// ---------------------------------------------------------------------------
// Message encoding

/** A record to emit. RDATA comes from the typed field when present, else `data`. */
export interface DnsRecordInit {
  name: string;
  type: number;
  class?: number;
  ttl: number;
  address?: string;
  target?: string;
  soa?: SoaData;
  data?: Uint8Array;
}

export interface DnsOptInit {
  udpSize: number;
  extendedRcode?: number;
  version?: number;
  dnssecOk?: boolean;
  options?: Uint8Array;
}

export interface DnsMessageInit {
  id: number;
  flags: number;
  questions: { name: string; type: number; class?: number }[];
  answers?: DnsRecordInit[];
  authorities?: DnsRecordInit[];
  additionals?: DnsRecordInit[];
  opt?: DnsOptInit | null;
}

class Writer {
  buf: Uint8Array;
  pos = 0;
  /** Lowercased name suffix -> offset, for RFC 1035 4.1.4 compression. */
  readonly names = new Map<string, number>();
  constructor(size: number) {
    this.buf = new Uint8Array(size);
  }
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    if (this.pos + n > MAX_MESSAGE_LEN) throw new DnsError('SLUICE_DNS_MESSAGE_TOO_LONG', 'DNS message exceeds 65535 bytes');
    const next = new Uint8Array(Math.min(MAX_MESSAGE_LEN, Math.max(this.buf.length * 2, this.pos + n)));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf[this.pos++] = (v >>> 24) & 0xff;
    this.buf[this.pos++] = (v >>> 16) & 0xff;
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  name(name: string, compress: boolean): void {
    const labels = nameToLabels(name);
    if (labels === null) throw new DnsError('SLUICE_DNS_BAD_NAME', `invalid DNS name: ${JSON.stringify(name)}`);
    for (let i = 0; i < labels.length; i++) {
      const key = suffixKey(labels, i);
      const at = this.names.get(key);
      if (compress && at !== undefined) {
        this.u16(0xc000 | at);
        return;
      }
      if (this.pos < 0x4000 && at === undefined) this.names.set(key, this.pos);
      this.u8(labels[i]!.length);
      this.bytes(labels[i]!);
    }
    this.u8(0);
  }
}

function suffixKey(labels: Uint8Array[], from: number): string {
  let s = '';
  for (let i = from; i < labels.length; i++) {
    const l = labels[i]!;
    for (let j = 0; j < l.length; j++) {
      const c = l[j]!;
      s += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 0x20 : c);
    }
    s += '\u0100'; // a separator no byte maps to
  }
  return s;
}

function writeRecord(w: Writer, r: DnsRecordInit): void {
  w.name(r.name, true);
  w.u16(r.type);
  w.u16(r.class ?? DnsClass.IN);
  w.u32(r.ttl >>> 0);
  const lenAt = w.pos;
  w.u16(0);
  const start = w.pos;
  if ((r.type === DnsType.A || r.type === DnsType.AAAA) && r.address !== undefined) {
    const bytes = r.type === DnsType.A ? parseIpv4(r.address) : parseIpv6(r.address);
    if (bytes === null) throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', `not an ${r.type === DnsType.A ? 'IPv4' : 'IPv6'} address: ${r.address}`);
    w.bytes(bytes);
  } else if (r.target !== undefined && (r.type === DnsType.CNAME || r.type === DnsType.NS || r.type === DnsType.PTR)) {
    w.name(r.target, true);
  } else if (r.target !== undefined && r.type === DnsType.DNAME) {
    w.name(r.target, false); // RFC 6672 2.5: DNAME targets are not compressed
  } else if (r.soa !== undefined && r.type === DnsType.SOA) {
    w.name(r.soa.mname, true);
    w.name(r.soa.rname, true);
    w.u32(r.soa.serial);
    w.u32(r.soa.refresh);
    w.u32(r.soa.retry);
    w.u32(r.soa.expire);
    w.u32(r.soa.minimum);
  } else if (r.data !== undefined) {
    w.bytes(r.data);
  } else {
    throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', `record ${r.name} type ${r.type} has no RDATA`);
  }
  const len = w.pos - start;
  w.buf[lenAt] = len >>> 8;
  w.buf[lenAt + 1] = len & 0xff;
}

/** Encodes a message. Throws DnsError on invalid names or oversize. */
export function encodeMessage(m: DnsMessageInit): Uint8Array {
  const w = new Writer(512);
  const an = m.answers ?? [];
  const ns = m.authorities ?? [];
  const ar = m.additionals ?? [];
  w.u16(m.id & 0xffff);
  w.u16(m.flags & 0xffff);
  w.u16(m.questions.length);
  w.u16(an.length);
  w.u16(ns.length);
  w.u16(ar.length + (m.opt ? 1 : 0));
  for (const q of m.questions) {
    w.name(q.name, true);
    w.u16(q.type);
    w.u16(q.class ?? DnsClass.IN);
  }
  for (const r of an) writeRecord(w, r);
  for (const r of ns) writeRecord(w, r);
  for (const r of ar) writeRecord(w, r);
  if (m.opt) {
    const o = m.opt;
    w.u8(0); // root owner
    w.u16(DnsType.OPT);
    w.u16(Math.max(CLASSIC_UDP_MAX, o.udpSize));
    w.u8(o.extendedRcode ?? 0);
    w.u8(o.version ?? 0);
    w.u16(o.dnssecOk ? 0x8000 : 0);
    const opts = o.options ?? new Uint8Array(0);
    w.u16(opts.length);
    w.bytes(opts);
  }
  return w.buf.slice(0, w.pos);
}

export interface QueryInit {
  id: number;
  name: string;
  type: number;
  class?: number;
  rd?: boolean;
  cd?: boolean;
  /** Adds an OPT record advertising this UDP size (RFC 6891); null for none. */
  ednsUdpSize?: number | null;
  dnssecOk?: boolean;
}

export function buildQuery(q: QueryInit): Uint8Array {
  const rd = q.rd ?? true;
  return encodeMessage({
    id: q.id,
    flags: (rd ? FLAG_RD : 0) | (q.cd ? FLAG_CD : 0),
    questions: [{ name: q.name, type: q.type, class: q.class ?? DnsClass.IN }],
    opt: q.ednsUdpSize == null ? null : { udpSize: q.ednsUdpSize, dnssecOk: q.dnssecOk ?? false },
  });
}

export interface ResponseInit {
  rcode: number;
  answers?: DnsRecordInit[];
  authorities?: DnsRecordInit[];
  additionals?: DnsRecordInit[];
  aa?: boolean;
  /** Recursion available; true unless told otherwise (we are a recursive service to clients). */
  ra?: boolean;
  tc?: boolean;
  /** UDP size to advertise in the echoed OPT when the query carried one. */
  ednsUdpSize?: number;
}

/**
 * A response to `query` preserving its id, opcode, question section, RD and
 * CD bits (RFC 1035 4.1.1). When the query carried EDNS0, an OPT is echoed
 * (RFC 6891 7: a responder that understands EDNS includes one); otherwise
 * none is sent.
 */
export function buildResponse(query: DnsMessage, r: ResponseInit): Uint8Array {
  let flags = FLAG_QR | (query.opcode << 11) | (r.rcode & 0xf);
  if (query.rd) flags |= FLAG_RD;
  if (query.cd) flags |= FLAG_CD;
  if (r.ra ?? true) flags |= FLAG_RA;
  if (r.aa) flags |= FLAG_AA;
  if (r.tc) flags |= FLAG_TC;
  const init: DnsMessageInit = {
    id: query.id,
    flags,
    questions: query.questions.map((q) => ({ name: q.name, type: q.type, class: q.class })),
    opt: query.opt ? { udpSize: r.ednsUdpSize ?? DEFAULT_EDNS_UDP_SIZE, extendedRcode: r.rcode >> 4 } : null,
  };
  if (r.answers) init.answers = r.answers;
  if (r.authorities) init.authorities = r.authorities;
  if (r.additionals) init.additionals = r.additionals;
  return encodeMessage(init);
}

/** A/AAAA answers for the (first) question, owner = the question name as the client spelled it. */
export function buildAddressResponse(query: DnsMessage, addresses: readonly string[], ttl: number): Uint8Array {
  const q = query.questions[0];
  if (q === undefined) throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', 'query has no question');
  const answers: DnsRecordInit[] = [];
  for (const a of addresses) answers.push({ name: q.name, type: a.includes(':') ? DnsType.AAAA : DnsType.A, ttl, address: a });
  return buildResponse(query, { rcode: DnsRcode.NoError, answers });
}

export function buildNxDomain(query: DnsMessage, soa?: DnsRecordInit): Uint8Array {
  return buildResponse(query, soa ? { rcode: DnsRcode.NxDomain, authorities: [soa] } : { rcode: DnsRcode.NxDomain });
}

export function buildServFail(query: DnsMessage): Uint8Array {
  return buildResponse(query, { rcode: DnsRcode.ServFail });
}

export function buildRefused(query: DnsMessage): Uint8Array {
  return buildResponse(query, { rcode: DnsRcode.Refused });
}

export function buildNotImp(query: DnsMessage): Uint8Array {
  return buildResponse(query, { rcode: DnsRcode.NotImp });
}

/** NOERROR with no answers (RFC 2308 2.2 NODATA), e.g. AAAA when only an IPv4 pool exists. */
export function buildEmptyNoError(query: DnsMessage, soa?: DnsRecordInit): Uint8Array {
  return buildResponse(query, soa ? { rcode: DnsRcode.NoError, authorities: [soa] } : { rcode: DnsRcode.NoError });
}

/**
 * A header-only error reply for a query we could not parse past the header
 * (RFC 1035 4.1.1 FORMERR); echoes id, opcode and RD from the raw flags.
 */
export function buildHeaderOnlyResponse(id: number, queryFlags: number, rcode: number): Uint8Array {
  const out = new Uint8Array(HEADER_LEN);
  const flags = FLAG_QR | (queryFlags & (0x7800 | FLAG_RD)) | FLAG_RA | (rcode & 0xf);
  out[0] = (id >>> 8) & 0xff;
  out[1] = id & 0xff;
  out[2] = flags >>> 8;
  out[3] = flags & 0xff;
  return out;
}

// ---------------------------------------------------------------------------
// Patching upstream answers for a client

function sameNameBytes(a: Uint8Array, ao: number, b: Uint8Array, bo: number, len: number): boolean {
  for (let i = 0; i < len; i++) {
    let x = a[ao + i]!;
    let y = b[bo + i]!;
    if (x >= 0x41 && x <= 0x5a) x += 0x20;
    if (y >= 0x41 && y <= 0x5a) y += 0x20;
    if (x !== y) return false;
  }
  return true;
}

/**
 * Turns an upstream (or cached) answer into the reply for one client query:
 * the client's id, its RD bit, its spelling of the question name (clients
 * using 0x20 case randomisation compare it), and no OPT when the client did
 * not send one (RFC 6891 7). Returns a new buffer; `answer` is not modified.
 */
export function adaptResponse(answer: Uint8Array, answerMsg: DnsMessage, queryBytes: Uint8Array, query: DnsMessage): Uint8Array {
  let end = answer.length;
  let dropOpt = false;
  // The OPT can be cut cleanly only when it is the last record: pointers in
  // later records could otherwise refer to moved offsets.
  if (query.opt === null && answerMsg.opt !== null && answerMsg.opt.end === answer.length) {
    end = answerMsg.opt.offset;
    dropOpt = true;
  }
  const out = answer.slice(0, end);
  out[0] = query.id >>> 8;
  out[1] = query.id & 0xff;
  out[2] = (out[2]! & ~(FLAG_RD >>> 8)) | (query.rd ? FLAG_RD >>> 8 : 0);
  if (dropOpt) {
    const ar = u16(out, ARCOUNT) - 1;
    out[ARCOUNT] = ar >>> 8;
    out[ARCOUNT + 1] = ar & 0xff;
  }
  const cq = query.questions[0];
  const aq = answerMsg.questions[0];
  if (cq !== undefined && aq !== undefined) {
    const len = cq.nameEnd - cq.offset;
    if (aq.nameEnd - aq.offset === len && sameNameBytes(queryBytes, cq.offset, out, aq.offset, len)) {
      out.set(queryBytes.subarray(cq.offset, cq.nameEnd), aq.offset);
    }
  }
  return out;
}

/** Rewrites the TTL at `ttlOffset` in place. */
export function writeTtl(buf: Uint8Array, ttlOffset: number, ttl: number): void {
  buf[ttlOffset] = (ttl >>> 24) & 0xff;
  buf[ttlOffset + 1] = (ttl >>> 16) & 0xff;
  buf[ttlOffset + 2] = (ttl >>> 8) & 0xff;
  buf[ttlOffset + 3] = ttl & 0xff;
}

/** Sets the 16-bit id in place. */
export function writeId(buf: Uint8Array, id: number): void {
  buf[0] = (id >>> 8) & 0xff;
  buf[1] = id & 0xff;
}

// ---------------------------------------------------------------------------
// TCP framing (RFC 1035 4.2.2, RFC 7766 8)

/** Prefixes a message with its two-byte length. */
export function frameTcp(msg: Uint8Array): Uint8Array {
  if (msg.length > MAX_MESSAGE_LEN) throw new DnsError('SLUICE_DNS_MESSAGE_TOO_LONG', 'DNS message exceeds 65535 bytes');
  const out = new Uint8Array(msg.length + 2);
  out[0] = msg.length >>> 8;
  out[1] = msg.length & 0xff;
  out.set(msg, 2);
  return out;
}

/**
 * Reassembles length-prefixed messages from a TCP byte stream. Holds at most
 * one partial message (<= 65537 bytes) plus the last chunk pushed.
 */
export class TcpFrameReader {
  private buf: Uint8Array = new Uint8Array(0);
  private start = 0;

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const pending = this.buf.length - this.start;
    if (pending === 0) {
      this.buf = chunk;
      this.start = 0;
      return;
    }
    const next = new Uint8Array(pending + chunk.length);
    next.set(this.buf.subarray(this.start));
    next.set(chunk, pending);
    this.buf = next;
    this.start = 0;
  }

  /** The next complete message (a view; copy it to keep it), or null. */
  next(): Uint8Array | null {
    const avail = this.buf.length - this.start;
    if (avail < 2) return null;
    const len = (this.buf[this.start]! << 8) | this.buf[this.start + 1]!;
    if (avail < 2 + len) return null;
    const msg = this.buf.subarray(this.start + 2, this.start + 2 + len);
    this.start += 2 + len;
    return msg;
  }

  /** Bytes of an incomplete message held. */
  get pending(): number {
    return this.buf.length - this.start;
  }
}
