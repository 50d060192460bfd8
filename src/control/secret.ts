/**
 * The API secret when `api.secret` is not set: read from `api.secretFile`
 * (default /var/lib/sluice/api-secret, or `api-secret` beside a --state
 * file), or at first start made
 * from 32 random bytes and written there, mode 0600 and owned by whoever
 * runs the start-up (root), so only root can read it. The CLI reads it from
 * the same place. Concurrent first starts agree: the file is created with
 * O_EXCL from a temporary name (link), so the first writer wins and the
 * others read its secret.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DEFAULT_STATE_PATH } from '../system/state.js';

export const SECRET_FILE_NAME = 'api-secret';
export const DEFAULT_SECRET_PATH = '/var/lib/sluice/api-secret';

/**
 * Where the generated secret lives: api.secretFile; else beside the state
 * file given with --state; with the default state file (/run/sluice, gone
 * at reboot) /var/lib/sluice/api-secret, so dashboards keep working across
 * reboots.
 */
export function secretPath(secretFile: string | null, statePath: string): string {
  if (secretFile !== null) return secretFile;
  return statePath === DEFAULT_STATE_PATH ? DEFAULT_SECRET_PATH : join(dirname(statePath), SECRET_FILE_NAME);
}

export interface LoadedSecret {
  secret: string;
  /** True when this start generated it. */
  created: boolean;
  /** Set when the file was readable by others and was tightened to 0600. */
  tightened: boolean;
}

function readSecret(path: string): string {
  const text = readFileSync(path, 'utf8').trim();
  if (text === '' || text.length > 256 || /\s/.test(text)) throw new Error(`api.secretFile: ${path} does not hold a secret (one line of 1-256 printable characters); remove it to have a new one generated`);
  return text;
}

/** Reads the secret file, creating it first when missing. Errors name api.secretFile. */
export function loadOrCreateSecret(path: string): LoadedSecret {
  try {
    const st = statSync(path);
    let tightened = false;
    if ((st.mode & 0o077) !== 0) {
      chmodSync(path, 0o600);
      tightened = true;
    }
    return { secret: readSecret(path), created: false, tightened };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new Error(`api.secretFile: cannot read ${path}: ${(err as Error).message}`);
  }
  const secret = randomBytes(32).toString('hex');
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(tmp, secret + '\n', { mode: 0o600, flag: 'wx' });
    try {
      linkSync(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      return { secret: readSecret(path), created: false, tightened: false }; // another start was first
    }
    return { secret, created: true, tightened: false };
  } catch (err) {
    throw new Error(`api.secretFile: cannot create ${path}: ${(err as Error).message}`);
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // not created
    }
  }
}
