/**
 * strictDns and IPv6 neighbour discovery (issue 12, item 10). With an
 * IPv4-only capture, strictDns drops every IPv6 packet that neither enters
 * the TUN nor carries sluice's mark, so IPv6 cannot leak around the TUN.
 * Router and neighbour solicitations (and MLD reports) are the exception,
 * by design (src/system/routing.ts, strictDnsScript): the kernel sends
 * them unmarked and outside policy routing, they are link-scope (hop limit
 * 255 / 1) and carry no user data, and without them IPv6 on the uplink
 * stops working, sluice's own marked sockets included. Shown here:
 *   - a router solicitation from a link brought up while sluice runs
 *     reaches the peer (a netdev ingress counter there);
 *   - after the neighbour cache is flushed, a ping carrying sluice's mark
 *     still reaches the server over IPv6 (its NS/NA were let out);
 *   - an unmarked IPv6 connection is still dropped, and counted.
 *
 * Needs root, /dev/net/tun, ip, nft, curl, ping.
 */
import t from 'tap';
import path from 'node:path';
import { requireRoot } from '../harness/netns.js';
import { curl, describe, requireCommands, tempDir } from '../fixtures/engine/lab.js';
import { config, SERVER_V6, startSluice, workstation } from './workstation.js';

const PROBE = [
  'table netdev probe {',
  '  chain in {',
  '    type filter hook ingress device "up1" priority 0; policy accept;',
  '    icmpv6 type nd-router-solicit ip6 hoplimit 255 counter',
  '  }',
  '}',
].join('\n');

const familyDrops = async (out: string): Promise<number> => Number(/meta nfproto ipv6 counter packets (\d+)/.exec(out)?.[1] ?? -1);

t.test('strictDns with an IPv4-only capture: RS/NS leave, other IPv6 does not', { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft', 'curl', 'ping'])) return;
  const dir = tempDir(t, 'strictnd');
  const { ws, server } = await workstation(t, 'strictnd', true);
  // A second, address-less link, brought up only once sluice runs: the kernel then solicits routers on it.
  await ws.sh(`ip link add up0 type veth peer name up1 && ip link set up1 netns ${server.name} && sysctl -qw net.ipv6.conf.up0.accept_ra=1 net.ipv6.conf.up0.forwarding=0`);
  await server.exec(['nft', '-f', '-'], { input: PROBE + '\n' });
  await server.sh('ip link set up1 up');
  const solicitations = async (): Promise<number> => Number(/counter packets (\d+)/.exec(await server.sh('nft list chain netdev probe in'))?.[1] ?? -1);

  const engine = await startSluice(t, ws, dir, config('  include: [0.0.0.0/0]\n  strictDns: true'), path.join(dir, 'state.json'));
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  t.match(await ws.sh('nft list table inet sluice'), /meta nfproto ipv6 counter/, 'IPv6 is not captured, so strictDns blocks it');

  t.equal(await solicitations(), 0, 'no router solicitation yet on the new link');
  await ws.sh('ip link set up0 up');
  const deadline = Date.now() + 15_000;
  while ((await solicitations()) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  const rs = await solicitations();
  t.ok(rs > 0, `the kernel's router solicitation left up0 and reached the peer (${rs} seen)`);

  await ws.sh('ip -6 neigh flush dev eth0');
  const ping = await ws.exec(['ping', '-6', '-c', '1', '-W', '5', '-m', String(0x162), SERVER_V6], { allowFail: true });
  t.equal(ping.code, 0, `a marked IPv6 ping still works after a neighbour cache flush: NS/NA left (${ping.stdout.split('\n').find((l) => /received/.test(l)) ?? ping.stderr.trim()})`);
  t.match(await ws.sh('ip -6 neigh show dev eth0'), new RegExp(`${SERVER_V6} lladdr`), "the server's neighbour entry was resolved again");

  const dropped0 = await familyDrops(await ws.sh('nft list table inet sluice'));
  const r = await curl(ws, ['-g', `http://[${SERVER_V6}]/`], 3);
  t.not(r.code, 0, `an unmarked IPv6 connection is still blocked (${describe(r)})`);
  const dropped1 = await familyDrops(await ws.sh('nft list table inet sluice'));
  t.ok(dropped1 > dropped0, `and counted by the family drop (${dropped0} -> ${dropped1})`);
  await engine.stop();
});
