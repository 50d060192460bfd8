/**
 * DNS query sniffer (sans-IO) for UDP datagrams and TCP streams.
 *
 * A message is recognised as a query (RFC 1035 §4.1.1) when QR=0,
 * OPCODE=QUERY, TC=0, Z=0, RCODE=0, QDCOUNT=1 (RFC 9619: a QUERY carries
 * exactly one question), ANCOUNT=NSCOUNT=0 and ARCOUNT <= 2 (an EDNS OPT
 * record, RFC 6891, and a TSIG/SIG(0)), and its question parses: QNAME
 * (RFC 1035 §3.1, §4.1.2), QTYPE != 0, QCLASS IN/CH/HS/NONE/ANY. Over TCP
 * the message carries a two-byte length prefix (RFC 1035 §4.2.2, RFC 7766 §8).
 *
 * Compression pointers (RFC 1035 §4.1.4) are followed only strictly
 * backwards of the lowest offset visited so far, never into the header, and
 * at most MAX_POINTERS times: a pointer loop cannot be built under that rule.
 */
import { DEFAULT_MAX_BYTES, NEED_MORE, NOT_THIS, NO_ALPN, checkLimit, type DnsFound, type SniffResult } from './result.js';
import { hostnameFromBytes } from './hostname.js';

const HEADER = 12;
const MAX_WIRE_NAME = 255; // RFC 1035 §2.3.4
const MAX_POINTERS = 32;
const MAX_ADDITIONAL = 2;

/** Name-walk outcomes, as negative numbers so a non-negative return is an offset. */
const NAME_TRUNCATED = -1;
const NAME_INVALID = -2;

const nameText = new Uint8Array(MAX_WIRE_NAME + 1);
/** Length of the dotted text left in `nameText` by the last readName; -1 when a label cannot be text. */
let nameTextLen = 0;

/**
 * Reads the name at `p` in the message `b[msg, end)`. Returns the offset just
 * past the name where it appeared (not where pointers led), or a NAME_* code.
 */
export function readName(b: Uint8Array, msg: number, p: number, end: number): number {
  let lowest = p;
  let after = -1;
  let wire = 0;
  let hops = 0;
  let text = 0;
  let textOk = true;
  while (true) {
    if (p >= end) return NAME_TRUNCATED;
    const len = b[p]!;
    if ((len & 0xc0) === 0xc0) {
      if (p + 1 >= end) return NAME_TRUNCATED;
      const target = msg + (((len & 0x3f) << 8) | b[p + 1]!);
      if (after < 0) after = p + 2;
      if (++hops > MAX_POINTERS || target >= lowest || target < msg + HEADER) return NAME_INVALID;
      lowest = target;
      p = target;
      continue;
    }
    if ((len & 0xc0) !== 0) return NAME_INVALID; // 0x40/0x80: extended label types, obsolete (RFC 6891 §5)
    wire += len + 1;
    if (wire > MAX_WIRE_NAME) return NAME_INVALID;
    if (len === 0) {
      nameTextLen = textOk ? text : -1;
      return after >= 0 ? after : p + 1;
    }
    if (p + 1 + len > end) return NAME_TRUNCATED;
    if (text > 0) nameText[text++] = 0x2e;
    for (let i = p + 1; i <= p + len; i++) {
      const c = b[i]!;
      if (c === 0x2e) textOk = false; // a dot inside a label has no unambiguous text form
      nameText[text++] = c;
    }
    p += 1 + len;
  }
}

function u16(b: Uint8Array, p: number): number {
  return (b[p]! << 8) | b[p + 1]!;
}

/** Header checks on what is available; 0 ok, 1 truncated, 2 not a query. */
function headerCheck(b: Uint8Array, s: number, avail: number): number {
  const n = avail - s;
  if (n > 2) {
    const f1 = b[s + 2]!;
    if ((f1 & 0x80) !== 0 || ((f1 >> 3) & 0x0f) !== 0 || (f1 & 0x02) !== 0) return 2; // QR, OPCODE, TC
  }
  if (n > 3) {
    const f2 = b[s + 3]!;
    if ((f2 & 0x40) !== 0 || (f2 & 0x0f) !== 0) return 2; // Z, RCODE
  }
  if (n > 5 && u16(b, s + 4) !== 1) return 2;
  if (n > 7 && u16(b, s + 6) !== 0) return 2;
  if (n > 9 && u16(b, s + 8) !== 0) return 2;
  if (n > 11 && u16(b, s + 10) > MAX_ADDITIONAL) return 2;
  return n >= HEADER ? 0 : 1;
}

function validClass(c: number): boolean {
  return c === 1 || c === 3 || c === 4 || c === 254 || c === 255;
}

/** Parses header + question of the message at b[s, end); avail <= end is what arrived. */
function parseQuery(
  b: Uint8Array,
  s: number,
  avail: number,
  end: number,
  transport: 'udp' | 'tcp',
  atLimit: boolean,
): SniffResult {
  const more = atLimit ? NOT_THIS : NEED_MORE;
  const h = headerCheck(b, s, avail);
  if (h === 2) return NOT_THIS;
  if (h === 1) return avail >= end ? NOT_THIS : more;
  const q = readName(b, s, s + HEADER, avail);
  if (q === NAME_INVALID) return NOT_THIS;
  if (q === NAME_TRUNCATED || q + 4 > avail) {
    if (avail >= end) return NOT_THIS; // the message itself ends inside its question
    return more;
  }
  const qtype = u16(b, q);
  const qclass = u16(b, q + 2);
  if (qtype === 0 || !validClass(qclass)) return NOT_THIS;
  const serverName = nameTextLen > 0 ? hostnameFromBytes(nameText, 0, nameTextLen, false) : null;
  const result: DnsFound = { kind: 'found', protocol: 'dns', serverName, alpn: NO_ALPN, qtype, qclass, transport, complete: true };
  return result;
}

/** Sniffs one UDP datagram (RFC 1035 §4.2.1): the whole message, never `need-more`. */
export function sniffDnsUdp(datagram: Uint8Array): SniffResult {
  if (datagram.length < HEADER + 5) return NOT_THIS;
  return parseQuery(datagram, 0, datagram.length, datagram.length, 'udp', true);
}

/**
 * Sniffs the start of a DNS-over-TCP stream (RFC 1035 §4.2.2): a two-byte
 * length then the message. Only the header and first question are needed.
 */
export function sniffDnsTcp(buf: Uint8Array, maxBytes: number = DEFAULT_MAX_BYTES, final = false): SniffResult {
  checkLimit('maxBytes', maxBytes, 1, 1 << 24);
  const limit = buf.length < maxBytes ? buf.length : maxBytes;
  const atLimit = final || buf.length >= maxBytes;
  if (limit < 2) return atLimit ? NOT_THIS : NEED_MORE;
  const len = u16(buf, 0);
  if (len < HEADER + 5) return NOT_THIS;
  const end = 2 + len;
  return parseQuery(buf, 2, limit < end ? limit : end, end, 'tcp', atLimit);
}
