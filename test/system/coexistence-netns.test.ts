/**
 * Coexistence in a namespace: the workstation gets a veth named docker0
 * (192.0.2.1/25, 2001:db8:d0::1/64), a bridge named virbr0
 * (192.0.2.129/25), a rule at 8990 (10 before route.priority), and a
 * WireGuard interface when the kernel has the module. sluice with
 * route.auto reports each in one line and keeps their prefixes off the
 * TUN (`ip route get` resolves them to their own devices, the include
 * prefix to the TUN); with route.excludeDetected: false they are captured.
 * A clean stop leaves the namespace as it was.
 *
 * Needs root, /dev/net/tun, ip, nft.
 */
import t from 'tap';
import path from 'node:path';
import { requireRoot } from '../harness/netns.js';
import { requireCommands, tempDir, TUN } from '../fixtures/engine/lab.js';
import { config, SERVER_V4, snapshot, startSluice, workstation } from './workstation.js';

t.test('Docker, libvirt and WireGuard neighbours are reported and stay off the TUN', { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft'])) return;
  const dir = tempDir(t, 'coexist');
  const state = path.join(dir, 'state.json');
  const { ws } = await workstation(t, 'coexists', false);
  await ws.sh('ip link add docker0 type veth peer name vethd0 && ip addr add 192.0.2.1/25 dev docker0 && ip addr add 2001:db8:d0::1/64 dev docker0 nodad && ip link set vethd0 up && ip link set docker0 up');
  await ws.sh('ip link add virbr0 type bridge && ip addr add 192.0.2.129/25 dev virbr0 && ip link set virbr0 up');
  await ws.sh('ip rule add priority 8990 lookup 100');
  const wg = await ws.exec(['ip', 'link', 'add', 'wg0', 'type', 'wireguard'], { allowFail: true });
  const haveWg = wg.code === 0;
  if (haveWg) {
    await ws.sh('ip addr add 198.51.100.129/25 dev wg0 && ip link set wg0 up');
  } else {
    t.comment(`no WireGuard subcase: "ip link add wg0 type wireguard" failed (${wg.stderr.trim()}); the kernel lacks the module. The parser's WireGuard cases are covered on fixtures in coexistence.test.ts.`);
  }
  const before = await snapshot(ws);

  let engine = await startSluice(t, ws, dir, config(), state);
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  const lines = engine.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('coexistence: ')).map((l) => l.msg!);
  t.comment(lines.join('\n'));
  t.ok(lines.includes('coexistence: Docker bridge docker0: 192.0.2.0/25, 2001:db8:d0::/64; kept out of the TUN: 192.0.2.0/25, 2001:db8:d0::/64'), 'one line for docker0, its prefixes excluded');
  t.ok(lines.includes('coexistence: libvirt bridge virbr0: 192.0.2.128/25; kept out of the TUN: 192.0.2.128/25'), 'one line for virbr0, its prefix excluded');
  t.ok(lines.includes('coexistence: ip rule 8990: from all lookup 100 sits 10 before route.priority 9000'), 'one line for the nearby rule');
  if (haveWg) t.ok(lines.some((l) => l.startsWith('coexistence: WireGuard wg0: 198.51.100.128/25; kept out of the TUN')), 'one line for wg0, its prefix excluded');
  t.equal(lines.length, haveWg ? 4 : 3, 'nothing else reported');

  const rules = await ws.sh('ip rule; ip -6 rule');
  t.match(rules, /8999:\s+from all to 192\.0\.2\.0\/25 lookup main/, 'an exclude rule for docker0');
  t.match(rules, /8999:\s+from all to 2001:db8:d0::\/64 lookup main/, 'and its IPv6 prefix');
  t.match(rules, /8999:\s+from all to 192\.0\.2\.128\/25 lookup main/, 'an exclude rule for virbr0');
  t.match(await ws.sh('ip route get 192.0.2.5'), /dev docker0/, 'a container address routes to docker0, not the TUN');
  t.match(await ws.sh('ip -6 route get 2001:db8:d0::5'), /dev docker0/, 'so does its IPv6 address');
  t.match(await ws.sh('ip route get 192.0.2.130'), /dev virbr0/, 'a libvirt guest routes to virbr0');
  t.match(await ws.sh(`ip route get ${SERVER_V4}`), new RegExp(`dev ${TUN} table 2022`), 'the rest still enters the TUN');
  t.equal((await engine.stop()).code, 0, 'clean stop');
  t.equal(await snapshot(ws), before, 'after the stop the namespace is as before (the exclude rules went too)');

  // Opting out: the detected prefixes are captured like any other.
  engine = await startSluice(t, ws, dir, config('  excludeDetected: false'), state);
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  t.ok(engine.lines.some((l) => l.msg === 'coexistence: Docker bridge docker0: 192.0.2.0/25, 2001:db8:d0::/64; NOT excluded (route.excludeDetected: false)'), 'still reported, marked as not excluded');
  t.match(await ws.sh('ip route get 192.0.2.5'), new RegExp(`dev ${TUN} table 2022`), 'with excludeDetected: false docker0\'s prefix enters the TUN');
  t.equal((await engine.stop()).code, 0, 'clean stop');
  t.equal(await snapshot(ws), before, 'and the namespace is as before');
});
