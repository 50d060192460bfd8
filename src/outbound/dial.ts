/**
 * Shared plumbing for outbounds that make sockets: one connect budget per
 * attempt (timeout + the caller's AbortSignal), TCP dialing through a marked
 * socket when SO_MARK / SO_BINDTODEVICE is configured (plain net otherwise),
 * and exact-length reads for proxy handshakes.
 *
 * Not a hot path: everything here runs once per flow, before any payload.
 */
import net from 'node:net';
import dns from 'node:dns';
import type { Duplex } from 'node:stream';
import dgram from 'node:dgram';
import { markedTcpSocket, markedUdpSocket } from '../link/sockets.js';
import { UPSTREAM_ONREAD, markSharedReads } from './upstream-read.js';
import { OutboundError, OutboundErrorCode, fromSystemError } from './errors.js';
import { DEFAULT_CONNECT_TIMEOUT_MS } from './types.js';
import type { DialerOptions, LookupFn, SocketTuning } from './types.js';

/** Resolved dialer settings (every field present). */
export interface Dialer {
  readonly outbound: string;
  readonly mark: number;
  readonly device: string | undefined;
  readonly connectTimeoutMs: number;
  readonly noDelay: boolean;
  readonly keepAliveMs: number;
  readonly lookup: LookupFn;
}

export const systemLookup: LookupFn = async (host, family) => {
  const r = await dns.promises.lookup(host, { family: family ?? 0 });
  return { address: r.address, family: r.family === 6 ? 6 : 4 };
};

export function makeDialer(outbound: string, opts: DialerOptions): Dialer {
  return {
    outbound,
    mark: opts.mark ?? 0,
    device: opts.interface === undefined || opts.interface === '' ? undefined : opts.interface,
    connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    noDelay: opts.noDelay ?? true,
    keepAliveMs: opts.keepAliveMs ?? 0,
    lookup: opts.lookup ?? systemLookup,
  };
}

/**
 * One establishment attempt: aborted when the budget runs out or the
 * caller's signal fires; `failure()` is the matching OutboundError. Call
 * `dispose()` when done either way. The dial paths here watch it through
 * `watch` / `unwatch` (a plain callback list); an AbortSignal is made only
 * for code that asks for `signal` (issue 10: no AbortController per flow
 * on the direct path).
 */
export class Attempt {
  private controller: AbortController | null;
  private readonly outbound: string;
  private readonly timeoutMs: number;
  private readonly outer: AbortSignal | undefined;
  private timer: NodeJS.Timeout | null;
  private why: 'timeout' | 'aborted' | null;
  private watchers: (() => void)[] | null;
  private readonly onOuterAbort: () => void;

  constructor(outbound: string, timeoutMs: number, outer: AbortSignal | undefined) {
    this.controller = null;
    this.outbound = outbound;
    this.timeoutMs = timeoutMs;
    this.outer = outer;
    this.why = null;
    this.watchers = null;
    this.onOuterAbort = () => this.abort('aborted');
    this.timer = setTimeout(onAttemptTimeout, timeoutMs, this);
    this.timer.unref?.();
    if (outer !== undefined) {
      if (outer.aborted) this.abort('aborted');
      else outer.addEventListener('abort', this.onOuterAbort, { once: true });
    }
  }

  /** An AbortSignal that fires with the attempt (made on first use). */
  get signal(): AbortSignal {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.why !== null) this.controller.abort(this.failure());
    }
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.why !== null;
  }

  /** Calls `fn` once when the attempt aborts (never if it already has: check `aborted` first). */
  watch(fn: () => void): void {
    (this.watchers ??= []).push(fn);
  }

  unwatch(fn: () => void): void {
    const w = this.watchers;
    if (w === null) return;
    const i = w.indexOf(fn);
    if (i >= 0) w.splice(i, 1);
  }

  /** @internal */
  abort(why: 'timeout' | 'aborted'): void {
    if (this.why !== null) return;
    this.why = why;
    const w = this.watchers;
    this.watchers = null;
    if (w !== null) for (const fn of w) fn();
    if (this.controller !== null) this.controller.abort(this.failure());
  }

  /** The error to throw once aborted. */
  failure(): OutboundError {
    return this.why === 'aborted'
      ? new OutboundError(OutboundErrorCode.ABORTED, 'connect aborted by the caller', { outbound: this.outbound, cause: this.outer?.reason })
      : new OutboundError(OutboundErrorCode.TIMEOUT, `no upstream path within ${this.timeoutMs} ms`, { outbound: this.outbound });
  }

  dispose(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.watchers = null;
    this.outer?.removeEventListener('abort', this.onOuterAbort);
  }
}

function onAttemptTimeout(a: Attempt): void {
  a.abort('timeout');
}

/** Races a promise against the attempt; the promise's late result is ignored. */
export function raceAttempt<T>(p: Promise<T>, attempt: Attempt): Promise<T> {
  if (attempt.aborted) return Promise.reject(attempt.failure());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(attempt.failure());
    attempt.watch(onAbort);
    p.then(
      (v) => {
        attempt.unwatch(onAbort);
        resolve(v);
      },
      (e: unknown) => {
        attempt.unwatch(onAbort);
        reject(e);
      },
    );
  });
}

/** Resolves a domain (IP literals pass through). */
export async function resolveTarget(
  dialer: Dialer,
  host: string,
  family: 4 | 6 | undefined,
  attempt: Attempt,
): Promise<{ address: string; family: 4 | 6 }> {
  const ipFamily = net.isIP(host);
  if (ipFamily !== 0) return { address: host, family: ipFamily as 4 | 6 };
  try {
    return await raceAttempt(dialer.lookup(host, family), attempt);
  } catch (err) {
    if (err instanceof OutboundError) throw err;
    throw fromSystemError(err, dialer.outbound, `resolve ${host}`);
  }
}

export function applyTuning(socket: net.Socket, tuning: SocketTuning): void {
  socket.setNoDelay(tuning.noDelay ?? true);
  if (tuning.keepAliveMs !== undefined && tuning.keepAliveMs > 0) socket.setKeepAlive(true, tuning.keepAliveMs);
}

/**
 * Where dialTcp puts the IPv4 address it connected to on the socket: the
 * flow's remoteDestination without a getpeername(2) per flow (issue 10).
 * Only IPv4: Node accepts no other spelling of an IPv4 literal than the
 * one the kernel reports, while IPv6 text may be written more than one way.
 */
export const DIALLED_V4 = Symbol('sluice.dialledV4');

/**
 * Opens a TCP connection to host:port (domain names resolved through the
 * dialer's lookup), resolving once the three-way handshake completed.
 * `what` names the peer in error messages ("proxy 192.0.2.1:1080").
 */
export async function dialTcp(
  dialer: Dialer,
  host: string,
  port: number,
  family: 4 | 6 | undefined,
  attempt: Attempt,
  what: string,
): Promise<net.Socket> {
  const addr = await resolveTarget(dialer, host, family, attempt);
  let socket: net.Socket;
  try {
    if (dialer.mark !== 0 || dialer.device !== undefined) {
      socket = markedTcpSocket(
        {
          family: addr.family,
          ...(dialer.mark !== 0 ? { mark: dialer.mark } : {}),
          ...(dialer.device !== undefined ? { device: dialer.device } : {}),
        },
        UPSTREAM_ONREAD,
      );
      socket.connect({ host: addr.address, port });
    } else {
      socket = net.connect({ host: addr.address, port, onread: UPSTREAM_ONREAD });
    }
    // Reads into the thread's shared buffer (upstream-read.ts): a relay to a TcpStream takes them from there.
    markSharedReads(socket);
  } catch (err) {
    // Synchronous failures: the native addon missing, EPERM on SO_MARK, no such device.
    throw fromSystemError(err, dialer.outbound, `socket for ${what}`);
  }
  await new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      socket.off('connect', onConnect);
      socket.off('error', onError);
      attempt.unwatch(onAbort);
    };
    const onConnect = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: Error): void => {
      cleanup();
      socket.destroy();
      reject(fromSystemError(err, dialer.outbound, `connect ${what}`));
    };
    const onAbort = (): void => {
      cleanup();
      socket.destroy();
      reject(attempt.failure());
    };
    if (attempt.aborted) {
      onAbort();
      return;
    }
    socket.once('connect', onConnect);
    socket.once('error', onError);
    attempt.watch(onAbort);
  });
  applyTuning(socket, dialer);
  if (addr.family === 4 && (addr.address === host || net.isIPv4(addr.address))) (socket as net.Socket & { [DIALLED_V4]?: string })[DIALLED_V4] = addr.address;
  // Keep TCP half-close end to end: the upstream's FIN must not close our
  // sending side (the client may still be sending); the engine ends each
  // direction when the other side of it ends.
  socket.allowHalfOpen = true;
  return socket;
}

/**
 * Reads exactly n bytes from a paused stream, leaving anything after them
 * buffered in the stream (so bytes the proxy sent right behind its reply
 * reach whoever reads the stream next). Rejects with PROTOCOL when the
 * stream ends first, and with the attempt's failure when aborted.
 */
export function readExactly(stream: Duplex, n: number, attempt: Attempt, outbound: string, what: string): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const cleanup = (): void => {
      stream.off('readable', tryRead);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      attempt.unwatch(onAbort);
    };
    const onEnd = (): void => {
      cleanup();
      reject(new OutboundError(OutboundErrorCode.PROTOCOL, `proxy closed the connection while we waited for ${what}`, { outbound }));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(fromSystemError(err, outbound, `reading ${what}`));
    };
    const onAbort = (): void => {
      cleanup();
      reject(attempt.failure());
    };
    function tryRead(): void {
      const chunk = stream.read(n) as Buffer | null;
      if (chunk === null) {
        if (stream.readableEnded) onEnd();
        return;
      }
      cleanup();
      if (chunk.length !== n) {
        // read(n) hands out a short tail only at end of stream.
        reject(new OutboundError(OutboundErrorCode.PROTOCOL, `proxy closed the connection inside ${what}`, { outbound }));
        return;
      }
      resolve(chunk);
    }
    if (attempt.aborted) {
      onAbort();
      return;
    }
    stream.on('readable', tryRead);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
    attempt.watch(onAbort);
    tryRead();
  });
}

/** A UDP socket for the dialer (marked when configured), bound to an ephemeral port. */
export async function openUdpSocket(dialer: Dialer, family: 4 | 6, attempt: Attempt | null): Promise<dgram.Socket> {
  if (attempt?.aborted) throw attempt.failure();
  try {
    if (dialer.mark !== 0 || dialer.device !== undefined) {
      return await markedUdpSocket({
        family,
        ...(dialer.mark !== 0 ? { mark: dialer.mark } : {}),
        ...(dialer.device !== undefined ? { device: dialer.device } : {}),
      });
    }
    const sock = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(0, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    return sock;
  } catch (err) {
    throw fromSystemError(err, dialer.outbound, 'UDP socket');
  }
}
