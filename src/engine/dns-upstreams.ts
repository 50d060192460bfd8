/**
 * The DNS upstream chain from the config: each upstream is reached through
 * its named outbound. UDP through a SOCKS5 outbound rides a UDP ASSOCIATE;
 * TCP through any connecting outbound uses its stream; DoH through a proxy
 * outbound runs undici over a TLS session on the outbound's stream.
 */
import { isIP } from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { Agent } from 'undici';
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

/**
 * An undici dispatcher whose connections are made through `outbound`
 * (SOCKS5 CONNECT, HTTP CONNECT, ...): for https origins the TLS session
 * runs inside the outbound's stream, with the usual certificate checks.
 * `tlsOptions` adds trust anchors (tests use a private CA).
 */
export function outboundDispatcher(outbound: Outbound, tlsOptions: tls.ConnectionOptions = {}): Agent {
  return new Agent({
    connect: (opts, callback) => {
      const port = Number(opts.port) || (opts.protocol === 'https:' ? 443 : 80);
      outbound.connectTcp({ host: opts.hostname, port }).then(
        (raw: Duplex) => {
          if (opts.protocol !== 'https:') return callback(null, raw as never);
          const servername = opts.servername ?? (isIP(opts.hostname) === 0 ? opts.hostname : undefined);
          const secure = tls.connect({ ...tlsOptions, socket: raw, ...(servername !== undefined ? { servername } : {}), ALPNProtocols: ['http/1.1'] });
          secure.once('secureConnect', () => callback(null, secure));
          secure.once('error', (err) => callback(err, null));
        },
        (err: Error) => callback(err, null),
      );
    },
  });
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
    if (url.protocol === 'https:' || url.protocol === 'http:') {
      if (outbound.action !== 'connect') throw new EngineSetupError(`${where}.outbound: ${u.outbound} (${outbound.type}) cannot carry DNS-over-HTTPS`);
      return createResolver(u.address, { dispatcher: outboundDispatcher(outbound) });
    }
    throw new EngineSetupError(`${where}.address: unsupported scheme ${url.protocol}`);
  });
  return new ResolverChain({ resolvers });
}
