/**
 * Carries one TCP flow between the client's stream (from the stack) and the
 * upstream stream (from an outbound), with backpressure both ways,
 * half-close both ways, and byte counts for the flow log. An error on one
 * side resets the other: an upstream reset becomes a RST to the client and
 * a client reset a RST to the upstream, never a FIN.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface RelayResult {
  bytesUp: number;
  bytesDown: number;
  /** 'fin' both ways, or which side failed first and how. */
  close: string;
}

/**
 * Starts the relay; returns its result object, whose byte counts grow per
 * chunk as data moves (the control API reads them live) and which `done`
 * receives when both sides have closed.
 */
/** The event shutdownRelay() sends to a relay's client stream (a symbol: no other listener can collide). */
const kShutdown = Symbol('sluice.relay.shutdown');

/**
 * Closes a relayed flow the orderly way, as sluice stops: a FIN to both
 * peers after whatever is still queued for them, the relay's byte copying
 * ended. Data either peer sends after that is not taken: that side is
 * reset, as a kernel resets a connection closed with unread data (RFC 1122
 * 4.2.2.13, RFC 9293 3.6.1). The relay's `done` still comes once both sides
 * have closed (the peers answer with their FINs); the caller bounds the
 * wait and destroys what is left. Returns false when `client` carries no
 * relay (not started yet, or finished).
 */
export function shutdownRelay(client: Duplex): boolean {
  return client.emit(kShutdown);
}

export function relay(client: Duplex, upstream: Duplex, firstBytes: readonly Uint8Array[], done: (r: RelayResult) => void): RelayResult {
  const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'fin' };
  let open = 2;
  let finished = false;
  const finish = (): void => {
    if (--open > 0 || finished) return;
    finished = true;
    client.removeAllListeners(kShutdown);
    done(r);
  };
  for (const chunk of firstBytes) {
    r.bytesUp += chunk.length;
    upstream.write(chunk);
  }
  const fromClient = (c: Buffer): void => {
    r.bytesUp += c.length;
    if (!upstream.write(c)) client.pause();
  };
  const fromUpstream = (c: Buffer): void => {
    r.bytesDown += c.length;
    if (!client.write(c)) upstream.pause();
  };
  client.on('data', fromClient);
  upstream.on('drain', () => client.resume());
  upstream.on('data', fromUpstream);
  client.on('drain', () => upstream.resume());
  client.once(kShutdown, () => {
    client.off('data', fromClient);
    upstream.off('data', fromUpstream);
    client.on('data', () => abort(client, null));
    upstream.on('data', () => abort(upstream, null));
    // Reading on, so the peers' FINs are seen and both sides can close.
    client.resume();
    upstream.resume();
    if (!upstream.destroyed && !upstream.writableEnded) upstream.end();
    if (!client.destroyed && !client.writableEnded) client.end();
  });
  client.on('end', () => upstream.end());
  upstream.on('end', () => client.end());
  client.on('error', (err: Error & { code?: string }) => {
    if (r.close === 'fin') r.close = `client ${err.code ?? err.message}`;
    abort(upstream, null);
  });
  upstream.on('error', (err: Error & { code?: string }) => {
    if (r.close === 'fin') r.close = `upstream ${err.code ?? err.message}`;
    abort(client, err);
  });
  client.on('close', () => {
    if (!upstream.destroyed && !upstream.writableEnded) upstream.end();
    finish();
  });
  upstream.on('close', () => {
    if (!client.destroyed && !client.writableEnded) client.end();
    finish();
  });
  // A FIN that came before the relay started (while the flow was sniffed,
  // or right behind a proxy's reply) already fired 'end': pass it on now,
  // else the other side waits for an EOF that never comes.
  if (client.readableEnded) upstream.end();
  if (upstream.readableEnded) client.end();
  client.resume();
  return r;
}

/**
 * Ends a side abortively: a failure must reach the other peer as a RST,
 * never as a FIN it would take for a complete stream (a reset upload is not
 * a finished one). A TcpStream resets on destroy; a kernel socket's destroy()
 * is close(), which sends a FIN, so it takes resetAndDestroy (SO_LINGER 0).
 */
function abort(side: Duplex, err: Error | null): void {
  const reset = (side as Partial<Pick<Socket, 'resetAndDestroy'>>).resetAndDestroy;
  if (typeof reset === 'function' && !side.destroyed) {
    try {
      reset.call(side);
      return;
    } catch {
      // Not a TCP handle (ERR_INVALID_HANDLE_TYPE): destroy below.
    }
  }
  side.destroy(err ?? undefined);
}
