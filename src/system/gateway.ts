/**
 * Gateway mode (`gateway:`): what `sluice run` installs so that traffic the
 * LAN forwards through this machine reaches sluice, and removes again.
 *
 *   - forwarding on (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding),
 *     the previous values recorded so they can be put back;
 *   - mode tun: `iif LAN lookup route.table` per LAN interface and family,
 *     with default routes via the TUN in route.table (route.auto, when on,
 *     already fills that table);
 *   - mode tproxy, and preserveSource in either mode: one nftables table
 *     `inet sluice_gw` whose prerouting chain marks packets of transparent
 *     sockets (`socket transparent 1`, replies to preserveSource sockets and
 *     established TPROXY flows) and, in tproxy mode, TPROXYs new TCP from the
 *     LAN to the listeners on gateway.tproxyPort; the mark is routed to
 *     local delivery by `fwmark MARK lookup route.table + 1` and
 *     `local default dev lo table route.table + 1` (the recipe of the
 *     kernel's Documentation/networking/tproxy.rst).
 *
 *   - TCP early demux off (net.ipv4.tcp_early_demux=0, this namespace only,
 *     the previous value recorded and restored like forwarding): early
 *     demux looks every arriving TCP segment up among this host's sockets
 *     before routing (ip_rcv_finish, ip6_rcv_finish), and a match makes
 *     forwarding drop the packet (ip_forward, ip6_forward: "skb->sk set").
 *     A gateway that has terminated TPROXY flows holds TIME-WAIT sockets
 *     with its clients' 4-tuples for 60 s; a client reusing such a port for
 *     a flow the kernel forwards (a tproxy gateway switched to tun, a
 *     prefix moved to the kernel path by a reload, or a bypass prefix) would
 *     have every SYN dropped until the TIME-WAIT expires. Off in every
 *     gateway mode: TPROXYed and socket-assigned packets carry their socket
 *     already (early demux skips them), so what it saved was a route lookup
 *     per segment of sluice's own upstream connections, little beside the
 *     relay's cost.
 *
 * With the eBPF classifier on (src/system/classifier-run.ts) the gateway
 * steers nothing itself: in mode tun the classifier's `fwmark` rule routes
 * what it marks into the TUN (no `iif LAN` rule, no routes here); in mode
 * tproxy the TPROXY rules take only packets carrying classifier.tunMark,
 * and the kill switch rejects only those. Everything else the kernel
 * forwards untouched. When the classifier fell back (no eBPF), mode tproxy
 * TPROXYs everything except classifier.bypass.
 *
 * The rules sit at route.priority, or at route.priority - 2 when route.auto
 * is on too (ahead of its exclude and `not fwmark` rules, which would
 * otherwise send the marked packets into the TUN).
 *
 * Everything is recorded in the same state file as the auto-route, before
 * it is applied, and removed by `sluice down` / the next run after a crash.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { SluiceConfig } from '../config/types.js';
import { runCommand, SystemStateError, type Runner } from './exec.js';
import { emptyState, readState, removeState, writeState, type NftTableEntry, type RouteEntry, type RuleEntry, type SysctlEntry, type SystemState } from './state.js';
import { routeAddLine, sysctlPath, teardownState } from './teardown.js';
import { killSwitchRoutes } from './routing.js';
import { parseRules, type Collision } from './preflight.js';

export const GATEWAY_NFT_TABLE: NftTableEntry = { family: 'inet', name: 'sluice_gw' };
export const FORWARDING_SYSCTLS = ['net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding'] as const;
/** Early demux of TCP (both families read it): off on a gateway, see the header. */
export const EARLY_DEMUX_SYSCTL = 'net.ipv4.tcp_early_demux';

/** A sysctl the gateway sets; `optional`: skipped when this kernel does not have it. */
export interface GatewaySysctl {
  key: string;
  value: string;
  optional?: boolean;
}

/**
 * Writing net.ipv4.ip_forward (or net.ipv6.conf.all.forwarding) sets the
 * forwarding flag of every interface and of `default` of that family
 * (devinet.c inet_forward_change, addrconf.c addrconf_forward_change), so
 * putting the global value back alone would lose per-interface settings
 * (conf.wan0.forwarding=1 becomes 0). These are the per-interface flags to
 * record, as SysctlEntry keys, with their current values; in sysctl(8)'s
 * convention a "/" in a key stands for a "." in the interface name (eth0.100).
 */
export function perInterfaceForwarding(globalKey: string): SysctlEntry[] {
  const family = globalKey.startsWith('net.ipv6.') ? 'ipv6' : 'ipv4';
  let names: string[];
  try {
    names = readdirSync(`/proc/sys/net/${family}/conf`);
  } catch {
    return [];
  }
  const out: SysctlEntry[] = [];
  for (const name of names.sort()) {
    if (name === 'all') continue; // the global flag itself (ipv4: the same as ip_forward)
    const key = `net.${family}.conf.${name.replace(/\./g, '/')}.forwarding`;
    try {
      out.push({ key, value: readFileSync(sysctlPath(key), 'utf8').trim() });
    } catch {
      // the interface went away meanwhile
    }
  }
  return out;
}

/** A route of the plan; `local` routes deliver to this host (TPROXY), `unreachable` ones are the kill switch. */
export interface GatewayRoute extends Omit<RouteEntry, 'type'> {
  type?: 'local' | 'unreachable';
}

export interface GatewayPlan {
  /** Sysctls to set (forwarding on, TCP early demux off), the old values recorded first. */
  sysctls: GatewaySysctl[];
  routes: GatewayRoute[];
  rules: RuleEntry[];
  /** The `nft -f` script creating GATEWAY_NFT_TABLE, or null when not needed. */
  nft: string | null;
  /** Rule priority, table numbers used (for preflight). */
  priority: number;
  tunTable: number | null;
  localTable: number | null;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/** How the classifier runs beside the gateway: attached (eBPF), fallen back (policy routing / nftables alone), or not enabled. */
export type GatewayClassifier = 'ebpf' | 'fallback' | null;

/**
 * The mode that applies: tproxy-ebpf whose TC program could not be loaded
 * (the classifier's fallback) runs as nftables tproxy.
 */
export function effectiveMode(config: SluiceConfig, classifier: GatewayClassifier): 'tun' | 'tproxy' | 'tproxy-ebpf' {
  return config.gateway.mode === 'tproxy-ebpf' && classifier !== 'ebpf' ? 'tproxy' : config.gateway.mode;
}

/** How the classifier runs when the config alone is known (preflight): attached, if anything loads it. */
function expectedClassifier(config: SluiceConfig): GatewayClassifier {
  return config.classifier.enabled || config.gateway.mode === 'tproxy-ebpf' ? 'ebpf' : null;
}

/** What `config.gateway` asks for with the TUN named `tun`; pure. `classifier` defaults to what the config asks for. */
export function planGateway(config: SluiceConfig, tun: string, classifier: GatewayClassifier = expectedClassifier(config)): GatewayPlan {
  const { gateway: gw, route } = config;
  const mode = effectiveMode(config, classifier);
  const priority = route.auto ? route.priority - 2 : route.priority;
  const rules: RuleEntry[] = [];
  const routes: GatewayRoute[] = [];
  let tunTable: number | null = null;
  let localTable: number | null = null;
  // With the classifier, its own rule and routes (or its fallback's `iif` rules) steer into the TUN.
  if (mode === 'tun' && classifier === null) {
    tunTable = route.table;
    for (const family of [4, 6] as const) {
      for (const lan of gw.lan) rules.push({ family, priority, selector: ['iif', lan, 'lookup', String(route.table)] });
    }
    if (!route.auto) {
      routes.push({ family: 4, dst: '0.0.0.0/0', dev: tun, table: route.table }, { family: 6, dst: '::/0', dev: tun, table: route.table });
      // Kill switch (src/system/routing.ts): with route.auto its plan already holds them for the include prefixes.
      if (route.killSwitch) routes.push(...killSwitchRoutes(['0.0.0.0/0', '::/0'], route.table));
    }
  }
  const usesMark = mode !== 'tun' || gw.preserveSource;
  if (usesMark) {
    localTable = route.table + 1;
    for (const family of [4, 6] as const) {
      rules.push({ family, priority, selector: ['fwmark', hex(gw.tproxyMark), 'lookup', String(localTable)] });
      routes.push({ family, dst: family === 4 ? '0.0.0.0/0' : '::/0', dev: 'lo', table: localTable, type: 'local' });
    }
  }
  // tproxy-ebpf needs nftables only for preserveSource's replies (no TPROXY rule: the TC program assigns the sockets).
  const nft = mode === 'tproxy' || gw.preserveSource ? tproxyScript(config, classifier) : null;
  const sysctls: GatewaySysctl[] = [...FORWARDING_SYSCTLS.map((key) => ({ key, value: '1' })), { key: EARLY_DEMUX_SYSCTL, value: '0', optional: true }];
  return { sysctls, routes, rules, nft, priority, tunTable, localTable };
}

/** nftables set elements of `prefixes` of one family, or null when there is none. */
function prefixSet(prefixes: readonly string[], family: 4 | 6): string | null {
  const list = prefixes.filter((p) => p.includes(':') === (family === 6));
  return list.length === 0 ? null : `{ ${list.join(', ')} }`;
}

/**
 * The prerouting chain. `socket transparent 1` first: packets of an existing
 * transparent socket (established TPROXY flows and UDP sessions, replies to
 * preserveSource upstream sockets, TCP and UDP) are marked for local delivery without a TPROXY lookup.
 * Then, in tproxy mode, TCP and UDP from the LAN not addressed to this host
 * are diverted to the listeners (UDP: src/udp/tproxy.ts).
 */
export function tproxyScript(config: SluiceConfig, classifier: GatewayClassifier = null): string {
  const { gateway: gw } = config;
  const mark = hex(gw.tproxyMark);
  const lans = `{ ${gw.lan.map((l) => `"${l}"`).join(', ')} }`;
  const mode = effectiveMode(config, classifier);
  // With the eBPF classifier: only what it marked for sluice. Its fallback: everything but classifier.bypass.
  const selected = classifier === 'ebpf' ? `meta mark ${hex(config.classifier.tunMark)} ` : '';
  const bypass: string[] = [];
  if (classifier === 'fallback' && config.classifier.enabled) {
    const v4 = prefixSet(config.classifier.bypass, 4);
    const v6 = prefixSet(config.classifier.bypass, 6);
    if (v4 !== null) bypass.push(`    iifname ${lans} ip daddr ${v4} accept`);
    if (v6 !== null) bypass.push(`    iifname ${lans} ip6 daddr ${v6} accept`);
  }
  const lines = [
    `table ${GATEWAY_NFT_TABLE.family} ${GATEWAY_NFT_TABLE.name} {`,
    '  chain prerouting {',
    '    type filter hook prerouting priority mangle; policy accept;',
    `    meta l4proto tcp socket transparent 1 meta mark set ${mark} accept`,
    // UDP too (preserveSource's upstream sockets hold the client's own
    // address and port, src/outbound/direct.ts openTransparentUdp), but
    // never for what sluice writes into the TUN toward that same client
    // endpoint: that would be delivered back to the upstream socket, a loop.
    // Nor for UDP from the LAN: a TPROXY session's reply socket is bound to
    // the original destination before it is connected to its client, and
    // `socket` matches a bound, unconnected socket, so a burst of clients to
    // one destination would land on another client's new reply socket. The
    // tproxy statement below finds a connected reply socket itself and
    // passes over an unconnected one (its established lookup).
    `    meta l4proto udp iifname != { ${[config.tun.name, ...gw.lan].map((n) => `"${n}"`).join(', ')} } socket transparent 1 meta mark set ${mark} accept`,
  ];
  if (mode === 'tproxy') {
    lines.push(
      `    iifname ${lans} fib daddr type local accept`,
      ...bypass,
      // Port 0 is reserved (RFC 6335 6): refused here as a host without a
      // listener would (RST, ICMP port unreachable) rather than letting the
      // listener complete a handshake that no upstream can carry.
      `    iifname ${lans} ${selected}meta l4proto tcp th dport 0 reject with tcp reset`,
      `    iifname ${lans} ${selected}meta l4proto udp th dport 0 reject`,
      `    iifname ${lans} ${selected}meta l4proto tcp tproxy to :${gw.tproxyPort} meta mark set ${mark} accept`,
      `    iifname ${lans} ${selected}meta l4proto udp tproxy to :${gw.tproxyPort} meta mark set ${mark} accept`,
    );
  }
  lines.push('  }');
  if (mode === 'tproxy' && config.route.killSwitch) {
    // Kill switch: while sluice runs, every TCP and UDP packet from the LAN
    // is TPROXYed and delivered locally, so this chain never sees one. Once
    // sluice is gone the tproxy statement finds no socket and lets the
    // packet pass to forwarding: refused here instead of forwarded around
    // the policy (removed with the table by a clean stop or `sluice down`).
    lines.push(
      '  chain forward {',
      '    type filter hook forward priority filter; policy accept;',
      // The kernel path (the classifier left it unmarked, or classifier.bypass) is forwarded on purpose.
      ...bypass,
      `    iifname ${lans} ${selected}meta l4proto { tcp, udp } counter reject with icmpx host-unreachable`,
      '  }',
    );
  }
  lines.push('}', '');
  return lines.join('\n');
}


/** What on the machine already uses the priority, tables, mark or nftables table the plan needs. */
export async function findGatewayCollisions(plan: GatewayPlan, config: SluiceConfig, runner: Runner = runCommand): Promise<Collision[]> {
  const found: Collision[] = [];
  const mark = hex(config.gateway.tproxyMark);
  const tables = [plan.tunTable, plan.localTable].filter((t): t is number => t !== null && !(config.route.auto && t === config.route.table));
  for (const family of [4, 6] as const) {
    const ip = family === 6 ? ['ip', '-6'] : ['ip'];
    const label = family === 6 ? 'ip -6 rule' : 'ip rule';
    const rules = await runner([...ip, 'rule', 'show']);
    if (rules.code !== 0) throw new SystemStateError('PREFLIGHT_COLLISION', `${label} show failed: ${rules.stderr.trim()}`);
    for (const r of parseRules(rules.stdout)) {
      if (r.priority === plan.priority) {
        found.push({ field: 'route.priority', message: `the gateway's rules use priority ${plan.priority}${config.route.auto ? ' (route.priority - 2 with route.auto)' : ''}, already used by "${label}" entry "${r.priority}: ${r.text}"; pick a free priority` });
      }
      if (plan.localTable !== null && new RegExp(`\\bfwmark ${mark}\\b`).test(r.text)) {
        found.push({ field: 'gateway.tproxyMark', message: `fwmark ${mark} is already used by "${label}" entry "${r.priority}: ${r.text}"; pick another mark` });
      }
      for (const t of tables) {
        if (new RegExp(`\\b(?:lookup|table) ${t}\\b`).test(r.text)) {
          found.push({ field: 'route.table', message: `the gateway needs table ${t}${t === plan.localTable ? ' (route.table + 1)' : ''}, already looked up by "${label}" entry "${r.priority}: ${r.text}"; pick a free table` });
        }
      }
    }
    for (const t of tables) {
      const routes = await runner([...ip, 'route', 'show', 'table', String(t)]);
      const first = routes.stdout.trim().split('\n')[0] ?? '';
      if (routes.code === 0 && first !== '') {
        found.push({ field: 'route.table', message: `the gateway needs table ${t}${t === plan.localTable ? ' (route.table + 1)' : ''} empty, but it holds ${family === 6 ? 'IPv6 ' : ''}routes (first: "${first}"); pick an empty table` });
      }
    }
  }
  if (plan.nft !== null) {
    const nft = await runner(['nft', 'list', 'table', GATEWAY_NFT_TABLE.family, GATEWAY_NFT_TABLE.name]);
    if (nft.code === 0) {
      found.push({ field: 'gateway.mode', message: `an nftables table "${GATEWAY_NFT_TABLE.family} ${GATEWAY_NFT_TABLE.name}" already exists (left by a run whose state file is gone?); remove it with "nft delete table ${GATEWAY_NFT_TABLE.family} ${GATEWAY_NFT_TABLE.name}"` });
    } else if (nft.code === 127) {
      found.push({ field: 'gateway.mode', message: `needs nft(8), which is not installed: ${nft.stderr.trim()}` });
    }
  }
  return found;
}

export async function preflightGateway(plan: GatewayPlan, config: SluiceConfig, where: string, runner: Runner = runCommand): Promise<void> {
  const found = await findGatewayCollisions(plan, config, runner);
  if (found.length === 0) return;
  throw new SystemStateError('PREFLIGHT_COLLISION', found.map((c) => `${where}: ${c.field}: ${c.message}`).join('\n') + '\nnothing was installed');
}

function ipLines(plan: GatewayPlan, family: 4 | 6): string[] {
  return [
    ...plan.routes.filter((r) => r.family === family).map((r) => (r.type === 'local' ? routeAddLine({ ...r, type: undefined }, 'local') : routeAddLine(r as RouteEntry))),
    ...plan.rules.filter((r) => r.family === family).map((r) => `rule add ${r.selector.join(' ')} priority ${r.priority}`),
  ];
}

/** How a planned route is recorded: a `local` route is deleted like any other, the kill switch's keep their type and metric. */
function stateRoute(r: GatewayRoute): RouteEntry {
  const { family, dst, dev, table } = r;
  return r.type === 'unreachable' ? { family, dst, dev, table, type: 'unreachable', ...(r.metric !== undefined ? { metric: r.metric } : {}) } : { family, dst, dev, table };
}

/** The entries of `part` removed from `whole` (by value). */
function without(whole: SystemState, part: SystemState): SystemState {
  const has = <T>(list: T[], x: T): boolean => list.some((y) => JSON.stringify(y) === JSON.stringify(x));
  return {
    ...whole,
    rules: whole.rules.filter((r) => !has(part.rules, r)),
    routes: whole.routes.filter((r) => !has(part.routes, r)),
    nftTables: whole.nftTables.filter((r) => !has(part.nftTables, r)),
    sysctls: (whole.sysctls ?? []).filter((r) => !has(part.sysctls ?? [], r)),
  };
}

export interface InstalledGateway {
  /** What the gateway added (a part of the state file). */
  state: SystemState;
  /** Removes it and takes it out of the state file (deleting the file when nothing else is left). */
  stop(): Promise<{ removed: number; alreadyGone: number }>;
  /**
   * Replaces the nftables table with `nft` (a reload changed what it
   * holds: classifier.bypass in the no-eBPF fallback), in one transaction:
   * `nft -f` applies the delete and the new table atomically, so no packet
   * meets a half-built chain. The state file's entry (the table's name)
   * stays as it is. Returns whether anything changed.
   */
  replaceNft(nft: string | null): Promise<boolean>;
}

/**
 * Applies `plan`, adding each step to the state file at `statePath` (which
 * may already list this run's auto-route) before running it. On failure
 * removes what the gateway applied and throws APPLY_FAILED; so it does,
 * saying "stopped", when `signal` is aborted (sluice is stopping) before a step.
 */
export async function applyGateway(plan: GatewayPlan, statePath: string, runner: Runner = runCommand, signal?: AbortSignal): Promise<InstalledGateway> {
  const mine = emptyState();
  mine.sysctls = [];
  const whole = (): SystemState => {
    const base = readState(statePath) ?? emptyState();
    const rest = without(base, mine);
    return { ...rest, rules: [...rest.rules, ...mine.rules], routes: [...rest.routes, ...mine.routes], nftTables: [...rest.nftTables, ...mine.nftTables], sysctls: [...(rest.sysctls ?? []), ...mine.sysctls!] };
  };
  const release = (): void => {
    const base = readState(statePath);
    if (base === null) return;
    const rest = without(base, mine);
    if (rest.rules.length + rest.routes.length + rest.nftTables.length + (rest.sysctls ?? []).length === 0) removeState(statePath);
    else writeState(statePath, rest);
  };
  const fail = async (what: string, why: string): Promise<never> => {
    let rollback = '';
    try {
      await teardownState(mine, runner);
      release();
    } catch (err) {
      rollback = `\nrolling back also failed (the state file ${statePath} keeps the list; run "sluice down --state ${statePath}"): ${(err as Error).message}`;
    }
    throw new SystemStateError('APPLY_FAILED', `${what}: ${why}${rollback}`);
  };
  // Once sluice is stopping (`signal` aborted) no further step starts: what was applied is removed.
  const halted = (): boolean => signal?.aborted === true;
  for (const { key, value, optional } of plan.sysctls) {
    if (halted()) return fail(`sysctl ${key}`, 'stopped before this step');
    let old: string;
    try {
      old = readFileSync(sysctlPath(key), 'utf8').trim();
    } catch (err) {
      if (optional === true && (err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      return fail(`sysctl ${key}`, (err as Error).message);
    }
    if (old === value) continue; // already so: nothing to put back
    const entry: SysctlEntry = { key, value: old };
    // The global first, then the per-interface flags a forwarding write overwrites: restored in this order.
    const forwarding = (FORWARDING_SYSCTLS as readonly string[]).includes(key);
    mine.sysctls!.push(entry, ...(forwarding ? perInterfaceForwarding(key) : []));
    writeState(statePath, whole());
    try {
      writeFileSync(sysctlPath(key), `${value}\n`);
    } catch (err) {
      return fail(`sysctl ${key}=${value}`, (err as Error).message);
    }
  }
  const step = async (record: () => void, argv: string[], input: string): Promise<void> => {
    if (halted()) return fail(argv.join(' '), 'stopped before this step');
    record();
    writeState(statePath, whole());
    let why: string | null = null;
    try {
      const r = await runner(argv, input);
      if (r.code !== 0) why = r.stderr.trim() || `exit ${r.code}`;
    } catch (err) {
      why = (err as Error).message;
    }
    if (why !== null) await fail(argv.join(' '), why);
  };
  for (const family of [4, 6] as const) {
    const lines = ipLines(plan, family);
    if (lines.length === 0) continue;
    await step(
      () => {
        mine.routes.push(...plan.routes.filter((r) => r.family === family).map((r) => stateRoute(r)));
        mine.rules.push(...plan.rules.filter((r) => r.family === family));
      },
      family === 6 ? ['ip', '-6', '-batch', '-'] : ['ip', '-batch', '-'],
      lines.join('\n') + '\n',
    );
  }
  if (plan.nft !== null) await step(() => mine.nftTables.push(GATEWAY_NFT_TABLE), ['nft', '-f', '-'], plan.nft);
  let stopped = false;
  let nftNow = plan.nft;
  return {
    state: mine,
    async replaceNft(nft) {
      if (stopped || nft === nftNow || nft === null || nftNow === null) return false;
      const table = `${GATEWAY_NFT_TABLE.family} ${GATEWAY_NFT_TABLE.name}`;
      const r = await runner(['nft', '-f', '-'], `delete table ${table}\n${nft}`);
      if (r.code !== 0) throw new SystemStateError('APPLY_FAILED', `nft -f (replacing table ${table}): ${r.stderr.trim() || `exit ${r.code}`}; the previous table stays`);
      nftNow = nft;
      return true;
    },
    async stop() {
      if (stopped) return { removed: 0, alreadyGone: 0 };
      stopped = true;
      const result = await teardownState(mine, runner);
      release();
      return result;
    },
  };
}
