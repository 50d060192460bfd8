/**
 * Bounded IP fragment reassembly, shared by IPv4 (RFC 791 section 3.2,
 * RFC 815) and IPv6 (RFC 8200 section 4.5).
 *
 * The core is protocol-neutral and sans-IO: callers pass a key that names the
 * datagram (IPv4: src, dst, protocol, ident; IPv6: src, dst, ident), the
 * fragment's byte offset, its more-fragments flag and its payload. When the
 * last hole fills, `push` returns the reassembled payload; rebuilding an IP
 * header around it is the caller's job (see `fragments.ts`).
 *
 * Deliberate choices:
 * - Overlapping fragments discard the whole datagram (RFC 5722 section 4 for
 *   IPv6; applied to IPv4 too, as Linux does, because overlaps are only ever
 *   seen in evasion attacks). An exact duplicate (same offset and length) is
 *   ignored rather than treated as an overlap: retransmitted fragments are
 *   legitimate (RFC 8200 4.5 notes duplicates may occur).
 * - Every non-last fragment must carry a multiple of 8 bytes (RFC 791 and
 *   RFC 8200 4.5); anything else is dropped and counted.
 * - Memory is bounded by a byte budget across all datagrams and a cap on the
 *   number of datagrams in progress; time is bounded by a timeout (RFC 8200
 *   suggests 60 s; we default to Linux's 30 s ipfrag_time).
 * This file is not on the hot path: fragments are rare, so it may allocate.
 */

export interface ReassemblyConfig {
  /** Datagrams being reassembled at once. */
  maxDatagrams: number;
  /** Bytes held across all datagrams in progress. */
  maxBytes: number;
  /** Milliseconds a datagram may take to complete. */
  timeoutMs: number;
}

export const DEFAULT_REASSEMBLY_CONFIG: ReassemblyConfig = {
  maxDatagrams: 256,
  maxBytes: 4 * 1024 * 1024,
  timeoutMs: 30_000,
};

/** Largest IP payload a reassembled datagram may have. */
export const MAX_REASSEMBLED_PAYLOAD = 65535;

export interface ReassemblyStats {
  fragments: number;
  reassembled: number;
  duplicates: number;
  overlapDrops: number;
  misalignedDrops: number;
  oversizeDrops: number;
  budgetDrops: number;
  timeouts: number;
}

interface Piece {
  offset: number;
  data: Uint8Array;
}

interface Datagram {
  key: string;
  deadline: number;
  pieces: Piece[];
  /** Total payload length once the last fragment (MF=0) arrived, else -1. */
  totalLength: number;
  bytes: number;
  /** Opaque header material of the offset-0 fragment, kept for the caller. */
  firstHeader: Uint8Array | null;
}

export interface Reassembled {
  payload: Uint8Array;
  /** Header bytes the caller stored with the offset-0 fragment. */
  firstHeader: Uint8Array;
}

export class FragmentReassembler {
  readonly stats: ReassemblyStats = {
    fragments: 0,
    reassembled: 0,
    duplicates: 0,
    overlapDrops: 0,
    misalignedDrops: 0,
    oversizeDrops: 0,
    budgetDrops: 0,
    timeouts: 0,
  };
  private readonly datagrams = new Map<string, Datagram>();
  private heldBytes = 0;

  constructor(private readonly config: ReassemblyConfig = DEFAULT_REASSEMBLY_CONFIG) {}

  /** Datagrams currently in progress. */
  get pending(): number {
    return this.datagrams.size;
  }

  /** Bytes currently held. */
  get bytes(): number {
    return this.heldBytes;
  }

  /**
   * Adds one fragment. `header` is copied only for the offset-0 fragment (the
   * caller rebuilds the datagram's header from it). Returns the whole payload
   * when this fragment completes the datagram, otherwise null.
   */
  push(
    now: number,
    key: string,
    offset: number,
    moreFragments: boolean,
    data: Uint8Array,
    header: Uint8Array | null,
  ): Reassembled | null {
    this.stats.fragments++;
    this.expire(now);
    const end = offset + data.length;
    if (end > MAX_REASSEMBLED_PAYLOAD) {
      this.stats.oversizeDrops++;
      this.discard(key);
      return null;
    }
    if (moreFragments && (data.length === 0 || (data.length & 7) !== 0)) {
      this.stats.misalignedDrops++;
      return null;
    }
    let dg = this.datagrams.get(key);
    if (dg === undefined) {
      if (this.datagrams.size >= this.config.maxDatagrams) this.evictOldest();
      dg = { key, deadline: now + this.config.timeoutMs, pieces: [], totalLength: -1, bytes: 0, firstHeader: null };
      this.datagrams.set(key, dg);
    }
    if (!moreFragments) {
      if ((dg.totalLength !== -1 && dg.totalLength !== end) || dg.pieces.some((p) => p.offset + p.data.length > end)) {
        // Two different ends, or data beyond the end: inconsistent datagram.
        this.stats.overlapDrops++;
        this.discard(key);
        return null;
      }
      dg.totalLength = end;
    } else if (dg.totalLength !== -1 && end > dg.totalLength) {
      this.stats.overlapDrops++;
      this.discard(key);
      return null;
    }
    // Keep pieces sorted by offset; find the insertion point and check neighbours.
    let i = 0;
    while (i < dg.pieces.length && dg.pieces[i]!.offset < offset) i++;
    const next = dg.pieces[i];
    if (next !== undefined && next.offset === offset && next.data.length === data.length) {
      this.stats.duplicates++;
      return null;
    }
    const prev = dg.pieces[i - 1];
    if ((prev !== undefined && prev.offset + prev.data.length > offset) || (next !== undefined && next.offset < end)) {
      this.stats.overlapDrops++; // RFC 5722 section 4
      this.discard(key);
      return null;
    }
    if (this.heldBytes + data.length > this.config.maxBytes) {
      this.stats.budgetDrops++;
      this.discard(key);
      return null;
    }
    dg.pieces.splice(i, 0, { offset, data: data.slice() });
    dg.bytes += data.length;
    this.heldBytes += data.length;
    if (offset === 0 && header !== null) dg.firstHeader = header.slice();
    return this.tryComplete(dg);
  }

  /** Drops datagrams whose time ran out (RFC 8200 4.5: discard after 60 s). */
  expire(now: number): number {
    let expired = 0;
    for (const dg of this.datagrams.values()) {
      if (dg.deadline > now) break; // Map iteration is insertion order, and deadlines grow with it.
      this.discard(dg.key);
      this.stats.timeouts++;
      expired++;
    }
    return expired;
  }

  /** Earliest deadline among datagrams in progress, or Infinity. */
  pollAt(): number {
    for (const dg of this.datagrams.values()) return dg.deadline;
    return Infinity;
  }

  private tryComplete(dg: Datagram): Reassembled | null {
    if (dg.totalLength === -1 || dg.firstHeader === null) return null;
    let covered = 0;
    for (const p of dg.pieces) {
      if (p.offset !== covered) return null; // a hole remains
      covered += p.data.length;
    }
    if (covered !== dg.totalLength) return null;
    const payload = new Uint8Array(dg.totalLength);
    for (const p of dg.pieces) payload.set(p.data, p.offset);
    const firstHeader = dg.firstHeader;
    this.discard(dg.key);
    this.stats.reassembled++;
    return { payload, firstHeader };
  }

  private evictOldest(): void {
    for (const dg of this.datagrams.values()) {
      this.stats.budgetDrops++;
      this.discard(dg.key);
      return;
    }
  }

  private discard(key: string): void {
    const dg = this.datagrams.get(key);
    if (dg === undefined) return;
    this.heldBytes -= dg.bytes;
    this.datagrams.delete(key);
  }
}
