/**
 * Flow sniffing: which protocol a new flow speaks and which name it asks for,
 * from its first bytes (TCP) or first datagrams (UDP).
 *
 * Bounds: the sniffers bound BYTES only (`maxBytes`, `sniff.maxBytes` in the
 * config) and, for UDP, datagrams. They have no clock. The engine bounds TIME:
 * it starts a `sniff.timeoutMs` timer when the flow opens, pushes what
 * arrives, and when the timer fires before a final verdict it calls
 * `finish()`, which turns a consistent-but-incomplete prefix into a partial
 * `found` (complete: false) or says `not-this`. Server-first protocols
 * (SMTP, SSH banners from the server) send nothing, so only the timer ends
 * their sniff.
 *
 * The sniffers do not keep the bytes for replay: the engine holds the chunks
 * it pushed and writes them upstream once the route is chosen.
 */
import { DEFAULT_MAX_BYTES, NEED_MORE, NOT_THIS, checkLimit, type SniffResult } from './result.js';
import { sniffTlsClientHello, newClientHelloInfo, type ClientHelloInfo } from './tls-client-hello.js';
import { sniffHttpRequest } from './http-host.js';
import { sniffDnsTcp, sniffDnsUdp } from './dns-query.js';
import { QuicInitialSniffer, looksLikeQuicInitial, type QuicSniffOptions } from './quic-initial.js';

export * from './result.js';
export { sniffTlsClientHello, parseClientHelloMessage, HelloStatus } from './tls-client-hello.js';
export { sniffHttpRequest } from './http-host.js';
export { sniffDnsTcp, sniffDnsUdp } from './dns-query.js';
export { QuicInitialSniffer, sniffQuicInitial, QUIC_V1, QUIC_V2, type QuicSniffOptions } from './quic-initial.js';

const TRY_TLS = 1;
const TRY_HTTP = 2;
const TRY_DNS = 4;

export interface FlowSnifferOptions {
  /** Bytes examined at most (config `sniff.maxBytes`; default 16 KiB). */
  maxBytes?: number;
  /**
   * Destination port, a hint: when given, DNS-over-TCP is tried only if it is
   * in `dnsPorts`; when absent, DNS-over-TCP is tried on every flow.
   */
  dstPort?: number;
  /** Ports where DNS is expected (default [53]). */
  dnsPorts?: readonly number[];
}

/**
 * Sniffs one TCP flow: push each chunk the client sends; the verdict is final
 * once it is `found` or `not-this`. TLS, HTTP/1.x and DNS-over-TCP are tried
 * together; `not-this` comes when all of them refuse.
 */
export class FlowSniffer {
  private readonly maxBytes: number;
  private buf: Uint8Array | null;
  private len: number;
  private seen: number;
  private candidates: number;
  private verdict: SniffResult;
  private readonly info: ClientHelloInfo;

  constructor(options: FlowSnifferOptions = {}) {
    this.maxBytes = checkLimit('maxBytes', options.maxBytes ?? DEFAULT_MAX_BYTES, 1, 1 << 24);
    const port = options.dstPort;
    const dnsPorts = options.dnsPorts ?? [53];
    this.candidates = TRY_TLS | TRY_HTTP | (port === undefined || dnsPorts.includes(port) ? TRY_DNS : 0);
    this.buf = null;
    this.len = 0;
    this.seen = 0;
    this.verdict = NEED_MORE;
    this.info = newClientHelloInfo();
  }

  /** The current verdict (NEED_MORE until final). */
  get result(): SniffResult {
    return this.verdict;
  }

  /** Bytes pushed before the verdict (including those beyond `maxBytes`, which are not examined). */
  get bytesSeen(): number {
    return this.seen;
  }

  /** Feeds the next chunk of client bytes. */
  push(chunk: Uint8Array): SniffResult {
    if (this.verdict.kind !== 'need-more') return this.verdict;
    this.seen += chunk.length;
    if (chunk.length === 0) return this.verdict;
    if (this.len === 0) {
      // First bytes: examine the chunk in place, copy only if we must wait for more.
      const r = this.evaluate(chunk, false);
      if (r.kind !== 'need-more') return r;
      this.append(chunk);
      return r;
    }
    this.append(chunk);
    return this.evaluate(this.buf!.subarray(0, this.len), false);
  }

  /** The verdict when the caller stops waiting (timeout or end of stream): final from now on. */
  finish(): SniffResult {
    if (this.verdict.kind !== 'need-more') return this.verdict;
    const r = this.evaluate(this.buf === null ? new Uint8Array(0) : this.buf.subarray(0, this.len), true);
    if (r.kind === 'need-more') this.verdict = NOT_THIS; // unreachable with final=true; kept as a guard
    return this.verdict;
  }

  private append(chunk: Uint8Array): void {
    if (this.buf === null) this.buf = new Uint8Array(this.maxBytes);
    const room = this.maxBytes - this.len;
    const n = chunk.length < room ? chunk.length : room;
    if (n > 0) {
      this.buf.set(n === chunk.length ? chunk : chunk.subarray(0, n), this.len);
      this.len += n;
    }
  }

  private evaluate(view: Uint8Array, final: boolean): SniffResult {
    const max = this.maxBytes;
    if ((this.candidates & TRY_TLS) !== 0) {
      const r = sniffTlsClientHello(view, max, final, this.info);
      if (r.kind === 'found') return (this.verdict = r);
      if (r.kind === 'not-this') this.candidates &= ~TRY_TLS;
    }
    if ((this.candidates & TRY_HTTP) !== 0) {
      const r = sniffHttpRequest(view, max, final);
      if (r.kind === 'found') return (this.verdict = r);
      if (r.kind === 'not-this') this.candidates &= ~TRY_HTTP;
    }
    if ((this.candidates & TRY_DNS) !== 0) {
      const r = sniffDnsTcp(view, max, final);
      if (r.kind === 'found') return (this.verdict = r);
      if (r.kind === 'not-this') this.candidates &= ~TRY_DNS;
    }
    if (this.candidates === 0 || final) this.verdict = NOT_THIS;
    return this.verdict;
  }
}

export interface DatagramSnifferOptions extends QuicSniffOptions {
  /** Ports where DNS is expected (default [53]); DNS is tried first there. */
  dnsPorts?: readonly number[];
}

/**
 * Sniffs one UDP session: push the client's datagrams in order. DNS is
 * decided by the first datagram; a QUIC ClientHello may need several.
 */
export class DatagramSniffer {
  private readonly dns: boolean;
  private readonly options: QuicSniffOptions;
  private quic: QuicInitialSniffer | null;
  private verdict: SniffResult;
  private count: number;

  constructor(dstPort: number, options: DatagramSnifferOptions = {}) {
    this.dns = (options.dnsPorts ?? [53]).includes(dstPort);
    this.options = options;
    this.quic = null;
    this.verdict = NEED_MORE;
    this.count = 0;
  }

  get result(): SniffResult {
    return this.verdict;
  }

  push(datagram: Uint8Array): SniffResult {
    if (this.verdict.kind !== 'need-more') return this.verdict;
    if (this.count++ === 0) {
      if (this.dns) {
        const r = sniffDnsUdp(datagram);
        if (r.kind === 'found') return (this.verdict = r);
      }
      if (!looksLikeQuicInitial(datagram)) return (this.verdict = NOT_THIS);
      this.quic = new QuicInitialSniffer(this.options);
    }
    const r = this.quic!.push(datagram);
    if (r.kind !== 'need-more') this.verdict = r;
    return r;
  }

  finish(): SniffResult {
    if (this.verdict.kind !== 'need-more') return this.verdict;
    this.verdict = this.quic === null ? NOT_THIS : this.quic.finish();
    return this.verdict;
  }
}

/**
 * One datagram, one verdict: DNS (on `dnsPorts`, default 53) or a QUIC client
 * Initial. `need-more` means a QUIC Initial opened but its ClientHello
 * continues in later datagrams: use a `DatagramSniffer` for the session.
 */
export function sniffDatagram(datagram: Uint8Array, dstPort: number, options?: DatagramSnifferOptions): SniffResult {
  return new DatagramSniffer(dstPort, options).push(datagram);
}
