/**
 * Wiring of the observability parts into `sluice run`: the metrics (made
 * only when something serves them: the API or metrics.listen), their
 * engine and DNS hooks, the metrics listener, and the API routes for
 * /metrics, explain and capture (CONTROL_PLUGINS).
 */
import type { MetricsConfig } from '../config/types.js';
import type { Engine } from '../engine/engine.js';
import type { StackStats } from '../stack.js';
import type { CaptureLink } from '../link/capture.js';
import type { RunningClassifier } from '../system/classifier-run.js';
import { CONTROL_PLUGINS } from './index.js';
import { parseListen } from './listen.js';
import { MetricsServer } from './metrics-server.js';
import type { SluiceMetrics, TunCounters } from './metrics.js';
import { registerObserveRoutes } from './observe-routes.js';

/** Binds metrics.listen (before the TUN opens, as api.listen); null when not set. Errors name metrics.listen. */
export async function openMetricsListener(cfg: MetricsConfig, mark = 0): Promise<MetricsServer | null> {
  if (cfg.listen === null) return null;
  const a = parseListen(cfg.listen);
  if (a === null) throw new Error(`metrics.listen: ${cfg.listen} is not host:port, [v6]:port or an absolute unix socket path`);
  const s = new MetricsServer(a, mark);
  await s.start();
  return s;
}

export interface ObserveWiring {
  engine: Engine;
  link: CaptureLink;
  tun: () => TunCounters | null;
  classifier: () => RunningClassifier | null;
  /** Whether the API runs (it serves /metrics, explain and capture). */
  api: boolean;
  metricsServer: MetricsServer | null;
  /** The stack counters to serve (tun.queues > 1: summed over the workers); default the engine's stack. */
  stack?: () => StackStats;
  /** The DNS query tally to serve (tun.queues > 1: summed over the workers); default the engine's hijack's. */
  dnsTally?: () => Float64Array | null;
}

/**
 * Makes the metrics when anything serves them, hooks them into the engine,
 * and queues the API routes. prom-client and the metrics module load only
 * then: with neither the API nor metrics.listen they would hold ~1.5 MB of
 * resident memory for nothing.
 */
export async function startObserve(w: ObserveWiring): Promise<SluiceMetrics | null> {
  const { engine } = w;
  let metrics: SluiceMetrics | null = null;
  if (w.api || w.metricsServer !== null) {
    const dns = engine.dnsServer;
    const pool = engine.fakeIpPool;
    const mode = engine.activeConfig.dns.hijack ? engine.activeConfig.dns.mode : 'off';
    const { SluiceMetrics } = await import('./metrics.js');
    metrics = new SluiceMetrics({
      stack: w.stack ?? (() => engine.stack.stats),
      tun: w.tun,
      dnsMode: mode,
      dnsTally: w.dnsTally ?? (() => dns?.queryTally ?? null),
      fakeIp: () => pool?.stats() ?? null,
      classifier: () => (w.classifier()?.counters() as never) ?? null,
      classifierSni: () => w.classifier()?.sniCounters() ?? null,
      classifierAssign: () => w.classifier()?.assignCounters() ?? null,
      openFlows: function* () {
        for (const f of engine.flows.values()) yield { network: f.network, outbound: f.outbound, bytesUp: f.bytes?.bytesUp ?? 0, bytesDown: f.bytes?.bytesDown ?? 0 };
      },
      ruleHits: () => engine.ruleHitCounts(),
    });
    engine.observer = metrics;
    if (dns !== null) dns.onUpstream = metrics.dnsUpstream;
    w.metricsServer?.serve(metrics);
  }
  if (w.api) {
    const parts = { metrics, capture: w.link };
    CONTROL_PLUGINS.push((api, ctx) => registerObserveRoutes(api, ctx, parts));
  }
  return metrics;
}
