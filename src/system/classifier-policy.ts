/**
 * The eBPF classifier's tables computed from the routing policy: which
 * destination prefixes take the kernel path, which go into the TUN (where
 * the engine applies the whole policy), which are dropped, and the action
 * for everything else. Pure; recomputed on every reload and applied to the
 * live maps as a diff (setPrefix for new or changed, deletePrefix for gone).
 *
 * The classifier sees only destination addresses, so it can express a rule
 * only when the rule's sole condition is the destination: `ipCidr` alone, or
 * `ruleSet` alone naming cidr rule sets. Outbound to action: `direct` ->
 * 'kernel' (the fast path: direct traffic costs sluice nothing), `drop` ->
 * 'drop', anything else (socks5, http, reject) -> 'tun'.
 *
 * Sending a flow into the TUN is always correct (the engine decides with the
 * full policy), so every doubt resolves to 'tun':
 *
 * - First match wins, but the kernel's trie is longest-prefix-match: a later
 *   rule's prefix that an earlier inserted prefix contains is NOT inserted
 *   (it would override the earlier, broader rule for its addresses). A later
 *   broader prefix is inserted: LPM keeps the earlier, narrower one in front.
 * - A rule the classifier cannot express (domains, ports, sources, and/or/
 *   not, ...) may match flows to any address. A later prefix keeps its action
 *   only if every earlier inexpressible rule has the same action (whichever
 *   of them matches, the outcome is the same); otherwise it is 'tun'.
 * - The default (no prefix matches) is `classifier.default` when set; else
 *   'tun' when any rule is inexpressible (only the engine sees names), else
 *   the action of `final` ('drop' becomes 'tun': the classifier also sees
 *   traffic addressed to the gateway itself, which a blanket drop would cut).
 * - `classifier.bypass` prefixes come first, as 'kernel'; then, in fake-ip
 *   mode, the fake-IP ranges as 'tun' (only the engine can translate them);
 *   then the rules. With DNS hijack, UDP and TCP port 53 go to the TUN when
 *   no prefix matches.
 * - Past MAX_PREFIXES per family the rest are left out and the default
 *   becomes 'tun'; a left-out prefix then reaches the engine.
 *
 * With gateway mode tproxy or tproxy-ebpf, "to sluice" means the TPROXY listeners, not the
 * TUN: every 'tun' above is 'tproxy' (steeredAction), so the counters say
 * where the packets went.
 */
import type { ClassifierAction } from './classifier.js';
import type { RuleConfig, SluiceConfig } from '../config/types.js';
import { parseCidr } from '../config/net.js';

/** The kernel tries hold 262144 entries each (bpf/classifier.c); keep headroom for live updates. */
export const MAX_PREFIXES = 200_000;

export interface ClassifierPort {
  protocol: 'tcp' | 'udp';
  port: number;
  action: ClassifierAction;
}

export interface ClassifierTable {
  defaultAction: ClassifierAction;
  /** Canonical prefix text (IPv4 dotted, IPv6 eight full groups) -> action, in insertion order. */
  prefixes: Map<string, ClassifierAction>;
  ports: ClassifierPort[];
  /** Rules the classifier cannot express (their flows reach the engine through the default or 'tun'). */
  inexpressible: number;
  /** Prefixes left out past MAX_PREFIXES. */
  truncated: number;
}

interface Prefix {
  family: 4 | 6;
  /** Network address (host bits cleared). */
  value: bigint;
  prefix: number;
}

function parsePrefix(text: string): Prefix | null {
  const c = parseCidr(text.includes('/') ? text : text.includes(':') ? `${text}/128` : `${text}/32`);
  if (c === null) return null;
  const bits = c.family === 4 ? 32 : 128;
  const host = bits - c.prefix;
  const value = host === 0 ? c.value : (c.value >> BigInt(host)) << BigInt(host);
  return { family: c.family, value, prefix: c.prefix };
}

/** The text the classifier's key parser takes: dotted quad, or eight hex groups (no "::", no dotted tail). */
export function canonicalPrefix(p: Prefix): string {
  if (p.family === 4) {
    const v = Number(p.value);
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}/${p.prefix}`;
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((p.value >> BigInt(i * 16)) & 0xffffn).toString(16));
  return `${groups.join(':')}/${p.prefix}`;
}

/** Where the classifier sends what sluice must see: the TPROXY listeners in gateway mode tproxy, else the TUN. */
export function steeredAction(config: SluiceConfig): ClassifierAction {
  return config.gateway.enabled && config.gateway.mode !== 'tun' ? 'tproxy' : 'tun';
}

function actionOf(config: SluiceConfig, outbound: string): ClassifierAction {
  const ob = config.outbounds.find((o) => o.name === outbound);
  if (ob?.type === 'direct') return 'kernel';
  if (ob?.type === 'drop') return 'drop';
  return steeredAction(config);
}

/** The destination prefixes of a rule the classifier can express, or null. */
function rulePrefixes(rule: RuleConfig, config: SluiceConfig): string[] | null {
  const keys = Object.keys(rule).filter((k) => k !== 'outbound' && (rule as unknown as Record<string, unknown>)[k] !== undefined);
  if (keys.length !== 1) return null;
  if (keys[0] === 'ipCidr') return rule.ipCidr!;
  if (keys[0] === 'ruleSet') {
    const out: string[] = [];
    for (const name of rule.ruleSet!) {
      const rs = config.ruleSets[name];
      if (rs === undefined || rs.type !== 'cidr') return null;
      for (const e of rs.entries) {
        const entry = e.trim();
        if (entry !== '' && !entry.startsWith('#')) out.push(entry);
      }
    }
    return out;
  }
  return null;
}

/** Set of inserted prefixes by family and length, for "does an earlier prefix contain this one". */
class Inserted {
  private readonly byLength = [new Map<number, Set<bigint>>(), new Map<number, Set<bigint>>()];
  count4 = 0;
  count6 = 0;

  contains(p: Prefix): boolean {
    const bits = p.family === 4 ? 32 : 128;
    for (const [len, set] of this.byLength[p.family === 4 ? 0 : 1]!) {
      if (len > p.prefix) continue;
      const host = BigInt(bits - len);
      if (set.has((p.value >> host) << host)) return true;
    }
    return false;
  }

  add(p: Prefix): void {
    const m = this.byLength[p.family === 4 ? 0 : 1]!;
    let set = m.get(p.prefix);
    if (set === undefined) m.set(p.prefix, (set = new Set()));
    set.add(p.value);
    if (p.family === 4) this.count4++;
    else this.count6++;
  }
}

export function classifierTable(config: SluiceConfig): ClassifierTable {
  const steered = steeredAction(config);
  const prefixes = new Map<string, ClassifierAction>();
  const inserted = new Inserted();
  let truncated = 0;
  const insert = (text: string, action: ClassifierAction): void => {
    const p = parsePrefix(text);
    if (p === null || inserted.contains(p)) return;
    if ((p.family === 4 ? inserted.count4 : inserted.count6) >= MAX_PREFIXES) {
      truncated++;
      return;
    }
    inserted.add(p);
    prefixes.set(canonicalPrefix(p), action);
  };

  for (const b of config.classifier.bypass) insert(b, 'kernel');
  if (config.dns.mode === 'fake-ip') {
    insert(config.dns.fakeIp.ipv4Range, steered);
    insert(config.dns.fakeIp.ipv6Range, steered);
  }
  /** Actions of the inexpressible rules seen so far. */
  const earlier = new Set<ClassifierAction>();
  let inexpressible = 0;
  for (const rule of config.rules) {
    const action = actionOf(config, rule.outbound);
    const list = rulePrefixes(rule, config);
    if (list === null) {
      inexpressible++;
      earlier.add(action);
      continue;
    }
    const safe = earlier.size === 0 || (earlier.size === 1 && earlier.has(action));
    for (const text of list) insert(text, safe ? action : steered);
  }

  let defaultAction: ClassifierAction;
  if (config.classifier.default !== null) defaultAction = config.classifier.default === 'tun' ? steered : config.classifier.default;
  else if (inexpressible > 0) defaultAction = steered;
  else defaultAction = actionOf(config, config.final) === 'kernel' ? 'kernel' : steered;
  if (truncated > 0) defaultAction = steered;

  const ports: ClassifierPort[] = [];
  if (config.dns.hijack && defaultAction !== steered) {
    ports.push({ protocol: 'udp', port: 53, action: steered }, { protocol: 'tcp', port: 53, action: steered });
  }
  return { defaultAction, prefixes, ports, inexpressible, truncated };
}

/** Deny map bits (bpf/sni.h): the name itself; the name and every name under it. */
export const SNI_EXACT = 1;
export const SNI_SUFFIX = 2;
/** Only names under it (`.example.com`). */
export const SNI_SUB = 4;

/**
 * The SNI / Host filter's deny set (classifier.sni): every rule whose
 * outbound is `reject` or `drop` and whose only conditions are `domain`,
 * `domainSuffix` and `ruleSet` naming domain rule sets (their lines
 * `example.com`, `.example.com`, `full:x`; `keyword:` and `regex:` lines
 * cannot be hashed and are skipped, counted in `skipped`); name (lower
 * case, no leading or trailing dot) -> bits (`.example.com`: SNI_SUB, the
 * names under it only). On the kernel path these apply ahead of the address rules that put
 * the flow there (the engine never sees such flows, so first match cannot
 * be followed; the filter exists to refuse names the policy refuses).
 * Past `max` names the rest are left out (counted in `truncated`).
 */
export function sniDenySet(config: SluiceConfig, max = 60_000): { names: Map<string, number>; truncated: number; skipped: number } {
  const names = new Map<string, number>();
  let truncated = 0;
  let skipped = 0;
  const add = (raw: string, suffixBit: number): void => {
    const t = raw.trim().toLowerCase();
    const bit = suffixBit === SNI_SUFFIX && t.startsWith('.') ? SNI_SUB : suffixBit;
    const n = t.replace(/^\.+/, '').replace(/\.+$/, '');
    if (n === '') return;
    if (!names.has(n) && names.size >= max) {
      truncated++;
      return;
    }
    names.set(n, (names.get(n) ?? 0) | bit);
  };
  for (const rule of config.rules) {
    const ob = config.outbounds.find((o) => o.name === rule.outbound);
    if (ob?.type !== 'reject' && ob?.type !== 'drop') continue;
    const keys = Object.keys(rule).filter((k) => k !== 'outbound' && (rule as unknown as Record<string, unknown>)[k] !== undefined);
    if (keys.length === 0 || !keys.every((k) => k === 'domain' || k === 'domainSuffix' || k === 'ruleSet')) continue;
    const sets = (rule.ruleSet ?? []).map((n) => config.ruleSets[n]);
    if (sets.some((s) => s === undefined || s.type !== 'domain')) continue;
    for (const d of rule.domain ?? []) add(d, SNI_EXACT);
    for (const d of rule.domainSuffix ?? []) add(d, SNI_SUFFIX);
    for (const s of sets) {
      for (const raw of s!.entries) {
        const line = raw.trim();
        if (line === '' || line.startsWith('#')) continue;
        if (line.startsWith('full:')) add(line.slice(5), SNI_EXACT);
        else if (/^(keyword|regex):/.test(line)) skipped++;
        else add(line, SNI_SUFFIX);
      }
    }
  }
  return { names, truncated, skipped };
}

export interface TableDiff {
  set: [string, ClassifierAction][];
  remove: string[];
}

/** What to change in the live maps to go from `from` to `to`. */
export function diffTables(from: Map<string, ClassifierAction>, to: Map<string, ClassifierAction>): TableDiff {
  const set: [string, ClassifierAction][] = [];
  const remove: string[] = [];
  for (const [k, a] of to) if (from.get(k) !== a) set.push([k, a]);
  for (const k of from.keys()) if (!to.has(k)) remove.push(k);
  return { set, remove };
}
