/**
 * Checks the schema cannot express: names that must refer to something
 * defined, duplicate names, host bits in CIDRs, reversed port ranges, regexes
 * that do not compile, a fake-IP pool that is too small or collides with the
 * TUN's own address, and DNS upstreams that their outbound cannot carry.
 *
 * The input may have failed the schema elsewhere, so every access is
 * defensive: a value of the wrong shape is skipped here (the schema has
 * already reported it) and the remaining mistakes are still found.
 */
import type { Issue } from './schema-errors.js';
import type { PathSegment } from './locate.js';
import { cidrContains, cidrOverlap, cidrSize, formatCidr, hasHostBits, networkOf, parseCidr, parseIp, type Cidr } from './net.js';
import { checkRuleSetEntry, regexProblem } from './ruleset.js';
import { didYouMean } from './suggest.js';
import { routeIssues } from './route-checks.js';
import { gatewayIssues } from './gateway-checks.js';
import { classifierIssues } from './classifier-checks.js';
import { apiIssues } from './api-checks.js';
import { dohBootstrapIssues } from './dns-checks.js';
import { defaultConfig, GROUP_TYPES, MATCHER_KEYS } from './types.js';

/** Deepest nesting of and/or/not accepted (a bound for the matcher's recursion). */
export const MAX_CONDITION_DEPTH = 8;
/** Smallest fake-IP pools: 256 addresses. */
export const MIN_FAKE_IPV4_PREFIX = 24;
export const MIN_FAKE_IPV6_PREFIX = 120;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function strings(v: unknown): { value: string; index: number }[] {
  if (!Array.isArray(v)) return [];
  const out: { value: string; index: number }[] = [];
  v.forEach((value, index) => {
    if (typeof value === 'string') out.push({ value, index });
  });
  return out;
}

export function semanticIssues(data: unknown): Issue[] {
  const issues: Issue[] = [];
  const add = (path: PathSegment[], message: string): void => {
    issues.push({ path, anchor: 'value', message });
  };
  if (!isObj(data)) return issues;
  const defaults = defaultConfig();

  // --- Outbounds ---------------------------------------------------------------
  const outbounds = new Map<string, Obj>();
  if (Array.isArray(data.outbounds)) {
    const firstIndex = new Map<string, number>();
    data.outbounds.forEach((ob, i) => {
      if (!isObj(ob) || typeof ob.name !== 'string') return;
      const first = firstIndex.get(ob.name);
      if (first !== undefined) {
        add(['outbounds', i, 'name'], `duplicate outbound name "${ob.name}" (already used by outbounds[${first}])`);
        return;
      }
      firstIndex.set(ob.name, i);
      outbounds.set(ob.name, ob);
      if ((ob.type === 'socks5' || ob.type === 'http') && typeof ob.password === 'string' && ob.username == null) {
        add(['outbounds', i, 'password'], 'password given without username');
      }
    });
  } else if (data.outbounds === undefined) {
    for (const ob of defaults.outbounds) outbounds.set(ob.name, ob as unknown as Obj);
  }
  const names = [...outbounds.keys()];
  /** Checks an outbound reference; `written` false means the name is a default. */
  const checkOutbound = (path: PathSegment[], name: unknown, written: boolean): Obj | null => {
    if (typeof name !== 'string') return null;
    const ob = outbounds.get(name);
    if (ob !== undefined) return ob;
    if (!Array.isArray(data.outbounds) && data.outbounds !== undefined) return null; // schema reported outbounds
    add(
      path,
      written
        ? `names an undefined outbound "${name}"${didYouMean(name, names)}${names.length > 0 ? ` (defined: ${names.join(', ')})` : ''}`
        : `not given, and the default outbound "${name}" is not defined; set it or define an outbound named "${name}"`,
    );
    return null;
  };

  checkOutbound(['final'], data.final ?? defaults.final, data.final !== undefined);
  if (Array.isArray(data.outbounds)) groupIssues(data.outbounds, outbounds, add);

  // --- DNS ---------------------------------------------------------------------
  const dns = isObj(data.dns) ? data.dns : {};
  const tun = isObj(data.tun) ? data.tun : {};
  const fakeIp = isObj(dns.fakeIp) ? dns.fakeIp : {};
  const fakeRanges: { path: PathSegment[]; cidr: Cidr }[] = [];
  if ((dns.mode ?? defaults.dns.mode) === 'fake-ip') {
    for (const [key, tunKey, minPrefix] of [
      ['ipv4Range', 'ipv4', MIN_FAKE_IPV4_PREFIX],
      ['ipv6Range', 'ipv6', MIN_FAKE_IPV6_PREFIX],
    ] as const) {
      const written = fakeIp[key] !== undefined;
      const text = fakeIp[key] ?? defaults.dns.fakeIp[key];
      const range = typeof text === 'string' ? parseCidr(text) : null;
      if (range === null) continue;
      const path: PathSegment[] = ['dns', 'fakeIp', key];
      if (hasHostBits(range)) {
        add(path, `${String(text)} has host bits set; did you mean ${formatCidr(networkOf(range))}?`);
        continue;
      }
      if (range.prefix > minPrefix) {
        add(path, `fake-IP pool ${String(text)} holds only ${cidrSize(range)} addresses; use a /${minPrefix} or larger`);
        continue;
      }
      fakeRanges.push({ path, cidr: range });
      const tunText = tun[tunKey] ?? defaults.tun[tunKey];
      const tunCidr = typeof tunText === 'string' ? parseCidr(tunText) : null;
      if (tunCidr !== null && cidrOverlap(range, networkOf(tunCidr))) {
        // Point at whichever of the two the user wrote.
        const at: PathSegment[] = written || tun[tunKey] === undefined ? path : ['tun', tunKey];
        add(at, `fake-IP range ${String(text)} overlaps the TUN address ${String(tunText)} (tun.${tunKey}); pick disjoint blocks`);
      }
    }
  }

  if (Array.isArray(dns.upstreams)) {
    dns.upstreams.forEach((up, i) => {
      if (!isObj(up)) return;
      const written = up.outbound !== undefined;
      const ob = checkOutbound(['dns', 'upstreams', i, 'outbound'], up.outbound ?? 'direct', written);
      const address = typeof up.address === 'string' ? up.address : null;
      if (address === null) return;
      const scheme = address.slice(0, address.indexOf(':'));
      if (ob !== null) {
        const at: PathSegment[] = ['dns', 'upstreams', i, written ? 'outbound' : 'address'];
        const obName = String(ob.name);
        if (ob.type === 'reject' || ob.type === 'drop') {
          add(at, `DNS cannot travel through outbound "${obName}" of type ${String(ob.type)}`);
        } else if (scheme === 'udp' && ob.type === 'http') {
          add(at, `outbound "${obName}" is an HTTP proxy, which carries only TCP; use tcp:// or https:// through it`);
        } else if (scheme === 'udp' && ob.type === 'socks5' && ob.udp !== true) {
          add(at, `outbound "${obName}" has udp: false, so it cannot carry udp://; set udp: true or use tcp://`);
        }
      }
      const host = upstreamIp(address);
      const ip = host === null ? null : parseIp(host);
      if (ip !== null) {
        for (const r of fakeRanges) {
          if (cidrContains(r.cidr, ip)) {
            add(['dns', 'upstreams', i, 'address'], `upstream ${host} lies inside the fake-IP range ${formatCidr(r.cidr)}`);
          }
        }
      }
    });
  }

  const cache = isObj(dns.cache) ? dns.cache : {};
  const minTtl = cache.minTtl ?? defaults.dns.cache.minTtl;
  const maxTtl = cache.maxTtl ?? defaults.dns.cache.maxTtl;
  if (typeof minTtl === 'number' && typeof maxTtl === 'number' && minTtl > maxTtl) {
    add(['dns', 'cache', cache.minTtl !== undefined ? 'minTtl' : 'maxTtl'], `minTtl (${minTtl}) is greater than maxTtl (${maxTtl})`);
  }

  // --- Rule sets -----------------------------------------------------------------
  const ruleSetNames = isObj(data.ruleSets) ? Object.keys(data.ruleSets) : [];
  if (isObj(data.ruleSets)) {
    for (const [name, rs] of Object.entries(data.ruleSets)) {
      if (!isObj(rs)) continue;
      const at: PathSegment[] = ['ruleSets', name];
      const hasPath = rs.path !== undefined;
      const hasEntries = rs.entries !== undefined;
      const hasUrl = rs.url !== undefined;
      const format = rs.format ?? 'sluice';
      if (hasEntries && (hasPath || hasUrl)) add(at, 'give entries (a list) or a source (path or url), not both');
      else if (!hasPath && !hasEntries && !hasUrl) add(at, 'needs path (a file), url (a download) or entries (a list)');
      if (format === 'sluice' && rs.type === undefined) add([...at, 'type'], 'missing (required for format sluice): domain or cidr');
      if (format !== 'sluice' && rs.type !== undefined) add([...at, 'type'], `the type of a ${String(format)} rule set comes from its file; remove type`);
      if (format === 'clash' && rs.behavior === undefined) add([...at, 'behavior'], 'missing (required for format clash): domain, ipcidr or classical');
      if (format !== 'clash' && rs.behavior !== undefined) add([...at, 'behavior'], 'behavior is for format clash');
      if (format !== 'sluice' && hasEntries) add([...at, 'entries'], `inline entries take the sluice format; put the ${String(format)} file in path or url`);
      if (!hasUrl) {
        for (const k of ['interval', 'outbound'] as const) if (rs[k] !== undefined) add([...at, k], `${k} applies to a url rule set`);
      } else {
        const ob = checkOutbound([...at, 'outbound'], rs.outbound ?? 'direct', rs.outbound !== undefined);
        if (ob !== null && (ob.type === 'reject' || ob.type === 'drop')) add([...at, rs.outbound !== undefined ? 'outbound' : 'url'], `a download cannot travel through outbound "${String(ob.name)}" of type ${String(ob.type)}`);
      }
      if (hasEntries && (rs.type === 'domain' || rs.type === 'cidr')) {
        for (const { value, index } of strings(rs.entries)) {
          const checked = checkRuleSetEntry(value, rs.type);
          if (!checked.ok) add(['ruleSets', name, 'entries', index], checked.message);
        }
      }
    }
  }
  const geoipDb = isObj(data.geoip) ? data.geoip.database : undefined;
  const hasGeoipDb = typeof geoipDb === 'string';

  routeIssues(data, defaults, add);
  gatewayIssues(data, defaults, add);
  classifierIssues(data, defaults, add);
  apiIssues(data, add);
  const route = data.route !== null && typeof data.route === 'object' && !Array.isArray(data.route) ? (data.route as Record<string, unknown>) : {};
  if (route.kernelPath === true && route.auto !== true) add(['route', 'kernelPath'], 'the kernel path for direct destinations is part of the auto-route: it needs route.auto');
  if (isObj(data.run) && typeof data.run.group === 'string' && typeof data.run.user !== 'string') {
    add(['run', 'group'], 'run.group needs run.user (the user sluice switches to after set-up)');
  }

  // --- Rules ---------------------------------------------------------------------
  const checkCondition = (cond: Obj, path: PathSegment[], depth: number): void => {
    if (depth > MAX_CONDITION_DEPTH) {
      add(path, `conditions nested deeper than ${MAX_CONDITION_DEPTH} levels`);
      return;
    }
    for (const key of ['ipCidr', 'sourceCidr'] as const) {
      for (const { value, index } of strings(cond[key])) {
        const c = parseCidr(value);
        if (c !== null && hasHostBits(c)) {
          add([...path, key, index], `${value} has host bits set; did you mean ${formatCidr(networkOf(c))}?`);
        }
      }
    }
    for (const key of ['domain', 'domainSuffix'] as const) {
      for (const { value, index } of strings(cond[key])) {
        if (parseIp(value) !== null) add([...path, key, index], `"${value}" is an IP address; match addresses with ipCidr`);
      }
    }
    for (const { value, index } of strings(cond.domainRegex)) {
      const problem = regexProblem(value);
      if (problem !== null) add([...path, 'domainRegex', index], problem);
    }
    for (const key of ['port', 'sourcePort'] as const) {
      for (const { value, index } of strings(cond[key])) {
        const m = /^([0-9]+)-([0-9]+)$/.exec(value);
        if (m !== null && Number(m[1]) > Number(m[2])) {
          add([...path, key, index], `port range "${value}" is reversed; did you mean "${m[2]}-${m[1]}"?`);
        }
      }
    }
    for (const { value, index } of strings(cond.ruleSet)) {
      if (!ruleSetNames.includes(value)) {
        add(
          [...path, 'ruleSet', index],
          `names an undefined rule set "${value}"${didYouMean(value, ruleSetNames)}${ruleSetNames.length > 0 ? ` (defined: ${ruleSetNames.join(', ')})` : ''}`,
        );
      }
    }
    if (cond.geoip !== undefined && !hasGeoipDb) add([...path, 'geoip'], 'geoip conditions need a country database: set geoip.database (a MaxMind .mmdb file)');
    for (const key of ['and', 'or'] as const) {
      if (!Array.isArray(cond[key])) continue;
      (cond[key] as unknown[]).forEach((sub, i) => {
        if (isObj(sub)) checkCondition(sub, [...path, key, i], depth + 1);
      });
    }
    if (isObj(cond.not)) checkCondition(cond.not, [...path, 'not'], depth + 1);
  };

  if (Array.isArray(data.rules)) {
    data.rules.forEach((rule, i) => {
      if (!isObj(rule)) return;
      const path: PathSegment[] = ['rules', i];
      if (rule.outbound !== undefined) checkOutbound([...path, 'outbound'], rule.outbound, true);
      // Only when the rule is otherwise well formed: `{}` is already "outbound missing".
      const onlyOutbound = rule.outbound !== undefined && Object.keys(rule).every((k) => k === 'outbound');
      if (onlyOutbound && !MATCHER_KEYS.some((k) => rule[k] !== undefined)) {
        add(path, 'a rule needs at least one condition; use final for a catch-all');
      }
      checkCondition(rule, path, 1);
    });
  }

  // --- DNS rules, groups and the fake-IP filter ------------------------------------
  const groupNames = isObj(dns.groups) ? Object.keys(dns.groups) : [];
  if (isObj(dns.groups)) {
    for (const [name, list] of Object.entries(dns.groups)) {
      if (!Array.isArray(list)) continue;
      list.forEach((up, i) => {
        if (isObj(up)) checkOutbound(['dns', 'groups', name, i, 'outbound'], up.outbound ?? 'direct', up.outbound !== undefined);
      });
    }
  }
  issues.push(...dohBootstrapIssues(dns, outbounds));
  if (Array.isArray(dns.rules)) {
    const known = ['default', ...groupNames];
    dns.rules.forEach((rule, i) => {
      if (!isObj(rule)) return;
      const path: PathSegment[] = ['dns', 'rules', i];
      if (typeof rule.upstream === 'string' && !known.includes(rule.upstream)) {
        add([...path, 'upstream'], `names an undefined upstream group "${rule.upstream}"${didYouMean(rule.upstream, known)} (defined: ${known.join(', ')})`);
      }
      checkCondition(rule, path, 1);
    });
  }
  if (Array.isArray(fakeIp.filter)) {
    fakeIp.filter.forEach((cond, i) => {
      if (isObj(cond)) checkCondition(cond, ['dns', 'fakeIp', 'filter', i], 1);
    });
  }

  // --- HTTP L7 mode --------------------------------------------------------------
  const http = isObj(data.http) ? data.http : {};
  const sniff = isObj(data.sniff) ? data.sniff : {};
  if (http.enabled === true && sniff.timeoutMs === 0) {
    add(['http', 'enabled'], 'the HTTP mode needs sniffing; set sniff.timeoutMs above 0');
  }
  if (Array.isArray(http.rules)) {
    http.rules.forEach((rule, i) => {
      if (!isObj(rule)) return;
      const path: PathSegment[] = ['http', 'rules', i];
      if (rule.outbound !== undefined) checkOutbound([...path, 'outbound'], rule.outbound, true);
      if (typeof rule.pathRegex === 'string') {
        const problem = regexProblem(rule.pathRegex);
        if (problem !== null) add([...path, 'pathRegex'], problem);
      }
      if (isObj(rule.setHeaders)) {
        for (const name of Object.keys(rule.setHeaders)) {
          if (HTTP_FRAMING_HEADERS.has(name.toLowerCase())) {
            add([...path, 'setHeaders', name], `"${name}" is a hop-by-hop or framing header sluice manages itself; it cannot be set`);
          }
        }
      }
      const effects = rule.outbound !== undefined || rule.setHeaders !== undefined || rule.removeHeaders !== undefined;
      if (!effects && Object.keys(rule).length > 0) add(path, 'an http rule needs outbound, setHeaders or removeHeaders');
    });
  }
  return issues;
}

/**
 * Outbound groups: every member names a defined outbound, once, and not the
 * group itself; select's `default` is one of its members; and no chain of
 * groups leads back to where it started (a cycle would recurse at dial
 * time). Each mistake is reported at the member that makes it.
 */
function groupIssues(list: unknown[], outbounds: Map<string, Obj>, add: (path: PathSegment[], message: string) => void): void {
  const names = [...outbounds.keys()];
  const isGroup = (o: Obj | undefined): boolean => o !== undefined && GROUP_TYPES.includes(o.type as never);
  const indexOf = new Map<string, number>();
  list.forEach((ob, i) => {
    if (isObj(ob) && typeof ob.name === 'string' && !indexOf.has(ob.name)) indexOf.set(ob.name, i);
  });
  list.forEach((ob, i) => {
    if (!isObj(ob) || !isGroup(ob) || !Array.isArray(ob.outbounds)) return;
    const seen = new Set<string>();
    for (const { value, index } of strings(ob.outbounds)) {
      const at: PathSegment[] = ['outbounds', i, 'outbounds', index];
      if (value === ob.name) add(at, `group "${value}" cannot contain itself`);
      else if (!outbounds.has(value)) {
        add(at, `names an undefined outbound "${value}"${didYouMean(value, names)}${names.length > 0 ? ` (defined: ${names.join(', ')})` : ''}`);
      } else if (seen.has(value)) add(at, `"${value}" is listed twice in group "${String(ob.name)}"`);
      seen.add(value);
    }
    if (typeof ob.default === 'string' && !seen.has(ob.default)) {
      add(['outbounds', i, 'default'], `"${ob.default}" is not a member of group "${String(ob.name)}" (members: ${[...seen].join(', ')})`);
    }
  });
  // Cycles: depth-first over group -> member edges; a member already on the path closes a cycle.
  const state = new Map<string, 'open' | 'done'>();
  const reported = new Set<string>();
  const visit = (name: string, path: string[]): void => {
    state.set(name, 'open');
    const ob = outbounds.get(name);
    const members = ob !== undefined && isGroup(ob) && Array.isArray(ob.outbounds) ? strings(ob.outbounds) : [];
    for (const { value, index } of members) {
      if (value === name || !isGroup(outbounds.get(value))) continue;
      if (state.get(value) === 'open') {
        const cycle = [...path.slice(path.indexOf(value)), name, value];
        const key = [...cycle].sort().join(',');
        if (!reported.has(key)) {
          reported.add(key);
          add(['outbounds', indexOf.get(name)!, 'outbounds', index], `groups form a cycle: ${cycle.join(' -> ')}`);
        }
      } else if (state.get(value) === undefined) visit(value, [...path, name]);
    }
    state.set(name, 'done');
  };
  for (const [name, ob] of outbounds) if (isGroup(ob) && state.get(name) === undefined) visit(name, []);
}

/** Headers an http rule may not set: hop-by-hop (RFC 9110 7.6.1) and message framing (RFC 9112 6). */
const HTTP_FRAMING_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'content-length']);

/** The IP literal of a udp:// or tcp:// upstream (brackets removed), or null for a host name. */
function upstreamIp(address: string): string | null {
  const m = /^[a-z]+:\/\/(\[[^\]]+\]|[^/:]+)/.exec(address);
  if (m === null) return null;
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : m[1]!;
  return parseIp(host) !== null ? host : null;
}
