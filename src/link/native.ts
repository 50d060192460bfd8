/**
 * Loads the native addon (native/, built by node-gyp during `npm ci`).
 * Types live in native/index.d.ts.
 */
import { SluiceError } from '../errors.js';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { SluiceNative } from '../../native/index.js';

export type { SluiceNative, TunOpenResult, TunOpenOptions, ReaderHandle, SocketAddress, CreateSocketOptions } from '../../native/index.js';

export class NativeLoadError extends SluiceError {
  readonly code = 'SLUICE_NATIVE_MISSING';
}

/** Repository root: this file is dist/src/link/native.js (or src/link/native.ts). */
function packageRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const up = here.includes(`${path.sep}dist${path.sep}`) ? '../../..' : '../..';
  return path.resolve(here, up);
}

let cached: SluiceNative | null = null;

export function loadNative(): SluiceNative {
  if (cached !== null) return cached;
  const file = path.join(packageRoot(), 'native', 'build', 'Release', 'sluice_native.node');
  const require = createRequire(import.meta.url);
  try {
    cached = require(file) as SluiceNative;
  } catch (err) {
    throw new NativeLoadError(
      `cannot load the native addon at ${file}: ${(err as Error).message}. ` +
        'Build it with `npm run build:native` (needs python3, make and g++).',
      { cause: err },
    );
  }
  return cached;
}
