import t from 'tap';
import { WireError } from '../../src/wire/errors.js';
import { emitUdp, newUdpRepr, parseUdp } from '../../src/wire/udp.js';
import { finishUdpChecksum, verifyL4Checksum } from '../../src/wire/tcp.js';
import { pseudoHeaderSumV6 } from '../../src/wire/checksum.js';
import {
  ICMP_DEST_UNREACHABLE,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_MAX_QUOTE,
  ICMP_UNREACH_FRAG_NEEDED,
  emitIcmpv4Echo,
  emitIcmpv4Error,
  newIcmpRepr,
  parseIcmpv4,
} from '../../src/wire/icmp.js';
import {
  ICMPV6_ECHO_REQUEST,
  ICMPV6_MAX_QUOTE,
  ICMPV6_PACKET_TOO_BIG,
  emitIcmpv6Echo,
  emitIcmpv6Error,
  icmpv6ErrorLength,
  parseIcmpv6,
} from '../../src/wire/icmpv6.js';
import { IPV6_EXT_CHAIN, hex } from './fixtures.js';

t.test('UDP: parse, length checks, emit round trip with checksum', async (t) => {
  const r = newUdpRepr();
  t.equal(parseUdp(IPV6_EXT_CHAIN, 64, 16, r), WireError.Ok);
  t.equal(r.srcPort, 8080);
  t.equal(r.dstPort, 53);
  t.equal(r.payloadLength, 8);
  t.equal(parseUdp(IPV6_EXT_CHAIN, 64, 15, r), WireError.Truncated, 'length field larger than the IP payload');
  const short = hex('0001 0002 0007 0000');
  t.equal(parseUdp(short, 0, 8, r), WireError.BadLength);
  for (let n = 0; n < 8; n++) t.equal(parseUdp(short, 0, n, r), WireError.Truncated);

  const addrs = new Uint8Array(32);
  addrs[15] = 1;
  addrs[31] = 2;
  const buf = new Uint8Array(8 + 3).fill(0xa5);
  emitUdp(5353, 53, 3, buf, 0);
  buf.set([1, 2, 3], 8);
  const pseudo = pseudoHeaderSumV6(addrs, 0, 16, 17, 11);
  finishUdpChecksum(buf, 0, 11, pseudo);
  t.ok(verifyL4Checksum(buf, 0, 11, pseudo));
  t.equal(parseUdp(buf, 0, 11, r), WireError.Ok);
  t.equal(r.srcPort, 5353);
  t.equal(r.length, 11);
});

t.test('ICMPv4 echo round trip and checksum', async (t) => {
  const data = new Uint8Array([1, 2, 3, 4, 5]);
  const buf = new Uint8Array(20).fill(0xa5);
  const n = emitIcmpv4Echo(ICMP_ECHO_REQUEST, 0x1234, 7, data, 0, 5, buf, 1);
  t.equal(n, 13);
  const r = newIcmpRepr();
  t.equal(parseIcmpv4(buf, 1, n, r), WireError.Ok);
  t.equal(r.type, ICMP_ECHO_REQUEST);
  t.equal(r.identifier, 0x1234);
  t.equal(r.sequence, 7);
  t.same(Array.from(buf.subarray(r.payloadOffset, r.payloadOffset + r.payloadLength)), [1, 2, 3, 4, 5]);
  buf[5] ^= 0xff;
  t.equal(parseIcmpv4(buf, 1, n, r), WireError.BadChecksum);
  emitIcmpv4Echo(ICMP_ECHO_REPLY, 1, 1, null, 0, 0, buf, 0);
  t.equal(parseIcmpv4(buf, 0, 8, r), WireError.Ok);
  t.equal(r.type, ICMP_ECHO_REPLY);
});

t.test('ICMPv4 errors quote the datagram (clamped) and carry the next-hop MTU', async (t) => {
  const original = new Uint8Array(1500);
  for (let i = 0; i < original.length; i++) original[i] = i & 0xff;
  const buf = new Uint8Array(600);
  const n = emitIcmpv4Error(ICMP_DEST_UNREACHABLE, ICMP_UNREACH_FRAG_NEEDED, 1400, original, 0, original.length, buf, 0);
  t.equal(n, 8 + ICMP_MAX_QUOTE, 'fits 576 bytes with a 20-byte IP header');
  const r = newIcmpRepr();
  t.equal(parseIcmpv4(buf, 0, n, r), WireError.Ok);
  t.equal(r.nextHopMtu, 1400);
  t.equal(r.payloadLength, ICMP_MAX_QUOTE);
  t.equal(buf[r.payloadOffset + 100], 100);
});

t.test('ICMPv6: checksum over the pseudo-header, echo and packet-too-big', async (t) => {
  const addrs = new Uint8Array(32);
  addrs[0] = 0x20;
  addrs[15] = 1;
  addrs[16] = 0x20;
  addrs[31] = 2;
  const buf = new Uint8Array(1300).fill(0xa5);
  const pseudo = pseudoHeaderSumV6(addrs, 0, 16, 58, 12);
  const n = emitIcmpv6Echo(ICMPV6_ECHO_REQUEST, 9, 10, new Uint8Array([9, 8, 7, 6]), 0, 4, pseudo, buf, 0);
  const r = newIcmpRepr();
  t.equal(parseIcmpv6(buf, 0, n, r, pseudo), WireError.Ok);
  t.equal(r.identifier, 9);
  t.equal(r.sequence, 10);
  t.equal(parseIcmpv6(buf, 0, n, r, pseudo + 1), WireError.BadChecksum, 'a different pseudo-header fails');

  const original = new Uint8Array(1500).fill(3);
  const len = icmpv6ErrorLength(original.length);
  t.equal(len, 8 + ICMPV6_MAX_QUOTE, 'RFC 4443 2.4(c): fits the 1280-byte minimum MTU');
  const p2 = pseudoHeaderSumV6(addrs, 0, 16, 58, len);
  t.equal(emitIcmpv6Error(ICMPV6_PACKET_TOO_BIG, 0, 1280, original, 0, original.length, p2, buf, 0), len);
  t.equal(parseIcmpv6(buf, 0, len, r, p2), WireError.Ok);
  t.equal(r.type, ICMPV6_PACKET_TOO_BIG);
  t.equal(r.nextHopMtu, 1280);
  for (let k = 0; k < 8; k++) t.equal(parseIcmpv6(buf, 0, k, r, null), WireError.Truncated);
});
