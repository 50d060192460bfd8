/**
 * CPU cost of the in-process stack (no TUN, no root): a scripted IPv4
 * client on an in-memory link uploads a fixed amount in full-sized
 * segments, 32 per batch (as the TUN reader hands them over), and the
 * application reads it; then the application writes the same amount back
 * and the client acknowledges every batch the stack sends. Segments are
 * built before the clock starts, so the figure is the stack's own work:
 * IP input and demux, checksums, the TCP core, the stream, the emitter.
 * Process CPU time (user + system) per MiB, best and median of N runs.
 *   node dist/bench/stack-cpu.bench.js [MiB] [runs]
 */
import { pathToFileURL } from 'node:url';
import { Stack } from '../src/stack.js';
import type { TcpStream } from '../src/stack/tcp-stream.js';
import { TCP_ACK, TCP_SYN } from '../src/wire/tcp.js';
import { MemoryLink, settle } from '../test/stack/memory-link.js';
import { MSS_1460, readTcp, tcpSegment } from '../test/stack/packets.js';

const SEG = 1460;
const BATCH = 32;

export interface StackCpuRow {
  direction: string;
  cpuUsPerMiB: number[];
}

async function oneRun(mib: number): Promise<{ up: number; down: number }> {
  const link = new MemoryLink(1500);
  const clock = { now: 1000 };
  let stream: TcpStream | null = null;
  const stack = new Stack(link, { onTcpFlow: (req) => void (stream = req.accept()) }, { clock: () => clock.now, tso: false });
  stack.start();
  link.inject(tcpSegment({ seq: 1000, flags: TCP_SYN, options: MSS_1460, window: 65535 }));
  await settle();
  const synAck = readTcp(link.drain().find((p) => (readTcp(p).flags & TCP_SYN) !== 0)!);
  const ourAck = (synAck.seq + 1) >>> 0;
  link.inject(tcpSegment({ seq: 1001, ack: ourAck, flags: TCP_ACK }));
  await settle();
  const s = stream! as TcpStream;
  let received = 0;
  s.on('data', (b: Buffer) => void (received += b.length));

  // Upload: every segment built up front.
  const total = mib * 1024 * 1024;
  const count = Math.ceil(total / SEG);
  const payload = new Uint8Array(SEG).fill(0x5a);
  const segs: Uint8Array[] = [];
  for (let i = 0; i < count; i++) segs.push(tcpSegment({ seq: 1001 + i * SEG, ack: ourAck, flags: TCP_ACK, payload }));
  const upStart = process.cpuUsage();
  for (let i = 0; i < count; i += BATCH) {
    link.inject(...segs.slice(i, i + BATCH));
    link.drain();
    clock.now += 1;
    await settle();
  }
  const up = process.cpuUsage(upStart);
  if (received !== count * SEG) throw new Error(`upload: ${received} of ${count * SEG} bytes arrived`);
  segs.length = 0;

  // Download: the application writes, the client acknowledges what came.
  const clientSeq = 1001 + count * SEG;
  const acks = new Map<number, Uint8Array>();
  const block = Buffer.alloc(64 * 1024, 0x33);
  let written = 0;
  let acked = 0;
  const downStart = process.cpuUsage();
  const pump = (): void => {
    while (written < total) {
      written += block.length;
      if (!s.write(block)) {
        s.once('drain', pump);
        return;
      }
    }
  };
  pump();
  let idle = 0;
  while (acked < written || written < total) {
    await settle();
    const out = link.drain();
    let highest = -1;
    for (const p of out) {
      const r = readTcp(p);
      if (r.payload.length > 0) highest = (r.seq + r.payload.length) >>> 0;
    }
    if (highest < 0) {
      if (++idle > 1000) throw new Error(`download stalled at ${acked} of ${total}`);
      clock.now += 5;
      continue;
    }
    idle = 0;
    acked = (highest - ourAck) >>> 0;
    let ack = acks.get(highest);
    if (ack === undefined) {
      ack = tcpSegment({ seq: clientSeq, ack: highest, flags: TCP_ACK, window: 65535 });
      acks.set(highest, ack);
    }
    clock.now += 1;
    link.inject(ack);
  }
  const down = process.cpuUsage(downStart);
  stack.close();
  const us = (u: NodeJS.CpuUsage) => (u.user + u.system) / mib;
  return { up: us(up), down: us(down) };
}

export async function runStackCpuBench(mib = 64, runs = 7): Promise<StackCpuRow[]> {
  const up: number[] = [];
  const down: number[] = [];
  await oneRun(8); // warm-up
  for (let i = 0; i < runs; i++) {
    const r = await oneRun(mib);
    up.push(r.up);
    down.push(r.down);
  }
  return [
    { direction: 'upload (client -> stack -> app)', cpuUsPerMiB: up },
    { direction: 'download (app -> stack -> client)', cpuUsPerMiB: down },
  ];
}

export function printStackCpuRows(rows: StackCpuRow[], mib: number): void {
  console.log(`\nin-process stack, IPv4, ${mib} MiB per run, process CPU µs per MiB (lower is better)`);
  for (const r of rows) {
    const sorted = [...r.cpuUsPerMiB].sort((a, b) => a - b);
    const med = sorted[sorted.length >> 1]!;
    console.log(`  ${r.direction.padEnd(36)} best ${sorted[0]!.toFixed(0).padStart(6)}  median ${med.toFixed(0).padStart(6)}  runs ${sorted.map((v) => v.toFixed(0)).join(' ')}`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const mib = Number(process.argv[2] ?? 64);
  const runs = Number(process.argv[3] ?? 7);
  runStackCpuBench(mib, runs).then(
    (rows) => printStackCpuRows(rows, mib),
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
