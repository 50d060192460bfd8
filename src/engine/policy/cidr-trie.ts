/**
 * IP prefix text parsing and a path-compressed binary trie (a PATRICIA trie,
 * the structure BSD routing tables use) for IPv4 and IPv6 prefixes.
 *
 * Every prefix stores a non-negative integer value (a rule index); inserting
 * the same prefix twice keeps the smaller value. Two lookups walk the single
 * root-to-leaf path that can contain an address:
 *   - `longestMatch(addr)`: the value of the longest prefix containing addr
 *     (routing-table semantics);
 *   - `minMatch(addr)`: the smallest value among *all* prefixes containing
 *     addr. With values = rule indices this is first-match policy semantics:
 *     an earlier broad rule (10.0.0.0/8, rule 1) beats a later specific one
 *     (10.1.2.0/24, rule 7).
 * A lookup visits at most one node per distinct prefix length on the path
 * (<= 33 for IPv4, <= 129 for IPv6, in practice about log2(prefixes)), does
 * O(1) 32-bit compares per node and allocates nothing. Nodes live in typed
 * arrays; the trie is grown only while building, then read-only.
 *
 * Addresses are network-order bytes (4 or 16), or a uint32 for IPv4.
 */
import { PolicyError, PolicyErrorCode, show } from './errors.js';
import { clearHostBits, parseIp, parseIpv4Into, parseIpv6Text } from '../../wire/ip-address.js';

/** Marks "no value" in node slots; larger than any rule index. */
export const NO_VALUE = 0x7fffffff;

// ---------------------------------------------------------------- parsing

// Address text is src/wire/ip-address.ts's, as everywhere in sluice. A bare
// parse refuses zone ids (`%eth0`): a rule cannot name an interface-scoped address.
export { formatIp, parseIp } from '../../wire/ip-address.js';

/** Dotted-quad IPv4 (exactly four decimal octets, no leading zeros) to 4 bytes, or null. */
export function parseIpv4(text: string): Uint8Array | null {
  const out = new Uint8Array(4);
  return parseIpv4Into(text, out, 0) ? out : null;
}

/** IPv6 text (RFC 4291 section 2.2) to 16 bytes, or null. */
export function parseIpv6(text: string): Uint8Array | null {
  const out = new Uint8Array(16);
  return parseIpv6Text(text, out, 0) ? out : null;
}

export interface Cidr {
  family: 4 | 6;
  /** Network-order bytes with host bits cleared. */
  bytes: Uint8Array;
  prefixLen: number;
  /** The text had bits set beyond the prefix (`10.0.0.1/8`); they were cleared. The config layer may warn. */
  hostBitsSet: boolean;
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; reason: string };

/**
 * Parses `addr/len`. A bare address means a host route (/32 or /128). Host
 * bits beyond the prefix are accepted and cleared (reported in
 * `hostBitsSet`), as `ip route` does; malformed text is refused with a reason.
 */
export function tryParseCidr(text: string): CidrParse {
  if (typeof text !== 'string') return { ok: false, reason: `expected a CIDR string like "10.0.0.0/8" or "2001:db8::/32", got ${show(text)}` };
  const t = text.trim();
  const slash = t.indexOf('/');
  const addrText = slash < 0 ? t : t.slice(0, slash);
  const bytes = parseIp(addrText);
  if (bytes === null) {
    return {
      ok: false,
      reason: `${show(text)} is not an IPv4 or IPv6 address${slash < 0 ? '' : ' followed by /prefix'}; expected a CIDR like "10.0.0.0/8" or "2001:db8::/32"`,
    };
  }
  const bits = bytes.length * 8;
  let len = bits;
  if (slash >= 0) {
    const lt = t.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(lt) || Number(lt) > bits) {
      return { ok: false, reason: `prefix length in ${show(text)} must be an integer 0..${bits}` };
    }
    len = Number(lt);
  }
  const hostBitsSet = clearHostBits(bytes, len);
  return { ok: true, cidr: { family: bytes.length === 4 ? 4 : 6, bytes, prefixLen: len, hostBitsSet } };
}

/** Throwing form of `tryParseCidr` (code SLUICE_POLICY_INVALID_CIDR) for callers outside the rule compiler. */
export function parseCidr(text: string, path = ''): Cidr {
  const r = tryParseCidr(text);
  if (!r.ok) throw new PolicyError(PolicyErrorCode.InvalidCidr, path, r.reason);
  return r.cidr;
}

// ---------------------------------------------------------------- the trie

/** Index of a node returned by insert(); stable once created (splits add nodes, never renumber). */
export type TrieNode = number;

/** Node record layout in `nodes` (one Int32Array, so a node is one or two cache lines, not five arrays). */
const C0 = 0;
const C1 = 1;
const VAL = 2;
const LEN = 3;
const KEY = 4;

/**
 * PATRICIA trie over 32-bit words: one word for IPv4, four for IPv6. Node 0
 * is the root, the /0 prefix. Each node record holds two children, a value
 * (NO_VALUE for internal split nodes), the prefix length and the prefix
 * words (host bits clear): 20 bytes per IPv4 node, 32 per IPv6 node.
 */
export class CidrTrie {
  readonly family: 4 | 6;
  private readonly words: number;
  private readonly bits: number;
  /** Record size in int32s. */
  private readonly stride: number;
  private nodes: Int32Array;
  private count: number;
  /** Number of insert() calls. */
  private inserted: number;
  /** Address loaded as words for a lookup; reused, so lookups allocate nothing. */
  private readonly scratch: Int32Array;
  /** Insert-time copy of the key being inserted. */
  private readonly keyBuf: Int32Array;

  constructor(family: 4 | 6, initialCapacity = 16) {
    this.family = family;
    this.words = family === 4 ? 1 : 4;
    this.bits = this.words * 32;
    this.stride = KEY + this.words;
    this.nodes = new Int32Array(Math.max(2, initialCapacity) * this.stride);
    this.count = 0;
    this.inserted = 0;
    this.scratch = new Int32Array(this.words);
    this.keyBuf = new Int32Array(this.words);
    this.newNode(this.keyBuf, 0, NO_VALUE); // root: prefix length 0, no value
  }

  /** Nodes allocated (root and split nodes included); for tests and memory estimates. */
  get nodeCount(): number {
    return this.count;
  }

  get size(): number {
    return this.inserted;
  }

  /**
   * Adds prefix `bytes/len` with `value` (>= 0); a prefix already present keeps
   * the smaller value. `bytes` is 4 or 16 bytes; host bits are ignored.
   * Returns the node holding the prefix.
   */
  insert(bytes: Uint8Array, len: number, value: number): TrieNode {
    if (bytes.length !== this.words * 4) throw new RangeError(`CidrTrie(v${this.family}).insert: expected ${this.words * 4} address bytes, got ${bytes.length}`);
    if (!(len >= 0 && len <= this.bits && Number.isInteger(len))) throw new RangeError(`CidrTrie.insert: prefix length ${len} outside 0..${this.bits}`);
    if (!(value >= 0 && value < NO_VALUE && Number.isInteger(value))) throw new RangeError(`CidrTrie.insert: value ${value} must be an integer 0..${NO_VALUE - 1}`);
    const key = this.keyBuf;
    loadWords(bytes, key, this.words);
    maskRange(key, 0, len, this.words);
    this.inserted++;
    const S = this.stride;
    let node = 0;
    for (;;) {
      const nb = node * S;
      const nl = this.nodes[nb + LEN]!;
      if (nl === len) {
        if (value < this.nodes[nb + VAL]!) this.nodes[nb + VAL] = value;
        return node;
      }
      const b = bitAt(key, 0, nl);
      const c = this.nodes[nb + b]!;
      if (c < 0) {
        const leaf = this.newNode(key, len, value);
        this.nodes[node * S + b] = leaf;
        return leaf;
      }
      const cl = this.nodes[c * S + LEN]!;
      const cpl = this.commonPrefix(key, c, len < cl ? len : cl);
      if (cpl === cl) {
        node = c; // c's prefix contains ours: descend
        continue;
      }
      if (cpl === len) {
        // ours contains c's: becomes c's parent
        const n = this.newNode(key, len, value);
        this.nodes[n * S + bitAt(this.nodes, c * S + KEY, len)] = c;
        this.nodes[node * S + b] = n;
        return n;
      }
      // diverge at cpl: a split node with both below it
      const split = this.newNode(key, cpl, NO_VALUE);
      const leaf = this.newNode(key, len, value);
      this.nodes[split * S + bitAt(this.nodes, c * S + KEY, cpl)] = c;
      this.nodes[split * S + bitAt(key, 0, cpl)] = leaf;
      this.nodes[node * S + b] = split;
      return leaf;
    }
  }

  /** Smallest value among all prefixes containing `addr` (4 or 16 bytes), or -1. */
  minMatch(addr: Uint8Array): number {
    loadWords(addr, this.scratch, this.words);
    return this.walk(this.scratch, false);
  }

  /** `minMatch` for an IPv4 address given as a uint32 (host order value of the network-order bytes). */
  minMatchV4(addr: number): number {
    this.scratch[0] = addr | 0;
    return this.walk(this.scratch, false);
  }

  /** Value of the longest prefix containing `addr`, or -1. */
  longestMatch(addr: Uint8Array): number {
    loadWords(addr, this.scratch, this.words);
    return this.walk(this.scratch, true);
  }

  /**
   * Writes the nodes with a value whose prefixes contain `addr` into `out`,
   * shortest prefix first, and returns how many. `out` needs bits+1 slots
   * (33 / 129). Used for candidate lists kept outside the trie.
   */
  collect(addr: Uint8Array, out: Int32Array): number {
    loadWords(addr, this.scratch, this.words);
    const s = this.scratch;
    const a = this.nodes;
    const S = this.stride;
    let n = 0;
    let nb = 0;
    if (a[VAL] !== NO_VALUE) out[n++] = 0;
    for (;;) {
      const nl = a[nb + LEN]!;
      if (nl === this.bits) break;
      const c = a[nb + ((s[nl >>> 5]! >>> (31 - (nl & 31))) & 1)]!;
      if (c < 0) break;
      nb = c * S;
      if (!this.contains(nb, s, nl)) break;
      if (a[nb + VAL] !== NO_VALUE) out[n++] = c;
    }
    return n;
  }

  /** Value stored at a node (NO_VALUE for split nodes). */
  valueAt(node: TrieNode): number {
    return this.nodes[node * this.stride + VAL]!;
  }

  private walk(s: Int32Array, longest: boolean): number {
    const a = this.nodes;
    const S = this.stride;
    const bits = this.bits;
    let nb = 0;
    let best = a[VAL]!;
    for (;;) {
      const nl = a[nb + LEN]!;
      if (nl === bits) break;
      const c = a[nb + ((s[nl >>> 5]! >>> (31 - (nl & 31))) & 1)]!;
      if (c < 0) break;
      nb = c * S;
      if (!this.contains(nb, s, nl)) break;
      const v = a[nb + VAL]!;
      if (longest ? v !== NO_VALUE : v < best) best = v;
    }
    return best === NO_VALUE ? -1 : best;
  }

  /** Whether the node at record offset nb contains s, given that the first `from` bits already agree. */
  private contains(nb: number, s: Int32Array, from: number): boolean {
    const a = this.nodes;
    const len = a[nb + LEN]!;
    let w = from >>> 5;
    let left = len - w * 32;
    while (left >= 32) {
      if (a[nb + KEY + w] !== s[w]) return false;
      w++;
      left -= 32;
    }
    if (left > 0 && ((a[nb + KEY + w]! ^ s[w]!) & (-1 << (32 - left))) !== 0) return false;
    return true;
  }

  private commonPrefix(key: Int32Array, c: number, max: number): number {
    const base = c * this.stride + KEY;
    let n = 0;
    for (let w = 0; w < this.words && n < max; w++) {
      const x = key[w]! ^ this.nodes[base + w]!;
      if (x === 0) n += 32;
      else {
        n += Math.clz32(x);
        break;
      }
    }
    return n < max ? n : max;
  }

  private newNode(key: Int32Array, len: number, value: number): number {
    const S = this.stride;
    if ((this.count + 1) * S > this.nodes.length) {
      const grown = new Int32Array(this.nodes.length * 2);
      grown.set(this.nodes);
      this.nodes = grown;
    }
    const n = this.count++;
    const nb = n * S;
    this.nodes[nb + C0] = -1;
    this.nodes[nb + C1] = -1;
    this.nodes[nb + VAL] = value;
    this.nodes[nb + LEN] = len;
    for (let w = 0; w < this.words; w++) this.nodes[nb + KEY + w] = key[w]!;
    maskRange(this.nodes, nb + KEY, len, this.words);
    return n;
  }
}

function loadWords(b: Uint8Array, out: Int32Array, words: number): void {
  for (let w = 0; w < words; w++) {
    const i = w * 4;
    out[w] = (b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!;
  }
}

function maskRange(a: Int32Array, base: number, len: number, words: number): void {
  for (let w = 0; w < words; w++) {
    const keep = len - w * 32;
    if (keep >= 32) continue;
    a[base + w] = keep <= 0 ? 0 : a[base + w]! & (-1 << (32 - keep));
  }
}

function bitAt(s: Int32Array, base: number, pos: number): number {
  return (s[base + (pos >>> 5)]! >>> (31 - (pos & 31))) & 1;
}

/**
 * An IPv4 trie and an IPv6 trie behind one `minMatch(family, addr)`: what a
 * rule's ipCidr list or a cidr rule set compiles to.
 */
export class CidrTriePair {
  readonly v4 = new CidrTrie(4);
  readonly v6 = new CidrTrie(6);

  insert(c: Cidr, value: number): TrieNode {
    return c.family === 4 ? this.v4.insert(c.bytes, c.prefixLen, value) : this.v6.insert(c.bytes, c.prefixLen, value);
  }

  minMatch(family: 4 | 6, addr: Uint8Array): number {
    if (family === 4) return addr.length === 4 ? this.v4.minMatch(addr) : -1;
    return addr.length === 16 ? this.v6.minMatch(addr) : -1;
  }

  get size(): number {
    return this.v4.size + this.v6.size;
  }
}
