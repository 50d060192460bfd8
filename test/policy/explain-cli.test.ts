/**
 * `sluice explain --config FILE ...` through the real launcher: the deciding
 * rule, the failed condition of each earlier rule, the name's origin, JSON
 * output, and usage errors.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const bin = new URL('../../../bin/sluice.js', import.meta.url).pathname;
const env = { ...process.env, NODE_OPTIONS: '' };

async function sluice(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [bin, ...args], { env });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const dir = mkdtempSync(join(tmpdir(), 'sluice-explain-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const cfg = join(dir, 'sluice.yaml');
writeFileSync(join(dir, 'ads.txt'), 'ads.example\n# comment\ntracker.example\n');
writeFileSync(
  cfg,
  `outbounds:
  - { name: direct, type: direct }
  - { name: proxy, type: socks5, server: 203.0.113.2, port: 1080 }
  - { name: block, type: reject }
ruleSets:
  ads: { type: domain, path: ${join(dir, 'ads.txt')} }
rules:
  - { domainSuffix: [example.com], outbound: proxy }
  - { ruleSet: [ads], outbound: block }
  - { ipCidr: [198.51.100.0/24], port: [443, 8443], outbound: proxy }
  - { network: udp, protocol: [quic], outbound: block }
final: direct
`,
);

t.test('no name: every earlier rule with its failed condition, then the decision', async (t) => {
  const r = await sluice('explain', '--config', cfg, '--dst', '198.51.100.7:443', '--src', '192.0.2.2:40000');
  t.equal(r.code, 0, r.stderr);
  t.comment(r.stdout);
  t.match(r.stdout, 'flow: tcp tun 192.0.2.2:40000 -> 198.51.100.7:443');
  t.match(r.stdout, 'name: none');
  t.match(r.stdout, 'rule 0 domainSuffix [example.com]: name unknown\n');
  t.match(r.stdout, 'rule 1 ruleSet [ads]: name unknown\n');
  t.match(r.stdout, 'decided by: rule 2 ipCidr [198.51.100.0/24] port [443, 8443]\n');
  t.match(r.stdout, 'outbound: proxy (socks5 203.0.113.2:1080)\n');
  t.notMatch(r.stdout, 'rule 3');
});

t.test('a name from the command line; a rule set from a file', async (t) => {
  const r = await sluice('explain', '--config', cfg, '--dst', '203.0.113.9:443', '--domain', 'x.tracker.example');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, 'name: x.tracker.example (given on the command line)');
  t.match(r.stdout, 'rule 0 domainSuffix [example.com]: name x.tracker.example does not match');
  t.match(r.stdout, 'decided by: rule 1 ruleSet [ads]');
  t.match(r.stdout, 'outbound: block (reject)');
  t.match(r.stdout, 'note: no --src given');
});

t.test('udp, protocol, final, IPv6, --json', async (t) => {
  const r = await sluice('explain', '--config', cfg, '--dst', '[2001:db8::5]:443', '--network', 'udp', '--protocol', 'tls', '--src', '[2001:db8:c::2]:5000', '--json');
  t.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { ruleIndex: number; outbound: string; chain: string[]; failed: { index: number; condition: string; reason: string }[]; input: { dst: string; nameOrigin: string } };
  t.equal(j.ruleIndex, -1);
  t.equal(j.outbound, 'direct');
  t.same(j.chain, ['direct']);
  t.equal(j.failed.length, 4);
  t.same(j.failed[3], { index: 3, condition: 'protocol [quic]', reason: 'protocol is tls' });
  t.same(j.failed[2], { index: 2, condition: 'ipCidr [198.51.100.0/24]', reason: 'destination 2001:db8::5 not in the list' });
  t.equal(j.input.dst, '[2001:db8::5]:443');
  t.equal(j.input.nameOrigin, 'none');
});

t.test('usage errors exit 2 and name the option', async (t) => {
  for (const [args, want] of [
    [['--config', cfg], /--dst ADDR:PORT is required/],
    [['--dst', '1.2.3.4:5'], /--config FILE is required/],
    [['--config', cfg, '--dst', '1.2.3.4'], /--dst: expected ADDR:PORT/],
    [['--config', cfg, '--dst', '1.2.3.4:99999'], /--dst: expected ADDR:PORT/],
    [['--config', cfg, '--dst', '1.2.3.4:80', '--network', 'sctp'], /--network must be one of tcp, udp/],
    [['--config', cfg, '--dst', '1.2.3.4:80', '--protocol', 'ftp'], /--protocol must be one of/],
    [['--config', cfg, '--dst', '1.2.3.4:80', '--src', '[2001:db8::1]:1'], /same address family/],
    [['--config', cfg, '--dst', '1.2.3.4:80', '--bogus'], /Unknown option '--bogus'/],
  ] as const) {
    const r = await sluice('explain', ...args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, want);
  }
});

t.test('a broken configuration exits 1 with the config error', async (t) => {
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'rules:\n  - { ipCidr: [not-a-cidr], outbound: direct }\nfinal: direct\n');
  const r = await sluice('explain', '--config', bad, '--dst', '1.2.3.4:80');
  t.equal(r.code, 1);
  t.match(r.stderr, /rules\[0\]\.ipCidr/);
});
