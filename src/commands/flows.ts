/**
 * `sluice flows`: the open flows of a running sluice, through its control
 * API (GET /connections). On a terminal, a live top-like view redrawn
 * every second, sorted by rate (q or Ctrl-C quits); otherwise (a pipe, or
 * --once) one table from two snapshots a second apart, so the rates are
 * real; --json prints one GET /connections snapshot (the Clash/mihomo
 * shape) for scripts.
 *
 * Exit codes: 0, 1 the API could not be reached or refused, 2 usage.
 */
import { parseArgs } from 'node:util';
import type { CommandIo } from './check.js';
import { call, request, resolveTarget, runControl, TARGET_OPTIONS, TARGET_USAGE, ControlError, type ApiTarget } from '../control/client.js';
import { extrasOf, filterRows, flowRows, formatBytes, renderTable, sortRows, SORT_KEYS, type FlowExtra, type Snapshot, type SortKey } from '../control/flow-table.js';

export const FLOWS_USAGE = `Usage: sluice flows [--json] [--once] [--sort KEY] [--filter TEXT] [--interval MS] [options]

Lists the open flows of the running sluice: client, destination, name,
protocol, rule, outbound chain, up/down rate and total, age.
On a terminal the view refreshes every --interval (default 1000 ms) until
q or Ctrl-C; otherwise, or with --once, it prints one table and exits.
  --json                 one GET /connections snapshot as JSON, for scripts
  --once                 print one table and exit, also on a terminal
  --sort KEY             ${SORT_KEYS.join('|')} (default rate)
  --filter TEXT          only flows whose fields contain TEXT
  --interval MS          refresh / rate interval (default 1000, at least 100)
${TARGET_USAGE}`;

interface TerminalIo extends CommandIo {
  stdout: CommandIo['stdout'] & { isTTY?: boolean; columns?: number; rows?: number };
}

async function snapshot(target: ApiTarget): Promise<Snapshot> {
  const body = (await call(target, 'GET', '/connections')) as Snapshot | null;
  if (body === null || typeof body !== 'object') throw new ControlError('GET /connections: the answer is not a JSON object');
  return body;
}

/** The protocol and rule text of each flow from sluice's own /v1/flows (empty when that route is missing). */
async function extras(target: ApiTarget): Promise<Map<string, FlowExtra>> {
  const r = await request(target, 'GET', '/v1/flows');
  return r.status === 200 ? extrasOf(r.body) : new Map();
}

function header(s: Snapshot, rowsShown: number, rowsTotal: number, upRate: number, downRate: number, target: ApiTarget): string {
  const open = (s.connections ?? []).length;
  return `sluice flows at ${target.display}: ${open} open${rowsShown < rowsTotal ? ` (${rowsShown} shown)` : ''}, now up ${formatBytes(upRate)}/s down ${formatBytes(downRate)}/s, total up ${formatBytes(s.uploadTotal)} down ${formatBytes(s.downloadTotal)}`;
}

export async function runFlows(argv: string[], io: TerminalIo = process): Promise<number> {
  return runControl('flows', FLOWS_USAGE, io, async () => {
    const { values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: { ...TARGET_OPTIONS, json: { type: 'boolean' }, once: { type: 'boolean' }, sort: { type: 'string' }, filter: { type: 'string' }, interval: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
    if (values.help === true) {
      io.stdout.write(`${FLOWS_USAGE}\n`);
      return 0;
    }
    const sort = (values.sort ?? 'rate') as SortKey;
    if (!SORT_KEYS.includes(sort)) return usage(io, `--sort: "${values.sort}" is not one of ${SORT_KEYS.join(', ')}`);
    const interval = values.interval === undefined ? 1000 : Number(values.interval);
    if (!Number.isInteger(interval) || interval < 100 || interval > 3_600_000) return usage(io, `--interval: "${values.interval}" is not a whole number of milliseconds from 100 to 3600000`);
    const filter = values.filter ?? '';
    const target = await resolveTarget(values);
    if (values.json === true) {
      io.stdout.write(`${JSON.stringify(await snapshot(target))}\n`);
      return 0;
    }
    const live = io.stdout.isTTY === true && values.once !== true;
    if (!live) {
      const first = await snapshot(target);
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, interval));
      const second = await snapshot(target);
      const dt = performance.now() - t0;
      const rows = filterRows(sortRows(flowRows(second, first, dt, Date.now(), await extras(target)), sort), filter);
      const up = rows.reduce((a, r) => a + r.upRate, 0);
      const down = rows.reduce((a, r) => a + r.downRate, 0);
      io.stdout.write(`${header(second, rows.length, rows.length, up, down, target)}\n${renderTable(rows, null).join('\n')}\n`);
      return 0;
    }
    return liveView(target, io, sort, filter, interval);
  });
}

function usage(io: CommandIo, message: string): number {
  io.stderr.write(`sluice flows: ${message}\n\n${FLOWS_USAGE}\n`);
  return 2;
}

/** The top-like view: alternate screen, redraw each interval, q / Ctrl-C to quit. */
async function liveView(target: ApiTarget, io: TerminalIo, sort: SortKey, filter: string, interval: number): Promise<number> {
  const out = io.stdout;
  const stdin = process.stdin;
  let stop: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => (stop = resolve));
  const onKey = (d: Buffer): void => {
    const k = d.toString('utf8');
    if (k === 'q' || k === '\u0003' || k === '\u001b') stop(0);
  };
  const onSignal = (): void => stop(0);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (stdin.isTTY) {
    stdin.setRawMode(true);
    stdin.on('data', onKey);
    stdin.resume();
  }
  out.write('\u001b[?1049h\u001b[?25l'); // alternate screen, hide cursor
  let prev: Snapshot | null = null;
  let prevAt = 0;
  let failure: ControlError | null = null;
  try {
    for (;;) {
      const s = await snapshot(target);
      const at = performance.now();
      const rows = filterRows(sortRows(flowRows(s, prev, at - prevAt, Date.now(), await extras(target)), sort), filter);
      prev = s;
      prevAt = at;
      const height = Math.max(3, (out.rows || 24) - 2);
      const shown = rows.slice(0, height - 1);
      const up = rows.reduce((a, r) => a + r.upRate, 0);
      const down = rows.reduce((a, r) => a + r.downRate, 0);
      const width = out.columns || 120;
      const title = header(s, shown.length, rows.length, up, down, target).slice(0, width);
      out.write(`\u001b[H\u001b[2J${title}\n${renderTable(shown, width).join('\n')}\n\u001b[2m sorted by ${sort}; q quits\u001b[0m`);
      const next = await Promise.race([done.then(() => 'stop' as const), new Promise<'tick'>((r) => setTimeout(() => r('tick'), interval))]);
      if (next === 'stop') break;
    }
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    failure = err;
  } finally {
    out.write('\u001b[?25h\u001b[?1049l');
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (stdin.isTTY) {
      stdin.off('data', onKey);
      stdin.setRawMode(false);
      stdin.pause();
    }
  }
  if (failure !== null) throw failure;
  return done;
}
