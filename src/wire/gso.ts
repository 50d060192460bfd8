/**
 * Generic segmentation offload on the TUN (Linux
 * Documentation/networking/segmentation-offloads.rst; the virtio_net_hdr
 * contract of include/linux/virtio_net.h).
 *
 * Reading: with TUNSETOFFLOAD the kernel hands us TCP super-packets of up to
 * 64 KiB (one IP header, one TCP header, gso_size bytes per segment) and
 * packets whose checksum is only partial (VNET_F_NEEDS_CSUM: the field holds
 * the folded pseudo-header sum). `gsoSplit` turns a super-packet into the
 * MTU-sized packets it stands for; `completePartialChecksum` finishes a
 * partial checksum.
 *
 * Writing: `prepareTso` marks one large TCP segment for the kernel to cut
 * (CHECKSUM_PARTIAL + gso_type/gso_size), so the stack builds one packet
 * instead of forty.
 */
import { WireError } from './errors.js';
import { fold, pseudoHeaderSumV4, pseudoHeaderSumV6, sum16 } from './checksum.js';
import { IPV4_DST, IPV4_SRC, refreshIpv4Checksum } from './ipv4.js';
import { IPV6_DST, IPV6_SRC, NH_TCP } from './ipv6.js';
import { TCP_CHECKSUM_OFFSET } from './tcp.js';
import {
  emitVnet,
  newVnetRepr,
  GSO_NONE,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP_L4,
  VNET_F_NEEDS_CSUM,
  type VnetRepr,
} from './vnet.js';

const TCP_FIN_PSH = 0x01 | 0x08;

/**
 * For a GSO_NONE packet with VNET_F_NEEDS_CSUM: the checksum field at
 * csumStart + csumOffset holds the folded pseudo-header sum; replace it
 * with the complete checksum over the L4 data.
 */
export function completePartialChecksum(v: VnetRepr, pkt: Uint8Array, off: number, len: number): WireError {
  if ((v.flags & VNET_F_NEEDS_CSUM) === 0) return WireError.Ok;
  const field = v.csumStart + v.csumOffset;
  if (v.csumStart >= len || field + 2 > len) return WireError.BadGso;
  const at = off + field;
  const seed = (pkt[at]! << 8) | pkt[at + 1]!;
  pkt[at] = 0;
  pkt[at + 1] = 0;
  const c = ~fold(sum16(pkt, off + v.csumStart, len - v.csumStart, seed)) & 0xffff;
  pkt[at] = c >>> 8;
  pkt[at + 1] = c & 0xff;
  return WireError.Ok;
}

/**
 * Splits a GSO super-packet src[srcOff, srcOff+srcLen) (IP header first,
 * no virtio header) into packets written back to back into dst from dstOff;
 * segment i's length goes to segLengths[i]. Returns the segment count, or
 * -WireError when the packet is malformed or the output does not fit.
 *
 * hdr_len is recomputed, never trusted: on the forwarding path the kernel
 * may set it to the whole first packet (wireguard-go tun/offload_linux.go
 * makes the same observation).
 */
export function gsoSplit(
  v: VnetRepr,
  src: Uint8Array,
  srcOff: number,
  srcLen: number,
  dst: Uint8Array,
  dstOff: number,
  segLengths: Uint32Array,
): number {
  if (srcOff < 0 || srcLen < 1 || srcOff + srcLen > src.length) return -WireError.Truncated;
  const version = src[srcOff]! >> 4;
  const isTcp = v.gsoType === GSO_TCPV4 || v.gsoType === GSO_TCPV6;
  if (v.gsoType === GSO_TCPV4 && version !== 4) return -WireError.BadGso;
  if (v.gsoType === GSO_TCPV6 && version !== 6) return -WireError.BadGso;
  if (!isTcp && v.gsoType !== GSO_UDP_L4) return -WireError.BadGso;
  if (version !== 4 && version !== 6) return -WireError.BadGso;
  const l3Len = v.csumStart;
  if (l3Len < (version === 4 ? 20 : 40) || l3Len + 8 > srcLen) return -WireError.BadGso;
  let l4HeaderLen: number;
  if (isTcp) {
    if (l3Len + 20 > srcLen) return -WireError.BadGso;
    l4HeaderLen = (src[srcOff + l3Len + 12]! >> 4) * 4;
    if (l4HeaderLen < 20 || l4HeaderLen > 60) return -WireError.BadGso;
  } else {
    l4HeaderLen = 8;
  }
  const hdrLen = l3Len + l4HeaderLen;
  if (hdrLen > srcLen) return -WireError.BadGso;
  const gsoSize = v.gsoSize;
  if (gsoSize === 0) return -WireError.BadGso;
  const payloadTotal = srcLen - hdrLen;
  const segments = payloadTotal === 0 ? 1 : Math.ceil(payloadTotal / gsoSize);
  if (segments > segLengths.length) return -WireError.BadLength;
  if (dstOff < 0 || dstOff + segments * hdrLen + payloadTotal > dst.length) return -WireError.BadLength;

  const isV4 = version === 4;
  const id0 = isV4 ? (src[srcOff + 4]! << 8) | src[srcOff + 5]! : 0;
  const seq0 = isTcp
    ? ((src[srcOff + l3Len + 4]! << 24) | (src[srcOff + l3Len + 5]! << 16) | (src[srcOff + l3Len + 6]! << 8) | src[srcOff + l3Len + 7]!) >>> 0
    : 0;
  const flags0 = isTcp ? src[srcOff + l3Len + 13]! : 0;
  const protocol = isTcp ? 6 : 17;
  let out = dstOff;
  let payloadAt = srcOff + hdrLen;
  for (let i = 0; i < segments; i++) {
    const remaining = payloadTotal - i * gsoSize;
    const segPayload = remaining < gsoSize ? remaining : gsoSize;
    const segLen = hdrLen + segPayload;
    dst.set(src.subarray(srcOff, srcOff + hdrLen), out);
    dst.set(src.subarray(payloadAt, payloadAt + segPayload), out + hdrLen);
    payloadAt += segPayload;
    const l4 = out + l3Len;
    const l4Len = segLen - l3Len;
    if (isV4) {
      const id = (id0 + i) & 0xffff;
      dst[out + 2] = segLen >>> 8;
      dst[out + 3] = segLen & 0xff;
      dst[out + 4] = id >>> 8;
      dst[out + 5] = id & 0xff;
      refreshIpv4Checksum(dst, out);
    } else {
      const pl = segLen - 40;
      dst[out + 4] = pl >>> 8;
      dst[out + 5] = pl & 0xff;
    }
    if (isTcp) {
      const seq = (seq0 + i * gsoSize) >>> 0;
      dst[l4 + 4] = seq >>> 24;
      dst[l4 + 5] = (seq >>> 16) & 0xff;
      dst[l4 + 6] = (seq >>> 8) & 0xff;
      dst[l4 + 7] = seq & 0xff;
      // FIN and PSH belong to the last segment only.
      if (i !== segments - 1) dst[l4 + 13] = flags0 & ~TCP_FIN_PSH;
      dst[l4 + 16] = 0;
      dst[l4 + 17] = 0;
    } else {
      dst[l4 + 4] = l4Len >>> 8;
      dst[l4 + 5] = l4Len & 0xff;
      dst[l4 + 6] = 0;
      dst[l4 + 7] = 0;
    }
    const pseudo = isV4
      ? pseudoHeaderSumV4(dst, out + 12, out + 16, protocol, l4Len)
      : pseudoHeaderSumV6(dst, out + 8, out + 24, protocol, l4Len);
    let c = ~fold(sum16(dst, l4, l4Len, pseudo)) & 0xffff;
    if (!isTcp && c === 0) c = 0xffff;
    const field = l4 + (isTcp ? 16 : 6);
    dst[field] = c >>> 8;
    dst[field + 1] = c & 0xff;
    segLengths[i] = segLen;
    out += segLen;
  }
  return segments;
}

/**
 * Marks a complete outgoing TCP packet pkt[off, off+len) (IP lengths set,
 * checksum field anything) for the kernel: writes the virtio header at
 * vnetOut[vnetOff] and stores the folded pseudo-header sum in the TCP
 * checksum field (CHECKSUM_PARTIAL: the kernel or the device completes it,
 * per segment when it segments). Payload larger than `mss` is segmented by
 * the kernel into `mss`-byte segments (TSO); otherwise GSO_NONE.
 */
export function prepareTso(
  pkt: Uint8Array,
  off: number,
  len: number,
  l3Len: number,
  mss: number,
  isV6: boolean,
  vnetOut: Uint8Array,
  vnetOff: number,
): void {
  const l4 = off + l3Len;
  const l4Len = len - l3Len;
  const tcpHeaderLen = (pkt[l4 + 12]! >> 4) * 4;
  const payload = l4Len - tcpHeaderLen;
  const pseudo = isV6 ? pseudoHeaderSumV6(pkt, off + IPV6_SRC, off + IPV6_DST, NH_TCP, l4Len) : pseudoHeaderSumV4(pkt, off + IPV4_SRC, off + IPV4_DST, NH_TCP, l4Len);
  const seed = fold(pseudo);
  pkt[l4 + TCP_CHECKSUM_OFFSET] = seed >>> 8;
  pkt[l4 + TCP_CHECKSUM_OFFSET + 1] = seed & 0xff;
  const v = TSO_VNET;
  v.flags = VNET_F_NEEDS_CSUM;
  v.gsoType = payload > mss ? (isV6 ? GSO_TCPV6 : GSO_TCPV4) : GSO_NONE;
  v.hdrLen = l3Len + tcpHeaderLen;
  v.gsoSize = v.gsoType === GSO_NONE ? 0 : mss;
  v.csumStart = l3Len;
  v.csumOffset = TCP_CHECKSUM_OFFSET;
  emitVnet(v, vnetOut, vnetOff);
}

/** prepareTso's header, reused for every packet. */
const TSO_VNET = newVnetRepr();
