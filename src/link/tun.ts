/**
 * A TUN device as a LinkEndpoint: opens it through the native addon, sets
 * the MTU, brings it up, reads in batches and writes in batches.
 *
 * With several queues (IFF_MULTI_QUEUE) every queue is read; all writes go
 * to queue 0. The kernel's automatic queue selection (tun_automq) learns
 * each flow's queue from our writes, so reads converge on queue 0 too for
 * flows we answer: one Node thread gains nothing from spreading, and
 * writes from several queues would reorder packets (firezone#10231).
 */
import { loadNative, type ReaderHandle, type SluiceNative } from './native.js';
import type { LinkEndpoint, LinkReceiver } from './link.js';
import { TxBatch, type TxSink } from './tx-batch.js';
import { InvalidStateError } from '../errors.js';
import { LinkError, tunReadHint } from './errors.js';
import { errnoName } from './errno.js';

export interface TunOptions {
  /** Interface name; "tun%d" lets the kernel pick. Default "sluice0". */
  name?: string;
  mtu?: number;
  /** IFF_VNET_HDR + TUNSETOFFLOAD (TSO/GSO super-packets). Default false. */
  offload?: boolean;
  queues?: number;
  /** Receive buffer bytes per queue. Default 4 MiB. */
  rxBufferBytes?: number;
  /** Transmit batch bytes. Default 4 MiB. */
  txBufferBytes?: number;
  /** Packets drained per readiness per queue. Default 256. */
  readBudget?: number;
}

export class TunDevice implements LinkEndpoint, TxSink {
  readonly name: string;
  readonly mtu: number;
  readonly vnetHdr: boolean;
  readonly offloads: number;
  readonly fds: readonly number[];
  private readonly native: SluiceNative;
  private readonly rxBuffers: Uint8Array[];
  private readonly readers: ReaderHandle[] = [];
  private readonly tx: TxBatch;
  private readonly readBudget: number;
  private readonly statsScratch = new Float64Array(5);
  private closed = false;

  private constructor(native: SluiceNative, opts: TunOptions) {
    this.native = native;
    const opened = native.tunOpen(opts.name ?? 'sluice0', {
      vnetHdr: opts.offload === true,
      offload: opts.offload === true,
      queues: opts.queues ?? 1,
    });
    this.name = opened.name;
    this.fds = opened.fds;
    this.vnetHdr = opened.vnetHdr;
    this.offloads = opened.offloads;
    this.mtu = opts.mtu ?? 1500;
    try {
      native.linkSetMtu(this.name, this.mtu);
      native.linkSetUp(this.name, true);
    } catch (err) {
      for (const fd of this.fds) native.closeFd(fd);
      throw err;
    }
    const rxBytes = Math.max(opts.rxBufferBytes ?? 4 << 20, native.MAX_RECORD);
    this.rxBuffers = this.fds.map(() => new Uint8Array(new ArrayBuffer(rxBytes)));
    this.tx = new TxBatch(Math.max(opts.txBufferBytes ?? 4 << 20, native.MAX_RECORD), this);
    this.readBudget = opts.readBudget ?? 256;
  }

  /** Opens (or attaches to) the TUN. Throws with the errno and its likely cause. */
  static open(opts: TunOptions = {}): TunDevice {
    return new TunDevice(loadNative(), opts);
  }

  start(receiver: LinkReceiver): void {
    if (this.readers.length > 0) throw new InvalidStateError('TunDevice already started');
    for (let q = 0; q < this.fds.length; q++) {
      const buf = this.rxBuffers[q]!;
      const onBatch = (count: number, end: number): void => {
        if (count < 0) {
          const errno = errnoName(-count);
          receiver.onLinkError(new LinkError('SLUICE_TUN_READ', `TUN ${this.name} queue ${q}: read failed: ${errno} (errno ${-count}; ${tunReadHint(errno)})`, errno));
          return;
        }
        receiver.onBatch(buf, count, end);
        // Replies produced while handling the batch leave in one write.
        this.tx.flush();
      };
      this.readers.push(this.native.readerStart(this.fds[q]!, buf.buffer as ArrayBuffer, onBatch, this.readBudget));
    }
  }

  get txBuffer(): Uint8Array {
    return this.tx.buffer;
  }

  txReserve(maxLen: number): number {
    return this.tx.reserve(maxLen);
  }

  txCommit(len: number): void {
    this.tx.commit(len);
  }

  flush(): void {
    this.tx.flush();
  }

  /** TxSink: one native call for the whole batch. */
  writeRecords(buf: Uint8Array, count: number): number {
    if (this.closed) return 0;
    return this.native.writeBatch(this.fds[0]!, buf, count);
  }

  /** Don't keep the process alive for this device alone. */
  unref(): void {
    for (const r of this.readers) this.native.readerRef(r, false);
  }

  stats(): { rxPackets: number; rxBytes: number; rxBatches: number; rxErrors: number; txPackets: number; txBytes: number; txDropped: number } {
    let rxPackets = 0,
      rxBytes = 0,
      rxBatches = 0,
      rxErrors = 0;
    for (const r of this.readers) {
      this.native.readerStats(r, this.statsScratch);
      rxPackets += this.statsScratch[0]!;
      rxBytes += this.statsScratch[1]!;
      rxBatches += this.statsScratch[2]!;
      rxErrors += this.statsScratch[4]!;
    }
    return { rxPackets, rxBytes, rxBatches, rxErrors, txPackets: this.tx.packets, txBytes: this.tx.bytes, txDropped: this.tx.dropped };
  }

  close(): void {
    if (this.closed) return;
    this.tx.flush();
    this.closed = true;
    for (const r of this.readers) this.native.readerStop(r);
    this.readers.length = 0;
    for (const fd of this.fds) this.native.closeFd(fd);
  }
}
