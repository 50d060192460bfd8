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
 *
 * This module is the codec's one import: the vocabulary (message-types.ts),
 * names (names.ts), decoding (decode.ts) and encoding (encode.ts) are
 * re-exported here; what lives here is patching an upstream answer for a
 * client and the TCP framing.
 */
import { DnsError } from './errors.js';
import { u16 } from './decode.js';
import { ARCOUNT, FLAG_RD, MAX_MESSAGE_LEN, type DnsMessage } from './message-types.js';

export * from './message-types.js';
export { canonicalName, nameToLabels, namesEqual } from './names.js';
export { decodeMessage, parseMessage } from './decode.js';
export * from './encode.js';

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
