/**
 * `sluice run` with a broken configuration: it exits non-zero before
 * touching the system, printing one line per mistake that names the file,
 * position and field path, and no TUN device appears. Each run happens in a
 * fresh network namespace so the absence of a device is observable.
 *
 * Needs root and iproute2.
 */
import t from 'tap';
import type { Test } from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { requireRoot, type Netns } from '../harness/netns.js';
import { SLUICE_BIN, childEnv, tempDir, createLab } from '../fixtures/engine/lab.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  links: string[];
}

/** Runs `sluice run --config file` in a new namespace; returns its output and the namespace's links afterwards. */
async function runIn(t: Test, tag: string, file: string): Promise<Run> {
  const lab = await createLab(t, tag);
  const ns: Netns = await lab.netns('engine');
  const r = await ns.exec([process.execPath, SLUICE_BIN, 'run', '--config', file], { allowFail: true, timeoutMs: 20_000, env: childEnv });
  const links = (await ns.sh('ip -o link show'))
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.split(':')[1]!.trim().replace(/@.*/, ''));
  return { ...r, links };
}

/** stderr lines of the form FILE:LINE:COL: path: message. */
const problemLines = (stderr: string, file: string): string[] =>
  stderr.split('\n').filter((l) => l.startsWith(`${file}:`) && /^[^:]+:\d+:\d+: /.test(l));

t.test('sluice run reports every mistake with its field path, exits non-zero and creates no TUN', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const dir = tempDir(t, 'cfgerr');
  const file = path.join(dir, 'bad.yaml');
  writeFileSync(
    file,
    [
      'log: { level: info, formt: json }',
      'tun: { name: slbad0, mtu: 100 }',
      'dns: { mode: fakeip }',
      'outbounds:',
      '  - { name: direct, type: direct }',
      'rules:',
      '  - { domainSuffix: [x.example], outbound: nowhere }',
      '  - { ipCidr: [203.0.113.7/24], outbound: direct }',
      '  - { port: ["9000-80"], outbound: direct }',
      '',
    ].join('\n'),
  );
  const r = await runIn(t, 'engcfger', file);
  t.not(r.code, 0, `exits non-zero (exit ${r.code}; stderr:\n${r.stderr})`);
  t.notMatch(r.stdout, /"msg":"ready"/, 'never ready');
  const lines = problemLines(r.stderr, file);
  const expected = ['log.formt', 'tun.mtu', 'dns.mode', 'rules[0].outbound', 'rules[1].ipCidr[0]', 'rules[2].port[0]'];
  t.equal(lines.length, expected.length, `one line per mistake (${expected.length}):\n${r.stderr}`);
  for (const field of expected) {
    const hits = lines.filter((l) => l.includes(`: ${field}: `));
    t.equal(hits.length, 1, `exactly one line names ${field}`);
  }
  t.match(lines.find((l) => l.includes(': rules[0].outbound: ')) ?? '', /nowhere/, 'the undefined outbound is quoted');
  t.match(lines.find((l) => l.includes(': log.formt: ')) ?? '', /format/, 'the misspelt key gets a suggestion');
  t.same(r.links, ['lo'], 'no TUN (or any other device) was created');
});

t.test('sluice run names the rule-set file and line of a bad entry, and a missing rule-set file', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const dir = tempDir(t, 'cfgrs');
  mkdirSync(path.join(dir, 'sets'));
  const sets = path.join(dir, 'sets', 'ads.txt');
  writeFileSync(sets, '# ads\nads.example\n-x.example\n');
  const file = path.join(dir, 'bad.yaml');
  writeFileSync(
    file,
    [
      'tun: { name: slbad1 }',
      'ruleSets:',
      '  ads: { type: domain, path: ./sets/ads.txt }',
      '  gone: { type: cidr, path: ./sets/missing.txt }',
      'rules:',
      '  - { ruleSet: [ads, gone], outbound: direct }',
      '',
    ].join('\n'),
  );
  const r = await runIn(t, 'engrsets', file);
  t.not(r.code, 0, `exits non-zero (exit ${r.code})`);
  t.match(r.stderr, new RegExp(`^${sets.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:3:\\d+: ruleSets\\.ads: .*-x\\.example`, 'm'), `the bad line of the rule-set file is named:\n${r.stderr}`);
  t.match(r.stderr, /ruleSets\.gone(\.path)?: .*missing\.txt/, 'the missing rule-set file is named');
  t.same(r.links, ['lo'], 'no TUN was created');
});

t.test('sluice run with a YAML syntax error or a missing file exits non-zero and creates no TUN', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const dir = tempDir(t, 'cfgsyn');
  const file = path.join(dir, 'syntax.yaml');
  writeFileSync(file, 'tun: { name: slbad2 }\ntun: { mtu: 1500 }\n');
  const r = await runIn(t, 'engsynta', file);
  t.not(r.code, 0, `a duplicate key: exits non-zero (exit ${r.code})`);
  t.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:2:\\d+: `), `the position is named:\n${r.stderr}`);
  t.same(r.links, ['lo'], 'no TUN was created');

  const missing = path.join(dir, 'absent.yaml');
  const m = await runIn(t, 'engmissf', missing);
  t.not(m.code, 0, `a missing file: exits non-zero (exit ${m.code})`);
  t.match(m.stderr, /absent\.yaml/, `the file is named:\n${m.stderr}`);
  t.same(m.links, ['lo'], 'no TUN was created');
});
