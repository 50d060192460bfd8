/**
 * The flow table as the CLI prints it (`sluice flows`): rows from a
 * Clash-shaped GET /connections snapshot, rates from the difference to the
 * previous snapshot (as the dashboards do: the API sends totals), sorted,
 * and laid out in columns cut to the terminal's width.
 */

/** One entry of GET /connections (the fields sluice's CLI reads). */
export interface Connection {
  id: string;
  upload: number;
  download: number;
  start: string;
  chains: string[];
  rule: string;
  rulePayload: string;
  metadata: {
    network?: string;
    type?: string;
    sourceIP?: string;
    sourcePort?: string;
    destinationIP?: string;
    destinationPort?: string;
    host?: string;
    sniffHost?: string;
    protocol?: string;
    [key: string]: unknown;
  };
}

export interface Snapshot {
  downloadTotal: number;
  uploadTotal: number;
  connections: Connection[] | null;
}

/** What sluice's own GET /v1/flows adds to a Clash connection: the sniffed protocol and sluice's rule text. */
export interface FlowExtra {
  protocol?: string | null;
  ruleText?: string;
}

/** id -> extra, from a GET /v1/flows answer ({flows: [...]}); empty for anything else. */
export function extrasOf(body: unknown): Map<string, FlowExtra> {
  const out = new Map<string, FlowExtra>();
  const flows = body !== null && typeof body === 'object' ? (body as { flows?: unknown }).flows : null;
  if (Array.isArray(flows)) for (const f of flows as Array<FlowExtra & { id?: unknown }>) if (typeof f.id === 'string') out.set(f.id, f);
  return out;
}

export interface FlowRow {
  id: string;
  client: string;
  destination: string;
  name: string;
  protocol: string;
  rule: string;
  chain: string;
  upRate: number;
  downRate: number;
  upload: number;
  download: number;
  ageMs: number;
}

export const SORT_KEYS = ['rate', 'up', 'down', 'total', 'age', 'dst'] as const;
export type SortKey = (typeof SORT_KEYS)[number];

export function formatBytes(n: number): string {
  if (!(n > 0)) return '0 B';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`;
}

export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}`;
  return `${Math.floor(s / 86400)}d${String(Math.floor(s / 3600) % 24).padStart(2, '0')}h`;
}

function hostPort(ip: string | undefined, port: string | undefined): string {
  if (ip === undefined || ip === '') return '';
  return `${ip.includes(':') ? `[${ip}]` : ip}:${port ?? ''}`;
}

/** Rows of `now`, with rates against `before` (taken `dtMs` earlier; null: rates 0). */
export function flowRows(now: Snapshot, before: Snapshot | null, dtMs: number, wallNow = Date.now(), extras: Map<string, FlowExtra> = new Map()): FlowRow[] {
  const prev = new Map<string, Connection>();
  for (const c of before?.connections ?? []) prev.set(c.id, c);
  const dt = dtMs / 1000;
  return (now.connections ?? []).map((c) => {
    const m = c.metadata ?? {};
    const p = prev.get(c.id);
    const started = Date.parse(c.start);
    const chains = Array.isArray(c.chains) ? c.chains : [];
    const x = extras.get(String(c.id));
    const protocol = x?.protocol ?? (typeof m.protocol === 'string' && m.protocol !== '' ? m.protocol : null);
    return {
      id: String(c.id),
      client: hostPort(m.sourceIP, m.sourcePort),
      destination: hostPort(m.destinationIP, m.destinationPort),
      name: m.host || m.sniffHost || '',
      protocol: (m.network ?? '') + (protocol !== null ? `/${protocol}` : ''),
      rule: x?.ruleText ?? (c.rule ? `${c.rule}${c.rulePayload ? ` ${c.rulePayload}` : ''}` : ''),
      chain: [...chains].reverse().join(' > '),
      upRate: p !== undefined && dt > 0 ? Math.max(0, (c.upload - p.upload) / dt) : 0,
      downRate: p !== undefined && dt > 0 ? Math.max(0, (c.download - p.download) / dt) : 0,
      upload: c.upload ?? 0,
      download: c.download ?? 0,
      ageMs: Number.isFinite(started) ? wallNow - started : 0,
    };
  });
}

export function sortRows(rows: FlowRow[], key: SortKey): FlowRow[] {
  const by: Record<SortKey, (a: FlowRow, b: FlowRow) => number> = {
    rate: (a, b) => b.upRate + b.downRate - (a.upRate + a.downRate) || b.upload + b.download - (a.upload + a.download),
    up: (a, b) => b.upRate - a.upRate || b.upload - a.upload,
    down: (a, b) => b.downRate - a.downRate || b.download - a.download,
    total: (a, b) => b.upload + b.download - (a.upload + a.download),
    age: (a, b) => b.ageMs - a.ageMs,
    dst: (a, b) => (a.name || a.destination).localeCompare(b.name || b.destination),
  };
  return rows.sort(by[key]);
}

export function filterRows(rows: FlowRow[], text: string): FlowRow[] {
  if (text === '') return rows;
  const t = text.toLowerCase();
  return rows.filter((r) => `${r.id} ${r.client} ${r.destination} ${r.name} ${r.protocol} ${r.rule} ${r.chain}`.toLowerCase().includes(t));
}

interface Column {
  title: string;
  get: (r: FlowRow) => string;
  right?: boolean;
  /** Columns that may be cut to fit the width, in order of sacrifice. */
  flexible?: boolean;
}

const COLUMNS: Column[] = [
  { title: 'ID', get: (r) => r.id },
  { title: 'CLIENT', get: (r) => r.client, flexible: true },
  { title: 'DESTINATION', get: (r) => r.destination },
  { title: 'NAME', get: (r) => r.name, flexible: true },
  { title: 'PROTO', get: (r) => r.protocol },
  { title: 'RULE', get: (r) => r.rule, flexible: true },
  { title: 'OUTBOUND', get: (r) => r.chain, flexible: true },
  { title: 'UP/s', get: (r) => formatBytes(r.upRate), right: true },
  { title: 'DOWN/s', get: (r) => formatBytes(r.downRate), right: true },
  { title: 'UP', get: (r) => formatBytes(r.upload), right: true },
  { title: 'DOWN', get: (r) => formatBytes(r.download), right: true },
  { title: 'AGE', get: (r) => formatAge(r.ageMs), right: true },
];

/** The table as lines; with `width`, flexible columns shrink (down to 8) so each line fits. */
export function renderTable(rows: FlowRow[], width: number | null): string[] {
  const cells = rows.map((r) => COLUMNS.map((c) => c.get(r)));
  const widths = COLUMNS.map((c, i) => Math.max(c.title.length, ...cells.map((row) => row[i]!.length)));
  if (width !== null) {
    const total = (): number => widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1);
    for (;;) {
      const over = total() - width;
      if (over <= 0) break;
      // Shrink the widest flexible column that can still shrink.
      let pick = -1;
      COLUMNS.forEach((c, i) => {
        if (c.flexible === true && widths[i]! > 8 && (pick < 0 || widths[i]! > widths[pick]!)) pick = i;
      });
      if (pick < 0) break;
      widths[pick] = Math.max(8, widths[pick]! - over);
    }
  }
  const fit = (s: string, w: number, right: boolean | undefined): string => {
    const cut = s.length > w ? `${s.slice(0, Math.max(0, w - 1))}…` : s;
    return right === true ? cut.padStart(w) : cut.padEnd(w);
  };
  const line = (values: string[]): string => values.map((v, i) => fit(v, widths[i]!, COLUMNS[i]!.right)).join('  ').trimEnd();
  return [line(COLUMNS.map((c) => c.title)), ...cells.map(line)];
}
