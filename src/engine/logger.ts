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
  listener: ((line: string) => void) | null = null;

  write(line: string): boolean {
    this.listener?.(line);
    return true;
  }
}

/**
 * The JSON lines of one event-loop turn, written together: a busy gateway
 * logs a flow line per finished connection, and a write(2) each cost a
 * measurable share of a short connection (issue 10). Lines wait at most
 * until the end of the current poll phase (setImmediate), and the 'exit'
 * event writes what is left synchronously, so a signal or a fatal error
 * loses nothing (only SIGKILL can cut the last turn's lines).
 */
class TurnBatch {
  private pending = '';
  private scheduled = false;
  private readonly flushBound = (): void => this.flush();

  constructor(private readonly out: { write(s: string): unknown; flushSync?(): void }) {
    process.once('exit', this.flushBound);
  }

  write(line: string): boolean {
    this.pending += line;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushBound);
    }
    return true;
  }

  flush(): void {
    this.scheduled = false;
    if (this.pending === '') return;
    const text = this.pending;
    this.pending = '';
    this.out.write(text);
  }
}

export function createLogger(cfg: LogConfig, out: NodeJS.WriteStream = process.stdout, tap?: LogTap): Logger {
  const pretty = cfg.format === 'pretty' || (cfg.format === 'auto' && out.isTTY === true);
  const options = { level: cfg.level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime };
  // Synchronous writes, one per event-loop turn (TurnBatch): nothing is
  // lost when the process ends on a signal.
  const main = pretty ? new PrettyLines(out) : new TurnBatch(pino.destination({ dest: (out as unknown as { fd?: number }).fd ?? 1, sync: true }));
  if (tap === undefined || cfg.level === 'silent') return pino(options, main);
  // Every stream at the logger's own level: the logger decides what is written.
  return pino(options, pino.multistream([{ stream: main, level: cfg.level }, { stream: tap, level: cfg.level }]));
}
