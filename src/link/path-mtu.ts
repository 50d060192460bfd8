/**
 * The kernel's path MTU toward a destination, as sluice's own marked
 * sockets see it (native pathMtu: IP_MTU / IPV6_MTU of a connected UDP
 * socket), cached for a few seconds per destination. Asked only about
 * datagrams too big to pass everywhere (larger than the IPv6 minimum
 * MTU), so ordinary traffic never pays for it.
 */
import { loadNative, type SluiceNative } from './native.js';

/** How long one answer is reused (ms): the kernel's own PMTU entries age in minutes. */
const CACHE_MS = 5_000;
/** Destinations remembered at once; past it the cache starts over. */
const CACHE_MAX = 4096;

export class PathMtuCache {
  private native: SluiceNative | null = null;
  private readonly cache = new Map<string, { mtu: number; until: number }>();

  /** The path MTU toward `address` (an IP literal of `family`) for sockets with this mark / interface; 0 when unknown. */
  get(family: 4 | 6, address: string, mark: number, device: string | undefined, now: number): number {
    const key = `${mark}|${device ?? ''}|${address}`;
    const hit = this.cache.get(key);
    if (hit !== undefined && hit.until > now) return hit.mtu;
    let mtu = 0;
    try {
      this.native ??= loadNative();
      mtu = this.native.pathMtu(family, address, mark, device);
    } catch {
      mtu = 0; // not an address of that family: no answer, no error
    }
    if (this.cache.size >= CACHE_MAX) this.cache.clear();
    this.cache.set(key, { mtu, until: now + CACHE_MS });
    return mtu;
  }
}
