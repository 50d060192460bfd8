/**
 * UDP for gateway mode tproxy. nftables TPROXYs LAN UDP to one
 * IP_TRANSPARENT socket ([::]:PORT, dual-stack) that asks for each
 * datagram's original destination (IP_RECVORIGDSTADDR); the addon's batched
 * reader hands them over with both addresses. Datagrams are grouped into
 * sessions by (client, original destination) and given to the engine like
 * the stack's UDP sessions. Replies must come from the original
 * destination, so each session sends through its own transparent socket
 * bound to that (non-local) address and port.
 *
 * A datagram from another source to a session's upstream mapping reaches
 * the client through a sibling session (`sibling`, src/udp/nat.ts): its
 * reply socket is bound transparently to that true source, so the client
 * sees the real sender's address and port.
 *
 * Bounded: at most `maxSessions` sessions (config gateway.tproxyUdpSessions).
 * A full table evicts the oldest session that never got a reply (`evicted`),
 * as the TUN's table does (src/udp/unreplied-list.ts), so a one-way flood
 * cannot lock clients out for an idle timeout; only when every session has
 * been answered is a datagram that would open one more dropped and counted
 * (`full`). So are datagrams to or from port 0 or a non-unicast address (`badTarget`:
 * the reply socket could not be bound or connected to them) and datagrams
 * whose reply socket cannot be made (`socketErrors`). None of them reaches
 * the engine or throws out of the reader.
 *
 * A session refused by policy is answered as behind the TUN: an ICMP
 * destination unreachable from the original destination, quoting the
 * client's first datagram (rebuilt from the addresses, ports and payload;
 * the kernel hands us no IP header). We have no raw socket here, so the
 * engine writes it into the TUN (`unreachable` option), and the kernel
 * forwards it to the client like any packet from the TUN; that needs what
 * gateway mode tun needs anyway: reverse-path filtering loose or off for
 * the TUN (net.ipv4.conf.*.rp_filter 0 or 2).
 */
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import { loadNative } from '../link/native.js';
import { readRecordLength, recordSize } from '../link/records.js';
import { FlowTable, type FlowKey } from '../ip/flow-table.js';
import { addressView, copyAddresses, writeAddressText, type FlowAddressBytes } from '../ip/flow-addresses.js';
import { IPPROTO_UDP, IPV4_DST, IPV4_HEADER_LEN, IPV4_SRC, emitIpv4, formatIpv4, newIpv4EmitRepr, readIpv4Addr } from '../wire/ipv4.js';
import { IPV6_DST, IPV6_HEADER_LEN, IPV6_SRC, NH_UDP, emitIpv6, formatIpv6, newIpv6EmitRepr } from '../wire/ipv6.js';
import { sessionIdleMs } from './sessions.js';
import { UnrepliedList } from './unreplied-list.js';
import { UDP_HEADER_LEN, emitUdp } from '../wire/udp.js';
import { fold, pseudoHeaderSumV4, pseudoHeaderSumV6, sum16 } from '../wire/checksum.js';
import { isUnicastAt, isUsablePort } from '../wire/address-class.js';
import type { Logger } from '../engine/logger.js';
import type { UnreachableKind } from '../ip/icmp.js';

/**
 * A record from the addon's udp-origdst reader: family (u8) at 0, source
 * and original destination ports (u16, network order) at 2 and 4, the
 * source address at 8 and the original destination at 24 (4 or 16 bytes
 * each), the payload from 40.
 */
const REC_FAMILY = 0;
const REC_SRC_PORT = 2;
const REC_DST_PORT = 4;
const REC_SRC = 8;
const REC_DST = 24;
const HEADER = 40;
/** RFC 1812 4.3.2.3: an ICMP error quotes as much as fits in 576 bytes. */
const QUOTE_MAX = 548;

/** Writes an ICMP destination unreachable (from quote's destination to its source) toward the client. */
export type UnreachableSender = (family: 4 | 6, kind: UnreachableKind, quote: Uint8Array) => void;

export interface TproxyUdpCounters {
  /** Sessions opened by a client's first datagram (siblings not counted). */
  opened: number;
  /** Datagrams dropped because gateway.tproxyUdpSessions sessions were open, all of them answered. */
  full: number;
  /** Never-answered sessions ended to make room for a new one in a full table. */
  evicted: number;
  /** Datagrams to or from port 0 or a non-unicast address. */
  badTarget: number;
  /** Datagrams without an original destination. */
  noOrigDst: number;
  /** Datagrams whose session's reply socket could not be made. */
  socketErrors: number;
  /** Sessions refused with an ICMP unreachable. */
  unreachableSent: number;
  /** Datagrams a reply socket took from a peer other than its client, handed on to their own sessions. */
  stray: number;
}

export function newTproxyUdpCounters(): TproxyUdpCounters {
  return { opened: 0, full: 0, evicted: 0, badTarget: 0, noOrigDst: 0, socketErrors: 0, unreachableSent: 0, stray: 0 };
}

export interface TproxyUdpOptions {
  /** Idle timeout per session (udp.idleTimeout; at most DNS_IDLE_MS for port 53, RFC 4787 REQ-5a). Default 300 s. */
  idleMs?: number;
  /** Cap on concurrent sessions (gateway.tproxyUdpSessions). Default 16384. */
  maxSessions?: number;
  /** How a refused session's ICMP error reaches the client; without it the session just ends. */
  unreachable?: UnreachableSender;
  /** Counted into (the engine's counters, so they appear in its logs). */
  counters?: TproxyUdpCounters;
  /** SO_MARK of the reply sockets (route.mark under route.auto, so replies to the LAN never enter the TUN). */
  mark?: number;
}

const addressScratch = new Uint8Array(16);

/** Whether `text` (as Node formats an address) is the address `bytes` holds (4 or 16 bytes, as remoteBytes). */
function sameAddress(family: 4 | 6, text: string, bytes: Uint8Array): boolean {
  if (!writeAddressText(family, text, addressScratch, 0)) return false;
  for (let i = 0; i < bytes.length; i++) if (addressScratch[i] !== bytes[i]) return false;
  return true;
}

/**
 * The IP and UDP headers of the client's datagram, and its first bytes,
 * as an ICMP error quotes them (RFC 792, RFC 4443 3.1). Once per session.
 */
export function buildUdpQuote(family: 4 | 6, bytes: Uint8Array, srcAt: number, dstAt: number, srcPort: number, dstPort: number, payload: Uint8Array): Uint8Array {
  const ipLen = family === 4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN;
  const udpLen = UDP_HEADER_LEN + payload.length;
  const quoted = payload.length < QUOTE_MAX - ipLen ? payload.length : QUOTE_MAX - ipLen;
  const q = new Uint8Array(ipLen + UDP_HEADER_LEN + quoted);
  if (family === 4) {
    const ip = newIpv4EmitRepr();
    ip.src = readIpv4Addr(bytes, srcAt);
    ip.dst = readIpv4Addr(bytes, dstAt);
    ip.protocol = NH_UDP;
    ip.dontFragment = false;
    ip.payloadLength = udpLen;
    emitIpv4(ip, q, 0);
  } else {
    const ip = newIpv6EmitRepr();
    ip.src = bytes.subarray(srcAt, srcAt + 16);
    ip.dst = bytes.subarray(dstAt, dstAt + 16);
    ip.nextHeader = NH_UDP;
    ip.payloadLength = udpLen;
    emitIpv6(ip, q, 0);
  }
  emitUdp(srcPort, dstPort, payload.length, q, ipLen);
  q.set(payload.subarray(0, quoted), ipLen + UDP_HEADER_LEN);
  // The UDP checksum over the whole datagram, not only the quoted part
  // (RFC 768; RFC 8200 8.1 makes it mandatory for IPv6).
  let sum = family === 4 ? pseudoHeaderSumV4(q, IPV4_SRC, IPV4_DST, NH_UDP, udpLen) : pseudoHeaderSumV6(q, IPV6_SRC, IPV6_DST, NH_UDP, udpLen);
  sum = sum16(q, ipLen, UDP_HEADER_LEN, sum);
  sum = sum16(payload, 0, payload.length, sum);
  let c = ~fold(sum) & 0xffff;
  if (c === 0) c = 0xffff;
  q[ipLen + 6] = c >>> 8;
  q[ipLen + 7] = c & 0xff;
  return q;
}

/** What a session tells its table: that it got its first reply, that it ended. */
interface TproxyUdpTable {
  replied(s: TproxyUdpSession): void;
  forget(s: TproxyUdpSession): void;
}

interface TproxyUdpSessionEvents {
  message: [data: Buffer];
  close: [];
}

export class TproxyUdpSession extends EventEmitter<TproxyUdpSessionEvents> implements FlowKey, FlowAddressBytes {
  // FlowKey: the session table is keyed by the datagram's address bytes, no text per datagram.
  readonly protocol = IPPROTO_UDP;
  readonly srcAddr = new Uint8Array(16);
  readonly dstAddr = new Uint8Array(16);
  /** srcAddr / dstAddr as the engine reads them (4 bytes for IPv4): the addresses never go back from text to bytes. */
  readonly remoteBytes: Uint8Array;
  readonly localBytes: Uint8Array;
  src4 = 0;
  dst4 = 0;
  readonly srcPort: number;
  readonly dstPort: number;
  nextInBucket: FlowKey | null = null;
  flowHash = 0;
  private readonly queued: Buffer[] = [];
  private closed = false;
  private connected = false;
  /** Replies produced before the reply socket finished binding and connecting (rare: an upstream round trip is slower). */
  private readonly early: Uint8Array[] = [];
  private idle: NodeJS.Timeout;
  /** Opened by sibling() for a datagram from a new source, not by the client. */
  fromRemote = false;
  /** False until the client is sent a datagram: a full table may evict only such a session (src/udp/unreplied-list.ts). */
  replied = false;
  /** Ended by a full table to make room for a new session. */
  evicted = false;
  /** Links in the table's oldest-first list of unreplied sessions; owned by the table. */
  olderUnreplied: TproxyUdpSession | null = null;
  newerUnreplied: TproxyUdpSession | null = null;
  /** @internal set by the reader: hands on a datagram of another client the reply socket took. */
  stray: ((s: TproxyUdpSession, msg: Buffer, from: dgram.RemoteInfo) => void) | null = null;
  /** @internal set by the reader: opens the session from another remote endpoint to this client. */
  opener: ((s: TproxyUdpSession, host: string, port: number) => TproxyUdpSession | null) | null = null;

  constructor(
    readonly family: 4 | 6,
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly localAddress: string,
    readonly localPort: number,
    private readonly reply: dgram.Socket,
    idleMs: number,
    private readonly table: TproxyUdpTable,
    /** The first datagram as an ICMP error quotes it, and how to send one. */
    private readonly quote: Uint8Array | null = null,
    private readonly sendUnreachable: UnreachableSender | null = null,
    private readonly counters: TproxyUdpCounters | null = null,
  ) {
    super();
    this.srcPort = remotePort;
    this.dstPort = localPort;
    this.remoteBytes = addressView(family, this.srcAddr);
    this.localBytes = addressView(family, this.dstAddr);
    this.idle = setTimeout(() => this.close(), idleMs).unref();
    // Connected to the client, the reply socket is the exact 4-tuple match
    // for the session's later datagrams, which the kernel then delivers to
    // it directly (TPROXY's socket lookup prefers it to the listener).
    // Until that connect it is bound to the original destination but not
    // connected, and a UDP lookup would hand it any client's datagram to
    // that destination; the gateway's nftables table keeps LAN UDP out of
    // its `socket` rule for that reason (src/system/gateway.ts). Should such
    // a datagram reach it all the same, it is another client's: handed on
    // to its own session (`stray`), never taken for this one's.
    reply.on('message', (msg, rinfo) => {
      if (rinfo.port === remotePort && (rinfo.address === remoteAddress || sameAddress(family, rinfo.address, this.remoteBytes))) this.deliver(msg);
      else if (this.stray !== null) this.stray(this, msg, rinfo);
    });
    reply.connect(remotePort, remoteAddress, () => {
      this.connected = true;
      for (const d of this.early.splice(0)) if (!this.closed) this.reply.send(d);
    });
  }

  /** @internal a datagram from the client */
  deliver(data: Buffer): void {
    this.idle.refresh();
    if (this.listenerCount('message') === 0) {
      if (this.queued.length < 64) this.queued.push(data);
      return;
    }
    this.emit('message', data);
  }

  drainQueued(): void {
    while (this.queued.length > 0 && this.listenerCount('message') > 0) this.emit('message', this.queued.shift()!);
  }

  /** To the client, from the original destination. */
  send(data: Uint8Array): boolean {
    if (this.closed) return false;
    this.idle.refresh();
    if (!this.replied) {
      this.replied = true;
      this.table.replied(this);
    }
    // Only a connected socket sends: a send queued behind the bind with an
    // address would throw once the queued connect has completed.
    if (this.connected) this.reply.send(data);
    else if (this.early.length < 64) this.early.push(Uint8Array.from(data));
    return true;
  }

  /**
   * Refuses the session as the TUN path does: an ICMP destination
   * unreachable quoting its first datagram, from the original destination
   * (through the TUN, see the header), then close.
   */
  unreachable(kind: UnreachableKind = 'port'): void {
    if (this.closed) return;
    if (this.quote !== null && this.sendUnreachable !== null) {
      this.sendUnreachable(this.family, kind, this.quote);
      if (this.counters !== null) this.counters.unreachableSent++;
    }
    this.close();
  }

  /**
   * The session between this client and `host`:`port` (an IP literal of
   * this family), opened if absent with a reply socket bound transparently
   * to that endpoint: how a datagram from another source reaches the
   * client with its true source (src/udp/nat.ts). Null when the address
   * is unusable, the table is full or the socket cannot be made.
   */
  sibling(host: string, port: number): TproxyUdpSession | null {
    if (this.closed || this.opener === null) return null;
    return this.opener(this, host, port);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idle);
    try {
      this.reply.close();
    } catch {
      // already closed
    }
    this.table.forget(this);
    this.emit('close');
  }
}

export interface TproxyUdp {
  readonly sessions: number;
  close(): void;
}

/** Opens the transparent UDP socket on [::]:port and starts handing sessions to `onSession`. */
export async function startTproxyUdp(port: number, onSession: (s: TproxyUdpSession) => void, log: Logger, options: TproxyUdpOptions = {}): Promise<TproxyUdp> {
  const idleMs = options.idleMs ?? 300_000;
  const maxSessions = options.maxSessions ?? 16_384;
  const replyMark = options.mark;
  const counters = options.counters ?? newTproxyUdpCounters();
  const unreachable = options.unreachable ?? null;
  const native = loadNative();
  const fd = native.createSocket({ family: 6, type: 'udp', transparent: true, reuseAddr: true, recvOrigDst: true, bind: { address: '::', port } });
  const rx = new ArrayBuffer(1 << 20);
  const bytes = new Uint8Array(rx);
  const sessions = new FlowTable<TproxyUdpSession>();
  const unreplied = new UnrepliedList<TproxyUdpSession>();
  let warnedFull = false;
  const table: TproxyUdpTable = {
    replied: (x) => unreplied.remove(x),
    forget: (x) => {
      sessions.remove(x);
      if (!x.replied) unreplied.remove(x);
    },
  };
  /** Room for one more session: true when there is, evicting the oldest unanswered one if it must. */
  const makeRoom = (): boolean => {
    if (sessions.size < maxSessions) return true;
    const victim = unreplied.oldest;
    if (victim === null) return false;
    counters.evicted++;
    victim.evicted = true;
    victim.close();
    return true;
  };

  const onBatch = (count: number, _end: number): void => {
    if (count < 0) {
      log.error({ errno: -count }, 'tproxy UDP socket failed');
      return;
    }
    let off = 0;
    for (let i = 0; i < count; i++) {
      const len = readRecordLength(bytes, off);
      const at = off + 4;
      off += recordSize(len);
      handleRecord(bytes, at, len);
    }
  };

  /** One datagram as a record (the reader's layout, above) in `b` at `at`: to its session, opened if new. */
  const handleRecord = (b: Uint8Array, at: number, len: number): void => {
    const family = b[at + REC_FAMILY];
    if ((family !== 4 && family !== 6) || len < HEADER) {
      counters.noOrigDst++;
      return;
    }
    const srcPort = (b[at + REC_SRC_PORT]! << 8) | b[at + REC_SRC_PORT + 1]!;
    const dstPort = (b[at + REC_DST_PORT]! << 8) | b[at + REC_DST_PORT + 1]!;
    let s = sessions.lookup(family, IPPROTO_UDP, b, at + REC_SRC, at + REC_DST, srcPort, dstPort);
    if (s === null) {
      s = open(b, family, at, len, srcPort, dstPort);
      if (s === null) return;
    }
    // The application's own copy: the receive buffer is reused by the next batch.
    try {
      s.deliver(Buffer.from(b.subarray(at + HEADER, at + len)));
    } catch (err) {
      log.error({ err: (err as Error).message, dstPort }, 'tproxy UDP datagram handler threw; session ended');
      s.close();
    }
  };

  /**
   * A datagram a session's reply socket took from another client (see the
   * session's message handler): rebuilt as a record, with the reply
   * socket's bound address (the original destination) as its destination,
   * and handled as if the listener had read it.
   */
  const strayRecord = new Uint8Array(HEADER + 65_536);
  const onStray = (of: TproxyUdpSession, msg: Buffer, from: dgram.RemoteInfo): void => {
    counters.stray++;
    const family = of.family;
    strayRecord.fill(0, 0, HEADER);
    strayRecord[REC_FAMILY] = family;
    strayRecord[REC_SRC_PORT] = from.port >>> 8;
    strayRecord[REC_SRC_PORT + 1] = from.port & 0xff;
    strayRecord[REC_DST_PORT] = of.localPort >>> 8;
    strayRecord[REC_DST_PORT + 1] = of.localPort & 0xff;
    if (!writeAddressText(family, from.address, strayRecord, REC_SRC) || msg.length > strayRecord.length - HEADER) {
      counters.badTarget++;
      return;
    }
    strayRecord.set(of.localBytes, REC_DST);
    strayRecord.set(msg, HEADER);
    handleRecord(strayRecord, 0, HEADER + msg.length);
  };

  /** The first datagram of a new (client, original destination): checks, the reply socket, the session. */
  const open = (bytes: Uint8Array, family: 4 | 6, at: number, len: number, srcPort: number, dstPort: number): TproxyUdpSession | null => {
    // Port 0 cannot be bound as the reply's source nor connected to
    // (dgram throws ERR_SOCKET_BAD_PORT); nothing can be sent from or to a
    // non-unicast address. Port 0 as the destination gets the answer a
    // host without that port gives: ICMP port unreachable.
    const unicast = isUnicastAt(family, bytes, at + REC_SRC) && isUnicastAt(family, bytes, at + REC_DST);
    if (dstPort === 0 || srcPort === 0 || !unicast) {
      counters.badTarget++;
      if (dstPort === 0 && srcPort !== 0 && unreachable !== null && unicast) {
        unreachable(family, 'port', buildUdpQuote(family, bytes, at + REC_SRC, at + REC_DST, srcPort, dstPort, bytes.subarray(at + HEADER, at + len)));
        counters.unreachableSent++;
      }
      return null;
    }
    if (!makeRoom()) {
      counters.full++;
      if (!warnedFull) {
        warnedFull = true;
        log.warn({ sessions: sessions.size, field: 'gateway.tproxyUdpSessions' }, 'tproxy UDP session table full of answered sessions; new sessions are dropped until some end');
      }
      return null;
    }
    warnedFull = false;
    // Text only once per session: for the socket calls and the engine.
    const src = family === 4 ? formatIpv4(bytes, at + REC_SRC) : formatIpv6(bytes, at + REC_SRC);
    const dst = family === 4 ? formatIpv4(bytes, at + REC_DST) : formatIpv6(bytes, at + REC_DST);
    const reply = replySocket(family, dst, dstPort);
    if (reply === null) return null;
    const quote = unreachable !== null ? buildUdpQuote(family, bytes, at + REC_SRC, at + REC_DST, srcPort, dstPort, bytes.subarray(at + HEADER, at + len)) : null;
    const s = new TproxyUdpSession(family, src, srcPort, dst, dstPort, reply, sessionIdleMs(idleMs, dstPort), table, quote, unreachable, counters);
    s.opener = openSibling;
    s.stray = onStray;
    copyAddresses(family, bytes, at + REC_SRC, at + REC_DST, s);
    sessions.insert(s);
    unreplied.push(s);
    counters.opened++;
    try {
      onSession(s);
    } catch (err) {
      // The engine guards its own handlers; this is the reader's backstop.
      counters.socketErrors++;
      log.error({ err: (err as Error).message, dst, dstPort }, 'tproxy UDP session handler threw; session ended');
      s.close();
      return null;
    }
    return s;
  };
  /** A socket sending from `address`:`port` (not local: IP_TRANSPARENT), or null counted. */
  const replySocket = (family: 4 | 6, address: string, port: number): dgram.Socket | null => {
    try {
      const replyFd = native.createSocket({ family, type: 'udp', transparent: true, reuseAddr: true, bind: { address, port }, ...(replyMark !== undefined ? { mark: replyMark } : {}) });
      const reply = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6', reuseAddr: true });
      reply.on('error', (err) => log.debug({ err: err.message, address }, 'tproxy UDP reply socket error'));
      reply.bind({ fd: replyFd });
      return reply;
    } catch (err) {
      counters.socketErrors++;
      log.debug({ err: (err as Error).message, address, port }, 'tproxy UDP reply socket failed; datagram dropped');
      return null;
    }
  };

  /** Client address then remote address, for a sibling's table lookup. */
  const scratch = new Uint8Array(32);
  const openSibling = (of: TproxyUdpSession, host: string, port: number): TproxyUdpSession | null => {
    const family = of.family;
    const alen = family === 4 ? 4 : 16;
    scratch.set(family === 4 ? of.srcAddr.subarray(12, 16) : of.srcAddr, 0);
    if (!writeAddressText(family, host, scratch, alen) || !isUsablePort(port) || !isUnicastAt(family, scratch, alen)) {
      counters.badTarget++;
      return null;
    }
    const found = sessions.lookup(family, IPPROTO_UDP, scratch, 0, alen, of.srcPort, port);
    if (found !== null) return found;
    // A sibling never evicts: a datagram from outside must not push out a client's session.
    if (sessions.size >= maxSessions) {
      counters.full++;
      return null;
    }
    const reply = replySocket(family, host, port);
    if (reply === null) return null;
    const s = new TproxyUdpSession(family, of.remoteAddress, of.remotePort, host, port, reply, sessionIdleMs(idleMs, port), table, null, null, counters);
    s.opener = openSibling;
    s.stray = onStray;
    s.fromRemote = true;
    // Opened to carry a datagram to the client: answered from the start, never evicted.
    s.replied = true;
    copyAddresses(family, scratch, 0, alen, s);
    sessions.insert(s);
    return s;
  };

  const handle = native.readerStart(fd, rx, onBatch, 256, 'udp-origdst');
  log.info({ address: '[::]', port, protocol: 'udp' }, 'tproxy listening');
  return {
    get sessions() {
      return sessions.size;
    },
    close(): void {
      native.readerStop(handle);
      native.closeFd(fd);
      for (const s of [...sessions.values()]) s.close();
      log.info({ ...counters }, 'tproxy UDP counters');
    },
  };
}
