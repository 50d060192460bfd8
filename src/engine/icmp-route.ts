/**
 * Where an echo request goes (icmp.echo, docs/configuration.md "icmp"): the
 * policy decides as for a flow to that address (network icmp, port 0: a
 * rule limited to tcp, udp or ports never holds), and the outbound it names
 * says what happens:
 * - `direct` (a group: the member a new flow would try first): forwarded
 *   for real through an ICMP socket carrying that outbound's mark and
 *   interface (src/ip/echo-relay.ts);
 * - `reject`: admin-prohibited unreachable; `drop`: silence;
 * - a proxy (socks5, http: neither carries ICMP): `icmp.unforwardable`.
 *
 * Fake-IP destinations: the name's real address, resolved through sluice's
 * own resolver, is pinged when the policy sends the name direct; the
 * answers come back from the fake address the client pinged. The request
 * that starts the resolution is not forwarded (counted as pending; ping's
 * next request, a second later, is). A fake IP that maps to no name gets
 * silence, like a flow to it.
 *
 * Decisions are cached per destination for a few seconds and dropped when
 * the runtime (a reload) or the routing mode changes, so a run of pings
 * costs one policy match; the IPv4 cache key is a number (no allocation).
 */
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import { IcmpSocket, type IcmpReceiver } from '../link/icmp-socket.js';
import { EchoAction, type EchoPolicy, type EchoRoute } from '../ip/echo-relay.js';
import type { Logger } from './logger.js';
import type { Policy } from './policy/policy.js';
import type { MatchContext } from './policy/types.js';
import type { IcmpConfig } from '../config/types.js';
import type { LookupFn, Outbound } from '../outbound/types.js';
import { DirectOutbound, DirectUdpAssociation } from '../outbound/direct.js';
import type { UdpAssociation } from '../outbound/types.js';
import type { UdpErrorRelay } from '../ip/udp-error-relay.js';
import type { UdpSession } from '../udp/session.js';
import { OutboundGroup } from '../outbound/group.js';
import { formatIpv4, parseIpv4Text, readIpv4Addr, writeIpv4Addr } from '../wire/ipv4.js';
import { formatIpv6, parseIpv6Text } from '../wire/ipv6.js';

/** What the route reads from the engine on a cache miss. */
export interface IcmpRouteDeps {
  log: Logger;
  /** The running runtime's identity (a reload replaces it), its icmp section, policy and outbounds. */
  generation(): object;
  config(): IcmpConfig;
  policy(): Policy;
  outbound(name: string): Outbound | undefined;
  /** PATCH /configs mode global / direct: every flow to this outbound, rules not consulted. */
  modeOutbound(): Outbound | null;
  /** A fake IP's name (null when it maps to none); undefined when the address is not fake. */
  fakeName(family: 4 | 6, buf: Uint8Array, off: number): string | null | undefined;
  /** A snooped name of a real address (4 or 16 bytes), or null. */
  knownName(address: Uint8Array): string | null;
  lookup: LookupFn;
}

interface CacheEntry {
  generation: object;
  mode: Outbound | null;
  expires: number;
  action: EchoAction;
  socket: IcmpSocket | null;
  target: Uint8Array;
}

/** How long one decision is reused (ms). */
const CACHE_MS = 10_000;
/** Destinations remembered at once; past it the cache starts over. */
const CACHE_MAX = 4096;
/** Group nesting followed to find a member (groups cannot cycle; config checks refuse it). */
const MAX_GROUP_DEPTH = 16;

export class IcmpEchoRoute implements EchoPolicy {
  private readonly cache4 = new Map<number, CacheEntry>();
  private readonly cache6 = new Map<string, CacheEntry>();
  private readonly sockets = new Map<string, IcmpSocket | Error>();
  private receiver: IcmpReceiver | null = null;
  private closed = false;

  constructor(private readonly deps: IcmpRouteDeps) {}

  /** The relay the sockets deliver to (set once, before the first request). */
  attach(receiver: IcmpReceiver): void {
    this.receiver = receiver;
  }

  /**
   * Opens the sockets of every direct outbound now, while sluice still has
   * CAP_NET_RAW (before run.user's privilege drop); later ones open lazily.
   */
  openFor(outbounds: Iterable<Outbound>): void {
    for (const o of outbounds) {
      if (!(o instanceof DirectOutbound)) continue;
      this.socketFor(4, o);
      this.socketFor(6, o);
    }
  }

  close(): void {
    this.closed = true;
    for (const s of this.sockets.values()) if (s instanceof IcmpSocket) s.close();
    this.sockets.clear();
    this.cache4.clear();
    this.cache6.clear();
  }

  route(family: 4 | 6, buf: Uint8Array, dstOff: number, out: EchoRoute): EchoAction {
    const d = this.deps;
    const now = performance.now();
    const gen = d.generation();
    const mode = d.modeOutbound();
    let e: CacheEntry | undefined;
    let key4 = 0;
    let key6 = '';
    if (family === 4) {
      key4 = readIpv4Addr(buf, dstOff);
      e = this.cache4.get(key4);
    } else {
      key6 = formatIpv6(buf, dstOff);
      e = this.cache6.get(key6);
    }
    if (e === undefined || e.expires < now || e.generation !== gen || e.mode !== mode) {
      e = this.decide(family, buf, dstOff, gen, mode, now);
      const cache = family === 4 ? this.cache4 : this.cache6;
      if (cache.size >= CACHE_MAX) cache.clear();
      if (family === 4) this.cache4.set(key4, e);
      else this.cache6.set(key6, e);
    }
    if (e.action === EchoAction.Forward) {
      out.socket = e.socket;
      out.target.set(e.target);
    }
    return e.action;
  }

  private decide(family: 4 | 6, buf: Uint8Array, off: number, generation: object, mode: Outbound | null, now: number): CacheEntry {
    const d = this.deps;
    const cfg = d.config();
    const e: CacheEntry = { generation, mode, expires: now + CACHE_MS, action: EchoAction.Drop, socket: null, target: new Uint8Array(16) };
    if (cfg.echo === 'reply') return (e.action = EchoAction.Reply), e;
    if (cfg.echo === 'unreachable') return (e.action = EchoAction.Unreachable), e;
    if (cfg.echo === 'drop') return e;
    const alen = family === 4 ? 4 : 16;
    const dst = buf.slice(off, off + alen);
    const text = family === 4 ? formatIpv4(dst, 0) : formatIpv6(dst, 0);
    const fake = d.fakeName(family, dst, 0);
    if (fake === null) return e; // a fake IP naming nothing: silence, as a flow to it is refused
    const domain = fake !== undefined ? fake : d.knownName(dst);
    let outbound = mode;
    if (outbound === null) {
      const ctx: MatchContext = { network: 'icmp' as MatchContext['network'], inbound: 'tun', family, dst, dstPort: 0, src: new Uint8Array(alen), srcPort: 0, domain, protocol: null };
      outbound = d.outbound(d.policy().match(ctx).outbound) ?? null;
    }
    for (let i = 0; outbound instanceof OutboundGroup && i < MAX_GROUP_DEPTH; i++) outbound = outbound.firstMember(domain ?? text);
    if (outbound === null || outbound.action === 'drop') return e;
    if (outbound.action === 'reject') return (e.action = EchoAction.Unreachable), e;
    if (!(outbound instanceof DirectOutbound)) return this.unforwardable(e, cfg);
    const socket = this.socketFor(family, outbound);
    if (socket === null) return this.unforwardable(e, cfg);
    e.socket = socket;
    if (fake === undefined) {
      e.target.set(dst);
      e.action = EchoAction.Forward;
      return e;
    }
    // A fake IP sent direct: ping the name's real address once it is known.
    e.action = EchoAction.Pending;
    const name = fake;
    d.lookup(name, family).then(
      (r) => {
        if (this.closed) return;
        if (r.family !== family || !(family === 4 ? writeV4(e.target, r.address) : parseIpv6Text(r.address, e.target, 0))) {
          e.action = EchoAction.Unreachable;
          return;
        }
        e.action = EchoAction.Forward;
      },
      (err: Error) => {
        if (this.closed) return;
        if (d.log.isLevelEnabled('debug')) d.log.debug({ domain: name, err: err.message }, 'ping: the fake-ip name did not resolve');
        e.action = EchoAction.Unreachable;
      },
    );
    return e;
  }

  private unforwardable(e: CacheEntry, cfg: IcmpConfig): CacheEntry {
    e.action = cfg.unforwardable === 'reply' ? EchoAction.Reply : cfg.unforwardable === 'drop' ? EchoAction.Drop : EchoAction.Unreachable;
    return e;
  }

  /** The ICMP socket of (family, outbound's mark and interface), opened on first use; null when it cannot be (said once). */
  private socketFor(family: 4 | 6, o: DirectOutbound): IcmpSocket | null {
    const { mark, device } = o.socketOptions;
    const key = `${family}|${mark}|${device ?? ''}`;
    let s = this.sockets.get(key);
    if (s === undefined) {
      try {
        s = new IcmpSocket({ family, mark, device, ident: randomInt(1, 0x10000) }, this.receiver!);
        if (!s.raw) this.deps.log.info({ family, outbound: o.name }, 'ping: raw ICMP refused, using a ping socket (routers\' ICMP errors are not relayed)');
      } catch (err) {
        s = err as Error;
        this.deps.log.warn({ family, outbound: o.name, err: (err as Error).message }, 'ping: cannot open an ICMP socket; echo requests get icmp.unforwardable');
      }
      this.sockets.set(key, s);
    }
    return s instanceof IcmpSocket ? s : null;
  }
}

function writeV4(out: Uint8Array, text: string): boolean {
  const v = parseIpv4Text(text);
  if (v === null) return false;
  writeIpv4Addr(out, 0, v);
  return true;
}

/**
 * A TUN session's direct UDP association, made visible to the ICMP error
 * relay (src/ip/udp-error-relay.ts): its upstream socket sends with the
 * client's TTL, and errors about it reach the client. Returns what to call
 * when the session ends. Other associations (proxies) carry no ICMP.
 */
export function watchUdpErrors(relay: UdpErrorRelay, a: UdpAssociation, s: UdpSession): UdpWatch | null {
  if (!(a instanceof DirectUdpAssociation)) return null;
  a.setTtl(s.ttl);
  const { v4, v6 } = a.localPorts();
  if (v4 !== null) relay.register(4, v4, s);
  if (v6 !== null) relay.register(6, v6, s);
  const { mark, device } = a.socketOptions;
  return {
    tooBig: (payloadLen, host) => isIP(host) === s.family && relay.tooBig(s, payloadLen, host, mark, device),
    unwatch: () => {
      if (v4 !== null) relay.unregister(4, v4, s);
      if (v6 !== null) relay.unregister(6, v6, s);
    },
  };
}

export interface UdpWatch {
  /** True when the datagram must not be sent: it cannot pass the path unfragmented and its client forbade that (answered already). */
  tooBig(payloadLen: number, host: string): boolean;
  unwatch(): void;
}
