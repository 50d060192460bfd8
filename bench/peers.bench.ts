/**
 * `npm run bench:peers` (issue 10, ask 5): sluice against its peers in one
 * run, in network namespaces. A client namespace sends through each path to
 * nginx and iperf3 in a server namespace (the paths: bench/peers-paths.ts;
 * the tests: bench/peers-measure.ts); every path is measured `reps` times,
 * the paths rotated so that the machine's load drifts hit each of them; the
 * table shows the median of each column and its ratio to the best peer
 * (bench/peers-table.ts) and the JSON file keeps every sample.
 *
 *   npm run bench:peers                      # 3 repetitions, iperf3 10 s and wrk 8 s per run: about 15 min
 *   npm run bench:peers -- --quick           # 3 repetitions, iperf3 2 s and wrk 3 s per run: about 5 min
 *   npm run bench:peers -- --reps 5 --bulk-seconds 10 --http-seconds 10 --paths kernel,sluice --json out.json
 *
 * Each option also reads an environment variable (PEERS_REPS,
 * PEERS_BULK_SECONDS, PEERS_HTTP_SECONDS, PEERS_CONNECTIONS, PEERS_PATHS,
 * PEERS_JSON); an argument wins. PEERS_SLUICE_MTU sets sluice's TUN MTU
 * (default 8500; 1500 for the comparison at the common MTU). Needs root. slirp4netns and pasta (Debian
 * packages slirp4netns and passt), iperf3, wrk and nginx are installed with
 * apt-get when missing, and the bench says so. hev-socks5-tunnel, a row of
 * the table, has no Debian package and is not measured.
 *
 * Namespaces, processes and the relay's nftables table are torn down after
 * each path, on error and on SIGINT/SIGTERM (the harness Lab kills by PID
 * and deletes the namespaces; the nftables table lives in one of them).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { hasCommand } from '../test/harness/netns.js';
import { createLab } from '../test/fixtures/engine/lab.js';
import { BenchContext } from './bench-lab.js';
import { PATHS, peerTopology, SLUICE_CONFIG, type PeerPath } from './peers-paths.js';
import { measurePath, type MeasureOptions, type SampleDetail } from './peers-measure.js';
import { markdownTable, medians, type PathResult, type PeerSample } from './peers-table.js';

export interface PeersOptions extends MeasureOptions {
  reps: number;
  paths: PeerPath['id'][];
  json: string;
}

const USAGE = `usage: npm run bench:peers -- [--quick] [--reps N] [--bulk-seconds N] [--http-seconds N] [--connections N] [--paths ${PATHS.map((p) => p.id).join(',')}] [--json FILE]`;

/** Options from argv (wins) and the environment; throws with the usage on a bad one. */
export function parseOptions(argv: readonly string[], env: NodeJS.ProcessEnv): PeersOptions {
  const quick = argv.includes('--quick') || env.PEERS_QUICK === '1';
  const raw: Record<string, string | undefined> = {
    reps: env.PEERS_REPS,
    'bulk-seconds': env.PEERS_BULK_SECONDS,
    'http-seconds': env.PEERS_HTTP_SECONDS,
    connections: env.PEERS_CONNECTIONS,
    paths: env.PEERS_PATHS,
    json: env.PEERS_JSON,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--quick') continue;
    const key = arg.startsWith('--') ? arg.slice(2) : '';
    if (!(key in raw) || argv[i + 1] === undefined) throw new Error(`bad argument ${JSON.stringify(arg)}\n${USAGE}`);
    raw[key] = argv[++i];
  }
  const int = (key: string, fallback: number, min: number): number => {
    const v = raw[key] === undefined || raw[key] === '' ? fallback : Number(raw[key]);
    if (!Number.isInteger(v) || v < min) throw new Error(`--${key} must be an integer of at least ${min}, not ${JSON.stringify(raw[key])}\n${USAGE}`);
    return v;
  };
  const ids = (raw.paths ?? PATHS.map((p) => p.id).join(',')).split(',').filter((s) => s !== '');
  for (const id of ids) {
    if (!PATHS.some((p) => p.id === id)) throw new Error(`--paths: unknown path ${JSON.stringify(id)} (known: ${PATHS.map((p) => p.id).join(', ')})\n${USAGE}`);
  }
  if (ids.length === 0) throw new Error(`--paths names no path\n${USAGE}`);
  return {
    reps: int('reps', 3, 1),
    bulkSeconds: int('bulk-seconds', quick ? 2 : 10, 1),
    httpSeconds: int('http-seconds', quick ? 3 : 8, 1),
    connections: int('connections', 50, 1),
    paths: ids as PeerPath['id'][],
    json: raw.json ?? path.join(os.tmpdir(), 'sluice-bench-peers.json'),
  };
}

/** Debian package of each command the bench runs. */
const PACKAGES: Record<string, string> = { iperf3: 'iperf3', wrk: 'wrk', nginx: 'nginx-light', nft: 'nftables', slirp4netns: 'slirp4netns', pasta: 'passt' };

/** Installs the packages of missing commands with apt-get, saying so; returns the commands still missing. */
export function ensureCommands(commands: readonly string[], say: (line: string) => void): string[] {
  const missing = commands.filter((c) => !hasCommand(c));
  if (missing.length === 0) return [];
  const pkgs = [...new Set(missing.map((c) => PACKAGES[c] ?? c))];
  say(`installing ${pkgs.join(' ')} with apt-get (missing: ${missing.join(', ')})`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): void => void execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { stdio: ['ignore', 'inherit', 'inherit'], env });
  try {
    install();
  } catch {
    try {
      execFileSync('apt-get', ['update', '-qq'], { stdio: ['ignore', 'inherit', 'inherit'], env });
      install();
    } catch (err) {
      say(`apt-get failed: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return missing.filter((c) => !hasCommand(c));
}

/** Removes `dir` at exit and on a signal; re-raises the signal when nothing else (the harness) will. */
function removeOnExit(dir: string): void {
  const clean = (): void => rmSync(dir, { recursive: true, force: true });
  process.on('exit', clean);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      clean();
      // The harness's handler, once a Lab exists, tears the labs down and re-raises the signal itself.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

export interface PeersReport {
  date: string;
  command: string;
  options: PeersOptions;
  machine: { cores: number; kernel: string; node: string; loadAverageStart: number[]; loadAverageEnd: number[] };
  notMeasured: string[];
  sluiceConfig: string;
  paths: (PathResult & { median: PeerSample | null; details: SampleDetail[]; failures: { rep: number; error: string }[] })[];
  table: string;
}

export async function runPeersBench(opts: PeersOptions, say: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<PeersReport> {
  const loadAverageStart = os.loadavg();
  const date = new Date().toISOString();
  const selected = PATHS.filter((p) => opts.paths.includes(p.id));
  const stillMissing = ensureCommands([...new Set(['iperf3', 'wrk', 'nginx', ...selected.flatMap((p) => p.needs)])], say);
  for (const c of ['iperf3', 'wrk', 'nginx']) if (stillMissing.includes(c)) throw new Error(`${c} is needed and could not be installed`);
  const root = mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-peers-'));
  removeOnExit(root);
  say(`scratch directory ${root}; the results go to ${opts.json}`);
  const results = selected.map((p) => ({
    path: p,
    result: {
      name: p.name,
      role: p.role,
      samples: [] as PeerSample[],
      details: [] as SampleDetail[],
      failures: [] as { rep: number; error: string }[],
      ...(p.needs.some((c) => stillMissing.includes(c)) ? { skipped: `${p.needs.filter((c) => stillMissing.includes(c)).join(', ')} missing` } : {}),
    },
  }));
  const runnable = results.filter((r) => r.result.skipped === undefined);
  for (let rep = 0; rep < opts.reps; rep++) {
    // Rotated, so no path always runs first (or right after the same neighbour).
    const order = runnable.map((_, i) => runnable[(i + rep) % runnable.length]!);
    for (const { path: p, result } of order) {
      const tag = `[${rep + 1}/${opts.reps}] ${p.id}`;
      const ctx = new BenchContext();
      const dir = mkdtempSync(path.join(root, `${p.id}-`));
      try {
        const lab = await createLab(ctx, 'peersbch');
        const topo = await peerTopology(lab, dir);
        const running = await p.start(topo, dir);
        await new Promise((r) => setTimeout(r, 500));
        const { sample, detail } = await measurePath(running, opts, (line) => say(`${tag}: ${line}`));
        if (!running.alive()) throw new Error(`the ${p.id} process ended during the run:\n${running.output().slice(-2000)}`);
        result.samples.push(sample);
        result.details.push(detail);
      } catch (err) {
        const error = (err as Error).message;
        say(`${tag}: failed: ${error}`);
        result.failures.push({ rep, error });
      } finally {
        await ctx.finish();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  const table = markdownTable(results.map((r) => r.result));
  return {
    date,
    command: `npm run bench:peers -- --reps ${opts.reps} --bulk-seconds ${opts.bulkSeconds} --http-seconds ${opts.httpSeconds} --connections ${opts.connections} --paths ${opts.paths.join(',')}`,
    options: opts,
    machine: {
      cores: os.availableParallelism(),
      kernel: os.release(),
      node: process.version,
      loadAverageStart,
      loadAverageEnd: os.loadavg(),
    },
    notMeasured: ['hev-socks5-tunnel + hev-socks5-server (C): no Debian package'],
    sluiceConfig: SLUICE_CONFIG.trim(),
    paths: results.map(({ result }) => ({ ...result, median: result.samples.length > 0 ? medians(result.samples) : null })),
    table,
  };
}

/** The report as markdown: what was run, on what, the table, and how to read it. */
export function formatReport(r: PeersReport): string {
  const load = (l: number[]): string => l.map((v) => v.toFixed(1)).join(' / ');
  const failed = r.paths.filter((p) => p.failures.length > 0).map((p) => `${p.name}: ${p.failures.length} of ${r.options.reps} repetitions failed (${p.failures[0]!.error.split('\n')[0]})`);
  return [
    `## Peer benchmark, ${r.date.slice(0, 10)}`,
    '',
    `\`${r.command}\`: ${r.machine.cores} cores, Linux ${r.machine.kernel}, Node ${r.machine.node}; load average (1/5/15 min) ${load(r.machine.loadAverageStart)} at the start, ${load(r.machine.loadAverageEnd)} at the end.`,
    `Medians of ${r.options.reps} repetitions; iperf3 ${r.options.bulkSeconds} s per run, wrk -c${r.options.connections} ${r.options.httpSeconds} s per run. Each cell: the median, then ×(its ratio to the best peer of that column: relay, slirp4netns, pasta). ↑: more is better, ↓: less is better.`,
    '',
    r.table,
    '',
    ...r.notMeasured.map((n) => `Not measured: ${n}.`),
    ...failed.map((f) => `Failures: ${f}.`),
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  (async () => {
    if (process.getuid?.() !== 0) throw new Error('the peer benchmark needs root (network namespaces, TUN, nftables)');
    const opts = parseOptions(process.argv.slice(2), process.env);
    const report = await runPeersBench(opts);
    writeFileSync(opts.json, JSON.stringify(report, null, 2) + '\n');
    console.log(formatReport(report));
    console.log(`\n(every sample: ${opts.json})`);
  })().catch((err: Error) => {
    console.error(err.message);
    process.exitCode = 1;
  });
}
