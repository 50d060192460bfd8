/** Byte builders and a seeded generator shared by the sniffer tests. */

export function hex(s: string): Uint8Array {
  const clean = s.replace(/[^0-9a-f]/gi, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function ascii(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function u16(n: number): Uint8Array {
  return Uint8Array.of((n >> 8) & 0xff, n & 0xff);
}

function u24(n: number): Uint8Array {
  return Uint8Array.of((n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
}

/** xorshift32, seeded: every "random" test is reproducible. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let s = this.s;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.s = s >>> 0;
    return this.s;
  }
  int(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
}

export function extension(type: number, body: Uint8Array): Uint8Array {
  return concat(u16(type), u16(body.length), body);
}

/** RFC 6066 §3 server_name extension with one host_name entry. */
export function sniExtension(name: Uint8Array | string): Uint8Array {
  const n = typeof name === 'string' ? ascii(name) : name;
  const entry = concat(Uint8Array.of(0), u16(n.length), n);
  return extension(0, concat(u16(entry.length), entry));
}

/** RFC 7301 §3.1 ALPN extension. */
export function alpnExtension(names: string[]): Uint8Array {
  const list = concat(...names.map((s) => concat(Uint8Array.of(s.length), ascii(s))));
  return extension(16, concat(u16(list.length), list));
}

export interface HelloSpec {
  sni?: string | Uint8Array | null;
  alpn?: string[];
  /** Extensions placed before SNI (e.g. GREASE, key_share). */
  before?: Uint8Array[];
  /** Extensions placed after ALPN. */
  after?: Uint8Array[];
  /** RFC 7685 padding extension body length. */
  padding?: number;
  cipherSuites?: number;
}

/** A ClientHello handshake message (RFC 8446 §4.1.2), type + uint24 length + body. */
export function clientHelloMessage(spec: HelloSpec = {}): Uint8Array {
  const random = new Uint8Array(32).map((_, i) => (i * 37 + 11) & 0xff);
  const sid = new Uint8Array(32).map((_, i) => (i * 13 + 5) & 0xff);
  const nCs = spec.cipherSuites ?? 3;
  const cs = new Uint8Array(nCs * 2);
  for (let i = 0; i < nCs; i++) cs.set(u16(0x1301 + i), i * 2);
  const exts: Uint8Array[] = [...(spec.before ?? [])];
  if (spec.sni !== undefined && spec.sni !== null) exts.push(sniExtension(spec.sni));
  if (spec.alpn) exts.push(alpnExtension(spec.alpn));
  exts.push(extension(43, hex('02 0304'))); // supported_versions
  exts.push(...(spec.after ?? []));
  if (spec.padding !== undefined) exts.push(extension(21, new Uint8Array(spec.padding)));
  const extBytes = concat(...exts);
  const body = concat(hex('0303'), random, Uint8Array.of(32), sid, u16(cs.length), cs, hex('01 00'), u16(extBytes.length), extBytes);
  return concat(Uint8Array.of(1), u24(body.length), body);
}

/** Wraps a handshake message in TLSPlaintext records (RFC 8446 §5.1) of the given fragment sizes (last takes the rest). */
export function records(msg: Uint8Array, fragments: number[] = [], version = 0x0301): Uint8Array {
  const out: Uint8Array[] = [];
  let p = 0;
  for (const size of fragments) {
    if (p >= msg.length) break;
    const n = Math.min(size, msg.length - p);
    out.push(concat(Uint8Array.of(22), u16(version), u16(n), msg.subarray(p, p + n)));
    p += n;
  }
  while (p < msg.length) {
    const n = Math.min(16384, msg.length - p);
    out.push(concat(Uint8Array.of(22), u16(version), u16(n), msg.subarray(p, p + n)));
    p += n;
  }
  return concat(...out);
}

/** Cuts `buf` into `parts` non-empty pieces at random points. */
export function splitRandom(buf: Uint8Array, parts: number, rng: Rng): Uint8Array[] {
  const cuts = new Set<number>();
  while (cuts.size < parts - 1) cuts.add(1 + rng.int(buf.length - 1));
  const sorted = [...cuts].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...sorted, buf.length]) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  return out;
}

/** Encodes a dotted name as DNS labels (RFC 1035 §3.1). */
export function dnsName(name: string): Uint8Array {
  const parts = name === '' || name === '.' ? [] : name.replace(/\.$/, '').split('.');
  return concat(...parts.map((l) => concat(Uint8Array.of(l.length), ascii(l))), Uint8Array.of(0));
}

export interface QuerySpec {
  id?: number;
  flags?: number;
  qtype?: number;
  qclass?: number;
  /** Append an EDNS OPT record (RFC 6891) and count it in ARCOUNT. */
  edns?: boolean;
  /** Raw bytes for the question name (overrides `name`). */
  rawName?: Uint8Array;
}

/** A DNS query message (RFC 1035 §4.1). */
export function dnsQuery(name: string, spec: QuerySpec = {}): Uint8Array {
  const header = concat(u16(spec.id ?? 0x1234), u16(spec.flags ?? 0x0100), u16(1), u16(0), u16(0), u16(spec.edns ? 1 : 0));
  const q = concat(spec.rawName ?? dnsName(name), u16(spec.qtype ?? 1), u16(spec.qclass ?? 1));
  const opt = spec.edns ? hex('00 0029 04d0 00000000 0000') : new Uint8Array(0);
  return concat(header, q, opt);
}

/** RFC 1035 §4.2.2 TCP framing. */
export function tcpFramed(msg: Uint8Array): Uint8Array {
  return concat(u16(msg.length), msg);
}
