/**
 * Rule sets in the formats users have (Clash rule providers as text and
 * YAML, sing-box rule-set source JSON) and geoip conditions from a MaxMind
 * DB the test writes (test/fixtures/mmdb-writer.ts): loaded by the config
 * layer, matched by the compiled policy; unsupported rule kinds are
 * refused naming the file, line or rule.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isConfigError, type ConfigProblem } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import { compileConfigPolicy } from '../../src/engine/runtime.js';
import { geoIpLookup } from '../../src/engine/geoip-lookup.js';
import { parseIp } from '../../src/engine/policy/cidr-trie.js';
import type { MatchContext } from '../../src/engine/policy/types.js';
import { writeCountryMmdb } from '../fixtures/mmdb-writer.js';

function dir(t: { teardown(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'sluice-rsfmt-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function ctx(dst: string, domain: string | null): MatchContext {
  const b = parseIp(dst)!;
  return { network: 'tcp', inbound: 'tun', family: b.length === 4 ? 4 : 6, dst: b, dstPort: 443, src: parseIp('192.0.2.2')!, srcPort: 40000, domain, protocol: null };
}

async function refused(yaml: string, file: string): Promise<readonly ConfigProblem[]> {
  try {
    await parseConfig(yaml, file);
  } catch (err) {
    if (isConfigError(err)) return err.problems;
    throw err;
  }
  throw new Error('expected a refusal');
}

const head = `
outbounds:
  - { name: direct, type: direct }
  - { name: block, type: reject }
`;

t.test('Clash providers (text and YAML) and sing-box source load and match', async (t) => {
  const d = dir(t);
  writeFileSync(join(d, 'ads.txt'), '# clash domain text\nexact.example\n+.both.example\n.below.example\n*.one.example\n');
  writeFileSync(join(d, 'nets.yaml'), "payload:\n  - '198.51.100.0/24'\n  - '2001:db8:1::/48'\n");
  writeFileSync(join(d, 'mixed.yaml'), "payload:\n  - DOMAIN-SUFFIX,tracker.example\n  - DOMAIN-KEYWORD,adserv\n  - DOMAIN-REGEX,^x[0-9]+\\.example$\n  - IP-CIDR,203.0.113.128/25,no-resolve\n  - IP-CIDR6,2001:db8:2::/48\n");
  writeFileSync(
    join(d, 'sb.json'),
    JSON.stringify({ version: 2, rules: [{ domain: ['sb-exact.example'], domain_suffix: ['.sb-below.example', 'sb-suffix.example'] }, { domain_keyword: 'sbkey', ip_cidr: ['192.0.2.128/25', '2001:db8:3::1'] }] }),
  );
  const file = join(d, 'sluice.yaml');
  const cfg = await parseConfig(
    `${head}
ruleSets:
  ads: { format: clash, behavior: domain, path: ads.txt }
  nets: { format: clash, behavior: ipcidr, path: nets.yaml }
  mixed: { format: clash, behavior: classical, path: mixed.yaml }
  sb: { format: sing-box, path: sb.json }
rules:
  - { ruleSet: [ads], outbound: block }
  - { ruleSet: [nets], outbound: block }
  - { ruleSet: [mixed], outbound: block }
  - { ruleSet: [sb], outbound: block }
  - { and: [ { ruleSet: [mixed] }, { port: [443] } ], outbound: block }
final: direct
`,
    file,
  );
  t.same(cfg.ruleSets.ads!.entries, ['full:exact.example', 'both.example', '.below.example', 'regex:^[^.]+\\.one\\.example$']);
  t.equal(cfg.ruleSets.ads!.type, 'domain');
  t.equal(cfg.ruleSets.nets!.type, 'cidr');
  t.equal(cfg.ruleSets.mixed!.type, 'mixed', 'classical with names and prefixes is a mixed set');
  t.equal(cfg.ruleSets.sb!.type, 'mixed');
  const p = compileConfigPolicy(cfg, null);
  const rule = (dst: string, name: string | null): number => p.match(ctx(dst, name)).ruleIndex;
  t.equal(rule('192.0.2.9', 'exact.example'), 0, 'clash exact');
  t.equal(rule('192.0.2.9', 'www.exact.example'), -1, 'clash exact is exact');
  t.equal(rule('192.0.2.9', 'both.example'), 0, '+. matches the name');
  t.equal(rule('192.0.2.9', 'a.b.both.example'), 0, 'and below');
  t.equal(rule('192.0.2.9', 'below.example'), -1, '. not the name');
  t.equal(rule('192.0.2.9', 'a.below.example'), 0, '. below');
  t.equal(rule('192.0.2.9', 'a.one.example'), 0, '*. one label');
  t.equal(rule('192.0.2.9', 'a.b.one.example'), -1, '*. only one label');
  t.equal(rule('198.51.100.7', null), 1, 'clash ipcidr v4');
  t.equal(rule('2001:db8:1::5', null), 1, 'clash ipcidr v6');
  t.equal(rule('192.0.2.9', 'x.tracker.example'), 2, 'classical DOMAIN-SUFFIX');
  t.equal(rule('192.0.2.9', 'my-adserv-1.example'), 2, 'classical DOMAIN-KEYWORD');
  t.equal(rule('192.0.2.9', 'x42.example'), 2, 'classical DOMAIN-REGEX');
  t.equal(rule('203.0.113.200', null), 2, 'classical IP-CIDR');
  t.equal(rule('2001:db8:2::1', null), 2, 'classical IP-CIDR6');
  t.equal(rule('192.0.2.9', 'sb-exact.example'), 3, 'sing-box domain');
  t.equal(rule('192.0.2.9', 'sb-below.example'), -1, 'sing-box .suffix is below only');
  t.equal(rule('192.0.2.9', 'a.sb-below.example'), 3);
  t.equal(rule('192.0.2.9', 'sb-suffix.example'), 3, 'sing-box suffix');
  t.equal(rule('192.0.2.9', 'xsbkeyx.example'), 3, 'sing-box keyword');
  t.equal(rule('192.0.2.200', null), 3, 'sing-box ip_cidr');
  t.equal(rule('2001:db8:3::1', null), 3, 'sing-box bare address = host prefix');
  t.equal(rule('2001:db8:3::2', null), -1);
});

t.test('unsupported kinds are refused with the file, line or rule named', async (t) => {
  const d = dir(t);
  writeFileSync(join(d, 'c.txt'), 'DOMAIN,ok.example\nPROCESS-NAME,curl\nDST-PORT,443\nIP-CIDR,10.0.0.1/8\n');
  writeFileSync(join(d, 's.json'), JSON.stringify({ version: 1, rules: [{ domain: 'ok.example', port: [443] }, { type: 'logical', mode: 'and', rules: [] }, { process_name: ['curl'] }] }));
  writeFileSync(join(d, 'v.json'), JSON.stringify({ version: 9, rules: [] }));
  const p = await refused(
    `${head}
ruleSets:
  c: { format: clash, behavior: classical, path: c.txt }
  s: { format: sing-box, path: s.json }
  v: { format: sing-box, path: v.json }
  n: { format: clash, path: c.txt }
  x: { format: sluice, path: c.txt }
rules: [ { ruleSet: [c, s, v], outbound: block } ]
`,
    join(d, 'sluice.yaml'),
  );
  const text = p.map((x) => `${x.file.split('/').pop()}:${x.line} ${x.path}: ${x.message}`);
  t.comment(text.join('\n'));
  t.ok(text.some((l) => /^c\.txt:2 ruleSets\.c: rule type PROCESS-NAME is not supported/.test(l)), 'clash PROCESS-NAME, at its line');
  t.ok(text.some((l) => /^c\.txt:3 .*DST-PORT is not supported/.test(l)), 'clash DST-PORT');
  t.ok(text.some((l) => /^c\.txt:4 .*host bits set; did you mean 10\.0\.0\.0\/8/.test(l)), 'a bad CIDR');
  t.ok(text.some((l) => /s\.json:0 ruleSets\.s: rules\[0\]\.port: not supported/.test(l)), 'sing-box port');
  t.ok(text.some((l) => /rules\[1\]: logical rules are not supported/.test(l)), 'sing-box logical');
  t.ok(text.some((l) => /rules\[2\]\.process_name: not supported/.test(l)), 'sing-box process_name');
  t.ok(text.some((l) => /v\.json.*version: expected 1, 2 or 3, got 9/.test(l)), 'sing-box version');
  t.ok(text.some((l) => /ruleSets\.n\.behavior: missing \(required for format clash\)/.test(l)), 'clash without behavior');
  t.ok(text.some((l) => /ruleSets\.x\.type: missing \(required for format sluice\)/.test(l)), 'sluice without type');
});

t.test('geoip conditions read a MaxMind DB the test writes', async (t) => {
  const d = dir(t);
  writeFileSync(join(d, 'country.mmdb'), writeCountryMmdb({ '198.51.100.0/24': 'DE', '203.0.113.128/25': 'FR', '2001:db8:5::/48': 'JP' }));
  writeFileSync(join(d, 'bad.mmdb'), 'not a database');
  const file = join(d, 'sluice.yaml');
  const cfg = await parseConfig(
    `${head}
geoip: { database: country.mmdb }
rules:
  - { geoip: [de, JP], outbound: block }
  - { and: [ { geoip: [FR] }, { port: [443] } ], outbound: block }
final: direct
`,
    file,
  );
  t.equal(cfg.geoip.database, join(d, 'country.mmdb'), 'the path is resolved next to the config');
  t.same(cfg.rules[0]!.geoip, ['DE', 'JP'], 'codes upper-cased');
  const p = compileConfigPolicy(cfg, geoIpLookup(cfg.geoip.database!));
  t.equal(p.match(ctx('198.51.100.7', null)).ruleIndex, 0, 'DE');
  t.equal(p.match(ctx('2001:db8:5::2', null)).ruleIndex, 0, 'JP over IPv6');
  t.equal(p.match(ctx('203.0.113.200', null)).ruleIndex, 1, 'FR with port 443');
  t.equal(p.match(ctx('203.0.113.2', null)).ruleIndex, -1, 'not in the database');
  const noDb = await refused(`${head}\nrules: [ { geoip: [DE], outbound: block } ]\n`, file);
  t.match(noDb[0], { path: 'rules[0].geoip', message: /set geoip\.database/ }, 'a geoip rule without a database');
  const bad = await refused(`${head}\ngeoip: { database: bad.mmdb }\n`, file);
  t.match(bad[0], { path: 'geoip.database', message: /is not a MaxMind DB/ }, 'a file that is no mmdb');
  const code = await refused(`${head}\ngeoip: { database: country.mmdb }\nrules: [ { geoip: [DEU], outbound: block } ]\n`, file);
  t.match(code[0], { path: 'rules[0].geoip[0]', message: /two-letter country code/ });
});
