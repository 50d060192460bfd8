// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * sluice's TUN queue steering program (TUNSETSTEERINGEBPF), used with
 * tun.queues > 1: every packet the kernel sends into the TUN goes to the
 * queue of its client's SOURCE endpoint, so one client socket lands on one
 * worker (one stack, one UDP NAT table) whatever it talks to.
 *
 * Why: each worker has its own UDP NAT table (src/udp/nat.ts). The kernel's
 * own choice (tun_automq_select_queue) hashes the whole 4-tuple, so one
 * client socket talking to two servers could reach two workers and be given
 * two upstream ports, against endpoint-independent mapping (RFC 4787
 * section 4.1, REQ-1). Hashing only the source keeps every flow of one
 * socket on one queue, while different sockets (source ports) still spread.
 *
 * The kernel calls the program from tun_ebpf_select_queue with skb->data at
 * the IP header (IFF_TUN: no link-layer header) and takes
 * `return value % numqueues` as the queue (drivers/net/tun.c). The type is
 * BPF_PROG_TYPE_SOCKET_FILTER (SEC "socket"); packet bytes are read with
 * bpf_skb_load_bytes, which checks bounds itself.
 *
 * What is hashed:
 *   - TCP and UDP (UDP-Lite too), not fragmented: source address + source port;
 *   - any fragment (IPv4 MF or offset != 0, IPv6 fragment header), every
 *     other protocol, and IPv6 chains this program does not walk: the source
 *     address only. All fragments of one datagram therefore meet on one
 *     queue, where the worker's stack reassembles them (RFC 791, RFC 8200
 *     section 4.5); the price is that a fragmented datagram of a socket may
 *     take another queue than its unfragmented ones (see docs/workers.md);
 *   - neither IPv4 nor IPv6 (or too short to read): queue 0.
 * IPv6 extension headers: Hop-by-Hop (0), Routing (43) and Destination
 * Options (60), which share the "next header, length in 8-octet units
 * beyond the first 8" layout (RFC 8200 section 4.3-4.6), are skipped, up to
 * MAX_EXT of them; anything else (AH, ESP, more headers) is address-only.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_EXT 4

#define NH_HOPOPTS 0
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_DSTOPTS 60

/* The murmur3 32-bit finalizer: every input bit moves every output bit, so
 * `% numqueues` spreads consecutive ports and addresses evenly. */
static __always_inline __u32 mix(__u32 h) {
  h ^= h >> 16;
  h *= 0x85ebca6b;
  h ^= h >> 13;
  h *= 0xc2b2ae35;
  h ^= h >> 16;
  return h;
}

static __always_inline int l4_has_ports(__u8 proto) {
  return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE;
}

/* The source port at offset `l4` (first 2 bytes of TCP and UDP headers), or
 * -1 when the packet is too short for it. */
static __always_inline int source_port(struct __sk_buff *skb, __u32 l4) {
  __u16 port;
  if (bpf_skb_load_bytes(skb, l4, &port, sizeof port) < 0) return -1;
  return bpf_ntohs(port);
}

static __always_inline __u32 steer_v4(struct __sk_buff *skb, __u8 vihl) {
  /* RFC 791: IHL in 32-bit words (>= 5); flags+fragment offset at 6; protocol at 9; source at 12. */
  __u32 ihl = (__u32)(vihl & 0x0f) * 4;
  if (ihl < 20) return 0;
  __u16 frag;
  __u8 proto;
  __u32 saddr;
  if (bpf_skb_load_bytes(skb, 6, &frag, sizeof frag) < 0) return 0;
  if (bpf_skb_load_bytes(skb, 9, &proto, sizeof proto) < 0) return 0;
  if (bpf_skb_load_bytes(skb, 12, &saddr, sizeof saddr) < 0) return 0;
  __u32 h = mix(saddr ^ 0x9e3779b9);
  /* MF (0x2000) or a non-zero offset (0x1fff): a fragment, address only. */
  if ((bpf_ntohs(frag) & 0x3fff) != 0 || !l4_has_ports(proto)) return h;
  int port = source_port(skb, ihl);
  if (port < 0) return h;
  return mix(h ^ (__u32)port);
}

static __always_inline __u32 steer_v6(struct __sk_buff *skb) {
  /* RFC 8200: next header at 6; source address at 8..23; extension headers from 40. */
  __u32 saddr[4];
  __u8 nh;
  if (bpf_skb_load_bytes(skb, 6, &nh, sizeof nh) < 0) return 0;
  if (bpf_skb_load_bytes(skb, 8, saddr, sizeof saddr) < 0) return 0;
  __u32 h = mix(saddr[0] ^ 0x9e3779b9);
  h = mix(h ^ saddr[1]);
  h = mix(h ^ saddr[2]);
  h = mix(h ^ saddr[3]);
  __u32 off = 40;
#pragma unroll
  for (int i = 0; i < MAX_EXT; i++) {
    if (nh != NH_HOPOPTS && nh != NH_ROUTING && nh != NH_DSTOPTS) break;
    __u8 ext[2];
    if (bpf_skb_load_bytes(skb, off, ext, sizeof ext) < 0) return h;
    nh = ext[0];
    off += ((__u32)ext[1] + 1) * 8;
  }
  /* A fragment header (even of the first fragment), a chain longer than
   * MAX_EXT, or a protocol without ports: address only. */
  if (!l4_has_ports(nh)) return h;
  int port = source_port(skb, off);
  if (port < 0) return h;
  return mix(h ^ (__u32)port);
}

SEC("socket")
int sluice_steer(struct __sk_buff *skb) {
  __u8 vihl;
  if (bpf_skb_load_bytes(skb, 0, &vihl, sizeof vihl) < 0) return 0;
  switch (vihl >> 4) {
    case 4:
      return (int)steer_v4(skb, vihl);
    case 6:
      return (int)steer_v6(skb);
    default:
      return 0;
  }
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
