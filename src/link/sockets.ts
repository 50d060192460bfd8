/**
 * Sockets Node cannot make alone, adopted by net/dgram after the native
 * addon set their options: marked outbound sockets (policy routing keeps
 * them out of the TUN) and transparent listeners (TPROXY).
 */
import net from 'node:net';
import dgram from 'node:dgram';
import { loadNative } from './native.js';

export interface MarkedSocketOptions {
  family: 4 | 6;
  /** SO_MARK; 0 leaves it unset. */
  mark?: number;
  /** SO_BINDTODEVICE. */
  device?: string;
}

/** A net.Socket over a fresh, unconnected TCP socket carrying SO_MARK / SO_BINDTODEVICE; call .connect(). */
export function markedTcpSocket(opts: MarkedSocketOptions, onread?: net.OnReadOpts): net.Socket {
  const native = loadNative();
  const fd = native.createSocket({
    family: opts.family,
    type: 'tcp',
    ...(opts.mark ? { mark: opts.mark } : {}),
    ...(opts.device ? { device: opts.device } : {}),
  });
  return new net.Socket({ fd, readable: true, writable: true, ...(onread !== undefined ? { onread } : {}) });
}

/** A dgram socket over a bound UDP fd the addon made. */
async function adoptUdpFd(fd: number, family: 4 | 6): Promise<dgram.Socket> {
  const sock = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ fd }, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  return sock;
}

/** A UDP socket with SO_MARK / SO_BINDTODEVICE, bound to an ephemeral port. */
export async function markedUdpSocket(opts: MarkedSocketOptions): Promise<dgram.Socket> {
  const native = loadNative();
  const fd = native.createSocket({
    family: opts.family,
    type: 'udp',
    bind: { address: opts.family === 6 ? '::' : '0.0.0.0', port: 0 },
    ...(opts.mark ? { mark: opts.mark } : {}),
    ...(opts.device ? { device: opts.device } : {}),
  });
  return adoptUdpFd(fd, opts.family);
}

/**
 * A UDP socket bound with IP_TRANSPARENT to a (usually non-local) address
 * and port, with SO_MARK / SO_BINDTODEVICE: gateway.preserveSource's
 * upstream UDP socket, sending from the LAN client's own endpoint.
 */
export async function transparentUdpSocket(opts: MarkedSocketOptions & { address: string; port: number }): Promise<dgram.Socket> {
  const fd = loadNative().createSocket({
    family: opts.family,
    type: 'udp',
    transparent: true,
    bind: { address: opts.address, port: opts.port },
    ...(opts.mark ? { mark: opts.mark } : {}),
    ...(opts.device ? { device: opts.device } : {}),
  });
  return adoptUdpFd(fd, opts.family);
}

/**
 * A bound, listening TCP socket carrying SO_MARK, as an fd for
 * `server.listen({ fd })` (sluice's own listeners under route.auto: the
 * accepted sockets and their SYN-ACKs inherit the mark). Throws the native
 * Error whose code is the errno name (EADDRINUSE...).
 */
export function markedTcpListenerFd(address: string, port: number, mark: number, backlog: number): number {
  return loadNative().createSocket({ family: net.isIP(address) === 6 ? 6 : 4, type: 'tcp', mark, bind: { address, port }, listen: backlog });
}

/** A net.Server listening on an IP_TRANSPARENT socket (TPROXY target). */
export async function transparentServer(
  address: string,
  port: number,
  family: 4 | 6,
  onConnection: (socket: net.Socket) => void,
): Promise<net.Server> {
  const native = loadNative();
  // A deep accept queue: TPROXY hands over connections the kernel already
  // completed, so a burst that outruns the event loop must wait in the
  // queue, not overflow it (an overflowed SYN costs the client a 1 s retry).
  // net.Server calls listen() again: for an fd it takes the backlog only as
  // the positional argument after the options.
  const backlog = 4096;
  const fd = native.createSocket({ family, type: 'tcp', transparent: true, reuseAddr: true, bind: { address, port }, listen: backlog });
  // allowHalfOpen: the LAN client's FIN must not close our sending side;
  // the relay ends each direction when the other side of it ends (the
  // server may still be answering a client that half-closed).
  const server = net.createServer({ allowHalfOpen: true }, onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, backlog, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
