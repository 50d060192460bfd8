/**
 * The control API's route table: a method and a path pattern
 * (`/proxies/:name`, `/ui/*`) per handler. Path parameters are
 * percent-decoded (twice, as mihomo does: dashboards encode names with
 * spaces, emoji and CJK, some of them twice).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';

export interface ApiRequest {
  readonly method: string;
  /** The path without the query. */
  readonly path: string;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  readonly raw: IncomingMessage;
}

export type RouteHandler = (req: ApiRequest, res: ServerResponse) => unknown;
export type WsHandler = (ws: WebSocket, req: ApiRequest) => unknown;

export interface RouteOptions {
  /** Served without the secret (static dashboard assets, the hello at `/`). */
  public?: boolean;
  /** WebSocket routes: checks the query before the upgrade; a thrown ApiError is the HTTP answer (400 for a bad ?level=). */
  validate?: (req: ApiRequest) => void;
}

interface Route<H> {
  method: string;
  segments: string[];
  /** Pattern ends in `/*`: the rest of the path is params['*']. */
  rest: boolean;
  handler: H;
  options: RouteOptions;
}

export interface RouteMatch<H> {
  handler: H;
  params: Record<string, string>;
  options: RouteOptions;
}

function decodeSegment(s: string): string | null {
  try {
    let d = decodeURIComponent(s);
    if (/%[0-9A-Fa-f]{2}/.test(d)) d = decodeURIComponent(d);
    return d;
  } catch {
    return null;
  }
}

type Pass = 'index' | 'exact' | 'rest';
const PASSES: readonly Pass[] = ['exact', 'rest'];
const PASSES_SLASH: readonly Pass[] = ['index', 'exact', 'rest'];

export class RouteTable<H> {
  private readonly routes: Route<H>[] = [];

  add(method: string, pattern: string, handler: H, options: RouteOptions = {}): void {
    if (!pattern.startsWith('/')) throw new Error(`route pattern must start with /: ${pattern}`);
    const rest = pattern.endsWith('/*');
    const body = rest ? pattern.slice(0, -2) : pattern;
    const segments = body === '/' || body === '' ? [] : body.slice(1).split('/');
    const m = method.toUpperCase();
    if (this.routes.some((r) => r.method === m && r.rest === rest && r.segments.join('/') === segments.join('/'))) {
      throw new Error(`route ${m} ${pattern} is already registered`);
    }
    this.routes.push({ method: m, segments, rest, handler, options });
  }

  /** The route for method and path; `methods` lists what the path allows when only the method is wrong. */
  match(method: string, path: string): RouteMatch<H> | { methods: string[] } | null {
    const parts = path === '/' ? [] : path.replace(/\/+$/, '').slice(1).split('/');
    const methods: string[] = [];
    // Trailing slashes are ignored for exact patterns (`/proxies/` is
    // `/proxies`), except that a path ending in `/` goes first to a `/*`
    // pattern with nothing below it: `/ui/` is the mount's index, not the
    // exact `/ui` route (which redirects to `/ui/`). Then exact patterns
    // win over `/*` mounts.
    const slash = path.length > 1 && path.endsWith('/');
    for (const pass of slash ? PASSES_SLASH : PASSES) {
      for (const r of this.routes) {
        if (r.rest !== (pass !== 'exact')) continue;
        if (pass === 'index' && r.segments.length !== parts.length) continue;
        const params = this.bind(r, parts, path);
        if (params === null) continue;
        if (r.method !== method && !(method === 'HEAD' && r.method === 'GET')) {
          methods.push(r.method);
          continue;
        }
        return { handler: r.handler, params, options: r.options };
      }
      if (methods.length > 0) return { methods };
    }
    return null;
  }

  private bind(r: Route<H>, parts: string[], path: string): Record<string, string> | null {
    if (r.rest ? parts.length < r.segments.length : parts.length !== r.segments.length) return null;
    const params: Record<string, string> = {};
    for (let i = 0; i < r.segments.length; i++) {
      const seg = r.segments[i]!;
      if (seg.startsWith(':')) {
        const v = decodeSegment(parts[i]!);
        if (v === null || v === '') return null;
        params[seg.slice(1)] = v;
      } else if (seg !== parts[i]) return null;
    }
    if (r.rest) params['*'] = parts.slice(r.segments.length).join('/') + (path.endsWith('/') && parts.length > r.segments.length ? '/' : '');
    return params;
  }
}
