/**
 * The base of the link wrappers (fault injector, tracer, capture): a
 * LinkEndpoint in front of an inner one and the LinkReceiver the inner one
 * delivers to. It forwards what every wrapper forwards unchanged (the
 * device's name, MTU, virtio-header and offload facts, start, device
 * errors, flush, close); a wrapper writes only what it does to packets:
 * its receive batch handler and its transmit pair.
 */
import type { LinkEndpoint, LinkReceiver } from './link.js';
import { VNET_HDR_LEN } from '../wire/vnet.js';

export abstract class ForwardingLink implements LinkEndpoint, LinkReceiver {
  /** Who the wrapper delivers received batches to, set by start(). */
  protected receiver: LinkReceiver | null = null;
  /** Bytes before the IP packet in each record: the virtio header when the link has one. */
  protected readonly skip: number;

  constructor(readonly inner: LinkEndpoint) {
    this.skip = inner.vnetHdr ? VNET_HDR_LEN : 0;
  }

  get name(): string {
    return this.inner.name;
  }
  get mtu(): number {
    return this.inner.mtu;
  }
  get vnetHdr(): boolean {
    return this.inner.vnetHdr;
  }
  get offloads(): number {
    return this.inner.offloads;
  }
  get txBuffer(): Uint8Array {
    return this.inner.txBuffer;
  }

  start(receiver: LinkReceiver): void {
    this.receiver = receiver;
    this.inner.start(this);
  }

  abstract onBatch(buf: Uint8Array, count: number, end: number): void;

  onLinkError(err: Error): void {
    this.receiver!.onLinkError(err);
  }

  abstract txReserve(maxLen: number): number;
  abstract txCommit(len: number): void;

  flush(): void {
    this.inner.flush();
  }

  close(): void {
    this.inner.close();
  }
}
