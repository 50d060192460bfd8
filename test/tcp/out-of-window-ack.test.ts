/**
 * RFC 9293 3.10.7.4: an unacceptable segment is answered with an ACK. For
 * segments without data the answers are rate limited (as Linux's
 * tcp_invalid_ratelimit), so a blind ACK flood onto an established tuple
 * draws at most two ACKs a second; segments with data are always answered.
 */
import t from 'tap';
import { TCP_ACK, TCP_PSH } from '../../src/wire/tcp.js';
import { OUT_OF_WINDOW_ACK_INTERVAL_MS } from '../../src/tcp/connection.js';
import { established } from './helpers.js';

t.test('out-of-window pure ACKs: one answer per interval, the rest counted', async (t) => {
  const f = established();
  const old = (f.peerSeq - 5000) >>> 0;
  const answers: number[] = [];
  for (let i = 0; i < 20; i++) {
    answers.push(f.send({ flags: TCP_ACK, seq: old }).length);
    f.now += 10;
  }
  t.equal(answers[0], 1, 'the first one is answered with an ACK');
  t.equal(answers.reduce((a, b) => a + b, 0), 1, 'the next 19 within 200 ms are not');
  t.equal(f.conn.outOfWindowAcksSuppressed, 19, 'and are counted');
  f.now += OUT_OF_WINDOW_ACK_INTERVAL_MS;
  const later = f.send({ flags: TCP_ACK, seq: old });
  t.equal(later.length, 1, 'after the interval the next one is answered again');
  t.equal(later[0]!.repr.ack, f.peerSeq, 'with our RCV.NXT');
  t.equal(f.conn.state, 'ESTABLISHED', 'the connection is untouched');
});

t.test('out-of-window data (a retransmission of what we have) is always acknowledged', async (t) => {
  const f = established();
  const data = Buffer.from('already have this');
  f.send({ flags: TCP_ACK | TCP_PSH }, data);
  f.peerSeq = (f.peerSeq + data.length) >>> 0;
  f.advance(500);
  const dup = (f.peerSeq - data.length) >>> 0;
  let answered = 0;
  for (let i = 0; i < 5; i++) answered += f.send({ flags: TCP_ACK | TCP_PSH, seq: dup }, data).length;
  t.equal(answered, 5, 'each duplicate gets its ACK (the peer needs it to move on)');
  t.equal(f.conn.outOfWindowAcksSuppressed, 0, 'nothing suppressed');
});
