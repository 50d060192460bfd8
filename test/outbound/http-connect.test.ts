/**
 * HTTP CONNECT outbound against tinyproxy on loopback (ConnectPort limits,
 * BasicAuth), plus a scripted proxy for what tinyproxy does not do: bytes
 * glued behind the 200, IPv6 authority form, a proxy that never answers.
 */
import t from 'tap';
import type { Test } from 'tap';
import net from 'node:net';
import { HttpConnectOutbound, authorityOf } from '../../src/outbound/http-connect.js';
import { blob, echoServer, freePort, roundTrip, sha256, startTinyproxy } from './servers.js';

const MiB = 1024 * 1024;
const AUTH = { user: 'sluice', pass: 'tiny-pass' };

t.test('tinyproxy without auth', async (t) => {
  const echo = await echoServer(t);
  const tp = await startTinyproxy(t, { connectPorts: [echo.port] });
  t.teardown(() => {
    if (!t.passing()) t.comment(tp.output());
  });
  const ob = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port: tp.port });

  await t.test('1 MiB both ways, byte-exact', async (t) => {
    const s = await ob.connectTcp({ host: '127.0.0.1', port: echo.port });
    t.teardown(() => s.destroy());
    const data = blob(MiB, 21);
    t.equal(await roundTrip(s, data), sha256(data));
  });

  await t.test('concurrent tunnels do not wait for each other', async (t) => {
    const streams = await Promise.all([0, 1, 2, 3].map(() => ob.connectTcp({ host: '127.0.0.1', port: echo.port })));
    t.teardown(() => streams.forEach((s) => s.destroy()));
    const sums = await Promise.all(streams.map((s, i) => roundTrip(s, blob(32 * 1024, 100 + i))));
    t.same(sums, [0, 1, 2, 3].map((i) => sha256(blob(32 * 1024, 100 + i))));
  });

  await t.test('IPv6 target ([::1]:port)', async (t) => {
    const s = await ob.connectTcp({ host: '::1', port: echo.port });
    t.teardown(() => s.destroy());
    t.equal(await roundTrip(s, Buffer.from('v6 through tinyproxy')), sha256(Buffer.from('v6 through tinyproxy')));
  });

  await t.test('port not in ConnectPort -> PROXY_REFUSED with status 403', async (t) => {
    const other = await freePort();
    await t.rejects(ob.connectTcp({ host: '127.0.0.1', port: other }), { code: 'SLUICE_OUTBOUND_PROXY_REFUSED', status: 403, reaction: 'rst' });
  });

  await t.test('closed destination -> PROXY_REFUSED (tinyproxy answers 500)', async (t) => {
    // No ConnectPort lines: every port is allowed, so tinyproxy tries the closed port itself.
    const tp2 = await startTinyproxy(t, { connectPorts: [] });
    const closed = await freePort();
    const ob2 = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port: tp2.port });
    const err = await ob2.connectTcp({ host: '127.0.0.1', port: closed }).catch((e: unknown) => e);
    t.match(err, { code: 'SLUICE_OUTBOUND_PROXY_REFUSED' });
    t.comment(`tinyproxy status for a refused destination: ${(err as { status?: number }).status}`);
    t.ok(((err as { status: number }).status ?? 0) >= 400);
  });
});

t.test('tinyproxy with BasicAuth', async (t) => {
  const echo = await echoServer(t);
  const tp = await startTinyproxy(t, { connectPorts: [echo.port], auth: AUTH });

  await t.test('right credentials', async (t) => {
    const ob = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port: tp.port, username: AUTH.user, password: AUTH.pass });
    const s = await ob.connectTcp({ host: '127.0.0.1', port: echo.port });
    t.teardown(() => s.destroy());
    const data = blob(128 * 1024, 22);
    t.equal(await roundTrip(s, data), sha256(data));
  });

  await t.test('wrong credentials -> AUTH (tinyproxy 1.11 answers 401)', async (t) => {
    const ob = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port: tp.port, username: AUTH.user, password: 'nope' });
    await t.rejects(ob.connectTcp({ host: '127.0.0.1', port: echo.port }), { code: 'SLUICE_OUTBOUND_AUTH', status: 401 });
  });

  await t.test('no credentials -> AUTH (407)', async (t) => {
    const ob = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port: tp.port });
    await t.rejects(ob.connectTcp({ host: '127.0.0.1', port: echo.port }), { code: 'SLUICE_OUTBOUND_AUTH', status: 407 });
  });
});

t.test('proxy not listening -> REFUSED at once', async (t) => {
  const port = await freePort();
  const ob = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port });
  const started = Date.now();
  await t.rejects(ob.connectTcp({ host: '192.0.2.1', port: 443 }), { code: 'SLUICE_OUTBOUND_REFUSED', errno: 'ECONNREFUSED' });
  t.ok(Date.now() - started < 1000);
});

/** A scripted proxy: collects the request head, then `answer` plays the rest. */
async function scripted(t: Test, answer: (s: net.Socket, head: string) => void): Promise<number> {
  const socks = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    let head = '';
    const onData = (d: Buffer): void => {
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      s.off('data', onData);
      answer(s, head.slice(0, end + 4));
    };
    s.on('data', onData);
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

t.test('request form, and bytes glued behind the 200 reach the stream', async (t) => {
  let seen = '';
  const port = await scripted(t, (s, head) => {
    seen = head;
    s.write('HTTP/1.1 200 Connection established\r\nProxy-Agent: test\r\n\r\nSERVER-FIRST');
    s.on('data', (d) => s.write(d));
  });
  const ob = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port, username: 'Aladdin', password: 'open sesame' });
  const s = await ob.connectTcp({ host: '2001:db8::1', port: 8443 });
  t.teardown(() => s.destroy());
  const lines = seen.split('\r\n');
  t.equal(lines[0], 'CONNECT [2001:db8::1]:8443 HTTP/1.1');
  t.ok(lines.includes('host: [2001:db8::1]:8443'), 'Host is the target authority');
  // RFC 7617 §2 example credentials.
  t.ok(lines.includes('proxy-authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=='), 'Basic credentials');
  const first = await new Promise<Buffer>((resolve) => s.once('data', resolve));
  t.equal(first.toString(), 'SERVER-FIRST');
  t.equal(await roundTrip(s, Buffer.from('echo me')), sha256(Buffer.from('echo me')));
});

t.test('non-2xx statuses and garbage', async (t) => {
  for (const [status, code, reaction] of [
    [502, 'SLUICE_OUTBOUND_PROXY_REFUSED', 'rst'],
    [504, 'SLUICE_OUTBOUND_PROXY_REFUSED', 'unreachable'],
    [407, 'SLUICE_OUTBOUND_AUTH', 'rst'],
  ] as const) {
    const port = await scripted(t, (s) => s.end(`HTTP/1.1 ${status} Nope\r\nContent-Length: 4\r\n\r\nnope`));
    const ob = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port });
    await t.rejects(ob.connectTcp({ host: 'example.com', port: 443 }), { code, status, reaction }, `status ${status}`);
  }
  const port = await scripted(t, (s) => s.end('SSH-2.0-OpenSSH_9.2\r\n'));
  const ob = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port });
  await t.rejects(ob.connectTcp({ host: 'example.com', port: 443 }), { code: 'SLUICE_OUTBOUND_PROTOCOL' }, 'not HTTP');
});

t.test('a proxy that never answers -> TIMEOUT; abort -> ABORTED', async (t) => {
  const port = await scripted(t, () => {});
  const ob = new HttpConnectOutbound({ name: 'corp', server: '127.0.0.1', port, connectTimeoutMs: 200 });
  await t.rejects(ob.connectTcp({ host: 'example.com', port: 443 }), { code: 'SLUICE_OUTBOUND_TIMEOUT' });
  const ac = new AbortController();
  const p = ob.connectTcp({ host: 'example.com', port: 443 }, ac.signal);
  setImmediate(() => ac.abort());
  await t.rejects(p, { code: 'SLUICE_OUTBOUND_ABORTED' });
});

t.test('authority form', async (t) => {
  t.equal(authorityOf('example.com', 443), 'example.com:443');
  t.equal(authorityOf('192.0.2.1', 80), '192.0.2.1:80');
  t.equal(authorityOf('::1', 8080), '[::1]:8080');
  t.throws(() => new HttpConnectOutbound({ name: 'c', server: '127.0.0.1', port: 3128, username: 'a:b', password: 'x' }), {
    code: 'SLUICE_OUTBOUND_CONFIG',
  });
});
