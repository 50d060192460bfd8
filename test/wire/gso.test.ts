import t from 'tap';
import { WireError } from '../../src/wire/errors.js';
import { GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VNET_F_NEEDS_CSUM, emitVnet, newVnetRepr, parseVnet } from '../../src/wire/vnet.js';
import { completePartialChecksum, gsoSplit, prepareTso } from '../../src/wire/gso.js';
import { fold, pseudoHeaderSumV4, pseudoHeaderSumV6 } from '../../src/wire/checksum.js';
import { newIpv4Repr, parseIpv4 } from '../../src/wire/ipv4.js';
import { newIpv6Repr, parseIpv6 } from '../../src/wire/ipv6.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, newTcpRepr, parseTcp, verifyL4Checksum } from '../../src/wire/tcp.js';
import { tcpPacket } from './fixtures.js';

t.test('virtio_net_hdr round trip (little-endian fields)', async (t) => {
  const v = newVnetRepr();
  v.flags = VNET_F_NEEDS_CSUM;
  v.gsoType = GSO_TCPV6;
  v.ecn = true;
  v.hdrLen = 0x1234;
  v.gsoSize = 1428;
  v.csumStart = 40;
  v.csumOffset = 16;
  const buf = new Uint8Array(12).fill(0xa5);
  emitVnet(v, buf, 1);
  t.equal(buf[2], GSO_TCPV6 | 0x80);
  t.equal(buf[3], 0x34, 'hdr_len low byte first');
  const r = newVnetRepr();
  t.equal(parseVnet(buf, 1, 10, r), WireError.Ok);
  t.same(r, v);
  buf[2] = 9;
  t.equal(parseVnet(buf, 1, 10, r), WireError.BadGso);
  t.equal(parseVnet(buf, 1, 9, r), WireError.Truncated);
});

function superPacket(version: 4 | 6, payload: number, flags: number): { pkt: Uint8Array; v: ReturnType<typeof newVnetRepr> } {
  // Timestamps option so that hdr_len includes options (12 bytes).
  const pkt = tcpPacket(version, 0xfffff000, flags, payload, '0101 080a 0000 0001 0000 0002');
  const v = newVnetRepr();
  v.flags = VNET_F_NEEDS_CSUM;
  v.gsoType = version === 4 ? GSO_TCPV4 : GSO_TCPV6;
  v.hdrLen = pkt.length; // deliberately wrong, as on the forwarding path
  v.gsoSize = 1448;
  v.csumStart = version === 4 ? 20 : 40;
  v.csumOffset = 16;
  return { pkt, v };
}

for (const version of [4, 6] as const) {
  t.test(`gsoSplit: 64 KB TCPv${version} super-packet into valid segments`, async (t) => {
    const payload = 65535 - (version === 4 ? 20 : 40) - 32 - (version === 4 ? 0 : 40);
    const { pkt, v } = superPacket(version, payload, TCP_ACK | TCP_PSH | TCP_FIN);
    const out = new Uint8Array(200000).fill(0xa5);
    const lens = new Uint32Array(128);
    const n = gsoSplit(v, pkt, 0, pkt.length, out, 0, lens);
    t.equal(n, Math.ceil(payload / 1448));
    const tcp = newTcpRepr();
    const ip4 = newIpv4Repr();
    const ip6 = newIpv6Repr();
    let off = 0;
    let expectSeq = 0xfffff000;
    const joined: number[] = [];
    let bad = 0;
    for (let i = 0; i < n; i++) {
      const len = lens[i]!;
      let l4 = 0;
      let pseudo = 0;
      if (version === 4) {
        if (parseIpv4(out, off, len, ip4) !== WireError.Ok) bad++;
        if (ip4.id !== ((0x1234 + i) & 0xffff)) bad++;
        l4 = ip4.payloadOffset;
        pseudo = pseudoHeaderSumV4(out, ip4.srcOffset, ip4.dstOffset, 6, ip4.payloadLength);
      } else {
        if (parseIpv6(out, off, len, ip6) !== WireError.Ok) bad++;
        l4 = ip6.upperOffset;
        pseudo = pseudoHeaderSumV6(out, ip6.srcOffset, ip6.dstOffset, 6, ip6.upperLength);
      }
      const l4Len = off + len - l4;
      if (!verifyL4Checksum(out, l4, l4Len, pseudo)) bad++;
      if (parseTcp(out, l4, l4Len, tcp) !== WireError.Ok) bad++;
      if (tcp.seq !== expectSeq) bad++;
      if (!tcp.hasTimestamps || tcp.tsVal !== 1) bad++;
      const last = i === n - 1;
      if (((tcp.flags & (TCP_FIN | TCP_PSH)) !== 0) !== last) bad++;
      expectSeq = (expectSeq + tcp.payloadLength) >>> 0;
      if (!last && tcp.payloadLength !== 1448) bad++;
      for (let k = 0; k < tcp.payloadLength; k++) joined.push(out[tcp.payloadOffset + k]!);
      off += len;
    }
    t.equal(bad, 0, 'every segment parses, checksums verify, seq/ID/flags are right');
    t.ok(expectSeq < 0xfffff000, 'sequence numbers wrapped past 2^32');
    const hl = (version === 4 ? 20 : 40) + 32;
    t.same(Buffer.from(joined), Buffer.from(pkt.subarray(hl)), 'payload intact and in order');
  });
}

t.test('gsoSplit refuses mismatched, malformed and oversized input', async (t) => {
  const { pkt, v } = superPacket(4, 5000, TCP_ACK);
  const out = new Uint8Array(10000);
  const lens = new Uint32Array(64);
  const wrongFamily = { ...v, gsoType: GSO_TCPV6 };
  t.equal(gsoSplit(wrongFamily, pkt, 0, pkt.length, out, 0, lens), -WireError.BadGso);
  t.equal(gsoSplit({ ...v, gsoSize: 0 }, pkt, 0, pkt.length, out, 0, lens), -WireError.BadGso);
  t.equal(gsoSplit({ ...v, csumStart: 4 }, pkt, 0, pkt.length, out, 0, lens), -WireError.BadGso);
  t.equal(gsoSplit(v, pkt, 0, pkt.length, out, 0, new Uint32Array(2)), -WireError.BadLength);
  t.equal(gsoSplit(v, pkt, 0, pkt.length, new Uint8Array(100), 0, lens), -WireError.BadLength);
  const badDoff = pkt.slice();
  badDoff[32] = 0x10;
  t.equal(gsoSplit(v, badDoff, 0, badDoff.length, out, 0, lens), -WireError.BadGso);
});

t.test('gsoSplit of UDP (GSO_UDP_L4) sets per-datagram lengths and checksums', async (t) => {
  const payload = 3000;
  const pkt = new Uint8Array(20 + 8 + payload);
  pkt.set([0x45, 0, (pkt.length >> 8) & 0xff, pkt.length & 0xff, 0, 1, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 2, 203, 0, 113, 2]);
  pkt.set([0x13, 0x88, 0x13, 0x89], 20);
  for (let i = 0; i < payload; i++) pkt[28 + i] = i & 0xff;
  const v = { ...newVnetRepr(), flags: VNET_F_NEEDS_CSUM, gsoType: GSO_UDP_L4, gsoSize: 1200, csumStart: 20, csumOffset: 6 };
  const out = new Uint8Array(5000);
  const lens = new Uint32Array(8);
  const n = gsoSplit(v, pkt, 0, pkt.length, out, 0, lens);
  t.equal(n, 3);
  t.same(Array.from(lens.subarray(0, 3)), [1228, 1228, 628]);
  let off = 0;
  for (let i = 0; i < n; i++) {
    const l4Len = lens[i]! - 20;
    t.equal((out[off + 24]! << 8) | out[off + 25]!, l4Len, `datagram ${i} UDP length`);
    t.ok(verifyL4Checksum(out, off + 20, l4Len, pseudoHeaderSumV4(out, off + 12, off + 16, 17, l4Len)), `datagram ${i} checksum`);
    off += lens[i]!;
  }
});

t.test('completePartialChecksum finishes a NEEDS_CSUM packet', async (t) => {
  const pkt = tcpPacket(4, 5, TCP_ACK, 333);
  const l4Len = pkt.length - 20;
  pkt[36] = 0;
  pkt[37] = 0;
  const seed = fold(pseudoHeaderSumV4(pkt, 12, 16, 6, l4Len));
  pkt[36] = seed >>> 8;
  pkt[37] = seed & 0xff;
  const v = { ...newVnetRepr(), flags: VNET_F_NEEDS_CSUM, gsoType: GSO_NONE, csumStart: 20, csumOffset: 16 };
  t.notOk(verifyL4Checksum(pkt, 20, l4Len, pseudoHeaderSumV4(pkt, 12, 16, 6, l4Len)));
  t.equal(completePartialChecksum(v, pkt, 0, pkt.length), WireError.Ok);
  t.ok(verifyL4Checksum(pkt, 20, l4Len, pseudoHeaderSumV4(pkt, 12, 16, 6, l4Len)));
  t.equal(completePartialChecksum({ ...v, csumStart: 5000 }, pkt, 0, pkt.length), WireError.BadGso);
});

t.test('prepareTso marks large segments for the kernel and small ones as plain partial-checksum packets', async (t) => {
  const big = tcpPacket(6, 1, TCP_ACK, 20000);
  const hdr = new Uint8Array(10);
  prepareTso(big, 0, big.length, 40, 1428, true, hdr, 0);
  const v = newVnetRepr();
  t.equal(parseVnet(hdr, 0, 10, v), WireError.Ok);
  t.equal(v.flags, VNET_F_NEEDS_CSUM);
  t.equal(v.gsoType, GSO_TCPV6);
  t.equal(v.gsoSize, 1428);
  t.equal(v.hdrLen, 60);
  t.equal(v.csumStart, 40);
  t.equal(v.csumOffset, 16);
  const seed = (big[56]! << 8) | big[57]!;
  t.equal(seed, fold(pseudoHeaderSumV6(big, 8, 24, 6, big.length - 40)), 'checksum field holds the folded pseudo-header sum');
  // The kernel's view: completing the partial checksum yields a valid packet.
  t.equal(completePartialChecksum(v, big, 0, big.length), WireError.Ok);
  t.ok(verifyL4Checksum(big, 40, big.length - 40, pseudoHeaderSumV6(big, 8, 24, 6, big.length - 40)));
  const small = tcpPacket(4, 1, TCP_ACK, 100);
  prepareTso(small, 0, small.length, 20, 1448, false, hdr, 0);
  parseVnet(hdr, 0, 10, v);
  t.equal(v.gsoType, GSO_NONE);
  t.equal(v.gsoSize, 0);
});
