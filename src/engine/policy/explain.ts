/**
 * Why a flow went where it went: the rules evaluated one by one, in order,
 * over fully built condition trees (compile.ts `compileConditions`), with
 * the first condition that failed for each rule before the deciding one.
 *
 * The compiled Policy answers through shared indexes and drops the parsed
 * items of single-key rules, so it cannot say why a rule did not match;
 * this module keeps its own copy of the conditions and is built only when
 * someone asks (`sluice explain`, `GET /v1/flows/:id/explain`), never on
 * the match path. Evaluating in order is the rules' definition (first
 * match wins), so the deciding rule always equals `Policy.matchIndex`;
 * test/policy/explain.test.ts checks that on the random-policy generator,
 * and `explainFlow` reports it should they ever differ.
 *
 * Failure texts name what was missing or different, in the form
 * `rule 0 domainSuffix [example.com]: name unknown`.
 */
import { compileConditions } from './compile.js';
import { formatIp } from './cidr-trie.js';
import type { Cond } from './conditions.js';
import { CondKind, evalCond, hasDomain } from './conditions.js';
import type { Policy } from './policy.js';
import type { GeoIpLookup, MatchContext } from './types.js';
import { geoIpLookup } from '../geoip-lookup.js';
import type { RuleSetType, SluiceConfig } from '../../config/types.js';

/** Where the flow's name came from. */
export type NameOrigin = 'command-line' | 'fake-ip' | 'dns-snoop' | 'sniffed' | 'none';

export interface RuleFailure {
  index: number;
  /** `domainSuffix [example.com]`: the key that failed, as written. */
  condition: string;
  /** `name unknown`. */
  reason: string;
}

export interface PolicyExplanation {
  /** The deciding rule, or -1 for final. */
  ruleIndex: number;
  /** `rule 3 ipCidr [203.0.113.0/24] port [443]`, or `final`. */
  rule: string;
  outbound: string;
  /** The outbound path (a group and the member it chose; one name for a plain outbound). */
  chain: string[];
  /** Every rule before the deciding one, with its first failed condition. */
  failed: RuleFailure[];
  /** The match inputs as text. */
  input: ExplainInput;
}

export interface ExplainInput {
  network: string;
  inbound: string;
  src: string;
  dst: string;
  domain: string | null;
  nameOrigin: NameOrigin;
  protocol: string | null;
}

/** Longest list shown per key; the rest is counted. */
const SHOW_ITEMS = 3;
/** A rule description is cut here (a rule may list 100,000 CIDRs). */
const MAX_DESCRIPTION = 200;

function showItems(items: readonly unknown[]): string {
  const shown = items.slice(0, SHOW_ITEMS).map((x) => String(x));
  if (items.length > SHOW_ITEMS) shown.push(`+${items.length - SHOW_ITEMS} more`);
  return `[${shown.join(', ')}]`;
}

function clip(s: string): string {
  return s.length > MAX_DESCRIPTION ? `${s.slice(0, MAX_DESCRIPTION - 3)}...` : s;
}

/** `domainSuffix [example.com]` for a key node; `and [{...}, {...}]` for and/or; `not {...}`. */
export function describeKeyCond(c: Cond): string {
  switch (c.kind) {
    case CondKind.Not:
      return `not {${describeRuleCond(c.children[0]!)}}`;
    case CondKind.All:
    case CondKind.Any: {
      const shown = c.children.slice(0, SHOW_ITEMS).map((ch) => `{${describeRuleCond(ch)}}`);
      if (c.children.length > SHOW_ITEMS) shown.push(`+${c.children.length - SHOW_ITEMS} more`);
      return `${c.key} [${shown.join(', ')}]`;
    }
    default:
      return `${c.key} ${showItems(c.items)}`;
  }
}

/** The keys of a rule object: `ipCidr [203.0.113.0/24] port [443]`. */
export function describeRuleCond(c: Cond): string {
  return clip(c.children.map(describeKeyCond).join(' '));
}

function addressText(bytes: Uint8Array, port: number): string {
  const ip = formatIp(bytes);
  return bytes.length === 16 ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Why `c` (a key node, not a rule object) does not hold for `ctx`. Only
 * called when evalCond said false; the reason names the flow's value.
 */
function leafReason(c: Cond, ctx: MatchContext): string {
  switch (c.kind) {
    case CondKind.DstCidr:
      return `destination ${formatIp(ctx.dst)} not in the list`;
    case CondKind.SrcCidr:
      return `source ${formatIp(ctx.src)} not in the list`;
    case CondKind.Domain:
      return hasDomain(ctx) ? `name ${ctx.domain!} does not match` : 'name unknown';
    case CondKind.DstPort:
      return `port ${ctx.dstPort} not in the list`;
    case CondKind.SrcPort:
      return `source port ${ctx.srcPort} not in the list`;
    case CondKind.Network:
      return `network is ${ctx.network}`;
    case CondKind.Inbound:
      return `inbound is ${ctx.inbound}`;
    case CondKind.Protocol:
      return ctx.protocol === null ? 'protocol unknown (nothing sniffed)' : `protocol is ${ctx.protocol}`;
    case CondKind.RuleSet: {
      const parts: string[] = [];
      const domainSets = c.sets.filter((s) => s.type === 'domain' || s.type === 'mixed').map((s) => s.name);
      const cidrSets = c.sets.filter((s) => s.type === 'cidr' || s.type === 'mixed').map((s) => s.name);
      if (cidrSets.length > 0) parts.push(`destination ${formatIp(ctx.dst)} not in ${cidrSets.join(', ')}`);
      if (domainSets.length > 0) parts.push(hasDomain(ctx) ? `name ${ctx.domain!} not in ${domainSets.join(', ')}` : 'name unknown');
      return parts.join('; ');
    }
    case CondKind.GeoIp: {
      const country = c.geoip?.(ctx.dst.length === 16 ? 6 : 4, ctx.dst) ?? null;
      return country === null ? `destination ${formatIp(ctx.dst)} has no country in the database` : `destination ${formatIp(ctx.dst)} is in ${country}`;
    }
    case CondKind.Uid:
      return ctx.uid === undefined || ctx.uid === null ? 'owner unknown (not a flow from this machine)' : `uid is ${ctx.uid}`;
    case CondKind.ProcessName:
      return ctx.process === undefined || ctx.process === null ? 'owner unknown (not a flow from this machine)' : `process is ${ctx.process}`;
    case CondKind.ProcessPath:
      return ctx.processPath === undefined || ctx.processPath === null ? 'owner unknown (not a flow from this machine)' : `process path is ${ctx.processPath}`;
    case CondKind.Not:
      return `the sub-rule {${describeRuleCond(c.children[0]!)}} matches`;
    case CondKind.All: {
      // `and`: the first sub-rule that fails, and why.
      for (let i = 0; i < c.children.length; i++) {
        const ch = c.children[i]!;
        if (!evalCond(ch, ctx)) return `and[${i}] ${firstFailure(ch, ctx)}`;
      }
      return 'did not match';
    }
    case CondKind.Any: {
      // `or`: every sub-rule failed; say why for the first few.
      const shown = c.children.slice(0, SHOW_ITEMS).map((ch, i) => `or[${i}] ${firstFailure(ch, ctx)}`);
      if (c.children.length > SHOW_ITEMS) shown.push(`+${c.children.length - SHOW_ITEMS} more`);
      return `no sub-rule matches (${shown.join('; ')})`;
    }
    default:
      // A condition kind this module does not know yet (added by a newer compiler).
      return 'does not match';
  }
}

/** `domainSuffix [example.com]: name unknown` for the first failing key of a rule object. */
function firstFailure(rule: Cond, ctx: MatchContext): string {
  const f = failingKey(rule, ctx);
  return f === null ? 'matches' : `${describeKeyCond(f)}: ${leafReason(f, ctx)}`;
}

function failingKey(rule: Cond, ctx: MatchContext): Cond | null {
  for (const key of rule.children) if (!evalCond(key, ctx)) return key;
  return null;
}

/**
 * The rules of one configuration, ready to explain flows. Construct once per
 * policy (it compiles the conditions again, fully, which for a large policy
 * takes as long as compilePolicy); cheap to call afterwards.
 */
export class PolicyExplainer {
  private readonly conds: Cond[];
  private readonly outbounds: string[];
  readonly finalOutbound: string;

  /** `input` as for compilePolicy (rule-set entries loaded). Throws PolicyError as compilePolicy does. */
  constructor(input: unknown) {
    const r = compileConditions(input);
    this.conds = r.conds;
    this.outbounds = r.outbounds;
    this.finalOutbound = r.finalOutbound;
  }

  /** Index of the first rule that matches, or -1: the rules' definition, evaluated in order. */
  decidingRule(ctx: MatchContext): number {
    for (let i = 0; i < this.conds.length; i++) if (evalCond(this.conds[i]!, ctx)) return i;
    return -1;
  }

  /**
   * The deciding rule and, for every rule before it, the first failed
   * condition. `chainOf` maps an outbound to its path (groups); without it
   * the chain is the outbound alone.
   */
  explain(ctx: MatchContext, nameOrigin: NameOrigin, chainOf?: (outbound: string) => string[]): PolicyExplanation {
    const failed: RuleFailure[] = [];
    let decided = -1;
    for (let i = 0; i < this.conds.length; i++) {
      const rule = this.conds[i]!;
      const key = failingKey(rule, ctx);
      if (key === null) {
        decided = i;
        break;
      }
      failed.push({ index: i, condition: describeKeyCond(key), reason: leafReason(key, ctx) });
    }
    const outbound = decided < 0 ? this.finalOutbound : this.outbounds[decided]!;
    return {
      ruleIndex: decided,
      rule: decided < 0 ? 'final' : `rule ${decided} ${describeRuleCond(this.conds[decided]!)}`,
      outbound,
      chain: chainOf?.(outbound) ?? [outbound],
      failed,
      input: {
        network: ctx.network,
        inbound: ctx.inbound,
        src: addressText(ctx.src, ctx.srcPort),
        dst: addressText(ctx.dst, ctx.dstPort),
        domain: hasDomain(ctx) ? ctx.domain : null,
        nameOrigin: hasDomain(ctx) ? nameOrigin : 'none',
        protocol: ctx.protocol,
      },
    };
  }
}

const ORIGIN_TEXT: Readonly<Record<NameOrigin, string>> = {
  'command-line': 'given on the command line',
  'fake-ip': 'the fake-IP mapping of the destination address',
  'dns-snoop': 'a DNS answer snooped for the destination address',
  sniffed: 'sniffed from the first bytes (TLS SNI, HTTP Host or QUIC)',
  none: 'no name known',
};

/**
 * What a live flow's sniffer read after its route was chosen (the route was
 * chosen before the first bytes because no rule needed them): shown beside
 * the routing inputs, never as them.
 */
export interface SniffedAfter {
  domain: string | null;
  protocol: string | null;
}

const SNIFFED_AFTER = 'sniffed after the route was chosen, for the log and /connections only';

/**
 * The explanation as the CLI prints it. `note` lines (a reload since the
 * flow was routed, a disagreement with the index) come after the decision.
 */
export function formatExplanation(e: PolicyExplanation, opts: { notes?: readonly string[]; outboundKind?: (name: string) => string | null; sniffedAfter?: SniffedAfter | null } = {}): string {
  const lines: string[] = [];
  const i = e.input;
  const after = opts.sniffedAfter ?? null;
  lines.push(`flow: ${i.network} ${i.inbound} ${i.src} -> ${i.dst}`);
  if (i.domain !== null) lines.push(`name: ${i.domain} (${ORIGIN_TEXT[i.nameOrigin]})`);
  else if (after?.domain != null) lines.push(`name: none when routed (${after.domain} ${SNIFFED_AFTER})`);
  else lines.push(`name: none (${ORIGIN_TEXT.none})`);
  if (i.protocol !== null) lines.push(`protocol: ${i.protocol}`);
  else if (after?.protocol != null) lines.push(`protocol: none when routed (${after.protocol} ${SNIFFED_AFTER})`);
  else lines.push('protocol: none sniffed');
  for (const f of e.failed) lines.push(`rule ${f.index} ${f.condition}: ${f.reason}`);
  lines.push(`decided by: ${e.rule}`);
  const kind = opts.outboundKind?.(e.outbound) ?? null;
  lines.push(`outbound: ${e.chain.join(' -> ')}${kind === null ? '' : ` (${kind})`}`);
  for (const n of opts.notes ?? []) lines.push(`note: ${n}`);
  return lines.join('\n');
}

/** Runs the explanation and checks it against the compiled policy's own answer (they must agree). */
export function explainWithCheck(explainer: PolicyExplainer, policy: Policy | null, ctx: MatchContext, origin: NameOrigin, chainOf?: (outbound: string) => string[]): { explanation: PolicyExplanation; notes: string[] } {
  const explanation = explainer.explain(ctx, origin, chainOf);
  const notes: string[] = [];
  if (policy !== null) {
    const indexed = policy.matchIndex(ctx);
    if (indexed !== explanation.ruleIndex) notes.push(`the compiled policy's index answers ${indexed < 0 ? 'final' : `rule ${indexed}`} (a bug: please report it with this output)`);
  }
  return { explanation, notes };
}

/**
 * The policy part of a configuration, as the engine compiles it
 * (src/engine/runtime.ts compileConfigPolicy); `geoip` is the country
 * lookup of geoip.database, opened here when not given.
 */
export function policyInputOf(config: SluiceConfig, geoip?: GeoIpLookup | null): unknown {
  const ruleSets: Record<string, { type: RuleSetType; entries: string[] }> = {};
  for (const [name, rs] of Object.entries(config.ruleSets)) ruleSets[name] = { type: rs.type, entries: rs.entries };
  const lookup = geoip !== undefined ? geoip : config.geoip.database === null ? null : geoIpLookup(config.geoip.database);
  return { rules: config.rules, ruleSets, final: config.final, outbounds: config.outbounds, ...(lookup !== null ? { geoip: lookup } : {}) };
}

/** `socks5 203.0.113.2:1080` for an outbound of the configuration; null if unknown. */
export function outboundKindOf(config: SluiceConfig): (name: string) => string | null {
  return (name) => {
    const o = config.outbounds.find((x) => x.name === name);
    if (o === undefined) return null;
    if (o.type === 'socks5' || o.type === 'http') return `${o.type} ${o.server.includes(':') ? `[${o.server}]` : o.server}:${o.port}`;
    return o.type;
  };
}

