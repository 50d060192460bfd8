/**
 * The one reload of `sluice run` (SIGHUP, and POST /v1/reload through the
 * API): re-read the whole configuration file, refuse it with the messages
 * `sluice check` prints if it is invalid (the running configuration stays),
 * else build the new outbounds, groups, DNS, HTTP mode and policy and swap
 * them in at once (Engine.replaceConfig). Running flows keep their route;
 * new flows follow the new file. The log names what changed, and every
 * setting the file changed that only a restart applies.
 *
 * Reloads run one at a time: a second request waits for the first.
 */
import { isConfigError } from '../config/errors.js';
import { loadConfig } from '../config/load.js';
import { planReload } from '../config/reload-plan.js';
import type { SluiceConfig } from '../config/types.js';
import type { Engine } from '../engine/engine.js';
import type { Logger } from '../engine/logger.js';

export type ReloadResult =
  | { ok: true; changes: string[]; needRestart: string[] }
  | { ok: false; errors: string[] };

export interface ReloaderOptions {
  /** The config file; null for the built-in default (nothing to re-read). */
  path: string | null;
  /** The file as loaded at start, before run-time adjustments. */
  startFile: SluiceConfig;
  engine: () => Engine | null;
  log: Logger;
  /** run.ts's per-run adjustments to a freshly loaded file (route.mark on direct outbounds...). */
  prepare: (c: SluiceConfig) => SluiceConfig;
  /** Called after a reload was applied (the classifier and the kernel path follow the new policy). */
  applied?: (config: SluiceConfig) => void | Promise<void>;
}

export function createReloader(o: ReloaderOptions): () => Promise<ReloadResult> {
  let queue: Promise<unknown> = Promise.resolve();
  return () => {
    const run = queue.then(() => reloadOnce(o));
    queue = run.catch(() => {});
    return run;
  };
}

async function reloadOnce(o: ReloaderOptions): Promise<ReloadResult> {
  const engine = o.engine();
  if (engine === null) return { ok: false, errors: ['sluice is still starting; nothing to reload yet'] };
  if (o.path === null) {
    o.log.info({ changes: [] }, 'reloaded');
    return { ok: true, changes: [], needRestart: [] };
  }
  let loaded: SluiceConfig;
  try {
    loaded = o.prepare(await loadConfig(o.path));
  } catch (err) {
    if (!isConfigError(err)) throw err;
    const errors = err.problems.length > 0 ? err.message.split('\n') : [err.message];
    engine.observer?.reloaded(false);
    o.log.error({ config: o.path, errors }, `reload refused: ${o.path} has ${errors.length} problem${errors.length === 1 ? '' : 's'}; the running configuration stays`);
    return { ok: false, errors };
  }
  const plan = planReload(engine.activeConfig, o.startFile, engine.withRemoteEntries(loaded));
  if (plan.needRestart.length > 0) {
    o.log.warn({ config: o.path, fields: plan.needRestart }, 'reload cannot change these settings; they keep their running values until sluice restarts');
  }
  try {
    engine.replaceConfig(plan.next);
  } catch (err) {
    const errors = [`${o.path}: ${(err as Error).message}`];
    engine.observer?.reloaded(false);
    o.log.error({ config: o.path, errors }, 'reload refused; the running configuration stays');
    return { ok: false, errors };
  }
  await o.applied?.(plan.next);
  o.log.info({ config: o.path, changes: plan.changes, rules: plan.next.rules.length, outbounds: plan.next.outbounds.length, ruleSets: Object.keys(plan.next.ruleSets).length }, 'reloaded');
  return { ok: true, changes: plan.changes, needRestart: plan.needRestart };
}
