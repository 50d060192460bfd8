import t from 'tap';
import { WireError } from '../../src/wire/errors.js';
import {
  TCP_ACK,
  TCP_SYN,
  copyTcpRepr,
  emitTcp,
  newTcpRepr,
  parseTcp,
  tcpHeaderLength,
  verifyL4Checksum,
} from '../../src/wire/tcp.js';
import { pseudoHeaderSumV4 } from '../../src/wire/checksum.js';
import { IPV4_TCP_SYN, sealIpv4, tcpPacket } from './fixtures.js';

t.test('parses a Linux SYN with MSS, SACK-permitted, timestamps and window scale', async (t) => {
  const pkt = sealIpv4(IPV4_TCP_SYN.slice());
  const r = newTcpRepr();
  t.equal(parseTcp(pkt, 20, pkt.length - 20, r), WireError.Ok);
  t.equal(r.srcPort, 40000);
  t.equal(r.dstPort, 80);
  t.equal(r.seq, 0xa1b2c3d4);
  t.equal(r.flags, TCP_SYN);
  t.equal(r.window, 0xfaf0);
  t.equal(r.mss, 1460);
  t.ok(r.sackPermitted);
  t.ok(r.hasTimestamps);
  t.equal(r.tsVal, 0x01020304);
  t.equal(r.windowScale, 7);
  t.equal(r.headerLength, 40);
  t.equal(r.payloadLength, 0);
  t.ok(verifyL4Checksum(pkt, 20, pkt.length - 20, pseudoHeaderSumV4(pkt, 12, 16, 6, pkt.length - 20)));
});

t.test('SACK blocks, window-scale clamp, unknown options skipped', async (t) => {
  // NOP NOP SACK(2 blocks) + NOP NOP WS(15) + unknown kind 30 len 4 + pad
  const opts = '0101 0512 00000064 000000c8 0000012c 00000190 0101 0303 0f1e 0400 0000 0000';
  const pkt = tcpPacket(4, 1, TCP_ACK, 5, opts);
  const r = newTcpRepr();
  t.equal(parseTcp(pkt, 20, pkt.length - 20, r), WireError.Ok);
  t.equal(r.sackCount, 2);
  t.same([r.sackLeft[0], r.sackRight[0], r.sackLeft[1], r.sackRight[1]], [100, 200, 300, 400]);
  t.equal(r.windowScale, 14, 'RFC 7323 2.3: shift > 14 is used as 14');
  t.equal(r.payloadLength, 5);
});

t.test('malformed options and data offsets are rejected, never thrown', async (t) => {
  const r = newTcpRepr();
  const cases: [string, string, number][] = [
    ['MSS with length 3', '0203 0500', WireError.BadOption],
    ['option length 0', '0800 0000', WireError.BadOption],
    ['option runs past the header', '0101 080a 0000', WireError.BadOption],
    ['SACK with 1 odd byte', '0503 0000', WireError.BadOption],
    ['length byte missing', '0101 0102', WireError.BadOption],
  ];
  for (const [name, opts, code] of cases) {
    const pkt = tcpPacket(4, 1, TCP_ACK, 0, opts);
    t.equal(parseTcp(pkt, 20, pkt.length - 20, r), code, name);
  }
  const pkt = tcpPacket(4, 1, TCP_ACK, 0);
  pkt[32] = 0x40; // data offset 4
  t.equal(parseTcp(pkt, 20, pkt.length - 20, r), WireError.BadDataOffset);
  pkt[32] = 0xf0; // data offset 15 > length
  t.equal(parseTcp(pkt, 20, pkt.length - 20, r), WireError.Truncated);
  for (let n = 0; n < 20; n++) t.equal(parseTcp(pkt, 20, n, r), WireError.Truncated);
});

t.test('options do not leak from a previous parse into the same repr', async (t) => {
  const r = newTcpRepr();
  const syn = sealIpv4(IPV4_TCP_SYN.slice());
  parseTcp(syn, 20, syn.length - 20, r);
  const plain = tcpPacket(4, 9, TCP_ACK, 0);
  t.equal(parseTcp(plain, 20, plain.length - 20, r), WireError.Ok);
  t.equal(r.mss, 0);
  t.equal(r.windowScale, -1);
  t.notOk(r.sackPermitted);
  t.notOk(r.hasTimestamps);
});

t.test('emit/parse round trip of every option, into a 0xa5 buffer', async (t) => {
  const e = newTcpRepr();
  e.srcPort = 443;
  e.dstPort = 51000;
  e.seq = 0xfffffff0;
  e.ack = 0x10;
  e.flags = TCP_SYN | TCP_ACK;
  e.window = 65535;
  e.mss = 1440;
  e.sackPermitted = true;
  e.hasTimestamps = true;
  e.tsVal = 123456;
  e.tsEcr = 654321;
  e.windowScale = 9;
  e.sackCount = 1;
  e.sackLeft[0] = 5;
  e.sackRight[0] = 10;
  const hl = tcpHeaderLength(e);
  t.equal(hl % 4, 0);
  const buf = new Uint8Array(80).fill(0xa5);
  t.equal(emitTcp(e, buf, 3), hl);
  const r = newTcpRepr();
  t.equal(parseTcp(buf, 3, hl, r), WireError.Ok);
  for (const k of ['srcPort', 'dstPort', 'seq', 'ack', 'flags', 'window', 'mss', 'sackPermitted', 'hasTimestamps', 'tsVal', 'tsEcr', 'windowScale', 'sackCount'] as const) {
    t.equal(r[k], e[k], k);
  }
  t.equal(r.sackLeft[0], 5);
  t.equal(r.sackRight[0], 10);
  t.equal(r.urgent, 0);
  const c = newTcpRepr();
  copyTcpRepr(r, c);
  t.same(c, r, 'copyTcpRepr copies every field');
});

t.test('emit keeps the header within 60 bytes by dropping SACK blocks', async (t) => {
  const e = newTcpRepr();
  e.hasTimestamps = true;
  e.sackCount = 4;
  e.mss = 1460;
  const hl = tcpHeaderLength(e);
  t.ok(hl <= 60);
  const buf = new Uint8Array(60);
  t.equal(emitTcp(e, buf, 0), hl);
  const r = newTcpRepr();
  t.equal(parseTcp(buf, 0, hl, r), WireError.Ok);
  t.ok(r.sackCount >= 2 && r.sackCount < 4, `kept ${r.sackCount} blocks`);
});
