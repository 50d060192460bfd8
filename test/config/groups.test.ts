/**
 * Outbound groups in the configuration: the four types load with their
 * defaults; an unknown member, a group in itself, a member listed twice, a
 * select default that is no member and a cycle of groups are each one
 * problem naming the field.
 */
import t from 'tap';
import { isConfigError, type ConfigProblem } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';
import { defaultGroupCheck, type GroupOutbound } from '../../src/config/types.js';

async function problems(yaml: string): Promise<readonly ConfigProblem[]> {
  try {
    await parseConfig(yaml, 'groups.yaml');
  } catch (err) {
    if (isConfigError(err)) return err.problems;
    throw err;
  }
  throw new Error('expected the config to be refused');
}

const LEAVES = `
  - { name: direct, type: direct }
  - { name: a, type: socks5, server: 192.0.2.1, port: 1080 }
  - { name: b, type: socks5, server: 192.0.2.2, port: 1080 }
`;

t.test('the four group types load, with check defaults filled in', async (t) => {
  const cfg = await parseConfig(
    `
outbounds:${LEAVES}
  - { name: pick, type: select, outbounds: [a, b], default: b }
  - { name: fast, type: urltest, outbounds: [a, b], check: { url: "http://192.0.2.9/204", interval: 30, tolerance: 100 } }
  - { name: safe, type: fallback, outbounds: [fast, direct] }
  - { name: spread, type: loadbalance, outbounds: [a, b], strategy: round-robin }
final: safe
`,
    'groups.yaml',
  );
  const byName = new Map(cfg.outbounds.map((o) => [o.name, o]));
  t.same(byName.get('pick'), { name: 'pick', type: 'select', outbounds: ['a', 'b'], check: defaultGroupCheck(), default: 'b', strategy: 'consistent-hash' });
  const fast = byName.get('fast') as GroupOutbound;
  t.same(fast.check, { ...defaultGroupCheck(), url: 'http://192.0.2.9/204', interval: 30, tolerance: 100 }, 'urltest: given keys kept, the rest defaulted');
  t.same((byName.get('safe') as GroupOutbound).outbounds, ['fast', 'direct'], 'a group may hold a group');
  t.equal((byName.get('spread') as GroupOutbound).strategy, 'round-robin');
  t.equal(cfg.final, 'safe', 'rules and final may name a group');
});

t.test('member mistakes name the member field', async (t) => {
  const p = await problems(`
outbounds:${LEAVES}
  - { name: g, type: fallback, outbounds: [a, bb, g, a] }
  - { name: s, type: select, outbounds: [a, b], default: direct }
`);
  const byPath = new Map(p.map((x) => [x.path, x.message]));
  t.match(byPath.get('outbounds[3].outbounds[1]'), /undefined outbound "bb".*did you mean "b"/, 'unknown member, with a suggestion');
  t.match(byPath.get('outbounds[3].outbounds[2]'), /cannot contain itself/, 'itself');
  t.match(byPath.get('outbounds[3].outbounds[3]'), /listed twice/, 'a member twice');
  t.match(byPath.get('outbounds[4].default'), /"direct" is not a member of group "s"/, 'select default outside the group');
  t.equal(p.length, 4, 'one problem per mistake');
  t.ok(p.every((x) => x.line > 0), 'each with a line number');
});

t.test('a cycle of groups is one config error naming the field that closes it', async (t) => {
  const p = await problems(`
outbounds:${LEAVES}
  - { name: x, type: fallback, outbounds: [a, y] }
  - { name: y, type: urltest, outbounds: [z, b] }
  - { name: z, type: select, outbounds: [x] }
`);
  t.equal(p.length, 1, JSON.stringify(p));
  t.match(p[0]!.path, /^outbounds\[\d\]\.outbounds\[\d\]$/);
  t.match(p[0]!.message, /groups form a cycle: (x -> y -> z -> x|y -> z -> x -> y|z -> x -> y -> z)/);
});

t.test('schema: group keys are checked per type', async (t) => {
  const p = await problems(`
outbounds:${LEAVES}
  - { name: g, type: urltest, outbounds: [a], check: { interval: 0, url: "ftp://x" } }
  - { name: h, type: select, outbounds: [] }
  - { name: i, type: fallback, outbounds: [a], strategy: round-robin }
`);
  const paths = p.map((x) => x.path).sort();
  t.ok(paths.includes('outbounds[3].check.interval'), `interval range (${paths.join(' ')})`);
  t.ok(paths.includes('outbounds[3].check.url'), 'url scheme');
  t.ok(paths.includes('outbounds[4].outbounds'), 'an empty member list');
  t.ok(paths.some((x) => x.startsWith('outbounds[5]')), 'strategy only on loadbalance');
});
