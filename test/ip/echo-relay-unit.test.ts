/**
 * The echo relay (src/ip/echo-relay.ts) without a kernel: a memory link, a
 * policy that forwards everything through a fake upstream socket recording
 * what it is asked to send, and upstream messages handed in by hand.
 * Checks the identifier/sequence rewrite and restore, the TTL passed on,
 * that foreign or late answers are ignored, that a router's time exceeded
 * reaches the client from the router quoting the client's own request,
 * that a large reply is fragmented to the MTU, and the error rate limit
 * (RFC 1812 4.3.2.8).
 */
import t from 'tap';
import { Stack } from '../../src/stack.js';
import { EchoAction, type EchoPolicy, type EchoRoute } from '../../src/ip/echo-relay.js';
import type { IcmpSocket } from '../../src/link/icmp-socket.js';
import { internetChecksum } from '../../src/wire/checksum.js';
import { MemoryLink, settle } from '../stack/memory-link.js';
import { hex, sealIpv4 } from '../wire/fixtures.js';

const CLIENT = hex('c0000202'); // 192.0.2.2
const TARGET = hex('cb007102'); // 203.0.113.2
const ROUTER = hex('c6336402'); // 198.51.100.2
const IDENT = 0x5151;

interface Sent {
  dst: Uint8Array;
  msg: Uint8Array;
  ttl: number;
}

function fakeSocket(sent: Sent[], errno = 0): IcmpSocket {
  return {
    family: 4,
    ident: IDENT,
    raw: true,
    send(dst: Uint8Array, dstOff: number, msg: Uint8Array, msgOff: number, msgLen: number, ttl: number): number {
      sent.push({ dst: dst.slice(dstOff, dstOff + 4), msg: msg.slice(msgOff, msgOff + msgLen), ttl });
      return errno;
    },
  } as unknown as IcmpSocket;
}

function policy(sock: IcmpSocket, action = EchoAction.Forward): EchoPolicy {
  return {
    route(_family: 4 | 6, buf: Uint8Array, off: number, out: EchoRoute): EchoAction {
      out.socket = sock;
      out.target.set(buf.subarray(off, off + 4));
      return action;
    },
  };
}

/** An echo request from the client, `ttl` as it reached the TUN. */
function echoRequest(id: number, seq: number, data: Uint8Array, ttl = 63): Uint8Array {
  const p = new Uint8Array(28 + data.length);
  p.set(hex('4500 0000 1234 4000 0001 0000'));
  p[8] = ttl;
  p[2] = p.length >>> 8;
  p[3] = p.length & 0xff;
  p.set(CLIENT, 12);
  p.set(TARGET, 16);
  p[20] = 8;
  p[24] = id >>> 8;
  p[25] = id & 0xff;
  p[26] = seq >>> 8;
  p[27] = seq & 0xff;
  p.set(data, 28);
  return sealIpv4(p);
}

/** What the upstream socket hands the relay: [16-byte source][ICMP message]. */
function upstream(src: Uint8Array, icmp: Uint8Array): { buf: Uint8Array; len: number } {
  const buf = new Uint8Array(16 + icmp.length);
  buf.set(src, 0);
  buf.set(icmp, 16);
  return { buf, len: icmp.length };
}

function echoReplyMessage(id: number, seq: number, data: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + data.length);
  m[4] = id >>> 8;
  m[5] = id & 0xff;
  m[6] = seq >>> 8;
  m[7] = seq & 0xff;
  m.set(data, 8);
  const c = internetChecksum(m, 0, m.length);
  m[2] = c >>> 8;
  m[3] = c & 0xff;
  return m;
}

function setup(mtu = 1500, errno = 0): { link: MemoryLink; stack: Stack; sent: Sent[]; sock: IcmpSocket; relay: ReturnType<Stack['forwardEchoes']> } {
  const link = new MemoryLink(mtu);
  // An explicit clock that never moves: the rate limit's refill is deterministic.
  const stack = new Stack(link, { onTcpFlow: () => undefined }, { clock: () => 1000 });
  const sent: Sent[] = [];
  const sock = fakeSocket(sent, errno);
  const relay = stack.forwardEchoes(policy(sock));
  stack.start();
  return { link, stack, sent, sock, relay };
}

const seqOf = (m: Uint8Array): number => (m[6]! << 8) | m[7]!;

t.test('a request goes out with our identifier, a slot sequence, the client data and TTL; the reply comes back as the client sent it', async (t) => {
  const { link, stack, sent, sock, relay } = setup();
  const data = hex('0102030405060708');
  link.inject(echoRequest(0x1111, 7, data, 5));
  t.equal(sent.length, 1, 'one request sent upstream');
  const out = sent[0]!;
  t.same([...out.dst], [...TARGET], 'to the destination the client pinged');
  t.equal(out.ttl, 5, 'with the TTL it reached the TUN with');
  t.equal(out.msg[0], 8, 'an echo request');
  t.equal((out.msg[4]! << 8) | out.msg[5]!, IDENT, "with the socket's identifier");
  t.equal(internetChecksum(out.msg, 0, out.msg.length), 0, 'checksum valid');
  t.same([...out.msg.subarray(8)], [...data], "the client's data");
  t.equal(link.drain().length, 0, 'nothing answered locally');

  const seq = seqOf(out.msg);
  // A reply with another identifier (another process's ping) or from another address is not ours.
  let u = upstream(TARGET, echoReplyMessage(IDENT + 1, seq, data));
  relay.upstreamMessage(sock, u.buf, 0, 16, u.len);
  u = upstream(ROUTER, echoReplyMessage(IDENT, seq, data));
  relay.upstreamMessage(sock, u.buf, 0, 16, u.len);
  await settle();
  t.equal(link.drain().length, 0, 'foreign replies are ignored');
  t.equal(relay.stats.unmatched, 2, 'and counted');

  u = upstream(TARGET, echoReplyMessage(IDENT, seq, data));
  relay.upstreamMessage(sock, u.buf, 0, 16, u.len);
  await settle();
  const [reply] = link.drain();
  t.ok(reply, 'the reply reaches the client');
  t.same([...reply!.subarray(12, 16)], [...TARGET], 'from the destination');
  t.same([...reply!.subarray(16, 20)], [...CLIENT], 'to the client');
  t.equal(reply![20], 0, 'an echo reply');
  t.equal((reply![24]! << 8) | reply![25]!, 0x1111, "the client's identifier");
  t.equal((reply![26]! << 8) | reply![27]!, 7, "the client's sequence");
  t.equal(internetChecksum(reply!, 20, reply!.length - 20), 0, 'ICMP checksum valid');
  t.same([...reply!.subarray(28)], [...data], 'the data the destination sent');
  t.equal(relay.stats.forwarded, 1, 'counted as forwarded');
  t.equal(relay.stats.replies, 1, 'and its reply as relayed');
  stack.close();
});

t.test("a router's time exceeded reaches the client from the router, quoting the client's request", async (t) => {
  const { link, stack, sent, sock, relay } = setup();
  const req = echoRequest(0x2222, 9, hex('aabbccdd'), 1);
  link.inject(req);
  const out = sent[0]!;
  // What the router quotes: our request's IP header (from the gateway to the target) and its first 8 bytes.
  const quoted = new Uint8Array(28);
  quoted.set(hex('4500 0024 0000 4000 0101 0000 c6336401'));
  quoted.set(TARGET, 16);
  quoted.set(out.msg.subarray(0, 8), 20);
  const te = new Uint8Array(8 + quoted.length);
  te[0] = 11;
  te.set(quoted, 8);
  const u = upstream(ROUTER, te);
  relay.upstreamMessage(sock, u.buf, 0, 16, u.len);
  await settle();
  const [err] = link.drain();
  t.ok(err, 'an error reaches the client');
  t.same([...err!.subarray(12, 16)], [...ROUTER], "from the router's address");
  t.same([...err!.subarray(16, 20)], [...CLIENT], 'to the client');
  t.equal(err![20], 11, 'time exceeded');
  t.same([...err!.subarray(28, 56)], [...req.subarray(0, 28)], "quoting the client's own header and ICMP header");
  t.equal(relay.stats.errorsRelayed, 1, 'counted');
  stack.close();
});

t.test('a reply larger than the MTU is fragmented; the fragments reassemble to the reply', async (t) => {
  const { link, stack, sent, sock, relay } = setup(1280);
  const data = new Uint8Array(3000).map((_, i) => i & 0xff);
  link.inject(echoRequest(0x3333, 1, data.subarray(0, 8)));
  const u = upstream(TARGET, echoReplyMessage(IDENT, seqOf(sent[0]!.msg), data));
  relay.upstreamMessage(sock, u.buf, 0, 16, u.len);
  await settle();
  const frags = link.drain();
  t.ok(frags.length >= 3, `${frags.length} fragments`);
  t.ok(frags.every((f) => f.length <= 1280), 'each within the MTU');
  const whole = new Uint8Array(8 + 3000);
  for (const f of frags) {
    const off = (((f[6]! & 0x1f) << 8) | f[7]!) * 8;
    whole.set(f.subarray(20), off);
  }
  t.equal(whole[0], 0, 'an echo reply');
  t.equal(internetChecksum(whole, 0, whole.length), 0, 'the reassembled checksum is valid');
  t.same([...whole.subarray(8, 40)], [...data.subarray(0, 32)], 'with the data in order');
  t.equal(frags.filter((f) => (f[6]! & 0x20) === 0).length, 1, 'exactly one last fragment');
  stack.close();
});

t.test('send failures become the matching unreachable, within the rate limit (RFC 1812 4.3.2.8)', async (t) => {
  const { link, stack, relay } = setup(1500, 113); // EHOSTUNREACH
  const reqs: Uint8Array[] = [];
  for (let i = 0; i < 80; i++) reqs.push(echoRequest(0x4444, i, hex('00')));
  link.inject(...reqs);
  await settle();
  const out = link.drain();
  t.equal(out.length, 50, 'a burst of 50 errors');
  t.ok(out.every((p) => p[20] === 3 && p[21] === 1), 'host unreachable');
  t.equal(relay.stats.sendErrors, 80, 'every failure counted');
  t.equal(relay.stats.rateLimited, 30, 'the rest rate-limited and counted');
  stack.close();
});
