/**
 * A seeded network simulation: two sans-IO connections over a link that
 * loses, duplicates and reorders segments in both directions. Every byte
 * must arrive intact and in order, and both sides must close cleanly.
 */
import t from 'tap';
import { TCP_SYN, copyTcpRepr, newTcpRepr, type TcpRepr } from '../../src/wire/tcp.js';
import { TcpConnection, type ConnectionOwner, type SegmentSink } from '../../src/tcp/connection.js';
import { config } from './helpers.js';

interface InFlight {
  at: number;
  to: 0 | 1;
  repr: TcpRepr;
  data: Uint8Array;
}

class Rng {
  constructor(private s: number) {}
  next(): number {
    this.s ^= this.s << 13;
    this.s ^= this.s >>> 17;
    this.s ^= this.s << 5;
    return (this.s >>> 0) / 4294967296;
  }
}

interface Side extends ConnectionOwner, SegmentSink {
  conn: TcpConnection | null;
  sent: number;
  received: number;
  mismatch: number;
  finSent: boolean;
  closed: string | null;
}

function describe(c: TcpConnection | null): string {
  if (c === null) return 'none';
  const o = c as unknown as Record<string, unknown>;
  const keys = ['state', 'ackNow', 'challengePending', 'inRecovery', 'sentBytes', 'sndWnd', 'finQueued', 'finSent', 'timerKind', 'timerAt'];
  return `${keys.map((k) => `${k}=${String(o[k])}`).join(' ')} ring=${c.sendRing.length} cwnd=${c.cc.cwnd} pollAt=${c.pollAt()}`;
}

function pattern(side: number, i: number): number {
  return (i * 131 + side * 17 + (i >>> 9)) & 0xff;
}

export interface SimOptions {
  /**
   * TSO: the largest payload one emitted segment may carry (the connection's
   * maxSegmentBytes). The simulated wire cuts it into MSS pieces, as the
   * kernel does with a GSO super-packet, and loses each piece on its own.
   */
  tso?: number;
  /** Send and receive buffers (default 64 KiB). */
  bufferBytes?: number;
  /** One-way base latency in ms (default 5). */
  latency?: number;
}

export function simulate(seed: number, bytes: number, loss: number, dup = 0.02, jitter = 15, opts: SimOptions = {}): { a: Side; b: Side; now: number; delivered: number; dropped: number } {
  const rng = new Rng(seed);
  const queue: InFlight[] = [];
  let now = 0;
  let dropped = 0;
  let delivered = 0;
  const buffers = opts.bufferBytes ?? 64 * 1024;
  const latency = opts.latency ?? 5;
  const cfg = config({ recvBufferBytes: buffers, sendBufferBytes: buffers, timeWaitMs: 500, minRtoMs: 50, initialRtoMs: 300 });
  const wire = (index: 0 | 1, repr: TcpRepr, data: Uint8Array | null, off: number, len: number): void => {
    const roll = rng.next();
    if (roll < loss) {
      dropped++;
      return;
    }
    const copies = roll < loss + dup ? 2 : 1;
    for (let k = 0; k < copies; k++) {
      const r = newTcpRepr();
      copyTcpRepr(repr, r);
      // Base latency plus up to `jitter` ms: reordering.
      queue.push({ at: now + latency + rng.next() * jitter, to: (1 - index) as 0 | 1, repr: r, data: data ? data.slice(off, off + len) : new Uint8Array(0) });
    }
  };
  const piece = newTcpRepr();
  const makeSide = (index: 0 | 1): Side => ({
    conn: null,
    sent: 0,
    received: 0,
    mismatch: 0,
    finSent: false,
    closed: null,
    onEstablished() {},
    onReadable() {},
    onWritable() {},
    onPeerFin() {},
    onClosed(_c, reason) {
      this.closed = reason;
    },
    emitSegment(c, repr, data, off, len) {
      const mss = c.sendMss;
      if (len <= mss) return wire(index, repr, data, off, len);
      // A TSO super-segment: the wire carries MSS pieces, PSH and FIN on the last only (Linux tcp_gso_segment).
      for (let at = 0; at < len; at += mss) {
        copyTcpRepr(repr, piece);
        piece.seq = (repr.seq + at) >>> 0;
        const n = Math.min(mss, len - at);
        if (at + n < len) piece.flags &= ~(0x08 | 0x01);
        wire(index, piece, data, off + at, n);
      }
    },
  });
  const sides = [makeSide(0), makeSide(1)] as const;
  sides[0].conn = TcpConnection.connect(cfg, 0, { iss: (seed * 7919) >>> 0, mss: 1460 }, sides[0]);
  if (opts.tso !== undefined) sides[0].conn.useTso(opts.tso);
  const chunk = new Uint8Array(16384);
  const readBuf = new Uint8Array(65536);

  const pump = (i: 0 | 1): void => {
    const s = sides[i];
    const c = s.conn;
    if (c === null) return;
    if (c.state === 'ESTABLISHED' || c.state === 'CLOSE-WAIT') {
      while (s.sent < bytes) {
        const n = Math.min(chunk.length, bytes - s.sent);
        for (let k = 0; k < n; k++) chunk[k] = pattern(i, s.sent + k);
        const took = c.send(chunk, 0, n);
        if (took === 0) break;
        s.sent += took;
      }
      if (s.sent === bytes && !s.finSent) {
        c.shutdownWrite();
        s.finSent = true;
      }
    }
    let got: number;
    while ((got = c.recv(readBuf, 0, readBuf.length)) > 0) {
      for (let k = 0; k < got; k++) if (readBuf[k] !== pattern(1 - i, s.received + k)) s.mismatch++;
      s.received += got;
    }
  };

  let stalled = 0;
  let lastNow = -1;
  for (let steps = 0; steps < 2_000_000; steps++) {
    // A connection that keeps asking for dispatch at the same instant
    // without making progress is a livelock: fail instead of spinning.
    if (now === lastNow) {
      if (++stalled > 100_000) throw new Error(`livelock at t=${now} ms: A ${describe(sides[0].conn)} B ${describe(sides[1].conn)}`);
    } else {
      stalled = 0;
      lastNow = now;
    }
    for (const i of [0, 1] as const) {
      const c = sides[i].conn;
      if (c !== null && c.pollAt() <= now) {
        c.dispatch(now, sides[i]);
        pump(i);
        c.dispatch(now, sides[i]);
      }
    }
    let next = Infinity;
    let nextIndex = -1;
    for (let k = 0; k < queue.length; k++) {
      if (queue[k]!.at < next) {
        next = queue[k]!.at;
        nextIndex = k;
      }
    }
    const polls = Math.min(sides[0].conn?.pollAt() ?? Infinity, sides[1].conn?.pollAt() ?? Infinity);
    if (next === Infinity && polls === Infinity) break;
    if (next <= polls) {
      now = Math.max(now, next);
      const p = queue.splice(nextIndex, 1)[0]!;
      delivered++;
      const s = sides[p.to];
      if (s.conn === null) {
        if ((p.repr.flags & TCP_SYN) === 0) continue;
        s.conn = TcpConnection.accept(cfg, now, p.repr, { iss: (seed * 104729) >>> 0, mss: 1460 }, s);
        if (opts.tso !== undefined) s.conn.useTso(opts.tso);
      } else {
        s.conn.process(now, p.repr, p.data, 0, p.data.length);
      }
      pump(p.to);
      s.conn.dispatch(now, s);
    } else {
      now = Math.max(now, polls);
    }
    if (now > 3_600_000) break;
  }
  return { a: sides[0], b: sides[1], now, delivered, dropped };
}

if (process.env.SIM_MANUAL === undefined) for (const seed of [1, 2, 3, 4]) {
  t.test(`seed ${seed}: 2 MB each way over 5% loss, duplication and reordering`, async (t) => {
    const bytes = 2 * 1024 * 1024;
    const r = simulate(seed, bytes, 0.05);
    t.equal(r.a.received, bytes, 'A received everything');
    t.equal(r.b.received, bytes, 'B received everything');
    t.equal(r.a.mismatch + r.b.mismatch, 0, 'byte for byte, in order');
    t.ok(r.dropped > 100, `the network really dropped (${r.dropped} segments)`);
    t.equal(r.a.closed, 'fin', 'A closed cleanly');
    t.equal(r.b.closed, 'fin', 'B closed cleanly');
    t.comment(`simulated ${(r.now / 1000).toFixed(1)} s, ${r.delivered} segments delivered, retransmits A ${r.a.conn!.retransmits} B ${r.b.conn!.retransmits}`);
  });
}

if (process.env.SIM_MANUAL === undefined) for (const seed of [5, 6]) {
  t.test(`seed ${seed}: TSO super-segments cut into MSS pieces on the wire, each lost on its own (5%)`, async (t) => {
    const bytes = 2 * 1024 * 1024;
    const r = simulate(seed, bytes, 0.05, 0, 0, { tso: 44 * 1460, bufferBytes: 256 * 1024, latency: 1 });
    t.equal(r.a.received, bytes, 'A received everything');
    t.equal(r.b.received, bytes, 'B received everything');
    t.equal(r.a.mismatch + r.b.mismatch, 0, 'byte for byte, in order');
    t.equal(r.a.closed, 'fin', 'A closed cleanly');
    t.equal(r.b.closed, 'fin', 'B closed cleanly');
    const rexmit = r.a.conn!.retransmits + r.b.conn!.retransmits;
    // Every drop (data or ACK) costs at most about one resent piece; the old
    // recovery resent whole stretches again and again.
    t.ok(rexmit <= 1.5 * r.dropped, `retransmitted pieces ${rexmit} for ${r.dropped} wire drops`);
    t.comment(`simulated ${(r.now / 1000).toFixed(2)} s, RTOs A ${r.a.conn!.timeouts} B ${r.b.conn!.timeouts}, probes A ${r.a.conn!.lossProbes} B ${r.b.conn!.lossProbes}`);
  });
}
