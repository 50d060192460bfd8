import t from 'tap';
import type { Test } from 'tap';
import { Policy, PolicySlot, compilePolicy, parseIp } from '../../src/engine/policy/index.js';
import type { MatchContext, PolicyInput, RuleInput } from '../../src/engine/policy/index.js';

const OUTBOUNDS = ['direct', 'proxy', 'corp', 'block', 'sink'].map((name) => ({ name }));

function flow(o: Partial<Omit<MatchContext, 'dst' | 'src'>> & { dst?: string; src?: string } = {}): MatchContext {
  const dst = parseIp(o.dst ?? '192.0.2.10')!;
  const src = parseIp(o.src ?? (dst.length === 4 ? '10.9.9.9' : 'fd00::9'))!;
  return {
    network: o.network ?? 'tcp',
    inbound: o.inbound ?? 'tun',
    family: dst.length === 4 ? 4 : 6,
    dst,
    dstPort: o.dstPort ?? 80,
    src,
    srcPort: o.srcPort ?? 40000,
    domain: o.domain === undefined ? null : o.domain,
    protocol: o.protocol === undefined ? null : o.protocol,
  };
}

function policy(rules: RuleInput[], extra: Partial<PolicyInput> = {}): Policy {
  return compilePolicy({ outbounds: OUTBOUNDS, rules, final: 'direct', ...extra });
}

/** Matches a single rule as rule 0, and as a composite (ANDed with a always-true key) so both the index and the evaluator are exercised. */
function both(t: Test, rule: RuleInput, ctx: MatchContext, expect: boolean, msg: string): void {
  const single = policy([{ ...rule, outbound: 'proxy' }]);
  t.equal(single.matchIndex(ctx), expect ? 0 : -1, `${msg} (indexed)`);
  const composite = policy([{ and: [rule, { network: ['tcp', 'udp'] }], outbound: 'proxy' }]);
  t.equal(composite.matchIndex(ctx), expect ? 0 : -1, `${msg} (candidate)`);
  const residual = policy([{ or: [rule], outbound: 'proxy' }]);
  t.equal(residual.matchIndex(ctx), expect ? 0 : -1, `${msg} (residual)`);
}

t.test('ipCidr and sourceCidr, both families', async (t) => {
  both(t, { ipCidr: ['203.0.113.0/24', '2001:db8::/32'] }, flow({ dst: '203.0.113.77' }), true, 'v4 dst in list');
  both(t, { ipCidr: ['203.0.113.0/24', '2001:db8::/32'] }, flow({ dst: '2001:db8:5::1' }), true, 'v6 dst in list');
  both(t, { ipCidr: ['203.0.113.0/24'] }, flow({ dst: '203.0.114.1' }), false, 'v4 dst outside');
  both(t, { ipCidr: ['0.0.0.0/0'] }, flow({ dst: '2001:db8::1' }), false, 'a v4 /0 does not hold IPv6');
  both(t, { ipCidr: ['::/0'] }, flow({ dst: '2001:db8::1' }), true, '::/0 holds IPv6');
  both(t, { sourceCidr: ['10.9.0.0/16'] }, flow(), true, 'source in list');
  both(t, { sourceCidr: ['10.8.0.0/16'] }, flow(), false, 'source outside');
  both(t, { sourceCidr: ['fd00::/8'] }, flow({ dst: '2001:db8::1' }), true, 'v6 source');
  both(t, { ipCidr: ['10.9.9.9/32'] }, flow(), false, 'ipCidr tests the destination, not the source');
});

t.test('domain keys', async (t) => {
  both(t, { domain: ['exact.example.org'] }, flow({ domain: 'EXACT.example.org.' }), true, 'exact, case and trailing dot');
  both(t, { domain: ['exact.example.org'] }, flow({ domain: 'a.exact.example.org' }), false, 'exact is not suffix');
  both(t, { domainSuffix: ['example.com'] }, flow({ domain: 'example.com' }), true, 'suffix: apex');
  both(t, { domainSuffix: ['example.com'] }, flow({ domain: 'a.b.example.com' }), true, 'suffix: below');
  both(t, { domainSuffix: ['example.com'] }, flow({ domain: 'badexample.com' }), false, 'suffix: not mid-label');
  both(t, { domainSuffix: ['.example.com'] }, flow({ domain: 'example.com' }), false, 'leading dot: not the apex');
  both(t, { domainSuffix: ['.example.com'] }, flow({ domain: 'a.example.com' }), true, 'leading dot: below');
  both(t, { domainKeyword: ['tracker'] }, flow({ domain: 'cdn.TRACKER-x.net' }), true, 'keyword');
  both(t, { domainKeyword: ['tracker'] }, flow({ domain: 'cdn.track.net' }), false, 'keyword absent');
  both(t, { domainRegex: ['^api[0-9]*\\.'] }, flow({ domain: 'API7.example.com' }), true, 'regex on the lowercased name');
  both(t, { domainRegex: ['^api[0-9]*\\.'] }, flow({ domain: 'www.api.example.com' }), false, 'regex anchored');
  both(t, { domainSuffix: ['example.com'] }, flow({ domain: null }), false, 'no name: domain keys never match');
  both(t, { domainRegex: ['.*'] }, flow({ domain: '' }), false, 'an empty name counts as no name');
  both(t, { domainKeyword: ['a'] }, flow({ domain: '.' }), false, 'the root alone counts as no name');
});

t.test('ports, network, inbound, protocol', async (t) => {
  both(t, { port: [443, '8000-8100'] }, flow({ dstPort: 8080 }), true, 'port in range');
  both(t, { port: [443, '8000-8100'] }, flow({ dstPort: 8101 }), false, 'port outside range');
  both(t, { port: 443 as never }, flow({ dstPort: 443 }), true, 'a scalar is a one-item list');
  both(t, { sourcePort: ['40000-40010'] }, flow(), true, 'source port');
  both(t, { sourcePort: [40001] }, flow(), false, 'source port outside');
  both(t, { port: [40000] }, flow(), false, 'port tests the destination port');
  both(t, { network: 'udp' }, flow({ network: 'udp' }), true, 'network scalar');
  both(t, { network: ['udp'] }, flow({ network: 'tcp' }), false, 'network');
  both(t, { inbound: ['tproxy'] }, flow({ inbound: 'tproxy' }), true, 'inbound');
  both(t, { inbound: 'tproxy' }, flow({ inbound: 'tun' }), false, 'inbound');
  both(t, { protocol: ['tls', 'quic'] }, flow({ protocol: 'quic' }), true, 'protocol');
  both(t, { protocol: ['tls', 'quic'] }, flow({ protocol: 'http' }), false, 'protocol');
  both(t, { protocol: ['tls', 'http', 'quic', 'dns'] }, flow({ protocol: null }), false, 'unsniffed: protocol never matches');
});

t.test('rule sets: domain lines and cidr lines', async (t) => {
  const ruleSets = {
    ads: { type: 'domain' as const, path: './ads.txt', entries: ['# comment', '', 'ads.example', 'full:b.example', '.sub.example', 'keyword:tracker', 'regex:^ad[0-9]+\\.', '  spaced.example  '] },
    lan: { type: 'cidr' as const, entries: ['192.168.0.0/16', 'fd00::/8', '# comment'] },
  };
  const p = compilePolicy({ outbounds: OUTBOUNDS, ruleSets, rules: [{ ruleSet: ['ads'], outbound: 'block' }, { ruleSet: 'lan' as never, outbound: 'direct' }, { ruleSet: ['ads', 'lan'], network: 'udp', outbound: 'sink' }], final: 'proxy' });
  const m = (c: MatchContext): string => p.match(c).outbound;
  t.equal(m(flow({ domain: 'x.ads.example' })), 'block', 'plain line = suffix');
  t.equal(m(flow({ domain: 'ads.example' })), 'block');
  t.equal(m(flow({ domain: 'b.example' })), 'block', 'full:');
  t.equal(m(flow({ domain: 'x.b.example' })), 'proxy', 'full: is exact');
  t.equal(m(flow({ domain: 'sub.example' })), 'proxy', '.sub.example excludes the apex');
  t.equal(m(flow({ domain: 'a.sub.example' })), 'block');
  t.equal(m(flow({ domain: 'mytracker.io' })), 'block', 'keyword:');
  t.equal(m(flow({ domain: 'ad42.cdn.net' })), 'block', 'regex:');
  t.equal(m(flow({ domain: 'spaced.example' })), 'block', 'lines are trimmed');
  t.equal(m(flow({ domain: 'comment' })), 'proxy', 'comments are not entries');
  t.equal(m(flow({ dst: '192.168.3.4' })), 'direct', 'cidr set');
  t.equal(m(flow({ dst: 'fd12::1', src: 'fd00::1' })), 'direct');
  t.equal(m(flow({ dst: '192.0.2.1' })), 'proxy');
  // the third rule: ruleSet (either set) AND udp; only reached when rules 0 and 1 miss, so never here
  const q = compilePolicy({ outbounds: OUTBOUNDS, ruleSets, rules: [{ ruleSet: ['ads', 'lan'], network: 'udp', outbound: 'sink' }], final: 'proxy' });
  t.equal(q.match(flow({ network: 'udp', dst: '192.168.1.1' })).outbound, 'sink', 'either set, ANDed with network');
  t.equal(q.match(flow({ network: 'udp', domain: 'ads.example' })).outbound, 'sink');
  t.equal(q.match(flow({ network: 'tcp', domain: 'ads.example' })).outbound, 'proxy');
});

t.test('and / or / not, nested, and mixed with plain keys', async (t) => {
  const p = policy([
    { and: [{ network: 'tcp' }, { not: { port: [22] } }], domainSuffix: ['corp.example'], outbound: 'corp' },
    { or: [{ sourceCidr: ['192.0.2.0/24'] }, { inbound: 'tproxy' }], outbound: 'sink' },
    { not: { or: [{ protocol: 'tls' }, { protocol: 'quic' }] }, port: [443], outbound: 'block' },
    { and: [{ or: [{ domainKeyword: ['cdn'] }, { domainKeyword: ['img'] }] }, { not: { not: { network: 'udp' } } }], outbound: 'proxy' },
  ]);
  const m = (c: MatchContext): number => p.matchIndex(c);
  t.equal(m(flow({ domain: 'git.corp.example', dstPort: 443 })), 0);
  t.equal(m(flow({ domain: 'git.corp.example', dstPort: 22 })), -1, 'not port 22');
  t.equal(m(flow({ domain: 'git.corp.example', network: 'udp' })), -1, 'and needs tcp');
  t.equal(m(flow({ src: '192.0.2.9' })), 1, 'or: first branch');
  t.equal(m(flow({ inbound: 'tproxy' })), 1, 'or: second branch');
  t.equal(m(flow({ dstPort: 443, protocol: 'http' })), 2, 'not(tls or quic) and 443');
  t.equal(m(flow({ dstPort: 443, protocol: null })), 2, 'unsniffed is neither tls nor quic');
  t.equal(m(flow({ dstPort: 443, protocol: 'tls' })), -1);
  t.equal(m(flow({ domain: 'img.example', network: 'udp' })), 3, 'double negation');
  t.equal(m(flow({ domain: 'img.example', network: 'tcp' })), -1);
  t.equal(p.stats.candidates + p.stats.residual + p.stats.indexed, 4);
});

t.test('first match wins: an earlier broad rule beats a later specific one', async (t) => {
  const p = policy([
    { ipCidr: ['10.0.0.0/8'], outbound: 'corp' },
    { ipCidr: ['10.1.2.0/24'], outbound: 'block' },
    { domainSuffix: ['com'], outbound: 'proxy' },
    { domain: ['exact.example.com'], outbound: 'block' },
    { port: [0, '1-65535'], outbound: 'sink' },
    { ipCidr: ['192.0.2.0/24'], outbound: 'block' },
  ]);
  t.equal(p.match(flow({ dst: '10.1.2.3' })).outbound, 'corp', '/8 at rule 0 beats /24 at rule 1');
  t.equal(p.match(flow({ domain: 'exact.example.com' })).outbound, 'proxy', 'suffix com at rule 2 beats exact at rule 3');
  t.equal(p.match(flow({ dst: '192.0.2.1' })).outbound, 'sink', 'any-port rule 4 beats rule 5');
  t.equal(p.match(flow({ dst: '10.1.2.3', domain: 'x.com' })).outbound, 'corp', 'across index kinds, the lowest index');

  const q = policy([
    { domainSuffix: ['example.com'], port: [8443], outbound: 'corp' }, // candidate
    { not: { network: 'udp' }, outbound: 'sink' }, // residual
    { domainSuffix: ['example.com'], outbound: 'proxy' }, // indexed
  ]);
  t.equal(q.match(flow({ domain: 'a.example.com', dstPort: 8443 })).outbound, 'corp', 'candidate 0 over residual 1 over index 2');
  t.equal(q.match(flow({ domain: 'a.example.com' })).outbound, 'sink', 'residual 1 over index 2');
  t.equal(q.match(flow({ domain: 'a.example.com', network: 'udp' })).outbound, 'proxy');
});

t.test('match results are shared, frozen objects; explain describes the rule', async (t) => {
  const p = policy([{ ipCidr: ['203.0.113.0/24', '2001:db8::/32'], port: [443, '8000-8100'], outbound: 'corp' }, { domainSuffix: ['a.example', 'b.example', 'c.example', 'd.example', 'e.example'], outbound: 'proxy' }]);
  const c = flow({ dst: '203.0.113.5', dstPort: 443 });
  const r1 = p.match(c);
  const r2 = p.match(c);
  t.equal(r1, r2, 'same object: no allocation per match');
  t.ok(Object.isFrozen(r1));
  t.same(r1, { ruleIndex: 0, outbound: 'corp' });
  t.same(p.explain(c), { ruleIndex: 0, outbound: 'corp', description: 'rules[0] ipCidr=[203.0.113.0/24, 2001:db8::/32] port=[443, 8000-8100] -> corp' });
  t.equal(p.explain(flow({ domain: 'x.e.example' })).description, 'rules[1] domainSuffix=[a.example, b.example, c.example, +2 more] -> proxy');
  t.same(p.explain(flow()), { ruleIndex: -1, outbound: 'direct', description: 'final -> direct' });
  t.equal(p.match(flow()), p.match(flow({ dst: '2001:db8::1' })), 'final result shared too');
  t.equal(p.ruleCount, 2);
  t.equal(p.describe(7), 'rules[7] (no such rule)');
  t.ok(Object.isFrozen(p), 'a Policy is immutable');
  t.ok(Object.isFrozen(p.stats));
});

t.test('an empty rule list routes everything to final', async (t) => {
  const p = compilePolicy({ final: 'proxy' });
  t.same(p.match(flow()), { ruleIndex: -1, outbound: 'proxy' });
  t.equal(p.finalOutbound, 'proxy');
});

t.test('PolicySlot swaps a recompiled policy atomically', async (t) => {
  const input = (dst: string): PolicyInput => ({ outbounds: OUTBOUNDS, rules: [{ ipCidr: [dst], outbound: 'block' }], final: 'direct' });
  const slot = new PolicySlot(compilePolicy(input('192.0.2.0/24')));
  const c = flow({ dst: '192.0.2.1' });
  t.equal(slot.match(c).outbound, 'block');
  t.equal(slot.generation, 0);
  const first = slot.current;
  // reload with a bad config: compile throws, the slot keeps serving the old policy
  t.throws(() => slot.swap(compilePolicy(input('192.0.2.0/99'))), { code: 'SLUICE_POLICY_INVALID_CIDR' });
  t.equal(slot.current, first);
  t.equal(slot.match(c).outbound, 'block');
  const prev = slot.swap(compilePolicy(input('198.51.100.0/24')));
  t.equal(prev, first, 'swap returns the replaced policy');
  t.equal(slot.generation, 1);
  t.equal(slot.match(c).outbound, 'direct');
  t.equal(prev.match(c).outbound, 'block', 'the old policy is unchanged for flows still holding it');
});

t.test('injected clock drives compileMs', async (t) => {
  let now = 1000;
  const p = compilePolicy({ final: 'direct', rules: [{ port: [1], outbound: 'direct' }] }, { clock: () => (now += 5) });
  t.equal(p.stats.compileMs, 5);
});

t.test('how rules are indexed: single key, candidate key, residual', async (t) => {
  const ruleSets = {
    nets: { type: 'cidr' as const, entries: ['198.51.100.0/24'] },
    names: { type: 'domain' as const, entries: ['names.example', 'full:x.example'] },
    words: { type: 'domain' as const, entries: ['keyword:zzz'] },
  };
  const rules: RuleInput[] = [
    { ipCidr: ['192.0.2.128/25'], outbound: 'proxy' }, // 0 indexed (flow() defaults to 192.0.2.10: outside)
    { domainSuffix: ['corp.example'], port: [22], outbound: 'corp' }, // 1 candidate: domain name
    { ipCidr: ['203.0.113.0/24'], network: 'udp', outbound: 'sink' }, // 2 candidate: dst cidr
    { sourceCidr: ['10.7.0.0/16'], port: [80], outbound: 'block' }, // 3 candidate: src cidr
    { ruleSet: ['nets'], port: [443], outbound: 'corp' }, // 4 candidate: cidr rule set
    { ruleSet: ['names'], network: 'tcp', inbound: 'tun', outbound: 'block' }, // 5 candidate: domain rule set
    { ruleSet: ['words'], protocol: 'tls', outbound: 'proxy' }, // 6 candidate: protocol (keyword sets cannot index)
    { domainKeyword: ['kw'], network: 'udp', outbound: 'sink' }, // 7 candidate: network
    { domainRegex: ['^re\\.'], inbound: 'tproxy', outbound: 'corp' }, // 8 candidate: inbound
    { domainKeyword: ['kk'], domainRegex: ['k$'], outbound: 'block' }, // 9 residual: neither key indexes
    { or: [{ port: [1] }, { port: [2] }], outbound: 'proxy' }, // 10 residual
    { and: [{ or: [{ port: [3] }] }, { domain: ['and.example'] }], outbound: 'corp' }, // 11 candidate through and
  ];
  const p = policy(rules, { ruleSets });
  t.match(p.stats, { rules: 12, indexed: 1, candidates: 9, residual: 2 });
  const m = (c: MatchContext): number => p.matchIndex(c);
  t.equal(m(flow({ dst: '192.0.2.200' })), 0);
  t.equal(m(flow({ domain: 'git.corp.example', dstPort: 22 })), 1);
  t.equal(m(flow({ domain: 'git.corp.example', dstPort: 23 })), -1);
  t.equal(m(flow({ dst: '203.0.113.1', network: 'udp' })), 2);
  t.equal(m(flow({ dst: '203.0.113.1', network: 'tcp' })), -1);
  t.equal(m(flow({ src: '10.7.1.1', dstPort: 80 })), 3);
  t.equal(m(flow({ dst: '198.51.100.7', dstPort: 443 })), 4);
  t.equal(m(flow({ dst: '198.51.100.7', dstPort: 444 })), -1);
  t.equal(m(flow({ domain: 'x.example' })), 5);
  t.equal(m(flow({ domain: 'x.example', inbound: 'tproxy' })), -1);
  t.equal(m(flow({ domain: 'a.zzz.io', protocol: 'tls' })), 6);
  t.equal(m(flow({ domain: 'a.zzz.io', protocol: 'quic' })), -1);
  t.equal(m(flow({ domain: 'kw.io', network: 'udp' })), 7);
  t.equal(m(flow({ domain: 're.io', inbound: 'tproxy' })), 8);
  t.equal(m(flow({ domain: 'kkk' })), 9);
  t.equal(m(flow({ dstPort: 2 })), 10);
  t.equal(m(flow({ dstPort: 3, domain: 'and.example' })), 11);
  t.equal(m(flow({ dstPort: 3, domain: 'and.example', network: 'udp', inbound: 'tproxy' })), 11);
});
