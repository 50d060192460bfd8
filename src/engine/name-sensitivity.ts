/**
 * Whether a policy can decide differently once it knows a flow's name or
 * protocol. When it cannot (no domain, protocol or domain-rule-set
 * conditions anywhere), sniffing the first bytes changes nothing, so the
 * engine connects the outbound before answering the client's SYN: a dead
 * upstream then shows the client a refused connection, not an accepted one
 * that dies.
 */
import type { RuleCondition, SluiceConfig } from '../config/types.js';

const NAME_KEYS = ['domain', 'domainSuffix', 'domainKeyword', 'domainRegex', 'protocol'] as const;

function conditionNeedsName(c: RuleCondition, domainSets: ReadonlySet<string>): boolean {
  for (const k of NAME_KEYS) if (c[k] !== undefined) return true;
  if (c.ruleSet !== undefined && c.ruleSet.some((name) => domainSets.has(name))) return true;
  if (c.and !== undefined && c.and.some((x) => conditionNeedsName(x, domainSets))) return true;
  if (c.or !== undefined && c.or.some((x) => conditionNeedsName(x, domainSets))) return true;
  if (c.not !== undefined && conditionNeedsName(c.not, domainSets)) return true;
  return false;
}

export function policyNeedsName(config: Pick<SluiceConfig, 'rules' | 'ruleSets'>): boolean {
  const domainSets = new Set(Object.entries(config.ruleSets).filter(([, rs]) => rs.type === 'domain').map(([name]) => name));
  return config.rules.some((r) => conditionNeedsName(r, domainSets));
}
