/**
 * The one packet context of a stack (as smoltcp's IpRepr beside the packet
 * buffer, or gVisor's PacketBuffer): where the packet's addresses, its
 * transport bytes and the whole datagram sit, and its parsed transport
 * header. IP input fills it per packet and hands it up; the transport layers
 * read it. Allocated once per stack and overwritten by the next packet, so
 * nothing in it may be kept past the call that received it.
 */
import { newIcmpRepr, newIcmpQuoteRepr, type IcmpQuoteRepr, type IcmpRepr } from '../wire/icmp.js';
import { newTcpRepr, type TcpRepr } from '../wire/tcp.js';
import { newUdpRepr, type UdpRepr } from '../wire/udp.js';

const EMPTY = new Uint8Array(0);

export class IpPacket {
  /** 4 or 6. */
  family = 4;
  /** The buffer holding the IP header, and the offsets of the source and destination addresses in it. */
  abuf: Uint8Array = EMPTY;
  srcOff = 0;
  dstOff = 0;
  /** IANA protocol number of the transport (IPv6: after the extension headers). */
  protocol = 0;
  /** The transport bytes: the same buffer as `abuf` unless the datagram was reassembled. */
  l4buf: Uint8Array = EMPTY;
  l4Off = 0;
  l4Len = 0;
  /** The kernel vouched for the checksums (virtio header), so none is verified. */
  trusted = false;
  /** The IP datagram from its header on, as an ICMP error would quote it. */
  pkt: Uint8Array = EMPTY;
  pktOff = 0;
  pktLen = 0;
  /** The parsed transport header; only the one of `protocol` is current. */
  readonly tcp: TcpRepr = newTcpRepr();
  readonly udp: UdpRepr = newUdpRepr();
  readonly icmp: IcmpRepr = newIcmpRepr();
  /** The quote of an ICMP error, once parsed. */
  readonly quote: IcmpQuoteRepr = newIcmpQuoteRepr();
}
