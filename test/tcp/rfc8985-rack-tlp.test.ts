/**
 * RFC 8985 with an explicit clock, beside loss-recovery.test.ts: which
 * recovery a connection runs, the tail loss probe's timing and budget, and
 * lost-retransmission detection (RACK, with SACK) against NewReno (without
 * SACK, where only the RTO can repair a lost retransmission).
 */
import t from 'tap';
import { TCP_ACK, TCP_SYN } from '../../src/wire/tcp.js';
import { TcpConnection } from '../../src/tcp/connection.js';
import { RackTlpRecovery } from '../../src/tcp/rack-tlp.js';
import { NewRenoRecovery } from '../../src/tcp/loss-recovery.js';
import { MSS, Recorder, ackWith, config, dataOf, established, queue, seg, segIndex, withRtt } from './helpers.js';

t.test('the loss recovery follows SACK negotiation: RACK-TLP with it, NewReno without', async (t) => {
  t.ok(established(config(), { sackPermitted: true }).conn.recovery instanceof RackTlpRecovery, 'passive open, SACK permitted');
  t.ok(established(config()).conn.recovery instanceof NewRenoRecovery, 'passive open, no SACK');
  t.ok(established(config({ sack: false }), { sackPermitted: true }).conn.recovery instanceof NewRenoRecovery, 'SACK off in our config');
  // Active open: the SYN offers SACK; a SYN-ACK without it switches to NewReno.
  const rec = new Recorder();
  const c = TcpConnection.connect(config(), 0, { iss: 1, mss: 1460 }, rec);
  t.ok(c.recovery instanceof RackTlpRecovery, 'SYN-SENT expects SACK');
  c.dispatch(0, rec);
  c.process(1, seg({ seq: 500, ack: 2, flags: TCP_SYN | TCP_ACK, mss: 1460 }), new Uint8Array(0), 0, 0);
  t.equal(c.state, 'ESTABLISHED');
  t.ok(c.recovery instanceof NewRenoRecovery, 'the peer did not permit SACK');
});

t.test('the loss recovery is made with the first data sent, of the negotiated kind (issue 10: idle flows)', async (t) => {
  const made = (c: TcpConnection): boolean => (c as unknown as { lossRecovery: unknown }).lossRecovery !== null;
  const f = established(config(), { sackPermitted: true });
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt, seq: f.peerSeq }, Buffer.from('hello'));
  f.advance(1000);
  t.notOk(made(f.conn), 'a handshake, data received and ACKs sent: none yet');
  t.equal(f.conn.lossProbes, 0);
  t.equal(f.conn.lostRetransmits, 0);
  t.notOk(f.conn.inRecovery);
  queue(f, MSS);
  f.dispatch();
  t.ok(made(f.conn), 'made for the first data segment');
  t.ok(f.conn.recovery instanceof RackTlpRecovery);
  // Active open, nothing asked of the recovery before a SYN-ACK without SACK: made as NewReno.
  const rec = new Recorder();
  const c = TcpConnection.connect(config(), 0, { iss: 1, mss: 1460 }, rec);
  c.dispatch(0, rec);
  c.process(1, seg({ seq: 500, ack: 2, flags: TCP_SYN | TCP_ACK, mss: 1460 }), new Uint8Array(0), 0, 0);
  t.notOk(made(c), 'none after the handshake');
  t.ok(c.recovery instanceof NewRenoRecovery, 'the peer did not permit SACK');
});

t.test('TLP needs SACK (RFC 8985 7.2): without it a lost tail waits for the RTO', async (t) => {
  const f = withRtt(2, false);
  queue(f, 4 * MSS);
  const base = dataOf(f.dispatch())[0]!.repr.seq;
  f.now = 4;
  ackWith(f, base, 2, []);
  const rto = f.conn.rtt.rto;
  t.equal(f.conn.recovery.probeAt, Infinity, 'no probe scheduled');
  t.equal(dataOf(f.advance(rto - 1)).length, 0, 'silence until the RTO');
  const out = dataOf(f.advance(1));
  t.same(out.map((s) => segIndex(s, base)), [2], 'the RTO resends from SND.UNA');
  t.equal(f.conn.lossProbes, 0);
  t.equal(f.conn.timeouts, 1);
});

t.test('TLP: a flight of one segment adds the peer\'s delayed-ACK time to the PTO (RFC 8985 7.2 WCDelAckT)', async (t) => {
  const f = withRtt(2);
  queue(f, MSS);
  const base = dataOf(f.dispatch())[0]!.repr.seq;
  const pto = Math.max(2 * f.conn.rtt.srtt, 1) + f.conn.config.delayedAckMs;
  t.equal(f.conn.recovery.probeAt, f.now + pto, `PTO = 2*SRTT + ${f.conn.config.delayedAckMs} ms`);
  t.equal(dataOf(f.advance(pto - 0.5)).length, 0, 'no probe at 2*SRTT: the lone segment may sit in a delayed ACK');
  const probe = dataOf(f.advance(1));
  t.same(probe.map((s) => segIndex(s, base)), [0], 'then the segment again');
  t.equal(f.conn.lossProbes, 1);
  // The resent segment counts once, on the connection and in the totals
  // (it counted twice in the totals once).
  t.equal(f.conn.retransmits, 1, 'one retransmission');
  t.equal((f.conn as unknown as { totals: { retransmits: number } }).totals.retransmits, 1, 'one in the running totals');
  f.send({ flags: TCP_ACK, ack: (base + MSS) >>> 0 });
  t.equal(f.conn.recovery.probeAt, Infinity, 'nothing in flight: no probe');
});

t.test('TLP: never scheduled at or after the retransmission timer', async (t) => {
  const f = withRtt(2);
  queue(f, 2 * MSS);
  f.dispatch();
  const timer = f.conn.timer;
  t.equal(timer.kind, 'retransmit');
  t.ok(timer.kind === 'retransmit' && f.conn.recovery.probeAt < timer.at, 'the probe comes before the RTO');
  f.advance(f.conn.rtt.rto + 1); // two probes, then the RTO
  t.equal(f.conn.timeouts, 1);
  t.equal(f.conn.recovery.probeAt, Infinity, 'after a timeout no probe: the RTO and its backoff pace an unresponsive peer');
});

t.test('RACK: a retransmission lost twice is found lost twice, each by a later delivery, without a timeout', async (t) => {
  const f = withRtt(10);
  queue(f, 8 * MSS);
  const base = dataOf(f.dispatch())[0]!.repr.seq;
  f.now = 20;
  t.same(dataOf(ackWith(f, base, 0, [[1, 4]])).map((s) => segIndex(s, base)), [0], 'segment 0 lost, resent');
  f.now = 30;
  t.equal(dataOf(ackWith(f, base, 0, [[1, 8]])).length, 0, 'SACKs of segments sent before the retransmission say nothing about it');
  queue(f, MSS);
  f.dispatch(); // segment 8, sent after the first retransmission
  f.now = 45;
  const second = dataOf(ackWith(f, base, 0, [[1, 9]])).map((s) => segIndex(s, base));
  t.ok(second.includes(0), 'the SACK of segment 8 shows the retransmission lost: resent again');
  t.equal(f.conn.lostRetransmits, 1);
  queue(f, MSS);
  f.dispatch(); // segment 9, after the second retransmission
  f.now = 60;
  const third = dataOf(ackWith(f, base, 0, [[1, 10]])).map((s) => segIndex(s, base));
  t.ok(third.includes(0), 'and once more when segment 9 is SACKed');
  t.equal(f.conn.lostRetransmits, 2, 'two lost retransmissions');
  t.equal(f.conn.timeouts, 0, 'no RTO');
  ackWith(f, base, 10, []);
  t.equal(f.conn.sendRing.length, 0, 'all delivered');
});

t.test('NewReno (no SACK): a lost fast retransmission is not resent on more duplicate ACKs; only the RTO repairs it', async (t) => {
  const f = withRtt(10, false);
  queue(f, 8 * MSS);
  const base = dataOf(f.dispatch())[0]!.repr.seq;
  f.now = 20;
  const fr = [...ackWith(f, base, 0, []), ...ackWith(f, base, 0, []), ...ackWith(f, base, 0, [])];
  t.same(dataOf(fr).map((s) => segIndex(s, base)), [0], 'three duplicate ACKs: the fast retransmit of segment 0');
  t.ok(f.conn.inRecovery);
  let resent = 0;
  for (let i = 0; i < 4; i++) resent += dataOf(ackWith(f, base, 0, [])).filter((s) => segIndex(s, base) === 0).length;
  t.equal(resent, 0, 'further duplicates do not resend segment 0 (NewReno cannot tell a lost retransmission)');
  const out = dataOf(f.advance(f.conn.rtt.rto + 1));
  t.ok(out.some((s) => segIndex(s, base) === 0), 'the RTO resends it');
  t.equal(f.conn.timeouts, 1);
  t.equal(f.conn.lostRetransmits, 0);
});
