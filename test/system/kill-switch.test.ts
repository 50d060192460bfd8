/**
 * The kill switch (route.killSwitch, on by default): after `kill -9` the
 * TUN and its routes are gone but sluice's rules are not, and the
 * unreachable routes left in sluice's table (or, in tproxy gateway mode,
 * the forward-chain reject) refuse the steered traffic instead of letting
 * it fall through to the main table:
 *   - gateway mode tun and tproxy (client / gateway / server): the client's
 *     curl fails fast ("No route to host" from the gateway's ICMP), and an
 *     nftables counter in the server namespace shows the server never saw
 *     a packet of it;
 *   - workstation mode, with and without strictDns: the workstation's own
 *     curl to a captured prefix fails fast with EHOSTUNREACH, the excluded
 *     prefix still works, and the server never saw the refused attempts.
 * Then `sluice down` restores the namespace's state exactly (rules, routes,
 * nftables, forwarding), and only then does traffic flow, unproxied (the
 * server sees the client's own address: the kernel forwarded it).
 *
 * Needs root, /dev/net/tun, curl, ip, nft.
 */
import t from 'tap';
import type { Test } from 'tap';
import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, CLIENT_V6, SERVER_V4 as GW_SERVER_V4, SERVER_V6 as GW_SERVER_V6 } from '../harness/topology.js';
import { createLab, curl, describe, requireCommands, startWebServer, tempDir, TUN, } from '../fixtures/engine/lab.js';
import { config as workstationConfig, EXCLUDED_V4, SERVER_V4, SERVER_V6, sluiceDown, snapshot, startSluice, workstation } from './workstation.js';

/** A counter of every packet the server namespace receives on port 80 (nothing else in the lab listens there). */
async function watchServer(server: Netns): Promise<() => Promise<number>> {
  await server.sh(`nft -f - <<'EOF'
table inet probe {
  chain input {
    type filter hook input priority -300; policy accept;
    tcp dport 80 counter
  }
}
EOF`);
  return async () => {
    const m = /counter packets (\d+)/.exec(await server.sh('nft list chain inet probe input'));
    return m === null ? -1 : Number(m[1]);
  };
}

/**
 * One TCP connect from `ns` to host:80 by node, which reports the errno:
 * the kernel's answer to an unreachable route is EHOSTUNREACH (locally, or
 * from the gateway's ICMP host unreachable) or ENETUNREACH (ICMPv6 "no route").
 */
async function connectError(ns: Netns, host: string): Promise<{ code: string; ms: number }> {
  const js = `const s = require('net').connect({ host: process.argv[1], port: 80 }); const t0 = Date.now(); s.on('connect', () => { console.log('connected ' + (Date.now() - t0)); process.exit(0); }); s.on('error', (e) => { console.log(e.code + ' ' + (Date.now() - t0)); process.exit(0); }); setTimeout(() => { console.log('TIMEOUT 5000'); process.exit(0); }, 5000);`;
  const r = await ns.exec([process.execPath, '-e', js, host], { allowFail: true, env: { ...process.env, NODE_OPTIONS: '' } });
  const [code, ms] = r.stdout.trim().split(' ');
  return { code: code ?? r.stderr, ms: Number(ms) };
}

async function refusedFast(t: Test, ns: Netns, host: string, what: string): Promise<void> {
  const r = await curl(ns, ['-g', `http://${host.includes(':') ? `[${host}]` : host}/`], 5);
  t.equal(r.code, 7, `${what}: curl could not connect (${describe(r)})`);
  t.ok(r.ms < 4000, `${what}: curl was refused fast (${r.ms} ms), not timed out`);
  const e = await connectError(ns, host);
  t.match(e.code, /^(EHOSTUNREACH|ENETUNREACH)$/, `${what}: the connect fails with ${e.code} after ${e.ms} ms (an unreachable route answered)`);
}

const GW_CONFIG = (gateway: string): string => `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns:
  mode: fake-ip
  hijack: false
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${GW_SERVER_V4}:53" } ]
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], ${gateway} }
`;

async function gatewaySnapshot(ns: Netns): Promise<string> {
  return (await snapshot(ns)) + '## forwarding\n' + (await ns.sh('sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv4.conf.lan0.forwarding net.ipv4.conf.wan0.forwarding'));
}

/** IPv6 link-local addresses and DAD settled, so the kernel's own routes do not change between snapshots. */
async function settle(ns: Netns, devs: string[]): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const tentative = await ns.sh('ip -6 addr show tentative');
    const local = await ns.sh('ip -6 route show table local');
    if (tentative.trim() === '' && devs.every((d) => new RegExp(`local fe80::\\S+ dev ${d} `).test(local))) return;
    if (Date.now() > deadline) throw new Error(`IPv6 did not settle:\n${tentative}\n${local}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const mode of ['tun', 'tproxy'] as const) {
  t.test(`gateway mode ${mode}: after kill -9 the LAN's traffic is refused, not forwarded; sluice down restores`, { timeout: 120_000 }, async (t) => {
    if (!requireRoot(t)) return;
    if (!requireCommands(t, ['curl', 'ip', 'nft'])) return;
    const dir = tempDir(t, `ks${mode}`);
    const state = path.join(dir, 'state.json');
    const lab = await createLab(t, mode === "tun" ? "ksgwtunn" : "ksgwtprx");
    const { client, gateway, server } = await threeNamespaces(lab);
    // The test probes the same destination twice in a row (curl, then a
    // connect that reports the errno): the gateway's ICMP errors must not be
    // rate limited (net.ipv4.icmp_ratelimit, per namespace), or the second
    // probe waits out its timeout instead of getting the unreachable.
    await gateway.sh('sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0');
    // Forwarding on before start (a router): after the crash only the kill
    // switch stands between the LAN and the unproxied main table.
    await settle(gateway, ['lan0', 'wan0']);
    await startWebServer(t, server);
    const seen = await watchServer(server);
    const before = await gatewaySnapshot(gateway);

    const engine = await startSluice(t, gateway, dir, GW_CONFIG(`mode: ${mode}`), state);
    await engine.waitFor((l) => l.msg === 'gateway installed', 5000, '"gateway installed"');
    const recorded = JSON.parse(readFileSync(state, 'utf8')) as { routes: { type?: string }[]; nftTables: { name: string }[] };
    if (mode === 'tun') {
      t.equal(recorded.routes.filter((r) => r.type === 'unreachable').length, 2, 'the state file records the kill switch (an unreachable route per family)');
      t.match(await gateway.sh('ip route show table 2022; ip -6 route show table 2022'), /unreachable default[\s\S]*metric 4294967295[\s\S]*unreachable default/, 'sluice\'s table holds the unreachable fallbacks');
    } else {
      t.ok(recorded.nftTables.some((n) => n.name === 'sluice_gw'), 'the state file records the gateway table');
      t.match(await gateway.sh('nft list table inet sluice_gw'), /hook forward[\s\S]*iifname "lan0" meta l4proto \{ tcp, udp \} counter packets \d+ bytes \d+ reject with icmpx host-unreachable/, 'the forward chain holds the reject');
    }
    const ok = await curl(client, ['-g', `http://${GW_SERVER_V4}/`]);
    t.equal(ok.code, 0, `while running, the client's curl goes through sluice (${describe(ok)})`);
    t.match((JSON.parse(ok.stdout || '{}') as { peer?: string }).peer ?? '', /203\.0\.113\.1$/, 'the server saw the gateway (proxied)');

    engine.proc.kill('SIGKILL');
    await engine.exited;
    t.notOk(existsSync(`/proc/${engine.proc.pid}`) && readFileSync(`/proc/${engine.proc.pid}/cmdline`, 'utf8').includes('sluice'), 'sluice is gone');
    t.equal((await gateway.sh(`ip link show ${TUN} 2>/dev/null || true`)).trim(), '', 'the TUN vanished with it');
    t.match(await gateway.sh('ip rule; ip -6 rule'), mode === 'tun' ? /iif lan0 lookup 2022/ : /fwmark 0x163 lookup 2023/, 'its rules stayed');
    t.equal((await gateway.sh('sysctl -n net.ipv4.ip_forward')).trim(), '1', 'forwarding stayed on');

    const n0 = await seen();
    await refusedFast(t, client, GW_SERVER_V4, 'IPv4 after kill -9');
    await refusedFast(t, client, GW_SERVER_V6, 'IPv6 after kill -9');
    t.equal(await seen(), n0, `the server received none of it (${n0} packets on port 80 before and after)`);

    const down = await sluiceDown(gateway, state);
    t.equal(down.code, 0, `sluice down exits 0 (${down.stdout.trim()} ${down.stderr.trim()})`);
    t.equal(await gatewaySnapshot(gateway), before, 'after sluice down: rules, routes, nftables and forwarding exactly as before');
    for (const [family, target, src] of [['IPv4', GW_SERVER_V4, CLIENT_V4], ['IPv6', `[${GW_SERVER_V6}]`, CLIENT_V6]] as const) {
      const r = await curl(client, ['-g', `http://${target}/`]);
      t.equal(r.code, 0, `${family}: after sluice down traffic flows again (${describe(r)})`);
      t.match((JSON.parse(r.stdout || '{}') as { peer?: string }).peer ?? '', new RegExp(`(^|:)${src.replace(/\./g, '\\.')}$`), `${family}: unproxied: the server saw the client ${src} itself`);
    }
  });
}

for (const strict of [true, false]) {
  t.test(`workstation mode${strict ? ' with strictDns' : ''}: after kill -9 own traffic is refused; sluice down restores`, { timeout: 120_000 }, async (t) => {
    if (!requireRoot(t)) return;
    if (!requireCommands(t, ['curl', 'ip', 'nft'])) return;
    const dir = tempDir(t, `kswks${strict ? 's' : ''}`);
    const state = path.join(dir, 'state.json');
    const { ws, server } = await workstation(t, strict ? "kswkstrc" : "kswknone");
    await settle(ws, ['eth0']);
    const seen = await watchServer(server);
    const before = await snapshot(ws);

    const engine = await startSluice(t, ws, dir, workstationConfig(strict ? '  strictDns: true' : ''), state);
    await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
    const recorded = JSON.parse(readFileSync(state, 'utf8')) as { routes: { type?: string }[] };
    t.equal(recorded.routes.filter((r) => r.type === 'unreachable').length, 2, 'the state file records the kill switch');
    const ok = await curl(ws, [`http://${SERVER_V4}/`]);
    t.equal(ok.code, 0, `while running, curl goes through sluice (${describe(ok)})`);

    engine.proc.kill('SIGKILL');
    await engine.exited;
    t.equal((await ws.sh(`ip link show ${TUN} 2>/dev/null || true`)).trim(), '', 'the TUN vanished');
    const n0 = await seen();
    await refusedFast(t, ws, SERVER_V4, 'IPv4 after kill -9');
    await refusedFast(t, ws, SERVER_V6, 'IPv6 after kill -9');
    t.equal(await seen(), n0, 'the server received none of the refused attempts');
    const excluded = await curl(ws, [`http://${EXCLUDED_V4}/`]);
    t.equal(excluded.code, 0, `route.exclude still reaches the main table (${describe(excluded)})`);

    const down = await sluiceDown(ws, state);
    t.equal(down.code, 0, `sluice down exits 0 (${down.stdout.trim()} ${down.stderr.trim()})`);
    t.equal(await snapshot(ws), before, 'after sluice down: identical to before');
    const n1 = await seen();
    const again = await curl(ws, [`http://${SERVER_V4}/`]);
    t.equal(again.code, 0, `after sluice down, curl works directly (${describe(again)})`);
    t.ok((await seen()) > n1, 'and reaches the server');
  });
}

t.test('killSwitch: false leaves no fallback (the old fail-open behaviour, opted into)', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip', 'nft'])) return;
  const dir = tempDir(t, 'ksoff');
  const state = path.join(dir, 'state.json');
  const { ws } = await workstation(t, 'ksoffwks');
  const engine = await startSluice(t, ws, dir, workstationConfig('  killSwitch: false'), state);
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  t.notMatch(await ws.sh('ip route show table 2022; ip -6 route show table 2022'), /unreachable/, 'no unreachable route');
  engine.proc.kill('SIGKILL');
  await engine.exited;
  const r = await curl(ws, [`http://${SERVER_V4}/`]);
  t.equal(r.code, 0, `after kill -9 traffic falls through to main (${describe(r)})`);
  t.equal((await sluiceDown(ws, state)).code, 0, 'sluice down');
});
