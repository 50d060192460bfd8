/**
 * The control plane of `sluice run` (config `api:`). In two steps, so a
 * listen address that cannot be bound fails start-up before anything else
 * is opened:
 *   openApi      reads or creates the secret, binds api.listen (requests
 *                get 503 "starting" until the routes are in);
 *   startControl registers the route modules (Clash routes, /v1/, and the
 *                CONTROL_PLUGINS: /metrics, /ui/, ...) and starts serving.
 *
 * Adding routes from another part of sluice: write
 * `export function registerX(api: ApiRoutes, ctx: ControlContext): void`
 * calling api.route / api.ws / api.mount, and add it to CONTROL_PLUGINS.
 */
import type { ApiConfig } from '../config/types.js';
import type { Logger } from '../engine/logger.js';
import type { ControlContext } from './context.js';
import { formatListen, parseListen } from './listen.js';
import { loadOrCreateSecret, secretPath } from './secret.js';
import { ApiServer, type ApiRoutes } from './server.js';
import { registerClashRoutes } from './clash-routes.js';
import { registerV1Routes } from './v1-routes.js';
import { registerStreamRoutes } from './streams.js';
import { registerDashboard } from './ui.js';

export type { ApiRoutes } from './server.js';
export type { ControlContext } from './context.js';
export type { ApiRequest, RouteHandler, WsHandler, RouteOptions } from './router.js';
export { ApiError, sendJson, sendNoContent, readJson, readJsonObject } from './http-util.js';

export type ControlPlugin = (api: ApiRoutes, ctx: ControlContext) => void;

/** Route modules of other parts of sluice (metrics, dashboard, explain), registered after the built-in ones. */
export const CONTROL_PLUGINS: ControlPlugin[] = [registerDashboard];

export interface OpenedApi {
  readonly server: ApiServer;
  /** host:port or the socket path. */
  readonly listen: string;
  /** Where the secret is kept; null when api.secret is given inline. */
  readonly secretFile: string | null;
}

/**
 * Reads or makes the secret and binds api.listen; null when api.listen is
 * null. Throws an Error naming api.listen (or api.secretFile) on failure,
 * with nothing left listening.
 */
export async function openApi(cfg: ApiConfig, statePath: string, log: Logger, mark = 0): Promise<OpenedApi | null> {
  if (cfg.listen === null) return null;
  const listen = parseListen(cfg.listen);
  if (listen === null) throw new Error(`api.listen: ${cfg.listen} is not host:port, [v6]:port or an absolute unix socket path`);
  let secret = cfg.secret;
  let secretFile: string | null = null;
  if (secret === null) {
    secretFile = secretPath(cfg.secretFile, statePath);
    const s = loadOrCreateSecret(secretFile);
    secret = s.secret;
    if (s.created) log.info({ secretFile }, 'api secret generated');
    if (s.tightened) log.warn({ secretFile }, 'the api secret file was readable by others; made it mode 0600');
  }
  const server = new ApiServer({ listen, secret, mark, onError: (err, what) => log.error({ what, err: (err as Error)?.message ?? String(err) }, 'api handler failed') });
  await server.listen();
  return { server, listen: formatListen(listen), secretFile };
}

/** Registers every route module on the opened server and starts answering. */
export function startControl(ctx: ControlContext): void {
  const api = ctx.server;
  registerClashRoutes(api, ctx);
  registerStreamRoutes(api, ctx);
  registerV1Routes(api, ctx);
  for (const plugin of CONTROL_PLUGINS) plugin(api, ctx);
  api.open();
}
