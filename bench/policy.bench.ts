/**
 * Policy matcher micro-benchmark: compile time and match rate for 1,000,
 * 10,000 and 100,000 rules (half CIDR v4/v6, half domain suffix/exact, one
 * item per rule, so every rule is its own index entry). If matching were
 * linear in the rule count, 100x the rules would cost 100x the time.
 *   npm run build && node --expose-gc dist/bench/policy.bench.js
 */
import { pathToFileURL } from 'node:url';
import { compilePolicy } from '../src/engine/policy/index.js';
import type { MatchContext, RuleInput } from '../src/engine/policy/index.js';

export interface PolicyBenchRow {
  rules: number;
  compileMs: number;
  matchesPerSec: number;
  nsPerMatch: number;
  hitRate: number;
  heapMiB: number;
  /** Same rules wrapped as `or: [rule]` so none can be indexed: the in-order scan the index replaces (NaN when skipped). */
  linearNsPerMatch: number;
}

let seed = 0x9e3779b9;
function rnd(n: number): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
}

const WORDS = ['api', 'cdn', 'img', 'static', 'mail', 'auth', 'login', 'video', 'edge', 'node', 'app', 'web'];
const TLDS = ['com', 'net', 'org', 'io', 'dev', 'example'];

function name(i: number): string {
  return `${WORDS[i % WORDS.length]}${i}.${WORDS[(i >>> 4) % WORDS.length]}-${i % 977}.${TLDS[i % TLDS.length]}`;
}

interface Built {
  rules: RuleInput[];
  v4: Uint8Array[];
  v6: Uint8Array[];
  names: string[];
}

function buildRules(n: number): Built {
  const rules: RuleInput[] = [];
  const v4: Uint8Array[] = [];
  const v6: Uint8Array[] = [];
  const names: string[] = [];
  const outs = ['direct', 'proxy', 'block'];
  for (let i = 0; i < n; i++) {
    const kind = i % 4;
    const outbound = outs[i % 3]!;
    if (kind === 0) {
      const a = new Uint8Array([1 + rnd(223), rnd(256), rnd(256), rnd(256)]);
      const len = 16 + rnd(17);
      v4.push(a);
      rules.push({ ipCidr: [`${a.join('.')}/${len}`], outbound });
    } else if (kind === 1) {
      const a = new Uint8Array(16);
      a[0] = 0x20;
      a[1] = 0x01;
      for (let k = 2; k < 16; k++) a[k] = rnd(256);
      const len = 32 + rnd(97);
      v6.push(a);
      const g: string[] = [];
      for (let k = 0; k < 8; k++) g.push(((a[2 * k]! << 8) | a[2 * k + 1]!).toString(16));
      rules.push({ ipCidr: [`${g.join(':')}/${len}`], outbound });
    } else if (kind === 2) {
      const d = name(i);
      names.push(`www.${d}`);
      rules.push({ domainSuffix: [d], outbound });
    } else {
      const d = name(i);
      names.push(d);
      rules.push({ domain: [d], outbound });
    }
  }
  return { rules, v4, v6, names };
}

/** Half the flows hit a rule (address inside a prefix, or a listed name), half miss. */
function flows(b: Built, count: number): MatchContext[] {
  const out: MatchContext[] = [];
  for (let i = 0; i < count; i++) {
    const hit = (i & 1) === 0;
    const kind = i % 4;
    let family: 4 | 6 = 4;
    let dst: Uint8Array;
    let domain: string | null = null;
    if (kind === 0 || kind === 2) {
      dst = hit ? b.v4[rnd(b.v4.length)]!.slice() : new Uint8Array([1 + rnd(223), rnd(256), rnd(256), rnd(256)]);
    } else {
      family = 6;
      dst = hit ? b.v6[rnd(b.v6.length)]!.slice() : new Uint8Array(16).map(() => rnd(256));
    }
    if (kind >= 2) domain = hit ? b.names[rnd(b.names.length)]! : `miss${i}.unlisted-${i % 31}.com`;
    out.push({ network: 'tcp', inbound: 'tun', family, dst, dstPort: 443, src: family === 4 ? new Uint8Array([10, 0, 0, 2]) : new Uint8Array(16), srcPort: 40000 + (i & 0xfff), domain, protocol: domain === null ? null : 'tls' });
  }
  return out;
}

function runOne(n: number, matches: number): PolicyBenchRow {
  const built = buildRules(n);
  const input = { outbounds: [{ name: 'direct' }, { name: 'proxy' }, { name: 'block' }], rules: built.rules, final: 'direct' };
  globalThis.gc?.();
  const mem = (): number => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers; // typed-array stores live outside the JS heap
  };
  const heap0 = mem();
  const policy = compilePolicy(input);
  const compileMs = policy.stats.compileMs;
  globalThis.gc?.(); // retained size, not compile-time garbage (run with --expose-gc for this column)
  const heapMiB = globalThis.gc === undefined ? Number.NaN : (mem() - heap0) / (1 << 20);
  const fs = flows(built, 4096);
  let hits = 0;
  for (let i = 0; i < 200_000; i++) policy.matchIndex(fs[i & 4095]!); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < matches; i++) if (policy.match(fs[i & 4095]!).ruleIndex >= 0) hits++;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  let linearNsPerMatch = Number.NaN;
  if (n <= linearUpTo) {
    const linear = compilePolicy({ ...input, rules: built.rules.map(({ outbound, ...keys }) => ({ or: [keys], outbound })) });
    const lm = Math.max(200, Math.floor(2e7 / n));
    let check = 0;
    const l0 = process.hrtime.bigint();
    for (let i = 0; i < lm; i++) check += linear.matchIndex(fs[i & 4095]!);
    linearNsPerMatch = Number(process.hrtime.bigint() - l0) / lm;
    if (check === 0.5) console.log(check);
  }
  return { rules: n, compileMs, matchesPerSec: matches / s, nsPerMatch: (s * 1e9) / matches, hitRate: hits / matches, heapMiB, linearNsPerMatch };
}

/** The linear baseline needs a trie per rule; past 10,000 rules it costs more memory than it shows. */
let linearUpTo = 10_000;

export function runPolicyBench(sizes: readonly number[] = [1_000, 10_000, 100_000], matches = 2_000_000, linearLimit = 10_000): PolicyBenchRow[] {
  linearUpTo = linearLimit;
  return sizes.map((n) => runOne(n, matches));
}

export function printPolicyRows(rows: readonly PolicyBenchRow[]): void {
  console.log(`\npolicy matcher (node ${process.version}): half CIDR v4/v6, half domain suffix/exact; half the flows hit`);
  console.log('  mem = retained heap + typed arrays (needs --expose-gc); linear = the same rules with the index disabled');
  console.log(`  ${'rules'.padStart(8)} ${'compile ms'.padStart(11)} ${'mem MiB'.padStart(9)} ${'matches/s'.padStart(12)} ${'ns/match'.padStart(9)} ${'hit rate'.padStart(9)} ${'linear ns/match'.padStart(16)}`);
  for (const r of rows) {
    console.log(
      `  ${String(r.rules).padStart(8)} ${r.compileMs.toFixed(1).padStart(11)} ${(Number.isNaN(r.heapMiB) ? '-' : r.heapMiB.toFixed(1)).padStart(9)} ${(r.matchesPerSec / 1e6).toFixed(2).padStart(10)} M ${r.nsPerMatch.toFixed(0).padStart(9)} ${(r.hitRate * 100).toFixed(0).padStart(8)}% ${(Number.isNaN(r.linearNsPerMatch) ? '-' : r.linearNsPerMatch.toFixed(0)).padStart(16)}`,
    );
  }
  const first = rows[0];
  const last = rows[rows.length - 1];
  if (first !== undefined && last !== undefined && last !== first) {
    console.log(`  ${last.rules / first.rules}x the rules: ${(last.nsPerMatch / first.nsPerMatch).toFixed(2)}x the time per match, ${(last.compileMs / first.compileMs).toFixed(1)}x the compile time`);
  }
}

export function main(): void {
  printPolicyRows(runPolicyBench());
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main();
