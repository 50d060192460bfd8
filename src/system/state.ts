/**
 * The state file: everything sluice added to the machine's routing state,
 * so that a later `sluice run` or `sluice down` can remove exactly that,
 * even after a crash or `kill -9`. It is rewritten atomically (temporary
 * file + rename in the same directory) before each change is applied, so
 * it always lists a superset of what exists; removal tolerates entries
 * that were never applied or are already gone.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { dirname } from 'node:path';
import { SystemStateError } from './exec.js';

export const DEFAULT_STATE_PATH = '/run/sluice/state.json';
export const STATE_VERSION = 1;

/** `ip [-6] rule add SELECTOR priority P`; removed with `ip [-6] rule del SELECTOR priority P`. */
export interface RuleEntry {
  family: 4 | 6;
  priority: number;
  /** The selector and action words, e.g. ["not", "fwmark", "0x162", "lookup", "2022"]. */
  selector: string[];
}

/**
 * `ip [-6] route add DST dev DEV table T`; removed with
 * `ip [-6] route del DST dev DEV table T`. The kill switch's entries are
 * `unreachable DST table T metric M` (no device: they outlive the TUN).
 */
export interface RouteEntry {
  family: 4 | 6;
  dst: string;
  /** The device; '' for an unreachable route. */
  dev: string;
  table: number;
  /** Absent: a unicast route via `dev`. */
  type?: 'unreachable';
  /** Absent: the kernel's default metric. */
  metric?: number;
}

export interface NftTableEntry {
  family: 'inet';
  name: string;
}

/** A sysctl sluice changed (gateway forwarding), with the value to put back. */
export interface SysctlEntry {
  /** Dotted name, e.g. "net.ipv4.ip_forward". */
  key: string;
  /** The value before sluice changed it. */
  value: string;
}

/**
 * The eBPF classifier's tc filter (src/system/classifier.ts attaches it with
 * handle 0x5c, priority 0x5c = 92); removed with
 * `tc filter del dev IF DIRECTION pref 92 handle 0x5c bpf`, then
 * `tc qdisc del dev IF clsact` when sluice created the qdisc.
 */
export interface TcFilterEntry {
  ifname: string;
  direction: 'ingress' | 'egress';
  createdQdisc: boolean;
}

export interface SystemState {
  version: number;
  /** The sluice process that made these changes. */
  pid: number;
  createdAt: string;
  rules: RuleEntry[];
  routes: RouteEntry[];
  nftTables: NftTableEntry[];
  /** Restored on teardown; absent in files written before gateway mode existed. */
  sysctls?: SysctlEntry[];
  /** The classifier's tc filters; absent in files written before the classifier existed. */
  tcFilters?: TcFilterEntry[];
}

export function emptyState(pid = process.pid, now = new Date()): SystemState {
  return { version: STATE_VERSION, pid, createdAt: now.toISOString(), rules: [], routes: [], nftTables: [] };
}

export function isEmptyState(s: SystemState): boolean {
  return s.rules.length === 0 && s.routes.length === 0 && s.nftTables.length === 0 && (s.sysctls ?? []).length === 0 && (s.tcFilters ?? []).length === 0;
}

/** Reads the state file; null when there is none. Throws STATE_FILE on unreadable or malformed content. */
export function readState(path: string): SystemState | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new SystemStateError('STATE_FILE', `state file ${path}: cannot read: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new SystemStateError('STATE_FILE', `state file ${path}: not JSON (${(err as Error).message}); inspect it, remove what it lists by hand, then delete it`);
  }
  const problem = validate(data) ?? foreignForm(data as SystemState);
  if (problem !== null) throw new SystemStateError('STATE_FILE', `state file ${path}: ${problem}`);
  return data as SystemState;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/**
 * A dotted sysctl name under /proc/sys/net: components of name characters,
 * where "/" stands for a "." inside an interface name (never a component
 * of only "/"s, which would become "." or "..").
 */
function validSysctlKey(key: string): boolean {
  if (!/^net\.[a-z0-9_]+(?:\.[^\s.:]{1,64})+$/.test(key)) return false;
  return key.split('.').every((c) => !/^\/+$/.test(c));
}

function validate(d: unknown): string | null {
  if (d === null || typeof d !== 'object') return 'not an object';
  const s = d as Record<string, unknown>;
  if (s.version !== STATE_VERSION) return `unknown version ${JSON.stringify(s.version)} (expected ${STATE_VERSION})`;
  if (!isInt(s.pid)) return 'pid is not a number';
  if (!Array.isArray(s.rules) || !Array.isArray(s.routes) || !Array.isArray(s.nftTables)) return 'rules, routes and nftTables must be lists';
  for (const r of s.rules as Record<string, unknown>[]) {
    if ((r.family !== 4 && r.family !== 6) || !isInt(r.priority) || !Array.isArray(r.selector) || !r.selector.every((w) => typeof w === 'string')) {
      return `malformed rule ${JSON.stringify(r)}`;
    }
  }
  for (const r of s.routes as Record<string, unknown>[]) {
    if ((r.family !== 4 && r.family !== 6) || typeof r.dst !== 'string' || typeof r.dev !== 'string' || !isInt(r.table)) {
      return `malformed route ${JSON.stringify(r)}`;
    }
    if ((r.type !== undefined && r.type !== 'unreachable') || (r.metric !== undefined && (!isInt(r.metric) || r.metric < 0 || r.metric > 0xffffffff))) {
      return `malformed route ${JSON.stringify(r)}`;
    }
  }
  for (const n of s.nftTables as Record<string, unknown>[]) {
    if (n.family !== 'inet' || typeof n.name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(n.name)) return `malformed nft table ${JSON.stringify(n)}`;
  }
  if (s.sysctls !== undefined) {
    if (!Array.isArray(s.sysctls)) return 'sysctls must be a list';
    for (const c of s.sysctls as Record<string, unknown>[]) {
      if (typeof c.key !== 'string' || !validSysctlKey(c.key) || typeof c.value !== 'string' || !/^[0-9]{1,10}$/.test(c.value)) return `malformed sysctl ${JSON.stringify(c)}`;
    }
  }
  if (s.tcFilters !== undefined) {
    if (!Array.isArray(s.tcFilters)) return 'tcFilters must be a list';
    for (const f of s.tcFilters as Record<string, unknown>[]) {
      if (typeof f.ifname !== 'string' || !/^[^\s/:]{1,15}$/.test(f.ifname) || (f.direction !== 'ingress' && f.direction !== 'egress') || typeof f.createdQdisc !== 'boolean') {
        return `malformed tc filter ${JSON.stringify(f)}`;
      }
    }
  }
  return null;
}

/*
 * With run.user, the state file's directory belongs to that user after
 * set-up (src/system/privileges.ts), and the next root `sluice run` or
 * `sluice down` acts on what the file lists. So, beyond the shape, only the
 * forms sluice itself writes are accepted: one word per selector item, route
 * destination and device (none for an unreachable route; no whitespace that could start another
 * `ip -batch` command), nftables tables of sluice's own names, and sysctls
 * under net. (never kernel.* or the like).
 */
const WORD = /^[^\s]{1,128}$/;
const NFT_NAME = /^sluice[A-Za-z0-9_-]{0,58}$/;

function foreignForm(s: SystemState): string | null {
  for (const r of s.rules) if (!r.selector.every((w) => WORD.test(w))) return `rule ${JSON.stringify(r)} is not one sluice writes`;
  for (const r of s.routes) {
    // The kill switch's unreachable routes have no device (src/system/routing.ts).
    const devOk = WORD.test(r.dev) || (r.type === 'unreachable' && r.dev === '');
    if (!WORD.test(r.dst) || !devOk) return `route ${JSON.stringify(r)} is not one sluice writes`;
  }
  for (const n of s.nftTables) if (!NFT_NAME.test(n.name)) return `nft table ${JSON.stringify(n)} is not one sluice writes`;
  for (const c of s.sysctls ?? []) if (!c.key.startsWith('net.')) return `sysctl ${JSON.stringify(c)} is not one sluice writes`;
  return null;
}

/** Writes the state atomically: a temporary file in the same directory, fsynced, renamed over the old one. */
export function writeState(path: string, state: SystemState): void {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o644 });
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    throw new SystemStateError('STATE_FILE', `state file ${path}: cannot write: ${(err as Error).message}`);
  }
}

export function removeState(path: string): void {
  rmSync(path, { force: true });
}

/** Whether `pid` is a live process other than this one that looks like sluice (a crashed run's PID may be reused). */
export function ownerAlive(pid: number): boolean {
  if (pid === process.pid || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('sluice');
  } catch {
    return false;
  }
}
