/**
 * The /logs stream: sluice's log lines as Clash log events
 * (`{"type":"info","payload":"..."}`), to each subscriber at or above the
 * level it asked for. The logger's tap (src/engine/logger.ts LogTap) feeds
 * it only while someone listens; a line is parsed and formatted once,
 * whatever the number of subscribers. Only lines after subscribing are
 * sent (no backlog), as mihomo does.
 */
import type { LogTap } from '../engine/logger.js';

/** Clash level names; `warn` and `trace` are accepted too (reference 2.3, item 6). */
export type ClashLevel = 'debug' | 'info' | 'warning' | 'error' | 'silent';

const LEVEL_RANK: Record<ClashLevel, number> = { debug: 20, info: 30, warning: 40, error: 50, silent: Infinity };

/** The level a ?level= names; null for anything unknown (the route answers 400). */
export function parseClashLevel(text: string | null): ClashLevel | null {
  const t = (text ?? 'info').toLowerCase();
  if (t === 'trace' || t === 'debug') return 'debug';
  if (t === 'warn' || t === 'warning') return 'warning';
  if (t === 'info' || t === 'error' || t === 'silent') return t;
  return null;
}

/** pino's numeric level as a Clash type (warn becomes warning). */
export function clashType(level: number): ClashLevel {
  if (level >= 50) return 'error';
  if (level >= 40) return 'warning';
  if (level >= 30) return 'info';
  return 'debug';
}

/** The Clash name of a sluice log.level (for GET /configs). */
export function clashLevelOf(level: string): string {
  return level === 'warn' ? 'warning' : level === 'trace' || level === 'fatal' ? (level === 'trace' ? 'debug' : 'error') : level;
}

interface Subscriber {
  rank: number;
  send: (frame: string) => void;
}

/** Describes a flow line the mihomo way: `[TCP] src --> name:port match Rule(payload) using outbound`. */
export type FlowLineText = (line: Record<string, unknown>) => string;

export class LogHub {
  private readonly subs = new Set<Subscriber>();
  /** Lines that were not JSON (never expected from pino). */
  unparsed = 0;

  constructor(
    private readonly tap: LogTap,
    private readonly flowText: FlowLineText,
  ) {}

  get size(): number {
    return this.subs.size;
  }

  subscribe(level: ClashLevel, send: (frame: string) => void): () => void {
    const sub: Subscriber = { rank: LEVEL_RANK[level], send };
    this.subs.add(sub);
    this.tap.listener ??= (line) => this.onLine(line);
    return () => {
      this.subs.delete(sub);
      if (this.subs.size === 0) this.tap.listener = null;
    };
  }

  private onLine(text: string): void {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(text) as Record<string, unknown>;
    } catch {
      this.unparsed++;
      return;
    }
    const level = typeof o.level === 'number' ? o.level : 30;
    const frame = JSON.stringify({ type: clashType(level), payload: o.msg === 'flow' ? this.flowText(o) : plainText(o) });
    for (const s of this.subs) if (level >= s.rank) s.send(frame);
  }
}

/** A non-flow line: its message, then key=value for the other fields. */
function plainText(o: Record<string, unknown>): string {
  let text = String(o.msg ?? '');
  for (const [k, v] of Object.entries(o)) {
    if (k === 'time' || k === 'level' || k === 'msg') continue;
    text += ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`;
  }
  return text;
}
