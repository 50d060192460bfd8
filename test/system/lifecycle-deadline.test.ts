/**
 * The stop's hard deadline (src/system/lifecycle.ts RunLifecycle): when the
 * orderly path does not finish (a stopper that never resolves, a timer that
 * keeps the loop alive), the process still ends about 4 s after SIGTERM,
 * logs what is still open (process._getActiveHandles summary) and the
 * pending steps, and removes the system state first. A second signal does
 * the same at once. Runs test/fixtures/stuck-stop.ts; no root needed.
 */
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/stuck-stop.js');

async function run(t: Test, secondSignalAfterMs: number | null, mode = 'stuck'): Promise<{ ms: number; code: number | null; lines: Array<Record<string, unknown>>; marker: boolean }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-deadline-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const marker = path.join(dir, 'marker');
  // env -u: without tap's NODE_OPTIONS, whose signal-exit would see the signals too.
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, FIXTURE, path.join(dir, 'state.json'), marker, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const readyBy = Date.now() + 15_000;
  while (!out.includes('"ready"')) {
    if (child.exitCode !== null || Date.now() > readyBy) throw new Error(`the fixture did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const t0 = performance.now();
  child.kill('SIGTERM');
  if (secondSignalAfterMs !== null) setTimeout(() => child.kill('SIGTERM'), secondSignalAfterMs);
  const hard = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const code = await exited;
  clearTimeout(hard);
  const lines = out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { ms: Math.round(performance.now() - t0), code, lines, marker: existsSync(marker) && readFileSync(marker, 'utf8') === 'removed\n' };
}

t.test('a stuck stop ends at the deadline, saying what is open, after removing the system state', async (t) => {
  const r = await run(t, null);
  t.comment(`SIGTERM to exit: ${r.ms} ms`);
  t.ok(r.ms >= 3500 && r.ms < 5000, `ended at the deadline (${r.ms} ms, budget 5000)`);
  t.equal(r.code, 0, 'exit 0: the system state was removed');
  t.ok(r.marker, 'the system stopper ran');
  const warn = r.lines.find((l) => l.msg === 'stop deadline: exiting with resources still open') as { open?: Record<string, unknown>; pendingStopSteps?: string[]; stuckIn?: string } | undefined;
  t.ok(warn !== undefined, 'the deadline line is logged');
  t.ok(Number(warn?.open?.Timeout) >= 1, `it counts what is open (the interval among them): ${JSON.stringify(warn?.open)}`);
  t.equal(warn?.stuckIn, 'stuck flows', 'it names the step that hung');
  t.same(warn?.pendingStopSteps, ['never reached', 'system state'], 'and the steps not run yet (the system one then runs)');
});

t.test('a second signal forces the stop at once', async (t) => {
  const r = await run(t, 300);
  t.ok(r.ms < 2000, `ended soon after the second signal (${r.ms} ms)`);
  t.ok(r.marker, 'the system stopper ran');
  t.ok(r.lines.some((l) => l.msg === 'stop deadline: exiting with resources still open' && /second signal/.test(String(l.reason))), 'the forced stop says why');
});

t.test('the deadline counts from the signal: a start-up step that ignores it does not push the exit back', async (t) => {
  const r = await run(t, null, 'stuck-startup');
  t.comment(`SIGTERM to exit: ${r.ms} ms`);
  // The step ends 3 s after ready; a deadline armed then would end the process at about 7 s.
  t.ok(r.ms >= 3500 && r.ms < 5000, `ended 4 s after the signal (${r.ms} ms, budget 5000)`);
  t.equal(r.code, 0, 'exit 0: the system state was removed');
  t.ok(r.marker, 'the system stopper ran');
  const warn = r.lines.find((l) => l.msg === 'stop deadline: exiting with resources still open');
  t.match(String(warn?.reason), /after SIGTERM/, `the deadline line says it counted from the signal (${String(warn?.reason)})`);
});

t.test('a start-up wait run through life.until() is overtaken by the signal', async (t) => {
  const r = await run(t, null, 'until');
  t.comment(`SIGTERM to exit: ${r.ms} ms`);
  t.ok(r.ms < 1500, `ended at once (${r.ms} ms)`);
  t.equal(r.code, 0, 'exit 0');
  t.ok(r.marker, 'the system stopper ran');
  t.ok(r.lines.some((l) => l.msg === 'stopping during start-up' && l.signal === 'SIGTERM'), 'the wait gave up with StopRequested');
  t.notOk(r.lines.some((l) => l.msg === 'stop deadline: exiting with resources still open'), 'through the orderly path (no deadline line)');
});
