// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * sluice's TC classifier: decides per packet, on the interfaces it is
 * attached to (clsact ingress), whether a flow goes to sluice's TUN, to the
 * TPROXY listeners, takes the kernel fast path, or is dropped.
 *
 * It does not redirect: it marks. "To the TUN" and "to TPROXY" set skb->mark
 * to the configured mark and let policy routing (`ip rule fwmark ...`) and
 * nftables act on it, so the kernel keeps doing what it is good at (L2/L3
 * headers, neighbour resolution, checksums) and the classifier stays small.
 *
 * Lookup order: destination address in the longest-prefix tries (IPv4,
 * IPv6), then the destination port set (TCP/UDP), then the default action.
 * Per-action packet and byte counters are per-CPU.
 *
 * Socket assignment (config flag FLAG_SK_ASSIGN, gateway.mode tproxy-ebpf):
 * "to TPROXY" then does what the nftables tproxy statement does, in the
 * program, the way Cilium hands flows to its Envoy listeners:
 *   1. the flow's own socket, looked up by the packet's tuple
 *      (bpf_skc_lookup_tcp / bpf_sk_lookup_udp): an established TCP socket
 *      (not a listener: a local service on a wildcard address must not
 *      catch a forwarded flow) or a connected UDP one (only a transparent
 *      socket can be bound to the non-local destination);
 *   2. otherwise, unless the destination is this host (bpf_fib_lookup says
 *      "not forwarded": local, broadcast, multicast), the transparent
 *      listener found by the same tuple with the destination port replaced
 *      by tproxy_port (the listener is bound to the wildcard address);
 *   3. bpf_sk_assign(skb, sk) and skb->mark = tproxy_mark, which policy
 *      routing sends to local delivery (`fwmark M lookup T`, `local default
 *      dev lo table T`), where the stack takes skb->sk instead of looking
 *      the socket up. The listener sees the original destination as its
 *      local address (TCP getsockname, UDP IP_ORIGDSTADDR), as with TPROXY.
 * No listener (sluice is gone) or a port-0 destination: dropped, fail
 * closed. TCP and UDP are found after IPv4 options and after IPv6
 * extension headers (locate_l4_v6: at most IPV6_MAX_EXT_HEADERS, RFC 8200
 * 4); non-first fragments (no ports; TC runs before reassembly) and a chain
 * of extension headers too long to walk are dropped (fail closed: never
 * forwarded around the proxy); other protocols pass untouched.
 *
 * Built with clang -target bpf during `npm ci` (see binding.gyp); loaded and
 * attached by the native addon through libbpf.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

enum sluice_action {
	ACTION_KERNEL = 0,
	ACTION_TUN = 1,
	ACTION_TPROXY = 2,
	ACTION_DROP = 3,
	ACTION_COUNT = 4,
};

struct lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

#define FLAG_SK_ASSIGN 1

struct classifier_config {
	__u32 default_action;
	__u32 tun_mark;
	__u32 tproxy_mark;
	__u32 flags;
	__u32 tproxy_port; /* host order */
	__u32 reserved;
};

/* Why socket assignment failed, counted per CPU (index = reason). */
enum assign_result {
	ASSIGN_LISTENER = 0,   /* handed to the transparent listener */
	ASSIGN_FLOW = 1,       /* the flow's own socket */
	ASSIGN_LOCAL = 2,      /* addressed to this host: left alone */
	ASSIGN_NO_LISTENER = 3,/* dropped: no listener */
	ASSIGN_FAILED = 4,     /* dropped: bpf_sk_assign refused */
	ASSIGN_UNSUPPORTED = 5,/* dropped: a fragment without ports; port 0 */
	ASSIGN_COUNT = 6,
};

struct action_counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__type(key, struct lpm_v4);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sluice_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__type(key, struct lpm_v6);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sluice_v6 SEC(".maps");

/* Key: protocol << 16 | destination port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} sluice_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct classifier_config);
} sluice_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ACTION_COUNT);
	__type(key, __u32);
	__type(value, struct action_counter);
} sluice_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ASSIGN_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} sluice_assign SEC(".maps");

/*
 * Where the transport header is. IPv4: after the options (ihl words).
 * IPv6: after the extension headers (RFC 8200 4.1 order, any order
 * accepted): hop-by-hop, routing and destination options (8-octet units,
 * RFC 8200 4.3-4.6), fragment (8 octets, RFC 8200 4.5), AH (4-octet units,
 * RFC 4302 2.2); the walk is bounded by IPV6_MAX_EXT_HEADERS for the
 * verifier and for the packet budget.
 */
#define IPV6_MAX_EXT_HEADERS 8

struct l4_where {
	__u32 off;      /* transport header offset from the frame start */
	__u8 proto;     /* its protocol (IPPROTO_*) */
	__u8 nonfirst;  /* a non-first fragment: no transport header */
	__u8 unparsed;  /* the header chain could not be walked (too long, truncated, ihl < 5) */
};

static __always_inline void locate_l4_v4(struct iphdr *ip, __u32 l3, struct l4_where *w)
{
	w->proto = ip->protocol;
	w->off = l3 + ip->ihl * 4;
	w->nonfirst = (ip->frag_off & bpf_htons(0x1fff)) != 0;
	w->unparsed = ip->ihl < 5;
}

static __always_inline int ipv6_ext_header(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS || nh == IPPROTO_FRAGMENT || nh == IPPROTO_AH;
}

struct ext_walk {
	struct __sk_buff *skb;
	__u32 off;
	__u8 nh;
	__u8 nonfirst;
	__u8 unparsed;
};

/* One extension header of the walk (a bpf_loop callback: the verifier checks it once, not once per header). */
static long ext_step(__u32 i, void *vctx)
{
	struct ext_walk *x = vctx;
	__u8 nh = x->nh;
	if (!ipv6_ext_header(nh))
		return 1;
	__u8 h[4];
	if (bpf_skb_load_bytes(x->skb, x->off, h, 4) < 0) {
		x->unparsed = 1;
		return 1;
	}
	x->nh = h[0];
	if (nh == IPPROTO_FRAGMENT) {
		x->off += 8;
		if ((((__u32)h[2] << 8) | h[3]) & 0xfff8) {
			x->nonfirst = 1; /* fragment offset > 0: what follows is not a header */
			return 1;
		}
	} else if (nh == IPPROTO_AH) {
		x->off += ((__u32)h[1] + 2) * 4;
	} else {
		x->off += ((__u32)h[1] + 1) * 8;
	}
	return 0;
}

static __always_inline void locate_l4_v6(struct __sk_buff *skb, __u32 l3, __u8 nexthdr, struct l4_where *w)
{
	struct ext_walk x = { .skb = skb, .off = l3 + sizeof(struct ipv6hdr), .nh = nexthdr, .nonfirst = 0, .unparsed = 0 };
	if (ipv6_ext_header(nexthdr))
		bpf_loop(IPV6_MAX_EXT_HEADERS, ext_step, &x, 0);
	if (!x.nonfirst && ipv6_ext_header(x.nh))
		x.unparsed = 1; /* more headers than the walk's bound */
	w->proto = x.nh;
	w->off = x.off;
	w->nonfirst = x.nonfirst;
	w->unparsed = x.unparsed;
}

static __always_inline void count_assign(__u32 why)
{
	__u64 *c = bpf_map_lookup_elem(&sluice_assign, &why);
	if (c)
		(*c)++;
}

/* The flow's own socket, when there is one to take it (see the header). */
static __always_inline struct bpf_sock *flow_socket(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tlen, __u8 proto)
{
	struct bpf_sock *sk;
	if (proto == IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(skb, t, tlen, BPF_F_CURRENT_NETNS, 0);
		if (sk && sk->state == BPF_TCP_LISTEN) {
			bpf_sk_release(sk);
			return 0;
		}
		return sk;
	}
	sk = bpf_sk_lookup_udp(skb, t, tlen, BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state != BPF_TCP_ESTABLISHED) {
		bpf_sk_release(sk);
		return 0;
	}
	return sk;
}

static __always_inline struct bpf_sock *listener(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tlen, __u8 proto)
{
	struct bpf_sock *sk;
	if (proto == IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(skb, t, tlen, BPF_F_CURRENT_NETNS, 0);
		if (sk && sk->state != BPF_TCP_LISTEN) {
			bpf_sk_release(sk);
			return 0;
		}
		return sk;
	}
	return bpf_sk_lookup_udp(skb, t, tlen, BPF_F_CURRENT_NETNS, 0);
}

/*
 * Socket assignment for one TCP/UDP packet; *dport_slot is the tuple's
 * destination port, rewritten to the listener's port for the second
 * lookup. Returns TC_ACT_OK (assigned and marked, or local and untouched)
 * or TC_ACT_SHOT.
 */
static __always_inline int assign(struct __sk_buff *skb, struct classifier_config *cfg, struct bpf_sock_tuple *t, __u32 tlen, __u16 *dport_slot,
				  __u8 proto, struct bpf_fib_lookup *fib)
{
	if (*dport_slot == 0) {
		count_assign(ASSIGN_UNSUPPORTED);
		return TC_ACT_SHOT;
	}
	struct bpf_sock *sk = flow_socket(skb, t, tlen, proto);
	__u32 why = ASSIGN_FLOW;
	if (!sk) {
		if (bpf_fib_lookup(skb, fib, sizeof(*fib), 0) == BPF_FIB_LKUP_RET_NOT_FWDED) {
			count_assign(ASSIGN_LOCAL);
			return TC_ACT_OK;
		}
		*dport_slot = bpf_htons((__u16)cfg->tproxy_port);
		sk = listener(skb, t, tlen, proto);
		if (!sk) {
			count_assign(ASSIGN_NO_LISTENER);
			return TC_ACT_SHOT;
		}
		why = ASSIGN_LISTENER;
	}
	long err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err != 0) {
		count_assign(ASSIGN_FAILED);
		return TC_ACT_SHOT;
	}
	count_assign(why);
	skb->mark = cfg->tproxy_mark;
	return TC_ACT_OK;
}

/* The ports of the tuple: both TCP and UDP start with source and destination port. */
static __always_inline int load_ports(struct __sk_buff *skb, struct l4_where *w, __u16 ports[2])
{
	if (w->unparsed || w->nonfirst) {
		count_assign(ASSIGN_UNSUPPORTED);
		return -1;
	}
	if (bpf_skb_load_bytes(skb, w->off, ports, 4) < 0)
		return -1;
	return 0;
}

static __always_inline int assign_v4(struct __sk_buff *skb, struct classifier_config *cfg, struct iphdr *ip, struct l4_where *w)
{
	if (!w->unparsed && w->proto != IPPROTO_TCP && w->proto != IPPROTO_UDP)
		return TC_ACT_OK;
	__u16 ports[2];
	if (load_ports(skb, w, ports) < 0)
		return TC_ACT_SHOT;
	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = ip->saddr;
	t.ipv4.daddr = ip->daddr;
	t.ipv4.sport = ports[0];
	t.ipv4.dport = ports[1];
	struct bpf_fib_lookup fib = {};
	fib.family = 2; /* AF_INET */
	fib.l4_protocol = w->proto;
	fib.tot_len = bpf_ntohs(ip->tot_len);
	fib.ifindex = skb->ingress_ifindex;
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	return assign(skb, cfg, &t, sizeof(t.ipv4), &t.ipv4.dport, w->proto, &fib);
}

static __always_inline int assign_v6(struct __sk_buff *skb, struct classifier_config *cfg, struct ipv6hdr *ip6, struct l4_where *w)
{
	/* An IPv6 packet whose extension headers cannot be walked could hide TCP/UDP: dropped, not forwarded. */
	if (!w->unparsed && w->proto != IPPROTO_TCP && w->proto != IPPROTO_UDP)
		return TC_ACT_OK;
	__u16 ports[2];
	if (load_ports(skb, w, ports) < 0)
		return TC_ACT_SHOT;
	struct bpf_sock_tuple t = {};
	__builtin_memcpy(t.ipv6.saddr, &ip6->saddr, 16);
	__builtin_memcpy(t.ipv6.daddr, &ip6->daddr, 16);
	t.ipv6.sport = ports[0];
	t.ipv6.dport = ports[1];
	struct bpf_fib_lookup fib = {};
	fib.family = 10; /* AF_INET6 */
	fib.l4_protocol = w->proto;
	fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
	fib.ifindex = skb->ingress_ifindex;
	__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
	__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
	return assign(skb, cfg, &t, sizeof(t.ipv6), &t.ipv6.dport, w->proto, &fib);
}

#include "sni.h"

static __always_inline int port_action(__u8 proto, __u16 dport_be, __u32 *action)
{
	__u32 key = ((__u32)proto << 16) | bpf_ntohs(dport_be);
	__u32 *a = bpf_map_lookup_elem(&sluice_ports, &key);
	if (!a)
		return 0;
	*action = *a;
	return 1;
}

/* The destination port (offset 2 in both TCP and UDP) of a located transport header. */
static __always_inline int l4_port(struct __sk_buff *skb, struct l4_where *w, __u16 *dport)
{
	if (w->unparsed || w->nonfirst || (w->proto != IPPROTO_TCP && w->proto != IPPROTO_UDP))
		return 0;
	return bpf_skb_load_bytes(skb, w->off + 2, dport, 2) == 0;
}

SEC("tc")
int sluice_classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 zero = 0;
	struct classifier_config *cfg = bpf_map_lookup_elem(&sluice_config, &zero);
	if (!cfg)
		return TC_ACT_OK;
	__u32 action = cfg->default_action;
	__u16 dport = 0;
	/* The transport header, after IPv4 options or IPv6 extension headers (for ports, the SNI filter, socket assignment). */
	struct l4_where w = {};
	int v6 = 0;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return TC_ACT_OK;
		struct lpm_v4 key = { .prefixlen = 32 };
		__builtin_memcpy(key.addr, &ip->daddr, 4);
		locate_l4_v4(ip, sizeof(*eth), &w);
		__u32 *a = bpf_map_lookup_elem(&sluice_v4, &key);
		if (a)
			action = *a;
		else if (l4_port(skb, &w, &dport)) /* ports only for first fragments with a full header */
			port_action(w.proto, dport, &action);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TC_ACT_OK;
		struct lpm_v6 key = { .prefixlen = 128 };
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		v6 = 1;
		__u8 nexthdr = ip6->nexthdr;
		__u32 *a = bpf_map_lookup_elem(&sluice_v6, &key);
		locate_l4_v6(skb, sizeof(*eth), nexthdr, &w);
		if (a)
			action = *a;
		else if (l4_port(skb, &w, &dport))
			port_action(w.proto, dport, &action);
	} else {
		return TC_ACT_OK; /* ARP and the rest are none of our business */
	}

	if (action >= ACTION_COUNT)
		action = ACTION_KERNEL;
	struct action_counter *c = bpf_map_lookup_elem(&sluice_counters, &action);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	switch (action) {
	case ACTION_TUN:
		skb->mark = cfg->tun_mark;
		return TC_ACT_OK;
	case ACTION_TPROXY:
		if (!(cfg->flags & FLAG_SK_ASSIGN)) {
			skb->mark = cfg->tproxy_mark;
			return TC_ACT_OK;
		}
		/* Packet pointers are re-derived: the verifier tracks them per branch. */
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		eth = data;
		if ((void *)(eth + 1) > end)
			return TC_ACT_SHOT;
		if (!v6) {
			struct iphdr *ip = (void *)(eth + 1);
			if ((void *)(ip + 1) > end)
				return TC_ACT_SHOT;
			return assign_v4(skb, cfg, ip, &w);
		}
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TC_ACT_SHOT;
		return assign_v6(skb, cfg, ip6, &w);
	case ACTION_DROP:
		return TC_ACT_SHOT;
	default:
		if ((cfg->flags & FLAG_SNI) && !w.unparsed && !w.nonfirst) {
			int verdict = sni_filter(skb, v6, sizeof(struct ethhdr), w.proto, w.off, skb->len);
			if (verdict >= 0)
				return verdict;
		}
		return TC_ACT_OK;
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
