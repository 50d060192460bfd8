/**
 * Outbound groups against real proxies on loopback: microsocks as the live
 * member, a port nobody listens on as the dead one, a delaying relay of the
 * test's own in front of a second microsocks as the slow one, a node HTTP
 * server as destination and health-check URL. Strategy corner cases are
 * unit-tested with explicit member states.
 */
import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { createOutbounds, chainOf, OutboundGroup, SelectionStore, type OutboundConfig } from '../../src/outbound/index.js';
import { GroupRegistry } from '../../src/outbound/group-registry.js';
import { httpGet } from '../../src/outbound/http-get.js';
import { consistentHashOrder, fallbackOrder, roundRobinOrder, urltestOrder, urltestPick } from '../../src/outbound/group-strategy.js';
import { freePort, startDanted, startMicrosocks, tempDir, udpEchoServer } from './servers.js';
import { startDelayRelay } from '../fixtures/delay-relay.js';

const CHECK = { url: '', interval: 3600, timeout: 3000, tolerance: 50, lazy: true };

async function webServer(t: { teardown(fn: () => void | Promise<void>): void }): Promise<number> {
  const srv = http.createServer((req, res) => {
    if (req.url === '/204') {
      res.writeHead(204).end();
    } else if (req.url === '/chunked') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('hello ');
      res.end('chunks');
    } else {
      res.writeHead(200, { 'content-length': '5' }).end('hello');
    }
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }));
  return (srv.address() as net.AddressInfo).port;
}

async function fetchThrough(stream: Duplex, port: number): Promise<string> {
  stream.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
  let out = '';
  for await (const c of stream) out += (c as Buffer).toString();
  return out;
}

t.test('strategies: live members first, tolerance, consistent hash, round robin', async (t) => {
  const up = (d: number | null) => ({ alive: true, delayMs: d });
  const down = { alive: false, delayMs: null };
  t.same(fallbackOrder([down, up(null), down, up(null)]), [1, 3, 0, 2], 'fallback: live in list order, then the dead');
  t.equal(urltestPick([up(100), up(80)], 0, 50), 0, 'urltest keeps the current pick within the tolerance');
  t.equal(urltestPick([up(100), up(40)], 0, 50), 1, 'and switches past it');
  t.equal(urltestPick([down, up(400)], 0, 50), 1, 'a dead pick is left at once');
  t.equal(urltestPick([up(null), up(null)], -1, 50), 0, 'nothing measured yet: the first');
  t.same(urltestOrder([up(100), down, up(30)], 0), [0, 2, 1], 'urltest dial order: pick, other live by delay, dead');
  const names = ['a', 'b', 'c', 'd'];
  const all = names.map(() => up(null));
  const home = new Map<string, number>();
  for (let i = 0; i < 200; i++) home.set(`host${i}`, consistentHashOrder(all, names, `host${i}`)[0]!);
  const spread = new Set(home.values());
  t.equal(spread.size, 4, 'consistent hash spreads destinations over every member');
  const withoutB = all.map((m, i) => (i === 1 ? down : m));
  let moved = 0;
  for (const [h, m] of home) {
    const now = consistentHashOrder(withoutB, names, h)[0]!;
    if (m !== 1 && now !== m) moved++;
    if (m === 1) t.not(now, 1, 'a dead member gets no destination');
  }
  t.equal(moved, 0, 'a member dying moves only its own destinations');
  t.same(roundRobinOrder([up(null), down, up(null)], 2), [2, 0, 1], 'round robin starts at the counter, skips the dead to the end');
});

t.test('http GET through an outbound: head only, Content-Length body, chunked body', async (t) => {
  const port = await webServer(t);
  const direct = createOutbounds([{ name: 'direct', type: 'direct' }]).get('direct')!;
  const head = await httpGet(direct, `http://127.0.0.1:${port}/204`, { timeoutMs: 3000, maxBytes: 0 });
  t.equal(head.status, 204);
  t.ok(head.headMs >= 0);
  const body = await httpGet(direct, `http://127.0.0.1:${port}/x`, { timeoutMs: 3000, maxBytes: 100 });
  t.equal(body.body.toString(), 'hello');
  const chunked = await httpGet(direct, `http://127.0.0.1:${port}/chunked`, { timeoutMs: 3000, maxBytes: 100 });
  t.equal(chunked.body.toString(), 'hello chunks', 'chunked decoded');
  await t.rejects(httpGet(direct, `http://127.0.0.1:${port}/x`, { timeoutMs: 3000, maxBytes: 2 }), /larger than 2 bytes/, 'the body bound holds');
});

t.test('fallback: a dead first member is marked down by one dial and never waited on again', async (t) => {
  const port = await webServer(t);
  const live = await startMicrosocks(t);
  const deadPort = await freePort();
  const events: string[] = [];
  const obs = createOutbounds(
    [
      { name: 'dead', type: 'socks5', server: '127.0.0.1', port: deadPort },
      { name: 'live', type: 'socks5', server: '127.0.0.1', port: live.port },
      { name: 'fb', type: 'fallback', outbounds: ['dead', 'live'], check: { ...CHECK, url: `http://127.0.0.1:${port}/204` }, strategy: 'consistent-hash' },
    ],
    { groupEvents: { memberState: (g, m, alive, why) => events.push(`${g}/${m} ${alive ? 'up' : 'down'}: ${why}`) } },
  );
  const fb = obs.get('fb') as OutboundGroup;
  const s1 = await fb.connectTcp({ host: '127.0.0.1', port });
  t.same(chainOf(s1), ['fb', 'live'], 'the flow went through the live member');
  t.match(await fetchThrough(s1, port), /^HTTP\/1\.1 200[\s\S]*hello$/, 'and carried the request');
  t.equal(events.length, 1, 'one state change');
  t.match(events[0], /^fb\/dead down: dial failed/, 'the dead member is down after one failed dial');
  const before = Date.now();
  const s2 = await fb.connectTcp({ host: '127.0.0.1', port });
  t.same(chainOf(s2), ['fb', 'live']);
  s2.destroy();
  t.equal(events.length, 1, 'the next flow did not dial the dead member again');
  t.comment(`second dial ${Date.now() - before} ms`);
  t.equal(fb.info().now, 'live');
  await fb.checkAll();
  const info = fb.info();
  t.match(info.members, [{ name: 'dead', alive: false, delayMs: null }, { name: 'live', alive: true }], 'health check: dead stays down, live measured');
  t.ok(info.members[1]!.delayMs! > 0, `live delay ${info.members[1]!.delayMs} ms`);
});

t.test('urltest picks the faster proxy; a nested fallback reports the whole chain', async (t) => {
  const port = await webServer(t);
  const fastProxy = await startMicrosocks(t);
  const slowProxy = await startMicrosocks(t);
  const relayPort = await freePort();
  const relay = await startDelayRelay('127.0.0.1', relayPort, '127.0.0.1', slowProxy.port, 150);
  t.teardown(() => new Promise<void>((r) => relay.close(() => r())));
  const check = { ...CHECK, url: `http://127.0.0.1:${port}/204` };
  const obs = createOutbounds([
    { name: 'slow', type: 'socks5', server: '127.0.0.1', port: relayPort },
    { name: 'fast', type: 'socks5', server: '127.0.0.1', port: fastProxy.port },
    { name: 'ut', type: 'urltest', outbounds: ['slow', 'fast'], check, strategy: 'consistent-hash' },
    { name: 'outer', type: 'fallback', outbounds: ['ut'], check, strategy: 'consistent-hash' },
  ]);
  const ut = obs.get('ut') as OutboundGroup;
  t.equal(ut.info().now, 'slow', 'before any check: the first member');
  await ut.checkAll();
  const m = ut.info().members;
  t.comment(`delays: slow ${m[0]!.delayMs} ms, fast ${m[1]!.delayMs} ms`);
  t.ok(m[0]!.delayMs! > m[1]!.delayMs!, 'the relay made one slower');
  t.equal(ut.info().now, 'fast', 'urltest moved to the faster member');
  const s = await (obs.get('outer') as OutboundGroup).connectTcp({ host: '127.0.0.1', port });
  t.same(chainOf(s), ['outer', 'ut', 'fast'], 'group -> group -> leaf');
  t.match(await fetchThrough(s, port), /hello$/);
  const reg = new GroupRegistry(obs);
  const through = await reg.delay('outer', check.url, 3000);
  t.ok(through.ok, 'a check through the outer group travels its chain');
  t.same(reg.groups().map((g) => g.name), ['ut', 'outer']);

  // A delay test made by the control API feeds the same health: a failure
  // through `fast` marks it down in every group that has it, and moves the
  // urltest pick; a success through it, recorded in `ut` alone, brings it back.
  t.equal(reg.record('fast', { ok: false, delayMs: null, error: 'Timeout' }), 1, 'recorded in the one group with fast as a member');
  t.match(ut.info().members[1], { name: 'fast', alive: false }, 'fast is down');
  t.equal(ut.info().now, 'slow', 'urltest left the dead member');
  t.equal(reg.record('fast', { ok: true, delayMs: 1, error: null }, 'ut'), 1, 'recorded in ut when named');
  t.equal(reg.record('fast', { ok: true, delayMs: 1, error: null }, 'outer'), 0, 'outer has no member fast: nothing recorded');
  t.match(ut.info().members[1], { name: 'fast', alive: true, delayMs: 1 }, 'fast is up with the measured delay');
  t.equal(ut.info().now, 'fast', 'and the pick again');
});

t.test('select: the choice is stored and wins at the next start unless the config default changed', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'groups.json');
  const cfg: OutboundConfig[] = [
    { name: 'a', type: 'direct' as const },
    { name: 'b', type: 'reject' as const },
    { name: 'pick', type: 'select' as const, outbounds: ['a', 'b'], check: CHECK, strategy: 'consistent-hash' as const },
  ];
  const g1 = createOutbounds(cfg, { selections: new SelectionStore(file) }).get('pick') as OutboundGroup;
  t.equal(g1.info().now, 'a', 'no stored choice, no default: the first member');
  t.equal(g1.action, 'connect');
  g1.select('b');
  t.equal(g1.action, 'reject', 'a select pointing at reject rejects');
  t.ok(existsSync(file), 'the choice is written');
  t.match(JSON.parse(readFileSync(file, 'utf8')), { version: 1, selected: { pick: { selected: 'b', configDefault: null } } });
  const g2 = createOutbounds(cfg, { selections: new SelectionStore(file) }).get('pick') as OutboundGroup;
  t.equal(g2.info().now, 'b', 'restart: the stored choice');
  const g3 = createOutbounds([cfg[0]!, cfg[1]!, { name: 'pick', type: 'select', outbounds: ['a', 'b'], check: CHECK, strategy: 'consistent-hash', default: 'a' }], { selections: new SelectionStore(file) }).get('pick') as OutboundGroup;
  t.equal(g3.info().now, 'a', 'a default edited since then wins');
  t.throws(() => g2.select('zz'), /no member "zz"/);
  const fb = createOutbounds([cfg[0]!, { name: 'f', type: 'fallback', outbounds: ['a'], check: CHECK, strategy: 'consistent-hash' }]).get('f') as OutboundGroup;
  t.throws(() => fb.select('a'), /only select groups/);
});

t.test('createOutbounds refuses a cycle and an unknown member (backstop behind the config checks)', async (t) => {
  t.throws(
    () =>
      createOutbounds([
        { name: 'x', type: 'fallback', outbounds: ['y'], check: CHECK, strategy: 'consistent-hash' },
        { name: 'y', type: 'fallback', outbounds: ['x'], check: CHECK, strategy: 'consistent-hash' },
      ]),
    /cycle/,
  );
  t.throws(() => createOutbounds([{ name: 'x', type: 'select', outbounds: ['nope'], check: CHECK, strategy: 'consistent-hash' }]), /outbounds\[0\]\.outbounds\[0\]: no outbound named "nope"/);
});

t.test('UDP through a fallback group: a dead SOCKS member is passed over for danted; a TCP-only member is skipped', async (t) => {
  const dante = await startDanted(t);
  const echo = await udpEchoServer(t);
  const deadPort = await freePort();
  const obs = createOutbounds([
    { name: 'tcponly', type: 'http', server: '127.0.0.1', port: deadPort },
    { name: 'dead', type: 'socks5', server: '127.0.0.1', port: deadPort, udp: true },
    { name: 'dante', type: 'socks5', server: '127.0.0.1', port: dante.port, udp: true },
    { name: 'fb', type: 'fallback', outbounds: ['tcponly', 'dead', 'dante'], check: CHECK, strategy: 'consistent-hash' },
  ]);
  const fb = obs.get('fb') as OutboundGroup;
  t.ok(fb.supportsUdp, 'a group carries UDP when a member does');
  const assoc = await fb.openUdp({ family: 4 });
  t.teardown(() => assoc.close());
  t.same(chainOf(assoc), ['fb', 'dante'], 'the association went through danted');
  const reply = new Promise<string>((resolve) => assoc.onMessage((p) => resolve(Buffer.from(p).toString())));
  assoc.send(Buffer.from('ping'), { host: '127.0.0.1', port: echo.port });
  t.equal(await reply, 'echo:ping', 'a datagram made the round trip');
  t.match(fb.info().members, [{ name: 'tcponly', alive: true }, { name: 'dead', alive: false }, { name: 'dante', alive: true }], 'only the dead SOCKS member was marked down');
});
