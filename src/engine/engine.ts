/**
 * The proxy engine: takes every flow the stack terminates, finds its name
 * (fake-IP mapping, DNS answer snooping, or sniffing the first bytes),
 * matches it against the policy and carries it through the chosen outbound.
 *
 * When the flow's name is already known (fake-IP, snooped) or the policy
 * cannot use one, the outbound connects before the client's SYN is
 * answered: a dead upstream shows the client a refused connection, not an
 * accepted one that dies. Under a SYN flood (more than
 * limits.synCookieThreshold half-open flows) the stack answers SYNs with SYN
 * cookies instead and hands over only completed handshakes
 * (TcpFlowRequest.established), so spoofed SYNs never make us dial; dials in
 * progress are capped by limits.dials and limits.dialsPerSource
 * (dial-limiter.ts). Otherwise the handshake completes, the first
 * bytes are sniffed for at most `sniff.timeoutMs` / `sniff.maxBytes`, and a
 * failing upstream resets the client's connection (what sing-box and
 * mihomo do; a name inside the stream cannot be read without accepting).
 */
import { isIP } from 'node:net';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { unmapAddress } from '../outbound/transparent-dial.js';
import type { RuleSetType, SluiceConfig } from '../config/types.js';
import { PolicySlot, type Policy } from './policy/policy.js';
import type { MatchContext, SniffedProtocol } from './policy/types.js';
import { FlowSniffer, sniffDatagram } from './sniff/index.js';
import type { SniffResult } from './sniff/result.js';
import { OutboundGroup, SelectionStore, chainOf, type GroupEvents } from '../outbound/index.js';
import { readRuleSetSource } from '../config/ruleset-formats.js';
import { formatProblem } from '../config/errors.js';
import type { GroupRegistry } from '../outbound/group-registry.js';
import { buildRuntime, closeRuntime, compileConfigPolicy, type Runtime, type RuntimeDeps } from './runtime.js';
import type { GeoIpLookup } from './policy/types.js';
import { geoIpLookup } from './geoip-lookup.js';
import { RemoteRuleSets } from './remote-rulesets.js';
import { OutboundError } from '../outbound/errors.js';
import type { Outbound, UdpAssociation } from '../outbound/types.js';
import { FakeIpPool } from '../dns/fake-ip.js';
import { DnsSnoop } from '../dns/snoop.js';
import { DnsHijack } from '../dns/server.js';
import { TcpFrameReader, frameTcp, parseMessage } from '../dns/message.js';
import { UpstreamFailureLog } from '../dns/failure-log.js';
import type { LookupFn } from '../outbound/types.js';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Stack, type TcpFlowRequest } from '../stack.js';
import type { LinkEndpoint } from '../link/link.js';
import type { TcpStream } from '../stack/tcp-stream.js';
import { UdpSession } from '../udp/session.js';
import { parseIpv6Text } from '../wire/ipv6.js';
import { parseIpv4Text, writeIpv4Addr } from '../wire/ipv4.js';
import { relay, shutdownRelay, type RelayResult } from './relay.js';
import { FlowRegistry, newFlowId, type FlowRecord, type NameOrigin, type RoutingMode } from './flow-registry.js';
import { policyNeedsName } from './name-sensitivity.js';
import { IcmpEchoRoute, watchUdpErrors, type UdpWatch } from './icmp-route.js';
import { PathMtuCache } from '../link/path-mtu.js';
import type { UdpErrorRelay, UdpErrorStats } from '../ip/udp-error-relay.js';
import type { EchoRelayStats } from '../ip/echo-relay.js';
import { resolveWith } from './dns-upstreams.js';
import { DialLimiter } from './dial-limiter.js';
import type { Logger } from './logger.js';
import { FlowGuard, errorText, installErrorBoundary } from './flow-guard.js';
import { newTproxyUdpCounters, type TproxyUdpCounters, type TproxyUdpOptions } from '../udp/tproxy.js';
import { UdpNat, newUdpNatCounters, type NatBinding, type NatMapping, type NatSession, type UdpNatCounters } from '../udp/nat.js';
import { isUnicastText, isUsablePort } from '../wire/address-class.js';
import type { EngineObserver, SniffOutcome } from './observer.js';
import { SocketOwnerLookup, type SocketOwnerStats } from '../system/socket-owner.js';
import { loadNative } from '../link/native.js';

export interface EngineCounters {
  tcpFlows: number;
  udpSessions: number;
  rejected: number;
  dropped: number;
  upstreamFailures: number;
  unknownFakeIp: number;
  dnsQueries: number;
  /** Flows ended because their handling threw (src/engine/flow-guard.ts). */
  flowErrors: number;
  /** Uncaught errors no flow claimed (logged; sluice keeps running). */
  unattributedErrors: number;
  /** Flows refused before any socket call: port 0, or a non-unicast address (src/wire/address-class.ts). */
  badTarget: number;
  /** The TPROXY UDP reader's drops (src/udp/tproxy.ts), filled in gateway mode tproxy. */
  tproxyUdp: TproxyUdpCounters;
  /** UDP NAT mappings and filtered datagrams (src/udp/nat.ts). */
  udpNat: UdpNatCounters;
  /** Live SYN-flood figures (getters over the stack's stats and the dial limiter), for the counters log line. */
  synFlood?: SynFloodCounters;
  /** Socket-owner lookups (uid / processName / processPath rules), present once such a rule exists. */
  socketOwner?: SocketOwnerStats;
}

export interface SynFloodCounters {
  readonly halfOpen: number;
  readonly pendingSyns: number;
  readonly cookiesSent: number;
  readonly cookiesValidated: number;
  readonly cookiesRejected: number;
  readonly synBudgetDrops: number;
  readonly dialsActive: number;
  readonly dialsRefusedGlobal: number;
  readonly dialsRefusedPerSource: number;
}

/**
 * One flow as the engine tracks it: the registry's record (id, ends, name,
 * rule, outbound, live counters, `end` which ends it at its current stage:
 * pending dial, sniffing, relaying) plus what only the engine needs.
 * inbound tun: from the userspace stack; tproxy: accepted by a TPROXY listener (gateway mode).
 */
interface FlowInfo extends FlowRecord {
  /** "ip:port" / "[v6]:port" for the log lines. */
  readonly src: string;
  readonly dst: string;
  /** The outbounds a group flow went through, outermost first (group -> member -> ... -> leaf), for the flow line; null for a plain outbound. */
  chain: readonly string[] | null;
  /** Ends the flow should its handling throw. */
  guard: FlowGuard;
  /** Set by endFlows(): the flow line says close "shutdown". */
  shutdown: boolean;
  /** While relaying TCP (relay.ts shutdownRelay) or serving an idle HTTP L7 client (HttpL7.closeIdle): closes the flow with FINs; false when it cannot; endFlows() tries it before `end`. */
  closeOrderly: (() => boolean) | null;
  logged: boolean;
  /** What the policy was asked and where the name came from then (set when routed), for `sluice explain ID`. */
  match: { ctx: MatchContext; nameFrom: NameOrigin | null } | null;
}

/** A fake-IP change is saved within this delay (debounced; see Engine.schedulePersist). */
const PERSIST_DELAY_MS = 250;

/** PUT /providers/rules/:name's answer: the rule sets whose entries changed (counts before and after), or why nothing changed. */
export type RuleSetReloadResult = { ok: true; changes: { ruleSets: Record<string, { before: number; after: number }> } } | { ok: false; errors: string[] };

/** One rule set as the API shows it (a rule provider). */
export interface RuleSetState {
  name: string;
  type: RuleSetType;
  path: string | null;
  /** Downloaded from here (a url set). */
  url: string | null;
  entries: number;
  /** Epoch ms of the last (re)load. */
  loadedAt: number;
}

/** How long endFlows() gives relayed TCP flows, closed with a FIN both ways, for the peers' FINs before resetting them. */
const END_FLOWS_GRACE_MS = 1000;
/** How long endFlows() then waits for the ended flows' close events before logging the rest itself. */
const END_FLOWS_WAIT_MS = 500;

/** The two ends of a flow as the client sees it (local = the destination it asked for). */
interface FlowEnds {
  family: number;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
}

/** The address a kernel socket is connected to (a direct outbound's); null for a proxy's tunnel stream. */
function remoteOf(upstream: Duplex): string | null {
  const a = (upstream as Partial<net.Socket>).remoteAddress;
  return typeof a === 'string' ? unmapAddress(a) : null;
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Address text to bytes for the matcher (4 or 16 bytes). */
function addressBytes(text: string): Uint8Array {
  const v4 = parseIpv4Text(text);
  if (v4 !== null) {
    const out = new Uint8Array(4);
    writeIpv4Addr(out, 0, v4);
    return out;
  }
  const out = new Uint8Array(16);
  parseIpv6Text(text, out, 0);
  return out;
}

export interface EngineOptions {
  /** File the select groups' choices are kept in across restarts (beside the state file); absent or null: memory only. */
  selectionsPath?: string | null;
  /** Directory of the url rule sets' last good copies (those without a path of their own); absent or null: none kept. */
  ruleSetDir?: string | null;
  /** Worker threads (src/workers/): the main thread's pool seen through a channel, instead of a pool of this engine's own. */
  fakeIpPool?: FakeIpPool | null;
  /** Worker threads: the main thread's DNS snoop table seen through the same channel. */
  snoop?: DnsSnoop | null;
  /** Worker threads: a registry that also reports each flow to the main thread's view. */
  flows?: FlowRegistry<FlowRecord>;
}

/** Group health and choice changes, one log line each. */
function groupLogEvents(log: Logger): GroupEvents {
  return {
    memberState: (group, member, alive, reason) =>
      alive ? log.info({ group, member, reason }, 'group member up') : log.warn({ group, member, reason }, 'group member down'),
    switched: (group, from, to, why) => log.info({ group, from, to, why }, 'group switched'),
    storeError: (message) => log.warn({ err: message }, 'group choice not saved'),
  };
}

/** What the engine needs of a UDP session: the stack's UdpSession, or a TPROXY one. */
export type UdpFlow = Pick<UdpSession, 'family' | 'remoteAddress' | 'remotePort' | 'localAddress' | 'localPort' | 'send' | 'close' | 'unreachable' | 'drainQueued' | 'fromRemote'> & {
  on(event: 'message', listener: (data: Buffer) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  /** The session from this client to another remote endpoint (src/udp/nat.ts). */
  sibling(host: string, port: number): UdpFlow | null;
};

export class Engine {
  readonly counters: EngineCounters = {
    tcpFlows: 0,
    udpSessions: 0,
    rejected: 0,
    dropped: 0,
    upstreamFailures: 0,
    unknownFakeIp: 0,
    dnsQueries: 0,
    flowErrors: 0,
    unattributedErrors: 0,
    badTarget: 0,
    tproxyUdp: newTproxyUdpCounters(),
    udpNat: newUdpNatCounters(),
  };
  /** UDP mappings per client endpoint and outbound (RFC 4787; src/udp/nat.ts). */
  private readonly nat: UdpNat;
  readonly stack: Stack;
  private readonly policy: PolicySlot;
  /** Everything built from the configuration (runtime.ts); a reload swaps it whole. */
  private rt: Runtime;
  /** Runtimes replaced by a reload, kept until the flows open at that moment have ended. */
  private readonly retired: { rt: Runtime; flows: Set<FlowInfo> }[] = [];
  private readonly pool: FakeIpPool | null;
  private readonly snoop: DnsSnoop | null;
  /** Socket-owner lookups (uid / processName / processPath rules); null while no rule needs them. */
  private owners: SocketOwnerLookup | null = null;
  /** DNS upstream failures, logged at warn (rate-limited); kept across reloads. */
  private readonly failures: UpstreamFailureLog;
  private readonly selections: SelectionStore | null;
  private readonly groupEvents: GroupEvents;
  private persistTimer: NodeJS.Timeout | null = null;
  /** The debounced save after a fake-IP change (schedulePersist). */
  private persistSoon: NodeJS.Timeout | null = null;
  /** The saves in order (persist()); never rejects. */
  private persistQueue: Promise<void> = Promise.resolve();
  /** limits.dials / limits.dialsPerSource: upstream dials in progress. */
  readonly dials: DialLimiter;
  private uninstallBoundary: (() => void) | null = null;
  /** Resolves names through sluice's own upstreams (fake-IP flows, preserveSource). */
  private readonly lookup: LookupFn;
  private readonly onFlowFailed: (guard: FlowGuard, err: unknown) => void;
  /** Flows not yet logged (open): for endFlows(), the stop's "stopping" line and the control API. */
  readonly flows: FlowRegistry<FlowInfo>;
  /** PATCH /configs mode: 'rule', or every new flow to `modeOutbound`. */
  private routingMode: RoutingMode = 'rule';
  private modeOutbound: Outbound | null = null;
  /** GLOBAL's member: where mode global sends every flow. */
  private globalChoice: string;
  /** Flows matched per rule (index = rule, last = final) and when last, for GET /rules. */
  private ruleHits: Float64Array;
  private ruleHitAt: Float64Array;
  private ruleSetLoadedAt = new Map<string, number>();
  /** False once stopping: new flows are refused. */
  private accepting = true;
  private stopped = false;
  /** start() ran: groups of a reloaded runtime start their checks at once. */
  private started = false;
  /** The url rule sets' downloads. */
  private readonly remote: RemoteRuleSets;
  /** geoip.database, opened at start-up and again when a reload names another file. */
  private geoip: GeoIpLookup | null = null;
  /** log.level debug (checked once: debug lines cost one branch when off). */
  private readonly debug: boolean;
  /** Where echo requests go (icmp.echo); its relay's counters are `icmpEcho`. */
  private readonly echoRoute: IcmpEchoRoute;
  /** Honest ping's counters (src/ip/echo-relay.ts), live. */
  readonly icmpEcho: EchoRelayStats;
  /** Honest ping's and the relayed UDP errors' counters (the stopping line). */
  icmpCounters(): { echo: EchoRelayStats; udp: UdpErrorStats } {
    return { echo: this.icmpEcho, udp: this.udpErrors.stats };
  }
  /** ICMP errors about direct UDP sessions' upstream datagrams, back to their clients (traceroute -U). */
  private readonly udpErrors: UdpErrorRelay;
  /** Metrics (src/control/metrics.ts): told once per flow end, dial, sniff and reload; null when off. */
  observer: EngineObserver | null = null;

  constructor(
    config: SluiceConfig,
    link: LinkEndpoint,
    private readonly log: Logger,
    options: EngineOptions = {},
  ) {
    // Domain targets (fake-ip flows) resolve through sluice's own upstreams,
    // never the host's resolver, whose traffic might route into the TUN.
    this.lookup = (host, family) => resolveWith(this.rt.chain, host, family);
    const now = (): number => Date.now() / 1000;
    const dnsCfg = config.dns;
    this.failures = new UpstreamFailureLog(log);
    this.debug = log.isLevelEnabled('debug');
    this.flows = (options.flows as FlowRegistry<FlowInfo> | undefined) ?? new FlowRegistry<FlowInfo>();
    this.pool =
      options.fakeIpPool !== undefined
        ? options.fakeIpPool
        : dnsCfg.mode === 'fake-ip'
        ? new FakeIpPool({
            ipv4Range: dnsCfg.fakeIp.ipv4Range,
            ipv6Range: dnsCfg.fakeIp.ipv6Range,
            exclude: [config.tun.ipv4.split('/')[0]!, config.tun.ipv6.split('/')[0]!],
            onChange: () => this.schedulePersist(),
          })
        : null;
    // dns.fakeIp.filter: those names get real answers, snooped so a flow to one still has its name.
    this.snoop =
      options.snoop !== undefined ? options.snoop : dnsCfg.mode === 'real-ip' || dnsCfg.fakeIp.filter.length > 0 ? new DnsSnoop({ maxEntries: 65536, now }) : null;
    this.selections = options.selectionsPath === undefined || options.selectionsPath === null ? null : new SelectionStore(options.selectionsPath);
    if (this.selections?.lastError) log.warn({ err: this.selections.lastError }, 'group choices not restored');
    this.groupEvents = groupLogEvents(log);
    this.geoip = config.geoip.database === null ? null : geoIpLookup(config.geoip.database);
    this.remote = new RemoteRuleSets({
      log,
      dir: options.ruleSetDir ?? null,
      outbound: (name) => this.rt.outbounds.get(name),
      apply: (name, entries, type) => this.replaceRuleSet(name, entries, type),
    });
    this.rt = buildRuntime(this.remote.prepare(config, null), this.runtimeDeps());
    this.policy = new PolicySlot(this.rt.policy);
    this.globalChoice = Engine.defaultGlobal(config);
    this.ruleHits = new Float64Array(config.rules.length + 1);
    this.ruleHitAt = new Float64Array(config.rules.length + 1);
    const loaded = Date.now();
    for (const name of Object.keys(config.ruleSets)) this.ruleSetLoadedAt.set(name, loaded);
    this.updateOwners();
    this.onFlowFailed = (guard, err) => {
      this.counters.flowErrors++;
      this.log.error({ flow: guard.what, err: errorText(err) }, 'flow handler failed; the flow was ended');
    };
    this.dials = new DialLimiter(config.limits.dials, config.limits.dialsPerSource);
    this.stack = new Stack(
      link,
      {
        onTcpFlow: (req) => this.onTcpFlow(req),
        onUdpSession: (s) => this.onUdpSession(s),
      },
      { maxPendingFlows: config.limits.pendingSyns, synCookieThreshold: config.limits.synCookieThreshold, maxUdpSessions: config.udp.maxSessions, udpIdleTimeoutMs: config.udp.idleTimeout * 1000 },
    );
    this.nat = new UdpNat({
      mode: config.udp.nat,
      counters: this.counters.udpNat,
      admit: (m, client, host, port) => this.admitUdpSource(m, client, host, port),
      onInbound: (b) => this.onInboundUdp(b),
    });
    this.echoRoute = new IcmpEchoRoute({
      log,
      generation: () => this.rt,
      config: () => this.rt.config.icmp,
      policy: () => this.rt.policy,
      outbound: (name) => this.rt.outbounds.get(name),
      modeOutbound: () => this.modeOutbound,
      fakeName: (family, buf, off) => (this.pool !== null && this.pool.isFakeBytes(buf, off, family) ? this.pool.lookupBytes(buf, off, family) : undefined),
      knownName: (address) => this.snoop?.lookup(address) ?? null,
      lookup: this.lookup,
    });
    const relay = this.stack.forwardEchoes(this.echoRoute);
    this.echoRoute.attach(relay);
    this.icmpEcho = relay.stats;
    this.udpErrors = relay.udpErrors;
    const pmtu = new PathMtuCache();
    this.udpErrors.pathMtu = (family, address, mark, device, now) => pmtu.get(family, address, mark, device, now);
    const st = this.stack.stats;
    const dc = this.dials.counters;
    this.counters.synFlood = {
      get halfOpen() { return st.halfOpenFlows; },
      get pendingSyns() { return st.pendingFlows; },
      get cookiesSent() { return st.synCookiesSent; },
      get cookiesValidated() { return st.synCookiesValidated; },
      get cookiesRejected() { return st.synCookiesRejected; },
      get synBudgetDrops() { return st.drops.syn_budget ?? 0; },
      get dialsActive() { return dc.active; },
      get dialsRefusedGlobal() { return dc.refusedGlobal; },
      get dialsRefusedPerSource() { return dc.refusedPerSource; },
    };
  }

  /** Compiles the policy part of a config (rule-set entries already loaded). */
  static compile(config: SluiceConfig): Policy {
    return compileConfigPolicy(config, null);
  }

  private runtimeDeps(previous?: Runtime): RuntimeDeps {
    return { log: this.log, lookup: this.lookup, pool: this.pool, snoop: this.snoop, failures: this.failures, selections: this.selections, groupEvents: this.groupEvents, geoip: this.geoip, ...(previous !== undefined ? { previous } : {}) };
  }

  /** The running configuration's outbound groups (list, select, delay): the control plane's interface to them. */
  get groups(): GroupRegistry {
    return this.rt.groups;
  }

  private get config(): SluiceConfig {
    return this.rt.config;
  }

  async start(): Promise<void> {
    const path = this.config.dns.fakeIp.persistPath;
    if (this.pool !== null && path !== null) {
      await mkdir(dirname(path), { recursive: true }).catch((err: Error) => this.log.warn({ path, err: err.message }, 'cannot create the fake-ip state directory'));
      const r = await this.pool.restore(path);
      this.log.info({ restored: r.restored, path }, 'fake-ip mappings restored');
      this.persistTimer = setInterval(() => void this.persist(), 60_000).unref();
    }
    this.uninstallBoundary = installErrorBoundary({
      unattributed: (err, origin, source) => {
        this.counters.unattributedErrors++;
        this.log.error({ origin, ...source, err: errorText(err) }, 'uncaught error outside any flow; sluice keeps serving');
      },
    });
    this.rt.groups.start();
    // ICMP sockets now, while sluice may still open raw ones (before run.user's drop).
    if (this.config.icmp.echo === 'forward') this.echoRoute.openFor(this.rt.outbounds.values());
    this.started = true;
    // url rule sets: their first download (bounded wait; the disk copies serve if it fails).
    await this.remote.reconcile(this.rt.config);
    this.stack.start();
  }

  /** Flows open now (not yet logged). */
  get openFlows(): number {
    return this.flows.size;
  }

  /** Refuses new flows from now on (the first step of a stop). */
  stopAccepting(): void {
    this.accepting = false;
    // From here on every flow that ends is ended by the stop: also those the stop's earlier
    // steps close (a TPROXY UDP session goes with its listener) before endFlows() runs.
    for (const f of this.flows.values()) f.shutdown = true;
  }

  /**
   * Ends every open flow wherever it is, each logged with close "shutdown".
   * A relayed TCP flow is closed the orderly way first: a FIN to the client
   * and to the upstream (RFC 9293 3.6), and END_FLOWS_GRACE_MS for the
   * peers to answer with theirs. Everything else, and a relayed flow still
   * open after the grace, is ended hard: a pending dial is aborted and the
   * client reset, a sniffing flow's stream and a relay's streams destroyed
   * (RST), a UDP session and its association closed. Then a short wait for
   * their close events, and what is left is logged here.
   */
  async endFlows(): Promise<void> {
    this.accepting = false;
    const open = [...this.flows.values()];
    let orderly = 0;
    for (const f of open) {
      f.shutdown = true;
      try {
        if (f.closeOrderly?.() === true) orderly++;
        else f.end?.();
      } catch (err) {
        if (this.debug) this.log.debug({ src: f.src, dst: f.dst, err: (err as Error).message }, 'ending a flow failed');
      }
    }
    if (orderly > 0) {
      await this.flowsGone(END_FLOWS_GRACE_MS);
      for (const f of [...this.flows.values()]) {
        try {
          f.end?.();
        } catch (err) {
          if (this.debug) this.log.debug({ src: f.src, dst: f.dst, err: (err as Error).message }, 'ending a flow failed');
        }
      }
    }
    await this.flowsGone(END_FLOWS_WAIT_MS);
    for (const f of [...this.flows.values()]) this.logFlow(f, { bytesUp: 0, bytesDown: 0, close: 'shutdown' });
    if (open.length > 0) this.log.info({ flows: open.length, closingWithFin: orderly }, 'open flows ended');
  }

  /** Waits until every flow has been logged, or `ms` has passed. */
  private async flowsGone(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (this.flows.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  }

  /**
   * Ends the flows (when endFlows() has not), saves the fake-IP mappings,
   * closes the stack and the TUN, the HTTP pools and the DNS upstreams
   * (queries in flight end, DoH dispatchers are destroyed).
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.uninstallBoundary?.();
    this.uninstallBoundary = null;
    this.remote.close();
    this.echoRoute.close();
    if (this.persistTimer !== null) clearInterval(this.persistTimer);
    this.persistTimer = null;
    if (this.persistSoon !== null) clearTimeout(this.persistSoon);
    this.persistSoon = null;
    if (this.flows.size > 0) await this.endFlows();
    this.accepting = false;
    await this.persist();
    this.stack.close();
    await Promise.allSettled([closeRuntime(this.rt), ...this.retired.splice(0).map((r) => closeRuntime(r.rt))]);
  }

  /**
   * A new fake-IP mapping is on disk within PERSIST_DELAY_MS (plus the
   * write): a client may hold the address for its TTL and beyond, and a
   * `kill -9` must not lose it. Changes inside the delay share one write;
   * a change during a write arms the next one.
   */
  private schedulePersist(): void {
    if (this.config.dns.fakeIp.persistPath === null || this.stopped || this.persistSoon !== null) return;
    this.persistSoon = setTimeout(() => {
      this.persistSoon = null;
      void this.persist();
    }, PERSIST_DELAY_MS);
  }

  /** Saves the pool after any save in progress (writes never overlap, the last one has every change before it). */
  private persist(): Promise<void> {
    this.persistQueue = this.persistQueue.then(() => this.persistNow());
    return this.persistQueue;
  }

  private async persistNow(): Promise<void> {
    const path = this.config.dns.fakeIp.persistPath;
    if (this.pool === null || path === null) return;
    try {
      await this.pool.persist(path);
    } catch (err) {
      this.log.warn({ path, err: (err as Error).message }, 'could not save fake-ip mappings');
    }
  }

  /** The configuration the running policy was compiled from (rule-set entries as last (re)loaded). */
  get activeConfig(): SluiceConfig {
    return this.config;
  }

  /**
   * Whole-config reload (SIGHUP, POST /v1/reload): builds the outbounds,
   * groups, DNS, HTTP mode and policy of `next` first (throwing, with the
   * running configuration untouched, if that fails), then swaps them in at
   * once. Flows already routed keep their outbound; new flows follow
   * `next`. The replaced runtime is released once the flows open now have
   * ended. The caller keeps the settings a reload cannot change (run.ts).
   */
  replaceConfig(loaded: SluiceConfig): void {
    const prev = this.rt;
    const next = this.remote.prepare(loaded, prev.config);
    const db = next.geoip.database;
    const geoip = db === prev.config.geoip.database ? this.geoip : db === null ? null : geoIpLookup(db);
    const rt = buildRuntime(next, { ...this.runtimeDeps(prev), geoip });
    this.geoip = geoip;
    this.rt = rt;
    this.policy.swap(rt.policy);
    if (this.started) rt.groups.start();
    this.updateOwners();
    this.observer?.reloaded(true);
    prev.groups.close();
    if (this.flows.size === 0) void closeRuntime(prev);
    else this.retired.push({ rt: prev, flows: new Set(this.flows.values()) });
    // What the control API shows and mode global/direct use follow the new outbounds.
    if (!rt.outbounds.has(this.globalChoice)) this.globalChoice = Engine.defaultGlobal(next);
    if (this.routingMode !== 'rule') {
      try {
        this.setMode(this.routingMode);
      } catch {
        this.setMode('rule'); // mode direct, and the new config has no direct outbound
      }
    }
    const now = Date.now();
    for (const [name, rs] of Object.entries(next.ruleSets)) if (JSON.stringify(prev.config.ruleSets[name]) !== JSON.stringify(rs)) this.ruleSetLoadedAt.set(name, now);
    void this.remote.reconcile(next);
    if (this.debug) this.log.debug({ rules: next.rules.length, outbounds: next.outbounds.length, needsName: rt.needsName, retired: this.retired.length }, 'reload details');
  }

  /** `loaded` with its url rule sets filled in (from the running set when unchanged, else the disk copy): what a reload compares. */
  withRemoteEntries(loaded: SluiceConfig): SluiceConfig {
    return this.remote.prepare(loaded, this.rt.config);
  }

  /**
   * New entries for one rule set (a remote set refreshed, a file re-read):
   * recompiles the policy only; outbounds and DNS stay. Throws PolicyError
   * (nothing changed) on entries the compiler refuses.
   */
  replaceRuleSet(name: string, entries: string[], type?: RuleSetType): void {
    const cur = this.rt.config;
    const rs = cur.ruleSets[name];
    if (rs === undefined) return;
    const next: SluiceConfig = { ...cur, ruleSets: { ...cur.ruleSets, [name]: { ...rs, entries, type: type ?? rs.type } } };
    const policy = compileConfigPolicy(next, this.geoip);
    this.rt = { ...this.rt, config: next, policy, needsName: policyNeedsName(next) };
    this.policy.swap(policy);
    this.ruleSetLoadedAt.set(name, Date.now());
  }

  /**
   * PUT /providers/rules/:name: re-reads one file-backed rule set, or
   * downloads a url set now; the running entries stay when that fails.
   */
  async reloadRuleSet(name: string): Promise<RuleSetReloadResult> {
    const rs = this.rt.config.ruleSets[name];
    if (rs === undefined) return { ok: false, errors: [`no rule set named ${name}`] };
    const before = rs.entries.length;
    const done = (): RuleSetReloadResult => {
      const after = this.rt.config.ruleSets[name]?.entries.length ?? 0;
      return { ok: true, changes: { ruleSets: after === before ? {} : { [name]: { before, after } } } };
    };
    if (rs.url !== null) return (await this.remote.refresh(name)) ? done() : { ok: false, errors: [`${name}: the download failed or was invalid (the log says why); the current entries stay`] };
    if (rs.path === null) return done();
    const r = await readRuleSetSource(rs.path, { format: rs.format, type: rs.format === 'sluice' ? rs.type : null, behavior: rs.behavior }, rs.path, `ruleSets.${name}`);
    if (r.readError !== null) return { ok: false, errors: [`${rs.path}: cannot read rule set: ${r.readError}`] };
    if (r.problems.length > 0) return { ok: false, errors: r.problems.map(formatProblem) };
    try {
      this.replaceRuleSet(name, r.entries, r.type);
    } catch (err) {
      return { ok: false, errors: [(err as Error).message] };
    }
    return done();
  }

  /** Releases retired runtimes whose flows have all ended (called as each flow is logged). */
  private releaseRetired(info: FlowInfo): void {
    for (let i = this.retired.length - 1; i >= 0; i--) {
      const r = this.retired[i]!;
      r.flows.delete(info);
      if (r.flows.size === 0) {
        this.retired.splice(i, 1);
        void closeRuntime(r.rt);
      }
    }
  }

  /** The chain of a group flow: outermost first for the flow line, innermost first (Clash `chains`) for the registry. */
  private static setChain(info: FlowInfo, chain: readonly string[] | undefined): void {
    if (chain === undefined) return;
    info.chain = chain;
    info.chains = [...chain].reverse();
  }

  /** Creates the owner lookup when the running policy first needs it (kept after: its cache is bounded). */
  private updateOwners(): void {
    if (this.owners !== null || !this.policy.current.needsOwner) return;
    const native = loadNative();
    this.owners = new SocketOwnerLookup({ sockDiag: (p, f, l, lp, r, rp) => native.socketOwner(p, f, l, lp, r, rp) });
    this.counters.socketOwner = this.owners.stats;
  }

  /** Whether this flow's owner must be known before routing: an owner rule exists and the flow entered the TUN (TPROXY flows come from other hosts). */
  private wantsOwner(info: FlowInfo): boolean {
    return this.owners !== null && info.inbound === 'tun' && this.policy.current.needsOwner;
  }

  /**
   * Fills info.uid / process / processPath from the client socket: the
   * client's address (the flow's remote end) is the socket's local one, the
   * destination it asked for (a fake IP too) its remote.
   */
  private async findOwner(info: FlowInfo, e: FlowEnds): Promise<void> {
    const family = e.family === 6 ? 6 : 4;
    const owner = await this.owners!.lookup(info.network, family, addressBytes(e.remoteAddress), e.remotePort, addressBytes(e.localAddress), e.localPort);
    if (owner === null) return;
    info.uid = owner.uid;
    info.process = owner.process;
    info.processPath = owner.processPath;
  }

  // ------------------------------------------------------------- control API

  /** The DNS hijack (null when dns.hijack is off), for the metrics' scrape-time reads. */
  get dnsServer(): DnsHijack | null {
    return this.rt.dns;
  }

  /** The DNS snoop table (real-ip mode, dns.fakeIp.filter), null when none: the workers' channel serves it. */
  get dnsSnoop(): DnsSnoop | null {
    return this.snoop;
  }

  /** The fake-IP pool (null in real-ip mode), for the metrics. */
  get fakeIpPool(): FakeIpPool | null {
    return this.pool;
  }

  /**
   * A live flow's routing inputs (ctx null: not routed by the rules yet, or
   * routed by a mode); null for an unknown id. `domain` and `protocol` are
   * what the flow shows now: when the route was chosen before the first
   * bytes (no rule needed a name), sniffing fills them afterwards for the
   * log and /connections only, and ctx keeps what decided.
   */
  flowMatch(id: string): { ctx: MatchContext | null; nameFrom: NameOrigin | null; domain: string | null; protocol: SniffedProtocol | null; rule: number; outbound: string; chains: string[] | null; mode: RoutingMode | null } | null {
    const f = this.flows.get(id);
    if (f === undefined) return null;
    return { ctx: f.match?.ctx ?? null, nameFrom: f.match?.nameFrom ?? null, domain: f.domain, protocol: f.protocol, rule: f.rule, outbound: f.outbound, chains: f.chains, mode: f.mode };
  }

  /** GLOBAL's default member: the first proxy outbound (socks5, http) in config order, else final's. */
  private static defaultGlobal(config: SluiceConfig): string {
    return config.outbounds.find((o) => o.type === 'socks5' || o.type === 'http')?.name ?? config.final;
  }

  get mode(): RoutingMode {
    return this.routingMode;
  }

  /**
   * PATCH /configs mode, for new flows: rule (the rules decide), global
   * (every flow to GLOBAL's member), direct (every flow to the first direct
   * outbound). DNS hijacking is unchanged. Throws when direct has no direct outbound.
   */
  setMode(mode: RoutingMode): void {
    if (mode === 'rule') this.modeOutbound = null;
    else if (mode === 'global') this.modeOutbound = this.rt.outbounds.get(this.globalChoice)!;
    else {
      const direct = [...this.rt.outbounds.values()].find((o) => o.type === 'direct');
      if (direct === undefined) throw new Error('mode direct needs an outbound of type direct, and the config has none');
      this.modeOutbound = direct;
    }
    if (mode !== this.routingMode) this.log.info({ mode, outbound: this.modeOutbound?.name ?? null }, 'mode changed');
    this.routingMode = mode;
  }

  /** GLOBAL's member (where mode global sends flows). */
  get globalOutbound(): string {
    return this.globalChoice;
  }

  /** PUT /proxies/GLOBAL: picks its member; throws for an unknown outbound. */
  selectGlobal(name: string): void {
    if (!this.rt.outbounds.has(name)) throw new Error(`no outbound named ${JSON.stringify(name)}`);
    this.globalChoice = name;
    if (this.routingMode === 'global') this.modeOutbound = this.rt.outbounds.get(name)!;
  }

  /** The outbounds by name, in config order, without the groups (those are `groups`). */
  get outboundMap(): ReadonlyMap<string, Outbound> {
    const out = new Map<string, Outbound>();
    for (const [name, o] of this.rt.outbounds) if (!(o instanceof OutboundGroup)) out.set(name, o);
    return out;
  }

  /** Flows matched by each rule (last entry: final) and when the last one started (epoch ms, 0 never). */
  ruleHitCounts(): { hits: number; lastAt: number }[] {
    const n = this.config.rules.length + 1;
    if (this.ruleHits.length !== n) {
      // A reload changed the rules: counting starts over.
      this.ruleHits = new Float64Array(n);
      this.ruleHitAt = new Float64Array(n);
    }
    return Array.from(this.ruleHits, (hits, i) => ({ hits, lastAt: this.ruleHitAt[i]! }));
  }

  /** The rule sets (rule providers). */
  ruleSetStates(): RuleSetState[] {
    return Object.entries(this.config.ruleSets).map(([name, rs]) => ({ name, type: rs.type, path: rs.path, url: rs.url, entries: rs.entries.filter((e) => e.trim() !== '' && !e.trimStart().startsWith('#')).length, loadedAt: this.ruleSetLoadedAt.get(name) ?? 0 }));
  }

  /** POST /cache/fakeip/flush: forgets every fake-IP mapping and saves the empty table; null without fake-ip mode. */
  async flushFakeIp(): Promise<number | null> {
    if (this.pool === null) return null;
    const n = this.pool.clear();
    this.log.info({ mappings: n }, 'fake-ip mappings flushed');
    await this.persist();
    return n;
  }

  /** GET /dns/query: asks sluice's upstreams (what a real-ip answer would be), bounded by the chain's deadline. */
  dnsQuery(query: Uint8Array): Promise<Uint8Array> {
    return this.rt.chain.query(query);
  }

  // ------------------------------------------------------------------ TCP

  private nameFor(address: string): { domain: string | null; unknownFake: boolean; from: NameOrigin | null } {
    if (this.pool !== null && this.pool.isFake(address)) {
      const domain = this.pool.lookup(address);
      return { domain, unknownFake: domain === null, from: 'fake-ip' };
    }
    if (this.snoop !== null) {
      const domain = this.snoop.lookup(address);
      return { domain, unknownFake: false, from: domain === null ? null : 'dns' };
    }
    return { domain: null, unknownFake: false, from: null };
  }

  /** The name found for a flow's destination at its start (fake-IP or snooped). */
  private static setName(info: FlowInfo, domain: string | null, from: NameOrigin | null): void {
    info.domain = domain;
    info.nameFrom = domain === null ? null : from;
  }

  /** What sniffing read: kept as sniffHost, and as the flow's name when it had none. */
  private static sniffed(info: FlowInfo, protocol: SniffedProtocol, serverName: string | null): void {
    info.protocol = protocol;
    if (serverName === null || protocol === 'dns') return;
    info.sniffHost = serverName;
    if (isIP(serverName) === 0 && info.domain === null) {
      info.domain = serverName;
      info.nameFrom = 'sniff';
    }
  }

  private context(network: 'tcp' | 'udp', e: FlowEnds, domain: string | null, protocol: SniffedProtocol | null, inbound: 'tun' | 'tproxy'): MatchContext {
    return {
      network,
      inbound,
      family: e.family === 6 ? 6 : 4,
      dst: addressBytes(e.localAddress),
      dstPort: e.localPort,
      src: addressBytes(e.remoteAddress),
      srcPort: e.remotePort,
      domain,
      protocol,
    };
  }

  private flowInfo(network: 'tcp' | 'udp', inbound: 'tun' | 'tproxy', e: FlowEnds): FlowInfo {
    const src = hostPort(e.remoteAddress, e.remotePort);
    const dst = hostPort(e.localAddress, e.localPort);
    return {
      id: newFlowId(),
      network,
      inbound,
      srcIp: e.remoteAddress,
      srcPort: e.remotePort,
      dstIp: e.localAddress,
      dstPort: e.localPort,
      src,
      dst,
      domain: null,
      nameFrom: null,
      sniffHost: null,
      protocol: null,
      rule: -1,
      outbound: '',
      uid: null,
      process: null,
      processPath: null,
      chain: null,
      chains: null,
      mode: null,
      remoteDestination: null,
      started: Date.now(),
      bytes: null,
      killed: false,
      guard: new FlowGuard(`${network} ${inbound} ${src} -> ${dst}`, this.onFlowFailed),
      end: null,
      shutdown: false,
      closeOrderly: null,
      logged: false,
      match: null,
    };
  }

  /**
   * Port 0 and non-unicast addresses are refused before any socket API sees
   * them (dgram send and net connect throw on port 0). The stack already
   * drops them from the TUN; TPROXY listeners can still hand them over.
   */
  private badTarget(e: FlowEnds): boolean {
    if (isUsablePort(e.localPort) && isUsablePort(e.remotePort) && isUnicastText(e.localAddress) && isUnicastText(e.remoteAddress)) return false;
    this.counters.badTarget++;
    return true;
  }

  private onTcpFlow(req: TcpFlowRequest): void {
    this.counters.tcpFlows++;
    const info = this.flowInfo('tcp', 'tun', req);
    if (!this.accepting) {
      req.reset();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'shutdown' });
    }
    this.flows.add(info);
    const resetUndecided = (): void => {
      if (!req.decided) req.reset();
    };
    info.end = resetUndecided;
    info.guard.own(resetUndecided);
    info.guard.run(() => this.routeTcpFlow(req, info));
  }

  private routeTcpFlow(req: TcpFlowRequest, info: FlowInfo): void {
    if (this.badTarget(req)) {
      req.reset();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'bad target' });
    }
    // DNS first, as for UDP: a resolver address inside the fake-IP pool is
    // answered over TCP too (it has no name of its own).
    const dns = this.rt.dns;
    if (dns !== null && req.localPort === 53) {
      info.protocol = 'dns';
      info.outbound = 'dns-hijack';
      const dnsStream = req.accept();
      info.end = () => dnsStream.destroy();
      return this.serveDnsOverTcp(dnsStream, info, dns);
    }
    if (this.wantsOwner(info)) {
      // The SYN waits (the stack holds it) while the owner is looked up off the event loop's fast path.
      void this.findOwner(info, req).then(() =>
        info.guard.run(() => {
          if (req.decided || info.logged) return;
          if (req.signal.aborted) return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'client gone before connect' });
          this.routeTcpNamed(req, info);
        }),
      );
      return;
    }
    this.routeTcpNamed(req, info);
  }

  /** The rest of routeTcpFlow, once the owner is known (or not needed). */
  private routeTcpNamed(req: TcpFlowRequest, info: FlowInfo): void {
    const { domain, unknownFake, from } = this.nameFor(req.localAddress);
    if (this.debug) this.log.debug({ network: 'tcp', src: info.src, dst: info.dst, domain, unknownFake }, 'flow accepted');
    if (unknownFake) {
      // An expired or never-issued fake address: refuse fast, never black-hole.
      this.counters.unknownFakeIp++;
      req.reset();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'unknown fake-ip' });
    }
    Engine.setName(info, domain, from);
    // HTTP-mode ports are sniffed even when the name is known: the mode needs to see HTTP.
    const l7 = this.rt.httpL7 !== null && this.rt.httpL7.wants(req.localPort);
    // Without a name-dependent rule, sniffing cannot change the outcome: then
    // the outbound connects before the SYN is answered, as for known names.
    if ((domain !== null || !this.rt.needsName) && !l7 || this.config.sniff.timeoutMs === 0) {
      return this.routeBeforeAccept(req, info);
    }
    const stream = req.accept();
    info.guard.own(() => stream.destroy());
    stream.on('error', () => {});
    info.end = () => stream.destroy();
    this.sniffThenRoute(stream, req, info);
  }

  private routeBeforeAccept(req: TcpFlowRequest, info: FlowInfo): void {
    const outbound = this.choose(req, info);
    if (outbound.action !== 'connect') {
      if (outbound.action === 'reject') req.reset();
      else req.drop();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: outbound.action === 'reject' ? 'rejected' : 'dropped' });
    }
    const host = this.pool !== null && info.domain !== null && this.pool.isFake(req.localAddress) ? info.domain : req.localAddress;
    // The client giving up (req.signal) or sluice stopping (end) aborts the dial.
    const ac = new AbortController();
    req.abortOnCancel(ac); // one controller for both, no AbortSignal.any per flow (issue 10)
    info.end = () => {
      ac.abort();
      if (!req.decided) req.reset();
    };
    if (this.debug) this.log.debug({ src: info.src, dst: info.dst, host, outbound: outbound.name, beforeAccept: true }, 'dial start');
    this.dialTcp(outbound, host, req.localPort, ac.signal, req).then(
      (upstream) => {
        info.guard.own(() => upstream.destroy());
        Engine.setChain(info, chainOf(upstream));
        let stream: TcpStream;
        try {
          stream = req.accept();
        } catch {
          upstream.destroy(); // the client gave up meanwhile
          return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'client gone before connect' });
        }
        info.guard.own(() => stream.destroy());
        info.end = () => {
          stream.destroy();
          upstream.destroy();
        };
        this.observeName(stream, req.localPort, info);
        info.remoteDestination = remoteOf(upstream);
        info.closeOrderly = () => shutdownRelay(stream);
        info.bytes = relay(stream, upstream, [], (r) => this.logFlow(info, r));
      },
      (err: unknown) => {
        this.counters.upstreamFailures++;
        if (this.debug) this.log.debug({ src: info.src, dst: info.dst, host, outbound: outbound.name, err: (err as Error).message }, 'dial failed');
        const reaction = err instanceof OutboundError ? err.reaction : 'rst';
        if (!req.decided && !req.signal.aborted) {
          if (reaction === 'unreachable') req.unreachable('host');
          else if (reaction === 'drop') req.drop();
          else req.reset();
        }
        this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: `upstream failed: ${(err as Error).message}` });
      },
    );
  }

  /**
   * The routing decision is made; still read the name and protocol from the
   * first bytes as they pass, for the flow log (no delay, no copy).
   */
  private observeName(stream: TcpStream, dstPort: number, info: FlowInfo): void {
    if (!this.log.isLevelEnabled('info')) return;
    const sniffer = new FlowSniffer({ maxBytes: this.config.sniff.maxBytes, dstPort });
    const onData = (c: Buffer): void => {
      const r = sniffer.push(c);
      if (r.kind === 'need-more') return;
      stream.off('data', onData);
      if (r.kind === 'found') Engine.sniffed(info, r.protocol, r.serverName);
    };
    stream.on('data', onData);
  }

  private sniffThenRoute(stream: Duplex, req: FlowEnds, info: FlowInfo): void {
    const sniffer = new FlowSniffer({ maxBytes: this.config.sniff.maxBytes, dstPort: req.localPort });
    const chunks: Buffer[] = [];
    let decided = false;
    const decide = (r: SniffResult, outcome: SniffOutcome = 'not_found'): void => {
      if (decided) return;
      decided = true;
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.pause();
      // A name already known (fake IP, snooped) stays: only HTTP-mode ports get here with one.
      if (r.kind === 'found') Engine.sniffed(info, r.protocol, r.serverName);
      this.observer?.sniffed(r.kind === 'found' ? r.protocol : null, r.kind === 'found' ? 'found' : outcome);
      if (this.debug) this.log.debug({ src: info.src, dst: info.dst, sniff: r.kind, protocol: info.protocol, domain: info.domain, bytes: chunks.reduce((n, c) => n + c.length, 0) }, 'sniff result');
      // Called from the stream's events: in the flow's context, so the dial and its sockets carry it.
      info.guard.run(() => this.connectAfterSniff(stream, req, info, chunks));
    };
    const onData = (c: Buffer): void => {
      chunks.push(c);
      let r: SniffResult;
      try {
        r = sniffer.push(c);
      } catch (err) {
        return info.guard.fail(err);
      }
      if (r.kind !== 'need-more') decide(r);
    };
    const onEnd = (): void => decide(sniffer.finish(), 'closed');
    // Server-speaks-first protocols send nothing: route by address after the timeout.
    const timer = setTimeout(() => decide(sniffer.finish(), 'timeout'), this.config.sniff.timeoutMs);
    info.end = () => {
      if (decided) return;
      decided = true;
      clearTimeout(timer);
      stream.destroy();
      this.logFlow(info, { bytesUp: chunks.reduce((n, c) => n + c.length, 0), bytesDown: 0, close: 'shutdown' });
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
  }

  private connectAfterSniff(stream: Duplex, req: FlowEnds, info: FlowInfo, chunks: Buffer[]): void {
    const outbound = this.choose(req, info);
    if (outbound.action !== 'connect') {
      stream.destroy(); // RST: accepted already, so drop and reject look the same to the client
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: outbound.action === 'reject' ? 'rejected' : 'dropped' });
    }
    // A fake destination stands for its name (a known name is the only way a fake one gets here).
    const fakeName = this.pool !== null && this.pool.isFake(req.localAddress) ? info.domain : null;
    const host = fakeName ?? req.localAddress;
    const httpL7 = this.rt.httpL7;
    if (httpL7 !== null && info.protocol === 'http' && httpL7.wants(req.localPort)) {
      info.end = () => stream.destroy();
      info.closeOrderly = () => httpL7.closeIdle(stream);
      info.bytes = httpL7.serve(stream, chunks, { src: info.src, target: { host, port: req.localPort }, outbound }, (r) => {
        // The flow line says what the requests matched (http.rules index and outbound, as
        // their "request" lines do); flowRule keeps the flow-level policy match.
        const flowRule = info.rule;
        if (r.requests > 0) {
          info.outbound = r.outbound;
          info.rule = r.rule;
        }
        this.logFlow(info, r, flowRule);
      });
      return;
    }
    const ac = new AbortController();
    const onClose = (): void => ac.abort();
    stream.once('close', onClose);
    info.end = () => {
      ac.abort();
      stream.destroy();
    };
    if (this.debug) this.log.debug({ src: info.src, dst: info.dst, host, outbound: outbound.name, beforeAccept: false }, 'dial start');
    this.dialTcp(outbound, host, req.localPort, ac.signal, req).then(
      (upstream) => {
        info.guard.own(() => upstream.destroy());
        Engine.setChain(info, chainOf(upstream));
        stream.off('close', onClose);
        if (stream.destroyed) {
          upstream.destroy();
          return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'client gone before connect' });
        }
        info.end = () => {
          stream.destroy();
          upstream.destroy();
        };
        info.remoteDestination = remoteOf(upstream);
        info.closeOrderly = () => shutdownRelay(stream);
        info.bytes = relay(stream, upstream, chunks, (r) => this.logFlow(info, r));
      },
      (err: unknown) => {
        this.counters.upstreamFailures++;
        if (this.debug) this.log.debug({ src: info.src, dst: info.dst, host, outbound: outbound.name, err: (err as Error).message }, 'dial failed');
        stream.destroy();
        this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: `upstream failed: ${(err as Error).message}` });
      },
    );
  }

  /**
   * A TCP connection a TPROXY listener accepted (gateway mode tproxy): the
   * socket's local address and port are the client's original destination
   * (TPROXY leaves the packet unchanged), its remote end is the LAN client.
   * Sniffed, matched with inbound tproxy and relayed like a TUN flow; the
   * handshake is already complete, so a failing upstream resets it.
   */
  handleTransparent(socket: net.Socket): void {
    this.counters.tcpFlows++;
    socket.on('error', () => {});
    socket.setNoDelay(true);
    const remoteAddress = unmapAddress(socket.remoteAddress ?? '');
    const localAddress = unmapAddress(socket.localAddress ?? '');
    const ends: FlowEnds = { family: isIP(localAddress) === 6 ? 6 : 4, remoteAddress, remotePort: socket.remotePort ?? 0, localAddress, localPort: socket.localPort ?? 0 };
    const info = this.flowInfo('tcp', 'tproxy', ends);
    if (!this.accepting) {
      socket.resetAndDestroy();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'shutdown' });
    }
    this.flows.add(info);
    info.end = () => socket.destroy();
    if (this.debug) this.log.debug({ network: 'tcp', inbound: 'tproxy', src: info.src, dst: info.dst }, 'flow accepted');
    info.guard.own(() => socket.destroy());
    info.guard.run(() => this.routeTransparent(socket, ends, info));
  }

  private routeTransparent(socket: net.Socket, ends: FlowEnds, info: FlowInfo): void {
    const { remoteAddress, localAddress } = ends;
    if (remoteAddress === '' || localAddress === '') {
      socket.destroy();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'client gone before accept' });
    }
    if (this.badTarget(ends)) {
      socket.resetAndDestroy();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'bad target' });
    }
    // DNS over TCP is answered by the hijack, as behind the TUN and as over UDP.
    const dns = this.rt.dns;
    if (dns !== null && ends.localPort === 53) {
      info.protocol = 'dns';
      info.outbound = 'dns-hijack';
      return this.serveDnsOverTcp(socket, info, dns);
    }
    const { domain, unknownFake, from } = this.nameFor(localAddress);
    if (unknownFake) {
      this.counters.unknownFakeIp++;
      socket.resetAndDestroy();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'unknown fake-ip' });
    }
    Engine.setName(info, domain, from);
    if (this.config.sniff.timeoutMs === 0) return this.connectAfterSniff(socket, ends, info, []);
    this.sniffThenRoute(socket, ends, info);
  }

  /**
   * The outbound's connect, or with gateway.preserveSource a direct
   * connection from the client's own address. A name (a fake-IP flow) is
   * resolved first through sluice's upstreams, in the client's family, so
   * it leaves from the client's address too; a name with no address of
   * that family falls back to this host's address (nothing else can carry
   * an IPv4 client's source to an IPv6-only name).
   */
  private dialTcp(outbound: Outbound, host: string, port: number, signal: AbortSignal, e: FlowEnds): Promise<Duplex> {
    // limits.dials / dialsPerSource: over a cap the flow is refused (RST), never queued.
    const source = e.remoteAddress;
    if (!this.dials.tryAcquire(source)) return Promise.reject(new Error('too many dials in progress (limits.dials / limits.dialsPerSource)'));
    const obs = this.observer;
    const t0 = obs === null ? 0 : performance.now();
    const release = (): void => this.dials.release(source);
    let dial: Promise<Duplex>;
    try {
      dial = this.dialTcpUnlimited(outbound, host, port, signal, e);
    } catch (err) {
      release();
      return Promise.reject(err);
    }
    dial.then(release, release);
    if (obs !== null) {
      dial.then(
        () => obs.dialed(outbound.name, (performance.now() - t0) / 1000, null),
        (err: unknown) => obs.dialed(outbound.name, (performance.now() - t0) / 1000, err instanceof Error ? err : new Error(String(err))),
      );
    }
    return dial;
  }

  private dialTcpUnlimited(outbound: Outbound, host: string, port: number, signal: AbortSignal, e: FlowEnds): Promise<Duplex> {
    const gw = this.config.gateway;
    // gateway.preserveSource: the client's address travels in the target, so
    // a direct outbound, alone or as a group's member, leaves from it
    // (src/outbound/transparent-dial.ts); proxies ignore it.
    if (gw.enabled && gw.preserveSource) return outbound.connectTcp({ host, port, source: unmapAddress(e.remoteAddress) }, signal);
    return outbound.connectTcp({ host, port }, signal);
  }

  private choose(e: FlowEnds, info: FlowInfo): Outbound {
    // The policy and the outbounds of one runtime: a reload swaps both together.
    const rt = this.rt;
    let outbound: Outbound;
    if (this.modeOutbound !== null) {
      // Mode global / direct (PATCH /configs): the rules are not consulted.
      outbound = this.modeOutbound;
      info.rule = -1;
      info.mode = this.routingMode;
      info.outbound = outbound.name;
    } else {
      const ctx = this.context(info.network, e, info.domain, info.protocol, info.inbound);
      ctx.uid = info.uid;
      ctx.process = info.process;
      ctx.processPath = info.processPath;
      const m = rt.policy.match(ctx);
      info.match = { ctx, nameFrom: info.nameFrom };
      info.rule = m.ruleIndex;
      info.outbound = m.outbound;
      const hit = m.ruleIndex < 0 ? this.ruleHits.length - 1 : m.ruleIndex;
      if (hit < this.ruleHits.length) {
        this.ruleHits[hit]!++;
        this.ruleHitAt[hit] = info.started;
      }
      outbound = rt.outbounds.get(m.outbound)!;
    }
    if (this.debug) this.log.debug({ network: info.network, src: info.src, dst: info.dst, domain: info.domain, protocol: info.protocol, rule: info.rule, outbound: info.outbound, mode: this.routingMode }, 'rule matched');
    if (outbound.action === 'reject') this.counters.rejected++;
    else if (outbound.action === 'drop') this.counters.dropped++;
    return outbound;
  }

  private serveDnsOverTcp(stream: Duplex, info: FlowInfo, dns: DnsHijack): void {
    info.guard.own(() => stream.destroy());
    const reader = new TcpFrameReader();
    const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'fin' };
    info.bytes = r;
    const onReply = (reply: Uint8Array | null): void => {
      if (this.debug) this.debugDns('answer', info, reply);
      if (reply === null || stream.destroyed) return;
      const framed = frameTcp(reply);
      r.bytesDown += framed.length;
      stream.write(framed);
    };
    stream.on('data', (c: Buffer) => {
      try {
        r.bytesUp += c.length;
        reader.push(c);
        for (let msg = reader.next(); msg !== null; msg = reader.next()) {
          this.counters.dnsQueries++;
          if (this.debug) this.debugDns('query', info, msg);
          void dns.handle(msg, 'tcp').then(onReply);
        }
      } catch (err) {
        info.guard.fail(err);
      }
    });
    stream.on('end', () => stream.end());
    stream.on('error', (err: Error) => (r.close = err.message));
    stream.on('close', () => this.logFlow(info, r));
  }

  // ------------------------------------------------------------------ UDP

  /**
   * A UDP session that arrived through TPROXY (src/udp/tproxy.ts):
   * the same routing as a TUN session, with inbound tproxy.
   */
  handleTransparentUdp(s: UdpFlow): void {
    this.onUdpSession(s, 'tproxy');
  }

  /**
   * What the TPROXY UDP reader needs from the engine: the session cap, the
   * counters to fill, and the TUN to send a refused session's ICMP error
   * through (the reader has no raw socket).
   */
  tproxyUdpOptions(): TproxyUdpOptions {
    return {
      maxSessions: this.config.gateway.tproxyUdpSessions,
      idleMs: this.config.udp.idleTimeout * 1000,
      counters: this.counters.tproxyUdp,
      unreachable: (family, kind, quote) => this.stack.injectUnreachable(family, kind, quote),
      ...(this.config.route.auto ? { mark: this.config.route.mark } : {}),
    };
  }

  private onUdpSession(s: UdpFlow, inbound: 'tun' | 'tproxy' = 'tun'): void {
    this.counters.udpSessions++;
    const info = this.flowInfo('udp', inbound, s);
    const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'idle' };
    info.bytes = r;
    if (!this.accepting) {
      r.close = 'shutdown';
      s.on('close', () => this.logFlow(info, r));
      s.close();
      return;
    }
    this.flows.add(info);
    // Closing the session closes its association too (the close listener in routeUdpSession).
    info.end = () => s.close();
    // Set when the session closes: an association still being opened is then closed on arrival.
    const gone = new AbortController();
    info.guard.own(() => {
      r.close = 'error';
      s.close();
    });
    s.on('close', () => {
      gone.abort();
      this.logFlow(info, r);
    });
    if (this.debug) this.log.debug({ network: 'udp', inbound, src: info.src, dst: info.dst }, 'flow accepted');
    info.guard.run(() => this.routeUdpSession(s, info, r, gone.signal));
  }

  private routeUdpSession(s: UdpFlow, info: FlowInfo, r: RelayResult, gone: AbortSignal): void {
    if (this.badTarget(s)) {
      r.close = 'bad target';
      s.close();
      return;
    }
    const dns = this.rt.dns;
    if (dns !== null && s.localPort === 53) {
      info.protocol = 'dns';
      info.outbound = 'dns-hijack';
      const onReply = (reply: Uint8Array | null): void => {
        if (this.debug) this.debugDns('answer', info, reply);
        if (reply === null) return;
        r.bytesDown += reply.length;
        s.send(reply);
      };
      s.on('message', (q) => {
        r.bytesUp += q.length;
        this.counters.dnsQueries++;
        if (this.debug) this.debugDns('query', info, q);
        void dns.handle(q, 'udp').then(onReply);
      });
      s.drainQueued();
      return;
    }
    const { domain, unknownFake, from } = this.nameFor(s.localAddress);
    if (unknownFake) {
      this.counters.unknownFakeIp++;
      r.close = 'unknown fake-ip';
      s.close();
      return;
    }
    Engine.setName(info, domain, from);
    const waiting: Buffer[] = [];
    let bound: NatBinding | null = null;
    let target = { host: s.localAddress, port: s.localPort };
    let routed = false;
    // Called by the stack (or the TPROXY reader) per datagram: a throw here
    // ends this session only; the routing of the first one runs in the
    // flow's context, so the association and its sockets carry it.
    // A TUN session's upstream sends with the client's TTL (traceroute -U, src/ip/udp-error-relay.ts).
    const tun = s instanceof UdpSession ? s : null;
    let watch: UdpWatch | null = null;
    const onDatagram = (d: Buffer): void => {
      r.bytesUp += d.length;
      if (bound !== null) {
        if (watch !== null) {
          bound.mapping.assoc?.setTtl?.(tun!.ttl);
          if (d.length > 1232 && watch.tooBig(d.length, target.host)) return;
        }
        return bound.send(d);
      }
      if (waiting.length >= 64) return; // bounded while the outbound opens
      waiting.push(d);
      if (routed) return;
      routed = true;
      info.guard.run(() => routeFirst(d));
    };
    s.on('message', (d) => {
      try {
        onDatagram(d);
      } catch (err) {
        info.guard.fail(err);
      }
    });
    const routeFirst = (d: Buffer): void => {
      const sniffed = sniffDatagram(d, s.localPort);
      if (sniffed.kind === 'found') Engine.sniffed(info, sniffed.protocol, sniffed.serverName);
      // Datagrams arriving meanwhile queue in `waiting` (bounded).
      if (this.wantsOwner(info)) void this.findOwner(info, s).then(() => info.guard.run(() => gone.aborted || routeChosen()));
      else routeChosen();
    };
    const routeChosen = (): void => {
      const outbound = this.choose(s, info);
      if (outbound.action !== 'connect' || outbound.openUdp === undefined || !outbound.supportsUdp) {
        r.close = outbound.action === 'connect' ? `outbound ${outbound.name} carries no UDP` : outbound.action === 'reject' ? 'rejected' : 'dropped';
        // reject (and an outbound that cannot carry UDP): ICMP port
        // unreachable, so the client fails at once; drop: silence.
        if (outbound.action === 'drop') s.close();
        else s.unreachable(outbound.action === 'reject' ? 'port' : 'admin');
        return;
      }
      const fake = this.pool !== null && domain !== null && this.pool.isFake(s.localAddress);
      if (fake) target = { host: domain, port: s.localPort };
      if (this.debug) this.log.debug({ network: 'udp', src: info.src, dst: info.dst, outbound: outbound.name }, 'dial start');
      // One mapping per client endpoint and outbound (RFC 4787 REQ-1,
      // src/udp/nat.ts); a fake-IP session's replies come from the real
      // addresses its name resolves to, so they are learnt first.
      const hosts = fake ? this.lookup(domain, s.family === 6 ? 6 : 4).then((a) => [s.localAddress, a.address], () => [s.localAddress]) : Promise.resolve([s.localAddress]);
      const inbound = info.inbound;
      hosts
        .then((h) => this.nat.attach(inbound, outbound, s, target, h, r, () => this.openUdpFor(outbound, s, gone), gone))
        .then(
          (b) => {
            if (gone.aborted) return;
            const a = b.mapping.assoc!;
            Engine.setChain(info, chainOf(a));
            bound = b;
            // Errors about this session's datagrams reach its client (src/ip/udp-error-relay.ts).
            watch = tun === null ? null : watchUdpErrors(this.udpErrors, a, tun);
            if (watch !== null) s.on('close', watch.unwatch);
            for (const w of waiting.splice(0)) if (watch === null || w.length <= 1232 || !watch.tooBig(w.length, target.host)) b.send(w);
          },
          (err: Error) => {
            if (gone.aborted) return;
            this.counters.upstreamFailures++;
            if (this.debug) this.log.debug({ network: 'udp', src: info.src, dst: info.dst, outbound: outbound.name, err: err.message }, 'dial failed');
            r.close = `upstream failed: ${err.message}`;
            s.unreachable('host');
          },
        );
    };
    s.drainQueued();
  }

  /**
   * The outbound's UDP association; with gateway.preserveSource the
   * client's endpoint goes along, so a direct outbound (named by a rule or
   * a group's member) sends from the client's own address and port.
   */
  private openUdpFor(outbound: Outbound, s: UdpFlow, gone: AbortSignal): Promise<UdpAssociation> {
    const family = s.family === 6 ? 6 : 4;
    const gw = this.config.gateway;
    if (!gw.enabled || !gw.preserveSource) return outbound.openUdp!({ family }, gone);
    const source = { address: unmapAddress(s.remoteAddress), port: s.remotePort };
    return outbound.openUdp!({ family, source }, gone).then((a) => {
      if (a.preservedSource === false) this.log.warn({ src: hostPort(source.address, source.port), outbound: outbound.name }, 'gateway.preserveSource: the client\'s UDP endpoint cannot be bound; this session leaves from this host\'s address');
      return a;
    });
  }

  /**
   * RFC 4787 5 filtering's last check, for a datagram from a source no
   * session of the mapping has (src/udp/nat.ts): the policy must send the
   * client's answer to that address through the mapping's own outbound.
   * Decided on addresses and ports alone (no name or sniffing yet).
   */
  private admitUdpSource(m: NatMapping, client: NatSession, host: string, port: number): boolean {
    if (this.modeOutbound !== null) return this.modeOutbound === m.outbound;
    const e: FlowEnds = { family: client.family, remoteAddress: client.remoteAddress, remotePort: client.remotePort, localAddress: host, localPort: port };
    if (this.badTarget(e)) return false;
    const name = this.rt.policy.match(this.context('udp', e, this.snoop?.lookup(host) ?? null, null, m.inbound)).outbound;
    return this.rt.outbounds.get(name) === m.outbound;
  }

  /** A session opened by a datagram from a new source (endpoint-independent filtering): a flow of its own on the mapping. */
  private onInboundUdp(b: NatBinding): void {
    const s = b.session as UdpFlow;
    this.counters.udpSessions++;
    const info = this.flowInfo('udp', b.mapping.inbound, s);
    const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'idle' };
    info.bytes = r;
    info.outbound = b.mapping.outbound.name;
    info.protocol = null;
    // The replies' bytes (the NAT counts into b.result) go on this flow's line.
    b.result = r;
    if (b.mapping.assoc !== null) Engine.setChain(info, chainOf(b.mapping.assoc));
    this.flows.add(info);
    info.end = () => s.close();
    s.on('close', () => this.logFlow(info, r));
    s.on('message', (d) => {
      r.bytesUp += d.length;
      b.send(d);
    });
    if (this.debug) this.log.debug({ network: 'udp', inbound: info.inbound, src: info.src, dst: info.dst, outbound: info.outbound }, 'inbound session from a new source');
  }

  // ------------------------------------------------------------------ logs

  /** One debug line per hijacked DNS query or answer (name, type, rcode); only called with debug on. */
  private debugDns(what: 'query' | 'answer', info: FlowInfo, msg: Uint8Array | null): void {
    const m = msg === null ? null : parseMessage(msg);
    const q = m?.questions[0];
    this.log.debug({ network: info.network, src: info.src, id: m?.id ?? null, name: q?.name ?? null, type: q?.type ?? null, rcode: what === 'answer' ? (m?.rcode ?? null) : undefined, answers: what === 'answer' ? (m?.answers.map((a) => a.address ?? a.type) ?? null) : undefined }, `dns ${what}`);
  }

  private logFlow(info: FlowInfo, r: RelayResult & { requests?: number; outbounds?: string[] }, flowRule?: number): void {
    if (info.logged) return;
    info.logged = true;
    info.end = null;
    info.closeOrderly = null;
    info.guard.end();
    this.flows.remove(info, r);
    if (this.retired.length > 0) this.releaseRetired(info);
    if (info.shutdown) r.close = 'shutdown';
    else if (info.killed) r.close = 'closed by API';
    this.observer?.flowEnded({ network: info.network, inbound: info.inbound, outbound: info.outbound, close: r.close, bytesUp: r.bytesUp, bytesDown: r.bytesDown, durationMs: Date.now() - info.started });
    if (!this.log.isLevelEnabled('info')) return;
    this.log.info(
      {
        network: info.network,
        inbound: info.inbound,
        src: info.src,
        dst: info.dst,
        domain: info.domain,
        protocol: info.protocol,
        rule: info.rule,
        outbound: info.outbound,
        ...(info.chain !== null ? { chain: info.chain } : {}),
        ...(info.mode !== null ? { mode: info.mode } : {}),
        bytesUp: r.bytesUp,
        bytesDown: r.bytesDown,
        durationMs: Date.now() - info.started,
        close: r.close,
        ...(info.uid !== null ? { uid: info.uid, process: info.process, processPath: info.processPath } : {}),
        ...(r.requests !== undefined ? { requests: r.requests, flowRule, ...(r.outbounds !== undefined ? { outbounds: r.outbounds } : {}) } : {}),
      },
      'flow',
    );
  }
}
