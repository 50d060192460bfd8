/**
 * Carries one TCP flow between the client's stream (from the stack) and the
 * upstream stream (from an outbound), with backpressure both ways,
 * half-close both ways, and byte counts for the flow log. An error on one
 * side resets the other: an upstream reset becomes a RST to the client and
 * a client reset a RST to the upstream, never a FIN.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TcpStream, type RoomWaiter } from '../stack/tcp-stream.js';
import { giveBackChunk } from '../stack/chunk-pool.js';
import { READ_BYTES, setReadSink, type ReadSink } from '../outbound/upstream-read.js';

export interface RelayResult {
  bytesUp: number;
  bytesDown: number;
  /** 'fin' both ways, or which side failed first and how. */
  close: string;
}

/** Where a stream finds the relay it belongs to (one property per stream, read by the shared handlers). */
const RELAY = Symbol('sluice.relay');
type Side = Duplex & { [RELAY]?: Relay };

/**
 * Upload bytes after which a relay from a TcpStream to a kernel socket
 * reads the client into pooled chunks (src/stack/chunk-pool.ts): a bulk
 * flow, not the first request of every connection (whose set-up then
 * costs nothing more).
 */
const LEND_AFTER_BYTES = 256 * 1024;

/**
 * One relay's state. The stream events are handled by the module's shared
 * functions below (the stream is `this`, the relay hangs off it), not by
 * closures made per flow (issue 10: connection set-up cost).
 */
class Relay implements RelayResult, ReadSink, RoomWaiter {
  bytesUp = 0;
  bytesDown = 0;
  close = 'fin';
  open = 2;
  finished = false;
  /** shutdownRelay ran: the stop is closing this flow with FINs. */
  shutDown = false;
  /**
   * The client's pooled chunks written upstream whose write callback has
   * not come yet, oldest first (a socket completes its writes in order).
   * Null while the client's chunks are not pooled.
   */
  lent: Buffer[] | null = null;
  /** The upstream write callback that gives the oldest lent chunk back (made once the flow is a bulk one). */
  chunkWritten: ((err?: Error | null) => void) | null = null;

  constructor(
    readonly client: Duplex,
    readonly upstream: Duplex,
    /** Shared by many relays: the caller's context (`ctx`) says whose result it is. */
    private readonly done: (r: RelayResult, ctx: unknown) => void,
    readonly ctx: unknown,
    /** Sees the client's bytes as they pass until it returns false (null: nothing watches). */
    public observe: ((ctx: unknown, chunk: Buffer) => boolean) | null,
  ) {}

  /**
   * The upstream socket's bytes, in its shared read buffer (set as the
   * socket's sink when the client is a TcpStream: upstream-read.ts). Once
   * the send ring has less room than one read, the socket pauses until the
   * peer's ACKs free a read's worth (roomAvailable), so every read fits
   * whole: nothing is copied out and queued, which cost a Buffer (and page
   * faults, and GC) per read each time a bulk download filled the ring.
   * What the ring cannot take all the same (the stream's own queue is not
   * empty) is copied and written the ordinary way; false then pauses the
   * socket until the client drains.
   */
  upstreamRead(buf: Buffer, nread: number): boolean {
    this.bytesDown += nread;
    const client = this.client as TcpStream;
    const taken = client.writeNow(buf, nread);
    if (taken === nread) {
      if (client.sendSpace >= READ_BYTES) return true;
      client.waitForRoom(this, READ_BYTES);
      return false;
    }
    return client.write(Buffer.copyBytesFrom(buf, taken, nread - taken));
  }

  /** The client's send ring has a read's worth of room again: read on. */
  roomAvailable(): void {
    if (!this.upstream.destroyed) this.upstream.resume();
  }

  finish(): void {
    if (--this.open > 0 || this.finished) return;
    this.finished = true;
    this.done(this, this.ctx);
  }
}

function onClientData(this: Side, c: Buffer): void {
  const r = this[RELAY]!;
  r.bytesUp += c.length;
  if (r.observe !== null && !r.observe(r.ctx, c)) r.observe = null;
  const lent = r.lent;
  if (lent !== null && (this as TcpStream).lendsChunks) {
    // Every chunk the lending stream emits is pooled; the callback gives it back.
    lent.push(c);
    if (!r.upstream.write(c, r.chunkWritten!)) this.pause();
    return;
  }
  if (!r.upstream.write(c)) this.pause();
  if (r.bytesUp >= LEND_AFTER_BYTES && r.observe === null && lent === null) startLending(r);
}

/**
 * From now on the client's stream reads into pooled chunks, each given
 * back once the upstream socket's write of it completed: the write
 * callback is the point after which Node reads the chunk no more (a
 * kernel socket; a TLS socket has copied it into its records). Only for a
 * TcpStream into a net.Socket, and only once nothing observes the bytes (a
 * sniffer may keep what it saw). A write that fails ends the lending: the
 * chunks still out are left to the GC, never handed out again.
 */
function startLending(r: Relay): void {
  const client = r.client;
  if (!(client instanceof TcpStream) || !(r.upstream instanceof Socket) || r.shutDown) return;
  const lent: Buffer[] = [];
  r.lent = lent;
  r.chunkWritten = (err) => {
    if (err) {
      client.lendsChunks = false;
      lent.length = 0;
      return;
    }
    const c = lent.shift();
    if (c !== undefined && client.lendsChunks) giveBackChunk(c);
  };
  client.lendsChunks = true;
}
function onUpstreamData(this: Side, c: Buffer): void {
  const r = this[RELAY]!;
  r.bytesDown += c.length;
  if (!r.client.write(c)) this.pause();
}
function onUpstreamDrain(this: Side): void {
  this[RELAY]!.client.resume();
}
function onClientDrain(this: Side): void {
  this[RELAY]!.upstream.resume();
}
function onClientEnd(this: Side): void {
  this[RELAY]!.upstream.end();
}
function onUpstreamEnd(this: Side): void {
  this[RELAY]!.client.end();
}
function onClientError(this: Side, err: Error & { code?: string }): void {
  const r = this[RELAY]!;
  if (r.close === 'fin') r.close = `client ${err.code ?? err.message}`;
  abort(r.upstream, null);
}
function onUpstreamError(this: Side, err: Error & { code?: string }): void {
  const r = this[RELAY]!;
  if (r.close === 'fin') r.close = `upstream ${err.code ?? err.message}`;
  abort(r.client, err);
}
function onClientClose(this: Side): void {
  const r = this[RELAY]!;
  if (!r.upstream.destroyed && !r.upstream.writableEnded) r.upstream.end();
  r.finish();
}
function onUpstreamClose(this: Side): void {
  const r = this[RELAY]!;
  if (!r.client.destroyed && !r.client.writableEnded) r.client.end();
  r.finish();
}
/** After shutdownRelay: bytes from either peer are not taken; that side is reset. */
function onDataAfterShutdown(this: Side): void {
  abort(this, null);
}

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
  const r = (client as Side)[RELAY];
  if (r === undefined || r.finished || r.shutDown) return false;
  r.shutDown = true;
  const upstream = r.upstream;
  // Chunks read from now on go nowhere (onDataAfterShutdown): not pooled,
  // and the upstream's bytes come as 'data' again.
  if (client instanceof TcpStream) client.lendsChunks = false;
  if (upstream instanceof Socket) setReadSink(upstream, undefined);
  client.off('data', onClientData);
  upstream.off('data', onUpstreamData);
  client.on('data', onDataAfterShutdown);
  upstream.on('data', onDataAfterShutdown);
  // Reading on, so the peers' FINs are seen and both sides can close.
  client.resume();
  upstream.resume();
  if (!upstream.destroyed && !upstream.writableEnded) upstream.end();
  if (!client.destroyed && !client.writableEnded) client.end();
  return true;
}

/**
 * Closes a client stream no relay carries yet (its first bytes being
 * sniffed, its upstream still being dialled) the orderly way, as sluice
 * stops: a FIN after whatever is queued (RFC 9293 3.6). The caller has
 * taken its own 'data' listener off; bytes still buffered are dropped, and
 * bytes the client sends after this are not taken and reset the connection, as a kernel does to a connection
 * closed with unread data (RFC 1122 4.2.2.13). Reading goes on so the
 * client's FIN is seen: the stream's 'close' comes once the client has
 * answered with it, and the caller bounds that wait. Returns false when
 * the stream cannot take a FIN any more (destroyed, or ended already).
 */
export function closeUnrelayed(client: Duplex): boolean {
  if (client.destroyed || client.writableEnded) return false;
  // What came before the FIN (buffered while the flow waited) is dropped: only later bytes reset.
  while (client.read() !== null);
  client.on('data', onDataAfterShutdown);
  client.resume();
  client.end();
  return true;
}

/**
 * Starts the relay; returns its result object, whose byte counts grow per
 * chunk as data moves (the control API reads them live) and which `done`
 * receives, with `ctx`, when both sides have closed. `observe` (with `ctx`)
 * sees each chunk from the client before it goes upstream, until it
 * returns false (the flow log's sniffing of a flow routed before its first
 * bytes). `done` and `observe` can be shared by every relay (issue 10: no
 * closure per flow).
 */
export function relay<C>(
  client: Duplex,
  upstream: Duplex,
  firstBytes: readonly Uint8Array[],
  done: (r: RelayResult, ctx: C) => void,
  ctx: C,
  observe: ((ctx: C, chunk: Buffer) => boolean) | null = null,
): RelayResult {
  const r = new Relay(client, upstream, done as (r: RelayResult, ctx: unknown) => void, ctx, observe as ((ctx: unknown, chunk: Buffer) => boolean) | null);
  (client as Side)[RELAY] = r;
  (upstream as Side)[RELAY] = r;
  for (const chunk of firstBytes) {
    r.bytesUp += chunk.length;
    upstream.write(chunk);
  }
  // The upstream's reads straight into the client's send ring, when both
  // allow it and nothing read earlier waits in the socket's buffer (it goes
  // first, as 'data').
  if (client instanceof TcpStream && upstream instanceof Socket && upstream.readableLength === 0) setReadSink(upstream, r);
  client.on('data', onClientData);
  upstream.on('drain', onUpstreamDrain);
  upstream.on('data', onUpstreamData);
  client.on('drain', onClientDrain);
  client.on('end', onClientEnd);
  upstream.on('end', onUpstreamEnd);
  client.on('error', onClientError);
  upstream.on('error', onUpstreamError);
  client.on('close', onClientClose);
  upstream.on('close', onUpstreamClose);
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
