/**
 * What the engine builds from a configuration and a reload replaces as a
 * whole: the outbounds (groups included), the DNS upstream chain and the
 * hijack answering through it, the HTTP L7 mode, the compiled policy.
 * A reload builds a complete new Runtime first (any error leaves the running
 * one untouched), then the engine swaps it in one synchronous step, so a
 * flow sees either the old configuration or the new one, never a mix.
 *
 * What survives a reload is passed in: the fake-IP pool and the snoop table
 * (clients hold their addresses), the DNS cache when its settings did not
 * change, the select groups' stored choices.
 */
import type { SluiceConfig } from '../config/types.js';
import { createOutbounds, type GroupEvents, type OutboundConfig as OutboundSpec } from '../outbound/index.js';
import { GroupRegistry } from '../outbound/group-registry.js';
import type { SelectionStore } from '../outbound/group-store.js';
import type { LookupFn, Outbound } from '../outbound/types.js';
import { DnsCache } from '../dns/cache.js';
import type { FakeIpPool } from '../dns/fake-ip.js';
import type { DnsSnoop } from '../dns/snoop.js';
import { DnsHijack } from '../dns/server.js';
import type { DnsRouter } from '../dns/router.js';
import { fakeIpFilter } from '../dns/router.js';
import type { UpstreamFailureLog } from '../dns/failure-log.js';
import { buildResolverChain } from './dns-upstreams.js';
import { HttpL7 } from './http-l7.js';
import { policyNeedsName } from './name-sensitivity.js';
import { compilePolicy } from './policy/compile.js';
import type { Policy } from './policy/policy.js';
import type { GeoIpLookup } from './policy/types.js';
import type { Logger } from './logger.js';

export interface Runtime {
  readonly config: SluiceConfig;
  readonly policy: Policy;
  readonly outbounds: Map<string, Outbound>;
  readonly groups: GroupRegistry;
  readonly chain: DnsRouter;
  readonly dns: DnsHijack | null;
  readonly cache: DnsCache;
  readonly httpL7: HttpL7 | null;
  /** Whether any rule looks at names or protocols (else sniffing cannot change a decision). */
  readonly needsName: boolean;
}

export interface RuntimeDeps {
  log: Logger;
  lookup: LookupFn;
  pool: FakeIpPool | null;
  snoop: DnsSnoop | null;
  /** Where upstream failures are reported (logged at warn, rate-limited). */
  failures: UpstreamFailureLog;
  selections: SelectionStore | null;
  groupEvents: GroupEvents;
  geoip: GeoIpLookup | null;
  /** The running runtime, when reloading (its DNS cache is kept if its settings are unchanged). */
  previous?: Runtime;
}

/** The config's outbound (nulls for "not set") in the outbound layer's shape (absent for "not set"). */
function toOutboundSpec(o: SluiceConfig['outbounds'][number]): OutboundSpec {
  const clean: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== null && v !== undefined) clean[k] = v;
  return clean as unknown as OutboundSpec;
}

/** Compiles the policy part of a config (rule-set entries already loaded). */
export function compileConfigPolicy(config: SluiceConfig, geoip: GeoIpLookup | null): Policy {
  const ruleSets: Record<string, { type: 'domain' | 'cidr' | 'mixed'; entries: string[] }> = {};
  for (const [name, rs] of Object.entries(config.ruleSets)) ruleSets[name] = { type: rs.type, entries: rs.entries };
  return compilePolicy({ rules: config.rules, ruleSets, final: config.final, outbounds: config.outbounds, ...(geoip !== null ? { geoip } : {}) });
}

/** Builds everything; throws (leaving nothing running) on a problem the config checks could not see. */
export function buildRuntime(config: SluiceConfig, deps: RuntimeDeps): Runtime {
  const policy = compileConfigPolicy(config, deps.geoip);
  // With auto-route every socket sluice makes (to proxies too, not only
  // direct ones) must carry the mark that keeps it out of the TUN.
  const outbounds = createOutbounds(config.outbounds.map(toOutboundSpec), {
    lookup: deps.lookup,
    ...(config.route.auto ? { mark: config.route.mark } : {}),
    selections: deps.selections,
    groupEvents: deps.groupEvents,
  });
  const groups = new GroupRegistry(outbounds);
  const dnsCfg = config.dns;
  const ruleSets = Object.fromEntries(Object.entries(config.ruleSets).map(([name, rs]) => [name, { type: rs.type, entries: rs.entries }]));
  let chain: DnsRouter;
  try {
    chain = buildResolverChain(dnsCfg, outbounds, { onFailure: (upstream, reason) => deps.failures.report(upstream, reason), ruleSets });
  } catch (err) {
    groups.close();
    throw err;
  }
  const prev = deps.previous;
  const sameCache = prev !== undefined && JSON.stringify(prev.config.dns.cache) === JSON.stringify(dnsCfg.cache);
  const now = (): number => Date.now() / 1000;
  const cache = sameCache ? prev.cache : new DnsCache({ maxEntries: dnsCfg.cache.maxEntries, minTtl: dnsCfg.cache.minTtl, maxTtl: dnsCfg.cache.maxTtl, now });
  // dns.fakeIp.filter: those names get real answers (snooped, when the snoop table exists, so a flow to one keeps its name).
  const shouldFake = dnsCfg.mode === 'fake-ip' ? fakeIpFilter(dnsCfg.fakeIp.filter, ruleSets) : null;
  const dns = dnsCfg.hijack
    ? new DnsHijack({ mode: dnsCfg.mode, pool: deps.pool, fakeTtl: dnsCfg.fakeIp.ttl, cache, upstream: chain, snoop: deps.snoop, ...(shouldFake !== null ? { shouldFake } : {}) })
    : null;
  const httpL7 = config.http.enabled ? new HttpL7(config.http, outbounds, deps.log) : null;
  return { config, policy, outbounds, groups, chain, dns, cache, httpL7, needsName: policyNeedsName(config) };
}

/** Releases a runtime that no flow uses any more: group checks, HTTP pools, DNS upstream sockets. */
export async function closeRuntime(rt: Runtime): Promise<void> {
  rt.groups.close();
  await Promise.allSettled([rt.httpL7?.close(), rt.chain.close()]);
}
