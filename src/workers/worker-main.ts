/**
 * A worker thread of the multi-queue mode (tun.queues > 1): one TUN queue,
 * its own Engine (stack, relays, outbounds, DNS hijack), the main thread's
 * fake-IP pool through a channel (fake-ip-channel.ts).
 *
 * Everything the control plane shows reaches the main thread in one report
 * every REPORT_MS (and within QUICK_MS of a flow's start or end): the flows
 * added or changed (whole), those of which only the byte counts moved (the
 * counts), those ended since the last report (whole when a report showed
 * them; a flow that began and ended between two reports only as its
 * outbound's closed totals), every FULL_EVERY reports, and when the main
 * thread asks, also the id of every open flow, which the main thread
 * reconciles its view with (an idle flow crosses threads once, not every
 * few seconds with its match context), the engine's and the stack's
 * counters, this queue's device counters, the observer's events as numbers
 * (observed-events.ts) and, while the main thread's /logs stream has a
 * listener (log-tap.ts), the log lines. Log lines go to stdout from here
 * directly (pino writes fd 1 synchronously, in LOG_BATCH_MS batches), as
 * the single-threaded mode writes them.
 *
 * Messages from the main thread (pool.ts): close one flow, close all,
 * end the flows (the stop's "flows" phase), stop, reload a configuration,
 * set the routing mode.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { BufferBudget } from '../tcp/buffer-budget.js';
import { ringPool } from '../tcp/ring-pool.js';
import type { SluiceConfig } from '../config/types.js';
import { Engine } from '../engine/engine.js';
import { createLogger, flushLogs, LogTap } from '../engine/logger.js';
import { FlowRegistry, type FlowBytes, type FlowRecord, type RoutingMode } from '../engine/flow-registry.js';
import { refuseGlobalDispatch } from '../outbound/agent.js';
import { MainChannel, RemoteDnsSnoop, RemoteFakeIpPool } from './fake-ip-channel.js';
import { QueueLink } from './queue-link.js';
import { SharedDialTable } from './shared-dials.js';
import { nameThisThread } from './thread-name.js';
import { CaptureLink, type Capture } from '../link/capture.js';
import { ReportedView, snapFlow, type ClosedTotals, type FlowBytesSnap, type FlowSnap, type MainToWorker, type WorkerReport, type WorkerStart, type WorkerToMain } from './protocol.js';
import { NO_EVENTS, ObservedRecorder } from './observed-events.js';
import { logTapReader } from './log-tap.js';

/** How often a worker reports its flows and counters. */
const REPORT_MS = 250;
/**
 * A flow's start or end reaches the main thread's view within this long:
 * one delta report per window at most. Once per event-loop turn (as it
 * was) meant, at a few thousand new connections a second, a report, its
 * counters and a walk of the stack's flows for its stats on most turns:
 * about a quarter of a worker's CPU in the connection-per-request bench.
 */
const QUICK_MS = 10;
/** Every this many periodic reports, one lists every open flow (5 s). */
const FULL_EVERY = 20;
/** Log lines kept for the next report at most; more are counted as dropped (the stdout copy is whole). */
const MAX_LOG_LINES = 2000;

/** Observer events kept for the next report at most; more are dropped (the metrics then undercount, never block). */
const MAX_OBSERVED = 20_000;

/** The worker engine's registry: also notes what changed for the next report. */
class ReportingFlowRegistry extends FlowRegistry<FlowRecord> {
  readonly added = new Set<string>();
  /** Ended flows an earlier report showed (the main thread holds their mirrors) and that changed since: whole. */
  ended: { snap: FlowSnap; final: FlowBytes }[] = [];
  /** Ended flows an earlier report showed as they still are: the id and final bytes. */
  endedBytes: FlowBytesSnap[] = [];
  /** Ended flows no report showed, as totals by outbound (protocol.ts ClosedTotals). */
  private readonly closed = new Map<string, ClosedTotals>();
  /** What each open flow's last report showed of what changes (protocol.ts ReportedView). */
  private readonly reported = new Map<string, ReportedView>();

  /** What changed of `f` since it was last reported ('view' for a flow not reported yet); notes it as reported. */
  takeChange(f: FlowRecord): 'view' | 'bytes' | 'none' {
    const last = this.reported.get(f.id);
    if (last === undefined) {
      this.reported.set(f.id, new ReportedView(f));
      return 'view';
    }
    return last.update(f);
  }

  /** Called on every add and remove: the main thread's view follows within QUICK_MS. */
  onChange: (() => void) | null = null;

  override add(f: FlowRecord): void {
    super.add(f);
    this.added.add(f.id);
    this.onChange?.();
  }

  override remove(f: FlowRecord, final: FlowBytes): void {
    if (this.get(f.id) === undefined) return;
    super.remove(f, final);
    this.added.delete(f.id);
    const b = f.bytes ?? final;
    const up = Math.max(b.bytesUp, final.bytesUp);
    const down = Math.max(b.bytesDown, final.bytesDown);
    const view = this.reported.get(f.id);
    if (view !== undefined) {
      this.reported.delete(f.id);
      if (view.update(f) === 'view') this.ended.push({ snap: snapFlow(f), final: { bytesUp: up, bytesDown: down } });
      else this.endedBytes.push({ id: f.id, bytesUp: up, bytesDown: down });
    } else {
      let t = this.closed.get(f.outbound);
      if (t === undefined) {
        // Bounded by the outbounds (and groups) the config names.
        t = { outbound: f.outbound, flows: 0, up: 0, down: 0 };
        this.closed.set(f.outbound, t);
      }
      t.flows++;
      t.up += up;
      t.down += down;
    }
    this.onChange?.();
  }

  /** The unseen flows ended since the last take, by outbound. */
  takeClosed(): ClosedTotals[] {
    if (this.closed.size === 0) return [];
    const out = [...this.closed.values()];
    this.closed.clear();
    return out;
  }
}

function main(): void {
  const port = parentPort;
  if (port === null) throw new Error('src/workers/worker-main.ts runs only as a worker thread');
  const start = workerData as WorkerStart;
  nameThisThread(start.queue);
  const config: SluiceConfig = start.config;
  refuseGlobalDispatch();
  const lines: string[] = [];
  let droppedLines = 0;
  const tap = new LogTap();
  const mainListens = logTapReader(start.logTap);
  tap.listener = (line) => {
    // Nobody reads the main thread's /logs stream: stdout has the line, the report need not.
    if (!mainListens()) return;
    if (lines.length < MAX_LOG_LINES) lines.push(line);
    else droppedLines++;
  };
  const log = createLogger(config.log, process.stdout, tap).child({ queue: start.queue });
  const queueLink = new QueueLink({ name: start.name, fd: start.fd, queue: start.queue, mtu: start.mtu, vnetHdr: start.vnetHdr, offloads: start.offloads });
  // The main thread's captures (/v1/capture, SLUICE_CAPTURE_FILE) run here too, on this queue's packets; idle, a forwarder.
  const link = new CaptureLink(queueLink);
  const captures = new Map<number, Capture>();
  const flows = new ReportingFlowRegistry();
  const channel = new MainChannel(start.fakeIpChannel, start.tableSizes, start.fakeIpWake as MessagePort);
  const pool =
    config.dns.mode === 'fake-ip'
      ? new RemoteFakeIpPool(
          { ipv4Range: config.dns.fakeIp.ipv4Range, ipv6Range: config.dns.fakeIp.ipv6Range, exclude: [config.tun.ipv4.split('/')[0]!, config.tun.ipv6.split('/')[0]!] },
          channel,
        )
      : null;
  // The same condition as the engine's own snoop table (engine.ts): the main thread has one exactly then.
  const snoop = config.dns.mode === 'real-ip' || config.dns.fakeIp.filter.length > 0 ? new RemoteDnsSnoop(channel) : null;
  // This thread's TCP ring stores count in the process's budget (limits.tcpBufferMiB), in this queue's slot.
  ringPool.useBudget(new BufferBudget(start.bufferBudget, start.queue + 1));
  const engine = new Engine(config, link, log, { selectionsPath: start.selectionsPath, ruleSetDir: null, fakeIpPool: pool, snoop, flows, ruleSetDownloads: false, dialTable: new SharedDialTable(start.dialTable) });
  let stopping = false;
  const send = (m: WorkerToMain, transfer?: ArrayBuffer[]): void => port.postMessage(m, transfer);
  let quick: NodeJS.Timeout | null = null;
  const soon = (): void => {
    quick ??= setTimeout(() => {
      quick = null;
      report('added');
    }, QUICK_MS);
  };
  const observer = start.observe ? new ObservedRecorder(MAX_OBSERVED, soon) : null;
  if (observer !== null) {
    engine.observer = observer;
    const dns = engine.dnsServer;
    if (dns !== null) dns.onUpstream = observer.dnsUpstream;
  }

  /**
   * 'all': the deltas plus every open flow's id (the main thread drops the
   * mirrors of any other); 'moved': the flows added or changed (whole) and
   * those whose bytes moved (the counts); 'added': the added ones only.
   */
  const report = (which: 'all' | 'moved' | 'added' = 'all'): void => {
    const updated: FlowSnap[] = [];
    const bytes: FlowBytesSnap[] = [];
    const full = which === 'all';
    const open: string[] | null = full ? [] : null;
    if (which === 'added') {
      for (const id of flows.added) {
        const f = flows.get(id);
        if (f === undefined) continue;
        flows.takeChange(f);
        updated.push(snapFlow(f));
      }
    } else {
      for (const f of flows.values()) {
        const change = flows.takeChange(f);
        if (change === 'view' || flows.added.has(f.id)) updated.push(snapFlow(f));
        else if (change === 'bytes') bytes.push({ id: f.id, bytesUp: f.bytes?.bytesUp ?? 0, bytesDown: f.bytes?.bytesDown ?? 0 });
        open?.push(f.id);
      }
    }
    const msg: WorkerReport = {
      t: 'report',
      full,
      updated,
      bytes,
      open,
      ended: flows.ended,
      endedBytes: flows.endedBytes,
      closed: flows.takeClosed(),
      counters: { ...engine.counters, synFlood: { ...engine.counters.synFlood } } as unknown as Record<string, unknown>,
      stack: engine.stack.stats as unknown as Record<string, unknown>,
      tun: queueLink.stats(),
      ruleHits: engine.ruleHitCounts(),
      logs: lines.splice(0, lines.length),
      droppedLines,
      fakeIpAsks: channel.asks,
      fakeIpTimeouts: channel.timeouts,
      icmp: engine.icmpCounters() as unknown as Record<string, unknown>,
      dnsTally: engine.dnsServer === null ? null : Array.from(engine.dnsServer.queryTally),
      observed: observer === null ? NO_EVENTS : observer.take(),
    };
    flows.ended = [];
    flows.endedBytes = [];
    flows.added.clear();
    droppedLines = 0;
    port.postMessage(msg);
  };
  let periodic = 0;
  const timer = setInterval(() => report(++periodic % FULL_EVERY === 0 ? 'all' : 'moved'), REPORT_MS);
  // A flow's start or end reaches the main thread's view within QUICK_MS.
  flows.onChange = soon;

  const startCapture = (spec: Extract<MainToWorker, { t: 'captureStart' }>): void => {
    if (captures.has(spec.id)) return;
    let c: Capture;
    try {
      c = link.capture({ filter: spec.filter, snaplen: spec.snaplen, resolution: spec.resolution });
    } catch (err) {
      log.warn({ capture: spec.id, err: (err as Error).message }, 'capture not started on this queue');
      return;
    }
    captures.set(spec.id, c);
    // The records go to the main thread as they come (at most once per turn); it merges the queues and applies the count.
    c.onReadable = () => {
      const b = c.take();
      if (b === null) return;
      const records = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      send({ t: 'capture', id: spec.id, records }, b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? [b.buffer as ArrayBuffer] : undefined);
    };
  };

  port.on('message', (m: MainToWorker) => {
    switch (m.t) {
      case 'close':
        flows.close(m.id);
        break;
      case 'closeAll':
        flows.closeAll();
        break;
      case 'mode':
        engine.setMode(m.mode as RoutingMode);
        break;
      case 'global':
        try {
          engine.selectGlobal(m.name);
        } catch (err) {
          log.warn({ global: m.name, err: (err as Error).message }, 'GLOBAL choice not followed');
        }
        break;
      case 'select':
        try {
          engine.groups.select(m.group, m.member);
        } catch (err) {
          log.warn({ group: m.group, member: m.member, err: (err as Error).message }, 'group choice not followed');
        }
        break;
      case 'ruleSet':
        try {
          engine.replaceRuleSet(m.name, m.entries, m.type);
        } catch (err) {
          log.warn({ ruleSet: m.name, err: (err as Error).message }, 'rule set entries not taken');
        }
        break;
      case 'reportNow':
        report();
        send({ t: 'reported' });
        break;
      case 'captureStart':
        startCapture(m);
        break;
      case 'captureStop': {
        const c = captures.get(m.id);
        if (c !== undefined) {
          captures.delete(m.id);
          c.onReadable?.();
          c.stop();
        }
        break;
      }
      case 'reload':
        try {
          engine.replaceConfig(m.config);
          port.postMessage({ t: 'reloaded', seq: m.seq, error: null });
        } catch (err) {
          port.postMessage({ t: 'reloaded', seq: m.seq, error: (err as Error).message });
        }
        break;
      case 'endFlows':
        stopping = true;
        engine.stopAccepting();
        void engine.endFlows(m.budgetMs).then(() => {
          report();
          port.postMessage({ t: 'flowsEnded' });
        });
        break;
      case 'stop':
        stopping = true;
        void engine.stop().finally(() => {
          clearInterval(timer);
          if (quick !== null) clearTimeout(quick);
          quick = null;
          report();
          // The main thread terminates this thread next: no 'exit' event will write the log's last lines.
          flushLogs();
          port.postMessage({ t: 'stopped' });
          port.close();
        });
        break;
    }
  });

  engine
    .start()
    .then(() => {
      if (stopping) return;
      port.postMessage({ t: 'ready' });
    })
    .catch((err: unknown) => {
      // The main thread sees the exit and restarts the worker (with a backoff).
      log.fatal({ err: (err as Error).message }, 'worker start-up failed');
      process.exit(1);
    });
}

main();
