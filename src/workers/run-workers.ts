/**
 * `sluice run` with tun.queues > 1: what run.ts starts after its own engine
 * (which in this mode owns the policy, the fake-IP pool, the TPROXY
 * listeners and the control plane, and no TUN packets): the worker pool,
 * the routing-mode and reload hooks, and the control routes
 *   GET  /v1/workers              each queue's worker: state, restarts, flows, last failure
 *   POST /v1/workers/:queue/kill  ends a worker as a crash would (it is restarted; tests use it)
 *
 * Which queue a flow takes is set by sluice's TUNSETSTEERINGEBPF program
 * (bpf/steering.c, attached by steering.ts when the TUN opens): the client's
 * source address and TCP/UDP source port, not the kernel's own choice
 * (tun_automq_select_queue, a hash over the whole 4-tuple). The reason is
 * the UDP NAT: every worker has its own table, and one client socket talking
 * to two servers must reach one worker to keep one upstream port
 * (endpoint-independent mapping, RFC 4787 REQ-1); different sockets still
 * spread over the queues. When the program cannot be loaded (no eBPF, old
 * kernel) the kernel's flow hash stays and steering.ts warns once: the
 * mapping then holds only per queue. Replies go out on the worker's own
 * queue either way (queue-link.ts).
 */
import type { SluiceConfig } from '../config/types.js';
import type { Engine } from '../engine/engine.js';
import type { Logger, LogTap } from '../engine/logger.js';
import type { FlowRecord, FlowRegistry } from '../engine/flow-registry.js';
import type { StackStats } from '../stack.js';
import type { CaptureLink } from '../link/capture.js';
import { CONTROL_PLUGINS, sendJson, type ApiRoutes } from '../control/index.js';
import { notFound } from '../control/http-util.js';
import { WorkerPool, type WorkerDevice, type WorkerStatus } from './pool.js';
import type { QueueChoice } from './queues.js';

/** What the control API reads of the workers (ControlContext.workers). */
export interface WorkerView {
  engineCounters(base: Record<string, unknown>): Record<string, unknown>;
  stackStats(base: StackStats): StackStats;
  summary(): { queues: number; failures: number; fakeIpAsks: number; fakeIpTimeouts: number; workers: WorkerStatus[] };
}

export interface RunningWorkers {
  readonly pool: WorkerPool;
  readonly view: WorkerView;
  stackStats(): StackStats;
  /** Every worker reports now (before the stopping and SIGUSR2 counters lines). */
  refresh(): Promise<void>;
  /** The main engine's counters plus every worker's: what the stopping and counters lines show. */
  counters(): { engine: Record<string, unknown>; stack: StackStats; icmp: ReturnType<Engine['icmpCounters']> };
  /** The DNS query tally over the main engine's hijack and the workers'. */
  dnsTally(): Float64Array | null;
  /** After the main engine took a reloaded configuration: the workers take it too (errors logged). */
  reload(next: SluiceConfig): Promise<void>;
  /** Ends the workers' flows (each logged by its worker) and stops them, within `budgetMs` (the stop's remaining budget less its teardown reserve). */
  stop(budgetMs: number): Promise<void>;
}

export interface StartWorkersOptions {
  engine: Engine;
  device: WorkerDevice;
  config: SluiceConfig;
  log: Logger;
  tap: LogTap;
  selectionsPath: string;
  queues: QueueChoice;
  /** The main thread's capture link (its captures run in every worker). */
  captureLink: CaptureLink;
  /** What picks each packet's queue (steering.ts), for the start-up line. */
  steering: string;
  /** The dials table the main engine was made with (shared-dials.ts). */
  dialTable: SharedArrayBuffer;
}

/**
 * Of the workers' stop budget, what their engines' stop keeps after the
 * flows' end (the stack, the outbounds, the DNS upstreams; tens of
 * milliseconds when the flows are gone); the flows get the rest.
 */
const WORKER_STOP_MS = 500;
/** The workers' stop when one of them failed to start (no stop budget runs then). */
const FAILED_START_STOP_MS = 1500;

/** The configuration a worker runs: the main thread saves the fake-IP pool. */
function workerConfig(c: SluiceConfig): SluiceConfig {
  const w = structuredClone(c);
  w.dns.fakeIp.persistPath = null;
  return w;
}

export async function startWorkers(o: StartWorkersOptions): Promise<RunningWorkers> {
  const { engine, log } = o;
  const pool = new WorkerPool({
    device: o.device,
    config: workerConfig(engine.activeConfig),
    currentConfig: () => workerConfig(engine.activeConfig),
    observer: () => ({ engine: engine.observer, dnsUpstream: engine.dnsServer?.onUpstream ?? null }),
    captureLink: o.captureLink,
    dialTable: o.dialTable,
    log,
    tap: o.tap,
    fakeIp: engine.fakeIpPool,
    snoop: engine.dnsSnoop,
    flows: engine.flows as unknown as FlowRegistry<FlowRecord>,
    selectionsPath: o.selectionsPath,
  });
  // PATCH /configs and PUT /v1/mode set the main engine's mode; every worker follows.
  const setMode = engine.setMode.bind(engine);
  engine.setMode = (mode) => {
    setMode(mode);
    pool.setMode(mode);
  };
  // New entries of a rule set on the main engine (a url set's download or refresh, PUT /providers/rules/:name):
  // every worker takes the same entries. Only the main thread downloads (the workers' engines do not).
  const replaceRuleSet = engine.replaceRuleSet.bind(engine);
  engine.replaceRuleSet = (name, entries, type) => {
    replaceRuleSet(name, entries, type);
    const rs = engine.activeConfig.ruleSets[name];
    if (rs !== undefined) pool.ruleSet(name, rs.entries, rs.type);
  };
  // GET /rules and the metrics read the main engine's rule hits: the workers' are added.
  const ruleHitCounts = engine.ruleHitCounts.bind(engine);
  engine.ruleHitCounts = () => pool.ruleHits(ruleHitCounts());
  const selectGlobal = engine.selectGlobal.bind(engine);
  engine.selectGlobal = (name) => {
    selectGlobal(name);
    pool.selectGlobal(name);
  };
  // The group registry is rebuilt by every reload: hooked again after each (reload below).
  const followSelect = (): void => {
    const reg = engine.groups;
    if ((reg as { followedByWorkers?: boolean }).followedByWorkers === true) return;
    const select = reg.select.bind(reg);
    reg.select = (group, member) => {
      select(group, member);
      pool.select(group, member);
    };
    (reg as { followedByWorkers?: boolean }).followedByWorkers = true;
  };
  followSelect();
  try {
    await pool.start();
  } catch (err) {
    await pool.stop(FAILED_START_STOP_MS);
    throw err;
  }
  log.info({ queues: pool.size, from: o.queues.from, steering: o.steering }, 'worker threads serving the TUN queues');
  const view: WorkerView = {
    engineCounters: (base) => pool.engineCounters(base),
    stackStats: (base) => pool.stackStats(base as unknown as Record<string, unknown>) as unknown as StackStats,
    summary: () => {
      const ch = pool.fakeIpChannelStats();
      return { queues: pool.size, failures: pool.failures, fakeIpAsks: ch.asks, fakeIpTimeouts: ch.timeouts, workers: pool.status() };
    },
  };
  CONTROL_PLUGINS.push((api) => registerWorkerRoutes(api, pool, view));
  return {
    pool,
    view,
    stackStats: () => view.stackStats(engine.stack.stats),
    refresh: () => pool.refresh(),
    counters: () => ({ engine: pool.engineCounters(engine.counters as unknown as Record<string, unknown>), stack: view.stackStats(engine.stack.stats), icmp: pool.icmpCounters(engine.icmpCounters()) }),
    dnsTally: () => pool.dnsTally(engine.dnsServer?.queryTally ?? null),
    // The main engine took `next` already: the workers take what it runs (with the url rule sets' entries it has).
    reload: async () => {
      followSelect();
      const errors = await pool.reload(workerConfig(engine.activeConfig));
      if (errors.length > 0) log.error({ errors }, 'reload: some workers kept the previous configuration');
    },
    // A stop that began late (a slow start-up, a stuck step) gives the workers' flows less time, never the teardown after them.
    stop: async (budgetMs) => {
      const until = performance.now() + Math.max(0, budgetMs);
      await pool.endFlows(budgetMs - WORKER_STOP_MS);
      await pool.stop(until - performance.now());
    },
  };
}

function registerWorkerRoutes(api: ApiRoutes, pool: WorkerPool, view: WorkerView): void {
  api.route('GET', '/v1/workers', (_req, res) => sendJson(res, 200, view.summary()));
  api.route('POST', '/v1/workers/:queue/kill', (req, res) => {
    const q = Number(req.params.queue);
    if (!Number.isInteger(q) || !pool.kill(q)) throw notFound(`no running worker for queue ${req.params.queue!}`);
    sendJson(res, 202, { killed: q });
  });
}
