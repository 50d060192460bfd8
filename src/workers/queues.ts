/**
 * How many TUN queues (and worker threads) `sluice run` uses: tun.queues,
 * "auto" (the default) meaning the CPUs this process may run on
 * (os.availableParallelism: the affinity mask; the libuv of Node 20, 1.46,
 * does not read a cgroup CPU quota), capped at 64 (the addon's limit,
 * native/src/tun.c).
 *
 * SLUICE_TEST_TUN_QUEUES overrides the file: the test suite runs every
 * integration test with it set to 1 and to 2 (issue 10: "all existing
 * tests stay green with tun.queues at 1 and at 2"); unset, the tests'
 * configs get the default. A value that is not "auto" or 1..64 is a
 * start-up error naming the variable.
 */
import { availableParallelism } from 'node:os';

export const MAX_TUN_QUEUES = 64;
export const TUN_QUEUES_ENV = 'SLUICE_TEST_TUN_QUEUES';

export interface QueueChoice {
  queues: number;
  /** Where the number came from, for the start-up log line. */
  from: 'tun.queues' | typeof TUN_QUEUES_ENV;
}

function resolve(v: number | 'auto'): number {
  if (v === 'auto') return Math.max(1, Math.min(MAX_TUN_QUEUES, availableParallelism()));
  return v;
}

export function tunQueues(configured: number | 'auto', env: NodeJS.ProcessEnv = process.env): QueueChoice {
  const raw = env.SLUICE_TEST_TUN_QUEUES;
  if (raw !== undefined && raw !== '') {
    const t = raw.trim();
    const n = t === 'auto' ? 'auto' : /^[0-9]{1,2}$/.test(t) ? Number(t) : NaN;
    if (n !== 'auto' && !(Number.isInteger(n) && n >= 1 && n <= MAX_TUN_QUEUES)) {
      throw new Error(`${TUN_QUEUES_ENV}: expected "auto" or a whole number from 1 to ${MAX_TUN_QUEUES}, got ${JSON.stringify(raw)}`);
    }
    return { queues: resolve(n), from: TUN_QUEUES_ENV };
  }
  return { queues: resolve(configured), from: 'tun.queues' };
}
