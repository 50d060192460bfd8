/**
 * Crash safety of route.auto, in a namespace the test owns: the
 * namespace's ip rules, routes (all tables, both families) and nftables
 * ruleset are identical to the state before `sluice run` after a clean
 * SIGTERM stop, after kill -9 followed by `sluice down --state FILE`, and
 * after kill -9 followed by a new `sluice run` (which removes the leftovers
 * first) and a clean stop. Also: a rule already at route.priority makes
 * `sluice run` refuse, naming the field, without installing anything.
 *
 * Needs root, /dev/net/tun, ip, nft.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { requireRoot } from '../harness/netns.js';
import { requireCommands, tempDir } from '../fixtures/engine/lab.js';
import { config, PRIORITY, sluiceDown, snapshot, spawnSluice, startSluice, workstation } from './workstation.js';

const CONFIG = config('  strictDns: true');

t.test('state is restored after SIGTERM, after kill -9 + sluice down, after kill -9 + a new run', { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft'])) return;
  const dir = tempDir(t, 'crash');
  const state = path.join(dir, 'run', 'state.json');
  const { ws } = await workstation(t, 'syscrash', false);
  const before = await snapshot(ws);

  // 1. Clean stop.
  let engine = await startSluice(t, ws, dir, CONFIG, state);
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  t.not(await snapshot(ws), before, 'running: the namespace state changed');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.equal(await snapshot(ws), before, 'after SIGTERM: identical to before');

  // 2. kill -9, then sluice down.
  engine = await startSluice(t, ws, dir, CONFIG, state);
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  engine.proc.kill('SIGKILL');
  await engine.exited;
  t.not(await snapshot(ws), before, 'after kill -9: leftovers remain (rules, nft table)');
  t.ok(existsSync(state), 'after kill -9: the state file remains');
  const down = await sluiceDown(ws, state);
  t.equal(down.code, 0, `sluice down exits 0 (${down.stdout.trim()} ${down.stderr.trim()})`);
  t.match(down.stdout, /removed \d+ entr/, 'sluice down reports what it removed');
  t.equal(await snapshot(ws), before, 'after kill -9 + sluice down: identical to before');
  t.notOk(existsSync(state), 'sluice down deleted the state file');
  const again = await sluiceDown(ws, state);
  t.equal(again.code, 0, 'a second sluice down is a no-op');
  t.match(again.stdout, /nothing to remove/, 'and says so');

  // 3. kill -9, then a new run cleans up first.
  engine = await startSluice(t, ws, dir, CONFIG, state);
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  engine.proc.kill('SIGKILL');
  await engine.exited;
  engine = await startSluice(t, ws, dir, CONFIG, state);
  await engine.waitFor((l) => l.msg === 'removed routing state left by an earlier run', 5000, 'the leftover clean-up line');
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');
  t.equal((await engine.stop()).code, 0, 'the second run stops cleanly');
  t.equal(await snapshot(ws), before, 'after kill -9 + new run + SIGTERM: identical to before');
});

t.test('a rule already at route.priority is refused, naming the field', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft'])) return;
  const dir = tempDir(t, 'collide');
  const state = path.join(dir, 'state.json');
  const { ws } = await workstation(t, 'syscolli', false);
  await ws.exec(['ip', 'rule', 'add', 'priority', String(PRIORITY), 'lookup', '100']);
  const before = await snapshot(ws);
  const engine = spawnSluice(t, ws, dir, CONFIG, state);
  const exit = await engine.exited;
  t.equal(exit.code, 1, 'sluice run exits 1');
  t.match(engine.stderr, /route\.priority: priority 9000 is already used/, `the refusal names route.priority: ${engine.stderr.trim()}`);
  t.match(engine.stderr, /sluice\.yaml/, 'and the config file');
  t.equal(await snapshot(ws), before, 'nothing was installed');
  t.notOk(existsSync(state), 'no state file was left');
});
