/**
 * SOCKS5 outbound (RFC 1928) with username/password authentication
 * (RFC 1929): CONNECT for TCP, UDP ASSOCIATE (RFC 1928 §7) for UDP.
 *
 * The handshake is strictly sequential (greeting, optional auth, request)
 * and every reply is read with exact-length reads, so a reply split across
 * segments is reassembled and bytes the server sends right behind its reply
 * stay in the socket for the caller.
 */
import type dgram from 'node:dgram';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { Attempt, dialTcp, makeDialer, openUdpSocket, readExactly } from './dial.js';
import type { Dialer } from './dial.js';
import { OutboundConfigError, OutboundError, OutboundErrorCode } from './errors.js';
import { isUnicastText, isUsablePort } from '../wire/address-class.js';
import {
  Command,
  MAX_CREDENTIAL_LEN,
  Method,
  encodeGreeting,
  encodeRequest,
  encodeUdpHeader,
  encodeUserPass,
  parseMethodSelection,
  parseReply,
  parseUdpHeader,
  parseUserPassStatus,
  replyLength,
  replyText,
  validateDomain,
} from './socks5-codec.js';
import type { SocksAddress } from './socks5-codec.js';
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

export interface Socks5OutboundOptions extends DialerOptions {
  name: string;
  server: string;
  port: number;
  username?: string;
  password?: string;
  /** Allow UDP ASSOCIATE. Default false. */
  udp?: boolean;
}

export class Socks5Outbound implements Outbound {
  readonly name: string;
  readonly type = 'socks5' as const;
  readonly action = 'connect' as const;
  readonly supportsUdp: boolean;
  readonly server: string;
  readonly port: number;
  private readonly dialer: Dialer;
  private readonly username: Buffer | null;
  private readonly password: Buffer | null;
  private readonly greeting: Buffer;

  constructor(opts: Socks5OutboundOptions) {
    this.name = opts.name;
    this.server = opts.server;
    this.port = opts.port;
    this.supportsUdp = opts.udp === true;
    this.dialer = makeDialer(opts.name, opts);
    const field = `outbounds[${opts.name}]`;
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
      throw new OutboundConfigError(`${field}.port`, 'expected an integer 1..65535');
    }
    if ((opts.username === undefined) !== (opts.password === undefined)) {
      throw new OutboundConfigError(`${field}.${opts.username === undefined ? 'username' : 'password'}`, 'username and password go together');
    }
    if (opts.username !== undefined && opts.password !== undefined) {
      this.username = Buffer.from(opts.username, 'utf8');
      this.password = Buffer.from(opts.password, 'utf8');
      // RFC 1929 §2: ULEN and PLEN are 1..255.
      if (this.username.length < 1 || this.username.length > MAX_CREDENTIAL_LEN) {
        throw new OutboundConfigError(`${field}.username`, `expected 1..${MAX_CREDENTIAL_LEN} bytes (RFC 1929)`);
      }
      if (this.password.length < 1 || this.password.length > MAX_CREDENTIAL_LEN) {
        throw new OutboundConfigError(`${field}.password`, `expected 1..${MAX_CREDENTIAL_LEN} bytes (RFC 1929)`);
      }
      // Offer both: a server without auth configured may pick NO_AUTH.
      this.greeting = encodeGreeting([Method.NO_AUTH, Method.USERNAME_PASSWORD]);
    } else {
      this.username = null;
      this.password = null;
      this.greeting = encodeGreeting([Method.NO_AUTH]);
    }
  }

  async connectTcp(target: Target, signal?: AbortSignal): Promise<Duplex> {
    this.checkTarget(target);
    const attempt = new Attempt(this.name, this.dialer.connectTimeoutMs, signal);
    let socket: net.Socket | null = null;
    try {
      socket = await this.dialProxy(attempt);
      await this.negotiate(socket, attempt);
      await this.request(socket, Command.CONNECT, target.host, target.port, attempt);
      return socket;
    } catch (err) {
      socket?.destroy();
      throw err;
    } finally {
      attempt.dispose();
    }
  }

  async openUdp(options: OpenUdpOptions = {}, signal?: AbortSignal): Promise<UdpAssociation> {
    if (!this.supportsUdp) {
      throw new OutboundError(OutboundErrorCode.UNSUPPORTED, 'UDP is not enabled (set udp: true)', { outbound: this.name });
    }
    const attempt = new Attempt(this.name, this.dialer.connectTimeoutMs, signal);
    let control: net.Socket | null = null;
    let udp: dgram.Socket | null = null;
    try {
      control = await this.dialProxy(attempt);
      await this.negotiate(control, attempt);
      // RFC 1928 §7: DST.ADDR/DST.PORT announce where our datagrams will come
      // from; all-zeros means "not known yet" and survives NAT between us and
      // the server (the server then accepts the first datagram from our IP).
      const zero = control.remoteFamily === 'IPv6' ? '::' : '0.0.0.0';
      const reply = await this.request(control, Command.UDP_ASSOCIATE, zero, 0, attempt);
      const relay = relayAddress(reply, control);
      // The relay's address comes from the upstream: port 0 or a non-unicast
      // address would make every send throw or go nowhere (RFC 1928 §6 BND.PORT).
      if (!isUsablePort(relay.port) || (net.isIP(relay.host) !== 0 && !isUnicastText(relay.host))) {
        throw new OutboundError(OutboundErrorCode.PROTOCOL, `the proxy named an unusable UDP relay ${relay.host}:${relay.port}`, { outbound: this.name });
      }
      const family = net.isIP(relay.host) === 6 ? 6 : 4;
      udp = await this.udpSocket(family, attempt);
      void options; // one relay socket serves both families of destination (the relay resolves and routes)
      const assoc = new Socks5UdpAssociation(this.name, control, udp, relay);
      control = null;
      udp = null;
      return assoc;
    } catch (err) {
      control?.destroy();
      udp?.close();
      throw err;
    } finally {
      attempt.dispose();
    }
  }

  private checkTarget(target: Target): void {
    if (net.isIP(target.host) === 0) {
      const bad = validateDomain(target.host);
      if (bad !== null) throw new OutboundError(OutboundErrorCode.UNREACHABLE, `${bad}: cannot send it in a SOCKS5 request`, { outbound: this.name });
    }
  }

  private dialProxy(attempt: Attempt): Promise<net.Socket> {
    return dialTcp(this.dialer, this.server, this.port, undefined, attempt, `proxy ${this.server}:${this.port}`);
  }

  /** RFC 1928 §3 method selection, then RFC 1929 when chosen. */
  private async negotiate(socket: net.Socket, attempt: Attempt): Promise<void> {
    socket.write(this.greeting);
    const sel = parseMethodSelection(await readExactly(socket, 2, attempt, this.name, 'the method selection'));
    if (sel === null) throw new OutboundError(OutboundErrorCode.PROTOCOL, 'the proxy does not speak SOCKS5', { outbound: this.name });
    if (sel === Method.NO_AUTH) return;
    if (sel === Method.NO_ACCEPTABLE) {
      throw new OutboundError(
        OutboundErrorCode.AUTH,
        this.username === null ? 'the proxy requires authentication (configure username/password)' : 'the proxy accepts none of our methods',
        { outbound: this.name },
      );
    }
    if (sel !== Method.USERNAME_PASSWORD || this.username === null || this.password === null) {
      throw new OutboundError(OutboundErrorCode.PROTOCOL, `the proxy chose method 0x${sel.toString(16)}, which we did not offer`, { outbound: this.name });
    }
    socket.write(encodeUserPass(this.username, this.password));
    let status: number | null;
    try {
      status = parseUserPassStatus(await readExactly(socket, 2, attempt, this.name, 'the authentication status'));
    } catch (err) {
      // Some servers close right after a failed authentication without a status.
      if (err instanceof OutboundError && err.code === OutboundErrorCode.PROTOCOL) {
        throw new OutboundError(OutboundErrorCode.AUTH, 'the proxy closed the connection after authentication (credentials rejected?)', {
          outbound: this.name,
          cause: err,
        });
      }
      throw err;
    }
    if (status !== 0) {
      throw new OutboundError(OutboundErrorCode.AUTH, `the proxy rejected the credentials (RFC 1929 status 0x${(status ?? 0).toString(16)})`, {
        outbound: this.name,
      });
    }
  }

  /** RFC 1928 §4 request and §6 reply; throws PROXY_REFUSED on REP != 0. */
  private async request(socket: net.Socket, cmd: number, host: string, port: number, attempt: Attempt): Promise<SocksAddress> {
    socket.write(encodeRequest(cmd, host, port));
    const head = await readExactly(socket, 5, attempt, this.name, 'the reply');
    const len = replyLength(head);
    if (len === null) throw new OutboundError(OutboundErrorCode.PROTOCOL, 'malformed SOCKS5 reply (bad VER or ATYP)', { outbound: this.name });
    const rest = await readExactly(socket, len - 5, attempt, this.name, 'the reply address');
    const reply = parseReply(Buffer.concat([head, rest], len));
    if (reply === null) throw new OutboundError(OutboundErrorCode.PROTOCOL, 'malformed SOCKS5 reply', { outbound: this.name });
    if (reply.rep !== 0) {
      throw new OutboundError(OutboundErrorCode.PROXY_REFUSED, `the proxy answered: ${replyText(reply.rep)} (REP ${reply.rep})`, {
        outbound: this.name,
        replyCode: reply.rep,
      });
    }
    return reply.bound;
  }

  private async udpSocket(family: 4 | 6, attempt: Attempt): Promise<dgram.Socket> {
    return openUdpSocket(this.dialer, family, attempt);
  }
}

/** BND.ADDR of an all-zeros address means "the address you reached me at" (common server behaviour). */
function relayAddress(bound: SocksAddress, control: net.Socket): SocksAddress {
  if (bound.host === '0.0.0.0' || bound.host === '::') {
    return { host: control.remoteAddress ?? bound.host, port: bound.port };
  }
  return bound;
}

const MAX_RELAYED_DATAGRAM = 65535;

/**
 * One UDP ASSOCIATE (RFC 1928 §7). Datagrams go to the relay with the
 * request header prepended; replies are accepted only from the relay's
 * address and port, unwrapped, and fragments (FRAG != 0) are dropped (we
 * never ask for fragmentation and reassembly is optional for servers). The
 * association ends when the TCP control connection ends (§7: "A UDP
 * association terminates when the TCP connection that the UDP ASSOCIATE
 * request arrived on terminates").
 */
export class Socks5UdpAssociation implements UdpAssociation {
  readonly stats: UdpAssociationStats;
  private readonly control: net.Socket;
  private readonly udp: dgram.Socket;
  private readonly relayHost: string;
  private readonly relayPort: number;
  private handler: UdpMessageHandler | null;
  private closeHandler: UdpCloseHandler | null;
  private isClosed: boolean;
  /** One-entry header cache: sessions mostly talk to one destination. */
  private lastHost: string;
  private lastPort: number;
  private lastHeader: Buffer | null;
  /** Reused for every delivery; valid only during the handler call. */
  private readonly src: UdpSource;
  private readonly iov: [Buffer, Uint8Array];
  private readonly onDatagram: (msg: Buffer, rinfo: dgram.RemoteInfo) => void;

  constructor(outbound: string, control: net.Socket, udp: dgram.Socket, relay: SocksAddress) {
    this.control = control;
    this.udp = udp;
    this.relayHost = relay.host;
    this.relayPort = relay.port;
    this.handler = null;
    this.closeHandler = null;
    this.isClosed = false;
    this.lastHost = '';
    this.lastPort = -1;
    this.lastHeader = null;
    this.src = { host: '', port: 0 };
    this.iov = [Buffer.alloc(0), new Uint8Array(0)];
    this.stats = { sent: 0, received: 0, sendDropped: 0, receiveDropped: 0 };
    this.onDatagram = (msg, rinfo) => this.deliver(msg, rinfo);
    udp.on('message', this.onDatagram);
    // Send failures arrive here (no per-datagram callback); they cost one datagram, not the association.
    udp.on('error', () => {
      this.stats.sendDropped++;
    });
    // The server has nothing to say on the control connection; read to notice its end.
    control.on('data', discard);
    control.on('error', () => this.shutdown(new OutboundError(OutboundErrorCode.REFUSED, 'UDP ASSOCIATE control connection failed', { outbound })));
    control.on('close', () => this.shutdown(null));
    control.on('end', () => control.end());
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Where datagrams are relayed (BND.ADDR/BND.PORT, with a wildcard address replaced by the server's). */
  get relay(): SocksAddress {
    return { host: this.relayHost, port: this.relayPort };
  }

  send(payload: Uint8Array, dst: Target): void {
    if (this.isClosed || payload.length > MAX_RELAYED_DATAGRAM || !isUsablePort(dst.port)) {
      this.stats.sendDropped++;
      return;
    }
    let header = this.lastHeader;
    if (header === null || dst.port !== this.lastPort || dst.host !== this.lastHost) {
      if (net.isIP(dst.host) === 0 && validateDomain(dst.host) !== null) {
        this.stats.sendDropped++;
        return;
      }
      header = encodeUdpHeader(dst.host, dst.port);
      this.lastHeader = header;
      this.lastHost = dst.host;
      this.lastPort = dst.port;
    }
    this.iov[0] = header;
    this.iov[1] = payload;
    // Gathered send: the header and payload leave in one datagram without a copy.
    try {
      this.udp.send(this.iov, this.relayPort, this.relayHost);
      this.stats.sent++;
    } catch {
      this.stats.sendDropped++;
    }
  }

  onMessage(cb: UdpMessageHandler): void {
    this.handler = cb;
  }

  onClose(cb: UdpCloseHandler): void {
    this.closeHandler = cb;
  }

  close(): void {
    this.shutdown(null);
  }

  private deliver(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    // Only the relay may speak for remote hosts; anything else is spoofable noise.
    if (rinfo.port !== this.relayPort || rinfo.address !== this.relayHost) {
      this.stats.receiveDropped++;
      return;
    }
    const d = parseUdpHeader(msg);
    if (d === null || d.frag !== 0) {
      this.stats.receiveDropped++;
      return;
    }
    this.stats.received++;
    if (this.handler === null) return;
    this.src.host = d.host;
    this.src.port = d.port;
    this.handler(msg.subarray(d.dataOffset), this.src);
  }

  private shutdown(err: Error | null): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.udp.off('message', this.onDatagram);
    try {
      this.udp.close();
    } catch {
      // already closed
    }
    this.control.destroy();
    const cb = this.closeHandler;
    this.closeHandler = null;
    if (cb !== null) cb(err);
  }
}

function discard(): void {}
