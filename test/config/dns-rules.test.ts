/**
 * dns.rules, dns.groups, dns.fakeIp.filter and dns.hostsFile in the
 * configuration: loaded with their defaults (upstream ports written out,
 * names lower-cased), and their mistakes reported naming the field.
 */
import t from 'tap';
import type { Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { isConfigError } from '../../src/config/errors.js';

function file(t: Test, yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-dnsrules-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'c.yaml');
  writeFileSync(f, yaml);
  return f;
}

async function problems(t: Test, yaml: string): Promise<string> {
  try {
    await loadConfig(file(t, yaml));
  } catch (err) {
    if (isConfigError(err)) return err.message;
    throw err;
  }
  return '';
}

t.test('loads groups, rules, the filter and the hosts file', async (t) => {
  const f = file(
    t,
    `dns:
  groups: { corp: [ { address: "udp://192.0.2.53" } ] }
  rules: [ { domainSuffix: [Corp.Example], upstream: corp } ]
  fakeIp: { filter: [ { domain: [NTP.example] } ] }
  hostsFile: hosts.txt
`,
  );
  const c = await loadConfig(f);
  t.same(c.dns.groups, { corp: [{ address: 'udp://192.0.2.53:53', outbound: 'direct' }] });
  t.same(c.dns.rules, [{ domainSuffix: ['corp.example'], upstream: 'corp' }]);
  t.same(c.dns.fakeIp.filter, [{ domain: ['ntp.example'] }]);
  t.equal(c.dns.hostsFile, join(f, '..', 'hosts.txt'), 'relative to the config file');
  const d = await loadConfig(file(t, 'log: { level: info }\n'));
  t.same([d.dns.groups, d.dns.rules, d.dns.fakeIp.filter, d.dns.hostsFile], [{}, [], [], '/etc/hosts'], 'defaults');
});

t.test('mistakes name the field', async (t) => {
  t.match(await problems(t, 'dns:\n  rules: [ { domain: [x.test], upstream: corp } ]\n'), /dns\.rules\[0\]\.upstream: names an undefined upstream group "corp" \(defined: default\)/);
  t.match(await problems(t, 'dns:\n  groups: { corp: [ { address: "udp://192.0.2.53" } ] }\n  rules: [ { domain: [x.test], upstream: crop } ]\n'), /dns\.rules\[0\]\.upstream: .*"crop".*did you mean "corp"/);
  t.match(await problems(t, 'dns:\n  rules: [ { upstream: default } ]\n'), /dns\.rules\[0\]/);
  t.match(await problems(t, 'dns:\n  rules: [ { port: [53], upstream: default } ]\n'), /dns\.rules\[0\]\.port/);
  t.match(await problems(t, 'dns:\n  groups: { default: [ { address: "udp://192.0.2.53" } ] }\n'), /dns\.groups/);
  t.match(await problems(t, 'dns:\n  groups: { corp: [ { address: "udp://192.0.2.53", outbound: proxy } ] }\n'), /dns\.groups\.corp\[0\]\.outbound: names an undefined outbound "proxy"/);
  t.match(await problems(t, 'dns:\n  fakeIp: { filter: [ { ruleSet: [lan] } ] }\n'), /dns\.fakeIp\.filter\[0\]\.ruleSet\[0\]: names an undefined rule set "lan"/);
  t.match(await problems(t, 'dns:\n  fakeIp: { filter: [ { domainRegex: ["("] } ] }\n'), /dns\.fakeIp\.filter\[0\]\.domainRegex\[0\]/);
});
