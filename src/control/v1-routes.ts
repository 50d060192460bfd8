/**
 * sluice's own routes under /v1/: everything the Clash shapes cannot say.
 *   GET    /v1/stats        live counters: engine, stack (every drop reason,
 *                           retransmits, zero windows, pending SYNs), TUN rx/tx,
 *                           classifier per-action counters, traffic per outbound,
 *                           the API's own counters
 *   GET    /v1/flows        open flows in sluice's shape; /v1/flows/:id one of them
 *   DELETE /v1/flows/:id    ends one (404 for an unknown id)
 *   POST   /v1/reload       the SIGHUP reload; 200 {ok, changes} or 400 {ok, errors}
 *   GET/PUT /v1/mode        the routing mode (as PATCH /configs mode)
 */
import { ringPool } from '../tcp/ring-pool.js';
import type { RoutingMode } from '../engine/flow-registry.js';
import type { ControlContext } from './context.js';
import { badRequest, notFound, readJsonObject, sendJson, sendNoContent } from './http-util.js';
import type { ApiServer } from './server.js';
import { sluiceFlow } from './flows-json.js';

export function registerV1Routes(api: ApiServer, ctx: ControlContext): void {
  const { engine } = ctx;
  api.route('GET', '/v1/stats', (_req, res) => {
    const t = engine.flows.totals();
    sendJson(res, 200, {
      version: ctx.version,
      uptimeMs: Date.now() - ctx.startedAt,
      config: ctx.configName,
      mode: engine.mode,
      flows: { open: engine.openFlows, closed: t.closedFlows, uploadTotal: t.up, downloadTotal: t.down, byOutbound: engine.flows.byOutbound() },
      // tun.queues > 1: summed over the worker threads (src/workers/pool.ts), whose flows are in engine.flows already.
      engine: ctx.workers?.engineCounters({ ...engine.counters, synFlood: { ...engine.counters.synFlood } }) ?? { ...engine.counters, synFlood: { ...engine.counters.synFlood } },
      // Retransmit, timeout and zero-window counts are of closed connections (the stack adds them up when a connection ends).
      stack: ctx.workers?.stackStats(engine.stack.stats) ?? engine.stack.stats,
      // The whole process (every worker thread's heap and stack too).
      rssBytes: process.memoryUsage.rss(),
      // limits.tcpBufferMiB: the ring stores of every queue (src/tcp/buffer-budget.ts).
      tcpBuffers: ringPool.budget.stats(),
      workers: ctx.workers?.summary() ?? null,
      tun: ctx.tunStats(),
      classifier: ctx.classifierCounters() ?? null,
      classifierStatus: ctx.classifierStatus?.() ?? null,
      api: { ...ctx.server.counters, logSubscribers: ctx.logs.size },
    });
  });
  api.route('GET', '/v1/flows', (_req, res) => {
    const rules = ctx.config().rules;
    const now = Date.now();
    const flows: Record<string, unknown>[] = [];
    for (const f of engine.flows.values()) flows.push(sluiceFlow(f, rules, now));
    sendJson(res, 200, { flows });
  });
  api.route('GET', '/v1/flows/:id', (req, res) => {
    const f = engine.flows.get(req.params.id!);
    if (f === undefined) throw notFound(`no open flow with id ${req.params.id!}`);
    sendJson(res, 200, sluiceFlow(f, ctx.config().rules, Date.now()));
  });
  api.route('DELETE', '/v1/flows/:id', (req, res) => {
    if (!engine.flows.close(req.params.id!)) throw notFound(`no open flow with id ${req.params.id!}`);
    sendNoContent(res);
  });
  api.route('DELETE', '/v1/flows', (_req, res) => sendJson(res, 200, { closed: engine.flows.closeAll() }));
  api.route('POST', '/v1/reload', async (_req, res) => {
    const r = await ctx.reload();
    if (r.ok) sendJson(res, 200, r);
    else sendJson(res, 400, { message: `reload failed: ${r.errors.join('; ')}`, ...r });
  });
  api.route('GET', '/v1/mode', (_req, res) => sendJson(res, 200, { mode: engine.mode, global: engine.globalOutbound }));
  api.route('PUT', '/v1/mode', async (req, res) => {
    const body = await readJsonObject(req.raw);
    const mode = body.mode;
    if (mode !== 'rule' && mode !== 'global' && mode !== 'direct') throw badRequest(`mode: expected "rule", "global" or "direct", got ${JSON.stringify(mode)}`);
    try {
      engine.setMode(mode as RoutingMode);
    } catch (err) {
      throw badRequest((err as Error).message);
    }
    sendNoContent(res);
  });
}
