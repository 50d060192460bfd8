/**
 * The proxy engine's composition root: builds the runtime from the
 * configuration (outbounds, groups, DNS hijack and upstreams, fake-IP pool,
 * policy, rule sets; runtime.ts), the stack on the TUN, and owns what
 * outlives one flow: reloads, the fake-IP state file, the routing mode, the
 * counters, the open-flow registry, the control API's reads. Each flow is
 * handed to the flow router (flow-router.ts), which:
 *
 * takes every flow the stack terminates, finds its name
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
import type net from 'node:net';
import type { RuleSetType, SluiceConfig } from '../config/types.js';
import { PolicySlot, type Policy } from './policy/policy.js';
import type { MatchContext, SniffedProtocol } from './policy/types.js';
import { OutboundGroup, SelectionStore, type GroupEvents } from '../outbound/index.js';
import { readRuleSetSource } from '../config/ruleset-formats.js';
import { formatProblem } from '../config/errors.js';
import type { GroupRegistry } from '../outbound/group-registry.js';
import { buildRuntime, closeRuntime, compileConfigPolicy, type Runtime, type RuntimeDeps } from './runtime.js';
import type { GeoIpLookup } from './policy/types.js';
import { geoIpLookup } from './geoip-lookup.js';
import { RemoteRuleSets } from './remote-rulesets.js';
import type { Outbound } from '../outbound/types.js';
import { FakeIpPool } from '../dns/fake-ip.js';
import { DnsSnoop } from '../dns/snoop.js';
import { DnsHijack } from '../dns/server.js';
import { UpstreamFailureLog } from '../dns/failure-log.js';
import type { LookupFn } from '../outbound/types.js';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Stack } from '../stack.js';
import type { LinkEndpoint } from '../link/link.js';
import { FlowRegistry, type FlowRecord, type NameOrigin, type RoutingMode } from './flow-registry.js';
import { matchContextOf } from './match-seen.js';
import { policyNeedsName } from './name-sensitivity.js';
import { IcmpEchoRoute } from './icmp-route.js';
import { PathMtuCache } from '../link/path-mtu.js';
import type { UdpErrorRelay, UdpErrorStats } from '../ip/udp-error-relay.js';
import type { EchoRelayStats } from '../ip/echo-relay.js';
import { resolveWith } from './dns-upstreams.js';
import { DialLimiter, type DialTable } from './dial-limiter.js';
import type { Logger } from './logger.js';
import { FlowGuard, errorText, installErrorBoundary } from './flow-guard.js';
import { newTproxyUdpCounters, type TproxyUdpCounters, type TproxyUdpOptions } from '../udp/tproxy.js';
import { UdpNat, newUdpNatCounters, type UdpNatCounters } from '../udp/nat.js';
import type { EngineObserver } from './observer.js';
import { SocketOwnerLookup, type SocketOwnerStats } from '../system/socket-owner.js';
import { loadNative } from '../link/native.js';
import { FlowRouter, type FlowInfo, type UdpFlow } from './flow-router.js';
import { ringPool } from '../tcp/ring-pool.js';

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
  /** Worker threads: the dials in progress of every engine of the process, for limits.dials / dialsPerSource. */
  dialTable?: DialTable | null;
  /** false (worker threads): url rule sets are not downloaded here; the main thread downloads them and hands the entries over (replaceRuleSet). */
  ruleSetDownloads?: boolean;
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
  /** Routes each flow (flow-router.ts); reads this engine's state through its host. */
  private readonly router: FlowRouter;
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
      downloads: options.ruleSetDownloads ?? true,
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
    this.dials = new DialLimiter(config.limits.dials, config.limits.dialsPerSource, options.dialTable ?? null);
    // The thread's ring pool counts into the process's budget (a worker's: the main thread's, src/workers/worker-main.ts).
    ringPool.setBudgetLimit(config.limits.tcpBufferMiB * 1024 * 1024);
    const self = this;
    this.router = new FlowRouter({
      get accepting() {
        return self.accepting;
      },
      get counters() {
        return self.counters;
      },
      get debug() {
        return self.debug;
      },
      get dials() {
        return self.dials;
      },
      get flows() {
        return self.flows;
      },
      get log() {
        return self.log;
      },
      get lookup() {
        return self.lookup;
      },
      get modeOutbound() {
        return self.modeOutbound;
      },
      get nat() {
        return self.nat;
      },
      get observer() {
        return self.observer;
      },
      get onFlowFailed() {
        return self.onFlowFailed;
      },
      get owners() {
        return self.owners;
      },
      get policy() {
        return self.policy;
      },
      get pool() {
        return self.pool;
      },
      get routingMode() {
        return self.routingMode;
      },
      get rt() {
        return self.rt;
      },
      get ruleHitAt() {
        return self.ruleHitAt;
      },
      get ruleHits() {
        return self.ruleHits;
      },
      get snoop() {
        return self.snoop;
      },
      get udpErrors() {
        return self.udpErrors;
      },
      flowLogged: (info) => {
        if (this.retired.length > 0) this.releaseRetired(info);
      },
    });
    this.stack = new Stack(
      link,
      {
        onTcpFlow: (req) => this.router.onTcpFlow(req),
        onUdpSession: (s) => this.router.onUdpSession(s),
      },
      { maxPendingFlows: config.limits.pendingSyns, synCookieThreshold: config.limits.synCookieThreshold, maxUdpSessions: config.udp.maxSessions, udpIdleTimeoutMs: config.udp.idleTimeout * 1000 },
    );
    this.nat = new UdpNat({
      mode: config.udp.nat,
      counters: this.counters.udpNat,
      admit: (m, client, host, port) => this.router.admitUdpSource(m, client, host, port),
      onInbound: (b) => this.router.onInboundUdp(b),
    });
    this.echoRoute = new IcmpEchoRoute({
      log,
      generation: () => this.rt,
      config: () => this.rt.config.icmp,
      policy: () => this.rt.policy,
      outbound: (name) => this.rt.outbounds.get(name),
      modeOutbound: () => this.modeOutbound,
      fakeName: (family, buf, off) => (this.pool !== null && this.pool.isFakeBytes(buf, off, family) ? this.pool.lookupBytes(buf, off, family) : undefined),
      knownName: (address) => this.snoop?.lookupAddress(address) ?? null,
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

  async start(signal?: AbortSignal): Promise<void> {
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
    await this.remote.reconcile(this.rt.config, signal);
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
   * their close events, and what is left is logged here. `budgetMs` bounds
   * both waits (the stop's deadline runs from the signal: a stop that began
   * late gives the peers less time, never the system teardown after it).
   */
  async endFlows(budgetMs = END_FLOWS_GRACE_MS + END_FLOWS_WAIT_MS): Promise<void> {
    const budget = Math.max(0, budgetMs);
    const grace = Math.min(END_FLOWS_GRACE_MS, Math.round((budget * END_FLOWS_GRACE_MS) / (END_FLOWS_GRACE_MS + END_FLOWS_WAIT_MS)));
    const wait = Math.min(END_FLOWS_WAIT_MS, budget - grace);
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
      await this.flowsGone(grace);
      for (const f of [...this.flows.values()]) {
        try {
          f.end?.();
        } catch (err) {
          if (this.debug) this.log.debug({ src: f.src, dst: f.dst, err: (err as Error).message }, 'ending a flow failed');
        }
      }
    }
    await this.flowsGone(wait);
    for (const f of [...this.flows.values()]) this.router.logFlow(f, { bytesUp: 0, bytesDown: 0, close: 'shutdown' });
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


  /** Creates the owner lookup when the running policy first needs it (kept after: its cache is bounded). */
  private updateOwners(): void {
    if (this.owners !== null || !this.policy.current.needsOwner) return;
    const native = loadNative();
    this.owners = new SocketOwnerLookup({ sockDiag: (p, f, l, lp, r, rp) => native.socketOwner(p, f, l, lp, r, rp) });
    this.counters.socketOwner = this.owners.stats;
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
    const seen = f.match ?? null;
    return { ctx: seen === null ? null : matchContextOf(f, seen), nameFrom: seen?.nameFrom ?? null, domain: f.domain, protocol: f.protocol, rule: f.rule, outbound: f.outbound, chains: f.chains, mode: f.mode };
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

  // ------------------------------------------------------------- inbounds

  /**
   * A TCP connection a TPROXY listener accepted (gateway mode tproxy): routed
   * by the flow router with inbound tproxy (flow-router.ts).
   */
  handleTransparent(socket: net.Socket): void {
    this.router.handleTransparent(socket);
  }

  /** A UDP session that arrived through TPROXY (src/udp/tproxy.ts): routed as a TUN session, with inbound tproxy. */
  handleTransparentUdp(s: UdpFlow): void {
    this.router.onUdpSession(s, 'tproxy');
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
}
