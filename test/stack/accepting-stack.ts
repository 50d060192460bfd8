/**
 * A Stack over a MemoryLink that accepts every flow (its streams collected
 * in order), and a helper that opens one through a real handshake: for
 * tests that drive the stack's TcpStreams with hand-made segments.
 */
import type { Test } from 'tap';
import { Stack } from '../../src/stack.js';
import type { TcpStream } from '../../src/stack/tcp-stream.js';
import { TCP_ACK, TCP_SYN } from '../../src/wire/tcp.js';
import { MemoryLink, settle } from './memory-link.js';
import { MSS_1460, readTcp, tcpSegment } from './packets.js';

export interface AcceptingStack {
  link: MemoryLink;
  stack: Stack;
  streams: TcpStream[];
  /** The stack's clock, in ms; tests move it. */
  clock: { now: number };
}

/** Started, without TSO; closed at the test's teardown. */
export function acceptingStack(t: Test, mtu = 1500): AcceptingStack {
  const link = new MemoryLink(mtu);
  const clock = { now: 1000 };
  const streams: TcpStream[] = [];
  const stack = new Stack(link, { onTcpFlow: (req) => void streams.push(req.accept()) }, { clock: () => clock.now, tso: false });
  t.teardown(() => stack.close());
  stack.start();
  return { link, stack, streams, clock };
}

/** Opens a flow from `port` through the stack; returns the stream and the client's next seq / our ack. */
export async function openFlow(link: MemoryLink, port: number, streams: TcpStream[]): Promise<{ s: TcpStream; seq: number; ack: number }> {
  const before = streams.length;
  link.inject(tcpSegment({ srcPort: port, dstPort: 80, seq: 1000, flags: TCP_SYN, options: MSS_1460, window: 65535 }));
  await settle();
  const synAck = readTcp(link.drain().find((p) => (readTcp(p).flags & TCP_SYN) !== 0)!);
  const ack = (synAck.seq + 1) >>> 0;
  link.inject(tcpSegment({ srcPort: port, dstPort: 80, seq: 1001, ack, flags: TCP_ACK, window: 65535 }));
  await settle();
  if (streams.length !== before + 1) throw new Error('no stream');
  return { s: streams[before]!, seq: 1001, ack };
}
