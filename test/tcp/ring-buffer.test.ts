import t from 'tap';
import { ByteRing } from '../../src/tcp/ring-buffer.js';

function bytes(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 13 + seed) & 0xff);
}

t.test('write, read and wrap around', async (t) => {
  const r = new ByteRing(10);
  t.equal(r.write(bytes(7, 1), 0, 7), 7);
  const out = new Uint8Array(10);
  t.equal(r.read(out, 0, 5), 5);
  t.same(out.subarray(0, 5), bytes(7, 1).subarray(0, 5));
  t.equal(r.write(bytes(20, 2), 0, 20), 8, 'only the free space is taken');
  t.equal(r.length, 10);
  t.equal(r.free, 0);
  t.equal(r.read(out, 0, 10), 10);
  t.same(Array.from(out), [...bytes(7, 1).subarray(5), ...bytes(20, 2).subarray(0, 8)], 'order kept across the wrap');
  t.equal(r.length, 0);
});

t.test('peek, discard and contiguous runs for zero-copy segment emission', async (t) => {
  // The store is 4096 bytes (the pool's smallest class): wrap it.
  const r = new ByteRing(4096);
  r.write(bytes(4000, 3), 0, 4000);
  r.discard(3990);
  r.write(bytes(100, 4), 0, 100); // now wraps: head at 3990, 110 bytes held
  t.equal(r.length, 110);
  t.equal(r.backing.length, 4096);
  t.equal(r.contiguous(0, 1000), 106, 'run up to the end of the backing store');
  t.equal(r.indexOf(106), 0, 'then continues at index 0');
  t.equal(r.contiguous(106, 1000), 4);
  t.equal(r.contiguous(2, 3), 3, 'capped');
  const out = new Uint8Array(110);
  t.equal(r.peek(1, out, 0, 110), 109);
  t.same(Array.from(out.subarray(0, 109)), [...bytes(4000, 3).subarray(3991), ...bytes(100, 4)]);
  t.equal(r.length, 110, 'peek does not consume');
});

t.test('out-of-order placement with writeAt and commit', async (t) => {
  const r = new ByteRing(8);
  t.ok(r.writeAt(3, Uint8Array.of(4, 5, 6), 0, 3), 'bytes 3..5 placed ahead of the tail');
  t.equal(r.length, 0, 'not readable yet');
  t.notOk(r.writeAt(6, Uint8Array.of(1, 2, 3), 0, 3), 'beyond capacity is refused');
  r.write(Uint8Array.of(1, 2, 3), 0, 3);
  r.commit(3);
  const out = new Uint8Array(6);
  t.equal(r.read(out, 0, 6), 6);
  t.same(Array.from(out), [1, 2, 3, 4, 5, 6]);
  t.throws(() => r.commit(100));
});

t.test('random operations match a reference array', async (t) => {
  let s = 12345;
  const rnd = (n: number) => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const r = new ByteRing(97);
  const ref: number[] = [];
  let next = 0;
  for (let i = 0; i < 5000; i++) {
    if (rnd(2) === 0) {
      const n = rnd(60);
      const src = Uint8Array.from({ length: n }, () => next++ & 0xff);
      const w = r.write(src, 0, n);
      ref.push(...src.subarray(0, w));
      next -= n - w;
    } else {
      const n = rnd(60);
      const out = new Uint8Array(n);
      const got = r.read(out, 0, n);
      const want = ref.splice(0, got);
      if (Buffer.compare(Buffer.from(out.subarray(0, got)), Buffer.from(want)) !== 0) {
        t.fail(`mismatch at step ${i}`);
        return;
      }
    }
    if (r.length !== ref.length) {
      t.fail('length drift');
      return;
    }
  }
  t.pass('5000 random operations agree');
});

t.test('reading the ring empty keeps out-of-order bytes placed beyond the tail where they were', async (t) => {
  const r = new ByteRing(16);
  r.write(new Uint8Array([1, 2, 3]), 0, 3);
  t.ok(r.writeAt(2, new Uint8Array([6, 7]), 0, 2), 'bytes 6,7 placed after a 2-byte hole');
  const out = new Uint8Array(8);
  t.equal(r.read(out, 0, 8), 3, 'the in-order bytes read out, ring now empty');
  t.equal(r.write(new Uint8Array([4, 5]), 0, 2), 2, 'the hole fills');
  r.commit(2);
  t.equal(r.read(out, 0, 8), 4);
  t.same([...out.subarray(0, 4)], [4, 5, 6, 7], 'the out-of-order bytes follow the hole');
});
