/** Byte fixtures shared by the codec tests. */

export function hex(s: string): Uint8Array {
  const clean = s.replace(/[^0-9a-f]/gi, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** A well-known IPv4 header (UDP, 192.168.0.1 -> 192.168.0.199) with checksum 0xb861. */
export const IPV4_UDP_HEADER = hex('4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7');

/**
 * An IPv4 TCP SYN as Linux sends it: 192.0.2.2:40000 -> 203.0.113.2:80,
 * options MSS 1460, SACK-permitted, timestamps (TSval 0x01020304), NOP,
 * window scale 7. Checksums are filled in by the test helpers.
 */
export const IPV4_TCP_SYN = hex(
  '4500 003c 1c46 4000 4006 0000 c000 0202 cb00 7102' + // IP
    '9c40 0050 a1b2 c3d4 0000 0000 a002 faf0 0000 0000' + // TCP
    '0204 05b4 0402 080a 0102 0304 0000 0000 0103 0307', // options
);

/**
 * IPv6 with hop-by-hop (8 bytes, PadN), destination options (8 bytes) and a
 * fragment header (offset 0, M=1, id 0xdeadbeef) before 16 bytes of UDP.
 * 2001:db8:c::2 -> 2001:db8:5::2.
 */
export const IPV6_EXT_CHAIN = hex(
  '6000 0000 0028 0040' +
    '2001 0db8 000c 0000 0000 0000 0000 0002' +
    '2001 0db8 0005 0000 0000 0000 0000 0002' +
    '3c00 0104 0000 0000' + // hop-by-hop: next = dest opts (60), len 0, PadN(4)
    '2c00 0104 0000 0000' + // dest opts: next = fragment (44), len 0, PadN(4)
    '1100 0001 dead beef' + // fragment: next = UDP, offset 0, M=1
    '1f90 0035 0010 0000 6162 6364 6566 6768', // UDP 8080 -> 53, len 16
);

import { internetChecksum, pseudoHeaderSumV4, pseudoHeaderSumV6 } from '../../src/wire/checksum.js';
import { finishL4Checksum, finishUdpChecksum } from '../../src/wire/tcp.js';

/** Fills the IPv4 header checksum and the TCP/UDP/ICMP checksum of a whole IPv4 packet. */
export function sealIpv4(pkt: Uint8Array): Uint8Array {
  const ihl = (pkt[0]! & 0x0f) * 4;
  pkt[10] = 0;
  pkt[11] = 0;
  const c = internetChecksum(pkt, 0, ihl);
  pkt[10] = c >>> 8;
  pkt[11] = c & 0xff;
  const total = (pkt[2]! << 8) | pkt[3]!;
  const l4Len = total - ihl;
  const proto = pkt[9]!;
  const pseudo = pseudoHeaderSumV4(pkt, 12, 16, proto, l4Len);
  if (proto === 6) {
    pkt[ihl + 16] = 0;
    pkt[ihl + 17] = 0;
    finishL4Checksum(pkt, ihl, l4Len, ihl + 16, pseudo);
  } else if (proto === 17) {
    pkt[ihl + 6] = 0;
    pkt[ihl + 7] = 0;
    finishUdpChecksum(pkt, ihl, l4Len, pseudo);
  } else if (proto === 1) {
    pkt[ihl + 2] = 0;
    pkt[ihl + 3] = 0;
    finishL4Checksum(pkt, ihl, l4Len, ihl + 2, 0);
  }
  return pkt;
}

/** Fills the TCP/UDP/ICMPv6 checksum of an IPv6 packet without extension headers. */
export function sealIpv6(pkt: Uint8Array): Uint8Array {
  const l4Len = (pkt[4]! << 8) | pkt[5]!;
  const nh = pkt[6]!;
  const pseudo = pseudoHeaderSumV6(pkt, 8, 24, nh, l4Len);
  const field = nh === 6 ? 16 : nh === 17 ? 6 : 2;
  pkt[40 + field] = 0;
  pkt[40 + field + 1] = 0;
  if (nh === 17) finishUdpChecksum(pkt, 40, l4Len, pseudo);
  else finishL4Checksum(pkt, 40, l4Len, 40 + field, pseudo);
  return pkt;
}

/** Builds an IPv4 or IPv6 TCP packet with `payloadLen` patterned bytes. */
export function tcpPacket(version: 4 | 6, seq: number, flags: number, payloadLen: number, optionsHex = ''): Uint8Array {
  const opts = hex(optionsHex);
  const thl = 20 + opts.length;
  const ipl = version === 4 ? 20 : 40;
  const pkt = new Uint8Array(ipl + thl + payloadLen);
  if (version === 4) {
    pkt.set(hex('4500 0000 1234 4000 4006 0000 c000 0202 cb00 7102'));
    const total = pkt.length;
    pkt[2] = total >>> 8;
    pkt[3] = total & 0xff;
  } else {
    pkt.set(hex('6000 0000 0000 0640 20010db8000c00000000000000000002 20010db8000500000000000000000002'));
    const pl = pkt.length - 40;
    pkt[4] = pl >>> 8;
    pkt[5] = pl & 0xff;
  }
  const l4 = ipl;
  pkt[l4] = 0x9c;
  pkt[l4 + 1] = 0x40;
  pkt[l4 + 2] = 0;
  pkt[l4 + 3] = 80;
  pkt[l4 + 4] = seq >>> 24;
  pkt[l4 + 5] = (seq >>> 16) & 0xff;
  pkt[l4 + 6] = (seq >>> 8) & 0xff;
  pkt[l4 + 7] = seq & 0xff;
  pkt[l4 + 12] = (thl / 4) << 4;
  pkt[l4 + 13] = flags;
  pkt[l4 + 14] = 0xff;
  pkt[l4 + 15] = 0xff;
  pkt.set(opts, l4 + 20);
  for (let i = 0; i < payloadLen; i++) pkt[l4 + thl + i] = (i * 7 + 3) & 0xff;
  return version === 4 ? sealIpv4(pkt) : sealIpv6(pkt);
}
