/**
 * The peer benchmark (bench/peers.bench.ts) run for real with tiny
 * durations: it measures through a path and writes its table and JSON, and
 * an interrupted run (SIGINT in the middle of a measurement) leaves nothing
 * behind: no namespace, no process, no scratch directory. No figure is
 * checked against a speed: the machine is shared.
 *
 * Needs root and iperf3, wrk, nginx (nginx-light), nft (nftables).
 */
import t from 'tap';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireRoot } from '../harness/netns.js';
import { childEnv, requireCommands } from '../fixtures/engine/lab.js';
import type { PeersReport } from '../../bench/peers.bench.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const BENCH = path.resolve(here, '../../bench/peers.bench.js');

interface Run {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startBench(args: string[]): Run {
  const proc = spawn(process.execPath, [BENCH, ...args], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  return { proc, stdout: () => out, stderr: () => err, exited };
}

/** The namespaces of the bench process `pid` (the harness names them sl<tag>-<pid>x<n>). */
function namespacesOf(pid: number): string[] {
  return existsSync('/var/run/netns') ? readdirSync('/var/run/netns').filter((n) => n.startsWith('slpeersbch-') && n.includes(`-${pid}x`)) : [];
}

/** Alive and not a zombie waiting for its (gone) parent's successor to reap it. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

function scratchOf(stderr: string): string | null {
  return /scratch directory (\S+);/.exec(stderr)?.[1] ?? null;
}

t.test('a tiny run through the kernel and the Node relay prints the table and writes every sample', async (t) => {
  if (!requireRoot(t) || !requireCommands(t, ['iperf3', 'wrk', 'nginx', 'nft'])) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-peers-smoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const json = path.join(dir, 'peers.json');
  const run = startBench(['--reps', '1', '--bulk-seconds', '1', '--http-seconds', '1', '--connections', '4', '--paths', 'kernel,relay', '--json', json]);
  const { code } = await run.exited;
  if (!t.equal(code, 0, 'the bench exits 0')) t.comment(run.stderr().slice(-3000));
  const report = JSON.parse(readFileSync(json, 'utf8')) as PeersReport;
  t.same(report.paths.map((p) => p.name), ['kernel (routing between namespaces)', 'bare Node relay (`net` + `pipe`)']);
  for (const p of report.paths) {
    t.same(p.failures, [], `${p.name}: no failed repetition`);
    t.equal(p.samples.length, 1, `${p.name}: one sample`);
    const s = p.samples[0]!;
    for (const k of ['up1', 'down1', 'up8', 'down8', 'keepAliveRps', 'keepAliveP99Ms', 'closeRps'] as const) t.ok(s[k] > 0, `${p.name}: ${k} measured`);
  }
  const relay = report.paths[1]!.samples[0]!;
  t.ok(relay.cpuMsPerGB > 0 && relay.cpuUsPerConnection > 0 && relay.peakRssMiB > 0, "the relay's CPU and memory are measured");
  // JSON has no NaN: the kernel path's CPU (no process) is written as null.
  t.equal(report.paths[0]!.samples[0]!.cpuMsPerGB, null, 'the kernel path has no process to charge');
  t.match(run.stdout(), /\| bare Node relay \(`net` \+ `pipe`\) \| [\d.]+ ×1\.00 \|/, 'the table, the relay the only peer');
  t.match(run.stdout(), /Not measured: hev-socks5-tunnel/);
  t.same(namespacesOf(run.proc.pid!), [], 'no namespace left');
  const scratch = scratchOf(run.stderr());
  t.ok(scratch !== null && !existsSync(scratch), 'the scratch directory is gone');
});

t.test('SIGINT in the middle of a measurement tears every namespace and process down', async (t) => {
  if (!requireRoot(t) || !requireCommands(t, ['iperf3', 'wrk', 'nginx', 'nft'])) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-peers-smoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const run = startBench(['--reps', '1', '--bulk-seconds', '3', '--http-seconds', '1', '--paths', 'relay', '--json', path.join(dir, 'peers.json')]);
  const pid = run.proc.pid!;
  // The first iperf3 run has ended: the relay, nginx and the iperf3 server run, and some 10 s of tests are still to come.
  const measuring = await until(() => run.stderr().includes('[1/1] relay: up1 ') || run.proc.exitCode !== null, 120_000);
  if (!t.ok(measuring && run.proc.exitCode === null, 'the bench is measuring')) t.comment(run.stderr().slice(-3000));
  const names = namespacesOf(pid);
  t.equal(names.length, 3, 'client, gateway and server namespaces exist');
  const pids = names.flatMap((n) => execFileSync('ip', ['netns', 'pids', n], { encoding: 'utf8' }).split('\n').filter((l) => l !== '').map(Number));
  t.ok(pids.length >= 3, `processes run in them (relay, nginx, iperf3 server, a client): ${pids.join(' ')}`);
  const scratch = scratchOf(run.stderr());
  t.ok(scratch !== null && existsSync(scratch), 'the scratch directory exists');
  run.proc.kill('SIGINT');
  const { signal } = await run.exited;
  t.equal(signal, 'SIGINT', 'the bench ends by the signal');
  t.same(namespacesOf(pid), [], 'no namespace left');
  t.ok(await until(() => pids.every((p) => !running(p)), 10_000), `every process in them ended: ${pids.filter(running).join(' ') || 'none left'}`);
  t.notOk(existsSync(scratch!), 'the scratch directory is gone');
});
