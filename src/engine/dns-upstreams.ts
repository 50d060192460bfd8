/**
 * The DNS upstream chain from the config: each upstream is reached through
 * its named outbound. UDP through a SOCKS5 outbound rides a UDP ASSOCIATE;
 * TCP through any connecting outbound uses its stream; DoH through a proxy
 * outbound runs undici over a TLS session on the outbound's stream.
 */
import { SluiceError } from '../errors.js';
import { isIP } from 'node:net';
import tls from 'node:tls';
import { randomInt } from 'node:crypto';
import type { Agent } from 'undici';
import type { DnsConfig, DnsUpstream } from '../config/types.js';
import { dohBootstrapMessage } from '../config/dns-checks.js';
import type { RuleSetInput } from './policy/types.js';
import { DnsRouter } from '../dns/router.js';
import { HostsFile } from '../dns/hosts.js';
import type { Outbound } from '../outbound/types.js';
import { createResolver, ResolverChain, type QueryOptions, type Resolver } from '../dns/resolver.js';
import { buildQuery, parseMessage } from '../dns/message.js';
import { dialingAgent } from '../outbound/agent.js';
import { DirectOutbound } from '../outbound/direct.js';

export class EngineSetupError extends SluiceError {
  readonly code = 'SLUICE_ENGINE_SETUP';
}

/** One query over an outbound's UDP association (SOCKS5 UDP ASSOCIATE). */
class OutboundUdpResolver implements Resolver {
  constructor(
    readonly name: string,
    private readonly outbound: Outbound,
    private readonly host: string,
    private readonly port: number,
    private readonly timeoutMs: number,
  ) {}

  async query(query: Uint8Array, opts: QueryOptions = {}): Promise<Uint8Array> {
    const assoc = await this.outbound.openUdp!({ family: isIP(this.host) === 6 ? 6 : 4 }, opts.signal);
    try {
      return await new Promise<Uint8Array>((resolve, reject) => {
        const id = (query[0]! << 8) | query[1]!;
        const timer = setTimeout(() => reject(new Error(`${this.name}: no answer within ${this.timeoutMs} ms`)), opts.timeoutMs ?? this.timeoutMs);
        const abort = (): void => {
          clearTimeout(timer);
          reject(new Error(`${this.name}: aborted`));
        };
        opts.signal?.addEventListener('abort', abort, { once: true });
        assoc.onMessage((payload) => {
          if (payload.length < 12 || ((payload[0]! << 8) | payload[1]!) !== id || parseMessage(payload) === null) return;
          clearTimeout(timer);
          opts.signal?.removeEventListener('abort', abort);
          resolve(Uint8Array.from(payload));
        });
        assoc.send(query, { host: this.host, port: this.port });
      });
    } finally {
      assoc.close();
    }
  }
}

/**
 * An undici dispatcher whose connections are made through `outbound`
 * (src/outbound/agent.ts); kept under this name for the tests that pass a
 * private CA.
 */
export function outboundDispatcher(outbound: Outbound, tlsOptions: tls.ConnectionOptions = {}, resolve?: (host: string) => Promise<string>): Agent {
  return dialingAgent(outbound, { tls: tlsOptions, ...(resolve !== undefined ? { resolve } : {}) });
}

/** Resolves `host` (A, then AAAA unless a family is asked for) through `chain`; IP literals pass through. */
export async function resolveWith(chain: { query(q: Uint8Array): Promise<Uint8Array> }, host: string, family: 4 | 6 | undefined): Promise<{ address: string; family: 4 | 6 }> {
  if (isIP(host) !== 0) return { address: host, family: isIP(host) === 6 ? 6 : 4 };
  const order: (4 | 6)[] = family === 6 ? [6] : family === 4 ? [4] : [4, 6];
  for (const f of order) {
    const answer = parseMessage(await chain.query(buildQuery({ id: randomInt(65536), name: host, type: f === 4 ? 1 : 28, rd: true })));
    const rec = answer?.answers.find((a) => a.address !== null && a.type === (f === 4 ? 1 : 28));
    if (rec) return { address: rec.address!, family: f };
  }
  throw new Error(`no address for ${host}`);
}

/** A resolver for a udp:// or tcp:// address whose sockets come from the direct outbound's dialer (marked). */
function directPlainResolver(address: string, outbound: DirectOutbound): Resolver {
  return createResolver(address, {
    createUdpSocket: (family: 4 | 6) => outbound.udpSocket(family),
    connect: (h: string, p: number) => outbound.connectTcp({ host: h, port: p }),
  });
}

export interface UpstreamBuildOptions {
  /** Every failed upstream attempt (the engine logs them at warn, rate-limited). */
  onFailure?: (upstream: string, reason: string) => void;
  /** Rule sets dns.rules may name (entries loaded). */
  ruleSets?: Record<string, RuleSetInput>;
}

/**
 * Every upstream socket comes from its outbound: a direct upstream's UDP
 * sockets and TCP streams from the direct dialer (route.mark, interface),
 * DoH from an Agent dialling through the outbound (src/outbound/agent.ts),
 * never a default factory or undici's global agent. A direct DoH upstream
 * given by host name is resolved by the bootstrap: `dns.hostsFile` first,
 * then the bootstrap chain (`dns.bootstrap`, or else the plain upstreams of
 * `dns.upstreams` and `dns.groups` that go direct), never by the chain it belongs to (which
 * would wait on itself) nor the host's resolver (whose queries may be
 * hijacked into sluice).
 *
 * The result routes each query by dns.rules to its group (dns.groups), or
 * to dns.upstreams.
 */
export function buildResolverChain(dns: DnsConfig, outbounds: Map<string, Outbound>, opts: UpstreamBuildOptions = {}): DnsRouter {
  let bootstrap: ResolverChain | null | undefined;
  const hosts = dns.hostsFile === null ? null : new HostsFile(dns.hostsFile);
  const onFailure = opts.onFailure;
  const bootstrapChain = (direct: DirectOutbound): ResolverChain | null => {
    if (bootstrap !== undefined) return bootstrap;
    const all = [...dns.upstreams, ...Object.values(dns.groups).flat()];
    const plain =
      dns.bootstrap.length > 0
        ? dns.bootstrap
        : [...new Set(all.filter((u) => !/^https?:/.test(u.address) && outbounds.get(u.outbound)?.type === 'direct').map((u) => u.address))];
    bootstrap = plain.length > 0 ? new ResolverChain({ resolvers: plain.map((a) => directPlainResolver(a, direct)), ...(onFailure ? { onFailure } : {}) }) : null;
    return bootstrap;
  };
  const build = (list: readonly DnsUpstream[], field: string): ResolverChain => {
    const resolvers: Resolver[] = list.map((u, i) => {
      const outbound = outbounds.get(u.outbound);
      const where = `${field}[${i}]`;
      if (outbound === undefined) throw new EngineSetupError(`${where}.outbound: no outbound named ${JSON.stringify(u.outbound)}`);
      const url = new URL(u.address);
      const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
      const port = url.port === '' ? 53 : Number(url.port);
      if (url.protocol === 'https:' || url.protocol === 'http:') {
        if (outbound.action !== 'connect') throw new EngineSetupError(`${where}.outbound: ${u.outbound} (${outbound.type}) cannot carry DNS-over-HTTPS`);
        let resolve: ((h: string) => Promise<string>) | undefined;
        if (outbound instanceof DirectOutbound && isIP(host) === 0) {
          const chain = bootstrapChain(outbound);
          if (chain === null && hosts === null) {
            // Also found by loadConfig (src/config/dns-checks.ts), so `sluice check` reports it.
            throw new EngineSetupError(`${where}.address: ${dohBootstrapMessage(host)}`);
          }
          resolve = (h: string) => bootstrapResolve(h, hosts, chain);
        }
        return createResolver(u.address, { dispatcher: outboundDispatcher(outbound, {}, resolve) });
      }
      if (outbound instanceof DirectOutbound) return directPlainResolver(u.address, outbound);
      if (url.protocol === 'udp:') {
        if (outbound.openUdp === undefined || !outbound.supportsUdp) throw new EngineSetupError(`${where}: outbound ${u.outbound} cannot carry UDP`);
        return new OutboundUdpResolver(u.address, outbound, host, port, 3000);
      }
      if (url.protocol === 'tcp:') {
        // A TCP resolver whose connections are the outbound's streams.
        return createResolver(u.address, { connect: (h: string, p: number) => outbound.connectTcp({ host: h, port: p }) });
      }
      throw new EngineSetupError(`${where}.address: unsupported scheme ${url.protocol}`);
    });
    return new ResolverChain({ resolvers, ...(onFailure ? { onFailure } : {}) });
  };
  const groups = new Map<string, ResolverChain>();
  for (const [name, list] of Object.entries(dns.groups)) groups.set(name, build(list, `dns.groups.${name}`));
  try {
    const fallback = build(dns.upstreams, 'dns.upstreams');
    return new DnsRouter(dns.rules, fallback, groups, opts.ruleSets ?? {}, bootstrap ? [bootstrap] : []);
  } catch (err) {
    throw new EngineSetupError((err as Error).message);
  }
}

/**
 * A DoH host's address: dns.hostsFile, then the bootstrap chain. The error
 * says what was tried, so the upstream-failure warning explains a DoH
 * upstream that cannot even be reached.
 */
async function bootstrapResolve(host: string, hosts: HostsFile | null, chain: ResolverChain | null): Promise<string> {
  const fromFile = hosts === null ? null : await hosts.lookup(host);
  if (fromFile !== null) return fromFile.address;
  if (chain === null) throw new Error(`DoH host ${host} is not in ${hosts!.path}, and there is no dns.bootstrap or plain upstream to ask`);
  try {
    return (await resolveWith(chain, host, undefined)).address;
  } catch (err) {
    throw new Error(`cannot resolve the DoH host ${host} (${hosts === null ? '' : `not in ${hosts.path}; `}bootstrap: ${(err as Error).message})`);
  }
}
