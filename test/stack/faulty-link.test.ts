/**
 * The stack behind a seeded fault injector (src/link/fault.ts): an upload
 * whose segments are dropped, corrupted and reordered on the way in, and
 * whose ACKs are dropped, corrupted and reordered on the way out, still
 * arrives byte for byte; every corrupted packet is counted as a drop with a
 * reason (the checksums catch each one), and none reaches the application.
 * The client is a scripted go-back-N sender on an explicit clock.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { Stack } from '../../src/stack.js';
import type { TcpStream } from '../../src/stack/tcp-stream.js';
import { FaultInjector } from '../../src/link/fault.js';
import { TCP_ACK, TCP_SYN, verifyL4Checksum } from '../../src/wire/tcp.js';
import { internetChecksum, pseudoHeaderSumV4 } from '../../src/wire/checksum.js';
import { MemoryLink, settle } from './memory-link.js';
import { MSS_1460, readTcp, tcpSegment } from './packets.js';

const SIZE = 512 * 1024;
const MSS = 1460;
const WINDOW = 64 * 1024;

/** The client's kernel drops what the faults corrupted on the way out (IPv4 header and TCP checksums). */
function intact(p: Uint8Array): boolean {
  const ihl = (p[0]! & 0x0f) * 4;
  return internetChecksum(p, 0, ihl) === 0 && verifyL4Checksum(p, ihl, p.length - ihl, pseudoHeaderSumV4(p, 12, 16, 6, p.length - ihl));
}

function payload(size: number): Buffer {
  const b = Buffer.alloc(size);
  let x = 12345;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

for (const seed of [1, 7, 2026]) {
  t.test(`seed ${seed}: 5% drop, 3% corrupt, 5% reorder both ways: the upload arrives intact, every corruption a counted drop`, async (t) => {
    const mem = new MemoryLink(1500);
    const link = new FaultInjector(mem, { seed, drop: 0.05, corrupt: 0.03, reorder: 0.05 });
    const clock = { now: 1000 };
    let stream: TcpStream | null = null;
    const stack = new Stack(link, { onTcpFlow: (r) => void (stream = r.accept()) }, { clock: () => clock.now });
    stack.start();
    t.teardown(() => stack.close());

    // Handshake, repeated until it gets through the faults.
    let iss = -1;
    for (let i = 0; i < 50 && iss < 0; i++) {
      mem.inject(tcpSegment({ seq: 1000, flags: TCP_SYN, options: MSS_1460 }));
      await settle();
      const sa = mem.drain().filter(intact).map(readTcp).find((s) => (s.flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK) && s.ack === 1001);
      if (sa !== undefined) iss = sa.seq;
      clock.now += 1000;
      stack.poll(clock.now);
    }
    t.ok(iss >= 0, 'handshake');
    const data = payload(SIZE);
    const got: Buffer[] = [];
    let attached = false;
    const ack = (iss + 1) >>> 0;

    let una = 0; // bytes the stack acknowledged
    let rounds = 0;
    while (una < SIZE && rounds++ < 20_000) {
      const batch: Uint8Array[] = [];
      const end = Math.min(SIZE, una + WINDOW);
      for (let off = una; off < end && batch.length < 32; off += MSS) {
        batch.push(tcpSegment({ seq: 1001 + off, ack, flags: TCP_ACK, payload: data.subarray(off, Math.min(off + MSS, end)) }));
      }
      mem.inject(...batch);
      await settle();
      if (!attached && stream !== null) {
        attached = true;
        (stream as TcpStream).on('data', (b: Buffer) => got.push(b));
      }
      for (const s of mem.drain().filter(intact).map(readTcp)) {
        if ((s.flags & TCP_ACK) === 0) continue;
        const acked = (s.ack - 1001) >>> 0;
        if (acked <= SIZE && acked > una) una = acked;
      }
      // The stack's delayed ACK and our own "retransmission": time moves on.
      clock.now += 50;
      stack.poll(clock.now);
      for (const s of mem.drain().filter(intact).map(readTcp)) {
        const acked = (s.ack - 1001) >>> 0;
        if ((s.flags & TCP_ACK) !== 0 && acked <= SIZE && acked > una) una = acked;
      }
    }
    await settle();
    const c = link.counters;
    t.equal(una, SIZE, `every byte acknowledged (${rounds} rounds)`);
    const all = Buffer.concat(got);
    t.equal(all.length, SIZE, 'the application got every byte once');
    t.equal(createHash('sha256').update(all).digest('hex'), createHash('sha256').update(data).digest('hex'), 'byte for byte');
    t.ok(c.rxDropped > 0 && c.rxCorrupted > 0 && c.rxReordered > 0, `faults in: ${c.rxDropped} dropped, ${c.rxCorrupted} corrupted, ${c.rxReordered} reordered`);
    t.ok(c.txDropped + c.txCorrupted + c.txReordered > 0, `faults out: ${c.txDropped} dropped, ${c.txCorrupted} corrupted, ${c.txReordered} reordered`);
    const drops = Object.entries(stack.stats.drops).filter(([, n]) => n > 0);
    const total = drops.reduce((a, [, n]) => a + n, 0);
    t.equal(total, c.rxCorrupted, `each corrupted packet was dropped and counted (${drops.map(([k, n]) => `${k} ${n}`).join(', ')})`);
    t.equal(stack.stats.drops.internal_error, 0, 'no packet reached a bug');
    t.equal(stack.stats.tcpFlowsActive, 1);
  });
}

t.test('the same seed gives the same faults', async (t) => {
  const runs = [0, 1].map(() => {
    const mem = new MemoryLink(1500);
    const f = new FaultInjector(mem, { seed: 99, drop: 0.2, corrupt: 0.2, reorder: 0.2 });
    const seen: string[] = [];
    f.start({ onBatch: (buf, count) => void seen.push(`${count}:${Buffer.from(buf.subarray(0, 200)).toString('hex')}`), onLinkError: () => {} });
    for (let i = 0; i < 50; i++) mem.inject(tcpSegment({ seq: i * 10, flags: TCP_ACK, payload: new Uint8Array(10).fill(i) }));
    return { seen: seen.join('|'), counters: { ...f.counters } };
  });
  t.same(runs[0]!.counters, runs[1]!.counters);
  t.equal(runs[0]!.seen, runs[1]!.seen, 'identical batches');
  t.ok(runs[0]!.counters.rxDropped > 0 && runs[0]!.counters.rxCorrupted > 0 && runs[0]!.counters.rxReordered > 0);
});
