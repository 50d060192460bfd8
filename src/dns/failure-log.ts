/**
 * Upstream failures said at warn, one line per upstream per interval at
 * most: a dead upstream asked a thousand times a second gives one line
 * every `intervalMs` with the number of failures it stands for, not a
 * thousand lines.
 */
export interface WarnLogger {
  warn(obj: object, msg: string): void;
}

export class UpstreamFailureLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly log: WarnLogger,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
    /** Upstreams remembered (their names come from the config, so this is a safety bound). */
    private readonly maxUpstreams = 256,
  ) {}

  report(upstream: string, reason: string): void {
    const t = this.now();
    const e = this.last.get(upstream);
    if (e !== undefined && t - e.at < this.intervalMs) {
      e.suppressed++;
      return;
    }
    const suppressed = e?.suppressed ?? 0;
    if (e === undefined && this.last.size >= this.maxUpstreams) this.last.delete(this.last.keys().next().value as string);
    this.last.set(upstream, { at: t, suppressed: 0 });
    this.log.warn({ upstream, reason, ...(suppressed > 0 ? { suppressed, intervalMs: this.intervalMs } : {}) }, 'DNS upstream failed');
  }
}
