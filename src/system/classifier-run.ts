/**
 * The eBPF classifier's life inside `sluice run` (config `classifier:`):
 * load it, install the policy routing that sends its marked packets into
 * the TUN (`TABLE: default dev TUN`, `fwmark TUNMARK lookup TABLE` at
 * route.priority, both families), attach it to the interfaces, fill its
 * maps from the policy, update them live on reload (no detach), and remove
 * it all on stop. Everything installed is recorded in the state file first,
 * so `sluice down` removes the tc filter and the rules after a kill -9.
 *
 * Where eBPF cannot be used (no object, EPERM, EINVAL, an old kernel) it
 * says so once and falls back to policy routing alone: every packet arriving
 * on the interfaces goes into the TUN (`iif IF lookup TABLE`) except
 * classifier.bypass (`to PREFIX lookup main`, one priority earlier), and
 * the engine applies the whole policy.
 *
 * With gateway mode (src/system/gateway.ts) the classifier attaches to
 * gateway.lan unless classifier.interfaces names others, and the gateway
 * manages forwarding. In mode tun the classifier's rule and routes above
 * are the steering (the gateway adds no `iif LAN` rule). In mode tproxy
 * the mark means "for the TPROXY listeners": the gateway's nftables rules
 * TPROXY only packets carrying classifier.tunMark, and the classifier
 * installs no route or rule (its fallback: nftables TPROXYs everything but
 * classifier.bypass).
 */
import { existsSync } from 'node:fs';
import type { SluiceConfig } from '../config/types.js';
import type { Logger } from '../engine/logger.js';
import { CLASSIFIER_OBJECT, TcClassifier, type ActionCounters, type AssignResult, type ClassifierAction, type SniCounter } from './classifier.js';
import { classifierTable, diffTables, sniDenySet, type ClassifierTable } from './classifier-policy.js';
import { findCollisions } from './preflight.js';
import { applyRouting, killSwitchRoutes, type RoutingPlan } from './routing.js';
import { runCommand, SystemStateError } from './exec.js';
import { emptyState, readState, removeState, writeState, type RouteEntry, type RuleEntry, type SystemState } from './state.js';
import { teardownState } from './teardown.js';

export interface RunningClassifier {
  /** Whether the eBPF program is attached (false: the policy-routing fallback). */
  readonly ebpf: boolean;
  /** Recomputes the tables from `config` (after a reload) and applies the difference live (the fallback: classifier.bypass's rules). */
  update(config: SluiceConfig): void | Promise<void>;
  counters(): Record<ClassifierAction, ActionCounters> | null;
  /** Socket-assignment outcomes (gateway.mode tproxy-ebpf), or null when the program does not assign. */
  assignCounters(): Record<AssignResult, number> | null;
  /** SNI / Host filter counters, or null when classifier.sni is off. */
  sniCounters(): Record<SniCounter, number> | null;
  /** Detaches, removes the rules and routes, deletes the state file. */
  stop(): Promise<void>;
}

const familyOf = (cidr: string): 4 | 6 => (cidr.includes(':') ? 6 : 4);

/** The classifier of this process's `sluice run`, while attached (one per process). */
let current: RunningClassifier | null = null;

/**
 * The live per-action packet and byte counters of the running classifier
 * (summed over CPUs, read from the kernel map on each call), or null when
 * no eBPF classifier is attached (not enabled, the fallback, stopped). The
 * one source for the SIGUSR2 `counters` line, the control-plane API
 * (/v1/ counters) and the Prometheus metrics
 * (sluice_classifier_packets_total{action}, ..._bytes_total{action}):
 * reading it costs a map lookup per action and adds no work per packet.
 */
export function classifierCounters(): Record<ClassifierAction, ActionCounters> | null {
  return current?.counters() ?? null;
}

/** The live socket-assignment counters of gateway.mode tproxy-ebpf (listener, flow, local, noListener, assignFailed, unsupported), or null. */
export function classifierAssignCounters(): Record<AssignResult, number> | null {
  return current?.assignCounters() ?? null;
}

/** Everything the running TC program counts, in one object (the API's /v1/ counters can serve it whole); null when none is attached. */
export interface ClassifierStatus {
  actions: Record<ClassifierAction, ActionCounters>;
  /** gateway.mode tproxy-ebpf only. */
  assign: Record<AssignResult, number> | null;
  /** classifier.sni only. */
  sni: Record<SniCounter, number> | null;
}

export function classifierStatus(): ClassifierStatus | null {
  const actions = current?.counters() ?? null;
  if (current === null || actions === null) return null;
  return { actions, assign: current.assignCounters(), sni: current.sniCounters() };
}

/** The live SNI / Host filter counters (classifier.sni): tlsAllowed, tlsBlocked, tlsUnseen, httpAllowed, httpBlocked, httpUnseen, quicUnseen, resets, serverResets; or null. */
export function classifierSniCounters(): Record<SniCounter, number> | null {
  return current?.sniCounters() ?? null;
}

/** Where the classifier attaches: classifier.interfaces, or gateway.lan when that is empty in gateway mode. */
export function classifierInterfaces(config: SluiceConfig): string[] {
  const c = config.classifier;
  return c.interfaces.length === 0 && config.gateway.enabled ? config.gateway.lan : c.interfaces;
}

/** Whether the classifier feeds the TPROXY listeners (gateway mode tproxy or tproxy-ebpf) rather than the TUN. */
export function classifierFeedsTproxy(config: SluiceConfig): boolean {
  return config.gateway.enabled && config.gateway.mode !== 'tun';
}

/** Whether the TC program hands flows to the listeners itself (bpf_sk_assign; gateway mode tproxy-ebpf). */
export function classifierAssigns(config: SluiceConfig): boolean {
  return config.gateway.enabled && config.gateway.mode === 'tproxy-ebpf';
}

/** Whether `sluice run` loads the TC program: the classifier, or gateway mode tproxy-ebpf (which needs it even without classifier.enabled). */
export function runsClassifier(config: SluiceConfig): boolean {
  return config.classifier.enabled || classifierAssigns(config);
}

/**
 * The classifier's marks: the TUN mark; in gateway mode tproxy the same mark
 * as the selector of the nftables TPROXY rule; in tproxy-ebpf the gateway's
 * tproxyMark (local delivery) and the listeners' port for bpf_sk_assign.
 */
function marks(config: SluiceConfig): { tunMark: number; tproxyMark: number; assignPort: number | null; sni: boolean } {
  const m = config.classifier.tunMark;
  const sni = config.classifier.enabled && config.classifier.sni;
  if (classifierAssigns(config)) return { tunMark: m, tproxyMark: config.gateway.tproxyMark, assignPort: config.gateway.tproxyPort, sni };
  return { tunMark: m, tproxyMark: classifierFeedsTproxy(config) ? m : 0, assignPort: null, sni };
}

/** Applies the SNI deny set live: new and changed names first, then removals. */
function applyDeny(live: TcClassifier, from: Map<string, number>, to: Map<string, number>): void {
  for (const [n, bits] of to) if (from.get(n) !== bits) live.setDeny(n, bits);
  for (const n of from.keys()) if (!to.has(n)) live.deleteDeny(n);
}

/** The tables: from the policy with classifier.enabled; else (tproxy-ebpf alone) everything to the listeners. */
function tableFor(config: SluiceConfig): ClassifierTable {
  if (config.classifier.enabled) return classifierTable(config);
  return { defaultAction: 'tproxy', prefixes: new Map(), ports: [], inexpressible: 0, truncated: 0 };
}

/** The routes and rules for the eBPF path (`fallback` false) or the policy-routing fallback. */
export function planClassifierRouting(config: SluiceConfig, tun: string, fallback: boolean): RoutingPlan {
  // TPROXY needs no route into the TUN: nftables diverts in prerouting (src/system/gateway.ts).
  if (classifierFeedsTproxy(config)) return { routes: [], rules: [], nft: null };
  const { table, priority } = config.route;
  const routes: RouteEntry[] = [
    { family: 4, dst: '0.0.0.0/0', dev: tun, table },
    { family: 6, dst: '::/0', dev: tun, table },
    // Kill switch (src/system/routing.ts): marked or LAN traffic is refused, not forwarded, once the TUN is gone.
    ...(config.route.killSwitch ? killSwitchRoutes(['0.0.0.0/0', '::/0'], table) : []),
  ];
  const rules: RuleEntry[] = [];
  for (const family of [4, 6] as const) {
    if (!fallback) {
      rules.push({ family, priority, selector: ['fwmark', `0x${config.classifier.tunMark.toString(16)}`, 'lookup', String(table)] });
      continue;
    }
    for (const p of config.classifier.bypass.filter((c) => familyOf(c) === family)) {
      rules.push({ family, priority: priority - 1, selector: ['to', p, 'lookup', 'main'] });
    }
    for (const ifname of classifierInterfaces(config)) rules.push({ family, priority, selector: ['iif', ifname, 'lookup', String(table)] });
  }
  return { routes, rules, nft: null };
}

/**
 * Checks that the interfaces exist and the table, priority and mark are
 * free; throws PREFLIGHT_COLLISION naming the config field. `where` names the config.
 */
export async function checkClassifier(config: SluiceConfig, where: string): Promise<void> {
  const problems: string[] = [];
  const field = config.classifier.interfaces.length === 0 ? 'gateway.lan' : 'classifier.interfaces';
  classifierInterfaces(config).forEach((ifname, i) => {
    if (!existsSync(`/sys/class/net/${ifname}`)) problems.push(`${where}: ${field}[${i}]: no interface named "${ifname}"`);
  });
  const route = { ...config.route, mark: config.classifier.tunMark, include: ['0.0.0.0/0', '::/0'], exclude: config.classifier.bypass, strictDns: false };
  for (const c of await findCollisions(route)) {
    const field = c.field === 'route.mark' ? 'classifier.tunMark' : c.field;
    problems.push(`${where}: ${field}: ${c.message}`);
  }
  if (problems.length > 0) throw new SystemStateError('PREFLIGHT_COLLISION', `${problems.join('\n')}\nnothing was installed`);
}

/** bpf/classifier.o, or SLUICE_BPF_OBJECT (packagers installing it elsewhere; tests of the fallback). */
export function classifierObject(): string {
  const env = process.env.SLUICE_BPF_OBJECT;
  return env !== undefined && env !== '' ? env : CLASSIFIER_OBJECT;
}

function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: string };
  return typeof e.code === 'string' && !(e.message ?? '').includes(e.code) ? `${e.code}: ${e.message ?? ''}` : (e.message ?? String(err));
}

/** Loads and attaches the classifier (or sets up the fallback); call after the TUN exists and checkClassifier passed. */
export async function startClassifier(config: SluiceConfig, tun: string, statePath: string, log: Logger, signal?: AbortSignal): Promise<RunningClassifier> {
  const c = config.classifier;
  const interfaces = classifierInterfaces(config);
  const mk = marks(config);
  let table: ClassifierTable = tableFor(config);
  const denySet = sniDenySet(config);
  let deny = denySet.names;
  let bpf: TcClassifier | null = null;
  try {
    bpf = TcClassifier.load({ defaultAction: table.defaultAction, ...mk }, classifierObject());
  } catch (err) {
    log.warn(
      { reason: describe(err), interfaces },
      classifierAssigns(config)
        ? 'eBPF socket assignment unavailable; falling back to nftables TPROXY (gateway.mode tproxy)'
        : classifierFeedsTproxy(config)
        ? 'eBPF classifier unavailable; falling back to nftables alone (everything arriving on the interfaces is TPROXYed, except classifier.bypass)'
        : 'eBPF classifier unavailable; falling back to policy routing alone (everything arriving on the interfaces goes through the TUN, except classifier.bypass)',
    );
  }
  let state: SystemState;
  try {
    state = await applyRouting(planClassifierRouting(config, tun, bpf === null), statePath, undefined, signal);
  } catch (err) {
    bpf?.close();
    throw err;
  }
  const teardown = async (): Promise<void> => {
    await teardownState(state);
    removeState(statePath);
  };
  if (bpf === null) {
    log.info({ state: statePath, interfaces, rules: state.rules.length }, 'classifier fallback installed');
    return fallbackHandle(teardown, state, config, tun, statePath, log);
  }
  const live = bpf;
  try {
    // Recorded before attaching (a superset of what exists); the clsact qdisc is ours when it was not there before.
    state.tcFilters = [];
    for (const ifname of interfaces) {
      const q = await runCommand(['tc', 'qdisc', 'show', 'dev', ifname]);
      state.tcFilters.push({ ifname, direction: c.direction, createdQdisc: q.code === 0 && !/\bclsact\b/.test(q.stdout) });
    }
    writeState(statePath, state);
    for (const ifname of interfaces) live.attach(ifname, c.direction);
    for (const [cidr, action] of table.prefixes) live.setPrefix(cidr, action);
    for (const p of table.ports) live.setPort(p.protocol, p.port, p.action);
    if (mk.sni) applyDeny(live, new Map(), deny);
  } catch (err) {
    live.close();
    try {
      await teardown();
    } catch (e) {
      log.error({ err: (e as Error).message, state: statePath }, 'could not remove the classifier state; run "sluice down"');
    }
    log.warn({ reason: describe(err), interfaces }, 'eBPF classifier could not be attached; falling back to policy routing alone');
    const fb = await applyRouting(planClassifierRouting(config, tun, true), statePath);
    return fallbackHandle(
      async () => {
        await teardownState(fb);
        removeState(statePath);
      },
      fb,
      config,
      tun,
      statePath,
      log,
    );
  }
  log.info(
    { state: statePath, interfaces, direction: c.direction, steered: classifierFeedsTproxy(config) ? 'tproxy' : 'tun', tunMark: c.tunMark, default: table.defaultAction, prefixes: table.prefixes.size, inexpressibleRules: table.inexpressible, truncated: table.truncated, ...(mk.sni ? { sniDenied: deny.size, sniTruncated: denySet.truncated, sniSkipped: denySet.skipped } : {}) },
    'classifier attached',
  );
  let stopped = false;
  const handle: RunningClassifier = {
    ebpf: true,
    update(next: SluiceConfig): void {
      if (stopped) return;
      const t = tableFor(next);
      const d = diffTables(table.prefixes, t.prefixes);
      try {
        // New and changed first, then removals: a covered address never falls through to the default mid-update.
        for (const [cidr, action] of d.set) live.setPrefix(cidr, action);
        for (const cidr of d.remove) live.deletePrefix(cidr);
        if (t.defaultAction !== table.defaultAction) live.configure({ defaultAction: t.defaultAction, ...mk });
        for (const p of table.ports) if (!t.ports.some((q) => q.protocol === p.protocol && q.port === p.port)) live.deletePort(p.protocol, p.port);
        for (const p of t.ports) live.setPort(p.protocol, p.port, p.action);
        table = t;
        if (mk.sni) {
          const next2 = sniDenySet(next).names;
          applyDeny(live, deny, next2);
          deny = next2;
        }
        log.info({ set: d.set.length, removed: d.remove.length, prefixes: t.prefixes.size, default: t.defaultAction, ...(mk.sni ? { sniDenied: deny.size } : {}) }, 'classifier updated');
      } catch (err) {
        log.error({ err: describe(err) }, 'classifier update failed; some prefixes may keep their previous action');
      }
    },
    counters: () => (stopped ? null : live.counters()),
    assignCounters: () => (stopped || mk.assignPort === null ? null : live.assignCounters()),
    sniCounters: () => (stopped || !mk.sni ? null : live.sniCounters()),
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      if (current === handle) current = null;
      live.close();
      await teardown();
      log.info({ state: statePath }, 'classifier detached');
    },
  };
  current = handle;
  return handle;
}

const ruleKey = (r: RuleEntry): string => JSON.stringify(r);

/**
 * The fallback's live part of a reload: classifier.bypass's `to PREFIX
 * lookup main` rules (mode tun; in mode tproxy the gateway's nftables table
 * holds them, src/system/lifecycle.ts). New rules are recorded in the state
 * file, then added; removed ones are deleted, then taken out of it, so the
 * file always lists a superset of what is installed. `state` is the
 * fallback's own record (its teardown removes what it lists).
 */
async function updateFallbackRules(state: SystemState, statePath: string, from: SluiceConfig, to: SluiceConfig, tun: string): Promise<{ added: number; removed: number }> {
  const before = planClassifierRouting(from, tun, true).rules;
  const after = planClassifierRouting(to, tun, true).rules;
  const add = after.filter((r) => !before.some((b) => ruleKey(b) === ruleKey(r)));
  const del = before.filter((r) => !after.some((a) => ruleKey(a) === ruleKey(r)));
  if (add.length === 0 && del.length === 0) return { added: 0, removed: 0 };
  const record = (change: (rules: RuleEntry[]) => RuleEntry[]): void => {
    state.rules = change(state.rules);
    const file = readState(statePath) ?? emptyState();
    file.rules = change(file.rules);
    writeState(statePath, file);
  };
  record((rules) => [...rules, ...add]);
  for (const family of [4, 6] as const) {
    const lines = [
      ...add.filter((r) => r.family === family).map((r) => `rule add ${r.selector.join(' ')} priority ${r.priority}`),
      ...del.filter((r) => r.family === family).map((r) => `rule del ${r.selector.join(' ')} priority ${r.priority}`),
    ];
    if (lines.length === 0) continue;
    const r = await runCommand(family === 6 ? ['ip', '-6', '-batch', '-'] : ['ip', '-batch', '-'], lines.join('\n') + '\n');
    if (r.code !== 0) throw new SystemStateError('APPLY_FAILED', `ip${family === 6 ? ' -6' : ''} rule (classifier.bypass): ${r.stderr.trim() || `exit ${r.code}`}`);
  }
  const gone = new Set(del.map(ruleKey));
  record((rules) => rules.filter((r) => !gone.has(ruleKey(r))));
  return { added: add.length, removed: del.length };
}

function fallbackHandle(teardown: () => Promise<void>, state: SystemState, config: SluiceConfig, tun: string, statePath: string, log: Logger): RunningClassifier {
  let stopped = false;
  let running = config;
  return {
    ebpf: false,
    async update(next: SluiceConfig): Promise<void> {
      if (stopped) return;
      try {
        const d = await updateFallbackRules(state, statePath, running, next, tun);
        running = next;
        if (d.added + d.removed > 0) log.info({ ...d, bypass: next.classifier.bypass.length }, 'classifier fallback updated');
      } catch (err) {
        log.error({ err: describe(err) }, 'classifier fallback update failed; some bypass rules may be as before');
      }
    },
    counters: () => null,
    assignCounters: () => null,
    sniCounters: () => null,
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      await teardown();
    },
  };
}
