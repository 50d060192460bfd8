/**
 * The seam between the packet layers and a device. The stack receives
 * batches (records in a shared buffer) and transmits by reserving space in a
 * transmit batch and flushing it once per turn. A TUN device and the
 * in-memory link used by tests both implement it.
 */

/** Called once per received batch; records are valid only during the call. */
export interface LinkReceiver {
  onBatch(buf: Uint8Array, count: number, end: number): void;
  /** A fatal device error (for example the interface was deleted). */
  onLinkError(err: Error): void;
}

export interface LinkEndpoint {
  readonly name: string;
  readonly mtu: number;
  /** Every packet in both directions starts with a 10-byte virtio_net_hdr. */
  readonly vnetHdr: boolean;
  /** Accepted TUN_F_* offload flags (0 when none). */
  readonly offloads: number;
  start(receiver: LinkReceiver): void;
  /**
   * Reserves room for one packet of at most `maxLen` bytes in the transmit
   * batch and returns the offset in `txBuffer` where its bytes go (after
   * the virtio header when vnetHdr is on, the caller writes that too: the
   * offset points at the header). Flushes first when the batch is full.
   */
  txReserve(maxLen: number): number;
  /** Completes the reserved packet with its real length. */
  txCommit(len: number): void;
  /** The transmit buffer `txReserve` offsets refer to. */
  readonly txBuffer: Uint8Array;
  /** Writes all committed packets, one native call. */
  flush(): void;
  close(): void;
}
