/**
 * The kernel-path sets of route.kernelPath (src/system/kernel-path.ts),
 * computed from the policy: longest-prefix-match resolved into disjoint
 * intervals (a narrower proxied prefix inside a direct one is cut out),
 * the fake-IP ranges never marked, a kernel default covering everything
 * else, route.include clipping, drop and reject never marked, and the
 * nftables script (marking chain, port 53 with dns.hijack, masquerade of
 * the TUN's prefix, reload as one flush + add transaction).
 */
import t from 'tap';
import { defaultConfig, type RuleConfig, type SluiceConfig } from '../../src/config/types.js';
import { kernelIntervals, kernelPathScript, kernelPathSets, kernelPathUpdateScript } from '../../src/system/kernel-path.js';

function cfg(rules: RuleConfig[], extra: (c: SluiceConfig) => void = () => {}): SluiceConfig {
  const c = defaultConfig();
  c.dns.mode = 'real-ip';
  c.dns.hijack = false;
  c.route.auto = true;
  c.route.kernelPath = true;
  c.outbounds = [
    { name: 'direct', type: 'direct', mark: null, interface: null },
    { name: 'proxy', type: 'socks5', server: '192.0.2.1', port: 1080, username: null, password: null, udp: false },
    { name: 'sink', type: 'drop' },
  ];
  c.rules = rules;
  c.final = 'proxy';
  extra(c);
  return c;
}

const ip4 = (s: string): bigint => BigInt(s.split('.').reduce((a, o) => a * 256 + Number(o), 0));
const show4 = (list: [bigint, bigint][]): string[] => list.map(([a, b]) => `${[24, 16, 8, 0].map((k) => Number((a >> BigInt(k)) & 255n)).join('.')}-${[24, 16, 8, 0].map((k) => Number((b >> BigInt(k)) & 255n)).join('.')}`);

t.test('a narrower proxied prefix inside a direct one is cut out; drop is never marked', async (t) => {
  const s = kernelPathSets(
    cfg([
      { ipCidr: ['203.0.113.64/26'], outbound: 'proxy' },
      { ipCidr: ['203.0.113.0/24', '2001:db8::/32'], outbound: 'direct' },
      { ipCidr: ['198.51.100.0/24'], outbound: 'sink' },
    ]),
  );
  t.same(show4(s.v4), ['203.0.113.0-203.0.113.63', '203.0.113.128-203.0.113.255']);
  t.same(s.v6, [[0x20010db8n << 96n, (0x20010db8n << 96n) + (1n << 96n) - 1n]], 'IPv6 /32 as one interval');
});

t.test('fake-ip: the fake ranges stay in the TUN even under a kernel default', async (t) => {
  const s = kernelPathSets(
    cfg([], (c) => {
      c.final = 'direct';
      c.dns.mode = 'fake-ip';
    }),
  );
  t.same(show4(s.v4), ['0.0.0.0-198.17.255.255', '198.19.0.0-255.255.255.255'], 'everything but 198.18.0.0/16');
  t.equal(s.v6.length, 2, 'IPv6: both sides of the fake range');
});

t.test('a domain rule makes the default tun: only the listed prefixes are marked; include clips', async (t) => {
  const s = kernelPathSets(
    cfg([{ domainSuffix: ['example.com'], outbound: 'proxy' }, { ipCidr: ['10.0.0.0/8', '192.0.2.0/24'], outbound: 'direct' }], (c) => {
      c.final = 'direct';
      c.route.include = ['10.1.0.0/16', '192.0.2.0/24'];
    }),
  );
  t.same(show4(s.v4), [], 'a direct prefix after a proxy domain rule could be that domain: TUN');
  const s2 = kernelPathSets(
    cfg([{ ipCidr: ['10.0.0.0/8', '192.0.2.0/24'], outbound: 'direct' }, { domainSuffix: ['example.com'], outbound: 'proxy' }], (c) => {
      c.route.include = ['10.1.0.0/16', '192.0.2.0/24'];
    }),
  );
  t.same(show4(s2.v4), ['10.1.0.0-10.1.255.255', '192.0.2.0-192.0.2.255'], 'clipped to route.include');
  t.same(s2.v6, [], 'include has no IPv6');
});

t.test('the sweep handles nesting three deep and adjacent siblings', async (t) => {
  const n = (a: string, bits: number, action: 'kernel' | 'tun') => ({ start: ip4(a), end: ip4(a) + (1n << BigInt(32 - bits)) - 1n, bits, action });
  const r = kernelIntervals([n('10.0.0.0', 8, 'kernel'), n('10.1.0.0', 16, 'tun'), n('10.1.2.0', 24, 'kernel'), n('10.2.0.0', 16, 'kernel')], 4, 'tun');
  t.same(show4(r), ['10.0.0.0-10.0.255.255', '10.1.2.0-10.1.2.255', '10.2.0.0-10.255.255.255']);
});

t.test('the script: marking, DNS kept in the TUN with hijack, masquerade of the TUN prefix; reload in one transaction', async (t) => {
  const c = cfg([{ ipCidr: ['203.0.113.0/24'], outbound: 'direct' }], (c) => {
    c.dns.hijack = true;
  });
  const s = kernelPathSets(c);
  const script = kernelPathScript(c, 'sl0', s);
  t.match(script, /set direct4 \{\n {4}type ipv4_addr; flags interval;\n {4}elements = \{ 203\.0\.113\.0-203\.0\.113\.255 \}/);
  t.match(script, /set direct6 \{\n {4}type ipv6_addr; flags interval;\n {2}\}/, 'an empty set has no elements line');
  t.match(script, /type route hook output priority mangle/);
  t.match(script, /meta l4proto \{ tcp, udp \} th dport 53 return\n {4}ip daddr @direct4 meta mark set 0x162/);
  t.match(script, /meta mark 0x162 ip saddr 198\.19\.0\.0\/30 masquerade/);
  const strict = cfg([{ ipCidr: ['203.0.113.0/24'], outbound: 'direct' }], (c) => {
    c.route.strictDns = true;
  });
  t.match(kernelPathScript(strict, 'sl0', kernelPathSets(strict)), /th dport 53 return/, 'strictDns: DNS is never marked either');
  t.notMatch(kernelPathScript(cfg([{ ipCidr: ['203.0.113.0/24'], outbound: 'direct' }]), 'sl0', s), /dport 53/, 'neither: DNS to a direct address is direct');
  t.equal(kernelPathUpdateScript(s), 'flush set inet sluice_direct direct4\nflush set inet sluice_direct direct6\nadd element inet sluice_direct direct4 { 203.0.113.0-203.0.113.255 }\n');
});
