import t from 'tap';
import { RttEstimator } from '../../src/tcp/rtt.js';

t.test('RFC 6298: initial RTO 1 s, first sample sets SRTT and RTTVAR', async (t) => {
  const r = new RttEstimator({ initialRtoMs: 1000, minRtoMs: 200, maxRtoMs: 60_000, granularityMs: 4 });
  t.equal(r.rto, 1000);
  r.sample(100);
  t.equal(r.srtt, 100);
  t.equal(r.rttvar, 50);
  t.equal(r.rto, 300, 'SRTT + 4 * RTTVAR');
});

t.test('RFC 6298 2.3: later samples smooth with alpha 1/8 and beta 1/4', async (t) => {
  const r = new RttEstimator({ initialRtoMs: 1000, minRtoMs: 1, maxRtoMs: 60_000, granularityMs: 1 });
  r.sample(100);
  r.sample(200);
  t.equal(r.rttvar, 0.75 * 50 + 0.25 * 100);
  t.equal(r.srtt, 0.875 * 100 + 0.125 * 200);
  t.equal(r.rto, r.srtt + 4 * r.rttvar);
});

t.test('minimum, granularity, backoff doubling, maximum, reset by a sample', async (t) => {
  const r = new RttEstimator({ initialRtoMs: 1000, minRtoMs: 200, maxRtoMs: 5000, granularityMs: 4 });
  r.sample(1);
  t.equal(r.rto, 200, 'clamped to the minimum');
  r.backoff();
  t.equal(r.rto, 400);
  r.backoff();
  r.backoff();
  t.equal(r.rto, 1600);
  for (let i = 0; i < 10; i++) r.backoff();
  t.equal(r.rto, 5000, 'clamped to the maximum');
  r.sample(10);
  t.equal(r.backoffs, 0, 'a fresh sample ends the backoff');
});

t.test('RFC 6298 5.7: 3 s after a retransmitted handshake without samples', async (t) => {
  const r = new RttEstimator();
  r.backoff();
  r.resetAfterHandshakeRetransmit();
  t.equal(r.rto, 3000);
  const s = new RttEstimator();
  s.sample(50);
  s.resetAfterHandshakeRetransmit();
  t.equal(s.rto, 200, 'a measured connection keeps its RTO');
});
