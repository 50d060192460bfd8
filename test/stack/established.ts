/**
 * A stack on an in-memory link with an explicit clock and one accepted TCP
 * flow through the three-way handshake: the client's SYN (seq 1000, MSS
 * 1460 unless other SYN options are given), our SYN-ACK, the client's ACK (seq 1001). The fixture the
 * stack-level tests start from.
 */
import { Stack } from '../../src/stack.js';
import type { TcpStream } from '../../src/stack/tcp-stream.js';
import type { TcpConfig } from '../../src/tcp/config.js';
import { TCP_ACK, TCP_SYN } from '../../src/wire/tcp.js';
import { MemoryLink, settle } from './memory-link.js';
import { MSS_1460, readTcp, tcpSegment } from './packets.js';

export interface EstablishedFlow {
  link: MemoryLink;
  stack: Stack;
  clock: { now: number };
  stream: TcpStream;
  /** Our initial sequence number (the SYN-ACK's). */
  iss: number;
  /** The client's next sequence number. */
  clientSeq: number;
}

export async function establishedFlow(t: { teardown(fn: () => void): void }, v: 4 | 6 = 4, synOptions: Uint8Array = MSS_1460, tcp: Partial<TcpConfig> = {}): Promise<EstablishedFlow> {
  const link = new MemoryLink(1500);
  const clock = { now: 1000 };
  let stream: TcpStream | null = null;
  const stack = new Stack(link, { onTcpFlow: (req) => void (stream = req.accept()) }, { clock: () => clock.now, tcp });
  stack.start();
  t.teardown(() => stack.close());
  link.inject(tcpSegment({ v, seq: 1000, flags: TCP_SYN, options: synOptions }));
  await settle();
  const synAck = readTcp(link.drain().find((p) => (readTcp(p).flags & TCP_SYN) !== 0)!);
  link.inject(tcpSegment({ v, seq: 1001, ack: synAck.seq + 1, flags: TCP_ACK }));
  await settle();
  return { link, stack, clock, stream: stream!, iss: synAck.seq, clientSeq: 1001 };
}
