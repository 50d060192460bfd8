/**
 * The engine's logger: pino, JSON lines by default (one object per line,
 * for machines and `jq`), or a compact human-readable form on a terminal.
 * Flow lines are built only when the level is enabled (pino checks first).
 */
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { LogConfig } from '../config/types.js';

export type { Logger } from 'pino';

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };

/** Turns pino's JSON lines into `HH:MM:SS.mmm LEVEL msg key=value ...`. */
class PrettyLines extends Writable {
  constructor(private readonly out: NodeJS.WritableStream) {
    super({ decodeStrings: false });
  }

  override _write(chunk: string | Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    for (const line of String(chunk).split('\n')) {
      if (line === '') continue;
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch {
        this.out.write(line + '\n');
        continue;
      }
      const time = typeof o.time === 'string' ? o.time.slice(11, 23) : '';
      const level = LEVEL_NAMES[o.level as number] ?? String(o.level);
      let text = `${time} ${level} ${String(o.msg ?? '')}`;
      for (const [k, v] of Object.entries(o)) {
        if (k === 'time' || k === 'level' || k === 'msg') continue;
        text += ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`;
      }
      this.out.write(text + '\n');
    }
    cb();
  }
}

/**
 * A second destination for the log lines (the control API's /logs stream):
 * each JSON line goes to `listener` when one is set; without one, a line
 * costs one branch.
 */
export class LogTap {
  private fn: ((line: string) => void) | null = null;
  /** Told when the tap gains its listener or loses it (the worker pool: whether workers send their lines, src/workers/log-tap.ts). */
  onListening: ((listening: boolean) => void) | null = null;

  get listener(): ((line: string) => void) | null {
    return this.fn;
  }

  set listener(fn: ((line: string) => void) | null) {
    const was = this.fn !== null;
    this.fn = fn;
    if (was !== (fn !== null)) this.onListening?.(fn !== null);
  }

  write(line: string): boolean {
    this.fn?.(line);
    return true;
  }
}

/** Longest a log line waits to be written (ms): a few dozen flow lines share one write(2) on a busy gateway. */
export const LOG_BATCH_MS = 20;
/** A batch this large is written at once, whatever its age. */
export const LOG_BATCH_BYTES = 64 * 1024;

/**
 * The JSON lines of a short window, written together: a busy gateway logs
 * a flow line per finished connection, and a write(2) per event-loop turn
 * still cost 6 % of sluice's CPU in the connection-per-request bench (one
 * or two lines a turn into a pipe whose reader wakes each time; issue 10).
 * Lines wait at most LOG_BATCH_MS (or until LOG_BATCH_BYTES are pending),
 * and the 'exit' event writes what is left synchronously, so a signal or a
 * fatal error loses nothing (only SIGKILL can cut the last window's lines);
 * a worker thread, terminated by the main thread without an 'exit' event,
 * calls flushLogs() before it says it has stopped.
 */
/** Every LineBatch of this thread, for flushLogs(). */
const batches = new Set<LineBatch>();

/**
 * Writes every line still waiting, now: for a thread that is about to be
 * terminated from outside (a worker after its 'stopped' message), where
 * no 'exit' event runs.
 */
export function flushLogs(): void {
  for (const b of batches) b.flush();
}

class LineBatch {
  private pending = '';
  private timer: NodeJS.Timeout | null = null;
  private readonly flushBound = (): void => this.flush();

  constructor(private readonly out: { write(s: string): unknown; flushSync?(): void }) {
    process.once('exit', this.flushBound);
    batches.add(this);
  }

  write(line: string): boolean {
    this.pending += line;
    if (this.pending.length >= LOG_BATCH_BYTES) this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(this.flushBound, LOG_BATCH_MS);
      // The exit handler writes what a timer never got to: this one keeps nothing alive.
      this.timer.unref();
    }
    return true;
  }

  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.pending === '') return;
    const text = this.pending;
    this.pending = '';
    this.out.write(text);
  }
}

export function createLogger(cfg: LogConfig, out: NodeJS.WriteStream = process.stdout, tap?: LogTap): Logger {
  const pretty = cfg.format === 'pretty' || (cfg.format === 'auto' && out.isTTY === true);
  const options = { level: cfg.level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime };
  // Synchronous writes, one per LOG_BATCH_MS window (LineBatch): nothing is
  // lost when the process ends on a signal.
  const main = pretty ? new PrettyLines(out) : new LineBatch(pino.destination({ dest: (out as unknown as { fd?: number }).fd ?? 1, sync: true }));
  if (tap === undefined || cfg.level === 'silent') return pino(options, main);
  // Every stream at the logger's own level: the logger decides what is written.
  return pino(options, pino.multistream([{ stream: main, level: cfg.level }, { stream: tap, level: cfg.level }]));
}
