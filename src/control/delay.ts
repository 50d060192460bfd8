/**
 * The delay test of GET /proxies/:name/delay and /group/:name/delay: a
 * real HTTP GET of `url` through one outbound (its connect, then TLS for
 * https, then the request), timed from the dial to the response's status
 * line, as mihomo's URLTest does. Bounded by `timeoutMs`; the connection is
 * closed as soon as the status line is in.
 */
import tls from 'node:tls';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Outbound } from '../outbound/types.js';

/** Status ranges as mihomo writes them: "200/204/300-399" (also comma-separated); throws on anything else. */
export type StatusRanges = [number, number][];

export function parseExpected(text: string | null): StatusRanges | null {
  if (text === null || text.trim() === '' || text === '*') return null;
  const out: StatusRanges = [];
  for (const part of text.split(/[/,]/)) {
    const m = /^\s*(\d{3})(?:\s*-\s*(\d{3}))?\s*$/.exec(part);
    const lo = m === null ? NaN : Number(m[1]);
    const hi = m === null || m[2] === undefined ? lo : Number(m[2]);
    if (!(hi >= lo)) throw new Error(`expected status codes or ranges such as 200/204,300-399, got ${JSON.stringify(text.slice(0, 40))}`);
    out.push([lo, hi]);
  }
  return out;
}

export class DelayError extends Error {
  constructor(
    readonly timeout: boolean,
    message: string,
  ) {
    super(message);
    this.name = 'DelayError';
  }
}

/** Milliseconds until the status line arrived; throws DelayError (timeout, or what failed). */
export async function measureDelay(outbound: Outbound, url: URL, timeoutMs: number, expected: StatusRanges | null): Promise<number> {
  if (outbound.action !== 'connect') throw new DelayError(false, `outbound ${outbound.name} is a ${outbound.action} outbound: it carries nothing`);
  const https = url.protocol === 'https:';
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = url.port === '' ? (https ? 443 : 80) : Number(url.port);
  const ac = new AbortController();
  const started = performance.now();
  let stream: Duplex | null = null;
  const timer = setTimeout(() => {
    ac.abort();
    stream?.destroy();
  }, timeoutMs);
  try {
    stream = await outbound.connectTcp({ host, port }, ac.signal);
    if (https) stream = await startTls(stream, host);
    const status = await requestStatus(stream, url, host);
    if (expected !== null && !expected.some(([lo, hi]) => status >= lo && status <= hi)) throw new DelayError(false, `status ${status} is not the expected one`);
    return Math.max(1, Math.round(performance.now() - started));
  } catch (err) {
    if (ac.signal.aborted) throw new DelayError(true, 'Timeout');
    if (err instanceof DelayError) throw err;
    throw new DelayError(false, (err as Error).message);
  } finally {
    clearTimeout(timer);
    stream?.destroy();
  }
}

function startTls(socket: Duplex, host: string): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket, ...(isIP(host) === 0 ? { servername: host } : {}), ALPNProtocols: ['http/1.1'] });
    t.once('secureConnect', () => resolve(t));
    t.once('error', reject);
    socket.once('close', () => reject(new Error('connection closed during the TLS handshake')));
  });
}

/** Sends the GET and resolves with the status code of the first response line. */
function requestStatus(stream: Duplex, url: URL, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let head = '';
    const onData = (c: Buffer): void => {
      head += c.toString('latin1');
      const nl = head.indexOf('\r\n');
      if (nl < 0) {
        if (head.length > 4096) fail(new Error('no HTTP status line in the first 4 KiB'));
        return;
      }
      const m = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(head.slice(0, nl));
      cleanup();
      if (m === null) reject(new Error(`not an HTTP response: ${JSON.stringify(head.slice(0, 40))}`));
      else resolve(Number(m[1]));
    };
    const fail = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onClose = (): void => fail(new Error('connection closed before the response'));
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('error', fail);
      stream.off('close', onClose);
    };
    stream.on('data', onData);
    stream.once('error', fail);
    stream.once('close', onClose);
    const hostHeader = url.port === '' ? (host.includes(':') ? `[${host}]` : host) : url.host;
    stream.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${hostHeader}\r\nUser-Agent: sluice-delay-test\r\nAccept: */*\r\nConnection: close\r\n\r\n`);
  });
}
