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
export function relay(client: Duplex, upstream: Duplex, firstBytes: readonly Uint8Array[], done: (r: RelayResult) => void): RelayResult {
  const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'fin' };
  let open = 2;
  let finished = false;
  const finish = (): void => {
    if (--open > 0 || finished) return;
    finished = true;
    done(r);
  };
  for (const chunk of firstBytes) {
    r.bytesUp += chunk.length;
    upstream.write(chunk);
  }
  client.on('data', (c: Buffer) => {
    r.bytesUp += c.length;
    if (!upstream.write(c)) client.pause();
  });
  upstream.on('drain', () => client.resume());
  upstream.on('data', (c: Buffer) => {
    r.bytesDown += c.length;
    if (!client.write(c)) upstream.pause();
  });
  client.on('drain', () => upstream.resume());
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
