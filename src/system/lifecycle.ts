/**
 * What `sluice run` does with the system state around the engine's life:
 * remove a killed run's leftovers first, check and install the auto-route,
 * and hand back the function that removes it again.
 */
import type { RouteConfig, SluiceConfig } from '../config/types.js';
import { applyGateway, planGateway, preflightGateway } from './gateway.js';
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

/** Gateway mode: checks collisions of what `gateway:` needs (before anything is opened). */
export async function checkGateway(config: SluiceConfig, where: string): Promise<void> {
  await preflightGateway(planGateway(config, config.tun.name), config, where);
}

/**
 * Gateway mode: turns forwarding on and installs the rules, routes and
 * nftables table of `gateway:` (after checkGateway and startAutoRoute);
 * returns the function that removes them and restores forwarding.
 */
export async function startGateway(config: SluiceConfig, tun: string, statePath: string, log: Logger): Promise<() => Promise<void>> {
  const plan = planGateway(config, tun);
  const installed = await applyGateway(plan, statePath);
  const s = installed.state;
  log.info({ state: statePath, mode: config.gateway.mode, lan: config.gateway.lan, priority: plan.priority, rules: s.rules.length, routes: s.routes.length, nftTables: s.nftTables.length, sysctls: s.sysctls?.length ?? 0 }, 'gateway installed');
  return async () => {
    const result = await installed.stop();
    log.info({ state: statePath, ...result }, 'gateway removed');
  };
}
