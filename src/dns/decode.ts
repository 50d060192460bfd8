/**
 * DNS message decoding (RFC 1035 4.1, RFC 3596 AAAA, RFC 6891 OPT passed
 * through raw) for hostile bytes: clients on the TUN, upstream answers. It
 * never throws; it returns a `DnsParseError` code. Names go through
 * names.ts, whose pointer rules make every compression chain end.
 */
import { formatIpv4, formatIpv6 } from '../wire/ip-address.js';
import { nameEnd, nameError, readName } from './names.js';
import {
  ANCOUNT, ARCOUNT, DnsClass, DnsParseError, DnsType, FLAGS, FLAG_AA, FLAG_AD, FLAG_CD, FLAG_QR, FLAG_RA, FLAG_RD, FLAG_TC, HEADER_LEN, ID, MAX_MESSAGE_LEN, NSCOUNT, QDCOUNT,
  type DnsDecodeResult, type DnsMessage, type DnsOpt, type DnsQuestion, type DnsRecord,
} from './message-types.js';

export function u16(b: Uint8Array, o: number): number {
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
