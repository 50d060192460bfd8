/**
 * Compiled rule conditions and their direct evaluation.
 *
 * A rule compiles to a tree: `All` (the keys of one rule object, ANDed),
 * `Any` (`or`), `Not`, and leaf tests, one per key (the items of one key's
 * list are ORed inside the test's structure). The policy's shared index
 * answers most rules without touching this tree; the tree is evaluated only
 * for candidate verification and for rules the index cannot hold, by one
 * module-level `evalCond` (a switch, no closures).
 */
import type { Cidr } from './cidr-trie.js';
import { CidrTriePair, NO_VALUE } from './cidr-trie.js';
import type { DomainKind } from './domain-trie.js';
import { DomainMatcher } from './domain-trie.js';
import type { PortSet } from './port-set.js';
import type { MatchContext } from './types.js';

export const CondKind = {
  All: 0,
  Any: 1,
  Not: 2,
  DstCidr: 3,
  SrcCidr: 4,
  /** domain / domainSuffix / domainKeyword / domainRegex: one DomainMatcher. */
  Domain: 5,
  DstPort: 6,
  SrcPort: 7,
  Network: 8,
  Inbound: 9,
  Protocol: 10,
  RuleSet: 11,
  /** uid / processName / processPath: the owner of the client socket, one Set each. */
  Uid: 12,
  ProcessName: 13,
  ProcessPath: 14,
} as const;
export type CondKind = (typeof CondKind)[keyof typeof CondKind];

export const NETWORK_BITS: Readonly<Record<string, number>> = { tcp: 1, udp: 2 };
export const INBOUND_BITS: Readonly<Record<string, number>> = { tun: 1, tproxy: 2 };
export const PROTOCOL_BITS: Readonly<Record<string, number>> = { tls: 1, http: 2, quic: 4, dns: 8 };

/** A parsed domain entry, kept so the shared index can be filled from it. */
export type DomainEntry =
  | { kind: 'name'; name: string; nameKind: DomainKind }
  | { kind: 'keyword'; word: string }
  | { kind: 'regex'; re: RegExp };

/** A rule set compiled once and shared by every rule naming it. */
export interface CompiledRuleSet {
  name: string;
  type: 'domain' | 'cidr';
  domainEntries: DomainEntry[];
  cidrs: Cidr[];
  /** Presence-only matchers (value 0) for verification of composite rules. */
  domain: DomainMatcher | null;
  cidr: CidrTriePair | null;
}

export interface Cond {
  kind: CondKind;
  /** The config key this node came from ('' for a rule object), for descriptions. */
  key: string;
  /** The key's list items as written, for descriptions. */
  items: readonly unknown[];
  /** All / Any: children; Not: one child. */
  children: Cond[];
  /** DstCidr / SrcCidr. */
  cidr: CidrTriePair | null;
  cidrs: Cidr[];
  /** Domain. */
  domain: DomainMatcher | null;
  domainEntries: DomainEntry[];
  /** DstPort / SrcPort (built at compile: a PortSet is a few bytes). */
  ports: PortSet | null;
  portRanges: [number, number][];
  /** Network / Inbound / Protocol: bit set of accepted values. */
  bits: number;
  /** RuleSet. */
  sets: CompiledRuleSet[];
  /** Uid (numbers) / ProcessName / ProcessPath (strings). */
  owner: ReadonlySet<number | string> | null;
}

/** Shared empty list for the fields a node kind does not use: 100,000 rules should not mean 500,000 empty arrays. */
const NONE: never[] = [];
Object.freeze(NONE);

/** A node with every list empty (shared, frozen); the compiler assigns a fresh array to the one field the kind uses. */
export function newCond(kind: CondKind, key = ''): Cond {
  return { kind, key, items: NONE, children: NONE, cidr: null, cidrs: NONE, domain: null, domainEntries: NONE, ports: null, portRanges: NONE, bits: 0, sets: NONE, owner: null };
}

/** Presence-only matcher over parsed domain entries (every value 0). */
export function domainMatcherOf(entries: readonly DomainEntry[]): DomainMatcher {
  const m = new DomainMatcher();
  for (const e of entries) {
    if (e.kind === 'name') m.trie.insert(e.name, e.nameKind, 0);
    else if (e.kind === 'keyword') m.keywords.add(e.word, 0);
    else m.regexes.add(e.re, 0);
  }
  return m.build();
}

/**
 * Drops the parsed items of a single-key rule once the shared index holds
 * them: such a rule is never evaluated on its own, and 100,000 parsed CIDRs
 * are 13 MiB. `items` stays for descriptions.
 */
export function releaseParsed(c: Cond): void {
  c.cidrs = NONE;
  c.domainEntries = NONE;
  c.portRanges = NONE;
}

function describeItems(items: readonly unknown[]): string {
  const shown = items.slice(0, 3).map((x) => String(x));
  if (items.length > 3) shown.push(`+${items.length - 3} more`);
  return `[${shown.join(', ')}]`;
}

/** `ipCidr=[203.0.113.0/24] port=[443]` for a rule object; built on demand for logs, never on the match path. */
export function describeCond(c: Cond): string {
  return c.children.map(describeKey).join(' ');
}

function describeKey(c: Cond): string {
  switch (c.kind) {
    case CondKind.Not:
      return `not={${describeCond(c.children[0]!)}}`;
    case CondKind.All:
    case CondKind.Any: {
      const shown = c.children.slice(0, 3).map((ch) => `{${describeCond(ch)}}`);
      if (c.children.length > 3) shown.push(`+${c.children.length - 3} more`);
      return `${c.key}=[${shown.join(', ')}]`;
    }
    default:
      return `${c.key}=${describeItems(c.items)}`;
  }
}

/**
 * Builds the per-key matchers of a condition tree (and of the rule sets it
 * names) on first need. Only rules the shared index cannot answer alone are
 * ever evaluated, so the 100,000 single-key rules of a large policy never
 * pay for a trie of their own.
 */
export function prepareCond(c: Cond): void {
  switch (c.kind) {
    case CondKind.DstCidr:
    case CondKind.SrcCidr:
      c.cidr ??= cidrPairOf(c.cidrs);
      break;
    case CondKind.Domain:
      c.domain ??= domainMatcherOf(c.domainEntries);
      break;
    case CondKind.RuleSet:
      for (const s of c.sets) {
        if (s.type === 'cidr') s.cidr ??= cidrPairOf(s.cidrs);
        else s.domain ??= domainMatcherOf(s.domainEntries);
      }
      break;
    default:
      for (const ch of c.children) prepareCond(ch);
  }
}

export function cidrPairOf(cidrs: readonly Cidr[]): CidrTriePair {
  const p = new CidrTriePair();
  for (const c of cidrs) p.insert(c, 0);
  return p;
}

function hasDomain(ctx: MatchContext): boolean {
  const d = ctx.domain;
  if (d === null) return false;
  const n = d.length;
  return n > 1 || (n === 1 && d.charCodeAt(0) !== 46);
}

/** Whether the condition holds for the flow. Never throws, allocates only when a regex needs a lowercase copy of the name. */
export function evalCond(c: Cond, ctx: MatchContext): boolean {
  switch (c.kind) {
    case CondKind.All: {
      const ch = c.children;
      for (let i = 0; i < ch.length; i++) if (!evalCond(ch[i]!, ctx)) return false;
      return true;
    }
    case CondKind.Any: {
      const ch = c.children;
      for (let i = 0; i < ch.length; i++) if (evalCond(ch[i]!, ctx)) return true;
      return false;
    }
    case CondKind.Not:
      return !evalCond(c.children[0]!, ctx);
    case CondKind.DstCidr:
      return c.cidr!.minMatch(ctx.family, ctx.dst) >= 0;
    case CondKind.SrcCidr:
      return c.cidr!.minMatch(ctx.family, ctx.src) >= 0;
    case CondKind.Domain:
      return hasDomain(ctx) && c.domain!.minMatch(ctx.domain!, NO_VALUE) >= 0;
    case CondKind.DstPort:
      return c.ports!.has(ctx.dstPort);
    case CondKind.SrcPort:
      return c.ports!.has(ctx.srcPort);
    case CondKind.Network:
      return (c.bits & (NETWORK_BITS[ctx.network] ?? 0)) !== 0;
    case CondKind.Inbound:
      return (c.bits & (INBOUND_BITS[ctx.inbound] ?? 0)) !== 0;
    case CondKind.Protocol:
      return ctx.protocol !== null && (c.bits & (PROTOCOL_BITS[ctx.protocol] ?? 0)) !== 0;
    case CondKind.Uid:
      return ctx.uid !== undefined && ctx.uid !== null && c.owner!.has(ctx.uid);
    case CondKind.ProcessName:
      return ctx.process !== undefined && ctx.process !== null && c.owner!.has(ctx.process);
    case CondKind.ProcessPath:
      return ctx.processPath !== undefined && ctx.processPath !== null && c.owner!.has(ctx.processPath);
    case CondKind.RuleSet: {
      const sets = c.sets;
      for (let i = 0; i < sets.length; i++) {
        const s = sets[i]!;
        if (s.cidr !== null && s.cidr.minMatch(ctx.family, ctx.dst) >= 0) return true;
        if (s.domain !== null && hasDomain(ctx) && s.domain.minMatch(ctx.domain!, NO_VALUE) >= 0) return true;
      }
      return false;
    }
  }
  return false;
}

export { hasDomain };

/** Whether the condition (or anything below it) looks at the owner of the client socket. */
export function usesOwner(c: Cond): boolean {
  if (c.kind === CondKind.Uid || c.kind === CondKind.ProcessName || c.kind === CondKind.ProcessPath) return true;
  for (const ch of c.children) if (usesOwner(ch)) return true;
  return false;
}
