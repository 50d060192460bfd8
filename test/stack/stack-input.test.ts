/**
 * The stack's packet entry point, driven through an in-memory link with an
 * injected clock: ICMP errors about our segments (RFC 1191/8201 path MTU,
 * RFC 5927 validation, hard errors in SYN-RECEIVED), UDP datagrams larger
 * than the MTU, the SYN flood defence, and hostile packets that must not
 * disturb an established flow.
 */
import t from 'tap';
import { Stack, type TcpFlowRequest } from '../../src/stack.js';
import type { TcpStream } from '../../src/stack/tcp-stream.js';
import type { UdpSession } from '../../src/udp/session.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, verifyL4Checksum } from '../../src/wire/tcp.js';
import { pseudoHeaderSumV4, pseudoHeaderSumV6 } from '../../src/wire/checksum.js';
import { MemoryLink, settle } from './memory-link.js';
import { establishedFlow } from './established.js';
import { MSS_1460, icmpErrorAbout, readTcp, tcpSegment, udpDatagram } from './packets.js';

interface Harness {
  link: MemoryLink;
  stack: Stack;
  clock: { now: number };
  stream: TcpStream;
  received: Buffer[];
  iss: number;
  clientSeq: number;
}

async function established(t: { teardown(fn: () => void): void }, v: 4 | 6 = 4): Promise<Harness> {
  const f = await establishedFlow(t, v);
  const received: Buffer[] = [];
  f.stream.on('data', (b: Buffer) => received.push(b));
  return { ...f, received };
}

function dataSegments(pkts: Uint8Array[]) {
  return pkts.map(readTcp).filter((s) => s.payload.length > 0);
}

for (const v of [4, 6] as const) {
  t.test(`IPv${v}: a ${v === 4 ? 'Fragmentation Needed' : 'Packet Too Big'} about our segment shrinks the segment size and resends at once`, async (t) => {
    const h = await established(t, v);
    h.stream.write(Buffer.alloc(2920, 0x5a));
    await settle();
    const first = h.link.drain();
    const segs = dataSegments(first);
    const mss = v === 4 ? 1460 : 1440; // our IPv6 MSS is 20 bytes smaller
    t.equal(segs.length, Math.ceil(2920 / mss), 'full-sized segments');
    t.equal(segs[0]!.payload.length, mss);
    const quoted = first.find((p) => readTcp(p).payload.length > 0)!;
    const mtu = v === 4 ? 1000 : 1280;
    h.link.inject(icmpErrorAbout(quoted, v === 4 ? 3 : 2, v === 4 ? 4 : 0, mtu));
    await settle();
    const again = dataSegments(h.link.drain());
    const limit = mtu - (v === 4 ? 20 : 40) - 20;
    t.ok(again.length >= 3, `resent as ${again.length} smaller segments`);
    t.equal(again[0]!.seq, (h.iss + 1) >>> 0, 'from SND.UNA');
    t.ok(again.every((s) => s.payload.length <= limit), `every segment fits ${mtu} bytes`);
    t.equal(h.stack.stats.icmpErrorsApplied, 1);
  });
}

t.test('an ICMP error quoting a sequence number outside the window is ignored (RFC 5927)', async (t) => {
  const h = await established(t);
  h.stream.write(Buffer.alloc(1000, 1));
  await settle();
  const quoted = h.link.drain().find((p) => readTcp(p).payload.length > 0)!;
  const forged = quoted.slice();
  new DataView(forged.buffer).setUint32(24, (readTcp(quoted).seq + 500_000) >>> 0); // TCP seq at 20 + 4
  h.link.inject(icmpErrorAbout(forged, 3, 4, 576));
  await settle();
  t.equal(h.link.drain().length, 0, 'nothing resent');
  t.equal(h.stack.stats.icmpErrorsApplied, 0);
  t.equal(h.stack.stats.drops.icmp_error_unmatched, 1, 'counted');
  // The quote of someone else's flow: no match either.
  const other = quoted.slice();
  new DataView(other.buffer).setUint16(22, 40001); // destination port in the quote
  h.link.inject(icmpErrorAbout(other, 3, 4, 576));
  await settle();
  t.equal(h.stack.stats.drops.icmp_error_unmatched, 2);
});

t.test('port unreachable for our SYN-ACK aborts the half-open connection (RFC 1122 4.2.3.9)', async (t) => {
  const link = new MemoryLink(1500);
  let stream: TcpStream | null = null;
  const stack = new Stack(link, { onTcpFlow: (req) => void (stream = req.accept()) });
  stack.start();
  t.teardown(() => stack.close());
  link.inject(tcpSegment({ seq: 5000, flags: TCP_SYN, options: MSS_1460 }));
  await settle();
  const synAck = link.drain()[0]!;
  t.equal(stack.stats.tcpFlowsActive, 1);
  const closed = new Promise<void>((resolve) => stream!.once('close', () => resolve()));
  stream!.on('error', () => {});
  link.inject(icmpErrorAbout(synAck, 3, 3));
  await settle();
  await closed;
  t.equal(stack.stats.tcpFlowsActive, 0, 'the flow is gone');
  t.equal(stack.stats.icmpErrorsApplied, 1);
});

for (const v of [4, 6] as const) {
  t.test(`IPv${v}: a UDP datagram larger than the MTU goes out as valid fragments`, async (t) => {
    const link = new MemoryLink(1500);
    const payload = Buffer.alloc(4000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31) & 0xff;
    const stack = new Stack(link, {
      onTcpFlow: (req) => req.reset(),
      onUdpSession: (s: UdpSession) => {
        s.on('message', () => s.send(payload));
        s.drainQueued();
      },
    });
    stack.start();
    t.teardown(() => stack.close());
    link.inject(udpDatagram(v, 5353, 53, Buffer.from('q')));
    await settle();
    const frags = link.drain();
    t.equal(frags.length, 3, 'three fragments');
    const body: Uint8Array[] = [];
    let expectOffset = 0;
    for (const [i, f] of frags.entries()) {
      t.ok(f.length <= 1500, `fragment ${i} fits the MTU (${f.length})`);
      const dv = new DataView(f.buffer, f.byteOffset);
      let offset: number;
      let more: boolean;
      let data: Uint8Array;
      if (v === 4) {
        const fo = dv.getUint16(6);
        t.equal(fo & 0x4000, 0, 'DF clear');
        offset = (fo & 0x1fff) * 8;
        more = (fo & 0x2000) !== 0;
        data = f.subarray(20, dv.getUint16(2));
      } else {
        t.equal(f[6], 44, 'Fragment header');
        const fo = dv.getUint16(42);
        offset = fo & 0xfff8;
        more = (fo & 1) !== 0;
        data = f.subarray(48, 40 + dv.getUint16(4));
      }
      t.equal(offset, expectOffset, `fragment ${i} offset`);
      t.equal(more, i < frags.length - 1, `fragment ${i} more-fragments flag`);
      expectOffset += data.length;
      body.push(data);
    }
    const datagram = Buffer.concat(body);
    t.equal(datagram.length, 8 + payload.length);
    t.same(datagram.subarray(8), payload, 'payload intact');
    const f0 = frags[0]!;
    const pseudo = v === 4 ? pseudoHeaderSumV4(f0, 12, 16, 17, datagram.length) : pseudoHeaderSumV6(f0, 8, 24, 17, datagram.length);
    t.ok(verifyL4Checksum(datagram, 0, datagram.length, pseudo), 'UDP checksum over the whole datagram');
  });
}

t.test('SYN flood: a full pending table evicts the oldest waiting SYN once it is old, and aborts its signal', async (t) => {
  const link = new MemoryLink(1500);
  const clock = { now: 0 };
  const requests: TcpFlowRequest[] = [];
  const stack = new Stack(link, { onTcpFlow: (req) => void requests.push(req) }, { clock: () => clock.now, maxPendingFlows: 8, pendingEvictAfterMs: 1000 });
  stack.start();
  t.teardown(() => stack.close());
  for (let i = 0; i < 8; i++) link.inject(tcpSegment({ srcPort: 20000 + i, seq: i, flags: TCP_SYN }));
  t.equal(requests.length, 8);
  const firstSignal = requests[0]!.signal;
  clock.now = 500;
  link.inject(tcpSegment({ srcPort: 30000, seq: 1, flags: TCP_SYN }));
  t.equal(requests.length, 8, 'young entries are kept: the new SYN is dropped');
  t.equal(stack.stats.drops.pending_full, 1);
  clock.now = 1500;
  link.inject(tcpSegment({ srcPort: 30001, seq: 1, flags: TCP_SYN }));
  t.equal(requests.length, 9, 'an old entry made room');
  t.equal(stack.stats.drops.pending_evicted, 1);
  t.ok(firstSignal.aborted, 'the evicted request was told through its signal');
  t.throws(() => requests[0]!.accept(), { code: 'SLUICE_FLOW_EXPIRED' }, 'deciding it later is a clear error');
  const late = requests[8]!.accept();
  t.ok(late, 'the newcomer can still be accepted');
  await settle();
});

class Rng {
  constructor(private s: number) {}
  next(): number {
    this.s ^= this.s << 13;
    this.s ^= this.s >>> 17;
    this.s ^= this.s << 5;
    return (this.s >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

t.test('hostile packets (random and mutated) never throw and never disturb an established flow', async (t) => {
  const h = await established(t);
  const rng = new Rng(0xc0ffee);
  // Templates on other 4-tuples: every protocol and feature the parser knows.
  const templates: Uint8Array[] = [
    tcpSegment({ srcPort: 41000, seq: 1, flags: TCP_SYN, options: MSS_1460 }),
    tcpSegment({ srcPort: 41001, seq: 7, ack: 9, flags: TCP_ACK | TCP_PSH, payload: Buffer.alloc(300, 7) }),
    tcpSegment({ srcPort: 41002, seq: 7, flags: TCP_RST }),
    tcpSegment({ srcPort: 41003, seq: 7, ack: 1, flags: TCP_FIN | TCP_ACK }),
    tcpSegment({ v: 6, srcPort: 41004, seq: 1, flags: TCP_SYN, options: MSS_1460 }),
    udpDatagram(4, 41005, 53, Buffer.alloc(40, 1)),
    udpDatagram(6, 41006, 443, Buffer.alloc(1200, 2)),
    icmpErrorAbout(tcpSegment({ srcPort: 80, dstPort: 40000, seq: 1, flags: TCP_ACK }), 3, 4, 1000),
    icmpErrorAbout(tcpSegment({ v: 6, srcPort: 80, dstPort: 40000, seq: 1, flags: TCP_ACK }), 2, 0, 1280),
  ];
  const expected: Buffer[] = [];
  let sent = 0;
  const rounds = 400;
  for (let round = 0; round < rounds; round++) {
    const batch: Uint8Array[] = [];
    for (let i = 0; i < 100; i++) {
      const r = rng.next();
      if (r < 0.2) {
        const junk = new Uint8Array(rng.int(1600));
        for (let k = 0; k < junk.length; k++) junk[k] = rng.int(256);
        if (junk.length > 0) junk[0] = (rng.next() < 0.5 ? 0x45 : 0x60) | (junk[0]! & 0x0f);
        batch.push(junk);
      } else {
        const p = templates[rng.int(templates.length)]!.slice();
        const flips = 1 + rng.int(6);
        for (let k = 0; k < flips; k++) p[rng.int(p.length)] = rng.int(256);
        batch.push(rng.next() < 0.3 ? p.subarray(0, rng.int(p.length)) : p);
      }
    }
    // The protected flow's next in-order segment rides in the same batch.
    const chunk = Buffer.alloc(100, round & 0xff);
    expected.push(chunk);
    batch.splice(rng.int(batch.length), 0, tcpSegment({ seq: h.clientSeq + sent, ack: h.iss + 1, flags: TCP_ACK | TCP_PSH, payload: chunk }));
    sent += chunk.length;
    h.link.inject(...batch);
    if (round % 50 === 0) await settle();
  }
  await settle();
  h.link.drain();
  t.equal(h.stack.stats.drops.internal_error ?? 0, 0, 'no packet made the stack throw');
  t.same(Buffer.concat(h.received), Buffer.concat(expected), 'the established flow got every byte, in order');
  t.equal(h.stream.destroyed, false, 'and it is still open');
  h.stream.write('still here');
  await settle();
  const reply = dataSegments(h.link.drain());
  t.equal(Buffer.from(reply[0]!.payload).toString(), 'still here', 'and it still sends');
  const dropped = Object.values(h.stack.stats.drops).reduce((a, b) => a + b, 0);
  t.ok(dropped > 10_000, `hostile packets were counted as drops (${dropped})`);
});

t.test('a refused UDP session answers with ICMP port unreachable quoting its first datagram', async (t) => {
  const link = new MemoryLink(1500);
  const stack = new Stack(link, { onTcpFlow: (req) => req.reset(), onUdpSession: (s: UdpSession) => s.unreachable('port') });
  stack.start();
  t.teardown(() => stack.close());
  const dgram = udpDatagram(4, 5353, 443, Buffer.from('hello'));
  link.inject(dgram);
  await settle();
  const out = link.drain();
  t.equal(out.length, 1, 'one packet back');
  const p = out[0]!;
  t.equal(p[9], 1, 'ICMP');
  t.equal(p[20], 3, 'destination unreachable');
  t.equal(p[21], 3, 'port unreachable');
  t.same(Buffer.from(p.subarray(28, 28 + 28)), Buffer.from(dgram.subarray(0, 28)), 'quotes the datagram (IP header and UDP header)');
  t.equal(stack.stats.udpSessionsActive, 0, 'the session is gone');
});
