/**
 * An upstream ICMP socket for forwarded echo requests (native/src/icmp.c):
 * raw (CAP_NET_RAW, which root has) or, when that is refused, an
 * unprivileged ping socket. It carries the route mark and interface of the
 * direct outbound it belongs to, like every socket sluice opens (the one
 * dialer rule, ENGINEERING.md): with route.auto the mark keeps its
 * packets out of the TUN.
 *
 * The native reader hands over batches of records; each message goes to
 * `receiver.upstreamMessage` with its family, the buffer, the offset of its
 * 16-byte source address and the ICMP message's offset and length: one JS
 * call per batch, no allocation per message.
 */
import { loadNative, type ReaderHandle, type SluiceNative } from './native.js';
import { readRecordLength, recordSize } from './records.js';

/** Bytes before each message in a record (see native/index.d.ts, kind 'icmp'). */
const RECORD_HEADER = 20;

export interface IcmpReceiver {
  upstreamMessage(from: IcmpSocket, buf: Uint8Array, srcOff: number, msgOff: number, msgLen: number): void;
}

export interface IcmpSocketOptions {
  family: 4 | 6;
  /** SO_MARK; 0 leaves it unset. */
  mark: number;
  /** SO_BINDTODEVICE. */
  device?: string | undefined;
  /** The identifier a raw socket puts in its requests (a ping socket gets one from the kernel). */
  ident: number;
}

export class IcmpSocket {
  readonly family: 4 | 6;
  /** The echo identifier of every request this socket sends. */
  readonly ident: number;
  /** Raw: sees the ICMP errors routers send about our requests (traceroute); a ping socket does not. */
  readonly raw: boolean;
  private readonly native: SluiceNative;
  private readonly fd: number;
  private readonly rx = new ArrayBuffer(256 * 1024);
  private readonly view = new Uint8Array(this.rx);
  private readonly handle: ReaderHandle;
  private closed = false;

  /** Throws the native Error (code = errno name) when neither kind of socket can be made. */
  constructor(opts: IcmpSocketOptions, private readonly receiver: IcmpReceiver) {
    this.native = loadNative();
    const r = this.native.icmpOpen({ family: opts.family, ident: opts.ident, ...(opts.mark !== 0 ? { mark: opts.mark } : {}), ...(opts.device !== undefined ? { device: opts.device } : {}) });
    this.family = opts.family;
    this.fd = r.fd;
    this.ident = r.ident;
    this.raw = r.raw;
    this.handle = this.native.readerStart(this.fd, this.rx, (count, end) => this.onBatch(count, end), 64, 'icmp');
    // The socket never keeps the process alive (SIGTERM ends it promptly).
    this.native.readerRef(this.handle, false);
  }

  /** Sends an ICMP message to the 4 or 16 address bytes at dst[dstOff]; 0 or the errno. */
  send(dst: Uint8Array, dstOff: number, msg: Uint8Array, msgOff: number, msgLen: number, ttl: number): number {
    if (this.closed) return 9; // EBADF
    return this.native.icmpSend(this.fd, this.family, dst, dstOff, msg, msgOff, msgLen, ttl);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.readerStop(this.handle);
    this.native.closeFd(this.fd);
  }

  private onBatch(count: number, end: number): void {
    if (count < 0) return; // a read error on a socket is transient (ENOBUFS...); the reader keeps polling
    const buf = this.view;
    let off = 0;
    for (let i = 0; i < count && off < end; i++) {
      const len = readRecordLength(buf, off);
      const at = off + 4;
      if (len >= RECORD_HEADER && buf[at] === this.family) this.receiver.upstreamMessage(this, buf, at + 4, at + RECORD_HEADER, len - RECORD_HEADER);
      off += recordSize(len);
    }
  }
}
