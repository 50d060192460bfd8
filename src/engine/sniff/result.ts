/**
 * The verdict every sniffer returns. A sniffer looks at the first bytes of a
 * flow (or its first datagrams) and says one of three things:
 *
 * - `need-more`: the bytes so far are a consistent prefix of this protocol;
 *   push more (the caller bounds the wait with `sniff.timeoutMs`).
 * - `found`: the protocol is recognised; `serverName` is the validated,
 *   lowercased name the client asked for, or null when it sent none or one
 *   we refuse (garbage, IP literal where the RFC forbids it, ambiguity).
 * - `not-this`: the bytes cannot be this protocol (or we gave up).
 *
 * `need-more` and `not-this` are shared frozen singletons, so the common
 * "keep waiting" answer allocates nothing; compare on `kind`.
 */
import { SluiceError } from '../../errors.js';

export type SniffProtocol = 'tls' | 'http' | 'quic' | 'dns';

export interface NeedMore {
  readonly kind: 'need-more';
}

export interface NotThis {
  readonly kind: 'not-this';
}

export interface TlsFound {
  readonly kind: 'found';
  readonly protocol: 'tls';
  readonly serverName: string | null;
  /** ALPN protocol names offered, in client order (RFC 7301 §3.1); printable ASCII only. */
  readonly alpn: string[];
  /** False when the ClientHello was cut by the byte bound and only its prefix was read. */
  readonly complete: boolean;
}

export interface HttpFound {
  readonly kind: 'found';
  readonly protocol: 'http';
  /** Host from an absolute-form/authority-form target, else the Host header; port stripped. IP literals allowed. */
  readonly serverName: string | null;
  readonly alpn: string[];
  readonly method: string;
  /**
   * The request target as sent for origin-form and asterisk-form; path and
   * query of an absolute-form target ("/" when empty); "" for authority-form (CONNECT).
   */
  readonly path: string;
  readonly complete: boolean;
}

export interface QuicFound {
  readonly kind: 'found';
  readonly protocol: 'quic';
  readonly serverName: string | null;
  readonly alpn: string[];
  /** The QUIC version of the Initial (0x00000001 or 0x6b3343cf). */
  readonly version: number;
  readonly complete: boolean;
}

export interface DnsFound {
  readonly kind: 'found';
  readonly protocol: 'dns';
  /** The first question's QNAME, lowercased, no trailing dot; null for the root or a name we refuse. */
  readonly serverName: string | null;
  readonly alpn: string[];
  readonly qtype: number;
  readonly qclass: number;
  readonly transport: 'udp' | 'tcp';
  readonly complete: boolean;
}

export type SniffFound = TlsFound | HttpFound | QuicFound | DnsFound;
export type SniffResult = NeedMore | NotThis | SniffFound;

export const NEED_MORE: NeedMore = Object.freeze({ kind: 'need-more' });
export const NOT_THIS: NotThis = Object.freeze({ kind: 'not-this' });

/** Default bound on bytes examined, per RFC 8446 §5.1 one maximal record (2^14) plus headroom. */
export const DEFAULT_MAX_BYTES = 16384;

/** A shared empty ALPN list for results that carry none; frozen so nobody appends to it. */
export const NO_ALPN: string[] = Object.freeze([]) as unknown as string[];

/** Misuse of the sniffer API (not hostile bytes, which never throw). */
export class SniffError extends SluiceError {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'SniffError';
    this.code = code;
  }
}

/** Validates a `maxBytes`-style option; throws `SNIFF_ERR_BAD_LIMIT` on misuse. */
export function checkLimit(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new SniffError('SNIFF_ERR_BAD_LIMIT', `${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}
