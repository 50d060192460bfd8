/**
 * A deliberately naive policy evaluator for the equivalence test: walks the
 * raw rule objects in order with string and BigInt operations, sharing no code
 * with src/engine/policy. Slow and obviously correct is the point.
 */
import type { MatchContext, PolicyInput, RuleInput } from '../../src/engine/policy/types.js';

function bytesToBig(b: Uint8Array): bigint {
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return v;
}

function textToBig(text: string): { v: bigint; bits: number } {
  if (text.includes(':')) {
    let groups: string[];
    if (text.includes('::')) {
      const [l, r] = text.split('::') as [string, string];
      const left = l === '' ? [] : l.split(':');
      const right = r === '' ? [] : r.split(':');
      groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
    } else groups = text.split(':');
    let v = 0n;
    for (const g of groups) v = (v << 16n) | BigInt(parseInt(g, 16));
    return { v, bits: 128 };
  }
  let v = 0n;
  for (const o of text.split('.')) v = (v << 8n) | BigInt(Number(o));
  return { v, bits: 32 };
}

const cidrCache = new Map<string, { net: bigint; mask: bigint; bits: number }>();
function cidrContains(cidr: string, family: 4 | 6, addr: Uint8Array): boolean {
  let c = cidrCache.get(cidr);
  if (c === undefined) {
    const [a, l] = cidr.split('/') as [string, string | undefined];
    const { v, bits } = textToBig(a);
    const len = l === undefined ? bits : Number(l);
    const mask = len === 0 ? 0n : ((1n << BigInt(len)) - 1n) << BigInt(bits - len);
    c = { net: v & mask, mask, bits };
    cidrCache.set(cidr, c);
  }
  if (c.bits !== (family === 4 ? 32 : 128) || addr.length * 8 !== c.bits) return false;
  return (bytesToBig(addr) & c.mask) === c.net;
}

function norm(d: string | null): string | null {
  if (d === null) return null;
  const s = (d.endsWith('.') ? d.slice(0, -1) : d).toLowerCase();
  return s === '' ? null : s;
}

function suffixMatch(name: string, pattern: string): boolean {
  const p = pattern.toLowerCase().replace(/\.$/, '');
  if (p.startsWith('.')) return name.endsWith(p);
  return name === p || name.endsWith(`.${p}`);
}

function portIn(port: number, item: number | string): boolean {
  if (typeof item === 'number') return port === item;
  const [lo, hi] = item.split('-').map((s) => Number(s.trim())) as [number, number | undefined];
  return port >= lo && port <= (hi ?? lo);
}

function arr<T>(v: T | T[]): T[] {
  return Array.isArray(v) ? v : [v];
}

function domainLineMatches(line: string, name: string): boolean {
  if (line.startsWith('full:')) return name === line.slice(5).toLowerCase();
  if (line.startsWith('keyword:')) return name.includes(line.slice(8).toLowerCase());
  if (line.startsWith('regex:')) return new RegExp(line.slice(6)).test(name);
  return suffixMatch(name, line);
}

function evalRule(r: RuleInput, ctx: MatchContext, input: PolicyInput): boolean {
  const name = norm(ctx.domain);
  for (const [key, v] of Object.entries(r)) {
    let ok: boolean;
    switch (key) {
      case 'outbound':
        continue;
      case 'ipCidr':
        ok = arr(v as string[]).some((c) => cidrContains(c, ctx.family, ctx.dst));
        break;
      case 'sourceCidr':
        ok = arr(v as string[]).some((c) => cidrContains(c, ctx.family, ctx.src));
        break;
      case 'domain':
        ok = name !== null && arr(v as string[]).some((d) => d.toLowerCase().replace(/\.$/, '') === name);
        break;
      case 'domainSuffix':
        ok = name !== null && arr(v as string[]).some((d) => suffixMatch(name, d));
        break;
      case 'domainKeyword':
        ok = name !== null && arr(v as string[]).some((k) => name.includes(k.toLowerCase()));
        break;
      case 'domainRegex':
        ok = name !== null && arr(v as string[]).some((re) => new RegExp(re).test(name));
        break;
      case 'port':
        ok = arr(v as (number | string)[]).some((p) => portIn(ctx.dstPort, p));
        break;
      case 'sourcePort':
        ok = arr(v as (number | string)[]).some((p) => portIn(ctx.srcPort, p));
        break;
      case 'network':
        ok = arr(v as string[]).includes(ctx.network);
        break;
      case 'inbound':
        ok = arr(v as string[]).includes(ctx.inbound);
        break;
      case 'protocol':
        ok = ctx.protocol !== null && arr(v as string[]).includes(ctx.protocol);
        break;
      case 'ruleSet':
        ok = arr(v as string[]).some((s) => {
          const set = input.ruleSets![s]!;
          const lines = (set.entries ?? []).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
          if (set.type === 'cidr') return lines.some((c) => cidrContains(c, ctx.family, ctx.dst));
          return name !== null && lines.some((l) => domainLineMatches(l, name));
        });
        break;
      case 'and':
        ok = (v as RuleInput[]).every((s) => evalRule(s, ctx, input));
        break;
      case 'or':
        ok = (v as RuleInput[]).some((s) => evalRule(s, ctx, input));
        break;
      case 'not':
        ok = !evalRule(v as RuleInput, ctx, input);
        break;
      default:
        throw new Error(`reference: unknown key ${key}`);
    }
    if (!ok) return false;
  }
  return true;
}

/** Index of the first rule that matches, or -1. */
export function referenceMatch(input: PolicyInput, ctx: MatchContext): number {
  const rules = input.rules ?? [];
  for (let i = 0; i < rules.length; i++) if (evalRule(rules[i]!, ctx, input)) return i;
  return -1;
}
