/**
 * The built-in dashboard's static files, served at /ui/. The assets are
 * plain HTML/CSS/JS in src/control/ui/ (no build step); the package ships
 * that directory (package.json "files") and this module finds it both
 * from the compiled dist/src/control/ and from src/control/.
 *
 * The files are read once, on the first request, into memory (they are a
 * few tens of KB) and only names found in that directory are served, so a
 * request path never reaches the file system. The page needs no secret to
 * load; every API call it makes carries the token (Bearer header, or
 * ?token= on WebSocket upgrades).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IncomingMessage, ServerResponse } from 'node:http';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The asset directory: beside this file in src/, or src/control/ui from dist/src/control/. */
export function uiDirectory(): string {
  const candidates = [path.join(here, 'ui'), path.resolve(here, '../../../src/control/ui')];
  for (const dir of candidates) if (existsSync(path.join(dir, 'index.html'))) return dir;
  throw new Error(`dashboard assets not found (looked in ${candidates.join(', ')})`);
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/** Nothing but this origin: no CDN, no inline script, no framing. */
const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-cache',
};

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

export const UI_PREFIX = '/ui/';

export class UiAssets {
  private assets: Map<string, Asset> | null = null;

  constructor(private readonly dir: string = uiDirectory()) {}

  private load(): Map<string, Asset> {
    const out = new Map<string, Asset>();
    for (const name of readdirSync(this.dir)) {
      const type = TYPES[path.extname(name)];
      const file = path.join(this.dir, name);
      if (type === undefined || !statSync(file).isFile()) continue;
      const body = readFileSync(file);
      out.set(name, { body, type, etag: `"${createHash('sha1').update(body).digest('base64url').slice(0, 16)}"` });
    }
    if (!out.has('index.html')) throw new Error(`dashboard assets: no index.html in ${this.dir}`);
    return out;
  }

  /**
   * Serves `pathname` if it is /ui or under /ui/; returns false (nothing
   * written) for any other path. GET and HEAD only.
   */
  handle(req: IncomingMessage, res: ServerResponse, pathname: string): boolean {
    if (pathname !== '/ui' && !pathname.startsWith(UI_PREFIX)) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ message: 'Method not allowed' }));
      return true;
    }
    if (pathname === '/ui') {
      // Keep the query (?token=) across the redirect.
      const q = req.url?.indexOf('?') ?? -1;
      res.writeHead(301, { Location: UI_PREFIX + (q >= 0 ? req.url!.slice(q) : '') });
      res.end();
      return true;
    }
    this.assets ??= this.load();
    const name = pathname === UI_PREFIX ? 'index.html' : pathname.slice(UI_PREFIX.length);
    const asset = this.assets.get(name);
    if (asset === undefined) {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ message: 'Resource not found' }));
      return true;
    }
    const headers = { ...SECURITY_HEADERS, 'Content-Type': asset.type, ETag: asset.etag };
    if (req.headers['if-none-match'] === asset.etag) {
      res.writeHead(304, headers);
      res.end();
      return true;
    }
    res.writeHead(200, { ...headers, 'Content-Length': String(asset.body.length) });
    res.end(req.method === 'HEAD' ? undefined : asset.body);
    return true;
  }
}
