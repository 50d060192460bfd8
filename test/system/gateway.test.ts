/**
 * Gateway mode (`gateway:`) in the standard client / gateway / server
 * topology (test/harness/topology.ts), sluice running in the gateway with
 * gateway.enabled and lan0 as the LAN:
 *   - mode tun: the client's curl is policy-routed into the TUN (flow line
 *     with inbound tun, TUN counters rise);
 *   - mode tproxy: nftables TPROXYs it to sluice's transparent listener
 *     (flow line with inbound tproxy, nothing enters the TUN); with
 *     preserveSource the server sees the client's own address;
 *   - ip rules, routes (all tables), the nftables ruleset and the two
 *     forwarding sysctls are identical before start and after a clean stop,
 *     and after kill -9 + `sluice down`.
 *
 * Needs root, /dev/net/tun, curl, ip, nft (with the nft_tproxy/nft_socket
 * kernel modules).
 */
import t from 'tap';
import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, CLIENT_V6, GATEWAY_WAN_V4, GATEWAY_WAN_V6, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { createLab, curl, describe, requireCommands, startWebServer, tempDir, TUN, type Engine } from '../fixtures/engine/lab.js';
import { linkPackets, settle, sluiceDown, snapshot, spawnSluice, startSluice } from './workstation.js';

const TABLE = 2022;
const PRIORITY = 9000;
const MARK = 0x163;
const PORT = 7893;

function config(gateway: string): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns:
  mode: fake-ip
  hijack: false
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
route: { table: ${TABLE}, priority: ${PRIORITY} }
gateway: { enabled: true, lan: [lan0], ${gateway} }
`;
}

/** Routing, firewall and forwarding state of the gateway namespace. */
async function gatewaySnapshot(ns: Netns): Promise<string> {
  return (await snapshot(ns)) + '## forwarding\n' + (await ns.sh('sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding'));
}

async function lab(t: Test, tag: string): Promise<{ client: Netns; gateway: Netns; server: Netns }> {
  const l = await createLab(t, tag);
  const topo = await threeNamespaces(l);
  // Forwarding off, so the test sees sluice turn it on and put it back.
  await topo.gateway.sh('sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0');
  await settle(topo.gateway);
  await startWebServer(t, topo.server);
  return topo;
}

const UDP_ECHO = `const d = require('dgram'); let n = 0; for (const t of ['udp4', 'udp6']) { const s = d.createSocket({ type: t, ipv6Only: t === 'udp6' }); s.on('message', (m, r) => s.send(m, r.port, r.address)); s.bind(7000, () => { if (++n === 2) console.log('ready'); }); }`;
const UDP_PING = `const d = require('dgram'); const s = d.createSocket(process.argv[2]); s.on('message', (m) => { console.log(String(m)); process.exit(0); }); s.send('ping over udp', 7000, process.argv[1]); setTimeout(() => process.exit(3), 3000);`;

/** A UDP round trip from the client to the server's echo on port 7000; returns what came back. */
async function udpRoundTrip(client: Netns, host: string, family: 'udp4' | 'udp6'): Promise<string> {
  const r = await client.exec([process.execPath, '-e', UDP_PING, host, family], { allowFail: true, env: { ...process.env, NODE_OPTIONS: '' } });
  return r.stdout.trim();
}

/** curl from the client to the server over both families; returns each peer the server saw. */
async function curlBoth(t: Test, client: Netns, engine: Engine, inbound: 'tun' | 'tproxy'): Promise<string[]> {
  const peers: string[] = [];
  for (const [family, target, dst] of [
    ['IPv4', SERVER_V4, `${SERVER_V4}:80`],
    ['IPv6', `[${SERVER_V6}]`, `[${SERVER_V6}]:80`],
  ] as const) {
    const r = await curl(client, ['-g', `http://${target}/`]);
    t.equal(r.code, 0, `${family}: the client's curl through the gateway works (${describe(r)})`);
    peers.push((JSON.parse(r.stdout || '{}') as { peer?: string }).peer ?? '');
    const flow = await engine.waitFor((l) => l.msg === 'flow' && l.dst === dst && l.inbound === inbound, 5000, `a flow line to ${dst} with inbound ${inbound}`).catch((err: Error) => {
      t.fail(err.message.split('\n')[0]!);
      return null;
    });
    if (flow !== null) {
      t.equal(flow.outbound, 'direct', `${family}: flow line shows inbound ${inbound}, outbound direct`);
      t.match(String(flow.src), family === 'IPv4' ? CLIENT_V4 : CLIENT_V6, `${family}: the flow's source is the client`);
      t.equal(flow.protocol, 'http', `${family}: the flow was sniffed as HTTP`);
    }
  }
  return peers;
}

t.test('mode tun: LAN traffic is policy-routed into the TUN; state restored', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip', 'nft'])) return;
  const dir = tempDir(t, 'gwtun');
  const state = path.join(dir, 'state.json');
  const { client, gateway } = await lab(t, 'gwtunaaa');
  const before = await gatewaySnapshot(gateway);

  const engine = await startSluice(t, gateway, dir, config('mode: tun'), state);
  await engine.waitFor((l) => l.msg === 'gateway installed', 5000, '"gateway installed"');
  t.equal((await gateway.sh('sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding')).split('\n').filter(Boolean).join(','), '1,1', 'forwarding is on while running');
  const recorded = JSON.parse(readFileSync(state, 'utf8')) as { rules: unknown[]; routes: unknown[]; sysctls: { key: string; value: string }[] };
  t.equal(recorded.rules.length, 2, 'state lists iif lan0 rules (v4, v6)');
  t.equal(recorded.routes.length, 4, 'state lists the default routes via the TUN and the kill switch unreachable routes (v4, v6)');
  const perInterface = /^net\.ipv[46]\.conf\.(?!all\.)[^.]+\.forwarding$/;
  t.same(recorded.sysctls.filter((c) => !perInterface.test(c.key)), [{ key: 'net.ipv4.ip_forward', value: '0' }, { key: 'net.ipv6.conf.all.forwarding', value: '0' }, { key: 'net.ipv4.tcp_early_demux', value: '1' }], 'state lists the old forwarding values and TCP early demux');
  t.ok(recorded.sysctls.some((c) => c.key === 'net.ipv4.conf.lan0.forwarding') && recorded.sysctls.some((c) => c.key === 'net.ipv6.conf.wan0.forwarding'), 'and the per-interface flags the global write overwrites');
  t.match(await gateway.sh('ip rule; ip -6 rule'), new RegExp(`${PRIORITY}:\\s+from all iif lan0 lookup ${TABLE}`), 'the iif rule is installed');

  const c0 = await linkPackets(gateway, TUN);
  const peers = await curlBoth(t, client, engine, 'tun');
  const c1 = await linkPackets(gateway, TUN);
  t.ok(c1.tx > c0.tx + 4 && c1.rx > c0.rx + 4, `packets went through the TUN (tx ${c0.tx} -> ${c1.tx}, rx ${c0.rx} -> ${c1.rx})`);
  t.match(peers[0], new RegExp(`${GATEWAY_WAN_V4.replace(/\./g, '\\.')}$`), 'IPv4: the server saw the gateway');
  t.equal(peers[1], GATEWAY_WAN_V6, 'IPv6: the server saw the gateway');

  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.notOk(existsSync(state), 'the state file is gone');
  t.equal(await gatewaySnapshot(gateway), before, 'after SIGTERM: rules, routes, nftables and forwarding as before');
});

t.test('mode tproxy: TPROXY to transparent listeners, preserveSource, state restored after stop and kill -9 + down', { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip', 'nft'])) return;
  const dir = tempDir(t, 'gwtproxy');
  const state = path.join(dir, 'state.json');
  const { client, gateway, server } = await lab(t, 'gwtproxy');
  const echo = server.spawn([process.execPath, '-e', UDP_ECHO], { env: { ...process.env, NODE_OPTIONS: '' } });
  await new Promise<void>((resolve) => echo.stdout!.once('data', () => resolve()));
  const before = await gatewaySnapshot(gateway);

  let engine = await startSluice(t, gateway, dir, config('mode: tproxy'), state);
  await engine.waitFor((l) => l.msg === 'gateway installed', 5000, '"gateway installed"');
  const nft = await gateway.sh('nft list table inet sluice_gw');
  t.match(nft, /tproxy to :7893/, 'the nftables TPROXY rule is installed');
  const rules = await gateway.sh('ip rule; ip -6 rule');
  t.match(rules, new RegExp(`${PRIORITY}:\\s+from all fwmark 0x${MARK.toString(16)} lookup ${TABLE + 1}`), 'the fwmark rule is installed');
  t.match(await gateway.sh(`ip route show table ${TABLE + 1}`), /local default dev lo/, 'the local route is installed');
  t.match(await gateway.sh(`ss -H -lnt 'sport = :${PORT}'`), /LISTEN/, 'the transparent listener is up');

  const c0 = await linkPackets(gateway, TUN);
  const peers = await curlBoth(t, client, engine, 'tproxy');
  t.equal(await udpRoundTrip(client, SERVER_V4, 'udp4'), 'ping over udp', 'IPv4 UDP round trip through TPROXY');
  t.equal(await udpRoundTrip(client, SERVER_V6, 'udp6'), 'ping over udp', 'IPv6 UDP round trip through TPROXY');
  const c1 = await linkPackets(gateway, TUN);
  t.ok(c1.rx === c0.rx && c1.tx - c0.tx <= 2, `the TUN saw none of it (tx ${c0.tx} -> ${c1.tx}, rx ${c0.rx} -> ${c1.rx})`);
  t.notOk(engine.flows().some((f) => f.inbound === 'tun'), 'no flow line with inbound tun');
  t.match(peers[0], new RegExp(`${GATEWAY_WAN_V4.replace(/\./g, '\\.')}$`), 'IPv4: without preserveSource the server saw the gateway');
  t.equal(peers[1], GATEWAY_WAN_V6, 'IPv6: without preserveSource the server saw the gateway');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  const udpFlows = engine.flows().filter((f) => f.network === 'udp');
  t.ok(udpFlows.length >= 2 && udpFlows.every((f) => f.inbound === 'tproxy' && f.bytesUp > 0 && f.bytesDown > 0), `UDP flow lines with inbound tproxy and bytes both ways (${udpFlows.length})`);
  t.equal(await gatewaySnapshot(gateway), before, 'after SIGTERM: identical to before');

  // preserveSource: the upstream leaves from the client's address.
  engine = await startSluice(t, gateway, dir, config('mode: tproxy, preserveSource: true'), state);
  await engine.waitFor((l) => l.msg === 'gateway installed', 5000, '"gateway installed"');
  const kept = await curlBoth(t, client, engine, 'tproxy');
  t.match(kept[0], new RegExp(`(^|:)${CLIENT_V4.replace(/\./g, '\\.')}$`), `IPv4: the server saw the client ${CLIENT_V4} (${kept[0]})`);
  t.equal(kept[1], CLIENT_V6, `IPv6: the server saw the client ${CLIENT_V6}`);

  // kill -9, then sluice down.
  engine.proc.kill('SIGKILL');
  await engine.exited;
  t.not(await gatewaySnapshot(gateway), before, 'after kill -9: leftovers remain');
  const down = await sluiceDown(gateway, state);
  t.equal(down.code, 0, `sluice down exits 0 (${down.stdout.trim()} ${down.stderr.trim()})`);
  t.equal(await gatewaySnapshot(gateway), before, 'after kill -9 + sluice down: identical to before (forwarding restored too)');
  t.notOk(existsSync(state), 'sluice down deleted the state file');
});

t.test('mode tun with preserveSource: the server sees the client', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip', 'nft'])) return;
  const dir = tempDir(t, 'gwtunps');
  const state = path.join(dir, 'state.json');
  const { client, gateway } = await lab(t, 'gwtunpsv');
  const before = await gatewaySnapshot(gateway);
  const engine = await startSluice(t, gateway, dir, config('mode: tun, preserveSource: true'), state);
  await engine.waitFor((l) => l.msg === 'gateway installed', 5000, '"gateway installed"');
  const peers = await curlBoth(t, client, engine, 'tun');
  t.match(peers[0], new RegExp(`(^|:)${CLIENT_V4.replace(/\./g, '\\.')}$`), `IPv4: the server saw the client (${peers[0]})`);
  t.equal(peers[1], CLIENT_V6, 'IPv6: the server saw the client');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.equal(await gatewaySnapshot(gateway), before, 'after SIGTERM: identical to before');
});

t.test('a taken tproxy fwmark is refused naming the field; nothing installed', { timeout: 30_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft'])) return;
  const dir = tempDir(t, 'gwcoll');
  const state = path.join(dir, 'state.json');
  const l = await createLab(t, 'gwcollid');
  const { gateway } = await threeNamespaces(l);
  await gateway.exec(['ip', 'rule', 'add', 'fwmark', '0x163', 'lookup', '100', 'priority', '100']);
  await settle(gateway);
  const before = await gatewaySnapshot(gateway);
  const engine = spawnSluice(t, gateway, dir, config('mode: tproxy'), state);
  const exit = await engine.exited;
  t.equal(exit.code, 1, 'sluice run exits 1');
  t.match(engine.stderr, /gateway\.tproxyMark: fwmark 0x163 is already used/, `names gateway.tproxyMark: ${engine.stderr.trim()}`);
  t.equal(await gatewaySnapshot(gateway), before, 'nothing was installed');
});
