/**
 * The sans-IO part of the HTTP L7 mode: the `http.rules` matcher and the
 * request-header rewrite (hop-by-hop removal, then the rule's removeHeaders
 * and setHeaders). No sockets here; http-l7.ts does the I/O.
 */
import type { HttpRuleConfig } from '../config/types.js';

/** A rule, compiled once per config. */
export interface CompiledHttpRule {
  index: number;
  methods: ReadonlySet<string> | null;
  pathPrefix: string | null;
  pathRegex: RegExp | null;
  hosts: readonly string[] | null;
  outbound: string | null;
  setHeaders: readonly [string, string][];
  removeHeaders: ReadonlySet<string>;
}

export interface HttpRequestFacts {
  method: string;
  /** Origin-form target: path plus optional query. */
  target: string;
  /** Host header value, lower-cased, without port or IPv6 brackets; null when absent. */
  host: string | null;
}

export function compileHttpRules(rules: readonly HttpRuleConfig[]): CompiledHttpRule[] {
  return rules.map((r, index) => ({
    index,
    methods: r.method === undefined ? null : new Set(r.method),
    pathPrefix: r.pathPrefix ?? null,
    pathRegex: r.pathRegex === undefined ? null : new RegExp(r.pathRegex),
    hosts: r.host ?? null,
    outbound: r.outbound,
    setHeaders: Object.entries(r.setHeaders).map(([k, v]) => [k.toLowerCase(), v] as [string, string]),
    removeHeaders: new Set(r.removeHeaders.map((n) => n.toLowerCase())),
  }));
}

/** `host` equals `suffix` or ends with "." + suffix. */
function hostMatches(host: string, suffix: string): boolean {
  return host === suffix || (host.length > suffix.length && host.endsWith(suffix) && host.charCodeAt(host.length - suffix.length - 1) === 0x2e);
}

/** The first rule whose conditions all hold, or null. */
export function matchHttpRule(rules: readonly CompiledHttpRule[], req: HttpRequestFacts): CompiledHttpRule | null {
  const q = req.target.indexOf('?');
  const path = q < 0 ? req.target : req.target.slice(0, q);
  for (const r of rules) {
    if (r.methods !== null && !r.methods.has(req.method)) continue;
    if (r.pathPrefix !== null && !path.startsWith(r.pathPrefix)) continue;
    if (r.pathRegex !== null && !r.pathRegex.test(req.target)) continue;
    if (r.hosts !== null) {
      const host = req.host;
      if (host === null || !r.hosts.some((s) => hostMatches(host, s))) continue;
    }
    return r;
  }
  return null;
}

/** Host header value to the bare lower-cased name ("Example.COM:8080" -> "example.com", "[::1]:80" -> "::1"). */
export function hostOf(header: string | undefined): string | null {
  if (header === undefined || header === '') return null;
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end < 0 ? null : h.slice(1, end);
  }
  const colon = h.indexOf(':');
  return colon < 0 ? h : h.slice(0, colon);
}

/** Hop-by-hop fields (RFC 9110 7.6.1), plus the legacy ones proxies also drop. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

/** Names listed in Connection headers (RFC 9110 7.6.1: these are hop-by-hop too), lower-cased. */
function connectionTokens(raw: readonly string[]): Set<string> | null {
  let out: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== 'connection') continue;
    for (const tok of raw[i + 1]!.split(',')) {
      const t = tok.trim().toLowerCase();
      if (t !== '') (out ??= new Set()).add(t);
    }
  }
  return out;
}

/**
 * The request headers to send upstream, as a flat [name, value, ...] list in
 * the client's order: hop-by-hop fields dropped, then the rule's
 * removeHeaders, then its setHeaders (replacing same-named fields, added at
 * the end). `raw` is node's rawHeaders (flat list).
 */
export function rewriteRequestHeaders(raw: readonly string[], rule: CompiledHttpRule | null): string[] {
  const listed = connectionTokens(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    // Expect: 100-continue was answered by our own server already (RFC 9110 10.1.1).
    if (HOP_BY_HOP.has(lower) || lower === 'expect' || (listed !== null && listed.has(lower))) continue;
    if (rule !== null && (rule.removeHeaders.has(lower) || rule.setHeaders.some(([k]) => k === lower))) continue;
    out.push(name, raw[i + 1]!);
  }
  if (rule !== null) for (const [k, v] of rule.setHeaders) out.push(k, v);
  return out;
}

/** Response headers for the client: hop-by-hop fields dropped (node frames the response itself). */
export function filterResponseHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const conn = headers['connection'];
  const listed = conn === undefined ? null : connectionTokens(['connection', Array.isArray(conn) ? conn.join(',') : conn]);
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    const lower = k.toLowerCase();
    if (HOP_BY_HOP.has(lower) || (listed !== null && listed.has(lower))) continue;
    out[k] = v;
  }
  return out;
}
