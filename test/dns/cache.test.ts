import t from 'tap';
import { DnsCache } from '../../src/dns/cache.js';
import { buildQuery, buildResponse, DnsRcode, DnsType, encodeMessage, parseMessage, type DnsRecordInit } from '../../src/dns/message.js';

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

function answer(name: string, type: number, records: DnsRecordInit[], rcode = 0, authorities: DnsRecordInit[] = []): Uint8Array {
  const q = parseMessage(buildQuery({ id: 0x1111, name, type, ednsUdpSize: 1232 }))!;
  return buildResponse(q, { rcode, answers: records, authorities });
}

const soa = (ttl: number, minimum: number): DnsRecordInit => ({
  name: 'example.test',
  type: DnsType.SOA,
  ttl,
  soa: { mname: 'ns.example.test', rname: 'hostmaster.example.test', serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum },
});

t.test('serves answers with TTLs decremented by whole elapsed seconds until expiry', async (t) => {
  const c = clock();
  const cache = new DnsCache({ maxEntries: 10, now: c.now });
  const bytes = answer('www.example.test', DnsType.A, [
    { name: 'www.example.test', type: DnsType.CNAME, ttl: 300, target: 'edge.example.test' },
    { name: 'edge.example.test', type: DnsType.A, ttl: 60, address: '192.0.2.7' },
  ]);
  t.equal(cache.put('WWW.example.test.', DnsType.A, bytes), 60, 'kept for the smallest answer TTL');
  bytes.fill(0); // the cache holds its own copy
  c.advance(1500);
  const hit = cache.get('www.EXAMPLE.test', DnsType.A)!;
  const m = parseMessage(hit.bytes)!;
  t.same(m.answers.map((r) => [r.type, r.ttl]), [[DnsType.CNAME, 299], [DnsType.A, 59]]);
  t.equal(m.answers[1]!.address, '192.0.2.7');
  t.equal(hit.negative, false);
  t.equal(hit.remainingTtl, 59);
  t.equal(cache.get('www.example.test', DnsType.AAAA), null, 'keyed by type too');
  c.advance(58_400); // 59.9 s in: still fresh
  t.equal(parseMessage(cache.get('www.example.test', DnsType.A)!.bytes)!.answers[1]!.ttl, 1);
  c.advance(100); // 60 s: expired
  t.equal(cache.get('www.example.test', DnsType.A), null);
  t.same(cache.stats(), { entries: 0, hits: 2, misses: 2, inserts: 1, evictions: 0, expirations: 1, uncacheable: 0 });
});

t.test('minTtl and maxTtl clamp both the lifetime and the served TTLs', async (t) => {
  const c = clock();
  const cache = new DnsCache({ maxEntries: 10, minTtl: 30, maxTtl: 120, now: c.now });
  t.equal(cache.put('short.test', DnsType.A, answer('short.test', DnsType.A, [{ name: 'short.test', type: DnsType.A, ttl: 2, address: '192.0.2.1' }])), 30);
  t.equal(cache.put('long.test', DnsType.A, answer('long.test', DnsType.A, [{ name: 'long.test', type: DnsType.A, ttl: 86400, address: '192.0.2.2' }])), 120);
  c.advance(10_000);
  t.equal(parseMessage(cache.get('short.test', DnsType.A)!.bytes)!.answers[0]!.ttl, 20);
  t.equal(parseMessage(cache.get('long.test', DnsType.A)!.bytes)!.answers[0]!.ttl, 110);
  const zero = new DnsCache({ maxEntries: 10, now: c.now });
  t.equal(zero.put('zero.test', DnsType.A, answer('zero.test', DnsType.A, [{ name: 'zero.test', type: DnsType.A, ttl: 0, address: '192.0.2.3' }])), 0, 'TTL 0 is not cached');
});

t.test('negative caching (RFC 2308): NXDOMAIN and NODATA use min(SOA TTL, SOA MINIMUM)', async (t) => {
  const c = clock();
  const cache = new DnsCache({ maxEntries: 10, now: c.now });
  const nx = answer('gone.example.test', DnsType.A, [], DnsRcode.NxDomain, [soa(600, 45)]);
  t.equal(cache.put('gone.example.test', DnsType.A, nx), 45);
  const nodata = answer('v4only.example.test', DnsType.AAAA, [], DnsRcode.NoError, [soa(20, 3600)]);
  t.equal(cache.put('v4only.example.test', DnsType.AAAA, nodata), 20, 'the SOA record TTL can be the smaller');
  c.advance(5000);
  const hit = cache.get('gone.example.test', DnsType.A)!;
  t.equal(hit.negative, true);
  const m = parseMessage(hit.bytes)!;
  t.equal(m.rcode, DnsRcode.NxDomain);
  t.equal(m.authorities[0]!.ttl, 40, 'SOA TTL decremented from the negative TTL');
  t.equal(m.opt?.udpSize, 1232, 'OPT untouched');
  t.equal(parseMessage(cache.get('v4only.example.test', DnsType.AAAA)!.bytes)!.authorities[0]!.ttl, 15);
  c.advance(40_000);
  t.equal(cache.get('gone.example.test', DnsType.A), null, 'expired after 45 s');
  // Without an SOA a negative answer is not cached (RFC 2308 5).
  t.equal(cache.put('nosoa.test', DnsType.A, answer('nosoa.test', DnsType.A, [], DnsRcode.NxDomain)), 0);
  // negativeMaxTtl caps a generous SOA.
  const capped = new DnsCache({ maxEntries: 10, negativeMaxTtl: 10, now: c.now });
  t.equal(capped.put('gone.example.test', DnsType.A, nx), 10);
});

t.test('uncacheable answers: SERVFAIL, REFUSED, truncated, queries, garbage', async (t) => {
  const c = clock();
  const cache = new DnsCache({ maxEntries: 10, now: c.now });
  t.equal(cache.put('x.test', 1, answer('x.test', 1, [], DnsRcode.ServFail, [soa(60, 60)])), 0);
  t.equal(cache.put('x.test', 1, answer('x.test', 1, [], DnsRcode.Refused)), 0);
  const tc = encodeMessage({ id: 1, flags: 0x8380, questions: [{ name: 'x.test', type: 1 }], answers: [{ name: 'x.test', type: 1, ttl: 60, address: '192.0.2.1' }] });
  t.equal(cache.put('x.test', 1, tc), 0, 'TC set');
  t.equal(cache.put('x.test', 1, buildQuery({ id: 1, name: 'x.test', type: 1 })), 0, 'not a response');
  t.equal(cache.put('x.test', 1, Uint8Array.of(1, 2, 3)), 0);
  t.equal(cache.stats().uncacheable, 5);
  t.equal(cache.size, 0);
});

t.test('bounded by maxEntries with LRU eviction', async (t) => {
  const c = clock();
  const cache = new DnsCache({ maxEntries: 3, now: c.now });
  const put = (n: string): number => cache.put(n, DnsType.A, answer(n, DnsType.A, [{ name: n, type: DnsType.A, ttl: 300, address: '192.0.2.1' }]));
  put('a.test');
  put('b.test');
  put('c.test');
  t.ok(cache.get('a.test', DnsType.A), 'a used: b is now the oldest');
  put('d.test');
  t.equal(cache.size, 3);
  t.equal(cache.get('b.test', DnsType.A), null);
  t.ok(cache.get('a.test', DnsType.A));
  t.ok(cache.get('c.test', DnsType.A));
  t.ok(cache.get('d.test', DnsType.A));
  t.equal(cache.stats().evictions, 1);
  put('a.test'); // replacing an entry does not evict
  t.equal(cache.stats().evictions, 1);
  t.ok(cache.delete('a.test', DnsType.A));
  cache.clear();
  t.equal(cache.size, 0);
  const off = new DnsCache({ maxEntries: 0, now: c.now });
  t.equal(off.put('a.test', 1, answer('a.test', 1, [{ name: 'a.test', type: 1, ttl: 300, address: '192.0.2.1' }])), 0, 'maxEntries 0 disables the cache');
});
