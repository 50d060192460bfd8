/**
 * CUBIC's response to loss (RFC 9438 4.6, 4.7) and the whole-segment
 * sending that keeps flights free of slivers, explicit clock. The wire-loss
 * downloads of issue 12 item 4 are the case: a Linux receiver acknowledges
 * a whole burst with one ACK, so when that ACK reveals a loss almost
 * nothing is outstanding.
 */
import t from 'tap';
import { Cubic } from '../../src/tcp/congestion/cubic.js';
import { MSS, ackWith, config, dataOf, established, queue, segIndex } from './helpers.js';

t.test('CUBIC: a loss sets ssthresh to beta * cwnd, however little is outstanding when it is found', async (t) => {
  const cc = new Cubic(MSS, 10);
  cc.onLoss(0, 2 * MSS);
  t.equal(cc.ssthresh, 7 * MSS, 'ssthresh = 0.7 * cwnd, not 0.7 * the two segments outstanding');
  t.equal(cc.cwnd, 7 * MSS, 'cwnd = ssthresh');
  cc.onLoss(1, 7 * MSS);
  t.ok(Math.abs(cc.ssthresh - 4.9 * MSS) < 1e-6, 'a second episode: 0.7 * 7');
  for (let i = 0; i < 3; i++) cc.onLoss(2 + i, MSS);
  t.equal(cc.ssthresh, 2 * MSS, 'never below two segments');
});

t.test('CUBIC: a timeout still sets ssthresh from the flight (RFC 5681 eq. 4), then cwnd to one segment', async (t) => {
  const cc = new Cubic(MSS, 20);
  cc.onTimeout(0, 10 * MSS);
  t.equal(cc.ssthresh, 7 * MSS, 'ssthresh = 0.7 * flight');
  t.equal(cc.cwnd, MSS, 'cwnd one segment');
  cc.onTimeout(1, MSS);
  t.equal(cc.ssthresh, 2 * MSS, 'a second timeout with one segment out: the floor');
});

t.test('a loss found by the ACK of most of a burst keeps 70 % of the window, and PRR refills it at once', async (t) => {
  const f = established(config({ sendBufferBytes: 1 << 20, initialCwndSegments: 10 }), { sackPermitted: true, windowScale: 7 });
  f.conn.useTso(16 * MSS);
  queue(f, 40 * MSS);
  const first = dataOf(f.dispatch());
  t.equal(first.length, 1, 'one super-segment');
  t.equal(first[0]!.data.length, 10 * MSS, 'of the initial window');
  const base = first[0]!.repr.seq;
  // One ACK for the burst: segments 0-7 and 9 arrived, 8 was lost on the wire.
  const out = dataOf(ackWith(f, base, 8, [[9, 10]]));
  t.ok(f.conn.inRecovery, 'recovery');
  const cwndAtLoss = 12 * MSS; // slow start grew it by 2 MSS on this ACK (RFC 3465 L = 2)
  t.equal(f.conn.cc.ssthresh, 0.7 * cwndAtLoss, 'ssthresh = 0.7 * cwnd (two segments were outstanding: 0.7 * flight gave the 2-segment floor)');
  t.equal(segIndex(out[0]!, base), 8, 'the lost segment first');
  const bytes = out.reduce((n, s) => n + s.data.length, 0);
  t.ok(bytes >= 7 * MSS, `PRR's slow-start reduction bound refills the pipe toward ssthresh on this ACK (${bytes / MSS} MSS sent)`);
});

t.test('a window ending inside a segment sends whole segments while more data waits; the last of the data goes as it is', async (t) => {
  const f = established(config({ sendBufferBytes: 1 << 20, initialCwndSegments: 10 }), { sackPermitted: true, windowScale: 7 });
  f.conn.useTso(16 * MSS);
  queue(f, 40 * MSS);
  const base = dataOf(f.dispatch())[0]!.repr.seq;
  // CUBIC's cwnd is in bytes: force one that ends mid-segment.
  f.conn.cc.cwnd = 12.4 * MSS;
  const out = dataOf(ackWith(f, base, 10, []));
  const sizes = out.map((s) => s.data.length);
  t.ok(
    sizes.every((n) => n % MSS === 0),
    `only whole segments (${sizes.join(', ')})`,
  );
  t.ok(out.reduce((n, s) => n + s.data.length, 0) >= 12 * MSS, 'all the whole segments the window allows');
  // The tail of the data: 40 MSS + 100 bytes in all, everything acknowledged up to the last 100.
  queue(f, 100);
  f.conn.cc.cwnd = 64 * MSS;
  const rest = dataOf(ackWith(f, base, 22, []));
  const last = rest[rest.length - 1]!;
  t.equal((last.repr.seq - base + last.data.length) / MSS, 40 + 100 / MSS, 'the last byte queued goes out');
  t.equal(last.data.length % MSS, 100, 'in a short last segment');
});
