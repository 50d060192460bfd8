/**
 * DNS hijack, sans-IO: the engine hands over the bytes of a query that a
 * client sent to port 53 through the TUN (UDP payload, or one TCP frame
 * without its length prefix) and sends back whatever this returns.
 *
 * fake-ip mode: A/AAAA are answered from the fake-IP pool (TTL from config,
 * default 1 s so clients come back soon after a restart); AAAA without an
 * IPv6 range and HTTPS/SVCB (whose ipv4hint/ipv6hint would leak real
 * addresses) get NODATA; PTR for a fake address is answered from the pool;
 * everything else goes through the cache to the resolver chain.
 *
 * real-ip mode: everything goes through the cache to the chain, and answers
 * are snooped so flows to the returned addresses can be matched by name.
 *
 * Malformed queries never throw: a query whose header arrived gets FORMERR
 * (RFC 1035 4.1.1) or NOTIMP; shorter garbage and stray responses are
 * dropped (resolves to null); each case is counted.
 */
import { addressFromReverseName, formatIp } from './address.js';
import type { DnsCache } from './cache.js';
import type { FakeIpPool } from './fake-ip.js';
import {
  adaptResponse,
  buildAddressResponse,
  buildEmptyNoError,
  buildHeaderOnlyResponse,
  buildNotImp,
  buildQuery,
  buildRefused,
  buildResponse,
  buildServFail,
  CLASSIC_UDP_MAX,
  decodeMessage,
  DEFAULT_EDNS_UDP_SIZE,
  DnsClass,
  DnsParseError,
  DnsRcode,
  DnsType,
  HEADER_LEN,
  MAX_MESSAGE_LEN,
  type DnsDecodeResult,
  type DnsMessage,
} from './message.js';
import type { DnsSnoop } from './snoop.js';

/** The resolver chain as the hijack sees it (ResolverChain fits). */
export interface DnsUpstream {
  query(query: Uint8Array): Promise<Uint8Array>;
}

export interface DnsHijackOptions {
  mode: 'fake-ip' | 'real-ip';
  /** Required in fake-ip mode. */
  pool?: FakeIpPool | null;
  /** TTL of fake answers in seconds, default 1. */
  fakeTtl?: number;
  cache: DnsCache;
  upstream: DnsUpstream;
  /** Filled from forwarded answers (real-ip mode, and real answers in fake-ip mode). */
  snoop?: DnsSnoop | null;
  /** fake-ip mode: names for which this returns false are resolved for real. */
  shouldFake?: (qname: string) => boolean;
  /** fake-ip mode: answer HTTPS/SVCB with NODATA (default true). */
  blockSvcb?: boolean;
  /** Concurrent distinct upstream lookups; more get SERVFAIL (default 1024). */
  maxInflight?: number;
  /** Largest UDP answer we send even if the client advertises more (default 1232). */
  maxUdpSize?: number;
}

export type DnsTransport = 'udp' | 'tcp';

/** How a query was answered, for the per-type tally (metrics' result label). */
export const DnsQueryResult = { FakeIp: 0, CacheHit: 1, Upstream: 2, Error: 3 } as const;
export const DNS_QUERY_RESULTS = ['fakeip', 'cache_hit', 'upstream', 'error'] as const;
/** Tally rows: A, AAAA, everything else. */
export const DNS_QUERY_TYPES = ['A', 'AAAA', 'other'] as const;

export interface DnsHijackStats {
  queries: number;
  dropped: number;
  formErr: number;
  notImp: number;
  refused: number;
  fakeAnswers: number;
  fakeNoData: number;
  ptrAnswers: number;
  cacheHits: number;
  upstreamQueries: number;
  coalesced: number;
  servFail: number;
  truncated: number;
}

interface Forwarded {
  bytes: Uint8Array;
  message: DnsMessage;
}

export class DnsHijack {
  private readonly mode: 'fake-ip' | 'real-ip';
  private readonly pool: FakeIpPool | null;
  private readonly fakeTtl: number;
  private readonly cache: DnsCache;
  private readonly upstream: DnsUpstream;
  private readonly snoop: DnsSnoop | null;
  private readonly shouldFake: ((qname: string) => boolean) | null;
  private readonly blockSvcb: boolean;
  private readonly maxInflight: number;
  private readonly maxUdpSize: number;
  private readonly inflight = new Map<string, Promise<Forwarded | null>>();
  private nextUpstreamId = 1;
  /** Queries by type row (DNS_QUERY_TYPES) and result (DNS_QUERY_RESULTS): index type * 4 + result. Read by the metrics at scrape time. */
  readonly queryTally = new Float64Array(DNS_QUERY_TYPES.length * DNS_QUERY_RESULTS.length);
  /** Called once per upstream lookup with its duration (metrics); null when nobody listens. */
  onUpstream: ((seconds: number, ok: boolean) => void) | null = null;
  private readonly s: DnsHijackStats = {
    queries: 0,
    dropped: 0,
    formErr: 0,
    notImp: 0,
    refused: 0,
    fakeAnswers: 0,
    fakeNoData: 0,
    ptrAnswers: 0,
    cacheHits: 0,
    upstreamQueries: 0,
    coalesced: 0,
    servFail: 0,
    truncated: 0,
  };

  constructor(o: DnsHijackOptions) {
    this.mode = o.mode;
    this.pool = o.pool ?? null;
    if (this.mode === 'fake-ip' && this.pool === null) throw new TypeError('DnsHijack: fake-ip mode needs a FakeIpPool');
    this.fakeTtl = o.fakeTtl ?? 1;
    this.cache = o.cache;
    this.upstream = o.upstream;
    this.snoop = o.snoop ?? null;
    this.shouldFake = o.shouldFake ?? null;
    this.blockSvcb = o.blockSvcb ?? true;
    this.maxInflight = o.maxInflight ?? 1024;
    this.maxUdpSize = o.maxUdpSize ?? DEFAULT_EDNS_UDP_SIZE;
  }

  stats(): DnsHijackStats {
    return { ...this.s };
  }

  /** The reply bytes for a query, or null to drop it. Never rejects. */
  async handle(query: Uint8Array, transport: DnsTransport = 'udp'): Promise<Uint8Array | null> {
    this.s.queries++;
    const out = { result: DnsQueryResult.Error as number };
    let res: DnsDecodeResult | null = null;
    try {
      res = decodeMessage(query);
      const reply = await this.answer(query, res, out);
      this.tally(res, out.result);
      if (reply === null) return null;
      const opt = res.message?.opt ?? null;
      // RFC 1035 4.2.1: 512 bytes over UDP without EDNS; RFC 6891 6.2.5: the
      // advertised size (at least 512) otherwise, capped by our own limit.
      const limit =
        transport === 'tcp' ? MAX_MESSAGE_LEN : opt === null ? CLASSIC_UDP_MAX : Math.max(CLASSIC_UDP_MAX, Math.min(opt.udpSize, this.maxUdpSize));
      return this.fit(reply, limit);
    } catch {
      // Nothing below should throw; if it does, the client gets nothing
      // rather than the engine an exception.
      this.s.dropped++;
      this.tally(res, DnsQueryResult.Error);
      return null;
    }
  }

  private tally(res: DnsDecodeResult | null, result: number): void {
    const type = res?.message?.questions[0]?.type;
    const row = type === DnsType.A ? 0 : type === DnsType.AAAA ? 1 : 2;
    this.queryTally[row * DNS_QUERY_RESULTS.length + result]!++;
  }

  private async answer(bytes: Uint8Array, res: DnsDecodeResult, out: { result: number }): Promise<Uint8Array | null> {
    const q0 = res.message;
    if (q0 === null) {
      if (bytes.length < HEADER_LEN || res.error === DnsParseError.MessageTooLong || (res.flags & 0x8000) !== 0) {
        this.s.dropped++;
        return null;
      }
      this.s.formErr++;
      return buildHeaderOnlyResponse(res.id, res.flags, DnsRcode.FormErr);
    }
    const query = q0;
    if (query.qr) {
      this.s.dropped++; // a response sent to us: never answer it (reflection loops)
      return null;
    }
    if (query.opcode !== 0) {
      this.s.notImp++;
      return buildHeaderOnlyResponse(query.id, query.flags, DnsRcode.NotImp);
    }
    if (query.questions.length !== 1) {
      this.s.formErr++;
      return buildHeaderOnlyResponse(query.id, query.flags, DnsRcode.FormErr);
    }
    const q = query.questions[0]!;
    if (q.class !== DnsClass.IN) {
      this.s.refused++;
      return buildRefused(query);
    }
    if (this.mode === 'fake-ip') {
      const local = this.answerFake(query);
      if (local !== null) {
        out.result = DnsQueryResult.FakeIp;
        return local;
      }
    }
    return this.forward(bytes, query, out);
  }

  /** A local answer in fake-ip mode, or null to forward. */
  private answerFake(query: DnsMessage): Uint8Array | null {
    const pool = this.pool!;
    const q = query.questions[0]!;
    const type = q.type;
    if (type === DnsType.PTR) {
      const addr = addressFromReverseName(q.name);
      if (addr === null || !pool.isFakeBytes(addr, 0, addr.length === 4 ? 4 : 6)) return null;
      const domain = pool.lookup(formatIp(addr));
      this.s.ptrAnswers++;
      if (domain === null) return buildResponse(query, { rcode: DnsRcode.NxDomain });
      return buildResponse(query, { rcode: DnsRcode.NoError, answers: [{ name: q.name, type: DnsType.PTR, ttl: this.fakeTtl, target: domain }] });
    }
    const addressType = type === DnsType.A || type === DnsType.AAAA || type === DnsType.ANY;
    const svcb = type === DnsType.HTTPS || type === DnsType.SVCB;
    if (!addressType && !(svcb && this.blockSvcb)) return null;
    if (this.shouldFake !== null && !this.shouldFake(q.name)) return null;
    if (svcb) {
      this.s.fakeNoData++;
      return buildEmptyNoError(query);
    }
    if (type === DnsType.ANY) {
      // RFC 8482 4.2: ANY may be answered with a subset; the fake A is one.
      const a = pool.allocateIpv4(q.name) ?? pool.allocateIpv6(q.name);
      if (a === null) return buildNotImp(query);
      this.s.fakeAnswers++;
      return buildAddressResponse(query, [a], this.fakeTtl);
    }
    const addr = type === DnsType.A ? pool.allocateIpv4(q.name) : pool.allocateIpv6(q.name);
    if (addr === null) {
      this.s.fakeNoData++;
      return buildEmptyNoError(query);
    }
    this.s.fakeAnswers++;
    return buildAddressResponse(query, [addr], this.fakeTtl);
  }

  private async forward(queryBytes: Uint8Array, query: DnsMessage, out: { result: number }): Promise<Uint8Array> {
    const q = query.questions[0]!;
    const cached = this.cache.get(q.name, q.type);
    if (cached !== null) {
      this.s.cacheHits++;
      out.result = DnsQueryResult.CacheHit;
      return adaptResponse(cached.bytes, cached.message, queryBytes, query);
    }
    const key = `${q.name.toLowerCase()}\u0000${q.type}`;
    let p = this.inflight.get(key);
    if (p !== undefined) {
      this.s.coalesced++;
    } else {
      if (this.inflight.size >= this.maxInflight) {
        this.s.servFail++;
        return buildServFail(query);
      }
      p = this.lookup(q.name, q.type);
      this.inflight.set(key, p);
      const pp = p;
      void pp.finally(() => {
        if (this.inflight.get(key) === pp) this.inflight.delete(key);
      });
    }
    const got = await p;
    if (got === null) {
      this.s.servFail++;
      return buildServFail(query);
    }
    out.result = DnsQueryResult.Upstream;
    return adaptResponse(got.bytes, got.message, queryBytes, query);
  }

  /** One upstream lookup shared by coalesced queries; null on failure. */
  private async lookup(name: string, type: number): Promise<Forwarded | null> {
    this.s.upstreamQueries++;
    const id = this.nextUpstreamId;
    this.nextUpstreamId = (id + 1) & 0xffff;
    let bytes: Uint8Array;
    const t0 = this.onUpstream === null ? 0 : performance.now();
    try {
      const upstreamQuery = buildQuery({ id, name, type, rd: true, ednsUdpSize: DEFAULT_EDNS_UDP_SIZE });
      bytes = await this.upstream.query(upstreamQuery);
    } catch {
      this.onUpstream?.((performance.now() - t0) / 1000, false);
      return null;
    }
    this.onUpstream?.((performance.now() - t0) / 1000, true);
    const message = decodeMessage(bytes).message;
    const aq = message?.questions[0];
    if (message === null || !message.qr || aq === undefined || aq.type !== type || aq.name.toLowerCase() !== name.toLowerCase()) return null;
    this.cache.put(name, type, bytes);
    if (this.snoop !== null) this.snoop.observe(message);
    return { bytes, message };
  }

  /**
   * Too-long answers become an empty reply with TC set (header, question and
   * the OPT if any) so the client retries over TCP (RFC 7766 5).
   */
  private fit(reply: Uint8Array, limit: number): Uint8Array | null {
    if (reply.length <= limit) return reply;
    const m = decodeMessage(reply).message;
    if (m === null) return null;
    this.s.truncated++;
    const opt = m.opt === null ? null : reply.subarray(m.opt.offset, m.opt.end);
    const t = new Uint8Array(m.questionEnd + (opt?.length ?? 0));
    t.set(reply.subarray(0, m.questionEnd));
    if (opt !== null) t.set(opt, m.questionEnd);
    t[2] = t[2]! | 0x02; // TC
    t.fill(0, 6, 12); // no answer, authority or additional records...
    t[11] = opt === null ? 0 : 1; // ...but the OPT
    return t;
  }
}
