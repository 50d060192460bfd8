/**
 * Direct outbound against loopback servers: byte-exact transfer both ways,
 * IPv6, domain targets, refused / timed-out / aborted connects, the marked
 * (SO_MARK) socket path, and UDP associations.
 */
import t from 'tap';
import type { Test } from 'tap';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { DirectOutbound } from '../../src/outbound/direct.js';
import { OutboundError } from '../../src/outbound/errors.js';
import { loadNative } from '../../src/link/native.js';
import { blob, echoServer, freePort, roundTrip, sha256, udpEchoServer } from './servers.js';

const MiB = 1024 * 1024;

t.test('1 MiB both ways over IPv4, byte-exact', async (t) => {
  const echo = await echoServer(t);
  const ob = new DirectOutbound({ name: 'direct' });
  const s = await ob.connectTcp({ host: '127.0.0.1', port: echo.port });
  t.teardown(() => s.destroy());
  const data = blob(MiB);
  t.equal(await roundTrip(s, data), sha256(data));
});

t.test('IPv6 target on ::1', async (t) => {
  const echo = await echoServer(t);
  const ob = new DirectOutbound({ name: 'direct' });
  const s = (await ob.connectTcp({ host: '::1', port: echo.port })) as net.Socket;
  t.teardown(() => s.destroy());
  t.equal(s.remoteAddress, '::1');
  t.equal(s.remoteFamily, 'IPv6');
  const data = blob(256 * 1024, 7);
  t.equal(await roundTrip(s, data), sha256(data));
});

t.test('domain target through the injected lookup', async (t) => {
  const echo = await echoServer(t);
  const asked: Array<[string, 4 | 6 | undefined]> = [];
  const ob = new DirectOutbound({
    name: 'direct',
    lookup: async (host, family) => {
      asked.push([host, family]);
      return { address: '127.0.0.1', family: 4 };
    },
  });
  const s = (await ob.connectTcp({ host: 'echo.test', port: echo.port, family: 4 })) as net.Socket;
  t.teardown(() => s.destroy());
  t.same(asked, [['echo.test', 4]]);
  t.equal(s.remoteAddress, '127.0.0.1');
  t.equal(await roundTrip(s, Buffer.from('hello')), sha256(Buffer.from('hello')));
});

t.test('unresolvable domain -> UNREACHABLE', async (t) => {
  const ob = new DirectOutbound({
    name: 'direct',
    lookup: async () => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND nx.test'), { code: 'ENOTFOUND' });
    },
  });
  await t.rejects(ob.connectTcp({ host: 'nx.test', port: 80 }), { code: 'SLUICE_OUTBOUND_UNREACHABLE', errno: 'ENOTFOUND', reaction: 'unreachable' });
});

t.test('closed port -> REFUSED with reaction rst', async (t) => {
  const port = await freePort();
  const ob = new DirectOutbound({ name: 'direct' });
  const started = Date.now();
  const err = await ob.connectTcp({ host: '127.0.0.1', port }).catch((e: unknown) => e);
  t.type(err, OutboundError);
  t.match(err, { code: 'SLUICE_OUTBOUND_REFUSED', errno: 'ECONNREFUSED', reaction: 'rst', outbound: 'direct' });
  t.ok(Date.now() - started < 1000, 'fails at once');
});

/**
 * A listener whose accept queue is full: Linux drops further SYNs
 * (tcp_abort_on_overflow = 0), so a connect hangs like one to a blackhole.
 * The listening fd is made by the native addon and never accepted from.
 */
async function fullBacklog(t: Test): Promise<number> {
  const native = loadNative();
  const port = await freePort();
  // Backlog 1 queues two connections (the kernel checks ack_backlog > backlog).
  const fd = native.createSocket({ family: 4, type: 'tcp', bind: { address: '127.0.0.1', port }, listen: 1 });
  const fillers: net.Socket[] = [];
  t.teardown(() => {
    for (const s of fillers) s.destroy();
    native.closeFd(fd);
  });
  for (let i = 0; i < 2; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    fillers.push(s);
    await new Promise<void>((r) => s.once('connect', () => r()));
  }
  return port;
}

t.test('connect timeout on a listener that never answers the SYN -> TIMEOUT', async (t) => {
  const port = await fullBacklog(t);
  const ob = new DirectOutbound({ name: 'direct', connectTimeoutMs: 300 });
  const started = Date.now();
  await t.rejects(ob.connectTcp({ host: '127.0.0.1', port }), { code: 'SLUICE_OUTBOUND_TIMEOUT', reaction: 'unreachable' });
  const took = Date.now() - started;
  t.ok(took >= 280 && took < 2000, `timed out after ${took} ms`);
});

t.test('abort signal -> ABORTED, the half-open socket is destroyed', async (t) => {
  const port = await fullBacklog(t);
  const ob = new DirectOutbound({ name: 'direct', connectTimeoutMs: 10_000 });
  const ac = new AbortController();
  const p = ob.connectTcp({ host: '127.0.0.1', port }, ac.signal);
  setImmediate(() => ac.abort(new Error('client went away')));
  await t.rejects(p, { code: 'SLUICE_OUTBOUND_ABORTED' });
  const pre = new AbortController();
  pre.abort();
  await t.rejects(ob.connectTcp({ host: '127.0.0.1', port }, pre.signal), { code: 'SLUICE_OUTBOUND_ABORTED' });
});

t.test('marked socket path: SO_MARK set on the upstream socket', async (t) => {
  const echo = await echoServer(t);
  const ob = new DirectOutbound({ name: 'direct', mark: 0x162 });
  t.ok(ob.marked);
  const s = (await ob.connectTcp({ host: '127.0.0.1', port: echo.port })) as net.Socket;
  t.teardown(() => s.destroy());
  const data = blob(128 * 1024, 3);
  t.equal(await roundTrip(s, data), sha256(data));
  // ss -e prints "fwmark:0x162" for a socket that carries the mark.
  const out = execFileSync('ss', ['-tnHe', 'state', 'established', `( sport = :${s.localPort} )`], { encoding: 'utf8' });
  t.match(out, /fwmark:0x162/, `ss shows the mark: ${out.trim()}`);
  // IPv6 through the marked path too.
  const s6 = (await ob.connectTcp({ host: '::1', port: echo.port })) as net.Socket;
  t.teardown(() => s6.destroy());
  t.equal(s6.remoteAddress, '::1');
});

t.test('marked socket with a missing interface fails with a typed error', async (t) => {
  const ob = new DirectOutbound({ name: 'direct', interface: 'nosuch0' });
  await t.rejects(ob.connectTcp({ host: '127.0.0.1', port: 9 }), { name: 'OutboundError', outbound: 'direct', code: 'SLUICE_OUTBOUND_UNREACHABLE', errno: 'ENODEV' });
});

t.test('UDP association: IPv4 and IPv6 destinations, replies from any source', async (t) => {
  const echo4 = await udpEchoServer(t, 4);
  const echo6 = await udpEchoServer(t, 6);
  const ob = new DirectOutbound({ name: 'direct' });
  const assoc = await ob.openUdp({ family: 4 });
  t.teardown(() => assoc.close());
  const got: Array<{ data: string; host: string; port: number }> = [];
  const two = new Promise<void>((resolve) => {
    assoc.onMessage((payload, src) => {
      got.push({ data: Buffer.from(payload).toString(), host: src.host, port: src.port });
      if (got.length === 2) resolve();
    });
  });
  assoc.send(Buffer.from('ping4'), { host: '127.0.0.1', port: echo4.port });
  assoc.send(Buffer.from('ping6'), { host: '::1', port: echo6.port });
  await two;
  got.sort((a, b) => a.data.localeCompare(b.data));
  t.same(got, [
    { data: 'echo:ping4', host: '127.0.0.1', port: echo4.port },
    { data: 'echo:ping6', host: '::1', port: echo6.port },
  ]);
  // Full cone: a host the session never sent to reaches it on the same port.
  const port4 = (assoc as unknown as { localPorts(): { v4: number } }).localPorts().v4;
  const other = dgram.createSocket('udp4');
  t.teardown(() => other.close());
  const fromStranger = new Promise<{ data: string; port: number }>((resolve) =>
    assoc.onMessage((payload, src) => resolve({ data: Buffer.from(payload).toString(), port: src.port })),
  );
  await new Promise<void>((r) => other.bind(0, '127.0.0.1', r));
  other.send('unsolicited', port4, '127.0.0.1');
  t.same(await fromStranger, { data: 'unsolicited', port: other.address().port });
  t.equal(assoc.stats.sent, 2);
  t.equal(assoc.stats.received, 3);
  let closed = 0;
  assoc.onClose(() => closed++);
  assoc.close();
  assoc.close();
  t.equal(closed, 1);
  t.ok(assoc.closed);
  assoc.send(Buffer.from('late'), { host: '127.0.0.1', port: echo4.port });
  t.equal(assoc.stats.sendDropped, 1);
});

t.test('UDP association through marked sockets', async (t) => {
  const echo4 = await udpEchoServer(t, 4);
  const ob = new DirectOutbound({ name: 'direct', mark: 0x162 });
  const assoc = await ob.openUdp({ family: 4 });
  t.teardown(() => assoc.close());
  const reply = new Promise<string>((resolve) => assoc.onMessage((p) => resolve(Buffer.from(p).toString())));
  assoc.send(Buffer.from('marked'), { host: '127.0.0.1', port: echo4.port });
  t.equal(await reply, 'echo:marked');
});

t.test('UDP to a domain resolves through the lookup', async (t) => {
  const echo4 = await udpEchoServer(t, 4);
  let lookups = 0;
  const ob = new DirectOutbound({
    name: 'direct',
    lookup: async () => {
      lookups++;
      return { address: '127.0.0.1', family: 4 };
    },
  });
  const assoc = await ob.openUdp();
  t.teardown(() => assoc.close());
  const next = (): Promise<string> => new Promise((r) => assoc.onMessage((p) => r(Buffer.from(p).toString())));
  let reply = next();
  assoc.send(Buffer.from('a'), { host: 'echo.test', port: echo4.port });
  t.equal(await reply, 'echo:a');
  reply = next();
  assoc.send(Buffer.from('b'), { host: 'echo.test', port: echo4.port });
  t.equal(await reply, 'echo:b');
  t.equal(lookups, 1, 'the second datagram used the cached address');
  t.equal(echo4.seen.length, 2);
});

t.test('half-close is preserved: the upstream FIN does not end our sending side', async (t) => {
  let received = 0;
  let gotAll!: (n: number) => void;
  const all = new Promise<number>((r) => (gotAll = r));
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.end('server done');
    s.on('data', (d: Buffer) => (received += d.length));
    s.on('end', () => gotAll(received));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    srv.close();
  });
  const ob = new DirectOutbound({ name: 'direct' });
  const s = await ob.connectTcp({ host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port });
  const text: Buffer[] = [];
  s.on('data', (d: Buffer) => text.push(d));
  await new Promise<void>((r) => s.once('end', r));
  t.equal(Buffer.concat(text).toString(), 'server done');
  t.ok(s.writable, 'still writable after the peer FIN');
  s.end(blob(100_000, 5));
  t.equal(await all, 100_000, 'the server got everything sent after its FIN');
  s.destroy();
});
