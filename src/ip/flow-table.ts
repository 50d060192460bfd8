/**
 * Transport demultiplexing: find the flow a packet belongs to by its
 * 5-tuple without allocating.
 *
 * A JS `Map` keyed by a tuple string would build a string per packet. Here
 * the tuple hashes to a 32-bit number; the Map holds the head of an
 * intrusive chain per hash, and a lookup compares the tuple fields in place
 * against the packet bytes. Addresses are kept as 16-byte arrays for both
 * families (IPv4 as IPv4-mapped IPv6, RFC 4291 2.5.5.2) so one code path
 * serves both.
 */

/** Fields every flow stored in a FlowTable carries. */
export interface FlowKey {
  /** 4 or 6. */
  family: number;
  /** 6 (TCP) or 17 (UDP). */
  protocol: number;
  /** Source as seen from the TUN side (the client), 16 bytes. */
  srcAddr: Uint8Array;
  dstAddr: Uint8Array;
  srcPort: number;
  dstPort: number;
  /** Intrusive chain link; owned by the table. */
  nextInBucket: FlowKey | null;
  /** Cached hash; owned by the table. */
  flowHash: number;
}

/** Writes an IPv4 address (4 bytes at buf[off]) as IPv4-mapped IPv6 into out. */
export function mapIpv4(buf: Uint8Array, off: number, out: Uint8Array): void {
  out.fill(0, 0, 10);
  out[10] = 0xff;
  out[11] = 0xff;
  out[12] = buf[off]!;
  out[13] = buf[off + 1]!;
  out[14] = buf[off + 2]!;
  out[15] = buf[off + 3]!;
}

/**
 * FNV-1a-style mix over the address bytes and ports. Not keyed: flows are
 * chosen by clients on the TUN side, so a hostile client could only collide
 * its own flows into longer chains, bounded by the connection cap.
 */
function hashTuple(
  protocol: number,
  buf: Uint8Array,
  srcOff: number,
  dstOff: number,
  addrLen: number,
  srcPort: number,
  dstPort: number,
): number {
  let h = 0x811c9dc5 ^ protocol;
  for (let i = 0; i < addrLen; i++) {
    h = Math.imul(h ^ buf[srcOff + i]!, 0x01000193);
    h = Math.imul(h ^ buf[dstOff + i]!, 0x01000193);
  }
  h = Math.imul(h ^ srcPort, 0x01000193);
  h = Math.imul(h ^ dstPort, 0x01000193);
  // Signed: a Smi, so neither the flow's cached hash nor the bucket key is a heap number (issue 10).
  return h | 0;
}

function sameAddress(stored: Uint8Array, buf: Uint8Array, off: number, addrLen: number): boolean {
  // Callers compare the family first, so IPv4 entries are always mapped.
  const base = 16 - addrLen;
  for (let i = 0; i < addrLen; i++) if (stored[base + i] !== buf[off + i]) return false;
  return true;
}

export class FlowTable<T extends FlowKey> {
  private readonly buckets = new Map<number, T>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /**
   * Finds the flow of a packet whose source and destination addresses sit at
   * `buf[srcOff]` and `buf[dstOff]` (4 bytes for IPv4, 16 for IPv6).
   */
  lookup(
    family: number,
    protocol: number,
    buf: Uint8Array,
    srcOff: number,
    dstOff: number,
    srcPort: number,
    dstPort: number,
  ): T | null {
    const addrLen = family === 4 ? 4 : 16;
    const h = hashTuple(protocol, buf, srcOff, dstOff, addrLen, srcPort, dstPort);
    let e = this.buckets.get(h) as FlowKey | undefined | null;
    while (e != null) {
      if (
        e.family === family &&
        e.protocol === protocol &&
        e.srcPort === srcPort &&
        e.dstPort === dstPort &&
        sameAddress(e.srcAddr, buf, srcOff, addrLen) &&
        sameAddress(e.dstAddr, buf, dstOff, addrLen)
      ) {
        return e as T;
      }
      e = e.nextInBucket;
    }
    return null;
  }

  /** Inserts a flow; the caller has checked it is not present. */
  insert(flow: T): void {
    // Hash the stored addresses exactly as lookup hashes packet bytes.
    flow.flowHash = hashStored(flow, flow.family === 4 ? 4 : 16);
    flow.nextInBucket = this.buckets.get(flow.flowHash) ?? null;
    this.buckets.set(flow.flowHash, flow);
    this.count++;
  }

  /** Removes a flow; returns false when it was not in the table. */
  remove(flow: T): boolean {
    const head = this.buckets.get(flow.flowHash);
    if (head === undefined) return false;
    if (head === flow) {
      if (flow.nextInBucket === null) this.buckets.delete(flow.flowHash);
      else this.buckets.set(flow.flowHash, flow.nextInBucket as T);
      flow.nextInBucket = null;
      this.count--;
      return true;
    }
    let prev: FlowKey = head;
    while (prev.nextInBucket !== null) {
      if (prev.nextInBucket === flow) {
        prev.nextInBucket = flow.nextInBucket;
        flow.nextInBucket = null;
        this.count--;
        return true;
      }
      prev = prev.nextInBucket;
    }
    return false;
  }

  *values(): IterableIterator<T> {
    for (const head of this.buckets.values()) {
      let e: FlowKey | null = head;
      while (e !== null) {
        const next: FlowKey | null = e.nextInBucket;
        yield e as T;
        e = next;
      }
    }
  }
}

function hashStored(flow: FlowKey, addrLen: number): number {
  // The addresses live in two arrays; hash them through a shared scratch so
  // the byte order matches hashTuple's interleaving.
  // Byte by byte: a subarray() of the flow's (on-heap) arrays would move
  // them off the heap, an ArrayBuffer and a backing store each (issue 10).
  const off = 16 - addrLen;
  const s = flow.srcAddr;
  const d = flow.dstAddr;
  for (let i = 0; i < addrLen; i++) {
    SCRATCH[i] = s[off + i]!;
    SCRATCH[16 + i] = d[off + i]!;
  }
  return hashTuple(flow.protocol, SCRATCH, 0, 16, addrLen, flow.srcPort, flow.dstPort);
}

const SCRATCH = new Uint8Array(32);
