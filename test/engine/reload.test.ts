/**
 * `sluice run` reload: SIGHUP re-reads rule-set files and swaps the policy
 * for new flows, while flows already running keep going. A long, rate
 * limited download to moved.example runs direct while the test moves
 * moved.example into the block list and sends SIGHUP; after "reloaded" a
 * new request for moved.example fails fast, and the download still
 * completes with the right SHA-256.
 *
 * Needs root, /dev/net/tun, curl, sha256sum, bash.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { requireRoot } from '../harness/netns.js';
import { CLIENT_V4, SERVER_V4 } from '../harness/topology.js';
import { blobSha256 } from '../fixtures/blob.js';
import { DIRECT_AND_BLOCK, blobLab, fakeIpHead } from '../fixtures/engine/three-ns.js';
import { TUN, curl, describe, requireCommands, startEngine, steer, tempDir } from '../fixtures/engine/lab.js';

const SIZE = 300 * 1024 * 1024;
const RATE = '20M'; // curl: bytes per second, so about 15 s

t.test('SIGHUP moves a name to block for new flows; a running download finishes intact', { timeout: 150_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'sha256sum', 'bash'])) return;
  const dir = tempDir(t, 'reload');
  const setFile = path.join(dir, 'moved.txt');
  writeFileSync(setFile, '# names to block\nother.example\n');
  const { client, gateway } = await blobLab(t, 'engrload');
  const engine = await startEngine(
    t,
    gateway,
    dir,
    `${fakeIpHead()}${DIRECT_AND_BLOCK}ruleSets:
  moved: { type: domain, path: ./moved.txt }
rules:
  - { ruleSet: [moved], outbound: block }
final: direct
`,
  );
  await steer(gateway, TUN);
  const resolve = ['--resolve', `moved.example:8080:${SERVER_V4}`];

  const first = await curl(client, ['--local-port', '43001', ...resolve, '-o', '/dev/null', '-w', '%{size_download}', 'http://moved.example:8080/bytes/1000']);
  t.equal(first.code, 0, `before the reload moved.example is reachable (${describe(first)})`);
  const f1 = await engine.flowFrom(`${CLIENT_V4}:43001`);
  if (f1) t.match(f1, { domain: 'moved.example', rule: -1, outbound: 'direct' }, 'and goes direct');
  else t.fail('no flow line for the first request');

  const started = Date.now();
  let downloadEnded = 0;
  const download = client
    .exec(
      ['bash', '-o', 'pipefail', '-c', `curl -sS --max-time 120 --limit-rate ${RATE} --local-port 43002 ${resolve.join(' ')} http://moved.example:8080/bytes/${SIZE} | sha256sum`],
      { allowFail: true, timeoutMs: 130_000 },
    )
    .then((r) => {
      downloadEnded = Date.now();
      return r;
    });
  await new Promise((r) => setTimeout(r, 2000));
  t.equal(downloadEnded, 0, 'the download is still running when the rule set changes');

  writeFileSync(setFile, '# names to block\nother.example\nmoved.example\n');
  process.kill(engine.proc.pid!, 'SIGHUP');
  await engine.waitFor((l) => l.msg === 'reloaded', 10_000, '"reloaded"');
  const reloadedAt = Date.now();

  const blocked = await curl(client, ['--local-port', '43003', ...resolve, 'http://moved.example:8080/bytes/1000'], 10);
  t.not(blocked.code, 0, `after the reload a new request for moved.example fails (${describe(blocked)})`);
  t.not(blocked.code, 28, 'not by timeout');
  t.ok(blocked.ms < 1000, `fails fast (${blocked.ms} ms)`);
  const f3 = await engine.flowFrom(`${CLIENT_V4}:43003`);
  if (f3) t.match(f3, { domain: 'moved.example', rule: 0, outbound: 'block' }, 'the new flow matched the reloaded rule set');
  else t.fail('no flow line for the blocked request');

  const other = await curl(client, ['--local-port', '43004', '-o', '/dev/null', '-w', '%{size_download}', `http://${SERVER_V4}:8080/bytes/1000`]);
  t.equal(other.stdout, '1000', `other destinations still go direct (${describe(other)})`);

  const d = await download;
  t.ok(downloadEnded > reloadedAt, `the download was still running after the reload (ended ${downloadEnded - reloadedAt} ms later, ${downloadEnded - started} ms in all)`);
  t.equal(d.code, 0, `the running download completed (exit ${d.code}; ${d.stderr.trim()})`);
  t.equal(d.stdout.split(' ')[0], blobSha256(SIZE), `all ${SIZE} bytes arrived intact (SHA-256)`);
  const f2 = await engine.flowFrom(`${CLIENT_V4}:43002`);
  if (f2) {
    t.match(f2, { domain: 'moved.example', rule: -1, outbound: 'direct' }, 'the long flow kept its original route');
    t.ok(f2.bytesDown >= SIZE, `its flow line counts the whole body (${f2.bytesDown} bytes down)`);
  } else t.fail('no flow line for the long download');
});
