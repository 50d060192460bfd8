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
    remoteAddress: family === 4 ? ipv4Text(abuf, srcOff) : formatIpv6(abuf, srcOff),
    remotePort: srcPort,
    localAddress: family === 4 ? ipv4Text(abuf, dstOff) : formatIpv6(abuf, dstOff),
    localPort: dstPort,
  };
}

/**
 * IPv4 addresses in the three forms a TCP flow keeps for its whole life
 * (the 16-byte key, the 4 bytes the engine matches, the text), one of each
 * per address shared by every flow to or from it, rather than made per
 * flow: ten thousand flows from one client to one server hold two of each,
 * not forty thousand typed arrays (~200 bytes each on the V8 heap) and
 * twenty thousand strings (issue 10: idle flows). The arrays are never
 * written once made (a flow's addresses do not change; copyAddresses
 * writes only into arrays of the caller's own). Bounded: a table that
 * reaches INTERNED_MAX addresses starts over (flows keep what they hold).
 */
const INTERNED_MAX = 4096;
const mappedV4 = new Map<number, Uint8Array>();
const bytesV4 = new Map<number, Uint8Array>();
const textV4 = new Map<number, string>();

function remember<V>(table: Map<number, V>, key: number, value: V): V {
  if (table.size >= INTERNED_MAX) table.clear();
  table.set(key, value);
  return value;
}

/** The IPv4 address `v4` (uint32) as IPv4-mapped IPv6, 16 bytes, shared: never write into it. */
export function sharedMappedV4(v4: number): Uint8Array {
  const key = v4 | 0;
  const got = mappedV4.get(key);
  if (got !== undefined) return got;
  const a = new Uint8Array(16);
  a[10] = 0xff;
  a[11] = 0xff;
  writeIpv4Addr(a, 12, v4);
  return remember(mappedV4, key, a);
}

/** The IPv4 address `v4` (uint32) as its 4 bytes, shared: never write into it. */
export function sharedBytesV4(v4: number): Uint8Array {
  const key = v4 | 0;
  const got = bytesV4.get(key);
  if (got !== undefined) return got;
  const a = new Uint8Array(4);
  writeIpv4Addr(a, 0, v4);
  return remember(bytesV4, key, a);
}

/** The text of the IPv4 address at buf[off] (shared strings: see above). */
function ipv4Text(buf: Uint8Array, off: number): string {
  const key = readIpv4Addr(buf, off) | 0;
  const got = textV4.get(key);
  if (got !== undefined) return got;
  return remember(textV4, key, formatIpv4(buf, off));
}

/**
 * A TCP flow's addresses from the packet, for the flow's whole life: IPv4
 * ones shared (sharedMappedV4), IPv6 ones in arrays of the flow's own.
 */
export function setFlowAddresses(family: number, abuf: Uint8Array, srcOff: number, dstOff: number, into: FlowAddressFields): void {
  if (family === 4) {
    // As int32: a Smi in the flow, not a heap number for every address from
    // 128.0.0.0 up (the writer's writeIpv4Addr takes either form).
    into.src4 = readIpv4Addr(abuf, srcOff) | 0;
    into.dst4 = readIpv4Addr(abuf, dstOff) | 0;
    into.srcAddr = sharedMappedV4(into.src4);
    into.dstAddr = sharedMappedV4(into.dst4);
  } else {
    const src = new Uint8Array(16);
    const dst = new Uint8Array(16);
    src.set(abuf.subarray(srcOff, srcOff + 16));
    dst.set(abuf.subarray(dstOff, dstOff + 16));
    into.srcAddr = src;
    into.dstAddr = dst;
    into.src4 = 0;
    into.dst4 = 0;
  }
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
 * The same bytes as addressView, for addresses that no longer change (a TCP
 * flow's, set by setFlowAddresses): for IPv4 the shared 4-byte array of
 * `v4` (a view, subarray, of an on-heap typed array would move its data off
 * the heap for good, an ArrayBuffer and a backing store per address, ~400
 * bytes per flow end, issue 10), for IPv6 `addr` itself.
 */
export function addressBytesOf(family: number, addr: Uint8Array, v4: number): Uint8Array {
  return family === 4 ? sharedBytesV4(v4) : addr;
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
