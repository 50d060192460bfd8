/**
 * RFC 5961 in SYN-RECEIVED (issue 12 item 8): blind segments onto a
 * half-open connection change nothing; only an exact RST ends it; answers
 * are rate limited (section 7); a bad ACK draws <SEQ=SEG.ACK><CTL=RST>
 * (RFC 9293 3.10.7.4) without aborting. Plus the SYN-cookie passive open.
 */
import t from 'tap';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../src/wire/tcp.js';
import { CHALLENGE_ACKS_PER_SECOND, TcpConnection } from '../../src/tcp/connection.js';
import { OUR_ISS, PEER_ISS, Recorder, config, seg, synReceived } from './helpers.js';

function half() {
  const f = synReceived();
  const synAck = f.rec.take();
  return { f, synAck };
}

t.test('3.2: a RST exactly at RCV.NXT ends the half-open connection', async (t) => {
  const { f } = half();
  f.send({ flags: TCP_RST, ack: 0 });
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'reset');
});

t.test('3.2: an in-window RST that is not exact draws a challenge (the SYN-ACK again) and changes nothing', async (t) => {
  const { f } = half();
  const out = f.send({ flags: TCP_RST, seq: (f.peerSeq + 100) >>> 0 });
  t.equal(f.conn.state, 'SYN-RECEIVED');
  t.equal(out.length, 1);
  t.equal(out[0]!.repr.flags, TCP_SYN | TCP_ACK, 'before the handshake the challenge ACK is the SYN-ACK');
  t.equal(f.conn.challengeAcks, 1);
  t.equal(f.rec.closed, null);
});

t.test('a RST outside the window is dropped silently', async (t) => {
  const { f } = half();
  const out = f.send({ flags: TCP_RST, seq: (f.peerSeq + 10_000_000) >>> 0 });
  t.equal(out.length, 0);
  t.equal(f.conn.state, 'SYN-RECEIVED');
});

t.test('4.2: a SYN with another sequence number draws a challenge; the same SYN is a retransmission', async (t) => {
  const { f } = half();
  let out = f.send({ flags: TCP_SYN, ack: 0, seq: (f.peerSeq + 5) >>> 0 });
  t.equal(f.conn.state, 'SYN-RECEIVED');
  t.equal(f.conn.challengeAcks, 1, 'in-window SYN: challenge');
  t.equal(out.length, 1);
  out = f.send({ flags: TCP_SYN, ack: 0, seq: PEER_ISS });
  t.equal(out.length, 1, 'the retransmitted SYN is answered with the SYN-ACK');
  t.equal(out[0]!.repr.flags, TCP_SYN | TCP_ACK);
  t.equal(f.conn.state, 'SYN-RECEIVED');
});

t.test('RFC 9293 3.10.7.4: a bad ACK draws <SEQ=SEG.ACK><CTL=RST> and the handshake survives', async (t) => {
  const { f } = half();
  const bogus = (OUR_ISS + 777_777) >>> 0;
  const out = f.send({ flags: TCP_ACK, ack: bogus });
  t.equal(out.length, 1);
  t.equal(out[0]!.repr.flags, TCP_RST, 'a bare RST');
  t.equal(out[0]!.repr.seq, bogus, 'SEQ=SEG.ACK');
  t.equal(f.conn.state, 'SYN-RECEIVED', 'not aborted');
  t.equal(f.rec.closed, null);
  f.send({ flags: TCP_ACK, ack: (OUR_ISS + 1) >>> 0 });
  t.equal(f.conn.state, 'ESTABLISHED', 'the real ACK still completes it');
  t.equal(f.rec.established, 1);
});

t.test('section 7: a blind flood onto the tuple draws at most CHALLENGE_ACKS_PER_SECOND answers per second, then the handshake completes', async (t) => {
  const { f } = half();
  let answers = 0;
  let x = 0x2468ace;
  for (let i = 0; i < 1000; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const kind = i % 4;
    const fields =
      kind === 0
        ? { flags: TCP_RST, seq: (f.peerSeq + 1 + (x & 0xfff)) >>> 0 }
        : kind === 1
          ? { flags: TCP_ACK, ack: x >>> 0 }
          : kind === 2
            ? { flags: TCP_RST | TCP_ACK, seq: (f.peerSeq + 1 + (x & 0xfff)) >>> 0, ack: x >>> 0 }
            : { flags: TCP_SYN, ack: 0, seq: (f.peerSeq + 1 + (x & 0xfff)) >>> 0 };
    answers += f.send(fields).length;
  }
  t.equal(f.conn.state, 'SYN-RECEIVED', '1000 blind segments: still half-open');
  t.ok(answers <= CHALLENGE_ACKS_PER_SECOND, `answers within the first second: ${answers}`);
  t.ok(f.conn.challengesSuppressed > 900, `suppressed: ${f.conn.challengesSuppressed}`);
  f.now += 1000;
  const later = f.send({ flags: TCP_RST, seq: (f.peerSeq + 9) >>> 0 });
  t.equal(later.length, 1, 'a second later the budget is back');
  f.send({ flags: TCP_ACK, ack: (OUR_ISS + 1) >>> 0 });
  t.equal(f.conn.state, 'ESTABLISHED', 'the genuine ACK completes the handshake');
});

t.test('SYN cookie passive open: no SYN-ACK of its own, the ACK establishes it, data on the ACK kept', async (t) => {
  const rec = new Recorder();
  const cookie = 0x8abcdef1;
  const syn = seg({ seq: PEER_ISS, flags: TCP_SYN, mss: 1460, windowScale: 7, sackPermitted: true, hasTimestamps: true, tsVal: 500, window: 1000 });
  const conn = TcpConnection.acceptCookie(config({ recvBufferBytes: 1 << 20 }), 0, syn, { iss: cookie, mss: 1460 }, rec);
  t.equal(conn.state, 'SYN-RECEIVED');
  conn.dispatch(0, rec);
  t.equal(rec.take().length, 0, 'nothing sent: the stack already sent the cookie SYN-ACK');
  const data = new TextEncoder().encode('GET / HTTP/1.1\r\n\r\n');
  conn.process(5, seg({ seq: PEER_ISS + 1, ack: (cookie + 1) >>> 0, flags: TCP_ACK, window: 100, hasTimestamps: true, tsVal: 501, tsEcr: 0 }), data, 0, data.length);
  t.equal(conn.state, 'ESTABLISHED');
  t.equal(rec.established, 1);
  t.equal(conn.recvAvailable, data.length, 'the data that came with the ACK is in the receive ring');
  t.equal(conn.sndWnd, 100 << 7, 'the peer window scaled by the shift the cookie carried');
  conn.process(6, seg({ seq: PEER_ISS + 1 + data.length, ack: (cookie + 1) >>> 0, flags: TCP_ACK | TCP_FIN, window: 100, hasTimestamps: true, tsVal: 502 }), new Uint8Array(0), 0, 0);
  t.equal(conn.state, 'CLOSE-WAIT');
});
