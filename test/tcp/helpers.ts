/** Fixture builders for deterministic TCP connection tests (explicit time, no sleeps). */
import { TCP_ACK, TCP_FIN, TCP_SYN, copyTcpRepr, newTcpRepr, type TcpRepr } from '../../src/wire/tcp.js';
import { TcpConnection, type CloseReason, type ConnectionOwner, type SegmentSink } from '../../src/tcp/connection.js';
import { defaultTcpConfig, type TcpConfig } from '../../src/tcp/config.js';

export interface Sent {
  repr: TcpRepr;
  data: Buffer;
}

/** Records everything a connection emits and everything it tells its owner. */
export class Recorder implements SegmentSink, ConnectionOwner {
  sent: Sent[] = [];
  established = 0;
  readable = 0;
  writable = 0;
  peerFin = 0;
  closed: CloseReason | null = null;

  emitSegment(_c: TcpConnection, repr: TcpRepr, data: Uint8Array | null, off: number, len: number): void {
    const copy = newTcpRepr();
    copyTcpRepr(repr, copy);
    this.sent.push({ repr: copy, data: Buffer.from(data ? data.subarray(off, off + len) : []) });
  }
  onEstablished(): void {
    this.established++;
  }
  onReadable(): void {
    this.readable++;
  }
  onWritable(): void {
    this.writable++;
  }
  onPeerFin(): void {
    this.peerFin++;
  }
  onClosed(_c: TcpConnection, reason: CloseReason): void {
    this.closed = reason;
  }
  /** Takes and clears what was sent. */
  take(): Sent[] {
    const s = this.sent;
    this.sent = [];
    return s;
  }
}

export function seg(fields: Partial<TcpRepr>): TcpRepr {
  const r = newTcpRepr();
  Object.assign(r, { window: 65535, ...fields });
  return r;
}

export function config(overrides: Partial<TcpConfig> = {}): TcpConfig {
  return { ...defaultTcpConfig(), recvBufferBytes: 65536, sendBufferBytes: 65536, ...overrides };
}

export const PEER_ISS = 1_000_000;
export const OUR_ISS = 5_000_000;

export interface Fixture {
  conn: TcpConnection;
  rec: Recorder;
  /** Peer's next sequence number (what we expect next). */
  peerSeq: number;
  now: number;
  /** Delivers a segment from the peer and dispatches; returns what we sent. */
  send(fields: Partial<TcpRepr>, data?: Uint8Array): Sent[];
  /** Advances the clock and dispatches when due; returns what we sent. */
  advance(ms: number): Sent[];
  dispatch(): Sent[];
}

/** A SYN-RECEIVED connection for a SYN carrying `synFields`; the SYN-ACK is dispatched. */
export function synReceived(cfg: TcpConfig = config(), synFields: Partial<TcpRepr> = {}, iss = OUR_ISS, peerIss = PEER_ISS): Fixture {
  const rec = new Recorder();
  const syn = seg({ seq: peerIss, flags: TCP_SYN, mss: 1460, ...synFields });
  const conn = TcpConnection.accept(cfg, 0, syn, { iss, mss: 1460 }, rec);
  const f: Fixture = {
    conn,
    rec,
    peerSeq: (peerIss + 1) >>> 0,
    now: 0,
    send(fields, data) {
      const payload = data ?? new Uint8Array(0);
      conn.process(f.now, seg({ seq: f.peerSeq, ack: conn.sndNxt, flags: TCP_ACK, ...fields }), payload, 0, payload.length);
      conn.dispatch(f.now, rec);
      return rec.take();
    },
    advance(ms) {
      const end = f.now + ms;
      while (true) {
        const at = conn.pollAt();
        if (at > end) break;
        f.now = Math.max(f.now, at);
        conn.dispatch(f.now, rec);
        if (conn.pollAt() <= f.now && conn.pollAt() !== 0) break;
        if (conn.pollAt() === 0) continue;
      }
      f.now = end;
      return rec.take();
    },
    dispatch() {
      conn.dispatch(f.now, rec);
      return rec.take();
    },
  };
  conn.dispatch(0, rec);
  return f;
}

/** An ESTABLISHED connection (handshake done, SYN-ACK consumed). */
export function established(cfg: TcpConfig = config(), synFields: Partial<TcpRepr> = {}, iss = OUR_ISS, peerIss = PEER_ISS): Fixture {
  const f = synReceived(cfg, synFields, iss, peerIss);
  f.rec.take();
  f.send({ flags: TCP_ACK, ack: (iss + 1) >>> 0 });
  return f;
}

/** We closed first and our FIN is out, not yet acknowledged: FIN-WAIT-1 (RFC 9293 3.6). `data` goes out before it. */
export function finWait1(cfg: TcpConfig = config(), synFields: Partial<TcpRepr> = {}, data?: Uint8Array): Fixture {
  const f = established(cfg, synFields);
  if (data) f.conn.send(data, 0, data.length);
  f.conn.shutdownWrite();
  f.dispatch();
  return f;
}

/** Our FIN was acknowledged: FIN-WAIT-2, the peer may still send. */
export function finWait2(cfg: TcpConfig = config(), synFields: Partial<TcpRepr> = {}): Fixture {
  const f = finWait1(cfg, synFields);
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });
  return f;
}

/** Both FINs exchanged and acknowledged, ours first: TIME-WAIT. */
export function timeWait(cfg: TcpConfig = config(), synFields: Partial<TcpRepr> = {}): Fixture {
  const f = finWait2(cfg, synFields);
  f.send({ flags: TCP_FIN | TCP_ACK });
  f.peerSeq = (f.peerSeq + 1) >>> 0;
  return f;
}

/** Segment size of the loss-recovery tests (the peer's MSS, no options). */
export const MSS = 1460;

/** Queues `n` bytes of a pattern for sending. */
export function queue(f: Fixture, n: number): void {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = (i * 7) & 0xff;
  f.conn.send(buf, 0, n);
}

/** An ACK from the peer with SACK blocks given as [from, to) segment indexes past `base`. */
export function ackWith(f: Fixture, base: number, ackSegs: number, blocks: [number, number][]): Sent[] {
  const left = new Uint32Array(4);
  const right = new Uint32Array(4);
  blocks.forEach(([l, r], i) => {
    left[i] = (base + l * MSS) >>> 0;
    right[i] = (base + r * MSS) >>> 0;
  });
  return f.send({ flags: TCP_ACK, ack: (base + ackSegs * MSS) >>> 0, sackCount: blocks.length, sackLeft: left, sackRight: right });
}

/** The segments that carry data. */
export const dataOf = (out: Sent[]): Sent[] => out.filter((s) => s.data.length > 0);
/** Which MSS-sized segment past `base` a sent segment starts. */
export const segIndex = (s: Sent, base: number): number => (s.repr.seq - base) / MSS;

/** Established, the handshake having measured `rtt` ms (RACK's min_rtt); SACK unless told otherwise. */
export function withRtt(rtt: number, sack = true): Fixture {
  const f = synReceived(config({ initialCwndSegments: 10 }), { sackPermitted: sack });
  f.rec.take();
  f.now = rtt;
  f.send({ flags: TCP_ACK, ack: (OUR_ISS + 1) >>> 0 });
  return f;
}
