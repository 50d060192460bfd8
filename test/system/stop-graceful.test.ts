/**
 * At stop, the TCP flows still open end with a FIN and a flow line with
 * close "shutdown", never a reset (issue 12 item 5), whatever stage they
 * are at: an established relayed flow, a flow still being sniffed (the
 * client connected and sent nothing, or only the first bytes of a TLS
 * ClientHello), and an HTTP L7 connection with a request in flight (its
 * upstream never answers: the client gets 503 and `Connection: close`,
 * then the FIN). Real clients in the client namespace: python sockets
 * (test/fixtures/graceful-stop-clients.py), which tell an EOF from
 * ECONNRESET, and curl for a second request in flight (exit 0 with status
 * 503; a reset would be curl's exit 56). SIGTERM must end sluice within
 * 5 s with exit 0 through the orderly path, the gateway's state as before.
 *
 * Sluice runs in gateway mode tun with a name rule (so flows without a
 * known name are sniffed, with sniff.timeoutMs 10 s: still sniffing at the
 * stop) and the HTTP L7 mode on port 80.
 *
 * Needs root, /dev/net/tun, ip, nft, python3, curl.
 */
import t from 'tap';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { requireRoot, waitForJsonLine } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { childEnv, collectOutput, createLab, REPO, requireCommands, tempDir, TUN, type FlowLine } from '../fixtures/engine/lab.js';
import { fullSnapshot, settle, spawnSluice } from './workstation.js';
import { orderlyStop, sigtermWithinBudget } from '../fixtures/sigterm-exit.js';

const here = path.dirname(new URL(import.meta.url).pathname);
const SERVERS = path.resolve(here, '../fixtures/graceful-stop-servers.js');
const CLIENTS = path.join(REPO, 'test/fixtures/graceful-stop-clients.py');

const ECHO = 7200;
const SILENT = 7201;
const TLS = 443;
const HTTP = 80;

const CONFIG = `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, hijack: false, fakeIp: { persistPath: null }, upstreams: [ { address: "udp://${SERVER_V4}:53" } ] }
sniff: { timeoutMs: 10000 }
rules:
  - { domain: [named.test], outbound: direct }
http: { enabled: true, ports: [${HTTP}] }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tun }
`;

type Line = Record<string, unknown>;

/** The JSON lines a child prints, as they come. */
function jsonLines(proc: import('node:child_process').ChildProcess): Line[] {
  const lines: Line[] = [];
  let buffered = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString('utf8');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      try {
        lines.push(JSON.parse(buffered.slice(0, nl)) as Line);
      } catch {
        // not JSON
      }
      buffered = buffered.slice(nl + 1);
    }
  });
  return lines;
}

async function until(what: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (what()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return what();
}

t.test('at stop, relayed, sniffing and HTTP L7 flows end with a FIN and close "shutdown"', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft', 'python3', 'curl'])) return;
  const lab = await createLab(t, 'stopfins');
  const { client, gateway, server } = await threeNamespaces(lab);
  await gateway.sh('sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 && sysctl -qw net.ipv4.conf.wan0.forwarding=1 net.ipv6.conf.lan0.forwarding=1');
  await settle(gateway);
  const before = await fullSnapshot(gateway);
  const dir = tempDir(t, 'stopfin');
  const state = path.join(dir, 'state.json');

  const servers = server.spawn([process.execPath, SERVERS, SERVER_V4, String(ECHO), String(HTTP)], { env: childEnv });
  const serverLines = jsonLines(servers);
  const serverOut = collectOutput(servers);
  await waitForJsonLine(servers, (m: { event?: string }) => m.event === 'ready');

  const engine = spawnSluice(t, gateway, dir, CONFIG, state);
  await engine.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');

  const clients = client.spawn(['python3', CLIENTS, SERVER_V4, String(ECHO), String(SILENT), String(TLS), String(HTTP)], { env: childEnv });
  const clientLines = jsonLines(clients);
  const clientOut = collectOutput(clients);
  t.teardown(() => {
    if (!t.passing()) t.comment(`clients: ${clientOut()}\nservers: ${serverOut()}`);
  });
  t.ok(await until(() => clientLines.some((l) => l.event === 'open'), 15_000), 'the four client connections are open');
  // curl: a second HTTP L7 request in flight, from a real HTTP client.
  const curl = client.exec(['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '20', `http://${SERVER_V4}:${HTTP}/slow-curl`], { allowFail: true, timeoutMs: 30_000 });
  t.ok(await until(() => serverLines.filter((l) => l.event === 'request').length >= 2, 10_000), `both HTTP requests reached the upstream, unanswered (${JSON.stringify(serverLines)})`);
  const open = await gateway.sh(`ss -Htn state established '( sport = :${ECHO} or dport = :${ECHO} or dport = :${HTTP} )'`);
  t.ok(open.trim().split('\n').length >= 3, `sluice holds the upstream connections (${open.trim()})`);

  await sigtermWithinBudget(t, engine);
  orderlyStop(t, engine);
  // With worker threads (SLUICE_TEST_TUN_QUEUES=2) each worker logs its own line: the sum counts.
  const ended = engine.lines.filter((l) => l.msg === 'open flows ended');
  const withFin = ended.reduce((n, l) => n + Number(l.closingWithFin ?? 0), 0);
  t.equal(withFin, 5, `all five flows were closed with a FIN (${JSON.stringify(ended)})`);

  t.ok(await until(() => clientLines.filter((l) => l.event === 'closed').length === 4, 10_000), 'the clients saw their connections end');
  const how = Object.fromEntries(clientLines.filter((l) => l.event === 'closed').map((l) => [l.name, l.how]));
  t.same(how, { relayed: 'fin', silent: 'fin', partial: 'fin', http: 'fin' }, 'each client read EOF (a FIN), none ECONNRESET');
  const http = clientLines.find((l) => l.event === 'closed' && l.name === 'http');
  t.match(String(http?.data), /^HTTP\/1\.1 503 [^\r]*\r\n(?:[^\r]+\r\n)*connection: close\r\n/i, 'the HTTP request in flight was answered 503 with Connection: close before the FIN');
  const c = await curl;
  t.same({ code: c.code, status: c.stdout.trim() }, { code: 0, status: '503' }, `curl got its 503 and a clean end (${c.stderr.trim()})`);
  t.ok(await until(() => serverLines.some((l) => l.event === 'echo-end'), 5_000), 'the echo server saw a FIN from sluice');
  t.same(serverLines.filter((l) => l.event === 'echo-error'), [], 'and no reset');

  const flows = engine.flows();
  const want: Array<[string, Partial<FlowLine>]> = [
    ['relayed', { dst: `${SERVER_V4}:${ECHO}`, outbound: 'direct' }],
    ['silent', { dst: `${SERVER_V4}:${SILENT}` }],
    ['partial ClientHello', { dst: `${SERVER_V4}:${TLS}` }],
  ];
  for (const [name, w] of want) {
    const hit = flows.filter((f) => (Object.keys(w) as Array<keyof FlowLine>).every((k) => f[k] === w[k]));
    t.same(hit.map((f) => f.close), ['shutdown'], `${name}: one flow line, close "shutdown"${hit.length === 1 ? '' : `; flow lines: ${JSON.stringify(flows)}`}`);
  }
  const l7 = flows.filter((f) => f.dst === `${SERVER_V4}:${HTTP}`);
  t.same(l7.map((f) => [f.protocol, f.close]), [['http', 'shutdown'], ['http', 'shutdown']], `the two HTTP L7 flows: close "shutdown" (${JSON.stringify(l7)})`);
  t.equal(flows.length, 5, 'no other flow lines');
  t.equal(await fullSnapshot(gateway), before, 'routing, nftables, tc and all forwarding flags as before');
  t.notOk(existsSync(state), 'the state file is gone');
});
