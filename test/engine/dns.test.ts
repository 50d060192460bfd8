/**
 * `sluice run` DNS: the client's queries to any resolver address are routed
 * into the TUN and answered by sluice (dns.hijack). In fake-ip mode A
 * queries get addresses from the fake range and a flow to such an address
 * is routed (and resolved upstream) by its name; a name whose outbound is
 * dead is refused at the SYN. In real-ip mode answers come from the
 * upstream (dnsmasq in the server namespace) and are snooped, so a domain
 * rule applies to a later flow to that address. Finally the upstream is
 * reached through a SOCKS5 UDP ASSOCIATE relay (danted).
 *
 * Needs root, /dev/net/tun, dig, curl, openssl, dnsmasq, danted.
 */
import t from 'tap';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, GATEWAY_WAN_V4, SERVER_V4 } from '../harness/topology.js';
import {
  TUN,
  createLab,
  curl,
  describe,
  inCidr4,
  requireCommands,
  selfSignedCert,
  startDanted,
  startDnsmasq,
  startEngine,
  steer,
  startWebServer,
  tempDir,
  timed,
} from '../fixtures/engine/lab.js';

/** Not an address anything listens on: only the hijack can answer it. */
const RESOLVER = '198.51.100.53';
const FAKE_RANGE = '198.18.0.0/16';

const header = (mode: 'fake-ip' | 'real-ip', upstreamOutbound = 'direct'): string => `
log: { level: info, format: json }
tun: { name: ${TUN} }
sniff: { timeoutMs: 1000 }
dns:
  mode: ${mode}
  hijack: true
  fakeIp: { ipv4Range: ${FAKE_RANGE}, persistPath: null, ttl: 1 }
  upstreams: [ { address: "udp://${SERVER_V4}:53", outbound: ${upstreamOutbound} } ]
`;

async function setup(t: Test, tag: string, yaml: string, opts: { danted?: boolean } = {}) {
  const dir = tempDir(t, tag);
  const lab = await createLab(t, tag);
  const topo = await threeNamespaces(lab);
  const dnsmasq = await startDnsmasq(t, topo.server, { 'web.example': SERVER_V4 });
  await startWebServer(t, topo.server, await selfSignedCert(dir, 'web.example'));
  const danted = opts.danted ? await startDanted(t, topo.server, dir, 1081) : null;
  // Baseline without sluice: the fixtures answer through kernel forwarding.
  const base = await timed(topo.client, ['dig', `@${SERVER_V4}`, 'web.example', 'A', '+short', '+time=2', '+tries=1']);
  t.equal(base.stdout.trim(), SERVER_V4, `baseline: dnsmasq answers directly (${describe(base)})`);
  const engine = await startEngine(t, topo.gateway, dir, yaml);
  await steer(topo.gateway, TUN);
  return { ...topo, engine, dnsmasq, danted };
}

const dig = (ns: Netns, name: string, extra: string[] = []) =>
  timed(ns, ['dig', `@${RESOLVER}`, name, 'A', '+short', '+time=3', '+tries=1', ...extra], 15_000);

interface Body {
  host: string | null;
  peer: string | null;
  tls: boolean;
}
const parseBody = (s: string): Body | null => {
  try {
    return JSON.parse(s) as Body;
  } catch {
    return null;
  }
};
const peerOf = (b: Body | null): string | null => (b?.peer ?? null)?.replace(/^::ffff:/, '') ?? null;

t.test('fake-ip: hijacked queries get fake addresses, flows to them are routed by name', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['dig', 'curl', 'openssl', '/usr/sbin/dnsmasq', 'ss'])) return;
  const { client, engine, dnsmasq } = await setup(
    t,
    'engfakip',
    header('fake-ip') +
      `
outbounds:
  - { name: direct, type: direct }
  - { name: dead, type: socks5, server: ${SERVER_V4}, port: 1 }
rules:
  - { domain: [dead.example], outbound: dead }
final: direct
`,
  );

  const q = await dig(client, 'web.example');
  t.equal(q.code, 0, `dig over UDP succeeds (${describe(q)})`);
  const fake = q.stdout.trim();
  t.ok(inCidr4(fake, FAKE_RANGE), `the answer ${JSON.stringify(fake)} is in ${FAKE_RANGE}`);

  const qt = await dig(client, 'web.example', ['+tcp']);
  t.equal(qt.code, 0, `dig over TCP succeeds (${describe(qt)})`);
  t.equal(qt.stdout.trim(), fake, 'DNS over TCP gives the same fake address');

  const r = await curl(client, ['--local-port', '42001', '--resolve', `web.example:80:${fake}`, 'http://web.example/']);
  t.equal(r.code, 0, `curl to the fake address succeeds (${describe(r)})`);
  const body = parseBody(r.stdout);
  t.equal(body?.host, 'web.example', 'the real server answered');
  t.equal(peerOf(body), GATEWAY_WAN_V4, 'the connection came from the gateway (direct)');
  const f = await engine.flowFrom(`${CLIENT_V4}:42001`);
  if (f) t.match(f, { network: 'tcp', domain: 'web.example', rule: -1, outbound: 'direct' }, 'flow line names the mapped domain');
  else t.fail('no flow line for the connection to the fake address');
  t.match(dnsmasq.output(), new RegExp(`query\\[A\\] web\\.example from ${GATEWAY_WAN_V4.replace(/\./g, '\\.')}`), 'sluice resolved web.example upstream for the direct connection');

  const dq = await dig(client, 'dead.example');
  const deadFake = dq.stdout.trim();
  t.ok(inCidr4(deadFake, FAKE_RANGE) && deadFake !== fake, `dead.example gets its own fake address (${describe(dq)})`);
  const d = await curl(client, ['--local-port', '42002', '--resolve', `dead.example:80:${deadFake}`, 'http://dead.example/'], 10);
  t.equal(d.code, 7, `a dead upstream for a fake-ip name refuses the connection at the SYN: curl exit 7 (${describe(d)})`);
  t.ok(d.ms < 2000, `fails fast (${d.ms} ms)`);
  const df = await engine.flowFrom(`${CLIENT_V4}:42002`);
  if (df) t.match(df, { domain: 'dead.example', rule: 0, outbound: 'dead' }, 'flow line of the refused connection');
  else t.fail('no flow line for the refused connection');

  // An address in the fake range that was never handed out.
  const u = await curl(client, ['--local-port', '42003', 'http://198.18.254.254/'], 10);
  t.not(u.code, 0, `an unknown fake address fails (${describe(u)})`);
  t.not(u.code, 28, 'not by timeout');
  t.ok(u.ms < 2000, `fails fast (${u.ms} ms)`);
});

t.test('real-ip: answers come from the upstream and are snooped for domain rules', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['dig', 'curl', 'openssl', '/usr/sbin/dnsmasq', 'ss'])) return;
  const { client, engine } = await setup(
    t,
    'engrealp',
    header('real-ip') +
      `
outbounds:
  - { name: direct, type: direct }
  - { name: named, type: direct }
rules:
  - { domain: [web.example], outbound: named }
final: direct
`,
  );
  // TLS to a bare address: curl sends no SNI, so only DNS snooping can name the flow.
  const before = await curl(client, ['-k', '--local-port', '42101', `https://${SERVER_V4}/`]);
  t.equal(before.code, 0, `curl before any DNS query succeeds (${describe(before)})`);
  const fb = await engine.flowFrom(`${CLIENT_V4}:42101`);
  if (fb) t.match(fb, { domain: null, rule: -1, outbound: 'direct' }, 'before the query the address has no name: final');
  else t.fail('no flow line for the first connection');

  const q = await dig(client, 'web.example');
  t.equal(q.code, 0, `dig over UDP succeeds (${describe(q)})`);
  t.equal(q.stdout.trim(), SERVER_V4, 'the real address is answered');
  const qt = await dig(client, 'web.example', ['+tcp']);
  t.equal(qt.stdout.trim(), SERVER_V4, `DNS over TCP answers the real address too (${describe(qt)})`);

  const after = await curl(client, ['-k', '--local-port', '42102', `https://${SERVER_V4}/`]);
  t.equal(after.code, 0, `curl after the query succeeds (${describe(after)})`);
  const fa = await engine.flowFrom(`${CLIENT_V4}:42102`);
  if (fa) t.match(fa, { domain: 'web.example', rule: 0, outbound: 'named' }, 'the snooped name routes the flow by the domain rule');
  else t.fail('no flow line for the second connection');
});

t.test('real-ip through SOCKS5 UDP ASSOCIATE: the upstream is reached via danted', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['dig', 'curl', 'openssl', '/usr/sbin/dnsmasq', '/usr/sbin/danted', 'ss'])) return;
  const { client, danted, dnsmasq } = await setup(
    t,
    'engsudpx',
    header('real-ip', 'socksudp') +
      `
outbounds:
  - { name: direct, type: direct }
  - { name: socksudp, type: socks5, server: ${SERVER_V4}, port: 1081, udp: true }
final: direct
`,
    { danted: true },
  );
  const q = await dig(client, 'web.example');
  t.equal(q.code, 0, `dig succeeds (${describe(q)})`);
  t.equal(q.stdout.trim(), SERVER_V4, 'the real address is answered');
  t.match(danted!.output(), /udpassociate/i, 'danted logged a UDP association');
  t.match(dnsmasq.output(), new RegExp(`query\\[A\\] web\\.example from ${SERVER_V4.replace(/\./g, '\\.')}`), "dnsmasq saw the query come from danted's relay, not from the gateway");
  t.notMatch(dnsmasq.output(), new RegExp(`from ${GATEWAY_WAN_V4.replace(/\./g, '\\.')}`), 'no query came straight from the gateway');
});
