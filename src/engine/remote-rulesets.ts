/**
 * Rule sets with a `url`: downloaded through their `outbound` (so the
 * download takes the path the policy gives sluice's own traffic, a proxy
 * included) at start and every `interval` seconds, parsed in their format,
 * and swapped into the policy only when the whole file is valid. The last
 * good copy is kept on disk (`path`, or `<state dir>/rulesets/NAME`), so a
 * start while the server is down runs on yesterday's list rather than none.
 *
 * Bounded: one download per set at a time, MAX_RULESET_BYTES per body, a
 * deadline per download. A failed or invalid download changes nothing and
 * is logged at warn with the reason.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { formatProblem } from '../config/errors.js';
import { MAX_RULESET_BYTES } from '../config/ruleset.js';
import { parseRuleSetSource, type Converted } from '../config/ruleset-formats.js';
import type { RuleSetConfig, RuleSetType, SluiceConfig } from '../config/types.js';
import { httpGet } from '../outbound/http-get.js';
import type { Outbound } from '../outbound/types.js';
import type { Logger } from './logger.js';

/** Deadline of one download. */
export const DOWNLOAD_TIMEOUT_MS = 30_000;
/** How long start-up waits for the first downloads before serving on the disk copies. */
export const START_WAIT_MS = 10_000;

export interface RemoteRuleSetsOptions {
  log: Logger;
  /** Where copies go when a set names no `path`; null: only sets with a path keep one. */
  dir: string | null;
  /** The running configuration's outbound by name. */
  outbound: (name: string) => Outbound | undefined;
  /** false: nothing is downloaded (a worker thread: the main thread downloads and hands the entries over); default true. */
  downloads?: boolean;
  /** Swaps new entries of set `name` into the policy (throws if the compiler refuses them). */
  apply: (name: string, entries: string[], type: RuleSetType) => void;
}

interface Tracked {
  key: string;
  rs: RuleSetConfig;
  timer: NodeJS.Timeout | null;
  busy: Promise<boolean> | null;
}

/** What identifies a remote set's source: a reload with the same key keeps its entries and timer. */
function keyOf(rs: RuleSetConfig): string {
  return JSON.stringify([rs.url, rs.format, rs.behavior, rs.path, rs.outbound, rs.interval, rs.format === 'sluice' ? rs.type : null]);
}

export class RemoteRuleSets {
  private readonly sets = new Map<string, Tracked>();
  private closed = false;

  constructor(private readonly o: RemoteRuleSetsOptions) {}

  /** Where set `name`'s last good copy lives, or null. */
  copyPath(name: string, rs: RuleSetConfig): string | null {
    return rs.path ?? (this.o.dir === null ? null : join(this.o.dir, name));
  }

  /** The disk copy, parsed; null when absent or invalid (logged). */
  private readCopy(name: string, rs: RuleSetConfig): Converted | null {
    const path = this.copyPath(name, rs);
    if (path === null) return null;
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return null;
    }
    const c = parseRuleSetSource(text, { format: rs.format, type: rs.format === 'sluice' ? rs.type : null, behavior: rs.behavior }, path, `ruleSets.${name}`);
    if (c.problems.length > 0) {
      this.o.log.warn({ ruleSet: name, path, problems: c.problems.slice(0, 5).map(formatProblem) }, 'rule set disk copy is invalid; ignored');
      return null;
    }
    return c;
  }

  /**
   * Fills the url sets of `config` (before it is built): entries of sets
   * whose source is unchanged come from `running`, others from their disk
   * copy. Returns the config to build.
   */
  prepare(config: SluiceConfig, running: SluiceConfig | null): SluiceConfig {
    // Without downloads (a worker thread) the entries in `config` are the main thread's: they stand.
    if (this.o.downloads === false) return config;
    let ruleSets: Record<string, RuleSetConfig> | null = null;
    for (const [name, rs] of Object.entries(config.ruleSets)) {
      if (rs.url === null) continue;
      const cur = running?.ruleSets[name];
      let filled: RuleSetConfig | null = null;
      if (cur !== undefined && cur.url !== null && keyOf(cur) === keyOf(rs)) filled = { ...rs, entries: cur.entries, type: cur.type };
      else {
        const copy = this.readCopy(name, rs);
        if (copy !== null) {
          filled = { ...rs, entries: copy.entries, type: copy.type };
          this.o.log.info({ ruleSet: name, path: this.copyPath(name, rs), entries: copy.entries.length }, 'rule set read from its disk copy');
        }
      }
      if (filled !== null) (ruleSets ??= { ...config.ruleSets })[name] = filled;
    }
    return ruleSets === null ? config : { ...config, ruleSets };
  }

  /**
   * Starts (or, after a reload, adjusts) the downloads for the url sets of
   * `config`: new or changed sets download now and get a timer, removed
   * ones lose theirs. Resolves once the first downloads have finished,
   * START_WAIT_MS passed or `signal` is aborted (sluice stopping during
   * start-up: the downloads go on until close()).
   */
  async reconcile(config: SluiceConfig, signal?: AbortSignal): Promise<void> {
    if (this.closed || this.o.downloads === false) return;
    const first: Promise<boolean>[] = [];
    for (const [name, t] of this.sets) {
      const rs = config.ruleSets[name];
      if (rs === undefined || rs.url === null || keyOf(rs) !== t.key) {
        if (t.timer !== null) clearInterval(t.timer);
        this.sets.delete(name);
      }
    }
    for (const [name, rs] of Object.entries(config.ruleSets)) {
      if (rs.url === null || this.sets.has(name)) continue;
      const t: Tracked = { key: keyOf(rs), rs, timer: null, busy: null };
      t.timer = setInterval(() => void this.refresh(name), rs.interval * 1000);
      t.timer.unref();
      this.sets.set(name, t);
      first.push(this.refresh(name));
    }
    if (first.length === 0 || signal?.aborted === true) return;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    await Promise.race([
      Promise.allSettled(first),
      new Promise((r) => {
        timer = setTimeout(r, START_WAIT_MS);
        onAbort = () => r(undefined);
        signal?.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
    clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }

  /** Downloads set `name` now (joins a download in progress). Resolves true when new entries were applied. */
  refresh(name: string): Promise<boolean> {
    const t = this.sets.get(name);
    if (t === undefined || this.closed) return Promise.resolve(false);
    if (t.busy !== null) return t.busy;
    t.busy = this.download(name, t.rs).finally(() => {
      t.busy = null;
    });
    return t.busy;
  }

  private async download(name: string, rs: RuleSetConfig): Promise<boolean> {
    const url = rs.url!;
    const log = this.o.log;
    const outbound = this.o.outbound(rs.outbound);
    if (outbound === undefined) {
      log.warn({ ruleSet: name, url, outbound: rs.outbound }, 'rule set download: no such outbound; keeping the current entries');
      return false;
    }
    let text: string;
    try {
      const r = await httpGet(outbound, url, { timeoutMs: DOWNLOAD_TIMEOUT_MS, maxBytes: MAX_RULESET_BYTES });
      if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
      text = r.body.toString('utf8');
    } catch (err) {
      log.warn({ ruleSet: name, url, outbound: rs.outbound, err: (err as Error).message }, 'rule set download failed; keeping the current entries');
      return false;
    }
    if (this.closed || this.sets.get(name)?.rs !== rs) return false;
    const c = parseRuleSetSource(text, { format: rs.format, type: rs.format === 'sluice' ? rs.type : null, behavior: rs.behavior }, url, `ruleSets.${name}`);
    if (c.problems.length > 0) {
      log.warn({ ruleSet: name, url, problems: c.problems.slice(0, 5).map(formatProblem), count: c.problems.length }, 'rule set download is invalid; keeping the current entries');
      return false;
    }
    try {
      this.o.apply(name, c.entries, c.type);
    } catch (err) {
      log.warn({ ruleSet: name, url, err: (err as Error).message }, 'rule set download refused by the policy compiler; keeping the current entries');
      return false;
    }
    const path = this.copyPath(name, rs);
    if (path !== null) {
      try {
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(`${path}.tmp`, text);
        renameSync(`${path}.tmp`, path);
      } catch (err) {
        log.warn({ ruleSet: name, path, err: (err as Error).message }, 'cannot save the rule set disk copy');
      }
    }
    log.info({ ruleSet: name, url, entries: c.entries.length, path }, 'rule set downloaded');
    return true;
  }

  close(): void {
    this.closed = true;
    for (const t of this.sets.values()) if (t.timer !== null) clearInterval(t.timer);
    this.sets.clear();
  }
}
