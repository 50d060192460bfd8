/**
 * The flow router: what happens to one flow the stack (or a TPROXY
 * listener) hands over. It names the flow (fake-IP mapping, snooped DNS
 * answer, or the first bytes sniffed), matches it against the running
 * policy (or the PATCH /configs mode), answers DNS to the hijack, dials the
 * chosen outbound (before the SYN is answered when the name is known or
 * cannot matter) and relays, then writes the flow line. What it routes
 * with (the runtime, the fake-IP pool, the counters, the open-flow
 * registry) belongs to the engine, the composition root (engine.ts), and
 * is read through RouterHost at each flow, so a reload's new runtime
 * applies to the next flow.
 */

import { isIP } from 'node:net';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { unmapAddress } from '../outbound/transparent-dial.js';
import type { SluiceConfig } from '../config/types.js';
import type { PolicySlot } from './policy/policy.js';
import type { MatchContext, SniffedProtocol } from './policy/types.js';
import { FlowSniffer, sniffDatagram } from './sniff/index.js';
import type { SniffResult } from './sniff/result.js';
import { chainOf } from '../outbound/index.js';
import type { Runtime } from './runtime.js';
import { OutboundError } from '../outbound/errors.js';
import type { Outbound, UdpAssociation } from '../outbound/types.js';
import type { FakeIpPool } from '../dns/fake-ip.js';
import type { DnsSnoop } from '../dns/snoop.js';
import type { DnsHijack } from '../dns/server.js';
import { TcpFrameReader, frameTcp, parseMessage } from '../dns/message.js';
import type { LookupFn } from '../outbound/types.js';
import type { TcpFlowRequest } from '../stack.js';
import { UdpSession } from '../udp/session.js';
import { closeUnrelayed, relay, shutdownRelay, type RelayResult } from './relay.js';
import { FlowRelay } from './flow-relay.js';
import { FlowRegistry, newFlowId, type NameOrigin, type RoutingMode } from './flow-registry.js';
import { watchUdpErrors, type UdpWatch } from './icmp-route.js';
import type { UdpErrorRelay } from '../ip/udp-error-relay.js';
import { DialLimitError, type DialLimiter } from './dial-limiter.js';
import type { Logger } from './logger.js';
import { FlowGuard } from './flow-guard.js';
import { UdpNat, type NatBinding, type NatMapping, type NatSession } from '../udp/nat.js';
import { isUnicastAt, isUsablePort } from '../wire/address-class.js';
import type { EngineObserver, SniffOutcome } from './observer.js';
import type { SocketOwnerLookup } from '../system/socket-owner.js';
import type { EngineCounters } from './engine.js';
import { addressBytes, destroyFlow, FLOW_ENDS_TEXT, hostPort, remoteOf, setChain, setName, setSniffed, type FlowEnds, type FlowInfo } from './flow-info.js';

export type { FlowInfo, FlowEnds } from './flow-info.js';

export type UdpFlow = Pick<UdpSession, 'family' | 'remoteAddress' | 'remotePort' | 'localAddress' | 'localPort' | 'remoteBytes' | 'localBytes' | 'send' | 'close' | 'unreachable' | 'drainQueued' | 'fromRemote' | 'evicted'> & {
  on(event: 'message', listener: (data: Buffer) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  /** The session from this client to another remote endpoint (src/udp/nat.ts). */
  sibling(host: string, port: number): UdpFlow | null;
};


/** What the router reads from the engine that owns it (engine.ts builds it with getters, so each read is current). */
export interface RouterHost {
  /** False once stopping: new flows are refused. */
  readonly accepting: boolean;
  readonly counters: EngineCounters;
  readonly debug: boolean;
  readonly dials: DialLimiter;
  readonly flows: FlowRegistry<FlowInfo>;
  readonly log: Logger;
  readonly lookup: LookupFn;
  /** PATCH /configs mode global/direct: every new flow goes here; null in mode rule. */
  readonly modeOutbound: Outbound | null;
  readonly nat: UdpNat;
  readonly observer: EngineObserver | null;
  readonly onFlowFailed: (guard: FlowGuard, err: unknown) => void;
  /** Socket-owner lookups; null while no rule needs them. */
  readonly owners: SocketOwnerLookup | null;
  readonly policy: PolicySlot;
  readonly pool: FakeIpPool | null;
  readonly routingMode: RoutingMode;
  /** The running runtime (runtime.ts); a reload swaps it. */
  readonly rt: Runtime;
  readonly ruleHitAt: Float64Array;
  /** Flows matched per rule (index = rule, last = final), and when last (ruleHitAt). */
  readonly ruleHits: Float64Array;
  readonly snoop: DnsSnoop | null;
  readonly udpErrors: UdpErrorRelay;
  /** Called once per logged flow: releases the runtimes a reload retired once their flows have ended. */
  flowLogged(info: FlowInfo): void;
}

/** info.end of a TUN TCP flow whose SYN waits (this: the flow): reset it unless decided meanwhile. */
function resetUndecided(this: FlowInfo): void {
  const req = this.request;
  if (req !== null && !req.decided) req.reset();
}

/** info.closeOrderly of a relayed flow (this: the flow): FINs both ways (FlowRelay.shutdown). */
function closeRelayed(this: FlowInfo): boolean {
  return this.client !== null && this.client.shutdown();
}

export class FlowRouter {
  constructor(private readonly h: RouterHost) {}

  private get config(): SluiceConfig {
    return this.h.rt.config;
  }

  /** Whether this flow's owner must be known before routing: an owner rule exists and the flow entered the TUN (TPROXY flows come from other hosts). */
  private wantsOwner(info: FlowInfo): boolean {
    return this.h.owners !== null && info.inbound === 'tun' && this.h.policy.current.needsOwner;
  }

  /**
   * Fills info.uid / process / processPath from the client socket: the
   * client's address (the flow's remote end) is the socket's local one, the
   * destination it asked for (a fake IP too) its remote.
   */
  private async findOwner(info: FlowInfo, e: FlowEnds): Promise<void> {
    const family = e.family === 6 ? 6 : 4;
    const owner = await this.h.owners!.lookup(info.network, family, e.remoteBytes, e.remotePort, e.localBytes, e.localPort);
    if (owner === null) return;
    info.uid = owner.uid;
    info.process = owner.process;
    info.processPath = owner.processPath;
  }

  // ------------------------------------------------------------------ TCP

  /** Whether the flow's destination lies in the fake-IP pool (mapped or not). */
  private isFakeDst(e: FlowEnds): boolean {
    const b = e.localBytes;
    return this.h.pool !== null && this.h.pool.isFakeBytes(b, 0, b.length === 4 ? 4 : 6);
  }

  private nameFor(e: FlowEnds): { domain: string | null; unknownFake: boolean; from: NameOrigin | null } {
    if (this.isFakeDst(e)) {
      const b = e.localBytes;
      const domain = this.h.pool!.lookupBytes(b, 0, b.length === 4 ? 4 : 6);
      return { domain, unknownFake: domain === null, from: 'fake-ip' };
    }
    if (this.h.snoop !== null) {
      const domain = this.h.snoop.lookupAddress(e.localBytes);
      return { domain, unknownFake: false, from: domain === null ? null : 'dns' };
    }
    return { domain: null, unknownFake: false, from: null };
  }

  private context(network: 'tcp' | 'udp', e: FlowEnds, domain: string | null, protocol: SniffedProtocol | null, inbound: 'tun' | 'tproxy', uid: number | null = null, process: string | null = null, processPath: string | null = null): MatchContext {
    return {
      network,
      inbound,
      family: e.family === 6 ? 6 : 4,
      dst: e.localBytes,
      dstPort: e.localPort,
      src: e.remoteBytes,
      srcPort: e.remotePort,
      domain,
      protocol,
      uid,
      process,
      processPath,
    };
  }

  private flowInfo(network: 'tcp' | 'udp', inbound: 'tun' | 'tproxy', e: FlowEnds): FlowInfo {
    // src and dst come from the prototype (FLOW_ENDS_TEXT): checked as every other field, then typed as the whole.
    const info = ({
      __proto__: FLOW_ENDS_TEXT,
      id: newFlowId(),
      network,
      inbound,
      srcIp: e.remoteAddress,
      srcPort: e.remotePort,
      dstIp: e.localAddress,
      dstPort: e.localPort,
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
      guard: null as unknown as FlowGuard, // set below: it names the flow from its ends (no text per flow until an error)
      end: null,
      shutdown: false,
      closeOrderly: null,
      logged: false,
      match: null,
      request: null,
      client: null,
      upstream: null,
      sniffer: null,
      destroy: destroyFlow,
    } satisfies Omit<FlowInfo, 'src' | 'dst'> & { __proto__: typeof FLOW_ENDS_TEXT }) as unknown as FlowInfo;
    info.guard = new FlowGuard(info, this.h.onFlowFailed);
    return info;
  }

  /**
   * Port 0 and non-unicast addresses are refused before any socket API sees
   * them (dgram send and net connect throw on port 0). The stack already
   * drops them from the TUN; TPROXY listeners can still hand them over.
   */
  private badTarget(e: FlowEnds): boolean {
    if (isUsablePort(e.localPort) && isUsablePort(e.remotePort) && isUnicast(e.localBytes) && isUnicast(e.remoteBytes)) return false;
    this.h.counters.badTarget++;
    return true;
  }

  onTcpFlow(req: TcpFlowRequest): void {
    this.h.counters.tcpFlows++;
    const info = this.flowInfo('tcp', 'tun', req);
    if (!this.h.accepting) {
      req.reset();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'shutdown' });
    }
    this.h.flows.add(info);
    info.request = req;
    info.end = resetUndecided;
    // The guard tears down whatever the flow holds then (FlowInfo.destroy): no closure per flow.
    info.guard.own(info);
    info.guard.run(() => this.routeTcpFlow(req, info));
  }

  private routeTcpFlow(req: TcpFlowRequest, info: FlowInfo): void {
    if (this.badTarget(req)) {
      req.reset();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'bad target' });
    }
    // DNS first, as for UDP: a resolver address inside the fake-IP pool is
    // answered over TCP too (it has no name of its own).
    const dns = this.h.rt.dns;
    if (dns !== null && req.localPort === 53) {
      info.protocol = 'dns';
      info.outbound = 'dns-hijack';
      const dnsStream = req.accept();
      info.request = null; // decided: the stream stands for it
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
    const { domain, unknownFake, from } = this.nameFor(req);
    if (this.h.debug) this.h.log.debug({ network: 'tcp', src: info.src, dst: info.dst, domain, unknownFake }, 'flow accepted');
    if (unknownFake) {
      // An expired or never-issued fake address: refuse fast, never black-hole.
      this.h.counters.unknownFakeIp++;
      req.reset();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'unknown fake-ip' });
    }
    setName(info, domain, from);
    // HTTP-mode ports are sniffed even when the name is known: the mode needs to see HTTP.
    const l7 = this.h.rt.httpL7 !== null && this.h.rt.httpL7.wants(req.localPort);
    // Without a name-dependent rule, sniffing cannot change the outcome: then
    // the outbound connects before the SYN is answered, as for known names.
    if ((domain !== null || !this.h.rt.needsName) && !l7 || this.config.sniff.timeoutMs === 0) {
      return this.routeBeforeAccept(req, info);
    }
    const stream = req.accept();
    info.request = null; // decided: the stream stands for it
    info.guard.own(stream);
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
    const host = info.domain !== null && this.isFakeDst(req) ? info.domain : req.localAddress;
    // The client giving up (req.signal) or sluice stopping (end) aborts the dial.
    const ac = new AbortController();
    req.abortOnCancel(ac); // one controller for both, no AbortSignal.any per flow (issue 10)
    info.end = () => {
      ac.abort();
      if (!req.decided) req.reset();
    };
    if (this.h.debug) this.h.log.debug({ src: info.src, dst: info.dst, host, outbound: outbound.name, beforeAccept: true }, 'dial start');
    this.dialTcp(outbound, host, req.localPort, ac.signal, req).then(
      (upstream) => this.relayDialled(req, info, upstream),
      (err: unknown) => {
        this.h.counters.upstreamFailures++;
        if (this.h.debug) this.h.log.debug({ src: info.src, dst: info.dst, host, outbound: outbound.name, err: (err as Error).message }, 'dial failed');
        // Over the dial cap the SYN is dropped: the client retransmits it (src/engine/dial-limiter.ts).
        const reaction = err instanceof OutboundError ? err.reaction : err instanceof DialLimitError ? 'drop' : 'rst';
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
   * The dial of routeBeforeAccept succeeded: accept and relay. A method of
   * its own, so the flow's closures do not hold the dial's context (its
   * AbortController, issue 10).
   */
  private relayDialled(req: TcpFlowRequest, info: FlowInfo, upstream: Duplex): void {
    info.upstream = upstream;
    setChain(info, chainOf(upstream));
    // The flow's connection is driven by the relay itself: no Node stream on its side (flow-relay.ts, issue 10: idle flows).
    let r: FlowRelay;
    try {
      r = req.acceptWith((flow) => new FlowRelay(flow, upstream, this.relayDone as (r: RelayResult, ctx: unknown) => void, info, this.h.log.isLevelEnabled('info') ? (this.observeName as (ctx: unknown, c: Buffer) => boolean) : null));
    } catch {
      upstream.destroy(); // the client gave up meanwhile
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'client gone before connect' });
    }
    // Decided: the stream stands for the request from now on.
    info.request = null;
    info.client = r;
    info.end = destroyFlow;
    info.remoteDestination = remoteOf(upstream);
    info.closeOrderly = closeRelayed;
    // The routing decision is made; the first bytes are still read for the
    // flow log's name and protocol as they pass (no delay, no copy).
    info.bytes = r;
    r.start();
  }

  /** Every relay's end: the flow line. One function for all flows (relay's ctx is the flow). */
  private readonly relayDone = (r: RelayResult, info: FlowInfo): void => this.logFlow(info, r);

  /**
   * The relay's observer of a flow routed before its first bytes: sniffs
   * them for the flow log until it knows (the sniffer is made on the first
   * chunk: an idle flow holds no sniffer state, issue 10).
   */
  private readonly observeName = (info: FlowInfo, c: Buffer): boolean => {
    const sniffer = (info.sniffer ??= new FlowSniffer({ maxBytes: this.config.sniff.maxBytes, dstPort: info.dstPort }));
    const r = sniffer.push(c);
    if (r.kind === 'need-more') return true;
    info.sniffer = null;
    if (r.kind === 'found') setSniffed(info, r.protocol, r.serverName);
    return false;
  };

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
      if (r.kind === 'found') setSniffed(info, r.protocol, r.serverName);
      this.h.observer?.sniffed(r.kind === 'found' ? r.protocol : null, r.kind === 'found' ? 'found' : outcome);
      if (this.h.debug) this.h.log.debug({ src: info.src, dst: info.dst, sniff: r.kind, protocol: info.protocol, domain: info.domain, bytes: chunks.reduce((n, c) => n + c.length, 0) }, 'sniff result');
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
    // Stopping while sniffing: a FIN to the client (nothing was sent upstream), logged once it answers with its own.
    let closing = false;
    info.closeOrderly = () => {
      if (decided) return false;
      decided = true;
      closing = true;
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.once('close', () => this.logFlow(info, { bytesUp: chunks.reduce((n, c) => n + c.length, 0), bytesDown: 0, close: 'shutdown' }));
      return closeUnrelayed(stream);
    };
    info.end = () => {
      if (decided && !closing) return;
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
    const fakeName = this.isFakeDst(req) ? info.domain : null;
    const host = fakeName ?? req.localAddress;
    const httpL7 = this.h.rt.httpL7;
    if (httpL7 !== null && info.protocol === 'http' && httpL7.wants(req.localPort)) {
      info.end = () => stream.destroy();
      info.closeOrderly = () => httpL7.closeOrderly(stream);
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
    // Stopping while the dial is pending: the dial is aborted and the client (accepted already) gets a FIN, logged once it answers.
    let closing = false;
    info.closeOrderly = () => {
      if (closing) return false;
      closing = true;
      ac.abort();
      stream.once('close', () => this.logFlow(info, { bytesUp: chunks.reduce((n, c) => n + c.length, 0), bytesDown: 0, close: 'shutdown' }));
      return closeUnrelayed(stream);
    };
    if (this.h.debug) this.h.log.debug({ src: info.src, dst: info.dst, host, outbound: outbound.name, beforeAccept: false }, 'dial start');
    this.dialTcp(outbound, host, req.localPort, ac.signal, req).then(
      (upstream) => {
        info.guard.own(upstream);
        setChain(info, chainOf(upstream));
        stream.off('close', onClose);
        if (closing) {
          // The dial won the race with its abort: the client is being closed already.
          upstream.destroy();
          return;
        }
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
        info.bytes = relay(stream, upstream, chunks, this.relayDone, info);
      },
      (err: unknown) => {
        // Aborted by the orderly stop: the client's FIN is on its way, its close logs the flow.
        if (closing) return;
        this.h.counters.upstreamFailures++;
        if (this.h.debug) this.h.log.debug({ src: info.src, dst: info.dst, host, outbound: outbound.name, err: (err as Error).message }, 'dial failed');
        stream.destroy();
        this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: `upstream failed: ${(err as Error).message}` });
      },
    );
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
    const dns = this.h.rt.dns;
    if (dns !== null && ends.localPort === 53) {
      info.protocol = 'dns';
      info.outbound = 'dns-hijack';
      return this.serveDnsOverTcp(socket, info, dns);
    }
    const { domain, unknownFake, from } = this.nameFor(ends);
    if (unknownFake) {
      this.h.counters.unknownFakeIp++;
      socket.resetAndDestroy();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'unknown fake-ip' });
    }
    setName(info, domain, from);
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
    // limits.dials / dialsPerSource: over a cap the dial is refused, never queued (src/engine/dial-limiter.ts).
    const source = e.remoteAddress;
    if (!this.h.dials.tryAcquire(source)) return Promise.reject(new DialLimitError());
    const obs = this.h.observer;
    const t0 = obs === null ? 0 : performance.now();
    const release = (): void => this.h.dials.release(source);
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
    const rt = this.h.rt;
    let outbound: Outbound;
    if (this.h.modeOutbound !== null) {
      // Mode global / direct (PATCH /configs): the rules are not consulted.
      outbound = this.h.modeOutbound;
      info.rule = -1;
      info.mode = this.h.routingMode;
      info.outbound = outbound.name;
    } else {
      const ctx = this.context(info.network, e, info.domain, info.protocol, info.inbound, info.uid, info.process, info.processPath);
      const m = rt.policy.match(ctx);
      info.match = { domain: ctx.domain, protocol: ctx.protocol, nameFrom: info.nameFrom };
      info.rule = m.ruleIndex;
      info.outbound = m.outbound;
      const hit = m.ruleIndex < 0 ? this.h.ruleHits.length - 1 : m.ruleIndex;
      if (hit < this.h.ruleHits.length) {
        this.h.ruleHits[hit]!++;
        this.h.ruleHitAt[hit] = info.started;
      }
      outbound = rt.outbounds.get(m.outbound)!;
    }
    if (this.h.debug) this.h.log.debug({ network: info.network, src: info.src, dst: info.dst, domain: info.domain, protocol: info.protocol, rule: info.rule, outbound: info.outbound, mode: this.h.routingMode }, 'rule matched');
    if (outbound.action === 'reject') this.h.counters.rejected++;
    else if (outbound.action === 'drop') this.h.counters.dropped++;
    return outbound;
  }

  private serveDnsOverTcp(stream: Duplex, info: FlowInfo, dns: DnsHijack): void {
    info.guard.own(stream);
    const reader = new TcpFrameReader();
    const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'fin' };
    info.bytes = r;
    const onReply = (reply: Uint8Array | null): void => {
      if (this.h.debug) this.debugDns('answer', info, reply);
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
          this.h.counters.dnsQueries++;
          if (this.h.debug) this.debugDns('query', info, msg);
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



  onUdpSession(s: UdpFlow, inbound: 'tun' | 'tproxy' = 'tun'): void {
    this.h.counters.udpSessions++;
    const info = this.flowInfo('udp', inbound, s);
    const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'idle' };
    info.bytes = r;
    if (!this.h.accepting) {
      r.close = 'shutdown';
      s.on('close', () => this.logFlow(info, r));
      s.close();
      return;
    }
    this.h.flows.add(info);
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
      if (s.evicted) r.close = 'evicted';
      this.logFlow(info, r);
    });
    if (this.h.debug) this.h.log.debug({ network: 'udp', inbound, src: info.src, dst: info.dst }, 'flow accepted');
    info.guard.run(() => this.routeUdpSession(s, info, r, gone.signal));
  }

  private routeUdpSession(s: UdpFlow, info: FlowInfo, r: RelayResult, gone: AbortSignal): void {
    if (this.badTarget(s)) {
      r.close = 'bad target';
      s.close();
      return;
    }
    const dns = this.h.rt.dns;
    if (dns !== null && s.localPort === 53) {
      info.protocol = 'dns';
      info.outbound = 'dns-hijack';
      const onReply = (reply: Uint8Array | null): void => {
        if (this.h.debug) this.debugDns('answer', info, reply);
        if (reply === null) return;
        r.bytesDown += reply.length;
        s.send(reply);
      };
      s.on('message', (q) => {
        r.bytesUp += q.length;
        this.h.counters.dnsQueries++;
        if (this.h.debug) this.debugDns('query', info, q);
        void dns.handle(q, 'udp').then(onReply);
      });
      s.drainQueued();
      return;
    }
    const { domain, unknownFake, from } = this.nameFor(s);
    if (unknownFake) {
      this.h.counters.unknownFakeIp++;
      r.close = 'unknown fake-ip';
      s.close();
      return;
    }
    setName(info, domain, from);
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
      if (sniffed.kind === 'found') setSniffed(info, sniffed.protocol, sniffed.serverName);
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
      const fake = domain !== null && this.isFakeDst(s);
      if (fake) target = { host: domain, port: s.localPort };
      if (this.h.debug) this.h.log.debug({ network: 'udp', src: info.src, dst: info.dst, outbound: outbound.name }, 'dial start');
      // One mapping per client endpoint and outbound (RFC 4787 REQ-1,
      // src/udp/nat.ts); a fake-IP session's replies come from the real
      // addresses its name resolves to, so they are learnt first.
      const hosts = fake ? this.h.lookup(domain, s.family === 6 ? 6 : 4).then((a) => [s.localAddress, a.address], () => [s.localAddress]) : Promise.resolve([s.localAddress]);
      const inbound = info.inbound;
      hosts
        .then((h) => this.h.nat.attach(inbound, outbound, s, target, h, r, () => this.openUdpFor(outbound, s, gone), gone))
        .then(
          (b) => {
            if (gone.aborted) return;
            const a = b.mapping.assoc!;
            setChain(info, chainOf(a));
            bound = b;
            // Errors about this session's datagrams reach its client (src/ip/udp-error-relay.ts).
            watch = tun === null ? null : watchUdpErrors(this.h.udpErrors, a, tun);
            if (watch !== null) s.on('close', watch.unwatch);
            for (const w of waiting.splice(0)) if (watch === null || w.length <= 1232 || !watch.tooBig(w.length, target.host)) b.send(w);
          },
          (err: Error) => {
            if (gone.aborted) return;
            this.h.counters.upstreamFailures++;
            if (this.h.debug) this.h.log.debug({ network: 'udp', src: info.src, dst: info.dst, outbound: outbound.name, err: err.message }, 'dial failed');
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
      if (a.preservedSource === false) this.h.log.warn({ src: hostPort(source.address, source.port), outbound: outbound.name }, 'gateway.preserveSource: the client\'s UDP endpoint cannot be bound; this session leaves from this host\'s address');
      return a;
    });
  }

  /**
   * RFC 4787 5 filtering's last check, for a datagram from a source no
   * session of the mapping has (src/udp/nat.ts): the policy must send the
   * client's answer to that address through the mapping's own outbound.
   * Decided on addresses and ports alone (no name or sniffing yet).
   */
  admitUdpSource(m: NatMapping, client: NatSession, host: string, port: number): boolean {
    if (this.h.modeOutbound !== null) return this.h.modeOutbound === m.outbound;
    // The new source is text from the upstream socket: to bytes once, here.
    const e: FlowEnds = { family: client.family, remoteAddress: client.remoteAddress, remotePort: client.remotePort, localAddress: host, localPort: port, remoteBytes: client.remoteBytes, localBytes: addressBytes(host) };
    if (this.badTarget(e)) return false;
    const name = this.h.rt.policy.match(this.context('udp', e, this.h.snoop?.lookupAddress(e.localBytes) ?? null, null, m.inbound)).outbound;
    return this.h.rt.outbounds.get(name) === m.outbound;
  }

  /** A session opened by a datagram from a new source (endpoint-independent filtering): a flow of its own on the mapping. */
  onInboundUdp(b: NatBinding): void {
    const s = b.session as UdpFlow;
    this.h.counters.udpSessions++;
    const info = this.flowInfo('udp', b.mapping.inbound, s);
    const r: RelayResult = { bytesUp: 0, bytesDown: 0, close: 'idle' };
    info.bytes = r;
    info.outbound = b.mapping.outbound.name;
    info.protocol = null;
    // The replies' bytes (the NAT counts into b.result) go on this flow's line.
    b.result = r;
    if (b.mapping.assoc !== null) setChain(info, chainOf(b.mapping.assoc));
    this.h.flows.add(info);
    info.end = () => s.close();
    s.on('close', () => this.logFlow(info, r));
    s.on('message', (d) => {
      r.bytesUp += d.length;
      b.send(d);
    });
    if (this.h.debug) this.h.log.debug({ network: 'udp', inbound: info.inbound, src: info.src, dst: info.dst, outbound: info.outbound }, 'inbound session from a new source');
  }

  // ------------------------------------------------------------------ logs

  /** One debug line per hijacked DNS query or answer (name, type, rcode); only called with debug on. */
  private debugDns(what: 'query' | 'answer', info: FlowInfo, msg: Uint8Array | null): void {
    const m = msg === null ? null : parseMessage(msg);
    const q = m?.questions[0];
    this.h.log.debug({ network: info.network, src: info.src, id: m?.id ?? null, name: q?.name ?? null, type: q?.type ?? null, rcode: what === 'answer' ? (m?.rcode ?? null) : undefined, answers: what === 'answer' ? (m?.answers.map((a) => a.address ?? a.type) ?? null) : undefined }, `dns ${what}`);
  }

  logFlow(info: FlowInfo, r: RelayResult & { requests?: number; outbounds?: string[] }, flowRule?: number): void {
    if (info.logged) return;
    info.logged = true;
    info.end = null;
    info.closeOrderly = null;
    info.request = null;
    info.client = null;
    info.upstream = null;
    info.sniffer = null;
    info.guard.end();
    this.h.flows.remove(info, r);
    this.h.flowLogged(info);
    if (info.shutdown) r.close = 'shutdown';
    else if (info.killed) r.close = 'closed by API';
    this.h.observer?.flowEnded({ network: info.network, inbound: info.inbound, outbound: info.outbound, close: r.close, bytesUp: r.bytesUp, bytesDown: r.bytesDown, durationMs: Date.now() - info.started });
    if (!this.h.log.isLevelEnabled('info')) return;
    this.h.log.info(
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

  /**
   * A TCP connection a TPROXY listener accepted (gateway mode tproxy): the
   * socket's local address and port are the client's original destination
   * (TPROXY leaves the packet unchanged), its remote end is the LAN client.
   * Sniffed, matched with inbound tproxy and relayed like a TUN flow; the
   * handshake is already complete, so a failing upstream resets it.
   */
  handleTransparent(socket: net.Socket): void {
    this.h.counters.tcpFlows++;
    socket.on('error', () => {});
    socket.setNoDelay(true);
    const remoteAddress = unmapAddress(socket.remoteAddress ?? '');
    const localAddress = unmapAddress(socket.localAddress ?? '');
    // An accepted socket's ends are Node's text: to bytes once, here (TUN flows bring the stack's).
    const ends: FlowEnds = { family: isIP(localAddress) === 6 ? 6 : 4, remoteAddress, remotePort: socket.remotePort ?? 0, localAddress, localPort: socket.localPort ?? 0, remoteBytes: addressBytes(remoteAddress), localBytes: addressBytes(localAddress) };
    const info = this.flowInfo('tcp', 'tproxy', ends);
    if (!this.h.accepting) {
      socket.resetAndDestroy();
      return this.logFlow(info, { bytesUp: 0, bytesDown: 0, close: 'shutdown' });
    }
    this.h.flows.add(info);
    info.end = () => socket.destroy();
    if (this.h.debug) this.h.log.debug({ network: 'tcp', inbound: 'tproxy', src: info.src, dst: info.dst }, 'flow accepted');
    info.guard.own(socket);
    info.guard.run(() => this.routeTransparent(socket, ends, info));
  }

}

/** A flow end's address bytes (4 or 16, judged by their length as the text was) can be a socket's endpoint. */
function isUnicast(b: Uint8Array): boolean {
  return isUnicastAt(b.length === 4 ? 4 : 6, b, 0);
}
