/**
 * A terminated TCP flow as a Node Duplex stream. Reads pull from the
 * connection's receive ring only while the consumer wants data: a slow
 * consumer leaves bytes in the ring, the advertised window shrinks, and the
 * peer slows down (end-to-end flow control). Writes go into the send ring;
 * when it is full the write callback waits for the peer's ACKs.
 */
import { Duplex } from 'node:stream';
import type { FlowApp, TcpCloseReason, TcpFlow } from './tcp-flow.js';
import { CHUNK_BYTES, giveBackChunk, takeChunk } from './chunk-pool.js';
import { FLOOR_BYTES } from '../tcp/buffer-budget.js';

/** Largest Buffer one read produces (one push per available chunk). */
const READ_CHUNK = CHUNK_BYTES;

export interface FlowEndpoints {
  /** 4 or 6. */
  readonly family: number;
  /** The client that opened the flow (the TUN side). */
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** The destination the client asked for. */
  readonly localAddress: string;
  readonly localPort: number;
}

/** Paused its source until the send ring has room (TcpStream.waitForRoom). */
export interface RoomWaiter {
  roomAvailable(): void;
}

export class TcpStream extends Duplex implements FlowEndpoints, FlowApp {
  readonly family: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** @internal */
  readonly flow: TcpFlow;
  private wantRead = false;
  private pendingChunk: Uint8Array | null = null;
  private pendingOffset = 0;
  private pendingCallback: ((err?: Error | null) => void) | null = null;
  private ended = false;
  /**
   * Set by a consumer that gives every chunk it reads back to the pool
   * (chunk-pool.ts giveBackChunk) once done with it: pull() then fills
   * pooled chunks instead of allocating one per read.
   */
  lendsChunks = false;
  /** Told once the send ring has `roomWanted` bytes free (waitForRoom); null when nobody waits. */
  private roomWaiter: RoomWaiter | null = null;
  private roomWanted = 0;

  constructor(flow: TcpFlow, endpoints: FlowEndpoints) {
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024 });
    this.flow = flow;
    this.family = endpoints.family;
    this.remoteAddress = endpoints.remoteAddress;
    this.remotePort = endpoints.remotePort;
    this.localAddress = endpoints.localAddress;
    this.localPort = endpoints.localPort;
  }

  // --- FlowApp (after the stack's batch) ---
  flowReadable(): void {
    this.pull();
  }

  flowWritable(): void {
    this.drainPending();
  }

  flowClosed(reason: TcpCloseReason): void {
    if (reason === 'fin') {
      // Graceful: whatever is left in the ring was already pulled (flowReadable);
      // a consumer that stopped reading still gets the end once it reads.
      // (An Error, with its stack, only when a write is waiting: issue 10.)
      if (this.pendingCallback !== null) this.failPending(this.flow.closeError());
      if (!this.readableEnded && this.flow.connection!.recvAvailable === 0) this.push(null);
    } else if (!this.destroyed) {
      this.destroy(this.flow.closeError());
    }
  }

  override _read(): void {
    this.wantRead = true;
    this.pull();
  }

  /** Moves bytes from the receive ring into the stream while the consumer wants them. */
  pull(): void {
    const conn = this.flow.connection;
    if (conn === null || this.destroyed) return;
    let moved = false;
    while (this.wantRead) {
      const available = conn.recvAvailable;
      if (available === 0) break;
      const n = available < READ_CHUNK ? available : READ_CHUNK;
      const buf = this.lendsChunks ? takeChunk() : Buffer.allocUnsafe(n);
      const got = conn.recv(buf, 0, n);
      if (got === 0) {
        if (this.lendsChunks) giveBackChunk(buf);
        break;
      }
      moved = true;
      // Only the bytes just read: a pooled chunk is longer than n and holds an earlier read's bytes past them.
      this.wantRead = this.push(got === buf.length ? buf : buf.subarray(0, got));
    }
    // Reading opened the window: let the connection send an update.
    if (moved) this.flow.markDirty();
    if (this.flow.peerFinished && conn.recvAvailable === 0 && !this.ended) {
      this.ended = true;
      this.push(null);
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    const conn = this.flow.connection;
    if (conn === null) {
      callback(this.flow.closeError());
      return;
    }
    const taken = conn.send(chunk, 0, chunk.length);
    if (taken > 0) this.flow.markDirty();
    if (taken === chunk.length) {
      callback();
      return;
    }
    this.pendingChunk = chunk;
    this.pendingOffset = taken;
    this.pendingCallback = callback;
  }

  /**
   * Copies bytes straight into the send ring, bypassing the Writable's
   * queue (a relay reading its upstream into a shared buffer: the bytes
   * must be taken before it returns). Takes nothing while anything written
   * the ordinary way is still queued, so the order holds, nor once the
   * writable side ended; the caller writes what is left the ordinary way.
   */
  writeNow(src: Uint8Array, len: number): number {
    const conn = this.flow.connection;
    if (conn === null || this.writableLength > 0 || this.pendingCallback !== null || this.writableEnded || this.destroyed) return 0;
    const taken = conn.send(src, 0, len);
    if (taken > 0) this.flow.markDirty();
    return taken;
  }

  /** Bytes writeNow could take now. */
  get sendSpace(): number {
    const conn = this.flow.connection;
    return conn === null ? 0 : conn.sendSpace;
  }

  /**
   * `w` paused its source (a relay its upstream socket) and is told once
   * the send ring has `bytes` free: a reader whose every read fits then
   * never leaves bytes over to copy and queue (the Writable path).
   */
  waitForRoom(w: RoomWaiter, bytes: number): void {
    this.roomWaiter = w;
    // A send ring smaller than `bytes` (tcp.sendBufferBytes) wakes the waiter
    // once empty; so does one held at FLOOR_BYTES by the TCP buffer budget
    // (ByteRing.free): never wait for more room than the ring can have.
    const conn = this.flow.connection;
    let cap = conn === null ? bytes : conn.config.sendBufferBytes;
    if (cap > FLOOR_BYTES) cap = FLOOR_BYTES;
    this.roomWanted = bytes < cap ? bytes : cap;
  }

  /** The send ring has room again (the peer acknowledged data). */
  drainPending(): void {
    const chunk = this.pendingChunk;
    const conn = this.flow.connection;
    if (conn === null) return;
    if (chunk === null) {
      const w = this.roomWaiter;
      if (w !== null && conn.sendSpace >= this.roomWanted) {
        this.roomWaiter = null;
        w.roomAvailable();
      }
      return;
    }
    const taken = conn.send(chunk, this.pendingOffset, chunk.length - this.pendingOffset);
    if (taken > 0) this.flow.markDirty();
    this.pendingOffset += taken;
    if (this.pendingOffset === chunk.length) {
      const cb = this.pendingCallback!;
      this.pendingChunk = null;
      this.pendingCallback = null;
      cb();
    }
  }

  /** The connection is gone: fail a blocked write. */
  failPending(err: Error): void {
    const cb = this.pendingCallback;
    this.pendingChunk = null;
    this.pendingCallback = null;
    if (cb !== null) cb(err);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.flow.shutdownWrite();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // Both directions ended cleanly (our FIN is queued, the peer's FIN was
    // read): this is the stream's autoDestroy after a graceful close, not
    // an abort. The connection finishes on its own (LAST-ACK, CLOSING,
    // TIME-WAIT), delivering what is still queued; a RST here would make the
    // peer's kernel throw away bytes it has not read yet.
    const graceful = err === null && this.writableFinished && this.readableEnded;
    this.flow.appGone(graceful);
    callback(err);
  }
}
