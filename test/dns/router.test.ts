/**
 * The name-based parts of sluice's DNS, without sockets: dns.rules routing
 * (src/dns/router.ts) with the main rules' domain conditions, the
 * dns.fakeIp.filter predicate, the hosts-file bootstrap (src/dns/hosts.ts),
 * the rate-limited upstream-failure log (src/dns/failure-log.ts) and the
 * fake-IP pool's change signal that makes the engine save it.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DnsRouter, fakeIpFilter, type UpstreamGroup } from '../../src/dns/router.js';
import { HostsFile, parseHosts } from '../../src/dns/hosts.js';
import { UpstreamFailureLog } from '../../src/dns/failure-log.js';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { buildQuery } from '../../src/dns/message.js';

function group(name: string, seen: string[]): UpstreamGroup {
  return {
    query: (q) => {
      seen.push(name);
      return Promise.resolve(q);
    },
    close: () => Promise.resolve(),
  };
}

t.test('dns.rules: the first matching rule picks the group, else default', async (t) => {
  const seen: string[] = [];
  const r = new DnsRouter(
    [
      { domainSuffix: ['corp.example'], upstream: 'corp' },
      { or: [{ domainKeyword: ['tracker'] }, { domainRegex: ['^ads[0-9]+\\.'] }], upstream: 'filter' },
      { ruleSet: ['lan'], upstream: 'corp' },
      { domain: ['exact.example'], upstream: 'default' },
    ],
    group('default', seen),
    new Map([
      ['corp', group('corp', seen)],
      ['filter', group('filter', seen)],
    ]),
    { lan: { type: 'domain', entries: ['home.arpa', 'full:router.lan'] } },
  );
  t.equal(r.groupFor('a.corp.example'), 'corp');
  t.equal(r.groupFor('CORP.EXAMPLE.'), 'corp', 'case and a trailing dot do not matter');
  t.equal(r.groupFor('x.tracker.test'), 'filter');
  t.equal(r.groupFor('ads12.example'), 'filter');
  t.equal(r.groupFor('nas.home.arpa'), 'corp', 'a rule-set suffix');
  t.equal(r.groupFor('router.lan'), 'corp', 'a rule-set full: entry');
  t.equal(r.groupFor('x.router.lan'), 'default');
  t.equal(r.groupFor('exact.example'), 'default');
  t.equal(r.groupFor('other.test'), 'default');
  await r.query(buildQuery({ id: 1, name: 'www.corp.example', type: 1 }));
  await r.query(buildQuery({ id: 2, name: 'www.other.test', type: 28 }));
  t.same(seen, ['corp', 'default'], 'queries go to the chosen group');
  t.same([...r.routed], [['corp', 1], ['default', 1]]);
});

t.test('dns.rules errors name dns.rules[N]', async (t) => {
  t.throws(() => new DnsRouter([{ domainRegex: ['('], upstream: 'default' }], group('d', []), new Map()), /^dns\.rules\[0\]\.domainRegex\[0\]/);
  t.throws(() => new DnsRouter([{ domain: ['x.test'], upstream: 'nope' }], group('d', []), new Map()), /dns\.rules\[0\]\.outbound: no outbound named "nope"/);
});

t.test('dns.fakeIp.filter: matching names are answered for real', async (t) => {
  t.equal(fakeIpFilter([]), null, 'no filter: no predicate');
  const fake = fakeIpFilter([{ domainSuffix: ['lan'] }, { and: [{ domainKeyword: ['time'] }, { not: { domain: ['faketime.test'] } }] }])!;
  t.equal(fake('printer.lan'), false);
  t.equal(fake('time.example'), false);
  t.equal(fake('faketime.test'), true);
  t.equal(fake('www.example'), true);
});

t.test('hosts file: first address per family, comments, reloaded on change', async (t) => {
  const m = parseHosts('# c\n192.0.2.1 doh.example alias.example # trailing\n2001:db8::1 doh.example\n192.0.2.9 doh.example\nbogus line\n::1\n');
  t.same(m.get('doh.example'), { v4: '192.0.2.1', v6: '2001:db8::1' });
  t.same(m.get('alias.example'), { v4: '192.0.2.1', v6: null });
  const dir = mkdtempSync(join(tmpdir(), 'sluice-hosts-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'hosts');
  const h = new HostsFile(file);
  t.equal(await h.lookup('doh.example'), null, 'a missing file holds nothing');
  writeFileSync(file, '192.0.2.1 DoH.Example\n');
  t.same(await h.lookup('doh.example.'), { address: '192.0.2.1', family: 4 });
  t.equal(await h.lookup('doh.example', 6), null);
  writeFileSync(file, '192.0.2.77 doh.example extra-bytes-so-the-size-changes\n');
  t.same(await h.lookup('doh.example'), { address: '192.0.2.77', family: 4 }, 're-read after an edit');
});

t.test('upstream failures: one warn line per upstream per interval, then the suppressed count', async (t) => {
  const lines: { obj: Record<string, unknown>; msg: string }[] = [];
  let now = 0;
  const log = new UpstreamFailureLog({ warn: (obj, msg) => lines.push({ obj: obj as Record<string, unknown>, msg }) }, 10_000, () => now);
  log.report('udp://192.0.2.53:53', 'no answer after 2 tries');
  for (let i = 0; i < 1000; i++) log.report('udp://192.0.2.53:53', 'no answer after 2 tries');
  log.report('https://dns.example/dns-query', 'HTTP 503');
  t.equal(lines.length, 2, 'one line per upstream');
  t.same(lines[0], { obj: { upstream: 'udp://192.0.2.53:53', reason: 'no answer after 2 tries' }, msg: 'DNS upstream failed' });
  now = 10_000;
  log.report('udp://192.0.2.53:53', 'recvmsg ECONNREFUSED');
  t.same(lines[2]!.obj, { upstream: 'udp://192.0.2.53:53', reason: 'recvmsg ECONNREFUSED', suppressed: 1000, intervalMs: 10_000 }, 'the next line says how many it stands for');
});

t.test('the fake-IP pool signals new mappings only', async (t) => {
  let changes = 0;
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/24', ipv6Range: 'fdfe:dcba:9876:1::/120', onChange: () => changes++ });
  pool.allocateIpv4('a.example');
  pool.allocateIpv4('a.example');
  pool.allocateIpv6('a.example');
  pool.lookup(pool.peek('a.example', 4)!);
  t.equal(changes, 2, 'a new v4 and a new v6 mapping; repeats and lookups change nothing');
  for (let i = 0; i < 300; i++) pool.allocateIpv4(`n${i}.example`);
  t.equal(changes, 302, 'recycling (the pool holds 254) is a change too');
});
