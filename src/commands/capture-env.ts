/**
 * `SLUICE_CAPTURE_FILE=PATH sluice run ...`: record what crosses the TUN
 * from the first packet into a pcap file. Meant for the integration tests
 * (test/harness/capture.ts sets it, keeps the file when a test fails and
 * removes it when it passes) and for reproducing a problem from start-up;
 * a capture of a running sluice is `sluice capture`.
 *
 *   SLUICE_CAPTURE_FILE     the pcap to write (created or truncated, mode 0600)
 *   SLUICE_CAPTURE_FILTER   HOST|PORT, as `sluice capture --filter`
 *   SLUICE_CAPTURE_COUNT    stop after this many packets (default 100000)
 *   SLUICE_CAPTURE_SNAPLEN  bytes kept per packet (default 262144: all)
 *
 * Records are written with a synchronous write once per event-loop turn, so
 * what was captured is in the file even if the process is killed.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { Logger } from '../engine/logger.js';
import { parseCaptureFilter, streamCapture, type CaptureLink } from '../link/capture.js';
import { DEFAULT_SNAPLEN } from '../link/pcap-writer.js';

const DEFAULT_COUNT = 100_000;

function positive(text: string | undefined, dflt: number): number {
  if (text === undefined || text === '') return dflt;
  const n = Number(text);
  return Number.isInteger(n) && n > 0 ? n : dflt;
}

/** Starts the env-configured capture on `link`; returns its stopper, or null when none is configured or the file cannot be opened. */
export function captureFromEnv(link: CaptureLink, env: NodeJS.ProcessEnv, log: Logger): (() => void) | null {
  const path = env.SLUICE_CAPTURE_FILE;
  if (path === undefined || path === '') return null;
  const filter = parseCaptureFilter(env.SLUICE_CAPTURE_FILTER);
  if (typeof filter === 'string') {
    log.warn({ env: 'SLUICE_CAPTURE_FILTER', err: filter }, 'no capture file written');
    return null;
  }
  let fd: number;
  try {
    fd = openSync(path, 'w', 0o600);
  } catch (err) {
    log.warn({ env: 'SLUICE_CAPTURE_FILE', path, err: (err as Error).message }, 'cannot open the capture file; no capture');
    return null;
  }
  const cap = link.capture({ filter, count: positive(env.SLUICE_CAPTURE_COUNT, DEFAULT_COUNT), snaplen: positive(env.SLUICE_CAPTURE_SNAPLEN, DEFAULT_SNAPLEN), queueBytes: 8 << 20 });
  let failed = false;
  const sink = {
    write(chunk: Uint8Array): boolean {
      if (failed) return true;
      try {
        writeSync(fd, chunk);
      } catch (err) {
        failed = true;
        log.warn({ path, err: (err as Error).message }, 'writing the capture file failed; capture stopped');
        cap.stop();
      }
      return true;
    },
    once(): void {},
  };
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    const s = cap.stats();
    closeSync(fd);
    log.info({ path, packets: s.captured - s.dropped, dropped: s.dropped }, 'capture file written');
  };
  void streamCapture(cap, sink).then(close);
  log.info({ path, filter: env.SLUICE_CAPTURE_FILTER ?? null }, 'capturing into a file');
  return () => {
    cap.stop();
    // The last records: take them now rather than on the next turn.
    for (let chunk = cap.take(); chunk !== null; chunk = cap.take()) sink.write(chunk);
  };
}
