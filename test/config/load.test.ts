import t from 'tap';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, isConfigError, type ConfigProblem } from '../../src/config/errors.js';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import { schemaIssues } from '../../src/config/schema-errors.js';
import { semanticIssues } from '../../src/config/semantic.js';
import { defaultConfig, type SluiceConfig } from '../../src/config/types.js';

const routes = new URL('../../../routes/', import.meta.url).pathname;

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function problemsOf(p: Promise<unknown>): Promise<readonly ConfigProblem[]> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  if (!isConfigError(err)) throw new Error(`expected a ConfigError, got ${String(err)}`);
  return err.problems;
}

/** 1-based line of the first line containing `marker`. */
function lineOf(text: string, marker: string): number {
  const i = text.split('\n').findIndex((l) => l.includes(marker));
  if (i < 0) throw new Error(`marker ${marker} not in text`);
  return i + 1;
}

/** 1-based column where `needle` starts on the line containing `marker`. */
function columnOf(text: string, marker: string, needle: string): number {
  return text.split('\n')[lineOf(text, marker) - 1]!.indexOf(needle) + 1;
}

t.test('every shipped policy in routes/ is valid', async (t) => {
  const files = readdirSync(routes).filter((f) => f.endsWith('.yaml'));
  t.ok(files.length >= 3, 'the three example policies are there');
  for (const f of files) {
    const cfg = await loadConfig(join(routes, f));
    t.ok(cfg.outbounds.length > 0, `${f} loads`);
  }
});

t.test('the blocklist example loads its rule-set files relative to itself', async (t) => {
  const cfg = await loadConfig(join(routes, 'blocklist.yaml'));
  t.equal(cfg.ruleSets.ads!.path, join(routes, 'rulesets/ads.txt'));
  t.equal(cfg.ruleSets.ads!.type, 'domain');
  t.ok(cfg.ruleSets.ads!.entries.includes('ads.example'));
  t.ok(cfg.ruleSets.private!.entries.includes('192.168.0.0/16'));
  t.same(cfg.ruleSets.beacons, { type: 'domain', format: 'sluice', behavior: null, url: null, interval: 86400, outbound: 'direct', path: null, entries: ['beacon.example', 'full:collect.example.net'] });
  t.same(cfg.dns.upstreams[0], { address: 'udp://192.0.2.53:53', outbound: 'direct' }, 'upstream outbound defaults to direct');
});

t.test('the default config passes the schema and the semantic checks', async (t) => {
  const d = defaultConfig();
  t.same(schemaIssues(d), []);
  t.same(semanticIssues(d), []);
  t.equal(d.tun.name, 'sluice0');
  t.equal(d.final, 'direct');
});

t.test('an empty file and {} give exactly the default config', async (t) => {
  t.same(await parseConfig('', 'empty.yaml'), defaultConfig());
  t.same(await parseConfig('{}\n', 'empty.yaml'), defaultConfig());
  t.same(await parseConfig('# only a comment\n', 'empty.yaml'), defaultConfig());
});

t.test('the schema defaults match defaultConfig()', async (t) => {
  const d = defaultConfig() as unknown as Record<string, unknown>;
  const props = configSchema.properties as Record<string, Record<string, unknown>>;
  const walk = (schema: Record<string, unknown>, value: unknown, path: string): void => {
    if ('default' in schema && !(schema.type === 'object' && schema.properties !== undefined)) {
      t.same(schema.default, value, `default of ${path}`);
    }
    const sub = schema.properties as Record<string, Record<string, unknown>> | undefined;
    if (sub !== undefined && schema.type === 'object') {
      for (const [k, s] of Object.entries(sub)) walk(s, (value as Record<string, unknown>)[k], `${path}.${k}`);
    }
  };
  for (const [k, s] of Object.entries(props)) walk(s, d[k], k);
});

t.test('defaults fill every optional field; domains are lower-cased', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'c.yaml');
  writeFileSync(
    file,
    [
      'tun: { mtu: 9000 }',
      'dns:',
      '  mode: real-ip',
      '  fakeIp: { persistPath: state/fakeip.json }',
      '  upstreams: [ { address: "udp://192.0.2.53" }, { address: "tcp://[2001:db8::53]" }, { address: "https://dns.example/q" } ]',
      'outbounds:',
      '  - { name: direct, type: direct }',
      '  - { name: p, type: socks5, server: proxy.example, port: 1080, username: u }',
      '  - { name: h, type: http, server: "2001:db8::1", port: 3128 }',
      'rules:',
      '  - { domainSuffix: [Example.COM], or: [ { domain: [A.Example] }, { not: { domainKeyword: [ADS] } } ], outbound: p }',
    ].join('\n'),
  );
  const cfg: SluiceConfig = await loadConfig(file);
  const d = defaultConfig();
  t.same(cfg.tun, { ...d.tun, mtu: 9000 });
  t.same(cfg.log, d.log);
  t.equal(cfg.dns.mode, 'real-ip');
  t.equal(cfg.dns.fakeIp.persistPath, join(dir, 'state/fakeip.json'), 'relative persistPath is resolved against the config directory');
  t.same(
    cfg.dns.upstreams,
    [
      { address: 'udp://192.0.2.53:53', outbound: 'direct' },
      { address: 'tcp://[2001:db8::53]:53', outbound: 'direct' },
      { address: 'https://dns.example/q', outbound: 'direct' },
    ],
    'plain DNS upstreams get port 53 written out; the outbound defaults to direct',
  );
  t.same(cfg.dns.cache, d.dns.cache);
  t.same(cfg.sniff, d.sniff);
  t.same(cfg.outbounds, [
    { name: 'direct', type: 'direct', mark: null, interface: null },
    { name: 'p', type: 'socks5', server: 'proxy.example', port: 1080, username: 'u', password: '', udp: false },
    { name: 'h', type: 'http', server: '2001:db8::1', port: 3128, username: null, password: null },
  ]);
  t.same(cfg.rules, [
    {
      domainSuffix: ['example.com'],
      or: [{ domain: ['a.example'] }, { not: { domainKeyword: ['ads'] } }],
      outbound: 'p',
    },
  ]);
  t.same(cfg.ruleSets, {});
  t.equal(cfg.final, 'direct');
});

t.test('eight distinct mistakes give exactly eight messages with paths and positions', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'bad.yaml');
  const text = `log:
  level: info
  levle: debug            # M1 unknown key
dns:
  mode: fake              # M8 wrong enum
outbounds:
  - name: direct
    type: direct
  - name: proxy
    type: socks5
    server: 192.0.2.1
    port: 1080
  - name: proxy           # M5 duplicate name
    type: http
    server: 192.0.2.2
    port: 3128
ruleSets:
  ads:
    type: domain
    path: ./lists/ads.txt # M6 missing file
rules:
  - domainSuffix: [example.com]
    outbound: prxy        # M4 undefined outbound
  - ipCidr:
      - 203.0.113.0/24
      - 300.1.2.3/8       # M2 bad CIDR
    outbound: proxy
  - port: [443, "8000-80"]  # M3 bad port range
    outbound: direct
  - domainRegex: ["([a-z]+"]  # M7 bad regex
    outbound: direct
  - ruleSet: [ads]
    outbound: direct
final: direct
`;
  writeFileSync(file, text);
  const problems = await problemsOf(loadConfig(file));
  const expected: [string, string, RegExp, string][] = [
    ['M1', 'log.levle', /^unknown key "levle"; did you mean "level"\?$/, 'levle'],
    ['M8', 'dns.mode', /^expected one of fake-ip, real-ip, got "fake"$/, 'fake'],
    ['M5', 'outbounds[2].name', /^duplicate outbound name "proxy" \(already used by outbounds\[1\]\)$/, 'proxy'],
    ['M6', 'ruleSets.ads.path', /^cannot read rule set file .*lists\/ads\.txt: no such file \(ENOENT\)$/, './lists'],
    ['M4', 'rules[0].outbound', /^names an undefined outbound "prxy"; did you mean "proxy"\? \(defined: direct, proxy\)$/, 'prxy'],
    ['M2', 'rules[1].ipCidr[1]', /^expected a CIDR such as 192\.0\.2\.0\/24, got "300\.1\.2\.3\/8"$/, '300'],
    ['M3', 'rules[2].port[1]', /^port range "8000-80" is reversed; did you mean "80-8000"\?$/, '"8000-80"'],
    ['M7', 'rules[3].domainRegex[0]', /^invalid regular expression "\(\[a-z\]\+": Unterminated group$/, '"([a-z]+"'],
  ];
  t.equal(problems.length, expected.length, 'one problem per mistake');
  expected.forEach(([marker, path, message, needle], i) => {
    const p = problems[i]!;
    t.equal(p.file, file, `${marker} file`);
    t.equal(p.path, path, `${marker} path`);
    t.match(p.message, message, `${marker} message`);
    t.equal(p.line, lineOf(text, `# ${marker} `), `${marker} line`);
    t.equal(p.column, columnOf(text, `# ${marker} `, needle), `${marker} column`);
  });
  // The thrown error's message is the same problems, one per line.
  const err = (await loadConfig(file).catch((e: unknown) => e)) as ConfigError;
  t.equal(err.code, 'SLUICE_CONFIG');
  const lines = err.message.split('\n');
  t.equal(lines.length, 8);
  t.equal(lines[5], `${file}:${lineOf(text, '# M2 ')}:9: rules[1].ipCidr[1]: expected a CIDR such as 192.0.2.0/24, got "300.1.2.3/8"`);
});

t.test('problems in a rule-set file name that file and line', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'lists'));
  writeFileSync(join(dir, 'lists/lan.txt'), '# LAN\n10.0.0.0/8\n\n192.168.1.1/16\n');
  writeFileSync(
    join(dir, 'c.yaml'),
    'ruleSets:\n  lan: { type: cidr, path: lists/lan.txt }\nrules:\n  - { ruleSet: [lan], outbound: direct }\n',
  );
  const problems = await problemsOf(loadConfig(join(dir, 'c.yaml')));
  t.same(problems, [
    {
      file: join(dir, 'lists/lan.txt'),
      line: 4,
      column: 1,
      path: 'ruleSets.lan',
      message: '192.168.1.1/16 has host bits set; did you mean 192.168.0.0/16?',
    },
  ]);
});

t.test('oneOf/anyOf noise collapses to one message per field', async (t) => {
  const text = [
    'outbounds:',
    '  - { name: direct, type: direct, mark: -1 }',
    '  - { name: s, type: sock5, server: 192.0.2.1, port: 1080 }',
    '  - { name: t, type: socks5, port: 99999 }',
    'rules:',
    '  - { port: [0, "x", 70000, "1-2-3"], sourcePort: 80, outbound: direct }',
    '  - { and: [ { network: tcp, outbound: direct } ], outbound: direct }',
    '  - { outbound: direct }',
    '  - { not: {}, outbound: direct }',
    '  - {}',
    'ruleSets:',
    '  "bad name": { type: domain, entries: [a.example] }',
    '  both: { type: cidr, path: x.txt, entries: [10.0.0.0/8] }',
    '  neither: { type: cidr }',
  ].join('\n');
  const problems = await problemsOf(parseConfig(text, 'c.yaml'));
  t.same(
    problems.map((p) => `${p.line}:${p.column} ${p.path}: ${p.message}`),
    [
      '2:41 outbounds[0].mark: expected a 32-bit mark from 0 to 0xffffffff, got -1',
      '3:22 outbounds[1].type: expected one of direct, socks5, http, reject, drop, select, urltest, fallback, loadbalance, got "sock5"; did you mean "socks5"?',
      '4:5 outbounds[2].server: missing (required for type socks5)',
      '4:36 outbounds[2].port: expected a port from 1 to 65535, got 99999',
      '6:14 rules[0].port[0]: expected a port 1-65535 or a range such as "8000-8100", got 0',
      '6:17 rules[0].port[1]: expected a port 1-65535 or a range such as "8000-8100", got "x"',
      '6:22 rules[0].port[2]: expected a port 1-65535 or a range such as "8000-8100", got 70000',
      '6:29 rules[0].port[3]: expected a port 1-65535 or a range such as "8000-8100", got "1-2-3"',
      '6:51 rules[0].sourcePort: expected a list, got 80',
      '7:30 rules[1].and[0].outbound: unknown key "outbound": conditions inside and/or/not take no outbound; only the top-level rule has one',
      '8:5 rules[2]: a rule needs at least one condition; use final for a catch-all',
      '9:12 rules[3].not: expected at least one condition',
      '10:5 rules[4].outbound: missing (required)',
      '12:3 ruleSets["bad name"]: name "bad name" is not allowed: expected a name of letters, digits, "_", "." and "-"',
      '13:9 ruleSets.both: give entries (a list) or a source (path or url), not both',
      '14:12 ruleSets.neither: needs path (a file), url (a download) or entries (a list)',
    ],
  );
});

t.test('semantic checks: fake-IP pool, upstream carriage, TTLs, defaults that name nothing', async (t) => {
  const text = [
    'tun: { ipv4: 198.18.3.1/30 }',
    'dns:',
    '  fakeIp: { ipv6Range: "fdfe:dcba:9876:1::/121" }',
    '  upstreams:',
    '    - { address: "udp://198.18.0.53:53" }',
    '    - { address: "udp://192.0.2.53", outbound: web }',
    '    - { address: "udp://192.0.2.54", outbound: s }',
    '    - { address: "https://[2001:db8::53]/dns-query", outbound: no }',
    '  cache: { minTtl: 600, maxTtl: 60 }',
    'outbounds:',
    '  - { name: web, type: http, server: 192.0.2.1, port: 8080, password: secret }',
    '  - { name: s, type: socks5, server: 192.0.2.1, port: 1080 }',
    '  - { name: no, type: reject }',
  ].join('\n');
  const problems = await problemsOf(parseConfig(text, 'c.yaml'));
  t.same(
    problems.map((p) => `${p.line}:${p.column} ${p.path}: ${p.message}`),
    [
      // A defaulted key is not written anywhere: the problem points at the enclosing mapping.
      '1:1 final: not given, and the default outbound "direct" is not defined; set it or define an outbound named "direct"',
      '1:14 tun.ipv4: fake-IP range 198.18.0.0/16 overlaps the TUN address 198.18.3.1/30 (tun.ipv4); pick disjoint blocks',
      '3:24 dns.fakeIp.ipv6Range: fake-IP pool fdfe:dcba:9876:1::/121 holds only 128 addresses; use a /120 or larger',
      '5:7 dns.upstreams[0].outbound: not given, and the default outbound "direct" is not defined; set it or define an outbound named "direct"',
      '5:18 dns.upstreams[0].address: upstream 198.18.0.53 lies inside the fake-IP range 198.18.0.0/16',
      '6:48 dns.upstreams[1].outbound: outbound "web" is an HTTP proxy, which carries only TCP; use tcp:// or https:// through it',
      '7:48 dns.upstreams[2].outbound: outbound "s" has udp: false, so it cannot carry udp://; set udp: true or use tcp://',
      '8:64 dns.upstreams[3].outbound: DNS cannot travel through outbound "no" of type reject',
      '9:20 dns.cache.minTtl: minTtl (600) is greater than maxTtl (60)',
      '11:71 outbounds[0].password: password given without username',
    ],
  );
});

t.test('YAML syntax errors give file:line:column', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'broken.yaml');
  writeFileSync(file, 'log:\n  level: info\nrules:\n  - { outbound: direct\nfinal: direct\n');
  const problems = await problemsOf(loadConfig(file));
  t.ok(problems.length >= 1);
  t.equal(problems[0]!.file, file);
  t.ok(problems[0]!.line >= 4, `line ${problems[0]!.line} is at or after the unclosed flow mapping`);
  t.match(problems[0]!.message, /^YAML syntax: /);

  const dup = await problemsOf(parseConfig('log: { level: info }\ntun: {}\nlog: {}\n', 'dup.yaml'));
  t.same(dup, [{ file: 'dup.yaml', line: 3, column: 1, path: '', message: 'YAML syntax: Map keys must be unique' }]);

  const tabs = await problemsOf(parseConfig('log:\n\tlevel: info\n', 'tabs.yaml'));
  t.equal(tabs[0]!.line, 2);
  t.match(new ConfigError(tabs).message, /^tabs\.yaml:2:\d+: YAML syntax: /);
});

t.test('a document that is not a mapping, or an alias bomb, is refused clearly', async (t) => {
  const list = await problemsOf(parseConfig('- a\n- b\n', 'list.yaml'));
  t.same(list, [{ file: 'list.yaml', line: 1, column: 1, path: '', message: 'expected a mapping, got a list' }]);
  const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]', 'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]'];
  bomb.push('c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]', 'd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]');
  const p = await problemsOf(parseConfig(bomb.join('\n'), 'bomb.yaml'));
  t.equal(p.length, 1);
  t.match(p[0]!.message, /^YAML: .*alias/i);
});

t.test('an unreadable or oversized config file', async (t) => {
  const dir = tempDir(t);
  t.same(await problemsOf(loadConfig(join(dir, 'nope.yaml'))), [
    { file: join(dir, 'nope.yaml'), line: 0, column: 0, path: '', message: 'cannot read config: no such file (ENOENT)' },
  ]);
  t.match((await problemsOf(loadConfig(dir)))[0]!.message, /is a directory/);
});
