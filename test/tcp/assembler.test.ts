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
  t.equal(left[1], (rcvNxt + 300) >>> 0, 'then the others by recency');
  t.equal(right[2], (rcvNxt + 110) >>> 0);
  t.equal(a.sackBlocks(rcvNxt, left, right, 1), 1, 'capped by the space for options');
  a.advance(105);
  t.equal(a.sackBlocks(0, left, right, 4), 2, 'the first range was delivered');
  t.equal(left[0], 90, 'rebased: RCV.NXT moved 110 (105 in order + 5 from the first range)');
});

t.test('SACK blocks under many holes: every range gets reported, the newest first (RFC 2018 4)', async (t) => {
  // One batch of segments opened five ranges above a hole and gets one ACK
  // (room for three blocks with timestamps): the next ACKs report the two it
  // left out before repeating old ones, so the sender learns of all of them.
  const a = new Assembler(64);
  for (let i = 1; i <= 5; i++) a.add(i * 100, 10);
  const left = new Uint32Array(4);
  const right = new Uint32Array(4);
  t.equal(a.sackBlocks(0, left, right, 3), 3);
  t.same([...left.subarray(0, 3)], [500, 400, 300], 'the ACK of the batch: newest first');
  t.equal(a.sackBlocks(0, left, right, 3), 3);
  t.same([...left.subarray(0, 3)], [500, 200, 100], 'the next: the newest, then the two never reported');
  t.equal(a.sackBlocks(0, left, right, 3), 3);
  t.same([...left.subarray(0, 3)], [500, 400, 300], 'then the most recently reported again');
  // A segment extending a middle range makes it the first block; merging
  // two ranges leaves one entry for both.
  a.add(310, 90);
  t.equal(a.sackBlocks(0, left, right, 3), 3);
  t.same([[left[0], right[0]], [left[1], right[1]]], [[300, 410], [500, 510]], 'the merged range leads, the rest follow by recency');
  t.equal(a.ranges, 4);
  // The hole at RCV.NXT fills up to the first range: it leaves the list.
  t.equal(a.advance(100), 10);
  t.equal(a.sackBlocks(110, left, right, 4), 3, 'the delivered range is gone');
  t.same([[left[0], right[0]], [left[1], right[1]], [left[2], right[2]]], [[300, 410], [500, 510], [200, 210]], 'the others rebased, still absolute');
});

t.test('SACK blocks: eight ranges opened under one ACK all reach the sender within three more', async (t) => {
  const a = new Assembler(64);
  for (let i = 1; i <= 8; i++) a.add(i * 100, 10);
  const left = new Uint32Array(4);
  const right = new Uint32Array(4);
  const seen = new Set<number>();
  for (let i = 0; i < 4; i++) {
    const n = a.sackBlocks(0, left, right, 3);
    t.equal(left[0], 800, `option ${i + 1} leads with the newest range`);
    for (let k = 0; k < n; k++) seen.add(left[k]!);
  }
  t.equal(seen.size, 8, 'all eight ranges appeared in some option');
  // Like Linux's four-entry list, a range that falls off the recency list
  // unreported (a ninth opened in the same batch) is reported again only
  // when it changes; the sender's RACK then resends it at worst.
  a.add(900, 10);
  a.add(1000, 10);
  const n = a.sackBlocks(0, left, right, 4);
  t.same([...left.subarray(0, n)], [1000, 900, 800, 700], 'newest first');
});
