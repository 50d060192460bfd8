/**
 * struct virtio_net_hdr (virtio 1.x spec 5.1.6; Linux
 * include/uapi/linux/virtio_net.h), the 10-byte prefix of every packet on a
 * TUN opened with IFF_VNET_HDR. Multi-byte fields are little-endian on the
 * hosts sluice supports (TUN uses host order unless TUNSETVNETBE).
 */
import { WireError } from './errors.js';

export const VNET_HDR_LEN = 10;
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP = 3;
export const GSO_TCPV6 = 4;
export const GSO_UDP_L4 = 5;
export const GSO_ECN = 0x80;

export interface VnetRepr {
  flags: number;
  /** GSO_* without the ECN bit. */
  gsoType: number;
  ecn: boolean;
  /** Header length as the kernel claims it; do not trust it (see gso.ts). */
  hdrLen: number;
  /** Payload bytes per segment. */
  gsoSize: number;
  /** Offset of the L4 header (= the L3 length, extension headers included). */
  csumStart: number;
  /** Offset of the checksum field from csumStart: 16 for TCP, 6 for UDP. */
  csumOffset: number;
}

export function newVnetRepr(): VnetRepr {
  return { flags: 0, gsoType: GSO_NONE, ecn: false, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
}

export function parseVnet(buf: Uint8Array, off: number, len: number, r: VnetRepr): WireError {
  if (len < VNET_HDR_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
  r.flags = buf[off]!;
  const gso = buf[off + 1]!;
  r.gsoType = gso & ~GSO_ECN;
  r.ecn = (gso & GSO_ECN) !== 0;
  r.hdrLen = buf[off + 2]! | (buf[off + 3]! << 8);
  r.gsoSize = buf[off + 4]! | (buf[off + 5]! << 8);
  r.csumStart = buf[off + 6]! | (buf[off + 7]! << 8);
  r.csumOffset = buf[off + 8]! | (buf[off + 9]! << 8);
  if (r.gsoType !== GSO_NONE && r.gsoType !== GSO_TCPV4 && r.gsoType !== GSO_TCPV6 && r.gsoType !== GSO_UDP_L4 && r.gsoType !== GSO_UDP)
    return WireError.BadGso;
  return WireError.Ok;
}

export function emitVnet(r: VnetRepr, buf: Uint8Array, off: number): void {
  buf[off] = r.flags;
  buf[off + 1] = r.gsoType | (r.ecn ? GSO_ECN : 0);
  buf[off + 2] = r.hdrLen & 0xff;
  buf[off + 3] = r.hdrLen >>> 8;
  buf[off + 4] = r.gsoSize & 0xff;
  buf[off + 5] = r.gsoSize >>> 8;
  buf[off + 6] = r.csumStart & 0xff;
  buf[off + 7] = r.csumStart >>> 8;
  buf[off + 8] = r.csumOffset & 0xff;
  buf[off + 9] = r.csumOffset >>> 8;
}

/** A header saying "plain packet, checksums complete". */
export function emitVnetNone(buf: Uint8Array, off: number): void {
  buf.fill(0, off, off + VNET_HDR_LEN);
}
