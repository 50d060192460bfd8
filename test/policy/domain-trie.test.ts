import t from 'tap';
import {
  DomainKind,
  DomainMatcher,
  DomainTrie,
  KeywordMatcher,
  RegexList,
  normalizeDomain,
  normalizeDomainPattern,
  normalizeKeyword,
} from '../../src/engine/policy/domain-trie.js';
import { NO_VALUE } from '../../src/engine/policy/cidr-trie.js';

function trie(entries: [string, DomainKind, number][]): DomainTrie {
  const tr = new DomainTrie();
  for (const [n, k, v] of entries) {
    const r = normalizeDomainPattern(n);
    if (!r.ok) throw new Error(r.reason);
    tr.insert(r.name, k, v);
  }
  return tr;
}

t.test('suffix matches on label boundaries only', async (t) => {
  const tr = trie([['example.com', DomainKind.Suffix, 4]]);
  t.equal(tr.minMatch('example.com'), 4, 'the name itself');
  t.equal(tr.minMatch('a.example.com'), 4);
  t.equal(tr.minMatch('x.y.z.example.com'), 4);
  t.equal(tr.minMatch('badexample.com'), -1, 'not a label boundary');
  t.equal(tr.minMatch('example.com.evil.net'), -1);
  t.equal(tr.minMatch('com'), -1, 'a parent is not a match');
  t.equal(tr.minMatch('example.co'), -1);
  t.equal(tr.minMatch('xample.com'), -1);
});

t.test('exact, suffix and subdomain-only kinds', async (t) => {
  const tr = trie([
    ['exact.example.org', DomainKind.Exact, 2],
    ['example.org', DomainKind.Subdomain, 5],
  ]);
  t.equal(tr.minMatch('exact.example.org'), 2, 'exact (and also a subdomain of example.org, 5 > 2)');
  t.equal(tr.minMatch('a.exact.example.org'), 5, 'exact does not extend below the name');
  t.equal(tr.minMatch('example.org'), -1, 'subdomain-only excludes the apex');
  t.equal(tr.minMatch('w.example.org'), 5);
});

t.test('minimum value along the path (first-match order)', async (t) => {
  const tr = trie([
    ['com', DomainKind.Suffix, 9],
    ['example.com', DomainKind.Suffix, 3],
    ['api.example.com', DomainKind.Exact, 1],
    ['api.example.com', DomainKind.Suffix, 7],
    ['api.example.com', DomainKind.Exact, 6],
  ]);
  t.equal(tr.minMatch('api.example.com'), 1, 'same name and kind twice keeps the smaller value');
  t.equal(tr.minMatch('v2.api.example.com'), 3);
  t.equal(tr.minMatch('other.com'), 9);
  const out = new Int32Array(256);
  const n = tr.collect('api.example.com', out);
  t.equal(n, 4, 'com suffix, example.com suffix, api exact, api suffix');
});

t.test('case and trailing dot are normalised on both sides', async (t) => {
  const tr = trie([['Example.COM.', DomainKind.Suffix, 1]]);
  t.equal(tr.minMatch('WWW.example.Com'), 1);
  t.equal(tr.minMatch('www.example.com.'), 1, 'trailing dot (absolute name)');
  t.equal(tr.minMatch('example.com.'), 1);
  t.equal(tr.minMatch('example.com..'), -1, 'only one trailing dot is dropped');
  t.equal(tr.minMatch(''), -1);
  t.equal(tr.minMatch('.'), -1);
  t.equal(tr.minMatch('a..example.com'), 1, 'an empty label above a matched suffix stops the walk, the suffix stands');
  t.equal(normalizeDomain('WWW.Example.com.'), 'www.example.com');
  const s = 'already.normal';
  t.equal(normalizeDomain(s), s, 'no copy when nothing to change');
  t.equal(normalizeDomain('.'), null);
  t.equal(normalizeDomain(''), null);
  t.equal(normalizeDomain(null), null);
});

t.test('IDN: punycode labels are ordinary labels; U-labels in rules are refused', async (t) => {
  const tr = trie([['xn--bcher-kva.example', DomainKind.Suffix, 0]]);
  t.equal(tr.minMatch('www.xn--bcher-kva.example'), 0);
  t.equal(tr.minMatch('XN--BCHER-KVA.EXAMPLE'), 0);
  t.equal(tr.minMatch('www.bücher.example'), -1, 'the U-label form is a different string');
  const r = normalizeDomainPattern('bücher.example');
  t.equal(r.ok, false);
  if (!r.ok) t.match(r.reason, /punycode \(xn--\)/);
});

t.test('pattern validation', async (t) => {
  t.same(normalizeDomainPattern(' Example.COM. '), { ok: true, name: 'example.com' });
  t.same(normalizeDomainPattern('_sip._tcp.example.com'), { ok: true, name: '_sip._tcp.example.com' });
  const bad: [unknown, RegExp][] = [
    ['', /empty string/],
    ['.', /empty string/],
    ['a..b', /empty label/],
    ['.a.b', /empty label/],
    ['a b.com', /has " "/],
    ['*.example.com', /has "\*"/],
    ['http://x.com', /has ":"/],
    [`${'a'.repeat(64)}.com`, /longer than 63/],
    [`${'a.'.repeat(127)}com`, /at most 253/],
    [42, /expected a domain name string/],
  ];
  for (const [v, why] of bad) {
    const r = normalizeDomainPattern(v);
    t.equal(r.ok, false, String(v).slice(0, 30));
    if (!r.ok) t.match(r.reason, why);
  }
});

t.test('many names: table growth keeps every entry reachable', async (t) => {
  const tr = new DomainTrie(2);
  for (let i = 0; i < 20000; i++) tr.insert(`h${i}.zone${i % 97}.example`, i % 2 === 0 ? DomainKind.Exact : DomainKind.Suffix, i);
  let bad = 0;
  for (let i = 0; i < 20000; i++) {
    if (tr.minMatch(`h${i}.zone${i % 97}.example`) !== i) bad++;
    if (tr.minMatch(`x.h${i}.zone${i % 97}.example`) !== (i % 2 === 0 ? -1 : i)) bad++;
  }
  t.equal(bad, 0);
  t.equal(tr.minMatch('h1.zone2.example'), -1);
  t.equal(tr.size, 20000);
});

t.test('keywords: Aho-Corasick with the smallest value over overlapping keywords', async (t) => {
  const km = new KeywordMatcher();
  km.add('ads', 5);
  km.add('tracker', 2);
  km.add('ad', 8);
  km.add('racker', 1);
  km.add('he', 6);
  km.add('she', 9);
  km.add('hers', 3);
  km.build();
  t.equal(km.minMatch('ads.example'), 5, '"ad" (8) and "ads" (5) both occur');
  t.equal(km.minMatch('mytracker.net'), 1, '"racker" is found through the failure link of "tracker"');
  t.equal(km.minMatch('ushers.io'), 3, 'classic she/he/hers: all three occur');
  t.equal(km.minMatch('ushe.io'), 6);
  t.equal(km.minMatch('road.io'), 8, 'prefix of ads');
  t.equal(km.minMatch('example.com'), -1);
  t.equal(km.minMatch('BAD-ADS.COM'), 5, 'case folded');
  t.equal(km.minMatch('exämple-ad'), 8, 'characters outside the alphabet reset but do not break matching');
  t.equal(km.minMatch(''), -1);
  t.equal(new KeywordMatcher().build().minMatch('anything'), -1, 'empty automaton');
  t.throws(() => km.add('late', 0), /after build/);

  const dot = new KeywordMatcher();
  dot.add('example.', 0);
  dot.build();
  t.equal(dot.minMatch('example.'), -1, 'the trailing dot is not part of the name');
  t.equal(dot.minMatch('example.com'), 0);
});

t.test('keyword validation', async (t) => {
  t.same(normalizeKeyword('  ADS '), { ok: true, name: 'ads' });
  t.same(normalizeKeyword('.cdn-'), { ok: true, name: '.cdn-' });
  for (const bad of ['', ' ', 'a*b', 'über', 'a b', 7]) t.equal(normalizeKeyword(bad).ok, false, String(bad));
});

t.test('regexes run in value order and only below the bound', async (t) => {
  const seen: string[] = [];
  const spy = (src: string): RegExp => {
    const re = new RegExp(src);
    const test = re.test.bind(re);
    re.test = (s: string): boolean => {
      seen.push(src);
      return test(s);
    };
    return re;
  };
  const rl = new RegexList();
  rl.add(spy('^api'), 10);
  rl.add(spy('\\.com$'), 4);
  rl.add(spy('^zzz'), 1);
  t.equal(rl.minMatchBelow('api.example.com', NO_VALUE), 4);
  t.same(seen, ['^zzz', '\\.com$'], 'sorted by value, stops at the first hit');
  seen.length = 0;
  t.equal(rl.minMatchBelow('api.example.com', 4), -1);
  t.same(seen, ['^zzz'], 'regexes at or above the bound are never run');
  seen.length = 0;
  t.equal(rl.minMatchBelow('api.example.org', NO_VALUE), 10);
  t.equal(rl.minValue(), 1);
});

t.test('DomainMatcher combines names, keywords, regexes', async (t) => {
  const m = new DomainMatcher();
  m.trie.insert('example.com', DomainKind.Suffix, 6);
  m.keywords.add('track', 3);
  m.regexes.add(/^ad[0-9]+\./, 1);
  m.regexes.add(/example/, 8);
  m.build();
  t.equal(m.minMatch('AD12.example.com.', NO_VALUE), 1, 'regex sees the normalised name');
  t.equal(m.minMatch('tracker.example.com', NO_VALUE), 3);
  t.equal(m.minMatch('www.example.com', NO_VALUE), 6);
  t.equal(m.minMatch('example.net', NO_VALUE), 8);
  t.equal(m.minMatch('www.example.com', 6), -1, 'bound is exclusive');
  t.equal(m.minMatch('nothing.org', NO_VALUE), -1);
  t.equal(m.size, 4);
});
