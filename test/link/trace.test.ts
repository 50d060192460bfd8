/**
 * The packet tracer (src/link/trace.ts) between an in-memory link and the
 * stack: one trace line per packet in and out, each received packet with
 * the reason the stack dropped it, if it did.
 */
import t from 'tap';
import { Stack } from '../../src/stack.js';
import { PacketTracer, summarizePacket } from '../../src/link/trace.js';
import { TCP_ACK, TCP_SYN } from '../../src/wire/tcp.js';
import { MemoryLink, settle } from '../stack/memory-link.js';
import { MSS_1460, tcpSegment, udpDatagram } from '../stack/packets.js';

t.test('each packet in gets a line with its verdict, each packet out a line', async (t) => {
  const mem = new MemoryLink(1500);
  const lines: { fields: Record<string, unknown>; msg: string }[] = [];
  const tracer = new PacketTracer(mem, { trace: (fields, msg) => void lines.push({ fields, msg }) });
  const stack = new Stack(tracer, { onTcpFlow: (r) => void r.accept(), onUdpSession: () => {} }, { clock: () => 1000 });
  stack.observeDrops(tracer);
  stack.start();
  t.teardown(() => stack.close());

  const bad = tcpSegment({ srcPort: 40001, seq: 5, flags: TCP_SYN, options: MSS_1460 });
  bad[bad.length - 1] = bad[bad.length - 1]! ^ 0xff; // breaks the TCP checksum
  const stray = tcpSegment({ srcPort: 40002, seq: 9, ack: 77, flags: TCP_ACK });
  mem.inject(tcpSegment({ srcPort: 40000, seq: 1000, flags: TCP_SYN, options: MSS_1460 }), bad, stray, udpDatagram(4, 1234, 0, new Uint8Array(4)));
  await settle();

  const rx = lines.filter((l) => l.fields.dir === 'rx');
  t.equal(rx.length, 4, 'one line per packet in');
  t.match(rx[0]!.fields, { proto: 'tcp', src: '192.0.2.2:40000', dst: '203.0.113.2:80', flags: 'S', seq: 1000 });
  t.equal(rx[0]!.fields.drop, undefined, 'the SYN was taken');
  t.equal(rx[1]!.fields.drop, 'bad_checksum', 'the broken segment: bad_checksum');
  t.equal(rx[1]!.msg, 'packet in dropped: bad_checksum');
  t.equal(rx[2]!.fields.drop, 'no_flow', 'the stray ACK: no_flow (and answered with a RST)');
  t.equal(rx[3]!.fields.drop, 'port_zero', 'UDP to port 0: port_zero');
  const tx = lines.filter((l) => l.fields.dir === 'tx');
  t.ok(tx.some((l) => l.fields.flags === 'S.' && l.fields.src === '203.0.113.2:80'), 'the SYN-ACK out');
  t.ok(tx.some((l) => l.fields.flags === 'R' && l.fields.dst === '192.0.2.2:40002'), 'the RST for the stray ACK out');
  t.ok(tx.some((l) => l.fields.proto === 'icmp'), 'the port unreachable out');
  t.equal(mem.sent.length, tx.length, 'every packet out reached the link once');
});

t.test('summaries of malformed bytes never throw', async (t) => {
  t.same(summarizePacket(new Uint8Array([0x45, 0]), 0, 2), { len: 2, malformed: 'truncated' });
  t.same(summarizePacket(new Uint8Array([0x15, 0]), 0, 2), { len: 2, malformed: 'bad_version' });
  t.same(summarizePacket(new Uint8Array(0), 0, 0), { len: 0, malformed: 'bad_version' });
});
