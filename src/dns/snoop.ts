/**
 * Real-IP mode answer snooping: remembers which name a client asked for to
 * get each address, so a later flow to that address can be matched by
 * domain. Answers are walked from the question name along its CNAME chain
 * (RFC 1034 3.6.2: the answer section holds the chain then the records of
 * the canonical name); only A/AAAA records owned by a name on that chain are
 * taken, so an upstream cannot bind unrelated addresses to the name.
 *
 * Bounded by maxEntries (LRU), each mapping lives for the smallest TTL along
 * its chain clamped to [minTtl, maxTtl]; time is the injected `now()` (ms).
 * When several names resolve to one address (CDNs), the latest answer wins.
 */
import { canonicalIp, formatIp } from './address.js';
import { canonicalName, DnsClass, DnsRcode, DnsType, type DnsMessage } from './message.js';

export interface DnsSnoopOptions {
  maxEntries: number;
  /** Keep mappings at least this long (s); default 60: flows often start after the answer's TTL. */
  minTtl?: number;
  maxTtl?: number;
  now: () => number;
}

/** RFC 1034 has no limit; 16 links is more than any sane chain. */
const MAX_CHAIN = 16;

interface Entry {
  domain: string;
  expiresAt: number;
}

export interface DnsSnoopStats {
  entries: number;
  recorded: number;
  ignored: number;
  hits: number;
  misses: number;
  evictions: number;
}

export class DnsSnoop {
  private readonly map = new Map<string, Entry>();
  private readonly maxEntries: number;
  private readonly minTtl: number;
  private readonly maxTtl: number;
  private readonly now: () => number;
  private recorded = 0;
  private ignored = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;

  constructor(o: DnsSnoopOptions) {
    this.maxEntries = Math.max(0, Math.floor(o.maxEntries));
    this.minTtl = o.minTtl ?? 60;
    this.maxTtl = o.maxTtl ?? 86400;
    this.now = o.now;
  }

  /** Records the addresses of an answer; returns how many were recorded. */
  observe(msg: DnsMessage): number {
    const q = msg.questions[0];
    if (!msg.qr || msg.rcode !== DnsRcode.NoError || q === undefined || this.maxEntries === 0) return 0;
    const qname = canonicalName(q.name);
    // name on chain -> smallest TTL from the question to it
    const chain = new Map<string, number>();
    chain.set(qname, Infinity);
    let cur = qname;
    let ttl = Infinity;
    for (let hop = 0; hop < MAX_CHAIN; hop++) {
      const link = msg.answers.find((r) => r.type === DnsType.CNAME && r.target !== null && canonicalName(r.name) === cur);
      if (link === undefined) break;
      const next = canonicalName(link.target!);
      if (chain.has(next)) break; // CNAME loop
      ttl = Math.min(ttl, link.ttl);
      chain.set(next, ttl);
      cur = next;
    }
    const now = this.now();
    let n = 0;
    for (const r of msg.answers) {
      if ((r.type !== DnsType.A && r.type !== DnsType.AAAA) || r.class !== DnsClass.IN || r.address === null) continue;
      const along = chain.get(canonicalName(r.name));
      if (along === undefined) {
        this.ignored++;
        continue;
      }
      const life = Math.min(this.maxTtl, Math.max(this.minTtl, Math.min(along, r.ttl)));
      this.map.delete(r.address);
      this.map.set(r.address, { domain: qname, expiresAt: now + life * 1000 });
      this.recorded++;
      n++;
    }
    while (this.map.size > this.maxEntries) {
      this.map.delete(this.map.keys().next().value as string);
      this.evictions++;
    }
    return n;
  }

  /** The name an address (text) was answered for, or null when unknown or expired. */
  lookup(addr: string): string | null {
    return this.lookupKey(canonicalIp(addr));
  }

  /** lookup() of a flow's address bytes (4 or 16), printed as the answers' addresses are, without parsing text back. */
  lookupAddress(addr: Uint8Array): string | null {
    return this.lookupKey(formatIp(addr));
  }

  private lookupKey(key: string | null): string | null {
    const e = key === null ? undefined : this.map.get(key);
    if (e === undefined) {
      this.misses++;
      return null;
    }
    if (this.now() >= e.expiresAt) {
      this.map.delete(key!);
      this.misses++;
      return null;
    }
    this.map.delete(key!);
    this.map.set(key!, e);
    this.hits++;
    return e.domain;
  }

  get size(): number {
    return this.map.size;
  }

  stats(): DnsSnoopStats {
    return {
      entries: this.map.size,
      recorded: this.recorded,
      ignored: this.ignored,
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
    };
  }
}
