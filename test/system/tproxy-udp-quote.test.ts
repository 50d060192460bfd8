/**
 * The quote a refused TPROXY UDP session's ICMP error carries (RFC 792,
 * RFC 4443 3.1): the client's IP and UDP headers rebuilt from what
 * recvmsg gave, and the first payload bytes, within 548 bytes in all.
 */
import t from 'tap';
import { buildUdpQuote } from '../../src/udp/tproxy.js';
import { newIpv4Repr, parseIpv4, parseIpv4Text, writeIpv4Addr } from '../../src/wire/ipv4.js';
import { newIpv6Repr, parseIpv6, parseIpv6Text } from '../../src/wire/ipv6.js';
import { newUdpRepr, parseUdp } from '../../src/wire/udp.js';
import { WireError } from '../../src/wire/errors.js';
import { fold, pseudoHeaderSumV4, pseudoHeaderSumV6, sum16 } from '../../src/wire/checksum.js';

/** Where buildUdpQuote reads the addresses: the addon's record, src at 8, dst at 24. */
function record(src: Uint8Array, dst: Uint8Array): Uint8Array {
  const b = new Uint8Array(40).fill(0xa5);
  b.set(src, 8);
  b.set(dst, 24);
  return b;
}

function v4(text: string): Uint8Array {
  const b = new Uint8Array(4);
  writeIpv4Addr(b, 0, parseIpv4Text(text)!);
  return b;
}

function v6(text: string): Uint8Array {
  const b = new Uint8Array(16);
  if (!parseIpv6Text(text, b)) throw new Error(`bad test address ${text}`);
  return b;
}

/** The UDP checksum of the whole datagram verifies (sums to 0xffff) when the payload is all there. */
function udpVerifies(q: Uint8Array, ipLen: number, family: 4 | 6): boolean {
  const udpLen = q.length - ipLen;
  let sum = family === 4 ? pseudoHeaderSumV4(q, 12, 16, 17, udpLen) : pseudoHeaderSumV6(q, 8, 24, 17, udpLen);
  sum = sum16(q, ipLen, udpLen, sum);
  return fold(sum) === 0xffff;
}

t.test('IPv4: header, ports, length and checksum of the client datagram', async (t) => {
  const payload = new TextEncoder().encode('hello');
  const q = buildUdpQuote(4, record(v4('192.0.2.2'), v4('203.0.113.2')), 8, 24, 40000, 7002, payload);
  t.equal(q.length, 20 + 8 + 5, 'IP + UDP + the whole short payload');
  const ip = newIpv4Repr();
  t.equal(parseIpv4(q, 0, q.length, ip), WireError.Ok, 'the IPv4 header parses, checksum included');
  t.equal(ip.protocol, 17, 'protocol UDP');
  const udp = newUdpRepr();
  t.equal(parseUdp(q, 20, q.length - 20, udp), WireError.Ok, 'the UDP header parses');
  t.same([udp.srcPort, udp.dstPort, udp.length], [40000, 7002, 13], 'ports and length are the client datagram\'s');
  t.ok(udpVerifies(q, 20, 4), 'the UDP checksum verifies');
});

t.test('IPv6: header, ports and checksum; a long payload is cut to the quote limit', async (t) => {
  const src = v6('2001:db8:1::2');
  const dst = v6('2001:db8:2::2');
  const short = buildUdpQuote(6, record(src, dst), 8, 24, 5353, 7002, new Uint8Array([1, 2, 3]));
  const ip = newIpv6Repr();
  t.equal(parseIpv6(short, 0, short.length, ip), WireError.Ok, 'the IPv6 header parses');
  t.same([ip.nextHeader, ip.payloadLength, ip.hopLimit], [17, 11, 64], 'next header UDP, payload length, hop limit');
  t.same(short.subarray(8, 24), src, 'the source is the client');
  t.ok(udpVerifies(short, 40, 6), 'the UDP checksum verifies');

  const long = new Uint8Array(2000).fill(7);
  const q = buildUdpQuote(6, record(src, dst), 8, 24, 5353, 7002, long);
  t.equal(q.length, 548 + 8, 'IP header and payload bytes within 548, plus the UDP header');
  t.equal((q[44]! << 8) | q[45]!, 2008, 'the UDP length still says the whole datagram');
});
