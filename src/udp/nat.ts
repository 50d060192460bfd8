/**
 * UDP NAT between client sessions (the stack's, or TPROXY's) and the
 * outbounds' associations, with the behaviour RFC 4787 asks of a NAT.
 *
 * Mapping (RFC 4787 4.1, REQ-1: endpoint-independent). One association,
 * hence one upstream socket and port (direct) or one UDP ASSOCIATE (SOCKS5),
 * per client endpoint (inbound, address, port) and outbound: every session
 * of that client socket routed to the same outbound shares it, whatever the
 * destination. A reload gives new outbounds, hence new mappings.
 *
 * Replies carry their true source. A datagram the association receives is
 * matched by its source (the sender's address and port as the socket or
 * the SOCKS5 relay's UDP header reports it, RFC 1928 7) to the session the
 * client opened to that endpoint, and sent from there. A fake-IP session is
 * also known under the real addresses its name resolved to (`hosts`), so a
 * reply from the real address reaches the client from the fake one its
 * connected socket expects.
 *
 * Filtering (RFC 4787 5, REQ-8). A datagram from a source no session has is
 * let in per `mode`:
 *   - endpoint-independent (default, REQ-8's choice for application
 *     transparency): from anyone;
 *   - address-dependent: only from an address the client has sent to
 *     through this mapping (any port);
 *   - address-and-port-dependent: never (only the sessions' own endpoints).
 * Past the mode, the policy has its say (`admit`): a source is let in only
 * if the client's answer to it would take this same mapping (the rules send
 * that address to this outbound). Anything else is dropped and counted
 * (`filtered`): a reply the client could not answer the same way would
 * only break the mapping's consistency. A source admitted gets a session of
 * its own (`sibling`: the stack writes the datagram from that source into
 * the TUN; TPROXY binds a reply socket transparently to it), handed to
 * `onInbound` to become a flow like any other.
 *
 * Lifetime (REQ-5, REQ-6). Sessions end after the idle timeout
 * (udp.idleTimeout), refreshed by traffic either way (REQ-6: outbound
 * refresh; inbound refresh too, which REQ-6 allows). A mapping ends with
 * its last session, or when its association ends (then every session of it
 * ends too).
 */
import { isIP } from 'node:net';
import type { Outbound, Target, UdpAssociation, UdpSource } from '../outbound/types.js';
import type { FlowAddressBytes } from '../ip/flow-addresses.js';

export type UdpNatMode = 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent';

/** What the NAT needs of a client-side session (the address bytes are for the policy's say, `admit`). */
export interface NatSession extends FlowAddressBytes {
  readonly family: number;
  /** The client. */
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** The destination as the client addressed it. */
  readonly localAddress: string;
  readonly localPort: number;
  send(data: Uint8Array): boolean;
  close(): void;
  sibling(host: string, port: number): NatSession | null;
  /** Opened by sibling() (by a datagram from a new source), not by the client. */
  readonly fromRemote: boolean;
  on(event: 'close', listener: () => void): unknown;
}

export interface UdpNatCounters {
  /** Mappings open now. */
  mappingsActive: number;
  mappingsTotal: number;
  /** Sessions opened by a datagram from a new source (endpoint-independent filtering). */
  inboundSessions: number;
  /** Datagrams from a new source dropped by the filtering mode or the policy. */
  filtered: number;
}

export function newUdpNatCounters(): UdpNatCounters {
  return { mappingsActive: 0, mappingsTotal: 0, inboundSessions: 0, filtered: 0 };
}

/** A session's place in a mapping: where the client's datagrams go, and where the replies come from. */
export class NatBinding {
  /** The client has sent through it (address-dependent filtering counts only these). */
  sent = false;
  /** Replies' bytes are added here (the flow's counters). */
  result: { bytesDown: number };
  constructor(
    readonly mapping: NatMapping,
    readonly session: NatSession,
    /** Where the client's datagrams go (a domain for a fake-IP session). */
    readonly target: Target,
    /** The source addresses replies come from (the destination, or a fake-IP name's real addresses). */
    readonly hosts: string[],
    result: { bytesDown: number },
  ) {
    this.result = result;
  }

  /** A datagram from the client, upstream through the mapping. */
  send(data: Uint8Array): void {
    this.sent = true;
    const a = this.mapping.assoc;
    if (a !== null) a.send(data, this.target);
  }
}

/** One client endpoint's path through one outbound. */
export class NatMapping {
  assoc: UdpAssociation | null = null;
  closed = false;
  /** Replies' sources -> bindings: port first, then address (no key text per datagram). */
  readonly byPort = new Map<number, Map<string, NatBinding>>();
  readonly bindings = new Set<NatBinding>();
  /** The last binding a reply went to: one compare for the one-destination case. */
  last: NatBinding | null = null;
  constructor(
    readonly key: string,
    readonly inbound: 'tun' | 'tproxy',
    readonly outbound: Outbound,
    readonly opening: Promise<UdpAssociation>,
  ) {}

  /** Sessions waiting in attach() for the association. */
  pending = 0;
}

export interface UdpNatOptions {
  mode: UdpNatMode;
  counters: UdpNatCounters;
  /** Whether the policy sends (client, host:port) to this mapping's outbound: a new source's last check. */
  admit(mapping: NatMapping, client: NatSession, host: string, port: number): boolean;
  /** A session opened by a datagram from a new source: make it a flow (its client datagrams go to `b.send`). */
  onInbound(b: NatBinding): void;
}

export class UdpNat {
  private readonly mappings = new Map<string, NatMapping>();
  /** Which binding a session has (a sibling found again is recognised). */
  private readonly bySession = new WeakMap<NatSession, NatBinding>();
  /** Outbound objects numbered, so a reload's new outbounds make new mappings. */
  private readonly outboundIds = new WeakMap<Outbound, number>();
  private nextOutboundId = 1;

  constructor(private readonly o: UdpNatOptions) {}

  get size(): number {
    return this.mappings.size;
  }

  /**
   * Puts `session` on its client endpoint's mapping through `outbound`
   * (opened with `open` when there is none yet), its replies expected from
   * `hosts` at `target.port`. Resolves once the association is up; rejects
   * as `open` does (the session is then not bound).
   */
  async attach(
    inbound: 'tun' | 'tproxy',
    outbound: Outbound,
    session: NatSession,
    target: Target,
    hosts: string[],
    result: { bytesDown: number },
    open: () => Promise<UdpAssociation>,
    gone: AbortSignal,
  ): Promise<NatBinding> {
    const key = this.keyOf(inbound, outbound, session);
    let m = this.mappings.get(key);
    if (m === undefined || m.closed) {
      m = this.openMapping(key, inbound, outbound, open);
    }
    m.pending++;
    try {
      await m.opening;
    } finally {
      m.pending--;
    }
    if (gone.aborted) {
      // The session ended meanwhile: a mapping nobody holds ends too.
      if (m.bindings.size === 0 && m.pending === 0) this.closeMapping(m);
      throw new Error('the session ended while its mapping was being opened');
    }
    if (m.closed) throw new Error('the mapping ended while it was being opened');
    const b = new NatBinding(m, session, target, hosts, result);
    this.bind(b);
    return b;
  }

  /** Ends every mapping (shutdown). */
  closeAll(): void {
    for (const m of [...this.mappings.values()]) this.closeMapping(m);
  }

  private keyOf(inbound: string, outbound: Outbound, s: NatSession): string {
    let id = this.outboundIds.get(outbound);
    if (id === undefined) {
      id = this.nextOutboundId++;
      this.outboundIds.set(outbound, id);
    }
    return `${inbound} ${s.family} ${s.remoteAddress} ${s.remotePort} ${id}`;
  }

  private openMapping(key: string, inbound: 'tun' | 'tproxy', outbound: Outbound, open: () => Promise<UdpAssociation>): NatMapping {
    const c = this.o.counters;
    const opening = open();
    const m = new NatMapping(key, inbound, outbound, opening);
    this.mappings.set(key, m);
    c.mappingsTotal++;
    c.mappingsActive = this.mappings.size;
    opening.then(
      (a) => {
        if (m.closed) {
          a.close();
          return;
        }
        m.assoc = a;
        a.onMessage((payload, src) => this.fromUpstream(m, payload, src));
        a.onClose(() => this.closeMapping(m));
      },
      () => this.forget(m),
    );
    return m;
  }

  private bind(b: NatBinding): void {
    const m = b.mapping;
    m.bindings.add(b);
    this.bySession.set(b.session, b);
    for (const h of b.hosts) this.index(m, b, h, b.target.port);
    b.session.on('close', () => this.unbind(b));
  }

  private index(m: NatMapping, b: NatBinding, host: string, port: number): void {
    let hosts = m.byPort.get(port);
    if (hosts === undefined) {
      hosts = new Map();
      m.byPort.set(port, hosts);
    }
    hosts.set(host, b);
  }

  private unbind(b: NatBinding): void {
    const m = b.mapping;
    if (!m.bindings.delete(b)) return;
    if (m.last === b) m.last = null;
    const hosts = m.byPort.get(b.target.port);
    if (hosts !== undefined) {
      for (const [h, x] of hosts) if (x === b) hosts.delete(h);
      if (hosts.size === 0) m.byPort.delete(b.target.port);
    }
    if (m.bindings.size === 0) this.closeMapping(m);
  }

  private closeMapping(m: NatMapping): void {
    if (m.closed) return;
    m.closed = true;
    this.forget(m);
    const a = m.assoc;
    m.assoc = null;
    a?.close();
    for (const b of [...m.bindings]) b.session.close();
  }

  private forget(m: NatMapping): void {
    if (this.mappings.get(m.key) === m) this.mappings.delete(m.key);
    this.o.counters.mappingsActive = this.mappings.size;
  }

  /** A datagram on the mapping's association from `src`: to the session of that source, or a new one. */
  private fromUpstream(m: NatMapping, payload: Uint8Array, src: UdpSource): void {
    let b = m.last;
    if (b === null || b.target.port !== src.port || !b.hosts.includes(src.host)) {
      b = m.byPort.get(src.port)?.get(src.host) ?? this.newSource(m, src);
      if (b === null) return;
      m.last = b;
    }
    b.result.bytesDown += payload.length;
    b.session.send(payload);
  }

  /** RFC 4787 5: filtering of a datagram from an endpoint no session of the mapping has. */
  private newSource(m: NatMapping, src: UdpSource): NatBinding | null {
    const c = this.o.counters;
    const mode = this.o.mode;
    const anchor = m.bindings.values().next();
    if (anchor.done === true || mode === 'address-and-port-dependent') {
      c.filtered++;
      return null;
    }
    const client = anchor.value.session;
    // A SOCKS5 relay may name the source (ATYP 3): no address to send from.
    if (isIP(src.host) !== (client.family === 6 ? 6 : 4)) {
      c.filtered++;
      return null;
    }
    if (mode === 'address-dependent' && !this.sentTo(m, src.host)) {
      c.filtered++;
      return null;
    }
    if (!this.o.admit(m, client, src.host, src.port)) {
      c.filtered++;
      return null;
    }
    const sib = client.sibling(src.host, src.port);
    if (sib === null) {
      c.filtered++;
      return null;
    }
    const known = this.bySession.get(sib);
    if (known === undefined && !sib.fromRemote) {
      // The client's own session to that source, still being routed: its
      // own binding comes in a moment; until then the datagram is dropped.
      c.filtered++;
      return null;
    }
    if (known !== undefined) {
      // A session of this mapping known under another address: this one too.
      if (known.mapping !== m) {
        c.filtered++;
        return null;
      }
      known.hosts.push(src.host);
      this.index(m, known, src.host, src.port);
      return known;
    }
    const b = new NatBinding(m, sib, { host: src.host, port: src.port }, [src.host], { bytesDown: 0 });
    this.bind(b);
    c.inboundSessions++;
    this.o.onInbound(b);
    return b.mapping.closed ? null : b;
  }

  private sentTo(m: NatMapping, host: string): boolean {
    for (const b of m.bindings) if (b.sent && b.hosts.includes(host)) return true;
    return false;
  }
}
