/**
 * The stack's TCP loss counters are running totals: each connection adds
 * to the stack's as it counts, so reading the six getters walks no flow
 * (issue 10: a worker's report read them many times a second), a flow's
 * counts stay in them after it closes, and a connection without a stack
 * keeps its own.
 */
import t from 'tap';
import { newStackStats, newTcpConnectionCounts, type TcpCounterSource } from '../../src/stack/counters.js';
import { TCP_ACK, TCP_RST } from '../../src/wire/tcp.js';
import { settle } from './memory-link.js';
import { establishedFlow } from './established.js';
import { readTcp, tcpSegment } from './packets.js';

const readAll = (s: ReturnType<typeof newStackStats>): number[] => [s.tcpRetransmits, s.tcpTimeouts, s.tcpLostRetransmits, s.tcpLossProbes, s.tcpZeroWindowsSent, s.tcpWindowProbes];

t.test('the getters read the source totals live, and a spread carries them', async (t) => {
  const src: TcpCounterSource = { tcpTotals: newTcpConnectionCounts() };
  const stats = newStackStats(src);
  t.same(readAll(stats), [0, 0, 0, 0, 0, 0]);
  src.tcpTotals.retransmits = 3;
  src.tcpTotals.windowProbes = 5;
  t.same(readAll(stats), [3, 0, 0, 0, 0, 5]);
  const copy = { ...stats };
  t.equal(copy.tcpRetransmits, 3, 'a spread (a worker report, JSON) reads the same');
  src.tcpTotals.retransmits = 4;
  t.equal(copy.tcpRetransmits, 3, 'the copy is a snapshot');
  t.equal(stats.tcpRetransmits, 4, 'the stats stay live');
});

t.test("a flow's timeout and retransmission count in the stack while it is open and stay after it closed", async (t) => {
  const { link, stack, clock, stream } = await establishedFlow(t);
  link.drain();
  stream.write(Buffer.alloc(100, 0x61));
  await settle();
  const first = link.drain().map(readTcp).filter((s) => s.payload.length > 0);
  t.equal(first.length, 1);
  clock.now = stack.pollAt();
  stack.poll(clock.now);
  t.equal(stack.stats.tcpTimeouts, 1, 'the RTO is counted at once');
  t.equal(stack.stats.tcpRetransmits, 1);
  // The client resets the flow: the connection is gone, its counts are not.
  let streamError = '';
  stream.on('error', (err: NodeJS.ErrnoException) => void (streamError = err.code ?? err.message));
  link.inject(tcpSegment({ seq: 1001, ack: (first[0]!.seq + 100) >>> 0, flags: TCP_RST | TCP_ACK }));
  await settle();
  stack.poll(clock.now);
  t.equal(streamError, 'ECONNRESET', 'the stream saw the reset');
  t.equal(stack.stats.tcpFlowsActive, 0, 'the flow is closed');
  t.equal(stack.stats.tcpTimeouts, 1, 'its timeout is still in the totals');
  t.equal(stack.stats.tcpRetransmits, 1, 'and its retransmission, counted once');
});
