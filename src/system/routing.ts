/**
 * The workstation auto-route: routes for `route.include` via the TUN in
 * `route.table`, one `not fwmark MARK lookup TABLE` rule at
 * `route.priority` (so sluice's own, marked sockets keep using the main
 * table and cannot loop), `to PREFIX lookup main` rules one priority
 * higher for `route.exclude`, and with `strictDns` one nftables table that
 * drops DNS leaving any other way.
 *
 * The kill switch (`route.killSwitch`, on by default): beside each include
 * route via the TUN, `unreachable PREFIX metric KILL_SWITCH_METRIC` in the
 * same table. While the TUN lives its route (metric 0 / 1024) wins; when
 * sluice dies the kernel deletes the TUN and its routes with it, the rules
 * stay, and the unreachable route answers instead of the lookup falling
 * through to the main table: the traffic the policy steers is refused
 * (EHOSTUNREACH locally, ICMP host unreachable to a LAN), never sent
 * around the policy. Only the include prefixes get one, so destinations
 * sluice never captured keep falling through to main. `sluice down` or a
 * clean stop removes it with the rest of the state file.
 *
 * Applied family by family with `ip -batch -` / `ip -6 -batch -`, the
 * nftables table whole with `nft -f -`; the state file is rewritten before
 * each step, and when a step fails everything recorded so far is removed.
 */
import type { RouteConfig } from '../config/types.js';
import { runCommand, SystemStateError, type Runner } from './exec.js';
import { emptyState, removeState, writeState, type NftTableEntry, type RouteEntry, type RuleEntry, type SystemState } from './state.js';
import { routeAddLine, teardownState } from './teardown.js';

export const NFT_TABLE: NftTableEntry = { family: 'inet', name: 'sluice' };

export interface RoutingPlan {
  routes: RouteEntry[];
  rules: RuleEntry[];
  /** The `nft -f` script creating NFT_TABLE, or null without strictDns. */
  nft: string | null;
}

const familyOf = (cidr: string): 4 | 6 => (cidr.includes(':') ? 6 : 4);

/** The kill switch's metric: the largest, so any route via the TUN wins while it exists. */
export const KILL_SWITCH_METRIC = 0xffffffff;

/** The kill switch's unreachable routes for `prefixes` in `table`. */
export function killSwitchRoutes(prefixes: readonly string[], table: number): RouteEntry[] {
  return prefixes.map((dst) => ({ family: familyOf(dst), dst, dev: '', table, type: 'unreachable' as const, metric: KILL_SWITCH_METRIC }));
}

/** What `route` asks for with the TUN named `tun`; pure. */
export function planRouting(route: RouteConfig, tun: string): RoutingPlan {
  const routes: RouteEntry[] = route.include.map((dst) => ({ family: familyOf(dst), dst, dev: tun, table: route.table }));
  if (route.killSwitch) routes.push(...killSwitchRoutes(route.include, route.table));
  const rules: RuleEntry[] = [];
  const mark = `0x${route.mark.toString(16)}`;
  for (const family of [4, 6] as const) {
    if (!routes.some((r) => r.family === family)) continue;
    for (const prefix of route.exclude.filter((c) => familyOf(c) === family)) {
      rules.push({ family, priority: route.priority - 1, selector: ['to', prefix, 'lookup', 'main'] });
    }
    rules.push({ family, priority: route.priority, selector: ['not', 'fwmark', mark, 'lookup', String(route.table)] });
  }
  // Strict mode also closes a family `include` leaves out (typically IPv6
  // on an IPv4-only capture), which would otherwise leave around the TUN.
  const uncaptured = ([4, 6] as const).filter((f) => !routes.some((r) => r.family === f));
  return { routes, rules, nft: route.strictDns ? strictDnsScript(tun, route.mark, uncaptured) : null };
}

/**
 * Leak prevention: in the output hook, port 53 over UDP or TCP is dropped
 * unless it leaves through the TUN (sluice answers it there), through lo (a
 * local stub resolver, whose own upstream queries are routed into the TUN
 * in turn), or carries sluice's mark (its own upstream queries); so is all
 * traffic of a family the TUN does not capture (`blockFamilies`).
 *
 * IPv6 neighbour discovery is let out on every interface, before those
 * drops: router and neighbour solicitations and advertisements (RFC 4861
 * 4.1-4.4; sent with hop limit 255, which receivers require, 6.1.1 / 7.1.1,
 * so they never cross a router) and MLD reports (RFC 3810 5.2, hop limit 1,
 * from the link-local or unspecified address), which ND needs on snooping
 * switches. The kernel sends them unmarked and outside policy routing (a
 * TUN cannot carry them: they belong to the uplink), and without them IPv6
 * stops working on the uplink: no default router (RS/RA), no neighbour
 * resolution (NS/NA), so not even sluice's own marked sockets could reach
 * an IPv6 upstream, and duplicate address detection fails. They carry no
 * user data and no names: letting them out is not a leak around the TUN.
 */
export function strictDnsScript(tun: string, mark: number, blockFamilies: readonly (4 | 6)[] = []): string {
  const m = `0x${mark.toString(16)}`;
  const families = blockFamilies.map((f) => `    meta nfproto ${f === 4 ? 'ipv4' : 'ipv6'} counter drop`);
  return [
    `table ${NFT_TABLE.family} ${NFT_TABLE.name} {`,
    '  chain output {',
    '    type filter hook output priority filter; policy accept;',
    `    meta mark ${m} accept`,
    `    oifname { "${tun}", "lo" } accept`,
    '    icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept',
    '    icmpv6 type mld2-listener-report ip6 hoplimit 1 ip6 saddr { ::, fe80::/10 } accept',
    '    udp dport 53 counter drop',
    '    tcp dport 53 counter drop',
    ...families,
    '  }',
    '}',
    '',
  ].join('\n');
}

function ipLines(plan: RoutingPlan, family: 4 | 6): string[] {
  return [
    ...plan.routes.filter((r) => r.family === family).map((r) => routeAddLine(r)),
    ...plan.rules.filter((r) => r.family === family).map((r) => `rule add ${r.selector.join(' ')} priority ${r.priority}`),
  ];
}

/**
 * Applies `plan`, recording each step in the state file at `statePath`
 * before running it. On failure removes what was recorded, deletes the
 * state file and throws APPLY_FAILED. Returns the final state. Once
 * `signal` is aborted (sluice is stopping) no further step starts: what
 * was applied is removed the same way and APPLY_FAILED says "stopped".
 */
export async function applyRouting(plan: RoutingPlan, statePath: string, runner: Runner = runCommand, signal?: AbortSignal): Promise<SystemState> {
  const state = emptyState();
  const step = async (record: () => void, argv: string[], input: string): Promise<void> => {
    let why: string | null = null;
    try {
      if (signal?.aborted === true) why = 'stopped before this step';
      else {
        record();
        writeState(statePath, state);
        const r = await runner(argv, input);
        if (r.code !== 0) why = r.stderr.trim() || `exit ${r.code}`;
      }
    } catch (err) {
      why = (err as Error).message;
    }
    if (why !== null) {
      let rollback = '';
      try {
        await teardownState(state, runner);
        removeState(statePath);
      } catch (err) {
        rollback = `\nrolling back also failed (the state file ${statePath} keeps the list; run "sluice down --state ${statePath}"): ${(err as Error).message}`;
      }
      throw new SystemStateError('APPLY_FAILED', `${argv.join(' ')}: ${why}${rollback}`);
    }
  };
  try {
    for (const family of [4, 6] as const) {
      const lines = ipLines(plan, family);
      if (lines.length === 0) continue;
      await step(
        () => {
          state.routes.push(...plan.routes.filter((r) => r.family === family));
          state.rules.push(...plan.rules.filter((r) => r.family === family));
        },
        family === 6 ? ['ip', '-6', '-batch', '-'] : ['ip', '-batch', '-'],
        lines.join('\n') + '\n',
      );
    }
    if (plan.nft !== null) {
      await step(() => state.nftTables.push(NFT_TABLE), ['nft', '-f', '-'], plan.nft);
    }
  } catch (err) {
    if (err instanceof SystemStateError) throw err;
    throw new SystemStateError('APPLY_FAILED', (err as Error).message);
  }
  return state;
}
