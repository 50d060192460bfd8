/**
 * A bounded DNS answer cache keyed by (lowercased qname, qtype), class IN.
 *
 * - TTL: the smallest answer TTL, clamped to [minTtl, maxTtl]; served copies
 *   carry each record's (clamped) TTL minus the whole seconds elapsed
 *   (RFC 1035 3.2.1, RFC 2181 8).
 * - Negative caching (RFC 2308 5): NXDOMAIN and NODATA answers are kept for
 *   min(SOA TTL, SOA MINIMUM) from the authority section; without an SOA
 *   they are not cached (RFC 2308 5: "SHOULD NOT"). Capped by
 *   negativeMaxTtl (RFC 2308 5 suggests at most hours; default 1 h).
 * - Not cached: truncated answers, SERVFAIL/REFUSED/other rcodes (RFC 2308
 *   7.1 allows caching SERVFAIL briefly; we let the resolver chain retry).
 * - LRU eviction beyond maxEntries; expired entries go on access.
 * - Time is the injected `now()` in milliseconds; nothing here reads a clock.
 */
import { canonicalName, decodeMessage, DnsRcode, DnsType, writeTtl, type DnsMessage } from './message.js';

export interface DnsCacheOptions {
  maxEntries: number;
  minTtl?: number;
  maxTtl?: number;
  negativeMaxTtl?: number;
  now: () => number;
}

export interface CachedAnswer {
  /** A fresh copy of the stored answer with TTLs decremented; the id is the upstream's. */
  bytes: Uint8Array;
  /** The parse of the stored answer; its offsets are valid for `bytes`. */
  message: DnsMessage;
  negative: boolean;
  /** Seconds this entry has left. */
  remainingTtl: number;
}

export interface DnsCacheStats {
  entries: number;
  hits: number;
  misses: number;
  inserts: number;
  evictions: number;
  expirations: number;
  uncacheable: number;
}

interface Entry {
  bytes: Uint8Array;
  message: DnsMessage;
  ttlOffsets: number[];
  ttls: number[];
  storedAt: number;
  expiresAt: number;
  negative: boolean;
}

export class DnsCache {
  private readonly map = new Map<string, Entry>();
  private readonly maxEntries: number;
  private readonly minTtl: number;
  private readonly maxTtl: number;
  private readonly negativeMaxTtl: number;
  private readonly now: () => number;
  private hits = 0;
  private misses = 0;
  private inserts = 0;
  private evictions = 0;
  private expirations = 0;
  private uncacheable = 0;

  constructor(o: DnsCacheOptions) {
    this.maxEntries = Math.max(0, Math.floor(o.maxEntries));
    this.minTtl = o.minTtl ?? 0;
    this.maxTtl = o.maxTtl ?? 86400;
    this.negativeMaxTtl = o.negativeMaxTtl ?? 3600;
    this.now = o.now;
  }

  static key(qname: string, qtype: number): string {
    return `${canonicalName(qname)}\u0000${qtype}`;
  }

  private clamp(ttl: number): number {
    return Math.min(this.maxTtl, Math.max(this.minTtl, ttl));
  }

  /**
   * Stores an upstream answer for (qname, qtype). Returns the TTL it will be
   * kept for, or 0 when it was not cacheable. The bytes are copied.
   */
  put(qname: string, qtype: number, answer: Uint8Array): number {
    if (this.maxEntries === 0) return 0;
    // Keep a private copy and its own parse: the caller may reuse its buffer,
    // and the parse's offsets and views must refer to the stored bytes.
    const copy = answer.slice();
    const msg = decodeMessage(copy).message;
    if (msg === null || !msg.qr || msg.tc) return this.refuse();
    const ttlOffsets: number[] = [];
    const ttls: number[] = [];
    let entryTtl: number;
    let negative = false;
    if (msg.rcode === DnsRcode.NoError && msg.answers.length > 0) {
      entryTtl = Infinity;
      for (const r of msg.answers) entryTtl = Math.min(entryTtl, this.clamp(r.ttl));
      for (const sec of [msg.answers, msg.authorities, msg.additionals]) {
        for (const r of sec) {
          ttlOffsets.push(r.ttlOffset);
          ttls.push(this.clamp(r.ttl));
        }
      }
    } else if (msg.rcode === DnsRcode.NxDomain || (msg.rcode === DnsRcode.NoError && msg.answers.length === 0)) {
      // RFC 2308 5: the negative TTL is min(SOA record TTL, SOA MINIMUM).
      const soa = msg.authorities.find((r) => r.type === DnsType.SOA && r.soa !== null);
      if (soa === undefined) return this.refuse();
      negative = true;
      entryTtl = Math.min(this.negativeMaxTtl, this.clamp(Math.min(soa.ttl, soa.soa!.minimum)));
      for (const sec of [msg.authorities, msg.additionals]) {
        for (const r of sec) {
          ttlOffsets.push(r.ttlOffset);
          ttls.push(Math.min(entryTtl, this.clamp(r.ttl)));
        }
      }
    } else {
      return this.refuse();
    }
    if (!(entryTtl > 0) || !Number.isFinite(entryTtl)) return this.refuse();
    const key = DnsCache.key(qname, qtype);
    const now = this.now();
    this.map.delete(key);
    this.map.set(key, { bytes: copy, message: msg, ttlOffsets, ttls, storedAt: now, expiresAt: now + entryTtl * 1000, negative });
    this.inserts++;
    while (this.map.size > this.maxEntries) {
      const oldest = this.map.keys().next().value as string;
      this.map.delete(oldest);
      this.evictions++;
    }
    return entryTtl;
  }

  private refuse(): number {
    this.uncacheable++;
    return 0;
  }

  /** A fresh copy of the cached answer with TTLs decremented, or null. */
  get(qname: string, qtype: number): CachedAnswer | null {
    const key = DnsCache.key(qname, qtype);
    const e = this.map.get(key);
    if (e === undefined) {
      this.misses++;
      return null;
    }
    const now = this.now();
    if (now >= e.expiresAt) {
      this.map.delete(key);
      this.expirations++;
      this.misses++;
      return null;
    }
    this.map.delete(key);
    this.map.set(key, e);
    this.hits++;
    const elapsed = Math.floor((now - e.storedAt) / 1000);
    const bytes = e.bytes.slice();
    for (let i = 0; i < e.ttlOffsets.length; i++) writeTtl(bytes, e.ttlOffsets[i]!, Math.max(0, e.ttls[i]! - elapsed));
    return { bytes, message: e.message, negative: e.negative, remainingTtl: Math.ceil((e.expiresAt - now) / 1000) };
  }

  delete(qname: string, qtype: number): boolean {
    return this.map.delete(DnsCache.key(qname, qtype));
  }

  clear(): void {
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }

  stats(): DnsCacheStats {
    return {
      entries: this.map.size,
      hits: this.hits,
      misses: this.misses,
      inserts: this.inserts,
      evictions: this.evictions,
      expirations: this.expirations,
      uncacheable: this.uncacheable,
    };
  }
}
