/**
 * A worker thread's name in the kernel (`comm`, shown by `top -H`, `ps -L`,
 * /proc/PID/task/TID/comm): `sluice-q<N>` for queue N, so per-thread CPU can
 * be told apart (every thread of a Node process is otherwise "node").
 * /proc/thread-self is the calling thread's own entry (proc(5)); a thread
 * may rename itself, at most 15 bytes. Where /proc is not mounted the name
 * stays as it was.
 */
import { writeFileSync } from 'node:fs';

export function nameThisThread(queue: number): void {
  try {
    writeFileSync('/proc/thread-self/comm', `sluice-q${queue}`);
  } catch {
    // No /proc: the name is only for the operator's tools.
  }
}
