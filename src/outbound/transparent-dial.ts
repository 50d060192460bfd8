/**
 * gateway.preserveSource: a direct upstream connection that leaves with the
 * LAN client's address as its source, so the server sees the real client.
 * The socket is IP_TRANSPARENT (ip(7): binding a non-local address) and
 * bound to (client address, any port) before connecting; the gateway's
 * nftables `socket transparent 1` rule and fwmark route (src/system/gateway.ts)
 * deliver the server's replies, addressed to the client, back to it.
 *
 * The direct outbound makes it when a flow's Target carries a `source`
 * (the engine sets one under gateway.preserveSource), so a direct member of
 * a group preserves the source as a direct rule does.
 *
 * Runs once per flow, before any payload: not a hot path.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { loadNative } from '../link/native.js';

export interface TransparentDialOptions {
  /** The LAN client's address: the upstream socket's source. */
  source: string;
  host: string;
  port: number;
  mark: number | null;
  device: string | null;
  timeoutMs: number;
  signal?: AbortSignal;
}

/** The client address without the IPv4-mapped prefix a dual-stack socket reports. */
export function unmapAddress(address: string): string {
  return address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}

/** Whether the flow can use a source-preserving dial (IP destination of the client's own family). */
export function canPreserve(source: string, host: string): boolean {
  const f = net.isIP(host);
  return f !== 0 && f === net.isIP(source);
}

export function transparentDial(o: TransparentDialOptions): Promise<Duplex> {
  const family = net.isIP(o.host) === 6 ? 6 : 4;
  let fd: number;
  try {
    fd = loadNative().createSocket({
      family,
      type: 'tcp',
      transparent: true,
      bind: { address: o.source, port: 0 },
      ...(o.mark !== null && o.mark !== 0 ? { mark: o.mark } : {}),
      ...(o.device !== null ? { device: o.device } : {}),
    });
  } catch (err) {
    return Promise.reject(new Error(`transparent socket from ${o.source}: ${(err as Error).message}`));
  }
  // allowHalfOpen: the server's FIN must not end what the client still sends (see dialTcp).
  const sock = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
  return new Promise<Duplex>((resolve, reject) => {
    const done = (err: Error | null): void => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      sock.off('error', onError);
      if (err === null) {
        sock.setNoDelay(true);
        resolve(sock);
      } else {
        sock.destroy();
        reject(err);
      }
    };
    const onError = (err: Error): void => done(err);
    const onAbort = (): void => done(new Error('aborted'));
    const timer = setTimeout(() => done(new Error(`connect to ${o.host}:${o.port} timed out`)), o.timeoutMs);
    if (o.signal?.aborted === true) return done(new Error('aborted'));
    o.signal?.addEventListener('abort', onAbort, { once: true });
    sock.once('error', onError);
    sock.connect({ host: o.host, port: o.port }, () => done(null));
  });
}
