/**
 * What the namespace benchmarks share: a stand-in for tap's Test so a
 * harness Lab can be used outside a test (its teardown hooks run at
 * `finish()`), and the CPU time and memory of a process from /proc (all its
 * threads: /proc/PID/stat of a thread-group leader sums them).
 */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import type { TestLike } from '../test/harness/netns.js';

/** Collects teardown hooks the way a tap Test does; `finish()` runs them, last registered first. */
export class BenchContext implements TestLike {
  readonly hooks: (() => unknown)[] = [];
  teardown(fn: () => unknown): void {
    this.hooks.push(fn);
  }
  plan(): void {}
  comment(): void {}
  async finish(): Promise<void> {
    while (this.hooks.length > 0) await this.hooks.pop()!();
  }
}

/** Clock ticks per second of utime/stime in /proc/PID/stat (proc(5)). */
export const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** CPU seconds (user + system, every thread) `pid` has used so far. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // After "pid (comm) ", utime and stime are fields 14 and 15 of proc(5): indexes 11 and 12 here.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** A field of /proc/PID/status in MiB (`VmRSS` now, `VmHWM` the peak); NaN when absent. */
function statusMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? NaN : Number(m[1]) / 1024;
}

/** Resident memory of `pid` now, MiB. */
export function rssMiB(pid: number): number {
  return statusMiB(pid, 'VmRSS');
}

/** The largest resident memory `pid` has had, MiB. */
export function peakRssMiB(pid: number): number {
  return statusMiB(pid, 'VmHWM');
}

/**
 * The connection-rate pair of the namespace benches (`node -e`): a server on
 * port 9100 that answers one HTTP request and closes, and a client that
 * keeps 16 such connections going for argv[2] ms against argv[1] and prints
 * {done, failed}.
 */
export const CONN_SERVER = `require('net').createServer((s) => { s.on('error', () => {}); s.once('data', () => s.end('HTTP/1.1 200 OK\\r\\nContent-Length: 1\\r\\nConnection: close\\r\\n\\r\\ny')); }).listen(9100, () => console.log(JSON.stringify({ event: 'ready' })));`;
export const CONN_CLIENT = `
const net = require('net'); const host = process.argv[1]; const until = Date.now() + Number(process.argv[2]); let done = 0, failed = 0, live = 16;
function finish() { if (--live === 0) { console.log(JSON.stringify({ done, failed })); process.exit(0); } }
function loop() {
  if (Date.now() >= until) return finish();
  const s = net.connect(9100, host); let ok = false;
  const timer = setTimeout(() => s.destroy(), 2000);
  s.once('connect', () => s.write('GET / HTTP/1.1\\r\\nHost: bench.example\\r\\n\\r\\n')); s.on('data', () => { ok = true; }); s.on('error', () => {});
  s.once('close', () => { clearTimeout(timer); if (ok) done++; else failed++; loop(); });
}
for (let i = 0; i < 16; i++) loop();
setTimeout(() => { console.log(JSON.stringify({ done, failed })); process.exit(0); }, Number(process.argv[2]) + 5000);`;

/** Removes `name` and the value after it from `args` (a bench's command line); the value, or null without the flag. */
export function takeFlag(args: string[], name: string): string | null {
  const i = args.indexOf(name);
  if (i < 0) return null;
  const v = args[i + 1] ?? null;
  args.splice(i, 2);
  return v;
}
