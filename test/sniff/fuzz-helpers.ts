/** Mutation and well-formedness checks for the sniffer fuzz tests. */
import { isNormalHostname } from '../../src/engine/sniff/hostname.js';
import { NEED_MORE, NOT_THIS, type SniffResult } from '../../src/engine/sniff/result.js';
import type { Rng } from './fixtures.js';

function join(...parts: Uint8Array[]): Uint8Array {
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

/** One mutated or truncated copy of `src` (occasionally spliced with `other`). */
export function mutate(src: Uint8Array, other: Uint8Array, rng: Rng): Uint8Array {
  let b: Uint8Array = src.slice();
  const ops = 1 + rng.int(4);
  for (let k = 0; k < ops; k++) {
    switch (rng.int(9)) {
      case 0: // truncate
        b = b.slice(0, rng.int(b.length + 1));
        break;
      case 1: // flip a bit
        if (b.length) b[rng.int(b.length)]! ^= 1 << rng.int(8);
        break;
      case 2: // random byte
        if (b.length) b[rng.int(b.length)] = rng.int(256);
        break;
      case 3: // extreme byte, likely a length field
        if (b.length) b[rng.int(b.length)] = [0, 1, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff][rng.int(8)]!;
        break;
      case 4: {
        // delete a range
        const at = rng.int(b.length + 1);
        const n = rng.int(16);
        b = join(b.subarray(0, at), b.subarray(Math.min(b.length, at + n)));
        break;
      }
      case 5: {
        // insert random bytes
        const at = rng.int(b.length + 1);
        const ins = new Uint8Array(1 + rng.int(8));
        for (let i = 0; i < ins.length; i++) ins[i] = rng.int(256);
        b = join(b.subarray(0, at), ins, b.subarray(at));
        break;
      }
      case 6: {
        // duplicate a range
        const at = rng.int(b.length + 1);
        const n = rng.int(64);
        b = join(b.subarray(0, at), b.subarray(at, at + n), b.subarray(at));
        break;
      }
      case 7: {
        // splice the tail of another fixture
        const at = rng.int(b.length + 1);
        b = join(b.subarray(0, at), other.subarray(rng.int(other.length + 1)));
        break;
      }
      default: {
        // a 16-bit field set to an extreme
        if (b.length > 1) {
          const at = rng.int(b.length - 1);
          const v = [0, 0xffff, 0x4000, 0x0001, b.length, b.length + 1][rng.int(6)]!;
          b[at] = (v >> 8) & 0xff;
          b[at + 1] = v & 0xff;
        }
      }
    }
  }
  return b;
}

const PROTOCOLS = new Set(['tls', 'http', 'quic', 'dns']);

/** Null when `r` is a well-formed verdict, else what is wrong with it. */
export function malformed(r: SniffResult): string | null {
  if (r.kind === 'need-more') return r === NEED_MORE ? null : 'need-more is not the singleton';
  if (r.kind === 'not-this') return r === NOT_THIS ? null : 'not-this is not the singleton';
  if (r.kind !== 'found') return `kind ${String((r as { kind: unknown }).kind)}`;
  if (!PROTOCOLS.has(r.protocol)) return `protocol ${String(r.protocol)}`;
  if (r.serverName !== null) {
    if (typeof r.serverName !== 'string' || !isNormalHostname(r.serverName, r.protocol === 'http')) return `serverName ${JSON.stringify(r.serverName)}`;
  }
  if (!Array.isArray(r.alpn)) return 'alpn not an array';
  for (const a of r.alpn) if (typeof a !== 'string' || a.length < 1 || a.length > 255 || /[^\x21-\x7e]/.test(a)) return `alpn ${JSON.stringify(a)}`;
  if (typeof r.complete !== 'boolean') return 'complete';
  switch (r.protocol) {
    case 'http':
      if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}$/.test(r.method)) return `method ${JSON.stringify(r.method)}`;
      if (typeof r.path !== 'string' || /[\x00-\x20\x7f]/.test(r.path)) return `path ${JSON.stringify(r.path)}`;
      break;
    case 'dns':
      if (!(r.qtype >= 1 && r.qtype <= 0xffff) || ![1, 3, 4, 254, 255].includes(r.qclass)) return 'qtype/qclass';
      if (r.transport !== 'udp' && r.transport !== 'tcp') return 'transport';
      break;
    case 'quic':
      if (r.version !== 1 && r.version !== 0x6b3343cf) return `version ${r.version}`;
      break;
    case 'tls':
      if (r.serverName !== null && /^[0-9.]+$/.test(r.serverName)) return 'IP literal as SNI';
      break;
  }
  return null;
}
