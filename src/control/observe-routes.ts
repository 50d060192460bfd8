/**
 * The observability routes of the control API (behind its auth):
 *   GET /metrics                 Prometheus text (src/control/metrics.ts)
 *   GET /v1/flows/:id/explain    why a live flow went where it went
 *                                ({explanation, notes, text}; 404 unknown id)
 *   GET /v1/capture              a pcap stream of the TUN (src/link/capture.ts):
 *                                ?filter=HOST|PORT &count=N &snaplen=BYTES;
 *                                ends after count packets or when the client
 *                                goes; trailers X-Sluice-Captured / -Dropped
 */
import type { ServerResponse } from 'node:http';
import type { SluiceConfig } from '../config/types.js';
import { PolicyExplainer, explainWithCheck, formatExplanation, outboundKindOf, policyInputOf, type NameOrigin } from '../engine/policy/explain.js';
import type { NameOrigin as RegistryNameOrigin } from '../engine/flow-registry.js';
import { CaptureError, parseCaptureFilter, streamCapture, type CaptureLink } from '../link/capture.js';
import { DEFAULT_SNAPLEN } from '../link/pcap-writer.js';
import type { ControlContext } from './context.js';
import { ApiError, badRequest, intParam, notFound, sendJson } from './http-util.js';
import type { ApiRoutes } from './server.js';
import type { SluiceMetrics } from './metrics.js';

/** What the observe routes need beyond the ControlContext. */
export interface ObserveParts {
  metrics: SluiceMetrics | null;
  capture: CaptureLink | null;
}

const ORIGIN: Readonly<Record<RegistryNameOrigin, NameOrigin>> = { 'fake-ip': 'fake-ip', dns: 'dns-snoop', sniff: 'sniffed' };

/** The explainer of the running configuration, rebuilt when a reload replaces it. */
class ExplainerCache {
  private config: SluiceConfig | null = null;
  private explainer: PolicyExplainer | null = null;

  get(config: SluiceConfig): PolicyExplainer {
    if (this.config !== config || this.explainer === null) {
      this.explainer = new PolicyExplainer(policyInputOf(config));
      this.config = config;
    }
    return this.explainer;
  }
}

export function registerObserveRoutes(api: ApiRoutes, ctx: ControlContext, parts: ObserveParts): void {
  const metrics = parts.metrics;
  if (metrics !== null) {
    api.route('GET', '/metrics', async (_req, res) => {
      const text = await metrics.text();
      res.writeHead(200, { 'Content-Type': metrics.contentType, 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
    });
  }

  const cache = new ExplainerCache();
  api.route('GET', '/v1/flows/:id/explain', (req, res) => {
    const id = req.params.id!;
    const m = ctx.engine.flowMatch(id);
    if (m === null) throw notFound(`no open flow with id ${id}`);
    if (m.ctx === null) {
      const why = m.mode !== null ? `mode ${m.mode} chose the outbound (${m.outbound}); the rules were not consulted` : 'the flow has not been routed yet (it is still being sniffed, or it is DNS answered by the hijack)';
      throw new ApiError(409, why);
    }
    const config = ctx.config();
    // chains is mihomo's order (member first); the explanation reads group -> member.
    const { explanation, notes } = explainWithCheck(cache.get(config), null, m.ctx, m.nameFrom === null ? 'none' : ORIGIN[m.nameFrom], (o) => (m.chains === null ? [o] : [...m.chains].reverse()));
    // The engine's own decision is the truth for the flow; a reload since may make today's rules answer otherwise.
    if (explanation.ruleIndex !== m.rule) notes.push(`the flow was routed by ${m.rule < 0 ? 'final' : `rule ${m.rule}`} -> ${m.outbound}; the rules were reloaded since and now decide as shown`);
    // Sniffing after a route chosen before the first bytes fills the flow's name/protocol (as /connections shows them): said apart from the routing inputs.
    const sniffedAfter = {
      domain: explanation.input.domain === null && m.domain !== null && m.domain !== '' ? m.domain : null,
      protocol: explanation.input.protocol === null ? m.protocol : null,
    };
    const text = formatExplanation(explanation, { notes, outboundKind: outboundKindOf(config), sniffedAfter });
    sendJson(res, 200, { id, explanation, notes, sniffedAfter, text });
  });

  const link = parts.capture;
  api.route('GET', '/v1/capture', (req, res) => {
    if (link === null) throw new ApiError(501, 'this sluice has no capture link');
    const filter = parseCaptureFilter(req.query.get('filter'));
    if (typeof filter === 'string') throw badRequest(`filter: ${filter}`);
    const count = intParam(req.query, 'count', 0, 100_000_000, 0);
    const snaplen = intParam(req.query, 'snaplen', 64, DEFAULT_SNAPLEN, DEFAULT_SNAPLEN);
    let cap;
    try {
      cap = link.capture({ filter, count, snaplen });
    } catch (err) {
      if (err instanceof CaptureError) throw new ApiError(503, err.message);
      throw err;
    }
    ctx.log.info({ filter: req.query.get('filter') ?? null, count }, 'capture started');
    res.writeHead(200, { 'Content-Type': 'application/vnd.tcpdump.pcap', 'Cache-Control': 'no-store', Trailer: 'X-Sluice-Captured, X-Sluice-Dropped' });
    res.flushHeaders();
    const stop = (): void => cap.stop();
    res.once('close', stop);
    void streamCapture(cap, res).then(() => finish(res, cap.stats(), ctx));
  });
}

function finish(res: ServerResponse, s: { captured: number; dropped: number }, ctx: ControlContext): void {
  ctx.log.info({ packets: s.captured - s.dropped, dropped: s.dropped }, 'capture ended');
  if (res.destroyed || res.writableEnded) return;
  res.addTrailers({ 'X-Sluice-Captured': String(s.captured - s.dropped), 'X-Sluice-Dropped': String(s.dropped) });
  res.end();
}
