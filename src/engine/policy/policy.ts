/**
 * The compiled routing policy: first-match-wins over the ordered `rules`,
 * answered through shared indexes so the cost of a match grows with the
 * length of the address and the name, not with the number of rules.
 *
 * How a match runs (best = smallest matching rule index so far):
 *  1. Definite index. A rule with a single key (only ipCidr, only
 *     domainSuffix, only a ruleSet, only port, ...) is fully decided by that
 *     key, so its items go into shared structures whose value is the rule
 *     index: CIDR tries (min over every prefix on the path), the domain trie,
 *     the keyword automaton, 65536-entry port tables, tiny tables for
 *     network / inbound / protocol. Each gives the smallest rule index it
 *     holds for the flow.
 *  2. Candidates. A rule whose keys are ANDed (several keys, or `and`) has a
 *     necessary key; the most selective one (domain name, destination CIDR,
 *     source CIDR, then protocol / network / inbound) indexes it in candidate
 *     structures that return sorted rule lists. Candidates below `best` are
 *     verified against their whole condition; the first that holds wins.
 *  3. Regexes of single-key domainRegex rules (and regex entries of rule sets),
 *     in rule order, only those with index below `best`.
 *  4. Residual rules (top-level or / not, and rules whose keys cannot index),
 *     in order, only while their index is below `best`.
 * The result is exactly what evaluating every rule in order would give; the
 * randomized test in test/policy/equivalence.test.ts checks this against a
 * naive evaluator.
 *
 * A Policy is immutable once compiled. Reloading (SIGHUP) compiles a new one
 * and swaps it into a `PolicySlot`; flows already routed keep their result.
 */
import type { CidrTriePair, TrieNode } from './cidr-trie.js';
import { NO_VALUE } from './cidr-trie.js';
import type { DomainMatcher, DomainTrie } from './domain-trie.js';
import { normalizeDomain } from './domain-trie.js';
import type { Cond } from './conditions.js';
import { describeCond, evalCond, hasDomain } from './conditions.js';
import type { PortIndex } from './port-set.js';
import type { Explanation, MatchContext, MatchResult } from './types.js';

/** Candidate rule lists keyed by trie node (CIDR) or slot (domain); each list ascending. */
export interface CidrCandidates {
  pair: CidrTriePair;
  v4: (Int32Array | undefined)[];
  v6: (Int32Array | undefined)[];
}

export interface DomainCandidates {
  trie: DomainTrie;
  lists: (Int32Array | undefined)[];
}

/** Everything compile.ts builds; Policy only reads it. */
export interface PolicyParts {
  conds: Cond[];
  outbounds: string[];
  finalOutbound: string;
  dst: CidrTriePair;
  src: CidrTriePair;
  domain: DomainMatcher;
  dstPort: PortIndex;
  srcPort: PortIndex;
  /** [tcp, udp], [tun, tproxy], [tls, http, quic, dns]: smallest single-key rule index or NO_VALUE. */
  network: Int32Array;
  inbound: Int32Array;
  protocol: Int32Array;
  candDst: CidrCandidates;
  candSrc: CidrCandidates;
  candDomain: DomainCandidates;
  candNetwork: Int32Array[];
  candInbound: Int32Array[];
  candProtocol: Int32Array[];
  residual: Int32Array;
  /** Rules with a uid / processName / processPath condition anywhere in them. */
  ownerRules: number;
  stats: PolicyStats;
}

export interface PolicyStats {
  rules: number;
  /** Rules answered by the definite index alone. */
  indexed: number;
  /** Rules found through a candidate key, then verified. */
  candidates: number;
  /** Rules evaluated in order (or / not at top level, unindexable keys). */
  residual: number;
  cidrPrefixes: number;
  domainNames: number;
  keywords: number;
  regexes: number;
  compileMs: number;
}

const NET_SLOT: Readonly<Record<string, number>> = { tcp: 0, udp: 1 };
const INB_SLOT: Readonly<Record<string, number>> = { tun: 0, tproxy: 1 };
const PROTO_SLOT: Readonly<Record<string, number>> = { tls: 0, http: 1, quic: 2, dns: 3 };

export class Policy {
  readonly finalOutbound: string;
  readonly stats: PolicyStats;
  private readonly p: PolicyParts;
  private readonly results: readonly MatchResult[];
  private readonly finalResult: MatchResult;
  /** Reused node lists for candidate lookups (longest IPv6 path is 129 nodes; a name has < 128 labels, 2 slots each). */
  private readonly nodeScratch = new Int32Array(129);
  private readonly slotScratch = new Int32Array(256);

  constructor(parts: PolicyParts) {
    this.p = parts;
    this.finalOutbound = parts.finalOutbound;
    this.stats = Object.freeze({ ...parts.stats });
    this.results = parts.outbounds.map((outbound, ruleIndex) => Object.freeze({ ruleIndex, outbound }));
    this.finalResult = Object.freeze({ ruleIndex: -1, outbound: parts.finalOutbound });
    Object.freeze(this);
  }

  /**
   * Whether any rule looks at the owner of the client socket: only then does
   * the engine look the owner up (a netlink query and a /proc walk per new flow).
   */
  get needsOwner(): boolean {
    return this.p.ownerRules > 0;
  }

  get ruleCount(): number {
    return this.p.conds.length;
  }

  /** The route for a flow: the first rule that matches, or `final`. Returns a shared frozen object; allocates nothing unless a regex runs on an uppercase name. */
  match(ctx: MatchContext): MatchResult {
    const i = this.matchIndex(ctx);
    return i < 0 ? this.finalResult : this.results[i]!;
  }

  /** `match` plus a description of the rule for logs: `rules[2] ipCidr=[203.0.113.0/24] -> corp`. */
  explain(ctx: MatchContext): Explanation {
    const r = this.match(ctx);
    return { ruleIndex: r.ruleIndex, outbound: r.outbound, description: this.describe(r.ruleIndex) };
  }

  /** Description of rule `i` (-1 for final) for logs; built on demand, at most ~200 characters of keys. */
  describe(ruleIndex: number): string {
    if (ruleIndex < 0) return `final -> ${this.finalOutbound}`;
    const c = this.p.conds[ruleIndex];
    if (c === undefined) return `rules[${ruleIndex}] (no such rule)`;
    let body = describeCond(c);
    if (body.length > 200) body = `${body.slice(0, 197)}...`;
    return `rules[${ruleIndex}] ${body} -> ${this.p.outbounds[ruleIndex]!}`;
  }

  /** Index of the first matching rule, or -1. */
  matchIndex(ctx: MatchContext): number {
    const p = this.p;
    const fam = ctx.family;
    const domainKnown = hasDomain(ctx);
    let best = NO_VALUE;
    let v: number;

    // 1. definite index
    v = p.dst.minMatch(fam, ctx.dst);
    if (v >= 0 && v < best) best = v;
    v = p.src.minMatch(fam, ctx.src);
    if (v >= 0 && v < best) best = v;
    if (domainKnown) {
      const d = ctx.domain!;
      v = p.domain.trie.minMatch(d);
      if (v >= 0 && v < best) best = v;
      v = p.domain.keywords.minMatch(d);
      if (v >= 0 && v < best) best = v;
    }
    v = p.dstPort.minMatch(ctx.dstPort);
    if (v >= 0 && v < best) best = v;
    v = p.srcPort.minMatch(ctx.srcPort);
    if (v >= 0 && v < best) best = v;
    const ns = NET_SLOT[ctx.network] ?? -1;
    if (ns >= 0 && p.network[ns]! < best) best = p.network[ns]!;
    const is = INB_SLOT[ctx.inbound] ?? -1;
    if (is >= 0 && p.inbound[is]! < best) best = p.inbound[is]!;
    const ps = ctx.protocol === null ? -1 : (PROTO_SLOT[ctx.protocol] ?? -1);
    if (ps >= 0 && p.protocol[ps]! < best) best = p.protocol[ps]!;

    // 2. candidates, verified
    best = this.cidrCandidates(p.candDst, fam, ctx.dst, ctx, best);
    best = this.cidrCandidates(p.candSrc, fam, ctx.src, ctx, best);
    if (domainKnown && p.candDomain.trie.size > 0) {
      const scratch = this.slotScratch;
      const n = p.candDomain.trie.collect(ctx.domain!, scratch);
      for (let k = 0; k < n; k++) best = this.verifyList(p.candDomain.lists[scratch[k]!], ctx, best);
    }
    if (ps >= 0) best = this.verifyList(p.candProtocol[ps], ctx, best);
    if (ns >= 0) best = this.verifyList(p.candNetwork[ns], ctx, best);
    if (is >= 0) best = this.verifyList(p.candInbound[is], ctx, best);

    // 3. regexes below best
    if (domainKnown && p.stats.regexes > 0) {
      const name = normalizeDomain(ctx.domain);
      if (name !== null) {
        v = p.domain.regexes.minMatchBelow(name, best);
        if (v >= 0) best = v;
      }
    }

    // 4. residual rules below best, in order
    const res = p.residual;
    for (let k = 0; k < res.length; k++) {
      const id = res[k]!;
      if (id >= best) break;
      if (evalCond(p.conds[id]!, ctx)) {
        best = id;
        break;
      }
    }
    return best === NO_VALUE ? -1 : best;
  }

  private cidrCandidates(c: CidrCandidates, fam: 4 | 6, addr: Uint8Array, ctx: MatchContext, best: number): number {
    const trie = fam === 4 ? c.pair.v4 : c.pair.v6;
    if (trie.size === 0 || addr.length !== (fam === 4 ? 4 : 16)) return best;
    const lists = fam === 4 ? c.v4 : c.v6;
    const scratch = this.nodeScratch;
    const n = trie.collect(addr, scratch);
    for (let k = 0; k < n; k++) best = this.verifyList(lists[scratch[k]! as TrieNode], ctx, best);
    return best;
  }

  private verifyList(list: Int32Array | undefined, ctx: MatchContext, best: number): number {
    if (list === undefined) return best;
    const conds = this.p.conds;
    for (let k = 0; k < list.length; k++) {
      const id = list[k]!;
      if (id >= best) break;
      if (evalCond(conds[id]!, ctx)) return id;
    }
    return best;
  }
}

/**
 * Holds the current Policy for the engine. Reload = compile a new Policy (which
 * throws PolicyError and leaves the slot untouched if the config is bad), then
 * `swap`. Reads are a single field load, so a flow sees either the old or the
 * new policy, never a mix.
 */
export class PolicySlot {
  private cur: Policy;
  private gen = 0;

  constructor(initial: Policy) {
    this.cur = initial;
  }

  get current(): Policy {
    return this.cur;
  }

  /** Bumped on every swap; lets metrics and logs say which policy routed a flow. */
  get generation(): number {
    return this.gen;
  }

  /** Installs `next` and returns the policy it replaced. */
  swap(next: Policy): Policy {
    const prev = this.cur;
    this.cur = next;
    this.gen++;
    return prev;
  }

  match(ctx: MatchContext): MatchResult {
    return this.cur.match(ctx);
  }
}
