/**
 * The one factory for undici dispatchers sluice uses: every connection an
 * Agent makes is dialled through an outbound (direct: the dialer in
 * dial.ts, which puts route.mark / SO_BINDTODEVICE on the socket; proxies:
 * their stream to the proxy, itself dialled there), so an HTTP client
 * inside sluice (DoH, anything added later) cannot open an unmarked socket
 * that would loop back into the TUN. For https origins the TLS session runs
 * inside that stream, with the usual certificate checks.
 *
 * `refuseGlobalDispatch()` (called by `sluice run`) replaces undici's global
 * dispatcher, the one `request()` without a dispatcher falls back to, by one
 * that refuses: a forgotten dispatcher fails loudly instead of leaking a
 * socket past the mark. (Node's built-in fetch keeps its own dispatcher on
 * Node 20; test/outbound/socket-guard.test.ts forbids fetch in src/.)
 */
import { SluiceError } from '../errors.js';
import { isIP } from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Agent, buildConnector } from 'undici';
import { undici, whenUndiciLoads } from './undici.js';
import type { Outbound } from './types.js';
import { bindShared, SharedScope } from '../engine/flow-guard.js';

export interface DialingAgentOptions {
  /** Extra TLS options (trust anchors: tests use a private CA). */
  tls?: tls.ConnectionOptions;
  /**
   * Resolves an origin's host name before dialling (the DoH bootstrap, so a
   * DoH upstream's own name never goes to the resolver chain it is part of).
   * Absent: the host name goes to the outbound (its lookup, or the proxy).
   */
  resolve?: (host: string) => Promise<string>;
}

/** An undici Agent whose every connection is `outbound.connectTcp`. */
export function dialingAgent(outbound: Outbound, opts: DialingAgentOptions = {}): Agent {
  const tlsOptions = opts.tls ?? {};
  const connect: buildConnector.connector = (o, callback) => {
    const port = Number(o.port) || (o.protocol === 'https:' ? 443 : 80);
    const hostname = o.hostname.startsWith('[') ? o.hostname.slice(1, -1) : o.hostname;
    const resolve = opts.resolve;
    const address = resolve !== undefined && isIP(hostname) === 0 ? resolve(hostname) : Promise.resolve(hostname);
    address
      .then((host) => outbound.connectTcp({ host, port }))
      .then(
        (raw: Duplex) => {
          if (o.protocol !== 'https:') return callback(null, raw as never);
          const servername = o.servername ?? (isIP(hostname) === 0 ? hostname : undefined);
          // host: what the certificate is checked against (without it, tls checks "localhost"),
          // also for an IP-literal origin, which gets no SNI (RFC 6066 3).
          const secure = tls.connect({ ...tlsOptions, socket: raw, host: hostname, ...(servername !== undefined ? { servername } : {}), ALPNProtocols: ['http/1.1'] });
          secure.once('secureConnect', () => callback(null, secure));
          secure.once('error', (err) => callback(err, null));
        },
        (err: Error) => callback(err, null),
      );
  };
  // A pooled connection outlives the flow whose request first dialled it: it is made in the agent's
  // own async context, so its later errors are the agent's, not that flow's (src/engine/flow-guard.ts).
  const { Agent } = undici();
  return new Agent({ connect: bindShared(new SharedScope(`http agent via ${outbound.name}`), connect) });
}

export class UnmarkedDispatchError extends SluiceError {
  readonly code = 'SLUICE_UNMARKED_DISPATCH';
}

/** Makes undici's global dispatcher refuse every connection (see the module comment). */
export function refuseGlobalDispatch(): void {
  // When undici loads (src/outbound/undici.ts): before that nothing can dispatch.
  whenUndiciLoads(({ Agent, setGlobalDispatcher }) => setGlobalDispatcher(
    new Agent({
      connect: (o, callback) =>
        callback(new UnmarkedDispatchError(`refused a connection to ${o.hostname}:${o.port} through undici's global dispatcher: sluice's sockets must come from dialingAgent() (src/outbound/agent.ts) so they carry route.mark`), null),
    }),
  ));
}
