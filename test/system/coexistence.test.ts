/**
 * The coexistence parser on fixtures: `ip -d -j addr show` and `ip -j rule`
 * output captured from a namespace holding docker0 (a veth), a Docker
 * user bridge br-0123456789ab, virbr0, a tun named tailscale0 with
 * tailscaled's rules, plus (written by hand: this kernel has no wireguard
 * module) a wireguard link wg0 and wg-quick's `not fwmark 0xca6c lookup
 * 51820` rule, and a rule at 8990, 10 before route.priority 9000.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultConfig } from '../../src/config/types.js';
import { detectCoexistence, prefixesToExclude, reportCoexistence } from '../../src/system/coexistence.js';
import type { Runner } from '../../src/system/exec.js';
import type { Logger } from '../../src/engine/logger.js';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/fixtures/coexistence');
const fixture = (n: string): string => readFileSync(path.join(dir, n), 'utf8');
const input = { addr: fixture('addr.json'), rules4: fixture('rule4.json'), rules6: fixture('rule6.json') };
const route = { ...defaultConfig().route, auto: true };

t.test('each neighbour is found, with its prefixes, in one line', async (t) => {
  const found = detectCoexistence(input, route);
  t.same(
    found.map((f) => [f.kind, f.line, f.prefixes]),
    [
      ['docker', 'Docker bridge docker0: 203.0.113.0/24, 2001:db8:d0::/64', ['203.0.113.0/24', '2001:db8:d0::/64']],
      ['libvirt', 'libvirt bridge virbr0: 198.51.100.0/24', ['198.51.100.0/24']],
      ['docker', 'Docker bridge br-0123456789ab: 192.0.2.128/25', ['192.0.2.128/25']],
      ['tailscale', 'Tailscale tailscale0: 100.101.102.103/32, fd7a:115c:a1e0::1/128; fwmark 0x80000/0xff0000, table 52, rules at 5210 5270 v6 5270', ['100.64.0.0/10', 'fd7a:115c:a1e0::/48']],
      ['wireguard', 'WireGuard wg0: 192.0.2.64/26, 2001:db8:77::/64', ['192.0.2.64/26', '2001:db8:77::/64']],
      ['wireguard', 'WireGuard fwmark 0xca6c (wg-quick rule "ip rule 32765: not from all fwmark 0xca6c lookup 51820"): sluice\'s route.mark 0x162 must differ', []],
      ['rule', 'ip rule 8990: from all lookup 100 sits 10 before route.priority 9000', []],
    ],
  );
  t.notOk(found.some((f) => f.line.includes('fe80')), 'link-local addresses are not prefixes to exclude');
});

t.test('WSL is recognised from the kernel release', async (t) => {
  const found = detectCoexistence({ addr: '[]', rules4: '[]', rules6: '[]', osrelease: '5.15.153.1-microsoft-standard-WSL2\n' }, route);
  t.same(found.map((f) => f.kind), ['wsl']);
  t.same(detectCoexistence({ addr: '[]', rules4: '[]', rules6: '[]', osrelease: '6.18.0\n' }, route), [], 'not on a plain kernel');
});

t.test('bad input finds nothing and never throws', async (t) => {
  for (const bad of ['', 'not json', '{}', '[1, null, "x", {"ifname": 5}]', '[{"ifname":"docker0","addr_info":[{"family":"inet","local":"nope","prefixlen":99,"scope":"global"}]}]']) {
    t.doesNotThrow(() => detectCoexistence({ addr: bad, rules4: bad, rules6: bad }, route), JSON.stringify(bad));
  }
});

t.test('prefixes to exclude: only captured families, not already excluded, no duplicates', async (t) => {
  const found = detectCoexistence(input, route);
  t.same(prefixesToExclude(found, route), ['203.0.113.0/24', '2001:db8:d0::/64', '198.51.100.0/24', '192.0.2.128/25', '100.64.0.0/10', 'fd7a:115c:a1e0::/48', '192.0.2.64/26', '2001:db8:77::/64']);
  t.same(prefixesToExclude(found, { include: ['0.0.0.0/0'], exclude: ['198.51.100.0/23', '192.0.2.128/25'] }), ['203.0.113.0/24', '100.64.0.0/10', '192.0.2.64/26'], 'IPv4-only include, already excluded (or covered) left out');
  t.same(prefixesToExclude(found, { include: ['10.0.0.0/8'], exclude: [] }), [], 'nothing outside the include prefixes');
});

t.test('reportCoexistence: one log line each, the exclude list extended unless excludeDetected is off', async (t) => {
  const runner: Runner = async (argv) => ({ code: 0, stderr: '', stdout: argv.includes('addr') ? input.addr : argv.includes('-6') ? input.rules6 : input.rules4 });
  const lines: string[] = [];
  const log = { info: (_o: unknown, msg: string) => void lines.push(msg), warn: (_o: unknown, msg: string) => void lines.push(msg) } as unknown as Logger;
  const out = await reportCoexistence(route, log, runner);
  t.ok(out.exclude.includes('203.0.113.0/24') && out.exclude.includes('fd7a:115c:a1e0::/48'), 'the exclude list grew');
  const msgs = [...lines];
  t.equal(msgs.length, 7, 'one line per finding');
  t.match(msgs[0], /^coexistence: Docker bridge docker0: 203\.0\.113\.0\/24, 2001:db8:d0::\/64; kept out of the TUN: 203\.0\.113\.0\/24, 2001:db8:d0::\/64$/);
  const off = await reportCoexistence({ ...route, excludeDetected: false }, log, runner);
  t.same(off.exclude, [], 'excludeDetected: false changes nothing');
  t.match(lines.at(-7) ?? '', /NOT excluded \(route\.excludeDetected: false\)/, 'and says so');
});
