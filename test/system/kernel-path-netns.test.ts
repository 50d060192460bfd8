/**
 * Workstation selective routing (route.auto with route.kernelPath) in the
 * workstation topology: the policy sends a cidr rule set (203.0.113.2 and
 * 2001:db8:5::2) through a SOCKS5 proxy, `final` direct, fake-ip DNS with
 * hijack. So:
 *   - a direct destination by address (203.0.113.130, 2001:db8:5::130)
 *     never enters the TUN: the TUN's packet counters stay still, no flow
 *     line, the server sees the workstation's uplink address (the socket's
 *     TUN source address is masqueraded);
 *   - the proxied prefix goes through the TUN (flow line, outbound proxy,
 *     TUN counters rise);
 *   - a name answered with a fake IP still goes through the TUN, and the
 *     engine connects to its real address;
 *   - SIGHUP after editing the rule set swaps the two, live;
 *   - the namespace's rules, routes and nftables ruleset are byte-equal to
 *     before after a clean stop and after kill -9 + `sluice down`.
 *
 * Needs root, /dev/net/tun, ip, nft, curl, dig, dnsmasq, microsocks.
 */
import t from 'tap';
import path from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import { requireRoot, type Netns } from '../harness/netns.js';
import { curl, describe, requireCommands, startDnsmasq, startMicrosocks, tempDir, TUN, type Engine, type LogLine } from '../fixtures/engine/lab.js';
import { linkPackets, sluiceDown, snapshot, startSluice, workstation, SERVER_V4, SERVER_V6 } from './workstation.js';

const DIRECT_V4 = '203.0.113.130';
const DIRECT_V6 = '2001:db8:5::130';
const UPLINK_V4 = '203.0.113.1';
const UPLINK_V6 = '2001:db8:5::1';
const PROXIED = `${SERVER_V4}/32\n${SERVER_V6}/128\n`;

function config(ruleSet: string): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns:
  mode: fake-ip
  hijack: true
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
outbounds:
  - { name: direct, type: direct }
  - { name: proxy, type: socks5, server: ${SERVER_V4}, port: 1080 }
ruleSets:
  proxied: { type: cidr, path: ${ruleSet} }
rules:
  - { ruleSet: [proxied], outbound: proxy }
final: direct
route: { auto: true, table: 2022, priority: 9000, kernelPath: true }
`;
}

async function peerSeen(ws: Netns, host: string, extra: string[] = []): Promise<{ peer: string | null; why: string }> {
  const r = await curl(ws, ['-g', ...extra, `http://${host.includes(':') ? `[${host}]` : host}/`], 8);
  if (r.code !== 0) return { peer: null, why: describe(r) };
  return { peer: ((JSON.parse(r.stdout || '{}') as { peer?: string }).peer ?? '').replace(/^::ffff:/, ''), why: describe(r) };
}

const flowsTo = (engine: Engine, host: string): LogLine[] => engine.lines.filter((l) => l.msg === 'flow' && (String(l.dst) === `${host}:80` || String(l.dst) === `[${host}]:80`));

t.test('route.kernelPath: direct destinations never enter the TUN, proxied ones and fake IPs do; reload; restored', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft', 'curl', 'dig', 'microsocks'])) return;
  const dir = tempDir(t, 'kpath');
  const state = path.join(dir, 'run', 'state.json');
  const ruleSet = path.join(dir, 'proxied.txt');
  writeFileSync(ruleSet, PROXIED);
  const { ws, server } = await workstation(t, 'kpathnet');
  await server.exec(['ip', 'addr', 'add', `${DIRECT_V4}/24`, 'dev', 'eth0']);
  await server.exec(['ip', '-6', 'addr', 'add', `${DIRECT_V6}/64`, 'dev', 'eth0', 'nodad']);
  await startMicrosocks(t, server, 1080);
  await startDnsmasq(t, server, { 'app.example': DIRECT_V4 });
  const before = await snapshot(ws);

  let engine = await startSluice(t, ws, dir, config(ruleSet), state);
  const installed = await engine.waitFor((l) => l.msg === 'kernel path installed', 10_000, '"kernel path installed"');
  t.match(installed, { intervals: { v4: 3, v6: 3 } }, 'everything but the proxied addresses and the fake range, per family');
  const table = await ws.sh('nft list table inet sluice_direct');
  t.match(table, /0\.0\.0\.0-198\.17\.255\.255, 198\.19\.0\.0-203\.0\.113\.1,\s+203\.0\.113\.3-255\.255\.255\.255/, 'the IPv4 set: all but 203.0.113.2 and 198.18.0.0/16');

  // Direct by address: never into the TUN.
  const tun0 = await linkPackets(ws, TUN);
  for (const [host, uplink] of [
    [DIRECT_V4, UPLINK_V4],
    [DIRECT_V6, UPLINK_V6],
  ] as const) {
    const r = await peerSeen(ws, host);
    t.equal(r.peer, uplink, `direct ${host}: the server saw the uplink address (${r.why})`);
    t.equal(flowsTo(engine, host).length, 0, `direct ${host}: no flow line`);
  }
  const tun1 = await linkPackets(ws, TUN);
  t.ok(tun1.rx - tun0.rx <= 3 && tun1.tx - tun0.tx <= 3, `the TUN saw none of it (rx ${tun0.rx} -> ${tun1.rx}, tx ${tun0.tx} -> ${tun1.tx}; kernel IPv6 housekeeping allowed)`);

  // Proxied by address: through the TUN to the SOCKS5 proxy.
  for (const host of [SERVER_V4, SERVER_V6]) {
    const r = await peerSeen(ws, host);
    t.equal(r.peer, host, `proxied ${host}: the server saw microsocks (${r.why})`);
    const f = await engine.waitFor((l) => flowsTo(engine, host).includes(l), 5000, `a flow line to ${host}`).catch(() => null);
    t.match(f, { inbound: 'tun', outbound: 'proxy' }, `proxied ${host}: a flow line through the proxy`);
  }
  const tun2 = await linkPackets(ws, TUN);
  // At least the SYN, the handshake's ACK, the request and the FIN of each of the two (the direct ones above: at most 3, housekeeping).
  t.ok(tun2.rx >= tun1.rx + 8, `packets went through the TUN (rx ${tun1.rx} -> ${tun2.rx})`);

  // A name: fake IP, through the TUN, the engine connects to the real address.
  const fake = (await ws.exec(['dig', '+short', '+time=3', '+tries=2', `@${SERVER_V4}`, 'app.example', 'A'], { allowFail: true })).stdout.trim();
  t.match(fake, /^198\.18\.\d+\.\d+$/, `app.example answered with a fake IP (${fake})`);
  const byName = await peerSeen(ws, fake, ['-H', 'Host: app.example']);
  t.equal(byName.peer, UPLINK_V4, `app.example reached ${DIRECT_V4} direct, by the engine (${byName.why})`);
  const tun3 = await linkPackets(ws, TUN);
  t.ok(tun3.rx > tun2.rx + 4, `the fake IP went through the TUN (rx ${tun2.rx} -> ${tun3.rx})`);
  await engine.waitFor((l) => l.msg === 'flow' && l.domain === 'app.example', 5000, 'a flow line for app.example').then(
    () => t.pass('a flow line names app.example'),
    (err: Error) => t.fail(err.message.split('\n')[0]!),
  );

  // SIGHUP: 203.0.113.130 becomes proxied, 203.0.113.2 direct.
  writeFileSync(ruleSet, `${DIRECT_V4}/32\n`);
  engine.proc.kill('SIGHUP');
  const upd = await engine.waitFor((l) => l.msg === 'kernel path updated', 10_000, '"kernel path updated"');
  t.match(upd, { intervals: { v4: 3, v6: 2 } }, 'the sets were replaced');
  const moved = await peerSeen(ws, DIRECT_V4);
  t.equal(moved.peer, SERVER_V4, `after the reload ${DIRECT_V4} goes through microsocks (${moved.why})`);
  t.match(await engine.waitFor((l) => flowsTo(engine, DIRECT_V4).includes(l), 5000, `a flow line to ${DIRECT_V4}`), { outbound: 'proxy' }, 'with a flow line');
  const n = flowsTo(engine, SERVER_V4).length;
  const tun4 = await linkPackets(ws, TUN);
  t.equal((await peerSeen(ws, SERVER_V4)).peer, UPLINK_V4, `and ${SERVER_V4} is now direct by the kernel`);
  const tun5 = await linkPackets(ws, TUN);
  t.ok(tun5.rx - tun4.rx <= 3 && flowsTo(engine, SERVER_V4).length === n, `without the TUN (rx ${tun4.rx} -> ${tun5.rx})`);

  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.notOk(existsSync(state), 'no state file left');
  t.equal(await snapshot(ws), before, 'after SIGTERM: rules, routes, nftables byte-equal to before');

  writeFileSync(ruleSet, PROXIED);
  engine = await startSluice(t, ws, dir, config(ruleSet), state);
  await engine.waitFor((l) => l.msg === 'kernel path installed', 10_000, '"kernel path installed"');
  engine.proc.kill('SIGKILL');
  await engine.exited;
  t.not(await snapshot(ws), before, 'after kill -9: leftovers remain');
  const down = await sluiceDown(ws, state);
  t.equal(down.code, 0, `sluice down exits 0 (${down.stdout.trim()} ${down.stderr.trim()})`);
  t.equal(await snapshot(ws), before, 'after kill -9 + sluice down: byte-equal to before');
});
