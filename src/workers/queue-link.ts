/**
 * The links of the multi-queue mode (tun.queues > 1).
 *
 * QueueLink: one queue of an IFF_MULTI_QUEUE TUN as a LinkEndpoint, inside
 * a worker thread. The main thread opened the device and owns every queue's
 * fd; the worker reads and writes only its own. close() stops reading but
 * leaves the fd open: a restarted worker takes the same queue over, and the
 * kernel never sees the queue count change (which would re-spread every
 * flow: both the steering program's result and tun_automq_select_queue are
 * taken modulo numqueues).
 *
 * Which queue a packet takes is the steering program's choice
 * (bpf/steering.c, src/workers/steering.ts: the client's source). Without
 * it (it could not be attached), writing on the queue a flow is read from
 * is what keeps the flow there: the kernel's automatic queue selection (drivers/net/tun.c, tun_automq_select_queue)
 * picks a new flow's queue from its flow hash and then records, per flow
 * hash, the queue userspace last wrote that flow's packets on (tun_flow_update
 * in tun_get_user). Each worker writes its replies only to its own queue,
 * so that record always names the queue the flow is already on; after the
 * record ages out (TUN_FLOW_EXPIRE, 3 s idle) the hash picks the same queue
 * again, since numqueues never changes while sluice runs.
 *
 * TransmitOnlyLink: the main thread's engine in this mode owns the policy,
 * the fake-IP pool, the control plane and the TPROXY listeners, but no TUN
 * packets: its stack is never fed. It transmits only what it makes itself,
 * the ICMP unreachables that refuse a TPROXY UDP session (src/udp/tproxy.ts),
 * on queue 0's fd: a TUN write is one packet per syscall however many
 * threads write the fd, and the kernel routes the packet out of the TUN
 * whichever queue it came in on.
 */
import { loadNative, type ReaderHandle, type SluiceNative } from '../link/native.js';
import type { LinkEndpoint, LinkReceiver } from '../link/link.js';
import { TxBatch, type TxSink } from '../link/tx-batch.js';
import { InvalidStateError } from '../errors.js';
import { LinkError, tunReadHint } from '../link/errors.js';
import { errnoName } from '../link/errno.js';

export interface QueueLinkOptions {
  name: string;
  fd: number;
  queue: number;
  mtu: number;
  vnetHdr: boolean;
  offloads: number;
  /** Receive buffer bytes. Default 4 MiB. */
  rxBufferBytes?: number;
  txBufferBytes?: number;
  readBudget?: number;
}

/** A link that never receives and writes what is sent to one queue's fd (the main thread's engine when workers carry the packets); QueueLink adds the reading. */
export class TransmitOnlyLink implements LinkEndpoint, TxSink {
  protected readonly native: SluiceNative;
  protected readonly tx: TxBatch;
  protected closed = false;

  constructor(
    readonly name: string,
    readonly mtu: number,
    readonly vnetHdr: boolean,
    readonly offloads: number,
    readonly fd: number,
    /** Transmit buffer bytes; at least one record. Default one record: the main thread sends rare, small packets (ICMP errors quoting one datagram). */
    txBufferBytes = 0,
  ) {
    this.native = loadNative();
    this.tx = new TxBatch(Math.max(txBufferBytes, this.native.MAX_RECORD), this);
  }

  get txBuffer(): Uint8Array {
    return this.tx.buffer;
  }

  start(_receiver: LinkReceiver): void {}

  txReserve(maxLen: number): number {
    return this.tx.reserve(maxLen);
  }

  txCommit(len: number): void {
    this.tx.commit(len);
  }

  flush(): void {
    this.tx.flush();
  }

  writeRecords(buf: Uint8Array, count: number): number {
    if (this.closed) return 0;
    return this.native.writeBatch(this.fd, buf, count);
  }

  /** The fd stays open (the TUN device owns it). */
  close(): void {
    if (this.closed) return;
    this.tx.flush();
    this.closed = true;
  }
}

export class QueueLink extends TransmitOnlyLink {
  readonly queue: number;
  private readonly rx: Uint8Array;
  private reader: ReaderHandle | null = null;
  private readonly readBudget: number;
  private readonly statsScratch = new Float64Array(5);
  private receiver: LinkReceiver | null = null;
  private readonly onBatchBound = (count: number, end: number): void => this.onBatch(count, end);

  constructor(opts: QueueLinkOptions) {
    super(opts.name, opts.mtu, opts.vnetHdr, opts.offloads, opts.fd, opts.txBufferBytes ?? 4 << 20);
    this.queue = opts.queue;
    this.rx = new Uint8Array(new ArrayBuffer(Math.max(opts.rxBufferBytes ?? 4 << 20, this.native.MAX_RECORD)));
    this.readBudget = opts.readBudget ?? 256;
  }

  override start(receiver: LinkReceiver): void {
    if (this.reader !== null) throw new InvalidStateError('QueueLink already started');
    this.receiver = receiver;
    this.reader = this.native.readerStart(this.fd, this.rx.buffer as ArrayBuffer, this.onBatchBound, this.readBudget);
  }

  private onBatch(count: number, end: number): void {
    const receiver = this.receiver!;
    if (count < 0) {
      const errno = errnoName(-count);
      receiver.onLinkError(new LinkError('SLUICE_TUN_READ', `TUN ${this.name} queue ${this.queue}: read failed: ${errno} (errno ${-count}; ${tunReadHint(errno)})`, errno));
      return;
    }
    receiver.onBatch(this.rx, count, end);
    this.tx.flush();
  }

  stats(): { rxPackets: number; rxBytes: number; rxBatches: number; rxErrors: number; txPackets: number; txBytes: number; txDropped: number } {
    let rxPackets = 0,
      rxBytes = 0,
      rxBatches = 0,
      rxErrors = 0;
    if (this.reader !== null) {
      this.native.readerStats(this.reader, this.statsScratch);
      rxPackets = this.statsScratch[0]!;
      rxBytes = this.statsScratch[1]!;
      rxBatches = this.statsScratch[2]!;
      rxErrors = this.statsScratch[4]!;
    }
    return { rxPackets, rxBytes, rxBatches, rxErrors, txPackets: this.tx.packets, txBytes: this.tx.bytes, txDropped: this.tx.dropped };
  }

  /** Stops reading; the fd stays open (the main thread owns it). */
  override close(): void {
    if (this.closed) return;
    super.close();
    if (this.reader !== null) this.native.readerStop(this.reader);
    this.reader = null;
  }
}
