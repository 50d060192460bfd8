/**
 * `sluice status`: one screen about the running sluice, from its control
 * API: version, uptime, configuration file, mode, open flows (by network
 * and by outbound), traffic (totals and the current rate) and memory (the
 * process's RSS, the TCP buffers against limits.tcpBufferMiB).
 *
 * Exit codes: 0, 1 the API could not be reached or refused, 2 usage.
 */
import { parseArgs } from 'node:util';
import type { CommandIo } from './check.js';
import { call, resolveTarget, runControl, TARGET_OPTIONS, TARGET_USAGE, type ApiTarget } from '../control/client.js';
import { formatAge, formatBytes, type Snapshot } from '../control/flow-table.js';
import type { BufferBudgetStats } from '../tcp/buffer-budget.js';

export const STATUS_USAGE = `Usage: sluice status [--json] [options]

Prints the running sluice's version, uptime, configuration file, open
flows, traffic and memory.
  --json                 the same as one JSON object
${TARGET_USAGE}`;

export interface Status {
  api: string;
  version: string;
  uptimeSeconds: number | null;
  config: string | null;
  mode: string | null;
  flows: { open: number; byNetwork: Record<string, number>; byOutbound: Record<string, number> };
  traffic: { uploadTotal: number; downloadTotal: number; upRate: number; downRate: number };
  /** null from a sluice that does not report it. */
  memory: { rssBytes: number; tcpBuffers: BufferBudgetStats } | null;
}

function count(into: Record<string, number>, key: string): void {
  into[key] = (into[key] ?? 0) + 1;
}

const RATE_WINDOW_MS = 1000;

export async function gatherStatus(target: ApiTarget): Promise<Status> {
  const version = (await call(target, 'GET', '/version')) as { version?: string } | null;
  const s = ((await call(target, 'GET', '/v1/stats')) ?? {}) as { uptimeMs?: number; config?: string; mode?: string; rssBytes?: number; tcpBuffers?: BufferBudgetStats };
  const first = (await call(target, 'GET', '/connections')) as Snapshot;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, RATE_WINDOW_MS));
  const snap = (await call(target, 'GET', '/connections')) as Snapshot;
  const dt = (performance.now() - t0) / 1000;
  const byNetwork: Record<string, number> = {};
  const byOutbound: Record<string, number> = {};
  for (const c of snap.connections ?? []) {
    count(byNetwork, c.metadata?.network ?? '?');
    count(byOutbound, c.chains?.[0] ?? '?');
  }
  return {
    api: target.display,
    version: version?.version ?? '?',
    uptimeSeconds: typeof s.uptimeMs === 'number' ? Math.floor(s.uptimeMs / 1000) : null,
    config: typeof s.config === 'string' ? s.config : null,
    mode: typeof s.mode === 'string' ? s.mode : null,
    flows: { open: (snap.connections ?? []).length, byNetwork, byOutbound },
    traffic: {
      uploadTotal: snap.uploadTotal,
      downloadTotal: snap.downloadTotal,
      upRate: Math.max(0, (snap.uploadTotal - first.uploadTotal) / dt),
      downRate: Math.max(0, (snap.downloadTotal - first.downloadTotal) / dt),
    },
    memory: typeof s.rssBytes === 'number' && s.tcpBuffers !== undefined ? { rssBytes: s.rssBytes, tcpBuffers: s.tcpBuffers } : null,
  };
}

/** Binary units, as limits.tcpBufferMiB is given. */
const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;

const list = (m: Record<string, number>): string =>
  Object.entries(m)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');

export function renderStatus(s: Status): string {
  const lines = [
    `${s.version} (API at ${s.api})`,
    `uptime    ${s.uptimeSeconds === null ? '?' : formatAge(s.uptimeSeconds * 1000)}`,
    `config    ${s.config ?? '?'}`,
    `mode      ${s.mode ?? '?'}`,
    `flows     ${s.flows.open} open${s.flows.open > 0 ? ` (${list(s.flows.byNetwork)}; by outbound: ${list(s.flows.byOutbound)})` : ''}`,
    `traffic   up ${formatBytes(s.traffic.upRate)}/s, down ${formatBytes(s.traffic.downRate)}/s; total up ${formatBytes(s.traffic.uploadTotal)}, down ${formatBytes(s.traffic.downloadTotal)}`,
  ];
  const m = s.memory;
  if (m !== null) {
    const b = m.tcpBuffers;
    lines.push(`memory    RSS ${mib(m.rssBytes)}; TCP buffers ${mib(b.usedBytes)} of ${mib(b.limitBytes)} (peak ${mib(b.peakBytes)}${b.pressureEvents > 0 ? `, limit reached ${b.pressureEvents} times` : ''})`);
  }
  return lines.join('\n');
}

export async function runStatus(argv: string[], io: CommandIo = process): Promise<number> {
  return runControl('status', STATUS_USAGE, io, async () => {
    const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { ...TARGET_OPTIONS, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
    if (values.help === true) {
      io.stdout.write(`${STATUS_USAGE}\n`);
      return 0;
    }
    const status = await gatherStatus(await resolveTarget(values));
    io.stdout.write(values.json === true ? `${JSON.stringify(status)}\n` : `${renderStatus(status)}\n`);
    return 0;
  });
}
