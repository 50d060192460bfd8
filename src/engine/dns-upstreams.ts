/**
 * The DNS upstream chain from the config: each upstream is reached through
 * its named outbound. UDP through a SOCKS5 outbound rides a UDP ASSOCIATE;
 * TCP through any connecting outbound uses its stream; DoH goes direct
 * (through a proxy it is not supported yet, and the config check says so
 * at start-up rather than failing at the first query).
 */
import { isIP } from 'node:net';
import type { DnsConfig } from '../config/types.js';
import type { Outbound } from '../outbound/types.js';
import { createResolver, ResolverChain, type QueryOptions, type Resolver } from '../dns/resolver.js';
import { parseMessage } from '../dns/message.js';
import { markedUdpSocket } from '../link/sockets.js';

export class EngineSetupError extends Error {
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

export function buildResolverChain(dns: DnsConfig, outbounds: Map<string, Outbound>, directMark: number | null): ResolverChain {
  const resolvers: Resolver[] = dns.upstreams.map((u, i) => {
    const outbound = outbounds.get(u.outbound);
    const where = `dns.upstreams[${i}]`;
    if (outbound === undefined) throw new EngineSetupError(`${where}.outbound: no outbound named ${JSON.stringify(u.outbound)}`);
    const url = new URL(u.address);
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const port = url.port === '' ? 53 : Number(url.port);
    if (outbound.type === 'direct') {
      return createResolver(u.address, {
        ...(directMark !== null ? { createUdpSocket: (family: 4 | 6) => markedUdpSocket({ family, mark: directMark }) } : {}),
        connect: (h: string, p: number) => outbound.connectTcp({ host: h, port: p }),
      });
    }
    if (url.protocol === 'udp:') {
      if (outbound.openUdp === undefined || !outbound.supportsUdp) throw new EngineSetupError(`${where}: outbound ${u.outbound} cannot carry UDP`);
      return new OutboundUdpResolver(u.address, outbound, host, port, 3000);
    }
    if (url.protocol === 'tcp:') {
      // A TCP resolver whose connections are the outbound's streams.
      return createResolver(u.address, { connect: (h: string, p: number) => outbound.connectTcp({ host: h, port: p }) });
    }
    throw new EngineSetupError(`${where}: DNS-over-HTTPS through outbound ${u.outbound} (${outbound.type}) is not supported; use outbound: direct`);
  });
  return new ResolverChain({ resolvers });
}
