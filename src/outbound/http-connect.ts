/**
 * HTTP CONNECT outbound (RFC 9110 §9.3.6) through an upstream HTTP/1.1
 * proxy, using undici for the request and response parsing. The TCP
 * connection to the proxy is made by our dialer (undici's `connect` hook),
 * so it carries the same SO_MARK / SO_BINDTODEVICE as direct traffic.
 *
 * One undici Client per tunnel: a CONNECT takes the client's socket over,
 * and a shared client would serialise concurrent tunnels behind each
 * other's handshakes (undici blocks its pipeline on CONNECT).
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { undici } from './undici.js';
import { Attempt, dialTcp, makeDialer } from './dial.js';
import type { Dialer } from './dial.js';
import { OutboundConfigError, OutboundError, OutboundErrorCode, fromSystemError } from './errors.js';
import type { DialerOptions, Outbound, Target } from './types.js';

export interface HttpConnectOutboundOptions extends DialerOptions {
  name: string;
  server: string;
  port: number;
  username?: string;
  password?: string;
  /** Extra request headers sent with every CONNECT (e.g. user-agent). */
  headers?: Record<string, string>;
}

/** RFC 9112 §3.2.3 authority-form: host:port, IPv6 literals in brackets (RFC 3986 §3.2.2). */
export function authorityOf(host: string, port: number): string {
  return net.isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

export class HttpConnectOutbound implements Outbound {
  readonly name: string;
  readonly type = 'http' as const;
  readonly action = 'connect' as const;
  readonly supportsUdp = false;
  readonly server: string;
  readonly port: number;
  private readonly dialer: Dialer;
  private readonly origin: string;
  private readonly baseHeaders: Record<string, string>;

  constructor(opts: HttpConnectOutboundOptions) {
    this.name = opts.name;
    this.server = opts.server;
    this.port = opts.port;
    this.dialer = makeDialer(opts.name, opts);
    const field = `outbounds[${opts.name}]`;
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
      throw new OutboundConfigError(`${field}.port`, 'expected an integer 1..65535');
    }
    if ((opts.username === undefined) !== (opts.password === undefined)) {
      throw new OutboundConfigError(`${field}.${opts.username === undefined ? 'username' : 'password'}`, 'username and password go together');
    }
    if (opts.username !== undefined && opts.username.includes(':')) {
      // RFC 7617 §2: the user-id cannot contain a colon.
      throw new OutboundConfigError(`${field}.username`, 'a Basic user-id cannot contain ":" (RFC 7617)');
    }
    this.origin = `http://${authorityOf(opts.server, opts.port)}`;
    this.baseHeaders = { ...(opts.headers ?? {}) };
    if (opts.username !== undefined && opts.password !== undefined) {
      this.baseHeaders['proxy-authorization'] = `Basic ${Buffer.from(`${opts.username}:${opts.password}`, 'utf8').toString('base64')}`;
    }
  }

  async connectTcp(target: Target, signal?: AbortSignal): Promise<Duplex> {
    const attempt = new Attempt(this.name, this.dialer.connectTimeoutMs, signal);
    const dialer = this.dialer;
    const what = `proxy ${this.server}:${this.port}`;
    const { Client } = undici();
    const client = new Client(this.origin, {
      // The attempt's budget bounds the whole exchange; undici's own timers would race it.
      headersTimeout: 0,
      bodyTimeout: 0,
      pipelining: 1,
      connect: (_opts, callback) => {
        dialTcp(dialer, this.server, this.port, undefined, attempt, what).then(
          (socket) => callback(null, socket),
          (err: Error) => callback(err, null),
        );
      },
    });
    // undici reports errors of an idle client here; the request's promise carries ours.
    client.on('connectionError', noop);
    const authority = authorityOf(target.host, target.port);
    try {
      const res = await client.connect({
        path: authority,
        // RFC 9112 §3.2: Host carries the request-target's authority.
        headers: { ...this.baseHeaders, host: authority },
        signal: attempt.signal,
      });
      const status = res.statusCode;
      if (status < 200 || status > 299) {
        res.socket.destroy();
        // RFC 9110 §15.5.8: 407 is the proxy asking for credentials; some proxies
        // (tinyproxy 1.11 for wrong ones) answer 401 to a CONNECT instead.
        if (status === 407 || status === 401) {
          throw new OutboundError(OutboundErrorCode.AUTH, `the proxy refused our credentials (${status})`, { outbound: this.name, status });
        }
        throw new OutboundError(OutboundErrorCode.PROXY_REFUSED, `the proxy answered ${status} to CONNECT ${authority}`, { outbound: this.name, status });
      }
      // Any bytes that followed the 2xx header were put back into the socket by undici.
      return res.socket;
    } catch (err) {
      if (err instanceof OutboundError) throw err;
      if (attempt.aborted) throw attempt.failure();
      throw fromHttpError(err, this.name, what);
    } finally {
      attempt.dispose();
      // The tunnel socket is detached from the client on success; this only drops the client.
      client.destroy().catch(noop);
    }
  }
}

function fromHttpError(err: unknown, outbound: string, what: string): OutboundError {
  const code = (err as { code?: string })?.code;
  const name = (err as { name?: string })?.name;
  if ((typeof code === 'string' && (code.startsWith('UND_ERR') || code.startsWith('HPE_'))) || name === 'HTTPParserError') {
    // Socket closed mid-answer (UND_ERR_SOCKET) or an unparsable answer (llhttp HPE_*): not HTTP/1.1 as we know it.
    return new OutboundError(OutboundErrorCode.PROTOCOL, `${what}: ${(err as Error).message}`, { outbound, ...(code !== undefined ? { errno: code } : {}), cause: err });
  }
  return fromSystemError(err, outbound, what);
}

function noop(): void {}
