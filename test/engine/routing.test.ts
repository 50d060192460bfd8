/**
 * `sluice run` end to end: a client namespace whose traffic the gateway
 * steers into sluice's TUN, and a server namespace with an HTTP/HTTPS
 * server and two real proxies (microsocks for SOCKS5, tinyproxy for HTTP
 * CONNECT). Checks that flows are routed by sniffed name (TLS SNI, HTTP
 * Host) or fall to `final`, that reject fails fast, that a dead upstream
 * resets the already-accepted client quickly, that every flow is logged
 * with the documented fields, that sluice's own upstream sockets never
 * re-enter the TUN, and that SIGTERM exits 0.
 *
 * Needs root, /dev/net/tun, curl, openssl, microsocks, tinyproxy, nft.
 */
import t from 'tap';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, CLIENT_V6, GATEWAY_WAN_V4, GATEWAY_WAN_V6, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import {
  TUN,
  createLab,
  curl,
  describe,
  namespaceHosts,
  requireCommands,
  selfSignedCert,
  startEngine,
  steer,
  startMicrosocks,
  startTinyproxy,
  startWebServer,
  tempDir,
  type FlowLine,
} from '../fixtures/engine/lab.js';

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
  - { name: socks, type: socks5, server: ${SERVER_V4}, port: 1080 }
  - { name: corp, type: http, server: ${SERVER_V4}, port: 3128 }
  - { name: block, type: reject }
  - { name: dead, type: socks5, server: ${SERVER_V4}, port: 1 }
rules:
  - { domainSuffix: [secure.example], outbound: socks }
  - { domain: [plain.example], outbound: corp }
  - { domainSuffix: [blocked.example], outbound: block }
  - { domain: [dead.example], outbound: dead }
final: direct
`;

interface Body {
  host: string | null;
  peer: string | null;
  tls: boolean;
}

function parseBody(stdout: string): Body | null {
  try {
    return JSON.parse(stdout) as Body;
  } catch {
    return null;
  }
}

/** The peer address the server saw, without the IPv4-mapped prefix of a [::] listener. */
const peerOf = (b: Body | null): string | null => (b?.peer ?? null)?.replace(/^::ffff:/, '') ?? null;

function checkFlowShape(t: Test, f: FlowLine): void {
  t.equal(f.network, 'tcp', 'flow network');
  for (const k of ['bytesUp', 'bytesDown', 'durationMs', 'rule'] as const) t.type(f[k], 'number', `flow ${k} is a number`);
  t.type(f.close, 'string', 'flow close reason is a string');
  t.type(f.outbound, 'string', 'flow outbound is a string');
}

/** Packet counters of a link, from `ip -s -j link show`. */
async function linkPackets(ns: Netns, dev: string): Promise<{ rx: number; tx: number }> {
  const out = await ns.sh(`ip -s -j link show dev ${dev}`);
  const [info] = JSON.parse(out) as Array<{ stats64: { rx: { packets: number }; tx: { packets: number } } }>;
  return { rx: info!.stats64.rx.packets, tx: info!.stats64.tx.packets };
}

/** Packet count of the nft rule carrying `comment` in the gateway's test table. */
async function nftCounter(ns: Netns, comment: string): Promise<number> {
  const out = await ns.sh('nft -j list table inet sluicetest');
  const doc = JSON.parse(out) as { nftables: Array<{ rule?: { comment?: string; expr: Array<{ counter?: { packets: number } }> } }> };
  for (const item of doc.nftables) {
    if (item.rule?.comment !== comment) continue;
    for (const e of item.rule.expr) if (e.counter) return e.counter.packets;
  }
  throw new Error(`no nft rule with comment ${comment}`);
}

t.test('sluice run routes by sniffed name through socks5, http CONNECT, reject and direct', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'openssl', 'microsocks', 'tinyproxy', 'nft', 'ss'])) return;
  const dir = tempDir(t, 'routing');
  const lab = await createLab(t, 'engroute');
  const { client, gateway, server } = await threeNamespaces(lab);
  // The proxies get names from sluice (sniffed) and resolve them on their side.
  namespaceHosts(t, server, { 'secure.example': SERVER_V4, 'plain.example': SERVER_V4, 'x.blocked.example': SERVER_V4, 'dead.example': SERVER_V4 });
  const cert = await selfSignedCert(dir, 'secure.example');
  await startWebServer(t, server, cert);
  await startMicrosocks(t, server, 1080);
  const tinyproxy = await startTinyproxy(t, server, dir, 3128);

  // Baseline, before sluice: the kernel forwards client -> server, so the fixtures work.
  const base = await curl(client, [`http://${SERVER_V4}/`]);
  t.equal(base.code, 0, `baseline: the server answers through plain kernel forwarding (${describe(base)})`);

  // Counters in the gateway: locally generated TCP leaving through the TUN would be
  // sluice's own upstream sockets looping back into itself; forwarded client
  // packets entering the TUN show the steering works.
  await gateway.exec(['nft', '-f', '-'], {
    input: [
      'table inet sluicetest {',
      '  chain t_out {',
      '    type filter hook output priority 0; policy accept;',
      `    oifname "${TUN}" meta l4proto tcp counter comment "loop-out"`,
      '  }',
      '  chain t_pre {',
      '    type filter hook prerouting priority -300; policy accept;',
      `    iifname "${TUN}" ip saddr ${GATEWAY_WAN_V4} counter comment "loop-in-v4"`,
      `    iifname "${TUN}" ip6 saddr ${GATEWAY_WAN_V6} counter comment "loop-in-v6"`,
      '  }',
      '  chain t_fwd {',
      '    type filter hook forward priority 0; policy accept;',
      `    iifname "lan0" oifname "${TUN}" counter comment "client-in"`,
      '  }',
      '}',
      '',
    ].join('\n'),
  });

  const engine = await startEngine(t, gateway, dir, CONFIG);
  await steer(gateway, TUN);
  const tunLink = await gateway.sh(`ip -d link show dev ${TUN}`);
  t.match(tunLink, /\btun\b/, 'the engine created a TUN device');
  t.match(tunLink, /state UP|,UP[,>]/, 'the TUN is up');

  await t.test('TLS to secure.example is routed by SNI through the SOCKS5 proxy', async (t) => {
    const r = await curl(client, ['-k', '--local-port', '41001', '--resolve', `secure.example:443:${SERVER_V4}`, 'https://secure.example/']);
    t.equal(r.code, 0, `curl succeeds (${describe(r)})`);
    const body = parseBody(r.stdout);
    t.same(body && { host: body.host, tls: body.tls }, { host: 'secure.example', tls: true }, 'the HTTPS server answered');
    t.equal(peerOf(body), SERVER_V4, 'the server saw the connection come from microsocks (server namespace), not from the gateway');
    const f = await engine.flowFrom(`${CLIENT_V4}:41001`);
    if (!f) return t.fail('no flow line for the TLS connection');
    checkFlowShape(t, f);
    t.match(f, { dst: `${SERVER_V4}:443`, domain: 'secure.example', protocol: 'tls', rule: 0, outbound: 'socks' }, 'flow line');
    t.ok(f.bytesUp > 0 && f.bytesDown > 0, `bytes counted both ways (${f.bytesUp} up, ${f.bytesDown} down)`);
  });

  await t.test('HTTP to plain.example is routed by Host through the HTTP CONNECT proxy', async (t) => {
    const r = await curl(client, ['--local-port', '41002', '--resolve', `plain.example:80:${SERVER_V4}`, 'http://plain.example/']);
    t.equal(r.code, 0, `curl succeeds (${describe(r)})`);
    const body = parseBody(r.stdout);
    t.equal(body?.host, 'plain.example', 'the HTTP server got Host: plain.example');
    t.equal(peerOf(body), SERVER_V4, 'the server saw the connection come from tinyproxy (server namespace)');
    const f = await engine.flowFrom(`${CLIENT_V4}:41002`);
    if (!f) return t.fail('no flow line for the HTTP connection');
    checkFlowShape(t, f);
    t.match(f, { dst: `${SERVER_V4}:80`, domain: 'plain.example', protocol: 'http', rule: 1, outbound: 'corp' }, 'flow line');
    t.match(tinyproxy.output(), /CONNECT/, 'tinyproxy logged a CONNECT request');
  });

  await t.test('HTTP to a bare address goes direct (final), IPv4 and IPv6', async (t) => {
    const r = await curl(client, ['--local-port', '41003', `http://${SERVER_V4}/`]);
    t.equal(r.code, 0, `curl succeeds (${describe(r)})`);
    t.equal(peerOf(parseBody(r.stdout)), GATEWAY_WAN_V4, 'the server saw the gateway itself connect (direct)');
    const f = await engine.flowFrom(`${CLIENT_V4}:41003`);
    if (!f) return t.fail('no flow line for the direct connection');
    checkFlowShape(t, f);
    t.match(f, { dst: `${SERVER_V4}:80`, rule: -1, outbound: 'direct' }, 'flow line: final rule, direct');
    t.ok(f.bytesDown > 0, 'bytes down counted');

    const r6 = await curl(client, ['--local-port', '41004', `http://[${SERVER_V6}]/`]);
    t.equal(r6.code, 0, `IPv6 curl succeeds (${describe(r6)})`);
    t.equal(parseBody(r6.stdout)?.peer, GATEWAY_WAN_V6, 'the server saw the gateway connect over IPv6');
    const f6 = await engine
      .waitFor((l) => l.msg === 'flow' && typeof l.src === 'string' && l.src.includes(CLIENT_V6) && l.src.endsWith('41004'), 10_000, 'the IPv6 flow line')
      .catch(() => null);
    if (!f6) return t.fail('no flow line for the IPv6 connection');
    t.match(f6, { network: 'tcp', rule: -1, outbound: 'direct' }, 'IPv6 flow line');
    t.match(String(f6.dst), SERVER_V6, 'IPv6 flow destination');
  });

  await t.test('a rejected name fails within 1 s', async (t) => {
    const r = await curl(client, ['--local-port', '41005', '--resolve', `x.blocked.example:80:${SERVER_V4}`, 'http://x.blocked.example/'], 10);
    t.not(r.code, 0, `curl fails (${describe(r)})`);
    t.not(r.code, 28, 'not by timeout');
    t.ok(r.ms < 1000, `fails fast (${r.ms} ms)`);
    const f = await engine.flowFrom(`${CLIENT_V4}:41005`);
    if (!f) return t.fail('no flow line for the rejected connection');
    t.match(f, { domain: 'x.blocked.example', rule: 2, outbound: 'block' }, 'flow line');
  });

  await t.test('a dead upstream for a sniffed name resets the accepted client within 2 s', async (t) => {
    const r = await curl(client, ['--local-port', '41006', '--resolve', `dead.example:80:${SERVER_V4}`, 'http://dead.example/'], 10);
    t.not(r.code, 0, `curl fails (${describe(r)})`);
    t.not(r.code, 28, 'not by timeout');
    t.ok(r.ms < 2000, `fails fast (${r.ms} ms)`);
    const f = await engine.flowFrom(`${CLIENT_V4}:41006`);
    if (!f) return t.fail('no flow line for the failed connection');
    t.match(f, { domain: 'dead.example', rule: 3, outbound: 'dead' }, 'flow line');
  });

  await t.test("sluice's own upstream sockets never enter the TUN", async (t) => {
    const clientBefore = await linkPackets(client, 'eth0');
    const tunBefore = await linkPackets(gateway, TUN);
    const size = 4 * 1024 * 1024;
    const r = await curl(client, ['--local-port', '41007', '-o', '/dev/null', '-w', '%{size_download}', `http://${SERVER_V4}/bytes/${size}`], 30);
    t.equal(r.code, 0, `download succeeds (${describe(r)})`);
    t.equal(r.stdout, String(size), 'whole body received');
    const clientAfter = await linkPackets(client, 'eth0');
    const tunAfter = await linkPackets(gateway, TUN);
    const clientPackets = clientAfter.rx - clientBefore.rx + (clientAfter.tx - clientBefore.tx);
    const tunPackets = tunAfter.rx - tunBefore.rx + (tunAfter.tx - tunBefore.tx);
    t.ok(tunAfter.tx - tunBefore.tx > 0, `client packets were written into the TUN (${tunAfter.tx - tunBefore.tx})`);
    t.ok(tunPackets < 3 * clientPackets, `TUN packets (${tunPackets}) stay in proportion to the client's own (${clientPackets})`);
    t.equal(await nftCounter(gateway, 'loop-out'), 0, 'no locally generated TCP packet left through the TUN');
    t.equal(await nftCounter(gateway, 'loop-in-v4'), 0, "no packet from the gateway's WAN IPv4 address came out of the TUN");
    t.equal(await nftCounter(gateway, 'loop-in-v6'), 0, "no packet from the gateway's WAN IPv6 address came out of the TUN");
    t.ok((await nftCounter(gateway, 'client-in')) > 0, 'forwarded client packets entered the TUN (the counters work)');
  });

  await t.test('SIGTERM exits 0', async (t) => {
    const { code, signal } = await engine.stop();
    t.same({ code, signal }, { code: 0, signal: null }, 'clean exit');
  });
});
