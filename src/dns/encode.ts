/**
 * DNS message encoding (RFC 1035 4.1, with name compression 4.1.4, and the
 * RFC 6891 OPT record) and the responses sluice builds from a query.
 * Building messages is API use, not hostile input: an invalid name or an
 * oversized message throws DnsError.
 */
import { parseIpv4, parseIpv6 } from './address.js';
import { DnsError } from './errors.js';
import { nameToLabels } from './names.js';
import {
  CLASSIC_UDP_MAX, DEFAULT_EDNS_UDP_SIZE, DnsClass, DnsRcode, DnsType, FLAG_AA, FLAG_CD, FLAG_QR, FLAG_RA, FLAG_RD, FLAG_TC, HEADER_LEN, MAX_MESSAGE_LEN,
  type DnsMessage, type SoaData,
} from './message-types.js';

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
