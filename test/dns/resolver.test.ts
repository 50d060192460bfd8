import dgram from 'node:dgram';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import t, { type Test } from 'tap';
import { Agent } from 'undici';
import { buildQuery, buildResponse, DnsRcode, DnsType, encodeMessage, frameTcp, parseMessage, TcpFrameReader } from '../../src/dns/message.js';
import { createResolver, DohResolver, ResolverChain, TcpResolver, UdpResolver } from '../../src/dns/resolver.js';
import { dohServer, freePort, startDnsmasq } from './servers.js';

const q = (name: string, type: number = DnsType.A, id = 0xabcd): Uint8Array => buildQuery({ id, name, type, ednsUdpSize: 1232 });

/** A UDP socket on 127.0.0.1 that calls `onQuery` for every datagram. */
async function udpServer(t: Test, onQuery: (msg: Buffer, reply: (b: Uint8Array) => void) => void): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((res) => s.bind(0, '127.0.0.1', res));
  s.on('message', (m, r) => onQuery(m, (b) => s.send(b, r.port, r.address)));
  t.teardown(() => s.close());
  return s.address().port;
}

t.test('UDP and TCP against a real dnsmasq', async (t) => {
  const dm = await startDnsmasq(t);
  let sockets = 0;
  let streams = 0;
  const udp = new UdpResolver({
    host: '127.0.0.1',
    port: dm.port,
    createUdpSocket: async (family) => {
      sockets++;
      return dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    },
  });
  const tcp = new TcpResolver({
    host: '127.0.0.1',
    port: dm.port,
    connect: (host, port) =>
      new Promise<Duplex>((res, rej) => {
        streams++;
        const s = net.connect({ host, port }, () => res(s));
        s.once('error', rej);
      }),
  });
  for (const r of [udp, tcp]) {
    const a = parseMessage(await r.query(q('foo.example.test')))!;
    t.equal(a.id, 0xabcd, `${r.name}: caller's id restored`);
    t.equal(a.rcode, DnsRcode.NoError);
    t.same(a.answers.map((x) => x.address), ['192.0.2.10']);
    const v6 = parseMessage(await r.query(q('v6.example.test', DnsType.AAAA, 7)))!;
    t.same(v6.answers.map((x) => x.address), ['2001:db8::10']);
    const chain = parseMessage(await r.query(q('alias.example.test')))!;
    t.same(chain.answers.map((x) => x.target ?? x.address), ['target.example.test', '192.0.2.20']);
    const txt = parseMessage(await r.query(q('txt.example.test', DnsType.TXT)))!;
    t.equal(Buffer.from(txt.answers[0]!.data).toString('latin1'), '\u000bhello world');
    const refused = parseMessage(await r.query(q('elsewhere.org')))!;
    t.equal(refused.rcode, DnsRcode.Refused, 'no upstream configured in dnsmasq');
  }
  t.equal(sockets, 5, 'one fresh UDP socket per query (fresh source port)');
  t.equal(streams, 5);
  // Concurrent queries each get their own answer.
  const names = Array.from({ length: 20 }, (_, i) => `n${i}.example.test`);
  const answers = await Promise.all(names.map((n, i) => (i % 2 ? udp : tcp).query(q(n, DnsType.A, i))));
  t.same(answers.map((a) => parseMessage(a)!.questions[0]!.name), names);
  t.same(answers.map((a) => parseMessage(a)!.id), names.map((_, i) => i));
});

t.test('UDP fails fast against a closed port (ICMP port unreachable -> ECONNREFUSED)', async (t) => {
  const port = await freePort();
  const r = new UdpResolver({ host: '127.0.0.1', port, timeoutMs: 5000, retries: 3 });
  const t0 = performance.now();
  await t.rejects(r.query(q('x.example.test')), { code: 'SLUICE_DNS_CONNECTION_REFUSED' });
  t.ok(performance.now() - t0 < 2000, 'well before the 5 s timeout');
  const tcp = new TcpResolver({ host: '127.0.0.1', port, timeoutMs: 5000 });
  await t.rejects(tcp.query(q('x.example.test')), { code: 'SLUICE_DNS_CONNECTION_REFUSED' });
});

t.test('UDP retries with fresh ids, then times out', async (t) => {
  const seen: number[] = [];
  const port = await udpServer(t, (m) => seen.push(parseMessage(m)!.id));
  let next = 100;
  const r = new UdpResolver({ host: '127.0.0.1', port, timeoutMs: 60, retries: 2, randomId: () => next++ });
  const t0 = performance.now();
  await t.rejects(r.query(q('x.example.test')), { code: 'SLUICE_DNS_TIMEOUT' });
  const took = performance.now() - t0;
  t.same(seen, [100, 101, 102], 'three tries, each with its own id');
  t.ok(took >= 170 && took < 2000, `took ${Math.round(took)} ms`);
  // The overall budget (from the chain) cuts retries short.
  seen.length = 0;
  const t1 = performance.now();
  await t.rejects(r.query(q('x.example.test'), { timeoutMs: 80 }), { code: 'SLUICE_DNS_TIMEOUT' });
  t.ok(performance.now() - t1 < 500);
  t.ok(seen.length >= 1 && seen.length <= 2, `a second try at 60 ms, none after the 80 ms budget (${seen.join()})`);
  const ac = new AbortController();
  const p = r.query(q('x.example.test'), { signal: ac.signal });
  ac.abort();
  await t.rejects(p, { code: 'SLUICE_DNS_ABORTED' });
});

t.test('UDP ignores answers that do not match id, QR or question', async (t) => {
  const port = await udpServer(t, (m, reply) => {
    const query = parseMessage(m)!;
    const good = buildResponse(query, { rcode: 0, answers: [{ name: query.questions[0]!.name, type: 1, ttl: 5, address: '192.0.2.99' }] });
    const wrongId = good.slice();
    wrongId[0] ^= 0xff;
    const otherName = encodeMessage({ id: query.id, flags: 0x8180, questions: [{ name: 'evil.example', type: 1 }], answers: [{ name: 'evil.example', type: 1, ttl: 5, address: '6.6.6.6' }] });
    const notResponse = m;
    reply(wrongId);
    reply(otherName);
    reply(notResponse);
    reply(Uint8Array.of(1, 2, 3));
    setTimeout(() => reply(good), 20);
  });
  const r = new UdpResolver({ host: '127.0.0.1', port, timeoutMs: 1000 });
  const a = parseMessage(await r.query(q('Mixed.Example.TEST')))!;
  t.same(a.answers.map((x) => x.address), ['192.0.2.99']);
  t.equal(r.mismatched, 4);
});

t.test('a truncated UDP answer is retried over TCP when a fallback is given', async (t) => {
  const dm = await startDnsmasq(t);
  const port = await udpServer(t, (m, reply) => {
    const out = buildResponse(parseMessage(m)!, { rcode: 0, tc: true });
    reply(out);
  });
  const withFallback = new UdpResolver({ host: '127.0.0.1', port, tcpFallback: new TcpResolver({ host: '127.0.0.1', port: dm.port }) });
  const a = parseMessage(await withFallback.query(q('big.example.test')))!;
  t.equal(a.tc, false);
  t.same(a.answers.map((x) => x.address), ['192.0.2.10']);
  const without = new UdpResolver({ host: '127.0.0.1', port });
  t.equal(parseMessage(await without.query(q('big.example.test')))!.tc, true);
  // From config: udp:// gets a TCP fallback to the same server.
  const fromConfig = createResolver(`udp://127.0.0.1:${dm.port}`);
  t.equal(fromConfig.name, `udp://127.0.0.1:${dm.port}`);
});

t.test('TCP: timeout when the server accepts but never answers; framing of several frames', async (t) => {
  const sockets: net.Socket[] = [];
  const silent = net.createServer((s) => sockets.push(s));
  await new Promise<void>((res) => silent.listen(0, '127.0.0.1', res));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  const r = new TcpResolver({ host: '127.0.0.1', port: (silent.address() as net.AddressInfo).port, timeoutMs: 100 });
  await t.rejects(r.query(q('x.test')), { code: 'SLUICE_DNS_TIMEOUT' });

  // A server that sends a stray frame first, then the answer split byte by byte.
  const chatty = net.createServer((s) => {
    const reader = new TcpFrameReader();
    s.on('data', (d) => {
      reader.push(d);
      const m = reader.next();
      if (m === null) return;
      const query = parseMessage(m)!;
      const stray = frameTcp(buildResponse(parseMessage(buildQuery({ id: query.id ^ 1, name: 'x.test', type: 1 }))!, { rcode: 0 }));
      const ans = frameTcp(buildResponse(query, { rcode: 0, answers: [{ name: query.questions[0]!.name, type: 1, ttl: 1, address: '192.0.2.55' }] }));
      s.write(stray);
      let i = 0;
      const drip = (): void => {
        if (i < ans.length) {
          s.write(ans.subarray(i, ++i));
          setImmediate(drip);
        }
      };
      drip();
    });
  });
  await new Promise<void>((res) => chatty.listen(0, '127.0.0.1', res));
  t.teardown(() => chatty.close());
  const c = new TcpResolver({ host: '127.0.0.1', port: (chatty.address() as net.AddressInfo).port });
  t.same(parseMessage(await c.query(q('x.test')))!.answers.map((x) => x.address), ['192.0.2.55']);
});

t.test('DoH (RFC 8484 POST) through an undici dispatcher to a TLS server forwarding to dnsmasq', async (t) => {
  const dm = await startDnsmasq(t);
  const seen: { method: string; type: string; id: number; alpn: string }[] = [];
  const { url, ca } = await dohServer(t, new UdpResolver({ host: '127.0.0.1', port: dm.port }), seen);
  const h2 = new Agent({ allowH2: true, connect: { ca } });
  const h1 = new Agent({ connect: { ca } });
  t.teardown(() => Promise.all([h2.close(), h1.close()]));
  const r = new DohResolver({ url: `${url}/dns-query`, dispatcher: h2 });
  const a = parseMessage(await r.query(q('doh.example.test', DnsType.A, 0x1234)))!;
  t.equal(a.id, 0x1234, 'id restored');
  t.same(a.answers.map((x) => x.address), ['192.0.2.10']);
  const v6 = parseMessage(await r.query(q('v6.example.test', DnsType.AAAA)))!;
  t.same(v6.answers.map((x) => x.address), ['2001:db8::10']);
  t.same(seen[0], { method: 'POST', type: 'application/dns-message', id: 0, alpn: '2.0' }, 'id 0 on the wire (RFC 8484 4.1), HTTP/2');
  const r1 = new DohResolver({ url: `${url}/dns-query`, dispatcher: h1 });
  t.equal(parseMessage(await r1.query(q('h1.example.test')))!.answers[0]!.address, '192.0.2.10');
  t.equal(seen[2]!.alpn, '1.1');
  await t.rejects(new DohResolver({ url: `${url}/status`, dispatcher: h2 }).query(q('x.example.test')), { code: 'SLUICE_DNS_HTTP_STATUS' });
  await t.rejects(new DohResolver({ url: `${url}/html`, dispatcher: h2 }).query(q('x.example.test')), { code: 'SLUICE_DNS_BAD_RESPONSE' });
  await t.rejects(new DohResolver({ url: `${url}/dns-query` }).query(q('x.example.test')), { code: 'SLUICE_DNS_NETWORK' }, 'self-signed cert refused without the dispatcher');
  t.throws(() => new DohResolver({ url: 'ftp://x/' }), { code: 'SLUICE_DNS_BAD_ARGUMENT' });
});

t.test('ResolverChain: order, failover, per-upstream counters, deadline', async (t) => {
  const dm = await startDnsmasq(t);
  const deadPort = await freePort();
  const sink = await udpServer(t, () => undefined);
  const servfail = await udpServer(t, (m, reply) => reply(buildResponse(parseMessage(m)!, { rcode: DnsRcode.ServFail })));
  const chain = new ResolverChain({
    resolvers: [
      new UdpResolver({ host: '127.0.0.1', port: deadPort, name: 'dead' }),
      new UdpResolver({ host: '127.0.0.1', port: sink, name: 'sink', timeoutMs: 1000 }),
      new UdpResolver({ host: '127.0.0.1', port: servfail, name: 'servfail' }),
      new TcpResolver({ host: '127.0.0.1', port: dm.port, name: 'dnsmasq-tcp' }),
    ],
    attemptTimeoutMs: 100,
    deadlineMs: 2000,
  });
  const a = parseMessage(await chain.query(q('chain.example.test')))!;
  t.same(a.answers.map((x) => x.address), ['192.0.2.10']);
  t.same(chain.stats(), [
    { name: 'dead', ok: 0, errors: { SLUICE_DNS_CONNECTION_REFUSED: 1 } },
    { name: 'sink', ok: 0, errors: { SLUICE_DNS_TIMEOUT: 1 } },
    { name: 'servfail', ok: 0, errors: { SLUICE_DNS_UPSTREAM_RCODE: 1 } },
    { name: 'dnsmasq-tcp', ok: 1, errors: {} },
  ]);

  // Only failures: the SERVFAIL answer is the best we have.
  const bad = new ResolverChain({
    resolvers: [new UdpResolver({ host: '127.0.0.1', port: servfail, name: 'servfail' }), new UdpResolver({ host: '127.0.0.1', port: deadPort, name: 'dead' })],
  });
  t.equal(parseMessage(await bad.query(q('x.test')))!.rcode, DnsRcode.ServFail);

  // Nothing answers: the deadline bounds the whole chain.
  const sinks = Array.from({ length: 5 }, (_, i) => new UdpResolver({ host: '127.0.0.1', port: sink, name: `sink${i}`, timeoutMs: 1000 }));
  const slow = new ResolverChain({ resolvers: sinks, attemptTimeoutMs: 100, deadlineMs: 250 });
  const t0 = performance.now();
  await t.rejects(slow.query(q('x.test')), { code: 'SLUICE_DNS_ALL_UPSTREAMS_FAILED' });
  const took = performance.now() - t0;
  t.ok(took >= 240 && took < 1500, `deadline respected (${Math.round(took)} ms)`);
  const st = slow.stats();
  t.equal(st[0]!.errors.SLUICE_DNS_TIMEOUT, 1);
  t.equal(st[1]!.errors.SLUICE_DNS_TIMEOUT, 1);
  t.same(st[2]!.errors, { SLUICE_DNS_DEADLINE: 1 }, 'third attempt cut short by the deadline');
  t.same(st[3]!.errors, {}, 'never tried');
  t.same(st[4]!.errors, {}, 'never tried');
  await t.rejects(chain.query(Uint8Array.of(1, 2, 3)), { code: 'SLUICE_DNS_BAD_ARGUMENT' });
  t.throws(() => new ResolverChain({ resolvers: [] }), { code: 'SLUICE_DNS_BAD_ARGUMENT' });
});

t.test('createResolver parses config addresses', async (t) => {
  t.equal(createResolver('udp://192.0.2.53').name, 'udp://192.0.2.53');
  t.ok(createResolver('udp://192.0.2.53:5353') instanceof UdpResolver);
  t.ok(createResolver('tcp://[2001:db8::53]:53') instanceof TcpResolver);
  t.equal(createResolver('tcp://[2001:db8::53]').name, 'tcp://[2001:db8::53]:53');
  t.ok(createResolver('https://dns.example/dns-query') instanceof DohResolver);
  t.throws(() => createResolver('udp://dns.example:53'), { code: 'SLUICE_DNS_BAD_ARGUMENT', message: /IP literal/ });
  t.throws(() => createResolver('quic://192.0.2.1'), { code: 'SLUICE_DNS_BAD_ARGUMENT', message: /scheme/ });
  t.throws(() => createResolver('not a url'), { code: 'SLUICE_DNS_BAD_ARGUMENT', message: /dns\.upstreams/ });
});
