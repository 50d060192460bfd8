/**
 * The stack's SYN-flood defence and pending-SYN hardening (issue 12 items 2
 * and 8), through an in-memory link with an injected clock:
 *   - past synCookieThreshold a SYN gets a cookie SYN-ACK and the
 *     application hears nothing until the client's ACK returns the cookie;
 *     then the request is already established, and refusing it sends RST;
 *   - a forged cookie ACK makes nothing;
 *   - a batch's SYNs are handled after its other segments; under SYN-cookie
 *     pressure those beyond synsPerBatch are dropped, without it none are;
 *   - segments onto a pending SYN's tuple: only an exact RST cancels it.
 */
import t from 'tap';
import { Stack, type TcpFlowRequest } from '../../src/stack.js';
import type { TcpStream } from '../../src/stack/tcp-stream.js';
import { TCP_ACK, TCP_RST, TCP_SYN } from '../../src/wire/tcp.js';
import { MemoryLink, settle } from './memory-link.js';
import { MSS_1460, readTcp, tcpOptions, tcpSegment } from './packets.js';

function lab(t: { teardown(fn: () => void): void }, opts: ConstructorParameters<typeof Stack>[2] = {}) {
  const link = new MemoryLink(1500);
  const clock = { now: 1000 };
  const requests: TcpFlowRequest[] = [];
  const stack = new Stack(link, { onTcpFlow: (req) => void requests.push(req) }, { clock: () => clock.now, ...opts });
  stack.start();
  t.teardown(() => stack.close());
  return { link, clock, requests, stack };
}

// MSS 1460, SACK permitted, timestamps (val 7), window scale 7.
const SYN_OPTS = Uint8Array.from([2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 7, 0, 0, 0, 0, 1, 3, 3, 7]);
function tsOption(val: number, ecr: number): Uint8Array {
  return Uint8Array.from([1, 1, 8, 10, val >>> 24, (val >>> 16) & 0xff, (val >>> 8) & 0xff, val & 0xff, ecr >>> 24, (ecr >>> 16) & 0xff, (ecr >>> 8) & 0xff, ecr & 0xff]);
}
/** The TSval of a segment we sent (its timestamp option), 0 when none. */
function tsVal(pkt: Uint8Array): number {
  const o = tcpOptions(pkt).find((x) => x.kind === 8);
  return o === undefined ? 0 : ((pkt[o.at + 2]! << 24) | (pkt[o.at + 3]! << 16) | (pkt[o.at + 4]! << 8) | pkt[o.at + 5]!) >>> 0;
}

for (const v of [4, 6] as const)
t.test(`IPv${v}: past the threshold: a cookie SYN-ACK, nothing kept, the application asked only when the ACK returns the cookie`, async (t) => {
  const { link, requests, stack } = lab(t, { synCookieThreshold: 0 });
  link.inject(tcpSegment({ v, seq: 5000, flags: TCP_SYN, options: SYN_OPTS }));
  await settle();
  const out = link.drain().map((p) => ({ p, s: readTcp(p) }));
  t.equal(out.length, 1);
  const synAck = out[0]!;
  t.equal(synAck.s.flags, TCP_SYN | TCP_ACK);
  t.equal(synAck.s.ack, 5001);
  t.equal(requests.length, 0, 'no request: the SYN is not dialled');
  t.equal(stack.stats.pendingFlows, 0, 'nothing pending');
  t.equal(stack.stats.synCookiesSent, 1);
  const ts = tsVal(synAck.p);
  t.equal(ts & 15, 7, 'the window scale rides in the timestamp');
  t.equal(ts & 16, 16, 'SACK-permitted too');

  const body = new TextEncoder().encode('hello');
  link.inject(tcpSegment({ v, seq: 5001, ack: synAck.s.seq + 1, flags: TCP_ACK, window: 200, options: tsOption(8, ts), payload: body }));
  await settle();
  t.equal(requests.length, 1, 'the completed handshake asks the application');
  t.equal(requests[0]!.established, true);
  t.equal(stack.stats.synCookiesValidated, 1);
  const stream: TcpStream = requests[0]!.accept();
  const got: Buffer[] = [];
  stream.on('data', (b: Buffer) => got.push(b));
  await settle();
  await settle();
  t.equal(Buffer.concat(got).toString(), 'hello', 'the data that came with the cookie ACK reaches the application');
  stream.write('world');
  await settle();
  const reply = link.drain().map(readTcp).find((s) => s.payload.length > 0);
  t.equal(reply?.seq, synAck.s.seq + 1, 'our data starts right after the cookie ISN');
  t.equal(Buffer.from(reply?.payload ?? []).toString(), 'world');
});

t.test('a refused cookie flow (e.g. its dial failed) is reset', async (t) => {
  const { link, requests } = lab(t, { synCookieThreshold: 0 });
  link.inject(tcpSegment({ seq: 9000, flags: TCP_SYN, options: MSS_1460 }));
  await settle();
  const synAck = readTcp(link.drain()[0]!);
  link.inject(tcpSegment({ seq: 9001, ack: synAck.seq + 1, flags: TCP_ACK }));
  await settle();
  t.equal(requests.length, 1);
  requests[0]!.reset();
  await settle();
  const rst = link.drain().map(readTcp).find((s) => (s.flags & TCP_RST) !== 0);
  t.ok(rst, 'a RST goes out');
  t.equal(rst?.seq, synAck.seq + 1, 'at SND.NXT');
});

t.test('a forged cookie ACK creates nothing and is reset', async (t) => {
  const { link, requests, stack } = lab(t, { synCookieThreshold: 0 });
  link.inject(tcpSegment({ seq: 100, flags: TCP_SYN, options: MSS_1460 }));
  await settle();
  const synAck = readTcp(link.drain()[0]!);
  link.inject(tcpSegment({ seq: 101, ack: synAck.seq + 2, flags: TCP_ACK }));
  link.inject(tcpSegment({ srcPort: 40001, seq: 101, ack: synAck.seq + 1, flags: TCP_ACK }));
  await settle();
  t.equal(requests.length, 0);
  t.equal(stack.stats.synCookiesRejected, 2);
  t.equal(link.drain().filter((p) => (readTcp(p).flags & TCP_RST) !== 0).length, 2, 'both answered with RST (RFC 9293 3.10.7.1)');
});

t.test('below the threshold SYNs are handled statefully; at it, cookies', async (t) => {
  const { link, requests, stack } = lab(t, { synCookieThreshold: 3 });
  for (let i = 0; i < 5; i++) link.inject(tcpSegment({ srcPort: 30000 + i, seq: i, flags: TCP_SYN, options: MSS_1460 }));
  await settle();
  t.equal(requests.length, 3, 'three pending requests');
  t.equal(stack.stats.halfOpenFlows, 3);
  t.equal(stack.stats.synCookiesSent, 2, 'the rest answered with cookies');
  requests[0]!.accept();
  await settle();
  t.equal(stack.stats.halfOpenFlows, 3, 'accepted but unanswered (SYN-RECEIVED) still counts as half-open');
});

t.test('one batch without SYN-cookie pressure: the other segments first, then every SYN', async (t) => {
  const { link, requests, stack } = lab(t, { synsPerBatch: 4, synCookieThreshold: 1000 });
  const batch: Uint8Array[] = [];
  for (let i = 0; i < 300; i++) batch.push(tcpSegment({ srcPort: 20000 + i, seq: i, flags: TCP_SYN }));
  batch.push(tcpSegment({ srcPort: 1, seq: 1, ack: 1, flags: TCP_ACK }));
  link.inject(...batch);
  await settle();
  t.equal(requests.length, 300, 'a burst of 300 SYNs in one batch: all handled (none waits for its retransmission)');
  t.equal(stack.stats.drops.syn_budget, 0, 'none dropped');
  t.equal(stack.stats.drops.no_flow, 1, 'the ACK was handled too');
  const sent = link.drain().map(readTcp);
  t.equal((sent[0]!.flags & TCP_RST) !== 0 && sent[0]!.dstPort === 1, true, 'the ACK (an established-style segment) was answered before any SYN work');
});

t.test('one batch under SYN-cookie pressure: the other segments first, then at most synsPerBatch SYNs', async (t) => {
  const { link, requests, stack } = lab(t, { synsPerBatch: 4, synCookieThreshold: 2 });
  link.inject(tcpSegment({ srcPort: 19000, seq: 1, flags: TCP_SYN }), tcpSegment({ srcPort: 19001, seq: 1, flags: TCP_SYN }));
  await settle();
  t.equal(stack.stats.halfOpenFlows, 2, 'two half-open flows: at the threshold');
  link.drain();
  const batch: Uint8Array[] = [];
  for (let i = 0; i < 10; i++) batch.push(tcpSegment({ srcPort: 20000 + i, seq: i, flags: TCP_SYN }));
  batch.push(tcpSegment({ srcPort: 1, seq: 1, ack: 1, flags: TCP_ACK }));
  link.inject(...batch);
  await settle();
  t.equal(requests.length, 2, 'no new request: the four SYNs handled got cookies');
  t.equal(stack.stats.synCookiesSent, 4, 'four SYNs answered with cookies');
  t.equal(stack.stats.drops.syn_budget, 6, 'six dropped and counted');
  t.equal(stack.stats.drops.no_flow, 1, 'the ACK was handled too');
  const sent = link.drain().map(readTcp);
  t.equal((sent[0]!.flags & TCP_RST) !== 0 && sent[0]!.dstPort === 1, true, 'the ACK (an established-style segment) was answered before any SYN work');
});

t.test('item 8: blind RST/ACK/SYN onto a pending SYN change nothing; only the exact RST cancels it', async (t) => {
  const { link, requests, stack, clock } = lab(t);
  link.inject(tcpSegment({ seq: 7000, flags: TCP_SYN, options: MSS_1460 }));
  await settle();
  t.equal(requests.length, 1);
  const signal = requests[0]!.signal;
  let x = 0x13579bd;
  for (let i = 0; i < 400; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const flags = [TCP_RST, TCP_ACK, TCP_RST | TCP_ACK, TCP_SYN][i % 4]!;
    const seq = (x >>> 0) === 7001 ? 7002 : x >>> 0;
    link.inject(tcpSegment({ seq, ack: (x * 31) >>> 0, flags }));
  }
  await settle();
  t.notOk(signal.aborted, 'the pending SYN is still there');
  t.equal(stack.stats.pendingFlows, 1);
  t.equal(stack.stats.drops.pending_rst_ignored, 200, 'the inexact RSTs were counted');
  const rsts = link.drain().map(readTcp);
  t.ok(rsts.length <= 10 && rsts.every((s) => s.flags === TCP_RST), `ACK-bearing segments drew rate-limited <SEQ=SEG.ACK><CTL=RST> (${rsts.length})`);
  const stream = requests[0]!.accept();
  t.ok(stream, 'the decision still completes the handshake');
  await settle();
  const synAck = link.drain().map(readTcp).find((s) => s.flags === (TCP_SYN | TCP_ACK));
  t.equal(synAck?.ack, 7001, 'SYN-ACK for the original SYN');

  clock.now += 10;
  link.inject(tcpSegment({ srcPort: 40100, seq: 100, flags: TCP_SYN }));
  await settle();
  const second = requests[1]!;
  link.inject(tcpSegment({ srcPort: 40100, seq: 101, flags: TCP_RST }));
  await settle();
  t.ok(second.signal.aborted, 'an exact RST (SEG.SEQ = the SYN + 1) cancels the pending SYN');
});
