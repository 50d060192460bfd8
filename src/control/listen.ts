/**
 * The `api.listen` forms: "host:port" (an IPv4 literal or localhost),
 * "[v6]:port", or an absolute unix socket path. One parser for the config
 * check, the server and the `ready` line.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import { isIP } from 'node:net';
import { markedTcpListenerFd } from '../link/sockets.js';

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/** Parses an api.listen value; null when it is not one of the accepted forms. */
export function parseListen(text: string): ListenAddress | null {
  if (text.startsWith('/')) return text.length <= 107 && !text.includes('\0') ? { kind: 'unix', path: text } : null;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+|localhost)):(\d{1,5})$/.exec(text);
  if (m === null) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  const host = m[1] ?? m[2]!;
  if (m[1] !== undefined && isIP(host) !== 6) return null;
  if (m[2] !== undefined && host !== 'localhost' && isIP(host) !== 4) return null;
  return { kind: 'tcp', host, port };
}

/** Whether only this machine can reach the address: loopback, localhost, or a unix socket. */
export function isLocalOnly(a: ListenAddress): boolean {
  if (a.kind === 'unix') return true;
  if (a.host === 'localhost' || a.host === '::1') return true;
  return isIP(a.host) === 4 && a.host.startsWith('127.');
}

/** The address as a URL authority (for logs and the dashboard's hint). */
export function formatListen(a: ListenAddress): string {
  if (a.kind === 'unix') return a.path;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * Binds `server` to `a` (a unix socket path replaces a socket already there,
 * a killed run's). A failure rejects with an Error naming `field` and what
 * the kernel said, then `remedy`; nothing is left listening.
 */
export async function bindServer(server: Server, a: ListenAddress, field: string, remedy: string, mark = 0): Promise<void> {
  const fail = (err: NodeJS.ErrnoException): Error =>
    new Error(`${field}: cannot listen on ${formatListen(a)}: ${err.code ?? ''}${err.code !== undefined ? ' ' : ''}(${listenHint(err.code)}); ${remedy}`);
  let fd: number | null = null;
  if (mark !== 0 && a.kind === 'tcp') {
    // route.auto: the listener carries route.mark (accepted sockets and
    // their SYN-ACKs inherit it), so answers to a dashboard on the LAN take
    // the main table, not the TUN. Node cannot set SO_MARK: the native
    // addon makes and binds the socket, the server adopts it.
    const host = a.host === 'localhost' ? '127.0.0.1' : a.host;
    try {
      fd = markedTcpListenerFd(host, a.port, mark, 511);
    } catch (err) {
      throw fail(err as NodeJS.ErrnoException);
    }
  }
  if (a.kind === 'unix') {
    try {
      if (lstatSync(a.path).isSocket()) unlinkSync(a.path);
    } catch {
      // absent
    }
  }
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      reject(fail(err));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    if (fd !== null) server.listen({ fd }, 511);
    else if (a.kind === 'unix') server.listen(a.path);
    else server.listen({ host: a.host, port: a.port, exclusive: true });
  });
}

export function listenHint(code: string | undefined): string {
  switch (code) {
    case 'EADDRINUSE':
      return 'address already in use: another sluice, mihomo or clash may be listening there';
    case 'EADDRNOTAVAIL':
      return 'no interface of this machine has that address';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOENT':
      return "the socket's directory does not exist";
    default:
      return 'see the error code';
  }
}
