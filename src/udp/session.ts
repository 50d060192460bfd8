/**
 * A UDP "session": datagrams between one TUN-side client address:port and
 * one destination address:port, as seen by the stack. The application gets
 * each datagram from the client and can send datagrams back that appear to
 * come from the destination. Sessions end after an idle timeout (RFC 4787
 * REQ-5: at least 2 minutes by default for general UDP; configurable).
 */
import { EventEmitter } from 'node:events';
import type { FlowKey } from '../ip/flow-table.js';
import type { WheelEntry } from '../stack/timer-wheel.js';
import type { FlowEndpoints } from '../stack/tcp-stream.js';
import { addressView, type FlowAddressBytes } from '../ip/flow-addresses.js';

export interface UdpHost {
  /** Sends `data` from the session's destination back to its client. */
  sendUdp(session: UdpSession, data: Uint8Array, off: number, len: number): boolean;
  /** Re-arms the idle timer and forgets the session when closed. */
  touchUdp(session: UdpSession): void;
  closeUdp(session: UdpSession): void;
  /** ICMP destination unreachable about the session's first datagram, then close. */
  unreachableUdp(session: UdpSession, kind: 'port' | 'host' | 'net' | 'admin'): void;
  /** The session from the same client to another remote endpoint (opened if absent, without the session handler); null when full or bad. */
  siblingUdp(session: UdpSession, host: string, port: number): UdpSession | null;
}

export interface UdpSessionEvents {
  message: [data: Buffer];
  close: [];
}

export class UdpSession extends EventEmitter<UdpSessionEvents> implements FlowKey, WheelEntry, FlowEndpoints, FlowAddressBytes {
  readonly protocol = 17;
  readonly srcAddr = new Uint8Array(16);
  readonly dstAddr = new Uint8Array(16);
  /** srcAddr / dstAddr as the engine reads them (4 bytes for IPv4). */
  readonly remoteBytes: Uint8Array;
  readonly localBytes: Uint8Array;
  nextInBucket: FlowKey | null = null;
  flowHash = 0;
  wheelDeadline = Infinity;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  wheelSlot = -1;
  src4 = 0;
  dst4 = 0;
  remoteAddress = '';
  localAddress = '';
  lastActivity = 0;
  /** Opened by sibling() for a datagram from a new source, not by the client. */
  fromRemote = false;
  /** The idle timeout of this session (RFC 4787 REQ-5, REQ-5a: shorter for DNS). */
  idleMs = 0;
  /** TTL / hop limit of the client's latest datagram as it reached the TUN (the upstream socket sends with it). */
  ttl = 64;
  /** IPv4: the client's latest datagram had DF set (IPv6 routers never fragment: always true there). */
  df = true;
  closed = false;
  /**
   * False until the application sends the client a datagram (a reply). Like
   * conntrack's "assured" bit, it decides which session a full table may
   * evict: one nobody ever answered.
   */
  replied = false;
  /** Ended by a full table to make room for a new session (src/udp/unreplied-list.ts). */
  evicted = false;
  /** Links in the stack's oldest-first list of unreplied sessions; owned by UdpSessions. */
  olderUnreplied: UdpSession | null = null;
  newerUnreplied: UdpSession | null = null;
  /** Datagrams that arrived before the application attached a listener. */
  readonly queued: Buffer[] = [];
  private readonly host: UdpHost;

  constructor(
    host: UdpHost,
    readonly family: number,
    readonly srcPort: number,
    readonly dstPort: number,
  ) {
    super();
    this.host = host;
    this.remoteBytes = addressView(family, this.srcAddr);
    this.localBytes = addressView(family, this.dstAddr);
  }

  get remotePort(): number {
    return this.srcPort;
  }

  get localPort(): number {
    return this.dstPort;
  }

  /** Sends a datagram to the client, from the session's destination. */
  send(data: Uint8Array): boolean {
    if (this.closed) return false;
    this.host.touchUdp(this);
    return this.host.sendUdp(this, data, 0, data.length);
  }

  close(): void {
    if (this.closed) return;
    this.host.closeUdp(this);
  }

  /**
   * The session between this session's client and `host`:`port` (an IP
   * literal of the same family): the way a datagram from another source
   * reaches the client with that true source (src/udp/nat.ts). Opened
   * without the stack's session handler (the caller routes it); the
   * client's datagrams to that endpoint then arrive on it. Null when the
   * address is not a unicast literal of this family or the table is full.
   */
  sibling(host: string, port: number): UdpSession | null {
    if (this.closed) return null;
    return this.host.siblingUdp(this, host, port);
  }

  /**
   * Refuses the session the way a host or firewall would: an ICMP
   * destination unreachable (port by default) quoting its first datagram,
   * so the client fails at once instead of waiting for a timeout. Closes it.
   */
  unreachable(kind: 'port' | 'host' | 'net' | 'admin' = 'port'): void {
    if (this.closed) return;
    this.host.unreachableUdp(this, kind);
  }

  /** @internal the first datagram's IP header and start, for an ICMP quote. */
  firstQuote: Uint8Array | null = null;

  /** @internal called by the stack. */
  deliver(data: Buffer): void {
    if (this.listenerCount('message') === 0) {
      // Bounded: a session nobody reads holds at most 64 datagrams.
      if (this.queued.length < 64) this.queued.push(data);
      return;
    }
    this.emit('message', data);
  }

  /** @internal called by the stack. */
  markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close');
  }

  /** Hands queued datagrams to a listener attached late. */
  drainQueued(): void {
    while (this.queued.length > 0 && this.listenerCount('message') > 0) this.emit('message', this.queued.shift()!);
  }
}
