/**
 * The live flow table: every flow the engine has taken and not yet logged
 * as ended, by a stable id (a random UUID), with what the control API shows
 * about it and the counters its relay moves.
 *
 * Nothing here runs per packet. A flow's byte counters are the relay's own
 * RelayResult object (bumped once per chunk by the relay, as it always
 * was); the table only holds a reference to it, so a reader sees the bytes
 * as they move. When a flow ends its bytes are added to the totals of
 * closed flows, per outbound and overall, so totals (live + closed) only
 * ever grow.
 */
import { randomFillSync } from 'node:crypto';
import type { SniffedProtocol } from './policy/types.js';

/** Bytes a flow moved so far (the relay's result object, live). */
export interface FlowBytes {
  bytesUp: number;
  bytesDown: number;
}

/** Where a flow's name came from: a fake-IP mapping, a snooped DNS answer, or its own first bytes. */
export type NameOrigin = 'fake-ip' | 'dns' | 'sniff';

/** The routing mode (PATCH /configs): rules decide, or every new flow goes one way. */
export type RoutingMode = 'rule' | 'global' | 'direct';

/** What the table keeps of a flow; the engine's own flow record extends it. */
export interface FlowRecord {
  readonly id: string;
  readonly network: 'tcp' | 'udp';
  readonly inbound: 'tun' | 'tproxy';
  readonly srcIp: string;
  readonly srcPort: number;
  readonly dstIp: string;
  readonly dstPort: number;
  /** The name the policy matched (fake-IP, snooped or sniffed), null when none. */
  domain: string | null;
  nameFrom: NameOrigin | null;
  /** What sniffing read (SNI, Host, QUIC SNI), even when the name was known already. */
  sniffHost: string | null;
  protocol: SniffedProtocol | null;
  /** Index into rules, -1 for final (or a mode other than rule). */
  rule: number;
  outbound: string;
  /** The outbound path innermost first (Clash `chains`), when groups led there; null: just [outbound]. */
  chains: string[] | null;
  /** Set when a mode other than `rule` chose the outbound. */
  mode: RoutingMode | null;
  /** The address actually dialled, when the outbound reports one (direct). */
  remoteDestination: string | null;
  /**
   * The owner of the client socket (flows from this machine, looked up only
   * when a uid / processName / processPath rule exists; src/system/socket-owner.ts);
   * null when unknown or not looked up.
   */
  uid: number | null;
  /** The executable's file name. */
  process: string | null;
  /** The executable's absolute path. */
  processPath: string | null;
  /** Epoch milliseconds. */
  readonly started: number;
  /** The live counters (null until the flow moves data). */
  bytes: FlowBytes | null;
  /** Ends the flow at its current stage, both sides at once (called on the record: it may be a function shared by every flow); null once ended. */
  end: (() => void) | null;
  /** Set by close(): the flow line says close "closed by API". */
  killed: boolean;
}

export interface OutboundTotals {
  flows: number;
  up: number;
  down: number;
}

/** Random bytes for 128 ids at a time (as crypto.randomUUID caches its entropy). */
const idEntropy = Buffer.alloc(16 * 128);
let idNext = idEntropy.length;
const idText = Buffer.alloc(36);
const HEX = '0123456789abcdef';

/**
 * A random (version 4, RFC 9562 5.4) UUID as the flow's id, in one flat
 * string of 36 bytes. crypto.randomUUID() returns a rope of ~20 pieces
 * (~800 bytes of heap) that every idle flow kept as its registry key.
 */
export function newFlowId(): string {
  if (idNext === idEntropy.length) {
    randomFillSync(idEntropy);
    idNext = 0;
  }
  const b = idEntropy;
  const o = idNext;
  idNext += 16;
  b[o + 6] = (b[o + 6]! & 0x0f) | 0x40;
  b[o + 8] = (b[o + 8]! & 0x3f) | 0x80;
  let t = 0;
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) idText[t++] = 0x2d;
    const v = b[o + i]!;
    idText[t++] = HEX.charCodeAt(v >> 4);
    idText[t++] = HEX.charCodeAt(v & 15);
  }
  return idText.toString('latin1', 0, 36);
}

export class FlowRegistry<T extends FlowRecord = FlowRecord> {
  private readonly byId = new Map<string, T>();
  /** Bytes of flows already ended. */
  private closedUp = 0;
  private closedDown = 0;
  private closedFlows = 0;
  private readonly perOutbound = new Map<string, OutboundTotals>();

  get size(): number {
    return this.byId.size;
  }

  add(f: T): void {
    this.byId.set(f.id, f);
  }

  /** The flow has ended: its bytes (`final` when it never had live counters) join the closed totals. */
  remove(f: T, final: FlowBytes): void {
    if (!this.byId.delete(f.id)) return;
    const b = f.bytes ?? final;
    this.countClosed(f.outbound, 1, Math.max(b.bytesUp, final.bytesUp), Math.max(b.bytesDown, final.bytesDown));
  }

  /** `flows` ended flows of `outbound` ('' before routing) that moved `up` and `down` bytes join the closed totals (remove() of each; a worker's flows the registry never held, src/workers/pool.ts). */
  countClosed(outbound: string, flows: number, up: number, down: number): void {
    this.closedUp += up;
    this.closedDown += down;
    this.closedFlows += flows;
    const key = outbound === '' ? '(none)' : outbound;
    let t = this.perOutbound.get(key);
    if (t === undefined) {
      // Bounded by the outbounds (and groups) the config names.
      t = { flows: 0, up: 0, down: 0 };
      this.perOutbound.set(key, t);
    }
    t.flows += flows;
    t.up += up;
    t.down += down;
  }

  get(id: string): T | undefined {
    return this.byId.get(id);
  }

  values(): IterableIterator<T> {
    return this.byId.values();
  }

  /** Ends one flow on both sides at once; false when no flow has that id. */
  close(id: string): boolean {
    const f = this.byId.get(id);
    if (f === undefined) return false;
    endFlow(f);
    return true;
  }

  /** Ends every flow; returns how many. */
  closeAll(): number {
    const all = [...this.byId.values()];
    for (const f of all) endFlow(f);
    return all.length;
  }

  /** Bytes of every flow so far: the ended ones plus what the open ones moved until now. */
  totals(): { up: number; down: number; closedFlows: number } {
    let up = this.closedUp;
    let down = this.closedDown;
    for (const f of this.byId.values()) {
      if (f.bytes === null) continue;
      up += f.bytes.bytesUp;
      down += f.bytes.bytesDown;
    }
    return { up, down, closedFlows: this.closedFlows };
  }

  /** Totals per outbound: ended flows, plus the open ones. */
  byOutbound(): Record<string, OutboundTotals & { active: number }> {
    const out: Record<string, OutboundTotals & { active: number }> = {};
    for (const [k, t] of this.perOutbound) out[k] = { ...t, active: 0 };
    for (const f of this.byId.values()) {
      const key = f.outbound === '' ? '(none)' : f.outbound;
      const t = (out[key] ??= { flows: 0, up: 0, down: 0, active: 0 });
      t.active++;
      if (f.bytes !== null) {
        t.up += f.bytes.bytesUp;
        t.down += f.bytes.bytesDown;
      }
    }
    return out;
  }
}

function endFlow(f: FlowRecord): void {
  f.killed = true;
  const end = f.end;
  if (end === null) return;
  try {
    end.call(f);
  } catch {
    // The flow's own close path logs it; a throwing end must not stop closeAll.
  }
}
