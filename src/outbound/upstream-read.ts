/**
 * How the outbound sockets sluice dials read (issue 10, ask 3): into one
 * 64 KiB buffer per thread (net's `onread`), not into a fresh Buffer per
 * read. A relay that carries the socket's bytes to a TcpStream sets itself
 * as the socket's sink and the bytes go straight from that buffer into the
 * flow's send ring (one copy, nothing allocated); the buffer is free again
 * as soon as the callback returns, because every read is consumed in it.
 * Without a sink (a proxy handshake reading its reply, a relay to a
 * kernel socket) the bytes are copied out and pushed as a Buffer, which
 * is what the socket's reader sees as usual ('data', read(n), pause).
 *
 * Node's default read allocated 64 KiB per read: in a bulk download
 * through `sluice run` that was a malloc and a free per read, minor page
 * faults when the allocator gave the memory back in between, and the
 * external-memory pressure that started V8's major GCs on its helper
 * threads.
 */
import type { Socket } from 'node:net';

/** The size of one read (a sink that keeps this much room never has bytes left over). */
export const READ_BYTES = 64 * 1024;

/** Where a socket's bytes go while a relay carries them (the relay; absent before and after). */
export const READ_SINK = Symbol('sluice.readSink');

export interface ReadSink {
  /** Takes `nread` bytes of `buf` (which is reused after this returns); false pauses the socket until it is resumed. */
  upstreamRead(buf: Buffer, nread: number): boolean;
}

type SinkSocket = Socket & { [READ_SINK]?: ReadSink | undefined };

/** One per thread: each read is consumed before the next can happen. */
const sharedBuffer = Buffer.allocUnsafeSlow(READ_BYTES);

function onRead(this: SinkSocket, nread: number, buf: Buffer): boolean {
  const sink = this[READ_SINK];
  if (sink !== undefined) return sink.upstreamRead(buf, nread);
  return this.push(Buffer.copyBytesFrom(buf, 0, nread));
}

/** The `onread` option of net.connect / new net.Socket: shared by every socket. */
export const UPSTREAM_ONREAD = { buffer: sharedBuffer, callback: onRead as (nread: number, buf: Uint8Array) => boolean };

/** Whether `s` reads through UPSTREAM_ONREAD (a sink can be set). */
export const READS_SHARED = Symbol('sluice.readsShared');

/** Marks a socket made with UPSTREAM_ONREAD. */
export function markSharedReads(s: Socket): void {
  (s as Socket & { [READS_SHARED]?: boolean })[READS_SHARED] = true;
}

/** Sets (or with undefined clears) the sink of a socket made with UPSTREAM_ONREAD; false for any other socket. */
export function setReadSink(s: Socket, sink: ReadSink | undefined): boolean {
  if ((s as Socket & { [READS_SHARED]?: boolean })[READS_SHARED] !== true) return false;
  (s as SinkSocket)[READ_SINK] = sink;
  return true;
}
