/**
 * IPv6 header codec (RFC 8200 section 3) with a bounded walk of the
 * extension header chain (RFC 8200 4.1): hop-by-hop (first only),
 * routing, fragment and destination options. ESP/AH are not walked: the
 * repr reports them as the upper protocol and the caller decides.
 */
import { WireError } from './errors.js';

export const IPV6_HEADER_LEN = 40;
export const IPV6_PAYLOAD_LENGTH = 4;
export const IPV6_NEXT_HEADER = 6;
export const IPV6_HOP_LIMIT = 7;
export const IPV6_SRC = 8;
export const IPV6_DST = 24;

export const NH_HOP_BY_HOP = 0;
export const NH_TCP = 6;
export const NH_UDP = 17;
export const NH_ROUTING = 43;
export const NH_FRAGMENT = 44;
export const NH_ICMPV6 = 58;
export const NH_NO_NEXT = 59;
export const NH_DEST_OPTIONS = 60;
export const FRAGMENT_HEADER_LEN = 8;

/** Longest chain we walk; real traffic carries one or two. */
const MAX_EXTENSION_HEADERS = 8;

export interface Ipv6Repr {
  trafficClass: number;
  flowLabel: number;
  payloadLength: number;
  /** Next header of the fixed header. */
  nextHeader: number;
  hopLimit: number;
  srcOffset: number;
  dstOffset: number;
  /** Protocol after the extension chain, its offset and length. */
  upperProtocol: number;
  upperOffset: number;
  upperLength: number;
  hasFragmentHeader: boolean;
  fragmentOffset: number;
  moreFragments: boolean;
  fragmentId: number;
  /** Bytes from the IPv6 header start to the fragment header (the unfragmentable part). */
  unfragmentableLength: number;
  /** Offset of the byte holding the next-header value that names the fragment header (to rewrite on reassembly). */
  fragmentNextHeaderFieldOffset: number;
}

export function newIpv6Repr(): Ipv6Repr {
  return {
    trafficClass: 0,
    flowLabel: 0,
    payloadLength: 0,
    nextHeader: 0,
    hopLimit: 0,
    srcOffset: 0,
    dstOffset: 0,
    upperProtocol: 0,
    upperOffset: 0,
    upperLength: 0,
    hasFragmentHeader: false,
    fragmentOffset: 0,
    moreFragments: false,
    fragmentId: 0,
    unfragmentableLength: 0,
    fragmentNextHeaderFieldOffset: 0,
  };
}

export function parseIpv6(buf: Uint8Array, off: number, len: number, r: Ipv6Repr): WireError {
  if (len < IPV6_HEADER_LEN || off < 0 || off + len > buf.length) return WireError.Truncated;
  const b0 = buf[off]!;
  if (b0 >> 4 !== 6) return WireError.BadVersion;
  const payloadLength = (buf[off + IPV6_PAYLOAD_LENGTH]! << 8) | buf[off + IPV6_PAYLOAD_LENGTH + 1]!;
  // Jumbograms (RFC 2675) have payload length 0 and a hop-by-hop option: not for a TUN.
  if (payloadLength === 0 && buf[off + IPV6_NEXT_HEADER] === NH_HOP_BY_HOP) return WireError.Unsupported;
  if (IPV6_HEADER_LEN + payloadLength > len) return WireError.Truncated;
  r.trafficClass = ((b0 & 0x0f) << 4) | (buf[off + 1]! >> 4);
  r.flowLabel = ((buf[off + 1]! & 0x0f) << 16) | (buf[off + 2]! << 8) | buf[off + 3]!;
  r.payloadLength = payloadLength;
  r.nextHeader = buf[off + IPV6_NEXT_HEADER]!;
  r.hopLimit = buf[off + IPV6_HOP_LIMIT]!;
  r.srcOffset = off + IPV6_SRC;
  r.dstOffset = off + IPV6_DST;
  r.hasFragmentHeader = false;
  r.fragmentOffset = 0;
  r.moreFragments = false;
  r.fragmentId = 0;
  r.unfragmentableLength = IPV6_HEADER_LEN;
  r.fragmentNextHeaderFieldOffset = off + IPV6_NEXT_HEADER;

  const end = off + IPV6_HEADER_LEN + payloadLength;
  let nh = r.nextHeader;
  let nhField = off + IPV6_NEXT_HEADER;
  let p = off + IPV6_HEADER_LEN;
  for (let count = 0; ; count++) {
    if (nh !== NH_HOP_BY_HOP && nh !== NH_ROUTING && nh !== NH_FRAGMENT && nh !== NH_DEST_OPTIONS) break;
    if (count >= MAX_EXTENSION_HEADERS) return WireError.BadExtensionHeader;
    // RFC 8200 4.1: hop-by-hop only immediately after the fixed header.
    if (nh === NH_HOP_BY_HOP && count !== 0) return WireError.BadExtensionHeader;
    if (p + 8 > end) return WireError.Truncated;
    if (nh === NH_FRAGMENT) {
      if (r.hasFragmentHeader) return WireError.BadExtensionHeader;
      const fo = (buf[p + 2]! << 8) | buf[p + 3]!;
      r.hasFragmentHeader = true;
      r.fragmentOffset = fo & 0xfff8;
      r.moreFragments = (fo & 1) !== 0;
      r.fragmentId = ((buf[p + 4]! << 24) | (buf[p + 5]! << 16) | (buf[p + 6]! << 8) | buf[p + 7]!) >>> 0;
      r.unfragmentableLength = p - off;
      r.fragmentNextHeaderFieldOffset = nhField;
      nhField = p;
      nh = buf[p]!;
      p += FRAGMENT_HEADER_LEN;
      // A non-first fragment carries no further headers we could parse.
      if (r.fragmentOffset !== 0) break;
      continue;
    }
    const hlen = (buf[p + 1]! + 1) * 8;
    if (p + hlen > end) return WireError.Truncated;
    nhField = p;
    nh = buf[p]!;
    p += hlen;
  }
  r.upperProtocol = nh;
  r.upperOffset = p;
  r.upperLength = end - p;
  return WireError.Ok;
}

export function isIpv6Fragment(r: Ipv6Repr): boolean {
  return r.hasFragmentHeader && (r.moreFragments || r.fragmentOffset !== 0);
}

export interface Ipv6EmitRepr {
  src: Uint8Array;
  dst: Uint8Array;
  nextHeader: number;
  hopLimit: number;
  trafficClass: number;
  flowLabel: number;
  payloadLength: number;
}

export function newIpv6EmitRepr(): Ipv6EmitRepr {
  return { src: new Uint8Array(16), dst: new Uint8Array(16), nextHeader: 0, hopLimit: 64, trafficClass: 0, flowLabel: 0, payloadLength: 0 };
}

/** Writes the 40-byte fixed header; returns 40. */
export function emitIpv6(r: Ipv6EmitRepr, buf: Uint8Array, off: number): number {
  buf[off] = 0x60 | ((r.trafficClass >>> 4) & 0x0f);
  buf[off + 1] = ((r.trafficClass & 0x0f) << 4) | ((r.flowLabel >>> 16) & 0x0f);
  buf[off + 2] = (r.flowLabel >>> 8) & 0xff;
  buf[off + 3] = r.flowLabel & 0xff;
  buf[off + IPV6_PAYLOAD_LENGTH] = (r.payloadLength >>> 8) & 0xff;
  buf[off + IPV6_PAYLOAD_LENGTH + 1] = r.payloadLength & 0xff;
  buf[off + IPV6_NEXT_HEADER] = r.nextHeader & 0xff;
  buf[off + IPV6_HOP_LIMIT] = r.hopLimit & 0xff;
  buf.set(r.src, off + IPV6_SRC);
  buf.set(r.dst, off + IPV6_DST);
  return IPV6_HEADER_LEN;
}

/** Writes an 8-byte fragment header (RFC 8200 4.5); offset in bytes, multiple of 8. */
export function emitIpv6FragmentHeader(
  nextHeader: number,
  fragmentOffset: number,
  moreFragments: boolean,
  id: number,
  buf: Uint8Array,
  off: number,
): number {
  buf[off] = nextHeader;
  buf[off + 1] = 0;
  const fo = (fragmentOffset & 0xfff8) | (moreFragments ? 1 : 0);
  buf[off + 2] = fo >>> 8;
  buf[off + 3] = fo & 0xff;
  buf[off + 4] = (id >>> 24) & 0xff;
  buf[off + 5] = (id >>> 16) & 0xff;
  buf[off + 6] = (id >>> 8) & 0xff;
  buf[off + 7] = id & 0xff;
  return FRAGMENT_HEADER_LEN;
}

// Address text lives in ip-address.ts, the one parser and printer; these are its IPv6 forms.
export { formatIpv6, parseIpv6Text } from './ip-address.js';
