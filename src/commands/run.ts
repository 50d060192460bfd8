/**
 * `sluice run [--config FILE]`: open the TUN, start the stack and the
 * engine, serve until SIGINT/SIGTERM. Without --config the built-in
 * default policy runs (everything direct, DNS hijacked in fake-ip mode and
 * cached, every flow logged). SIGHUP re-reads the whole configuration
 * (src/commands/reload.ts). Select groups keep their choices in groups.json
 * beside the state file.
 *
 * The TUN gets the configured addresses (they vanish with the device when
 * sluice exits). With route.auto, src/system/ installs the routes and
 * rules that steer this machine's traffic into it (recorded in the state
 * file, removed on SIGINT/SIGTERM, leftovers of a killed run removed on
 * start); otherwise route a prefix into the TUN yourself (README).
 *
 * Stopping (src/system/lifecycle.ts RunLifecycle): the SIGINT/SIGTERM
 * handlers exist before anything is opened, so a signal at any point of
 * start-up unwinds what was done so far; after `ready` the stop runs in
 * phases (stop accepting, end the open flows, close the outbounds, the
 * stack and the TUN, remove the system state) and the process ends within
 * about 4 s of the signal whatever is left open.
 *
 * Exit codes: 0 clean stop (also when stopped during start-up), 1
 * configuration or start-up failure or state that could not be removed, 2 usage.
 */
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { isConfigError } from '../config/errors.js';
import { loadConfig } from '../config/load.js';
import { configWarnings } from '../config/warnings.js';
import { defaultConfig, type SluiceConfig } from '../config/types.js';
import { TunDevice } from '../link/tun.js';
import { CaptureLink } from '../link/capture.js';
import { captureFromEnv } from './capture-env.js';
import { openMetricsListener, startObserve } from '../control/observe.js';
import { PacketTracer } from '../link/trace.js';
import { Engine } from '../engine/engine.js';
import { createLogger, LogTap } from '../engine/logger.js';
import { openApi, startControl, type OpenedApi } from '../control/index.js';
import { GlobalGroup } from '../control/groups.js';
import { ConfigGroups } from '../control/config-groups.js';
import { LogHub } from '../control/log-hub.js';
import { flowLineText } from '../control/rule-text.js';
import { VERSION } from '../version.js';
import type { CommandIo } from './check.js';
import type { EarlySignals } from '../cli.js';
import { DEFAULT_STATE_PATH } from '../system/state.js';
import { checkAutoRoute, startAutoRoute, cleanLeftovers, checkGateway, startGateway, RunLifecycle, StopRequested, tunNameProblem, type RunningGateway } from '../system/lifecycle.js';
import { startTproxyListeners } from '../system/tproxy-listen.js';
import { startTproxyUdp } from '../udp/tproxy.js';
import type net from 'node:net';
import { checkClassifier, classifierCounters, classifierStatus, runsClassifier, startClassifier, type RunningClassifier } from '../system/classifier-run.js';
import { startKernelPath, type RunningKernelPath } from '../system/kernel-path.js';
import { fileURLToPath } from 'node:url';
import { checkReadableBy, dropPrivileges, planPrivilegeDrop } from '../system/privileges.js';
import { sdNotify } from '../system/sd-notify.js';
import { refuseGlobalDispatch } from '../outbound/agent.js';
import { reportCoexistence } from '../system/coexistence.js';
import { createReloader } from './run-reload.js';
import { dirname, join } from 'node:path';
import { tunQueues } from '../workers/queues.js';
import { TransmitOnlyLink } from '../workers/queue-link.js';
import { startWorkers, type RunningWorkers } from '../workers/run-workers.js';
import { attachSteering } from '../workers/steering.js';
import { loadNative } from '../link/native.js';
import { startHeapReducer } from '../heap-reducer.js';
import { WORKER_SCRIPT } from '../workers/pool.js';
import { undici } from '../outbound/undici.js';
import { newDialTable, SharedDialTable } from '../workers/shared-dials.js';

export const RUN_USAGE = `Usage: sluice run [--config FILE] [--state FILE]

Starts the TUN proxy. Without --config, the built-in default policy runs:
everything direct, DNS hijacked (fake-ip) and cached, every flow logged.
Needs root or CAP_NET_ADMIN. SIGHUP reloads the whole configuration file
(an invalid one is refused and the running one stays); SIGINT or SIGTERM
stops. With route.auto, gateway or classifier, what sluice installs
(routes, ip rules, nftables tables, tc filters, sysctls) is recorded in the
state file (default ${DEFAULT_STATE_PATH}) and removed on stop; leftovers of
a killed run are removed first. With run.user, sluice switches to that
user once set-up is done, keeping only the capabilities new flows and
teardown need (docs/configuration.md, "run"). The control API (Clash/mihomo
dashboards, /v1/) listens on api.listen, default 127.0.0.1:9090, with the
secret in /var/lib/sluice/api-secret (beside --state FILE when given).
Under systemd
(docs/sluice.service) it sends READY=1 when ready, STOPPING=1 on stop.`;

function addAddress(dev: string, cidr: string): void {
  try {
    execFileSync('ip', ['addr', 'replace', cidr, 'dev', dev], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? (err as Error).message;
    throw new Error(`tun: cannot add address ${cidr} to ${dev}: ${stderr}`);
  }
}

export async function runRun(argv: string[], io: CommandIo = process, launcher?: EarlySignals): Promise<number> {
  // Before anything else: a signal during start-up must never take the
  // default action (exit 143, 129) and leave half-installed state behind.
  // The launcher's handlers (bin/sluice.js) covered the time before this.
  // Until the lifecycle takes over nothing has been opened or changed (the
  // configuration is being read and checked, which can take a second on a
  // loaded machine): a signal then ends the process at once, as the
  // launcher's do. A signal the launcher recorded but did not act on is
  // handed to the lifecycle.
  let early: string | null = null;
  const onEarly = (): void => process.exit(0);
  const ignoreHup = (): void => {};
  process.on('SIGINT', onEarly);
  process.on('SIGTERM', onEarly);
  process.on('SIGHUP', ignoreHup);
  early = launcher?.take() ?? null;
  const dropEarly = (): void => {
    process.off('SIGINT', onEarly);
    process.off('SIGTERM', onEarly);
  };
  try {
    const code = await run(argv, io, () => {
      dropEarly();
      return early;
    });
    // The stop is done and the state removed: what still holds the event loop
    // (a child process or socket of a start-up step the signal cut short, a
    // last close) gets EXIT_GRACE_MS to end by itself, then the process exits
    // (unref'd: a loop already empty exits at once, as before).
    setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
    return code;
  } finally {
    dropEarly();
    process.off('SIGHUP', ignoreHup);
  }
}

/** What the stop keeps of its budget, after the flows' grace, for closing the outbounds and removing the system state. */
const STOP_RESERVE_MS = 2000;

/** How long an ended `sluice run` waits for leftover handles before it exits anyway. */
const EXIT_GRACE_MS = 200;

/**
 * Start-up, then serve until a signal, then the ordered stop. Every start-up
 * step registers its undo with the lifecycle right after it succeeds and is
 * followed by `life.check()`, so a signal at any point unwinds exactly what
 * was done (see RunLifecycle for the stop's phases and deadline).
 */
async function run(argv: string[], io: CommandIo, takeEarlySignal: () => string | null): Promise<number> {
  let values: { config?: string | undefined; state?: string | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { config: { type: 'string', short: 'c' }, state: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    io.stderr.write(`sluice run: ${(err as Error).message}\n\n${RUN_USAGE}\n`);
    return 2;
  }
  if (values.help === true) {
    io.stdout.write(`${RUN_USAGE}\n`);
    return 0;
  }
  let config: SluiceConfig;
  try {
    config = values.config !== undefined ? await loadConfig(values.config) : defaultConfig();
  } catch (err) {
    if (!isConfigError(err)) throw err;
    io.stderr.write(`${err.message}\nsluice run: ${values.config}: ${err.problems.length} problem${err.problems.length === 1 ? '' : 's'}; nothing was started\n`);
    return 1;
  }
  // The control API's /logs stream reads the log lines through this tap (idle while nobody listens).
  const tap = new LogTap();
  const log = createLogger(config.log, process.stdout, tap);
  // Every socket goes through the marked dialer; undici's global agent would not (issue 12, item 6).
  refuseGlobalDispatch();
  const statePath = values.state ?? DEFAULT_STATE_PATH;
  const where = values.config ?? 'built-in default';
  const life = new RunLifecycle({ statePath, log, stderr: io.stderr });
  life.takeOver(takeEarlySignal());
  // SIGHUP and SIGUSR2 are handled from here on: their default action would
  // end the process, also during start-up or in the instant after "ready".
  // Until ready, a reload has nothing to reload and there are no counters.
  let running: Engine | null = null;
  // The file as loaded, before the run-time adjustments below: what a reload compares against.
  const startFile = structuredClone(config);
  const reload = createReloader({
    path: values.config ?? null,
    startFile,
    engine: () => running,
    log,
    prepare: (c) => withRouteMark(c, config.route),
    // The classifier's maps and the kernel path's sets follow the reloaded policy live (no detach).
    applied: async (next) => {
      await workers?.reload(next);
      await classifier?.update(next);
      await kernelPath?.update(next);
      await gateway?.update(next);
    },
  });
  const onHup = (): void => {
    if (running === null || life.stopRequested) return;
    void reload().catch((err: unknown) => log.error({ err: (err as Error).message }, 'reload failed; the running configuration stays'));
  };
  const onUsr2 = (): void => {
    const e = running;
    if (e === null) return;
    // tun.queues > 1: every worker's counters, fresh, added to this thread's.
    void allCounters(e).then((c) => {
      // The same object the control plane serves (src/system/classifier-run.ts).
      const cs = classifierStatus();
      log.info({ ...c.engine, stack: c.stack.drops, classifier: cs?.actions, classifierAssign: cs?.assign ?? undefined, classifierSni: cs?.sni ?? undefined }, 'counters');
    });
  };
  /** The engine's counters, stack drops and ICMP counters; with worker threads, summed over them after a fresh report from each. */
  const allCounters = async (e: Engine): Promise<{ engine: Record<string, unknown>; stack: Engine['stack']['stats']; icmp: ReturnType<Engine['icmpCounters']> }> => {
    const w = workers;
    if (w === null) return { engine: e.counters as unknown as Record<string, unknown>, stack: e.stack.stats, icmp: e.icmpCounters() };
    await w.refresh();
    return w.counters();
  };
  process.on('SIGHUP', onHup);
  process.on('SIGUSR2', onUsr2);
  log.info({ pid: process.pid, config: where, state: statePath }, 'starting');
  for (const w of configWarnings(config)) log.warn({ config: where }, w);
  config = withRouteMark(config, config.route);
  let tun: TunDevice;
  let engine: Engine;
  let classifier: RunningClassifier | null = null;
  let api: OpenedApi | null = null;
  let kernelPath: RunningKernelPath | null = null;
  let gateway: RunningGateway | null = null;
  let metricsAt: string | null = null;
  // tun.queues > 1: the queues' packets are served by worker threads (src/workers/), this thread's engine has none.
  let workers: RunningWorkers | null = null;
  let startingWorkers: Promise<RunningWorkers | null> = Promise.resolve(null);
  try {
    const queues = tunQueues(config.tun.queues);
    const drop = planPrivilegeDrop(config, where, statePath, queues.queues);
    // With run.user the worker threads start after the drop (below): the uid
    // change clears the capabilities of every thread but this one (KEEPCAPS
    // and capset are per thread, native/src/privileges.c), and a thread
    // created later is cloned from this thread's credentials, kept set included.
    const workersAfterDrop = drop !== null && queues.queues > 1;
    if (workersAfterDrop) checkReadableBy(fileURLToPath(WORKER_SCRIPT), drop, where, `tun.queues: ${queues.queues} starts worker threads after the drop, which load sluice's code as that user`);
    life.check();
    await cleanLeftovers(statePath, log);
    life.check();
    // Docker, libvirt, WireGuard, Tailscale, nearby rules: one line each; with route.auto their prefixes stay off the TUN.
    // The checks only read the machine's state: the stop overtakes them (life.until).
    if (config.route.auto || config.gateway.enabled || config.classifier.enabled) config.route = await life.until(reportCoexistence(config.route, log));
    if (config.route.auto) await life.until(checkAutoRoute(config.route, where));
    if (runsClassifier(config)) await life.until(checkClassifier(config, where));
    if (config.gateway.enabled) await life.until(checkGateway(config, where));
    const taken = tunNameProblem(config.tun.name, where);
    if (taken !== null) throw new Error(taken);
    life.check();
    // The API binds before anything else opens: an address in use fails start-up with nothing to undo.
    // Under route.auto the listeners carry route.mark, as every socket of sluice does.
    const listenMark = config.route.auto ? config.route.mark : 0;
    api = await openApi(config.api, statePath, log, listenMark);
    const opened0 = api;
    if (opened0 !== null) life.defer('accept', 'control API', () => opened0.server.close());
    life.check();
    const metricsServer = await openMetricsListener(config.metrics, listenMark);
    metricsAt = metricsServer?.address ?? null;
    if (metricsServer !== null) life.defer('accept', 'metrics listener', () => metricsServer.close());
    life.check();
    tun = TunDevice.open({ name: config.tun.name, mtu: config.tun.mtu, offload: config.tun.offload, queues: queues.queues });
    const opened = tun;
    life.defer('outbounds', 'tun', () => opened.close());
    // tun.queues > 1: the queue follows the client's source (bpf/steering.c), set now, before any privilege drop.
    const steering = queues.queues > 1 ? attachSteering(loadNative(), tun.fds, log).steering : null;
    addAddress(tun.name, config.tun.ipv4);
    addAddress(tun.name, config.tun.ipv6);
    // Always wrapped: a capture (API, SLUICE_CAPTURE_FILE) may start at any time; idle, the wrapper is a forwarder.
    const link = new CaptureLink(tun);
    const envCapture = captureFromEnv(link, process.env, log);
    if (envCapture !== null) life.defer('outbounds', 'capture file', envCapture);
    // log.level trace: every packet in and out, with its drop reason (zero cost otherwise: not inserted).
    const tracer = log.isLevelEnabled('trace') ? new PacketTracer(link, log) : null;
    const engineLink = queues.queues > 1 ? new TransmitOnlyLink(tun.name, tun.mtu, tun.vnetHdr, tun.offloads, tun.fds[0]!) : (tracer ?? link);
    // limits.dials / dialsPerSource hold over every engine (the workers' and this one's TPROXY flows).
    const dialTable = queues.queues > 1 ? newDialTable(config.limits.dials) : null;
    engine = new Engine(config, engineLink, log, { selectionsPath: join(dirname(statePath), 'groups.json'), ruleSetDir: join(dirname(statePath), 'rulesets'), dialTable: dialTable === null ? null : new SharedDialTable(dialTable) });
    if (tracer !== null) engine.stack.observeDrops(tracer);
    const e = engine;
    const device = tun;
    const tunStats = (): ReturnType<TunDevice['stats']> => workers?.pool.tunStats() ?? device.stats();
    await startObserve({ engine: e, link, tun: tunStats, classifier: () => classifier, api: api !== null, metricsServer, stack: () => workers?.stackStats() ?? e.stack.stats, dnsTally: () => (workers !== null ? workers.dnsTally() : (e.dnsServer?.queryTally ?? null)) });
    life.defer('accept', 'engine intake', () => e.stopAccepting());
    // The workers end their flows and stop before this thread's engine and before the TUN's fds close.
    // Their grace is what the stop's budget leaves after STOP_RESERVE_MS, as this thread's flows get below.
    if (queues.queues > 1)
      life.defer('flows', 'workers', async () => {
        const w = workers ?? (await startingWorkers);
        await w?.stop(life.remainingMs() - STOP_RESERVE_MS);
      });
    // The peers' FINs get what the stop's budget leaves after STOP_RESERVE_MS for the teardown.
    life.defer('flows', 'flows', () => e.endFlows(life.remainingMs() - STOP_RESERVE_MS));
    life.defer('outbounds', 'engine', () => e.stop());
    // The url rule sets' first download gives up waiting when the signal comes.
    await engine.start(life.abort);
    life.check();
    startHeapReducer(loadNative());
    const runWorkers = async (): Promise<void> => {
      // Spawning the worker threads is overtaken by a stop; the workers' stopper then waits for them to be up, within the deadline.
      const starting = startWorkers({ engine: e, device: tun, config, log, tap, selectionsPath: join(dirname(statePath), 'groups.json'), queues, steering: steering!, captureLink: link, dialTable: dialTable! });
      startingWorkers = starting.catch(() => null);
      workers = await life.until(starting);
      life.check();
    };
    if (queues.queues > 1 && !workersAfterDrop) await runWorkers();
    if (config.route.auto) {
      const stopRoute = await startAutoRoute(config.route, tun.name, statePath, log, life.abort);
      life.defer('system', 'auto-route', stopRoute);
      life.check();
      if (config.route.kernelPath) {
        const k = await startKernelPath(config, tun.name, statePath, log);
        kernelPath = k;
        life.defer('system', 'kernel path', () => k.stop());
        life.check();
      }
    }
    if (runsClassifier(config)) {
      const c = await startClassifier(config, tun.name, statePath, log, life.abort);
      classifier = c;
      life.defer('system', 'classifier', () => c.stop());
      life.check();
    }
    if (config.gateway.enabled && config.gateway.mode !== 'tun') {
      const listeners = await startTproxyListeners(config.gateway.tproxyPort, (s) => e.handleTransparent(s), log);
      life.defer('accept', 'tproxy listeners', () => closeServers(listeners));
      life.check();
      const udp = await startTproxyUdp(config.gateway.tproxyPort, (s) => e.handleTransparentUdp(s), log, e.tproxyUdpOptions());
      life.defer('accept', 'tproxy UDP', () => udp.close());
      life.check();
    }
    if (config.gateway.enabled) {
      const g = await startGateway(config, tun.name, statePath, log, classifier === null ? null : classifier.ebpf ? 'ebpf' : 'fallback', life.abort);
      gateway = g;
      life.defer('system', 'gateway', () => g.stop());
      life.check();
    }
    const serveControl = (): void => {
      if (api === null) return;
      startControl({
        engine: e,
        log,
        server: api.server,
        logs: new LogHub(tap, (line) => flowLineText(line, e.activeConfig.rules)),
        groups: new GlobalGroup(e, new ConfigGroups(e)),
        version: VERSION,
        startedAt: Date.now(),
        configName: where,
        statePath,
        secretFile: api.secretFile,
        config: () => e.activeConfig,
        tunStats,
        workers: workers?.view ?? null,
        classifierCounters: () => classifier?.counters() ?? null,
        classifierStatus: () => classifierStatus(),
        reload: () => reload(),
      });
    };
    // With run.user and worker threads, after the workers: their routes (/v1/workers) and view exist then.
    if (!workersAfterDrop) serveControl();
    // undici loads on first use (src/outbound/undici.ts); after the drop
    // run.user might not be able to read it, so it loads now.
    if (drop !== null) undici();
    if (drop !== null) dropPrivileges(drop, where, log);
    // The TUN's queues hold what arrived meanwhile (up to its txqueuelen); the workers drain them.
    if (workersAfterDrop) {
      await runWorkers();
      serveControl();
    }
  } catch (err) {
    // A step that gave up because of the signal (a system change that stopped between commands) is a stop too.
    if (err instanceof StopRequested || life.stopRequested) {
      log.info({ signal: err instanceof StopRequested ? err.signal : undefined, step: err instanceof StopRequested ? undefined : (err as Error).message }, 'stopping during start-up');
      return life.stop();
    }
    log.fatal({ err: (err as Error).message }, 'start-up failed');
    io.stderr.write(`sluice run: ${(err as Error).message}\n`);
    await life.stop();
    return 1;
  }
  running = engine;
  log.info({ tun: tun.name, mtu: tun.mtu, offloads: tun.offloads !== 0, dns: config.dns.hijack ? config.dns.mode : 'off', config: where, api: api?.listen ?? null, apiSecretFile: api?.secretFile ?? null, metrics: metricsAt }, 'ready');
  sdNotify(`READY=1\nSTATUS=serving on ${tun.name}`, log);
  const signal = await life.untilSignal();
  sdNotify('STOPPING=1', log);
  const final = await allCounters(engine);
  log.info({ signal, ...final.engine, openFlows: engine.openFlows, stack: final.stack.drops, icmp: final.icmp, classifier: classifierCounters() ?? undefined }, 'stopping');
  process.off('SIGUSR2', onUsr2);
  const code = await life.stop();
  process.off('SIGHUP', onHup);
  log.info({ code }, 'stopped');
  return code;
}

/** With route.auto, sluice's own sockets carry route.mark so the main table, not the TUN, routes them: direct outbounds without a mark get it. */
function withRouteMark(config: SluiceConfig, route: SluiceConfig['route']): SluiceConfig {
  if (!route.auto) return config;
  for (const o of config.outbounds) if (o.type === 'direct' && o.mark === null) o.mark = route.mark;
  return config;
}

/** Stops the listeners taking connections (the connections themselves are flows: the engine ends them). */
function closeServers(servers: net.Server[]): void {
  // Not waiting for close's callback: it comes only once every accepted connection has ended.
  for (const s of servers) s.close();
}
