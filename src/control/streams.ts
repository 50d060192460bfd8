/**
 * The streaming routes: /traffic, /memory, /logs and /connections, each as
 * a WebSocket (one JSON text frame per message) or, for a plain GET of
 * /traffic, /memory and /logs, newline-delimited JSON over a chunked
 * response (what yacd falls back to). A plain GET of /connections is one
 * snapshot (clash-routes.ts).
 *
 * One shared one-second ticker runs while anyone listens to /traffic or
 * /memory: it reads the flow table's totals once per second, whatever the
 * number of clients. /connections streams per client at its ?interval=
 * (default 1000 ms). Every sink is bounded (server.ts sendFrame; the same
 * limits for HTTP sinks): a slow client misses frames, then is closed.
 */
import type { ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import type { ControlContext } from './context.js';
import { badRequest, intParam } from './http-util.js';
import { parseClashLevel } from './log-hub.js';
import type { ApiRequest } from './router.js';
import type { ApiServer } from './server.js';
import { clashConnection } from './flows-json.js';

interface Sink {
  send(text: string): void;
  onClose(fn: () => void): void;
}

function wsSink(server: ApiServer, ws: WebSocket): Sink {
  return {
    send: (text) => void server.sendFrame(ws, text),
    onClose: (fn) => void ws.once('close', fn),
  };
}

function httpSink(server: ApiServer, res: ServerResponse): Sink {
  res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no' });
  res.flushHeaders();
  return {
    send: (text) => {
      if (res.destroyed || !server.admit(res, res.writableLength)) return;
      res.write(text + '\n');
    },
    onClose: (fn) => void res.once('close', fn),
  };
}

/** The once-a-second frames of /traffic and /memory, computed once per tick for every subscriber. */
class SecondTicker {
  private readonly traffic = new Set<Sink>();
  private readonly memory = new Set<Sink>();
  private timer: NodeJS.Timeout | null = null;
  private lastUp = 0;
  private lastDown = 0;

  constructor(private readonly ctx: ControlContext) {}

  add(kind: 'traffic' | 'memory', sink: Sink): void {
    const set = kind === 'traffic' ? this.traffic : this.memory;
    set.add(sink);
    // mihomo's first /memory message is 0 "so the chart starts from zero".
    if (kind === 'memory') sink.send(JSON.stringify({ inuse: 0, oslimit: 0 }));
    sink.onClose(() => {
      set.delete(sink);
      if (this.traffic.size + this.memory.size === 0) this.stop();
    });
    if (this.timer === null) {
      const t = this.ctx.engine.flows.totals();
      this.lastUp = t.up;
      this.lastDown = t.down;
      this.timer = setInterval(() => this.tick(), 1000);
      this.timer.unref();
    }
  }

  private tick(): void {
    if (this.traffic.size > 0) {
      const t = this.ctx.engine.flows.totals();
      const frame = JSON.stringify({ up: t.up - this.lastUp, down: t.down - this.lastDown, upTotal: t.up, downTotal: t.down });
      this.lastUp = t.up;
      this.lastDown = t.down;
      for (const s of this.traffic) s.send(frame);
    }
    if (this.memory.size > 0) {
      const frame = JSON.stringify({ inuse: process.memoryUsage.rss(), oslimit: 0 });
      for (const s of this.memory) s.send(frame);
    }
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}

/** The /connections snapshot (mihomo tunnel/statistic Snapshot). */
export function connectionsSnapshot(ctx: ControlContext): Record<string, unknown> {
  const rules = ctx.config().rules;
  const t = ctx.engine.flows.totals();
  const connections: Record<string, unknown>[] = [];
  for (const f of ctx.engine.flows.values()) connections.push(clashConnection(f, rules));
  return { downloadTotal: t.down, uploadTotal: t.up, connections, memory: process.memoryUsage.rss() };
}

const levelOf = (req: ApiRequest): ReturnType<typeof parseClashLevel> & string => {
  const level = parseClashLevel(req.query.get('level'));
  if (level === null) throw badRequest(`unknown log level ${JSON.stringify(req.query.get('level'))}: use debug, info, warning, error or silent`);
  return level;
};

const intervalOf = (req: ApiRequest): number => intParam(req.query, 'interval', 100, 60_000, 1000);

export function registerStreamRoutes(api: ApiServer, ctx: ControlContext): void {
  const ticker = new SecondTicker(ctx);
  const server = ctx.server;
  for (const kind of ['traffic', 'memory'] as const) {
    api.ws(`/${kind}`, (ws) => ticker.add(kind, wsSink(server, ws)));
    api.route('GET', `/${kind}`, (_req, res) => ticker.add(kind, httpSink(server, res)));
  }
  const logs = (sink: Sink, req: ApiRequest): void => {
    const off = ctx.logs.subscribe(levelOf(req), (frame) => sink.send(frame));
    sink.onClose(off);
  };
  api.ws('/logs', (ws, req) => logs(wsSink(server, ws), req), { validate: levelOf });
  api.route('GET', '/logs', (req, res) => {
    levelOf(req); // 400 before the stream starts
    logs(httpSink(server, res), req);
  });
  api.ws(
    '/connections',
    (ws, req) => {
      const sink = wsSink(server, ws);
      const send = (): void => sink.send(JSON.stringify(connectionsSnapshot(ctx)));
      send();
      const timer = setInterval(send, intervalOf(req));
      timer.unref();
      sink.onClose(() => clearInterval(timer));
    },
    { validate: intervalOf },
  );
}
