/**
 * RFC 7323 5 PAWS (protection against wrapped sequences) and 4.3 (which
 * timestamp to echo), explicit clock: a segment whose TSval is older than
 * TS.Recent is an old duplicate, dropped and answered with an ACK.
 */
import t from 'tap';
import { TCP_ACK, TCP_PSH, TCP_RST } from '../../src/wire/tcp.js';
import { config, established, type Fixture } from './helpers.js';

/** An established connection with timestamps; the peer's SYN carried TSval `ts`. */
function withTimestamps(ts: number): Fixture {
  return established(config(), { hasTimestamps: true, tsVal: ts >>> 0 });
}

function dataWithTs(f: Fixture, ts: number, text: string, seq = f.peerSeq) {
  const out = f.send({ seq, flags: TCP_ACK | TCP_PSH, hasTimestamps: true, tsVal: ts >>> 0, tsEcr: 0 }, Buffer.from(text));
  return out;
}

t.test('RFC 7323 5.3 R1: data with a TSval older than TS.Recent is dropped and answered with an ACK', async (t) => {
  const f = withTimestamps(1000);
  dataWithTs(f, 2000, 'fresh');
  f.peerSeq += 5;
  t.equal(f.conn.recvAvailable, 5, 'a newer timestamp is accepted');
  const rcvNxt = f.conn.rcvNxt;
  const out = dataWithTs(f, 1500, 'stale');
  t.equal(f.conn.recvAvailable, 5, 'the old duplicate is not delivered');
  t.equal(f.conn.rcvNxt, rcvNxt, 'nor acknowledged');
  t.equal(out.length, 1, 'one ACK answers it');
  t.equal(out[0]!.repr.ack, rcvNxt, 'for RCV.NXT');
  t.equal(out[0]!.repr.tsEcr, 2000, 'echoing TS.Recent, not the stale TSval');
});

t.test('PAWS: an equal TSval is not old (several segments share one clock tick)', async (t) => {
  const f = withTimestamps(1000);
  dataWithTs(f, 1000, 'abc');
  f.peerSeq += 3;
  dataWithTs(f, 1000, 'def');
  f.peerSeq += 3;
  t.equal(f.conn.recvAvailable, 6, 'both accepted');
});

t.test('PAWS across the 2^32 wrap of the timestamp clock: compared in sequence space, never with raw <', async (t) => {
  const f = withTimestamps(0xffffff00);
  dataWithTs(f, 0x10, 'after the wrap');
  f.peerSeq += 14;
  t.equal(f.conn.recvAvailable, 14, 'TSval 0x10 is newer than 0xffffff00');
  dataWithTs(f, 0xfffffff0, 'before it');
  t.equal(f.conn.recvAvailable, 14, 'TSval 0xfffffff0 is now older: dropped');
});

t.test('RFC 7323 4.3: TS.Recent advances only for a segment at or below RCV.NXT, not for one out of order', async (t) => {
  const f = withTimestamps(1000);
  // A segment beyond a hole, with a high TSval: held out of order.
  dataWithTs(f, 9000, 'later', (f.peerSeq + 5) >>> 0);
  t.equal(f.conn.recvAvailable, 0, 'held out of order');
  // The hole's segment was sent earlier, with a lower TSval.
  dataWithTs(f, 1200, 'first');
  t.equal(f.conn.recvAvailable, 10, 'it is not taken for an old duplicate; both parts are delivered');
});

t.test('PAWS does not apply to a RST (RFC 7323 5.3 R1: only when the RST bit is off)', async (t) => {
  const f = withTimestamps(5000);
  f.send({ flags: TCP_RST, hasTimestamps: true, tsVal: 10 });
  t.equal(f.conn.state, 'CLOSED', 'an exact RST with an old TSval still resets');
  t.equal(f.rec.closed, 'reset');
});

t.test('every segment we send echoes TS.Recent in TSecr', async (t) => {
  const f = withTimestamps(777);
  t.equal(dataWithTs(f, 888, 'x').length, 0, 'a pushed short segment waits for an answer to carry its ACK (TcpOutput.interactive)');
  const out = f.advance(f.conn.config.interactiveAckMs);
  t.equal(out.length, 1, 'none came: the ACK on its own');
  t.ok(out[0]!.repr.hasTimestamps, 'carries timestamps');
  t.equal(out[0]!.repr.tsEcr, 888, 'TSecr is the last in-order TSval');
});
