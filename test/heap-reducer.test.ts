/**
 * src/heap-reducer.ts: when a thread asks V8 for a memory-reducing
 * collection. Heap sizes in, the decision out; no timer, no V8.
 */
import t from 'tap';
import { HeapWatch } from '../src/heap-reducer.js';

const MB = 1024 * 1024;

t.test('after a burst: asked once it stops growing, again while compaction has pages to give back', async (t) => {
  const w = new HeapWatch(14 * MB);
  t.equal(w.check(60 * MB, 62 * MB), false, 'still growing (the burst)');
  t.equal(w.check(95 * MB, 98 * MB), false, 'still growing');
  t.equal(w.check(96 * MB, 99 * MB), true, 'grown by 82 MB and steady: ask');
  t.equal(w.check(53 * MB, 74 * MB), true, 'collected, but 21 MB committed and unused: ask again');
  t.equal(w.check(52 * MB, 55 * MB), false, 'compact: done');
  t.equal(w.check(53 * MB, 56 * MB), false, 'settled where it is: nothing to ask');
  t.equal(w.check(60 * MB, 70 * MB), false, 'less than 16 MB above the low mark');
});

t.test('at most three requests for one growth', async (t) => {
  const w = new HeapWatch(14 * MB);
  t.equal(w.check(96 * MB, 99 * MB), false, 'growing');
  const asked = [0, 1, 2, 3, 4].map(() => w.check(60 * MB, 90 * MB));
  t.same(asked, [true, true, true, false, false]);
});

t.test('a heap that never stops growing is left to V8', async (t) => {
  const w = new HeapWatch(14 * MB);
  for (let used = 20; used < 200; used += 10) t.equal(w.check(used * MB, (used + 20) * MB), false, `${used} MB, still growing`);
});

t.test('steady traffic (a sawtooth of young collections) never asks', async (t) => {
  const w = new HeapWatch(40 * MB);
  for (let i = 0; i < 20; i++) t.equal(w.check((40 + (i % 3)) * MB, 60 * MB), false);
});
