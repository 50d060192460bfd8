/**
 * The eBPF classifier together with gateway mode (classifier.enabled and
 * gateway.enabled), in the client / gateway / server topology, for both
 * gateway modes. The policy sends a cidr rule set (203.0.113.128/25 and
 * 2001:db8:5::100/120) direct and everything else through a SOCKS5 proxy
 * (microsocks on the server):
 *   - forwarding is off before, on while running, restored after;
 *   - a direct prefix is forwarded by the kernel untouched: the server sees
 *     the client's own address, no flow line, the TUN's packet counters
 *     stay still, the classifier's kernel counter rises;
 *   - the rest goes through the TUN (mode tun) or the TPROXY listeners
 *     (mode tproxy) to the SOCKS5 proxy: a flow line with that inbound and
 *     outbound proxy, the server sees the proxy;
 *   - SIGHUP after editing the rule set moves 203.0.113.128/25 to the proxy
 *     side, live;
 *   - the namespace's rules, routes, nftables ruleset, tc qdiscs and
 *     filters and forwarding sysctls are byte-equal to before after a
 *     clean stop and after kill -9 + `sluice down`; between the kill and
 *     the `down`, the direct prefix still works and the proxied side is
 *     refused (kill switch), never forwarded around the proxy.
 *
 * Needs root, /dev/net/tun, ip, tc, nft, curl, microsocks, an eBPF-capable kernel.
 */
import t from 'tap';
import path from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { createLab, curl, describe, requireCommands, startMicrosocks, startWebServer, tempDir, TUN, type Engine, type LogLine } from '../fixtures/engine/lab.js';
import { fullSnapshot, linkPackets, settle, sluiceDown, startSluice } from './workstation.js';
import { CONFIG_HEAD } from './gateway-lab.js';

const DIRECT_V4 = '203.0.113.130';
const DIRECT_V6 = '2001:db8:5::130';
const FAST = '203.0.113.128/25\n2001:db8:5::100/120\n';

type Counters = Record<'kernel' | 'tun' | 'tproxy' | 'drop', { packets: number; bytes: number }>;

function config(mode: 'tun' | 'tproxy', ruleSetFile: string): string {
  return `${CONFIG_HEAD}  - { name: proxy, type: socks5, server: ${SERVER_V4}, port: 1080 }
ruleSets:
  fast: { type: cidr, path: ${ruleSetFile} }
rules:
  - { ruleSet: [fast], outbound: direct }
final: proxy
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: ${mode} }
classifier: { enabled: true }
`;
}

async function classifierCounters(engine: Engine): Promise<Counters> {
  const n = engine.lines.length;
  engine.proc.kill('SIGUSR2');
  const line = await engine.waitFor<LogLine & { classifier?: Counters }>((l) => l.msg === 'counters' && engine.lines.indexOf(l) >= n, 5000, 'a counters line');
  if (line.classifier === undefined) throw new Error(`no classifier counters in ${JSON.stringify(line)}`);
  return line.classifier;
}

async function lab(t: Test, tag: string): Promise<{ client: Netns; gateway: Netns; server: Netns }> {
  const l = await createLab(t, tag);
  const topo = await threeNamespaces(l);
  await topo.server.exec(['ip', 'addr', 'add', `${DIRECT_V4}/24`, 'dev', 'eth0']);
  await topo.server.exec(['ip', '-6', 'addr', 'add', `${DIRECT_V6}/64`, 'dev', 'eth0', 'nodad']);
  // Forwarding off, so the test sees sluice turn it on and put it back.
  await topo.gateway.sh('sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
  await settle(topo.gateway);
  await startWebServer(t, topo.server);
  await startMicrosocks(t, topo.server, 1080);
  return topo;
}

/** curl from the client; returns the peer the web server saw, or null when the request failed. */
async function peerSeen(client: Netns, host: string): Promise<{ peer: string | null; why: string }> {
  const r = await curl(client, ['-g', `http://${host.includes(':') ? `[${host}]` : host}/`], 8);
  if (r.code !== 0) return { peer: null, why: describe(r) };
  return { peer: ((JSON.parse(r.stdout || '{}') as { peer?: string }).peer ?? '').replace(/^::ffff:/, ''), why: describe(r) };
}

const flowsTo = (engine: Engine, host: string): LogLine[] => engine.lines.filter((l) => l.msg === 'flow' && (String(l.dst) === `${host}:80` || String(l.dst) === `[${host}]:80`));

async function checkMode(t: Test, mode: 'tun' | 'tproxy'): Promise<void> {
  const dir = tempDir(t, `clsgw${mode}`);
  const state = path.join(dir, 'run', 'state.json');
  const ruleSet = path.join(dir, 'fast.txt');
  writeFileSync(ruleSet, FAST);
  const { client, gateway } = await lab(t, `clsgw${mode.slice(0, 3)}`);
  const before = await fullSnapshot(gateway);
  const inbound = mode === 'tun' ? 'tun' : 'tproxy';

  let engine = await startSluice(t, gateway, dir, config(mode, ruleSet), state);
  const attached = await engine.waitFor((l) => l.msg === 'classifier attached' || /classifier unavailable|could not be attached/.test(String(l.msg)), 10_000, 'the classifier line');
  t.equal(attached.msg, 'classifier attached', `the classifier attached (${JSON.stringify(attached)})`);
  t.match(attached, { default: inbound, prefixes: 2, steered: inbound, interfaces: ['lan0'] }, `default ${inbound}, two kernel prefixes, on gateway.lan`);
  const installed = await engine.waitFor((l) => l.msg === 'gateway installed', 5000, '"gateway installed"');
  t.match(installed, { classifier: 'ebpf', mode }, 'the gateway knows the classifier steers');
  if (mode === 'tun') await gateway.sh(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0`);
  t.equal((await gateway.sh('sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding')).split('\n').filter(Boolean).join(','), '1,1', 'forwarding is on while running');
  t.match(await gateway.sh('tc filter show dev lan0 ingress'), /bpf/, 'a bpf filter sits at lan0 ingress');
  const rules = await gateway.sh('ip rule; ip -6 rule');
  t.notMatch(rules, /iif lan0/, 'no iif lan0 rule: the classifier steers');
  if (mode === 'tun') t.match(rules, /fwmark 0x164 lookup 2022/, 'marked packets are routed into the TUN');
  else t.match(await gateway.sh('nft list table inet sluice_gw'), /meta mark 0x00000164 meta l4proto tcp tproxy to :7893/, 'TPROXY takes only packets the classifier marked');

  // Direct prefixes: the kernel forwards them untouched.
  const c0 = await classifierCounters(engine);
  const tun0 = await linkPackets(gateway, TUN);
  for (const [host, self] of [
    [DIRECT_V4, CLIENT_V4],
    [DIRECT_V6, CLIENT_V6],
  ] as const) {
    const r = await peerSeen(client, host);
    t.equal(r.peer, self, `direct ${host}: the server saw the client itself (${r.why})`);
    t.equal(flowsTo(engine, host).length, 0, `direct ${host}: no flow line`);
  }
  const c1 = await classifierCounters(engine);
  const tun1 = await linkPackets(gateway, TUN);
  // A few packets of the kernel's own IPv6 housekeeping (router solicitation, MLD) may cross a fresh TUN.
  t.ok(tun1.rx === tun0.rx && tun1.tx - tun0.tx <= 3, `the TUN saw none of it (tx ${tun0.tx} -> ${tun1.tx}, rx ${tun0.rx} -> ${tun1.rx})`);
  t.ok(c1.kernel.packets >= c0.kernel.packets + 8, `the kernel counter rose by ${c1.kernel.packets - c0.kernel.packets} packets, ${c1.kernel.bytes - c0.kernel.bytes} bytes`);
  // The client's own IPv6 housekeeping (router solicitation, MLD to ff02::) takes the default meanwhile.
  t.ok(c1[inbound].packets - c0[inbound].packets <= 3, `the ${inbound} counter stayed still (${c0[inbound].packets} -> ${c1[inbound].packets})`);

  // The rest: through the TUN or TPROXY to the SOCKS5 proxy.
  for (const host of [SERVER_V4, SERVER_V6]) {
    const r = await peerSeen(client, host);
    t.equal(r.peer, host.includes(':') ? SERVER_V6 : SERVER_V4, `proxied ${host}: the server saw microsocks, not the client (${r.why})`);
    const flow = await engine.waitFor((l) => flowsTo(engine, host).includes(l), 5000, `a flow line to ${host}`).catch(() => null);
    t.match(flow, { inbound, outbound: 'proxy' }, `proxied ${host}: flow line with inbound ${inbound}, outbound proxy`);
  }
  const c2 = await classifierCounters(engine);
  const tun2 = await linkPackets(gateway, TUN);
  t.ok(c2[inbound].packets >= c1[inbound].packets + 8, `the ${inbound} counter rose by ${c2[inbound].packets - c1[inbound].packets}`);
  if (mode === 'tun') t.ok(tun2.tx > tun1.tx + 8, `packets went through the TUN (tx ${tun1.tx} -> ${tun2.tx})`);
  else t.ok(tun2.rx === tun1.rx, `tproxy: still nothing through the TUN (rx ${tun1.rx} -> ${tun2.rx})`);

  // SIGHUP after editing the rule set: 203.0.113.128/25 and the IPv6 prefix move to the proxy side, live.
  writeFileSync(ruleSet, '198.51.100.0/24\n');
  engine.proc.kill('SIGHUP');
  const upd = await engine.waitFor((l) => l.msg === 'classifier updated', 10_000, '"classifier updated"');
  t.match(upd, { set: 1, removed: 2 }, 'one prefix set, two removed');
  const moved = await peerSeen(client, DIRECT_V4);
  t.not(moved.peer, CLIENT_V4, `after the reload ${DIRECT_V4} is proxied (${moved.why})`);
  const mflow = await engine.waitFor((l) => flowsTo(engine, DIRECT_V4).includes(l), 5000, `a flow line to ${DIRECT_V4}`).catch(() => null);
  t.match(mflow, { inbound, outbound: 'proxy' }, 'and has a flow line through the proxy');

  // Clean stop.
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.notOk(existsSync(state), 'no state file left');
  t.equal(await fullSnapshot(gateway), before, 'after SIGTERM: rules, routes, nftables, tc, forwarding byte-equal to before');

  // kill -9: fail closed for the proxied side, the kernel path keeps working; then sluice down.
  writeFileSync(ruleSet, FAST);
  engine = await startSluice(t, gateway, dir, config(mode, ruleSet), state);
  await engine.waitFor((l) => l.msg === 'gateway installed', 10_000, '"gateway installed"');
  engine.proc.kill('SIGKILL');
  await engine.exited;
  t.not(await fullSnapshot(gateway), before, 'after kill -9: the filter, rules and tables remain');
  t.equal((await peerSeen(client, DIRECT_V4)).peer, CLIENT_V4, 'after kill -9: the direct prefix is still forwarded by the kernel');
  const refused = await peerSeen(client, SERVER_V4);
  t.equal(refused.peer, null, `after kill -9: the proxied side is refused, not forwarded around the proxy (${refused.why})`);
  const down = await sluiceDown(gateway, state);
  t.equal(down.code, 0, `sluice down exits 0 (${down.stdout.trim()} ${down.stderr.trim()})`);
  t.equal(await fullSnapshot(gateway), before, 'after kill -9 + sluice down: byte-equal to before');
  t.notOk(existsSync(state), 'sluice down deleted the state file');
}

t.test('classifier + gateway mode tun: direct prefixes by the kernel, the rest through the TUN to SOCKS5', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl', 'microsocks'])) return;
  await checkMode(t, 'tun');
});

t.test('classifier + gateway mode tproxy: direct prefixes by the kernel, the rest through TPROXY to SOCKS5', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl', 'microsocks'])) return;
  await checkMode(t, 'tproxy');
});

t.test('classifier + gateway mode tproxy without eBPF: one warning, nftables TPROXYs all but classifier.bypass', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl', 'microsocks'])) return;
  const dir = tempDir(t, 'clsgwfb');
  const state = path.join(dir, 'state.json');
  const ruleSet = path.join(dir, 'fast.txt');
  writeFileSync(ruleSet, '198.51.100.0/24\n');
  const { client, gateway } = await lab(t, 'clsgwfbk');
  const before = await fullSnapshot(gateway);
  const yaml = config('tproxy', ruleSet).replace('classifier: { enabled: true }', 'classifier: { enabled: true, bypass: [203.0.113.128/25, "2001:db8:5::100/120"] }');
  const engine = await startSluice(t, gateway, dir, yaml, state, { SLUICE_BPF_OBJECT: path.join(dir, 'missing.o') });
  const warnings = engine.lines.filter((l) => /classifier unavailable/.test(String(l.msg)));
  t.equal(warnings.length, 1, `one warning: ${String(warnings[0]?.msg)}`);
  t.match(String(warnings[0]?.msg), /falling back to nftables alone/, 'saying what steers instead');
  t.match(String(warnings[0]?.reason), /missing\.o.*missing/, 'and why');
  t.match(engine.lines.find((l) => l.msg === 'gateway installed'), { classifier: 'fallback' }, 'the gateway knows');
  t.equal(await gateway.sh('tc filter show dev lan0 ingress'), '', 'nothing attached');
  t.match(await gateway.sh('nft list table inet sluice_gw'), /ip daddr 203\.0\.113\.128\/25 accept/, 'the bypass prefix is exempt from TPROXY');
  for (const [host, self] of [
    [DIRECT_V4, CLIENT_V4],
    [DIRECT_V6, CLIENT_V6],
  ] as const) {
    t.equal((await peerSeen(client, host)).peer, self, `bypass ${host}: forwarded by the kernel, the server saw the client`);
    t.equal(flowsTo(engine, host).length, 0, `bypass ${host}: no flow line`);
  }
  t.equal((await peerSeen(client, SERVER_V4)).peer, SERVER_V4, 'elsewhere: through the proxy');
  t.match(await engine.waitFor((l) => flowsTo(engine, SERVER_V4).includes(l), 5000, 'a flow line'), { inbound: 'tproxy', outbound: 'proxy' }, 'a tproxy flow line');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.equal(await fullSnapshot(gateway), before, 'byte-equal to before');
});
