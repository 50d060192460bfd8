/**
 * sluice rules in the Clash/mihomo vocabulary, for GET /rules and a
 * connection's `rule` / `rulePayload`: a single-key rule takes the mihomo
 * type name of its key (DomainSuffix, IPCIDR, DstPort, ...) and its items
 * comma-joined as payload; several keys (ANDed) become AND with the mihomo
 * payload form `((DomainSuffix,a.com),(DstPort,443))`; `final` is Match.
 */
import type { RuleCondition, RuleConfig } from '../config/types.js';

const TYPE_NAMES: Record<string, string> = {
  ipCidr: 'IPCIDR',
  sourceCidr: 'SrcIPCIDR',
  domain: 'Domain',
  domainSuffix: 'DomainSuffix',
  domainKeyword: 'DomainKeyword',
  domainRegex: 'DomainRegex',
  port: 'DstPort',
  sourcePort: 'SrcPort',
  network: 'Network',
  inbound: 'InType',
  protocol: 'Protocol',
  ruleSet: 'RuleSet',
  and: 'AND',
  or: 'OR',
  not: 'NOT',
};

export interface ClashRule {
  type: string;
  payload: string;
}

function keys(c: RuleCondition): string[] {
  return Object.keys(c).filter((k) => k !== 'outbound' && (c as Record<string, unknown>)[k] !== undefined);
}

function part(key: string, value: unknown): ClashRule {
  const type = TYPE_NAMES[key] ?? key;
  if (key === 'and' || key === 'or') return { type, payload: `(${(value as RuleCondition[]).map(nested).join(',')})` };
  if (key === 'not') return { type, payload: `(${nested(value as RuleCondition)})` };
  return { type, payload: Array.isArray(value) ? value.map(String).join(',') : String(value) };
}

function nested(c: RuleCondition): string {
  const r = describeCondition(c);
  return `(${r.type},${r.payload})`;
}

export function describeCondition(c: RuleCondition): ClashRule {
  const ks = keys(c);
  if (ks.length === 1) return part(ks[0]!, (c as Record<string, unknown>)[ks[0]!]);
  return { type: 'AND', payload: `(${ks.map((k) => { const p = part(k, (c as Record<string, unknown>)[k]); return `(${p.type},${p.payload})`; }).join(',')})` };
}

/** The rule a flow matched: index into rules, -1 for final; `mode` when a mode other than rule decided. */
export function ruleOfFlow(rules: readonly RuleConfig[], index: number, mode: string | null): ClashRule {
  if (mode === 'global') return { type: 'Global', payload: '' };
  if (mode === 'direct') return { type: 'Direct', payload: '' };
  const r = index >= 0 ? rules[index] : undefined;
  return r === undefined ? { type: 'Match', payload: '' } : describeCondition(r);
}

/** sluice's own text of a rule, for /v1/flows: `rules[2] domainSuffix [a.com, b.com]`. */
export function sluiceRuleText(rules: readonly RuleConfig[], index: number, mode: string | null): string {
  if (mode !== null && mode !== 'rule') return `mode ${mode}`;
  const r = index >= 0 ? rules[index] : undefined;
  if (r === undefined) return 'final';
  return `rules[${index}] ${keys(r).map((k) => `${k} ${JSON.stringify((r as unknown as Record<string, unknown>)[k])}`).join(' and ')}`;
}

/**
 * A flow log line as mihomo writes its connection lines:
 * `[TCP] 203.0.113.2:40000 --> example.com:443 match DomainSuffix(example.com) using direct`,
 * then what sluice knows at the end (bytes, duration, how it closed).
 */
export function flowLineText(line: Record<string, unknown>, rules: readonly RuleConfig[]): string {
  const dst = String(line.dst ?? '');
  const port = dst.slice(dst.lastIndexOf(':') + 1);
  const to = typeof line.domain === 'string' ? `${line.domain}:${port}` : dst;
  const r = ruleOfFlow(rules, typeof line.rule === 'number' ? line.rule : -1, typeof line.mode === 'string' ? line.mode : null);
  const rule = r.payload === '' ? r.type : `${r.type}(${r.payload})`;
  return `[${String(line.network ?? '').toUpperCase()}] ${String(line.src ?? '')} --> ${to} match ${rule} using ${String(line.outbound ?? '')} (up ${String(line.bytesUp ?? 0)} B, down ${String(line.bytesDown ?? 0)} B, ${String(line.durationMs ?? 0)} ms, ${String(line.close ?? '')})`;
}
