/**
 * Coexistence with the other things that steer traffic on a Linux box
 * (issue 12, "Coexistence"; pain points 1 and 15 of the peers' notes):
 * Docker bridges (docker0, br-<12 hex>), libvirt (virbr*), WSL, Tailscale
 * (tailscale0, its fwmark 0x80000/0xff0000, its rules at 5210-5310 and
 * table 52), WireGuard interfaces (link kind wireguard, and wg-quick's
 * `not fwmark M lookup M` rule), and any other ip rule near route.priority.
 *
 * At start sluice reports each in one log line, and with route.auto keeps
 * their prefixes out of the TUN (added to route.exclude, so `to PREFIX
 * lookup main` rules send them the way they went before) unless
 * `route.excludeDetected: false`: capturing a container bridge or a VPN's
 * own subnet into the TUN breaks it (containers lose their gateway,
 * WireGuard's peers become reachable only through sluice's policy).
 *
 * `detectCoexistence` is pure: it takes the JSON of `ip -d -j addr show`,
 * `ip -j rule show` and `ip -6 -j rule show` (and /proc's osrelease) and
 * returns the findings; `reportCoexistence` runs the commands.
 */
import { readFileSync } from 'node:fs';
import type { RouteConfig } from '../config/types.js';
import { cidrContains, formatCidr, networkOf, parseCidr, type Cidr } from '../config/net.js';
import type { Logger } from '../engine/logger.js';
import { runCommand, type Runner } from './exec.js';

export type CoexistenceKind = 'docker' | 'libvirt' | 'wsl' | 'tailscale' | 'wireguard' | 'rule';

export interface Finding {
  kind: CoexistenceKind;
  /** The one line reported. */
  line: string;
  /** Prefixes that belong to it (kept out of the TUN with route.auto). */
  prefixes: string[];
}

/** The fields of `ip -d -j addr show` entries used here. */
interface AddrEntry {
  ifname?: string;
  linkinfo?: { info_kind?: string };
  addr_info?: { family?: string; local?: string; prefixlen?: number; scope?: string }[];
}

/** The fields of `ip -j rule show` entries used here. */
interface RuleEntryJson {
  priority?: number;
  not?: unknown;
  src?: string;
  srclen?: number;
  dst?: string;
  dstlen?: number;
  iif?: string;
  oif?: string;
  fwmark?: string;
  fwmask?: string;
  table?: string;
  suppress_prefixlength?: number;
}

export interface CoexistenceInput {
  /** `ip -d -j addr show` output. */
  addr: string;
  /** `ip -j rule show` and `ip -6 -j rule show` output. */
  rules4: string;
  rules6: string;
  /** /proc/sys/kernel/osrelease ("...microsoft-standard-WSL2" under WSL). */
  osrelease?: string;
}

/** Tailscale's address ranges (CGNAT 100.64.0.0/10 and its ULA); its interface addresses are /32 and /128 inside them. */
export const TAILSCALE_PREFIXES = ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'];
/** Tailscale's rules live at 5210-5310 (tailscaled's `ip rule` set) and route through table 52; its packets carry 0x80000 in 0xff0000. */
const TAILSCALE_PRIORITIES: readonly [number, number] = [5210, 5310];
const TAILSCALE_TABLE = '52';
const TAILSCALE_MARK = 0x80000;
/** Rules within this distance of route.priority are reported (ordering around sluice's rules matters). */
export const NEARBY_PRIORITY = 100;

function parseJsonList<T>(text: string): T[] {
  try {
    const v = JSON.parse(text) as unknown;
    // Only objects: anything else in the list is not an entry ip(8) prints.
    return Array.isArray(v) ? (v.filter((x) => x !== null && typeof x === 'object' && !Array.isArray(x)) as T[]) : [];
  } catch {
    return [];
  }
}

function addrInfo(e: AddrEntry): NonNullable<AddrEntry['addr_info']> {
  return Array.isArray(e.addr_info) ? e.addr_info.filter((a) => a !== null && typeof a === 'object') : [];
}

/** The global-scope networks of an interface (link-local and host addresses left out). */
function networks(e: AddrEntry): string[] {
  const out: string[] = [];
  for (const a of addrInfo(e)) {
    if (a.scope !== 'global' || typeof a.local !== 'string' || typeof a.prefixlen !== 'number') continue;
    const c = parseCidr(`${a.local}/${a.prefixlen}`);
    if (c !== null) {
      const text = formatCidr(networkOf(c));
      if (!out.includes(text)) out.push(text);
    }
  }
  return out;
}

function ruleText(r: RuleEntryJson, family: 4 | 6): string {
  const w: string[] = [];
  if (r.not !== undefined) w.push('not');
  w.push('from', r.src === undefined ? 'all' : r.srclen !== undefined ? `${r.src}/${r.srclen}` : r.src);
  if (r.dst !== undefined) w.push('to', r.dstlen !== undefined ? `${r.dst}/${r.dstlen}` : r.dst);
  if (r.fwmark !== undefined) w.push('fwmark', r.fwmask !== undefined ? `${r.fwmark}/${r.fwmask}` : r.fwmark);
  if (r.iif !== undefined) w.push('iif', r.iif);
  if (r.oif !== undefined) w.push('oif', r.oif);
  if (r.table !== undefined) w.push('lookup', r.table);
  if (r.suppress_prefixlength !== undefined) w.push('suppress_prefixlength', String(r.suppress_prefixlength));
  return `${family === 6 ? 'ip -6 rule' : 'ip rule'} ${r.priority ?? '?'}: ${w.join(' ')}`;
}

const list = (p: string[]): string => (p.length > 0 ? p.join(', ') : 'no global addresses');

/** What is on this machine beside sluice; pure. */
export function detectCoexistence(input: CoexistenceInput, route: Pick<RouteConfig, 'priority' | 'mark' | 'table'>): Finding[] {
  const found: Finding[] = [];
  const addrs = parseJsonList<AddrEntry>(input.addr);
  const rules: [RuleEntryJson, 4 | 6][] = [
    ...parseJsonList<RuleEntryJson>(input.rules4).map((r): [RuleEntryJson, 4 | 6] => [r, 4]),
    ...parseJsonList<RuleEntryJson>(input.rules6).map((r): [RuleEntryJson, 4 | 6] => [r, 6]),
  ];
  let tailscale = false;
  for (const e of addrs) {
    const name = typeof e.ifname === 'string' ? e.ifname : '';
    const kind = typeof e.linkinfo === 'object' && e.linkinfo !== null ? e.linkinfo.info_kind : undefined;
    const nets = networks(e);
    if (name === 'docker0' || /^br-[0-9a-f]{12}$/.test(name)) {
      found.push({ kind: 'docker', line: `Docker bridge ${name}: ${list(nets)}`, prefixes: nets });
    } else if (/^virbr\d+$/.test(name)) {
      found.push({ kind: 'libvirt', line: `libvirt bridge ${name}: ${list(nets)}`, prefixes: nets });
    } else if (name === 'tailscale0' || (kind === 'tun' && name.startsWith('tailscale'))) {
      tailscale = true;
      const marks = rules.filter(([r]) => isTailscaleRule(r)).map(([r, f]) => `${f === 6 ? 'v6 ' : ''}${r.priority}`);
      found.push({
        kind: 'tailscale',
        line: `Tailscale ${name}: ${list(addrInfo(e).filter((a) => typeof a.local === 'string' && a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`))}; fwmark 0x80000/0xff0000, table 52, rules at ${marks.length > 0 ? marks.join(' ') : 'none yet'}`,
        prefixes: [...TAILSCALE_PREFIXES],
      });
    } else if (kind === 'wireguard') {
      found.push({ kind: 'wireguard', line: `WireGuard ${name}: ${list(nets)}`, prefixes: nets });
    }
  }
  if (input.osrelease !== undefined && /microsoft|WSL/i.test(input.osrelease)) {
    found.push({ kind: 'wsl', line: `WSL kernel (${input.osrelease.trim()}): Windows owns the uplink; its NAT and DNS proxy live outside this VM`, prefixes: [] });
  }
  // wg-quick: `not fwmark M lookup M` with M the interface's fwmark (51820 by default).
  for (const [r, f] of rules) {
    if (r.not !== undefined && r.fwmark !== undefined && r.table !== undefined && Number(r.fwmark) === Number(r.table) && Number(r.table) !== route.table) {
      found.push({ kind: 'wireguard', line: `WireGuard fwmark ${r.fwmark} (wg-quick rule "${ruleText(r, f)}"): sluice's route.mark 0x${route.mark.toString(16)} must differ`, prefixes: [] });
    }
  }
  if (!tailscale && rules.some(([r]) => isTailscaleRule(r))) {
    found.push({ kind: 'tailscale', line: `Tailscale rules without tailscale0 (${rules.filter(([r]) => isTailscaleRule(r)).map(([r, f]) => ruleText(r, f)).join('; ')})`, prefixes: [] });
  }
  for (const [r, f] of rules) {
    if (r.priority === undefined || r.priority === 0 || r.priority >= 32766) continue;
    if (isTailscaleRule(r)) continue;
    const d = r.priority - route.priority;
    if (Math.abs(d) <= NEARBY_PRIORITY) {
      found.push({ kind: 'rule', line: `${ruleText(r, f)} sits ${Math.abs(d)} ${d < 0 ? 'before' : 'after'} route.priority ${route.priority}`, prefixes: [] });
    }
  }
  return found;
}

function isTailscaleRule(r: RuleEntryJson): boolean {
  if (r.table === TAILSCALE_TABLE) return true;
  if (r.priority !== undefined && r.priority >= TAILSCALE_PRIORITIES[0] && r.priority <= TAILSCALE_PRIORITIES[1] && r.fwmark !== undefined) {
    return (Number(r.fwmark) & 0xff0000) === TAILSCALE_MARK;
  }
  return false;
}

/**
 * The prefixes of `found` to add to route.exclude: those inside a family
 * route.include captures and not already excluded (or covered by an exclude).
 */
export function prefixesToExclude(found: readonly Finding[], route: Pick<RouteConfig, 'include' | 'exclude'>): string[] {
  const parsed = (l: readonly string[]): Cidr[] => l.map(parseCidr).filter((c): c is Cidr => c !== null);
  const include = parsed(route.include);
  const exclude = parsed(route.exclude);
  const covered = (c: Cidr, by: Cidr[]): boolean => by.some((b) => b.family === c.family && b.prefix <= c.prefix && cidrContains(b, { family: c.family, value: networkOf(c).value }));
  const out: string[] = [];
  for (const f of found) {
    for (const p of f.prefixes) {
      const c = parseCidr(p);
      if (c === null || !covered(c, include) || covered(c, exclude) || out.includes(p)) continue;
      out.push(p);
    }
  }
  return out;
}

/**
 * Runs the detection, logs one line per finding, and returns the route
 * config to install: with route.auto and route.excludeDetected, the found
 * prefixes are added to route.exclude. Detection problems (no `ip`, odd
 * output) are logged and change nothing.
 */
export async function reportCoexistence(route: RouteConfig, log: Logger, runner: Runner = runCommand): Promise<RouteConfig> {
  let found: Finding[];
  try {
    const [addr, rules4, rules6] = await Promise.all([runner(['ip', '-d', '-j', 'addr', 'show']), runner(['ip', '-j', 'rule', 'show']), runner(['ip', '-6', '-j', 'rule', 'show'])]);
    let osrelease: string | undefined;
    try {
      osrelease = readFileSync('/proc/sys/kernel/osrelease', 'utf8');
    } catch {
      osrelease = undefined;
    }
    found = detectCoexistence({ addr: addr.stdout, rules4: rules4.stdout, rules6: rules6.stdout, ...(osrelease !== undefined ? { osrelease } : {}) }, route);
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'coexistence: detection failed; nothing excluded');
    return route;
  }
  const exclude = route.auto && route.excludeDetected ? prefixesToExclude(found, route) : [];
  for (const f of found) {
    const kept = f.prefixes.filter((p) => exclude.includes(p));
    const how = kept.length > 0 ? `; kept out of the TUN: ${kept.join(', ')}` : f.prefixes.length > 0 && route.auto && !route.excludeDetected ? '; NOT excluded (route.excludeDetected: false)' : '';
    log.info({ coexistence: f.kind, prefixes: f.prefixes, excluded: kept }, `coexistence: ${f.line}${how}`);
  }
  return exclude.length > 0 ? { ...route, exclude: [...route.exclude, ...exclude] } : route;
}
