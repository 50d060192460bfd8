/**
 * UDP NAT behaviour (src/udp/nat.ts, RFC 4787) with real sockets, in the
 * client / gateway / server topology with sluice in the gateway
 * (gateway.enabled, LAN lan0), STUN-like (test/fixtures/stun-lab.ts):
 *   - endpoint-independent mapping (REQ-1): one client socket probing two
 *     servers A and B is seen by both from the same address and port;
 *   - true sources: every datagram reaches the client from its real sender,
 *     also one from A's other port (alt) and one from a third server C the
 *     client never contacted;
 *   - filtering (REQ-8): endpoint-independent lets alt and C in;
 *     address-dependent only alt; address-and-port-dependent neither;
 *   - the same through a SOCKS5 UDP ASSOCIATE (danted), through TPROXY, over
 *     IPv6, and to a fake IP (the reply from the real address reaches the
 *     client from the fake one it sent to);
 *   - gateway.preserveSource: the upstream socket is the client's own
 *     endpoint (address and port), in both gateway modes and through a
 *     select group whose member is direct.
 *
 * Needs root, /dev/net/tun, ip, nft; danted and dnsmasq for their parts.
 */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, CLIENT_V6, GATEWAY_WAN_V4, GATEWAY_WAN_V6, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { childEnv, createLab, requireCommands, startDanted, startDnsmasq, tempDir, TUN, type Engine } from '../fixtures/engine/lab.js';
import { settle, startSluice } from '../system/workstation.js';

const STUN_LAB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/stun-lab.js');
const A4 = SERVER_V4;
const B4 = '203.0.113.3';
const C4 = '203.0.113.4';
const A6 = SERVER_V6;
const B6 = '2001:db8:5::3';
const C6 = '2001:db8:5::4';

interface Seen {
  seen: string;
  port: number;
  address: string;
  fromPort: number;
}
interface Probe {
  local: number;
  a: Seen | null;
  b: Seen | null;
  from: { msg: string; address: string; port: number }[];
}

interface Lab {
  client: Netns;
  gateway: Netns;
  server: Netns;
}

async function lab(t: Test, tag: string): Promise<Lab> {
  const l = await createLab(t, tag);
  const topo = await threeNamespaces(l);
  await topo.server.sh(`ip addr add ${B4}/24 dev eth0 && ip addr add ${C4}/24 dev eth0 && ip addr add ${B6}/64 dev eth0 nodad && ip addr add ${C6}/64 dev eth0 nodad`);
  await settle(topo.gateway);
  for (const [a, b, c] of [
    [A4, B4, C4],
    [A6, B6, C6],
  ] as const) {
    const p = topo.server.spawn([process.execPath, STUN_LAB, 'server', a, b, c], { env: childEnv });
    await new Promise<void>((resolve, reject) => {
      p.stdout!.once('data', () => resolve());
      p.once('exit', (code) => reject(new Error(`stun-lab server exited ${code}`)));
    });
  }
  return topo;
}

function config(gateway: string, extra = ''): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns:
  mode: fake-ip
  hijack: false
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], ${gateway} }
${extra}
`;
}

async function probe(client: Netns, a: string, b: string, via?: string): Promise<Probe> {
  const r = await client.exec([process.execPath, STUN_LAB, 'client', a, b, ...(via !== undefined ? [via] : [])], { env: childEnv, allowFail: true, timeoutMs: 60_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Probe;
  } catch {
    throw new Error(`stun-lab client printed ${JSON.stringify(r.stdout)} (stderr ${r.stderr})`);
  }
}

function has(p: Probe, msg: string, address: string, port: number): boolean {
  return p.from.some((f) => f.msg === msg && f.address === address && f.port === port);
}

/** The mapping checks every scenario shares: one mapped endpoint for A and B, replies from their true sources. */
function checkMapping(t: Test, p: Probe, what: string, mappedAddress: string, a: string, b: string, aVia = a): void {
  t.ok(p.a !== null && p.b !== null, `${what}: A and B answered (${JSON.stringify(p)})`);
  if (p.a === null || p.b === null) return;
  t.equal(p.a.port, p.b.port, `${what}: A and B saw the same mapped port (${p.a.port}, ${p.b.port}): endpoint-independent mapping`);
  t.equal(p.a.seen, mappedAddress, `${what}: A saw the mapped address ${mappedAddress}`);
  t.equal(p.b.seen, mappedAddress, `${what}: B saw the mapped address ${mappedAddress}`);
  t.equal(p.a.address, aVia, `${what}: A's answer came from ${aVia}`);
  t.equal(p.b.address, b, `${what}: B's answer came from ${b}`);
  t.equal(p.a.fromPort, 3478, `${what}: from port 3478`);
}

async function stopClean(t: Test, engine: Engine): Promise<void> {
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
}

t.test('TUN, direct: endpoint-independent mapping and filtering, true sources, IPv4 and IPv6; stricter filtering modes', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft'])) return;
  const dir = tempDir(t, 'natun');
  const { client, gateway } = await lab(t, 'udpnatun');
  let engine = await startSluice(t, gateway, dir, config('mode: tun'), path.join(dir, 'state.json'));

  const p4 = await probe(client, A4, B4);
  checkMapping(t, p4, 'IPv4', GATEWAY_WAN_V4, A4, B4);
  t.ok(has(p4, 'alt', A4, 3479), `IPv4: "alt" from A's other port reached the client from ${A4}:3479 (${JSON.stringify(p4.from)})`);
  t.ok(has(p4, 'third', C4, 5000), `IPv4: "third" from C, never contacted, reached the client from ${C4}:5000`);
  const p6 = await probe(client, A6, B6);
  checkMapping(t, p6, 'IPv6', GATEWAY_WAN_V6, A6, B6);
  t.ok(has(p6, 'alt', A6, 3479) && has(p6, 'third', C6, 5000), `IPv6: alt and third reached the client from their true sources (${JSON.stringify(p6.from)})`);
  await stopClean(t, engine);
  const inbound = engine.flows().filter((f) => f.network === 'udp' && f.dst === `${C4}:5000`);
  t.ok(inbound.length === 1 && inbound[0]!.outbound === 'direct' && inbound[0]!.bytesDown > 0, `the session C opened is a flow line, outbound direct (${JSON.stringify(inbound)})`);
  const counters = engine.lines.find((l) => l.msg === 'counters' || (typeof l.udpNat === 'object' && l.udpNat !== null));
  if (counters !== undefined) t.comment(`counters: ${JSON.stringify(counters.udpNat)}`);

  engine = await startSluice(t, gateway, dir, config('mode: tun', 'udp: { nat: address-dependent }'), path.join(dir, 'state.json'));
  const pa = await probe(client, A4, B4);
  checkMapping(t, pa, 'address-dependent', GATEWAY_WAN_V4, A4, B4);
  t.ok(has(pa, 'alt', A4, 3479), 'address-dependent: alt (an address the client sent to) reached it');
  t.notOk(pa.from.some((f) => f.msg === 'third'), `address-dependent: third (an address it never sent to) was filtered (${JSON.stringify(pa.from)})`);
  await stopClean(t, engine);

  engine = await startSluice(t, gateway, dir, config('mode: tun', 'udp: { nat: address-and-port-dependent }'), path.join(dir, 'state.json'));
  const pp = await probe(client, A4, B4);
  checkMapping(t, pp, 'address-and-port-dependent', GATEWAY_WAN_V4, A4, B4);
  t.same(pp.from, [], 'address-and-port-dependent: neither alt nor third reached the client');
  await stopClean(t, engine);
});

t.test('TUN, SOCKS5 UDP ASSOCIATE (danted): one association per client socket, true sources from the relay header', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft', '/usr/sbin/danted'])) return;
  const dir = tempDir(t, 'natsocks');
  const { client, gateway, server } = await lab(t, 'udpnatsk');
  const dante = await startDanted(t, server, dir, 1080);
  const yaml = config('mode: tun', `outbounds:\n  - { name: direct, type: direct }\n  - { name: socks, type: socks5, server: ${SERVER_V4}, port: 1080, udp: true }\nfinal: socks\n`);
  const engine = await startSluice(t, gateway, dir, yaml, path.join(dir, 'state.json'));
  const p = await probe(client, A4, B4);
  t.ok(p.a !== null && p.b !== null, `A and B answered through the relay (${JSON.stringify(p)})`);
  if (p.a !== null && p.b !== null) {
    t.equal(p.a.port, p.b.port, `A and B saw the relay's one port (${p.a.port}, ${p.b.port}): one association for the client socket`);
    t.equal(p.a.address, A4, 'A answered from A');
    t.equal(p.b.address, B4, 'B answered from B');
  }
  t.ok(has(p, 'alt', A4, 3479), `alt reached the client from ${A4}:3479, the source the relay reported (${JSON.stringify(p.from)})`);
  // Its rule `command: udpreply` from 0.0.0.0/0 lets danted relay C's
  // datagram too; the relay header carries C's address (RFC 1928 7).
  t.ok(has(p, 'third', C4, 5000), `third (never contacted) reached the client from ${C4}:5000`);
  await stopClean(t, engine);
  const udp = engine.flows().filter((f) => f.network === 'udp' && f.outbound === 'socks');
  t.ok(udp.length >= 2, `UDP flow lines through socks (${udp.length})`);
  t.comment(`danted: ${dante.output().split('\n').filter((l) => /udp/i.test(l)).slice(-4).join(' | ')}`);
});

t.test('TPROXY, direct: endpoint-independent mapping, true sources from transparently bound reply sockets, IPv4 and IPv6', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft'])) return;
  const dir = tempDir(t, 'nattproxy');
  const { client, gateway } = await lab(t, 'udpnattp');
  const engine = await startSluice(t, gateway, dir, config('mode: tproxy'), path.join(dir, 'state.json'));
  const p4 = await probe(client, A4, B4);
  checkMapping(t, p4, 'IPv4', GATEWAY_WAN_V4, A4, B4);
  t.ok(has(p4, 'alt', A4, 3479) && has(p4, 'third', C4, 5000), `IPv4: alt and third reached the client from their true sources (${JSON.stringify(p4.from)})`);
  const p6 = await probe(client, A6, B6);
  checkMapping(t, p6, 'IPv6', GATEWAY_WAN_V6, A6, B6);
  t.ok(has(p6, 'alt', A6, 3479) && has(p6, 'third', C6, 5000), `IPv6: alt and third reached the client from their true sources (${JSON.stringify(p6.from)})`);
  await stopClean(t, engine);
  t.ok(engine.flows().some((f) => f.network === 'udp' && f.inbound === 'tproxy' && f.dst === `${C4}:5000`), 'the session C opened is a flow line with inbound tproxy');
});

t.test('TUN, fake IP: the reply from the real address reaches the client from the fake IP it sent to', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft', 'dig', '/usr/sbin/dnsmasq'])) return;
  const dir = tempDir(t, 'natfake');
  const { client, gateway, server } = await lab(t, 'udpnatfk');
  await startDnsmasq(t, server, { 'stun.example': A4 });
  const yaml = config('mode: tun').replace('hijack: false', 'hijack: true');
  const engine = await startSluice(t, gateway, dir, yaml, path.join(dir, 'state.json'));
  const fake = (await client.sh(`dig +short +time=5 +tries=3 @${SERVER_V4} stun.example A`)).trim();
  t.match(fake, /^198\.1[89]\./, `the name resolved to a fake IP (${fake})`);
  const p = await probe(client, A4, B4, fake);
  checkMapping(t, p, 'fake IP', GATEWAY_WAN_V4, A4, B4, fake);
  // A's other port is a new source: it arrives from its real address.
  t.ok(has(p, 'alt', A4, 3479), `alt (a new source) arrived from A's real address (${JSON.stringify(p.from)})`);
  await stopClean(t, engine);
  const f = engine.flows().find((l) => l.network === 'udp' && l.dst === `${fake}:3478`);
  t.equal(f?.domain, 'stun.example', 'the fake-IP flow line names the domain');
});

for (const mode of ['tun', 'tproxy'] as const) {
  t.test(`gateway.preserveSource, mode ${mode}: servers see the client's own address and port; true sources still`, { timeout: 120_000 }, async (t) => {
    if (!requireRoot(t)) return;
    if (!requireCommands(t, ['ip', 'nft'])) return;
    const dir = tempDir(t, `natps${mode}`);
    const { client, gateway } = await lab(t, mode === 'tun' ? 'udpnatpt' : 'udpnatpp');
    const engine = await startSluice(t, gateway, dir, config(`mode: ${mode}, preserveSource: true`), path.join(dir, 'state.json'));
    for (const [family, a, b, c, me] of [
      ['IPv4', A4, B4, C4, CLIENT_V4],
      ['IPv6', A6, B6, C6, CLIENT_V6],
    ] as const) {
      const p = await probe(client, a, b);
      checkMapping(t, p, family, me, a, b);
      t.equal(p.a?.port, p.local, `${family}: A saw the client's own port ${p.local} (port preserved)`);
      t.ok(has(p, 'alt', a, 3479) && has(p, 'third', c, 5000), `${family}: alt and third reached the client from their true sources (${JSON.stringify(p.from)})`);
    }
    await stopClean(t, engine);
    // What sluice writes toward the client's endpoint must not come back to
    // the upstream socket holding that same endpoint (a loop: megabytes).
    const udp = engine.flows().filter((f) => f.network === 'udp');
    t.ok(udp.length >= 8 && udp.every((f) => f.bytesDown < 4096), `no datagram looped (bytesDown ${udp.map((f) => f.bytesDown).join(', ')})`);
  });
}

t.test('gateway.preserveSource through a select group whose member is direct: the client endpoint is kept', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft'])) return;
  const dir = tempDir(t, 'natpsgroup');
  const { client, gateway } = await lab(t, 'udpnatpg');
  const groups = 'outbounds:\n  - { name: direct, type: direct }\n  - { name: pick, type: select, outbounds: [direct] }\nfinal: pick\n';
  const engine = await startSluice(t, gateway, dir, config('mode: tun, preserveSource: true', groups), path.join(dir, 'state.json'));
  const p = await probe(client, A4, B4);
  checkMapping(t, p, 'group', CLIENT_V4, A4, B4);
  t.equal(p.a?.port, p.local, `A saw the client's own port ${p.local}`);
  t.ok(has(p, 'third', C4, 5000), 'third reached the client from C');
  await stopClean(t, engine);
  const udp = engine.flows().filter((f) => f.network === 'udp');
  t.ok(udp.length >= 2 && udp.every((f) => f.outbound === 'pick'), `flow lines through the group (${udp.map((f) => f.outbound).join(', ')})`);
  t.notOk(engine.lines.some((l) => typeof l.msg === 'string' && l.msg.includes('cannot be bound')), 'no fallback warning');
});
