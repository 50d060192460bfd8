/**
 * The sans-IO TCP core alone: a fixed bulk transfer between two
 * TcpConnections over an in-memory wire with a fixed one-way delay and an
 * explicit clock (no sockets, no timers), lossless and with seeded random
 * loss. Reports process CPU time, which is steadier than wall-clock rates
 * on a shared machine.
 *   node dist/bench/tcp.bench.js [repetitions]
 */
import { copyTcpRepr, newTcpRepr, type TcpRepr } from '../src/wire/tcp.js';
import { TcpConnection, type ConnectionOwner, type SegmentSink } from '../src/tcp/connection.js';
import { defaultTcpConfig } from '../src/tcp/config.js';

interface Packet {
  at: number;
  repr: TcpRepr;
  data: Uint8Array;
}

class Wire implements SegmentSink, ConnectionOwner {
  queue: Packet[] = [];
  head = 0;
  peer: Wire | null = null;
  conn: TcpConnection | null = null;
  now = 0;
  private rng: number;
  dropped = 0;
  constructor(private readonly delayMs: number, private readonly loss: number, seed: number) {
    this.rng = seed | 1;
  }
  private random(): number {
    this.rng ^= this.rng << 13;
    this.rng ^= this.rng >>> 17;
    this.rng ^= this.rng << 5;
    return (this.rng >>> 0) / 4294967296;
  }
  emitSegment(_c: TcpConnection, repr: TcpRepr, data: Uint8Array | null, off: number, len: number): void {
    if (this.loss > 0 && this.random() < this.loss) {
      this.dropped++;
      return;
    }
    const r = newTcpRepr();
    copyTcpRepr(repr, r);
    this.peer!.queue.push({ at: this.now + this.delayMs, repr: r, data: data ? data.slice(off, off + len) : new Uint8Array(0) });
  }
  onEstablished(): void {}
  onReadable(): void {}
  onWritable(): void {}
  onPeerFin(): void {}
  onClosed(): void {}
}

export interface TcpBenchRow {
  label: string;
  mib: number;
  cpuMs: number;
  simMs: number;
  retransmits: number;
}

/** Moves `bytes` from a to b; returns CPU ms spent and the simulated time it took. */
export function bulkTransfer(label: string, bytes: number, loss: number, seed = 1): TcpBenchRow {
  const cfg = { ...defaultTcpConfig(), recvBufferBytes: 1 << 20, sendBufferBytes: 1 << 20, minRtoMs: 200 };
  const wa = new Wire(1, loss, seed);
  const wb = new Wire(1, loss, seed * 7 + 3);
  wa.peer = wb;
  wb.peer = wa;
  const a = TcpConnection.connect(cfg, 0, { iss: 1000, mss: 1460 }, wa);
  wa.conn = a;
  const chunk = new Uint8Array(65536);
  for (let i = 0; i < chunk.length; i++) chunk[i] = i & 0xff;
  const sink = new Uint8Array(65536);
  let b: TcpConnection | null = null;
  let written = 0;
  let read = 0;
  let now = 0;
  const start = process.cpuUsage();
  for (let guard = 0; guard < 50_000_000 && read < bytes; guard++) {
    wa.now = wb.now = now;
    // Deliver what has arrived.
    for (const w of [wb, wa]) {
      while (w.head < w.queue.length && w.queue[w.head]!.at <= now) {
        const p = w.queue[w.head++]!;
        if (w === wb && b === null) {
          b = TcpConnection.accept(cfg, now, p.repr, { iss: 9000, mss: 1460 }, wb);
          wb.conn = b;
        } else {
          w.conn?.process(now, p.repr, p.data, 0, p.data.length);
        }
      }
      if (w.head > 4096 && w.head * 2 > w.queue.length) {
        w.queue = w.queue.slice(w.head);
        w.head = 0;
      }
    }
    while (written < bytes && a.sendSpace > 0 && a.state === 'ESTABLISHED') {
      const n = a.send(chunk, 0, Math.min(chunk.length, bytes - written));
      if (n === 0) break;
      written += n;
    }
    if (b !== null) {
      for (let n = b.recv(sink, 0, sink.length); n > 0; n = b.recv(sink, 0, sink.length)) read += n;
    }
    a.dispatch(now, wa);
    b?.dispatch(now, wb);
    // Next event: an arrival or a connection deadline.
    let next = Infinity;
    if (wa.head < wa.queue.length) next = wa.queue[wa.head]!.at;
    if (wb.head < wb.queue.length && wb.queue[wb.head]!.at < next) next = wb.queue[wb.head]!.at;
    const pa = a.pollAt();
    if (pa < next) next = pa;
    const pb = b?.pollAt() ?? Infinity;
    if (pb < next) next = pb;
    if (next === Infinity) break;
    if (next > now) now = next;
  }
  const cpu = process.cpuUsage(start);
  if (read !== bytes) throw new Error(`${label}: transferred ${read} of ${bytes} bytes`);
  return { label, mib: bytes / (1 << 20), cpuMs: (cpu.user + cpu.system) / 1000, simMs: now, retransmits: a.retransmits };
}

export function runTcpBench(repetitions: number): TcpBenchRow[][] {
  const runs: TcpBenchRow[][] = [];
  for (let i = 0; i < repetitions; i++) {
    runs.push([bulkTransfer('lossless 256 MiB', 256 << 20, 0), bulkTransfer('1% loss 64 MiB', 64 << 20, 0.01, 5)]);
  }
  return runs;
}

/** One line per transfer: CPU ms of every run, the median, per MiB. */
export function printTcpRows(runs: TcpBenchRow[][]): void {
  console.log('\nsans-IO TCP core, bulk transfer between two connections (process CPU time)');
  for (let col = 0; col < runs[0]!.length; col++) {
    const rows = runs.map((r) => r[col]!);
    const cpus = rows.map((r) => r.cpuMs).sort((x, y) => x - y);
    const median = cpus[Math.floor(cpus.length / 2)]!;
    console.log(`${rows[0]!.label}: CPU ms per run ${rows.map((r) => r.cpuMs.toFixed(0)).join(' ')}; median ${median.toFixed(0)} (${((median * 1000) / rows[0]!.mib).toFixed(0)} µs/MiB); simulated ${rows[0]!.simMs.toFixed(0)} ms, ${rows[0]!.retransmits} retransmits`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const reps = Number(process.argv[2] ?? 5);
  bulkTransfer('warm-up', 32 << 20, 0.01, 9);
  printTcpRows(runTcpBench(reps));
}
