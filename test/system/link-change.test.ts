/**
 * sluice keeps working when the uplink changes: a workstation with two
 * uplinks to a router runs `sluice run` with route.auto; the default route
 * moves from eth0 to eth1 (eth0 goes down) while sluice runs. New flows
 * still go through the TUN, and sluice's own marked upstream sockets follow
 * the main table's new default route (the server sees the second uplink's
 * address). Nothing in sluice's table refers to a physical link, so there
 * is nothing to redo.
 */
import t from 'tap';
import path from 'node:path';
import { requireRoot } from '../harness/netns.js';
import { createLab, curl, describe, requireCommands, startWebServer, tempDir, TUN } from '../fixtures/engine/lab.js';
import { linkPackets, startSluice } from './workstation.js';

const SERVER = '203.0.113.2';

t.test('route.auto survives a default-route and link change', { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip'])) return;
  const lab = await createLab(t, 'linkchng');
  const ws = await lab.netns('workstation');
  const router = await lab.netns('router');
  const server = await lab.netns('server');
  await lab.veth(ws, 'eth0', router, 'lan0', { a: ['192.0.2.2/24'], b: ['192.0.2.1/24'] });
  await lab.veth(ws, 'eth1', router, 'lan1', { a: ['198.51.100.2/24'], b: ['198.51.100.1/24'] });
  await lab.veth(router, 'wan0', server, 'eth0', { a: ['203.0.113.1/24'], b: [`${SERVER}/24`] });
  await router.sh('sysctl -qw net.ipv4.ip_forward=1');
  await server.exec(['ip', 'route', 'add', 'default', 'via', '203.0.113.1']);
  await ws.exec(['ip', 'route', 'add', 'default', 'via', '192.0.2.1', 'dev', 'eth0']);
  await startWebServer(t, server);

  const dir = tempDir(t, 'linkchng');
  const yaml = `log: { level: info, format: json }
tun: { name: ${TUN}, mtu: 1500, offload: true, ipv4: 198.19.0.1/30, ipv6: "fdfe:dcba:9876::1/126" }
dns: { hijack: false }
route:
  auto: true
  include: [0.0.0.0/0]
`;
  const engine = await startSluice(t, ws, dir, yaml, path.join(dir, 'state.json'));
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');

  const fetch = async (label: string): Promise<string> => {
    const c0 = await linkPackets(ws, TUN);
    const r = await curl(ws, [`http://${SERVER}/`]);
    t.equal(r.code, 0, `${label}: curl works (${describe(r)})`);
    const c1 = await linkPackets(ws, TUN);
    t.ok(c1.tx > c0.tx, `${label}: through the TUN (${c0.tx} -> ${c1.tx})`);
    return (JSON.parse(r.stdout || '{}') as { peer?: string }).peer ?? '';
  };
  t.match(await fetch('on eth0'), /192\.0\.2\.2$/, 'sluice reached the server from the first uplink');

  // The uplink changes under sluice: eth0 goes away, the default route moves to eth1.
  await ws.exec(['ip', 'link', 'set', 'eth0', 'down']);
  await ws.exec(['ip', 'route', 'replace', 'default', 'via', '198.51.100.1', 'dev', 'eth1']);
  t.match(await fetch('after the switch to eth1'), /198\.51\.100\.2$/, 'sluice followed the new default route');

  const stopped = await engine.stop();
  t.equal(stopped.code, 0, 'SIGTERM exits 0');
});
