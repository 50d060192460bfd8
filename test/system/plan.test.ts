/**
 * The parts of the auto-route that need no machine: the `route:` config
 * section (defaults, schema, semantic checks naming field paths), the plan
 * (which routes, rules and nftables script), applying with rollback, and
 * teardown's tolerance, all against a recording fake runner.
 */
import t from 'tap';
import type { Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/types.js';
import { isConfigError } from '../../src/config/errors.js';
import type { CommandResult, Runner } from '../../src/system/exec.js';
import { applyRouting, planRouting } from '../../src/system/routing.js';
import { teardownFile, teardownState } from '../../src/system/teardown.js';
import { findCollisions } from '../../src/system/preflight.js';
import { readState, writeState, emptyState } from '../../src/system/state.js';

async function problems(yaml: string): Promise<string[]> {
  try {
    await parseConfig(yaml, 'c.yaml');
    return [];
  } catch (err) {
    if (!isConfigError(err)) throw err;
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
}

function fakeRunner(answer: (argv: readonly string[], input: string) => Partial<CommandResult> = () => ({})) {
  const calls: { argv: string[]; input: string }[] = [];
  const runner: Runner = async (argv, input = '') => {
    calls.push({ argv: [...argv], input });
    return { code: 0, stdout: '', stderr: '', ...answer(argv, input) };
  };
  return { runner, calls };
}

function tmp(t: Test): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-system-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('route config: defaults, completion and field-named problems', async (t) => {
  const d = defaultConfig().route;
  t.same(d, { auto: false, table: 2022, priority: 9000, mark: 0x162, include: ['0.0.0.0/0', '::/0'], exclude: [], strictDns: false, killSwitch: true, excludeDetected: true, kernelPath: false });
  const c = await parseConfig('route: { auto: true, exclude: [192.168.0.0/16] }\n', 'c.yaml');
  t.same(c.route, { ...d, auto: true, exclude: ['192.168.0.0/16'] }, 'omitted keys take defaults');
  t.same((await parseConfig('log: { level: info }\n', 'c.yaml')).route, d, 'no route section: defaults');
  t.match(await problems('route: { table: 254 }\n'), [/^route\.table: table 254 is the kernel's "main" table/]);
  t.match(await problems('route: { include: [10.0.0.1/8] }\n'), [/^route\.include\[0\]: 10\.0\.0\.1\/8 has host bits set; did you mean 10\.0\.0\.0\/8\?/]);
  t.match(await problems('route: { priority: 40000 }\n'), [/^route\.priority: /]);
  t.match(await problems('route: { bogus: 1 }\n'), [/^route/]);
  t.match(
    await problems('route: { auto: true }\noutbounds: [ { name: direct, type: direct, mark: 7 } ]\n'),
    [/^outbounds\[0\]\.mark: mark 0x7 differs from route\.mark 0x162/],
  );
  t.same(await problems('route: { auto: true }\noutbounds: [ { name: direct, type: direct, mark: 0x162 } ]\n'), [], 'the same mark is fine');
});

t.test('plan: include routes via the TUN, exclude rules above the mark rule, nft only with strictDns', async (t) => {
  const route = { ...defaultConfig().route, auto: true, exclude: ['192.168.0.0/16', 'fd00::/8'] };
  const plan = planRouting(route, 'tun9');
  t.same(plan.routes, [
    { family: 4, dst: '0.0.0.0/0', dev: 'tun9', table: 2022 },
    { family: 6, dst: '::/0', dev: 'tun9', table: 2022 },
    { family: 4, dst: '0.0.0.0/0', dev: '', table: 2022, type: 'unreachable', metric: 0xffffffff },
    { family: 6, dst: '::/0', dev: '', table: 2022, type: 'unreachable', metric: 0xffffffff },
  ], 'the kill switch (on by default) adds an unreachable route per include prefix');
  t.same(planRouting({ ...route, killSwitch: false }, 'tun9').routes, [
    { family: 4, dst: '0.0.0.0/0', dev: 'tun9', table: 2022 },
    { family: 6, dst: '::/0', dev: 'tun9', table: 2022 },
  ], 'killSwitch: false: only the TUN routes');
  t.same(planRouting({ ...route, include: ['10.0.0.0/8'] }, 'tun9').routes.map((r) => `${r.type ?? 'via'} ${r.dst}`), ['via 10.0.0.0/8', 'unreachable 10.0.0.0/8'], 'only the captured prefixes are fenced');
  t.same(plan.rules, [
    { family: 4, priority: 8999, selector: ['to', '192.168.0.0/16', 'lookup', 'main'] },
    { family: 4, priority: 9000, selector: ['not', 'fwmark', '0x162', 'lookup', '2022'] },
    { family: 6, priority: 8999, selector: ['to', 'fd00::/8', 'lookup', 'main'] },
    { family: 6, priority: 9000, selector: ['not', 'fwmark', '0x162', 'lookup', '2022'] },
  ]);
  t.equal(plan.nft, null);
  const v4only = planRouting({ ...route, include: ['10.0.0.0/8'], strictDns: true }, 'tun9');
  t.same(v4only.rules.map((r) => r.family), [4, 4], 'no IPv6 rules without an IPv6 include');
  t.match(v4only.nft, /table inet sluice \{[\s\S]*meta mark 0x162 accept[\s\S]*oifname \{ "tun9", "lo" \} accept[\s\S]*udp dport 53 counter drop[\s\S]*tcp dport 53 counter drop/);
});

t.test('apply: one ip batch per family then nft; state written before each step', async (t) => {
  const dir = tmp(t);
  const statePath = path.join(dir, 'sub', 'state.json');
  const plan = planRouting({ ...defaultConfig().route, strictDns: true }, 'tun9');
  const seen: number[] = [];
  const { runner, calls } = fakeRunner(() => {
    const s = readState(statePath)!;
    seen.push(s.routes.length + s.rules.length + s.nftTables.length);
    return {};
  });
  const state = await applyRouting(plan, statePath, runner);
  t.same(calls.map((c) => c.argv.join(' ')), ['ip -batch -', 'ip -6 -batch -', 'nft -f -']);
  t.equal(calls[0]!.input, 'route add 0.0.0.0/0 dev tun9 table 2022\nroute add unreachable 0.0.0.0/0 table 2022 metric 4294967295\nrule add not fwmark 0x162 lookup 2022 priority 9000\n');
  t.same(seen, [3, 6, 7], 'each step was recorded in the state file before it ran');
  t.same(readState(statePath), state);
});

t.test('apply: a failing step rolls back what was applied and removes the state file', async (t) => {
  const dir = tmp(t);
  const statePath = path.join(dir, 'state.json');
  const plan = planRouting({ ...defaultConfig().route, strictDns: true }, 'tun9');
  const { runner, calls } = fakeRunner((argv) => (argv[0] === 'nft' && argv[1] === '-f' ? { code: 1, stderr: 'Error: Could not process rule: Operation not supported' } : {}));
  await t.rejects(applyRouting(plan, statePath, runner), { code: 'APPLY_FAILED', message: /nft -f -: Error: Could not process rule/ });
  const rollback = calls.slice(3).map((c) => `${c.argv.join(' ')} <${c.input.trim().split('\n').join(' | ')}>`);
  t.same(rollback, [
    'ip -force -batch - <rule del not fwmark 0x162 lookup 2022 priority 9000 | route del 0.0.0.0/0 dev tun9 table 2022 | route del unreachable 0.0.0.0/0 table 2022 metric 4294967295>',
    'ip -6 -force -batch - <rule del not fwmark 0x162 lookup 2022 priority 9000 | route del ::/0 dev tun9 table 2022 | route del unreachable ::/0 table 2022 metric 4294967295>',
    'nft delete table inet sluice <>',
  ]);
  t.notOk(existsSync(statePath), 'state file removed after a complete rollback');
});

t.test('teardown tolerates entries already gone and reports others', async (t) => {
  const state = { ...emptyState(1), ...planRouting({ ...defaultConfig().route, strictDns: true }, 'tun9'), nftTables: [{ family: 'inet' as const, name: 'sluice' }] };
  const gone = fakeRunner((argv) =>
    argv[0] === 'nft'
      ? { code: 1, stderr: 'Error: Could not process rule: No such file or directory\n' }
      : { code: 1, stderr: 'RTNETLINK answers: No such process\nCommand failed -:2\n' },
  );
  t.same(await teardownState(state, gone.runner), { removed: 4, alreadyGone: 3 }, '3 lines per family (rule, TUN route, kill switch), one already gone in each; the nft table gone');
  const bad = fakeRunner((argv) => (argv[1] === '-6' ? { code: 1, stderr: 'RTNETLINK answers: Operation not permitted\nCommand failed -:1\n' } : {}));
  await t.rejects(teardownState(state, bad.runner), { code: 'TEARDOWN_FAILED', message: /ip -6: RTNETLINK answers: Operation not permitted/ });

  const dir = tmp(t);
  const file = path.join(dir, 'state.json');
  t.equal(await teardownFile(file, gone.runner), null, 'no state file: nothing to do');
  writeState(file, state);
  t.ok(await teardownFile(file, gone.runner));
  t.notOk(existsSync(file), 'state file deleted');
  writeFileSync(file, '{not json');
  await t.rejects(teardownFile(file, gone.runner), { code: 'STATE_FILE' });
  writeState(file, { ...state, pid: process.ppid });
  t.ok(readFileSync(file, 'utf8').includes('"pid"'));
});

t.test('preflight names the colliding field', async (t) => {
  const route = { ...defaultConfig().route, auto: true, exclude: ['192.168.0.0/16'], strictDns: true };
  const { runner } = fakeRunner((argv) => {
    const cmd = argv.join(' ');
    if (cmd === 'ip rule show') return { stdout: '0:\tfrom all lookup local\n8999:\tfrom all lookup 7\n100:\tfrom all fwmark 0x162 lookup 5\n32766:\tfrom all lookup main\n' };
    if (cmd === 'ip -6 rule show') return { stdout: '0:\tfrom all lookup local\n500:\tfrom all lookup 2022\n' };
    if (cmd === 'ip route show table 2022') return { stdout: 'default dev wg0 scope link\n' };
    if (argv[0] === 'nft') return { code: 1, stderr: 'Error: No such file or directory' };
    return {};
  });
  const found = await findCollisions(route, runner);
  t.same(found.map((c) => c.field), ['route.priority', 'route.mark', 'route.table', 'route.table']);
  t.match(found[0]!.message, /priority 8999 is already used by "ip rule" entry "8999: from all lookup 7" \(the exclude rules use route\.priority - 1\)/);
  const clean = fakeRunner((argv) => (argv[0] === 'nft' ? { code: 1 } : { stdout: argv.includes('rule') ? '0:\tfrom all lookup local\n' : '' }));
  t.same(await findCollisions(route, clean.runner), []);
});

t.test('state file: a kill-switch unreachable route (no device) reads back; a device-less route of another type is refused', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-state-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'state.json');
  const state = emptyState();
  state.routes.push({ family: 4, dst: '0.0.0.0/0', dev: '', table: 2022, type: 'unreachable', metric: 4294967295 });
  writeState(file, state);
  t.same(readState(file)!.routes, state.routes, 'the unreachable route is read back');
  const bad = emptyState();
  bad.routes.push({ family: 4, dst: '0.0.0.0/0', dev: '', table: 2022 });
  writeState(file, bad);
  t.throws(() => readState(file), /is not one sluice writes/, 'a route without a device that is not unreachable is refused');
});
