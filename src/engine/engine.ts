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
import { canPreserve, transparentDial, unmapAddress } from './transparent-dial.js';
import type { SluiceConfig } from '../config/types.js';
import { loadRuleSetFile } from '../config/ruleset.js';
import { compilePolicy } from './policy/compile.js';
import { PolicySlot, type Policy } from './policy/policy.js';
import type { MatchContext, SniffedProtocol } from './policy/types.js';
import { FlowSniffer, sniffDatagram } from './sniff/index.js';
import type { SniffResult } from './sniff/result.js';
import { createOutbounds, type OutboundConfig as OutboundSpec } from '../outbound/index.js';
import { OutboundError } from '../outbound/errors.js';
import type { Outbound, UdpAssociation } from '../outbound/types.js';
import { FakeIpPool } from '../dns/fake-ip.js';
import { DnsCache } from '../dns/cache.js';
import { DnsSnoop } from '../dns/snoop.js';
import { DnsHijack } from '../dns/server.js';
import { TcpFrameReader, frameTcp, parseMessage } from '../dns/message.js';
import type { ResolverChain } from '../dns/resolver.js';
import type { LookupFn } from '../outbound/types.js';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Stack, type TcpFlowRequest } from '../stack.js';
import type { LinkEndpoint } from '../link/link.js';
import type { TcpStream } from '../stack/tcp-stream.js';
import type { UdpSession } from '../udp/session.js';
import { parseIpv6Text } from '../wire/ipv6.js';
import { parseIpv4Text, writeIpv4Addr } from '../wire/ipv4.js';
import { relay, type RelayResult } from './relay.js';
import { policyNeedsName } from './name-sensitivity.js';
import { buildResolverChain, resolveWith } from './dns-upstreams.js';
import { HttpL7 } from './http-l7.js';
import { DialLimiter } from './dial-limiter.js';
import type { Logger } from './logger.js';
import { FlowGuard, errorText, installErrorBoundary } from './flow-guard.js';
import { newTproxyUdpCounters, type TproxyUdpCounters, type TproxyUdpOptions } from '../udp/tproxy.js';
import { isUnicastText, isUsablePort } from '../wire/address-class.js';

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
  /** Live SYN-flood figures (getters over the stack's stats and the dial limiter), for the counters log line. */
  synFlood?: SynFloodCounters;
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

interface FlowInfo {
  network: 'tcp' | 'udp';
  /** tun: from the userspace stack; tproxy: accepted by a TPROXY listener (gateway mode). */
  inbound: 'tun' | 'tproxy';
  src: string;
  dst: string;
  domain: string | null;
  protocol: SniffedProtocol | null;
  rule: number;
  outbound: string;
  started: number;
  /** Ends the flow should its handling throw. */
  guard: FlowGuard;
  /** Ends the flow at its current stage (pending dial, sniffing, relaying); used by endFlows(). */
  end: (() => void) | null;
  /** Set by endFlows(): the flow line says close "shutdown". */
  shutdown: boolean;
  logged: boolean;
}

/** How long endFlows() waits for the ended flows' close events before logging the rest itself. */
const END_FLOWS_WAIT_MS = 1000;

/** The two ends of a flow as the client sees it (local = the destination it asked for). */
interface FlowEnds {
  family: number;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
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

/** A and then AAAA (or the asked family) through the chain; the first address wins. */
/** The config's outbound (nulls for "not set") in the outbound layer's shape (absent for "not set"). */
function toOutboundSpec(o: SluiceConfig['outbounds'][number]): OutboundSpec {
  const clean: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== null && v !== undefined) clean[k] = v;
  return clean as unknown as OutboundSpec;
}

/** What the engine needs of a UDP session: the stack's UdpSession, or a TPROXY one. */
export type UdpFlow = Pick<UdpSession, 'family' | 'remoteAddress' | 'remotePort' | 'localAddress' | 'localPort' | 'send' | 'close' | 'unreachable' | 'drainQueued'> & {
  on(event: 'message', listener: (data: Buffer) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
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
  };
  readonly stack: Stack;
  private readonly policy: PolicySlot;
  private readonly outbounds: Map<string, Outbound>;
  private readonly pool: FakeIpPool | null;
  private readonly snoop: DnsSnoop | null;
  private readonly dns: DnsHijack | null;
  /** The HTTP L7 mode (config `http`), null when disabled. */
  private readonly httpL7: HttpL7 | null;
  /** Whether any rule looks at names or protocols (else sniffing cannot change a decision). */
  private needsName: boolean;
  private persistTimer: NodeJS.Timeout | null = null;
  /** limits.dials / limits.dialsPerSource: upstream dials in progress. */
  readonly dials: DialLimiter;
  private uninstallBoundary: (() => void) | null = null;
  /** Resolves names through sluice's own upstreams (fake-IP flows, preserveSource). */
  private readonly lookup: LookupFn;
  private readonly onFlowFailed: (guard: FlowGuard, err: unknown) => void;
  /** Flows not yet logged (open), for endFlows() and the stop's "stopping" line. */
  private readonly live = new Set<FlowInfo>();
  /** False once stopping: new flows are refused. */
  private accepting = true;
  private stopped = false;
  private readonly chain: ResolverChain;
  /** log.level debug (checked once: debug lines cost one branch when off). */
  private readonly debug: boolean;

  constructor(
    private config: SluiceConfig,
    link: LinkEndpoint,
    private readonly log: Logger,
  ) {
    this.policy = new PolicySlot(Engine.compile(config));
    // Domain targets (fake-ip flows) resolve through sluice's own upstreams,
    // never the host's resolver, whose traffic might route into the TUN.
    let chain: ResolverChain | null = null;
    const lookup: LookupFn = (host, family) => resolveWith(chain!, host, family);
    this.lookup = lookup;
    // With auto-route every socket sluice makes (to proxies too, not only
    // direct ones) must carry the mark that keeps it out of the TUN.
    this.outbounds = createOutbounds(config.outbounds.map(toOutboundSpec), config.route.auto ? { lookup, mark: config.route.mark } : { lookup });
    const now = (): number => Date.now() / 1000;
    const dnsCfg = config.dns;
    chain = buildResolverChain(dnsCfg, this.outbounds);
    this.chain = chain;
    this.debug = log.isLevelEnabled('debug');
    this.pool =
      dnsCfg.mode === 'fake-ip'
        ? new FakeIpPool({ ipv4Range: dnsCfg.fakeIp.ipv4Range, ipv6Range: dnsCfg.fakeIp.ipv6Range, exclude: [config.tun.ipv4.split('/')[0]!, config.tun.ipv6.split('/')[0]!] })
        : null;
    this.snoop = dnsCfg.mode === 'real-ip' ? new DnsSnoop({ maxEntries: 65536, now }) : null;
    this.dns = dnsCfg.hijack
      ? new DnsHijack({
          mode: dnsCfg.mode,
          pool: this.pool,
          fakeTtl: dnsCfg.fakeIp.ttl,
          cache: new DnsCache({ maxEntries: dnsCfg.cache.maxEntries, minTtl: dnsCfg.cache.minTtl, maxTtl: dnsCfg.cache.maxTtl, now }),
          upstream: chain,
          snoop: this.snoop,
        })
      : null;
    this.httpL7 = config.http.enabled ? new HttpL7(config.http, this.outbounds, log) : null;
    this.needsName = policyNeedsName(config);
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
      { maxPendingFlows: config.limits.pendingSyns, synCookieThreshold: config.limits.synCookieThreshold },
    );
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
    const ruleSets: Record<string, { type: 'domain' | 'cidr'; entries: string[] }> = {};
    for (const [name, rs] of Object.entries(config.ruleSets)) ruleSets[name] = { type: rs.type, entries: rs.entries };
    return compilePolicy({ rules: config.rules, ruleSets, final: config.final, outbounds: config.outbounds });
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
      unattributed: (err, origin) => {
        this.counters.unattributedErrors++;
        this.log.error({ origin, err: errorText(err) }, 'uncaught error outside any flow; sluice keeps serving');
      },
    });
    const gw = this.config.gateway;
    if (gw.enabled && gw.preserveSource) {
      // Said once, loudly: UDP has no source-preserving path (yet).
      this.log.warn(
        { field: 'gateway.preserveSource' },
        'gateway.preserveSource applies to TCP through direct outbounds (destinations given as addresses or fake-IP names); UDP sessions still leave from this host\'s address',
      );
    }
    this.stack.start();
  }

  /** Flows open now (not yet logged). */
  get openFlows(): number {
    return this.live.size;
  }

  /** Refuses new flows from now on (the first step of a stop). */
  stopAccepting(): void {
    this.accepting = false;
  }

  /**
   * Ends every open flow wherever it is (a pending dial is aborted and the
   * client reset, a sniffing or relaying flow's streams destroyed, a UDP
   * session and its association closed), each logged with close
   * "shutdown"; waits briefly for their close events, then logs what is left.
   */
  async endFlows(): Promise<void> {
    this.accepting = false;
    const open = [...this.live];
    for (const f of open) {
      f.shutdown = true;
      try {
        f.end?.();
      } catch (err) {
        if (this.debug) this.log.debug({ src: f.src, dst: f.dst, err: (err as Error).message }, 'ending a flow failed');
      }
    }
    const until = Date.now() + END_FLOWS_WAIT_MS;
    while (this.live.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    for (const f of [...this.live]) this.logFlow(f, { bytesUp: 0, bytesDown: 0, close: 'shutdown' });
    if (open.length > 0) this.log.info({ flows: open.length }, 'open flows ended');
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
    if (this.persistTimer !== null) clearInterval(this.persistTimer);
    this.persistTimer = null;
    if (this.live.size > 0) await this.endFlows();
    this.accepting = false;
    await this.persist();
    this.stack.close();
    await Promise.allSettled([this.httpL7?.close(), this.chain.close()]);
  }

  private async persist(): Promise<void> {
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
   * SIGHUP: re-reads rule-set files and swaps the policy. Flows already
   * running keep their outbound; new flows see the new rules. A broken
   * file leaves the running policy in place.
   */
  async reload(): Promise<void> {
    try {
      const ruleSets = { ...this.config.ruleSets };
      for (const [name, rs] of Object.entries(ruleSets)) {
        if (rs.path !== null) ruleSets[name] = { ...rs, entries: await loadRuleSetFile(rs.path, rs.type) };
      }
      const next = { ...this.config, ruleSets };
      this.policy.swap(Engine.compile(next));
      this.needsName = policyNeedsName(next);
      this.config = next;
      this.log.info({ ruleSets: Object.keys(ruleSets).length }, 'reloaded');
      if (this.debug) this.log.debug({ ruleSets: Object.fromEntries(Object.entries(ruleSets).map(([n, rs]) => [n, rs.entries.length])), rules: next.rules.length, needsName: this.needsName }, 'reload details');
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'reload failed; the previous policy stays');
    }
  }

  // ------------------------------------------------------------------ TCP

  private nameFor(address: string): { domain: string | null; unknownFake: boolean } {
    if (this.pool !== null && this.pool.isFake(address)) {
      const domain = this.pool.lookup(address);
      return { domain, unknownFake: domain === null };
    }
    if (this.snoop !== null) return { domain: this.snoop.lookup(address), unknownFake: false };
    return { domain: null, unknownFake: false };
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
      network,
      inbound,
      src,
      dst,
      domain: null,
      protocol: null,
      rule: -1,
      outbound: '',
      started: Date.now(),
      guard: new FlowGuard(`${network} ${inbound} ${src} -> ${dst}`, this.onFlowFailed),
      end: null,
      shutdown: false,
      logged: false,
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
    this.live.add(info);
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
    if (this.dns !== null && req.localPort === 53) {
      info.protocol = 'dns';
      info.outbound = 'dns-hijack';
      const dnsStream = req.accept();
      info.end = () => dnsStream.destroy();
      return this.serveDnsOverTcp(dnsStream, info);
    }
    const { domain, unknownFake } = this.nameFor(req.localAddress);
    if (this.debug) this.log.debug({ network: 'tcp', src: info.src, dst: info.dst, domain, unknownFake }, 'flow accepted');
    if (unknownFake) {
      // An expired or never-issued fake address: refuse fast, never black-hole.
      this.counters.unknownFakeIp++;
      req.reset();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'unknown fake-ip' });
    }
    info.domain = domain;
    // HTTP-mode ports are sniffed even when the name is known: the mode needs to see HTTP.
    const l7 = this.httpL7 !== null && this.httpL7.wants(req.localPort);
    // Without a name-dependent rule, sniffing cannot change the outcome: then
    // the outbound connects before the SYN is answered, as for known names.
    if ((domain !== null || !this.needsName) && !l7 || this.config.sniff.timeoutMs === 0) {
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
    info.end = () => {
      ac.abort();
      if (!req.decided) req.reset();
    };
    if (this.debug) this.log.debug({ src: info.src, dst: info.dst, host, outbound: outbound.name, beforeAccept: true }, 'dial start');
    this.dialTcp(outbound, host, req.localPort, AbortSignal.any([req.signal, ac.signal]), req).then(
      (upstream) => {
        info.guard.own(() => upstream.destroy());
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
        relay(stream, upstream, [], (r) => this.logFlow(info, r));
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
      if (r.kind === 'found') {
        info.protocol = r.protocol;
        if (r.serverName !== null && isIP(r.serverName) === 0 && info.domain === null) info.domain = r.serverName;
      }
    };
    stream.on('data', onData);
  }

  private sniffThenRoute(stream: Duplex, req: FlowEnds, info: FlowInfo): void {
    const sniffer = new FlowSniffer({ maxBytes: this.config.sniff.maxBytes, dstPort: req.localPort });
    const chunks: Buffer[] = [];
    let decided = false;
    const decide = (r: SniffResult): void => {
      if (decided) return;
      decided = true;
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.pause();
      if (r.kind === 'found') {
        info.protocol = r.protocol;
        // A name already known (fake IP, snooped) stays: only HTTP-mode ports get here with one.
        if (r.serverName !== null && isIP(r.serverName) === 0 && info.domain === null) info.domain = r.serverName;
      }
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
    const onEnd = (): void => decide(sniffer.finish());
    // Server-speaks-first protocols send nothing: route by address after the timeout.
    const timer = setTimeout(() => decide(sniffer.finish()), this.config.sniff.timeoutMs);
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
    if (this.httpL7 !== null && info.protocol === 'http' && this.httpL7.wants(req.localPort)) {
      info.end = () => stream.destroy();
      return this.httpL7.serve(stream, chunks, { src: info.src, target: { host, port: req.localPort }, outbound }, (r) => {
        // The flow line says what the requests matched (http.rules index and outbound, as
        // their "request" lines do); flowRule keeps the flow-level policy match.
        const flowRule = info.rule;
        if (r.requests > 0) {
          info.outbound = r.outbound;
          info.rule = r.rule;
        }
        this.logFlow(info, r, flowRule);
      });
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
        stream.off('close', onClose);
        if (stream.destroyed) {
          upstream.destroy();
          return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'client gone before connect' });
        }
        info.end = () => {
          stream.destroy();
          upstream.destroy();
        };
        relay(stream, upstream, chunks, (r) => this.logFlow(info, r));
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
    this.live.add(info);
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
    if (this.dns !== null && ends.localPort === 53) {
      info.protocol = 'dns';
      info.outbound = 'dns-hijack';
      return this.serveDnsOverTcp(socket, info);
    }
    const { domain, unknownFake } = this.nameFor(localAddress);
    if (unknownFake) {
      this.counters.unknownFakeIp++;
      socket.resetAndDestroy();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'unknown fake-ip' });
    }
    info.domain = domain;
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
    const release = (): void => this.dials.release(source);
    let dial: Promise<Duplex>;
    try {
      dial = this.dialTcpUnlimited(outbound, host, port, signal, e);
    } catch (err) {
      release();
      return Promise.reject(err);
    }
    dial.then(release, release);
    return dial;
  }

  private dialTcpUnlimited(outbound: Outbound, host: string, port: number, signal: AbortSignal, e: FlowEnds): Promise<Duplex> {
    const gw = this.config.gateway;
    if (gw.enabled && gw.preserveSource && outbound.type === 'direct') {
      const spec = this.config.outbounds.find((o) => o.name === outbound.name);
      const direct = spec !== undefined && spec.type === 'direct' ? spec : null;
      const dial = (address: string): Promise<Duplex> =>
        transparentDial({ source: e.remoteAddress, host: address, port, mark: direct?.mark ?? null, device: direct?.interface ?? null, timeoutMs: 10_000, signal });
      if (canPreserve(e.remoteAddress, host)) return dial(host);
      if (isIP(host) === 0 && isIP(e.remoteAddress) !== 0) {
        const family = isIP(e.remoteAddress) === 6 ? 6 : 4;
        return this.lookup(host, family).then(
          (r) => (r.family === family && isUnicastText(r.address) ? dial(r.address) : outbound.connectTcp({ host, port }, signal)),
          () => outbound.connectTcp({ host, port }, signal),
        );
      }
    }
    return outbound.connectTcp({ host, port }, signal);
  }

  private choose(e: FlowEnds, info: FlowInfo): Outbound {
    const m = this.policy.match(this.context(info.network, e, info.domain, info.protocol, info.inbound));
    info.rule = m.ruleIndex;
    info.outbound = m.outbound;
    if (this.debug) this.log.debug({ network: info.network, src: info.src, dst: info.dst, domain: info.domain, protocol: info.protocol, rule: m.ruleIndex, outbound: m.outbound }, 'rule matched');
    const outbound = this.outbounds.get(m.outbound)!;
    if (outbound.action === 'reject') this.counters.rejected++;
    else if (outbound.action === 'drop') this.counters.dropped++;
    return outbound;
  }

  private serveDnsOverTcp(stream: Duplex, info: FlowInfo): void {
    info.guard.own(() => stream.destroy());
    const reader = new TcpFrameReader();
    const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'fin' };
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
          void this.dns!.handle(msg, 'tcp').then(onReply);
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
      counters: this.counters.tproxyUdp,
      unreachable: (family, kind, quote) => this.stack.injectUnreachable(family, kind, quote),
      ...(this.config.route.auto ? { mark: this.config.route.mark } : {}),
    };
  }

  private onUdpSession(s: UdpFlow, inbound: 'tun' | 'tproxy' = 'tun'): void {
    this.counters.udpSessions++;
    const info = this.flowInfo('udp', inbound, s);
    const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'idle' };
    if (!this.accepting) {
      r.close = 'shutdown';
      s.on('close', () => this.logFlow(info, r));
      s.close();
      return;
    }
    this.live.add(info);
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
    if (this.dns !== null && s.localPort === 53) {
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
        void this.dns!.handle(q, 'udp').then(onReply);
      });
      s.drainQueued();
      return;
    }
    const { domain, unknownFake } = this.nameFor(s.localAddress);
    if (unknownFake) {
      this.counters.unknownFakeIp++;
      r.close = 'unknown fake-ip';
      s.close();
      return;
    }
    info.domain = domain;
    const waiting: Buffer[] = [];
    let assoc: UdpAssociation | null = null;
    let target = { host: s.localAddress, port: s.localPort };
    let routed = false;
    // Called by the stack (or the TPROXY reader) per datagram: a throw here
    // ends this session only; the routing of the first one runs in the
    // flow's context, so the association and its sockets carry it.
    const onDatagram = (d: Buffer): void => {
      r.bytesUp += d.length;
      if (assoc !== null) return assoc.send(d, target);
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
      if (sniffed.kind === 'found') {
        info.protocol = sniffed.protocol;
        if (info.domain === null && sniffed.serverName !== null && sniffed.protocol !== 'dns') info.domain = sniffed.serverName;
      }
      const outbound = this.choose(s, info);
      if (outbound.action !== 'connect' || outbound.openUdp === undefined || !outbound.supportsUdp) {
        r.close = outbound.action === 'connect' ? `outbound ${outbound.name} carries no UDP` : outbound.action === 'reject' ? 'rejected' : 'dropped';
        // reject (and an outbound that cannot carry UDP): ICMP port
        // unreachable, so the client fails at once; drop: silence.
        if (outbound.action === 'drop') s.close();
        else s.unreachable(outbound.action === 'reject' ? 'port' : 'admin');
        return;
      }
      if (this.pool !== null && domain !== null && this.pool.isFake(s.localAddress)) target = { host: domain, port: s.localPort };
      if (this.debug) this.log.debug({ network: 'udp', src: info.src, dst: info.dst, outbound: outbound.name }, 'dial start');
      outbound.openUdp({ family: s.family === 6 ? 6 : 4 }, gone).then(
        (a) => {
          if (gone.aborted) {
            a.close(); // the session ended while the association was being set up
            return;
          }
          info.guard.own(() => a.close());
          assoc = a;
          a.onMessage((payload) => {
            r.bytesDown += payload.length;
            s.send(payload);
          });
          s.on('close', () => a.close());
          for (const w of waiting.splice(0)) a.send(w, target);
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
    this.live.delete(info);
    if (info.shutdown) r.close = 'shutdown';
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
        bytesUp: r.bytesUp,
        bytesDown: r.bytesDown,
        durationMs: Date.now() - info.started,
        close: r.close,
        ...(r.requests !== undefined ? { requests: r.requests, flowRule, ...(r.outbounds !== undefined ? { outbounds: r.outbounds } : {}) } : {}),
      },
      'flow',
    );
  }
}
