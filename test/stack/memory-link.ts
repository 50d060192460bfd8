/**
 * An in-memory LinkEndpoint for deterministic stack tests: packets the
 * stack transmits are copied out into `sent`; `inject` hands the stack a
 * batch in the same record format the native reader uses.
 */
import type { LinkEndpoint, LinkReceiver } from '../../src/link/link.js';
import { recordSize, writeRecordLength } from '../../src/link/records.js';

export class MemoryLink implements LinkEndpoint {
  readonly name = 'mem0';
  readonly vnetHdr = false;
  readonly offloads = 0;
  readonly txBuffer = new Uint8Array(1 << 20);
  readonly sent: Uint8Array[] = [];
  private receiver: LinkReceiver | null = null;
  private readonly rx = new Uint8Array(1 << 22);
  closed = false;

  constructor(readonly mtu = 1500) {}

  start(receiver: LinkReceiver): void {
    this.receiver = receiver;
  }

  txReserve(_maxLen: number): number {
    return 0;
  }

  txCommit(len: number): void {
    this.sent.push(this.txBuffer.slice(0, len));
  }

  flush(): void {}

  close(): void {
    this.closed = true;
  }

  /** One batch of packets into the stack. */
  inject(...packets: Uint8Array[]): void {
    let off = 0;
    for (const p of packets) {
      writeRecordLength(this.rx, off, p.length);
      this.rx.set(p, off + 4);
      off += recordSize(p.length);
    }
    this.receiver!.onBatch(this.rx, packets.length, off);
  }

  /** Takes what was sent so far. */
  drain(): Uint8Array[] {
    return this.sent.splice(0, this.sent.length);
  }
}

/** Lets queued microtasks (the stack's deferred flush) run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
