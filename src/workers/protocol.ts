/**
 * The messages between the main thread (pool.ts) and its worker threads
 * (worker-main.ts) in the multi-queue mode, and the plain copy of a flow
 * record that crosses between them (structured clone: no functions).
 */
import type { RuleSetType, SluiceConfig } from '../config/types.js';
import type { FlowBytes, FlowRecord } from '../engine/flow-registry.js';
import type { MatchSeen } from '../engine/match-seen.js';
import type { ObservedBatch } from './observed-events.js';
import type { CaptureFilter } from '../link/capture.js';
import type { PcapResolution } from '../link/pcap-writer.js';

/** workerData of a worker thread. */
export interface WorkerStart {
  queue: number;
  fd: number;
  name: string;
  mtu: number;
  vnetHdr: boolean;
  offloads: number;
  config: SluiceConfig;
  fakeIpChannel: SharedArrayBuffer;
  /** The main thread's table sizes, shared by every worker (fake-ip-channel.ts newTableSizes). */
  tableSizes: SharedArrayBuffer;
  /** A MessagePort (transferred): wakes the main thread for a fake-IP ask. */
  fakeIpWake: unknown;
  /** groups.json: the select groups' saved choices, read at start (the main thread writes it). */
  selectionsPath: string | null;
  /** The main thread serves metrics: the worker records its engine's flow ends, dials, sniffs and DNS upstream lookups for them. */
  observe: boolean;
  /** The dials in progress of every engine (shared-dials.ts), for limits.dials / dialsPerSource. */
  dialTable: SharedArrayBuffer;
  /** The process's TCP buffer budget (src/tcp/buffer-budget.ts): the worker counts its ring stores in slot queue + 1. */
  bufferBudget: SharedArrayBuffer;
  /** One Int32 (log-tap.ts): non-zero while the main thread's /logs stream has a listener; the worker sends its lines only then. */
  logTap: SharedArrayBuffer;
}

/** A capture the main thread runs (a CaptureLink capture): the worker captures its own queue with the same filter and sends the pcap records. */
export interface CaptureSpec {
  id: number;
  filter: CaptureFilter;
  snaplen: number;
  resolution: PcapResolution;
}

export type MainToWorker =
  | { t: 'close'; id: string }
  | { t: 'closeAll' }
  | { t: 'mode'; mode: string }
  | { t: 'global'; name: string }
  | { t: 'select'; group: string; member: string }
  | { t: 'ruleSet'; name: string; entries: string[]; type: RuleSetType }
  | { t: 'reportNow' }
  | ({ t: 'captureStart' } & CaptureSpec)
  | { t: 'captureStop'; id: number }
  | { t: 'reload'; seq: number; config: SluiceConfig }
  /** The stop's "flows" phase: end the flows within budgetMs (Engine.endFlows). */
  | { t: 'endFlows'; budgetMs: number }
  | { t: 'stop' };

/** What the control plane shows of a flow, as the worker has it now. */
export interface FlowSnap {
  id: string;
  network: 'tcp' | 'udp';
  inbound: 'tun' | 'tproxy';
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
  domain: FlowRecord['domain'];
  nameFrom: FlowRecord['nameFrom'];
  sniffHost: FlowRecord['sniffHost'];
  protocol: FlowRecord['protocol'];
  rule: number;
  outbound: string;
  chains: string[] | null;
  mode: FlowRecord['mode'];
  remoteDestination: string | null;
  uid: number | null;
  process: string | null;
  processPath: string | null;
  started: number;
  bytesUp: number;
  bytesDown: number;
  /** The group chain (FlowInfo.chain), when present. */
  chain: readonly string[] | null;
  /** What the policy saw beyond the fields above (FlowInfo.match), for GET /v1/flows/:id/explain; null: not routed by the rules. */
  match: MatchSeen | null;
}

/** Of a flow's match context, what the snapshot does not hold already (src/engine/match-seen.ts). */
export type { MatchSeen };

/** A flow of which only the byte counts moved since its last report. */
export interface FlowBytesSnap {
  id: string;
  bytesUp: number;
  bytesDown: number;
}

export interface WorkerReport {
  t: 'report';
  /** true: `open` lists every open flow (the periodic reconciling report); false: null (the deltas, sent every REPORT_MS and within 10 ms of a flow's start or end). */
  full: boolean;
  /** The flows added since the last report, and those of which anything but the bytes changed: whole. */
  updated: FlowSnap[];
  /** The flows of which only the bytes moved: the counts alone. */
  bytes: FlowBytesSnap[];
  /** A full report: the id of every open flow, for the main thread to drop mirrors the worker no longer has; null otherwise. */
  open: string[] | null;
  /** Flows ended since the last report that an earlier report had shown and that changed since (name, route, ...), whole, with their final bytes. */
  ended: { snap: FlowSnap; final: FlowBytes }[];
  /** Flows ended since the last report that an earlier report had shown as they still were: the id and final bytes. */
  endedBytes: FlowBytesSnap[];
  /**
   * Flows that began and ended since the last report (never shown: the
   * main thread has no mirror of them), as totals per outbound for the
   * registry's closed totals: a short connection crosses as no record of
   * its own.
   */
  closed: ClosedTotals[];
  counters: Record<string, unknown>;
  stack: Record<string, unknown>;
  tun: Record<string, number>;
  /** Engine.ruleHitCounts(): flows matched per rule, final last. */
  ruleHits: { hits: number; lastAt: number }[];
  logs: string[];
  droppedLines: number;
  fakeIpAsks: number;
  fakeIpTimeouts: number;
  /** Engine.icmpCounters(): honest ping and the relayed UDP errors. */
  icmp: Record<string, unknown>;
  /** The DNS hijack's query tally (DnsHijack.queryTally), null without the hijack. */
  dnsTally: number[] | null;
  /** Observer events since the last report, as numbers (observed-events.ts; none unless WorkerStart.observe). */
  observed: ObservedBatch;
}

/** Flows of one outbound ('' before routing) that ended unseen, and their bytes. */
export interface ClosedTotals {
  outbound: string;
  flows: number;
  up: number;
  down: number;
}

export type WorkerToMain =
  | { t: 'ready' }
  | WorkerReport
  | { t: 'reloaded'; seq: number; error: string | null }
  | { t: 'flowsEnded' }
  | { t: 'reported' }
  | { t: 'capture'; id: number; records: Uint8Array }
  | { t: 'stopped' };

export function snapFlow(f: FlowRecord): FlowSnap {
  const x = f as FlowRecord & { chain?: readonly string[] | null; match?: MatchSeen | null };
  return {
    id: f.id,
    network: f.network,
    inbound: f.inbound,
    srcIp: f.srcIp,
    srcPort: f.srcPort,
    dstIp: f.dstIp,
    dstPort: f.dstPort,
    domain: f.domain,
    nameFrom: f.nameFrom,
    sniffHost: f.sniffHost,
    protocol: f.protocol,
    rule: f.rule,
    outbound: f.outbound,
    chains: f.chains,
    mode: f.mode,
    remoteDestination: f.remoteDestination,
    uid: f.uid,
    process: f.process,
    processPath: f.processPath,
    started: f.started,
    bytesUp: f.bytes?.bytesUp ?? 0,
    bytesDown: f.bytes?.bytesDown ?? 0,
    chain: x.chain ?? null,
    match: x.match ?? null,
  };
}

/**
 * What a worker last reported of one open flow: the fields that change
 * after the flow was added (its name, route, outbound, dialled address,
 * what the policy was asked) as they were, and the bytes. The worker
 * compares a flow with it before each report (the same values, by
 * identity: the router replaces them rather than mutating them), so an
 * idle flow crosses to the main thread once, not every full report (issue
 * 10: 10,000 idle flows, each re-sent with its match context every 5 s,
 * kept the main thread's heap busy with their copies).
 */
/** The fields of a FlowSnap a ReportedView keeps (declared once, in FlowSnap). */
type ReportedFields = Pick<FlowSnap, 'domain' | 'nameFrom' | 'sniffHost' | 'protocol' | 'rule' | 'outbound' | 'chains' | 'mode' | 'remoteDestination' | 'uid' | 'process' | 'processPath' | 'chain'>;
export interface ReportedView extends ReportedFields {}
export class ReportedView {
  up: number;
  down: number;
  match: unknown;

  constructor(f: FlowRecord) {
    this.up = f.bytes?.bytesUp ?? 0;
    this.down = f.bytes?.bytesDown ?? 0;
    this.domain = f.domain;
    this.nameFrom = f.nameFrom;
    this.sniffHost = f.sniffHost;
    this.protocol = f.protocol;
    this.rule = f.rule;
    this.outbound = f.outbound;
    this.chains = f.chains;
    this.mode = f.mode;
    this.remoteDestination = f.remoteDestination;
    this.uid = f.uid;
    this.process = f.process;
    this.processPath = f.processPath;
    const x = f as FlowRecord & { chain?: readonly string[] | null; match?: unknown };
    this.chain = x.chain ?? null;
    this.match = x.match ?? null;
  }

  /** 'view': something but the bytes changed (the flow goes whole); 'bytes': only the bytes; 'none'. Takes the new values either way. */
  update(f: FlowRecord): 'view' | 'bytes' | 'none' {
    const x = f as FlowRecord & { chain?: readonly string[] | null; match?: unknown };
    const chain = x.chain ?? null;
    const match = x.match ?? null;
    const up = f.bytes?.bytesUp ?? 0;
    const down = f.bytes?.bytesDown ?? 0;
    const view =
      this.domain !== f.domain ||
      this.nameFrom !== f.nameFrom ||
      this.sniffHost !== f.sniffHost ||
      this.protocol !== f.protocol ||
      this.rule !== f.rule ||
      this.outbound !== f.outbound ||
      this.chains !== f.chains ||
      this.mode !== f.mode ||
      this.remoteDestination !== f.remoteDestination ||
      this.uid !== f.uid ||
      this.process !== f.process ||
      this.processPath !== f.processPath ||
      this.chain !== chain ||
      this.match !== match;
    const bytes = this.up !== up || this.down !== down;
    if (!view && !bytes) return 'none';
    this.up = up;
    this.down = down;
    if (!view) return 'bytes';
    this.domain = f.domain;
    this.nameFrom = f.nameFrom;
    this.sniffHost = f.sniffHost;
    this.protocol = f.protocol;
    this.rule = f.rule;
    this.outbound = f.outbound;
    this.chains = f.chains;
    this.mode = f.mode;
    this.remoteDestination = f.remoteDestination;
    this.uid = f.uid;
    this.process = f.process;
    this.processPath = f.processPath;
    this.chain = chain;
    this.match = match;
    return 'view';
  }
}
