/**
 * `sluice run` with route.auto in a workstation namespace: the
 * namespace's own traffic (curl) enters the TUN through the installed
 * table and rule, while sluice's own upstream sockets carry route.mark and
 * use the main table (no loop: the curl works); excluded prefixes bypass
 * the TUN; IPv4 and IPv6; strictDns drops DNS that would leave around the
 * TUN. A clean stop removes everything.
 *
 * Needs root, /dev/net/tun, curl, ip, nft.
 */
import t from 'tap';
import { requireRoot } from '../harness/netns.js';
import { curl, describe, requireCommands, tempDir, TUN } from '../fixtures/engine/lab.js';
import { config, EXCLUDED_V4, EXCLUDED_V6, linkPackets, PRIORITY, SERVER_V4, SERVER_V6, snapshot, startSluice, TABLE, workstation } from './workstation.js';
import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';

t.test('route.auto steers the workstation into the TUN, keeps sluice out of it, honours exclude, and cleans up', { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip', 'nft', 'dig'])) return;
  const dir = tempDir(t, 'autoroute');
  const state = path.join(dir, 'state.json');
  const { ws } = await workstation(t, 'sysroute');
  const before = await snapshot(ws);

  const engine = await startSluice(t, ws, dir, config('  strictDns: true'), state);
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  t.ok(existsSync(state), 'the state file exists while running');
  const recorded = JSON.parse(readFileSync(state, 'utf8')) as { rules: unknown[]; routes: unknown[]; nftTables: unknown[] };
  t.equal(recorded.routes.length, 4, 'state lists the two include routes and their two kill-switch unreachable routes');
  t.equal(recorded.rules.length, 4, 'state lists one mark rule and one exclude rule per family');
  t.same(recorded.nftTables, [{ family: 'inet', name: 'sluice' }], 'state lists the nftables table');

  const rules = await ws.sh('ip rule; ip -6 rule');
  t.match(rules, new RegExp(`${PRIORITY}:\\s+not from all fwmark 0x162 lookup ${TABLE}`), 'the mark rule is installed');
  t.match(rules, new RegExp(`${PRIORITY - 1}:\\s+from all to 198\\.51\\.100\\.0/24 lookup main`), 'the IPv4 exclude rule is installed');
  t.match(rules, new RegExp(`${PRIORITY - 1}:\\s+from all to 2001:db8:e::/64 lookup main`), 'the IPv6 exclude rule is installed');

  for (const [family, target] of [
    ['IPv4', SERVER_V4],
    ['IPv6', `[${SERVER_V6}]`],
  ] as const) {
    const c0 = await linkPackets(ws, TUN);
    const r = await curl(ws, ['-g', `http://${target}/`]);
    t.equal(r.code, 0, `${family}: curl through the TUN works (${describe(r)})`);
    const body = JSON.parse(r.stdout || '{}') as { peer?: string };
    t.match(body.peer ?? '', family === 'IPv4' ? /203\.0\.113\.1$/ : /^2001:db8:5::1$/, `${family}: the server saw sluice's marked socket from the workstation's eth0 address`);
    const c1 = await linkPackets(ws, TUN);
    t.ok(c1.tx > c0.tx, `${family}: packets went into the TUN (${c0.tx} -> ${c1.tx})`);
    const dst = family === 'IPv4' ? `${SERVER_V4}:80` : `[${SERVER_V6}]:80`;
    const flow = await engine.waitFor((l) => l.msg === 'flow' && String(l.dst) === dst, 5000, `a flow line to ${dst}`);
    t.equal(flow.outbound, 'direct', `${family}: the flow log shows the curl relayed by the direct outbound`);
  }

  for (const [family, target] of [
    ['IPv4', EXCLUDED_V4],
    ['IPv6', `[${EXCLUDED_V6}]`],
  ] as const) {
    const c0 = await linkPackets(ws, TUN);
    const r = await curl(ws, ['-g', `http://${target}/`]);
    t.equal(r.code, 0, `${family}: curl to an excluded prefix works (${describe(r)})`);
    const c1 = await linkPackets(ws, TUN);
    t.equal(c1.tx, c0.tx, `${family}: no packet entered the TUN for the excluded prefix`);
  }
  t.notOk(
    engine.flows().some((f) => f.dst.startsWith(EXCLUDED_V4) || f.dst.includes(EXCLUDED_V6)),
    'no flow line for the excluded prefixes',
  );

  // strictDns: a query to an excluded address leaves through eth0 unmarked and is dropped.
  const q = await ws.exec(['dig', '+time=1', '+tries=1', `@${EXCLUDED_V4}`, 'example.com'], { allowFail: true });
  t.not(q.code, 0, 'a DNS query around the TUN gets no answer');
  const nft = await ws.sh('nft list table inet sluice');
  t.match(nft, /udp dport 53 counter packets [1-9]/, 'the strictDns rule dropped it');

  const stopped = await engine.stop();
  t.equal(stopped.code, 0, 'SIGTERM exits 0');
  t.notOk(existsSync(state), 'the state file is gone after a clean stop');
  t.equal(await snapshot(ws), before, 'rules, routes and nftables are exactly as before');
});

t.test('strict mode with an IPv4-only capture stops IPv6 from leaking around the TUN', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip', 'nft'])) return;
  const dir = tempDir(t, 'strict6');
  const state = path.join(dir, 'state.json');
  const { ws } = await workstation(t, 'strictsx');
  const before = await snapshot(ws);
  const engine = await startSluice(t, ws, dir, config('  include: [0.0.0.0/0]\n  strictDns: true'), state);
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  const v4 = await curl(ws, [`http://${SERVER_V4}/`]);
  t.equal(v4.code, 0, `IPv4 is captured and works (${describe(v4)})`);
  const v6 = await curl(ws, ['-g', `http://[${SERVER_V6}]/`], 3);
  t.not(v6.code, 0, `IPv6, not captured, does not leave around the TUN (${describe(v6)})`);
  t.match(await ws.sh('nft list table inet sluice'), /meta nfproto ipv6 counter packets [1-9]/, 'the strict rule dropped it');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.equal(await snapshot(ws), before, 'everything removed');
});
