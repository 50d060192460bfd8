/**
 * V8's young generation stays at its initial size (two 1 MiB semi-spaces)
 * instead of growing to 2 x 16 MiB under a burst of allocation (connection
 * setup) and staying there: ~30 MB of resident memory per thread that an
 * idle proxy never needs (issue 10). The stack allocates nothing per
 * packet, so the scavenges a smaller nursery costs are those of connection
 * setup and control traffic. SLUICE_SEMI_SPACE_GROWTH overrides the factor
 * (a number; 2 is V8's default). V8 reads the flag each time it considers
 * growing new space, and it is one flag for the whole process.
 *
 * Imported first by bin/sluice.js (before anything is allocated in
 * earnest) and by every worker thread (src/workers/worker-entry.ts): starting
 * a worker thread puts V8's flags back to their command-line values, for
 * every thread. Measured on Node 20.20: after `new Worker()` the main
 * thread's new space and the worker's each grew to 32 MB (96 MB in a
 * two-queue `sluice run` with 10,000 flows); set again by the worker, both
 * stay at 2 MB.
 */
import { setFlagsFromString } from 'node:v8';

/** The young generation's flag: at import (bin/sluice.js, worker-entry.ts), and again with the worker flags below. */
export function applyGcFlags(): void {
  setFlagsFromString(`--semi-space-growth-factor=${Number(process.env.SLUICE_SEMI_SPACE_GROWTH) || 1}`);
}

/**
 * With worker threads (tun.queues > 1), scavenges run on the allocating
 * thread alone and ArrayBuffer sweeping with it, not on V8's four platform
 * threads: a worker's 1 MiB nursery fills every few hundred packets of a
 * bulk flow (the stream's Buffers, the sockets' read and write wrappers),
 * and each scavenge then woke the helper threads to scavenge and to sweep
 * the freed Buffers' backing stores. Measured with one iperf3 flow at
 * 2 Gbit/s through `sluice run` at two queues (bench/bulk-cpu.bench.ts,
 * per-thread CPU from /proc/PID/task): the helpers took ~1 s of CPU in 6 s;
 * with these flags ~0.1 s, and the process 1,934 -> 1,493 ms per GB up,
 * 1,802 -> 1,200 down. The single thread (one queue) keeps V8's defaults:
 * there the same flags cost 10-15 % on a quiet machine. V8 reads both at
 * each GC; V8's flags are one set for the whole process, and starting a
 * worker thread resets them, so the pool applies them again once each
 * worker is ready. SLUICE_PARALLEL_SCAVENGE=1 keeps V8's defaults.
 * (Since then the relay no longer allocates a 64 KiB Buffer per chunk
 * either way (src/stack/chunk-pool.ts, src/outbound/upstream-read.ts):
 * the helpers' remaining work in a bulk flow, concurrent marking started
 * by that external memory, fell with it, to ~40 ms per GB per helper
 * thread; these flags were not measured again without it.)
 */
export function applyWorkerGcFlags(): void {
  applyGcFlags();
  if (process.env.SLUICE_PARALLEL_SCAVENGE === '1') return;
  setFlagsFromString('--no-parallel-scavenge');
  setFlagsFromString('--no-concurrent-array-buffer-sweeping');
}

applyGcFlags();
