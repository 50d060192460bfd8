/**
 * gateway.mode tproxy-ebpf in the client / gateway / server topology: the
 * TC program on lan0 hands new TCP and UDP flows to sluice's transparent
 * listeners with bpf_sk_assign; no nftables TPROXY rule exists.
 *   - TCP and UDP, IPv4 and IPv6: flow lines with inbound tproxy and the
 *     original destination, UDP bytes both ways, nothing through the TUN,
 *     the assignment counters (listener, the flow's own socket) rise;
 *   - a rule on `inbound: tproxy` matches them;
 *   - preserveSource: the server sees the client's address;
 *   - rules, routes, nftables, tc and forwarding are byte-equal to before
 *     after a clean stop and after kill -9 + `sluice down`; between the
 *     two, the LAN's TCP is dropped in the kernel (no listener), never
 *     forwarded around the proxy;
 *   - without eBPF (no object; EPERM without CAP_BPF/CAP_SYS_ADMIN): one
 *     warning naming the reason, and nftables TPROXY does the same job.
 *
 * Needs root, /dev/net/tun, ip, tc, nft, curl, an eBPF-capable kernel.
 */
import t from 'tap';
import path from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { CLIENT_V4, CLIENT_V6, GATEWAY_WAN_V4, GATEWAY_WAN_V6, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { childEnv, curl, describe, Engine, requireCommands, SLUICE_BIN, tempDir, TUN } from '../fixtures/engine/lab.js';
import { fullSnapshot, linkPackets, sluiceDown, startSluice } from './workstation.js';
import { assignCounters, CONFIG_HEAD, gatewayLab, startNodeScript } from './gateway-lab.js';

function config(extra = ''): string {
  return `${CONFIG_HEAD}  - { name: block, type: reject }
rules:
  - { inbound: tproxy, port: [8081], outbound: block }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tproxy-ebpf${extra} }
`;
}

const UDP_ECHO = `const d = require('dgram'); let n = 0; for (const t of ['udp4', 'udp6']) { const s = d.createSocket({ type: t, ipv6Only: t === 'udp6' }); s.on('message', (m, r) => s.send(m, r.port, r.address)); s.bind(7000, () => { if (++n === 2) console.log('ready'); }); }`;
// Two datagrams from one socket: the second finds the session's connected reply socket (the flow's own socket).
const UDP_PING = `const d = require('dgram'); const s = d.createSocket(process.argv[2]); let n = 0; s.on('message', (m) => { if (++n === 2) { console.log(String(m)); process.exit(0); } s.send('ping over udp', 7000, process.argv[1]); }); s.send('first', 7000, process.argv[1]); setTimeout(() => process.exit(3), 4000);`;

async function udpRoundTrip(client: Netns, host: string, family: 'udp4' | 'udp6'): Promise<string> {
  const r = await client.exec([process.execPath, '-e', UDP_PING, host, family], { allowFail: true, env: { ...process.env, NODE_OPTIONS: '' } });
  return r.stdout.trim();
}

async function lab(t: Test, tag: string): Promise<{ client: Netns; gateway: Netns; server: Netns }> {
  const topo = await gatewayLab(t, tag, { web: true });
  await startNodeScript(t, topo.server, UDP_ECHO);
  return topo;
}


/** curl over both families; returns the peers the server saw, checking each flow line. */
async function curlBoth(t: Test, client: Netns, engine: Engine): Promise<string[]> {
  const peers: string[] = [];
  for (const [family, target, dst] of [
    ['IPv4', SERVER_V4, `${SERVER_V4}:80`],
    ['IPv6', `[${SERVER_V6}]`, `[${SERVER_V6}]:80`],
  ] as const) {
    const r = await curl(client, ['-g', `http://${target}/`]);
    t.equal(r.code, 0, `${family}: curl through the gateway works (${describe(r)})`);
    peers.push(((JSON.parse(r.stdout || '{}') as { peer?: string }).peer ?? '').replace(/^::ffff:/, ''));
    const flow = await engine.waitFor((l) => l.msg === 'flow' && l.dst === dst, 5000, `a flow line to ${dst}`).catch(() => null);
    t.match(flow, { inbound: 'tproxy', outbound: 'direct', protocol: 'http' }, `${family}: flow line with inbound tproxy and the original destination ${dst}`);
    t.match(String(flow?.src), family === 'IPv4' ? CLIENT_V4 : CLIENT_V6, `${family}: the flow's source is the client`);
  }
  return peers;
}

t.test('tproxy-ebpf: TCP and UDP over both families by bpf_sk_assign, preserveSource, restored after stop and kill -9 + down', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl'])) return;
  const dir = tempDir(t, 'tpebpf');
  const state = path.join(dir, 'run', 'state.json');
  const { client, gateway } = await lab(t, 'tpebpfaa');
  const before = await fullSnapshot(gateway);

  let engine = await startSluice(t, gateway, dir, config(), state);
  const attached = await engine.waitFor((l) => l.msg === 'classifier attached' || /unavailable|could not be attached/.test(String(l.msg)), 10_000, 'the classifier line');
  t.match(attached, { msg: 'classifier attached', default: 'tproxy', steered: 'tproxy', interfaces: ['lan0'] }, 'the TC program is attached to gateway.lan');
  t.match(await engine.waitFor((l) => l.msg === 'gateway installed', 5000, '"gateway installed"'), { mode: 'tproxy-ebpf', classifier: 'ebpf' }, 'gateway installed');
  t.match(await gateway.sh('tc filter show dev lan0 ingress'), /bpf/, 'a bpf filter at lan0 ingress');
  t.notMatch(await gateway.sh('nft list ruleset'), /tproxy/, 'no nftables TPROXY rule');
  t.match(await gateway.sh('ip rule; ip -6 rule'), /fwmark 0x163 lookup 2023/, 'marked packets go to local delivery');

  const a0 = await assignCounters(engine);
  const tun0 = await linkPackets(gateway, TUN);
  const peers = await curlBoth(t, client, engine);
  t.match(peers[0], GATEWAY_WAN_V4, 'IPv4: the server saw the gateway');
  t.equal(peers[1], GATEWAY_WAN_V6, 'IPv6: the server saw the gateway');
  t.equal(await udpRoundTrip(client, SERVER_V4, 'udp4'), 'ping over udp', 'IPv4 UDP: two round trips');
  t.equal(await udpRoundTrip(client, SERVER_V6, 'udp6'), 'ping over udp', 'IPv6 UDP: two round trips');
  const blocked = await curl(client, [`http://${SERVER_V4}:8081/`], 5);
  t.not(blocked.code, 0, `a rule on inbound tproxy matches (${describe(blocked)})`);
  t.match(await engine.waitFor((l) => l.msg === 'flow' && l.dst === `${SERVER_V4}:8081`, 5000, 'the blocked flow line'), { inbound: 'tproxy', rule: 0, outbound: 'block' }, 'rule 0 (inbound: tproxy) sent it to block');
  const a1 = await assignCounters(engine);
  const tun1 = await linkPackets(gateway, TUN);
  t.ok(tun1.rx === tun0.rx, `the TUN saw none of it (rx ${tun0.rx} -> ${tun1.rx})`);
  t.ok(a1.listener >= a0.listener + 4, `new flows were assigned to the listeners (${a0.listener} -> ${a1.listener})`);
  t.ok(a1.flow >= a0.flow + 6, `later packets to the flows' own sockets (${a0.flow} -> ${a1.flow})`);
  t.equal(a1.noListener + a1.assignFailed, 0, 'no assignment failed');
  t.comment(`assignment counters: ${JSON.stringify(a1)}`);
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  const udp = engine.flows().filter((f) => f.network === 'udp');
  t.ok(udp.length >= 2 && udp.every((f) => f.inbound === 'tproxy' && f.bytesUp > 0 && f.bytesDown > 0), `UDP flow lines with inbound tproxy and bytes both ways (${udp.length})`);
  t.ok(udp.some((f) => f.dst === `${SERVER_V4}:7000`) && udp.some((f) => f.dst === `[${SERVER_V6}]:7000`), 'with their original destinations');
  t.notOk(existsSync(state), 'no state file left');
  t.equal(await fullSnapshot(gateway), before, 'after SIGTERM: byte-equal to before');

  // preserveSource.
  engine = await startSluice(t, gateway, dir, config(', preserveSource: true'), state);
  await engine.waitFor((l) => l.msg === 'gateway installed', 10_000, '"gateway installed"');
  const nft = await gateway.sh('nft list ruleset');
  t.match(nft, /socket transparent 1/, 'preserveSource: the socket rule marks replies');
  t.notMatch(nft, /tproxy to/, 'and still no TPROXY rule');
  const kept = await curlBoth(t, client, engine);
  t.equal(kept[0], CLIENT_V4, `IPv4: the server saw the client (${kept[0]})`);
  t.equal(kept[1], CLIENT_V6, `IPv6: the server saw the client (${kept[1]})`);
  t.equal(await udpRoundTrip(client, SERVER_V4, 'udp4'), 'ping over udp', 'UDP with preserveSource');

  // kill -9: the filter stays and drops (no listener); then sluice down.
  engine.proc.kill('SIGKILL');
  await engine.exited;
  t.not(await fullSnapshot(gateway), before, 'after kill -9: leftovers remain');
  const r = await curl(client, [`http://${SERVER_V4}/`], 3);
  t.not(r.code, 0, `after kill -9: TCP from the LAN is dropped in the kernel, not forwarded (${describe(r)})`);
  const down = await sluiceDown(gateway, state);
  t.equal(down.code, 0, `sluice down exits 0 (${down.stdout.trim()} ${down.stderr.trim()})`);
  t.equal(await fullSnapshot(gateway), before, 'after kill -9 + sluice down: byte-equal to before');
});

t.test('tproxy-ebpf without eBPF: one warning, then nftables TPROXY', { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl'])) return;
  const dir = tempDir(t, 'tpebfb');
  const state = path.join(dir, 'state.json');
  const { client, gateway } = await lab(t, 'tpebpffb');
  const before = await fullSnapshot(gateway);
  const engine = await startSluice(t, gateway, dir, config(), state, { SLUICE_BPF_OBJECT: path.join(dir, 'missing.o') });
  const warnings = engine.lines.filter((l) => /unavailable/.test(String(l.msg)));
  t.equal(warnings.length, 1, `one warning: ${String(warnings[0]?.msg)}`);
  t.match(String(warnings[0]?.msg), /falling back to nftables TPROXY/, 'saying what takes over');
  t.match(engine.lines.find((l) => l.msg === 'gateway installed'), { mode: 'tproxy-ebpf', classifier: 'fallback' }, 'the gateway knows');
  t.match(await gateway.sh('nft list table inet sluice_gw'), /tproxy to :7893/, 'the nftables TPROXY rule is installed');
  const peers = await curlBoth(t, client, engine);
  t.equal(peers.length, 2, 'both families through TPROXY');
  t.equal(await udpRoundTrip(client, SERVER_V4, 'udp4'), 'ping over udp', 'UDP too');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.equal(await fullSnapshot(gateway), before, 'byte-equal to before');
});

t.test('tproxy-ebpf without CAP_BPF and CAP_SYS_ADMIN: the EPERM is said once, nftables TPROXY takes over', { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl', 'setpriv'])) return;
  const dir = tempDir(t, 'tpeperm');
  const state = path.join(dir, 'state.json');
  const { client, gateway } = await lab(t, 'tpeperma');
  const before = await fullSnapshot(gateway);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, config());
  // Out of the bounding set, so root's exec does not get them back: loading a TC program is refused with EPERM.
  const engine = new Engine(gateway.spawn(['setpriv', '--bounding-set', '-bpf,-sys_admin', 'env', '-u', 'NODE_OPTIONS', process.execPath, SLUICE_BIN, 'run', '--config', cfg, '--state', state], { env: childEnv }));
  t.teardown(() => {
    if (!t.passing()) t.comment(engine.transcript());
  });
  await engine.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');
  const warnings = engine.lines.filter((l) => /unavailable/.test(String(l.msg)));
  t.equal(warnings.length, 1, `one warning: ${String(warnings[0]?.msg)}`);
  t.match(String(warnings[0]?.reason), /EPERM|EACCES|permitted/i, `naming the reason: ${String(warnings[0]?.reason)}`);
  t.match(await gateway.sh('nft list table inet sluice_gw'), /tproxy to :7893/, 'nftables TPROXY instead');
  const r = await curl(client, [`http://${SERVER_V4}/`]);
  t.equal(r.code, 0, `and the LAN is proxied (${describe(r)})`);
  t.match(await engine.waitFor((l) => l.msg === 'flow' && l.dst === `${SERVER_V4}:80`, 5000, 'a flow line'), { inbound: 'tproxy' }, 'inbound tproxy');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.equal(await fullSnapshot(gateway), before, 'byte-equal to before');
});
