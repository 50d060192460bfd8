/** Every compile error names its code, its field path and what was expected. */
import t from 'tap';
import { PolicyError, compilePolicy } from '../../src/engine/policy/index.js';

const outbounds = [{ name: 'direct' }, { name: 'proxy' }];

function base(rules: unknown[], extra: Record<string, unknown> = {}): unknown {
  return { outbounds, rules, final: 'direct', ...extra };
}

const cases: [string, unknown, string, string, RegExp][] = [
  ['not an object', 'rules: []', 'SLUICE_POLICY_INVALID_TYPE', '', /expected the policy configuration object/],
  ['final missing', { rules: [] }, 'SLUICE_POLICY_MISSING_OUTBOUND', 'final', /expected the name of an outbound/],
  ['final unknown', { outbounds, final: 'nowhere' }, 'SLUICE_POLICY_UNKNOWN_OUTBOUND', 'final', /no outbound named "nowhere"; defined: "direct", "proxy"/],
  ['outbounds not a list', { outbounds: {}, final: 'direct' }, 'SLUICE_POLICY_INVALID_TYPE', 'outbounds', /expected a list/],
  ['rules not a list', { rules: {}, final: 'direct' }, 'SLUICE_POLICY_INVALID_TYPE', 'rules', /expected a list of rules/],
  ['rule not an object', base(['ipCidr: 1']), 'SLUICE_POLICY_INVALID_TYPE', 'rules[0]', /expected a rule object/],
  [
    'bad CIDR item',
    base([{ port: [1], outbound: 'direct' }, { port: [2], outbound: 'direct' }, { port: [3], outbound: 'direct' }, { ipCidr: ['10.0.0.0/8', '10.0.0.0/40'], outbound: 'proxy' }]),
    'SLUICE_POLICY_INVALID_CIDR',
    'rules[3].ipCidr[1]',
    /prefix length in "10.0.0.0\/40" must be an integer 0..32/,
  ],
  ['bad CIDR scalar', base([{ sourceCidr: 'lan', outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_CIDR', 'rules[0].sourceCidr', /"lan" is not an IPv4 or IPv6 address/],
  ['CIDR not a string', base([{ ipCidr: [10], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_CIDR', 'rules[0].ipCidr[0]', /expected a CIDR/],
  ['empty list', base([{ ipCidr: [], outbound: 'direct' }]), 'SLUICE_POLICY_EMPTY_LIST', 'rules[0].ipCidr', /at least one item/],
  ['list of wrong type', base([{ ipCidr: { a: 1 }, outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_TYPE', 'rules[0].ipCidr', /expected a list/],
  ['bad suffix', base([{ domainSuffix: ['ok.example', 'bad..example'], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_DOMAIN', 'rules[0].domainSuffix[1]', /empty label/],
  ['wildcard domain', base([{ domain: ['*.example.com'], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_DOMAIN', 'rules[0].domain[0]', /has "\*"/],
  ['U-label', base([{ domainSuffix: ['bücher.example'], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_DOMAIN', 'rules[0].domainSuffix[0]', /punycode/],
  ['bad keyword', base([{ domainKeyword: ['a b'], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_KEYWORD', 'rules[0].domainKeyword[0]', /may hold only/],
  ['bad regex', base([{ domainRegex: ['^(api'], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_REGEX', 'rules[0].domainRegex[0]', /expected a JavaScript regular expression: Invalid regular expression/],
  ['regex too long', base([{ domainRegex: ['a'.repeat(2000)], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_REGEX', 'rules[0].domainRegex[0]', /at most 1024/],
  ['bad port', base([{ port: [443, '9000-8000'], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_PORT', 'rules[0].port[1]', /ends before it starts/],
  ['bad source port', base([{ sourcePort: [70000], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_PORT', 'rules[0].sourcePort[0]', /0\.\.65535/],
  ['bad network', base([{ network: 'icmp', outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_ENUM', 'rules[0].network', /expected one of tcp, udp, got "icmp"/],
  ['bad protocol item', base([{ protocol: ['tls', 'ssh'], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_ENUM', 'rules[0].protocol[1]', /expected one of tls, http, quic, dns/],
  ['bad inbound', base([{ inbound: ['tap'], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_ENUM', 'rules[0].inbound[0]', /tun, tproxy/],
  ['enum prototype key', base([{ network: 'toString', outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_ENUM', 'rules[0].network', /expected one of/],
  ['unknown key', base([{ ip_cidr: ['10.0.0.0/8'], outbound: 'direct' }]), 'SLUICE_POLICY_UNKNOWN_KEY', 'rules[0].ip_cidr', /unknown rule key; expected one of ipCidr, sourceCidr/],
  ['missing outbound', base([{ port: [1] }]), 'SLUICE_POLICY_MISSING_OUTBOUND', 'rules[0].outbound', /expected the name of the outbound/],
  ['unknown outbound', base([{ port: [1], outbound: 'proxyy' }]), 'SLUICE_POLICY_UNKNOWN_OUTBOUND', 'rules[0].outbound', /no outbound named "proxyy"/],
  ['outbound in a sub-rule', base([{ and: [{ port: [1] }, { port: [2], outbound: 'proxy' }], outbound: 'direct' }]), 'SLUICE_POLICY_UNEXPECTED_OUTBOUND', 'rules[0].and[1].outbound', /takes no outbound/],
  ['rule without keys', base([{ outbound: 'direct' }]), 'SLUICE_POLICY_EMPTY_RULE', 'rules[0]', /use `final` for the catch-all/],
  ['empty sub-rule', base([{ not: {}, outbound: 'direct' }]), 'SLUICE_POLICY_EMPTY_RULE', 'rules[0].not', /sub-rule needs at least one/],
  ['and: []', base([{ and: [], outbound: 'direct' }]), 'SLUICE_POLICY_EMPTY_LIST', 'rules[0].and', /at least one sub-rule/],
  ['or: object', base([{ or: { port: [1] }, outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_TYPE', 'rules[0].or', /expected a list of sub-rules/],
  ['not: list', base([{ not: [{ port: [1] }], outbound: 'direct' }]), 'SLUICE_POLICY_INVALID_TYPE', 'rules[0].not', /expected a rule object/],
  [
    'deeply nested path',
    base([{ port: [1], outbound: 'direct' }, { port: [1], outbound: 'direct' }, { or: [{ port: [1] }, { not: { port: ['x'] } }], outbound: 'direct' }]),
    'SLUICE_POLICY_INVALID_PORT',
    'rules[2].or[1].not.port[0]',
    /expected a port/,
  ],
  ['unknown rule set', base([{ ruleSet: ['ads', 'nope'], outbound: 'direct' }], { ruleSets: { ads: { type: 'domain', entries: [] } } }), 'SLUICE_POLICY_UNKNOWN_RULE_SET', 'rules[0].ruleSet[1]', /no rule set named "nope"; defined: "ads"/],
  ['rule set type', base([], { ruleSets: { ads: { type: 'geoip', entries: [] } } }), 'SLUICE_POLICY_INVALID_RULE_SET', 'ruleSets.ads.type', /expected "domain", "cidr" or "mixed"/],
  ['rule set not loaded', base([], { ruleSets: { ads: { type: 'domain', path: './ads.txt' } } }), 'SLUICE_POLICY_INVALID_RULE_SET', 'ruleSets.ads.entries', /entries of \.\/ads\.txt to be loaded/],
  ['rule set not an object', base([], { ruleSets: { ads: 'ads.txt' } }), 'SLUICE_POLICY_INVALID_RULE_SET', 'ruleSets.ads', /expected \{ type/],
  ['rule set prefix', base([], { ruleSets: { ads: { type: 'domain', entries: ['ok.example', 'domain:x.example'] } } }), 'SLUICE_POLICY_INVALID_DOMAIN', 'ruleSets.ads.entries[1]', /unknown prefix in "domain:x.example"; expected "example.com" \(suffix\)/],
  ['rule set cidr line', base([], { ruleSets: { lan: { type: 'cidr', entries: ['# x', '10.0.0.0/8', '10.0.0.0/8/8'] } } }), 'SLUICE_POLICY_INVALID_CIDR', 'ruleSets.lan.entries[2]', /prefix length/],
  ['rule set entry type', base([], { ruleSets: { lan: { type: 'cidr', entries: [42] } } }), 'SLUICE_POLICY_INVALID_TYPE', 'ruleSets.lan.entries[0]', /expected a string entry/],
  ['rule set regex', base([], { ruleSets: { ads: { type: 'domain', entries: ['regex:[a-'] } } }), 'SLUICE_POLICY_INVALID_REGEX', 'ruleSets.ads.entries[0]', /regular expression/],
];

for (const [name, input, code, path, message] of cases) {
  t.test(name, async (t) => {
    try {
      compilePolicy(input);
      t.fail('compiled without error');
    } catch (e) {
      t.ok(e instanceof PolicyError, 'a PolicyError');
      const err = e as PolicyError;
      t.equal(err.code, code);
      t.equal(err.path, path);
      t.match(err.message, message);
      if (path !== '') t.ok(err.message.startsWith(`${path}: `), `message starts with the path: ${err.message}`);
    }
  });
}

t.test('errors in a rule-set file name the file', async (t) => {
  try {
    compilePolicy(base([], { ruleSets: { ads: { type: 'domain', path: '/etc/sluice/ads.txt', entries: ['good.example', 'bad domain'] } } }));
    t.fail('compiled');
  } catch (e) {
    t.match(e, { code: 'SLUICE_POLICY_INVALID_DOMAIN', path: 'ruleSets.ads.entries[1]', file: '/etc/sluice/ads.txt' });
    t.match((e as Error).message, /^\/etc\/sluice\/ads\.txt: ruleSets\.ads\.entries\[1\]: "bad domain" has " "/);
  }
});

t.test('nesting deeper than MAX_RULE_DEPTH is refused', async (t) => {
  let rule: Record<string, unknown> = { port: [1] };
  for (let i = 0; i < 40; i++) rule = { not: rule };
  t.throws(() => compilePolicy(base([{ ...rule, outbound: 'direct' }])), { code: 'SLUICE_POLICY_TOO_DEEP' });
  let ok: Record<string, unknown> = { port: [1] };
  for (let i = 0; i < 30; i++) ok = { not: ok };
  t.doesNotThrow(() => compilePolicy(base([{ ...ok, outbound: 'direct' }])));
});

t.test('without an outbounds list, names are not checked', async (t) => {
  const p = compilePolicy({ rules: [{ port: [1], outbound: 'anything' }], final: 'else' });
  t.equal(p.finalOutbound, 'else');
});

t.test('host bits in a rule CIDR are accepted and cleared', async (t) => {
  const p = compilePolicy(base([{ ipCidr: ['10.1.2.3/8'], outbound: 'proxy' }]));
  t.equal(p.match({ network: 'tcp', inbound: 'tun', family: 4, dst: new Uint8Array([10, 200, 0, 1]), dstPort: 1, src: new Uint8Array(4), srcPort: 1, domain: null, protocol: null }).outbound, 'proxy');
});
