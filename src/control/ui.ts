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
import { serveStatic } from './static-files.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The asset directory: beside this file in src/, or src/control/ui from dist/src/control/. */
export function uiDirectory(): string {
  const candidates = [path.join(here, 'ui'), path.resolve(here, '../../../src/control/ui')];
  for (const dir of candidates) if (existsSync(path.join(dir, 'index.html'))) return dir;
  throw new Error(`dashboard assets not found (looked in ${candidates.join(', ')})`);
}

export const UI_PREFIX = '/ui';

/**
 * A CONTROL_PLUGINS entry: the dashboard at /ui/. One `/ui/*` route rather
 * than api.mount: the route table matches `/ui/` to an exact `/ui` route
 * (trailing slashes are ignored), so mount's `/ui` -> `/ui/` redirect
 * would answer `/ui/` with itself. Here `/ui` (no slash) redirects, keeping
 * the query (`?token=`), so the page's relative asset paths resolve below /ui/.
 */
export function registerDashboard(api: ApiRoutes): void {
  const dir = uiDirectory();
  api.route(
    'GET',
    `${UI_PREFIX}/*`,
    (req, res) => {
      if (req.path === UI_PREFIX) {
        const q = req.query.toString();
        res.writeHead(301, { Location: `${UI_PREFIX}/${q === '' ? '' : `?${q}`}` });
        res.end();
        return;
      }
      serveStatic(dir, req.params['*'] ?? '', res, req.method === 'HEAD');
    },
    { public: true },
  );
}
