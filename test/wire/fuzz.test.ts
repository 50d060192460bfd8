/**
 * Mutated and random packets into every parser: nothing throws, and every
 * offset and length a parser reports stays inside the buffer.
 */
import t from 'tap';
import { WireError } from '../../src/wire/errors.js';
import { newIpv4Repr, parseIpv4 } from '../../src/wire/ipv4.js';
import { newIpv6Repr, parseIpv6 } from '../../src/wire/ipv6.js';
import { newTcpRepr, parseTcp } from '../../src/wire/tcp.js';
import { newUdpRepr, parseUdp } from '../../src/wire/udp.js';
import { newIcmpRepr, parseIcmpv4 } from '../../src/wire/icmp.js';
import { parseIcmpv6 } from '../../src/wire/icmpv6.js';
import { GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, newVnetRepr, parseVnet } from '../../src/wire/vnet.js';
import { completePartialChecksum, gsoSplit } from '../../src/wire/gso.js';
import { IPV4_TCP_SYN, IPV6_EXT_CHAIN, sealIpv4, tcpPacket } from './fixtures.js';

let state = 0x2545f491;
function rand(n: number): number {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) % n;
}

function mutate(src: Uint8Array): Uint8Array {
  const b = src.slice(0, Math.max(0, src.length - (rand(4) === 0 ? rand(src.length + 1) : 0)));
  const flips = 1 + rand(6);
  for (let i = 0; i < flips && b.length > 0; i++) {
    const at = rand(b.length);
    switch (rand(4)) {
      case 0:
        b[at] ^= 1 << rand(8);
        break;
      case 1:
        b[at] = rand(256);
        break;
      case 2:
        b[at] = rand(2) === 0 ? 0 : 0xff;
        break;
      default: {
        // length fields are where lies hurt most
        const fields = [2, 3, 4, 5, 32, 33, 44, 45];
        const f = fields[rand(fields.length)]!;
        if (f < b.length) b[f] = rand(256);
      }
    }
  }
  return b;
}

const seeds: Uint8Array[] = [
  sealIpv4(IPV4_TCP_SYN.slice()),
  IPV6_EXT_CHAIN,
  tcpPacket(4, 1, 0x18, 300, '0101 080a 0000 0001 0000 0002'),
  tcpPacket(6, 1, 0x10, 1000, '0101 050a 00000001 00000002'),
  sealIpv4(Uint8Array.from([0x45, 0, 0, 36, 0, 1, 0, 0, 64, 17, 0, 0, 192, 0, 2, 2, 203, 0, 113, 2, 0, 53, 0, 53, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])),
  sealIpv4(Uint8Array.from([0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 192, 0, 2, 2, 203, 0, 113, 2, 8, 0, 0, 0, 0, 1, 0, 1])),
];

function inBounds(off: number, len: number, size: number): boolean {
  return off >= 0 && len >= 0 && off + len <= size;
}

t.test('200,000 mutated packets: no parser throws, offsets stay in bounds', async (t) => {
  const ip4 = newIpv4Repr();
  const ip6 = newIpv6Repr();
  const tcp = newTcpRepr();
  const udp = newUdpRepr();
  const icmp = newIcmpRepr();
  const vnet = newVnetRepr();
  const out = new Uint8Array(140000);
  const lens = new Uint32Array(64);
  let violations = 0;
  let accepted = 0;
  for (let i = 0; i < 200000; i++) {
    const pkt = i % 10 === 9 ? Uint8Array.from({ length: rand(120) }, () => rand(256)) : mutate(seeds[i % seeds.length]!);
    const n = pkt.length;
    if (parseIpv4(pkt, 0, n, ip4) === WireError.Ok) {
      accepted++;
      if (!inBounds(ip4.payloadOffset, ip4.payloadLength, n)) violations++;
      if (parseTcp(pkt, ip4.payloadOffset, ip4.payloadLength, tcp) === WireError.Ok && !inBounds(tcp.payloadOffset, tcp.payloadLength, n)) violations++;
      if (parseUdp(pkt, ip4.payloadOffset, ip4.payloadLength, udp) === WireError.Ok && !inBounds(udp.payloadOffset, udp.payloadLength, n)) violations++;
      if (parseIcmpv4(pkt, ip4.payloadOffset, ip4.payloadLength, icmp) === WireError.Ok && !inBounds(icmp.payloadOffset, icmp.payloadLength, n)) violations++;
    }
    if (parseIpv6(pkt, 0, n, ip6) === WireError.Ok) {
      accepted++;
      if (!inBounds(ip6.upperOffset, ip6.upperLength, n)) violations++;
      parseTcp(pkt, ip6.upperOffset, ip6.upperLength, tcp);
      parseUdp(pkt, ip6.upperOffset, ip6.upperLength, udp);
      parseIcmpv6(pkt, ip6.upperOffset, ip6.upperLength, icmp, 0);
    }
    // Raw transport parsers at arbitrary offsets, including past the end.
    const off = rand(n + 4);
    parseTcp(pkt, off, n - off, tcp);
    parseUdp(pkt, off, n - off, udp);
    parseIcmpv4(pkt, off, n - off, icmp);
    // The virtio header in front, then GSO split and checksum completion.
    if (n >= 10) parseVnet(pkt, 0, 10, vnet);
    vnet.gsoType = [GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4][rand(3)]!;
    vnet.gsoSize = rand(3) === 0 ? rand(2000) : 1 + rand(1500);
    vnet.csumStart = rand(3) === 0 ? rand(100) : pkt[0]! >> 4 === 6 ? 40 : 20;
    vnet.csumOffset = rand(20);
    vnet.flags = 1;
    const segs = gsoSplit(vnet, pkt, 0, n, out, 0, lens);
    if (segs > 0) {
      let sum = 0;
      for (let s = 0; s < segs; s++) sum += lens[s]!;
      if (sum > out.length) violations++;
    }
    completePartialChecksum(vnet, pkt, 0, n);
  }
  t.equal(violations, 0);
  t.ok(accepted > 1000, `mutations still exercise the deep paths (${accepted} packets parsed)`);
});
