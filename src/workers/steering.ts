/**
 * The TUN queue steering program of tun.queues > 1 (bpf/steering.c):
 * loaded through libbpf and set on the device with TUNSETSTEERINGEBPF, so
 * the kernel picks a packet's queue by its client's source (address and
 * TCP/UDP port) rather than tun_automq's 4-tuple flow hash. One client
 * socket then reaches one worker whatever its destinations, which is what
 * keeps the workers' per-queue UDP NAT endpoint-independent (RFC 4787
 * REQ-1; docs/workers.md).
 *
 * Attached once, right after the TUN opens (before any privilege drop: the
 * load needs CAP_BPF or root). A failure (no eBPF, an old kernel, a missing
 * object) never fails start-up: the kernel's flow hash stays, with one warn
 * line saying what that costs.
 */
import path from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../engine/logger.js';
import type { SluiceNative } from '../link/native.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** bpf/steering.o, built by `npm run build:bpf` (part of npm ci). */
export const STEERING_OBJECT = path.resolve(here, '../../../bpf/steering.o');

export const STEERING_PROGRAM = 'ebpf source hash (bpf/steering.o: client address + TCP/UDP port)';
export const STEERING_FALLBACK = 'kernel flow hash (tun automq)';

export interface Steering {
  /** What picks the queue, for the start-up log line. */
  readonly steering: string;
  /** Why the program is not used (null when it is). */
  readonly error: string | null;
}

/** Sets the steering program on the device of `fds` (any one queue's fd sets it for all). */
export function attachSteering(native: Pick<SluiceNative, 'bpfLoad' | 'tunSetSteering' | 'closeFd'>, fds: readonly number[], log: Logger, objectPath = STEERING_OBJECT): Steering {
  let error: string;
  if (fds.length < 2) return { steering: 'single queue', error: null };
  if (!existsSync(objectPath)) {
    error = `${objectPath}: the steering object is missing (npm run build:bpf needs clang)`;
  } else {
    let loaded: { prog: number; maps: Record<string, number> } | null = null;
    try {
      loaded = native.bpfLoad(objectPath);
      if (loaded.prog < 0) throw new Error(`${objectPath} holds no program`);
      native.tunSetSteering(fds[0]!, loaded.prog);
      return { steering: STEERING_PROGRAM, error: null };
    } catch (err) {
      error = (err as Error).message;
    } finally {
      // The device holds its own reference to the program.
      if (loaded !== null) {
        if (loaded.prog >= 0) native.closeFd(loaded.prog);
        for (const fd of Object.values(loaded.maps)) native.closeFd(fd);
      }
    }
  }
  log.warn({ err: error, steering: STEERING_FALLBACK }, 'TUN steering program not attached: the kernel flow hash picks the queues, so udp.nat endpoint-independent mapping holds only per queue (a client socket reaching several destinations may get several upstream ports)');
  return { steering: STEERING_FALLBACK, error };
}
