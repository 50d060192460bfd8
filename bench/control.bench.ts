/**
 * What the control API costs the data path (issue 9, the bench row), in
 * namespaces: client -> gateway -> server, `sluice run` in the gateway in
 * gateway mode tun (the userspace stack), everything direct, sniffing off.
 * New connections per second (conn-holder `rate`: 64 at a time, each also
 * dialled upstream) and sluice's own CPU time per connection (utime+stime
 * of /proc/PID/stat), in three variants, each repetition starting a fresh
 * sluice, the variants interleaved (and rotated, so none always runs
 * first) so that load drifts hit all three:
 *   - API off (api: null)
 *   - API on, nobody connected
 *   - API on with a dashboard's streams subscribed: /connections every
 *     second and /traffic (test/fixtures/api-watcher.ts).
 *
 *   sudo node dist/bench/control.bench.js rate [repetitions] [connections]
 *
 * And the memory of a dashboard left open: the real dashboard in headless
 * Chromium connected to a sluice serving a steady churn of connections
 * plus a long download, sluice's RSS sampled every 10 s:
 *
 *   sudo node dist/bench/control.bench.js memory [minutes] [--no-dashboard]
 *
 * (--no-dashboard: the same load without the page, the baseline.)
 */
import path from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Lab, waitForJsonLine, type Netns, type TestLike } from '../test/harness/netns.js';
import { BenchContext, cpuSeconds, rssMiB } from './bench-lab.js';
import { threeNamespaces, SERVER_V4 } from '../test/harness/topology.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const holder = path.resolve(here, '../test/fixtures/conn-holder.js');
const watcher = path.resolve(here, '../test/fixtures/api-watcher.js');
const sluiceBin = path.resolve(here, '../../bin/sluice.js');
const SECRET = 'bench-secret-0123456789';
const API = '127.0.0.1:9090';
const PRIORITY = 9000;

function config(api: boolean, logLevel = 'warn'): string {
  return `
log: { level: ${logLevel}, format: json }
tun: { name: sl0, queues: 1 }
sniff: { timeoutMs: 0 }
dns: { mode: real-ip, hijack: false, upstreams: [ { address: "udp://${SERVER_V4}:53" } ] }
route: { table: 2022, priority: ${PRIORITY} }
gateway: { enabled: true, lan: [lan0], mode: tun }
api: { listen: ${api ? `"${API}", secret: "${SECRET}"` : "null"} }
`;
}

interface Running {
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** Starts `sluice run`; ready once the gateway's ip rule is in (the last step before "ready") and, with the API, once /version answers. */
async function startSluice(ctx: BenchContext, gateway: Netns, dir: string, yaml: string, tag: string): Promise<Running> {
  const cfg = path.join(dir, `${tag}.yaml`);
  writeFileSync(cfg, yaml);
  const proc = gateway.spawn(['env', '-u', 'NODE_OPTIONS', process.execPath, sluiceBin, 'run', '--config', cfg, '--state', path.join(dir, `${tag}.state.json`)], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  const stop = async (): Promise<void> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  };
  ctx.teardown(stop);
  for (let i = 0; ; i++) {
    const rule = await gateway.exec(['ip', 'rule', 'show', 'priority', String(PRIORITY)], { allowFail: true });
    if (rule.stdout.trim() !== '') break;
    if (proc.exitCode !== null || i > 400) throw new Error(`sluice run (${tag}) did not come up`);
    await new Promise((r) => setTimeout(r, 50));
  }
  if (yaml.includes(`listen: "${API}"`)) {
    for (let i = 0; ; i++) {
      const r = await gateway.exec(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Authorization: Bearer ${SECRET}`, `http://${API}/version`], { allowFail: true });
      if (r.stdout === '200') break;
      if (proc.exitCode !== null || i > 200) throw new Error(`sluice run (${tag}): the API did not answer`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await new Promise((r) => setTimeout(r, 500));
  return { proc, stop };
}

async function connectionRate(client: Netns, count: number): Promise<{ perSecond: number; failed: number }> {
  const p = client.spawn([process.execPath, holder, 'rate', SERVER_V4, '9000', String(count)], { env: { ...process.env, NODE_OPTIONS: '' } });
  return waitForJsonLine<{ event: string; perSecond: number; failed: number }>(p, (m) => m.event === 'rate', 180_000).catch(() => ({ perSecond: NaN, failed: NaN }));
}

export interface ControlSample {
  variant: string;
  perSecond: number;
  cpuUsPerConn: number;
  failed: number;
}

export const VARIANTS = ['API off', 'API on, idle', 'API on, dashboard streams connected'] as const;

export async function runControlBench(repetitions = 3, connections = 5000): Promise<ControlSample[]> {
  const ctx = new BenchContext();
  const samples: ControlSample[] = [];
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'ctlbench');
    const { client, gateway, server } = await threeNamespaces(lab);
    const echo = server.spawn([process.execPath, holder, 'server', '9000'], { env: { ...process.env, NODE_OPTIONS: '' } });
    await waitForJsonLine(echo, (m: { event?: string }) => m.event === 'ready');
    const dir = mkdtempSync(path.join(tmpdir(), 'sluice-bench-control-'));
    ctx.teardown(() => rmSync(dir, { recursive: true, force: true }));
    for (let rep = 0; rep < repetitions; rep++) {
      // Each repetition starts with a different variant, so that no variant always runs first (after the longest pause).
      const order = VARIANTS.map((_, i) => VARIANTS[(i + rep) % VARIANTS.length]!);
      for (const variant of order) {
        const sl = await startSluice(ctx, gateway, dir, config(variant !== 'API off'), `r${rep}`);
        let watch: ChildProcess | null = null;
        if (variant === 'API on, dashboard streams connected') {
          watch = gateway.spawn([process.execPath, watcher, API, SECRET, '1000'], { env: { ...process.env, NODE_OPTIONS: '' } });
          await waitForJsonLine(watch, (m: { event?: string }) => m.event === 'ready', 10_000);
        }
        // Warm-up (JIT, pools), then the measured run.
        await connectionRate(client, 500);
        const cpu0 = cpuSeconds(sl.proc.pid!);
        const r = await connectionRate(client, connections);
        const cpu = cpuSeconds(sl.proc.pid!) - cpu0;
        samples.push({ variant, perSecond: r.perSecond, failed: r.failed, cpuUsPerConn: Math.round((cpu * 1e6) / connections) });
        if (watch !== null) {
          const count = waitForJsonLine<{ event: string; messages: number; bytes: number }>(watch, (m) => m.event === 'count', 5000).catch(() => null);
          watch.kill('SIGTERM');
          const c = await count;
          if (c !== null) process.stderr.write(`  (watcher got ${c.messages} messages, ${c.bytes} bytes)\n`);
        }
        await sl.stop();
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  } finally {
    await ctx.finish();
  }
  return samples;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export function printControlRows(samples: ControlSample[]): void {
  console.log('\n`sluice run` gateway tun, new connections/s (each dialled upstream) and sluice CPU µs per connection; every run listed, median last');
  console.log(`  ${'variant'.padEnd(38)} ${'conn/s runs'.padEnd(28)} ${'median'.padStart(7)} ${'CPU µs/conn runs'.padEnd(22)} ${'median'.padStart(6)}`);
  for (const v of VARIANTS) {
    const s = samples.filter((x) => x.variant === v);
    const rates = s.map((x) => x.perSecond);
    const cpus = s.map((x) => x.cpuUsPerConn);
    const failed = s.reduce((a, x) => a + x.failed, 0);
    console.log(`  ${v.padEnd(38)} ${rates.join(' / ').padEnd(28)} ${String(median(rates)).padStart(7)} ${cpus.join(' / ').padEnd(22)} ${String(median(cpus)).padStart(6)}${failed > 0 ? `  (${failed} failed)` : ''}`);
  }
}

/** The dashboard left open: RSS samples of sluice while the real dashboard is connected. */
export async function runMemoryBench(minutes = 10, dashboard = true): Promise<Array<{ s: number; rssMiB: number; flows: number }>> {
  const { Browser } = await import('../test/fixtures/chromium.js');
  const ctx = new BenchContext();
  const samples: Array<{ s: number; rssMiB: number; flows: number }> = [];
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'memdbnch');
    const { client, gateway, server } = await threeNamespaces(lab);
    const echo = server.spawn([process.execPath, holder, 'server', '9000'], { env: { ...process.env, NODE_OPTIONS: '' } });
    await waitForJsonLine(echo, (m: { event?: string }) => m.event === 'ready');
    const dir = mkdtempSync(path.join(tmpdir(), 'sluice-bench-memory-'));
    ctx.teardown(() => rmSync(dir, { recursive: true, force: true }));
    // Flow lines at info, so the dashboard's /logs stream has traffic too.
    const sl = await startSluice(ctx, gateway, dir, config(true, 'info'), 'mem');
    // 200 connections held open (a full flows table), and a churn of short ones.
    const held = client.spawn([process.execPath, holder, 'client', SERVER_V4, '9000', '200'], { env: { ...process.env, NODE_OPTIONS: '' } });
    ctx.teardown(() => void held.kill('SIGTERM'));
    // Without the dashboard: the same load, for the baseline.
    const page = dashboard ? await (await Browser.launch(ctx, gateway, dir)).open(`http://${API}/ui/?token=${SECRET}`) : null;
    await page?.waitFor(`document.querySelector('#link') && document.querySelector('#link').textContent === 'live'`, 30_000, 'the dashboard');
    let churning = true;
    const churn = (async () => {
      while (churning) await connectionRate(client, 200);
    })();
    const t0 = Date.now();
    const end = t0 + minutes * 60_000;
    for (;;) {
      const flows = page === null ? -1 : await page.evaluate<number>(`document.querySelectorAll('#flows tbody tr').length`).catch(() => -1);
      samples.push({ s: Math.round((Date.now() - t0) / 1000), rssMiB: Math.round(rssMiB(sl.proc.pid!) * 10) / 10, flows });
      process.stderr.write(`  t=${samples.at(-1)!.s}s rss=${samples.at(-1)!.rssMiB} MiB rows=${flows}\n`);
      if (Date.now() >= end) break;
      await new Promise((r) => setTimeout(r, 10_000));
    }
    churning = false;
    await churn;
  } finally {
    await ctx.finish();
  }
  return samples;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const mode = process.argv[2] ?? 'rate';
  const main =
    mode === 'memory'
      ? runMemoryBench(Number(process.argv[3] ?? 10), process.argv[4] !== '--no-dashboard').then((s) => {
          const first = s[Math.min(s.length - 1, 1)]!;
          const last = s.at(-1)!;
          console.log(`\n${process.argv[4] === '--no-dashboard' ? 'no dashboard' : 'dashboard connected'} ${last.s} s: sluice RSS ${s[0]!.rssMiB} MiB at start, ${first.rssMiB} after ${first.s} s, ${last.rssMiB} at the end; max ${Math.max(...s.map((x) => x.rssMiB))}`);
        })
      : runControlBench(Number(process.argv[3] ?? 3), Number(process.argv[4] ?? 5000)).then(printControlRows);
  main.catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
