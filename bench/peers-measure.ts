/**
 * The tests of the peer benchmark (bench/peers.bench.ts), run from the
 * client namespace through one path to the servers of bench/peers-paths.ts:
 *   - bulk: iperf3, 1 flow and 8 flows, up (client -> server) and down (-R),
 *     the receiver's rate;
 *   - keep-alive HTTP: wrk -c50 fetching 1 KiB from nginx, requests/s and
 *     the 99th percentile latency;
 *   - connection per request: the same with `Connection: close`, so every
 *     request is a new TCP connection through the path;
 *   - the CPU time (utime + stime from /proc/PID/stat, every thread) of the
 *     path's processes across each test, per GB and per request, and their
 *     peak resident memory (VmHWM).
 * The kernel path has no process: its CPU is softirq time that no process
 * is charged for, so those cells stay empty. The clients are started through
 * the Lab, so an interrupted run kills them by PID too.
 */
import type { Netns } from '../test/harness/netns.js';
import { SERVER_V4 } from '../test/harness/topology.js';
import { cpuSeconds, peakRssMiB } from './bench-lab.js';
import { HTTP_PORT, IPERF_PORT, SMALL_PATH, type RunningPath } from './peers-paths.js';
import type { PeerSample } from './peers-table.js';

export interface MeasureOptions {
  /** Length of each iperf3 run, seconds. */
  bulkSeconds: number;
  /** Length of each wrk run, seconds. */
  httpSeconds: number;
  /** wrk's concurrent connections. */
  connections: number;
}

interface Output {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs argv in `ns` as a Lab-tracked child (killed by PID at teardown or after `timeoutMs`). */
function runIn(ns: Netns, argv: string[], timeoutMs: number): Promise<Output> {
  return new Promise((resolve) => {
    const child = ns.spawn(argv);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface Bulk {
  gbps: number;
  bytes: number;
  error?: string;
}

/** One iperf3 run; a failed run (say, a server still busy with the last test) is tried once more. */
export async function iperf(client: Netns, seconds: number, streams: number, reverse: boolean): Promise<Bulk> {
  const argv = ['iperf3', '-c', SERVER_V4, '-p', String(IPERF_PORT), '-t', String(seconds), '-P', String(streams), '-i', '0', '-J', ...(reverse ? ['-R'] : [])];
  let error = '';
  for (let attempt = 0; attempt < 2; attempt++) {
    const r = await runIn(client, argv, (seconds + 30) * 1000);
    try {
      const j = JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bytes: number; bits_per_second: number } } };
      const sum = j.end?.sum_received;
      if (j.error === undefined && sum !== undefined && sum.bytes > 0) return { gbps: sum.bits_per_second / 1e9, bytes: sum.bytes };
      error = j.error ?? 'no bytes received';
    } catch {
      error = (r.stderr || r.stdout).trim().slice(0, 300) || `exit ${r.code}`;
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
  return { gbps: NaN, bytes: 0, error };
}

export interface WrkResult {
  rps: number;
  p99Ms: number;
  requests: number;
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses. */
  errors: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

/** Reads wrk's --latency report: Requests/sec, the 99% line, the request count and its error lines. NaN where a figure is missing. */
export function parseWrk(text: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const p99 = /^\s*99(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(text);
  const requests = /(\d+) requests in /.exec(text);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const errors = (socket === null ? 0 : socket.slice(1, 5).reduce((a, b) => a + Number(b), 0)) + (non2xx === null ? 0 : Number(non2xx[1]));
  return {
    rps: rps === null ? NaN : Number(rps[1]),
    p99Ms: p99 === null ? NaN : Number(p99[1]) * UNIT_MS[p99[2]!]!,
    requests: requests === null ? NaN : Number(requests[1]),
    errors,
  };
}

export async function wrk(client: Netns, seconds: number, connections: number, close: boolean): Promise<WrkResult & { error?: string }> {
  const argv = ['wrk', '-t', String(Math.min(2, connections)), '-c', String(connections), '-d', `${seconds}s`, '--timeout', '5s', '--latency'];
  if (close) argv.push('-H', 'Connection: close');
  argv.push(`http://${SERVER_V4}:${HTTP_PORT}${SMALL_PATH}`);
  const r = await runIn(client, argv, (seconds + 30) * 1000);
  const parsed = parseWrk(r.stdout);
  return Number.isFinite(parsed.rps) && parsed.requests > 0 ? parsed : { ...parsed, rps: NaN, error: (r.stderr || r.stdout).trim().slice(0, 300) || `exit ${r.code}` };
}

/** The sum of `f` over `pids` (CPU seconds so far, peak RSS); NaN when there are none or one has gone. */
function sumOver(pids: readonly number[], f: (pid: number) => number): number {
  if (pids.length === 0) return NaN;
  try {
    return pids.reduce((sum, pid) => sum + f(pid), 0);
  } catch {
    return NaN;
  }
}

const cpuOf = (pids: readonly number[]): number => sumOver(pids, cpuSeconds);

/** The raw figures behind a sample, kept in the JSON. */
export interface SampleDetail {
  bulk: Record<'up1' | 'down1' | 'up8' | 'down8', Bulk & { cpuSeconds: number }>;
  keepAlive: WrkResult & { cpuSeconds: number; error?: string };
  close: WrkResult & { cpuSeconds: number; error?: string };
  flowLines?: number;
}

/** Every test once through `path`, in a fixed order: bulk first, then keep-alive, then connection per request. */
export async function measurePath(path: RunningPath, opts: MeasureOptions, progress: (line: string) => void): Promise<{ sample: PeerSample; detail: SampleDetail }> {
  const bulk = {} as SampleDetail['bulk'];
  const runs: [keyof SampleDetail['bulk'], number, boolean][] = [
    ['up1', 1, false],
    ['down1', 1, true],
    ['up8', 8, false],
    ['down8', 8, true],
  ];
  for (const [key, streams, reverse] of runs) {
    const c0 = cpuOf(path.pids);
    const r = await iperf(path.client, opts.bulkSeconds, streams, reverse);
    bulk[key] = { ...r, cpuSeconds: cpuOf(path.pids) - c0 };
    progress(`${key} ${Number.isFinite(r.gbps) ? `${r.gbps.toFixed(2)} Gbit/s` : `failed: ${r.error}`}`);
  }
  let c0 = cpuOf(path.pids);
  const ka = await wrk(path.client, opts.httpSeconds, opts.connections, false);
  const keepAlive = { ...ka, cpuSeconds: cpuOf(path.pids) - c0 };
  progress(`keep-alive ${Number.isFinite(ka.rps) ? `${ka.rps.toFixed(0)} req/s, p99 ${ka.p99Ms} ms, ${ka.errors} errors` : `failed: ${ka.error}`}`);
  c0 = cpuOf(path.pids);
  const cl = await wrk(path.client, opts.httpSeconds, opts.connections, true);
  const close = { ...cl, cpuSeconds: cpuOf(path.pids) - c0 };
  progress(`connection per request ${Number.isFinite(cl.rps) ? `${cl.rps.toFixed(0)} conn/s, ${cl.errors} errors` : `failed: ${cl.error}`}`);

  const bulkRuns = Object.values(bulk);
  const bulkBytes = bulkRuns.reduce((s, b) => s + b.bytes, 0);
  const bulkCpu = bulkRuns.reduce((s, b) => s + b.cpuSeconds, 0);
  const sample: PeerSample = {
    up1: bulk.up1.gbps,
    down1: bulk.down1.gbps,
    up8: bulk.up8.gbps,
    down8: bulk.down8.gbps,
    keepAliveRps: ka.rps,
    keepAliveP99Ms: ka.p99Ms,
    closeRps: cl.rps,
    // A failed run counts neither bytes nor requests, and its CPU still went into the path: no per-unit figure then.
    cpuMsPerGB: bulkRuns.every((b) => b.bytes > 0) ? (bulkCpu * 1000) / (bulkBytes / 1e9) : NaN,
    cpuUsPerRequest: ka.requests > 0 ? (keepAlive.cpuSeconds * 1e6) / ka.requests : NaN,
    cpuUsPerConnection: cl.requests > 0 ? (close.cpuSeconds * 1e6) / cl.requests : NaN,
    peakRssMiB: sumOver(path.pids, peakRssMiB),
  };
  const detail: SampleDetail = { bulk, keepAlive, close };
  if (path.flowLines !== undefined) detail.flowLines = path.flowLines();
  return { sample, detail };
}
