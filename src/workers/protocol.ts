/**
 * The messages between the main thread (pool.ts) and its worker threads
 * (worker-main.ts) in the multi-queue mode, and the plain copy of a flow
 * record that crosses between them (structured clone: no functions).
 */
import type { RuleSetType, SluiceConfig } from '../config/types.js';
import type { FlowBytes, FlowRecord } from '../engine/flow-registry.js';
import type { EndedFlow, SniffOutcome } from '../engine/observer.js';
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
}

/** A capture the main thread runs (a CaptureLink capture): the worker captures its own queue with the same filter and sends the pcap records. */
export interface CaptureSpec {
  id: number;
  filter: CaptureFilter;
  snaplen: number;
  resolution: PcapResolution;
}

/** What a worker's engine told its observer since the last report (src/engine/observer.ts), replayed into the main thread's metrics. */
export type ObservedEvent =
  | { k: 'flow'; f: EndedFlow }
  | { k: 'dial'; outbound: string; seconds: number; failure: string | null }
  | { k: 'sniff'; protocol: string | null; outcome: SniffOutcome }
  | { k: 'dns'; seconds: number; ok: boolean };

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
  | { t: 'endFlows' }
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
  /** The engine's own "ip:port" texts and group chain (FlowInfo), when present. */
  src: string | null;
  dst: string | null;
  chain: readonly string[] | null;
  /** What the policy was asked (FlowInfo.match: plain data), for GET /v1/flows/:id/explain. */
  match: unknown;
}

export interface WorkerReport {
  t: 'report';
  /** true: `updated` is every open flow (the periodic report); false: only those added since (sent within a turn of a flow's start or end). */
  full: boolean;
  /** Every open flow, or the new ones (see full). */
  updated: FlowSnap[];
  /** Flows ended since the last report, with their final bytes. */
  ended: { snap: FlowSnap; final: FlowBytes }[];
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
  /** Observer events since the last report (empty unless WorkerStart.observe). */
  observed: ObservedEvent[];
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
  const x = f as FlowRecord & { src?: string; dst?: string; chain?: readonly string[] | null; match?: unknown };
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
    src: x.src ?? null,
    dst: x.dst ?? null,
    chain: x.chain ?? null,
    match: x.match ?? null,
  };
}
