import t from 'tap';
import { TimerWheel, wheelEntryFields, type WheelEntry } from '../../src/stack/timer-wheel.js';

interface Item extends WheelEntry {
  id: number;
}
const item = (id: number): Item => ({ id, ...wheelEntryFields() });

function collector(): { fired: [number, number][]; onTimer(e: Item, now: number): void } {
  return {
    fired: [],
    onTimer(e, now) {
      this.fired.push([e.id, now]);
    },
  };
}

t.test('entries fire at or after their deadline, never before, in one pass', async (t) => {
  const w = new TimerWheel<Item>(0, 4, 16);
  const a = item(1);
  const b = item(2);
  const c = item(3);
  w.schedule(a, 10);
  w.schedule(b, 5);
  w.schedule(c, 1000); // several revolutions away (16 slots x 4 ms = 64 ms)
  t.equal(w.size, 3);
  t.equal(w.nextDeadline(), 5);
  const h = collector();
  w.advance(4, h);
  t.same(h.fired, [], 'nothing due at 4');
  w.advance(9, h);
  t.same(h.fired, [[2, 9]]);
  t.equal(w.nextDeadline(), 10);
  w.advance(70, h);
  t.same(h.fired, [[2, 9], [1, 70]], 'a passes on the next advance; c is not due');
  t.equal(w.nextDeadline(), 1000);
  w.advance(999, h);
  t.equal(h.fired.length, 2, 'c is still not due one ms early');
  w.advance(1003, h);
  t.same(h.fired[2], [3, 1003]);
  t.equal(w.size, 0);
  t.equal(w.nextDeadline(), Infinity);
});

t.test('rescheduling and cancelling move entries without duplicates', async (t) => {
  const w = new TimerWheel<Item>(0, 4, 16);
  const a = item(1);
  w.schedule(a, 100);
  w.schedule(a, 20);
  w.schedule(a, 20);
  t.equal(w.size, 1);
  const h = collector();
  w.advance(25, h);
  t.same(h.fired, [[1, 25]]);
  w.schedule(a, 50);
  w.cancel(a);
  w.cancel(a);
  t.equal(w.size, 0);
  w.advance(200, h);
  t.equal(h.fired.length, 1, 'a cancelled entry never fires');
  w.schedule(a, Infinity);
  t.equal(w.size, 0, 'Infinity means unscheduled');
});

t.test('a deadline in the past fires on the next advance', async (t) => {
  const w = new TimerWheel<Item>(1000, 4, 16);
  const a = item(1);
  w.schedule(a, 10);
  const h = collector();
  w.advance(1000, h);
  t.same(h.fired, [[1, 1000]]);
});

t.test('randomized: every entry fires exactly once, within one tick of its deadline', async (t) => {
  let seed = 42;
  const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const w = new TimerWheel<Item>(0, 4, 64);
  const items = Array.from({ length: 2000 }, (_, i) => item(i));
  const deadlines = new Map<number, number>();
  for (const it of items) {
    const d = Math.floor(rand() * 5000);
    w.schedule(it, d);
    deadlines.set(it.id, d);
  }
  const firedAt = new Map<number, number>();
  let now = 0;
  let bad = 0;
  while (w.size > 0 && now < 10_000) {
    now += 1 + Math.floor(rand() * 7);
    w.advance(now, {
      onTimer(e, at) {
        if (firedAt.has(e.id)) bad++;
        firedAt.set(e.id, at);
      },
    });
  }
  t.equal(firedAt.size, 2000, 'all fired');
  t.equal(bad, 0, 'none twice');
  let early = 0;
  let late = 0;
  for (const [id, at] of firedAt) {
    const d = deadlines.get(id)!;
    if (at < d) early++;
    if (at > d + 8) late++;
  }
  t.equal(early, 0, 'none early');
  t.equal(late, 0, 'none later than the advance step after their deadline');
});
