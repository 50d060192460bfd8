/**
 * The built-in dashboard, served at /ui/ by the control API. Its files are
 * plain HTML/CSS/JS in src/control/ui/ (no build step, nothing fetched
 * from anywhere else; the page's own Content-Security-Policy says so). The
 * package ships that directory (package.json "files"); this module finds
 * it both from the compiled dist/src/control/ and from src/control/.
 *
 * The assets are public (a browser loads them before it has a secret);
 * every API call the page makes carries the token.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ApiRoutes } from './server.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The asset directory: beside this file in src/, or src/control/ui from dist/src/control/. */
export function uiDirectory(): string {
  const candidates = [path.join(here, 'ui'), path.resolve(here, '../../../src/control/ui')];
  for (const dir of candidates) if (existsSync(path.join(dir, 'index.html'))) return dir;
  throw new Error(`dashboard assets not found (looked in ${candidates.join(', ')})`);
}

export const UI_PREFIX = '/ui';

/** A CONTROL_PLUGINS entry: the dashboard at /ui/ (`/ui` redirects there, keeping `?token=`). */
export function registerDashboard(api: ApiRoutes): void {
  api.mount(UI_PREFIX, uiDirectory(), { public: true });
}
