/**
 * Direct outbound: the flow leaves from this host. TCP through a marked
 * socket when `mark` / `interface` is configured (policy routing keeps it
 * out of the TUN), a plain net socket otherwise.
 *
 * UDP: one socket per association and address family, bound to an
 * ephemeral port (the engine opens one association per client endpoint,
 * src/udp/nat.ts). Mapping and filtering are endpoint-independent ("full
 * cone", RFC 4787 §4.1 / §5): the association may send to any destination
 * from the one port, and datagrams from any source reaching that port are
 * delivered with their source (the NAT above applies udp.nat). That is what games, STUN and QUIC migration expect; it also
 * means anyone who learns the port can send into the session, as with any
 * full-cone NAT.
 */
import net from 'node:net';
import type dgram from 'node:dgram';
import type { Duplex } from 'node:stream';
import { Attempt, dialTcp, makeDialer, openUdpSocket } from './dial.js';
import { transparentUdpSocket } from '../link/sockets.js';
import type { Dialer } from './dial.js';
import { OutboundConfigError, fromSystemError } from './errors.js';
import { isUnicastText, isUsablePort } from '../wire/address-class.js';
import { canPreserve, transparentDial } from './transparent-dial.js';
import type {
  DialerOptions,
  OpenUdpOptions,
  Outbound,
  Target,
  UdpAssociation,
  UdpAssociationStats,
  UdpCloseHandler,
  UdpMessageHandler,
  UdpSource,
} from './types.js';

export interface DirectOutboundOptions extends DialerOptions {
  name: string;
  /** Datagrams held while a socket of the other family is being made. Default 16. */
  udpPendingMax?: number;
}

export class DirectOutbound implements Outbound {
  readonly name: string;
  readonly type = 'direct' as const;
  readonly action = 'connect' as const;
  readonly supportsUdp = true;
  private readonly dialer: Dialer;
  private readonly udpPendingMax: number;

  constructor(opts: DirectOutboundOptions) {
    this.name = opts.name;
    const field = `outbounds[${opts.name}]`;
    if (opts.mark !== undefined && (!Number.isInteger(opts.mark) || opts.mark < 0 || opts.mark > 0xffffffff)) {
      throw new OutboundConfigError(`${field}.mark`, 'expected an integer 0..0xffffffff');
    }
    if (opts.interface !== undefined && (opts.interface.length === 0 || opts.interface.length > 15)) {
      throw new OutboundConfigError(`${field}.interface`, 'expected an interface name of 1..15 characters (IFNAMSIZ)');
    }
    this.dialer = makeDialer(opts.name, opts);
    this.udpPendingMax = opts.udpPendingMax ?? 16;
  }

  /** True when sockets carry SO_MARK / SO_BINDTODEVICE (made through the native addon). */
  get marked(): boolean {
    return this.dialer.mark !== 0 || this.dialer.device !== undefined;
  }

  /** The mark and interface every socket of this outbound carries (0 / undefined: unset); the ICMP echo sockets use them too. */
  get socketOptions(): { mark: number; device: string | undefined } {
    return { mark: this.dialer.mark, device: this.dialer.device };
  }

  async connectTcp(target: Target, signal?: AbortSignal): Promise<Duplex> {
    if (target.source !== undefined) {
      const from = await this.preservingSource(target.source, target.host);
      if (from !== null) return this.connectFrom(target.source, from, target.port, signal);
    }
    const attempt = new Attempt(this.name, this.dialer.connectTimeoutMs, signal);
    try {
      return await dialTcp(this.dialer, target.host, target.port, target.family, attempt, net.isIP(target.host) === 6 ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`);
    } finally {
      attempt.dispose();
    }
  }

  /**
   * The address to dial from `source` (gateway.preserveSource): `host`
   * itself when it is an address of the client's family; for a name (a
   * fake-IP flow), its address in that family through the dialer's lookup
   * (sluice's upstreams). Null when the source cannot be kept: no address of
   * the client's family (nothing carries an IPv4 client's source to an
   * IPv6-only name), so the flow leaves from this host's address.
   */
  private async preservingSource(source: string, host: string): Promise<string | null> {
    if (canPreserve(source, host)) return host;
    const family = net.isIP(source);
    if (net.isIP(host) !== 0 || family === 0) return null;
    try {
      const r = await this.dialer.lookup(host, family === 6 ? 6 : 4);
      return r.family === family && isUnicastText(r.address) ? r.address : null;
    } catch {
      return null;
    }
  }

  private connectFrom(source: string, host: string, port: number, signal?: AbortSignal): Promise<Duplex> {
    const d = this.dialer;
    return transparentDial({ source, host, port, mark: d.mark === 0 ? null : d.mark, device: d.device ?? null, timeoutMs: d.connectTimeoutMs, ...(signal !== undefined ? { signal } : {}) });
  }

  /**
   * A bare UDP socket from this outbound's dialer (mark, interface), bound
   * to an ephemeral port: sluice's own DNS queries to a udp:// upstream.
   */
  udpSocket(family: 4 | 6): Promise<dgram.Socket> {
    return openUdpSocket(this.dialer, family, null);
  }

  async openUdp(options: OpenUdpOptions = {}, signal?: AbortSignal): Promise<UdpAssociation> {
    const attempt = new Attempt(this.name, this.dialer.connectTimeoutMs, signal);
    try {
      const family = options.family ?? 4;
      const source = options.source;
      if (source !== undefined && net.isIP(source.address) === family) {
        // Never a failure of the outbound (a group would mark it down):
        // an endpoint that cannot be bound leaves from a port of our own.
        const kept = await this.openTransparentUdp(source, family).catch(() => null);
        if (kept !== null) return kept;
      }
      // Made up front so a socket failure (EPERM on SO_MARK, no device) fails the session, not its first datagram.
      const first = await openUdpSocket(this.dialer, family, attempt);
      return new DirectUdpAssociation(this.dialer, first, family, this.udpPendingMax);
    } finally {
      attempt.dispose();
    }
  }

  /**
   * gateway.preserveSource for UDP: an association whose socket of the
   * client's family is IP_TRANSPARENT and bound to the LAN client's own
   * address and port, so servers see the client itself (port preserved,
   * RFC 4787 4.2.1) and their datagrams to it are caught by the gateway's
   * `socket transparent` rule. Throws the native error (EADDRINUSE when
   * the endpoint is taken, EPERM without CAP_NET_ADMIN); openUdp falls
   * back to an ephemeral port then.
   */
  async openTransparentUdp(source: { address: string; port: number }, family: 4 | 6): Promise<UdpAssociation> {
    try {
      const sock = await transparentUdpSocket({
        family,
        address: source.address,
        port: source.port,
        ...(this.dialer.mark !== 0 ? { mark: this.dialer.mark } : {}),
        ...(this.dialer.device !== undefined ? { device: this.dialer.device } : {}),
      });
      const a = new DirectUdpAssociation(this.dialer, sock, family, this.udpPendingMax);
      a.preservedSource = true;
      return a;
    } catch (err) {
      throw fromSystemError(err, this.name, 'transparent UDP socket');
    }
  }
}

interface PendingDatagram {
  payload: Uint8Array;
  host: string;
  port: number;
}

export class DirectUdpAssociation implements UdpAssociation {
  readonly stats: UdpAssociationStats;
  /** Its first socket is bound to the LAN client's endpoint (gateway.preserveSource). */
  preservedSource = false;
  private readonly dialer: Dialer;
  private sock4: dgram.Socket | null;
  private sock6: dgram.Socket | null;
  /** Set while the socket of that family is being made; datagrams wait here (bounded). */
  private pending4: PendingDatagram[] | null;
  private pending6: PendingDatagram[] | null;
  private readonly pendingMax: number;
  private handler: UdpMessageHandler | null;
  private closeHandler: UdpCloseHandler | null;
  private isClosed: boolean;
  /** One-entry resolution cache for domain destinations. */
  private lastDomain: string;
  private lastAddress: string;
  private readonly src: UdpSource;
  private readonly onDatagram: (msg: Buffer, rinfo: dgram.RemoteInfo) => void;
  private readonly onSocketError: () => void;
  /** setTtl's value; 0 while the sockets keep the system default. */
  private ttl: number;

  constructor(dialer: Dialer, first: dgram.Socket, family: 4 | 6, pendingMax: number) {
    this.ttl = 0;
    this.dialer = dialer;
    this.sock4 = null;
    this.sock6 = null;
    this.pending4 = null;
    this.pending6 = null;
    this.pendingMax = pendingMax;
    this.handler = null;
    this.closeHandler = null;
    this.isClosed = false;
    this.lastDomain = '';
    this.lastAddress = '';
    this.src = { host: '', port: 0 };
    this.stats = { sent: 0, received: 0, sendDropped: 0, receiveDropped: 0 };
    this.onDatagram = (msg, rinfo) => {
      this.stats.received++;
      if (this.handler === null) return;
      this.src.host = rinfo.address;
      this.src.port = rinfo.port;
      this.handler(msg, this.src);
    };
    // Asynchronous send failures (no route, ...) cost the datagram only.
    this.onSocketError = () => {
      this.stats.sendDropped++;
    };
    this.adopt(first, family);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Local ports in use (for tests and diagnostics). */
  localPorts(): { v4: number | null; v6: number | null } {
    return { v4: this.sock4?.address().port ?? null, v6: this.sock6?.address().port ?? null };
  }

  send(payload: Uint8Array, dst: Target): void {
    // Port 0 makes dgram's send throw (ERR_SOCKET_BAD_PORT): a counted drop instead.
    if (this.isClosed || !isUsablePort(dst.port)) {
      this.stats.sendDropped++;
      return;
    }
    const fam = net.isIP(dst.host);
    if (fam === 4 || fam === 6) {
      this.sendTo(payload, dst.host, dst.port, fam);
      return;
    }
    if (dst.host === this.lastDomain) {
      this.sendTo(payload, this.lastAddress, dst.port, net.isIP(this.lastAddress) as 4 | 6);
      return;
    }
    this.dialer.lookup(dst.host, dst.family).then(
      (r) => {
        this.lastDomain = dst.host;
        this.lastAddress = r.address;
        this.sendTo(payload, r.address, dst.port, r.family);
      },
      () => {
        this.stats.sendDropped++;
      },
    );
  }

  onMessage(cb: UdpMessageHandler): void {
    this.handler = cb;
  }

  /** The mark and interface of this association's sockets (0 / undefined: unset). */
  get socketOptions(): { mark: number; device: string | undefined } {
    return { mark: this.dialer.mark, device: this.dialer.device };
  }

  setTtl(ttl: number): void {
    if (ttl === this.ttl || ttl < 1 || ttl > 255) return;
    this.ttl = ttl;
    if (this.sock4 !== null) applyTtl(this.sock4, ttl);
    if (this.sock6 !== null) applyTtl(this.sock6, ttl);
  }

  onClose(cb: UdpCloseHandler): void {
    this.closeHandler = cb;
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const s of [this.sock4, this.sock6]) {
      if (s === null) continue;
      s.off('message', this.onDatagram);
      try {
        s.close();
      } catch {
        // already closed
      }
    }
    this.sock4 = null;
    this.sock6 = null;
    this.pending4 = null;
    this.pending6 = null;
    const cb = this.closeHandler;
    this.closeHandler = null;
    if (cb !== null) cb(null);
  }

  private sendTo(payload: Uint8Array, address: string, port: number, family: 4 | 6): void {
    // The address may come from a resolver's answer: only unicast leaves
    // (a multicast or broadcast destination is not a session's peer).
    if (this.isClosed || (address !== this.lastAddress && !isUnicastText(address))) {
      this.stats.sendDropped++;
      return;
    }
    const sock = family === 6 ? this.sock6 : this.sock4;
    if (sock !== null) {
      this.sendOn(sock, payload, port, address);
      return;
    }
    let pending = family === 6 ? this.pending6 : this.pending4;
    if (pending !== null) {
      if (pending.length >= this.pendingMax) this.stats.sendDropped++;
      else pending.push({ payload, host: address, port });
      return;
    }
    pending = [{ payload, host: address, port }];
    if (family === 6) this.pending6 = pending;
    else this.pending4 = pending;
    openUdpSocket(this.dialer, family, null).then(
      (s) => {
        if (this.isClosed) {
          s.close();
          return;
        }
        const queued = (family === 6 ? this.pending6 : this.pending4) ?? [];
        if (family === 6) this.pending6 = null;
        else this.pending4 = null;
        this.adopt(s, family);
        for (const d of queued) this.sendOn(s, d.payload, d.port, d.host);
      },
      () => {
        const queued = family === 6 ? this.pending6 : this.pending4;
        this.stats.sendDropped += queued?.length ?? 0;
        if (family === 6) this.pending6 = null;
        else this.pending4 = null;
      },
    );
  }

  /** dgram's send throws on arguments it rejects (and on a socket closing under it): that costs the datagram. */
  private sendOn(sock: dgram.Socket, payload: Uint8Array, port: number, address: string): void {
    try {
      sock.send(payload, port, address);
      this.stats.sent++;
    } catch {
      this.stats.sendDropped++;
    }
  }

  private adopt(sock: dgram.Socket, family: 4 | 6): void {
    if (this.ttl !== 0) applyTtl(sock, this.ttl);
    sock.on('message', this.onDatagram);
    sock.on('error', this.onSocketError);
    if (family === 6) this.sock6 = sock;
    else this.sock4 = sock;
  }
}

/** IP_TTL / IPV6_UNICAST_HOPS; a socket closing meanwhile is no error. */
function applyTtl(sock: dgram.Socket, ttl: number): void {
  try {
    sock.setTTL(ttl);
  } catch {
    // EBADF: closed
  }
}
