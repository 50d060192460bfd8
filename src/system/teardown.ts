/**
 * Removing what a state file lists, and nothing else: ip rules first (so
 * traffic stops being steered), then the routes, then the nftables table.
 * Entries already gone (the TUN vanished with a killed process and took its
 * routes along, a step was never applied, someone removed a rule by hand)
 * are not errors.
 */
import { writeFileSync } from 'node:fs';
import { runCommand, SystemStateError, type Runner } from './exec.js';
import { readState, removeState, isEmptyState, ownerAlive, type SystemState } from './state.js';

/** Kernel answers meaning "not there" (ENOENT, ESRCH, ENODEV), as ip(8) and nft(8) print them. */
const GONE = /No such file or directory|No such process|Cannot find device|No such device|does not exist/;

/** /proc/sys path of a dotted sysctl name: dots are separators, a "/" stands for a "." in a name (sysctl(8): net.ipv4.conf.eth0/100.forwarding). */
export function sysctlPath(key: string): string {
  return `/proc/sys/${key.replace(/[./]/g, (c) => (c === '.' ? '/' : '.'))}`;
}

/** tc(8)'s "not there" answers: the device, the qdisc or the filter is gone. */
const TC_GONE = /Cannot find|not found|No such|does not exist|doesn't exist|Invalid handle/;

export interface TeardownResult {
  removed: number;
  alreadyGone: number;
}

function ruleLine(r: SystemState['rules'][number]): string {
  return `rule del ${r.selector.join(' ')} priority ${r.priority}`;
}

/**
 * The kill switch's unreachable routes share their prefix with the TUN's
 * routes in the same table, so each deletion names what tells them apart:
 * the type and metric, or the device (gone with a killed TUN: "Cannot find
 * device", counted as already gone, never the unreachable route instead).
 */
export function routeLine(r: SystemState['routes'][number]): string {
  if (r.type === 'unreachable') return `route del unreachable ${r.dst} table ${r.table}${r.metric !== undefined ? ` metric ${r.metric}` : ''}`;
  return `route del ${r.dst}${r.dev !== '' ? ` dev ${r.dev}` : ''} table ${r.table}${r.metric !== undefined ? ` metric ${r.metric}` : ''}`;
}

/** The `ip -batch` line adding `r` (routing.ts and gateway.ts). */
export function routeAddLine(r: SystemState['routes'][number], kind: 'local' | null = null): string {
  if (r.type === 'unreachable') return `route add unreachable ${r.dst} table ${r.table}${r.metric !== undefined ? ` metric ${r.metric}` : ''}`;
  return `route add ${kind === 'local' ? 'local ' : ''}${r.dst} dev ${r.dev} table ${r.table}${r.metric !== undefined ? ` metric ${r.metric}` : ''}`;
}

/**
 * `ip -force -batch -` runs every line even after a failure and reports
 * each failure on stderr; counts failures that mean "already gone" and
 * returns the others' messages.
 */
async function ipBatch(runner: Runner, family: 4 | 6, lines: string[], result: TeardownResult): Promise<string[]> {
  if (lines.length === 0) return [];
  const argv = family === 6 ? ['ip', '-6', '-force', '-batch', '-'] : ['ip', '-force', '-batch', '-'];
  const r = await runner(argv, lines.join('\n') + '\n');
  const errors = r.stderr.split('\n').filter((l) => l.trim() !== '' && !/^Command failed/.test(l));
  const gone = errors.filter((l) => GONE.test(l)).length;
  const bad = errors.filter((l) => !GONE.test(l));
  if (r.code !== 0 && errors.length === 0) bad.push(`${argv.join(' ')} exited ${r.code}`);
  result.alreadyGone += gone;
  result.removed += Math.max(0, lines.length - gone - bad.length);
  return bad.map((l) => `ip${family === 6 ? ' -6' : ''}: ${l.trim()}`);
}

/** Removes every entry of `state`; throws TEARDOWN_FAILED listing what could not be removed. */
export async function teardownState(state: SystemState, runner: Runner = runCommand): Promise<TeardownResult> {
  const result: TeardownResult = { removed: 0, alreadyGone: 0 };
  const problems: string[] = [];
  // The classifier's filters first, so packets stop being marked before the rules go.
  for (const f of state.tcFilters ?? []) {
    const r = await runner(['tc', 'filter', 'del', 'dev', f.ifname, f.direction, 'pref', '92', 'handle', '0x5c', 'bpf']);
    if (r.code === 0) result.removed++;
    else if (TC_GONE.test(r.stderr)) result.alreadyGone++;
    else problems.push(`tc filter del dev ${f.ifname} ${f.direction}: ${r.stderr.trim().split('\n')[0] ?? `exit ${r.code}`}`);
    if (!f.createdQdisc) continue;
    const q = await runner(['tc', 'qdisc', 'del', 'dev', f.ifname, 'clsact']);
    if (q.code === 0) result.removed++;
    else if (TC_GONE.test(q.stderr)) result.alreadyGone++;
    else problems.push(`tc qdisc del dev ${f.ifname} clsact: ${q.stderr.trim().split('\n')[0] ?? `exit ${q.code}`}`);
  }
  for (const family of [4, 6] as const) {
    const lines = [
      ...state.rules.filter((r) => r.family === family).map(ruleLine),
      ...state.routes.filter((r) => r.family === family).map(routeLine),
    ];
    problems.push(...(await ipBatch(runner, family, lines, result)));
  }
  for (const t of state.nftTables) {
    const r = await runner(['nft', 'delete', 'table', t.family, t.name]);
    if (r.code === 0) result.removed++;
    else if (GONE.test(r.stderr)) result.alreadyGone++;
    else problems.push(`nft delete table ${t.family} ${t.name}: ${r.stderr.trim().split('\n')[0] ?? `exit ${r.code}`}`);
  }
  // Sysctls last: forwarding stays on until nothing steers traffic any more.
  for (const c of state.sysctls ?? []) {
    try {
      writeFileSync(sysctlPath(c.key), `${c.value}\n`);
      result.removed++;
    } catch (err) {
      // A per-interface flag whose interface is gone (the TUN, a removed veth).
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') result.alreadyGone++;
      else problems.push(`sysctl ${c.key}=${c.value}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) {
    throw new SystemStateError('TEARDOWN_FAILED', `could not remove everything sluice installed:\n  ${problems.join('\n  ')}`);
  }
  return result;
}

/**
 * Removes what the state file at `path` lists and deletes the file.
 * Returns null when there is no state file. Refuses (STATE_BUSY) while the
 * sluice process that wrote it is still running, unless it is this one.
 */
export async function teardownFile(path: string, runner: Runner = runCommand): Promise<TeardownResult | null> {
  const state = readState(path);
  if (state === null) return null;
  if (ownerAlive(state.pid)) {
    throw new SystemStateError('STATE_BUSY', `state file ${path} belongs to a running sluice (pid ${state.pid}); stop it (SIGTERM) instead`);
  }
  const result = isEmptyState(state) ? { removed: 0, alreadyGone: 0 } : await teardownState(state, runner);
  removeState(path);
  return result;
}
