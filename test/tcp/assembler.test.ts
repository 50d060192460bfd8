import t from 'tap';
import { Assembler } from '../../src/tcp/assembler.js';

t.test('holes fill in any order; advance reports newly contiguous bytes', async (t) => {
  const a = new Assembler(4);
  t.ok(a.add(100, 50)); // [100,150)
  t.ok(a.add(200, 50)); // [200,250)
  t.equal(a.ranges, 2);
  t.ok(a.add(150, 50), 'fills the gap between them');
  t.equal(a.ranges, 1, 'merged into [100,250)');
  t.equal(a.advance(60), 0, 'in-order data up to 60 does not reach the range');
  t.equal(a.advance(40), 150, 'reaching 100 makes [100,250) contiguous');
  t.ok(a.isEmpty);
});

t.test('duplicates and overlaps merge; covers() detects full duplicates', async (t) => {
  const a = new Assembler(4);
  a.add(10, 10);
  a.add(15, 10);
  a.add(5, 3);
  a.add(8, 2); // touches both neighbours: [5,25)
  t.equal(a.ranges, 1);
  t.ok(a.covers(6, 10));
  t.notOk(a.covers(20, 10));
  t.equal(a.advance(5), 20);
});

t.test('the hole cap refuses a new range but still accepts merges', async (t) => {
  const a = new Assembler(2);
  t.ok(a.add(10, 5));
  t.ok(a.add(30, 5));
  t.notOk(a.add(50, 5), 'a third disjoint range is refused');
  t.equal(a.refused, 1);
  t.ok(a.add(15, 5), 'extending an existing range is fine');
  t.equal(a.ranges, 2);
});

t.test('SACK blocks: most recent first, absolute and wrapping', async (t) => {
  const a = new Assembler(8);
  a.add(100, 10);
  a.add(300, 10);
  a.add(200, 10);
  const left = new Uint32Array(4);
  const right = new Uint32Array(4);
  const rcvNxt = 0xffffff00;
  const n = a.sackBlocks(rcvNxt, left, right, 4);
  t.equal(n, 3);
  t.equal(left[0], (rcvNxt + 200) >>> 0, 'the latest range leads (RFC 2018 4)');
  t.equal(left[1], (rcvNxt + 100) >>> 0);
  t.equal(right[2], (rcvNxt + 310) >>> 0);
  t.equal(a.sackBlocks(rcvNxt, left, right, 1), 1, 'capped by the space for options');
  a.advance(105);
  t.equal(a.sackBlocks(0, left, right, 4), 2, 'the first range was delivered');
  t.equal(left[0], 90, 'rebased: RCV.NXT moved 110 (105 in order + 5 from the first range)');
});
