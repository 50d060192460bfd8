/**
 * Packet builders for stack tests: what a client on the TUN side sends
 * (TCP, UDP) and ICMP errors a router would send about our packets.
 */
import { hex, sealIpv4, sealIpv6 } from '../wire/fixtures.js';
import { internetChecksum, pseudoHeaderSumV6 } from '../../src/wire/checksum.js';
import { finishL4Checksum } from '../../src/wire/tcp.js';

export const CLIENT4 = hex('c0000202'); // 192.0.2.2
export const SERVER4 = hex('cb007102'); // 203.0.113.2
export const CLIENT6 = hex('20010db8000c00000000000000000002');
export const SERVER6 = hex('20010db8000500000000000000000002');

export interface SegmentSpec {
  v?: 4 | 6;
  srcPort?: number;
  dstPort?: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  /** Raw option bytes (padded to 4 by the caller). */
  options?: Uint8Array;
  payload?: Uint8Array;
}

function ipHeader(v: 4 | 6, protocol: number, l4Len: number): Uint8Array {
  if (v === 4) {
    const h = new Uint8Array(20);
    h.set(hex('4500 0000 0000 4000 40'));
    h[9] = protocol;
    const total = 20 + l4Len;
    h[2] = total >>> 8;
    h[3] = total & 0xff;
    h.set(CLIENT4, 12);
    h.set(SERVER4, 16);
    return h;
  }
  const h = new Uint8Array(40);
  h[0] = 0x60;
  h[4] = l4Len >>> 8;
  h[5] = l4Len & 0xff;
  h[6] = protocol;
  h[7] = 64;
  h.set(CLIENT6, 8);
  h.set(SERVER6, 24);
  return h;
}

export function tcpSegment(s: SegmentSpec): Uint8Array {
  const v = s.v ?? 4;
  const opts = s.options ?? new Uint8Array(0);
  const payload = s.payload ?? new Uint8Array(0);
  const thl = 20 + opts.length;
  const l4Len = thl + payload.length;
  const ip = ipHeader(v, 6, l4Len);
  const pkt = new Uint8Array(ip.length + l4Len);
  pkt.set(ip);
  const t = ip.length;
  const dv = new DataView(pkt.buffer);
  dv.setUint16(t, s.srcPort ?? 40000);
  dv.setUint16(t + 2, s.dstPort ?? 80);
  dv.setUint32(t + 4, s.seq >>> 0);
  dv.setUint32(t + 8, (s.ack ?? 0) >>> 0);
  pkt[t + 12] = (thl / 4) << 4;
  pkt[t + 13] = s.flags;
  dv.setUint16(t + 14, s.window ?? 65535);
  pkt.set(opts, t + 20);
  pkt.set(payload, t + thl);
  return v === 4 ? sealIpv4(pkt) : sealIpv6(pkt);
}

export function udpDatagram(v: 4 | 6, srcPort: number, dstPort: number, payload: Uint8Array): Uint8Array {
  const ip = ipHeader(v, 17, 8 + payload.length);
  const pkt = new Uint8Array(ip.length + 8 + payload.length);
  pkt.set(ip);
  const dv = new DataView(pkt.buffer);
  dv.setUint16(ip.length, srcPort);
  dv.setUint16(ip.length + 2, dstPort);
  dv.setUint16(ip.length + 4, 8 + payload.length);
  pkt.set(payload, ip.length + 8);
  return v === 4 ? sealIpv4(pkt) : sealIpv6(pkt);
}

/**
 * An ICMP error from a router (198.51.100.1 / 2001:db8:ff::1) to the
 * quoted packet's source, quoting its first bytes. `mtu` is the next-hop
 * MTU of Fragmentation Needed (v4, type 3 code 4) or Packet Too Big (v6, type 2).
 */
export function icmpErrorAbout(quoted: Uint8Array, type: number, code: number, mtu = 0): Uint8Array {
  const v = quoted[0]! >> 4;
  if (v === 4) {
    const quote = quoted.subarray(0, Math.min(quoted.length, 28));
    const pkt = new Uint8Array(20 + 8 + quote.length);
    pkt.set(hex('4500 0000 0000 0000 4001 0000 c6336401'));
    pkt.set(quoted.subarray(12, 16), 16); // to the quoted packet's source
    pkt[2] = pkt.length >>> 8;
    pkt[3] = pkt.length & 0xff;
    pkt[20] = type;
    pkt[21] = code;
    pkt[26] = mtu >>> 8;
    pkt[27] = mtu & 0xff;
    pkt.set(quote, 28);
    const c = internetChecksum(pkt, 0, 20);
    pkt[10] = c >>> 8;
    pkt[11] = c & 0xff;
    return sealIpv4(pkt);
  }
  const quote = quoted.subarray(0, Math.min(quoted.length, 1232));
  const l4Len = 8 + quote.length;
  const pkt = new Uint8Array(40 + l4Len);
  pkt[0] = 0x60;
  pkt[4] = l4Len >>> 8;
  pkt[5] = l4Len & 0xff;
  pkt[6] = 58;
  pkt[7] = 64;
  pkt.set(hex('20010db800ff00000000000000000001'), 8);
  pkt.set(quoted.subarray(8, 24), 24);
  pkt[40] = type;
  pkt[41] = code;
  new DataView(pkt.buffer).setUint32(44, mtu >>> 0);
  pkt.set(quote, 48);
  finishL4Checksum(pkt, 40, l4Len, 42, pseudoHeaderSumV6(pkt, 8, 24, 58, l4Len));
  return pkt;
}

/** TCP header fields of a packet the stack sent. */
export function readTcp(pkt: Uint8Array): { seq: number; ack: number; flags: number; window: number; payload: Uint8Array; srcPort: number; dstPort: number } {
  const v = pkt[0]! >> 4;
  const ipl = v === 4 ? (pkt[0]! & 0x0f) * 4 : 40;
  const dv = new DataView(pkt.buffer, pkt.byteOffset);
  const thl = (pkt[ipl + 12]! >> 4) * 4;
  const total = v === 4 ? dv.getUint16(2) : 40 + dv.getUint16(4);
  return {
    srcPort: dv.getUint16(ipl),
    dstPort: dv.getUint16(ipl + 2),
    seq: dv.getUint32(ipl + 4),
    ack: dv.getUint32(ipl + 8),
    flags: pkt[ipl + 13]!,
    window: dv.getUint16(ipl + 14),
    payload: pkt.subarray(ipl + thl, total),
  };
}

export const MSS_1460 = hex('0204 05b4');

/** Each TCP option of a packet the stack sent: its kind and where it starts (at the kind byte), with its length. */
export function tcpOptions(pkt: Uint8Array): { kind: number; at: number; len: number }[] {
  const ipl = pkt[0]! >> 4 === 4 ? (pkt[0]! & 0x0f) * 4 : 40;
  const thl = (pkt[ipl + 12]! >> 4) * 4;
  const out: { kind: number; at: number; len: number }[] = [];
  for (let i = ipl + 20; i < ipl + thl; ) {
    const kind = pkt[i]!;
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    const len = pkt[i + 1]!;
    out.push({ kind, at: i, len });
    i += len;
  }
  return out;
}
