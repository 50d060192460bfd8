/**
 * The `geoip` condition's lookup: the destination address's country from
 * the MaxMind database (src/config/geoip.ts). Runs once per flow that
 * reaches a geoip rule, never per packet; the last answer is kept, so
 * several geoip rules evaluated for one flow cost one database lookup.
 */
import { countryOf, openCountryReader } from '../config/geoip.js';
import { formatIp } from './policy/cidr-trie.js';
import type { GeoIpLookup } from './policy/types.js';

export function geoIpLookup(databasePath: string): GeoIpLookup {
  const reader = openCountryReader(databasePath);
  const last = new Uint8Array(16);
  let lastLen = 0;
  let lastCountry: string | null = null;
  return (_family, address) => {
    const n = address.length;
    if (n === lastLen) {
      let same = true;
      for (let i = 0; i < n; i++) {
        if (last[i] !== address[i]) {
          same = false;
          break;
        }
      }
      if (same) return lastCountry;
    }
    let cc: string | null;
    try {
      cc = countryOf(reader.get(formatIp(address)));
    } catch {
      cc = null; // an IPv6 address in an IPv4-only database
    }
    last.set(address.subarray(0, 16));
    lastLen = n;
    lastCountry = cc;
    return cc;
  };
}
