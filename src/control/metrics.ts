/**
 * Prometheus metrics (`GET /metrics`, behind the API's auth or on its own
 * `metrics.listen`), with prom-client on a Registry of their own (never the
 * global one, so a library that registers metrics cannot leak into ours).
 *
 * Cost: nothing per packet. Everything the stack, the TUN, the DNS server,
 * the fake-IP pool and the classifier already count is read at scrape time
 * by collect() callbacks; the engine tells the metrics about each flow's
 * end, each dial, each sniff and each reload (src/engine/observer.ts),
 * once per event. Base units (seconds, bytes) and bounded labels only:
 * outbound names and rule indexes come from the configuration, the rest are
 * fixed sets; never an address or a name (per-destination detail is in
 * `/connections` and the flow log).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ringPool } from '../tcp/ring-pool.js';
import type { BufferBudgetStats } from '../tcp/buffer-budget.js';
import type { ActionCounters } from '../system/classifier.js';
import type { StackStats } from '../stack.js';
import type { FakeIpStats } from '../dns/fake-ip.js';
import { DNS_QUERY_RESULTS, DNS_QUERY_TYPES } from '../dns/server.js';
import type { EndedFlow, EngineObserver, SniffOutcome } from '../engine/observer.js';
import { flowResult } from '../engine/observer.js';
import { OutboundError, OutboundErrorCode } from '../outbound/errors.js';
import { VERSION } from '../version.js';

/** A flow still open, as the metrics see it (live byte counters when the registry keeps them). */
export interface OpenFlowSample {
  network: 'tcp' | 'udp';
  outbound: string;
  bytesUp: number;
  bytesDown: number;
}

export interface TunCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
}

/** Where the scrape-time values come from; every reader is called only while scraping. */
export interface MetricsSources {
  stack: () => StackStats;
  tun: () => TunCounters | null;
  dnsMode: 'fake-ip' | 'real-ip' | 'off';
  /** DnsHijack.queryTally (index type * 4 + result), null without the hijack. */
  dnsTally: () => Float64Array | null;
  fakeIp: () => FakeIpStats | null;
  classifier: () => Record<string, ActionCounters> | null;
  /** The in-kernel SNI / Host filter's counters (classifier.sni) and tproxy-ebpf's socket assignments; absent or null when off. */
  classifierSni?: () => Record<string, number> | null;
  classifierAssign?: () => Record<string, number> | null;
  openFlows: () => Iterable<OpenFlowSample>;
  /** Flows matched per rule, the last entry final (Engine.ruleHitCounts). */
  ruleHits: () => readonly { hits: number }[];
}

/** Duration buckets for flows: 10 ms to 1 h. */
const FLOW_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600];
/** Dial and DNS upstream buckets: 1 ms to 10 s. */
const CONNECT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A bounded outbound label: the configured name, or `none` for a flow that ended before it was routed. */
function outboundLabel(name: string): string {
  return name === '' ? 'none' : name;
}

/** The bounded failure reason of a dial error: refused, timeout, unreachable, auth, proxy_error, aborted, limit, other. */
export function dialFailureReason(err: Error): string {
  if (err instanceof OutboundError) {
    switch (err.code) {
      case OutboundErrorCode.REFUSED:
        return 'refused';
      case OutboundErrorCode.TIMEOUT:
        return 'timeout';
      case OutboundErrorCode.UNREACHABLE:
        return 'unreachable';
      case OutboundErrorCode.AUTH:
        return 'auth';
      case OutboundErrorCode.ABORTED:
        return 'aborted';
      default:
        return 'proxy_error';
    }
  }
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'ETIMEDOUT') return 'timeout';
  if (code === 'ENETUNREACH' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND') return 'unreachable';
  if (code === 'ABORT_ERR') return 'aborted';
  if (/too many dials/.test(err.message)) return 'limit';
  return 'other';
}

/**
 * The metric set. `observer` goes to Engine.observer; `dnsUpstream` to
 * DnsHijack.onUpstream; `text()` is the scrape.
 */
export class SluiceMetrics implements EngineObserver {
  readonly registry = new Registry();
  private readonly flowsTotal: Counter<'network' | 'inbound' | 'outbound' | 'result'>;
  private readonly flowDuration: Histogram<'network' | 'outbound'>;
  private readonly connectDuration: Histogram<'outbound'>;
  private readonly connectFailures: Counter<'outbound' | 'reason'>;
  private readonly sniffTotal: Counter<'protocol' | 'outcome'>;
  private readonly reloads: Counter<'result'>;
  private readonly dnsUpstreamDuration: Histogram<'result'>;
  /** Bytes of flows that have ended, by `direction|network|outbound`; open flows are added at scrape. */
  private readonly endedBytes = new Map<string, number>();

  constructor(private readonly src: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: 'sluice_build_info', help: 'sluice version (always 1).', labelNames: ['version', 'node_version'], registers }).set({ version: VERSION, node_version: process.version }, 1);

    this.flowsTotal = new Counter({ name: 'sluice_flows_total', help: 'Flows ended, by how they ended (result).', labelNames: ['network', 'inbound', 'outbound', 'result'], registers });
    const self = this;
    new Gauge({
      name: 'sluice_flows_active',
      help: 'Flows open now.',
      labelNames: ['network', 'outbound'],
      registers,
      collect() {
        this.reset();
        for (const f of self.src.openFlows()) this.inc({ network: f.network, outbound: outboundLabel(f.outbound) });
      },
    });
    new Counter({
      name: 'sluice_flow_bytes_total',
      help: 'Payload bytes relayed, up (client to upstream) and down, of ended and open flows.',
      labelNames: ['direction', 'network', 'outbound'],
      registers,
      collect() {
        const sums = new Map(self.endedBytes);
        for (const f of self.src.openFlows()) {
          const o = outboundLabel(f.outbound);
          for (const [dir, n] of [['up', f.bytesUp], ['down', f.bytesDown]] as const) {
            if (n <= 0) continue;
            const k = `${dir}|${f.network}|${o}`;
            sums.set(k, (sums.get(k) ?? 0) + n);
          }
        }
        this.reset();
        for (const [k, n] of sums) {
          const [direction, network, outbound] = k.split('|') as [string, string, string];
          this.inc({ direction, network, outbound }, n);
        }
      },
    });
    this.flowDuration = new Histogram({ name: 'sluice_flow_duration_seconds', help: 'How long flows lasted.', labelNames: ['network', 'outbound'], buckets: FLOW_BUCKETS, registers });
    this.connectDuration = new Histogram({ name: 'sluice_outbound_connect_duration_seconds', help: 'Time to connect to the upstream through an outbound (successful dials).', labelNames: ['outbound'], buckets: CONNECT_BUCKETS, registers });
    this.connectFailures = new Counter({ name: 'sluice_outbound_connect_failures_total', help: 'Dials through an outbound that failed.', labelNames: ['outbound', 'reason'], registers });
    new Counter({
      name: 'sluice_rule_matches_total',
      help: 'Flows routed by each top-level rule (its index, or final); counting restarts when a reload changes the number of rules.',
      labelNames: ['rule'],
      registers,
      collect() {
        const hits = self.src.ruleHits();
        this.reset();
        for (let i = 0; i < hits.length; i++) this.inc({ rule: i === hits.length - 1 ? 'final' : String(i) }, hits[i]!.hits);
      },
    });
    this.sniffTotal = new Counter({ name: 'sluice_sniff_total', help: 'Flows whose first bytes were sniffed, by protocol found and outcome.', labelNames: ['protocol', 'outcome'], registers });

    new Counter({
      name: 'sluice_dns_queries_total',
      help: 'DNS queries answered by the hijack, by query type and how they were answered.',
      labelNames: ['mode', 'qtype', 'result'],
      registers,
      collect() {
        const tally = self.src.dnsTally();
        this.reset();
        if (tally === null) return;
        for (let t = 0; t < DNS_QUERY_TYPES.length; t++) {
          for (let r = 0; r < DNS_QUERY_RESULTS.length; r++) {
            const n = tally[t * DNS_QUERY_RESULTS.length + r]!;
            if (n > 0) this.inc({ mode: self.src.dnsMode, qtype: DNS_QUERY_TYPES[t]!, result: DNS_QUERY_RESULTS[r]! }, n);
          }
        }
      },
    });
    this.dnsUpstreamDuration = new Histogram({ name: 'sluice_dns_upstream_duration_seconds', help: 'Upstream DNS lookups of the hijack (cache misses).', labelNames: ['result'], buckets: CONNECT_BUCKETS, registers });
    // The fake-IP pool, one gauge per fact, labelled by family.
    const fakeIpGauge = (name: string, help: string, v4: (s: FakeIpStats) => number, v6: (s: FakeIpStats) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['family'],
        registers,
        collect() {
          this.reset();
          const s = self.src.fakeIp();
          if (s === null) return;
          this.set({ family: 'ipv4' }, v4(s));
          this.set({ family: 'ipv6' }, v6(s));
        },
      });
    };
    fakeIpGauge('sluice_fakeip_pool_used', 'Fake-IP addresses handed out and still mapped, by family.', (s) => s.v4Entries, (s) => s.v6Entries);
    fakeIpGauge('sluice_fakeip_pool_size', 'Fake-IP addresses the pool can hand out, by family.', (s) => s.v4Capacity, (s) => s.v6Capacity);

    const tunCounter = (name: string, help: string, pick: (t: TunCounters) => number): void => {
      new Counter({
        name,
        help,
        registers,
        collect() {
          const t = self.src.tun();
          this.reset();
          if (t !== null) this.inc(pick(t));
        },
      });
    };
    tunCounter('sluice_tun_receive_packets_total', 'Packets read from the TUN (a GRO super-packet counts once).', (t) => t.rxPackets);
    tunCounter('sluice_tun_receive_bytes_total', 'Bytes read from the TUN.', (t) => t.rxBytes);
    tunCounter('sluice_tun_transmit_packets_total', 'Packets written to the TUN (a TSO super-packet counts once).', (t) => t.txPackets);
    tunCounter('sluice_tun_transmit_bytes_total', 'Bytes written to the TUN.', (t) => t.txBytes);
    new Counter({
      name: 'sluice_stack_drops_total',
      help: 'Packets the userspace stack dropped, by reason (src/wire/errors.ts, src/stack.ts).',
      labelNames: ['reason'],
      registers,
      collect() {
        const drops = self.src.stack().drops;
        this.reset();
        for (const [reason, n] of Object.entries(drops)) this.inc({ reason }, n);
      },
    });
    // The process's TCP buffer budget (limits.tcpBufferMiB, src/tcp/buffer-budget.ts): one SharedArrayBuffer for every queue's worker.
    for (const [name, help, pick] of [
      ['sluice_tcp_buffer_bytes', 'Bytes of TCP send and receive ring stores the userspace stack holds now, all queues together.', (b: BufferBudgetStats) => b.usedBytes],
      ['sluice_tcp_buffer_limit_bytes', 'limits.tcpBufferMiB in bytes: past it send rings grow no further than 64 KiB.', (b: BufferBudgetStats) => b.limitBytes],
      ['sluice_tcp_buffer_peak_bytes', 'The most TCP ring store bytes held at once since start.', (b: BufferBudgetStats) => b.peakBytes],
    ] as const) {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(pick(ringPool.budget.stats()));
        },
      });
    }
    new Counter({
      name: 'sluice_tcp_buffer_pressure_total',
      help: 'Times the TCP ring stores reached limits.tcpBufferMiB (counted by the thread that took the store past it).',
      registers,
      collect() {
        this.reset();
        this.inc(ringPool.budget.stats().pressureEvents);
      },
    });
    new Counter({
      name: 'sluice_tcp_retransmits_total',
      help: 'TCP segments the stack retransmitted (connections that have closed).',
      registers,
      collect() {
        this.reset();
        this.inc(self.src.stack().tcpRetransmits);
      },
    });
    // The classifier's per-action tallies: one counter for packets, one for bytes.
    const classifierCounter = (name: string, help: string, pick: (v: { packets: number; bytes: number }) => number): void => {
      new Counter({
        name,
        help,
        labelNames: ['action'],
        registers,
        collect() {
          const c = self.src.classifier();
          this.reset();
          if (c === null) return;
          for (const [action, v] of Object.entries(c)) this.inc({ action }, pick(v));
        },
      });
    };
    classifierCounter('sluice_classifier_packets_total', "Packets the eBPF classifier steered, by action (kernel, tun, tproxy, drop).", (v) => v.packets);
    classifierCounter('sluice_classifier_bytes_total', 'Bytes the eBPF classifier steered, by action (kernel, tun, tproxy, drop).', (v) => v.bytes);
    for (const [name, help, read] of [
      ['sluice_classifier_sni_total', 'The in-kernel SNI / Host filter (classifier.sni), by result (tlsAllowed, tlsBlocked, tlsUnseen, httpAllowed, httpBlocked, httpUnseen, quicUnseen, resets, serverResets).', () => self.src.classifierSni?.() ?? null],
      ['sluice_classifier_assign_total', 'Packets handed to sockets by the TC program (gateway.mode tproxy-ebpf), by result (listener, flow, local, noListener, assignFailed, unsupported).', () => self.src.classifierAssign?.() ?? null],
    ] as const) {
      new Counter({
        name,
        help,
        labelNames: ['result'],
        registers,
        collect() {
          const c = read();
          this.reset();
          if (c === null) return;
          for (const [result, v] of Object.entries(c)) this.inc({ result }, v);
        },
      });
    }
    this.reloads = new Counter({ name: 'sluice_config_reloads_total', help: 'Reloads (SIGHUP, POST /v1/reload), by result.', labelNames: ['result'], registers });
    // Present from the start, so a first failure is a change of an existing series.
    this.reloads.inc({ result: 'success' }, 0);
    this.reloads.inc({ result: 'failure' }, 0);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The scrape, in the Prometheus text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  // EngineObserver: once per event.

  flowEnded(f: EndedFlow): void {
    const outbound = outboundLabel(f.outbound);
    this.flowsTotal.inc({ network: f.network, inbound: f.inbound, outbound, result: flowResult(f.close) });
    this.flowDuration.observe({ network: f.network, outbound }, f.durationMs / 1000);
    if (f.bytesUp > 0) this.addBytes(`up|${f.network}|${outbound}`, f.bytesUp);
    if (f.bytesDown > 0) this.addBytes(`down|${f.network}|${outbound}`, f.bytesDown);
  }

  dialed(outbound: string, seconds: number, failure: Error | null): void {
    if (failure === null) this.connectDuration.observe({ outbound }, seconds);
    else this.connectFailures.inc({ outbound, reason: dialFailureReason(failure) });
  }

  sniffed(protocol: string | null, outcome: SniffOutcome): void {
    this.sniffTotal.inc({ protocol: protocol ?? 'none', outcome });
  }

  reloaded(ok: boolean): void {
    this.reloads.inc({ result: ok ? 'success' : 'failure' });
  }

  /** For DnsHijack.onUpstream. */
  readonly dnsUpstream = (seconds: number, ok: boolean): void => {
    this.dnsUpstreamDuration.observe({ result: ok ? 'ok' : 'error' }, seconds);
  };

  private addBytes(key: string, n: number): void {
    this.endedBytes.set(key, (this.endedBytes.get(key) ?? 0) + n);
  }
}
