/**
 * Relays one TUN TCP flow to its upstream by driving the flow's
 * TcpConnection itself: no Node stream on the flow's side (issue 10, ask
 * 4: 10,000 idle flows under 100 MB). A TcpStream (a Duplex with its two
 * stream states, its event table and bound callbacks) costs ~700 bytes per
 * flow and a turn of stream machinery per read; a flow routed before its
 * first bytes (FlowRouter.routeBeforeAccept: the default policy's every
 * flow) needs none of it: the relay reads the receive ring straight into
 * what it writes upstream, and writes what the upstream sends straight into
 * the send ring (with a socket that reads into the thread's shared buffer:
 * upstream-read.ts, one copy and nothing allocated).
 *
 * What relay.ts does for two streams, this does for a flow and a stream:
 * backpressure both ways (a blocked upstream leaves bytes in the receive
 * ring, the advertised window shrinks and the client slows down; a full
 * send ring pauses the upstream's reads), half-close both ways (the
 * client's FIN becomes the upstream's end() once its bytes are written,
 * the upstream's EOF a FIN after its bytes), byte counts for the flow log,
 * and an error on one side resets the other (RFC 9293 3.10.4 ABORT on the
 * client; SO_LINGER 0 on a kernel socket), never a FIN.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { FlowApp, TcpCloseReason, TcpFlow } from '../stack/tcp-flow.js';
import { CHUNK_BYTES, giveBackChunk, takeChunk } from '../stack/chunk-pool.js';
import { FLOOR_BYTES } from '../tcp/buffer-budget.js';
import { READ_BYTES, setReadSink, type ReadSink } from '../outbound/upstream-read.js';
import type { RelayResult } from './relay.js';

/** Where the upstream's handlers find their relay (one property per stream, read by the shared handlers below). */
const FLOW_RELAY = Symbol('sluice.flowRelay');
type Upstream = Duplex & { [FLOW_RELAY]?: FlowRelay };

/**
 * Upload bytes after which the client's bytes are read into pooled chunks
 * (src/stack/chunk-pool.ts), each given back once the upstream socket has
 * written it: a bulk flow, not the first request of every connection.
 */
const LEND_AFTER_BYTES = 256 * 1024;

/** The error code a client-side close gives the flow line ("client ECONNRESET"), as TcpFlow.closeError names it. */
const CLOSE_CODE: Record<Exclude<TcpCloseReason, 'fin'>, string> = { reset: 'ECONNRESET', timeout: 'ETIMEDOUT', aborted: 'ECONNABORTED' };

export class FlowRelay implements FlowApp, ReadSink, RelayResult {
  bytesUp = 0;
  bytesDown = 0;
  /** 'fin' both ways, or which side failed first and how. */
  close = 'fin';
  /** Sides not yet done (the client's: both directions ended, or reset; the upstream's: 'close'). */
  private open = 2;
  private finished = false;
  /** The relay let go of the flow (TcpFlow.appGone): nothing more is read from or written to it. */
  private clientGone = false;
  /** The client's FIN and every byte before it were read from the connection. */
  private clientEof = false;
  /** upstream.end() was called (after clientEof, or by shutdown()). */
  private upEnded = false;
  /** upstream.write returned false: reading the client waits for 'drain'. */
  private upBlocked = false;
  /** The upstream's EOF (or close) came: the client gets a FIN once downPending is in the ring. */
  private downEnded = false;
  /** Our FIN is queued on the connection. */
  private finQueued = false;
  /** The connection closed with its FINs exchanged while the receive ring still had bytes for the upstream. */
  private clientClosed = false;
  /** The upstream's reads are paused until the send ring has roomWanted bytes free (or downPending went in). */
  private upstreamPaused = false;
  private roomWanted = 0;
  /** Upstream bytes the send ring could not take yet (from offset downOffset). */
  private downPending: Buffer | null = null;
  private downOffset = 0;
  /** shutdown() ran: the stop is closing this flow with FINs. */
  private shutDown = false;
  /**
   * The client's pooled chunks written upstream whose write callback has
   * not come yet, oldest first (a socket completes its writes in order);
   * null while the client's bytes are not read into pooled chunks, and
   * for good once a write failed or the relay is shut down.
   */
  private lent: Buffer[] | null = null;
  private lendingOver = false;
  /** The upstream write callback that gives the oldest lent chunk back (made once the flow is a bulk one). */
  private chunkWritten: ((err?: Error | null) => void) | null = null;

  constructor(
    private readonly flow: TcpFlow,
    readonly upstream: Duplex,
    /** Shared by many relays: the caller's context (`ctx`) says whose result it is. */
    private readonly done: (r: RelayResult, ctx: unknown) => void,
    private readonly ctx: unknown,
    /** Sees the client's bytes as they pass until it returns false (null: nothing watches). */
    private observe: ((ctx: unknown, chunk: Buffer) => boolean) | null,
  ) {}

  /**
   * Starts relaying (once the flow is attached to this relay:
   * TcpFlowRequest.acceptWith): the upstream's handlers, its reads into
   * the send ring when it can, and an EOF that came before the relay did.
   */
  start(): void {
    const up = this.upstream as Upstream;
    up[FLOW_RELAY] = this;
    // What the socket read before the relay started waits in its buffer and comes first, as 'data'.
    if (up instanceof Socket && up.readableLength === 0) setReadSink(up, this);
    up.on('data', onUpstreamData);
    up.on('drain', onUpstreamDrain);
    up.on('end', onUpstreamEnd);
    up.on('error', onUpstreamError);
    up.on('close', onUpstreamClose);
    // A FIN from the upstream before the relay started (right behind a proxy's reply) already fired 'end'.
    if (up.readableEnded) this.upstreamEnded();
    up.resume();
  }

  // --- the client (FlowApp: after each of the stack's batches) ---

  flowReadable(): void {
    this.pullUp();
  }

  flowWritable(): void {
    const conn = this.flow.connection;
    if (conn === null || this.clientGone) return;
    const pending = this.downPending;
    if (pending !== null) {
      const taken = conn.send(pending, this.downOffset, pending.length - this.downOffset);
      if (taken > 0) this.flow.markDirty();
      this.downOffset += taken;
      if (this.downOffset < pending.length) return;
      this.downPending = null;
      this.downOffset = 0;
      if (this.downEnded) return this.queueFin();
    }
    if (this.upstreamPaused && conn.sendSpace >= this.roomWanted) {
      this.upstreamPaused = false;
      if (!this.upstream.destroyed) this.upstream.resume();
    }
  }

  flowClosed(reason: TcpCloseReason): void {
    if (this.clientGone) return;
    if (reason !== 'fin') return this.clientFailed(CLOSE_CODE[reason]);
    // Both FINs are exchanged (the connection is CLOSED or in TIME-WAIT):
    // upstream bytes still waiting for the ring can no longer be delivered.
    if (this.downPending !== null) return this.clientFailed('ECONNRESET');
    this.clientClosed = true;
    // What the receive ring still holds goes upstream first (pullUp ends the client's side once it is empty).
    this.pullUp();
  }

  /**
   * Moves the client's bytes from the receive ring upstream while the
   * upstream takes them; once the client's FIN is reached, ends the
   * upstream's writable side.
   */
  private pullUp(): void {
    const flow = this.flow;
    const conn = flow.connection;
    if (conn === null || this.clientGone) return;
    if (this.shutDown) {
      // After shutdown(): bytes from the client are not taken; it is reset (RFC 1122 4.2.2.13).
      if (conn.recvAvailable > 0) this.abortClient();
      else if (flow.peerFinished) this.clientReadEnded();
      return;
    }
    const up = this.upstream;
    let moved = false;
    while (!this.upBlocked && !up.destroyed) {
      const available = conn.recvAvailable;
      if (available === 0) break;
      const n = available < CHUNK_BYTES ? available : CHUNK_BYTES;
      const lent = this.lent;
      const buf = lent !== null ? takeChunk() : Buffer.allocUnsafe(n);
      const got = conn.recv(buf, 0, n);
      if (got === 0) {
        if (lent !== null) giveBackChunk(buf);
        break;
      }
      moved = true;
      this.bytesUp += got;
      // Only the bytes just read: a pooled chunk is longer than n and holds an earlier read's bytes past them.
      const c = got === buf.length ? buf : buf.subarray(0, got);
      if (this.observe !== null && !this.observe(this.ctx, c)) this.observe = null;
      if (lent !== null) {
        lent.push(c);
        if (!up.write(c, this.chunkWritten!)) this.upBlocked = true;
      } else {
        if (!up.write(c)) this.upBlocked = true;
        if (this.bytesUp >= LEND_AFTER_BYTES && this.observe === null && !this.lendingOver) this.startLending();
      }
    }
    // Reading opened the window: let the connection send an update.
    if (moved) flow.markDirty();
    if ((flow.peerFinished || this.clientClosed) && conn.recvAvailable === 0) this.clientReadEnded();
  }

  /**
   * From now on the client's bytes are read into pooled chunks, each given
   * back once the upstream socket's write of it completed: the write
   * callback is the point after which Node reads the chunk no more (a
   * kernel socket; a TLS socket has copied it into its records). Only into
   * a net.Socket, and only once nothing observes the bytes (a sniffer may
   * keep what it saw). A write that fails ends the lending: the chunks
   * still out are left to the GC, never handed out again.
   */
  private startLending(): void {
    this.lendingOver = true;
    if (!(this.upstream instanceof Socket)) return;
    const lent: Buffer[] = [];
    this.lent = lent;
    this.chunkWritten = (err) => {
      if (err) {
        this.lent = null;
        lent.length = 0;
        return;
      }
      const c = lent.shift();
      if (c !== undefined && this.lent === lent) giveBackChunk(c);
    };
  }

  /** The client's FIN went upstream with every byte before it. */
  private clientReadEnded(): void {
    this.clientEof = true;
    if (!this.upEnded) {
      this.upEnded = true;
      const up = this.upstream;
      if (!up.destroyed && !up.writableEnded) up.end();
    }
    if (this.clientClosed) {
      // The connection closed meanwhile: nothing more can go to the client.
      this.downEnded = true;
      this.finQueued = true;
    }
    if (this.finQueued) this.clientDone(true);
  }

  /** Our FIN to the client, after every upstream byte (RFC 9293 3.10.4 CLOSE). */
  private queueFin(): void {
    if (this.finQueued || this.clientGone) return;
    this.finQueued = true;
    this.flow.shutdownWrite();
    if (this.clientEof) this.clientDone(true);
  }

  /** Both directions of the client are done (graceful), or it is reset: the relay lets go of the flow. */
  private clientDone(graceful: boolean): void {
    if (this.clientGone) return;
    this.clientGone = true;
    this.downPending = null;
    this.flow.appGone(graceful);
    this.sideDone();
  }

  /** The client's connection failed (reset, timed out, aborted): the upstream is reset too. */
  private clientFailed(code: string): void {
    if (this.close === 'fin') this.close = `client ${code}`;
    this.clientDone(false);
    abortUpstream(this.upstream);
  }

  /** Resets the client (RFC 9293 3.10.4 ABORT). */
  private abortClient(): void {
    this.clientDone(false);
  }

  // --- the upstream ---

  /**
   * The upstream socket's bytes, in its shared read buffer (this relay is
   * the socket's sink: upstream-read.ts), or a Buffer of its own ('data').
   * They go straight into the send ring; once it has less room than one
   * read, the socket pauses until the client's ACKs free a read's worth,
   * so every read fits whole. What the ring cannot take all the same is
   * kept (copied out of a shared buffer) until it can.
   */
  upstreamRead(buf: Buffer, nread: number): boolean {
    this.bytesDown += nread;
    return this.deliverDown(buf, nread, true);
  }

  /** @internal the upstream's 'data' (shared handler below) */
  upstreamData(c: Buffer): void {
    this.bytesDown += c.length;
    if (!this.deliverDown(c, c.length, false)) this.upstream.pause();
  }

  private deliverDown(src: Buffer, len: number, shared: boolean): boolean {
    const conn = this.flow.connection;
    if (this.shutDown || this.finQueued || this.clientGone || conn === null) {
      // Nothing more can go to the client (after shutdown(), a FIN queued,
      // the client gone): the upstream is reset, as a kernel resets a peer
      // whose data reaches a closed socket (RFC 1122 4.2.2.13).
      abortUpstream(this.upstream);
      return false;
    }
    if (this.downPending !== null) {
      // Behind bytes the ring could not take yet (only from a 'data' burst): queue after them.
      const rest = this.downPending.subarray(this.downOffset);
      this.downPending = Buffer.concat([rest, src.subarray(0, len)]);
      this.downOffset = 0;
      this.pauseUpstream(conn.config.sendBufferBytes);
      return false;
    }
    const taken = conn.send(src, 0, len);
    if (taken > 0) this.flow.markDirty();
    if (taken < len) {
      this.downPending = shared ? Buffer.copyBytesFrom(src, taken, len - taken) : src.subarray(taken, len);
      this.downOffset = 0;
      this.pauseUpstream(conn.config.sendBufferBytes);
      return false;
    }
    if (conn.sendSpace >= READ_BYTES) return true;
    this.pauseUpstream(conn.config.sendBufferBytes);
    return false;
  }

  /**
   * The upstream waits until the send ring has a read's worth free: never
   * more than the ring can have (a ring smaller than a read, tcp.sendBufferBytes,
   * or one the TCP buffer budget holds at its floor, ByteRing.free).
   */
  private pauseUpstream(ringBytes: number): void {
    const cap = ringBytes < FLOOR_BYTES ? ringBytes : FLOOR_BYTES;
    this.roomWanted = READ_BYTES < cap ? READ_BYTES : cap;
    this.upstreamPaused = true;
  }

  /** @internal the upstream's 'drain' */
  upstreamDrained(): void {
    this.upBlocked = false;
    this.pullUp();
  }

  /** @internal the upstream's 'end' (its EOF), and its 'close' */
  upstreamEnded(): void {
    if (this.downEnded) return;
    this.downEnded = true;
    if (this.downPending === null) this.queueFin();
  }

  /** @internal the upstream's 'error' */
  upstreamFailed(err: Error & { code?: string }): void {
    if (this.close === 'fin') this.close = `upstream ${err.code ?? err.message}`;
    this.abortClient();
  }

  /** @internal the upstream's 'close' */
  upstreamClosed(): void {
    this.upstreamEnded();
    this.sideDone();
  }

  private sideDone(): void {
    if (--this.open > 0 || this.finished) return;
    this.finished = true;
    this.done(this, this.ctx);
  }

  // --- the flow's owner ---

  /**
   * Closes the flow the orderly way, as sluice stops: a FIN to both peers
   * after whatever is still queued for them, the copying ended. Data either
   * peer sends after that is not taken: that side is reset, as a kernel
   * resets a connection closed with unread data (RFC 1122 4.2.2.13, RFC
   * 9293 3.6.1). `done` still comes once both sides have closed (the peers
   * answer with their FINs); the caller bounds the wait and destroys what
   * is left. False when the relay is finished or shut down already.
   */
  shutdown(): boolean {
    if (this.finished || this.shutDown) return false;
    this.shutDown = true;
    this.lent = null;
    this.lendingOver = true;
    const up = this.upstream;
    // The upstream's bytes come as 'data' again (and reset it: deliverDown).
    if (up instanceof Socket) setReadSink(up, undefined);
    // Reading on, so the peers' FINs are seen and both sides can close.
    if (!up.destroyed) {
      up.resume();
      if (!up.writableEnded) up.end();
    }
    this.upEnded = true;
    if (this.clientGone) return true;
    this.pullUp();
    if (!this.downEnded) {
      this.downEnded = true;
      if (this.downPending === null) this.queueFin();
    }
    return true;
  }

  /** Ends the client abortively (a RST); the upstream is the caller's to destroy (destroyFlow). */
  destroy(): void {
    this.abortClient();
  }
}

function onUpstreamData(this: Upstream, c: Buffer): void {
  this[FLOW_RELAY]!.upstreamData(c);
}
function onUpstreamDrain(this: Upstream): void {
  this[FLOW_RELAY]!.upstreamDrained();
}
function onUpstreamEnd(this: Upstream): void {
  this[FLOW_RELAY]!.upstreamEnded();
}
function onUpstreamError(this: Upstream, err: Error & { code?: string }): void {
  this[FLOW_RELAY]!.upstreamFailed(err);
}
function onUpstreamClose(this: Upstream): void {
  this[FLOW_RELAY]!.upstreamClosed();
}

/**
 * Ends the upstream abortively: a failure must reach it as a RST, never as
 * a FIN it would take for a complete stream. A kernel socket's destroy()
 * is close(), which sends a FIN, so it takes resetAndDestroy (SO_LINGER 0).
 */
function abortUpstream(up: Duplex): void {
  if (up.destroyed) return;
  if (up instanceof Socket) {
    try {
      up.resetAndDestroy();
      return;
    } catch {
      // Not a TCP handle (ERR_INVALID_HANDLE_TYPE): destroy below.
    }
  }
  up.destroy();
}
