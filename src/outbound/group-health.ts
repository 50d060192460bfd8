/**
 * A group's health checker: every `check.interval` seconds, an HTTP GET of
 * `check.url` through each member (src/outbound/http-get.ts), so the check
 * travels the member's real path (a nested group checks through its own
 * pick). A response head within `check.timeout` marks the member alive with
 * its delay; anything else marks it dead.
 *
 * Lazy (the default): a round runs only if the group carried a flow since
 * the last round; the first flow after an idle spell starts one at once
 * (without waiting for it). One round at a time; a round checks the members
 * in parallel, each bounded by the timeout.
 */
import { httpGet } from './http-get.js';
import type { Outbound } from './types.js';

export interface HealthCheckSettings {
  url: string;
  /** Seconds. */
  interval: number;
  /** Milliseconds. */
  timeout: number;
  lazy: boolean;
}

export interface CheckResult {
  ok: boolean;
  /** Time to the response head, ms (null when it failed). */
  delayMs: number | null;
  /** Why it failed (null when ok). */
  error: string | null;
}

export interface HealthOptions {
  members: readonly Outbound[];
  check: HealthCheckSettings;
  /** Each member's result as it comes in. */
  onResult: (index: number, result: CheckResult) => void;
  /** Milliseconds clock for the measured delay (injectable). */
  clock?: () => number;
}

/** One check of `url` through `outbound`. Never rejects. */
export async function checkThrough(outbound: Outbound, url: string, timeoutMs: number, clock?: () => number): Promise<CheckResult> {
  try {
    const r = await httpGet(outbound, url, { timeoutMs, maxBytes: 0, ...(clock !== undefined ? { clock } : {}) });
    // A 5xx from a proxy in the path means the path does not work (502 Bad Gateway, 504).
    if (r.status >= 500) return { ok: false, delayMs: null, error: `HTTP ${r.status}` };
    return { ok: true, delayMs: Math.max(1, Math.round(r.headMs)), error: null };
  } catch (err) {
    return { ok: false, delayMs: null, error: (err as Error).message };
  }
}

export class GroupHealth {
  private readonly opts: HealthOptions;
  private timer: NodeJS.Timeout | null = null;
  private used = false;
  /** No round since the group was last idle: the next flow starts one. */
  private stale = true;
  private round: Promise<void> | null = null;
  private closed = false;

  constructor(opts: HealthOptions) {
    this.opts = opts;
  }

  /** Starts the interval timer; an eager (non-lazy) group checks at once. */
  start(): void {
    if (this.closed || this.timer !== null) return;
    this.timer = setInterval(() => this.tick(), this.opts.check.interval * 1000);
    this.timer.unref();
    if (!this.opts.check.lazy) void this.checkAll();
  }

  /** The group is carrying a flow. */
  touch(): void {
    this.used = true;
    if (this.stale && this.opts.check.lazy && this.timer !== null) void this.checkAll();
  }

  private tick(): void {
    if (this.opts.check.lazy && !this.used) {
      this.stale = true;
      return;
    }
    this.used = false;
    void this.checkAll();
  }

  /** One round over every member (joins the round in progress, if any). */
  checkAll(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.round !== null) return this.round;
    this.stale = false;
    const { members, check, onResult, clock } = this.opts;
    this.round = Promise.all(
      members.map(async (m, i) => {
        const r = await checkThrough(m, check.url, check.timeout, clock);
        if (!this.closed) onResult(i, r);
      }),
    ).then(() => {
      this.round = null;
    });
    return this.round;
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
