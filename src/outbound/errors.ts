/**
 * Typed outbound failures with stable codes (undici's UND_ERR_* pattern).
 * The engine reads `reaction` to decide what the waiting client sees.
 */
import { SluiceError } from '../errors.js';

export const OutboundErrorCode = {
  /** The destination (direct) or the proxy itself refused the TCP connection (RST). */
  REFUSED: 'SLUICE_OUTBOUND_REFUSED',
  /** No route / host unreachable / name did not resolve. */
  UNREACHABLE: 'SLUICE_OUTBOUND_UNREACHABLE',
  /** The connect budget ran out. */
  TIMEOUT: 'SLUICE_OUTBOUND_TIMEOUT',
  /** The proxy rejected our credentials, or offered no method we can use. */
  AUTH: 'SLUICE_OUTBOUND_AUTH',
  /** The proxy spoke something we cannot parse, or closed mid-handshake. */
  PROTOCOL: 'SLUICE_OUTBOUND_PROTOCOL',
  /** The proxy answered but would not reach the target (SOCKS REP != 0, HTTP non-2xx); see replyCode / status. */
  PROXY_REFUSED: 'SLUICE_OUTBOUND_PROXY_REFUSED',
  /** The caller's AbortSignal fired. */
  ABORTED: 'SLUICE_OUTBOUND_ABORTED',
  /** A `reject` outbound. */
  REJECTED: 'SLUICE_OUTBOUND_REJECTED',
  /** A `drop` outbound. */
  DROPPED: 'SLUICE_OUTBOUND_DROPPED',
  /** The outbound cannot do this (e.g. UDP through an http outbound). */
  UNSUPPORTED: 'SLUICE_OUTBOUND_UNSUPPORTED',
} as const;

export type OutboundErrorCode = (typeof OutboundErrorCode)[keyof typeof OutboundErrorCode];

/**
 * What the engine should show the client:
 * - 'rst': complete nothing, answer the SYN with RST (UDP: ICMP port unreachable);
 * - 'unreachable': ICMP/ICMPv6 destination unreachable (host/network);
 * - 'drop': send nothing; the client times out by itself.
 */
export type ClientReaction = 'rst' | 'unreachable' | 'drop';

export interface OutboundErrorDetails {
  /** The outbound's configured name. */
  outbound: string;
  /** SOCKS5 REP field (RFC 1928 §6) for PROXY_REFUSED. */
  replyCode?: number;
  /** HTTP status for PROXY_REFUSED from an http outbound. */
  status?: number;
  /** errno name of the underlying system error (ECONNREFUSED, ...). */
  errno?: string;
  cause?: unknown;
}

export class OutboundError extends SluiceError {
  override readonly name = 'OutboundError';
  readonly code: OutboundErrorCode;
  readonly outbound: string;
  readonly replyCode: number | undefined;
  readonly status: number | undefined;
  readonly errno: string | undefined;
  readonly reaction: ClientReaction;

  constructor(code: OutboundErrorCode, message: string, details: OutboundErrorDetails) {
    super(`${details.outbound}: ${message}`, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.outbound = details.outbound;
    this.replyCode = details.replyCode;
    this.status = details.status;
    this.errno = details.errno;
    this.reaction = reactionFor(code, details.replyCode, details.status);
  }
}

/** Thrown by constructors on a bad outbound configuration (the config layer validates first; this is the backstop). */
export class OutboundConfigError extends SluiceError {
  override readonly name = 'OutboundConfigError';
  readonly code = 'SLUICE_OUTBOUND_CONFIG';
  /** Field path inside the outbound entry, e.g. "outbounds[proxy].username". */
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

/**
 * RFC 1928 §6 REP values. 3 (network unreachable), 4 (host unreachable) and
 * 6 (TTL expired) describe routing failures the client would have seen as
 * ICMP; everything else is a refusal.
 */
function reactionFor(code: OutboundErrorCode, replyCode: number | undefined, status: number | undefined): ClientReaction {
  switch (code) {
    case OutboundErrorCode.UNREACHABLE:
    case OutboundErrorCode.TIMEOUT:
      // A timeout means nothing answered: ICMP host unreachable is what a
      // router says after failing to reach a host, and it ends the client's
      // SYN retries at once instead of after ~2 minutes.
      return 'unreachable';
    case OutboundErrorCode.PROXY_REFUSED:
      if (replyCode === 3 || replyCode === 4 || replyCode === 6) return 'unreachable';
      // RFC 9110 §15.6.5: 504 is the proxy's upstream timing out.
      if (status === 504) return 'unreachable';
      return 'rst';
    case OutboundErrorCode.DROPPED:
      return 'drop';
    default:
      return 'rst';
  }
}

/** Maps a Node system error from connect() to an OutboundError. */
export function fromSystemError(err: unknown, outbound: string, what: string): OutboundError {
  if (err instanceof OutboundError) return err;
  const errno = typeof (err as { code?: unknown })?.code === 'string' ? (err as { code: string }).code : undefined;
  const msg = `${what}: ${(err as Error)?.message ?? String(err)}`;
  switch (errno) {
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'EPERM': // a local firewall rule rejecting the SYN
    case 'EACCES':
      return new OutboundError(OutboundErrorCode.REFUSED, msg, { outbound, errno, cause: err });
    case 'ENETUNREACH':
    case 'EHOSTUNREACH':
    case 'ENETDOWN':
    case 'EHOSTDOWN':
    case 'EADDRNOTAVAIL':
    case 'ENODEV': // SO_BINDTODEVICE to an interface that is gone: no way out
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
    case 'EAI_NONAME':
    case 'ENODATA':
      return new OutboundError(OutboundErrorCode.UNREACHABLE, msg, { outbound, errno, cause: err });
    case 'ETIMEDOUT':
      return new OutboundError(OutboundErrorCode.TIMEOUT, msg, { outbound, errno, cause: err });
    default:
      return new OutboundError(OutboundErrorCode.REFUSED, msg, { outbound, ...(errno ? { errno } : {}), cause: err });
  }
}
