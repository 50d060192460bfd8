/**
 * Compiles the `rules` / `ruleSets` / `final` part of the configuration into
 * an immutable `Policy` (see policy.ts for how matching uses what is built
 * here). Every value is validated here, whatever the config layer already
 * checked, and the first problem throws a PolicyError with a stable code and
 * the field path (`rules[3].ipCidr[1]`, `ruleSets.ads.entries[12]`).
 *
 * Rule semantics (the contract in the shared config brief):
 *  - rules are ordered, the first that matches wins, `final` otherwise;
 *  - the keys of one rule object are ANDed, the items of one key's list ORed;
 *    `and` / `or` / `not` are keys like the others (ANDed with siblings);
 *  - a list key also accepts a single scalar (`port: 443`, `network: tcp`);
 *  - ipCidr / ruleSet cidr entries test the destination address, sourceCidr
 *    the source; a bare address is a host prefix; host bits are cleared;
 *  - domainSuffix `example.com` matches the name and names below it,
 *    `.example.com` only names below it; `domain` is the exact name;
 *  - domain keys never match a flow without a name (`domain: null`);
 *  - uid / processName / processPath test the owner of the client socket
 *    (flows from this machine; src/system/socket-owner.ts): they never hold
 *    for a flow whose owner is unknown (gateway and TPROXY flows);
 *  - rule-set domain lines: `example.com` suffix, `.example.com` subdomains,
 *    `full:x` exact, `keyword:x`, `regex:x`; `#` comments and blank lines skipped.
 */
import type { Cidr } from './cidr-trie.js';
import { CidrTriePair, NO_VALUE, tryParseCidr } from './cidr-trie.js';
import type { Cond, CompiledRuleSet, DomainEntry } from './conditions.js';
import { CondKind, INBOUND_BITS, NETWORK_BITS, PROTOCOL_BITS, newCond, prepareCond, releaseParsed, usesOwner } from './conditions.js';
import { DomainKind, DomainMatcher, DomainTrie, normalizeDomainPattern, normalizeKeyword } from './domain-trie.js';
import { PolicyError, PolicyErrorCode, show } from './errors.js';
import { PortIndex, PortSet, parsePortItem } from './port-set.js';
import type { CidrCandidates, DomainCandidates, PolicyParts, PolicyStats } from './policy.js';
import { Policy } from './policy.js';

/** and/or/not nesting limit: evaluation recurses, so the depth is bounded. */
export const MAX_RULE_DEPTH = 32;
/** Longest regex source accepted. */
export const MAX_REGEX_LENGTH = 1024;

export interface CompileOptions {
  /** Milliseconds clock for `stats.compileMs`; injected so tests stay deterministic. */
  clock?: () => number;
}

const RULE_KEYS = new Set([
  'ipCidr', 'sourceCidr', 'domain', 'domainSuffix', 'domainKeyword', 'domainRegex', 'port', 'sourcePort',
  'network', 'inbound', 'protocol', 'ruleSet', 'uid', 'processName', 'processPath', 'and', 'or', 'not', 'outbound',
]);

/** The largest uid (uid_t is 32 bits; (uid_t)-1 means "no uid" to the kernel). */
const MAX_UID = 0xfffffffe;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** State shared by the recursive rule compiler. */
interface Ctx {
  ruleSets: Map<string, CompiledRuleSet>;
  outbounds: Set<string> | null;
}

/**
 * Validates and compiles a `PolicyInput` (the whole SluiceConfig object works
 * too: other top-level keys are ignored). Every defined rule set is checked,
 * referenced or not. Throws PolicyError on the first problem; never returns a
 * half-built policy, so a failed reload leaves the running one in place.
 */
export function compilePolicy(input: unknown, options: CompileOptions = {}): Policy {
  const clock = options.clock ?? (() => performance.now());
  const t0 = clock();
  const { conds, outbounds, finalOutbound } = compileRules(input);
  const parts = buildIndex(conds, outbounds, finalOutbound);
  parts.ownerRules = conds.filter(usesOwner).length;
  parts.stats.compileMs = clock() - t0;
  return new Policy(parts);
}

/**
 * The rules' condition trees, every matcher built and nothing released, for
 * evaluating rule by rule in order (`sluice explain`, explain.ts). Validates
 * exactly as compilePolicy does.
 */
export function compileConditions(input: unknown): { conds: Cond[]; outbounds: string[]; finalOutbound: string } {
  const r = compileRules(input);
  for (const c of r.conds) prepareCond(c);
  return r;
}

function compileRules(input: unknown): { conds: Cond[]; outbounds: string[]; finalOutbound: string } {
  if (!isObject(input)) throw new PolicyError(PolicyErrorCode.InvalidType, '', `expected the policy configuration object { rules, ruleSets, final, outbounds }, got ${show(input)}`);

  let outbounds: Set<string> | null = null;
  if (input.outbounds !== undefined) {
    if (!Array.isArray(input.outbounds)) throw new PolicyError(PolicyErrorCode.InvalidType, 'outbounds', 'expected a list of outbounds');
    outbounds = new Set();
    input.outbounds.forEach((o, i) => {
      if (!isObject(o) || typeof o.name !== 'string') throw new PolicyError(PolicyErrorCode.InvalidType, `outbounds[${i}].name`, 'expected each outbound to have a string name');
      outbounds!.add(o.name);
    });
  }
  const finalOutbound = checkOutbound(input.final, 'final', outbounds);

  const ruleSets = new Map<string, CompiledRuleSet>();
  if (input.ruleSets !== undefined) {
    if (!isObject(input.ruleSets)) throw new PolicyError(PolicyErrorCode.InvalidType, 'ruleSets', 'expected a map of rule-set name to { type, path | entries }');
    for (const [name, raw] of Object.entries(input.ruleSets)) ruleSets.set(name, compileRuleSet(name, raw));
  }

  const rawRules = input.rules ?? [];
  if (!Array.isArray(rawRules)) throw new PolicyError(PolicyErrorCode.InvalidType, 'rules', `expected a list of rules, got ${show(rawRules)}`);
  const ctx: Ctx = { ruleSets, outbounds };
  const conds: Cond[] = [];
  const outs: string[] = [];
  rawRules.forEach((raw: unknown, i: number) => {
    conds.push(compileRule(raw, `rules[${i}]`, 0, true, ctx));
    outs.push((raw as Record<string, unknown>).outbound as string);
  });
  return { conds, outbounds: outs, finalOutbound };
}

function checkOutbound(v: unknown, path: string, outbounds: Set<string> | null): string {
  if (typeof v !== 'string' || v.length === 0) throw new PolicyError(PolicyErrorCode.MissingOutbound, path, `expected the name of an outbound, got ${show(v)}`);
  if (outbounds !== null && !outbounds.has(v)) {
    throw new PolicyError(PolicyErrorCode.UnknownOutbound, path, `no outbound named ${show(v)}; defined: ${[...outbounds].map((s) => JSON.stringify(s)).join(', ') || '(none)'}`);
  }
  return v;
}

// ---------------------------------------------------------------- rule sets

function compileRuleSet(name: string, raw: unknown): CompiledRuleSet {
  const base = `ruleSets.${name}`;
  if (!isObject(raw)) throw new PolicyError(PolicyErrorCode.InvalidRuleSet, base, 'expected { type: domain | cidr, path | entries }');
  const type = raw.type;
  if (type !== 'domain' && type !== 'cidr') throw new PolicyError(PolicyErrorCode.InvalidRuleSet, `${base}.type`, `expected "domain" or "cidr", got ${show(type)}`);
  const file = typeof raw.path === 'string' ? raw.path : undefined;
  const entries = raw.entries;
  if (!Array.isArray(entries)) {
    throw new PolicyError(
      PolicyErrorCode.InvalidRuleSet,
      `${base}.entries`,
      file === undefined ? 'expected a list of entries' : `expected the entries of ${file} to be loaded before compiling the policy`,
    );
  }
  const set: CompiledRuleSet = { name, type, domainEntries: [], cidrs: [], domain: null, cidr: null };
  for (let i = 0; i < entries.length; i++) {
    const path = `${base}.entries[${i}]`;
    const e: unknown = entries[i];
    if (typeof e !== 'string') throw new PolicyError(PolicyErrorCode.InvalidType, path, `expected a string entry, got ${show(e)}`, file);
    const line = e.trim();
    if (line.length === 0 || line.charCodeAt(0) === 35) continue;
    if (type === 'cidr') {
      const r = tryParseCidr(line);
      if (!r.ok) throw new PolicyError(PolicyErrorCode.InvalidCidr, path, r.reason, file);
      set.cidrs.push(r.cidr);
    } else {
      set.domainEntries.push(parseDomainLine(line, path, file));
    }
  }
  return set; // matchers built by prepareCond if a composite rule names the set
}

const LINE_FORMS = 'expected "example.com" (suffix), ".example.com" (subdomains), "full:example.com", "keyword:word" or "regex:pattern"';

function parseDomainLine(line: string, path: string, file: string | undefined): DomainEntry {
  if (line.startsWith('full:')) return nameEntry(line.slice(5), DomainKind.Exact, path, file);
  if (line.startsWith('keyword:')) return keywordEntry(line.slice(8), path, file);
  if (line.startsWith('regex:')) return regexEntry(line.slice(6), path, file);
  if (/^[a-z]+:/i.test(line)) throw new PolicyError(PolicyErrorCode.InvalidDomain, path, `unknown prefix in ${show(line)}; ${LINE_FORMS}`, file);
  if (line.startsWith('.')) return nameEntry(line.slice(1), DomainKind.Subdomain, path, file);
  return nameEntry(line, DomainKind.Suffix, path, file);
}

function nameEntry(text: unknown, nameKind: DomainKind, path: string, file?: string): DomainEntry {
  const r = normalizeDomainPattern(text);
  if (!r.ok) throw new PolicyError(PolicyErrorCode.InvalidDomain, path, r.reason, file);
  return { kind: 'name', name: r.name, nameKind };
}

function keywordEntry(text: unknown, path: string, file?: string): DomainEntry {
  const r = normalizeKeyword(text);
  if (!r.ok) throw new PolicyError(PolicyErrorCode.InvalidKeyword, path, r.reason, file);
  return { kind: 'keyword', word: r.name };
}

function regexEntry(text: unknown, path: string, file?: string): DomainEntry {
  if (typeof text !== 'string' || text.length === 0) throw new PolicyError(PolicyErrorCode.InvalidRegex, path, `expected a non-empty regular expression string, got ${show(text)}`, file);
  if (text.length > MAX_REGEX_LENGTH) throw new PolicyError(PolicyErrorCode.InvalidRegex, path, `a regular expression is at most ${MAX_REGEX_LENGTH} characters`, file);
  try {
    return { kind: 'regex', re: new RegExp(text) };
  } catch (err) {
    throw new PolicyError(PolicyErrorCode.InvalidRegex, path, `expected a JavaScript regular expression: ${(err as Error).message}`, file);
  }
}

// ---------------------------------------------------------------- rules

/** The list under a key with the path of each item; a scalar counts as a one-item list. */
function listOf(v: unknown, path: string): { item: unknown; path: string }[] {
  if (Array.isArray(v)) {
    if (v.length === 0) throw new PolicyError(PolicyErrorCode.EmptyList, path, 'expected at least one item (an empty list would never match)');
    return v.map((item, i) => ({ item, path: `${path}[${i}]` }));
  }
  if (typeof v === 'string' || typeof v === 'number') return [{ item: v, path }];
  throw new PolicyError(PolicyErrorCode.InvalidType, path, `expected a list, got ${show(v)}`);
}

function compileRule(raw: unknown, path: string, depth: number, top: boolean, ctx: Ctx): Cond {
  if (!isObject(raw)) {
    throw new PolicyError(PolicyErrorCode.InvalidType, path, `expected a rule object like { ipCidr: [10.0.0.0/8]${top ? ', outbound: direct' : ''} }, got ${show(raw)}`);
  }
  if (depth > MAX_RULE_DEPTH) throw new PolicyError(PolicyErrorCode.TooDeep, path, `and/or/not nested deeper than ${MAX_RULE_DEPTH} levels`);
  const all = newCond(CondKind.All);
  all.children = [];
  for (const key of Object.keys(raw)) {
    const kp = `${path}.${key}`;
    const v = raw[key];
    if (!RULE_KEYS.has(key)) {
      throw new PolicyError(PolicyErrorCode.UnknownKey, kp, `unknown rule key; expected one of ${[...RULE_KEYS].join(', ')}`);
    }
    if (key === 'outbound') {
      if (!top) throw new PolicyError(PolicyErrorCode.UnexpectedOutbound, kp, 'a sub-rule inside and/or/not takes no outbound; put it on the enclosing rule');
      checkOutbound(v, kp, ctx.outbounds);
      continue;
    }
    all.children.push(compileKey(key, v, kp, depth, ctx));
  }
  if (top && raw.outbound === undefined) throw new PolicyError(PolicyErrorCode.MissingOutbound, `${path}.outbound`, 'expected the name of the outbound this rule routes to');
  if (all.children.length === 0) {
    throw new PolicyError(PolicyErrorCode.EmptyRule, path, top ? 'a rule needs at least one matcher key; use `final` for the catch-all outbound' : 'a sub-rule needs at least one matcher key');
  }
  return all;
}

function compileKey(key: string, v: unknown, path: string, depth: number, ctx: Ctx): Cond {
  const c = compileKeyValue(key, v, path, depth, ctx);
  c.key = key;
  if (c.kind !== CondKind.All && c.kind !== CondKind.Any && c.kind !== CondKind.Not) c.items = Array.isArray(v) ? v.slice() : [v];
  return c;
}

function compileKeyValue(key: string, v: unknown, path: string, depth: number, ctx: Ctx): Cond {
  switch (key) {
    case 'ipCidr':
    case 'sourceCidr': {
      const c = newCond(key === 'ipCidr' ? CondKind.DstCidr : CondKind.SrcCidr);
      c.cidrs = [];
      for (const { item, path: p } of listOf(v, path)) {
        const r = tryParseCidr(item as string);
        if (!r.ok) throw new PolicyError(PolicyErrorCode.InvalidCidr, p, r.reason);
        c.cidrs.push(r.cidr);
      }
      return c;
    }
    case 'domain':
    case 'domainSuffix':
    case 'domainKeyword':
    case 'domainRegex': {
      const c = newCond(CondKind.Domain);
      c.domainEntries = [];
      for (const { item, path: p } of listOf(v, path)) {
        if (key === 'domain') c.domainEntries.push(nameEntry(item, DomainKind.Exact, p));
        else if (key === 'domainSuffix') {
          const sub = typeof item === 'string' && item.trim().startsWith('.');
          c.domainEntries.push(nameEntry(sub ? (item as string).trim().slice(1) : item, sub ? DomainKind.Subdomain : DomainKind.Suffix, p));
        } else if (key === 'domainKeyword') c.domainEntries.push(keywordEntry(item, p));
        else c.domainEntries.push(regexEntry(item, p));
      }
      return c;
    }
    case 'port':
    case 'sourcePort': {
      const c = newCond(key === 'port' ? CondKind.DstPort : CondKind.SrcPort);
      c.portRanges = [];
      for (const { item, path: p } of listOf(v, path)) {
        const r = parsePortItem(item);
        if (!r.ok) throw new PolicyError(PolicyErrorCode.InvalidPort, p, r.reason);
        c.portRanges.push([r.lo, r.hi]);
      }
      c.ports = new PortSet(c.portRanges);
      return c;
    }
    case 'network':
      return enumCond(CondKind.Network, NETWORK_BITS, v, path);
    case 'inbound':
      return enumCond(CondKind.Inbound, INBOUND_BITS, v, path);
    case 'protocol':
      return enumCond(CondKind.Protocol, PROTOCOL_BITS, v, path);
    case 'ruleSet': {
      const c = newCond(CondKind.RuleSet);
      c.sets = [];
      for (const { item, path: p } of listOf(v, path)) {
        const s = typeof item === 'string' ? ctx.ruleSets.get(item) : undefined;
        if (s === undefined) {
          const names = [...ctx.ruleSets.keys()].map((n) => JSON.stringify(n)).join(', ') || '(none)';
          throw new PolicyError(PolicyErrorCode.UnknownRuleSet, p, `no rule set named ${show(item)}; defined: ${names}`);
        }
        if (!c.sets.includes(s)) c.sets.push(s);
      }
      return c;
    }
    case 'uid': {
      const c = newCond(CondKind.Uid);
      const set = new Set<number>();
      for (const { item, path: p } of listOf(v, path)) {
        const n = typeof item === 'string' && /^[0-9]{1,10}$/.test(item) ? Number(item) : item;
        if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > MAX_UID) {
          throw new PolicyError(PolicyErrorCode.InvalidType, p, `expected a numeric uid from 0 to ${MAX_UID}, got ${show(item)}`);
        }
        set.add(n);
      }
      c.owner = set;
      return c;
    }
    case 'processName':
    case 'processPath': {
      const c = newCond(key === 'processName' ? CondKind.ProcessName : CondKind.ProcessPath);
      const set = new Set<string>();
      for (const { item, path: p } of listOf(v, path)) {
        const ok =
          typeof item === 'string' && item.length > 0 && item.length <= 4096 && !item.includes('\u0000') && (key === 'processName' ? !item.includes('/') : item.startsWith('/'));
        if (!ok) {
          throw new PolicyError(
            PolicyErrorCode.InvalidType,
            p,
            key === 'processName' ? `expected an executable file name without "/" such as curl, got ${show(item)}` : `expected an absolute executable path such as /usr/bin/curl, got ${show(item)}`,
          );
        }
        set.add(item as string);
      }
      c.owner = set;
      return c;
    }
    case 'and':
    case 'or': {
      if (!Array.isArray(v)) throw new PolicyError(PolicyErrorCode.InvalidType, path, `expected a list of sub-rules, got ${show(v)}`);
      if (v.length === 0) throw new PolicyError(PolicyErrorCode.EmptyList, path, 'expected at least one sub-rule');
      const c = newCond(key === 'and' ? CondKind.All : CondKind.Any);
      c.children = [];
      v.forEach((sub, i) => c.children.push(compileRule(sub, `${path}[${i}]`, depth + 1, false, ctx)));
      return c;
    }
    case 'not': {
      const c = newCond(CondKind.Not);
      c.children = [];
      c.children.push(compileRule(v, path, depth + 1, false, ctx));
      return c;
    }
  }
  throw new PolicyError(PolicyErrorCode.UnknownKey, path, 'unknown rule key');
}

function enumCond(kind: CondKind, bits: Readonly<Record<string, number>>, v: unknown, path: string): Cond {
  const c = newCond(kind);
  const allowed = Object.keys(bits);
  for (const { item, path: p } of listOf(v, path)) {
    const b = typeof item === 'string' && Object.hasOwn(bits, item) ? bits[item]! : 0;
    if (b === 0) throw new PolicyError(PolicyErrorCode.InvalidEnum, p, `expected one of ${allowed.join(', ')}, got ${show(item)}`);
    c.bits |= b;
  }
  return c;
}

// ---------------------------------------------------------------- index

const NET_SLOTS: Readonly<Record<number, number>> = { 1: 0, 2: 1 };
const PROTO_SLOTS: Readonly<Record<number, number>> = { 1: 0, 2: 1, 4: 2, 8: 3 };

function setMin(a: Int32Array, bits: number, slots: Readonly<Record<number, number>>, i: number): void {
  for (const [bit, slot] of Object.entries(slots)) if ((bits & Number(bit)) !== 0 && i < a[slot]!) a[slot] = i;
}

function pushDistinct(lists: number[][], at: number, i: number): void {
  const l = (lists[at] ??= []);
  if (l[l.length - 1] !== i) l.push(i);
}

function addDomainEntry(m: DomainMatcher, e: DomainEntry, i: number): void {
  if (e.kind === 'name') m.trie.insert(e.name, e.nameKind, i);
  else if (e.kind === 'keyword') m.keywords.add(e.word, i);
  else m.regexes.add(e.re, i);
}

/** Leaves that every match of `c` needs: the leaf children of All nodes, recursively (not through Any / Not). */
function necessaryLeaves(c: Cond, out: Cond[]): void {
  for (const ch of c.children) {
    if (ch.kind === CondKind.All) necessaryLeaves(ch, out);
    else if (ch.kind !== CondKind.Any && ch.kind !== CondKind.Not) out.push(ch);
  }
}

function onlyNames(entries: readonly DomainEntry[]): boolean {
  return entries.every((e) => e.kind === 'name');
}

/** Candidate key choice, most selective first; returns null when no necessary key can index. */
function pickCandidate(leaves: Cond[]): Cond | null {
  const rank = (c: Cond): number => {
    switch (c.kind) {
      case CondKind.Domain:
        return onlyNames(c.domainEntries) ? 1 : 99;
      case CondKind.DstCidr:
        return 2;
      case CondKind.SrcCidr:
        return 3;
      case CondKind.RuleSet:
        if (c.sets.every((s) => s.type === 'cidr')) return 4;
        if (c.sets.every((s) => s.type === 'domain' && onlyNames(s.domainEntries))) return 5;
        return 99;
      case CondKind.Protocol:
        return 6;
      case CondKind.Network:
        return 7;
      case CondKind.Inbound:
        return 8;
      default:
        return 99;
    }
  };
  let best: Cond | null = null;
  let bestRank = 99;
  for (const l of leaves) {
    const r = rank(l);
    if (r < bestRank) {
      best = l;
      bestRank = r;
    }
  }
  return best;
}

function freezeLists(lists: number[][]): (Int32Array | undefined)[] {
  const out: (Int32Array | undefined)[] = [];
  lists.forEach((l, k) => {
    out[k] = Int32Array.from(l);
  });
  return out;
}

function buildIndex(conds: Cond[], outbounds: string[], finalOutbound: string): PolicyParts {
  const dst = new CidrTriePair();
  const src = new CidrTriePair();
  const domain = new DomainMatcher();
  const dstPort = new PortIndex();
  const srcPort = new PortIndex();
  const network = new Int32Array(2).fill(NO_VALUE);
  const inbound = new Int32Array(2).fill(NO_VALUE);
  const protocol = new Int32Array(4).fill(NO_VALUE);
  const candDstPair = new CidrTriePair();
  const candSrcPair = new CidrTriePair();
  const candDomTrie = new DomainTrie();
  const cd4: number[][] = [];
  const cd6: number[][] = [];
  const cs4: number[][] = [];
  const cs6: number[][] = [];
  const cdom: number[][] = [];
  const cNet: number[][] = [[], []];
  const cInb: number[][] = [[], []];
  const cProto: number[][] = [[], [], [], []];
  const residual: number[] = [];
  const stats: PolicyStats = { rules: conds.length, indexed: 0, candidates: 0, residual: 0, cidrPrefixes: 0, domainNames: 0, keywords: 0, regexes: 0, compileMs: 0 };

  const addCidr = (pair: CidrTriePair, c: Cidr, i: number): void => {
    pair.insert(c, i);
    stats.cidrPrefixes++;
  };
  const addDomain = (e: DomainEntry, i: number): void => {
    addDomainEntry(domain, e, i);
    if (e.kind === 'name') stats.domainNames++;
    else if (e.kind === 'keyword') stats.keywords++;
    else stats.regexes++;
  };
  const addCandCidr = (pair: CidrTriePair, l4: number[][], l6: number[][], c: Cidr, i: number): void => {
    const node = pair.insert(c, i);
    pushDistinct(c.family === 4 ? l4 : l6, node, i);
  };
  const addCandName = (e: DomainEntry, i: number): void => {
    if (e.kind !== 'name') return;
    pushDistinct(cdom, candDomTrie.insert(e.name, e.nameKind, i), i);
  };
  const addCandEnum = (lists: number[][], bits: number, i: number): void => {
    for (let b = 0; b < lists.length; b++) if ((bits & (1 << b)) !== 0) lists[b]!.push(i);
  };

  for (let i = 0; i < conds.length; i++) {
    const top = conds[i]!;
    const only = top.children.length === 1 ? top.children[0]! : null;
    // Owner conditions have no index: such a rule alone is residual, in a composite one they are verified.
    if (only !== null && only.kind !== CondKind.All && only.kind !== CondKind.Any && only.kind !== CondKind.Not && only.owner === null) {
      stats.indexed++;
      switch (only.kind) {
        case CondKind.DstCidr:
          for (const c of only.cidrs) addCidr(dst, c, i);
          break;
        case CondKind.SrcCidr:
          for (const c of only.cidrs) addCidr(src, c, i);
          break;
        case CondKind.Domain:
          for (const e of only.domainEntries) addDomain(e, i);
          break;
        case CondKind.DstPort:
          for (const [lo, hi] of only.portRanges) dstPort.add(lo, hi, i);
          break;
        case CondKind.SrcPort:
          for (const [lo, hi] of only.portRanges) srcPort.add(lo, hi, i);
          break;
        case CondKind.Network:
          setMin(network, only.bits, NET_SLOTS, i);
          break;
        case CondKind.Inbound:
          setMin(inbound, only.bits, NET_SLOTS, i);
          break;
        case CondKind.Protocol:
          setMin(protocol, only.bits, PROTO_SLOTS, i);
          break;
        case CondKind.RuleSet:
          for (const s of only.sets) {
            for (const c of s.cidrs) addCidr(dst, c, i);
            for (const e of s.domainEntries) addDomain(e, i);
          }
          break;
      }
      releaseParsed(only);
      continue;
    }
    prepareCond(top);
    const leaves: Cond[] = [];
    necessaryLeaves(top, leaves);
    const key = pickCandidate(leaves);
    if (key === null) {
      residual.push(i);
      stats.residual++;
      continue;
    }
    stats.candidates++;
    switch (key.kind) {
      case CondKind.Domain:
        for (const e of key.domainEntries) addCandName(e, i);
        break;
      case CondKind.DstCidr:
        for (const c of key.cidrs) addCandCidr(candDstPair, cd4, cd6, c, i);
        break;
      case CondKind.SrcCidr:
        for (const c of key.cidrs) addCandCidr(candSrcPair, cs4, cs6, c, i);
        break;
      case CondKind.RuleSet:
        for (const s of key.sets) {
          for (const c of s.cidrs) addCandCidr(candDstPair, cd4, cd6, c, i);
          for (const e of s.domainEntries) addCandName(e, i);
        }
        break;
      case CondKind.Protocol:
        addCandEnum(cProto, key.bits, i);
        break;
      case CondKind.Network:
        addCandEnum(cNet, key.bits, i);
        break;
      case CondKind.Inbound:
        addCandEnum(cInb, key.bits, i);
        break;
    }
  }
  domain.build();
  dstPort.build();
  srcPort.build();
  const candDst: CidrCandidates = { pair: candDstPair, v4: freezeLists(cd4), v6: freezeLists(cd6) };
  const candSrc: CidrCandidates = { pair: candSrcPair, v4: freezeLists(cs4), v6: freezeLists(cs6) };
  const candDomain: DomainCandidates = { trie: candDomTrie, lists: freezeLists(cdom) };
  return {
    conds,
    outbounds,
    finalOutbound,
    dst,
    src,
    domain,
    dstPort,
    srcPort,
    network,
    inbound,
    protocol,
    candDst,
    candSrc,
    candDomain,
    candNetwork: cNet.map((l) => Int32Array.from(l)),
    candInbound: cInb.map((l) => Int32Array.from(l)),
    candProtocol: cProto.map((l) => Int32Array.from(l)),
    residual: Int32Array.from(residual),
    ownerRules: 0,
    stats,
  };
}
