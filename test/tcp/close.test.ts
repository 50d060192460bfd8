/** RFC 9293 3.6: closing in every order. */
import t from 'tap';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST } from '../../src/wire/tcp.js';
import { config, established, finWait2, type Fixture } from './helpers.js';

t.test('peer closes first: CLOSE-WAIT, we keep sending, then LAST-ACK and CLOSED', async (t) => {
  const f = established();
  const ack = f.send({ flags: TCP_FIN | TCP_ACK });
  f.peerSeq++;
  t.equal(f.conn.state, 'CLOSE-WAIT');
  t.equal(f.rec.peerFin, 1);
  t.equal(ack[0]!.repr.ack, f.peerSeq, 'the FIN is acknowledged');
  t.equal(f.conn.send(Buffer.from('still talking'), 0, 13), 13, 'half-close: we can still send');
  const data = f.dispatch();
  t.equal(data[0]!.data.toString(), 'still talking');
  f.conn.shutdownWrite();
  const fin = f.dispatch();
  t.ok(fin.some((s) => s.repr.flags & TCP_FIN));
  t.equal(f.conn.state, 'LAST-ACK');
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'fin');
});

t.test('we close first: FIN-WAIT-1, FIN-WAIT-2 (peer still sends), TIME-WAIT, CLOSED after the bound', async (t) => {
  const f = established(config({ timeWaitMs: 2000 }));
  f.conn.shutdownWrite();
  const fin = f.dispatch();
  t.equal(fin.length, 1);
  t.ok(fin[0]!.repr.flags & TCP_FIN);
  t.equal(f.conn.state, 'FIN-WAIT-1');
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });
  t.equal(f.conn.state, 'FIN-WAIT-2');
  f.send({ flags: TCP_ACK | 0x08 }, Buffer.from('late data'));
  f.peerSeq += 9;
  t.equal(f.conn.recvAvailable, 9, 'half-close the other way: data still arrives');
  f.send({ flags: TCP_FIN | TCP_ACK });
  f.peerSeq++;
  t.equal(f.conn.state, 'TIME-WAIT');
  f.advance(1999);
  t.equal(f.conn.state, 'TIME-WAIT');
  f.advance(2);
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'fin');
});

t.test('simultaneous close goes through CLOSING', async (t) => {
  const f = established();
  f.conn.shutdownWrite();
  f.dispatch();
  const finSeqNext = f.conn.sndNxt;
  // Their FIN crosses ours: it does not acknowledge our FIN.
  f.send({ flags: TCP_FIN | TCP_ACK, ack: (finSeqNext - 1) >>> 0 });
  f.peerSeq++;
  t.equal(f.conn.state, 'CLOSING');
  f.send({ flags: TCP_ACK, ack: finSeqNext });
  t.equal(f.conn.state, 'TIME-WAIT');
});

t.test('abort sends RST and closes', async (t) => {
  const f = established();
  f.conn.abort();
  const out = f.dispatch();
  t.ok(out[0]!.repr.flags & 0x04);
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'aborted');
});

t.test('a retransmitted FIN in TIME-WAIT is acknowledged again', async (t) => {
  const f = established();
  f.conn.shutdownWrite();
  f.dispatch();
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });
  f.send({ flags: TCP_FIN | TCP_ACK });
  t.equal(f.conn.state, 'TIME-WAIT');
  const again = f.send({ flags: TCP_FIN | TCP_ACK }); // same seq: a retransmission
  t.equal(again.length, 1, 'ACKed again');
});

t.test('RFC 9293 3.6: FIN-WAIT-2 is a half-close; the peer may send for longer than finWait2TimeoutMs', async (t) => {
  const f = finWait2(config({ finWait2TimeoutMs: 1000 }));
  t.equal(f.conn.state, 'FIN-WAIT-2');
  const chunk = Buffer.alloc(100, 0x41);
  // 5 s of upload, a segment every 400 ms, the reader keeping up.
  const sink = Buffer.alloc(200);
  for (let i = 0; i < 12; i++) {
    const out = f.advance(400);
    t.notOk(out.some((s) => s.repr.flags & TCP_RST), `no RST at ${f.now} ms`);
    f.send({ flags: TCP_ACK | TCP_PSH }, chunk);
    f.peerSeq += chunk.length;
    f.conn.recv(sink, 0, sink.length);
  }
  t.equal(f.conn.state, 'FIN-WAIT-2', `still open after ${f.now} ms of upload`);
  t.equal(f.conn.bytesReceived, 1200, 'every byte taken');
  t.equal(f.rec.closed, null);
  f.send({ flags: TCP_FIN | TCP_ACK });
  f.peerSeq++;
  t.equal(f.conn.state, 'TIME-WAIT', 'the peer FIN ends it normally');
});

t.test('FIN-WAIT-2: the bound is one of silence; a silent peer times out', async (t) => {
  const f = finWait2(config({ finWait2TimeoutMs: 1000 }));
  f.advance(600);
  f.send({ flags: TCP_ACK }); // an in-window ACK restarts the bound
  f.advance(999);
  t.equal(f.conn.state, 'FIN-WAIT-2', 'not yet: 999 ms of silence');
  f.advance(2);
  t.equal(f.conn.state, 'CLOSED');
  t.equal(f.rec.closed, 'timeout');
});

t.test('FIN-WAIT-2: an out-of-window segment does not restart the bound (blind injection)', async (t) => {
  const f = finWait2(config({ finWait2TimeoutMs: 1000 }));
  f.advance(600);
  f.send({ flags: TCP_ACK, seq: (f.peerSeq + 10_000_000) >>> 0 });
  f.advance(401);
  t.equal(f.conn.state, 'CLOSED', 'timed out 1000 ms after the last acceptable segment');
});

t.test('FIN-WAIT-2: unread bytes mean our reader stalls, not the peer: no timeout', async (t) => {
  const f = finWait2(config({ finWait2TimeoutMs: 1000 }));
  f.send({ flags: TCP_ACK | TCP_PSH }, Buffer.from('unread'));
  f.peerSeq += 6;
  f.advance(5000);
  t.equal(f.conn.state, 'FIN-WAIT-2', 'held while the application has not read');
  const buf = Buffer.alloc(16);
  t.equal(f.conn.recv(buf, 0, 16), 6);
  f.advance(1001);
  t.equal(f.conn.state, 'CLOSED', 'once read, silence times out');
  t.equal(f.rec.closed, 'timeout');
});

t.test('no window update once the peer\'s FIN is in: a LAST-ACK peer that took our ACK is CLOSED and would answer it with a RST', async (t) => {
  const opened = (withFin: boolean): { f: Fixture; segments: number; window: number } => {
    // The peer fills the window (64 KiB) to under two segments: a read then opens it with an update of its own.
    const f = finWait2(config());
    const chunk = Buffer.alloc(1400, 0x61);
    for (let i = 0; i < 46; i++) {
      f.send({ flags: TCP_ACK | TCP_PSH }, chunk);
      f.peerSeq += chunk.length;
    }
    if (withFin) {
      f.send({ flags: TCP_FIN | TCP_ACK });
      f.peerSeq++;
    }
    f.dispatch();
    f.advance(500); // every delayed ACK has gone out
    const before = f.dispatch().length;
    t.equal(before, 0, `${withFin ? 'TIME-WAIT' : 'FIN-WAIT-2'}: nothing pending before the read`);
    const buf = new Uint8Array(46 * 1400);
    t.equal(f.conn.recv(buf, 0, buf.length), 46 * 1400, 'the application reads what came');
    const out = f.dispatch();
    return { f, segments: out.length, window: out[0]?.repr.window ?? -1 };
  };
  const open = opened(false);
  t.equal(open.f.conn.state, 'FIN-WAIT-2');
  t.equal(open.segments, 1, 'FIN-WAIT-2 (the peer may still send): the read opens the window with an update');
  const closed = opened(true);
  t.equal(closed.f.conn.state, 'TIME-WAIT');
  t.equal(closed.segments, 0, 'TIME-WAIT (the peer\'s FIN is in): no window update goes out');
});
