/**
 * Which addresses and ports a flow may use as an endpoint. A proxy answers
 * and relays unicast only: a datagram or SYN whose source or destination is
 * unspecified, multicast or the IPv4 limited broadcast cannot be answered
 * as that address, and handing such an address (or port 0) to a Node socket
 * API either throws (dgram `send` to port 0: ERR_SOCKET_BAD_PORT) or sends
 * something nobody asked for. Checked on bytes in the stack and on text in
 * the outbounds and the TPROXY inbound, before any Node API sees them.
 *
 *   IPv4: 0.0.0.0/8 "this network" (RFC 1122 3.2.1.3, RFC 6890), 224.0.0.0/4
 *   multicast (RFC 5771), 255.255.255.255 limited broadcast (RFC 919/922);
 *   240.0.0.0/4 other than that stays usable (reserved, but routable here).
 *   IPv6: :: unspecified (RFC 4291 2.5.2), ff00::/8 multicast (RFC 4291 2.7).
 *   IPv4-mapped forms (::ffff:a.b.c.d) are judged as IPv4.
 */
import { parseIpv4Text, readIpv4Addr } from './ipv4.js';
import { parseIpv6Text } from './ipv6.js';

/** An IPv4 address (host order, unsigned) that can be a flow endpoint. */
export function isUnicastIpv4(a: number): boolean {
  const top = a >>> 24;
  if (top === 0) return false; // 0.0.0.0/8
  if (top >= 224 && top <= 239) return false; // multicast
  return a >>> 0 !== 0xffffffff; // limited broadcast
}

/** The 16-byte IPv6 address at buf[off..off+16] can be a flow endpoint. */
export function isUnicastIpv6(buf: Uint8Array, off: number): boolean {
  if (buf[off] === 0xff) return false; // ff00::/8
  let zero = true;
  for (let i = 0; i < 16; i++) {
    if (buf[off + i] !== 0) {
      zero = false;
      break;
    }
  }
  if (zero) return false; // ::
  // ::ffff:a.b.c.d
  let mapped = buf[off + 10] === 0xff && buf[off + 11] === 0xff;
  for (let i = 0; mapped && i < 10; i++) if (buf[off + i] !== 0) mapped = false;
  return mapped ? isUnicastIpv4(readIpv4Addr(buf, off + 12)) : true;
}

/** The address of `family` at buf[off..] can be a flow endpoint (no allocation). */
export function isUnicastAt(family: number, buf: Uint8Array, off: number): boolean {
  return family === 4 ? isUnicastIpv4(readIpv4Addr(buf, off)) : isUnicastIpv6(buf, off);
}

const SCRATCH6 = new Uint8Array(16);

/**
 * Address text that a socket may be asked to reach: an IPv4 or IPv6
 * literal that is unicast. Names are not judged here (they are resolved
 * first, and the resolved address is then checked). Returns false for
 * text that is neither.
 */
export function isUnicastText(text: string): boolean {
  const v4 = parseIpv4Text(text);
  if (v4 !== null) return isUnicastIpv4(v4);
  if (!parseIpv6Text(text, SCRATCH6, 0)) return false;
  return isUnicastIpv6(SCRATCH6, 0);
}

/** A port a socket can send to or connect to: an integer 1..65535. */
export function isUsablePort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}
