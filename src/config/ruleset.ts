/**
 * Rule-set files and entries.
 *
 * File format: UTF-8 text, one entry per line; blank lines and lines whose
 * first non-blank character is '#' are ignored; leading and trailing blanks
 * are trimmed. A `cidr` set holds CIDR blocks (IPv4 or IPv6, no host bits).
 * A `domain` set holds:
 *   example.com          the domain and every name under it (suffix match)
 *   full:www.example.com exactly this name
 *   keyword:tracker      names containing the text
 *   regex:^ad[0-9]+\.    names matching the JavaScript regular expression
 * Domain entries are lower-cased; regexes are kept as written.
 */
import { readFile, stat } from 'node:fs/promises';
import { ConfigError, type ConfigProblem } from './errors.js';
import { formatCidr, hasHostBits, networkOf, parseCidr, parseIp } from './net.js';
import { DOMAIN } from './schema.js';
import type { RuleSetType } from './types.js';

/** Rule-set files larger than this are refused (a bound, not a format limit). */
export const MAX_RULESET_BYTES = 64 * 1024 * 1024;
/** Problems reported per rule-set file before the rest are summarised. */
export const MAX_PROBLEMS_PER_FILE = 20;

const DOMAIN_RE = new RegExp(`^(?:${DOMAIN})$`);

export type EntryCheck = { ok: true; entry: string } | { ok: false; message: string };

/** Checks a domain name used for suffix or exact matching. Returns an error message or null. */
export function domainProblem(name: string): string | null {
  if (parseIp(name) !== null) return `${JSON.stringify(name)} is an IP address; match addresses with a CIDR (ipCidr or a cidr rule set)`;
  if (name.length > 253 || !DOMAIN_RE.test(name)) return `expected a domain name such as example.com, got ${JSON.stringify(name)}`;
  return null;
}

/** Compiles a regex as the policy engine will (`new RegExp(source)`); returns the error text or null. */
export function regexProblem(source: string): string | null {
  try {
    new RegExp(source);
    return null;
  } catch (err) {
    return `invalid regular expression ${JSON.stringify(source)}: ${(err as Error).message.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, '')}`;
  }
}

/** Checks a CIDR block; returns an error message or null. */
export function cidrProblem(text: string): string | null {
  const c = parseCidr(text);
  if (c === null) return `expected a CIDR such as 192.0.2.0/24, got ${JSON.stringify(text)}`;
  if (hasHostBits(c)) return `${text} has host bits set; did you mean ${formatCidr(networkOf(c))}?`;
  return null;
}

/** Validates and normalises one rule-set entry. */
export function checkRuleSetEntry(raw: string, type: RuleSetType): EntryCheck {
  const text = raw.trim();
  if (type === 'cidr') {
    const problem = cidrProblem(text);
    return problem === null ? { ok: true, entry: text } : { ok: false, message: problem };
  }
  const colon = text.indexOf(':');
  const prefix = colon < 0 ? '' : text.slice(0, colon);
  const value = colon < 0 ? text : text.slice(colon + 1);
  let problem: string | null;
  switch (prefix) {
    case '':
      problem = domainProblem(value);
      return problem === null ? { ok: true, entry: value.toLowerCase() } : { ok: false, message: problem };
    case 'full':
      problem = domainProblem(value);
      return problem === null ? { ok: true, entry: `full:${value.toLowerCase()}` } : { ok: false, message: problem };
    case 'keyword':
      if (value === '' || /\s/.test(value)) {
        return { ok: false, message: `expected keyword:TEXT without spaces, got ${JSON.stringify(text)}` };
      }
      return { ok: true, entry: `keyword:${value.toLowerCase()}` };
    case 'regex':
      if (value === '') return { ok: false, message: 'empty regex' };
      problem = regexProblem(value);
      return problem === null ? { ok: true, entry: text } : { ok: false, message: problem };
    default:
      if (parseIp(text) !== null || parseCidr(text) !== null) {
        return { ok: false, message: `${JSON.stringify(text)} is an address; put addresses in a cidr rule set` };
      }
      return {
        ok: false,
        message: `unknown prefix "${prefix}:"; expected a domain, full:DOMAIN, keyword:TEXT or regex:PATTERN`,
      };
  }
}

export interface ParsedRuleSet {
  entries: string[];
  problems: ConfigProblem[];
}

/**
 * Parses a rule-set file's text. Problems name `file` and the 1-based line;
 * `path` is the config field the set is defined at (e.g. `ruleSets.ads`).
 */
export function parseRuleSetText(text: string, type: RuleSetType, file: string, path: string): ParsedRuleSet {
  const entries: string[] = [];
  const problems: ConfigProblem[] = [];
  let extra = 0;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const trimmed = lines[i]!.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const checked = checkRuleSetEntry(trimmed, type);
    if (checked.ok) {
      entries.push(checked.entry);
    } else if (problems.length < MAX_PROBLEMS_PER_FILE) {
      const column = lines[i]!.indexOf(trimmed) + 1;
      problems.push({ file, line: i + 1, column, path, message: checked.message });
    } else {
      extra++;
    }
  }
  if (extra > 0) {
    problems.push({ file, line: 0, column: 0, path, message: `and ${extra} more invalid entries` });
  }
  return { entries, problems };
}

/** Why a file could not be read, in words; the errno name stays for searching. */
export function describeReadError(err: unknown): string {
  const code = (err as { code?: string }).code;
  switch (code) {
    case 'ENOENT':
      return 'no such file (ENOENT)';
    case 'EACCES':
      return 'permission denied (EACCES)';
    case 'EISDIR':
      return 'is a directory (EISDIR)';
    default:
      return code !== undefined ? `${(err as Error).message}` : String(err);
  }
}

/**
 * Reads and validates a rule-set file without throwing: `readError` says why
 * it could not be read, `problems` list invalid lines.
 */
export async function readRuleSetFile(
  absPath: string,
  type: RuleSetType,
  file: string,
  path: string,
): Promise<ParsedRuleSet & { readError: string | null }> {
  try {
    const info = await stat(absPath);
    if (info.isDirectory()) return { entries: [], problems: [], readError: 'is a directory (EISDIR)' };
    if (info.size > MAX_RULESET_BYTES) {
      return { entries: [], problems: [], readError: `larger than ${MAX_RULESET_BYTES} bytes (${info.size})` };
    }
    const text = await readFile(absPath, 'utf8');
    return { ...parseRuleSetText(text, type, file, path), readError: null };
  } catch (err) {
    return { entries: [], problems: [], readError: describeReadError(err) };
  }
}

/**
 * Loads a rule-set file (at startup and again on SIGHUP). Returns the
 * normalised entries or throws a ConfigError listing every invalid line.
 */
export async function loadRuleSetFile(path: string, type: RuleSetType): Promise<string[]> {
  const result = await readRuleSetFile(path, type, path, '');
  if (result.readError !== null) {
    throw new ConfigError([{ file: path, line: 0, column: 0, path: '', message: `cannot read rule set: ${result.readError}` }]);
  }
  if (result.problems.length > 0) throw new ConfigError(result.problems);
  return result.entries;
}
