/**
 * Loading a configuration: read the YAML (keeping source positions), check
 * it against the schema, run the semantic checks, read and check the
 * rule-set files, and either return the config with defaults filled in or
 * throw one ConfigError listing every mistake found, each as
 * `file:line:column: path: message`.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { ConfigError, type ConfigProblem } from './errors.js';
import { formatPath, isPrefix, locate, type PathSegment } from './locate.js';
import { checkRuleSetEntry, describeReadError } from './ruleset.js';
import { readRuleSetSource } from './ruleset-formats.js';
import { geoIpDatabaseProblem } from './geoip.js';
import { schemaIssues, type Issue } from './schema-errors.js';
import { semanticIssues } from './semantic.js';
import {
  defaultConfig,
  type DnsCondition,
  defaultGroupCheck,
  type DnsUpstream,
  type HttpConfig,
  type HttpRuleConfig,
  type OutboundConfig,
  type RuleCondition,
  type RuleConfig,
  type ClashBehavior,
  type RuleSetConfig,
  type RuleSetFormat,
  type RuleSetType,
  type SluiceConfig,
} from './types.js';

/** Config files larger than this are refused before parsing (a bound against mistakes such as pointing at a log). */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** YAML alias expansions allowed (a bound against "billion laughs" documents). */
const MAX_ALIAS_COUNT = 100;

/**
 * Reads, validates and completes the configuration at `path`. Rule-set
 * paths (and a relative fakeIp.persistPath) are taken relative to the
 * config file's directory. Messages name the file as `path` was given.
 */
export async function loadConfig(path: string): Promise<SluiceConfig> {
  let text: string;
  try {
    const info = await stat(path);
    if (info.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    if (info.size > MAX_CONFIG_BYTES) {
      throw new ConfigError([
        { file: path, line: 0, column: 0, path: '', message: `larger than ${MAX_CONFIG_BYTES} bytes (${info.size}); is this the right file?` },
      ]);
    }
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError([{ file: path, line: 0, column: 0, path: '', message: `cannot read config: ${describeReadError(err)}` }]);
  }
  return parseConfig(text, path);
}

/**
 * Validates and completes configuration text. `file` names it in messages
 * and locates relative rule-set paths (its directory).
 */
export async function parseConfig(text: string, file: string): Promise<SluiceConfig> {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0]);
        return { file, line: pos.line, column: pos.col, path: '', message: `YAML syntax: ${e.message.split('\n')[0]!}` };
      }),
    );
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) ?? {};
  } catch (err) {
    throw new ConfigError([{ file, line: 1, column: 1, path: '', message: `YAML: ${(err as Error).message}` }]);
  }

  const schema = schemaIssues(data);
  // A semantic finding under a field the schema already rejected would be a second message for one mistake.
  const semantic = semanticIssues(data).filter((s) => !schema.some((e) => isPrefix(e.path, s.path)));
  const problems: ConfigProblem[] = [...schema, ...semantic].map((issue) => locateIssue(doc, lines, file, issue));

  const baseDir = dirname(resolve(file));
  const ruleSets = await loadRuleSets(data, file, baseDir, doc, lines, problems);
  await checkGeoIp(data, file, baseDir, doc, lines, problems);

  if (problems.length > 0) throw new ConfigError(sortProblems(problems, file));
  return complete(data as Raw, ruleSets, baseDir);
}

function locateIssue(doc: Document, lines: LineCounter, file: string, issue: Issue): ConfigProblem {
  const pos = locate(doc, lines, issue.path, issue.anchor);
  return { file, line: pos.line, column: pos.column, path: formatPath(issue.path), message: issue.message };
}

/** The config file's problems in source order, then each rule-set file's. */
function sortProblems(problems: ConfigProblem[], file: string): ConfigProblem[] {
  const fileOrder = new Map<string, number>([[file, 0]]);
  for (const p of problems) if (!fileOrder.has(p.file)) fileOrder.set(p.file, fileOrder.size);
  return problems
    .map((p, i) => ({ p, i }))
    .sort(
      (a, b) =>
        fileOrder.get(a.p.file)! - fileOrder.get(b.p.file)! ||
        (a.p.line || Infinity) - (b.p.line || Infinity) ||
        a.p.column - b.p.column ||
        a.i - b.i,
    )
    .map((x) => x.p);
}

/** Parsed YAML that passed every check; fields are read as the schema guarantees. */
type Raw = Record<string, any>;

/** Reads every file-backed rule set (any format); records problems; returns the sets by name. url sets are read by `sluice run`. */
async function loadRuleSets(
  data: unknown,
  file: string,
  baseDir: string,
  doc: Document,
  lines: LineCounter,
  problems: ConfigProblem[],
): Promise<Map<string, RuleSetConfig>> {
  const out = new Map<string, RuleSetConfig>();
  const sets = (data as Raw)?.ruleSets;
  if (sets === null || typeof sets !== 'object' || Array.isArray(sets)) return out;
  // Read in parallel; problems are appended in definition order so the report is stable.
  const jobs = Object.entries(sets as Raw).map(async ([name, rs]): Promise<ConfigProblem[]> => {
    if (rs === null || typeof rs !== 'object') return [];
    const format = (rs.format ?? 'sluice') as RuleSetFormat;
    const declared = (rs.type ?? null) as RuleSetType | null;
    const base = {
      format,
      behavior: (rs.behavior ?? null) as ClashBehavior | null,
      url: (rs.url ?? null) as string | null,
      interval: (rs.interval ?? 86400) as number,
      outbound: (rs.outbound ?? 'direct') as string,
    };
    if (Array.isArray(rs.entries)) {
      if (declared !== 'domain' && declared !== 'cidr') return [];
      // Inline entries were checked by semantic.ts; normalise the same way a file's are.
      const entries = (rs.entries as unknown[])
        .filter((e): e is string => typeof e === 'string')
        .map((e) => {
          const checked = checkRuleSetEntry(e, declared);
          return checked.ok ? checked.entry : e;
        });
      out.set(name, { ...base, type: declared, path: null, entries });
      return [];
    }
    const p = typeof rs.path === 'string' && rs.path !== '' ? (rs.path as string) : null;
    if (base.url !== null) {
      // Downloaded by sluice run (its last good copy at `path`, or beside the state file).
      out.set(name, { ...base, type: declared ?? 'domain', path: p === null ? null : resolve(baseDir, p), entries: [] });
      return [];
    }
    if (p === null) return [];
    // A missing type or behavior is reported once, by semantic.ts; the file is not read in a guessed form.
    if (format === 'sluice' && declared !== 'domain' && declared !== 'cidr') return [];
    if (format === 'clash' && base.behavior === null) return [];
    const abs = resolve(baseDir, p);
    const shown = isAbsolute(p) ? p : join(dirname(file), p);
    const result = await readRuleSetSource(abs, { format, type: declared, behavior: base.behavior }, shown, formatPath(['ruleSets', name]));
    if (result.readError !== null) {
      const at: PathSegment[] = ['ruleSets', name, 'path'];
      const pos = locate(doc, lines, at);
      return [
        {
          file,
          line: pos.line,
          column: pos.column,
          path: formatPath(at),
          message: `cannot read rule set file ${shown}: ${result.readError}`,
        },
      ];
    }
    out.set(name, { ...base, type: result.type, path: abs, entries: result.entries });
    return result.problems;
  });
  for (const found of await Promise.all(jobs)) problems.push(...found);
  return out;
}

/** geoip.database, resolved against the config's directory and opened once to check it is a MaxMind DB. */
async function checkGeoIp(data: unknown, file: string, baseDir: string, doc: Document, lines: LineCounter, problems: ConfigProblem[]): Promise<void> {
  const db = (data as Raw)?.geoip?.database;
  if (typeof db !== 'string' || db === '') return;
  const problem = await geoIpDatabaseProblem(resolve(baseDir, db));
  if (problem === null) return;
  const at: PathSegment[] = ['geoip', 'database'];
  const pos = locate(doc, lines, at);
  problems.push({ file, line: pos.line, column: pos.column, path: formatPath(at), message: problem });
}

// --- Defaults ---------------------------------------------------------------------

function complete(raw: Raw, ruleSets: Map<string, RuleSetConfig>, baseDir: string): SluiceConfig {
  const d = defaultConfig();
  const dns: Raw = raw.dns ?? {};
  const persistPath: string | null = dns.fakeIp?.persistPath === undefined ? d.dns.fakeIp.persistPath : dns.fakeIp.persistPath;
  return {
    log: { ...d.log, ...raw.log },
    tun: { ...d.tun, ...raw.tun },
    sniff: { ...d.sniff, ...raw.sniff },
    icmp: { ...d.icmp, ...raw.icmp },
    limits: { ...d.limits, ...raw.limits },
    udp: { ...d.udp, ...raw.udp },
    dns: {
      mode: dns.mode ?? d.dns.mode,
      hijack: dns.hijack ?? d.dns.hijack,
      fakeIp: {
        ...d.dns.fakeIp,
        ...dns.fakeIp,
        persistPath: persistPath === null ? null : resolve(baseDir, persistPath),
        filter: ((dns.fakeIp?.filter ?? []) as Raw[]).map((c) => completeCondition(c) as DnsCondition),
      },
      upstreams:
        dns.upstreams === undefined
          ? d.dns.upstreams
          : (dns.upstreams as Raw[]).map((u): DnsUpstream => ({ address: withDnsPort(u.address), outbound: u.outbound ?? 'direct' })),
      cache: { ...d.dns.cache, ...dns.cache },
      bootstrap: dns.bootstrap === undefined ? [...d.dns.bootstrap] : (dns.bootstrap as string[]).map(withDnsPort),
      hostsFile: dns.hostsFile === undefined ? d.dns.hostsFile : dns.hostsFile === null ? null : resolve(baseDir, dns.hostsFile as string),
      groups: Object.fromEntries(
        Object.entries((dns.groups ?? {}) as Record<string, Raw[]>).map(([name, list]) => [name, list.map((u): DnsUpstream => ({ address: withDnsPort(u.address), outbound: u.outbound ?? 'direct' }))]),
      ),
      rules: ((dns.rules ?? []) as Raw[]).map((r) => ({ ...(completeCondition(r) as DnsCondition), upstream: r.upstream as string })),
    },
    outbounds: raw.outbounds === undefined ? d.outbounds : (raw.outbounds as Raw[]).map(completeOutbound),
    ruleSets: Object.fromEntries(Object.keys(raw.ruleSets ?? {}).map((name) => [name, ruleSets.get(name)!])),
    geoip: { database: typeof raw.geoip?.database === 'string' ? resolve(baseDir, raw.geoip.database as string) : null },
    rules: ((raw.rules ?? []) as Raw[]).map((r) => ({ ...completeCondition(r), outbound: r.outbound }) as RuleConfig),
    final: raw.final ?? d.final,
    route: { ...d.route, ...raw.route },
    http: completeHttp(raw.http ?? {}, d.http),
    gateway: { ...d.gateway, ...raw.gateway, lan: [...((raw.gateway?.lan ?? d.gateway.lan) as string[])] },
    classifier: { ...d.classifier, ...raw.classifier },
    run: { ...d.run, ...raw.run },
    api: completeApi(raw.api ?? {}, d, baseDir),
    metrics: { listen: raw.metrics?.listen === undefined ? d.metrics.listen : raw.metrics.listen },
  };
}

/** The api section with defaults; a relative secretFile is taken from the config's directory. */
function completeApi(a: Raw, d: SluiceConfig, baseDir: string): SluiceConfig['api'] {
  const secretFile: string | null = a.secretFile ?? null;
  return {
    listen: a.listen === undefined ? d.api.listen : a.listen,
    secret: a.secret ?? null,
    secretFile: secretFile === null ? null : resolve(baseDir, secretFile),
  };
}

/** The http section with defaults; header names and hosts lower-cased. */
function completeHttp(h: Raw, d: HttpConfig): HttpConfig {
  return {
    enabled: h.enabled ?? d.enabled,
    ports: h.ports === undefined ? d.ports : [...(h.ports as number[])],
    rules: ((h.rules ?? d.rules) as Raw[]).map((r): HttpRuleConfig => {
      const out: HttpRuleConfig = {
        outbound: r.outbound ?? null,
        setHeaders: Object.fromEntries(Object.entries((r.setHeaders ?? {}) as Record<string, string>).map(([k, v]) => [k.toLowerCase(), v])),
        removeHeaders: ((r.removeHeaders ?? []) as string[]).map((n) => n.toLowerCase()),
      };
      if (r.method !== undefined) out.method = [...(r.method as string[])];
      if (r.pathPrefix !== undefined) out.pathPrefix = r.pathPrefix;
      if (r.pathRegex !== undefined) out.pathRegex = r.pathRegex;
      if (r.host !== undefined) out.host = (r.host as string[]).map((x) => x.toLowerCase());
      return out;
    }),
    accessLog: h.accessLog ?? d.accessLog,
    maxHeaderBytes: h.maxHeaderBytes ?? d.maxHeaderBytes,
  };
}

/** udp:// and tcp:// upstreams get the DNS port (53) written out when it was left off. */
function withDnsPort(address: string): string {
  return /^(?:udp|tcp):\/\/(?:\[[^\]]*\]|[^:/]*)$/.test(address) ? `${address}:53` : address;
}

function completeOutbound(o: Raw): OutboundConfig {
  switch (o.type as OutboundConfig['type']) {
    case 'direct':
      return { name: o.name, type: 'direct', mark: o.mark ?? null, interface: o.interface ?? null };
    case 'socks5':
    case 'http': {
      const username: string | null = o.username ?? null;
      // A user name alone means an empty password (RFC 1929 allows it; Basic needs the colon anyway).
      const password: string | null = o.password ?? (username === null ? null : '');
      return o.type === 'socks5'
        ? { name: o.name, type: 'socks5', server: o.server, port: o.port, username, password, udp: o.udp ?? false }
        : { name: o.name, type: 'http', server: o.server, port: o.port, username, password };
    }
    case 'reject':
      return { name: o.name, type: 'reject' };
    case 'drop':
      return { name: o.name, type: 'drop' };
    case 'select':
    case 'urltest':
    case 'fallback':
    case 'loadbalance':
      return {
        name: o.name,
        type: o.type,
        outbounds: [...(o.outbounds as string[])],
        check: { ...defaultGroupCheck(), ...o.check },
        default: o.default ?? null,
        strategy: o.strategy ?? 'consistent-hash',
      };
  }
}

const LOWERCASE_KEYS = new Set(['domain', 'domainSuffix', 'domainKeyword']);

/** Copies a rule's conditions (not its outbound), lower-casing domain strings. */
function completeCondition(r: Raw): RuleCondition {
  const out: Raw = {};
  for (const [key, value] of Object.entries(r)) {
    if (key === 'outbound' || key === 'upstream') continue;
    if (LOWERCASE_KEYS.has(key)) out[key] = (value as string[]).map((s) => s.toLowerCase());
    else if (key === 'geoip') out[key] = (value as string[]).map((s) => s.toUpperCase());
    else if (key === 'and' || key === 'or') out[key] = (value as Raw[]).map(completeCondition);
    else if (key === 'not') out[key] = completeCondition(value as Raw);
    else if (Array.isArray(value)) out[key] = [...value];
    else out[key] = value;
  }
  return out as RuleCondition;
}
