/**
 * undici, loaded the first time sluice needs an HTTP client (DoH, the HTTP
 * L7 pools, an http-connect tunnel), not at start-up: it is the largest
 * module sluice has (~5 MB of heap, ~19 MB of RSS with its code), and a
 * `sluice run` that only steers flows never uses it (issue 10). undici is
 * CommonJS, so the first use loads it synchronously, in place.
 */
import { createRequire } from 'node:module';

export type Undici = typeof import('undici');

const require = createRequire(import.meta.url);
let loaded: Undici | null = null;
const onLoad: ((u: Undici) => void)[] = [];

/** The undici module, loading it on the first call. */
export function undici(): Undici {
  if (loaded === null) {
    loaded = require('undici') as Undici;
    for (const hook of onLoad.splice(0)) hook(loaded);
  }
  return loaded;
}

/**
 * Runs `hook` with undici once it is loaded: now if it is (by this module,
 * or by anyone else: an `import ... from 'undici'` shares the CommonJS
 * cache), else on the first undici() call.
 */
export function whenUndiciLoads(hook: (u: Undici) => void): void {
  if (loaded === null && require.cache[require.resolve('undici')] === undefined) {
    onLoad.push(hook);
    return;
  }
  hook(undici());
}
