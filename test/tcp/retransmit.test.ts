/** RFC 6298 timing, Karn, fast retransmit (RFC 5681) and SACK recovery (RFC 6675). */
import t from 'tap';
import { TCP_ACK } from '../../src/wire/tcp.js';
import { config, established } from './helpers.js';

function sendBytes(f: ReturnType<typeof established>, n: number): void {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = i & 0xff;
  f.conn.send(buf, 0, n);
}

t.test('RTO: first retransmission after the RTO (200 ms floor after a ~0 ms handshake sample), then doubled; an ACK stops the timer', async (t) => {
  const f = established();
  sendBytes(f, 100);
  const first = f.dispatch();
  t.equal(first.length, 1);
  const seq = first[0]!.repr.seq;
  const rto = f.conn.rtt.rto;
  t.equal(rto, 200, 'the handshake measured ~0 ms: RTO at its 200 ms floor');
  t.equal(f.advance(rto - 1).length, 0);
  const r1 = f.advance(1);
  t.equal(r1.length, 1);
  t.equal(r1[0]!.repr.seq, seq, 'the same data again (go back to SND.UNA)');
  t.equal(f.advance(2 * rto - 1).length, 0);
  t.equal(f.advance(1).length, 1, 'backoff: doubled');
  f.send({ flags: TCP_ACK, ack: (seq + 100) >>> 0 });
  t.equal(f.conn.pollAt(), Infinity, 'nothing outstanding, no timer');
  t.equal(f.conn.retransmits, 2);
});

t.test('Karn: an ACK of retransmitted data gives no RTT sample without timestamps', async (t) => {
  const f = established();
  sendBytes(f, 100);
  f.dispatch();
  f.advance(f.conn.rtt.rto); // retransmission
  const samples = f.conn.rtt.samples;
  f.now += 50;
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });
  t.equal(f.conn.rtt.samples, samples, 'no sample');
  sendBytes(f, 100);
  f.dispatch();
  f.now += 30;
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });
  t.equal(f.conn.rtt.samples, samples + 1, 'a fresh segment is timed');
});

t.test('three duplicate ACKs trigger a fast retransmit of the first segment only', async (t) => {
  const f = established();
  sendBytes(f, 1460 * 8);
  const out = f.dispatch();
  t.equal(out.length, 8, 'initial window of 10 segments allows all 8');
  const una = f.conn.sndUna;
  t.equal(f.send({ flags: TCP_ACK, ack: una }).length, 0);
  t.equal(f.send({ flags: TCP_ACK, ack: una }).length, 0);
  const fr = f.send({ flags: TCP_ACK, ack: una });
  t.equal(fr.length, 1, 'the third duplicate retransmits');
  t.equal(fr[0]!.repr.seq, una);
  t.equal(fr[0]!.data.length, 1460);
});

t.test('SACK recovery retransmits only the holes', async (t) => {
  const f = established(config(), { sackPermitted: true });
  sendBytes(f, 1460 * 8);
  f.dispatch();
  const base = f.conn.sndUna;
  const seqAt = (i: number) => (base + i * 1460) >>> 0;
  // Segments 0 and 3 were lost; 1-2 and 4-7 arrived.
  const sack = (blocks: [number, number][]) => {
    const r = { flags: TCP_ACK, ack: base, sackCount: blocks.length, sackLeft: new Uint32Array(4), sackRight: new Uint32Array(4) };
    blocks.forEach(([l, rr], i) => {
      r.sackLeft[i] = seqAt(l);
      r.sackRight[i] = seqAt(rr);
    });
    return f.send(r);
  };
  // advance(0.5): up to, not past, the tail loss probe (PTO >= 1 ms, RFC 8985 7.2), which would
  // legitimately send the last un-SACKed segment once more.
  const out = [...sack([[1, 3]]), ...sack([[4, 6], [1, 3]]), ...sack([[4, 8], [1, 3]]), ...f.advance(0.5)];
  const resent = out.filter((s) => s.data.length > 0).map((s) => (s.repr.seq - base) / 1460);
  t.same(resent.sort(), [0, 3], 'exactly the two holes are retransmitted, nothing SACKed');
  const partial = f.send({ flags: TCP_ACK, ack: seqAt(3), sackCount: 1, sackLeft: Uint32Array.of(seqAt(4), 0, 0, 0), sackRight: Uint32Array.of(seqAt(8), 0, 0, 0) });
  t.equal(partial.filter((s) => s.data.length > 0).length, 0, 'a partial ACK does not resend what recovery already sent');
  f.send({ flags: TCP_ACK, ack: seqAt(8) });
  t.equal(f.conn.sendRing.length, 0);
});

t.test('the connection gives up after maxRetries and resets the peer', async (t) => {
  const f = established(config({ maxRetries: 3, maxRtoMs: 2000 }));
  sendBytes(f, 10);
  f.dispatch();
  const out = f.advance(60_000);
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'timeout');
  t.ok(out.some((s) => s.repr.flags & 0x04), 'a RST tells the peer');
});
