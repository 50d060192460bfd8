/**
 * A flow's addresses taken from a packet: the 16-byte forms (IPv4 as
 * IPv4-mapped) and uint32s the flow table and the packet writer use, and
 * the text endpoints the application sees (once per flow, never per packet).
 */
import { mapIpv4 } from './flow-table.js';
import { formatIpv4, parseIpv4Text, readIpv4Addr, writeIpv4Addr } from '../wire/ipv4.js';
import { formatIpv6, parseIpv6Text } from '../wire/ipv6.js';
import type { FlowEndpoints } from '../stack/tcp-stream.js';

export interface FlowAddressFields {
  srcAddr: Uint8Array;
  dstAddr: Uint8Array;
  src4: number;
  dst4: number;
}

export function copyAddresses(family: number, abuf: Uint8Array, srcOff: number, dstOff: number, into: FlowAddressFields): void {
  if (family === 4) {
    mapIpv4(abuf, srcOff, into.srcAddr);
    mapIpv4(abuf, dstOff, into.dstAddr);
    into.src4 = readIpv4Addr(abuf, srcOff);
    into.dst4 = readIpv4Addr(abuf, dstOff);
  } else {
    into.srcAddr.set(abuf.subarray(srcOff, srcOff + 16));
    into.dstAddr.set(abuf.subarray(dstOff, dstOff + 16));
    into.src4 = 0;
    into.dst4 = 0;
  }
}

export function endpointsOf(family: number, abuf: Uint8Array, srcOff: number, dstOff: number, srcPort: number, dstPort: number): FlowEndpoints {
  return {
    family,
    remoteAddress: family === 4 ? formatIpv4(abuf, srcOff) : formatIpv6(abuf, srcOff),
    remotePort: srcPort,
    localAddress: family === 4 ? formatIpv4(abuf, dstOff) : formatIpv6(abuf, dstOff),
    localPort: dstPort,
  };
}

/**
 * A flow's two addresses as the engine matches and looks them up (policy
 * CIDRs, fake-IP pool, socket owner): 4 bytes for IPv4, 16 for IPv6, in
 * network order. Views of the flow's own 16-byte keys, made once per flow,
 * so nothing parses the text endpoints back to bytes.
 */
export interface FlowAddressBytes {
  /** The client's address (the flow's remote end). */
  readonly remoteBytes: Uint8Array;
  /** The destination the client asked for. */
  readonly localBytes: Uint8Array;
}

/** The 16-byte key `addr` (IPv4 as IPv4-mapped) as FlowAddressBytes holds it: its last 4 bytes for family 4, a view, no copy. */
export function addressView(family: number, addr: Uint8Array): Uint8Array {
  return family === 4 ? addr.subarray(12, 16) : addr;
}

/**
 * The same bytes as addressView, copied for IPv4 into a 4-byte array of
 * their own, for addresses that no longer change (a TCP flow's, once its
 * first segment filled them). Small typed arrays live on the V8 heap; a view
 * (subarray) of one moves its data off the heap for good, an ArrayBuffer
 * and a backing store per address, ~400 bytes per flow end (issue 10).
 */
export function addressBytesOf(family: number, addr: Uint8Array): Uint8Array {
  if (family !== 4) return addr;
  const b = new Uint8Array(4);
  b[0] = addr[12]!;
  b[1] = addr[13]!;
  b[2] = addr[14]!;
  b[3] = addr[15]!;
  return b;
}

/**
 * Writes IP literal `text` of `family` at `buf[off]` in packet form (4 or
 * 16 bytes), as copyAddresses and the flow table read it. False when the
 * text is not a literal of that family (a dotted quad inside IPv6 text,
 * ::ffff:a.b.c.d, counts as not IPv6).
 */
export function writeAddressText(family: number, text: string, buf: Uint8Array, off: number): boolean {
  if (family === 4) {
    const v4 = parseIpv4Text(text);
    if (v4 === null) return false;
    writeIpv4Addr(buf, off, v4);
    return true;
  }
  return !text.includes('.') && parseIpv6Text(text, buf, off);
}
