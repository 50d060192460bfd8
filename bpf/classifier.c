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
 * Built with clang -target bpf during `npm ci` (see binding.gyp); loaded and
 * attached by the native addon through libbpf.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
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

struct classifier_config {
	__u32 default_action;
	__u32 tun_mark;
	__u32 tproxy_mark;
	__u32 reserved;
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

static __always_inline int port_action(__u8 proto, __u16 dport_be, __u32 *action)
{
	__u32 key = ((__u32)proto << 16) | bpf_ntohs(dport_be);
	__u32 *a = bpf_map_lookup_elem(&sluice_ports, &key);
	if (!a)
		return 0;
	*action = *a;
	return 1;
}

static __always_inline int l4_port(void *l4, void *end, __u8 proto, __u16 *dport)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	/* Both headers carry the destination port at offset 2. */
	if (l4 + 4 > end)
		return 0;
	*dport = *(__u16 *)(l4 + 2);
	return 1;
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
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return TC_ACT_OK;
		struct lpm_v4 key = { .prefixlen = 32 };
		__builtin_memcpy(key.addr, &ip->daddr, 4);
		__u32 *a = bpf_map_lookup_elem(&sluice_v4, &key);
		if (a) {
			action = *a;
		} else {
			/* Ports only for first fragments with a full header. */
			void *l4 = (void *)ip + ip->ihl * 4;
			if (ip->ihl >= 5 && !(ip->frag_off & bpf_htons(0x1fff)) && l4_port(l4, end, ip->protocol, &dport))
				port_action(ip->protocol, dport, &action);
		}
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TC_ACT_OK;
		struct lpm_v6 key = { .prefixlen = 128 };
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		__u32 *a = bpf_map_lookup_elem(&sluice_v6, &key);
		if (a) {
			action = *a;
		} else if (l4_port((void *)(ip6 + 1), end, ip6->nexthdr, &dport)) {
			/* Only when TCP/UDP follows directly; extension headers take the default. */
			port_action(ip6->nexthdr, dport, &action);
		}
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
		skb->mark = cfg->tproxy_mark;
		return TC_ACT_OK;
	case ACTION_DROP:
		return TC_ACT_SHOT;
	default:
		return TC_ACT_OK;
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
