/**
 * A small HTTP/1.1 GET client over any outbound (RFC 9112): the one request
 * sluice itself makes through the paths it proxies, for group health checks
 * (time to the response head through a member) and remote rule-set
 * downloads (the body, bounded). TLS for https:// runs over the outbound's
 * stream, so the check really travels through the member, nested groups
 * included.
 *
 * Bounded: a head of at most MAX_HEAD_BYTES, a body of at most `maxBytes`,
 * one deadline for the whole exchange. Not a hot path: a few requests a
 * minute.
 */
import { SluiceError } from '../errors.js';
import tls from 'node:tls';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Outbound } from './types.js';

/** Any media type (RFC 9110 12.5.1), written so the source holds no comment terminator. */
const ACCEPT_ANY = '*\/*';

/** Largest response head (status line and headers) accepted. */
export const MAX_HEAD_BYTES = 16 * 1024;

export interface HttpGetOptions {
  /** Deadline for the whole exchange (connect, TLS, request, response), ms. */
  timeoutMs: number;
  /** Read the body too (at most this many bytes); 0: stop at the response head. */
  maxBytes: number;
  signal?: AbortSignal;
  /** Milliseconds clock (the delay measured); injectable for tests. */
  clock?: () => number;
}

export interface HttpGetResult {
  status: number;
  /** Response header fields, names lower-cased (the last of repeated fields). */
  headers: Map<string, string>;
  /** Empty when maxBytes is 0. */
  body: Buffer;
  /** Milliseconds from the start to the end of the response head. */
  headMs: number;
}

export class HttpGetError extends SluiceError {
  override readonly name = 'HttpGetError';
  readonly code = 'SLUICE_HTTP_GET';
}

interface ParsedUrl {
  https: boolean;
  host: string;
  port: number;
  /** Path and query, as sent in the request line. */
  target: string;
  /** Host header value. */
  authority: string;
}

export function parseHttpUrl(url: string): ParsedUrl {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new HttpGetError(`not a URL: ${JSON.stringify(url)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new HttpGetError(`expected http:// or https://, got ${u.protocol}`);
  const https = u.protocol === 'https:';
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  const port = u.port === '' ? (https ? 443 : 80) : Number(u.port);
  return { https, host, port, target: `${u.pathname}${u.search}` || '/', authority: u.host };
}

/** GET `url` through `outbound`. Rejects with the outbound's error, a TLS error, or HttpGetError. */
export async function httpGet(outbound: Outbound, url: string, opts: HttpGetOptions): Promise<HttpGetResult> {
  const clock = opts.clock ?? (() => performance.now());
  const started = clock();
  const u = parseHttpUrl(url);
  const deadline = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal === undefined ? deadline : AbortSignal.any([opts.signal, deadline]);
  let stream: Duplex = await outbound.connectTcp({ host: u.host, port: u.port }, signal);
  try {
    if (u.https) stream = await startTls(stream, u.host, signal);
    stream.write(`GET ${u.target} HTTP/1.1\r\nHost: ${u.authority}\r\nUser-Agent: sluice\r\nAccept: ${ACCEPT_ANY}\r\nConnection: close\r\n\r\n`);
    return await readResponse(stream, opts.maxBytes, signal, () => clock() - started, opts.timeoutMs);
  } finally {
    stream.destroy();
  }
}

function startTls(raw: Duplex, host: string, signal: AbortSignal): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ socket: raw as never, ...(isIP(host) === 0 ? { servername: host } : {}), host, ALPNProtocols: ['http/1.1'] });
    const onAbort = (): void => {
      socket.destroy();
      raw.destroy();
      reject(new HttpGetError('TLS handshake did not finish in time'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('secureConnect', () => {
      signal.removeEventListener('abort', onAbort);
      resolve(socket);
    });
    socket.once('error', (err) => {
      signal.removeEventListener('abort', onAbort);
      raw.destroy();
      reject(err);
    });
  });
}

/** Reads the status line, the header fields and (maxBytes > 0) the body: Content-Length, chunked, or to the close. */
function readResponse(stream: Duplex, maxBytes: number, signal: AbortSignal, elapsed: () => number, timeoutMs: number): Promise<HttpGetResult> {
  return new Promise((resolve, reject) => {
    let head: Buffer = Buffer.alloc(0);
    let result: HttpGetResult | null = null;
    const body: Buffer[] = [];
    let bodyBytes = 0;
    let length = -1;
    let chunked = false;
    let settled = false;
    const finish = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onEnd);
      if (err !== null) return reject(err);
      const all = Buffer.concat(body);
      if (chunked) {
        const decoded = dechunk(all);
        if (decoded === null) return reject(new HttpGetError('malformed chunked body'));
        result!.body = decoded;
      } else result!.body = all;
      resolve(result!);
    };
    const onAbort = (): void => finish(new HttpGetError(`no complete response within ${timeoutMs} ms`));
    const onError = (err: Error): void => finish(err);
    const onEnd = (): void => {
      if (result === null) return finish(new HttpGetError('connection closed before a response head'));
      if (length >= 0 && bodyBytes < length) return finish(new HttpGetError(`body cut short: ${bodyBytes} of ${length} bytes`));
      finish(null);
    };
    const addBody = (b: Buffer): void => {
      if (b.length === 0) return;
      bodyBytes += b.length;
      if (bodyBytes > maxBytes) return finish(new HttpGetError(`body larger than ${maxBytes} bytes`));
      body.push(b);
      if (length >= 0 && bodyBytes >= length) finish(null);
      // Connection: close ends the body anyway; a complete chunked body may end it sooner (checked only when it can be).
      else if (chunked && b.length >= 4 && b.subarray(b.length - 4).toString('latin1') === '\r\n\r\n' && dechunk(Buffer.concat(body)) !== null) finish(null);
    };
    const onData = (c: Buffer): void => {
      if (result !== null) return addBody(c);
      head = Buffer.concat([head, c]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_HEAD_BYTES) finish(new HttpGetError(`response head larger than ${MAX_HEAD_BYTES} bytes`));
        return;
      }
      const lines = head.subarray(0, end).toString('latin1').split('\r\n');
      const m = /^HTTP\/1\.[01] ([0-9]{3})(?: .*)?$/.exec(lines[0]!);
      if (m === null) return finish(new HttpGetError(`not an HTTP/1.x status line: ${JSON.stringify(lines[0]!.slice(0, 80))}`));
      const headers = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
      result = { status: Number(m[1]), headers, body: Buffer.alloc(0), headMs: elapsed() };
      if (maxBytes === 0) return finish(null);
      const status = result.status;
      if (status === 204 || status === 304) return finish(null);
      chunked = /(?:^|,)\s*chunked\s*$/i.test(headers.get('transfer-encoding') ?? '');
      const cl = headers.get('content-length');
      if (!chunked && cl !== undefined) {
        if (!/^[0-9]{1,15}$/.test(cl)) return finish(new HttpGetError(`bad Content-Length ${JSON.stringify(cl)}`));
        length = Number(cl);
        if (length > maxBytes) return finish(new HttpGetError(`body of ${length} bytes is larger than ${maxBytes} bytes`));
        if (length === 0) return finish(null);
      }
      addBody(head.subarray(end + 4));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
  });
}

/** Decodes a complete chunked body (RFC 9112 7.1); null when incomplete or malformed. */
function dechunk(b: Buffer): Buffer | null {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = b.indexOf('\r\n', at);
    if (eol < 0) return null;
    const sizeText = b.subarray(at, eol).toString('latin1').split(';')[0]!.trim();
    if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) return null;
    const size = parseInt(sizeText, 16);
    at = eol + 2;
    if (size === 0) {
      // Trailer fields end with an empty line.
      const end = b.indexOf('\r\n\r\n', at - 2);
      return end < 0 ? null : Buffer.concat(out);
    }
    if (at + size + 2 > b.length) return null;
    out.push(b.subarray(at, at + size));
    at += size + 2;
  }
}
