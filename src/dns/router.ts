/**
 * dns.rules and dns.fakeIp.filter: name conditions compiled with the main
 * policy compiler (src/engine/policy/), so `domain`, `domainSuffix`,
 * `domainKeyword`, `domainRegex`, `ruleSet` and and/or/not mean exactly what
 * they mean in `rules`.
 *
 * DnsRouter sends each query to the upstream group of the first dns.rules
 * entry whose conditions hold for the question name, else to the default
 * group (dns.upstreams). The match reuses one context object: one parse of
 * the question and a trie walk per upstream query (cache misses only).
 */
import type { DnsCondition, DnsRuleConfig } from '../config/types.js';
import { compilePolicy } from '../engine/policy/compile.js';
import type { Policy } from '../engine/policy/policy.js';
import type { MatchContext, RuleInput, RuleSetInput } from '../engine/policy/types.js';
import { DnsError } from './errors.js';
import { decodeMessage } from './message.js';

/** What DnsRouter needs of a group (ResolverChain fits). */
export interface UpstreamGroup {
  query(query: Uint8Array, opts?: { signal?: AbortSignal }): Promise<Uint8Array>;
  close(): Promise<void>;
}

const ZERO4 = new Uint8Array(4);

/** A match context for a name alone (no addresses, ports or protocol). */
function nameContext(): MatchContext {
  return { network: 'udp', inbound: 'tun', family: 4, dst: ZERO4, dstPort: 0, src: ZERO4, srcPort: 0, domain: null, protocol: null };
}

/**
 * Compiles name conditions, each routed to `targets[i]`; names matching none
 * go to `final`. `field` prefixes error paths ("dns.rules", "dns.fakeIp.filter").
 */
function compileNames(field: string, conds: readonly object[], targets: readonly string[], final: string, names: readonly string[], ruleSets: Record<string, RuleSetInput>): Policy {
  const rules: RuleInput[] = conds.map((c, i) => {
    const r: Record<string, unknown> = { ...c };
    delete r.upstream;
    r.outbound = targets[i];
    return r as RuleInput;
  });
  try {
    return compilePolicy({ rules, ruleSets, final, outbounds: names.map((name) => ({ name })) });
  } catch (err) {
    // The policy compiler names `rules[3].domain[0]`; say where it really is.
    const msg = (err as Error).message.replace(/^rules\[/, `${field}[`);
    throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', msg, { cause: err });
  }
}

export class DnsRouter implements UpstreamGroup {
  private readonly policy: Policy;
  private readonly groups: Map<string, UpstreamGroup>;
  private readonly fallback: UpstreamGroup;
  private readonly ctx = nameContext();
  /** Upstream queries per group name, for stats and tests. */
  readonly routed = new Map<string, number>();

  /**
   * `rules[i].upstream` names a key of `groups` or "default" (`fallback`).
   * Throws DnsError naming `dns.rules[i]...` on a bad condition.
   */
  constructor(
    rules: readonly DnsRuleConfig[],
    fallback: UpstreamGroup,
    groups: Map<string, UpstreamGroup>,
    ruleSets: Record<string, RuleSetInput> = {},
    /** Closed with the groups (the DoH bootstrap chain). */
    private readonly alsoClose: readonly { close(): Promise<void> }[] = [],
  ) {
    this.fallback = fallback;
    this.groups = groups;
    this.policy = compileNames('dns.rules', rules, rules.map((r) => r.upstream), 'default', ['default', ...groups.keys()], ruleSets);
  }

  /** The group name a query name goes to. */
  groupFor(name: string): string {
    this.ctx.domain = name;
    const m = this.policy.match(this.ctx);
    this.ctx.domain = null;
    return m.outbound;
  }

  query(query: Uint8Array, opts: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const name = decodeMessage(query).message?.questions[0]?.name ?? null;
    const group = name === null ? 'default' : this.groupFor(name);
    this.routed.set(group, (this.routed.get(group) ?? 0) + 1);
    return (this.groups.get(group) ?? this.fallback).query(query, opts);
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.fallback.close(), ...[...this.groups.values()].map((g) => g.close()), ...this.alsoClose.map((c) => c.close())]);
  }
}

/**
 * dns.fakeIp.filter as the hijack's `shouldFake`: false (answer for real)
 * for names matching any of the conditions.
 */
export function fakeIpFilter(conds: readonly DnsCondition[], ruleSets: Record<string, RuleSetInput> = {}): ((name: string) => boolean) | null {
  if (conds.length === 0) return null;
  const policy = compileNames('dns.fakeIp.filter', conds, conds.map(() => 'real'), 'fake', ['real', 'fake'], ruleSets);
  const ctx = nameContext();
  return (name: string): boolean => {
    ctx.domain = name;
    const fake = policy.match(ctx).ruleIndex < 0;
    ctx.domain = null;
    return fake;
  };
}
