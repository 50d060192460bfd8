/**
 * A worker thread of the multi-queue mode (tun.queues > 1): one TUN queue,
 * its own Engine (stack, relays, outbounds, DNS hijack), the main thread's
 * fake-IP pool through a channel (fake-ip-channel.ts).
 *
 * Everything the control plane shows reaches the main thread in one report
 * every REPORT_MS (and at once when a flow ends while the log stream is
 * busy): the flows added, updated and ended since the last report, the
 * engine's and the stack's counters, this queue's device counters and the
 * log lines for the /logs stream. Log lines go to stdout from here
 * directly (pino writes fd 1 synchronously, one write per line), as the
 * single-threaded mode writes them.
 *
 * Messages from the main thread (pool.ts): close one flow, close all,
 * end the flows (the stop's "flows" phase), stop, reload a configuration,
 * set the routing mode.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { SluiceConfig } from '../config/types.js';
import { Engine } from '../engine/engine.js';
import { createLogger, LogTap } from '../engine/logger.js';
import { FlowRegistry, type FlowBytes, type FlowRecord, type RoutingMode } from '../engine/flow-registry.js';
import { refuseGlobalDispatch } from '../outbound/agent.js';
import { MainChannel, RemoteDnsSnoop, RemoteFakeIpPool } from './fake-ip-channel.js';
import { QueueLink } from './queue-link.js';
import { snapFlow, type FlowSnap, type MainToWorker, type WorkerReport, type WorkerStart } from './protocol.js';

/** How often a worker reports its flows and counters. */
const REPORT_MS = 250;
/** Log lines kept for the next report at most; more are counted as dropped (the stdout copy is whole). */
const MAX_LOG_LINES = 2000;

/** The worker engine's registry: also notes what changed for the next report. */
class ReportingFlowRegistry extends FlowRegistry<FlowRecord> {
  readonly added = new Set<string>();
  ended: { snap: FlowSnap; final: FlowBytes }[] = [];

  /** Called on every add and remove: the main thread's view follows within a turn. */
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
    this.ended.push({ snap: snapFlow(f), final: { bytesUp: Math.max(b.bytesUp, final.bytesUp), bytesDown: Math.max(b.bytesDown, final.bytesDown) } });
    this.onChange?.();
  }
}

function main(): void {
  const port = parentPort;
  if (port === null) throw new Error('src/workers/worker-main.ts runs only as a worker thread');
  const start = workerData as WorkerStart;
  const config: SluiceConfig = start.config;
  refuseGlobalDispatch();
  const lines: string[] = [];
  let droppedLines = 0;
  const tap = new LogTap();
  tap.listener = (line) => {
    if (lines.length < MAX_LOG_LINES) lines.push(line);
    else droppedLines++;
  };
  const log = createLogger(config.log, process.stdout, tap).child({ queue: start.queue });
  const link = new QueueLink({ name: start.name, fd: start.fd, queue: start.queue, mtu: start.mtu, vnetHdr: start.vnetHdr, offloads: start.offloads });
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
  const engine = new Engine(config, link, log, { selectionsPath: start.selectionsPath, ruleSetDir: null, fakeIpPool: pool, snoop, flows });
  let stopping = false;

  const report = (full = true): void => {
    const updated: FlowSnap[] = [];
    if (full) {
      for (const f of flows.values()) updated.push(snapFlow(f));
    } else {
      for (const id of flows.added) {
        const f = flows.get(id);
        if (f !== undefined) updated.push(snapFlow(f));
      }
    }
    const msg: WorkerReport = {
      t: 'report',
      full,
      updated,
      ended: flows.ended,
      counters: { ...engine.counters, synFlood: { ...engine.counters.synFlood } } as unknown as Record<string, unknown>,
      stack: engine.stack.stats as unknown as Record<string, unknown>,
      tun: link.stats(),
      ruleHits: engine.ruleHitCounts(),
      logs: lines.splice(0, lines.length),
      droppedLines,
      fakeIpAsks: channel.asks,
      fakeIpTimeouts: channel.timeouts,
    };
    flows.ended = [];
    flows.added.clear();
    droppedLines = 0;
    port.postMessage(msg);
  };
  const timer = setInterval(report, REPORT_MS);
  // A flow's start or end reaches the main thread's view within a turn (one delta report per turn at most).
  let quick: NodeJS.Immediate | null = null;
  flows.onChange = () => {
    quick ??= setImmediate(() => {
      quick = null;
      report(false);
    });
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
        void engine.reloadRuleSet(m.name).then(
          (r) => {
            if (!r.ok) log.warn({ ruleSet: m.name, errors: r.errors }, 'rule set not re-read');
          },
          (err: unknown) => log.warn({ ruleSet: m.name, err: (err as Error).message }, 'rule set not re-read'),
        );
        break;
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
        void engine.endFlows().then(() => {
          report();
          port.postMessage({ t: 'flowsEnded' });
        });
        break;
      case 'stop':
        stopping = true;
        void engine.stop().finally(() => {
          clearInterval(timer);
          report();
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
