/**
 * The main thread's side of the multi-queue mode (tun.queues > 1): one
 * worker thread per TUN queue (worker-main.ts), each with its own stack and
 * relays, started, watched, restarted and stopped from here.
 *
 * One view over all workers:
 * - flows: each worker's open flows appear in the main engine's
 *   FlowRegistry as mirror records (refreshed every report, ~250 ms), so
 *   /connections, /v1/flows, their totals, DELETE and the metrics see every
 *   queue; a mirror's `end` asks its worker to end the flow;
 * - counters: sums over the workers' last reports plus what workers that
 *   were replaced had counted (engineCounters, stackStats, tunStats);
 * - logs: workers write their lines to stdout themselves and, while the
 *   /logs stream has a listener (the LogTap; log-tap.ts), send them here.
 *
 * A worker that fails (an error escaping its engine, a failed start, an exit
 * of any kind while sluice is not stopping) is reported with the number of
 * flows it carried and restarted on the same queue fd after a backoff
 * (RESTART_MIN_MS doubling to RESTART_MAX_MS, reset after a healthy
 * minute). Only its own flows end: the other workers, their queues and
 * sockets are untouched, and the kernel keeps queueing the failed queue's
 * packets for the new worker.
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { ringPool } from '../tcp/ring-pool.js';
import type { RuleSetType, SluiceConfig } from '../config/types.js';
import type { FakeIpPool } from '../dns/fake-ip.js';
import type { DnsSnoop } from '../dns/snoop.js';
import type { FlowRecord, FlowRegistry } from '../engine/flow-registry.js';
import type { Logger, LogTap } from '../engine/logger.js';
import type { EngineObserver } from '../engine/observer.js';
import type { Capture, CaptureLink } from '../link/capture.js';
import { FakeIpChannelServer, newFakeIpChannel, newTableSizes } from './fake-ip-channel.js';
import { MirrorFlow } from './mirror-flow.js';
import { applyWorkerGcFlags } from '../young-generation.js';
import { newLogTapFlag, publishLogTap } from './log-tap.js';
import { NO_EVENTS, replayObserved } from './observed-events.js';
import type { CaptureSpec, FlowSnap, MainToWorker, WorkerReport, WorkerStart, WorkerToMain } from './protocol.js';

/** The module each worker thread runs (worker-entry.ts: the young-generation flag, then worker-main.ts). */
export const WORKER_SCRIPT = new URL('./worker-entry.js', import.meta.url);

const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 5000;
const HEALTHY_MS = 60_000;
/** Start-up of every worker (its engine's start: rule-set downloads are bounded there). */
const READY_TIMEOUT_MS = 60_000;
/** How long a worker's answer (its last report, then the message) may take beyond the budget it was given. */
const REPLY_MARGIN_MS = 200;
/** The least a worker's engine stop gets before the worker is terminated, however late the stop began. */
const MIN_STOP_MS = 100;
const RELOAD_TIMEOUT_MS = 10_000;
/** A fresh report asked for (the stopping and counters lines): a worker that does not answer in time is summed with its last one. */
const REPORT_TIMEOUT_MS = 1000;
/** How often the channels republish the main thread's table sizes (fake-ip-channel.ts publishSizes). */
const SIZES_REFRESH_MS = 100;

/** Counters that are levels, not totals: a replaced worker's last values are not kept. */
const GAUGES = new Set(['tcpFlowsActive', 'pendingFlows', 'halfOpenFlows', 'udpSessionsActive', 'halfOpen', 'pendingSyns', 'dialsActive', 'active']);

export interface WorkerDevice {
  readonly name: string;
  readonly mtu: number;
  readonly vnetHdr: boolean;
  readonly offloads: number;
  readonly fds: readonly number[];
}

export interface WorkerPoolOptions {
  device: WorkerDevice;
  /** The configuration every worker runs (persistPath off: the main thread persists the pool). */
  config: SluiceConfig;
  /** The configuration a (re)started worker takes: the main engine's as it runs now (url rule sets' entries as last downloaded); default `config`. */
  currentConfig?: () => SluiceConfig;
  /** The main thread's metrics (Engine.observer, DnsHijack.onUpstream): the workers' events are replayed into them; null when nothing serves metrics. */
  observer?: () => { engine: EngineObserver | null; dnsUpstream: ((seconds: number, ok: boolean) => void) | null };
  /** The dials in progress of every engine (shared-dials.ts; the main engine uses it too). */
  dialTable: SharedArrayBuffer;
  /** The main thread's capture link: its captures run in every worker, their records merged into the main thread's capture. */
  captureLink?: CaptureLink;
  log: Logger;
  tap: LogTap;
  /** The main thread's pool, the only one (null in real-ip mode). */
  fakeIp: FakeIpPool | null;
  /** The main thread's DNS snoop table, the only one (null when the configuration has none). */
  snoop: DnsSnoop | null;
  /** The main engine's registry: the mirrors go here. */
  flows: FlowRegistry<FlowRecord>;
  selectionsPath: string | null;
}

/** What GET /v1/workers shows of one worker. */
export interface WorkerStatus {
  queue: number;
  state: 'starting' | 'running' | 'restarting' | 'stopped';
  threadId: number | null;
  restarts: number;
  /** Open flows, and the TCP ones among them. */
  flows: number;
  tcpFlows: number;
  lastExit: { at: number; code: number | null; error: string | null; flowsLost: number } | null;
}

class WorkerSlot {
  worker: Worker | null = null;
  state: WorkerStatus['state'] = 'starting';
  restarts = 0;
  backoff = RESTART_MIN_MS;
  startedAt = 0;
  report: WorkerReport | null = null;
  readonly mirrors = new Map<string, MirrorFlow>();
  /** Flows ended through the API: out of the view at once, their worker's later reports of them ignored. */
  readonly gone = new Set<string>();
  lastExit: WorkerStatus['lastExit'] = null;
  killReason: string | null = null;
  restartTimer: NodeJS.Timeout | null = null;
  readonly waiters = new Map<string, (m: WorkerToMain) => void>();

  constructor(
    readonly queue: number,
    readonly fd: number,
  ) {}
}

export class WorkerPool {
  private readonly slots: WorkerSlot[];
  private config: SluiceConfig;
  private stopping = false;
  private reloadSeq = 0;
  /** Totals counted by workers since replaced (restarts), so sums never go down. */
  /** Rule hits of replaced workers (reset when the rule count changes). */
  private retiredHits: { hits: number; lastAt: number }[] = [];
  private readonly retired = { counters: {} as Record<string, unknown>, stack: {} as Record<string, unknown>, tun: {} as Record<string, unknown>, icmp: {} as Record<string, unknown>, dnsTally: null as number[] | null };
  fakeIpAsks = 0;
  fakeIpTimeouts = 0;
  /** Worker failures since start (each one restarted). */
  failures = 0;
  private readonly servers = new Set<FakeIpChannelServer>();
  /** The main thread's table sizes, one buffer read by every worker. */
  private readonly sizes = newTableSizes();
  /** Whether the main thread's /logs stream listens, read by every worker (log-tap.ts). */
  private readonly logTap = newLogTapFlag();
  private sizesTimer: NodeJS.Timeout | null = null;
  /** The main thread's captures the workers run, by the id they know them by. */
  private readonly captures = new Map<number, { cap: Capture; spec: CaptureSpec }>();
  private captureSeq = 0;

  constructor(private readonly o: WorkerPoolOptions) {
    this.config = o.config;
    this.slots = o.device.fds.map((fd, q) => new WorkerSlot(q, fd));
    publishLogTap(o.tap, this.logTap);
    if (o.captureLink !== undefined) {
      o.captureLink.onCapturesChanged(() => this.followCaptures());
      // Captures already running (SLUICE_CAPTURE_FILE starts with the TUN): the workers run them from their start.
      this.followCaptures();
    }
  }

  /** A capture started or ended on the main thread's link: every worker starts or stops its copy. */
  private followCaptures(): void {
    const active = this.o.captureLink!.activeCaptures;
    for (const [id, c] of this.captures) {
      if (active.includes(c.cap)) continue;
      this.captures.delete(id);
      for (const s of this.slots) this.post(s, { t: 'captureStop', id });
    }
    for (const cap of active) {
      let known = false;
      for (const c of this.captures.values()) if (c.cap === cap) known = true;
      if (known) continue;
      const spec: CaptureSpec = { id: ++this.captureSeq, filter: cap.filter, snaplen: cap.snaplen, resolution: cap.resolution };
      this.captures.set(spec.id, { cap, spec });
      for (const s of this.slots) this.post(s, { t: 'captureStart', ...spec });
    }
  }

  get size(): number {
    return this.slots.length;
  }

  /** Starts every worker; resolves when all are serving, rejects when one fails to start. */
  async start(): Promise<void> {
    this.sizesTimer = setInterval(() => {
      for (const s of this.servers) s.publishSizes();
    }, SIZES_REFRESH_MS);
    this.sizesTimer.unref();
    await Promise.all(this.slots.map((s) => this.spawn(s, true)));
  }

  private spawn(slot: WorkerSlot, first: boolean): Promise<void> {
    const d = this.o.device;
    const sab = newFakeIpChannel();
    const wake = new MessageChannel();
    if (this.o.fakeIp !== null || this.o.snoop !== null) {
      const server = new FakeIpChannelServer(sab, this.sizes, this.o.fakeIp, this.o.snoop);
      wake.port1.on('message', () => server.serve());
      this.servers.add(server);
      wake.port1.once('close', () => this.servers.delete(server));
    }
    const data: WorkerStart = {
      queue: slot.queue,
      fd: slot.fd,
      name: d.name,
      mtu: d.mtu,
      vnetHdr: d.vnetHdr,
      offloads: d.offloads,
      config: this.o.currentConfig?.() ?? this.config,
      fakeIpChannel: sab,
      tableSizes: this.sizes,
      fakeIpWake: wake.port2,
      selectionsPath: this.o.selectionsPath,
      observe: this.o.observer !== undefined && this.o.observer().engine !== null,
      dialTable: this.o.dialTable,
      bufferBudget: ringPool.budget.shared,
      logTap: this.logTap,
    };
    const w = new Worker(WORKER_SCRIPT, { workerData: data, transferList: [wake.port2], stdout: false, stderr: false });
    slot.worker = w;
    // The captures running now include the new worker's queue (messages wait until its handler is set).
    for (const c of this.captures.values()) w.postMessage({ t: 'captureStart', ...c.spec } satisfies MainToWorker);
    slot.state = 'starting';
    slot.startedAt = Date.now();
    slot.killReason = null;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const readyTimer = setTimeout(() => {
        if (settled) return;
        settled = true;
        reject(new Error(`tun.queues: worker for queue ${slot.queue} did not start within ${READY_TIMEOUT_MS / 1000} s`));
      }, READY_TIMEOUT_MS);
      readyTimer.unref();
      w.on('message', (m: WorkerToMain) => {
        if (m.t === 'ready') {
          slot.state = 'running';
          // A new worker thread put V8's flags back to the command line's: sluice's GC flags again, for every thread.
          applyWorkerGcFlags();
          this.o.log.debug({ queue: slot.queue, ms: Date.now() - slot.startedAt }, 'worker ready');
          clearTimeout(readyTimer);
          if (!settled) {
            settled = true;
            resolve();
          }
          return;
        }
        this.onMessage(slot, m);
      });
      let failure: string | null = null;
      w.on('error', (err) => {
        failure = err.message;
      });
      w.on('exit', (code) => {
        wake.port1.close();
        clearTimeout(readyTimer);
        if (slot.worker !== w) return;
        slot.worker = null;
        // Its ring stores went with its heap: its share of the TCP buffer budget is free again.
        ringPool.budget.clearSlot(slot.queue + 1);
        const reason = slot.killReason ?? failure;
        const lost = this.dropMirrors(slot);
        this.retire(slot);
        if (this.stopping) {
          slot.state = 'stopped';
          return;
        }
        slot.lastExit = { at: Date.now(), code, error: reason, flowsLost: lost };
        if (!settled && first) {
          settled = true;
          slot.state = 'stopped';
          reject(new Error(`tun.queues: worker for queue ${slot.queue} ended during start-up (exit code ${code}${reason !== null ? `: ${reason}` : ''})`));
          return;
        }
        settled = true;
        this.failures++;
        if (Date.now() - slot.startedAt > HEALTHY_MS) slot.backoff = RESTART_MIN_MS;
        const delay = slot.backoff;
        slot.backoff = Math.min(slot.backoff * 2, RESTART_MAX_MS);
        slot.state = 'restarting';
        this.o.log.error({ queue: slot.queue, code, err: reason, flowsLost: lost, restartInMs: delay, restarts: slot.restarts }, 'worker failed; restarting it (the other queues keep their flows)');
        slot.restartTimer = setTimeout(() => {
          slot.restartTimer = null;
          if (this.stopping) return;
          slot.restarts++;
          this.spawn(slot, false).then(
            () => this.o.log.info({ queue: slot.queue, restarts: slot.restarts }, 'worker restarted'),
            () => {},
          );
        }, delay);
      });
    });
  }

  private onMessage(slot: WorkerSlot, m: WorkerToMain): void {
    if (m.t === 'report') {
      this.applyReport(slot, m);
      return;
    }
    if (m.t === 'capture') {
      this.captures.get(m.id)?.cap.offerRecords(m.records);
      return;
    }
    const key = m.t === 'reloaded' ? `reloaded:${m.seq}` : m.t;
    const waiter = slot.waiters.get(key);
    if (waiter !== undefined) {
      slot.waiters.delete(key);
      waiter(m);
    }
  }

  private applyReport(slot: WorkerSlot, r: WorkerReport): void {
    if (r.observed.nums.length > 0) {
      const o = this.o.observer?.();
      if (o !== undefined) replayObserved(r.observed, o.engine, o.dnsUpstream);
    }
    const reg = this.o.flows;
    for (const c of r.closed) reg.countClosed(c.outbound, c.flows, c.up, c.down);
    for (const snap of r.updated) {
      if (slot.gone.has(snap.id)) continue;
      this.upsert(slot, snap);
    }
    for (const b of r.bytes) {
      const m = slot.mirrors.get(b.id);
      if (m === undefined) continue;
      m.bytes.bytesUp = b.bytesUp;
      m.bytes.bytesDown = b.bytesDown;
    }
    for (const e of r.ended) {
      if (slot.gone.delete(e.snap.id)) continue;
      const m = this.upsert(slot, e.snap);
      slot.mirrors.delete(m.id);
      reg.remove(m, e.final);
    }
    for (const e of r.endedBytes) {
      if (slot.gone.delete(e.id)) continue;
      const m = slot.mirrors.get(e.id);
      if (m === undefined) continue;
      slot.mirrors.delete(e.id);
      reg.remove(m, e); // its bytesUp and bytesDown are the final bytes
    }
    this.tapLogs(r);
    if (r.open !== null) {
      const seen = new Set(r.open);
      // A flow the worker no longer has (ended between two reports and already listed) is gone.
      for (const [id, m] of slot.mirrors) {
        if (seen.has(id)) continue;
        slot.mirrors.delete(id);
        reg.remove(m, m.bytes);
      }
      // A full report lists every open flow: an API-ended id not in it has ended.
      for (const id of slot.gone) if (!seen.has(id)) slot.gone.delete(id);
    }
    // Kept for the counters only: the flows and lines are applied (a full report's would otherwise live until the next).
    r.updated = [];
    r.bytes = [];
    r.open = null;
    r.ended = [];
    r.endedBytes = [];
    r.closed = [];
    r.logs = [];
    r.observed = NO_EVENTS;
    slot.report = r;
  }

  private tapLogs(r: WorkerReport): void {
    const tap = this.o.tap;
    for (const line of r.logs) tap.write(line);
  }

  private upsert(slot: WorkerSlot, s: FlowSnap): MirrorFlow {
    let m = slot.mirrors.get(s.id);
    if (m === undefined) {
      m = new MirrorFlow(s, this, slot);
      slot.mirrors.set(s.id, m);
      this.o.flows.add(m);
    } else m.update(s);
    return m;
  }

  /** DELETE of a worker's flow: the worker ends it; the view drops it now (with the bytes last reported). */
  endMirror(slot: WorkerSlot, id: string): void {
    const m = slot.mirrors.get(id);
    this.post(slot, { t: 'close', id });
    if (m === undefined) return;
    slot.mirrors.delete(id);
    slot.gone.add(id);
    this.o.flows.remove(m, m.bytes);
  }

  /** The flows of a worker that is gone leave the view (with the bytes last reported); returns how many. */
  private dropMirrors(slot: WorkerSlot): number {
    const n = slot.mirrors.size;
    for (const m of slot.mirrors.values()) this.o.flows.remove(m, m.bytes);
    slot.mirrors.clear();
    slot.gone.clear();
    return n;
  }

  private retire(slot: WorkerSlot): void {
    const r = slot.report;
    slot.report = null;
    if (r === null) return;
    addInto(this.retired.counters, r.counters, true);
    addInto(this.retired.stack, r.stack, true);
    addInto(this.retired.tun, r.tun, true);
    addInto(this.retired.icmp, r.icmp, true);
    if (r.dnsTally !== null) {
      const t = (this.retired.dnsTally ??= new Array<number>(r.dnsTally.length).fill(0));
      for (let i = 0; i < t.length; i++) t[i]! += r.dnsTally[i] ?? 0;
    }
    if (this.retiredHits.length !== r.ruleHits.length) this.retiredHits = r.ruleHits.map(() => ({ hits: 0, lastAt: 0 }));
    for (let i = 0; i < r.ruleHits.length; i++) {
      this.retiredHits[i]!.hits += r.ruleHits[i]!.hits;
      this.retiredHits[i]!.lastAt = Math.max(this.retiredHits[i]!.lastAt, r.ruleHits[i]!.lastAt);
    }
    this.fakeIpAsks += r.fakeIpAsks;
    this.fakeIpTimeouts += r.fakeIpTimeouts;
  }

  private post(slot: WorkerSlot, m: MainToWorker): void {
    slot.worker?.postMessage(m);
  }

  private ask(slot: WorkerSlot, m: MainToWorker, key: string, timeoutMs: number): Promise<WorkerToMain | null> {
    const w = slot.worker;
    if (w === null) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        slot.waiters.delete(key);
        resolve(null);
      }, timeoutMs);
      timer.unref();
      slot.waiters.set(key, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      const onExit = (): void => {
        clearTimeout(timer);
        slot.waiters.delete(key);
        resolve(null);
      };
      w.once('exit', onExit);
      w.postMessage(m);
    });
  }

  /** The routing mode (PATCH /configs, PUT /v1/mode) reaches every worker. */
  setMode(mode: string): void {
    for (const s of this.slots) this.post(s, { t: 'mode', mode });
  }

  /** New entries of a rule set on the main thread (a url set downloaded, PUT /providers/rules/:name): every worker takes the same. */
  ruleSet(name: string, entries: string[], type: RuleSetType): void {
    for (const s of this.slots) this.post(s, { t: 'ruleSet', name, entries, type });
  }

  /** Every running worker sends a fresh report now (the stopping and SIGUSR2 counters lines); resolves when all did or REPORT_TIMEOUT_MS passed. */
  async refresh(): Promise<void> {
    await Promise.all(this.slots.map((s) => this.ask(s, { t: 'reportNow' }, 'reported', REPORT_TIMEOUT_MS)));
  }

  /** GLOBAL's member (PUT /proxies/GLOBAL) reaches every worker. */
  selectGlobal(name: string): void {
    for (const s of this.slots) this.post(s, { t: 'global', name });
  }

  /**
   * A select group's member (PUT /proxies/:name) reaches every worker; a
   * restarted worker reads the saved choice from groups.json at its start.
   */
  select(group: string, member: string): void {
    for (const s of this.slots) this.post(s, { t: 'select', group, member });
  }

  /** A reloaded configuration for every worker (and for any restarted later); the errors of those that refused it. */
  async reload(config: SluiceConfig): Promise<string[]> {
    this.config = config;
    const seq = ++this.reloadSeq;
    const replies = await Promise.all(this.slots.map((s) => this.ask(s, { t: 'reload', seq, config }, `reloaded:${seq}`, RELOAD_TIMEOUT_MS).then((r) => ({ s, r }))));
    const errors: string[] = [];
    for (const { s, r } of replies) {
      if (s.worker === null) continue; // restarting: starts with the new configuration
      if (r === null) errors.push(`worker ${s.queue}: no answer to the reload within ${RELOAD_TIMEOUT_MS / 1000} s`);
      else if (r.t === 'reloaded' && r.error !== null) errors.push(`worker ${s.queue}: ${r.error}`);
    }
    return errors;
  }

  /** Ends a worker as a failure would (POST /v1/workers/:queue/kill): it is restarted like one. */
  kill(queue: number): boolean {
    const s = this.slots[queue];
    if (s === undefined || s.worker === null) return false;
    s.killReason = 'killed through the control API';
    void s.worker.terminate();
    return true;
  }

  /**
   * The stop's "flows" phase: every worker ends its flows within `budgetMs`
   * (each logged; Engine.endFlows splits it between the peers' FINs and
   * the close events), then the mirrors are gone.
   */
  async endFlows(budgetMs: number): Promise<void> {
    this.stopping = true;
    for (const s of this.slots) if (s.restartTimer !== null) clearTimeout(s.restartTimer);
    const budget = Math.max(0, Math.round(budgetMs));
    await Promise.all(this.slots.map((s) => this.ask(s, { t: 'endFlows', budgetMs: budget }, 'flowsEnded', budget + REPLY_MARGIN_MS)));
    for (const s of this.slots) this.dropMirrors(s);
  }

  /** Stops every worker (its engine's stop), terminating any that take longer than `budgetMs` (MIN_STOP_MS at least). */
  async stop(budgetMs: number): Promise<void> {
    const timeout = Math.max(MIN_STOP_MS, Math.round(budgetMs));
    this.stopping = true;
    if (this.sizesTimer !== null) clearInterval(this.sizesTimer);
    for (const s of this.slots) if (s.restartTimer !== null) clearTimeout(s.restartTimer);
    await Promise.all(
      this.slots.map(async (s) => {
        const w = s.worker;
        if (w === null) return;
        await this.ask(s, { t: 'stop' }, 'stopped', timeout);
        await w.terminate();
      }),
    );
    for (const s of this.slots) this.dropMirrors(s);
  }

  status(): WorkerStatus[] {
    return this.slots.map((s) => ({ queue: s.queue, state: s.state, threadId: s.worker?.threadId ?? null, restarts: s.restarts, flows: s.mirrors.size, tcpFlows: countTcp(s.mirrors.values()), lastExit: s.lastExit }));
  }

  /** Engine counters over all workers (plus those replaced), added to the main engine's own. */
  engineCounters(base: Record<string, unknown>): Record<string, unknown> {
    const out = structuredClone(base);
    addInto(out, this.retired.counters, false);
    for (const s of this.slots) if (s.report !== null) addInto(out, s.report.counters, false);
    return out;
  }

  stackStats(base: Record<string, unknown>): Record<string, unknown> {
    const out = JSON.parse(JSON.stringify(base)) as Record<string, unknown>;
    addInto(out, this.retired.stack, false);
    for (const s of this.slots) if (s.report !== null) addInto(out, s.report.stack, false);
    return out;
  }

  /** Engine.icmpCounters() over the workers (and those replaced), added to the main engine's own. */
  icmpCounters<T extends object>(base: T): T {
    const out = JSON.parse(JSON.stringify(base)) as Record<string, unknown>;
    addInto(out, this.retired.icmp, false);
    for (const s of this.slots) if (s.report !== null) addInto(out, s.report.icmp, false);
    return out as T;
  }

  /** The DNS hijacks' query tallies over the workers (and those replaced), added to the main engine's own; null when no engine has a hijack. */
  dnsTally(base: Float64Array | null): Float64Array | null {
    let out: Float64Array | null = base === null ? null : Float64Array.from(base);
    const add = (t: readonly number[] | null): void => {
      if (t === null) return;
      out ??= new Float64Array(t.length);
      for (let i = 0; i < out.length; i++) out[i]! += t[i] ?? 0;
    };
    add(this.retired.dnsTally);
    for (const s of this.slots) if (s.report !== null) add(s.report.dnsTally);
    return out;
  }

  tunStats(): { rxPackets: number; rxBytes: number; rxBatches: number; rxErrors: number; txPackets: number; txBytes: number; txDropped: number } {
    const out: Record<string, unknown> = { rxPackets: 0, rxBytes: 0, rxBatches: 0, rxErrors: 0, txPackets: 0, txBytes: 0, txDropped: 0 };
    addInto(out, this.retired.tun, false);
    for (const s of this.slots) if (s.report !== null) addInto(out, s.report.tun, false);
    return out as never;
  }

  /**
   * Rule hits over the workers (and those replaced), added to the main
   * engine's own (GET /rules, the metrics). Counts of a worker that still
   * runs an older rule list (a reload under way) are left out.
   */
  ruleHits(base: { hits: number; lastAt: number }[]): { hits: number; lastAt: number }[] {
    const out = base.map((r) => ({ hits: r.hits, lastAt: r.lastAt }));
    const add = (list: readonly { hits: number; lastAt: number }[]): void => {
      if (list.length !== out.length) return;
      for (let i = 0; i < out.length; i++) {
        out[i]!.hits += list[i]!.hits;
        out[i]!.lastAt = Math.max(out[i]!.lastAt, list[i]!.lastAt);
      }
    };
    add(this.retiredHits);
    for (const s of this.slots) if (s.report !== null) add(s.report.ruleHits);
    return out;
  }

  /** Fake-IP asks of every worker, and those the main thread did not answer in time. */
  fakeIpChannelStats(): { asks: number; timeouts: number } {
    let asks = this.fakeIpAsks;
    let timeouts = this.fakeIpTimeouts;
    for (const s of this.slots) {
      asks += s.report?.fakeIpAsks ?? 0;
      timeouts += s.report?.fakeIpTimeouts ?? 0;
    }
    return { asks, timeouts };
  }
}

function countTcp(flows: Iterable<FlowRecord>): number {
  let n = 0;
  for (const f of flows) if (f.network === 'tcp') n++;
  return n;
}

/** Adds every number of `src` into `dst` (recursively); with `totalsOnly` the gauges are skipped. */
function addInto(dst: Record<string, unknown>, src: Record<string, unknown>, totalsOnly: boolean): void {
  for (const k of Object.keys(src)) {
    const v = src[k];
    if (typeof v === 'number') {
      if (totalsOnly && GAUGES.has(k)) continue;
      const cur = dst[k];
      dst[k] = (typeof cur === 'number' ? cur : 0) + v;
    } else if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      let d = dst[k];
      if (d === null || typeof d !== 'object') {
        d = {};
        dst[k] = d;
      }
      addInto(d as Record<string, unknown>, v as Record<string, unknown>, totalsOnly);
    }
  }
}
