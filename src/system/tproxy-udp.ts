/**
 * UDP for gateway mode tproxy. nftables TPROXYs LAN UDP to one
 * IP_TRANSPARENT socket ([::]:PORT, dual-stack) that asks for each
 * datagram's original destination (IP_RECVORIGDSTADDR); the addon's batched
 * reader hands them over with both addresses. Datagrams are grouped into
 * sessions by (client, original destination) and given to the engine like
 * the stack's UDP sessions. Replies must come from the original
 * destination, so each session sends through its own transparent socket
 * bound to that (non-local) address and port.
 */
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import { loadNative } from '../link/native.js';
import { formatIpv4 } from '../wire/ipv4.js';
import { formatIpv6 } from '../wire/ipv6.js';
import type { Logger } from '../engine/logger.js';

const HEADER = 40;

interface TproxyUdpSessionEvents {
  message: [data: Buffer];
  close: [];
}

export class TproxyUdpSession extends EventEmitter<TproxyUdpSessionEvents> {
  private readonly queued: Buffer[] = [];
  private closed = false;
  private connected = false;
  /** Replies produced before the reply socket finished binding and connecting (rare: an upstream round trip is slower). */
  private readonly early: Uint8Array[] = [];
  private idle: NodeJS.Timeout;

  constructor(
    readonly family: 4 | 6,
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly localAddress: string,
    readonly localPort: number,
    private readonly reply: dgram.Socket,
    idleMs: number,
    private readonly forget: (s: TproxyUdpSession) => void,
  ) {
    super();
    this.idle = setTimeout(() => this.close(), idleMs).unref();
    // Connected to the client, the reply socket is the exact 4-tuple match
    // for the session's later datagrams, which the kernel then delivers to
    // it directly (TPROXY's socket lookup prefers it to the listener).
    reply.on('message', (msg) => this.deliver(msg));
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
    // Only a connected socket sends: a send queued behind the bind with an
    // address would throw once the queued connect has completed.
    if (this.connected) this.reply.send(data);
    else if (this.early.length < 64) this.early.push(Uint8Array.from(data));
    return true;
  }

  /** No raw socket here to send ICMP from the original destination: the session just ends. */
  unreachable(): void {
    this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idle);
    this.reply.close();
    this.forget(this);
    this.emit('close');
  }
}

export interface TproxyUdp {
  readonly sessions: number;
  close(): void;
}

/** Opens the transparent UDP socket on [::]:port and starts handing sessions to `onSession`. */
export async function startTproxyUdp(port: number, onSession: (s: TproxyUdpSession) => void, log: Logger, idleMs = 60_000): Promise<TproxyUdp> {
  const native = loadNative();
  const fd = native.createSocket({ family: 6, type: 'udp', transparent: true, reuseAddr: true, recvOrigDst: true, bind: { address: '::', port } });
  const rx = new ArrayBuffer(1 << 20);
  const bytes = new Uint8Array(rx);
  const view = new DataView(rx);
  const sessions = new Map<string, TproxyUdpSession>();
  let dropped = 0;

  const onBatch = (count: number, _end: number): void => {
    if (count < 0) {
      log.error({ errno: -count }, 'tproxy UDP socket failed');
      return;
    }
    let off = 0;
    for (let i = 0; i < count; i++) {
      const len = view.getUint32(off, true);
      const at = off + 4;
      off += 4 + ((len + 3) & ~3);
      const family = bytes[at];
      if ((family !== 4 && family !== 6) || len < HEADER) {
        dropped++;
        continue;
      }
      const srcPort = view.getUint16(at + 2, false);
      const dstPort = view.getUint16(at + 4, false);
      const src = family === 4 ? formatIpv4(bytes, at + 8) : formatIpv6(bytes, at + 8);
      const dst = family === 4 ? formatIpv4(bytes, at + 24) : formatIpv6(bytes, at + 24);
      const key = `${src}|${srcPort}|${dst}|${dstPort}`;
      let s = sessions.get(key);
      if (s === undefined) {
        const replyFd = native.createSocket({ family, type: 'udp', transparent: true, reuseAddr: true, bind: { address: dst, port: dstPort } });
        const reply = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6', reuseAddr: true });
        reply.on('error', (err) => log.debug({ err: err.message, dst }, 'tproxy UDP reply socket error'));
        reply.bind({ fd: replyFd });
        s = new TproxyUdpSession(family, src, srcPort, dst, dstPort, reply, idleMs, (x) => sessions.delete(`${x.remoteAddress}|${x.remotePort}|${x.localAddress}|${x.localPort}`));
        sessions.set(key, s);
        onSession(s);
      }
      // The application's own copy: the receive buffer is reused by the next batch.
      s.deliver(Buffer.from(bytes.subarray(at + HEADER, at + len)));
    }
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
      if (dropped > 0) log.info({ dropped }, 'tproxy UDP datagrams without an original destination');
    },
  };
}
