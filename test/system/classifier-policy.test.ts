/**
 * The classifier's prefix table computed from the policy: expressible rules
 * (ipCidr alone, cidr ruleSet alone) map direct -> kernel, drop -> drop,
 * proxies -> tun; first match wins under longest-prefix match; rules the
 * classifier cannot express force 'tun' where the outcome could differ; the
 * default follows the rules, final and classifier.default; reload diffs.
 */
import t from 'tap';
import { defaultConfig, type RuleConfig, type SluiceConfig } from '../../src/config/types.js';
import { classifierTable, diffTables } from '../../src/system/classifier-policy.js';

function cfg(rules: RuleConfig[], extra: (c: SluiceConfig) => void = () => {}): SluiceConfig {
  const c = defaultConfig();
  c.dns.mode = 'real-ip';
  c.dns.hijack = false;
  c.outbounds = [
    { name: 'direct', type: 'direct', mark: null, interface: null },
    { name: 'proxy', type: 'socks5', server: '192.0.2.1', port: 1080, username: null, password: null, udp: false },
    { name: 'block', type: 'reject' },
    { name: 'sink', type: 'drop' },
  ];
  c.rules = rules;
  extra(c);
  return c;
}
const entries = (m: Map<string, string>): [string, string][] => [...m.entries()];

t.test('outbound types map to actions; final direct gives a kernel default', async (t) => {
  const r = classifierTable(
    cfg([
      { ipCidr: ['203.0.113.128/25'], outbound: 'direct' },
      { ipCidr: ['198.51.100.0/24', '2001:db8::/32'], outbound: 'proxy' },
      { ipCidr: ['192.0.2.0/24'], outbound: 'block' },
      { ipCidr: ['10.0.0.0/8'], outbound: 'sink' },
    ]),
  );
  t.same(entries(r.prefixes), [
    ['203.0.113.128/25', 'kernel'],
    ['198.51.100.0/24', 'tun'],
    ['2001:db8:0:0:0:0:0:0/32', 'tun'],
    ['192.0.2.0/24', 'tun'],
    ['10.0.0.0/8', 'drop'],
  ]);
  t.equal(r.defaultAction, 'kernel');
  t.equal(r.inexpressible, 0);
  t.equal(classifierTable(cfg([], (c) => (c.final = 'proxy'))).defaultAction, 'tun', 'final through a proxy: tun');
  t.equal(classifierTable(cfg([], (c) => (c.final = 'sink'))).defaultAction, 'tun', 'final drop: tun (the engine drops; the gateway stays reachable)');
});

t.test('first match wins under LPM: a later prefix an earlier one contains is left out', async (t) => {
  const r = classifierTable(
    cfg([
      { ipCidr: ['10.1.0.0/16'], outbound: 'proxy' },
      { ipCidr: ['10.0.0.0/8'], outbound: 'direct' },
      { ipCidr: ['10.1.2.0/24', '10.2.0.0/16'], outbound: 'sink' },
    ]),
  );
  t.same(entries(r.prefixes), [
    ['10.1.0.0/16', 'tun'],
    ['10.0.0.0/8', 'kernel'],
  ]);
});

t.test('inexpressible rules: default tun; later prefixes keep their action only when the outcome cannot differ', async (t) => {
  const r = classifierTable(
    cfg([
      { ipCidr: ['203.0.113.128/25'], outbound: 'direct' },
      { domainSuffix: ['example.com'], outbound: 'proxy' },
      { ipCidr: ['198.51.100.0/24'], outbound: 'direct' },
      { ipCidr: ['192.0.2.0/24'], outbound: 'proxy' },
      { ipCidr: ['172.16.0.0/12'], port: [443], outbound: 'direct' },
    ]),
  );
  t.equal(r.defaultAction, 'tun');
  t.equal(r.inexpressible, 2);
  t.same(entries(r.prefixes), [
    ['203.0.113.128/25', 'kernel'],
    ['198.51.100.0/24', 'tun'],
    ['192.0.2.0/24', 'tun'],
  ]);
  const same = classifierTable(cfg([{ domain: ['a.example'], outbound: 'direct' }, { ipCidr: ['198.51.100.0/24'], outbound: 'direct' }]));
  t.same(entries(same.prefixes), [['198.51.100.0/24', 'kernel']], 'an earlier domain rule with the same action does not change it');
  t.equal(classifierTable(cfg([{ domain: ['a.example'], outbound: 'proxy' }], (c) => (c.classifier.default = 'kernel'))).defaultAction, 'kernel', 'classifier.default wins');
});

t.test('cidr rule sets, bypass first, fake-IP ranges and DNS hijack', async (t) => {
  const r = classifierTable(
    cfg([{ ruleSet: ['bypass'], outbound: 'direct' }, { ruleSet: ['names'], outbound: 'proxy' }, { ruleSet: ['bypass', 'names'], outbound: 'sink' }], (c) => {
      c.ruleSets = {
        bypass: { type: "cidr", format: "sluice", behavior: null, url: null, interval: 86400, outbound: "direct", path: null, entries: ['203.0.113.128/25', '2001:db8:5::/64'] },
        names: { type: "domain", format: "sluice", behavior: null, url: null, interval: 86400, outbound: "direct", path: null, entries: ['example.com'] },
      };
      c.classifier.bypass = ['203.0.113.0/24'];
      c.dns.mode = 'fake-ip';
      c.dns.hijack = true;
      c.classifier.default = 'kernel';
    }),
  );
  t.same(entries(r.prefixes), [
    ['203.0.113.0/24', 'kernel'],
    ['198.18.0.0/16', 'tun'],
    ['fdfe:dcba:9876:1:0:0:0:0/96', 'tun'],
    ['2001:db8:5:0:0:0:0:0/64', 'kernel'],
  ]);
  t.equal(r.inexpressible, 2, 'a domain set, and a mixed one, are inexpressible');
  t.same(r.ports, [
    { protocol: 'udp', port: 53, action: 'tun' },
    { protocol: 'tcp', port: 53, action: 'tun' },
  ], 'DNS reaches the hijack when the default is kernel');
});

t.test('diffTables: set new and changed, remove gone', async (t) => {
  const a = new Map([['10.0.0.0/8', 'kernel' as const], ['192.0.2.0/24', 'tun' as const]]);
  const b = new Map([['10.0.0.0/8', 'tun' as const], ['198.51.100.0/24', 'kernel' as const]]);
  t.same(diffTables(a, b), { set: [['10.0.0.0/8', 'tun'], ['198.51.100.0/24', 'kernel']], remove: ['192.0.2.0/24'] });
});
