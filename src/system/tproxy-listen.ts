/**
 * The TPROXY listeners of gateway mode tproxy: one IP_TRANSPARENT TCP
 * listener on [::]:PORT, which (not being IPV6_V6ONLY) also takes the IPv4
 * connections nftables TPROXYs to the port (their addresses arrive
 * IPv4-mapped); 0.0.0.0:PORT alone when the host has no IPv6.
 */
import type net from 'node:net';
import { transparentServer } from '../link/sockets.js';
import type { Logger } from '../engine/logger.js';

export async function startTproxyListeners(port: number, onConnection: (socket: net.Socket) => void, log: Logger): Promise<net.Server[]> {
  try {
    const dual = await transparentServer('::', port, 6, onConnection);
    log.info({ address: '[::]', port }, 'tproxy listening');
    return [dual];
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') throw new Error(`gateway.tproxyPort: cannot listen on [::]:${port}: ${(err as Error).message}`);
  }
  try {
    const v4 = await transparentServer('0.0.0.0', port, 4, onConnection);
    log.info({ address: '0.0.0.0', port }, 'tproxy listening');
    return [v4];
  } catch (err) {
    throw new Error(`gateway.tproxyPort: cannot listen on 0.0.0.0:${port}: ${(err as Error).message}`);
  }
}
