/**
 * The GeoIP country database (`geoip.database`): a MaxMind DB file the user
 * supplies (GeoLite2-Country, or any mmdb whose records carry
 * country.iso_code), read with the `maxmind` package. Opened once at load
 * (so `sluice check` reports a wrong file) and by the engine for matching.
 */
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Reader as MmdbReader } from 'maxmind';
import { describeReadError } from './ruleset.js';

/**
 * `maxmind` (CommonJS) is loaded when a database is opened, not at start:
 * a configuration without geoip.database does without it (issue 10).
 */
const requireCjs = createRequire(import.meta.url);
function Reader(): typeof MmdbReader {
  return (requireCjs('maxmind') as typeof import('maxmind')).Reader;
}

/** Largest database accepted (GeoLite2-City is about 70 MB; Country about 10 MB). */
export const MAX_GEOIP_BYTES = 256 * 1024 * 1024;

/** What sluice reads of a record (a GeoLite2-Country record has these and more). */
interface CountryRecord {
  country?: { iso_code?: string };
  registered_country?: { iso_code?: string };
}

// The package's own record types demand every GeoLite2 field; sluice reads two, through this view.
export interface CountryReader {
  get(ip: string): CountryRecord | null;
}

/** Why `path` is not a usable database, or null. */
export async function geoIpDatabaseProblem(path: string): Promise<string | null> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    return `cannot read the GeoIP database ${path}: ${describeReadError(err)}`;
  }
  if (buf.length > MAX_GEOIP_BYTES) return `${path} is larger than ${MAX_GEOIP_BYTES} bytes`;
  try {
    new (Reader())(buf);
    return null;
  } catch (err) {
    return `${path} is not a MaxMind DB (mmdb) file: ${(err as Error).message}`;
  }
}

/** Opens the database (synchronously: once at start or reload). Throws with the path named. */
export function openCountryReader(path: string): CountryReader {
  try {
    return new (Reader())(readFileSync(path)) as unknown as CountryReader;
  } catch (err) {
    throw new Error(`geoip.database ${path}: ${(err as Error).message}`);
  }
}

/** The country code of a record: country, else registered country; upper-case; null when absent. */
export function countryOf(r: CountryRecord | null): string | null {
  const cc = r?.country?.iso_code ?? r?.registered_country?.iso_code;
  return typeof cc === 'string' && cc.length === 2 ? cc.toUpperCase() : null;
}
