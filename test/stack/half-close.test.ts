/**
 * Half-close through the stack's TcpStream (issue 12 item 3), driven
 * through an in-memory link: when both directions end cleanly the stream's
 * autoDestroy must leave the connection to finish with FINs (RFC 9293 3.6),
 * never reset it, and bytes still queued when it happens are delivered
 * first. An explicit destroy() still resets (the engine relies on it to
 * refuse an accepted flow).
 */
import t from 'tap';
import { Stack } from '../../src/stack.js';
import type { TcpStream } from '../../src/stack/tcp-stream.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST } from '../../src/wire/tcp.js';
import { MemoryLink, settle } from './memory-link.js';
import { establishedFlow } from './established.js';
import { readTcp, tcpSegment } from './packets.js';

interface Harness {
  link: MemoryLink;
  stack: Stack;
  stream: TcpStream;
  received: Buffer[];
  events: string[];
  /** Our next sequence number as the client sees it. */
  ourNxt: number;
  clientSeq: number;
}

async function established(t: { teardown(fn: () => void): void }): Promise<Harness> {
  const f = await establishedFlow(t);
  const h: Harness = { link: f.link, stack: f.stack, stream: f.stream, received: [], events: [], ourNxt: (f.iss + 1) >>> 0, clientSeq: f.clientSeq };
  h.stream.on('data', (b: Buffer) => h.received.push(b));
  h.stream.on('end', () => h.events.push('end'));
  h.stream.on('close', () => h.events.push('close'));
  h.stream.on('error', (e: Error) => h.events.push(`error ${e.message}`));
  return h;
}

/** Sends from the client: payload and flags, acknowledging all we sent. */
async function client(h: Harness, flags: number, payload = new Uint8Array(0)): Promise<void> {
  h.link.inject(tcpSegment({ seq: h.clientSeq, ack: h.ourNxt, flags, payload }));
  h.clientSeq = (h.clientSeq + payload.length + ((flags & TCP_FIN) !== 0 ? 1 : 0)) >>> 0;
  await settle();
  await settle();
}

/** What the stack sent, with our next sequence number tracked. */
function sent(h: Harness): Array<{ flags: number; payload: string; seq: number }> {
  const out = h.link.drain().map((p) => {
    const s = readTcp(p);
    const end = (s.seq + s.payload.length + ((s.flags & TCP_FIN) !== 0 ? 1 : 0)) >>> 0;
    if (((end - h.ourNxt) | 0) > 0) h.ourNxt = end;
    return { flags: s.flags, payload: Buffer.from(s.payload).toString(), seq: s.seq };
  });
  return out;
}

const anyRst = (segs: Array<{ flags: number }>): boolean => segs.some((s) => (s.flags & TCP_RST) !== 0);

t.test('the client half-closes, we echo and end: data, FIN, no RST; LAST-ACK then gone', async (t) => {
  const h = await established(t);
  await client(h, TCP_ACK | TCP_PSH | TCP_FIN, Buffer.from('hello'));
  t.same(h.events, ['end'], 'the stream ended on the FIN');
  t.equal(Buffer.concat(h.received).toString(), 'hello');
  h.stream.end(Buffer.from('hello'));
  await settle();
  await settle();
  const out = sent(h);
  t.notOk(anyRst(out), `no RST (${out.map((s) => s.flags.toString(16)).join(' ')})`);
  t.ok(out.some((s) => s.payload === 'hello'), 'the echo went out');
  t.ok(out.some((s) => (s.flags & TCP_FIN) !== 0), 'then our FIN');
  t.ok(h.events.includes('close'), 'both ends done: the stream closed (autoDestroy)');
  t.notOk(h.events.some((e) => e.startsWith('error')), 'without an error');
  t.equal(h.stack.stats.tcpFlowsActive, 1, 'the flow stays until the FIN is acknowledged (LAST-ACK)');
  await client(h, TCP_ACK);
  t.notOk(anyRst(sent(h)), 'the last ACK draws no RST');
  t.equal(h.stack.stats.tcpFlowsActive, 0, 'CLOSED: the flow is gone');
});

t.test('bytes still queued when both ends are done are delivered before the FIN', async (t) => {
  const h = await established(t);
  await client(h, TCP_ACK | TCP_FIN);
  // More than the client's window (65535): part of it is still in the send ring at autoDestroy.
  const big = Buffer.alloc(100_000, 0x61);
  h.stream.end(big);
  await settle();
  await settle();
  let out = sent(h);
  let bytes = out.reduce((n, s) => n + s.payload.length, 0);
  t.ok(bytes < big.length, `the window held some back (${bytes} of ${big.length} sent)`);
  t.notOk(anyRst(out), 'no RST while data is queued');
  for (let i = 0; i < 10 && bytes < big.length; i++) {
    await client(h, TCP_ACK);
    out = sent(h);
    t.notOk(anyRst(out), `no RST after ACK ${i + 1}`);
    bytes += out.reduce((n, s) => n + s.payload.length, 0);
    if (out.some((s) => (s.flags & TCP_FIN) !== 0)) break;
  }
  t.equal(bytes, big.length, 'every byte went out');
  await client(h, TCP_ACK);
  t.equal(h.stack.stats.tcpFlowsActive, 0, 'then FIN, ACK, CLOSED');
});

t.test('we half-close first, the client keeps sending, then closes: FINs both ways, no RST', async (t) => {
  const h = await established(t);
  h.stream.end(Buffer.from('bye'));
  await settle();
  await settle();
  let out = sent(h);
  t.ok(out.some((s) => (s.flags & TCP_FIN) !== 0), 'our FIN');
  await client(h, TCP_ACK | TCP_PSH, Buffer.from('still uploading'));
  out = sent(h);
  t.notOk(anyRst(out), 'data after our FIN is taken, not reset (FIN-WAIT-2 is a half-close)');
  t.equal(Buffer.concat(h.received).toString(), 'still uploading');
  await client(h, TCP_ACK | TCP_FIN);
  out = sent(h);
  t.notOk(anyRst(out), 'the client FIN draws an ACK, no RST');
  t.ok(out.some((s) => s.flags === TCP_ACK), 'the FIN is acknowledged');
  t.ok(h.events.includes('end') && h.events.includes('close'), `end and close (${h.events.join(', ')})`);
  t.equal(h.stack.stats.tcpFlowsActive, 1, 'TIME-WAIT holds the flow for its bound');
});

t.test('an explicit destroy() still resets', async (t) => {
  const h = await established(t);
  await client(h, TCP_ACK | TCP_PSH, Buffer.from('x'));
  h.stream.destroy();
  await settle();
  await settle();
  t.ok(anyRst(sent(h)), 'RST');
  t.equal(h.stack.stats.tcpFlowsActive, 0);
});
