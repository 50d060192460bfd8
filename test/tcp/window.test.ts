/** Flow control: zero window and probes, receive window and the reader, window scaling, out-of-order. */
import t from 'tap';
import { TCP_ACK, TCP_PSH } from '../../src/wire/tcp.js';
import { config, established } from './helpers.js';
import { INTERACTIVE_MISSES } from '../../src/tcp/output.js';

t.test('a zero window stops sending; probes back off; reopening resumes', async (t) => {
  const f = established();
  f.send({ flags: TCP_ACK, window: 0 });
  f.conn.send(Buffer.alloc(3000, 1), 0, 3000);
  t.equal(f.dispatch().filter((s) => s.data.length > 0).length, 0, 'nothing sent into a zero window');
  const rto = f.conn.rtt.rto;
  t.equal(f.advance(rto - 1).length, 0);
  const probes1 = f.advance(1);
  t.equal(probes1.length, 1, 'a probe after one RTO');
  t.equal(probes1[0]!.repr.seq, (f.conn.sndUna - 1) >>> 0, 'carrying SND.UNA - 1');
  t.equal(f.advance(2 * rto - 1).length, 0, 'the next one backs off');
  t.equal(f.advance(1).length, 1);
  const resumed = f.send({ flags: TCP_ACK, window: 65535 });
  t.equal(resumed.reduce((n, s) => n + s.data.length, 0), 3000, 'all data flows once the window opens');
});

t.test('an application that does not read shrinks the advertised window; reading reopens it', async (t) => {
  const f = established(config({ recvBufferBytes: 8192 }));
  const chunk = Buffer.alloc(1460, 9);
  let lastWindow = -1;
  for (let i = 0; i < 5; i++) {
    const out = f.send({ flags: TCP_ACK | TCP_PSH }, chunk);
    f.peerSeq += 1460;
    const acks = [...out, ...f.advance(50)];
    if (acks.length) lastWindow = acks[acks.length - 1]!.repr.window;
  }
  t.equal(f.conn.recvAvailable, 7300);
  t.equal(lastWindow, 8192 - 7300, 'advertised window = free buffer');
  const over = f.send({ flags: TCP_ACK | TCP_PSH }, Buffer.alloc(1460, 1));
  t.equal(f.conn.recvAvailable, 8192, 'only what fits is taken; the rest is not acknowledged');
  t.equal(over[0]?.repr.window ?? 0, 0, 'window closed');
  f.peerSeq += 892;
  const dst = Buffer.alloc(8192);
  t.equal(f.conn.recv(dst, 0, 8192), 8192);
  const update = f.dispatch();
  t.equal(update.length, 1, 'a window update after the reader drained the buffer');
  t.equal(update[0]!.repr.window, 8192);
});

/** A connection whose 8 KiB receive buffer the peer filled: our last ACK advertised a zero window. */
function zeroWindow(): ReturnType<typeof established> {
  const f = established(config({ recvBufferBytes: 8192 }));
  for (let i = 0; i < 5; i++) {
    f.send({ flags: TCP_ACK | TCP_PSH }, Buffer.alloc(1460, 9));
    f.peerSeq += 1460;
    f.advance(50);
  }
  const closing = f.send({ flags: TCP_ACK | TCP_PSH }, Buffer.alloc(892, 1));
  f.peerSeq += 892;
  if (closing[0]?.repr.window !== 0) throw new Error('fixture: the window did not close');
  return f;
}

t.test('a lost window update after a zero window is repeated until the peer sends again', async (t) => {
  const f = zeroWindow();
  t.equal(f.conn.recv(Buffer.alloc(8192), 0, 8192), 8192);
  const update = f.dispatch();
  t.equal(update.length, 1, 'the window update');
  t.equal(update[0]!.repr.window, 8192);
  // The update is lost on the wire. The peer's persist timer would back off to minutes; we repeat it.
  const rto = f.conn.rtt.rto;
  t.equal(f.advance(rto - 1).length, 0, 'nothing before one RTO');
  const again = f.advance(1);
  t.equal(again.length, 1, 'repeated after one RTO');
  t.equal(again[0]!.repr.window, 8192, 'with the open window');
  t.equal(again[0]!.repr.ack, f.peerSeq, 'acknowledging everything');
  t.equal(f.advance(2 * rto - 1).length, 0, 'the next one backs off');
  t.equal(f.advance(1).length, 1, 'after two RTOs');
  t.equal(f.conn.windowUpdatesResent, 2);
  // The peer sends again: it has seen the window, no more repeats.
  f.send({ flags: TCP_ACK | TCP_PSH }, Buffer.alloc(100, 3));
  f.peerSeq += 100;
  f.advance(50);
  t.equal(f.advance(60 * rto).filter((s) => s.data.length === 0 && s.repr.window > 0).length, 0, 'no repeats once data arrives');
  t.equal(f.conn.windowUpdatesResent, 2);
});

t.test('the repeats are bounded when the peer has nothing more to send', async (t) => {
  const f = zeroWindow();
  f.conn.recv(Buffer.alloc(8192), 0, 8192);
  f.dispatch();
  let repeats = 0;
  for (let i = 0; i < 200; i++) repeats += f.advance(f.conn.rtt.rto).length;
  t.equal(repeats, 6, 'WINDOW_UPDATE_RESENDS repeats, then the peer\'s own probes are relied on');
});

t.test('a window that never closed sends no repeats', async (t) => {
  const f = established(config({ recvBufferBytes: 8192 }));
  f.send({ flags: TCP_ACK | TCP_PSH }, Buffer.alloc(1460, 9));
  f.peerSeq += 1460;
  f.conn.recv(Buffer.alloc(8192), 0, 8192);
  f.advance(50);
  t.equal(f.advance(10_000).length, 0, 'silence');
  t.equal(f.conn.windowUpdatesResent, 0);
});

t.test('window scaling: the peer window is shifted, ours is announced shifted', async (t) => {
  const f = established(config({ recvBufferBytes: 1 << 20 }), { windowScale: 3 });
  f.send({ flags: TCP_ACK, window: 20000 });
  t.equal(f.conn.sndWnd, 160000, 'peer window << 3');
  f.conn.send(Buffer.alloc(100), 0, 100);
  const out = f.dispatch();
  t.equal(out[0]!.repr.window, (1 << 20) >>> 5, 'our window >> 5');
});

t.test('out-of-order segments are held, SACKed and delivered in order once the hole fills', async (t) => {
  const f = established(config(), { sackPermitted: true });
  const a = Buffer.alloc(100, 1);
  const b = Buffer.alloc(100, 2);
  const c = Buffer.alloc(100, 3);
  const s0 = f.peerSeq;
  const dup1 = f.send({ seq: (s0 + 200) >>> 0 }, c);
  t.equal(dup1[0]!.repr.ack, s0, 'a duplicate ACK at once');
  t.equal(dup1[0]!.repr.sackCount, 1);
  t.equal(dup1[0]!.repr.sackLeft[0], (s0 + 200) >>> 0);
  f.send({ seq: (s0 + 100) >>> 0 }, b);
  t.equal(f.conn.recvAvailable, 0);
  const ack = f.send({ seq: s0 }, a);
  t.equal(ack[0]!.repr.ack, (s0 + 300) >>> 0, 'hole filled: everything acknowledged at once');
  const out = Buffer.alloc(300);
  f.conn.recv(out, 0, 300);
  t.same(out, Buffer.concat([a, b, c]));
});

t.test('the out-of-order range cap bounds memory and counts the drop', async (t) => {
  const f = established(config({ maxOutOfOrderRanges: 2 }));
  const s0 = f.peerSeq;
  f.send({ seq: (s0 + 100) >>> 0 }, Buffer.alloc(10));
  f.send({ seq: (s0 + 200) >>> 0 }, Buffer.alloc(10));
  f.send({ seq: (s0 + 300) >>> 0 }, Buffer.alloc(10));
  t.equal(f.conn.outOfOrderDrops, 1);
});

t.test('delayed ACK: one small segment waits 40 ms; every second full segment is ACKed at once', async (t) => {
  const f = established();
  t.equal(f.send({}, Buffer.alloc(100)).length, 0, 'no immediate ACK');
  f.peerSeq += 100;
  t.equal(f.advance(39).length, 0);
  t.equal(f.advance(1).length, 1, 'ACK at 40 ms');
  t.equal(f.send({}, Buffer.alloc(1460)).length, 0);
  f.peerSeq += 1460;
  t.equal(f.send({}, Buffer.alloc(1460)).length, 1, 'second full segment: immediate ACK');
});

t.test('request/response: a request\'s ACK waits for our answer to carry it; a timer that runs out ends the mode, two end it for good', async (t) => {
  const f = established();
  const request = Buffer.alloc(120, 7);
  // A connection starts in the mode: the first request of a short connection is answered with its ACK on the answer.
  t.equal(f.send({ flags: TCP_ACK | TCP_PSH }, request).length, 0, 'the first request is not ACKed alone');
  f.peerSeq += 120;
  f.conn.send(Buffer.alloc(1000, 1), 0, 1000);
  const answer = f.dispatch();
  t.equal(answer.length, 1, 'one segment answers it');
  t.equal(answer[0]!.repr.ack, f.peerSeq, 'with its ACK');
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });

  // The next request too: one segment, not two.
  t.equal(f.send({ flags: TCP_ACK | TCP_PSH }, request).length, 0, 'the second request is not ACKed alone');
  f.peerSeq += 120;
  f.conn.send(Buffer.alloc(1000, 2), 0, 1000);
  const carried = f.dispatch();
  t.equal(carried.length, 1, 'one segment answers it');
  t.equal(carried[0]!.data.length, 1000, 'with the answer');
  t.equal(carried[0]!.repr.ack, f.peerSeq, 'and the ACK of the request');
  f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });

  // No answer this time: the ACK goes out after interactiveAckMs (not the 40 ms delayed ACK), and the mode ends.
  const wait = f.conn.config.interactiveAckMs;
  t.ok(wait < f.conn.config.delayedAckMs, `a request waits ${wait} ms, less than a delayed ACK`);
  t.equal(f.send({ flags: TCP_ACK | TCP_PSH }, request).length, 0);
  f.peerSeq += 120;
  t.equal(f.advance(wait - 1).length, 0, 'held for the answer');
  const late = f.advance(1);
  t.equal(late.length, 1, `the ACK goes out at ${wait} ms`);
  t.equal(late[0]!.repr.ack, f.peerSeq);
  const again = f.send({ flags: TCP_ACK | TCP_PSH }, request);
  f.peerSeq += 120;
  t.equal(again.length, 1, 'the next small push is ACKed at once again');
  t.equal(again[0]!.data.length, 0, 'a pure ACK');

  // Answered, the mode comes back; a second miss ends it for good (INTERACTIVE_MISSES).
  const answerAndAck = (): void => {
    f.conn.send(Buffer.alloc(500, 3), 0, 500);
    f.dispatch();
    f.send({ flags: TCP_ACK, ack: f.conn.sndNxt });
  };
  answerAndAck();
  t.equal(f.send({ flags: TCP_ACK | TCP_PSH }, request).length, 0, 'back in request/response mode');
  f.peerSeq += 120;
  t.equal(f.advance(wait).length, 1, 'a second miss');
  t.equal(INTERACTIVE_MISSES, 2);
  for (let i = 0; i < 3; i++) {
    t.equal(f.send({ flags: TCP_ACK | TCP_PSH }, request).length, 1, `request ${i + 1} after it: ACKed at once`);
    f.peerSeq += 120;
    answerAndAck();
  }
});

t.test('a read sends a window update of its own only when the peer has under two segments of window left', async (t) => {
  const f = established(config({ recvBufferBytes: 65536 }));
  const chunk = Buffer.alloc(1400, 0x62);
  const fill = (n: number): void => {
    for (let i = 0; i < n; i++) {
      f.send({ flags: TCP_ACK }, chunk);
      f.peerSeq += chunk.length;
    }
    f.advance(500); // every delayed ACK has gone out
  };
  const readAll = (): number => {
    const buf = new Uint8Array(65536);
    return f.conn.recv(buf, 0, buf.length);
  };
  fill(3);
  t.equal(readAll(), 4200);
  t.equal(f.dispatch().length, 0, 'with ~60 KiB of window left the peer is not held back: the larger window rides on our next segment');
  fill(45);
  t.equal(readAll(), 45 * 1400);
  const update = f.dispatch();
  t.equal(update.length, 1, 'with under two segments left, the read sends the update at once');
  t.ok(update[0]!.repr.window > 0, 'a reopened window');
});
