/**
 * What `sluice run` does with the system state around the engine's life:
 * remove a killed run's leftovers first, check and install the auto-route,
 * and hand back the function that removes it again.
 */
import { SluiceError } from '../errors.js';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import type { RouteConfig, SluiceConfig } from '../config/types.js';
import { applyGateway, planGateway, preflightGateway, type GatewayClassifier } from './gateway.js';
import type { Logger } from '../engine/logger.js';
import { preflight } from './preflight.js';
import { applyRouting, planRouting } from './routing.js';
import { isEmptyState, readState, removeState } from './state.js';
import { teardownFile, teardownState } from './teardown.js';

/** Removes what the state file at `statePath` lists (a crashed run's leftovers), if anything. */
export async function cleanLeftovers(statePath: string, log: Logger): Promise<void> {
  const result = await teardownFile(statePath);
  if (result !== null) log.warn({ state: statePath, ...result }, 'removed routing state left by an earlier run');
}

/**
 * Checks for collisions with what is already on the machine, naming the
 * config field; run before anything is opened. `where` names the config.
 */
export async function checkAutoRoute(route: RouteConfig, where: string): Promise<void> {
  await preflight(route, where);
}

/**
 * Interfaces (not lo, not the TUN) where IPv4 reverse-path filtering is
 * strict: the kernel applies max(conf.all.rp_filter, conf.IF.rp_filter),
 * and 1 is strict (RFC 3704 strict reverse path forwarding).
 */
export function strictRpFilterInterfaces(tun: string, sysctlDir = '/proc/sys/net/ipv4/conf'): string[] {
  const read = (name: string): number => {
    try {
      return Number(readFileSync(`${sysctlDir}/${name}/rp_filter`, 'utf8').trim());
    } catch {
      return 0;
    }
  };
  let names: string[];
  try {
    names = readdirSync(sysctlDir);
  } catch {
    return [];
  }
  const all = read('all');
  return names.filter((n) => n !== 'all' && n !== 'default' && n !== 'lo' && n !== tun && Math.max(all, read(n)) === 1).sort();
}

/**
 * Installs the routes, rules and nftables table (after checkAutoRoute) and
 * returns the function that removes them.
 */
export async function startAutoRoute(route: RouteConfig, tun: string, statePath: string, log: Logger, signal?: AbortSignal): Promise<() => Promise<void>> {
  const plan = planRouting(route, tun);
  const state = await applyRouting(plan, statePath, undefined, signal);
  log.info({ state: statePath, table: route.table, priority: route.priority, mark: route.mark, routes: state.routes.length, rules: state.rules.length, strictDns: route.strictDns }, 'auto-route installed');
  // Replies carry no mark, so their reverse route is the TUN: strict rp_filter drops them (docs/fast-path.md, "rp_filter").
  const strict = strictRpFilterInterfaces(tun);
  if (strict.length > 0) {
    log.warn(
      { interfaces: strict },
      `strict reverse-path filtering (rp_filter 1) on ${strict.join(', ')} drops the replies of sluice's direct connections${route.kernelPath ? ' and of route.kernelPath flows' : ''} (their reverse route is the TUN); set net.ipv4.conf.all.rp_filter and the interface's to 2 (loose) or 0`,
    );
  }
  let done = false;
  return async () => {
    if (done) return;
    done = true;
    const result = await teardownState(state);
    removeState(statePath);
    log.info({ state: statePath, ...result }, 'auto-route removed');
  };
}

/** Gateway mode: checks collisions of what `gateway:` needs (before anything is opened). */
export async function checkGateway(config: SluiceConfig, where: string): Promise<void> {
  await preflightGateway(planGateway(config, config.tun.name), config, where);
}

/** The running gateway: its stopper, and the live part of a reload. */
export interface RunningGateway {
  stop(): Promise<void>;
  /**
   * Applies what a reload may change in the gateway's own rules: in the
   * classifier's no-eBPF fallback of mode tproxy, classifier.bypass (the
   * `accept` lines ahead of the TPROXY rules). Everything else the gateway
   * installs follows settings a reload does not change.
   */
  update(config: SluiceConfig): Promise<void>;
}

/**
 * Gateway mode: turns forwarding on and installs the rules, routes and
 * nftables table of `gateway:` (after checkGateway and startAutoRoute).
 */
export async function startGateway(config: SluiceConfig, tun: string, statePath: string, log: Logger, classifier: GatewayClassifier = null, signal?: AbortSignal): Promise<RunningGateway> {
  const plan = planGateway(config, tun, classifier);
  const installed = await applyGateway(plan, statePath, undefined, signal);
  const s = installed.state;
  log.info({ state: statePath, mode: config.gateway.mode, classifier: classifier ?? undefined, lan: config.gateway.lan, priority: plan.priority, rules: s.rules.length, routes: s.routes.length, nftTables: s.nftTables.length, sysctls: s.sysctls?.length ?? 0 }, 'gateway installed');
  return {
    async stop() {
      const result = await installed.stop();
      log.info({ state: statePath, ...result }, 'gateway removed');
    },
    async update(next) {
      try {
        if (await installed.replaceNft(planGateway(next, tun, classifier).nft)) log.info({ bypass: next.classifier.bypass.length }, 'gateway nftables updated');
      } catch (err) {
        log.error({ err: (err as Error).message }, 'gateway update failed; the previous rules stay');
      }
    },
  };
}

/**
 * Where a stopper runs in the ordered shutdown of `sluice run`:
 *   accept    stop taking new flows (TPROXY listeners, the engine's intake);
 *   flows     end the flows still open (each logged with close "shutdown");
 *   outbounds close what the flows used (UDP associations, DoH agents, L7
 *             pools, the stack, the TUN, timers);
 *   system    remove the installed system state (gateway, classifier, auto-route;
 *             last registered first), then whatever the state file still lists.
 */
export type StopPhase = 'accept' | 'flows' | 'outbounds' | 'system';
const PHASES: readonly StopPhase[] = ['accept', 'flows', 'outbounds', 'system'];

/** Thrown by RunLifecycle.check() when a stop was asked for during start-up. */
export class StopRequested extends SluiceError {
  readonly code = 'SLUICE_STOPPED';
  constructor(readonly signal: string) {
    super(`stopped by ${signal} during start-up`);
    this.name = 'StopRequested';
  }
}

interface Stopper {
  phase: StopPhase;
  name: string;
  fn: () => unknown;
}

export interface RunLifecycleOptions {
  statePath: string;
  log: Logger;
  /** Where a stopper's failure is also written (sluice run's stderr). */
  stderr: { write(text: string): unknown };
  /** The stop's budget, counted from the signal: after this, what is still open is logged and the process exits anyway. Default 4000 ms. */
  deadlineMs?: number;
}

/**
 * What still keeps the event loop alive: a count per kind of resource
 * (process.getActiveResourcesInfo(): TCPSocketWrap, UDPWRAP, Timeout, ...)
 * and the addresses of up to 16 sockets (process._getActiveHandles).
 */
export function activeHandleSummary(): Record<string, number | string[]> {
  const out: Record<string, number | string[]> = {};
  for (const kind of process.getActiveResourcesInfo()) out[kind] = ((out[kind] as number | undefined) ?? 0) + 1;
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
  const sockets: string[] = [];
  for (const h of handles) {
    const o = h as { constructor?: { name?: string }; fd?: number; remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number; address?: () => { address: string; port: number } };
    const kind = o.constructor?.name ?? typeof h;
    // stdio streams are always there and say nothing.
    if (o.fd !== undefined && o.fd >= 0 && o.fd <= 2) continue;
    if (sockets.length < 16) {
      if (o.remoteAddress !== undefined) sockets.push(`${kind} ${o.localAddress ?? '?'}:${o.localPort ?? '?'} -> ${o.remoteAddress}:${o.remotePort ?? '?'}`);
      else if (typeof o.address === 'function') {
        try {
          const a = o.address();
          sockets.push(`${kind} ${a.address}:${a.port}`);
        } catch {
          // an unbound socket has no address
        }
      }
    }
  }
  if (sockets.length > 0) out.sockets = sockets;
  return out;
}

/**
 * The life of one `sluice run` around start-up and stop. The SIGINT and
 * SIGTERM handlers are installed before anything is opened, so a signal at
 * any point of start-up stops cleanly: each start-up step is followed by
 * check(), which throws StopRequested, and everything registered with
 * defer() so far is undone in phase order. A step that waits (a download,
 * a system change of several commands) takes `abort`, aborted the moment
 * the signal arrives, and gives up at once (until() races any other wait
 * against it), so the stop never waits for a step to run its course.
 *
 * The stop is bounded from the signal's arrival, not from when the orderly
 * path begins: when the process has not ended `deadlineMs` after the
 * signal (a stuck start-up step or stopper, a handle something forgot to
 * close), the open handles are logged, the system state is removed from
 * the state file, and the process exits; a second signal does the same at
 * once.
 */
export class RunLifecycle {
  private readonly stoppers: Stopper[] = [];
  private readonly log: Logger;
  private readonly statePath: string;
  private readonly stderr: { write(text: string): unknown };
  private readonly deadlineMs: number;
  private signalName: string | null;
  /** performance.now() when the first signal (or a stop without one) arrived. */
  private stopAt: number | null = null;
  private readonly aborter = new AbortController();
  private deadline: NodeJS.Timeout | null = null;
  private wake: ((signal: string) => void) | null = null;
  private stopping: Promise<number> | null = null;
  private exitCode = 0;
  private readonly onSignal: (signal: NodeJS.Signals) => void;
  private forced = false;
  /** The stopper running now (for the deadline line). */
  private current: string | null = null;

  constructor(o: RunLifecycleOptions) {
    this.log = o.log;
    this.statePath = o.statePath;
    this.stderr = o.stderr;
    this.deadlineMs = o.deadlineMs ?? 4000;
    this.signalName = null;
    this.onSignal = (signal) => this.signal(signal);
    // Added while the early handlers are still there, which the caller removes
    // after (takeOver): a signal's listener count never drops to 0, which
    // would restore the default action for a moment and lose a signal caught
    // but not yet dispatched to the old listeners.
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  /** Takes over a signal the early handlers recorded (call after removing them). */
  takeOver(early: string | null): void {
    if (early !== null) this.signal(early);
  }

  /** Whether a stop has been asked for. */
  get stopRequested(): boolean {
    return this.signalName !== null;
  }

  /** Between start-up steps: throws StopRequested once a signal has arrived. */
  check(): void {
    if (this.signalName !== null) throw new StopRequested(this.signalName);
  }

  /** Aborted the moment SIGINT/SIGTERM arrives: start-up steps that wait give up on it. */
  get abort(): AbortSignal {
    return this.aborter.signal;
  }

  /** Milliseconds left of the stop's budget (the full budget before any signal). */
  remainingMs(): number {
    return this.stopAt === null ? this.deadlineMs : Math.max(0, this.stopAt + this.deadlineMs - performance.now());
  }

  /**
   * A start-up wait the stop overtakes: resolves as `step` does, or throws
   * StopRequested as soon as a signal arrives (at once if one has). What
   * `step` still does in the background must not change system state (the
   * steps that do take `abort` themselves and stop between commands).
   */
  async until<T>(step: Promise<T>): Promise<T> {
    this.check();
    const signal = this.aborter.signal;
    let onAbort: (() => void) | null = null;
    const stopped = new Promise<never>((_, reject) => {
      onAbort = () => reject(new StopRequested(this.signalName ?? 'stop'));
      signal.addEventListener('abort', onAbort, { once: true });
    });
    // The step's own rejection after the race is lost is not unhandled.
    step.catch(() => {});
    try {
      return await Promise.race([step, stopped]);
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
  }

  /** Registers how to undo something just opened or installed. */
  defer(phase: StopPhase, name: string, fn: () => unknown): void {
    this.stoppers.push({ phase, name, fn });
  }

  /** Resolves with the signal's name when SIGINT/SIGTERM arrives (at once if one already has). */
  untilSignal(): Promise<string> {
    if (this.signalName !== null) return Promise.resolve(this.signalName);
    return new Promise((resolve) => (this.wake = resolve));
  }

  private signal(signal: string): void {
    if (this.signalName === null) {
      this.signalName = signal;
      this.armDeadline(`not ended ${this.deadlineMs} ms after ${signal}`);
      this.aborter.abort();
      const wake = this.wake;
      this.wake = null;
      wake?.(signal);
      return;
    }
    // A second signal (stopping, or still in a start-up step): no more waiting.
    void this.force(`second signal ${signal}`);
  }

  /**
   * The hard deadline, `deadlineMs` from now (the signal's arrival, or the
   * stop's start when no signal came: a failed start-up). An unref'd timer:
   * it fires only while something still holds the process.
   */
  private armDeadline(why: string): void {
    if (this.deadline !== null) return;
    this.stopAt = performance.now();
    this.deadline = setTimeout(() => void this.force(why), this.deadlineMs);
    this.deadline.unref();
  }

  /**
   * Runs the ordered stop once (later calls get the same promise); resolves
   * with the exit code: 0, or 1 when some state could not be removed.
   * The deadline runs from the signal (armed then), or from now when the
   * stop comes without one.
   */
  stop(): Promise<number> {
    if (this.stopping !== null) return this.stopping;
    this.armDeadline(`not ended ${this.deadlineMs} ms after the stop began`);
    this.stopping = this.runStoppers().then(() => {
      // Further signals during the last moments are ignored rather than fatal
      // (added first: the listener count never drops to 0).
      process.on('SIGINT', noop);
      process.on('SIGTERM', noop);
      process.off('SIGINT', this.onSignal);
      process.off('SIGTERM', this.onSignal);
      return this.exitCode;
    });
    return this.stopping;
  }

  private async runStoppers(): Promise<void> {
    for (const phase of PHASES) {
      const list = this.stoppers.filter((s) => s.phase === phase);
      // System state: last installed, first removed (gateway, classifier, auto-route).
      if (phase === 'system') list.reverse();
      for (const s of list) {
        this.stoppers.splice(this.stoppers.indexOf(s), 1);
        this.current = s.name;
        try {
          await s.fn();
        } catch (err) {
          this.fail(s.name, err);
        }
        this.current = null;
      }
      if (phase === 'system') await this.teardownLeftState();
    }
  }

  private fail(what: string, err: unknown): void {
    const message = (err as Error)?.message ?? String(err);
    this.log.error({ step: what, err: message }, 'stop step failed');
    this.stderr.write(`sluice run: ${message}\n`);
    this.exitCode = 1;
  }

  /** What this run's state file still lists (a step interrupted mid-way, a stopper that failed): removed too. */
  private async teardownLeftState(): Promise<void> {
    try {
      const left = readState(this.statePath);
      if (left === null || left.pid !== process.pid) return;
      const result = isEmptyState(left) ? { removed: 0, alreadyGone: 0 } : await teardownState(left);
      removeState(this.statePath);
      if (result.removed + result.alreadyGone > 0) this.log.info({ state: this.statePath, ...result }, 'removed what the state file still listed');
    } catch (err) {
      this.fail('state file', err);
    }
  }

  /** The hard path: say what is still open, remove the system state, exit. */
  private async force(why: string): Promise<void> {
    if (this.forced) return;
    this.forced = true;
    const exit = setTimeout(() => process.exit(1), 800);
    exit.unref();
    this.log.warn({ reason: why, open: activeHandleSummary(), stuckIn: this.current, pendingStopSteps: this.stoppers.map((s) => s.name) }, 'stop deadline: exiting with resources still open');
    const system = this.stoppers.filter((s) => s.phase === 'system').reverse();
    for (const s of system) {
      this.stoppers.splice(this.stoppers.indexOf(s), 1);
      try {
        await s.fn();
      } catch (err) {
        this.fail(s.name, err);
      }
    }
    await this.teardownLeftState();
    process.exit(this.exitCode);
  }
}

function noop(): void {}

/**
 * A tun.name already taken by an interface that is not a TUN device (a
 * veth, a bridge) makes TUNSETIFF fail with a bare EINVAL; say what holds
 * the name instead. `where` names the config. Returns null when the name is free or a TUN.
 */
export function tunNameProblem(name: string, where: string): string | null {
  if (name.includes('%') || !existsSync(`/sys/class/net/${name}`)) return null;
  if (existsSync(`/sys/class/net/${name}/tun_flags`)) return null;
  return `${where}: tun.name: interface ${name} exists and is not a TUN device (type ${linkKind(name)}); pick another tun.name or remove the interface`;
}

/** The link's kind as `ip -d link` names it (veth, bridge, ...), else its ARPHRD type. */
function linkKind(name: string): string {
  try {
    const out = execFileSync('ip', ['-d', '-j', 'link', 'show', 'dev', name], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 2000 }).toString();
    const [link] = JSON.parse(out) as Array<{ link_type?: string; linkinfo?: { info_kind?: string } }>;
    const kind = link?.linkinfo?.info_kind ?? link?.link_type;
    if (kind !== undefined) return kind;
  } catch {
    // fall back to sysfs
  }
  try {
    return `ARPHRD ${readFileSync(`/sys/class/net/${name}/type`, 'utf8').trim()}`;
  } catch {
    return 'unknown';
  }
}
