/**
 * `sluice run` with the HTTP L7 mode (config `http`) end to end: a client
 * namespace steered into sluice's TUN, a server namespace with the L7
 * fixture server (test/fixtures/engine/l7-server.ts) and tinyproxy.
 * Checks that requests from several client connections share ONE kept-alive
 * upstream connection, that an http rule sends POST /api through the HTTP
 * CONNECT proxy while GET / goes direct, that setHeaders/removeHeaders
 * reach the server, that one "request" access-log line is written per
 * request, and that a dead upstream gives 502.
 *
 * A flow to a fake IP (name known before sniffing) is served the same way,
 * dialled upstream by name.
 *
 * Needs root, /dev/net/tun, curl, tinyproxy, dig, dnsmasq.
 */
import t from 'tap';
import type { Netns } from '../harness/netns.js';
import { requireRoot, waitForJsonLine } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, GATEWAY_WAN_V4, SERVER_V4 } from '../harness/topology.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { TUN, childEnv, collectOutput, createLab, curl, describe, requireCommands, startDnsmasq, startEngine, startTinyproxy, steer, tempDir, timed, type LogLine } from '../fixtures/engine/lab.js';

const L7_SERVER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/engine/l7-server.js');

const CONFIG = `
log: { level: info, format: json }
tun: { name: ${TUN} }
sniff: { timeoutMs: 1000, maxBytes: 8192 }
dns:
  mode: fake-ip
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
outbounds:
  - { name: direct, type: direct }
  - { name: corp, type: http, server: ${SERVER_V4}, port: 3128 }
  - { name: dead, type: socks5, server: ${SERVER_V4}, port: 1 }
final: direct
http:
  enabled: true
  ports: [80]
  rules:
    - { method: [POST], pathPrefix: /api, outbound: corp }
    - { pathPrefix: /dead, outbound: dead }
    - { pathRegex: "^/hdr", setHeaders: { X-Via: sluice }, removeHeaders: [cookie] }
`;

interface Seen {
  method: string;
  url: string;
  host: string | null;
  headers: Record<string, string>;
  peer: string;
  peerPort: number;
  conn: number;
  accepted: number;
  bodyBytes: number;
}

function bodies(stdout: string): Seen[] {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Seen;
      } catch {
        return null;
      }
    })
    .filter((x): x is Seen => x !== null);
}

async function startL7Server(t: Test, server: Netns): Promise<void> {
  const proc = server.spawn([process.execPath, L7_SERVER, '--port', '80'], { env: childEnv });
  const output = collectOutput(proc);
  t.teardown(() => {
    if (!t.passing()) t.comment(`l7 server output:\n${output()}`);
  });
  await waitForJsonLine(proc, (m: { event?: string }) => m.event === 'ready');
}

t.test('sluice run: HTTP L7 mode with pooled upstreams, rules, header edits and access log', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'tinyproxy', 'dig', '/usr/sbin/dnsmasq', 'ss'])) return;
  const dir = tempDir(t, 'httpl7');
  const lab = await createLab(t, 'enghttpl');
  const { client, gateway, server } = await threeNamespaces(lab);
  await startL7Server(t, server);
  const tinyproxy = await startTinyproxy(t, server, dir, 3128);
  // sluice's own resolver for names behind fake IPs.
  await startDnsmasq(t, server, { 'named.example': SERVER_V4 });
  const engine = await startEngine(t, gateway, dir, CONFIG);
  await steer(gateway, TUN);
  const url = (p: string): string => `http://plain.example${p}`;
  const resolve = ['--resolve', `plain.example:80:${SERVER_V4}`];
  const requestsFrom = (port: number): LogLine[] => engine.lines.filter((l) => l.msg === 'request' && l.src === `${CLIENT_V4}:${port}`);

  await t.test('two client connections, three requests, one upstream connection', async (t) => {
    // Two URLs in one curl run share one keep-alive client connection.
    const a = await curl(client, ['--local-port', '42001', ...resolve, url('/one'), url('/two')]);
    t.equal(a.code, 0, `first curl succeeds (${describe(a)})`);
    const b = await curl(client, ['--local-port', '42002', ...resolve, url('/three')]);
    t.equal(b.code, 0, `second curl succeeds (${describe(b)})`);
    const seen = [...bodies(a.stdout), ...bodies(b.stdout)];
    t.same(seen.map((s) => s.url), ['/one', '/two', '/three'], 'three answers');
    t.same(seen.map((s) => s.host), ['plain.example', 'plain.example', 'plain.example'], 'Host kept');
    t.same(new Set(seen.map((s) => s.peer)), new Set([GATEWAY_WAN_V4]), 'direct: the server saw the gateway connect');
    const flowA = await engine.flowFrom(`${CLIENT_V4}:42001`);
    const flowB = await engine.flowFrom(`${CLIENT_V4}:42002`);
    // With worker threads (tun.queues > 1) each worker has its own upstream
    // pools: client connections on two queues share nothing (docs/workers.md).
    const pools = new Set([flowA?.queue, flowB?.queue]).size;
    const where = pools === 1 ? 'one upstream connection' : `one upstream connection per worker (queues ${String(flowA?.queue)} and ${String(flowB?.queue)})`;
    t.equal(seen[1]!.conn, seen[0]!.conn, `the first client connection's two requests came on one upstream connection (conn ${seen.map((s) => s.conn).join(',')})`);
    t.equal(new Set(seen.map((s) => s.conn)).size, pools, `all three came on ${where}`);
    t.equal(new Set(seen.map((s) => s.peerPort)).size, pools, `from ${pools === 1 ? 'one upstream source port' : 'one upstream source port per worker'}`);
    t.equal(seen[2]!.accepted, pools, `the server accepted exactly ${pools === 1 ? 'one connection' : 'one connection per worker'}`);
    t.match(flowA, { protocol: 'http', outbound: 'direct' }, 'the client connection is logged as one flow');
    const linesA = requestsFrom(42001);
    t.equal(linesA.length, 2, 'two access-log lines for the first connection');
    t.match(linesA[0], { method: 'GET', host: 'plain.example', path: '/one', status: 200, outbound: 'direct', rule: -1 }, 'access-log line fields');
    t.type(linesA[0]?.bytes, 'number');
    t.type(linesA[0]?.durationMs, 'number');
    // The log is written once per event-loop turn: the second connection's line may follow curl's exit.
    await engine.waitFor((l) => l.msg === 'request' && l.src === `${CLIENT_V4}:42002`, 10_000, 'the access-log line of the second connection');
    t.equal(requestsFrom(42002).length, 1, 'one access-log line for the second connection');
  });

  await t.test('POST /api goes through the HTTP CONNECT proxy, GET / direct', async (t) => {
    const p = await curl(client, ['--local-port', '42003', ...resolve, '-X', 'POST', '--data-binary', 'hello=1', url('/api/items')]);
    t.equal(p.code, 0, `POST succeeds (${describe(p)})`);
    const [ps] = bodies(p.stdout);
    t.equal(ps?.method, 'POST');
    t.equal(ps?.bodyBytes, 7, 'the request body arrived');
    t.equal(ps?.peer, SERVER_V4, 'the server saw tinyproxy (server namespace) connect');
    t.match(tinyproxy.output(), /CONNECT/, 'tinyproxy logged a CONNECT');
    const g = await curl(client, ['--local-port', '42004', ...resolve, url('/')]);
    t.equal(bodies(g.stdout)[0]?.peer, GATEWAY_WAN_V4, 'GET / went direct');
    await engine.waitFor((l) => l.msg === 'request' && l.src === `${CLIENT_V4}:42003`, 5000, 'the POST access line');
    t.match(requestsFrom(42003)[0], { method: 'POST', path: '/api/items', outbound: 'corp', rule: 0, status: 200 }, 'access line names rule 0 and corp');
    const flow = await engine.flowFrom(`${CLIENT_V4}:42003`);
    t.match(flow, { protocol: 'http', outbound: 'corp', rule: 0, requests: 1 }, "the connection's flow line says what its request matched, not the flow-level default");
    t.notOk(flow !== null && 'outbounds' in flow, 'one outbound: no outbounds list');
  });

  await t.test('a connection whose requests go different ways: the flow line names the last and lists all', async (t) => {
    const r = await curl(client, ['--local-port', '42008', ...resolve, '-X', 'POST', '--data-binary', 'x=1', url('/api/one'), url('/other')]);
    t.equal(r.code, 0, `curl succeeds (${describe(r)})`);
    const flow = await engine.flowFrom(`${CLIENT_V4}:42008`);
    t.match(flow, { protocol: 'http', outbound: 'direct', rule: -1, requests: 2, outbounds: ['corp', 'direct'] }, `flow line: ${JSON.stringify(flow)}`);
  });

  await t.test('setHeaders and removeHeaders are visible at the server', async (t) => {
    const r = await curl(client, ['--local-port', '42005', ...resolve, '-H', 'Cookie: session=1', '-H', 'X-Via: client', '-H', 'X-Keep: 1', url('/hdr')]);
    t.equal(r.code, 0, `curl succeeds (${describe(r)})`);
    const [s] = bodies(r.stdout);
    t.equal(s?.headers['x-via'], 'sluice', 'X-Via set (replacing the client value)');
    t.equal(s?.headers.cookie, undefined, 'Cookie removed');
    t.equal(s?.headers['x-keep'], '1', 'other headers pass');
  });

  await t.test('a dead upstream gives 502', async (t) => {
    const r = await curl(client, ['--local-port', '42006', ...resolve, '-o', '/dev/null', '-w', '%{http_code}', url('/dead')]);
    t.equal(r.stdout, '502', `502 (${describe(r)})`);
    await engine.waitFor((l) => l.msg === 'request' && l.src === `${CLIENT_V4}:42006`, 5000, 'the 502 access line');
    t.match(requestsFrom(42006)[0], { status: 502, outbound: 'dead', rule: 1 }, 'access line for the 502');
  });

  await t.test('a fake-IP flow (name known before sniffing) is served by the HTTP mode too', async (t) => {
    const d = await timed(client, ['dig', `@${SERVER_V4}`, 'named.example', 'A', '+short', '+time=3', '+tries=1'], 15_000);
    const fake = d.stdout.trim();
    t.match(fake, /^198\.18\./, `the hijacked DNS answered a fake IP (${describe(d)})`);
    const r = await curl(client, ['--local-port', '42007', '--resolve', `named.example:80:${fake}`, 'http://named.example/fake']);
    t.equal(r.code, 0, `curl succeeds (${describe(r)})`);
    const [s] = bodies(r.stdout);
    t.equal(s?.url, '/fake', 'the request reached the server');
    t.equal(s?.peer, GATEWAY_WAN_V4, 'direct, from the gateway');
    await engine.waitFor((l) => l.msg === 'request' && l.src === `${CLIENT_V4}:42007`, 5000, 'the fake-IP access line');
    t.match(requestsFrom(42007)[0], { host: 'named.example', path: '/fake', status: 200 }, 'access line');
    const f = await engine.flowFrom(`${CLIENT_V4}:42007`);
    t.match(f, { domain: 'named.example', protocol: 'http', outbound: 'direct' }, 'the flow keeps the fake-IP name');
  });

  await t.test('SIGTERM exits 0', async (t) => {
    const { code, signal } = await engine.stop();
    t.same({ code, signal }, { code: 0, signal: null }, 'clean exit');
  });
});
