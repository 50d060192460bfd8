/**
 * DNS checks that need the whole dns section at once: a DoH upstream given
 * by host name, reached through a direct outbound, must have something to
 * resolve that name with (dns.hostsFile, dns.bootstrap, or a plain udp:// /
 * tcp:// upstream that goes direct), since sluice never asks the host's
 * resolver (its queries may be hijacked into sluice itself) nor the chain
 * the DoH upstream belongs to (which would wait on itself).
 *
 * The engine (src/engine/dns-upstreams.ts) makes the same decision when it
 * builds the resolvers and uses the same text; finding it here as well
 * means `sluice check` reports it, with the line and column, not only
 * `sluice run`.
 */
import type { Issue } from './schema-errors.js';
import type { PathSegment } from './locate.js';
import { parseIp } from './net.js';
import { defaultConfig } from './types.js';

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The message for a DoH upstream whose host name nothing can resolve (the engine's text too). */
export function dohBootstrapMessage(host: string): string {
  return `the DoH host ${host} needs a plain DNS server to resolve it: add dns.bootstrap (udp://IP:53) or a udp:// / tcp:// upstream, set dns.hostsFile, or write the URL with an IP address`;
}

/** The host name of an http(s):// upstream, or null when it is not DoH or names an IP literal. */
function dohHostName(address: string): string | null {
  if (!/^https?:\/\//.test(address)) return null;
  let host: string;
  try {
    host = new URL(address).hostname;
  } catch {
    return null; // the schema reports a malformed URL
  }
  if (host.startsWith('[')) return null;
  return parseIp(host) === null ? host : null;
}

/**
 * Issues for DoH upstreams by host name that have no bootstrap; `outbounds`
 * maps the outbound names defined (or the defaults) to their objects.
 */
export function dohBootstrapIssues(dns: Obj, outbounds: ReadonlyMap<string, Obj>): Issue[] {
  const defaults = defaultConfig().dns;
  const hostsFile = dns.hostsFile === undefined ? defaults.hostsFile : dns.hostsFile;
  if (hostsFile !== null) return [];
  const bootstrap = Array.isArray(dns.bootstrap) ? dns.bootstrap : defaults.bootstrap;
  if (bootstrap.length > 0) return [];
  const lists: { path: PathSegment[]; list: unknown[] }[] = [];
  const upstreams = dns.upstreams === undefined ? defaults.upstreams : dns.upstreams;
  if (Array.isArray(upstreams)) lists.push({ path: ['dns', 'upstreams'], list: upstreams });
  if (isObj(dns.groups)) for (const [name, list] of Object.entries(dns.groups)) if (Array.isArray(list)) lists.push({ path: ['dns', 'groups', name], list });
  const isDirect = (up: Obj): boolean => outbounds.get(typeof up.outbound === 'string' ? up.outbound : 'direct')?.type === 'direct';
  // Any plain upstream that goes direct serves as the bootstrap (engine: bootstrapChain).
  const plainDirect = lists.some(({ list }) => list.some((up) => isObj(up) && typeof up.address === 'string' && !/^https?:/.test(up.address) && isDirect(up)));
  if (plainDirect) return [];
  const issues: Issue[] = [];
  for (const { path, list } of lists) {
    list.forEach((up, i) => {
      if (!isObj(up) || typeof up.address !== 'string' || !isDirect(up)) return;
      const host = dohHostName(up.address);
      if (host !== null) issues.push({ path: [...path, i, 'address'], anchor: 'value', message: dohBootstrapMessage(host) });
    });
  }
  return issues;
}
