/**
 * The peer benchmark's figures (bench/peers.bench.ts): one sample per path
 * and repetition, the median of each column over the repetitions, and the
 * markdown table that sets every value beside the best peer's. No I/O here,
 * so test/bench/peers-table.test.ts can check the arithmetic.
 */

/** What one repetition measured on one path. NaN: not measured or failed (a path without a process has no CPU). */
export interface PeerSample {
  up1: number;
  down1: number;
  up8: number;
  down8: number;
  /** Keep-alive HTTP (wrk -c50), requests per second and the 99th percentile latency in ms. */
  keepAliveRps: number;
  keepAliveP99Ms: number;
  /** HTTP with `Connection: close`: one new connection per request. */
  closeRps: number;
  /** CPU of the path's process(es): per GB of the bulk runs, per keep-alive request, per new connection. */
  cpuMsPerGB: number;
  cpuUsPerRequest: number;
  cpuUsPerConnection: number;
  /** Peak resident memory of the path's process(es) during the repetition, MiB. */
  peakRssMiB: number;
}

export type Metric = keyof PeerSample;

/**
 * How a path is compared. `peer`: the others sluice is measured against;
 * the best of them in each column is the reference. `baseline` (the kernel)
 * and `subject` (sluice) get ratios but never set the reference.
 */
export type PathRole = 'baseline' | 'peer' | 'subject';

export interface PathResult {
  name: string;
  role: PathRole;
  samples: PeerSample[];
  /** Why the path was not measured (a missing package); its row then shows only this. */
  skipped?: string;
}

export interface Column {
  key: Metric;
  title: string;
  better: 'higher' | 'lower';
  digits: number;
}

export const COLUMNS: readonly Column[] = [
  { key: 'up1', title: '1 flow up Gbit/s', better: 'higher', digits: 2 },
  { key: 'down1', title: '1 flow down', better: 'higher', digits: 2 },
  { key: 'up8', title: '8 flows up', better: 'higher', digits: 2 },
  { key: 'down8', title: '8 flows down', better: 'higher', digits: 2 },
  { key: 'keepAliveRps', title: 'keep-alive req/s', better: 'higher', digits: 0 },
  { key: 'keepAliveP99Ms', title: 'p99 ms', better: 'lower', digits: 1 },
  { key: 'closeRps', title: 'new conn/s', better: 'higher', digits: 0 },
  { key: 'cpuMsPerGB', title: 'CPU ms/GB', better: 'lower', digits: 0 },
  { key: 'cpuUsPerRequest', title: 'CPU µs/req', better: 'lower', digits: 1 },
  { key: 'cpuUsPerConnection', title: 'CPU µs/conn', better: 'lower', digits: 0 },
  { key: 'peakRssMiB', title: 'peak RSS MiB', better: 'lower', digits: 1 },
];

/** Median of the finite values (the mean of the middle two for an even count); NaN when there are none. */
export function median(values: readonly number[]): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** The per-column medians of a path's samples. */
export function medians(samples: readonly PeerSample[]): PeerSample {
  const out = {} as PeerSample;
  for (const { key } of COLUMNS) out[key] = median(samples.map((s) => s[key]));
  return out;
}

/** The best peer value of each column (NaN where no peer has one). */
export function bestPeer(results: readonly PathResult[]): PeerSample {
  const peers = results.filter((r) => r.role === 'peer' && r.skipped === undefined).map((r) => medians(r.samples));
  const out = {} as PeerSample;
  for (const { key, better } of COLUMNS) {
    const v = peers.map((m) => m[key]).filter(Number.isFinite);
    out[key] = v.length === 0 ? NaN : better === 'higher' ? Math.max(...v) : Math.min(...v);
  }
  return out;
}

/**
 * value / best peer's value. Above 1 is more of the quantity: better for a
 * rate, worse for a cost. NaN when either side is missing or the best is 0.
 */
export function ratio(value: number, best: number): number {
  return Number.isFinite(value) && Number.isFinite(best) && best !== 0 ? value / best : NaN;
}

function formatValue(v: number, digits: number): string {
  return Number.isFinite(v) ? v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–';
}

/** One cell: the median, then its ratio to the best peer ("4.96 ×0.89"; the best peer itself shows ×1.00). */
export function cell(value: number, best: number, digits: number): string {
  const text = formatValue(value, digits);
  const r = ratio(value, best);
  if (!Number.isFinite(r)) return text;
  return `${text} ×${r.toFixed(2)}`;
}

/** The markdown table: a row per path, each cell the median and its ratio to the best peer of that column. */
export function markdownTable(results: readonly PathResult[]): string {
  const best = bestPeer(results);
  const head = `| path | ${COLUMNS.map((c) => `${c.title} ${c.better === 'higher' ? '↑' : '↓'}`).join(' | ')} |`;
  const rule = `| --- | ${COLUMNS.map(() => '---:').join(' | ')} |`;
  const rows = results.map((r) => {
    if (r.skipped !== undefined) return `| ${r.name} | ${COLUMNS.map((_, i) => (i === 0 ? `not run: ${r.skipped}` : '')).join(' | ')} |`;
    const m = medians(r.samples);
    return `| ${r.name} | ${COLUMNS.map((c) => cell(m[c.key], best[c.key], c.digits)).join(' | ')} |`;
  });
  return [head, rule, ...rows].join('\n');
}
