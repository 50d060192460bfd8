/**
 * DNS names (RFC 1035 2.3.4, 3.1, 4.1.4): reading a wire name, with
 * compression pointers, into presentation form, and splitting presentation
 * text into wire labels. Presentation form has no trailing dot (the root is
 * ""); bytes outside [A-Za-z0-9_-] are escaped as "\DDD" and "." / "\" in a
 * label as "\." / "\\", as dig prints them, so any wire name round-trips.
 * Case folding is ASCII only (RFC 4343).
 */
import { DnsParseError, MAX_LABEL, MAX_NAME_WIRE } from './message-types.js';

/** More jumps than labels a legal name can have means something is wrong. */
const MAX_POINTER_JUMPS = 127;

// ---------------------------------------------------------------------------
// Name decoding

/** Scratch results of readName (module-level so the hot loop allocates nothing extra). */
export let nameEnd = 0;
export let nameError: DnsParseError = DnsParseError.Ok;

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
export function readName(buf: Uint8Array, start: number, limit: number): string | null {
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
