/**
 * The connection's timers with an explicit clock: keepalive (RFC 9293
 * 3.8.4), the FIN-WAIT-2 bound, FIN retransmission after an RTO (RFC 6298
 * 5.4 on a FIN; the RFC state never moves back), TIME-WAIT and the persist
 * timer (RFC 9293 3.8.6.1). The exclusive ones are one `timer` union.
 */
import t from 'tap';
import { TCP_ACK, TCP_FIN, TCP_RST } from '../../src/wire/tcp.js';
import { config, established, finWait1, finWait2, timeWait, type Sent } from './helpers.js';

const MSS = 1460;
const fins = (out: Sent[]): Sent[] => out.filter((s) => (s.repr.flags & TCP_FIN) !== 0);
const data = (out: Sent[]): Sent[] => out.filter((s) => s.data.length > 0);

t.test('keepalive (RFC 9293 3.8.4): after the idle time a probe at SND.NXT-1, then every interval, then the connection ends', async (t) => {
  const f = established(config({ keepAliveIdleMs: 1000, keepAliveIntervalMs: 100, keepAliveProbes: 3 }));
  t.equal(f.advance(999).length, 0, 'nothing while the idle time runs');
  const probe = f.advance(1);
  t.equal(probe.length, 1, 'one probe at 1000 ms');
  t.equal(probe[0]!.repr.seq, (f.conn.sndNxt - 1) >>> 0, 'SEG.SEQ = SND.NXT-1, which the peer must answer with an ACK');
  t.equal(probe[0]!.repr.flags, TCP_ACK, 'a bare ACK');
  t.equal(probe[0]!.data.length, 0, 'without data');
  t.equal(f.advance(99).length, 0);
  t.equal(f.advance(1).length, 1, 'the second probe one interval later');
  t.equal(f.advance(100).length, 1, 'the third');
  t.equal(f.conn.state, 'ESTABLISHED');
  f.advance(100);
  t.equal(f.conn.state, 'CLOSED', 'keepAliveProbes unanswered: the peer is gone');
  t.equal(f.rec.closed, 'timeout');
});

t.test('keepalive: an answer restarts the idle time, so a live peer is probed but never dropped', async (t) => {
  const f = established(config({ keepAliveIdleMs: 1000, keepAliveIntervalMs: 100, keepAliveProbes: 2 }));
  for (let round = 0; round < 5; round++) {
    t.equal(f.advance(1000).length, 1, `round ${round}: a probe after 1000 ms idle`);
    f.now += 10;
    t.equal(f.send({ flags: TCP_ACK }).length, 0, 'the peer answers; nothing to say back');
    t.equal(f.advance(999).length, 0, 'the idle time starts again from the answer, no interval probe');
    f.now -= 999;
  }
  t.equal(f.conn.state, 'ESTABLISHED', 'five rounds later still open');
});

t.test('keepalive is off by default (RFC 9293 3.8.4: it MUST default to off)', async (t) => {
  const f = established();
  t.equal(f.advance(10 * 3600_000).length, 0, 'ten idle hours: nothing sent');
  t.equal(f.conn.state, 'ESTABLISHED');
  t.equal(f.conn.pollAt(), Infinity, 'no timer at all');
});

t.test('FIN-WAIT-2: its bound is the exclusive timer, and expires into CLOSED (timeout)', async (t) => {
  const f = finWait2(config({ finWait2TimeoutMs: 1000 }));
  t.same(f.conn.timer, { kind: 'fin-wait-2', at: 1000 }, 'armed when our FIN was acknowledged');
  t.equal(f.advance(999).length, 0);
  t.equal(f.conn.state, 'FIN-WAIT-2');
  f.advance(1);
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'timeout');
  t.same(f.conn.timer, { kind: 'idle' });
});

t.test('FIN-WAIT-1 is not bounded by the FIN-WAIT-2 timeout: the unacknowledged FIN is retransmitted until maxRetries', async (t) => {
  const f = finWait1(config({ finWait2TimeoutMs: 1000, maxRetries: 4 }));
  t.equal(f.conn.timer.kind, 'retransmit');
  const out = f.advance(1500);
  t.equal(f.conn.state, 'FIN-WAIT-1', 'still waiting for the ACK of our FIN after 1500 ms');
  t.ok(fins(out).length >= 2, `the FIN went out again (${fins(out).length} times)`);
  const rest = f.advance(60_000);
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'timeout', 'given up after maxRetries');
  t.ok(rest.some((s) => (s.repr.flags & TCP_RST) !== 0), 'with a RST to the peer');
});

t.test('FIN retransmission after an RTO: the same FIN again, backed off; state and SND.NXT do not move back', async (t) => {
  const f = finWait1();
  const finSeq = (f.conn.sndNxt - 1) >>> 0;
  const sndNxt = f.conn.sndNxt;
  const rto = f.conn.rtt.rto;
  t.equal(f.advance(rto - 1).length, 0, 'no tail loss probe without SACK, nothing before the RTO');
  const first = f.advance(1);
  t.equal(first.length, 1, 'one segment at the RTO');
  t.equal(first[0]!.repr.flags & TCP_FIN, TCP_FIN, 'the FIN');
  t.equal(first[0]!.repr.seq, finSeq, 'at its own sequence number');
  t.equal(f.conn.state, 'FIN-WAIT-1', 'the RFC state stays');
  t.equal(f.conn.sndNxt, sndNxt, 'SND.NXT stays');
  t.equal(f.conn.timeouts, 1);
  t.equal(f.conn.retransmits, 1, 'counted as a retransmission');
  t.equal(f.advance(2 * rto - 1).length, 0, 'the timer backed off');
  t.equal(fins(f.advance(1)).length, 1, 'the FIN a third time at twice the RTO');
  f.send({ flags: TCP_ACK, ack: sndNxt });
  t.equal(f.conn.state, 'FIN-WAIT-2', 'its ACK moves on');
  t.equal(f.conn.timer.kind, 'fin-wait-2', 'and the retransmission timer gave way to the FIN-WAIT-2 bound');
});

t.test('FIN retransmission after an RTO without SACK: the lost data first, the FIN after it, in sequence', async (t) => {
  const payload = Buffer.alloc(2 * MSS, 0x5a);
  const f = finWait1(config(), {}, payload);
  // finWait1 dispatched the data and the FIN; find them.
  const base = (f.conn.sndUna) >>> 0;
  const finSeq = (base + 2 * MSS) >>> 0;
  t.equal(f.conn.sndNxt, (finSeq + 1) >>> 0, 'two segments and the FIN in flight');
  const atRto = f.advance(f.conn.rtt.rto);
  t.same(atRto.map((s) => [s.repr.seq - base, s.data.length, s.repr.flags & TCP_FIN]), [[0, MSS, 0]], 'cwnd one segment: the first segment only, no FIN ahead of lost data');
  t.equal(f.conn.state, 'FIN-WAIT-1');
  const next = f.send({ flags: TCP_ACK, ack: (base + MSS) >>> 0 });
  t.same(next.map((s) => [s.repr.seq - base, s.data.length, s.repr.flags & TCP_FIN]), [
    [MSS, MSS, 0],
    [2 * MSS, 0, TCP_FIN],
  ], 'slow start: the second segment, then the FIN at its sequence number');
  f.send({ flags: TCP_ACK, ack: (finSeq + 1) >>> 0 });
  t.equal(f.conn.state, 'FIN-WAIT-2');
  t.equal(data(f.advance(5000)).length, 0, 'nothing resent once acknowledged');
});

t.test('FIN retransmission in LAST-ACK and in CLOSING', async (t) => {
  t.test('LAST-ACK', async (t) => {
    const f = established();
    f.send({ flags: TCP_FIN | TCP_ACK });
    f.peerSeq++;
    f.conn.shutdownWrite();
    const fin = fins(f.dispatch());
    t.equal(f.conn.state, 'LAST-ACK');
    const again = fins(f.advance(f.conn.rtt.rto));
    t.equal(again.length, 1, 'the FIN again at the RTO');
    t.equal(again[0]!.repr.seq, fin[0]!.repr.seq);
    t.equal(f.conn.state, 'LAST-ACK');
    f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });
    t.equal(f.conn.state, 'CLOSED');
    t.equal(f.rec.closed, 'fin');
  });
  t.test('CLOSING', async (t) => {
    const f = finWait1();
    const sndNxt = f.conn.sndNxt;
    f.send({ flags: TCP_FIN | TCP_ACK, ack: (sndNxt - 1) >>> 0 }); // their FIN crosses ours, ours is lost
    f.peerSeq++;
    t.equal(f.conn.state, 'CLOSING');
    const again = fins(f.advance(f.conn.rtt.rto));
    t.equal(again.length, 1, 'our FIN again at the RTO');
    t.equal(again[0]!.repr.ack, f.peerSeq, 'acknowledging theirs');
    t.equal(f.conn.state, 'CLOSING', 'the state stays');
    f.send({ flags: TCP_ACK, ack: sndNxt });
    t.equal(f.conn.state, 'TIME-WAIT');
  });
});

t.test('TIME-WAIT: the exclusive timer, a retransmitted FIN restarts it, expiry closes with reason fin', async (t) => {
  const f = timeWait(config({ timeWaitMs: 2000 }));
  t.same(f.conn.timer, { kind: 'time-wait', at: 2000 });
  t.equal(f.conn.send(Buffer.from('x'), 0, 1), 0, 'nothing more can be sent');
  f.advance(1500);
  f.peerSeq--;
  t.equal(f.send({ flags: TCP_FIN | TCP_ACK }).length, 1, 'a retransmitted FIN is acknowledged again');
  f.peerSeq++;
  t.same(f.conn.timer, { kind: 'time-wait', at: 3500 }, 'and restarts TIME-WAIT (RFC 9293 3.10.7.4)');
  f.advance(1999);
  t.equal(f.conn.state, 'TIME-WAIT');
  f.advance(1);
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'fin');
});

t.test('persist timer (RFC 9293 3.8.6.1): a zero window with data waiting probes at SND.UNA-1, backed off; the opening window ends it', async (t) => {
  const f = established();
  f.send({ flags: TCP_ACK, window: 0 });
  f.conn.send(Buffer.alloc(100, 1), 0, 100);
  t.equal(f.dispatch().length, 0, 'nothing fits a zero window');
  const rto = f.conn.rtt.rto;
  t.same(f.conn.timer, { kind: 'persist', at: f.now + rto }, 'the persist timer, not the retransmission timer');
  const probe = f.advance(rto);
  t.equal(probe.length, 1, 'a probe');
  t.equal(probe[0]!.repr.seq, (f.conn.sndUna - 1) >>> 0, 'at SND.UNA-1');
  t.equal(probe[0]!.data.length, 0);
  t.equal(f.advance(2 * rto - 1).length, 0, 'backed off');
  t.equal(f.advance(1).length, 1, 'the second probe at twice the interval');
  t.equal(f.conn.windowProbes, 2);
  const out = f.send({ flags: TCP_ACK, window: 65535 });
  t.equal(data(out).length, 1, 'the window opens: the data goes');
  t.equal(f.conn.timer.kind, 'retransmit', 'and the retransmission timer replaces the persist timer');
});
