/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The SNI / Host filter of the classifier (classifier.sni, config flag
 * FLAG_SNI), for TCP flows the classifier leaves on the kernel path:
 *
 *   - a client data segment to port 443 that starts a TLS handshake record
 *     holding a ClientHello (RFC 8446 4.1.2; record header RFC 8446 5.1) is
 *     walked to the server_name extension (RFC 6066 3) with
 *     bpf_skb_load_bytes at computed offsets (the verifier sees constant
 *     lengths and runtime-checked offsets);
 *   - a client data segment to port 80 that starts with an HTTP method has
 *     its first 512 bytes searched for the Host header field (RFC 9110 7.2);
 *   - the name is lower-cased and hashed (64-bit FNV-1a) from its last byte
 *     to its first, so that at every dot the running hash is that of the
 *     suffix to its right: one pass checks the whole name (exact and suffix
 *     entries) and every parent domain (suffix entries) in the deny map,
 *     filled by sluice with the same hash of each reject/drop domain rule;
 *   - the transport header is found after IPv4 options and IPv6 extension
 *     headers (locate_l4_v4/_v6 in classifier.c, a bounded walk);
 *   - a denied flow is remembered (LRU map of flows) and its segment is
 *     turned into two RSTs (deny_flow below): one toward the client, sent
 *     back out of the interface it came in on (a clone, bpf_clone_redirect
 *     to the ingress device's egress), and one toward the server, which
 *     the kernel then forwards as it would have forwarded the segment (the
 *     original skb, TC_ACT_OK), so neither end keeps a half-open
 *     connection; later segments of that flow get the client's RST only;
 *   - what it cannot see passes and is counted: a ClientHello without
 *     server_name in this segment (split over segments, or beyond the
 *     extension walk's bounds), a name longer than 255 bytes, a request
 *     whose Host is not in its first 512 bytes, QUIC (UDP to 443).
 */
#ifndef SLUICE_SNI_H
#define SLUICE_SNI_H

#define FLAG_SNI 2
#define SNI_MAX_NAME 256
#define HTTP_WINDOW 512
#define TLS_MAX_EXTENSIONS 32

enum sni_counter {
	SNI_TLS_ALLOWED = 0,
	SNI_TLS_BLOCKED = 1,
	SNI_TLS_UNSEEN = 2,   /* ClientHello without a visible server_name */
	SNI_HTTP_ALLOWED = 3,
	SNI_HTTP_BLOCKED = 4,
	SNI_HTTP_UNSEEN = 5,  /* request without Host in the window */
	SNI_QUIC_UNSEEN = 6,  /* UDP to 443 on the kernel path: not inspected */
	SNI_RESETS = 7,       /* RSTs sent toward clients (first and later segments of denied flows) */
	SNI_SERVER_RESETS = 8,/* RSTs forwarded toward servers (one per denied flow) */
	SNI_COUNT = 9,
};

/* Deny map value bits. */
#define DENY_EXACT 1  /* the name itself */
#define DENY_SUFFIX 2 /* the name and every name under it */
#define DENY_SUB 4    /* only names under it (".example.com") */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} sluice_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SNI_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} sluice_sni SEC(".maps");

struct flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 family;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, __u8);
} sluice_denied_flows SEC(".maps");

struct scratch {
	__u8 buf[HTTP_WINDOW];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} sluice_scratch SEC(".maps");

static __always_inline void sni_count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&sluice_sni, &which);
	if (c)
		(*c)++;
}

static __always_inline __u8 lower(__u8 c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static __always_inline int deny_has(__u64 h, __u32 bits)
{
	__u32 *v = bpf_map_lookup_elem(&sluice_deny, &h);
	return v && (*v & bits);
}

struct hash_ctx {
	__u32 start;
	__u32 len;
	__u64 h;
	int denied;
};

static __always_inline struct scratch *scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&sluice_scratch, &zero);
}

/* One byte of the backward hash (a bpf_loop callback, so the verifier walks it once). */
static long hash_step(__u32 i, void *vctx)
{
	struct hash_ctx *c = vctx;
	if (i >= c->len)
		return 1;
	struct scratch *s = scratch();
	if (!s)
		return 1;
	__u8 ch = lower(s->buf[(c->start + c->len - 1 - i) & (HTTP_WINDOW - 1)]);
	if (ch == '.' && deny_has(c->h, DENY_SUFFIX | DENY_SUB)) {
		c->denied = 1;
		return 1;
	}
	c->h ^= ch;
	c->h *= 0x100000001b3ULL;
	return 0;
}

/* Whether scratch[start, start + len) (len 1..255, a host name) is denied; see the header for the hash order. */
static __always_inline int name_denied(struct scratch *s, __u32 start, __u32 len)
{
	/* A trailing dot (absolute form) is not part of the comparison. */
	if (len > 1 && s->buf[(start + len - 1) & (HTTP_WINDOW - 1)] == '.')
		len--;
	struct hash_ctx c = { .start = start, .len = len, .h = 0xcbf29ce484222325ULL, .denied = 0 };
	bpf_loop(SNI_MAX_NAME, hash_step, &c, 0);
	if (c.denied)
		return 1;
	return deny_has(c.h, DENY_EXACT | DENY_SUFFIX);
}

static __always_inline int load_u8(struct __sk_buff *skb, __u32 off, __u32 *v)
{
	__u8 b;
	if (bpf_skb_load_bytes(skb, off, &b, 1) < 0)
		return -1;
	*v = b;
	return 0;
}

static __always_inline int load_u16(struct __sk_buff *skb, __u32 off, __u32 *v)
{
	__u8 b[2];
	if (bpf_skb_load_bytes(skb, off, b, 2) < 0)
		return -1;
	*v = ((__u32)b[0] << 8) | b[1];
	return 0;
}

/*
 * The TLS check: 1 denied, 0 allowed, -1 not a ClientHello (nothing
 * counted), -2 a ClientHello whose name it cannot see.
 */
static __always_inline int tls_check(struct __sk_buff *skb, __u32 p, struct scratch *s)
{
	__u8 h[6];
	if (bpf_skb_load_bytes(skb, p, h, 6) < 0)
		return -1;
	/* ContentType handshake(22), legacy_record_version 3.x, HandshakeType client_hello(1). */
	if (h[0] != 22 || h[1] != 3 || h[5] != 1)
		return -1;
	__u32 off = p + 5 + 4 + 2 + 32; /* record header, handshake header, legacy_version, random */
	__u32 n;
	if (load_u8(skb, off, &n) < 0 || n > 32)
		return -2;
	off += 1 + n; /* legacy_session_id */
	if (load_u16(skb, off, &n) < 0)
		return -2;
	off += 2 + n; /* cipher_suites */
	if (load_u8(skb, off, &n) < 0)
		return -2;
	off += 1 + n; /* legacy_compression_methods */
	__u32 total;
	if (load_u16(skb, off, &total) < 0)
		return -2;
	off += 2;
	__u32 end = off + total;
	for (int i = 0; i < TLS_MAX_EXTENSIONS; i++) {
		__u32 type, len;
		if (off + 4 > end || load_u16(skb, off, &type) < 0 || load_u16(skb, off + 2, &len) < 0)
			return -2;
		if (type == 0) {
			/* ServerNameList: u16 length, then NameType host_name(0), u16 length, the name. */
			__u32 kind, nlen;
			if (load_u8(skb, off + 6, &kind) < 0 || kind != 0 || load_u16(skb, off + 7, &nlen) < 0)
				return -2;
			if (nlen == 0 || nlen >= SNI_MAX_NAME)
				return -2;
			if (bpf_skb_load_bytes(skb, off + 9, s->buf, nlen & (SNI_MAX_NAME - 1)) < 0)
				return -2;
			return name_denied(s, 0, nlen & (SNI_MAX_NAME - 1));
		}
		off += 4 + len;
	}
	return -2;
}

static __always_inline int is_method(const __u8 *b)
{
	/* The common methods' first four bytes (RFC 9110 9.3). */
	__u32 w = ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
	return w == 0x47455420 /* "GET " */ || w == 0x504f5354 /* POST */ || w == 0x48454144 /* HEAD */ || w == 0x50555420 /* "PUT " */ ||
	       w == 0x44454c45 /* DELE */ || w == 0x4f505449 /* OPTI */ || w == 0x50415443 /* PATC */;
}

struct find_ctx {
	__u32 n;
	__u32 start;
};

/* Position i of the search for "\nhost:" (a bpf_loop callback). */
static long find_host(__u32 i, void *vctx)
{
	struct find_ctx *f = vctx;
	i += 1;
	if (i + 6 >= f->n)
		return 1;
	struct scratch *s = scratch();
	if (!s)
		return 1;
	if (s->buf[i & (HTTP_WINDOW - 1)] == '\n' && lower(s->buf[(i + 1) & (HTTP_WINDOW - 1)]) == 'h' && lower(s->buf[(i + 2) & (HTTP_WINDOW - 1)]) == 'o' &&
	    lower(s->buf[(i + 3) & (HTTP_WINDOW - 1)]) == 's' && lower(s->buf[(i + 4) & (HTTP_WINDOW - 1)]) == 't' && s->buf[(i + 5) & (HTTP_WINDOW - 1)] == ':') {
		f->start = i + 6;
		return 1;
	}
	return 0;
}

/* Advances f->start to the end of the Host value (a bpf_loop callback); past n when it does not end in the window. */
static long name_end(__u32 i, void *vctx)
{
	struct find_ctx *f = vctx;
	if (f->start >= f->n)
		return 1;
	struct scratch *s = scratch();
	if (!s)
		return 1;
	__u8 c = s->buf[f->start & (HTTP_WINDOW - 1)];
	if (c == '\r' || c == ':' || c == ' ' || c == '\t' || c == '\n')
		return 1;
	f->start++;
	return 0;
}

/* The HTTP check; same results as tls_check. */
static __always_inline int http_check(struct __sk_buff *skb, __u32 p, __u32 plen, struct scratch *s)
{
	__u32 n = plen < HTTP_WINDOW ? plen : HTTP_WINDOW;
	if (n < 16)
		return -1;
	if (bpf_skb_load_bytes(skb, p, s->buf, n & (HTTP_WINDOW - 1) ? n & (HTTP_WINDOW - 1) : HTTP_WINDOW) < 0)
		return -1;
	if (!is_method(s->buf))
		return -1;
	/* "\nhost:" case-insensitively; the value starts after optional whitespace. */
	struct find_ctx f = { .n = n, .start = 0 };
	bpf_loop(HTTP_WINDOW - 7, find_host, &f, 0);
	__u32 start = f.start;
	if (start == 0)
		return -2;
	for (int k = 0; k < 8; k++) {
		if (start < n && (s->buf[start & (HTTP_WINDOW - 1)] == ' ' || s->buf[start & (HTTP_WINDOW - 1)] == '\t'))
			start++;
	}
	/* The name ends at CR, a port colon, or whitespace (IPv6 literals, "[...]", are not names: never denied). */
	struct find_ctx e = { .n = n, .start = start };
	bpf_loop(SNI_MAX_NAME, name_end, &e, 0);
	if (e.start >= n)
		return -2;
	__u32 len = e.start - start;
	if (len == 0 || len >= SNI_MAX_NAME)
		return -2;
	return name_denied(s, start, len);
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline __u32 csum_words(const __u16 *w, int words, __u32 sum)
{
	for (int i = 0; i < words; i++)
		sum += w[i];
	return sum;
}

/* The client's segment as it arrived: what both RSTs are computed from. */
struct seg_info {
	__u32 seq;   /* network order */
	__u32 ack;   /* network order */
	__u8 has_ack;
	__u32 len;   /* sequence space it occupies: data, SYN, FIN */
};

/*
 * Rewrites the plain IP + 20-byte TCP header at l3 (the caller trimmed the
 * packet to it) into a RST|ACK with `seq` and `ack` (network order); `swap`
 * exchanges MACs, addresses and ports (the RST goes back where the segment
 * came from). No options, no data; both checksums computed in full.
 */
static __always_inline int write_rst(struct __sk_buff *skb, int v6, int swap, __u32 seq, __u32 ack)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	if (swap) {
		__u8 mac[6];
		__builtin_memcpy(mac, eth->h_source, 6);
		__builtin_memcpy(eth->h_source, eth->h_dest, 6);
		__builtin_memcpy(eth->h_dest, mac, 6);
	}
	__u32 sum = 0;
	struct tcphdr *th;
	if (!v6) {
		struct iphdr *ip = (void *)(eth + 1);
		th = (void *)(ip + 1);
		if ((void *)(th + 1) > end)
			return -1;
		if (swap) {
			__u32 a = ip->saddr;
			ip->saddr = ip->daddr;
			ip->daddr = a;
		}
		((__u8 *)ip)[0] = 0x45; /* version 4, no options (deny_flow removed them) */
		ip->tot_len = bpf_htons(40);
		ip->ttl = 64;
		ip->frag_off = bpf_htons(0x4000); /* DF */
		ip->check = 0;
		ip->check = csum_fold(csum_words((__u16 *)ip, 10, 0));
		sum = csum_words((__u16 *)&ip->saddr, 4, 0) + bpf_htons(IPPROTO_TCP) + bpf_htons(20);
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		th = (void *)(ip6 + 1);
		if ((void *)(th + 1) > end)
			return -1;
		if (swap) {
			struct in6_addr a = ip6->saddr;
			ip6->saddr = ip6->daddr;
			ip6->daddr = a;
		}
		ip6->nexthdr = IPPROTO_TCP; /* no extension headers (deny_flow removed them) */
		ip6->payload_len = bpf_htons(20);
		ip6->hop_limit = 64;
		sum = csum_words((__u16 *)&ip6->saddr, 16, 0) + bpf_htons(IPPROTO_TCP) + bpf_htons(20);
	}
	if (swap) {
		__u16 p = th->source;
		th->source = th->dest;
		th->dest = p;
	}
	th->seq = seq;
	th->ack_seq = ack;
	/* Flags byte: RST|ACK; data offset 5. */
	((__u8 *)th)[12] = 5 << 4;
	((__u8 *)th)[13] = 0x14;
	th->window = 0;
	th->urg_ptr = 0;
	th->check = 0;
	th->check = csum_fold(csum_words((__u16 *)th, 10, sum));
	return 0;
}

/*
 * Ends a denied flow at both ends. The segment (IPv4 options and IPv6
 * extension headers first removed: bpf_skb_adjust_room at the network
 * layer, so the RSTs are plain headers and no routing header or option of
 * the client's is echoed) is cut to its TCP header and becomes:
 *   1. a RST toward the client: SEQ = the client's ACK, ACK = its SEQ + the
 *      segment's length (RFC 9293 3.10.7.2 accepts a RST in the window; an
 *      exact SEQ passes RFC 5961 3.2's check too), out of the interface it
 *      came in on, as a clone;
 *   2. when `to_server` (the first denied segment), a RST toward the
 *      server: SEQ = the client's SEQ, which is exactly the server's
 *      RCV.NXT since the server has not received this segment (RFC 5961
 *      3.2: an exact match resets, anything else only draws a challenge
 *      ACK), ACK = the client's ACK. It is the original skb, returned with
 *      TC_ACT_OK, so the kernel routes, NATs and forwards it as it would
 *      have the segment: no neighbour or route lookup in the program.
 *      Dropping the segment instead and leaving the server to notice would
 *      hold its connection open: a TLS or HTTP server waits for the request
 *      (often minutes), and the client, reset, never sends again.
 * Returns the TC verdict.
 */
static __always_inline int deny_flow(struct __sk_buff *skb, int v6, __u32 l3, __u32 l4, struct seg_info *seg, int to_server)
{
	__u32 base = v6 ? 40 : 20;
	if (l4 < l3 + base)
		return TC_ACT_SHOT;
	__u32 extra = l4 - l3 - base;
	if (extra > 0) {
		if (extra > 0xfff || bpf_skb_adjust_room(skb, -(__s32)extra, BPF_ADJ_ROOM_NET, 0) < 0)
			return TC_ACT_SHOT;
	}
	if (bpf_skb_change_tail(skb, l3 + base + 20, 0) < 0)
		return TC_ACT_SHOT;
	__u32 client_seq = seg->has_ack ? seg->ack : 0;
	__u32 client_ack = bpf_htonl(bpf_ntohl(seg->seq) + seg->len);
	if (write_rst(skb, v6, 1, client_seq, client_ack) < 0)
		return TC_ACT_SHOT;
	sni_count(SNI_RESETS);
	if (!to_server)
		return bpf_redirect(skb->ifindex, 0);
	if (bpf_clone_redirect(skb, skb->ifindex, 0) < 0)
		return TC_ACT_SHOT;
	/* The clone shares the data: make ours private before writing the server's RST over it. */
	if (bpf_skb_pull_data(skb, l3 + base + 20) < 0)
		return TC_ACT_SHOT;
	if (write_rst(skb, v6, 1, seg->seq, seg->ack) < 0)
		return TC_ACT_SHOT;
	sni_count(SNI_SERVER_RESETS);
	return TC_ACT_OK;
}

/*
 * The filter for one kernel-path packet. Returns -1 to let the packet go
 * on (the classifier's verdict stands) or a TC verdict.
 */
static __always_inline int sni_filter(struct __sk_buff *skb, int v6, __u32 l3, __u8 proto, __u32 l4, __u32 tot)
{
	__u32 zero = 0;
	if (proto == IPPROTO_UDP) {
		__u16 dport;
		if (bpf_skb_load_bytes(skb, l4 + 2, &dport, 2) == 0 && dport == bpf_htons(443))
			sni_count(SNI_QUIC_UNSEEN);
		return -1;
	}
	if (proto != IPPROTO_TCP)
		return -1;
	struct tcphdr th;
	if (bpf_skb_load_bytes(skb, l4, &th, sizeof(th)) < 0)
		return -1;
	__u16 dport = bpf_ntohs(th.dest);
	if (dport != 443 && dport != 80)
		return -1;
	if (th.rst)
		return -1;
	struct flow_key k = {};
	k.family = v6;
	if (!v6) {
		bpf_skb_load_bytes(skb, l3 + 12, k.saddr, 4);
		bpf_skb_load_bytes(skb, l3 + 16, k.daddr, 4);
	} else {
		bpf_skb_load_bytes(skb, l3 + 8, k.saddr, 16);
		bpf_skb_load_bytes(skb, l3 + 24, k.daddr, 16);
	}
	k.sport = th.source;
	k.dport = th.dest;
	__u32 p = l4 + th.doff * 4;
	__u32 plen = tot > p ? tot - p : 0;
	struct seg_info seg = { .seq = th.seq, .ack = th.ack_seq, .has_ack = th.ack, .len = plen + th.syn + th.fin };
	if (bpf_map_lookup_elem(&sluice_denied_flows, &k))
		return deny_flow(skb, v6, l3, l4, &seg, 0);
	if (plen == 0)
		return -1;
	struct scratch *s = bpf_map_lookup_elem(&sluice_scratch, &zero);
	if (!s)
		return -1;
	int r = dport == 443 ? tls_check(skb, p, s) : http_check(skb, p, plen, s);
	if (r == -1)
		return -1;
	int tls = dport == 443;
	if (r == -2) {
		sni_count(tls ? SNI_TLS_UNSEEN : SNI_HTTP_UNSEEN);
		return -1;
	}
	if (r == 0) {
		sni_count(tls ? SNI_TLS_ALLOWED : SNI_HTTP_ALLOWED);
		return -1;
	}
	sni_count(tls ? SNI_TLS_BLOCKED : SNI_HTTP_BLOCKED);
	__u8 one = 1;
	bpf_map_update_elem(&sluice_denied_flows, &k, &one, BPF_ANY);
	return deny_flow(skb, v6, l3, l4, &seg, 1);
}

#endif
