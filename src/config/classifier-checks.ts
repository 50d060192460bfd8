/**
 * Semantic checks of the `classifier:` section (the eBPF TC classifier) the
 * schema cannot express: host bits in the bypass prefixes, a TUN mark that
 * collides with route.mark, a direct outbound's mark or gateway.tproxyMark,
 * no interface to attach to (with gateway.enabled the classifier attaches
 * to gateway.lan when classifier.interfaces is empty), and the combination
 * with route.auto (whose `not fwmark ... lookup TABLE` rule routes every
 * unmarked packet into the TUN, so the classifier's kernel path would not
 * exist).
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
  if (c.enabled !== true) {
    if (c.sni === true) add(['classifier', 'sni'], 'the SNI filter is part of the classifier: it needs classifier.enabled');
    return;
  }
  const gateway = isObj(data.gateway) ? data.gateway : {};
  const noInterfaces = c.interfaces === undefined || (Array.isArray(c.interfaces) && c.interfaces.length === 0);
  if (noInterfaces && gateway.enabled !== true) {
    add(['classifier', c.interfaces === undefined ? 'enabled' : 'interfaces'], 'the classifier needs at least one interface to attach to, such as [lan0] (with gateway.enabled it defaults to gateway.lan)');
  }
  const route = isObj(data.route) ? data.route : {};
  if (route.auto === true) {
    add(
      ['classifier', 'enabled'],
      'cannot be combined with route.auto: its "not fwmark" rule routes every unmarked packet into the TUN, so nothing would take the kernel path; turn one of them off',
    );
  }
  if (gateway.enabled === true && c.direction === 'egress') {
    add(['classifier', 'direction'], 'with gateway.enabled the classifier must see the LAN\'s packets before routing: use ingress');
  } else if (c.sni === true && c.direction === 'egress') {
    // bpf/sni.h sends the client's RST back out of the interface the segment arrived on: only right for packets arriving from the client.
    add(['classifier', 'sni'], 'the SNI filter answers clients on the interface their packets arrive on: it needs classifier.direction ingress');
  }
  const tunMark = typeof c.tunMark === 'number' ? c.tunMark : defaults.classifier.tunMark;
  const routeMark = typeof route.mark === 'number' ? route.mark : defaults.route.mark;
  const at: PathSegment[] = ['classifier', c.tunMark !== undefined ? 'tunMark' : 'enabled'];
  if (tunMark === routeMark) {
    add(at, `tunMark ${hex(tunMark)} equals route.mark, which keeps sluice's own sockets out of the TUN; pick another mark`);
  }
  const tproxyMark = typeof gateway.tproxyMark === 'number' ? gateway.tproxyMark : defaults.gateway.tproxyMark;
  if (gateway.enabled === true && tunMark === tproxyMark) {
    add(at, `tunMark ${hex(tunMark)} equals gateway.tproxyMark, which routes packets to local delivery; pick another mark`);
  }
  if (Array.isArray(data.outbounds)) {
    data.outbounds.forEach((ob: unknown, i) => {
      if (isObj(ob) && ob.type === 'direct' && ob.mark === tunMark) {
        add(['outbounds', i, 'mark'], `mark ${hex(tunMark)} is classifier.tunMark: this outbound's connections would be routed back into the TUN`);
      }
    });
  }
}
