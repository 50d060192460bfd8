import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/config/errors.js';
import {
  checkRuleSetEntry,
  loadRuleSetFile,
  MAX_PROBLEMS_PER_FILE,
  parseRuleSetText,
} from '../../src/config/ruleset.js';

const routes = new URL('../../../routes/', import.meta.url).pathname;

t.test('domain entries: suffix, full:, keyword:, regex:', async (t) => {
  t.same(checkRuleSetEntry('Ads.Example', 'domain'), { ok: true, entry: 'ads.example' });
  t.same(checkRuleSetEntry('full:WWW.example.org', 'domain'), { ok: true, entry: 'full:www.example.org' });
  t.same(checkRuleSetEntry('keyword:Tracker', 'domain'), { ok: true, entry: 'keyword:tracker' });
  t.same(checkRuleSetEntry('regex:^Ad[0-9]+\\.', 'domain'), { ok: true, entry: 'regex:^Ad[0-9]+\\.' }, 'regex kept as written');
  t.same(checkRuleSetEntry('_dmarc.example.com', 'domain'), { ok: true, entry: '_dmarc.example.com' });

  const bad = (entry: string, re: RegExp): void => {
    const r = checkRuleSetEntry(entry, 'domain');
    t.equal(r.ok, false, entry);
    if (!r.ok) t.match(r.message, re, entry);
  };
  bad('regex:([a-z]+', /^invalid regular expression "\(\[a-z\]\+": Unterminated group$/);
  bad('regex:', /empty regex/);
  bad('keyword:two words', /without spaces/);
  bad('suffix:example.com', /unknown prefix "suffix:"/);
  bad('full:-bad.example', /expected a domain name/);
  bad('192.0.2.1', /is an IP address/);
  bad('example..com', /expected a domain name/);
  bad('2001:db8::/32', /put addresses in a cidr rule set/);
});

t.test('cidr entries', async (t) => {
  t.same(checkRuleSetEntry('10.0.0.0/8', 'cidr'), { ok: true, entry: '10.0.0.0/8' });
  t.same(checkRuleSetEntry(' fc00::/7 ', 'cidr'), { ok: true, entry: 'fc00::/7' });
  t.same(checkRuleSetEntry('10.0.0.1/8', 'cidr'), { ok: false, message: '10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?' });
  t.same(checkRuleSetEntry('example.com', 'cidr'), {
    ok: false,
    message: 'expected a CIDR such as 192.0.2.0/24, got "example.com"',
  });
  t.equal(checkRuleSetEntry('192.0.2.1', 'cidr').ok, false, 'a bare address needs a prefix');
});

t.test('parseRuleSetText skips comments and blanks and reports file:line', async (t) => {
  const text = '# header\n\nads.example\n  # indented comment\n  keyword:bad word\r\nfull:ok.example\nregex:(\n';
  const r = parseRuleSetText(text, 'domain', 'lists/ads.txt', 'ruleSets.ads');
  t.same(r.entries, ['ads.example', 'full:ok.example']);
  t.same(
    r.problems.map((p) => [p.file, p.line, p.column, p.path]),
    [
      ['lists/ads.txt', 5, 3, 'ruleSets.ads'],
      ['lists/ads.txt', 7, 1, 'ruleSets.ads'],
    ],
  );
});

t.test('problems per file are bounded', async (t) => {
  const text = Array.from({ length: 50 }, (_, i) => `bad entry ${i}`).join('\n');
  const r = parseRuleSetText(text, 'cidr', 'x.txt', '');
  t.equal(r.problems.length, MAX_PROBLEMS_PER_FILE + 1);
  t.equal(r.problems.at(-1)!.message, 'and 30 more invalid entries');
});

t.test('loadRuleSetFile reads the shipped lists', async (t) => {
  const ads = await loadRuleSetFile(join(routes, 'rulesets/ads.txt'), 'domain');
  t.ok(ads.includes('full:telemetry.example.com'));
  t.ok(ads.includes('keyword:doubleclick'));
  t.ok(ads.some((e) => e.startsWith('regex:')));
  const cidrs = await loadRuleSetFile(join(routes, 'rulesets/private-cidrs.txt'), 'cidr');
  t.ok(cidrs.includes('10.0.0.0/8'));
  t.ok(cidrs.includes('fc00::/7'));
});

t.test('loadRuleSetFile throws ConfigError with lines, or for an unreadable file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-ruleset-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'lan.txt');
  writeFileSync(file, '192.168.0.0/16\n192.168.1.1/24\n');
  const err = await loadRuleSetFile(file, 'cidr').then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof ConfigError);
  const ce = err as ConfigError;
  t.equal(ce.code, 'SLUICE_CONFIG');
  t.equal(ce.message, `${file}:2:1: 192.168.1.1/24 has host bits set; did you mean 192.168.1.0/24?`);

  const missing = await loadRuleSetFile(join(dir, 'nope.txt'), 'cidr').then(
    () => null,
    (e: ConfigError) => e,
  );
  t.equal(missing!.message, `${join(dir, 'nope.txt')}: cannot read rule set: no such file (ENOENT)`);

  mkdirSync(join(dir, 'sub'));
  const isDir = await loadRuleSetFile(join(dir, 'sub'), 'cidr').then(
    () => null,
    (e: ConfigError) => e,
  );
  t.match(isDir!.message, /is a directory \(EISDIR\)/);
});
