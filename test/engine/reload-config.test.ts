/**
 * Whole-config reload: SIGHUP re-reads the YAML itself. During a long,
 * rate-limited download to moved.example (direct), the test edits a rule in
 * the config file so moved.example is rejected, and sends SIGHUP: new
 * requests for it fail fast, the download finishes intact (SHA-256) on its
 * old route, and the log says what changed. Then a broken edit (an unknown
 * outbound and a bad CIDR) is refused with the messages `sluice check`
 * prints and the running config stays; an edit to a setting only a restart
 * can apply (tun.mtu) is named in a warning.
 *
 * Needs root, /dev/net/tun, curl, sha256sum, bash.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { requireRoot } from '../harness/netns.js';
import { CLIENT_V4, SERVER_V4 } from '../harness/topology.js';
import { blobSha256 } from '../fixtures/blob.js';
import { DIRECT_AND_BLOCK, blobLab, fakeIpHead } from '../fixtures/engine/three-ns.js';
import { SLUICE_BIN, TUN, childEnv, curl, describe, requireCommands, startEngine, steer, tempDir } from '../fixtures/engine/lab.js';

const SIZE = 300 * 1024 * 1024;
const RATE = '20M';

const config = (rules: string, extra = ''): string => `${fakeIpHead({ tun: extra })}${DIRECT_AND_BLOCK}rules:
${rules}
final: direct
`;

t.test('SIGHUP applies an edited rule to new flows; a running download finishes intact; a broken edit is refused', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'sha256sum', 'bash'])) return;
  const dir = tempDir(t, 'rlconf');
  const { client, gateway } = await blobLab(t, 'engrlcfg');
  const file = path.join(dir, 'sluice.yaml');
  const engine = await startEngine(t, gateway, dir, config('  - { domain: [other.example], outbound: block }'));
  t.teardown(() => engine.stop());
  await steer(gateway, TUN);
  const resolve = ['--resolve', `moved.example:8080:${SERVER_V4}`];

  const first = await curl(client, ['--local-port', '44001', ...resolve, '-o', '/dev/null', '-w', '%{size_download}', 'http://moved.example:8080/bytes/1000']);
  t.equal(first.stdout, '1000', `before the reload moved.example is reachable (${describe(first)})`);

  let downloadEnded = 0;
  const download = client
    .exec(['bash', '-o', 'pipefail', '-c', `curl -sS --max-time 120 --limit-rate ${RATE} --local-port 44002 ${resolve.join(' ')} http://moved.example:8080/bytes/${SIZE} | sha256sum`], { allowFail: true, timeoutMs: 130_000 })
    .then((r) => {
      downloadEnded = Date.now();
      return r;
    });
  await new Promise((r) => setTimeout(r, 2000));
  t.equal(downloadEnded, 0, 'the download is running when the rule is edited');

  // The rule itself is edited in the YAML (no rule-set file involved).
  writeFileSync(file, config('  - { domain: [other.example, moved.example], outbound: block }'));
  process.kill(engine.proc.pid!, 'SIGHUP');
  const reloaded = await engine.waitFor((l) => l.msg === 'reloaded', 10_000, '"reloaded"');
  const reloadedAt = Date.now();
  t.same(reloaded.changes, ['rules: 1 added, 1 removed (1 in all)'], 'the log says what changed');

  const blocked = await curl(client, ['--local-port', '44003', ...resolve, 'http://moved.example:8080/bytes/1000'], 10);
  t.not(blocked.code, 0, `a new request for moved.example is refused (${describe(blocked)})`);
  t.ok(blocked.ms < 1000, `fast (${blocked.ms} ms)`);
  const f3 = await engine.flowFrom(`${CLIENT_V4}:44003`);
  t.match(f3, { domain: 'moved.example', rule: 0, outbound: 'block' }, 'by the edited rule');

  // A broken edit: refused with sluice check's messages; the running config stays.
  const broken = config('  - { domain: [moved.example], outbound: blok }\n  - { ipCidr: [10.0.0.1/8], outbound: direct }');
  writeFileSync(file, broken);
  let checkOut = '';
  try {
    execFileSync(process.execPath, [SLUICE_BIN, 'check', '--config', file], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    checkOut = String((err as { stderr?: Buffer }).stderr ?? '');
  }
  const checkLines = checkOut.split('\n').filter((l) => l.startsWith(file));
  t.equal(checkLines.length, 2, `sluice check finds both mistakes:\n${checkOut}`);
  process.kill(engine.proc.pid!, 'SIGHUP');
  const refused = await engine.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('reload refused'), 10_000, '"reload refused"');
  t.same(refused.errors, checkLines, 'the refusal logs the very lines sluice check prints');
  const still = await curl(client, ['--local-port', '44004', ...resolve, 'http://moved.example:8080/bytes/1000'], 10);
  t.not(still.code, 0, 'the previous (reloaded) config still runs: moved.example still blocked');
  const ok = await curl(client, ['--local-port', '44005', '-o', '/dev/null', '-w', '%{size_download}', `http://${SERVER_V4}:8080/bytes/1000`]);
  t.equal(ok.stdout, '1000', 'and everything else still goes direct');

  // A setting only a restart applies is named, and the rest of the file applies.
  writeFileSync(file, config('  - { domain: [other.example], outbound: block }', ', mtu: 1400'));
  process.kill(engine.proc.pid!, 'SIGHUP');
  const warn = await engine.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('reload cannot change'), 10_000, 'the restart warning');
  t.same(warn.fields, ['tun.mtu'], 'the warning names tun.mtu');
  await engine.waitFor(() => engine.lines.filter((l) => l.msg === 'reloaded').length >= 2, 10_000, 'the third reload applied');
  const back = await curl(client, ['--local-port', '44006', ...resolve, '-o', '/dev/null', '-w', '%{size_download}', 'http://moved.example:8080/bytes/1000']);
  t.equal(back.stdout, '1000', 'the rule edit in the same file applied');

  const d = await download;
  t.ok(downloadEnded > reloadedAt, `the download outlived the first reload by ${downloadEnded - reloadedAt} ms`);
  t.equal(d.code, 0, `the running download completed (${d.stderr.trim()})`);
  t.equal(d.stdout.split(' ')[0], blobSha256(SIZE), `all ${SIZE} bytes arrived intact (SHA-256)`);
  const f2 = await engine.flowFrom(`${CLIENT_V4}:44002`);
  t.match(f2, { domain: 'moved.example', rule: -1, outbound: 'direct' }, 'the long flow kept its original route');
});
