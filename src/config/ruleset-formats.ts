/**
 * Rule-set files in the formats users already have, converted to sluice's
 * entry lines (ruleset.ts): `example.com` (the name and below),
 * `.example.com` (below only), `full:`, `keyword:`, `regex:`, and for a
 * mixed set `cidr:PREFIX`.
 *
 * - Clash rule providers (`format: clash`, with `behavior`), as text (one
 *   entry per line, `#` comments) or YAML (`payload:` list):
 *   - domain:    `example.com` exact, `+.example.com` the name and below,
 *                `.example.com` below only, `*.example.com` one label below;
 *   - ipcidr:    `192.0.2.0/24`, `2001:db8::/32`;
 *   - classical: `DOMAIN,x` `DOMAIN-SUFFIX,x` `DOMAIN-KEYWORD,x`
 *                `DOMAIN-REGEX,x` `IP-CIDR,x[,no-resolve]` `IP-CIDR6,x[,no-resolve]`.
 * - sing-box rule-set source (`format: sing-box`), JSON `{ version: 1..3,
 *   rules: [...] }` of headless default rules with `domain`,
 *   `domain_suffix`, `domain_keyword`, `domain_regex`, `ip_cidr` (sing-box
 *   ORs these within a rule, so each converts to entries of one set).
 *
 * Anything else (other Clash rule types, sing-box port, network, process,
 * logical or inverted rules...) is reported with the line or rule that
 * holds it and "not supported": a rule that silently matched less than it
 * says would be worse than a refused file.
 */
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { ConfigProblem } from './errors.js';
import { cidrProblem, describeReadError, domainProblem, parseRuleSetText, regexProblem, MAX_PROBLEMS_PER_FILE, MAX_RULESET_BYTES } from './ruleset.js';
import type { ClashBehavior, RuleSetFormat, RuleSetType } from './types.js';

/**
 * `yaml` (CommonJS) loaded on the first YAML ruleset, not with the engine:
 * a worker thread (tun.queues > 1) imports the engine but reads no config
 * or ruleset file, and does without it (~1 MB of heap each; issue 10).
 */
const requireCjs = createRequire(import.meta.url);
function parseYaml(text: string, options: { maxAliasCount: number }): unknown {
  return (requireCjs('yaml') as typeof import('yaml')).parse(text, options);
}

export type { ClashBehavior, RuleSetFormat };

export interface Converted {
  type: RuleSetType;
  entries: string[];
  problems: ConfigProblem[];
}

/** Collects problems, at most MAX_PROBLEMS_PER_FILE, then a count. */
class Problems {
  readonly list: ConfigProblem[] = [];
  private extra = 0;
  constructor(
    private readonly file: string,
    private readonly path: string,
  ) {}
  add(line: number, message: string): void {
    if (this.list.length < MAX_PROBLEMS_PER_FILE) this.list.push({ file: this.file, line, column: line > 0 ? 1 : 0, path: this.path, message });
    else this.extra++;
  }
  done(): ConfigProblem[] {
    if (this.extra > 0) this.list.push({ file: this.file, line: 0, column: 0, path: this.path, message: `and ${this.extra} more problems` });
    return this.list;
  }
}

/** The entries of a converted set, and its type: domain or cidr when only one kind occurs, mixed otherwise. */
function typed(domains: string[], cidrs: string[], problems: ConfigProblem[], declared: RuleSetType | null): Converted {
  if (declared === 'cidr') return { type: 'cidr', entries: cidrs, problems };
  if (declared === 'domain') return { type: 'domain', entries: domains, problems };
  if (cidrs.length === 0) return { type: 'domain', entries: domains, problems };
  if (domains.length === 0) return { type: 'cidr', entries: cidrs, problems };
  return { type: 'mixed', entries: [...domains, ...cidrs.map((c) => `cidr:${c}`)], problems };
}

/** A Clash rule-provider file (text or YAML `payload:`). */
export function convertClash(text: string, behavior: ClashBehavior, file: string, path: string): Converted {
  const problems = new Problems(file, path);
  const items: { value: string; line: number }[] = [];
  if (/^\s*payload\s*:/m.test(text)) {
    let doc: unknown;
    try {
      doc = parseYaml(text, { maxAliasCount: 100 });
    } catch (err) {
      problems.add(0, `not valid YAML: ${(err as Error).message.split('\n')[0]}`);
      return { type: 'domain', entries: [], problems: problems.done() };
    }
    const payload = (doc as { payload?: unknown } | null)?.payload;
    if (!Array.isArray(payload)) {
      problems.add(0, 'expected payload: to be a list of entries');
      return { type: 'domain', entries: [], problems: problems.done() };
    }
    // YAML lines are not tracked per item; the item number says where.
    payload.forEach((v, i) => {
      if (typeof v === 'string') items.push({ value: v.trim(), line: 0 });
      else problems.add(0, `payload[${i}]: expected a string, got ${JSON.stringify(v)}`);
    });
  } else {
    text.split(/\r?\n/).forEach((raw, i) => {
      const v = raw.trim();
      if (v !== '' && !v.startsWith('#') && !v.startsWith('//')) items.push({ value: v, line: i + 1 });
    });
  }
  const domains: string[] = [];
  const cidrs: string[] = [];
  const where = (it: { line: number }, i: number): string => (it.line > 0 ? '' : `payload[${i}]: `);
  items.forEach((it, i) => {
    const v = it.value.replace(/^'(.*)'$|^"(.*)"$/, '$1$2');
    if (behavior === 'ipcidr') {
      const p = cidrProblem(v);
      if (p === null) cidrs.push(v);
      else problems.add(it.line, `${where(it, i)}${p}`);
    } else if (behavior === 'domain') {
      const d = clashDomain(v);
      if (typeof d === 'string') domains.push(d);
      else problems.add(it.line, `${where(it, i)}${d.problem}`);
    } else {
      const r = clashClassical(v);
      if ('problem' in r) problems.add(it.line, `${where(it, i)}${r.problem}`);
      else if (r.cidr !== undefined) cidrs.push(r.cidr);
      else domains.push(r.domain);
    }
  });
  return typed(domains, cidrs, problems.done(), behavior === 'ipcidr' ? 'cidr' : behavior === 'domain' ? 'domain' : null);
}

function clashDomain(v: string): string | { problem: string } {
  const check = (name: string, out: string): string | { problem: string } => {
    const p = domainProblem(name);
    return p === null ? out : { problem: p };
  };
  if (v.startsWith('+.')) return check(v.slice(2), v.slice(2).toLowerCase());
  if (v.startsWith('*.')) {
    const rest = v.slice(2);
    const p = domainProblem(rest);
    return p === null ? `regex:^[^.]+\\.${rest.toLowerCase().replace(/[.]/g, '\\.')}$` : { problem: p };
  }
  if (v.startsWith('.')) return check(v.slice(1), `.${v.slice(1).toLowerCase()}`);
  if (v.includes('*')) return { problem: `wildcard ${JSON.stringify(v)} not supported (only a leading "*." or "+.")` };
  return check(v, `full:${v.toLowerCase()}`);
}

const CLASSICAL_UNSUPPORTED = /^(?:GEOIP|GEOSITE|IP-ASN|SRC-IP-CIDR|SRC-PORT|DST-PORT|IN-PORT|IN-TYPE|PROCESS-NAME|PROCESS-PATH|PROCESS-NAME-REGEX|PROCESS-PATH-REGEX|UID|NETWORK|DSCP|RULE-SET|AND|OR|NOT|SUB-RULE|MATCH|DOMAIN-WILDCARD|IP-SUFFIX|SRC-IP-SUFFIX|SRC-GEOIP|SRC-IP-ASN|IN-USER|IN-NAME)$/;

function clashClassical(v: string): { domain: string; cidr?: undefined } | { cidr: string } | { problem: string } {
  const parts = v.split(',').map((p) => p.trim());
  const kind = parts[0]!.toUpperCase();
  const value = parts[1] ?? '';
  const extra = parts.slice(2).filter((p) => p.toLowerCase() !== 'no-resolve');
  if (extra.length > 0) return { problem: `${JSON.stringify(v)}: option ${JSON.stringify(extra[0])} not supported (only no-resolve)` };
  const name = (p: string | null, out: string): { domain: string } | { problem: string } => (p === null ? { domain: out } : { problem: p });
  switch (kind) {
    case 'DOMAIN':
      return name(domainProblem(value), `full:${value.toLowerCase()}`);
    case 'DOMAIN-SUFFIX':
      return name(domainProblem(value.replace(/^\./, '')), value.replace(/^\./, '').toLowerCase());
    case 'DOMAIN-KEYWORD':
      return value === '' || /\s/.test(value) ? { problem: `${JSON.stringify(v)}: expected a keyword without spaces` } : { domain: `keyword:${value.toLowerCase()}` };
    case 'DOMAIN-REGEX':
      return name(value === '' ? 'empty regex' : regexProblem(value), `regex:${value}`);
    case 'IP-CIDR':
    case 'IP-CIDR6': {
      const p = cidrProblem(value);
      return p === null ? { cidr: value } : { problem: p };
    }
    default:
      if (CLASSICAL_UNSUPPORTED.test(kind)) return { problem: `rule type ${kind} is not supported in rule sets (supported: DOMAIN, DOMAIN-SUFFIX, DOMAIN-KEYWORD, DOMAIN-REGEX, IP-CIDR, IP-CIDR6)` };
      return { problem: `${JSON.stringify(v)}: expected TYPE,VALUE such as DOMAIN-SUFFIX,example.com` };
  }
}

const SING_BOX_KEYS = new Set(['domain', 'domain_suffix', 'domain_keyword', 'domain_regex', 'ip_cidr']);

/** A sing-box rule-set source file (JSON, version 1 to 3). */
export function convertSingBox(text: string, file: string, path: string): Converted {
  const problems = new Problems(file, path);
  const fail = (message: string): Converted => {
    problems.add(0, message);
    return { type: 'domain', entries: [], problems: problems.done() };
  };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return fail(`not valid JSON: ${(err as Error).message}`);
  }
  const d = doc as { version?: unknown; rules?: unknown };
  if (d === null || typeof d !== 'object' || Array.isArray(d)) return fail('expected a JSON object { "version": 1, "rules": [...] }');
  if (d.version !== 1 && d.version !== 2 && d.version !== 3) return fail(`version: expected 1, 2 or 3, got ${JSON.stringify(d.version)}`);
  if (!Array.isArray(d.rules)) return fail('rules: expected a list of rules');
  const domains: string[] = [];
  const cidrs: string[] = [];
  d.rules.forEach((rule: unknown, i: number) => {
    const at = `rules[${i}]`;
    if (rule === null || typeof rule !== 'object' || Array.isArray(rule)) return problems.add(0, `${at}: expected a rule object`);
    const r = rule as Record<string, unknown>;
    if (r.type === 'logical') return problems.add(0, `${at}: logical rules are not supported in rule sets`);
    for (const [key, value] of Object.entries(r)) {
      if (key === 'type' && value === 'default') continue;
      if (key === 'invert') {
        if (value === true) problems.add(0, `${at}.invert: inverted rules are not supported`);
        continue;
      }
      if (!SING_BOX_KEYS.has(key)) {
        problems.add(0, `${at}.${key}: not supported in sluice rule sets (supported: ${[...SING_BOX_KEYS].join(', ')}); a rule with it would match more than it says`);
        continue;
      }
      const list = typeof value === 'string' ? [value] : Array.isArray(value) ? value : null;
      if (list === null) {
        problems.add(0, `${at}.${key}: expected a string or a list of strings`);
        continue;
      }
      list.forEach((item: unknown, j: number) => {
        const ip = `${at}.${key}[${j}]`;
        if (typeof item !== 'string') return problems.add(0, `${ip}: expected a string`);
        const p = singBoxItem(key, item);
        if ('problem' in p) problems.add(0, `${ip}: ${p.problem}`);
        else if ('cidr' in p) cidrs.push(p.cidr);
        else domains.push(p.domain);
      });
    }
  });
  return typed(domains, cidrs, problems.done(), null);
}

function singBoxItem(key: string, v: string): { domain: string } | { cidr: string } | { problem: string } {
  const name = (p: string | null, out: string): { domain: string } | { problem: string } => (p === null ? { domain: out } : { problem: p });
  switch (key) {
    case 'domain':
      return name(domainProblem(v), `full:${v.toLowerCase()}`);
    case 'domain_suffix':
      // sing-box: ".example.com" matches below the name only; "example.com" the name and below.
      return v.startsWith('.') ? name(domainProblem(v.slice(1)), `.${v.slice(1).toLowerCase()}`) : name(domainProblem(v), v.toLowerCase());
    case 'domain_keyword':
      return v === '' || /\s/.test(v) ? { problem: 'expected a keyword without spaces' } : { domain: `keyword:${v.toLowerCase()}` };
    case 'domain_regex':
      return name(v === '' ? 'empty regex' : regexProblem(v), `regex:${v}`);
    default: {
      // ip_cidr: a bare address is a host prefix in sing-box.
      const c = v.includes('/') ? v : `${v}/${v.includes(':') ? 128 : 32}`;
      const p = cidrProblem(c);
      return p === null ? { cidr: c } : { problem: p };
    }
  }
}

/** What decides how a rule-set source is read. */
export interface RuleSetSpec {
  format: RuleSetFormat;
  /** sluice format: domain or cidr (required); other formats: derived. */
  type: RuleSetType | null;
  /** clash format. */
  behavior: ClashBehavior | null;
}

/** Parses rule-set text in any supported format. */
export function parseRuleSetSource(text: string, spec: RuleSetSpec, file: string, path: string): Converted {
  switch (spec.format) {
    case 'clash':
      return convertClash(text, spec.behavior ?? 'classical', file, path);
    case 'sing-box':
      return convertSingBox(text, file, path);
    default: {
      const type = spec.type ?? 'domain';
      const r = parseRuleSetText(text, type === 'mixed' ? 'domain' : type, file, path);
      return { type, entries: r.entries, problems: r.problems };
    }
  }
}

/** Reads a rule-set file in any format without throwing (readError says why it could not be read). */
export async function readRuleSetSource(absPath: string, spec: RuleSetSpec, file: string, path: string): Promise<Converted & { readError: string | null }> {
  try {
    const info = await stat(absPath);
    if (info.isDirectory()) return { type: spec.type ?? 'domain', entries: [], problems: [], readError: 'is a directory (EISDIR)' };
    if (info.size > MAX_RULESET_BYTES) return { type: spec.type ?? 'domain', entries: [], problems: [], readError: `larger than ${MAX_RULESET_BYTES} bytes (${info.size})` };
    return { ...parseRuleSetSource(await readFile(absPath, 'utf8'), spec, file, path), readError: null };
  } catch (err) {
    return { type: spec.type ?? 'domain', entries: [], problems: [], readError: describeReadError(err) };
  }
}
