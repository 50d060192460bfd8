/**
 * The fake-IP pool: every domain a client resolves gets an address from a
 * reserved range (198.18.0.0/15 is RFC 2544 benchmarking space, fc00::/7 is
 * RFC 4193 unique-local), and a flow that later arrives for that address is
 * mapped back to the domain so policy can match on names.
 *
 * Bounded: capacity is the number of usable addresses in the range, capped
 * by `maxEntries`. When full, the least recently used mapping (by either
 * direction of lookup) is recycled. Addresses are never the network address,
 * the last address (IPv4 broadcast; on IPv6 kept out for symmetry), or any
 * excluded address (the TUN's own).
 *
 * Internally an address is its offset from the range base. Offsets stay
 * below 2^32 (capacity is capped there), so the low 32 bits of an address
 * minus the base's low 32 bits give the offset without BigInt, and a
 * reverse lookup from packet bytes allocates nothing.
 *
 * persist()/restore() keep the mapping across restarts in a JSON file
 * written atomically (temporary file, fsync, rename), so clients that cached
 * a fake answer keep working.
 */
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { cidrContains, formatIp, parseCidr, parseIp, type Cidr } from './address.js';
import { DnsError } from './errors.js';
import { canonicalName } from './message.js';

export interface FakeIpPoolOptions {
  /** e.g. "198.18.0.0/15"; omit for no IPv4 fake addresses. */
  ipv4Range?: string | null;
  /** e.g. "fc00::/18"; omit for no IPv6 fake addresses (AAAA gets NODATA). */
  ipv6Range?: string | null;
  /** Cap on mappings per family (default 65536). */
  maxEntries?: number;
  /** Addresses or CIDRs never handed out (the TUN's own address, its peer, ...). */
  exclude?: readonly string[];
  /** Called after a mapping is added or recycled (not on lookups or restore), so the owner can save soon. */
  onChange?: () => void;
}

export const DEFAULT_FAKEIP_MAX_ENTRIES = 65536;

interface Entry {
  domain: string;
  offset: number;
  prev: Entry | null;
  next: Entry | null;
}

/** One family's pool: offsets, exclusions, two maps and an intrusive LRU list. */
class FamilyPool {
  readonly cidr: Cidr;
  readonly addrLen: number;
  /** Number of addresses in the range, capped at 2^32. */
  readonly size: number;
  readonly capacity: number;
  readonly baseLow: number;
  /** Excluded offset intervals [start, end], sorted and merged. */
  private readonly excluded: [number, number][];
  readonly byOffset = new Map<number, Entry>();
  readonly byDomain = new Map<string, Entry>();
  /** LRU list: head is the least recently used. */
  private head: Entry | null = null;
  private tail: Entry | null = null;
  private cursor = 1;
  recycled = 0;
  /** Mappings ever inserted (allocate or restore): a change tells the pool's owner to save. */
  inserted = 0;

  constructor(field: string, cidr: Cidr, maxEntries: number, exclude: readonly Cidr[]) {
    this.cidr = cidr;
    this.addrLen = cidr.family === 4 ? 4 : 16;
    const hostBits = this.addrLen * 8 - cidr.prefix;
    this.size = hostBits >= 32 ? 2 ** 32 : 2 ** hostBits;
    const b = cidr.bytes;
    const o = this.addrLen - 4;
    this.baseLow = ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
    const ex: [number, number][] = [[0, 0], [this.size - 1, this.size - 1]];
    for (const e of exclude) {
      if (e.family !== cidr.family) continue;
      const r = this.overlap(e);
      if (r !== null) ex.push(r);
    }
    ex.sort((x, y) => x[0] - y[0]);
    const merged: [number, number][] = [];
    for (const r of ex) {
      const last = merged[merged.length - 1];
      if (last !== undefined && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
      else merged.push([r[0], r[1]]);
    }
    this.excluded = merged;
    let excludedCount = 0;
    for (const r of merged) excludedCount += r[1] - r[0] + 1;
    const usable = this.size - excludedCount;
    if (usable <= 0) throw new DnsError('SLUICE_DNS_FAKEIP_CONFIG', `dns.fakeIp.${field}: range has no usable addresses after exclusions`);
    this.capacity = Math.min(usable, maxEntries);
  }

  /** The offsets of `e` inside this range, or null when disjoint. */
  private overlap(e: Cidr): [number, number] | null {
    // Compare the common prefix; then compute the excluded block's offsets.
    const common = Math.min(e.prefix, this.cidr.prefix);
    for (let bit = 0; bit < common; bit++) {
      const m = 0x80 >> (bit & 7);
      if ((e.bytes[bit >> 3]! & m) !== (this.cidr.bytes[bit >> 3]! & m)) return null;
    }
    if (e.prefix <= this.cidr.prefix) return [0, this.size - 1];
    // e lies inside the range; its start offset from the base, clamped to 2^32.
    const hostBits = this.addrLen * 8 - this.cidr.prefix;
    if (hostBits > 32) {
      // Only offsets below 2^32 are ever used; ignore exclusions above that.
      for (let i = 0; i < this.addrLen - 4; i++) if (e.bytes[i] !== this.cidr.bytes[i]) return null;
    }
    const start = this.offsetOf(e.bytes, 0);
    const span = this.addrLen * 8 - e.prefix >= 32 ? 2 ** 32 : 2 ** (this.addrLen * 8 - e.prefix);
    return [start, Math.min(this.size - 1, start + span - 1)];
  }

  /** Offset of an address inside the range (no range check beyond the low 32 bits). */
  offsetOf(addr: Uint8Array, off: number): number {
    const o = off + this.addrLen - 4;
    const low = ((addr[o]! << 24) | (addr[o + 1]! << 16) | (addr[o + 2]! << 8) | addr[o + 3]!) >>> 0;
    return (low - this.baseLow) >>> 0;
  }

  contains(addr: Uint8Array, off: number): boolean {
    return cidrContains(this.cidr, addr, off);
  }

  /** Entry for an in-range address, or null (no allocation). */
  lookupBytes(addr: Uint8Array, off: number): Entry | null {
    if (!this.contains(addr, off)) return null;
    // Offsets >= 2^32 are never allocated: bytes above the low 32 must match the base.
    for (let i = this.cidr.prefix >> 3; i < this.addrLen - 4; i++) if (addr[off + i] !== this.cidr.bytes[i]) return null;
    return this.byOffset.get(this.offsetOf(addr, off)) ?? null;
  }

  addressOf(offset: number): string {
    const b = this.cidr.bytes.slice();
    const o = this.addrLen - 4;
    const low = (this.baseLow + offset) >>> 0;
    b[o] = low >>> 24;
    b[o + 1] = (low >>> 16) & 0xff;
    b[o + 2] = (low >>> 8) & 0xff;
    b[o + 3] = low & 0xff;
    return formatIp(b);
  }

  isExcluded(offset: number): boolean {
    for (const r of this.excluded) {
      if (offset < r[0]) return false;
      if (offset <= r[1]) return true;
    }
    return false;
  }

  touch(e: Entry): void {
    if (this.tail === e) return;
    this.unlink(e);
    this.append(e);
  }

  private unlink(e: Entry): void {
    if (e.prev !== null) e.prev.next = e.next;
    else this.head = e.next;
    if (e.next !== null) e.next.prev = e.prev;
    else this.tail = e.prev;
    e.prev = null;
    e.next = null;
  }

  private append(e: Entry): void {
    e.prev = this.tail;
    e.next = null;
    if (this.tail !== null) this.tail.next = e;
    else this.head = e;
    this.tail = e;
  }

  /** The address for `domain` (canonical), allocating or recycling as needed. */
  allocate(domain: string): Entry {
    const found = this.byDomain.get(domain);
    if (found !== undefined) {
      this.touch(found);
      return found;
    }
    let offset: number;
    if (this.byOffset.size >= this.capacity) {
      const victim = this.head!;
      this.unlink(victim);
      this.byDomain.delete(victim.domain);
      this.byOffset.delete(victim.offset);
      offset = victim.offset;
      this.recycled++;
    } else {
      offset = this.nextFree();
    }
    return this.insert(domain, offset);
  }

  insert(domain: string, offset: number): Entry {
    this.inserted++;
    const e: Entry = { domain, offset, prev: null, next: null };
    this.byDomain.set(domain, e);
    this.byOffset.set(offset, e);
    this.append(e);
    return e;
  }

  /** A usable offset not currently mapped; only called while below capacity. */
  private nextFree(): number {
    for (;;) {
      if (this.cursor >= this.size) this.cursor = 0;
      const o = this.cursor++;
      if (this.isExcluded(o) || this.byOffset.has(o)) continue;
      return o;
    }
  }

  /** Forgets every mapping (POST /cache/fakeip/flush); returns how many there were. */
  clear(): number {
    const n = this.byOffset.size;
    this.byOffset.clear();
    this.byDomain.clear();
    this.head = null;
    this.tail = null;
    this.cursor = 1;
    return n;
  }

  /** Least- to most-recently used. */
  *entries(): IterableIterator<Entry> {
    for (let e = this.head; e !== null; e = e.next) yield e;
  }

  /** Whether an offset may be used by this configuration (for restore). */
  usable(offset: number): boolean {
    return offset < this.size && !this.isExcluded(offset);
  }
}

export interface FakeIpStats {
  v4Entries: number;
  v6Entries: number;
  v4Capacity: number;
  v6Capacity: number;
  recycled: number;
  allocations: number;
  reverseHits: number;
  reverseMisses: number;
}

export interface RestoreResult {
  restored: number;
  skipped: number;
  /** 'missing' when there was no file, 'corrupt' when it did not parse; null on success. */
  error: 'missing' | 'corrupt' | null;
}

const PERSIST_VERSION = 1;

export class FakeIpPool {
  private readonly v4: FamilyPool | null;
  private readonly v6: FamilyPool | null;
  private allocations = 0;
  private reverseHits = 0;
  private reverseMisses = 0;
  private readonly scratch = new Uint8Array(16);
  private readonly onChange: (() => void) | null;

  constructor(opts: FakeIpPoolOptions) {
    this.onChange = opts.onChange ?? null;
    const maxEntries = opts.maxEntries ?? DEFAULT_FAKEIP_MAX_ENTRIES;
    if (!Number.isInteger(maxEntries) || maxEntries < 1 || maxEntries > 2 ** 24) {
      throw new DnsError('SLUICE_DNS_FAKEIP_CONFIG', `dns.fakeIp.maxEntries: expected an integer 1..16777216, got ${String(maxEntries)}`);
    }
    const exclude: Cidr[] = [];
    for (const x of opts.exclude ?? []) {
      const c = parseCidr(x);
      if (c === null) throw new DnsError('SLUICE_DNS_FAKEIP_CONFIG', `dns.fakeIp.exclude: expected an address or CIDR, got ${JSON.stringify(x)}`);
      exclude.push(c);
    }
    this.v4 = opts.ipv4Range ? FakeIpPool.family('ipv4Range', opts.ipv4Range, 4, maxEntries, exclude) : null;
    this.v6 = opts.ipv6Range ? FakeIpPool.family('ipv6Range', opts.ipv6Range, 6, maxEntries, exclude) : null;
  }

  private static family(field: string, range: string, family: 4 | 6, maxEntries: number, exclude: Cidr[]): FamilyPool {
    const c = parseCidr(range);
    if (c === null || c.family !== family) {
      throw new DnsError('SLUICE_DNS_FAKEIP_CONFIG', `dns.fakeIp.${field}: expected an IPv${family} CIDR such as ${family === 4 ? '198.18.0.0/15' : 'fc00::/18'}, got ${JSON.stringify(range)}`);
    }
    const maxPrefix = family === 4 ? 30 : 126;
    if (c.prefix > maxPrefix) throw new DnsError('SLUICE_DNS_FAKEIP_CONFIG', `dns.fakeIp.${field}: prefix /${c.prefix} is too small a range (at most /${maxPrefix})`);
    return new FamilyPool(field, c, maxEntries, exclude);
  }

  get hasIpv4(): boolean {
    return this.v4 !== null;
  }

  get hasIpv6(): boolean {
    return this.v6 !== null;
  }

  /** The fake IPv4 address for a domain (stable while mapped), or null without an IPv4 range. */
  allocateIpv4(domain: string): string | null {
    return this.v4 === null ? null : this.allocateIn(this.v4, domain);
  }

  allocateIpv6(domain: string): string | null {
    return this.v6 === null ? null : this.allocateIn(this.v6, domain);
  }

  private allocateIn(p: FamilyPool, domain: string): string {
    this.allocations++;
    const before = p.inserted;
    const offset = p.allocate(canonicalName(domain)).offset;
    if (p.inserted !== before && this.onChange !== null) this.onChange();
    return p.addressOf(offset);
  }

  /** The current mapping of a domain without allocating or touching, or null. */
  peek(domain: string, family: 4 | 6): string | null {
    const p = family === 4 ? this.v4 : this.v6;
    const e = p?.byDomain.get(canonicalName(domain));
    return p && e ? p.addressOf(e.offset) : null;
  }

  /** Whether an address (text) lies in a fake range, mapped or not. */
  isFake(addr: string): boolean {
    const b = parseIp(addr);
    if (b === null) return false;
    const p = b.length === 4 ? this.v4 : this.v6;
    return p !== null && p.contains(b, 0);
  }

  /** Whether 4 (family 4) or 16 bytes at buf[off] lie in a fake range. */
  isFakeBytes(buf: Uint8Array, off: number, family: 4 | 6): boolean {
    const p = family === 4 ? this.v4 : this.v6;
    return p !== null && p.contains(buf, off);
  }

  /**
   * The domain a fake address stands for, or null when it is not mapped (the
   * engine then resets the flow). Counts as a use for LRU purposes.
   */
  lookup(addr: string): string | null {
    const b = parseIp(addr);
    if (b === null) return null;
    this.scratch.set(b);
    return this.lookupBytes(this.scratch, 0, b.length === 4 ? 4 : 6);
  }

  /** lookup() from packet bytes, without allocating. */
  lookupBytes(buf: Uint8Array, off: number, family: 4 | 6): string | null {
    const p = family === 4 ? this.v4 : this.v6;
    const e = p === null ? null : p.lookupBytes(buf, off);
    if (e === null) {
      this.reverseMisses++;
      return null;
    }
    p!.touch(e);
    this.reverseHits++;
    return e.domain;
  }

  /** Forgets every mapping of both families; returns how many there were. */
  clear(): number {
    return (this.v4?.clear() ?? 0) + (this.v6?.clear() ?? 0);
  }

  stats(): FakeIpStats {
    return {
      v4Entries: this.v4?.byOffset.size ?? 0,
      v6Entries: this.v6?.byOffset.size ?? 0,
      v4Capacity: this.v4?.capacity ?? 0,
      v6Capacity: this.v6?.capacity ?? 0,
      recycled: (this.v4?.recycled ?? 0) + (this.v6?.recycled ?? 0),
      allocations: this.allocations,
      reverseHits: this.reverseHits,
      reverseMisses: this.reverseMisses,
    };
  }

  /** The mapping as a JSON-able object, entries oldest-use first. */
  snapshot(): { version: number; ipv4Range: string | null; ipv6Range: string | null; entries: [string, string][] } {
    const entries: [string, string][] = [];
    for (const p of [this.v4, this.v6]) {
      if (p === null) continue;
      for (const e of p.entries()) entries.push([e.domain, p.addressOf(e.offset)]);
    }
    return {
      version: PERSIST_VERSION,
      ipv4Range: this.v4 ? `${formatIp(this.v4.cidr.bytes)}/${this.v4.cidr.prefix}` : null,
      ipv6Range: this.v6 ? `${formatIp(this.v6.cidr.bytes)}/${this.v6.cidr.prefix}` : null,
      entries,
    };
  }

  /**
   * Writes the mapping to `path` atomically: a sibling temporary file is
   * written and fsynced, then renamed over the target (rename(2) is atomic
   * within a file system), so a crash leaves either the old or the new file.
   */
  async persist(path: string): Promise<void> {
    const data = JSON.stringify(this.snapshot());
    const tmp = `${path}.tmp-${process.pid}-${Math.floor(Math.random() * 0x7fffffff).toString(36)}`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(data, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await rename(tmp, path);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Loads mappings written by persist(), replacing nothing already mapped.
   * Entries outside the current ranges, on excluded addresses, duplicated, or
   * beyond capacity (the oldest are dropped first) are skipped. A missing or
   * corrupt file is reported, not thrown: the daemon starts with an empty
   * pool either way.
   */
  async restore(path: string): Promise<RestoreResult> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { restored: 0, skipped: 0, error: 'missing' };
      throw err;
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return { restored: 0, skipped: 0, error: 'corrupt' };
    }
    if (typeof doc !== 'object' || doc === null) return { restored: 0, skipped: 0, error: 'corrupt' };
    const d = doc as { version?: unknown; entries?: unknown };
    if (d.version !== PERSIST_VERSION || !Array.isArray(d.entries)) return { restored: 0, skipped: 0, error: 'corrupt' };
    return this.load(d.entries);
  }

  private load(list: unknown[]): RestoreResult {
    let restored = 0;
    let skipped = 0;
    // The file lists entries oldest-use first. When more are listed than
    // fit, the newest win: walk backwards reserving room, then replay the
    // kept ones forwards so the LRU order matches the file.
    const parsed: { domain: string; pool: FamilyPool; offset: number }[] = [];
    for (const item of list) {
      if (!Array.isArray(item) || typeof item[0] !== 'string' || typeof item[1] !== 'string') {
        skipped++;
        continue;
      }
      const domain = canonicalName(item[0]);
      const b = parseIp(item[1]);
      const p = b === null ? null : b.length === 4 ? this.v4 : this.v6;
      if (b === null || p === null || domain.length === 0 || domain.length > 1024 || !p.contains(b, 0)) {
        skipped++;
        continue;
      }
      let inLow = true;
      for (let i = p.cidr.prefix >> 3; i < p.addrLen - 4; i++) if (b[i] !== p.cidr.bytes[i]) inLow = false;
      const offset = p.offsetOf(b, 0);
      if (!inLow || !p.usable(offset)) {
        skipped++;
        continue;
      }
      parsed.push({ domain, pool: p, offset });
    }
    const room = new Map<FamilyPool, number>();
    for (const p of [this.v4, this.v6]) if (p !== null) room.set(p, p.capacity - p.byOffset.size);
    const keep: boolean[] = new Array<boolean>(parsed.length).fill(false);
    for (let i = parsed.length - 1; i >= 0; i--) {
      const x = parsed[i]!;
      const r = room.get(x.pool)!;
      if (r <= 0 || x.pool.byDomain.has(x.domain) || x.pool.byOffset.has(x.offset)) continue;
      keep[i] = true;
      // Reserve now so later (older) duplicates lose to newer entries.
      x.pool.insert(x.domain, x.offset);
      room.set(x.pool, r - 1);
    }
    // Inserted newest-first; re-touch in file order so LRU order matches the file.
    for (let i = 0; i < parsed.length; i++) {
      const x = parsed[i]!;
      if (!keep[i]) {
        skipped++;
        continue;
      }
      x.pool.touch(x.pool.byDomain.get(x.domain)!);
      restored++;
    }
    return { restored, skipped, error: null };
  }
}
