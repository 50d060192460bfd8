/**
 * Whether the main thread's /logs stream has a listener, shared with every
 * worker (one Int32 in a SharedArrayBuffer): a worker sends its log lines to
 * the main thread (for the stream) only while it does, and writes them to
 * stdout itself either way. A flow line per short connection was a string
 * cloned into every report and out again on the main thread, to be dropped
 * there when nobody listened (issue 10). The main thread sets the flag when
 * the first subscriber comes (LogTap.onListening), before that subscriber's
 * request returns, so the lines a worker logs afterwards reach it.
 */
import type { LogTap } from '../engine/logger.js';

export function newLogTapFlag(): SharedArrayBuffer {
  return new SharedArrayBuffer(4);
}

/** The main thread's side: the flag follows `tap`'s listener. */
export function publishLogTap(tap: LogTap, flag: SharedArrayBuffer): void {
  const a = new Int32Array(flag);
  Atomics.store(a, 0, tap.listener !== null ? 1 : 0);
  tap.onListening = (on) => Atomics.store(a, 0, on ? 1 : 0);
}

/** The worker's side: true while the main thread's tap has a listener. */
export function logTapReader(flag: SharedArrayBuffer): () => boolean {
  const a = new Int32Array(flag);
  return () => Atomics.load(a, 0) !== 0;
}
