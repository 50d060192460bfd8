/**
 * The ring pool (issue 10): stores are reused, grow with what the ring
 * holds, go back when the ring empties or its connection closes, and a
 * reused store (never zero-filled) never shows a previous flow's bytes:
 * neither to the application reading the stream nor in the segments the
 * stack sends.
 */
import t from 'tap';
import { ByteRing } from '../../src/tcp/ring-buffer.js';
import { RingPool, classSize, MIN_CLASS, ringPool } from '../../src/tcp/ring-pool.js';
import { TCP_ACK, TCP_FIN, TCP_PSH } from '../../src/wire/tcp.js';
import { settle } from '../stack/memory-link.js';
import { readTcp, tcpSegment } from '../stack/packets.js';
import { acceptingStack, openFlow } from '../stack/accepting-stack.js';

const MARKER = 0xee;

/** Bytes that never contain MARKER. */
function clean(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) % 0xe0);
}

function sameStore(a: Uint8Array, b: Uint8Array): boolean {
  return a.buffer === b.buffer && a.byteOffset === b.byteOffset && a.length === b.length;
}

t.test('class sizes are powers of two from 4 KiB', async (t) => {
  t.equal(classSize(1), MIN_CLASS);
  t.equal(classSize(4096), 4096);
  t.equal(classSize(4097), 8192);
  t.equal(classSize(256 * 1024), 256 * 1024);
  t.equal(classSize(256 * 1024 + 1), 512 * 1024);
});

t.test('an idle ring holds no store; an emptied ring gives its store back and the next ring reuses it', async (t) => {
  const pool = new RingPool();
  const a = new ByteRing(256 * 1024, pool);
  t.notOk(a.allocated, 'no store before the first byte');
  a.write(clean(100, 1), 0, 100);
  t.equal(a.backing.length, MIN_CLASS, 'the first byte takes the smallest class, not the capacity');
  const store = a.backing;
  t.equal(pool.snapshot().inUse, 1);
  a.read(new Uint8Array(100), 0, 100);
  t.notOk(a.allocated, 'read empty: the store went back');
  t.same([pool.snapshot().inUse, pool.snapshot().free], [0, 1]);
  const b = new ByteRing(256 * 1024, pool);
  b.write(clean(10, 2), 0, 10);
  t.ok(sameStore(b.backing, store), 'the next ring got the same store');
  t.equal(pool.snapshot().reused, 1);
  b.discard(10);
  t.notOk(b.allocated, 'discarded empty (send side): the store went back');
});

t.test('the store grows with the data, keeping every byte (wrapped and out-of-order ones too), up to the capacity', async (t) => {
  const pool = new RingPool();
  const r = new ByteRing(100_000, pool);
  const ref: number[] = [];
  // Wrap the smallest store first.
  r.write(clean(4000, 1), 0, 4000);
  const out = new Uint8Array(200_000);
  r.read(out, 0, 3990);
  ref.push(...clean(4000, 1).subarray(3990));
  const more = clean(1000, 3);
  r.write(more, 0, 1000); // wraps inside 4096
  ref.push(...more);
  t.equal(r.backing.length, 4096);
  // A byte placed out of order beyond the tail, then growth.
  t.ok(r.writeAt(5000, clean(50, 9), 0, 50), 'placed 5000 bytes beyond the tail');
  t.equal(r.backing.length, 8192, 'grew to hold the placed bytes');
  const fill = clean(5000, 5);
  t.equal(r.write(fill, 0, 5000), 5000);
  ref.push(...fill);
  r.commit(50);
  ref.push(...clean(50, 9));
  t.equal(r.length, ref.length);
  const big = clean(80_000, 7);
  const took = r.write(big, 0, 80_000);
  ref.push(...big.subarray(0, took));
  t.equal(r.length, Math.min(100_000, ref.length), 'the logical capacity still bounds the ring');
  t.equal(r.backing.length, 131_072, 'the store is the class that holds the capacity');
  t.equal(r.read(out, 0, out.length), ref.length);
  t.same(Buffer.from(out.subarray(0, ref.length)), Buffer.from(ref), 'every byte, in order');
  t.equal(pool.snapshot().inUse, 0, 'the stores it outgrew and the last one all went back');
});

t.test('a reused store never shows the previous ring\'s bytes', async (t) => {
  const pool = new RingPool();
  // A previous flow fills stores of every class it reaches with a marker, then closes.
  const prev = new ByteRing(256 * 1024, pool);
  const marker = new Uint8Array(256 * 1024).fill(MARKER);
  for (const n of [4096, 8192, 16384, 65536, 256 * 1024]) {
    prev.write(marker, 0, n);
    prev.release();
  }
  // Poison every store on the free lists, so whatever is handed out carries the marker.
  const held: Uint8Array[] = [];
  for (const size of [4096, 8192, 16384, 32768, 65536, 131072, 262144]) {
    const s = pool.acquire(size);
    s.fill(MARKER);
    held.push(s);
  }
  for (const s of held) pool.release(s);
  t.ok(pool.snapshot().free >= 7, 'marked stores wait on the free lists');

  // A new ring with a reference model: random in-order writes, out-of-order
  // placements (committed only once the gap before them is filled, as the
  // assembler does), reads, peeks and contiguous runs. No read may see MARKER.
  let s = 4242;
  const rnd = (n: number): number => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const r = new ByteRing(256 * 1024, pool);
  const ref: number[] = [];
  let seed = 0;
  let leaks = 0;
  const look = (u: Uint8Array): void => {
    if (u.includes(MARKER)) leaks++;
  };
  const out = new Uint8Array(70_000);
  for (let i = 0; i < 3000; i++) {
    const op = rnd(5);
    if (op === 0 || op === 1) {
      const n = rnd(op === 0 ? 3000 : 40_000);
      const src = clean(n, seed++);
      const w = r.write(src, 0, n);
      ref.push(...src.subarray(0, w));
    } else if (op === 2) {
      // Place [gap, gap+n) beyond the tail, fill the gap, commit.
      const gap = 1 + rnd(2000);
      const n = 1 + rnd(2000);
      if (gap + n > r.free) continue;
      const ahead = clean(n, seed++);
      if (!r.writeAt(gap, ahead, 0, n)) leaks++;
      const fill = clean(gap, seed++);
      r.write(fill, 0, gap);
      r.commit(n);
      ref.push(...fill, ...ahead);
    } else if (op === 3) {
      const n = rnd(70_000);
      const got = r.read(out, 0, n);
      const want = ref.splice(0, got);
      look(out.subarray(0, got));
      if (Buffer.compare(Buffer.from(out.subarray(0, got)), Buffer.from(want)) !== 0) {
        t.fail(`read mismatch at step ${i}`);
        return;
      }
    } else {
      const from = rnd(r.length + 10);
      const got = r.peek(from, out, 0, 5000);
      look(out.subarray(0, got));
      const run = r.contiguous(from, 5000);
      if (run > 0) look(r.backing.subarray(r.indexOf(from), r.indexOf(from) + run));
      if ((got > 0 && from + got > r.length) || (run > 0 && from + run > r.length)) leaks++;
    }
    if (r.length !== ref.length) {
      t.fail(`length drift at step ${i}`);
      return;
    }
  }
  t.ok(pool.snapshot().reused > 0, `stores were reused (${pool.snapshot().reused} times)`);
  t.equal(leaks, 0, 'no read, peek or segment run showed a byte the ring did not write');
  t.throws(() => new ByteRing(1024, pool).commit(10), /never placed/, 'committing bytes never placed is refused');
});


t.test('through the stack: a second flow on reused stores neither reads nor sends the first flow\'s bytes', async (t) => {
  ringPool.trim();
  const { link, streams } = acceptingStack(t);

  // Flow 1: the client uploads a marker, the application answers with a
  // marker; both directions fill stores; then it is reset (close with data held).
  const one = await openFlow(link, 40001, streams);
  const mark = new Uint8Array(1400).fill(MARKER);
  let seq = one.seq;
  for (let i = 0; i < 20; i++, seq += 1400) link.inject(tcpSegment({ srcPort: 40001, dstPort: 80, seq, ack: one.ack, flags: TCP_ACK, window: 65535, payload: mark }));
  one.s.on('error', () => {});
  one.s.pause();
  one.s.write(Buffer.alloc(60_000, MARKER));
  await settle();
  link.drain();
  t.ok(ringPool.snapshot().inUse >= 2, 'flow 1 holds stores in both directions');
  one.s.destroy(new Error('abort'));
  await settle();
  link.drain();
  t.equal(ringPool.snapshot().inUse, 0, 'the reset flow gave both stores back');
  t.ok(ringPool.snapshot().free >= 2, 'they wait on the free lists');

  // Flow 2: a few bytes each way on the reused stores.
  const reusedBefore = ringPool.snapshot().reused;
  const two = await openFlow(link, 40002, streams);
  const got: Buffer[] = [];
  two.s.on('data', (b: Buffer) => got.push(b));
  const up = clean(300, 11);
  link.inject(tcpSegment({ srcPort: 40002, dstPort: 80, seq: two.seq, ack: two.ack, flags: TCP_ACK | TCP_PSH, window: 65535, payload: up }));
  await settle();
  const down = Buffer.from(clean(5000, 12));
  two.s.write(down);
  await settle();
  const sent = link.drain().map(readTcp).filter((r) => r.payload.length > 0);
  t.ok(ringPool.snapshot().reused > reusedBefore, 'flow 2 runs on reused stores');
  t.same(Buffer.concat(got), Buffer.from(up), 'the application reads exactly what the client sent');
  const payload = Buffer.concat(sent.map((r) => Buffer.from(r.payload)));
  t.same(payload, down, 'the segments carry exactly what the application wrote');
  t.notOk(payload.includes(MARKER) || Buffer.concat(got).includes(MARKER), 'no marker byte from flow 1 anywhere');

  // Graceful end: FIN both ways; once acknowledged and read, the stores are back.
  const last = sent[sent.length - 1]!;
  const acked = (last.seq + last.payload.length) >>> 0;
  link.inject(tcpSegment({ srcPort: 40002, dstPort: 80, seq: two.seq + 300, ack: acked, flags: TCP_ACK | TCP_FIN, window: 65535 }));
  two.s.end();
  await settle();
  const fin = link.drain().map(readTcp).find((r) => (r.flags & TCP_FIN) !== 0)!;
  link.inject(tcpSegment({ srcPort: 40002, dstPort: 80, seq: two.seq + 301, ack: (fin.seq + 1) >>> 0, flags: TCP_ACK, window: 65535 }));
  await settle();
  t.equal(ringPool.snapshot().inUse, 0, 'a closed flow (TIME-WAIT) holds no store');
});
