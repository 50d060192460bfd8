/**
 * The control API's HTTP server (node:http, with `ws` in noServer mode for
 * the WebSocket routes): listens on api.listen (TCP or a unix socket),
 * answers CORS preflights, checks the secret, dispatches to the route table
 * and turns thrown ApiErrors (and anything else) into `{"message": ...}`.
 *
 * Other parts of sluice add routes through `ApiRoutes` (route, ws, mount):
 * the Clash routes, /v1/, /metrics, the dashboard at /ui/.
 *
 * Bounds: at most MAX_WS_CLIENTS WebSocket clients (503 beyond); a client
 * whose unsent frames pass WS_DROP_BYTES misses frames (counted), and is
 * closed (counted) when it stays behind for WS_STALL_MS or its queue passes
 * WS_CLOSE_BYTES, so a stalled dashboard never makes sluice buffer without
 * limit; request bodies MAX_BODY_BYTES; idle
 * keep-alive connections are closed by node's own timeouts; at most
 * MAX_HTTP_CONNECTIONS sockets at once.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { chmodSync, unlinkSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { createRequire } from 'node:module';
import type { WebSocketServer, WebSocket } from 'ws';
import { Auth, answerPreflight, applyCors } from './auth.js';
import { ApiError, sendError } from './http-util.js';
import { bindServer, formatListen, type ListenAddress } from './listen.js';

export { listenHint } from './listen.js';
import { RouteTable, type ApiRequest, type RouteHandler, type RouteOptions, type WsHandler } from './router.js';
import { serveStatic } from './static-files.js';

const requireCjs = createRequire(import.meta.url);

export const MAX_WS_CLIENTS = 64;
/** Unsent bytes on one WebSocket above which its frames are skipped. */
export const WS_DROP_BYTES = 1 << 20;
/** Unsent bytes on one WebSocket above which it is closed (a dashboard that stopped reading). */
export const WS_CLOSE_BYTES = 4 << 20;
/** A client behind (frames skipped) for this long is closed. */
export const WS_STALL_MS = 10_000;
export const MAX_HTTP_CONNECTIONS = 256;
/** Largest message a client may send on a WebSocket (the streams only read, this is a bound). */
const WS_MAX_PAYLOAD = 64 * 1024;

/** What route modules register with (and what the observe/dashboard parts mount on). */
export interface ApiRoutes {
  /** A plain HTTP route; `pattern` takes `:name` segments and a trailing `/*`. */
  route(method: string, pattern: string, handler: RouteHandler, options?: RouteOptions): void;
  /** A WebSocket route (GET with Upgrade: websocket). */
  ws(pattern: string, handler: WsHandler, options?: RouteOptions): void;
  /** Static files from `dir` under `prefix` (e.g. '/ui'); `public` by default (a browser cannot send the Bearer header for page loads). */
  mount(prefix: string, dir: string, options?: RouteOptions): void;
}

export interface ApiServerCounters {
  requests: number;
  unauthorized: number;
  wsClients: number;
  wsRefused: number;
  wsFramesDropped: number;
  wsClosedSlow: number;
  errors: number;
}

export interface ApiServerOptions {
  listen: ListenAddress;
  secret: string;
  /** Unexpected handler failures (a 500 was sent). */
  onError?: (err: unknown, what: string) => void;
  /** WS_STALL_MS unless given (tests). */
  stallMs?: number;
  /** SO_MARK of a TCP listener (route.mark under route.auto); 0: none. */
  mark?: number;
}

/** A WebSocket or a streaming HTTP response: what sendFrame and admit bound (any object as the key). */
type StreamTarget = object;

export class ApiServer implements ApiRoutes {
  readonly counters: ApiServerCounters = { requests: 0, unauthorized: 0, wsClients: 0, wsRefused: 0, wsFramesDropped: 0, wsClosedSlow: 0, errors: 0 };
  private readonly http: http.Server;
  /** Made on the first WebSocket upgrade (wsServer()), not at start. */
  private wss: WebSocketServer | null = null;
  private readonly routes = new RouteTable<RouteHandler>();
  private readonly wsRoutes = new RouteTable<WsHandler>();
  private readonly auth: Auth;
  private readonly clients = new Set<WebSocket>();
  private readonly sockets = new Set<Socket>();
  /** Since when a stream client has been behind (frames skipped). */
  private readonly behind = new WeakMap<StreamTarget, number>();
  private readonly stallMs: number;
  /** Answered with 503 until set: the server listens before the engine exists (bind errors surface first). */
  private ready = false;
  private closed = false;

  constructor(private readonly opts: ApiServerOptions) {
    this.auth = new Auth(opts.secret);
    this.stallMs = opts.stallMs ?? WS_STALL_MS;
    this.http = http.createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => void this.onRequest(req, res));
    this.http.maxConnections = MAX_HTTP_CONNECTIONS;
    this.http.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    this.http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    this.http.on('clientError', (_err, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  /**
   * `ws` (CommonJS) is loaded, and its server made, on the first WebSocket
   * upgrade: a `sluice run` whose dashboard never connects does without its
   * ~1.5 MB of heap and code (issue 10).
   */
  private wsServer(): WebSocketServer {
    if (this.wss === null) {
      const { WebSocketServer: Server } = requireCjs('ws') as typeof import('ws');
      this.wss = new Server({ noServer: true, maxPayload: WS_MAX_PAYLOAD, perMessageDeflate: false });
    }
    return this.wss;
  }

  get address(): string {
    return formatListen(this.opts.listen);
  }

  route(method: string, pattern: string, handler: RouteHandler, options: RouteOptions = {}): void {
    this.routes.add(method, pattern, handler, options);
  }

  ws(pattern: string, handler: WsHandler, options: RouteOptions = {}): void {
    this.wsRoutes.add('GET', pattern, handler, options);
  }

  mount(prefix: string, dir: string, options: RouteOptions = { public: true }): void {
    const p = prefix.replace(/\/+$/, '');
    // `/ui` redirects to `/ui/` (keeping the query, e.g. `?token=`) so
    // relative asset paths resolve below the mount; the route table sends
    // `/ui/` to the `/*` route, not back here.
    this.routes.add('GET', p, (req, res) => {
      const q = req.query.toString();
      res.writeHead(301, { Location: `${p}/${q === '' ? '' : `?${q}`}` });
      res.end();
    }, options);
    this.routes.add('GET', `${p}/*`, (req, res) => serveStatic(dir, req.params['*'] ?? '', res, req.method === 'HEAD'), options);
  }

  /** Routes are registered; requests are served from now on. */
  open(): void {
    this.ready = true;
  }

  /**
   * Binds api.listen. A failure is an Error naming api.listen and what the
   * kernel said; nothing is left listening. A unix socket path is replaced
   * when a socket is already there (a killed run's), made mode 0600.
   */
  async listen(): Promise<void> {
    const a = this.opts.listen;
    await bindServer(this.http, a, 'api.listen', 'set api.listen to a free address, or null to turn the API off', this.opts.mark ?? 0);
    if (a.kind === 'unix') chmodSync(a.path, 0o600);
    this.http.on('error', (err) => this.opts.onError?.(err, 'api server'));
  }

  /** Stops listening, closes every WebSocket and HTTP connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.clients) c.terminate();
    this.clients.clear();
    this.wss?.close();
    const done = new Promise<void>((resolve) => this.http.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await done;
    if (this.opts.listen.kind === 'unix') {
      try {
        unlinkSync(this.opts.listen.path);
      } catch {
        // already gone, or no longer ours to remove (privileges dropped)
      }
    }
  }

  /**
   * Sends one text frame unless the client is behind: above WS_DROP_BYTES
   * of unsent data the frame is skipped; a client that stays behind for the
   * stall time, or whose queue passes WS_CLOSE_BYTES, is closed. Returns
   * whether it was sent.
   */
  sendFrame(ws: WebSocket, text: string): boolean {
    if (ws.readyState !== ws.OPEN) return false;
    if (!this.admit(ws, ws.bufferedAmount, () => ws.terminate())) return false;
    ws.send(text);
    return true;
  }

  /** The same bound for a streaming (NDJSON) response: `queued` is its writableLength. */
  admit(target: StreamTarget & { destroy?: () => void }, queued: number, close: () => void = () => target.destroy?.()): boolean {
    if (queued <= WS_DROP_BYTES) {
      this.behind.delete(target);
      return true;
    }
    this.counters.wsFramesDropped++;
    const now = Date.now();
    const since = this.behind.get(target);
    if (since === undefined) this.behind.set(target, now);
    if (queued > WS_CLOSE_BYTES || (since !== undefined && now - since >= this.stallMs)) {
      this.counters.wsClosedSlow++;
      close();
    }
    return false;
  }

  /** The bound address (tests listen on port 0). */
  boundAddress(): string | { address: string; port: number } | null {
    return this.http.address();
  }

  private parse(req: IncomingMessage): { path: string; query: URLSearchParams } | null {
    try {
      const u = new URL(req.url ?? '/', 'http://sluice');
      return { path: u.pathname, query: u.searchParams };
    } catch {
      return null;
    }
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.counters.requests++;
    applyCors(res);
    const method = req.method ?? 'GET';
    if (method === 'OPTIONS') return answerPreflight(res);
    const url = this.parse(req);
    if (url === null) return sendError(res, 400, 'Bad request path');
    if (!this.ready) return sendError(res, 503, 'sluice is starting');
    const m = this.routes.match(method, url.path);
    // A stream path asked for without an upgrade and without a plain route.
    if (m === null && this.wsRoutes.match('GET', url.path) !== null) {
      if (!this.auth.allows(req, url.query, false)) return this.unauthorized(res);
      return sendError(res, 400, 'this path needs a WebSocket upgrade');
    }
    if (m === null) {
      if (!this.auth.allows(req, url.query, false)) return this.unauthorized(res);
      return sendError(res, 404, 'Resource not found');
    }
    if (!('handler' in m)) {
      if (!this.auth.allows(req, url.query, false)) return this.unauthorized(res);
      res.setHeader('Allow', m.methods.join(', '));
      return sendError(res, 405, `Method ${method} not allowed here (allowed: ${m.methods.join(', ')})`);
    }
    if (m.options.public !== true && !this.auth.allows(req, url.query, false)) return this.unauthorized(res);
    const ar: ApiRequest = { method, path: url.path, params: m.params, query: url.query, raw: req };
    try {
      await m.handler(ar, res);
    } catch (err) {
      if (err instanceof ApiError) return sendError(res, err.status, err.message);
      this.counters.errors++;
      this.opts.onError?.(err, `${method} ${url.path}`);
      sendError(res, 500, `internal error: ${(err as Error)?.message ?? String(err)}`);
    }
  }

  private unauthorized(res: ServerResponse): void {
    this.counters.unauthorized++;
    sendError(res, 401, 'Unauthorized');
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.counters.requests++;
    socket.on('error', () => {});
    const refuse = (status: number, message: string): void => {
      const body = JSON.stringify({ message });
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n${body}`);
    };
    const url = this.parse(req);
    if (url === null) return refuse(400, 'Bad request path');
    if (!this.ready || this.closed) return refuse(503, 'sluice is starting');
    const m = this.wsRoutes.match('GET', url.path);
    if (m === null || !('handler' in m)) {
      if (!this.auth.allows(req, url.query, true)) {
        this.counters.unauthorized++;
        return refuse(401, 'Unauthorized');
      }
      return refuse(404, 'Resource not found');
    }
    if (m.options.public !== true && !this.auth.allows(req, url.query, true)) {
      this.counters.unauthorized++;
      return refuse(401, 'Unauthorized');
    }
    const ar: ApiRequest = { method: 'GET', path: url.path, params: m.params, query: url.query, raw: req };
    if (m.options.validate !== undefined) {
      try {
        m.options.validate(ar);
      } catch (err) {
        if (err instanceof ApiError) return refuse(err.status, err.message);
        return refuse(500, 'internal error');
      }
    }
    if (this.clients.size >= MAX_WS_CLIENTS) {
      this.counters.wsRefused++;
      return refuse(503, `too many WebSocket clients (at most ${MAX_WS_CLIENTS})`);
    }
    this.wsServer().handleUpgrade(req, socket, head, (ws) => {
      this.clients.add(ws);
      this.counters.wsClients = this.clients.size;
      ws.on('error', () => ws.terminate());
      ws.on('close', () => {
        this.clients.delete(ws);
        this.counters.wsClients = this.clients.size;
      });
      try {
        const r = m.handler(ws, ar);
        if (r instanceof Promise) r.catch((err: unknown) => this.wsFailed(ws, err, url.path));
      } catch (err) {
        this.wsFailed(ws, err, url.path);
      }
    });
  }

  private wsFailed(ws: WebSocket, err: unknown, path: string): void {
    // An ApiError (bad query) closes with 1008 (policy violation) and the message as reason (at most 123 bytes).
    if (err instanceof ApiError) {
      ws.close(1008, err.message.slice(0, 120));
      return;
    }
    this.counters.errors++;
    this.opts.onError?.(err, `WS ${path}`);
    ws.close(1011, 'internal error');
  }
}
