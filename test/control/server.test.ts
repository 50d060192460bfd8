/**
 * The control API server on loopback: route table and path parameters,
 * 404/405/503, auth (header, ?token= on upgrades only), CORS preflight,
 * the WebSocket client cap, and a client that stops reading: its frames
 * are skipped, then it is closed, and nothing queues without bound.
 */
import t from 'tap';
import net from 'node:net';
import { WebSocket } from 'ws';
import { ApiServer, MAX_WS_CLIENTS, WS_CLOSE_BYTES } from '../../src/control/server.js';
import { ApiError, sendJson } from '../../src/control/http-util.js';

const SECRET = 'test-secret';

async function start(t: { teardown(fn: () => unknown): void }, stallMs = 500): Promise<{ server: ApiServer; base: string; port: number }> {
  const server = new ApiServer({ listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, secret: SECRET, stallMs });
  await server.listen();
  t.teardown(() => server.close());
  const a = server.boundAddress() as { port: number };
  return { server, base: `http://127.0.0.1:${a.port}`, port: a.port };
}

const auth = { Authorization: `Bearer ${SECRET}` };

t.test('routes, parameters, errors, auth, CORS', async (t) => {
  const { server, base } = await start(t);
  server.route('GET', '/things/:name', (req, res) => sendJson(res, 200, { name: req.params.name }));
  server.route('GET', '/open', (_req, res) => sendJson(res, 200, { open: true }), { public: true });
  server.route('POST', '/fail', () => {
    throw new ApiError(418, 'teapot');
  });
  server.route('GET', '/crash', () => {
    throw new Error('boom');
  });
  t.equal((await fetch(`${base}/things/x`, { headers: auth })).status, 503, 'before open(): 503');
  server.open();
  const r = await fetch(`${base}/things/${encodeURIComponent(encodeURIComponent('🚀 proxy 日本'))}`, { headers: auth });
  t.same(await r.json(), { name: '🚀 proxy 日本' }, 'names are percent-decoded (twice, as mihomo does)');
  t.equal(r.headers.get('access-control-allow-origin'), '*', 'CORS on every answer');
  t.equal((await fetch(`${base}/things/x`)).status, 401, 'no header: 401');
  t.equal((await fetch(`${base}/things/x`, { headers: { Authorization: 'Bearer nope' } })).status, 401, 'wrong secret: 401');
  t.equal((await fetch(`${base}/things/x`, { headers: { Authorization: `bearer   ${SECRET}` } })).status, 200, 'the scheme is case-insensitive');
  t.equal((await fetch(`${base}/things/x?token=${SECRET}`)).status, 401, '?token= is not taken on a plain request');
  t.equal((await fetch(`${base}/open`)).status, 200, 'a public route needs no secret');
  const nf = await fetch(`${base}/nope`, { headers: auth });
  t.same([nf.status, await nf.json()], [404, { message: 'Resource not found' }], '404 JSON');
  t.equal((await fetch(`${base}/nope`)).status, 401, 'an unknown path without the secret: 401, not 404');
  const na = await fetch(`${base}/things/x`, { method: 'DELETE', headers: auth });
  t.same([na.status, na.headers.get('allow')], [405, 'GET'], '405 with Allow');
  const tea = await fetch(`${base}/fail`, { method: 'POST', headers: auth });
  t.same([tea.status, await tea.json()], [418, { message: 'teapot' }], 'an ApiError is the answer');
  const crash = await fetch(`${base}/crash`, { headers: auth });
  t.same([crash.status, await crash.json()], [500, { message: 'internal error: boom' }], 'anything else is a 500, and the server goes on');
  t.equal(server.counters.errors, 1, 'counted');
  const pre = await fetch(`${base}/things/x`, { method: 'OPTIONS', headers: { Origin: 'https://d.example', 'Access-Control-Request-Private-Network': 'true' } });
  t.equal(pre.status, 204, 'preflight without credentials: 204');
  t.equal(pre.headers.get('access-control-allow-private-network'), 'true');
  t.match(pre.headers.get('access-control-allow-headers'), /Authorization/);
});

t.test('WebSocket: ?token= or the header, and at most MAX_WS_CLIENTS', async (t) => {
  const { server, port } = await start(t);
  server.ws('/hi', (ws) => ws.send('hi'));
  server.open();
  const open = (url: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket | null; status: number }> =>
    new Promise((resolve) => {
      const ws = new WebSocket(url, { headers });
      ws.once('message', () => resolve({ ws, status: 101 }));
      ws.once('unexpected-response', (_q, res) => resolve({ ws: null, status: res.statusCode ?? 0 }));
      ws.once('error', () => {});
    });
  t.equal((await open(`ws://127.0.0.1:${port}/hi`)).status, 401, 'no token: 401');
  t.equal((await open(`ws://127.0.0.1:${port}/hi?token=bad`)).status, 401, 'wrong ?token=: 401');
  t.equal((await open(`ws://127.0.0.1:${port}/hi`, auth)).status, 101, 'the header works');
  const clients: WebSocket[] = [];
  for (let i = clients.length; server.counters.wsClients < MAX_WS_CLIENTS; i++) {
    const c = await open(`ws://127.0.0.1:${port}/hi?token=${SECRET}`);
    t.equal(c.status, 101);
    clients.push(c.ws!);
    if (i > MAX_WS_CLIENTS + 2) break;
  }
  t.equal(server.counters.wsClients, MAX_WS_CLIENTS, `${MAX_WS_CLIENTS} clients open`);
  t.equal((await open(`ws://127.0.0.1:${port}/hi?token=${SECRET}`)).status, 503, 'one more: 503');
  t.equal(server.counters.wsRefused, 1, 'counted');
  for (const c of clients) c.close();
});

t.test('a client that stops reading misses frames, then is closed; the queue stays bounded', { timeout: 30_000 }, async (t) => {
  const { server, port } = await start(t, 500);
  const frame = 'x'.repeat(64 * 1024);
  let maxQueued = 0;
  let closed: () => void;
  const done = new Promise<void>((r) => (closed = r));
  server.ws('/flood', (ws) => {
    const timer = setInterval(() => {
      maxQueued = Math.max(maxQueued, ws.bufferedAmount);
      server.sendFrame(ws, frame);
    }, 1);
    ws.once('close', () => {
      clearInterval(timer);
      closed();
    });
  });
  server.open();
  // A raw client: the handshake, then it never reads again.
  const sock = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(`GET /flood?token=${SECRET} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  await new Promise<void>((r) => sock.once('data', () => r()));
  sock.pause();
  const started = Date.now();
  await done;
  t.comment(`closed after ${Date.now() - started} ms; frames skipped ${server.counters.wsFramesDropped}; most queued ${maxQueued} B`);
  t.equal(server.counters.wsClosedSlow, 1, 'the stalled client was closed');
  t.ok(server.counters.wsFramesDropped > 0, 'after frames were skipped for it');
  t.ok(maxQueued <= WS_CLOSE_BYTES + frame.length, `its queue never passed the bound (${maxQueued} B)`);
  sock.destroy();
});

t.test('mount: /ui redirects to /ui/ (keeping the query), /ui/ serves the index, no loop', async (t) => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'sluice-mount-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'index.html'), '<p>index</p>');
  writeFileSync(join(dir, 'app.js'), 'x=1');
  const { server, base } = await start(t);
  server.route('GET', '/things', (_req, res) => sendJson(res, 200, { things: true }));
  server.mount('/ui', dir);
  server.open();
  const r = await fetch(`${base}/ui?token=abc`, { redirect: 'manual' });
  t.same([r.status, r.headers.get('location')], [301, '/ui/?token=abc'], '/ui: 301 to /ui/ with the query');
  const r0 = await fetch(`${base}/ui`, { redirect: 'manual' });
  t.same([r0.status, r0.headers.get('location')], [301, '/ui/'], '/ui without a query: 301 to /ui/');
  const idx = await fetch(`${base}/ui/`, { redirect: 'manual' });
  t.same([idx.status, await idx.text()], [200, '<p>index</p>'], '/ui/ is the index, not the redirect again');
  const followed = await fetch(`${base}/ui?token=abc`);
  t.same([followed.status, await followed.text()], [200, '<p>index</p>'], 'following the redirect ends at the index');
  t.equal(await (await fetch(`${base}/ui/app.js`)).text(), 'x=1', 'an asset below the mount');
  t.equal((await fetch(`${base}/ui/missing.js`)).status, 404, 'a missing asset: 404');
  t.same(await (await fetch(`${base}/things/`, { headers: auth })).json(), { things: true }, 'other exact routes still ignore a trailing slash');
});
