/**
 * The HTTP L7 mode (config `http`): a cleartext HTTP/1.1 flow is parsed
 * request by request instead of relayed as bytes. Each request is matched
 * against `http.rules` (method, path, Host), its headers rewritten
 * (hop-by-hop fields dropped, RFC 9110 7.6.1; the rule's removeHeaders and
 * setHeaders applied) and forwarded with an undici Pool per (outbound,
 * origin), so upstream connections are kept alive and reused across client
 * connections. Responses stream back; the client connection stays
 * keep-alive. One "request" line is logged per request.
 *
 * The parser is node's own: one `http.Server` that never listens; each
 * client stream is handed to it with `emit('connection')` after the sniffed
 * first bytes are put back with `unshift`.
 *
 * Not carried: Upgrade (WebSocket) and CONNECT requests are answered 501
 * and the connection closed; `Upgrade: h2c` is ignored (RFC 9110 7.8 lets a
 * server ignore it) and the request served over HTTP/1.1. A request that
 * does not parse gets 400 (431 for a head over `maxHeaderBytes`) and the
 * connection is closed.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import type { Pool, buildConnector } from 'undici';
import { undici } from '../outbound/undici.js';
import { bindShared, SharedScope } from './flow-guard.js';
import type { HttpConfig } from '../config/types.js';
import type { Outbound, Target } from '../outbound/types.js';
import type { Logger } from './logger.js';
import type { RelayResult } from './relay.js';
import { compileHttpRules, filterResponseHeaders, hostOf, matchHttpRule, rewriteRequestHeaders, type CompiledHttpRule } from './http-rules.js';

/** An idle client keep-alive connection is closed after this long (node's own server default). */
export const CLIENT_IDLE_MS = 5_000;
/** Upstream pools kept at once; the least recently used one is closed beyond this. */
export const MAX_POOLS = 256;
/** Upstream connections per pool. */
export const POOL_CONNECTIONS = 32;
/** An idle upstream connection is kept this long (undici's keepAliveTimeout; shortened by the server's Keep-Alive hint). */
export const UPSTREAM_IDLE_MS = 30_000;

export interface HttpFlow {
  /** "ip:port" of the client, for the access log. */
  src: string;
  /** The flow's destination (an IP literal, or the name behind a fake IP). */
  target: Target;
  /** The outbound the flow-level policy chose (a 'connect' one). */
  outbound: Outbound;
}

/**
 * A client connection's totals for its flow line: what its requests matched
 * (the last request's http.rules index and outbound, as in its "request"
 * line; every outbound used when they differ) rather than the flow-level default.
 */
export interface HttpFlowResult extends RelayResult {
  requests: number;
  /** The last request's http.rules index (-1: none matched). */
  rule: number;
  /** The last request's outbound. */
  outbound: string;
  /** Every outbound the requests used, when more than one. */
  outbounds?: string[];
}

/** A request being served: its response, and the controller that aborts its upstream request. */
interface Pending {
  res: http.ServerResponse;
  ac: AbortController;
  /** Answered 503 by closeOrderly: the upstream's answer (or failure) is not written any more. */
  stopped: boolean;
}

interface Conn {
  flow: HttpFlow;
  r: HttpFlowResult;
  inflight: number;
  idle: NodeJS.Timeout | null;
  /** The requests in flight (node's server queues pipelined responses: at most a few). */
  pending: Set<Pending>;
  /** closeOrderly ran: the connection ends with a FIN once its last response is out. */
  closing: boolean;
}

const CLOSE_BODY = (status: number, text: string): string =>
  `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`;

export class HttpL7 {
  private readonly server: http.Server;
  private readonly rules: CompiledHttpRule[];
  private readonly ports: ReadonlySet<number>;
  private readonly pools = new Map<string, Pool>();
  private readonly conns = new WeakMap<Duplex, Conn>();

  constructor(
    private readonly cfg: HttpConfig,
    private readonly outbounds: ReadonlyMap<string, Outbound>,
    private readonly log: Logger,
  ) {
    this.rules = compileHttpRules(cfg.rules);
    this.ports = new Set(cfg.ports);
    this.server = http.createServer({ maxHeaderSize: cfg.maxHeaderBytes }, (req, res) => this.onRequest(req, res));
    // A client FIN after its last request still gets the response (then our FIN).
    (this.server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    this.server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => this.onClientError(err, socket));
    this.server.on('connect', (req: http.IncomingMessage, socket: Duplex) => this.refuse(req, socket, 'CONNECT'));
  }

  /** Whether a sniffed-HTTP flow to `port` is served here. */
  wants(port: number): boolean {
    return this.ports.has(port);
  }

  /**
   * Serves one client connection. `firstBytes` are the sniffed bytes already
   * read from `stream` (which is paused); `done` gets the flow's totals when
   * the client connection closes (bytesDown counts response bodies). Returns
   * the totals object, live while the connection is served.
   */
  serve(stream: Duplex, firstBytes: readonly Buffer[], flow: HttpFlow, done: (r: HttpFlowResult) => void): HttpFlowResult {
    const conn: Conn = { flow, r: { bytesUp: 0, bytesDown: 0, close: 'fin', requests: 0, rule: -1, outbound: flow.outbound.name }, inflight: 0, idle: null, pending: new Set(), closing: false };
    this.conns.set(stream, conn);
    stream.on('data', (c: Buffer) => (conn.r.bytesUp += c.length));
    stream.on('error', (err: Error & { code?: string }) => {
      if (conn.r.close === 'fin') conn.r.close = `client ${err.code ?? err.message}`;
    });
    stream.once('close', () => {
      if (conn.idle !== null) clearTimeout(conn.idle);
      done(conn.r);
    });
    if (firstBytes.length > 0) stream.unshift(firstBytes.length === 1 ? firstBytes[0]! : Buffer.concat(firstBytes));
    this.server.emit('connection', stream);
    stream.resume();
    this.armIdle(stream, conn);
    return conn.r;
  }

  /**
   * As sluice stops, closes a client connection with a FIN. With no request
   * in flight (idle, or a request head still arriving) at once, as the idle
   * timeout does. A request not answered yet gets 503 Service Unavailable
   * with `Connection: close` (RFC 9110 15.6.4, RFC 9112 9.6) and its
   * upstream request is aborted; a response already streaming is let
   * finish. The FIN follows the last response. What is still open when the
   * caller's grace ends is ended hard. Returns false when the connection
   * cannot be closed this way (unknown, destroyed, or ended already).
   */
  closeOrderly(stream: Duplex): boolean {
    const conn = this.conns.get(stream);
    if (conn === undefined || conn.closing || stream.destroyed || stream.writableEnded) return false;
    conn.closing = true;
    if (conn.idle !== null) clearTimeout(conn.idle);
    conn.idle = null;
    if (conn.inflight === 0) {
      stream.end();
      return true;
    }
    for (const p of conn.pending) {
      if (p.res.headersSent || p.res.destroyed) continue;
      p.stopped = true;
      p.ac.abort();
      p.res.shouldKeepAlive = false;
      this.shortAnswer(p.res, 503, 'sluice is stopping\n');
    }
    return true;
  }

  /** Destroys every upstream pool (on stop: in-flight requests fail, nothing waits for them). */
  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.allSettled(pools.map((p) => p.destroy()));
  }

  private armIdle(stream: Duplex, conn: Conn): void {
    if (conn.idle !== null) clearTimeout(conn.idle);
    conn.idle =
      conn.inflight > 0
        ? null
        : setTimeout(() => {
            conn.idle = null;
            if (conn.inflight === 0 && !stream.destroyed) {
              if (conn.r.close === 'fin') conn.r.close = 'idle';
              stream.end();
              setTimeout(() => stream.destroy(), 1_000).unref();
            }
          }, CLIENT_IDLE_MS);
  }

  private pool(outbound: Outbound, target: Target): Pool {
    const host = target.host.includes(':') ? `[${target.host}]` : target.host;
    const origin = `http://${host}:${target.port}`;
    const key = `${outbound.name} ${origin}`;
    let pool = this.pools.get(key);
    if (pool !== undefined) {
      this.pools.delete(key); // re-inserted last: Map order is recency
      this.pools.set(key, pool);
      return pool;
    }
    if (this.pools.size >= MAX_POOLS) {
      const [oldKey, oldPool] = this.pools.entries().next().value as [string, Pool];
      this.pools.delete(oldKey);
      void oldPool.close().catch(() => {});
    }
    const connect: buildConnector.connector = (_opts, cb) => {
      outbound.connectTcp({ host: target.host, port: target.port }).then(
        (s) => cb(null, s as Socket),
        (err: Error) => cb(err, null),
      );
    };
    const { Pool } = undici();
    pool = new Pool(origin, {
      connections: POOL_CONNECTIONS,
      pipelining: 1,
      keepAliveTimeout: UPSTREAM_IDLE_MS,
      keepAliveMaxTimeout: UPSTREAM_IDLE_MS,
      // Every upstream connection is dialled through the outbound (direct: with its mark/interface),
      // in the pool's own async context: it serves later flows too, so its errors are not the
      // first flow's (src/engine/flow-guard.ts).
      connect: bindShared(new SharedScope(`http pool ${key}`), connect),
    });
    this.pools.set(key, pool);
    return pool;
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const stream = req.socket as Duplex;
    const conn = this.conns.get(stream);
    if (conn === undefined) {
      res.destroy();
      return;
    }
    const started = performance.now();
    conn.inflight++;
    if (conn.idle !== null) clearTimeout(conn.idle);
    conn.idle = null;

    // Origin-form normally; absolute-form (RFC 9112 3.2.2) is reduced to it.
    let target = req.url ?? '/';
    let hostHeader = req.headers.host;
    if (!target.startsWith('/') && target !== '*') {
      try {
        const u = new URL(target);
        target = u.pathname + u.search;
        hostHeader = u.host;
      } catch {
        target = '/';
      }
    }
    const method = req.method ?? 'GET';
    const host = hostOf(hostHeader);
    const rule = matchHttpRule(this.rules, { method, target, host });
    const outbound = rule?.outbound != null ? this.outbounds.get(rule.outbound)! : conn.flow.outbound;
    this.countRequest(conn.r, rule?.index ?? -1, outbound.name);

    let bytes = 0;
    let logged = false;
    const ac = new AbortController();
    const pend: Pending = { res, ac, stopped: false };
    conn.pending.add(pend);
    const finish = (status: number): void => {
      if (logged) return;
      logged = true;
      conn.inflight--;
      conn.pending.delete(pend);
      // Stopping: the FIN follows the last response out.
      if (conn.closing) {
        if (conn.inflight === 0 && !stream.destroyed && !stream.writableEnded) stream.end();
      } else if (!stream.destroyed) this.armIdle(stream, conn);
      if (this.cfg.accessLog && this.log.isLevelEnabled('info')) {
        this.log.info(
          { src: conn.flow.src, method, host, path: target, status, bytes, durationMs: Math.round(performance.now() - started), outbound: outbound.name, rule: rule?.index ?? -1 },
          'request',
        );
      }
    };
    res.once('close', () => finish(res.headersSent ? res.statusCode : 0));

    if (outbound.action !== 'connect') {
      req.resume();
      if (outbound.action === 'drop') {
        finish(0);
        stream.destroy();
        return;
      }
      this.shortAnswer(res, 403, 'blocked by policy\n');
      return;
    }

    // Without an 'upgrade' listener node parses Upgrade requests as plain ones. h2c
    // is ignored (served over HTTP/1.1, RFC 9110 7.8); any other (WebSocket) is refused.
    const upgrade = req.headers.upgrade;
    if (upgrade !== undefined && !/^\s*h2c\s*$/i.test(upgrade)) {
      req.resume();
      res.shouldKeepAlive = false;
      this.shortAnswer(res, 501, `Upgrade to ${upgrade.slice(0, 32)} is not carried by sluice's HTTP mode\n`);
      return;
    }
    const headers = rewriteRequestHeaders(req.rawHeaders, rule);
    const hasBody = (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0') || req.headers['transfer-encoding'] !== undefined;
    res.once('close', () => {
      if (!res.writableFinished) ac.abort();
    });
    // The origin is built from the flow's name and the request from the
    // client's bytes: undici throws on what it cannot use (a name with
    // characters no URL has, a path it refuses). Either costs this request a 502.
    let pending: ReturnType<Pool['request']>;
    try {
      pending = this.pool(outbound, conn.flow.target).request({ method, path: target, headers, body: hasBody ? req : null, signal: ac.signal });
    } catch (err) {
      req.resume();
      res.shouldKeepAlive = false;
      this.shortAnswer(res, 502, `upstream request failed: ${(err as { code?: string }).code ?? (err as Error).message}\n`);
      return;
    }
    pending
      .then(
        (up) => {
          if (res.destroyed || pend.stopped) {
            up.body.destroy();
            return;
          }
          try {
            // An upstream status node cannot send (below 100, above 999) or a header value it refuses.
            res.writeHead(up.statusCode, filterResponseHeaders(up.headers));
          } catch {
            up.body.destroy();
            res.destroy();
            return;
          }
          // Per chunk into the flow's totals too: the control API reads them live.
          up.body.on('data', (c: Buffer) => {
            bytes += c.length;
            conn.r.bytesDown += c.length;
          });
          pipeline(up.body, res, () => {});
        },
        (err: Error & { code?: string }) => {
          if (!hasBody) req.resume();
          // Aborted by closeOrderly, which answered 503 already.
          if (pend.stopped) return;
          if (res.headersSent || res.destroyed) {
            res.destroy();
            return;
          }
          // The request body may be half read: close after answering.
          if (hasBody) res.shouldKeepAlive = false;
          this.shortAnswer(res, 502, `upstream failed: ${err.code ?? err.message}\n`);
        },
      );
  }

  private shortAnswer(res: http.ServerResponse, status: number, text: string): void {
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(text)) });
    res.end(text);
  }

  private countRequest(r: HttpFlowResult, rule: number, outbound: string): void {
    if (r.requests > 0 && outbound !== r.outbound) {
      r.outbounds ??= [r.outbound];
      if (!r.outbounds.includes(outbound)) r.outbounds.push(outbound);
    }
    r.requests++;
    r.rule = rule;
    r.outbound = outbound;
  }

  private onClientError(err: Error & { code?: string }, socket: Duplex): void {
    const conn = this.conns.get(socket);
    // Stopping: a request head cut short by the client's answering FIN is no parse error to answer; the stream closes by itself.
    if (conn?.closing === true && socket.writableEnded) return;
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    if (conn !== undefined) {
      if (conn.r.close === 'fin') conn.r.close = `client ${err.code ?? 'parse error'}`;
      if (this.cfg.accessLog && this.log.isLevelEnabled('info')) {
        this.log.info({ src: conn.flow.src, method: null, host: null, path: null, status, bytes: 0, durationMs: 0, outbound: conn.flow.outbound.name, rule: -1 }, 'request');
      }
    }
    if (socket.writable && err.code !== 'ECONNRESET') socket.end(CLOSE_BODY(status, `${http.STATUS_CODES[status]}\n`));
    else socket.destroy();
  }

  private refuse(req: http.IncomingMessage, socket: Duplex, what: string): void {
    const conn = this.conns.get(socket);
    if (conn !== undefined && this.cfg.accessLog && this.log.isLevelEnabled('info')) {
      this.log.info(
        { src: conn.flow.src, method: req.method, host: hostOf(req.headers.host), path: req.url, status: 501, bytes: 0, durationMs: 0, outbound: conn.flow.outbound.name, rule: -1 },
        'request',
      );
    }
    socket.end(CLOSE_BODY(501, `${what} is not carried by sluice's HTTP mode\n`));
  }
}
