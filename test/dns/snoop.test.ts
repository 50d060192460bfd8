import t from 'tap';
import { buildQuery, buildResponse, DnsType, parseMessage, type DnsMessage, type DnsRecordInit } from '../../src/dns/message.js';
import { DnsSnoop } from '../../src/dns/snoop.js';

function resp(name: string, type: number, answers: DnsRecordInit[], rcode = 0): DnsMessage {
  const q = parseMessage(buildQuery({ id: 1, name, type }))!;
  return parseMessage(buildResponse(q, { rcode, answers }))!;
}

t.test('follows CNAME chains back to the question name', async (t) => {
  let now = 0;
  const snoop = new DnsSnoop({ maxEntries: 100, minTtl: 0, now: () => now });
  const n = snoop.observe(
    resp('WWW.Shop.example', DnsType.A, [
      { name: 'www.shop.example', type: DnsType.CNAME, ttl: 300, target: 'shop.cdn.example' },
      { name: 'shop.cdn.example', type: DnsType.CNAME, ttl: 30, target: 'edge7.cdn.example' },
      { name: 'edge7.cdn.example', type: DnsType.A, ttl: 120, address: '203.0.113.7' },
      { name: 'edge7.cdn.example', type: DnsType.A, ttl: 120, address: '203.0.113.8' },
      // Not on the chain: an upstream cannot bind this address to the name.
      { name: 'unrelated.example', type: DnsType.A, ttl: 120, address: '198.51.100.1' },
    ]),
  );
  t.equal(n, 2);
  t.equal(snoop.lookup('203.0.113.7'), 'www.shop.example');
  t.equal(snoop.lookup('203.0.113.8'), 'www.shop.example');
  t.equal(snoop.lookup('198.51.100.1'), null);
  t.equal(snoop.stats().ignored, 1);
  now = 29_999;
  t.equal(snoop.lookup('203.0.113.7'), 'www.shop.example');
  now = 30_000;
  t.equal(snoop.lookup('203.0.113.7'), null, 'lifetime is the smallest TTL along the chain (30 s)');
});

t.test('AAAA, canonical address keys, latest answer wins, minTtl floor', async (t) => {
  let now = 0;
  const snoop = new DnsSnoop({ maxEntries: 100, now: () => now });
  snoop.observe(resp('a.example', DnsType.AAAA, [{ name: 'a.example', type: DnsType.AAAA, ttl: 1, address: '2001:db8::1' }]));
  t.equal(snoop.lookup('2001:0db8:0:0:0:0:0:1'), 'a.example');
  snoop.observe(resp('b.example', DnsType.AAAA, [{ name: 'b.example', type: DnsType.AAAA, ttl: 1, address: '2001:db8::1' }]));
  t.equal(snoop.lookup('2001:db8::1'), 'b.example');
  now = 59_000;
  t.equal(snoop.lookup('2001:db8::1'), 'b.example', 'kept 60 s by default even with TTL 1');
  now = 61_000;
  t.equal(snoop.lookup('2001:db8::1'), null);
  t.equal(snoop.lookup('garbage'), null);
});

t.test('ignores error answers, queries and CNAME loops; stays bounded', async (t) => {
  let now = 0;
  const snoop = new DnsSnoop({ maxEntries: 3, now: () => now });
  t.equal(snoop.observe(resp('x.example', 1, [{ name: 'x.example', type: 1, ttl: 60, address: '192.0.2.1' }], 3)), 0, 'NXDOMAIN');
  t.equal(snoop.observe(parseMessage(buildQuery({ id: 1, name: 'x.example', type: 1 }))!), 0, 'a query');
  const loop = resp('l.example', 1, [
    { name: 'l.example', type: DnsType.CNAME, ttl: 60, target: 'm.example' },
    { name: 'm.example', type: DnsType.CNAME, ttl: 60, target: 'l.example' },
    { name: 'm.example', type: DnsType.A, ttl: 60, address: '192.0.2.9' },
  ]);
  t.equal(snoop.observe(loop), 1, 'loop stops the walk; names seen so far still count');
  for (let i = 1; i <= 5; i++) snoop.observe(resp(`h${i}.example`, 1, [{ name: `h${i}.example`, type: 1, ttl: 60, address: `192.0.2.${i}` }]));
  t.equal(snoop.size, 3);
  t.equal(snoop.lookup('192.0.2.1'), null, 'oldest evicted');
  t.equal(snoop.lookup('192.0.2.5'), 'h5.example');
  t.equal(snoop.stats().evictions, 3);
});
