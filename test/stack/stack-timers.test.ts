/**
 * The stack's timers driven by Stack.poll(now) with an explicit clock, no
 * sleeps: a SYN left undecided past pendingTimeoutMs, a UDP session idle
 * past udpIdleTimeoutMs (RFC 4787 REQ-5), and a retransmission timeout of
 * an accepted flow (RFC 6298 5.4) through the whole stack, with the live
 * counters read mid-flow.
 */
import t from 'tap';
import { Stack, type TcpFlowRequest } from '../../src/stack.js';
import type { UdpSession } from '../../src/udp/session.js';
import { TCP_ACK, TCP_SYN } from '../../src/wire/tcp.js';
import { MemoryLink, settle } from './memory-link.js';
import { establishedFlow } from './established.js';
import { MSS_1460, readTcp, tcpSegment, udpDatagram } from './packets.js';

t.test('a SYN undecided for pendingTimeoutMs is forgotten at that instant, its signal aborted', async (t) => {
  const link = new MemoryLink(1500);
  const clock = { now: 10_000 };
  let request: TcpFlowRequest | null = null;
  const stack = new Stack(link, { onTcpFlow: (r) => void (request = r) }, { clock: () => clock.now, pendingTimeoutMs: 5000 });
  stack.start();
  t.teardown(() => stack.close());
  link.inject(tcpSegment({ seq: 1000, flags: TCP_SYN, options: MSS_1460 }));
  const req = request! as TcpFlowRequest;
  const signal = req.signal;
  t.equal(stack.stats.pendingFlows, 1, 'the SYN waits for a decision');
  t.equal(stack.pollAt(), 15_000, 'the stack wants the CPU when the decision times out');

  clock.now = 14_999;
  stack.poll(clock.now);
  t.equal(stack.stats.pendingFlows, 1, '1 ms before the timeout it still waits');
  t.notOk(signal.aborted);

  clock.now = 15_000;
  stack.poll(clock.now);
  t.equal(stack.stats.pendingFlows, 0, 'at the timeout it is gone');
  t.equal(stack.stats.halfOpenFlows, 0);
  t.equal(stack.stats.tcpFlowsRejected, 1, 'counted as rejected');
  t.ok(signal.aborted, 'the upstream dial is told to stop');
  t.throws(() => req.accept(), { code: 'SLUICE_FLOW_EXPIRED' }, 'a late decision is refused');
  t.equal(link.drain().filter((p) => readTcp(p).flags !== 0).length, 0, 'nothing was sent: the client just retries');
  t.equal(stack.pollAt(), Infinity, 'no timer left');
});

t.test('a UDP session ends after udpIdleTimeoutMs without datagrams; traffic pushes the expiry back', async (t) => {
  const link = new MemoryLink(1500);
  const clock = { now: 1000 };
  const sessions: UdpSession[] = [];
  const stack = new Stack(link, { onTcpFlow: (r) => r.drop(), onUdpSession: (s) => void sessions.push(s) }, { clock: () => clock.now, udpIdleTimeoutMs: 10_000 });
  stack.start();
  t.teardown(() => stack.close());
  const payload = new Uint8Array([1, 2, 3]);
  link.inject(udpDatagram(4, 5353, 53, payload));
  t.equal(sessions.length, 1);
  const s = sessions[0]!;
  let closed = 0;
  s.on('close', () => void closed++);
  s.on('message', () => {});

  clock.now = 7000;
  link.inject(udpDatagram(4, 5353, 53, payload));
  t.equal(sessions.length, 1, 'the second datagram joins the session');

  clock.now = 11_000;
  stack.poll(clock.now);
  t.equal(closed, 0, 'at the first deadline the session had traffic 4 s ago: kept');
  t.equal(stack.stats.udpSessionsActive, 1);
  t.equal(stack.pollAt(), 17_000, 're-armed for 10 s after the last datagram');

  clock.now = 16_999;
  stack.poll(clock.now);
  t.equal(closed, 0, '1 ms early: still open');
  clock.now = 17_000;
  stack.poll(clock.now);
  t.equal(closed, 1, 'idle for 10 s: closed');
  t.equal(stack.stats.udpSessionsActive, 0);
  t.equal(stack.stats.udpSessionsTotal, 1);
  t.notOk(s.send(payload), 'a closed session sends nothing');

  link.inject(udpDatagram(4, 5353, 53, payload));
  t.equal(sessions.length, 2, 'a later datagram opens a new session');
});

t.test('RTO through the stack: unacknowledged data is resent when the timer expires, counted live', async (t) => {
  const { link, stack, clock, stream } = await establishedFlow(t);
  link.drain();

  stream.write(Buffer.alloc(100, 0x61));
  await settle();
  const first = link.drain().map(readTcp).filter((s) => s.payload.length > 0);
  t.equal(first.length, 1, 'the data goes out once');
  const sentAt = clock.now;
  const deadline = stack.pollAt();
  t.ok(deadline > sentAt && deadline <= sentAt + 1000, `the retransmission timer is armed (${deadline - sentAt} ms, RFC 6298: at most the initial 1 s)`);
  t.equal(stack.stats.tcpRetransmits, 0);

  clock.now = deadline - 1;
  stack.poll(clock.now);
  t.equal(link.drain().filter((p) => readTcp(p).payload.length > 0).length, 0, 'nothing before the deadline');

  clock.now = deadline;
  stack.poll(clock.now);
  const again = link.drain().map(readTcp).filter((s) => s.payload.length > 0);
  t.equal(again.length, 1, 'resent at the deadline');
  t.equal(again[0]!.seq, first[0]!.seq, 'the same bytes, from SND.UNA');
  t.same(again[0]!.payload, first[0]!.payload);
  t.equal(stack.stats.tcpTimeouts, 1, 'the timeout is counted while the flow is open');
  t.equal(stack.stats.tcpRetransmits, 1, 'and the retransmission');
  const backedOff = stack.pollAt() - deadline;
  t.ok(backedOff >= 2 * (deadline - sentAt) - 1, `the next timer is backed off (${backedOff} ms, RFC 6298 5.5)`);

  link.inject(tcpSegment({ seq: 1001, ack: (first[0]!.seq + 100) >>> 0, flags: TCP_ACK }));
  await settle();
  clock.now += 60_000;
  stack.poll(clock.now);
  t.equal(link.drain().filter((p) => readTcp(p).payload.length > 0).length, 0, 'acknowledged: never resent');
  t.equal(stack.stats.tcpRetransmits, 1);
  t.equal(stack.stats.tcpFlowsActive, 1);
});
