/**
 * HttpL7 on loopback, without the stack or namespaces: a net server stands
 * in for the engine (it reads the first bytes, pauses, and hands the socket
 * to HttpL7.serve as the engine does after sniffing), an http server on
 * 127.0.0.1 is the origin. Checks upstream keep-alive reuse across client
 * connections, header rewriting, rule routing, streamed bodies both ways,
 * 502 on a dead upstream, 400 on garbage, 501 on WebSocket and CONNECT, and
 * one access-log line per request.
 */
import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { HttpL7 } from '../../src/engine/http-l7.js';
import { createOutbound } from '../../src/outbound/index.js';
import type { Outbound } from '../../src/outbound/types.js';
import type { RelayResult } from '../../src/engine/relay.js';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  port: number;
  bodyBytes: number;
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

t.test('HttpL7 forwards requests over pooled upstream connections', async (t) => {
  const seen: Seen[] = [];
  const upstreamConns: number[] = [];
  const origin = http.createServer((req, res) => {
    let bodyBytes = 0;
    req.on('data', (c: Buffer) => (bodyBytes += c.length));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, port: req.socket.remotePort!, bodyBytes });
      const body = JSON.stringify({ port: req.socket.remotePort, bodyBytes }) + '\n';
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'yes', connection: 'keep-alive' });
      res.end(body);
    });
  });
  origin.on('connection', (s: net.Socket) => upstreamConns.push(s.remotePort!));
  const originPort = await listen(origin);
  // A port with nothing listening: a "dead" upstream.
  const probe = net.createServer();
  const deadPort = await listen(probe);
  await new Promise((r) => probe.close(r));

  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const log = pino({ level: 'info', base: undefined }, sink);
  const outbounds = new Map<string, Outbound>([
    ['direct', createOutbound({ name: 'direct', type: 'direct' })],
    ['dead', createOutbound({ name: 'dead', type: 'socks5', server: '127.0.0.1', port: deadPort })],
    ['block', createOutbound({ name: 'block', type: 'reject' })],
  ]);
  const l7 = new HttpL7(
    {
      enabled: true,
      ports: [80],
      accessLog: true,
      maxHeaderBytes: 4096,
      rules: [
        { method: ['GET'], pathPrefix: '/dead', outbound: 'dead', setHeaders: {}, removeHeaders: [] },
        { pathPrefix: '/blocked', outbound: 'block', setHeaders: {}, removeHeaders: [] },
        { pathRegex: '^/h', outbound: null, setHeaders: { 'x-via': 'sluice' }, removeHeaders: ['cookie'] },
      ],
    },
    outbounds,
    log,
  );
  const flows: RelayResult[] = [];
  const front = net.createServer({ allowHalfOpen: true }, (sock) => { // as TcpStream is
    sock.once('data', (first: Buffer) => {
      sock.pause();
      l7.serve(sock, [first], { src: `${sock.remoteAddress}:${sock.remotePort}`, target: { host: '127.0.0.1', port: originPort }, outbound: outbounds.get('direct')! }, (r) => flows.push(r));
    });
  });
  const frontPort = await listen(front);
  t.teardown(async () => {
    await l7.close();
    front.close();
    origin.close();
    origin.closeAllConnections();
  });
  t.ok(l7.wants(80) && !l7.wants(8080), 'wants the configured ports only');

  const agentA = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const agentB = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => {
    agentA.destroy();
    agentB.destroy();
  });
  const get = (agent: http.Agent | false, path: string, opts: http.RequestOptions = {}, body?: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; localPort: number }> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: frontPort, path, agent, ...opts }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text, localPort: req.socket!.localPort! }));
      });
      req.on('error', reject);
      req.end(body);
    });

  const a1 = await get(agentA, '/one', { headers: { host: 'example.com' } });
  const a2 = await get(agentA, '/two?x=1', { headers: { host: 'example.com' } });
  const b1 = await get(agentB, '/three', { headers: { host: 'example.com' } });
  t.same([a1.status, a2.status, b1.status], [200, 200, 200], 'three answers');
  t.equal(a1.localPort, a2.localPort, 'client A used one connection for two requests');
  t.not(a1.localPort, b1.localPort, 'client B used another connection');
  t.equal(upstreamConns.length, 1, `one upstream connection carried all three (${upstreamConns.join(',')})`);
  t.equal(a1.headers['x-upstream'], 'yes', 'response headers pass');
  t.same(seen.map((s) => s.url), ['/one', '/two?x=1', '/three'], 'targets forwarded as sent');
  t.equal(seen[0]!.headers.host, 'example.com', 'Host kept');

  const h = await get(agentA, '/headers', { headers: { host: 'example.com', cookie: 'a=1', 'x-via': 'client', connection: 'keep-alive, x-private', 'x-private': 's' } });
  t.equal(h.status, 200);
  const hs = seen.at(-1)!.headers;
  t.equal(hs['x-via'], 'sluice', 'setHeaders replaced the client value');
  t.equal(hs.cookie, undefined, 'removeHeaders removed cookie');
  t.equal(hs['x-private'], undefined, 'a Connection-listed header is hop-by-hop');

  const big = Buffer.alloc(1 << 20, 7);
  const post = await get(agentA, '/upload', { method: 'POST', headers: { host: 'example.com', 'content-length': String(big.length) } }, big);
  t.equal(JSON.parse(post.body).bodyBytes, big.length, 'a 1 MiB request body streamed upstream');

  const dead = await get(false, '/dead', { headers: { host: 'example.com' } });
  t.equal(dead.status, 502, 'dead upstream: 502');
  t.match(dead.body, /upstream failed/, 'with a short body');
  const blocked = await get(false, '/blocked', { headers: { host: 'example.com' } });
  t.equal(blocked.status, 403, 'a reject outbound: 403');

  const raw = (text: string): Promise<string> =>
    new Promise((resolve) => {
      const s = net.connect(frontPort, '127.0.0.1', () => s.end(text)); // write, then half-close
      let out = '';
      s.on('data', (c: Buffer) => (out += c.toString()));
      s.on('close', () => resolve(out));
      s.on('error', () => resolve(out));
    });
  t.match(await raw('GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400 /, 'garbage: 400 and close');
  t.match(await raw('GET / HTTP/1.1\r\nHost: a\r\nX-Big: ' + 'x'.repeat(5000) + '\r\n\r\n'), /^HTTP\/1\.1 431 /, 'head over maxHeaderBytes: 431');
  t.match(await raw('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'), /^HTTP\/1\.1 501 /, 'WebSocket upgrade: 501');
  t.match(await raw('CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n'), /^HTTP\/1\.1 501 /, 'CONNECT: 501');
  // A client that half-closes right after its request still gets the answer.
  t.match(await raw('GET /fin HTTP/1.1\r\nHost: example.com\r\n\r\n'), /^HTTP\/1\.1 200 /, 'a request followed by FIN is answered, then the connection closes');

  const reqLines = lines.filter((l) => l.msg === 'request');
  const byPath = (p: string) => reqLines.find((l) => l.path === p);
  t.match(byPath('/one'), { method: 'GET', host: 'example.com', status: 200, outbound: 'direct', rule: -1 }, 'access line for /one');
  t.type(byPath('/one')?.durationMs, 'number');
  t.type(byPath('/one')?.bytes, 'number');
  t.match(byPath('/headers'), { rule: 2, outbound: 'direct' }, 'access line names the rule');
  t.match(byPath('/dead'), { status: 502, outbound: 'dead', rule: 0 }, 'access line for the 502');
  t.match(byPath('/blocked'), { status: 403, outbound: 'block', rule: 1 });
  t.equal(reqLines.filter((l) => l.path === '/one').length, 1, 'one line per request');
  t.equal(seen.length, 6, 'the origin saw exactly the forwarded requests');
});
