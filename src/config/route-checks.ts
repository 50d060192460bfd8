/**
 * Semantic checks of the `route:` section (workstation auto-route) the
 * schema cannot express: reserved routing tables, host bits in the
 * include/exclude prefixes, and a direct outbound whose own mark would make
 * sluice's sockets loop back into the TUN.
 */
import type { PathSegment } from './locate.js';
import { formatCidr, hasHostBits, networkOf, parseCidr } from './net.js';
import type { SluiceConfig } from './types.js';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Tables the kernel itself owns (include/linux/rtnetlink.h: RT_TABLE_DEFAULT, MAIN, LOCAL). */
export const RESERVED_TABLES: ReadonlyMap<number, string> = new Map([
  [253, 'default'],
  [254, 'main'],
  [255, 'local'],
]);

export function routeIssues(data: Obj, defaults: SluiceConfig, add: (path: PathSegment[], message: string) => void): void {
  const route = isObj(data.route) ? data.route : {};
  if (typeof route.table === 'number' && RESERVED_TABLES.has(route.table)) {
    add(['route', 'table'], `table ${route.table} is the kernel's "${RESERVED_TABLES.get(route.table)!}" table; pick a free one such as ${defaults.route.table}`);
  }
  for (const key of ['include', 'exclude'] as const) {
    const list = route[key];
    if (!Array.isArray(list)) continue;
    list.forEach((value: unknown, index) => {
      if (typeof value !== 'string') return;
      const c = parseCidr(value);
      if (c !== null && hasHostBits(c)) add(['route', key, index], `${value} has host bits set; did you mean ${formatCidr(networkOf(c))}?`);
    });
  }
  if (route.auto === true && Array.isArray(data.outbounds)) {
    const mark = typeof route.mark === 'number' ? route.mark : defaults.route.mark;
    data.outbounds.forEach((ob: unknown, i) => {
      if (isObj(ob) && ob.type === 'direct' && typeof ob.mark === 'number' && ob.mark !== mark) {
        add(
          ['outbounds', i, 'mark'],
          `mark 0x${ob.mark.toString(16)} differs from route.mark 0x${mark.toString(16)}: with route.auto its sockets would loop into the TUN; remove it or make the two equal`,
        );
      }
    });
  }
}
