/**
 * Domain-name matching for the policy: exact and suffix names in a
 * reversed-label trie, keywords in an Aho-Corasick automaton, regular
 * expressions in a list ordered by rule index.
 *
 * Names are compared case-insensitively (ASCII only, RFC 4343) with one
 * trailing dot ignored. IDNs are matched in their A-label form: `xn--` labels
 * are ordinary labels and rules must be written that way (a U-label in a rule
 * is refused with that hint). Suffix matching is on label boundaries:
 * `example.com` matches `example.com` and `a.example.com`, never
 * `badexample.com`; `.example.com` matches only names below `example.com`.
 *
 * Lookups walk the flow's name once from its last character to its first and
 * allocate nothing: labels are hashed in place and compared against the
 * stored label with case folding, no substring or lowercase copy is made.
 * Cost is O(length of the name), independent of how many names are stored.
 */
import { InvalidStateError } from '../../errors.js';
import { NO_VALUE } from './cidr-trie.js';

/** Longest name accepted in a rule (RFC 1035 section 2.3.4, text form without the root dot). */
export const MAX_DOMAIN_LENGTH = 253;

export const DomainKind = {
  /** `full:example.com`, the `domain` key: the name itself. */
  Exact: 0,
  /** `example.com`, the `domainSuffix` key: the name and every name below it. */
  Suffix: 1,
  /** `.example.com`: names strictly below, not the name itself. */
  Subdomain: 2,
} as const;
export type DomainKind = (typeof DomainKind)[keyof typeof DomainKind];

export type NameCheck = { ok: true; name: string } | { ok: false; reason: string };

/**
 * Lowercases, drops one trailing dot and checks a rule's name: labels of
 * 1..63 characters from [a-z0-9_-] (underscore for SRV-style names), at most
 * 253 characters.
 */
export function normalizeDomainPattern(text: unknown): NameCheck {
  if (typeof text !== 'string') return { ok: false, reason: `expected a domain name string, got ${typeof text}` };
  let s = text.trim().toLowerCase();
  if (s.endsWith('.')) s = s.slice(0, -1);
  if (s.length === 0) return { ok: false, reason: 'expected a domain name like "example.com", got an empty string' };
  if (s.length > MAX_DOMAIN_LENGTH) return { ok: false, reason: `a domain name is at most ${MAX_DOMAIN_LENGTH} characters, got ${s.length}` };
  let labelLen = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (labelLen === 0) return { ok: false, reason: `empty label in ${JSON.stringify(text)}; expected labels separated by single dots` };
      labelLen = 0;
      continue;
    }
    if (c > 127) return { ok: false, reason: `${JSON.stringify(text)} has non-ASCII characters; write internationalised names in their punycode (xn--) form` };
    if (!isNameChar(c)) return { ok: false, reason: `${JSON.stringify(text)} has ${JSON.stringify(s[i])}; a label may hold only letters, digits, "-" and "_"` };
    if (++labelLen > 63) return { ok: false, reason: `a label in ${JSON.stringify(text)} is longer than 63 characters` };
  }
  if (labelLen === 0) return { ok: false, reason: `empty label in ${JSON.stringify(text)}` };
  return { ok: true, name: s };
}

function isNameChar(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 95;
}

/**
 * The form regexes see: lowercase, no trailing dot; null for an empty name.
 * Returns the input string itself (no allocation) when it is already in that form.
 */
export function normalizeDomain(s: string | null): string | null {
  if (s === null) return null;
  let end = s.length;
  if (end > 0 && s.charCodeAt(end - 1) === 46) end--;
  if (end === 0) return null;
  for (let i = 0; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) return s.slice(0, end).toLowerCase();
  }
  return end === s.length ? s : s.slice(0, end);
}

function fold(c: number): number {
  return c >= 65 && c <= 90 ? c + 32 : c;
}

/** Label hash seeded by the parent node, over the label's characters read right to left. */
function seed(parent: number): number {
  return Math.imul(parent ^ 0x5bd1e995, 0x9e3779b1) ^ 0x811c9dc5;
}

/** Node record: [parent, exact, suffix, subdomain] in one Int32Array. */
const NODE = 4;
const PARENT = 0;

/**
 * Reversed-label trie. Node 0 is the root (the empty name); every other node
 * is one label under its parent, found through one open-addressing table of
 * (hash, node) pairs keyed by (parent, label): a probe compares the hash in
 * the table before touching the node, so a lookup costs about one cache miss
 * per label. Each node has three value slots (exact, suffix, subdomain); a
 * slot id is `node * 3 + kind`.
 */
export class DomainTrie {
  private nodes: Int32Array;
  private labels: string[];
  private count: number;
  /** Pairs [hash, node]; node -1 = empty. */
  private table: Int32Array;
  private mask: number;
  private inserted: number;

  constructor(initialCapacity = 16) {
    const cap = Math.max(2, initialCapacity);
    this.nodes = new Int32Array(cap * NODE).fill(NO_VALUE);
    this.nodes[PARENT] = -1;
    this.labels = [''];
    this.count = 1;
    let t = 16;
    while (t < cap * 2) t *= 2;
    this.table = newTable(t);
    this.mask = t - 1;
    this.inserted = 0;
  }

  get size(): number {
    return this.inserted;
  }

  get nodeCount(): number {
    return this.count;
  }

  /**
   * Adds a name already checked by `normalizeDomainPattern` (lowercase, no
   * trailing dot) with `value`; the same name and kind twice keeps the smaller
   * value. Returns the slot id.
   */
  insert(name: string, kind: DomainKind, value: number): number {
    this.inserted++;
    let node = 0;
    let i = name.length;
    while (i > 0) {
      let h = seed(node);
      let j = i - 1;
      while (j >= 0 && name.charCodeAt(j) !== 46) {
        h = Math.imul(h ^ name.charCodeAt(j), 0x01000193);
        j--;
      }
      h ^= h >>> 15;
      const start = j + 1;
      let c = this.find(node, h, name, start, i);
      if (c < 0) c = this.add(node, h, name.slice(start, i));
      node = c;
      i = start - 1;
    }
    const at = node * NODE + 1 + kind;
    if (value < this.nodes[at]!) this.nodes[at] = value;
    return node * 3 + kind;
  }

  /** Smallest value among the entries that match `domain` (raw: any case, optional trailing dot), or -1. */
  minMatch(domain: string): number {
    const a = this.nodes;
    let best = NO_VALUE;
    let end = domain.length;
    if (end > 0 && domain.charCodeAt(end - 1) === 46) end--;
    let node = 0;
    let i = end;
    while (i > 0) {
      let h = seed(node);
      let j = i - 1;
      while (j >= 0) {
        const ch = domain.charCodeAt(j);
        if (ch === 46) break;
        h = Math.imul(h ^ fold(ch), 0x01000193);
        j--;
      }
      h ^= h >>> 15;
      const start = j + 1;
      if (start === i) break; // empty label: malformed name, stop where we are
      const c = this.find(node, h, domain, start, i);
      if (c < 0) break;
      node = c;
      const base = c * NODE + 1;
      // whole name consumed: exact and suffix apply; a proper suffix of it: suffix and subdomain
      const x = start === 0 ? a[base]! : a[base + 2]!;
      const s = a[base + 1]!;
      if (x < best) best = x;
      if (s < best) best = s;
      if (start === 0) break;
      i = start - 1;
    }
    return best === NO_VALUE ? -1 : best;
  }

  /**
   * Writes the slot ids with a value that match `domain` into `out` (needs
   * 2 * 128 slots: a stored name has at most 127 labels) and returns how many.
   */
  collect(domain: string, out: Int32Array): number {
    const a = this.nodes;
    let n = 0;
    let end = domain.length;
    if (end > 0 && domain.charCodeAt(end - 1) === 46) end--;
    let node = 0;
    let i = end;
    while (i > 0) {
      let h = seed(node);
      let j = i - 1;
      while (j >= 0) {
        const ch = domain.charCodeAt(j);
        if (ch === 46) break;
        h = Math.imul(h ^ fold(ch), 0x01000193);
        j--;
      }
      h ^= h >>> 15;
      const start = j + 1;
      if (start === i) break;
      const c = this.find(node, h, domain, start, i);
      if (c < 0) break;
      node = c;
      const base = c * NODE + 1;
      const kx = start === 0 ? DomainKind.Exact : DomainKind.Subdomain;
      if (a[base + kx] !== NO_VALUE) out[n++] = c * 3 + kx;
      if (a[base + DomainKind.Suffix] !== NO_VALUE) out[n++] = c * 3 + DomainKind.Suffix;
      if (start === 0) break;
      i = start - 1;
    }
    return n;
  }

  private find(parent: number, h: number, s: string, start: number, end: number): number {
    const t = this.table;
    let idx = h & this.mask;
    for (;;) {
      const n = t[2 * idx + 1]!;
      if (n < 0) return -1;
      if (t[2 * idx] === h && this.nodes[n * NODE + PARENT] === parent && labelEquals(this.labels[n]!, s, start, end)) return n;
      idx = (idx + 1) & this.mask;
    }
  }

  private add(parent: number, h: number, label: string): number {
    if ((this.count + 1) * NODE > this.nodes.length) {
      const grown = new Int32Array(this.nodes.length * 2).fill(NO_VALUE);
      grown.set(this.nodes);
      this.nodes = grown;
    }
    if ((this.count + 1) * 2 > this.mask + 1) this.growTable();
    const n = this.count++;
    this.nodes[n * NODE + PARENT] = parent;
    this.labels.push(label);
    this.place(h, n);
    return n;
  }

  private place(h: number, n: number): void {
    const t = this.table;
    let idx = h & this.mask;
    while (t[2 * idx + 1]! >= 0) idx = (idx + 1) & this.mask;
    t[2 * idx] = h;
    t[2 * idx + 1] = n;
  }

  private growTable(): void {
    const old = this.table;
    const size = (this.mask + 1) * 2;
    this.table = newTable(size);
    this.mask = size - 1;
    for (let k = 0; k < old.length; k += 2) if (old[k + 1]! >= 0) this.place(old[k]!, old[k + 1]!);
  }
}

function newTable(slots: number): Int32Array {
  const t = new Int32Array(slots * 2);
  for (let k = 1; k < t.length; k += 2) t[k] = -1;
  return t;
}

function labelEquals(label: string, s: string, start: number, end: number): boolean {
  if (label.length !== end - start) return false;
  for (let k = 0; k < label.length; k++) {
    if (label.charCodeAt(k) !== fold(s.charCodeAt(start + k))) return false;
  }
  return true;
}

// ---------------------------------------------------------------- keywords

/** Input alphabet of the keyword automaton: a-z, 0-9, '-', '.', '_' and "anything else" (symbol 0). */
const ALPHABET = 40;
const SYMBOL = new Uint8Array(128);
for (let c = 97; c <= 122; c++) SYMBOL[c] = c - 96;
for (let c = 65; c <= 90; c++) SYMBOL[c] = c - 64;
for (let c = 48; c <= 57; c++) SYMBOL[c] = c - 48 + 27;
SYMBOL[45] = 37;
SYMBOL[46] = 38;
SYMBOL[95] = 39;

/** Lowercases and checks a keyword: non-empty, only characters a name can hold ([a-z0-9._-]). */
export function normalizeKeyword(text: unknown): NameCheck {
  if (typeof text !== 'string') return { ok: false, reason: `expected a keyword string, got ${typeof text}` };
  const s = text.trim().toLowerCase();
  if (s.length === 0) return { ok: false, reason: 'expected a non-empty keyword' };
  if (s.length > MAX_DOMAIN_LENGTH) return { ok: false, reason: `a keyword is at most ${MAX_DOMAIN_LENGTH} characters` };
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || SYMBOL[c] === 0) {
      return { ok: false, reason: `${JSON.stringify(text)} has ${JSON.stringify(s[i])}; a keyword may hold only letters, digits, ".", "-" and "_" (use the punycode form for IDNs)` };
    }
  }
  return { ok: true, name: s };
}

/**
 * Aho-Corasick automaton (Aho & Corasick 1975) compiled to a dense DFA over
 * the 40-symbol alphabet: matching is one table step per character of the
 * name, whatever the number of keywords. Each state carries the smallest
 * value of any keyword ending there or at a state on its failure chain.
 * Memory: 160 bytes per state (one state per distinct keyword prefix).
 */
export class KeywordMatcher {
  private readonly pending: { word: string; value: number }[] = [];
  private delta: Int32Array = new Int32Array(0);
  private out: Int32Array = new Int32Array(0);
  private built = false;
  private count = 0;

  /** Adds a keyword checked by `normalizeKeyword`. Only before `build()`. */
  add(word: string, value: number): void {
    if (this.built) throw new InvalidStateError('KeywordMatcher.add after build()');
    this.pending.push({ word, value });
    this.count++;
  }

  /** Keywords added. */
  get size(): number {
    return this.count;
  }

  build(): this {
    if (this.built) return this;
    this.built = true;
    if (this.pending.length === 0) return this; // empty: minMatch returns -1 at once
    let total = 1;
    for (const p of this.pending) total += p.word.length;
    const delta = new Int32Array(total * ALPHABET).fill(-1);
    const out = new Int32Array(total).fill(NO_VALUE);
    let states = 1;
    for (const { word, value } of this.pending) {
      let s = 0;
      for (let i = 0; i < word.length; i++) {
        const a = SYMBOL[word.charCodeAt(i)]!;
        let t = delta[s * ALPHABET + a]!;
        if (t < 0) {
          t = states++;
          delta[s * ALPHABET + a] = t;
        }
        s = t;
      }
      if (value < out[s]!) out[s] = value;
    }
    // BFS: failure links, then the missing transitions borrowed from the failure state.
    const fail = new Int32Array(states);
    const queue = new Int32Array(states);
    let qh = 0;
    let qt = 0;
    for (let a = 0; a < ALPHABET; a++) {
      const t = delta[a]!;
      if (t > 0) {
        fail[t] = 0;
        queue[qt++] = t;
      } else delta[a] = 0;
    }
    while (qh < qt) {
      const s = queue[qh++]!;
      const f = fail[s]!;
      if (out[f]! < out[s]!) out[s] = out[f]!;
      for (let a = 0; a < ALPHABET; a++) {
        const t = delta[s * ALPHABET + a]!;
        if (t > 0) {
          fail[t] = delta[f * ALPHABET + a]!;
          queue[qt++] = t;
        } else delta[s * ALPHABET + a] = delta[f * ALPHABET + a]!;
      }
    }
    this.delta = delta.slice(0, states * ALPHABET);
    this.out = out.slice(0, states);
    this.pending.length = 0;
    return this;
  }

  /** Smallest value of a keyword occurring in `domain` (case-insensitive, trailing dot ignored), or -1. */
  minMatch(domain: string): number {
    const delta = this.delta;
    if (delta.length === 0) return -1;
    const out = this.out;
    let end = domain.length;
    if (end > 0 && domain.charCodeAt(end - 1) === 46) end--;
    let s = 0;
    let best = NO_VALUE;
    for (let i = 0; i < end; i++) {
      const c = domain.charCodeAt(i);
      s = delta[s * ALPHABET + (c < 128 ? SYMBOL[c]! : 0)]!;
      const v = out[s]!;
      if (v < best) best = v;
    }
    return best === NO_VALUE ? -1 : best;
  }
}

// ---------------------------------------------------------------- regexes

/**
 * Regexes cannot be merged into one automaton without a regex engine of our
 * own, so they are tried one by one, in ascending value order, and only while
 * the value is below the best match the other structures already found: a
 * regex on rule 900 is never run when a suffix on rule 12 matched. They see
 * the normalised name (lowercase, no trailing dot). Their cost is linear in
 * the number of regex rules that can still win; keep them few.
 */
export class RegexList {
  private entries: { re: RegExp; value: number }[] = [];
  private sorted = true;

  add(re: RegExp, value: number): void {
    const last = this.entries[this.entries.length - 1];
    if (last !== undefined && last.value > value) this.sorted = false;
    this.entries.push({ re, value });
  }

  get size(): number {
    return this.entries.length;
  }

  /** Orders the list by value; called by DomainMatcher.build(), or lazily by the first lookup. */
  build(): this {
    if (!this.sorted) {
      this.entries.sort((a, b) => a.value - b.value);
      this.sorted = true;
    }
    return this;
  }

  /** Smallest value below `bound` whose regex matches the normalised name, or -1. */
  minMatchBelow(name: string, bound: number): number {
    if (!this.sorted) this.build();
    const e = this.entries;
    for (let i = 0; i < e.length; i++) {
      const x = e[i]!;
      if (x.value >= bound) break;
      if (x.re.test(name)) return x.value;
    }
    return -1;
  }

  /** Lowest value stored, or NO_VALUE: lets a caller skip normalising the name when no regex can win. */
  minValue(): number {
    let m = NO_VALUE;
    for (const x of this.entries) if (x.value < m) m = x.value;
    return m;
  }
}

/**
 * Everything a domain rule set (or the policy's shared domain index) holds:
 * exact/suffix names, keywords and regexes, with one `minMatch`.
 */
export class DomainMatcher {
  readonly trie = new DomainTrie();
  readonly keywords = new KeywordMatcher();
  readonly regexes = new RegexList();
  private regexMin = NO_VALUE;
  private built = false;

  build(): this {
    this.keywords.build();
    this.regexes.build();
    this.regexMin = this.regexes.minValue();
    this.built = true;
    return this;
  }

  get size(): number {
    return this.trie.size + this.keywords.size + this.regexes.size;
  }

  /**
   * Smallest value among matching entries that is below `bound` (pass
   * NO_VALUE for no bound), or -1. Regexes run last and only below the best
   * value found so far.
   */
  minMatch(domain: string, bound: number): number {
    if (!this.built) this.build();
    let best = bound;
    const t = this.trie.minMatch(domain);
    if (t >= 0 && t < best) best = t;
    const k = this.keywords.minMatch(domain);
    if (k >= 0 && k < best) best = k;
    if (this.regexMin < best) {
      const name = normalizeDomain(domain);
      if (name !== null) {
        const r = this.regexes.minMatchBelow(name, best);
        if (r >= 0) best = r;
      }
    }
    return best < bound ? best : -1;
  }
}
