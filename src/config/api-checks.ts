/**
 * Semantic checks of the `api:` section the schema cannot express: a
 * listen address reachable from other machines needs a secret the operator
 * chose (api.secret, or an api.secretFile they manage), never only the
 * generated one nobody has been told about.
 */
import type { PathSegment } from './locate.js';
import { isLocalOnly, parseListen } from '../control/listen.js';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

export function apiIssues(data: Obj, add: (path: PathSegment[], message: string) => void): void {
  if (isObj(data.metrics) && typeof data.metrics.listen === 'string' && parseListen(data.metrics.listen) === null) {
    add(['metrics', 'listen'], `${data.metrics.listen} is not host:port, [v6]:port or an absolute unix socket path`);
  }
  if (!isObj(data.api)) return;
  const api = data.api;
  if (typeof api.secret === 'string' && typeof api.secretFile === 'string') {
    add(['api', 'secretFile'], 'api.secretFile is only read when api.secret is not set; give one of the two');
  }
  if (typeof api.listen !== 'string') return;
  const a = parseListen(api.listen);
  if (a === null) {
    add(['api', 'listen'], `${api.listen} is not host:port, [v6]:port or an absolute unix socket path`);
    return;
  }
  if (!isLocalOnly(a) && typeof api.secret !== 'string' && typeof api.secretFile !== 'string') {
    add(['api', 'listen'], `${api.listen} is reachable from other machines: set api.secret (or api.secretFile) so the API is not open to them, or listen on 127.0.0.1`);
  }
}
