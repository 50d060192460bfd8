import t from 'tap';
import { policyNeedsName } from '../../src/engine/name-sensitivity.js';
import type { SluiceConfig } from '../../src/config/types.js';

type P = Pick<SluiceConfig, 'rules' | 'ruleSets'>;
const policy = (rules: unknown[], ruleSets: Record<string, { type: 'domain' | 'cidr'; path: null; entries: string[] }> = {}): P => ({ rules, ruleSets }) as unknown as P;

t.test('address-only policies never need the name; any name condition does', async (t) => {
  t.notOk(policyNeedsName(policy([])), 'the default policy (no rules)');
  t.notOk(policyNeedsName(policy([{ ipCidr: ['192.0.2.0/24'], port: [443], outbound: 'x' }, { network: 'udp', outbound: 'y' }])), 'CIDR, port, network');
  t.notOk(policyNeedsName(policy([{ ruleSet: ['lan'], outbound: 'x' }], { lan: { type: 'cidr', path: null, entries: ['10.0.0.0/8'] } })), 'a CIDR rule set');
  t.ok(policyNeedsName(policy([{ domainSuffix: ['example.com'], outbound: 'x' }])), 'domainSuffix');
  t.ok(policyNeedsName(policy([{ protocol: ['tls'], outbound: 'x' }])), 'protocol');
  t.ok(policyNeedsName(policy([{ ruleSet: ['ads'], outbound: 'x' }], { ads: { type: 'domain', path: null, entries: ['ads.example'] } })), 'a domain rule set');
  t.ok(policyNeedsName(policy([{ and: [{ network: 'tcp' }, { not: { domainKeyword: ['x'] } }], outbound: 'x' }])), 'nested in and/not');
  t.ok(policyNeedsName(policy([{ or: [{ ipCidr: ['192.0.2.0/24'] }, { domainRegex: ['^a'] }], outbound: 'x' }])), 'nested in or');
});
