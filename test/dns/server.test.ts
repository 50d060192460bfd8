import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { DnsCache } from '../../src/dns/cache.js';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { buildQuery, buildResponse, DnsRcode, DnsType, encodeMessage, frameTcp, parseMessage, TcpFrameReader, type DnsRecordInit } from '../../src/dns/message.js';
import { ResolverChain, UdpResolver } from '../../src/dns/resolver.js';
import { DnsHijack, type DnsUpstream } from '../../src/dns/server.js';
import { DnsSnoop } from '../../src/dns/snoop.js';
import { startDnsmasq } from './servers.js';

const run = promisify(execFile);

/** A scripted upstream that answers from a table and counts queries. */
class FakeUpstream implements DnsUpstream {
  calls: string[] = [];
  fail = false;
  gate: Promise<void> | null = null;
  constructor(private readonly table: Record<string, DnsRecordInit[]>) {}
  async query(q: Uint8Array): Promise<Uint8Array> {
    const m = parseMessage(q)!;
    const key = `${m.questions[0]!.name.toLowerCase()}/${m.questions[0]!.type}`;
    this.calls.push(key);
    if (this.gate) await this.gate;
    if (this.fail) throw new Error('upstream down');
    const answers = this.table[key];
    if (answers === undefined) return buildResponse(m, { rcode: DnsRcode.NxDomain });
    return buildResponse(m, { rcode: 0, answers });
  }
}

const TXT_BIG = new Uint8Array(1 + 255).fill(0x61);
TXT_BIG[0] = 255;

function setup(mode: 'fake-ip' | 'real-ip', poolOpts: { ipv6Range?: string } = {}) {
  let now = 0;
  const clock = (): number => now;
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/15', exclude: ['198.18.0.1'], ...poolOpts });
  const upstream = new FakeUpstream({
    'mx.example.test/15': [{ name: 'mx.example.test', type: DnsType.MX, ttl: 300, data: Uint8Array.from([0, 10, 0]) }],
    'real.example.test/1': [
      { name: 'real.example.test', type: DnsType.CNAME, ttl: 300, target: 'edge.example.test' },
      { name: 'edge.example.test', type: DnsType.A, ttl: 60, address: '203.0.113.9' },
    ],
    '9.113.0.203.in-addr.arpa/12': [{ name: '9.113.0.203.in-addr.arpa', type: DnsType.PTR, ttl: 60, target: 'edge.example.test' }],
    'big.example.test/16': Array.from({ length: 4 }, () => ({ name: 'big.example.test', type: DnsType.TXT, ttl: 60, data: TXT_BIG })),
  });
  const snoop = new DnsSnoop({ maxEntries: 100, now: clock });
  const hijack = new DnsHijack({
    mode,
    pool,
    cache: new DnsCache({ maxEntries: 100, now: clock }),
    upstream,
    snoop,
    shouldFake: (n) => !n.toLowerCase().endsWith('real.example.test'),
  });
  return { hijack, pool, upstream, snoop, advance: (ms: number) => (now += ms) };
}

const ask = async (h: DnsHijack, name: string, type: number, o: { id?: number; edns?: number | null; transport?: 'udp' | 'tcp' } = {}) => {
  const out = await h.handle(buildQuery({ id: o.id ?? 0x5151, name, type, ednsUdpSize: o.edns ?? null }), o.transport ?? 'udp');
  return { bytes: out!, m: parseMessage(out!)! };
};

t.test('fake-ip: A gets a stable fake address with TTL 1; PTR maps it back', async (t) => {
  const { hijack, upstream } = setup('fake-ip');
  const a = await ask(hijack, 'Foo.Example.test', DnsType.A, { id: 0x1234 });
  t.equal(a.m.id, 0x1234);
  t.equal(a.m.rcode, DnsRcode.NoError);
  t.equal(a.m.rd, true);
  t.equal(a.m.ra, true);
  t.same(a.m.answers.map((r) => [r.name, r.type, r.ttl, r.address]), [['Foo.Example.test', DnsType.A, 1, '198.18.0.2']]);
  t.equal((await ask(hijack, 'foo.example.test', DnsType.A)).m.answers[0]!.address, '198.18.0.2', 'stable');
  const ptr = await ask(hijack, '2.0.18.198.in-addr.arpa', DnsType.PTR);
  t.same(ptr.m.answers.map((r) => r.target), ['foo.example.test']);
  t.equal((await ask(hijack, '77.0.18.198.in-addr.arpa', DnsType.PTR)).m.rcode, DnsRcode.NxDomain, 'unmapped fake address');
  t.same(upstream.calls, [], 'nothing forwarded');
  const any = await ask(hijack, 'foo.example.test', DnsType.ANY);
  t.equal(any.m.answers[0]!.address, '198.18.0.2', 'ANY: the fake A (RFC 8482 subset)');
});

t.test('fake-ip: AAAA is NODATA without an IPv6 range, fake with one; HTTPS/SVCB NODATA', async (t) => {
  const v4 = setup('fake-ip');
  const aaaa = await ask(v4.hijack, 'foo.example.test', DnsType.AAAA);
  t.equal(aaaa.m.rcode, DnsRcode.NoError);
  t.equal(aaaa.m.answers.length, 0);
  const https = await ask(v4.hijack, 'foo.example.test', DnsType.HTTPS);
  t.equal(https.m.answers.length, 0);
  t.equal(https.m.rcode, DnsRcode.NoError);
  const dual = setup('fake-ip', { ipv6Range: 'fc00::/18' });
  t.equal((await ask(dual.hijack, 'foo.example.test', DnsType.AAAA)).m.answers[0]!.address, 'fc00::1');
  const ptr6 = await ask(dual.hijack, '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.c.f.ip6.arpa', DnsType.PTR);
  t.equal(ptr6.m.answers[0]!.target, 'foo.example.test');
  t.same(v4.upstream.calls, []);
  t.equal(v4.hijack.stats().fakeNoData, 2);
});

t.test('fake-ip: other types, excluded names and non-fake PTR go upstream through the cache', async (t) => {
  const { hijack, upstream, advance } = setup('fake-ip');
  const mx = await ask(hijack, 'MX.example.test', DnsType.MX, { id: 1 });
  t.equal(mx.m.id, 1);
  t.equal(mx.m.questions[0]!.name, 'MX.example.test', "client's spelling kept");
  t.equal(mx.m.answers[0]!.ttl, 300);
  advance(10_000);
  const again = await ask(hijack, 'mx.example.test', DnsType.MX, { id: 2 });
  t.equal(again.m.id, 2);
  t.equal(again.m.answers[0]!.ttl, 290, 'served from cache with the TTL decremented');
  t.same(upstream.calls, ['mx.example.test/15'], 'one upstream query');
  const real = await ask(hijack, 'real.example.test', DnsType.A);
  t.same(real.m.answers.map((r) => r.address ?? r.target), ['edge.example.test', '203.0.113.9'], 'shouldFake=false: real answer');
  const ptr = await ask(hijack, '9.113.0.203.in-addr.arpa', DnsType.PTR);
  t.equal(ptr.m.answers[0]!.target, 'edge.example.test');
  const nx = await ask(hijack, 'nothing.example.test', DnsType.TXT);
  t.equal(nx.m.rcode, DnsRcode.NxDomain);
  t.equal(hijack.stats().cacheHits, 1);
});

t.test('real-ip: forwards, caches, snoops CNAME chains, keeps EDNS choices per client', async (t) => {
  const { hijack, upstream, snoop } = setup('real-ip');
  const a = await ask(hijack, 'real.example.test', DnsType.A, { edns: 1232 });
  t.same(a.m.answers.map((r) => r.address ?? r.target), ['edge.example.test', '203.0.113.9']);
  t.equal(a.m.opt?.udpSize, 1232);
  t.equal(snoop.lookup('203.0.113.9'), 'real.example.test');
  const b = await ask(hijack, 'REAL.example.test', DnsType.A, { edns: null });
  t.equal(b.m.opt, null, 'no OPT to a client that sent none');
  t.equal(b.m.questions[0]!.name, 'REAL.example.test');
  t.same(upstream.calls, ['real.example.test/1']);
  // In real-ip mode even A for "fake-able" names is forwarded.
  await ask(hijack, 'mx.example.test', DnsType.MX);
  t.equal(upstream.calls.length, 2);
});

t.test('upstream failure -> SERVFAIL; concurrent identical queries are coalesced; inflight is bounded', async (t) => {
  const { hijack, upstream } = setup('real-ip');
  let open!: () => void;
  upstream.gate = new Promise<void>((res) => (open = res));
  const p = Promise.all([ask(hijack, 'real.example.test', 1, { id: 1 }), ask(hijack, 'real.example.test', 1, { id: 2 }), ask(hijack, 'Real.Example.Test', 1, { id: 3 })]);
  await new Promise((r) => setImmediate(r));
  open();
  const rs = await p;
  t.same(rs.map((r) => r.m.id), [1, 2, 3]);
  t.same(rs.map((r) => r.m.answers.length), [2, 2, 2]);
  t.equal(rs[2]!.m.questions[0]!.name, 'Real.Example.Test');
  t.equal(upstream.calls.length, 1);
  t.equal(hijack.stats().coalesced, 2);
  upstream.gate = null;
  upstream.fail = true;
  const sf = await ask(hijack, 'down.example.test', DnsType.TXT);
  t.equal(sf.m.rcode, DnsRcode.ServFail);
  t.equal(hijack.stats().servFail, 1);

  const tiny = new DnsHijack({ mode: 'real-ip', cache: new DnsCache({ maxEntries: 1, now: () => 0 }), upstream, maxInflight: 1 });
  upstream.fail = false;
  upstream.gate = new Promise<void>((res) => (open = res));
  const first = ask(tiny, 'real.example.test', 1);
  const second = await ask(tiny, 'mx.example.test', DnsType.MX);
  t.equal(second.m.rcode, DnsRcode.ServFail, 'over the inflight cap');
  open();
  t.equal((await first).m.rcode, DnsRcode.NoError);
});

t.test('size limits: TC over UDP without EDNS, full answer over TCP or with EDNS', async (t) => {
  const { hijack } = setup('real-ip');
  const udp = await ask(hijack, 'big.example.test', DnsType.TXT);
  t.equal(udp.m.tc, true);
  t.equal(udp.m.answers.length, 0);
  t.equal(udp.m.questions[0]!.name, 'big.example.test');
  t.ok(udp.bytes.length <= 512);
  const tcp = await ask(hijack, 'big.example.test', DnsType.TXT, { transport: 'tcp' });
  t.equal(tcp.m.tc, false);
  t.equal(tcp.m.answers.length, 4);
  const edns = await ask(hijack, 'big.example.test', DnsType.TXT, { edns: 4096 });
  t.equal(edns.m.tc, false, '~1.1 kB fits the 1232 cap');
  t.equal(edns.m.answers.length, 4);
  const small = await ask(hijack, 'big.example.test', DnsType.TXT, { edns: 600 });
  t.equal(small.m.tc, true);
  t.equal(small.m.opt?.udpSize, 1232, 'OPT kept in the truncated reply');
  t.equal(hijack.stats().truncated, 2);
});

t.test('malformed and unsupported queries: FORMERR, NOTIMP, REFUSED or dropped, never a throw', async (t) => {
  const { hijack } = setup('fake-ip');
  const h = (b: Uint8Array) => hijack.handle(b);
  t.equal(await h(new Uint8Array(0)), null);
  t.equal(await h(Uint8Array.of(0x12, 0x34, 1, 0, 0, 1)), null, 'shorter than a header');
  const formerr = parseMessage((await h(Uint8Array.from(Buffer.from('abcd01000001000000000000c00c00010001', 'hex'))))!)!;
  t.equal(formerr.id, 0xabcd);
  t.equal(formerr.rcode, DnsRcode.FormErr);
  t.equal(formerr.rd, true);
  const resp = buildResponse(parseMessage(buildQuery({ id: 9, name: 'x.test', type: 1 }))!, { rcode: 0 });
  t.equal(await h(resp), null, 'responses are not answered (no reflection loops)');
  const two = encodeMessage({ id: 5, flags: 0x0100, questions: [{ name: 'a.test', type: 1 }, { name: 'b.test', type: 1 }] });
  t.equal(parseMessage((await h(two))!)!.rcode, DnsRcode.FormErr);
  const status = encodeMessage({ id: 6, flags: 2 << 11, questions: [] });
  t.equal(parseMessage((await h(status))!)!.rcode, DnsRcode.NotImp);
  const chaos = buildQuery({ id: 7, name: 'version.bind', type: DnsType.TXT, class: 3 });
  t.equal(parseMessage((await h(chaos))!)!.rcode, DnsRcode.Refused);
  t.same(
    (({ dropped, formErr, notImp, refused }) => ({ dropped, formErr, notImp, refused }))(hijack.stats()),
    { dropped: 3, formErr: 2, notImp: 1, refused: 1 },
  );
  t.throws(() => new DnsHijack({ mode: 'fake-ip', cache: new DnsCache({ maxEntries: 1, now: () => 0 }), upstream: new FakeUpstream({}) }));
});

/** Serves a DnsHijack on UDP and TCP at 127.0.0.1 on one port. */
async function serve(t: Test, hijack: DnsHijack): Promise<number> {
  const tcp = net.createServer((s) => {
    const reader = new TcpFrameReader();
    s.on('data', (d) => {
      reader.push(d);
      for (let m = reader.next(); m !== null; m = reader.next()) {
        void hijack.handle(m.slice(), 'tcp').then((out) => {
          if (out !== null) s.write(frameTcp(out));
        });
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((res) => tcp.listen(0, '127.0.0.1', res));
  const port = (tcp.address() as net.AddressInfo).port;
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((res, rej) => {
    udp.once('error', rej);
    udp.bind(port, '127.0.0.1', res);
  });
  udp.on('message', (m, r) => {
    void hijack.handle(m, 'udp').then((out) => {
      if (out !== null) udp.send(out, r.port, r.address);
    });
  });
  t.teardown(() => {
    udp.close();
    tcp.close();
  });
  return port;
}

async function dig(port: number, ...args: string[]): Promise<{ status: string; answer: string[] }> {
  const { stdout } = await run('dig', [`@127.0.0.1`, '-p', String(port), '+time=2', '+tries=1', '+noall', '+comments', '+answer', ...args]);
  const status = /status: ([A-Z]+)/.exec(stdout)?.[1] ?? 'none';
  const answer = stdout
    .split('\n')
    .filter((l) => l.length > 0 && !l.startsWith(';'))
    .map((l) => l.split(/\s+/).filter((_, i) => i !== 1).join(' '));
  return { status, answer };
}

t.test('end to end with dig: DnsHijack served on UDP/TCP, upstream a real dnsmasq', async (t) => {
  const dm = await startDnsmasq(t);
  const chain = new ResolverChain({ resolvers: [new UdpResolver({ host: '127.0.0.1', port: dm.port })] });
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/15', exclude: ['198.18.0.1'] });
  const snoop = new DnsSnoop({ maxEntries: 100, now: () => performance.now() });
  const fake = new DnsHijack({ mode: 'fake-ip', pool, cache: new DnsCache({ maxEntries: 100, now: () => performance.now() }), upstream: chain });
  const real = new DnsHijack({ mode: 'real-ip', cache: new DnsCache({ maxEntries: 100, now: () => performance.now() }), upstream: chain, snoop });
  const fp = await serve(t, fake);
  const rp = await serve(t, real);

  t.same(await dig(fp, 'foo.example.test', 'A'), { status: 'NOERROR', answer: ['foo.example.test. IN A 198.18.0.2'] });
  t.same(await dig(fp, '+tcp', 'foo.example.test', 'A'), { status: 'NOERROR', answer: ['foo.example.test. IN A 198.18.0.2'] }, 'TCP, same mapping');
  t.same(await dig(fp, 'v6.example.test', 'AAAA'), { status: 'NOERROR', answer: [] }, 'no IPv6 range: NODATA');
  t.same(await dig(fp, '-x', '198.18.0.2'), { status: 'NOERROR', answer: ['2.0.18.198.in-addr.arpa. IN PTR foo.example.test.'] });
  t.same(await dig(fp, 'txt.example.test', 'TXT'), { status: 'NOERROR', answer: ['txt.example.test. IN TXT "hello world"'] }, 'forwarded');
  t.equal(pool.lookup('198.18.0.2'), 'foo.example.test');

  t.same(await dig(rp, 'alias.example.test', 'A'), {
    status: 'NOERROR',
    answer: ['alias.example.test. IN CNAME target.example.test.', 'target.example.test. IN A 192.0.2.20'],
  });
  t.same(await dig(rp, '+tcp', 'v6.example.test', 'AAAA'), { status: 'NOERROR', answer: ['v6.example.test. IN AAAA 2001:db8::10'] });
  t.equal(snoop.lookup('192.0.2.20'), 'alias.example.test');
  t.equal(snoop.lookup('2001:db8::10'), 'v6.example.test');
  t.same(await dig(rp, 'elsewhere.org', 'A'), { status: 'REFUSED', answer: [] }, "dnsmasq's REFUSED passes through (only upstream)");
});
