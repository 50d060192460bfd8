/**
 * SOCKS5 CONNECT against microsocks on loopback (with and without
 * RFC 1929 auth), plus a scripted server for the cases microsocks cannot
 * produce: replies split into single bytes with payload glued behind them,
 * and protocol violations.
 */
import t from 'tap';
import type { Test } from 'tap';
import net from 'node:net';
import { Socks5Outbound } from '../../src/outbound/socks5.js';
import { OutboundConfigError } from '../../src/outbound/errors.js';
import { blob, echoServer, freePort, roundTrip, sha256, startMicrosocks } from './servers.js';

const MiB = 1024 * 1024;
const AUTH = { user: 'sluice', pass: 's3cret-pass' };

t.test('microsocks without auth', async (t) => {
  const echo = await echoServer(t);
  const ms = await startMicrosocks(t);
  const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port: ms.port });

  await t.test('1 MiB both ways to an IPv4 target, byte-exact', async (t) => {
    const s = await ob.connectTcp({ host: '127.0.0.1', port: echo.port });
    t.teardown(() => s.destroy());
    const data = blob(MiB, 11);
    t.equal(await roundTrip(s, data), sha256(data));
  });

  await t.test('domain target (ATYP 3) resolved by the proxy', async (t) => {
    const s = await ob.connectTcp({ host: 'localhost', port: echo.port });
    t.teardown(() => s.destroy());
    const data = blob(64 * 1024, 12);
    t.equal(await roundTrip(s, data), sha256(data));
  });

  await t.test('IPv6 target (ATYP 4)', async (t) => {
    const s = await ob.connectTcp({ host: '::1', port: echo.port });
    t.teardown(() => s.destroy());
    t.equal(await roundTrip(s, Buffer.from('over v6')), sha256(Buffer.from('over v6')));
  });

  await t.test('closed destination -> PROXY_REFUSED with the reply code', async (t) => {
    const closed = await freePort();
    const err = await ob.connectTcp({ host: '127.0.0.1', port: closed }).catch((e: unknown) => e);
    t.match(err, { code: 'SLUICE_OUTBOUND_PROXY_REFUSED', replyCode: 5, reaction: 'rst' });
    t.match((err as Error).message, /connection refused \(REP 5\)/);
  });

  await t.test('unresolvable domain -> PROXY_REFUSED (microsocks answers REP 1 for a failed lookup)', async (t) => {
    const err = await ob.connectTcp({ host: 'nonexistent.invalid', port: 80 }).catch((e: unknown) => e);
    t.match(err, { code: 'SLUICE_OUTBOUND_PROXY_REFUSED', replyCode: 1, reaction: 'rst' });
  });

  await t.test('credentials against a server without auth: it picks NO_AUTH', async (t) => {
    const withCreds = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port: ms.port, username: 'x', password: 'y' });
    const s = await withCreds.connectTcp({ host: '127.0.0.1', port: echo.port });
    t.teardown(() => s.destroy());
    t.equal(await roundTrip(s, Buffer.from('x')), sha256(Buffer.from('x')));
  });
});

t.test('microsocks with username/password (RFC 1929)', async (t) => {
  const echo = await echoServer(t);
  const ms = await startMicrosocks(t, AUTH);

  await t.test('right password', async (t) => {
    const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port: ms.port, username: AUTH.user, password: AUTH.pass });
    const s = await ob.connectTcp({ host: '127.0.0.1', port: echo.port });
    t.teardown(() => s.destroy());
    const data = blob(256 * 1024, 13);
    t.equal(await roundTrip(s, data), sha256(data));
  });

  await t.test('wrong password -> AUTH', async (t) => {
    const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port: ms.port, username: AUTH.user, password: 'wrong' });
    await t.rejects(ob.connectTcp({ host: '127.0.0.1', port: echo.port }), { code: 'SLUICE_OUTBOUND_AUTH', reaction: 'rst' });
  });

  await t.test('no credentials configured -> AUTH (no acceptable method)', async (t) => {
    const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port: ms.port });
    await t.rejects(ob.connectTcp({ host: '127.0.0.1', port: echo.port }), {
      code: 'SLUICE_OUTBOUND_AUTH',
      message: /requires authentication/,
    });
  });
});

t.test('proxy not listening -> REFUSED at once', async (t) => {
  const port = await freePort();
  const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port });
  const started = Date.now();
  await t.rejects(ob.connectTcp({ host: '192.0.2.1', port: 80 }), { code: 'SLUICE_OUTBOUND_REFUSED', errno: 'ECONNREFUSED' });
  t.ok(Date.now() - started < 1000);
});

/**
 * A scripted SOCKS5 server. `script` gets the accepted socket and a reader
 * of exact byte counts, and plays the server side.
 */
async function scripted(t: Test, script: (s: net.Socket, read: (n: number) => Promise<Buffer>) => Promise<void>): Promise<number> {
  const socks = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    let want = 0;
    let wake: (() => void) | null = null;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (wake !== null && buf.length >= want) wake();
    });
    const read = async (n: number): Promise<Buffer> => {
      if (buf.length < n) {
        want = n;
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
      const out = buf.subarray(0, n);
      buf = buf.subarray(n);
      return out;
    };
    script(s, read).catch(() => s.destroy());
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        srv.close(() => r());
      }),
  );
  return (srv.address() as net.AddressInfo).port;
}

/** Writes bytes one at a time, each in its own segment (TCP_NODELAY and a turn of the event loop between). */
async function dribble(s: net.Socket, bytes: Buffer): Promise<void> {
  s.setNoDelay(true);
  for (const b of bytes) {
    s.write(Buffer.of(b));
    await new Promise((r) => setImmediate(r));
  }
}

t.test('replies split into single bytes, payload glued behind the reply', async (t) => {
  const port = await scripted(t, async (s, read) => {
    t.same(await read(4), Buffer.from('05020002', 'hex'), 'greeting offers NO_AUTH and USER/PASS');
    await dribble(s, Buffer.from('0502', 'hex'));
    const ulen = (await read(2))[1]!;
    const user = await read(ulen);
    const plen = (await read(1))[0]!;
    const pass = await read(plen);
    t.equal(user.toString(), 'u');
    t.equal(pass.toString(), 'p');
    await dribble(s, Buffer.from('01', 'hex'));
    s.write(Buffer.from('00', 'hex'));
    const req = await read(4 + 1 + 'target.example'.length + 2);
    t.same(req, Buffer.concat([Buffer.from('05010003', 'hex'), Buffer.of(14), Buffer.from('target.example'), Buffer.from('0050', 'hex')]));
    // A domain BND.ADDR, delivered a byte at a time; the last byte travels with the first payload bytes.
    const reply = Buffer.concat([Buffer.from('05000003', 'hex'), Buffer.of(4), Buffer.from('bind'), Buffer.from('1f90', 'hex')]);
    await dribble(s, reply.subarray(0, reply.length - 1));
    s.write(Buffer.concat([reply.subarray(reply.length - 1), Buffer.from('server speaks first')]));
    s.on('data', (d) => s.write(d));
  });
  const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port, username: 'u', password: 'p' });
  const s = await ob.connectTcp({ host: 'target.example', port: 80 });
  t.teardown(() => s.destroy());
  const first = await new Promise<Buffer>((resolve) => s.once('data', resolve));
  t.equal(first.toString(), 'server speaks first', 'bytes behind the reply are not lost');
  t.equal(await roundTrip(s, Buffer.from('and echoes')), sha256(Buffer.from('and echoes')));
});

t.test('greeting reply, auth status, CONNECT reply and payload all in one segment', async (t) => {
  const port = await scripted(t, async (s, read) => {
    await read(3);
    // We answer before reading the request: legal for a pipelining-tolerant client, and it stresses exact reads.
    s.write(Buffer.concat([Buffer.from('0500', 'hex'), Buffer.from('050000017f0000010050', 'hex'), Buffer.from('HELLO')]));
    await read(10);
  });
  const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port });
  const s = await ob.connectTcp({ host: '10.1.2.3', port: 80 });
  t.teardown(() => s.destroy());
  const first = await new Promise<Buffer>((resolve) => s.once('data', resolve));
  t.equal(first.toString(), 'HELLO');
});

t.test('protocol violations -> PROTOCOL', async (t) => {
  const cases: Array<[string, Buffer]> = [
    ['SOCKS4 answer to the greeting', Buffer.from('0400', 'hex')],
    ['method we did not offer', Buffer.from('0502', 'hex')],
    ['bad ATYP in the reply', Buffer.concat([Buffer.from('0500', 'hex'), Buffer.from('05000009', 'hex'), Buffer.alloc(8)])],
    ['closed inside the reply', Buffer.concat([Buffer.from('0500', 'hex'), Buffer.from('05000001c000', 'hex')])],
  ];
  for (const [what, bytes] of cases) {
    const port = await scripted(t, async (s, read) => {
      await read(3);
      s.end(bytes);
    });
    const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port });
    await t.rejects(ob.connectTcp({ host: '10.1.2.3', port: 80 }), { code: 'SLUICE_OUTBOUND_PROTOCOL' }, what);
  }
});

t.test('REP codes map to reactions', async (t) => {
  for (const [rep, reaction] of [
    [1, 'rst'],
    [2, 'rst'],
    [3, 'unreachable'],
    [4, 'unreachable'],
    [5, 'rst'],
    [6, 'unreachable'],
    [7, 'rst'],
    [8, 'rst'],
  ] as const) {
    const port = await scripted(t, async (s, read) => {
      await read(3);
      s.write(Buffer.from('0500', 'hex'));
      await read(10);
      s.end(Buffer.from(`050${rep}00010000000000000`, 'hex'));
    });
    const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port });
    await t.rejects(ob.connectTcp({ host: '10.1.2.3', port: 80 }), { code: 'SLUICE_OUTBOUND_PROXY_REFUSED', replyCode: rep, reaction }, `REP ${rep}`);
  }
});

t.test('a proxy that accepts but never answers -> TIMEOUT', async (t) => {
  const port = await scripted(t, async () => {});
  const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port, connectTimeoutMs: 200 });
  await t.rejects(ob.connectTcp({ host: '10.1.2.3', port: 80 }), { code: 'SLUICE_OUTBOUND_TIMEOUT' });
  const ac = new AbortController();
  const p = ob.connectTcp({ host: '10.1.2.3', port: 80 }, ac.signal);
  setImmediate(() => ac.abort());
  await t.rejects(p, { code: 'SLUICE_OUTBOUND_ABORTED' });
});

t.test('config and target validation', async (t) => {
  t.throws(() => new Socks5Outbound({ name: 'p', server: '127.0.0.1', port: 1080, username: 'u' }), OutboundConfigError);
  t.throws(() => new Socks5Outbound({ name: 'p', server: '127.0.0.1', port: 1080, username: 'u'.repeat(256), password: 'p' }), {
    code: 'SLUICE_OUTBOUND_CONFIG',
    field: 'outbounds[p].username',
  });
  t.throws(() => new Socks5Outbound({ name: 'p', server: '127.0.0.1', port: 0 }), { code: 'SLUICE_OUTBOUND_CONFIG', field: 'outbounds[p].port' });
  const ob = new Socks5Outbound({ name: 'p', server: '127.0.0.1', port: 1080 });
  await t.rejects(ob.connectTcp({ host: 'a'.repeat(256), port: 80 }), { code: 'SLUICE_OUTBOUND_UNREACHABLE' });
  await t.rejects(ob.openUdp(), { code: 'SLUICE_OUTBOUND_UNSUPPORTED' });
});
