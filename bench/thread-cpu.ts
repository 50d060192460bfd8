/**
 * CPU time per thread of a process (/proc/PID/task/TID/stat, proc(5)), so a
 * bench can say where the time of a multi-queue `sluice run` goes: the main
 * thread (TID = PID), each worker (named `sluice-q<N>` by
 * src/workers/thread-name.ts), and the rest together (V8's platform
 * threads, libuv's thread pool, the inspector's).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { CLK_TCK } from './bench-lab.js';

/** Every thread's CPU (utime + stime) in µs, by thread id, with its name, and the system (kernel) part of it. */
export type ThreadCpu = Map<number, { name: string; us: number; sysUs: number }>;

export function threadCpu(pid: number): ThreadCpu {
  const out: ThreadCpu = new Map();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(t), { name, us: ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK, sysUs: (Number(f[12]) * 1e6) / CLK_TCK });
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

/**
 * The CPU used between two snapshots, per group: `main`, each worker by
 * its name (`sluice-q0`, ...), and `other`. A thread that ended in between
 * is not counted (its time is in neither snapshot's task list). `part`
 * 'sys' counts the system (kernel) time alone.
 */
export function threadSplit(pid: number, before: ThreadCpu, after: ThreadCpu, part: 'all' | 'sys' = 'all'): Record<string, number> {
  const out: Record<string, number> = { main: 0 };
  for (const [tid, a] of after) {
    const b = before.get(tid);
    const d = part === 'all' ? a.us - (b?.us ?? 0) : a.sysUs - (b?.sysUs ?? 0);
    const group = tid === pid ? 'main' : a.name.startsWith('sluice-q') ? a.name : 'other';
    out[group] = (out[group] ?? 0) + d;
  }
  out.other ??= 0;
  return out;
}
