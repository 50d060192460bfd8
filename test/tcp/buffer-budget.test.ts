/**
 * The TCP buffer budget (limits.tcpBufferMiB, src/tcp/buffer-budget.ts):
 * one count for the process over every thread's ring stores; past its
 * limit send rings grow no further than FLOOR_BYTES (keeping the store they
 * have) and receive rings are not held back; a dead thread's slot is
 * cleared; and a download through the stack under pressure still delivers
 * every byte in order, from a send ring that never grows past the floor.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { BufferBudget, FLOOR_BYTES } from '../../src/tcp/buffer-budget.js';
import { ByteRing } from '../../src/tcp/ring-buffer.js';
import { RingPool, ringPool } from '../../src/tcp/ring-pool.js';
import { TCP_ACK } from '../../src/wire/tcp.js';
import { settle } from '../stack/memory-link.js';
import { readTcp, tcpSegment } from '../stack/packets.js';
import { acceptingStack, openFlow } from '../stack/accepting-stack.js';

const KiB = 1024;

function bytes(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 13 + seed) & 0xff);
}

t.test('one count over every slot: the limit, the peak, pressure events, and a cleared slot', async (t) => {
  const main = new BufferBudget();
  const worker = new BufferBudget(main.shared, 2);
  main.setLimitBytes(64 * KiB);
  t.equal(worker.stats().limitBytes, 64 * KiB, 'the limit is the same for every thread');
  main.add(16 * KiB);
  worker.add(32 * KiB);
  t.equal(main.stats().usedBytes, 48 * KiB, 'both slots add up');
  t.equal(main.headroom(false), 16 * KiB, 'the headroom under the limit');
  worker.add(16 * KiB);
  t.equal(worker.headroom(false), 0, 'at the limit: none left');
  t.equal(worker.headroom(true), 0, 'still over: no second event');
  t.equal(main.stats().pressureEvents, 1, 'one pressure event, counted as it went over');
  t.equal(main.stats().peakBytes, 64 * KiB, 'the peak');
  main.clearSlot(2);
  t.equal(main.stats().usedBytes, 16 * KiB, "a dead worker's stores leave the count");
  t.equal(main.headroom(true), 48 * KiB, 'under again');
  t.equal(main.stats().peakBytes, 64 * KiB, 'the peak stays');
  t.throws(() => new BufferBudget(main.shared, 65), RangeError, 'a slot past the cap is refused');
});

t.test('a worker thread counts into the main thread\'s budget, in its own slot', async (t) => {
  const main = new BufferBudget();
  const url = new URL('../../src/tcp/buffer-budget.js', import.meta.url).href;
  const w = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     import(workerData.url).then(({ BufferBudget }) => {
       const b = new BufferBudget(workerData.shared, 1);
       b.add(40960);
       parentPort.postMessage('added');
     });`,
    { eval: true, workerData: { url, shared: main.shared } },
  );
  await new Promise<void>((resolve, reject) => {
    w.once('message', () => resolve());
    w.once('error', reject);
  });
  await w.terminate();
  t.equal(main.stats().usedBytes, 40960, "the worker's stores are in the main thread's count");
  main.clearSlot(1);
  t.equal(main.stats().usedBytes, 0);
});

t.test('a send ring grows only into the headroom, to the floor when there is none, keeps a larger store it has, and grows again once under', async (t) => {
  const pool = new RingPool();
  pool.useBudget(new BufferBudget());
  pool.setBudgetLimit(256 * KiB);
  const bulk = new ByteRing(1024 * KiB, pool, true);
  t.equal(bulk.free, 256 * KiB, 'an empty send ring may queue the headroom, not its whole capacity');
  t.equal(bulk.write(bytes(300 * KiB, 1), 0, 300 * KiB), 256 * KiB, 'a write takes that much');
  bulk.read(new Uint8Array(56 * KiB), 0, 56 * KiB);
  t.equal(bulk.backing.length, 256 * KiB, 'its store fills the limit');
  t.ok(pool.headroom <= 0, 'no headroom left');
  t.equal(bulk.free, 56 * KiB, 'over budget it keeps its store, and only that: free = store - held');
  t.equal(bulk.write(bytes(100 * KiB, 2), 0, 100 * KiB), 56 * KiB, 'a write takes only that');
  t.equal(bulk.backing.length, 256 * KiB, 'no growth');

  const other = new ByteRing(1024 * KiB, pool, true);
  t.equal(other.free, FLOOR_BYTES, 'a new send ring may queue the floor');
  t.equal(other.write(bytes(100 * KiB, 3), 0, 100 * KiB), FLOOR_BYTES, 'and no more');
  t.equal(other.backing.length, FLOOR_BYTES, 'its store is the floor');

  const recv = new ByteRing(256 * KiB, pool);
  t.equal(recv.free, 256 * KiB, 'a receive ring is not held back (its window is promised)');
  t.equal(recv.write(bytes(100 * KiB, 4), 0, 100 * KiB), 100 * KiB);

  // The bytes the rings hold are the bytes written, in order, whatever was cut.
  const out = new Uint8Array(256 * KiB);
  t.equal(bulk.read(out, 0, out.length), 256 * KiB);
  const want = Buffer.concat([Buffer.from(bytes(300 * KiB, 1)).subarray(56 * KiB, 256 * KiB), Buffer.from(bytes(100 * KiB, 2)).subarray(0, 56 * KiB)]);
  t.same(Buffer.from(out), want, 'the held-back ring holds exactly what it took');
  t.notOk(bulk.allocated, 'read empty, its store went back');
  recv.release();
  other.release();
  t.equal(pool.headroom, 256 * KiB, 'the stores back: the whole limit is headroom again');
  t.equal(bulk.free, 256 * KiB, 'the ring may queue it again');
  bulk.write(bytes(200 * KiB, 5), 0, 200 * KiB);
  t.equal(bulk.backing.length, 256 * KiB, 'and grows past the floor again');
  pool.setBudgetLimit(64 * 1024 * KiB);
  bulk.release();
  t.equal(bulk.free, 1024 * KiB, 'with a larger limit, its whole capacity');
  bulk.release();
  t.equal(pool.budget.stats().usedBytes, 0, 'nothing counted once every store is back');
});

t.test('through the stack: a download under pressure arrives whole and in order from a send ring held at the floor', async (t) => {
  ringPool.trim();
  const saved = ringPool.budget;
  const tight = new BufferBudget();
  ringPool.useBudget(tight);
  ringPool.setBudgetLimit(4 * KiB);
  t.teardown(() => ringPool.useBudget(saved));
  const { link, streams } = acceptingStack(t);
  const { s, ack: iss1 } = await openFlow(link, 40100, streams);

  const size = 1024 * KiB;
  const body = Buffer.from(bytes(size, 7));
  let writeDone = false;
  s.write(body, () => (writeDone = true));
  const got: Buffer[] = [];
  let received = 0;
  let largestStore = 0;
  for (let round = 0; round < 2000 && received < size; round++) {
    await settle();
    const conn = (s as unknown as { flow: { connection: { sendRing: ByteRing } | null } }).flow.connection;
    if (conn !== null && conn.sendRing.backing.length > largestStore) largestStore = conn.sendRing.backing.length;
    for (const p of link.drain()) {
      const r = readTcp(p);
      if (r.payload.length === 0) continue;
      // In-order only: the stack sends nothing twice here (every segment is acknowledged at once).
      if (r.seq === ((iss1 + received) >>> 0)) {
        got.push(Buffer.from(r.payload));
        received += r.payload.length;
      }
    }
    link.inject(tcpSegment({ srcPort: 40100, dstPort: 80, seq: 1001, ack: (iss1 + received) >>> 0, flags: TCP_ACK, window: 65535 }));
  }
  await settle();
  t.equal(received, size, 'every byte arrived');
  t.equal(createHash('sha256').update(Buffer.concat(got)).digest('hex'), createHash('sha256').update(body).digest('hex'), 'in order, intact (SHA-256)');
  t.ok(writeDone, "the application's write completed");
  t.ok(largestStore > 0 && largestStore <= FLOOR_BYTES, `the send ring's store stayed at or under the floor (largest ${largestStore} bytes)`);
  t.ok(tight.stats().pressureEvents >= 1, 'the pressure was counted');
  s.destroy();
  await settle();
  t.equal(tight.stats().usedBytes, 0, 'the stores are back, and out of the count');
});

t.test('the same download with room in the budget lets the send ring grow past the floor (the check above can fail)', async (t) => {
  ringPool.trim();
  const { link, streams } = acceptingStack(t);
  const { s } = await openFlow(link, 40101, streams);
  s.write(Buffer.from(bytes(1024 * KiB, 8)));
  await settle();
  const conn = (s as unknown as { flow: { connection: { sendRing: ByteRing } } }).flow.connection;
  t.ok(conn.sendRing.backing.length > FLOOR_BYTES, `the ring holds the queued megabyte (store ${conn.sendRing.backing.length} bytes)`);
  s.destroy();
  await settle();
});
