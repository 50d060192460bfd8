/**
 * What `sluice run` does with the system state around the engine's life:
 * remove a killed run's leftovers first, check and install the auto-route,
 * and hand back the function that removes it again.
 */
import type { RouteConfig } from '../config/types.js';
import type { Logger } from '../engine/logger.js';
import { preflight } from './preflight.js';
import { applyRouting, planRouting } from './routing.js';
import { removeState } from './state.js';
import { teardownFile, teardownState } from './teardown.js';

/** Removes what the state file at `statePath` lists (a crashed run's leftovers), if anything. */
export async function cleanLeftovers(statePath: string, log: Logger): Promise<void> {
  const result = await teardownFile(statePath);
  if (result !== null) log.warn({ state: statePath, ...result }, 'removed routing state left by an earlier run');
}

/**
 * Checks for collisions with what is already on the machine, naming the
 * config field; run before anything is opened. `where` names the config.
 */
export async function checkAutoRoute(route: RouteConfig, where: string): Promise<void> {
  await preflight(route, where);
}

/**
 * Installs the routes, rules and nftables table (after checkAutoRoute) and
 * returns the function that removes them.
 */
export async function startAutoRoute(route: RouteConfig, tun: string, statePath: string, log: Logger): Promise<() => Promise<void>> {
  const plan = planRouting(route, tun);
  const state = await applyRouting(plan, statePath);
  log.info({ state: statePath, table: route.table, priority: route.priority, mark: route.mark, routes: state.routes.length, rules: state.rules.length, strictDns: route.strictDns }, 'auto-route installed');
  let done = false;
  return async () => {
    if (done) return;
    done = true;
    const result = await teardownState(state);
    removeState(statePath);
    log.info({ state: statePath, ...result }, 'auto-route removed');
  };
}
