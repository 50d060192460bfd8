/**
 * The main thread's record of one worker flow (pool.ts): what the control
 * plane lists, totals, explains and ends of a flow another thread carries.
 * 10,000 idle flows over the workers are 10,000 of these, so a mirror
 * keeps only what it cannot derive (issue 10):
 * - the "ip:port" texts and the policy's match context are made when read
 *   (GET /v1/flows/:id/explain, the flow list), from the ends the record
 *   holds anyway; the worker sends only what of the match the record does
 *   not hold (the name and protocol the policy saw, where the name came
 *   from: protocol.ts MatchSeen);
 * - the texts many flows share (addresses, outbounds, names) are one string
 *   each (intern): structured clone makes a new copy of every string of
 *   every message.
 */
import type { FlowBytes, FlowRecord, NameOrigin, RoutingMode } from '../engine/flow-registry.js';
import type { SniffedProtocol } from '../engine/policy/types.js';
import { hostPort } from '../engine/flow-info.js';
import type { FlowSnap, MatchSeen } from './protocol.js';

/** Distinct strings interned at most; then the table starts over (a bound, not a cache worth keeping). */
const INTERN_MAX = 4096;
const interned = new Map<string, string>();

/** One string for equal texts (the first seen); null stays null. */
export function intern<T extends string | null>(s: T): T {
  if (s === null) return s;
  const known = interned.get(s);
  if (known !== undefined) return known as T;
  if (interned.size >= INTERN_MAX) interned.clear();
  interned.set(s, s);
  return s;
}

/** Who ends a mirrored flow: the pool, through the worker (`slot`) that carries it. */
export interface MirrorOwner {
  endMirror(slot: unknown, id: string): void;
}

/** MirrorFlow.end, one function for every mirror (not a closure per flow: ~130 bytes each with its contexts). */
function endMirrorFlow(this: MirrorFlow): void {
  this.owner.endMirror(this.slot, this.id);
}

export class MirrorFlow implements FlowRecord, FlowBytes {
  readonly id: string;
  readonly network: 'tcp' | 'udp';
  readonly inbound: 'tun' | 'tproxy';
  readonly srcIp: string;
  readonly srcPort: number;
  readonly dstIp: string;
  readonly dstPort: number;
  readonly started: number;
  domain: string | null = null;
  nameFrom: NameOrigin | null = null;
  sniffHost: string | null = null;
  protocol: SniffedProtocol | null = null;
  rule = -1;
  outbound = '';
  chains: string[] | null = null;
  mode: RoutingMode | null = null;
  remoteDestination: string | null = null;
  uid: number | null = null;
  process: string | null = null;
  processPath: string | null = null;
  bytesUp = 0;
  bytesDown = 0;
  /** The counters last reported: the record's own fields, not an object of their own. */
  readonly bytes: FlowBytes = this;
  end: (() => void) | null = endMirrorFlow;
  killed = false;
  /** The outbounds a group flow went through, outermost first (FlowInfo.chain). */
  chain: readonly string[] | null = null;
  /** What the policy saw beyond this record (FlowInfo.match; Engine.flowMatch makes the context from both); null: not routed by the rules (yet). */
  match: MatchSeen | null = null;

  constructor(
    s: FlowSnap,
    readonly owner: MirrorOwner,
    readonly slot: unknown,
  ) {
    this.id = s.id;
    this.network = s.network === 'udp' ? 'udp' : 'tcp';
    this.inbound = s.inbound === 'tproxy' ? 'tproxy' : 'tun';
    this.srcIp = intern(s.srcIp);
    this.srcPort = s.srcPort;
    this.dstIp = intern(s.dstIp);
    this.dstPort = s.dstPort;
    this.started = s.started;
    this.update(s);
  }

  /** Takes what the worker's latest snapshot of the flow shows. */
  update(s: FlowSnap): void {
    this.domain = intern(s.domain);
    this.nameFrom = intern(s.nameFrom);
    this.sniffHost = intern(s.sniffHost);
    this.protocol = intern(s.protocol);
    this.rule = s.rule;
    this.outbound = intern(s.outbound);
    this.chains = s.chains;
    this.mode = intern(s.mode);
    this.remoteDestination = intern(s.remoteDestination);
    this.uid = s.uid;
    this.process = intern(s.process);
    this.processPath = intern(s.processPath);
    this.bytesUp = s.bytesUp;
    this.bytesDown = s.bytesDown;
    this.chain = s.chain;
    this.match = s.match === null ? null : { domain: intern(s.match.domain), protocol: intern(s.match.protocol), nameFrom: intern(s.match.nameFrom) };
  }

  /** "ip:port" / "[v6]:port", as FlowInfo.src. */
  get src(): string {
    return hostPort(this.srcIp, this.srcPort);
  }

  get dst(): string {
    return hostPort(this.dstIp, this.dstPort);
  }
}
