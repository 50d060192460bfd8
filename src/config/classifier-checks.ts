/**
 * Semantic checks of the `classifier:` section (the eBPF TC classifier) the
 * schema cannot express: host bits in the bypass prefixes, a TUN mark that
 * collides with route.mark or a direct outbound's mark, no interface to
 * attach to, and the combination with route.auto (whose
 * `not fwmark ... lookup TABLE` rule routes every unmarked packet into the
 * TUN, so the classifier's kernel path would not exist) or with gateway
 * mode (which steers the LAN itself, in the same table and priority).
 */
import type { PathSegment } from './locate.js';
import { formatCidr, hasHostBits, networkOf, parseCidr } from './net.js';
import type { SluiceConfig } from './types.js';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
const hex = (n: number): string => `0x${n.toString(16)}`;

export function classifierIssues(data: Obj, defaults: SluiceConfig, add: (path: PathSegment[], message: string) => void): void {
  const c = isObj(data.classifier) ? data.classifier : null;
  if (c === null) return;
  if (Array.isArray(c.bypass)) {
    c.bypass.forEach((value: unknown, index) => {
      if (typeof value !== 'string') return;
      const cidr = parseCidr(value);
      if (cidr !== null && hasHostBits(cidr)) add(['classifier', 'bypass', index], `${value} has host bits set; did you mean ${formatCidr(networkOf(cidr))}?`);
    });
  }
  if (c.enabled !== true) return;
  if (c.interfaces === undefined || (Array.isArray(c.interfaces) && c.interfaces.length === 0)) {
    add(['classifier', c.interfaces === undefined ? 'enabled' : 'interfaces'], 'the classifier needs at least one interface to attach to, such as [lan0]');
  }
  const route = isObj(data.route) ? data.route : {};
  if (route.auto === true) {
    add(
      ['classifier', 'enabled'],
      'cannot be combined with route.auto: its "not fwmark" rule routes every unmarked packet into the TUN, so nothing would take the kernel path; turn one of them off',
    );
  }
  const gateway = isObj(data.gateway) ? data.gateway : {};
  if (gateway.enabled === true) {
    // Both would install rules and routes in route.table at route.priority and share one state file.
    add(
      ['classifier', 'enabled'],
      'cannot be combined with gateway.enabled yet: gateway mode already steers the whole LAN into sluice (the classifier, with its policy-routing fallback, is the other way to steer a gateway); turn one of them off',
    );
  }
  const tunMark = typeof c.tunMark === 'number' ? c.tunMark : defaults.classifier.tunMark;
  const routeMark = typeof route.mark === 'number' ? route.mark : defaults.route.mark;
  const at: PathSegment[] = ['classifier', c.tunMark !== undefined ? 'tunMark' : 'enabled'];
  if (tunMark === routeMark) {
    add(at, `tunMark ${hex(tunMark)} equals route.mark, which keeps sluice's own sockets out of the TUN; pick another mark`);
  }
  if (Array.isArray(data.outbounds)) {
    data.outbounds.forEach((ob: unknown, i) => {
      if (isObj(ob) && ob.type === 'direct' && ob.mark === tunMark) {
        add(['outbounds', i, 'mark'], `mark ${hex(tunMark)} is classifier.tunMark: this outbound's connections would be routed back into the TUN`);
      }
    });
  }
}
