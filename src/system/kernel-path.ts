/**
 * Selective routing for the machine's own traffic (`route.auto` with
 * `route.kernelPath`): destinations the policy sends `direct` by address
 * never enter the TUN.
 *
 * How: one nftables table `inet sluice_direct` with two interval sets
 * (IPv4, IPv6) of the addresses whose action is the kernel path, and a
 * `type route` chain on the output hook that gives packets to those
 * addresses route.mark. A mark changed in a route chain makes the kernel
 * route the packet again (nf_tables_route.c, ip_route_me_harder), and the
 * auto-route's `not fwmark MARK lookup TABLE` rule then leaves it to the
 * main table, as it does for sluice's own sockets: the packet leaves by the
 * uplink without touching the TUN.
 *
 * Why nftables and not an eBPF cgroup program: a cgroup/connect4 program
 * setting SO_MARK before the route lookup would choose the right source
 * address without NAT, but it attaches to a cgroup, not to a network
 * namespace (the root cgroup catches every process on the host, containers
 * included), needs a cgroup v2 mount and CAP_BPF, and misses unconnected
 * UDP unless a sendmsg program is added too. nftables is per namespace,
 * already a dependency (strictDns, gateway), updated atomically in one
 * transaction (`flush set` + `add element` in one `nft -f`), and removed
 * with its table.
 *
 * The one cost: the socket chose its source address when it connected,
 * by the route through the TUN, so it is the TUN's address. A nat
 * postrouting chain masquerades marked packets leaving by another
 * interface from the TUN's prefix to that interface's address (conntrack
 * keeps the flow's binding; replies are translated back).
 *
 * Which addresses: the classifier's table computed from the policy
 * (src/system/classifier-policy.ts: `ipCidr` / cidr `ruleSet` rules with a
 * `direct` outbound, first match wins, every doubt goes to the TUN, the
 * fake-IP ranges always to the TUN), resolved from longest-prefix-match
 * into disjoint intervals (nftables sets do not do "longest prefix wins"),
 * the kernel ones kept and clipped to route.include. With dns.hijack or
 * route.strictDns, port 53 is never marked (the TUN answers DNS to any
 * address; strictDns lets marked DNS out, so marking it would leak it).
 */
import type { SluiceConfig } from '../config/types.js';
import type { Logger } from '../engine/logger.js';
import { formatIp, networkOf, parseCidr } from '../config/net.js';
import { classifierTable } from './classifier-policy.js';
import type { ClassifierAction } from './classifier.js';
import { runCommand, SystemStateError, type Runner } from './exec.js';
import { emptyState, readState, removeState, writeState, type NftTableEntry } from './state.js';
import { isEmptyState } from './state.js';

export const KERNEL_PATH_TABLE: NftTableEntry = { family: 'inet', name: 'sluice_direct' };

/** An inclusive address interval [start, end]. */
export type Interval = [bigint, bigint];

export interface KernelPathSets {
  v4: Interval[];
  v6: Interval[];
}

interface Node {
  start: bigint;
  end: bigint;
  bits: number;
  action: ClassifierAction;
}

const MAX = { 4: (1n << 32n) - 1n, 6: (1n << 128n) - 1n } as const;

function toNode(cidr: string, action: ClassifierAction): (Node & { family: 4 | 6 }) | null {
  const c = parseCidr(cidr);
  if (c === null) return null;
  const n = networkOf(c);
  const host = BigInt((c.family === 4 ? 32 : 128) - c.prefix);
  return { family: c.family, start: n.value, end: n.value + (1n << host) - 1n, bits: c.prefix, action };
}

/** Appends [a, b] to `out`, merging with the last interval when adjacent or overlapping (input sorted by start). */
function push(out: Interval[], a: bigint, b: bigint): void {
  const last = out[out.length - 1];
  if (last !== undefined && a <= last[1] + 1n) {
    if (b > last[1]) last[1] = b;
    return;
  }
  out.push([a, b]);
}

/**
 * The intervals of one family whose longest-prefix-match action is 'kernel'.
 * CIDRs nest or are disjoint, so a sweep in (start, shorter first) order with
 * a stack of enclosing prefixes emits each stretch with its innermost action.
 */
export function kernelIntervals(nodes: Node[], family: 4 | 6, defaultAction: ClassifierAction): Interval[] {
  nodes.sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : x.bits - y.bits));
  const out: Interval[] = [];
  const stack: Node[] = [{ start: 0n, end: MAX[family], bits: -1, action: defaultAction }];
  let cursor = 0n;
  const emit = (a: bigint, b: bigint, action: ClassifierAction): void => {
    if (a <= b && action === 'kernel') push(out, a, b);
  };
  for (const n of nodes) {
    while (stack[stack.length - 1]!.end < n.start) {
      const top = stack.pop()!;
      emit(cursor, top.end, top.action);
      cursor = top.end + 1n;
    }
    emit(cursor, n.start - 1n, stack[stack.length - 1]!.action);
    cursor = n.start;
    stack.push(n);
  }
  while (stack.length > 0) {
    const top = stack.pop()!;
    emit(cursor, top.end, top.action);
    cursor = top.end + 1n;
  }
  return out;
}

/** `a` ∩ `b`, both sorted and disjoint. */
function intersect(a: Interval[], b: Interval[]): Interval[] {
  const out: Interval[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const lo = a[i]![0] > b[j]![0] ? a[i]![0] : b[j]![0];
    const hi = a[i]![1] < b[j]![1] ? a[i]![1] : b[j]![1];
    if (lo <= hi) out.push([lo, hi]);
    if (a[i]![1] < b[j]![1]) i++;
    else j++;
  }
  return out;
}

/** The addresses whose traffic skips the TUN, per family; pure. */
export function kernelPathSets(config: SluiceConfig): KernelPathSets {
  const table = classifierTable(config);
  const byFamily: Record<4 | 6, Node[]> = { 4: [], 6: [] };
  for (const [cidr, action] of table.prefixes) {
    const n = toNode(cidr, action);
    if (n !== null) byFamily[n.family].push(n);
  }
  const include: Record<4 | 6, Interval[]> = { 4: [], 6: [] };
  const inc = config.route.include.map((c) => toNode(c, 'kernel')).filter((n): n is Node & { family: 4 | 6 } => n !== null);
  for (const family of [4, 6] as const) {
    const list = inc.filter((n) => n.family === family).sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0));
    for (const n of list) push(include[family], n.start, n.end);
  }
  return {
    v4: intersect(kernelIntervals(byFamily[4], 4, table.defaultAction), include[4]),
    v6: intersect(kernelIntervals(byFamily[6], 6, table.defaultAction), include[6]),
  };
}

function element(family: 4 | 6, [a, b]: Interval): string {
  const fa = formatIp({ family, value: a });
  return a === b ? fa : `${fa}-${formatIp({ family, value: b })}`;
}

function elements(family: 4 | 6, list: Interval[]): string {
  return list.map((iv) => element(family, iv)).join(', ');
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/** The whole table: sets, the marking chain, the masquerade chain. */
export function kernelPathScript(config: SluiceConfig, tun: string, sets: KernelPathSets): string {
  const { family, name } = KERNEL_PATH_TABLE;
  const mark = hex(config.route.mark);
  const set = (n: string, type: string, fam: 4 | 6, list: Interval[]): string[] => [
    `  set ${n} {`,
    `    type ${type}; flags interval;`,
    ...(list.length > 0 ? [`    elements = { ${elements(fam, list)} }`] : []),
    '  }',
  ];
  const tun4 = parseCidr(config.tun.ipv4);
  const tun6 = parseCidr(config.tun.ipv6);
  return [
    `table ${family} ${name} {`,
    ...set('direct4', 'ipv4_addr', 4, sets.v4),
    ...set('direct6', 'ipv6_addr', 6, sets.v6),
    '  chain output {',
    '    type route hook output priority mangle; policy accept;',
    `    meta mark ${mark} return`,
    // DNS is answered in the TUN whatever its destination (hijack), or must not leave any other way (strictDns).
    ...(config.dns.hijack || config.route.strictDns ? ['    meta l4proto { tcp, udp } th dport 53 return'] : []),
    `    ip daddr @direct4 meta mark set ${mark} counter`,
    `    ip6 daddr @direct6 meta mark set ${mark} counter`,
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname "${tun}" return`,
    ...(tun4 !== null ? [`    meta mark ${mark} ip saddr ${formatIp({ family: 4, value: networkOf(tun4).value })}/${tun4.prefix} masquerade`] : []),
    ...(tun6 !== null ? [`    meta mark ${mark} ip6 saddr ${formatIp({ family: 6, value: networkOf(tun6).value })}/${tun6.prefix} masquerade`] : []),
    '  }',
    '}',
    '',
  ].join('\n');
}

/** One transaction replacing both sets' contents (a reload). */
export function kernelPathUpdateScript(sets: KernelPathSets): string {
  const { family, name } = KERNEL_PATH_TABLE;
  const lines = [`flush set ${family} ${name} direct4`, `flush set ${family} ${name} direct6`];
  if (sets.v4.length > 0) lines.push(`add element ${family} ${name} direct4 { ${elements(4, sets.v4)} }`);
  if (sets.v6.length > 0) lines.push(`add element ${family} ${name} direct6 { ${elements(6, sets.v6)} }`);
  return lines.join('\n') + '\n';
}

export interface RunningKernelPath {
  /** Recomputes the sets from the reloaded config and replaces them in one transaction. */
  update(config: SluiceConfig): Promise<void>;
  stop(): Promise<void>;
}

async function nft(runner: Runner, script: string, what: string): Promise<void> {
  const r = await runner(['nft', '-f', '-'], script);
  if (r.code !== 0) throw new SystemStateError('APPLY_FAILED', `${what}: nft -f: ${r.stderr.trim() || `exit ${r.code}`}`);
}

const count = (s: KernelPathSets): { v4: number; v6: number } => ({ v4: s.v4.length, v6: s.v6.length });

/** Installs the table (after the auto-route), recorded in the state file first. */
export async function startKernelPath(config: SluiceConfig, tun: string, statePath: string, log: Logger, runner: Runner = runCommand): Promise<RunningKernelPath> {
  const sets = kernelPathSets(config);
  const recorded = readState(statePath) ?? emptyState();
  recorded.nftTables.push(KERNEL_PATH_TABLE);
  writeState(statePath, recorded);
  try {
    await nft(runner, kernelPathScript(config, tun, sets), 'route.kernelPath');
  } catch (err) {
    await release(statePath, runner);
    throw err;
  }
  log.info({ table: `${KERNEL_PATH_TABLE.family} ${KERNEL_PATH_TABLE.name}`, intervals: count(sets) }, 'kernel path installed');
  let stopped = false;
  return {
    async update(next: SluiceConfig): Promise<void> {
      if (stopped) return;
      const s = kernelPathSets(next);
      try {
        await nft(runner, kernelPathUpdateScript(s), 'route.kernelPath reload');
        log.info({ intervals: count(s) }, 'kernel path updated');
      } catch (err) {
        log.error({ err: (err as Error).message }, 'kernel path update failed; the previous sets stay');
      }
    },
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      await release(statePath, runner);
      log.info({}, 'kernel path removed');
    },
  };
}

/** Deletes the table and takes it out of the state file. */
async function release(statePath: string, runner: Runner): Promise<void> {
  const r = await runner(['nft', 'delete', 'table', KERNEL_PATH_TABLE.family, KERNEL_PATH_TABLE.name]);
  if (r.code !== 0 && !/No such file or directory|does not exist/.test(r.stderr)) {
    throw new SystemStateError('TEARDOWN_FAILED', `nft delete table ${KERNEL_PATH_TABLE.family} ${KERNEL_PATH_TABLE.name}: ${r.stderr.trim()}`);
  }
  const s = readState(statePath);
  if (s === null) return;
  s.nftTables = s.nftTables.filter((t) => !(t.family === KERNEL_PATH_TABLE.family && t.name === KERNEL_PATH_TABLE.name));
  if (isEmptyState(s)) removeState(statePath);
  else writeState(statePath, s);
}
