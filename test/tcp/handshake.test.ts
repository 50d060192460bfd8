import t from 'tap';
import { TCP_ACK, TCP_SYN } from '../../src/wire/tcp.js';
import { config, established, synReceived, OUR_ISS, PEER_ISS } from './helpers.js';

t.test('plain SYN: SYN-ACK with our MSS, no options the peer did not offer', async (t) => {
  const f = synReceived(config(), {});
  const [synAck, ...rest] = f.rec.take();
  t.equal(rest.length, 0);
  t.equal(synAck!.repr.flags, TCP_SYN | TCP_ACK);
  t.equal(synAck!.repr.seq, OUR_ISS);
  t.equal(synAck!.repr.ack, PEER_ISS + 1);
  t.equal(synAck!.repr.mss, 1460);
  t.equal(synAck!.repr.windowScale, -1, 'RFC 7323 2.2: no WS unless the SYN had it');
  t.notOk(synAck!.repr.sackPermitted);
  t.notOk(synAck!.repr.hasTimestamps);
  t.equal(f.conn.state, 'SYN-RECEIVED');
});

t.test('SYN with every option: all negotiated, window unscaled in the SYN-ACK', async (t) => {
  const f = synReceived(config({ recvBufferBytes: 1 << 20 }), { windowScale: 7, sackPermitted: true, hasTimestamps: true, tsVal: 42 });
  const [synAck] = f.rec.take();
  t.equal(synAck!.repr.windowScale, 5, '1 MiB buffer needs shift 5 (2^20 >> 4 is still 65536)');
  t.ok(synAck!.repr.sackPermitted);
  t.ok(synAck!.repr.hasTimestamps);
  t.equal(synAck!.repr.tsEcr, 42, 'echoes the SYN timestamp');
  t.equal(synAck!.repr.window, 65535, 'a SYN-ACK window is never scaled');
  t.equal(f.conn.sendMss, 1460 - 12, 'timestamps take 12 bytes of every segment');
});

t.test('a retransmitted SYN gets the SYN-ACK again; a lost SYN-ACK is retransmitted with backoff', async (t) => {
  const f = synReceived();
  f.rec.take();
  const again = f.send({ seq: PEER_ISS, flags: TCP_SYN, ack: 0 });
  t.equal(again.length, 1);
  t.equal(again[0]!.repr.flags, TCP_SYN | TCP_ACK);
  t.equal(f.advance(999).length, 0, 'nothing before the 1 s initial RTO (RFC 6298 2.1)');
  const r1 = f.advance(1);
  t.equal(r1.length, 1, 'SYN-ACK retransmitted at 1 s');
  t.equal(f.advance(1999).length, 0);
  t.equal(f.advance(1).length, 1, 'then after 2 s (backoff)');
});

t.test('a half-open connection is abandoned after synRetries', async (t) => {
  const f = synReceived(config({ synRetries: 2 }));
  f.rec.take();
  f.advance(60_000);
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'timeout');
});

t.test('the final ACK establishes; an unacceptable ACK in SYN-RECEIVED draws a RST', async (t) => {
  const f = established();
  t.equal(f.conn.state, 'ESTABLISHED');
  t.equal(f.rec.established, 1);
  const g = synReceived();
  g.rec.take();
  const out = g.send({ flags: TCP_ACK, ack: OUR_ISS + 100 });
  t.equal(out.length, 1);
  t.ok(out[0]!.repr.flags & 0x04, 'RST');
});

t.test('sequence numbers wrap at 2^32 on both sides', async (t) => {
  const f = established(config(), {}, 0xffffff00, 0xfffffff0);
  const data = new Uint8Array(300).fill(7);
  const acks = f.send({ flags: TCP_ACK | 0x08 }, data);
  f.peerSeq = (f.peerSeq + 300) >>> 0;
  const all = [...acks, ...f.advance(100)];
  t.ok(all.some((s) => s.repr.ack === ((0xfffffff0 + 1 + 300) >>> 0)), 'ACK wraps past zero');
  t.equal(f.conn.recvAvailable, 300);
  f.conn.send(new Uint8Array(500).fill(1), 0, 500);
  const out = f.dispatch();
  t.equal(out[0]!.repr.seq, 0xffffff01);
  f.send({ flags: TCP_ACK, ack: (0xffffff01 + 500) >>> 0 });
  t.equal(f.conn.sndUna, (0xffffff01 + 500) >>> 0, 'a wrapped ACK is accepted');
  t.equal(f.conn.sendRing.length, 0);
});
