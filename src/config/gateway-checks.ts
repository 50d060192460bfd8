/**
 * Semantic checks of the `gateway:` section the schema cannot express: an
 * enabled gateway without LAN interfaces, marks that collide with
 * route.mark or a direct outbound's mark, and the routing numbers the
 * gateway derives from `route:` (the local-delivery table route.table + 1,
 * the rule priority route.priority - 2 next to route.auto) falling outside
 * what the kernel accepts.
 */
import type { PathSegment } from './locate.js';
import { RESERVED_TABLES } from './route-checks.js';
import type { SluiceConfig } from './types.js';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
const hex = (n: number): string => `0x${n.toString(16)}`;

export function gatewayIssues(data: Obj, defaults: SluiceConfig, add: (path: PathSegment[], message: string) => void): void {
  const gw = isObj(data.gateway) ? data.gateway : {};
  if (gw.enabled !== true) return;
  const route = isObj(data.route) ? data.route : {};
  if (Array.isArray(gw.lan) && gw.lan.length === 0) add(['gateway', 'lan'], 'an enabled gateway needs at least one LAN interface, such as [eth1]');
  else if (gw.lan === undefined) add(['gateway', 'enabled'], 'an enabled gateway needs gateway.lan, the LAN interfaces (such as [eth1])');
  const mode = gw.mode ?? defaults.gateway.mode;
  const tproxyMark = typeof gw.tproxyMark === 'number' ? gw.tproxyMark : defaults.gateway.tproxyMark;
  const routeMark = typeof route.mark === 'number' ? route.mark : defaults.route.mark;
  const usesMark = mode === 'tproxy' || mode === 'tproxy-ebpf' || gw.preserveSource === true;
  if (usesMark && tproxyMark === routeMark) {
    add([gw.tproxyMark !== undefined ? 'gateway' : 'route', gw.tproxyMark !== undefined ? 'tproxyMark' : 'mark'], `gateway.tproxyMark ${hex(tproxyMark)} equals route.mark; the two must differ`);
  }
  if (usesMark && Array.isArray(data.outbounds)) {
    data.outbounds.forEach((ob: unknown, i) => {
      if (isObj(ob) && ob.type === 'direct' && ob.mark === tproxyMark) {
        add(['outbounds', i, 'mark'], `mark ${hex(tproxyMark)} equals gateway.tproxyMark: its sockets would be delivered locally instead of leaving; pick another`);
      }
    });
  }
  const table = typeof route.table === 'number' ? route.table : defaults.route.table;
  if (usesMark && (RESERVED_TABLES.has(table + 1) || table + 1 > 0xffffffff)) {
    add([route.table !== undefined ? 'route' : 'gateway', route.table !== undefined ? 'table' : 'mode'], `the gateway's local-delivery table is route.table + 1 (${table + 1}), which is ${table + 1 > 0xffffffff ? 'out of range' : `the kernel's "${RESERVED_TABLES.get(table + 1)!}" table`}; pick another route.table`);
  }
  const priority = typeof route.priority === 'number' ? route.priority : defaults.route.priority;
  if (route.auto === true && priority < 3) {
    add(['route', 'priority'], `with gateway.enabled and route.auto the gateway's rules sit at route.priority - 2, so route.priority must be at least 3`);
  }
}
