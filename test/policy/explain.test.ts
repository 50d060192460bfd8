/**
 * The rule-by-rule explanation (src/engine/policy/explain.ts) against the
 * compiled, indexed matcher and the naive evaluator: on random policies and
 * flows the deciding rule is the same, every earlier rule is listed with a
 * condition that really fails, and the texts say what was missing.
 */
import t from 'tap';
import { compilePolicy } from '../../src/engine/policy/index.js';
import { PolicyExplainer, explainWithCheck, formatExplanation } from '../../src/engine/policy/explain.js';
import type { MatchContext, PolicyInput } from '../../src/engine/policy/types.js';
import { referenceMatch } from './reference.js';
import { Rng, randomFlow, randomPolicy } from './random-policy.js';

for (const seed of [1, 0xdecaf, 20261125, 77]) {
  t.test(`seed ${seed}: explain's deciding rule equals the compiled policy's on 3,000 random flows`, async (t) => {
    const input = randomPolicy(seed, 300);
    const policy = compilePolicy(input);
    const explainer = new PolicyExplainer(input);
    const r = new Rng(seed * 13 + 5);
    let mismatches = 0;
    let badFailures = 0;
    let finals = 0;
    const decided = new Set<number>();
    for (let i = 0; i < 3000; i++) {
      const ctx = randomFlow(r);
      const { explanation: e, notes } = explainWithCheck(explainer, policy, ctx, 'command-line');
      const got = policy.matchIndex(ctx);
      if (e.ruleIndex !== got || e.ruleIndex !== referenceMatch(input, ctx) || notes.length > 0) {
        if (mismatches++ < 5) t.fail(`flow ${i}: explain ${e.ruleIndex}, index ${got}, reference ${referenceMatch(input, ctx)}`);
      }
      const want = e.ruleIndex < 0 ? input.rules!.length : e.ruleIndex;
      // every earlier rule, in order, each with a failed condition that is
      // really false for this flow: the rule alone must not match it
      if (e.failed.length !== want || e.failed.some((f, k) => f.index !== k)) badFailures++;
      for (const f of e.failed.slice(-10)) {
        if (referenceMatch({ ...input, rules: [input.rules![f.index]!] }, ctx) !== -1) badFailures++;
        if (f.reason === '' || f.condition === '') badFailures++;
      }
      if (e.outbound !== (e.ruleIndex < 0 ? 'direct' : input.rules![e.ruleIndex]!.outbound)) mismatches++;
      if (e.ruleIndex < 0) finals++;
      else decided.add(e.ruleIndex);
    }
    t.equal(mismatches, 0, 'explain, the index and the reference agree on every flow');
    t.equal(badFailures, 0, 'every earlier rule is listed with a condition that fails');
    t.ok(decided.size >= 30 && finals > 0, `${decided.size} distinct deciding rules, ${finals} finals`);
  });
}

const v4 = (s: string): Uint8Array => new Uint8Array(s.split('.').map(Number));

function flow(over: Partial<MatchContext> = {}): MatchContext {
  return { network: 'tcp', inbound: 'tun', family: 4, dst: v4('203.0.113.7'), dstPort: 443, src: v4('192.0.2.2'), srcPort: 40000, domain: null, protocol: null, ...over };
}

const policy: PolicyInput = {
  outbounds: [{ name: 'direct' }, { name: 'proxy' }, { name: 'block' }],
  ruleSets: { ads: { type: 'domain', entries: ['ads.example'] }, lan: { type: 'cidr', entries: ['10.0.0.0/8'] } },
  rules: [
    { domainSuffix: ['example.com'], outbound: 'proxy' },
    { ipCidr: ['198.51.100.0/24'], port: [443], outbound: 'proxy' },
    { network: 'udp', outbound: 'block' },
    { ruleSet: ['ads', 'lan'], outbound: 'block' },
    { protocol: ['http'], outbound: 'block' },
    { and: [{ sourceCidr: ['192.0.2.0/24'] }, { sourcePort: ['1-1023'] }], outbound: 'block' },
    { or: [{ port: [80] }, { domainKeyword: ['corp'] }], outbound: 'block' },
    { not: { inbound: 'tun' }, outbound: 'block' },
    { ipCidr: ['203.0.113.0/24'], outbound: 'proxy' },
  ],
  final: 'direct',
};

t.test('failed-condition texts for each kind of condition', async (t) => {
  const ex = new PolicyExplainer(policy);
  const e = ex.explain(flow(), 'none');
  t.equal(e.ruleIndex, 8);
  t.equal(e.rule, 'rule 8 ipCidr [203.0.113.0/24]');
  t.same(e.chain, ['proxy']);
  const text = formatExplanation(e);
  t.comment(text);
  const lines = text.split('\n');
  t.same(lines.slice(3), [
    'rule 0 domainSuffix [example.com]: name unknown',
    'rule 1 ipCidr [198.51.100.0/24]: destination 203.0.113.7 not in the list',
    'rule 2 network [udp]: network is tcp',
    'rule 3 ruleSet [ads, lan]: destination 203.0.113.7 not in lan; name unknown',
    'rule 4 protocol [http]: protocol unknown (nothing sniffed)',
    'rule 5 and [{sourceCidr [192.0.2.0/24]}, {sourcePort [1-1023]}]: and[1] sourcePort [1-1023]: source port 40000 not in the list',
    'rule 6 or [{port [80]}, {domainKeyword [corp]}]: no sub-rule matches (or[0] port [80]: port 443 not in the list; or[1] domainKeyword [corp]: name unknown)',
    'rule 7 not {inbound [tun]}: the sub-rule {inbound [tun]} matches',
    'decided by: rule 8 ipCidr [203.0.113.0/24]',
    'outbound: proxy',
  ]);
  t.match(lines[0], 'flow: tcp tun 192.0.2.2:40000 -> 203.0.113.7:443');
  t.match(lines[1], 'name: none');
});

t.test('a known name: where it came from, and names that do not match', async (t) => {
  const ex = new PolicyExplainer(policy);
  const e = ex.explain(flow({ domain: 'www.example.org', protocol: 'tls', dst: v4('198.51.100.9'), dstPort: 80 }), 'fake-ip');
  const text = formatExplanation(e);
  t.match(text, 'name: www.example.org (the fake-IP mapping of the destination address)');
  t.match(text, 'rule 0 domainSuffix [example.com]: name www.example.org does not match');
  t.match(text, 'rule 1 port [443]: port 80 not in the list');
  t.match(text, 'rule 4 protocol [http]: protocol is tls');
  t.equal(e.ruleIndex, 6, 'or: port 80');
  const sniffed = formatExplanation(ex.explain(flow({ domain: 'a.example.com' }), 'sniffed'));
  t.match(sniffed, /name: a\.example\.com \(sniffed/);
  t.match(sniffed, 'decided by: rule 0 domainSuffix [example.com]');
  t.equal(ex.explain(flow({ domain: 'x.example.com' }), 'dns-snoop').input.nameOrigin, 'dns-snoop');
});

t.test('a live flow routed before its first bytes: what was sniffed after is said apart from the routing inputs', async (t) => {
  const ex = new PolicyExplainer(policy);
  const e = ex.explain(flow({ domain: null, protocol: null, dst: v4('198.51.100.9'), dstPort: 80 }), 'none');
  const lines = formatExplanation(e, { sniffedAfter: { domain: 'files.example.test', protocol: 'http' } }).split('\n');
  t.equal(lines[1], 'name: none when routed (files.example.test sniffed after the route was chosen, for the log and /connections only)');
  t.equal(lines[2], 'protocol: none when routed (http sniffed after the route was chosen, for the log and /connections only)');
  t.match(lines.join('\n'), 'rule 0 domainSuffix [example.com]: name unknown', 'the rules still see no name');
  const plain = formatExplanation(e, { sniffedAfter: { domain: null, protocol: null } }).split('\n');
  t.same(plain.slice(1, 3), ['name: none (no name known)', 'protocol: none sniffed'], 'nothing sniffed after: as before');
  const known = formatExplanation(ex.explain(flow({ domain: 'www.example.org', protocol: null }), 'fake-ip'), { sniffedAfter: { domain: null, protocol: 'tls' } }).split('\n');
  t.same(known.slice(1, 3), ['name: www.example.org (the fake-IP mapping of the destination address)', 'protocol: none when routed (tls sniffed after the route was chosen, for the log and /connections only)'], 'a known name, the protocol sniffed after');
});

t.test('final, long lists cut, IPv6 text', async (t) => {
  const input: PolicyInput = {
    outbounds: [{ name: 'direct' }, { name: 'proxy' }],
    rules: [{ ipCidr: ['10.0.0.0/8', '10.1.0.0/16', '10.2.0.0/16', '10.3.0.0/16', '10.4.0.0/16'], outbound: 'proxy' }],
    final: 'direct',
  };
  const six = new Uint8Array(16);
  six.set([0x20, 0x01, 0x0d, 0xb8], 0);
  six[15] = 1;
  const e = new PolicyExplainer(input).explain(flow({ family: 6, dst: six, src: new Uint8Array(16) }), 'none');
  t.equal(e.ruleIndex, -1);
  t.equal(e.rule, 'final');
  t.equal(e.failed[0]!.condition, 'ipCidr [10.0.0.0/8, 10.1.0.0/16, 10.2.0.0/16, +2 more]');
  t.equal(e.failed[0]!.reason, 'destination 2001:db8::1 not in the list');
  t.equal(e.input.dst, '[2001:db8::1]:443');
  t.match(formatExplanation(e, { outboundKind: () => 'direct' }), 'outbound: direct (direct)');
});

t.test('a broken policy throws the compiler\'s error', async (t) => {
  t.throws(() => new PolicyExplainer({ rules: [{ ipCidr: ['nope'], outbound: 'x' }], final: 'x' }), /rules\[0\]\.ipCidr/);
});
