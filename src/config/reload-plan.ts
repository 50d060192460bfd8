/**
 * What a whole-config reload may change, and what it did change.
 *
 * Reloadable: rules, final, outbounds (groups included), ruleSets, http,
 * sniff, icmp, dns except its mode and fake-IP pool (clients hold addresses
 * from the pool), and classifier.bypass (the classifier's maps, its
 * fallback's rules or the gateway's nftables table follow it live; the rest
 * of `classifier` is how it is attached). Everything else (tun, route, gateway, classifier, limits,
 * udp, log, run, and any section this list does not know, such as the API's
 * listen address) is set up once at start: a reload keeps the running
 * values and names every such field that differs in the file, so an edit
 * is never ignored silently.
 */
import type { RuleConfig, SluiceConfig } from './types.js';

/** Top-level keys a reload applies. */
export const RELOADABLE_KEYS: ReadonlySet<string> = new Set(['rules', 'final', 'outbounds', 'ruleSets', 'http', 'sniff', 'dns', 'geoip', 'icmp']);
/** dns fields a reload cannot change. */
const DNS_FIXED = ['mode', 'fakeIp.ipv4Range', 'fakeIp.ipv6Range', 'fakeIp.persistPath'] as const;
/** Fields of otherwise fixed sections that a reload applies. */
const RELOADABLE_FIELDS: ReadonlySet<string> = new Set(['classifier.bypass']);

export interface ReloadPlan {
  /** The configuration to run: the loaded file's reloadable parts, the running values elsewhere. */
  next: SluiceConfig;
  /** One line per change, for the log and the API ("rules: 1 added, 1 removed (4 in all)"). */
  changes: string[];
  /** Fields that differ in the file but need a restart ("tun.name", "dns.mode"). */
  needRestart: string[];
}

type Obj = Record<string, unknown>;

/** Leaf paths where `a` and `b` differ (arrays compared whole), `prefix.` joined. */
export function differingPaths(a: unknown, b: unknown, prefix: string): string[] {
  const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isObj(a) && isObj(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    const out: string[] = [];
    for (const k of keys) out.push(...differingPaths(a[k], b[k], prefix === '' ? k : `${prefix}.${k}`));
    return out;
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix];
}

function get(o: unknown, path: string): unknown {
  let v: unknown = o;
  for (const k of path.split('.')) v = v !== null && typeof v === 'object' ? (v as Obj)[k] : undefined;
  return v;
}

/**
 * `running`: the configuration in use; `startFile`: the file as loaded at
 * start (before run-time additions such as detected route exclusions);
 * `loaded`: the file as loaded now, already through `prepare` (run.ts's
 * per-run adjustments, such as route.mark on direct outbounds).
 */
export function planReload(running: SluiceConfig, startFile: SluiceConfig, loaded: SluiceConfig): ReloadPlan {
  const needRestart: string[] = [];
  const next = { ...loaded } as unknown as Obj;
  const run = running as unknown as Obj;
  const start = startFile as unknown as Obj;
  const file = loaded as unknown as Obj;
  for (const key of new Set([...Object.keys(run), ...Object.keys(file)])) {
    if (RELOADABLE_KEYS.has(key)) continue;
    needRestart.push(...differingPaths(start[key], file[key], key).filter((p) => !RELOADABLE_FIELDS.has(p)));
    next[key] = run[key];
  }
  if (running.classifier !== undefined && loaded.classifier !== undefined) next.classifier = { ...running.classifier, bypass: loaded.classifier.bypass };
  const dns = { ...loaded.dns, fakeIp: { ...loaded.dns.fakeIp } };
  for (const p of DNS_FIXED) {
    if (JSON.stringify(get(startFile.dns, p)) !== JSON.stringify(get(loaded.dns, p))) needRestart.push(`dns.${p}`);
  }
  dns.mode = running.dns.mode;
  dns.fakeIp.ipv4Range = running.dns.fakeIp.ipv4Range;
  dns.fakeIp.ipv6Range = running.dns.fakeIp.ipv6Range;
  dns.fakeIp.persistPath = running.dns.fakeIp.persistPath;
  next.dns = dns;
  const out = next as unknown as SluiceConfig;
  return { next: out, changes: describeChanges(running, out), needRestart };
}

const MAX_NAMES = 10;
const names = (list: string[]): string => (list.length <= MAX_NAMES ? list.join(', ') : `${list.slice(0, MAX_NAMES).join(', ')} and ${list.length - MAX_NAMES} more`);

/** The changes from `a` to `b` in words, one line per kind. */
export function describeChanges(a: SluiceConfig, b: SluiceConfig): string[] {
  const out: string[] = [];
  const rules = ruleDelta(a.rules, b.rules);
  if (rules.added > 0 || rules.removed > 0) out.push(`rules: ${rules.added} added, ${rules.removed} removed (${b.rules.length} in all)`);
  else if (JSON.stringify(a.rules) !== JSON.stringify(b.rules)) out.push(`rules: reordered (${b.rules.length} in all)`);
  if (a.final !== b.final) out.push(`final: ${a.final} -> ${b.final}`);
  const byName = (l: readonly { name: string }[]): Map<string, string> => new Map(l.map((o) => [o.name, JSON.stringify(o)]));
  const oa = byName(a.outbounds);
  const ob = byName(b.outbounds);
  const added = [...ob.keys()].filter((n) => !oa.has(n));
  const removed = [...oa.keys()].filter((n) => !ob.has(n));
  const changed = [...ob.keys()].filter((n) => oa.has(n) && oa.get(n) !== ob.get(n));
  if (added.length > 0) out.push(`outbounds added: ${names(added)}`);
  if (removed.length > 0) out.push(`outbounds removed: ${names(removed)}`);
  if (changed.length > 0) out.push(`outbounds changed: ${names(changed)}`);
  const ra = a.ruleSets;
  const rb = b.ruleSets;
  const rsAdded = Object.keys(rb).filter((n) => ra[n] === undefined);
  const rsRemoved = Object.keys(ra).filter((n) => rb[n] === undefined);
  const rsChanged = Object.keys(rb).filter((n) => ra[n] !== undefined && JSON.stringify(ra[n]) !== JSON.stringify(rb[n]));
  if (rsAdded.length > 0) out.push(`rule sets added: ${names(rsAdded)}`);
  if (rsRemoved.length > 0) out.push(`rule sets removed: ${names(rsRemoved)}`);
  if (rsChanged.length > 0) out.push(`rule sets changed: ${names(rsChanged.map((n) => `${n} (${ra[n]!.entries.length} -> ${rb[n]!.entries.length} entries)`))}`);
  const ba = a.classifier?.bypass ?? [];
  const bb = b.classifier?.bypass ?? [];
  const bAdded = bb.filter((p) => !ba.includes(p));
  const bRemoved = ba.filter((p) => !bb.includes(p));
  if (bAdded.length > 0 || bRemoved.length > 0) out.push(`classifier.bypass: ${bAdded.length} added, ${bRemoved.length} removed (${bb.length} in all)`);
  for (const key of ['dns', 'http', 'sniff', 'geoip', 'icmp'] as const) {
    const paths = differingPaths((a as unknown as Obj)[key], (b as unknown as Obj)[key], key);
    if (paths.length > 0) out.push(`${key} changed: ${names(paths)}`);
  }
  return out;
}

/** Rules added and removed, as multisets of their text (a moved rule is neither). */
function ruleDelta(a: readonly RuleConfig[], b: readonly RuleConfig[]): { added: number; removed: number } {
  const count = new Map<string, number>();
  for (const r of a) {
    const k = JSON.stringify(r);
    count.set(k, (count.get(k) ?? 0) + 1);
  }
  let added = 0;
  for (const r of b) {
    const k = JSON.stringify(r);
    const n = count.get(k) ?? 0;
    if (n > 0) count.set(k, n - 1);
    else added++;
  }
  let removed = 0;
  for (const n of count.values()) removed += n;
  return { added, removed };
}
