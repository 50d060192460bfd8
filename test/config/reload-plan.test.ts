/**
 * What a reload applies and what it names as needing a restart
 * (src/config/reload-plan.ts), on configs loaded from text.
 */
import t from 'tap';
import { parseConfig } from '../../src/config/load.js';
import { planReload } from '../../src/config/reload-plan.js';

const base = (extra: string): string => `
outbounds:
  - { name: direct, type: direct }
  - { name: block, type: reject }
rules:
  - { domain: [a.example], outbound: block }
  - { ipCidr: [198.51.100.0/24], outbound: direct }
${extra}`;

t.test('changes are described; settings a reload cannot change keep their running values and are named', async (t) => {
  const start = await parseConfig(base('tun: { name: sl0 }\n'), 'x.yaml');
  const running = structuredClone(start);
  running.route.exclude = ['192.0.2.0/24']; // a run-time addition (detected prefixes): not a change in the file
  const loaded = await parseConfig(
    `
outbounds:
  - { name: direct, type: direct }
  - { name: block, type: reject }
  - { name: p, type: socks5, server: 192.0.2.9, port: 1080 }
rules:
  - { domain: [b.example], outbound: block }
  - { ipCidr: [198.51.100.0/24], outbound: direct }
final: p
tun: { name: sl9, mtu: 1400 }
dns: { mode: real-ip, cache: { maxEntries: 10 } }
`,
    'x.yaml',
  );
  const plan = planReload(running, start, loaded);
  t.same(plan.changes, ['rules: 1 added, 1 removed (2 in all)', 'final: direct -> p', 'outbounds added: p', 'dns changed: dns.cache.maxEntries'], 'the changes, one line per kind');
  t.same(plan.needRestart.sort(), ['dns.mode', 'tun.mtu', 'tun.name'], 'fields only a restart applies');
  t.equal(plan.next.tun.name, 'sl0', 'the running TUN stays');
  t.same(plan.next.route.exclude, ['192.0.2.0/24'], 'run-time additions stay');
  t.equal(plan.next.dns.mode, 'fake-ip', 'the running DNS mode stays');
  t.equal(plan.next.dns.cache.maxEntries, 10, 'the rest of dns applies');
  t.equal(plan.next.final, 'p');
  const same = planReload(running, start, await parseConfig(base('tun: { name: sl0 }\n'), 'x.yaml'));
  t.same(same, { next: same.next, changes: [], needRestart: [] }, 'an unchanged file: nothing to say');
});

t.test('classifier.bypass is applied by a reload; the rest of classifier needs a restart', async (t) => {
  const start = await parseConfig(base('classifier: { enabled: true, interfaces: [lan0], bypass: [192.0.2.0/24] }\n'), 'x.yaml');
  const loaded = await parseConfig(base('classifier: { enabled: true, interfaces: [lan1], bypass: [198.51.100.0/24, 203.0.113.0/25] }\n'), 'x.yaml');
  const plan = planReload(structuredClone(start), start, loaded);
  t.same(plan.next.classifier.bypass, ['198.51.100.0/24', '203.0.113.0/25'], 'the new bypass list applies');
  t.same(plan.next.classifier.interfaces, ['lan0'], 'the running interfaces stay');
  t.same(plan.needRestart, ['classifier.interfaces'], 'only the interfaces are named as needing a restart');
  t.ok(plan.changes.includes('classifier.bypass: 2 added, 1 removed (2 in all)'), `the change is described (${plan.changes.join('; ')})`);
});
