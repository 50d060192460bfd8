/**
 * gateway.preserveSource for fake-IP names (issue 12 item 10): a flow to a
 * fake address stands for a name; sluice resolves it through its own
 * upstream in the client's family and connects from the client's address,
 * so the server sees the client, as for flows to plain addresses. UDP is
 * covered too (test/udp/nat-netns.test.ts), so start-up warns no more.
 * Both gateway modes, IPv4 and IPv6. `app6.example` and the plain IPv4
 * address go through a select group whose member is direct: the source is
 * kept there too (issue 13's left item).
 *
 * Needs root, /dev/net/tun, curl, dig, dnsmasq, ip, nft.
 */
import t from 'tap';
import path from 'node:path';
import type { Test } from 'tap';
import { requireRoot } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { createLab, curl, describe, requireCommands, startDnsmasq, startWebServer, tempDir, TUN } from '../fixtures/engine/lab.js';
import { startSluice } from './workstation.js';

const FAKE_DNS = '198.18.0.53';

function config(mode: string): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns:
  mode: fake-ip
  hijack: true
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: ${mode}, preserveSource: true }
outbounds:
  - { name: direct, type: direct }
  - { name: pick, type: select, outbounds: [direct] }
rules:
  - { domain: [app6.example], outbound: pick }
  - { ipCidr: [${SERVER_V4}/32], outbound: pick }
final: direct
`;
}

async function run(t: Test, tag: string, mode: 'tun' | 'tproxy'): Promise<void> {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip', 'nft', 'dig', 'dnsmasq'])) return;
  const dir = tempDir(t, tag);
  const lab = await createLab(t, tag);
  const { client, gateway, server } = await threeNamespaces(lab);
  await startWebServer(t, server);
  await startDnsmasq(t, server, { 'app.example': SERVER_V4, 'app6.example': SERVER_V6 });
  const engine = await startSluice(t, gateway, dir, config(mode), path.join(dir, 'state.json'));
  await engine.waitFor((l) => l.msg === 'gateway installed', 5000, '"gateway installed"');
  t.notOk(engine.lines.some((l) => l.field === 'gateway.preserveSource'), 'no start-up warning about gateway.preserveSource (UDP is covered)');

  for (const [name, type, client_] of [
    ['app.example', 'A', CLIENT_V4],
    ['app6.example', 'AAAA', CLIENT_V6],
  ] as const) {
    const fake = (await client.exec(['dig', '+short', '+time=3', '+tries=2', `@${FAKE_DNS}`, name, type], { allowFail: true })).stdout.trim();
    t.ok(fake !== '', `${name} ${type}: a fake address (${fake})`);
    const target = fake.includes(':') ? `[${fake}]` : fake;
    const r = await curl(client, ['-g', `http://${target}/`]);
    t.equal(r.code, 0, `${name}: curl to its fake address works (${describe(r)})`);
    const peer = (JSON.parse(r.stdout || '{}') as { peer?: string }).peer ?? '';
    t.match(peer, new RegExp(`(^|:)${client_.replace(/\./g, '\\.')}$`), `${name}: the server saw the client ${client_} (${peer})`);
    const flow = await engine.waitFor((l) => l.msg === 'flow' && l.domain === name && l.network === 'tcp', 5000, `a flow line for ${name}`);
    t.equal(flow.inbound, mode, `${name}: flow line with inbound ${mode}`);
    if (name === 'app6.example') t.same(flow.chain, ['pick', 'direct'], `${name}: through the group (chain ${JSON.stringify(flow.chain)})`);
  }
  const r = await curl(client, [`http://${SERVER_V4}/`]);
  t.equal(r.code, 0, `an address through the group: curl works (${describe(r)})`);
  const peer = (JSON.parse(r.stdout || '{}') as { peer?: string }).peer ?? '';
  t.match(peer, new RegExp(`(^|:)${CLIENT_V4.replace(/\./g, '\\.')}$`), `an address through the group: the server saw the client ${CLIENT_V4} (${peer})`);
  const flow = await engine.waitFor((l) => l.msg === 'flow' && l.dst === `${SERVER_V4}:80` && l.network === 'tcp', 5000, 'a flow line for the address');
  t.same(flow.chain, ['pick', 'direct'], `the address went through the group (chain ${JSON.stringify(flow.chain)})`);
  await engine.stop();
}

t.test('mode tproxy: preserveSource covers fake-IP names', { timeout: 90_000 }, (t) => run(t, 'psnamepx', 'tproxy'));
t.test('mode tun: preserveSource covers fake-IP names', { timeout: 90_000 }, (t) => run(t, 'psnametn', 'tun'));
