/** RFC 5961: blind RST, SYN and ACK injection defences. */
import t from 'tap';
import { TCP_ACK, TCP_RST, TCP_SYN } from '../../src/wire/tcp.js';
import { established } from './helpers.js';

t.test('3.2: a RST exactly at RCV.NXT resets the connection', async (t) => {
  const f = established();
  f.send({ flags: TCP_RST });
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'reset');
});

t.test('3.2: an in-window RST that is not exact draws a challenge ACK and changes nothing', async (t) => {
  const f = established();
  const out = f.send({ flags: TCP_RST, seq: (f.peerSeq + 100) >>> 0 });
  t.equal(f.conn.state, 'ESTABLISHED');
  t.equal(out.length, 1);
  t.equal(out[0]!.repr.flags, TCP_ACK, 'a challenge ACK');
  t.equal(out[0]!.repr.ack, f.peerSeq, 'carrying RCV.NXT');
  t.equal(f.conn.challengeAcks, 1);
});

t.test('a RST outside the window is dropped silently', async (t) => {
  const f = established();
  const out = f.send({ flags: TCP_RST, seq: (f.peerSeq + 10_000_000) >>> 0 });
  t.equal(out.length, 0);
  t.equal(f.conn.state, 'ESTABLISHED');
});

t.test('4.2: a SYN in ESTABLISHED draws a challenge ACK', async (t) => {
  const f = established();
  const out = f.send({ flags: TCP_SYN, seq: (f.peerSeq + 5) >>> 0 });
  t.equal(f.conn.state, 'ESTABLISHED');
  t.equal(out.length, 1);
  t.equal(out[0]!.repr.flags, TCP_ACK);
});

t.test('5.2: an ACK for data never sent is answered with an ACK and ignored', async (t) => {
  const f = established();
  const una = f.conn.sndUna;
  const out = f.send({ flags: TCP_ACK, ack: (una + 5000) >>> 0 });
  t.equal(f.conn.sndUna, una);
  t.equal(out.length, 1);
});

t.test('5.2: an ACK older than SND.UNA - MAX.SND.WND draws a challenge ACK', async (t) => {
  const f = established();
  const out = f.send({ flags: TCP_ACK, ack: (f.conn.sndUna - 200_000) >>> 0 });
  t.equal(out.length, 1);
  t.equal(f.conn.challengeAcks, 1);
});
