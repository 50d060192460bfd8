/**
 * Seeded random policies and flows for the equivalence test. Rules draw from
 * small pools of prefixes, labels and ports so that random flows actually hit
 * them (a test where every flow falls to `final` proves nothing).
 */
import type { MatchContext, PolicyInput, RuleInput } from '../../src/engine/policy/types.js';

export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  /** xorshift32 */
  u32(): number {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.s = x;
    return x;
  }
  int(n: number): number {
    return this.u32() % n;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
}

const V4_BASES = [[10], [172, 16], [192, 168], [203, 0, 113], [198, 51, 100], [1, 1, 1]];
const V4_LENS = [16, 20, 24, 24, 28, 30, 32, 32, 32, 32];
/** Broad prefixes (/0, /8) are rare: an early broad rule would swallow every later one. */
const V4_BROAD = [0, 8, 12];
const V6_LENS = [48, 56, 64, 64, 96, 112, 127, 128, 128];
const V6_BROAD = [0, 16, 32, 40];
const LABELS = ['a', 'b', 'ads', 'cdn', 'api', 'api2', 'img', 'x-1', 'example', 'test', 'corp', 'mail', 'xn--bcher-kva', 'ad3', 'tracker'];
const TLDS = ['com', 'org', 'net', 'io'];
const KEYWORDS = ['ads.cdn', 'api2.img', 'tracker.c', 'mail.test', 'xn--bcher-kva.io', 'e.corp', 'x-1.a', 'ad3.b'];
const REGEXES = ['^api[0-9]*\\.corp\\.', '^cdn\\.img\\.', '^a\\.b\\.', 'x-1\\.io$', '^(ads|ad3)\\.test\\.', 'tracker\\.net$'];
const PORTS: (number | string)[] = [22, 53, 80, 443, 853, 8080, '8000-8100', '1-1023', '5000-5010', '0-65535', 3478, 9, '7000-7001'];
/** Ports a single-key port rule may use: rarely seen by flows, so such a rule does not end the test early. */
const RARE_PORTS: (number | string)[] = [9, '7000-7001', 3478, '5000-5010'];
const NETS = ['tcp', 'udp'] as const;
const INBS = ['tun', 'tproxy'] as const;
const PROTOS = ['tls', 'http', 'quic', 'dns'] as const;

function v4Prefix(r: Rng): string {
  const base = r.pick(V4_BASES);
  const b = [0, 0, 0, 0].map((_, i) => (i < base.length ? base[i]! : r.int(256)));
  const len = r.chance(0.02) ? r.pick(V4_BROAD) : r.pick(V4_LENS);
  return `${b.join('.')}/${len}`;
}

function v6Prefix(r: Rng): string {
  const g = ['2001', 'db8', ...Array.from({ length: 6 }, () => (r.chance(0.5) ? '0' : r.int(0x10000).toString(16)))];
  if (r.chance(0.3)) g[2] = r.pick(['0', '1', 'ff']);
  return `${g.join(':')}/${r.chance(0.02) ? r.pick(V6_BROAD) : r.pick(V6_LENS)}`;
}

export function randomName(r: Rng): string {
  const n = 1 + r.int(3);
  const labels: string[] = [];
  for (let i = 0; i < n; i++) labels.push(r.pick(LABELS));
  labels.push(r.pick(TLDS));
  return labels.join('.');
}

function some<T>(r: Rng, max: number, f: () => T): T[] {
  return Array.from({ length: 1 + r.int(max) }, f);
}

/** Keys that alone select a small share of flows. */
const SELECTIVE_KEYS = ['ipCidr', 'ipCidr', 'sourceCidr', 'domain', 'domain', 'domainSuffix', 'domainSuffix', 'domainKeyword', 'domainRegex', 'ruleSet'] as const;
const LEAF_KEYS = ['ipCidr', 'ipCidr', 'sourceCidr', 'domain', 'domainSuffix', 'domainSuffix', 'domainKeyword', 'domainRegex', 'port', 'sourcePort', 'network', 'inbound', 'protocol', 'ruleSet'] as const;

function leafValue(r: Rng, key: (typeof LEAF_KEYS)[number]): unknown {
  switch (key) {
    case 'ipCidr':
    case 'sourceCidr':
      return some(r, 3, () => (r.chance(0.5) ? v4Prefix(r) : v6Prefix(r)));
    case 'domain':
      return some(r, 3, () => {
        const n = randomName(r);
        return r.chance(0.2) ? `${n.toUpperCase()}.` : n;
      });
    case 'domainSuffix':
      return some(r, 3, () => {
        const labels = randomName(r).split('.');
        const n = labels.slice(r.chance(0.05) ? -1 : -2 - r.int(2)).join('.');
        return r.chance(0.2) ? `.${n}` : n;
      });
    case 'domainKeyword':
      return some(r, 2, () => r.pick(KEYWORDS));
    case 'domainRegex':
      return [r.pick(REGEXES)];
    case 'port':
    case 'sourcePort':
      return some(r, 3, () => r.pick(PORTS));
    case 'network':
      return r.chance(0.5) ? r.pick(NETS) : [r.pick(NETS)];
    case 'inbound':
      return [r.pick(INBS)];
    case 'protocol':
      return some(r, 2, () => r.pick(PROTOS));
    case 'ruleSet':
      return some(r, 2, () => r.pick(['ads', 'lan', 'mixed']));
  }
}

function randomLeafRule(r: Rng, keys: number): RuleInput {
  const rule: Record<string, unknown> = {};
  if (keys === 1 && r.chance(0.05)) {
    // a port-only rule, on ports flows rarely use
    rule[r.chance(0.5) ? 'port' : 'sourcePort'] = [r.pick(RARE_PORTS)];
    return rule as RuleInput;
  }
  const first = r.pick(SELECTIVE_KEYS);
  rule[first] = leafValue(r, first);
  for (let k = 1; k < keys; k++) {
    const key = r.pick(LEAF_KEYS);
    rule[key] = leafValue(r, key);
  }
  return rule as RuleInput;
}

function randomSubRule(r: Rng, depth: number): RuleInput {
  const x = r.int(10);
  if (depth < 2 && x === 0) return { and: some(r, 2, () => randomSubRule(r, depth + 1)) };
  if (depth < 2 && x === 1) return { or: some(r, 3, () => randomSubRule(r, depth + 1)) };
  if (depth < 2 && x === 2) return { not: randomSubRule(r, depth + 1) };
  return randomLeafRule(r, 1 + r.int(2));
}

export function randomPolicy(seed: number, n: number): PolicyInput {
  const r = new Rng(seed);
  const rules: RuleInput[] = [];
  const outbounds = ['direct', 'proxy', 'corp', 'block'];
  for (let i = 0; i < n; i++) {
    const x = r.int(20);
    let rule: RuleInput;
    if (x < 11) rule = randomLeafRule(r, 1); // single key: definite index
    else if (x < 15) rule = randomLeafRule(r, 2 + r.int(2)); // ANDed keys: candidates
    else if (x === 15) rule = { and: [randomLeafRule(r, 1), ...some(r, 2, () => randomSubRule(r, 1))] };
    else if (x === 16) rule = { or: some(r, 3, () => randomLeafRule(r, 1)) };
    else if (x === 17) rule = { not: randomLeafRule(r, 1), ...randomLeafRule(r, 1) };
    else rule = { ...randomLeafRule(r, 1), ...(r.chance(0.5) ? { or: [randomSubRule(r, 1), randomSubRule(r, 1)] } : { not: randomSubRule(r, 1) }) };
    rule.outbound = r.pick(outbounds);
    rules.push(rule);
  }
  return {
    outbounds: outbounds.map((name) => ({ name })),
    ruleSets: {
      ads: { type: 'domain', entries: ['# ads', 'ads.com', 'full:ad3.example.net', 'keyword:tracker.org', 'regex:^img\\.a\\.', '.cdn.io', ''] },
      lan: { type: 'cidr', entries: ['10.1.0.0/16', '192.168.1.0/24', '2001:db8:ff::/48'] },
      mixed: { type: 'domain', entries: ['example.org', 'full:mail.test.com', 'keyword:x-1'] },
    },
    rules,
    final: 'direct',
  };
}

function addrFromPrefix(r: Rng, text: string): Uint8Array {
  const [a] = text.split('/') as [string];
  if (!a.includes(':')) {
    const b = new Uint8Array(a.split('.').map(Number));
    for (let i = 0; i < 4; i++) if (r.chance(0.3)) b[i] = r.int(256);
    return b;
  }
  const g = a.split(':').map((x) => parseInt(x, 16));
  const b = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    b[2 * i] = g[i]! >>> 8;
    b[2 * i + 1] = g[i]! & 0xff;
  }
  for (let i = 4; i < 16; i++) if (r.chance(0.25)) b[i] = r.int(256);
  return b;
}

/** Flows biased towards the rules' prefixes, names and ports. */
export function randomFlow(r: Rng): MatchContext {
  const family: 4 | 6 = r.chance(0.5) ? 4 : 6;
  const prefix = (): string => {
    for (;;) {
      const p = r.chance(0.5) ? v4Prefix(r) : v6Prefix(r);
      if (p.includes(':') === (family === 6)) return p;
    }
  };
  const addr = (): Uint8Array => (r.chance(0.15) ? new Uint8Array(family === 4 ? 4 : 16).map(() => r.int(256)) : addrFromPrefix(r, prefix()));
  let domain: string | null = null;
  if (r.chance(0.8)) {
    domain = randomName(r);
    if (r.chance(0.15)) domain = domain.toUpperCase();
    if (r.chance(0.1)) domain += '.';
    if (r.chance(0.05)) domain = r.pick(['', '.', 'badexample.com', 'ads.com.evil.net', 'a..example.com']);
  }
  const port = (): number => {
    const p = r.pick(PORTS);
    if (typeof p === 'number') return p;
    const [lo, hi] = p.split('-').map(Number) as [number, number];
    return lo + r.int(hi - lo + 1);
  };
  return {
    network: r.pick(NETS),
    inbound: r.pick(INBS),
    family,
    dst: addr(),
    dstPort: r.chance(0.1) ? r.int(65536) : port(),
    src: addr(),
    srcPort: r.chance(0.5) ? r.int(65536) : port(),
    domain,
    protocol: r.chance(0.2) ? null : r.pick(PROTOS),
  };
}
