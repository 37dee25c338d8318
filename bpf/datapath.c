//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Palisade datapath: L3/L4 policy enforcement with connection tracking on the host side of each
 * endpoint's veth (TCX), and the sk_lookup steering of flows that need the L7 proxy into the
 * proxy's listener inside the endpoint's network namespace.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#ifndef AF_INET
#define AF_INET 2
#endif
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "datapath.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Configuration set by the loader before the programs are loaded. */
volatile const __u64 ct_timeout_syn_ns = 60ULL * 1000000000ULL;
volatile const __u64 ct_timeout_tcp_ns = 21600ULL * 1000000000ULL;
volatile const __u64 ct_timeout_closing_ns = 10ULL * 1000000000ULL;
volatile const __u64 ct_timeout_other_ns = 60ULL * 1000000000ULL;
volatile const __u64 events_per_sec = 1000; /* per CPU */
volatile const __u64 events_burst = 200;    /* per CPU */

#define NSEC_PER_SEC 1000000000ULL
/* Refresh a flow's expiry at most this often, to keep per-packet writes to shared lines rare. */
#define CT_REFRESH_NS NSEC_PER_SEC

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 512 * 1024);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	/* One inner map per endpoint: replacing it swaps a whole policy atomically. */
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 16384);
		__uint(key_size, sizeof(struct policy_key));
		__uint(value_size, sizeof(struct policy_value));
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} pal_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256 * 1024);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ct SEC(".maps");

/* Endpoints by the ifindex of their host-side veth (in the node's namespace). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_endpoints SEC(".maps");

/* Proxy listeners by proxy port. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_proxy_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_limit);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ev_limit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ev_stats SEC(".maps");

/* Referenced so that the BTF, and so bpf2go's Go mirrors, carry these types. */
const struct event *unused_event __attribute__((unused));
const struct policy_key *unused_policy_key __attribute__((unused));
const struct policy_value *unused_policy_value __attribute__((unused));

/* Everything the programs know about the packet being handled. */
struct packet {
	struct ct_key tuple; /* in the packet's own direction, dir = direction of the hook */
	__u8 tcp_flags;
	__u32 len;
};

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

/* events_allowed is a per-CPU token bucket so a flood of drops cannot starve the reader. */
static __always_inline int events_allowed(struct event_stats *stats)
{
	__u32 zero = 0;
	struct event_limit *lim = bpf_map_lookup_elem(&pal_ev_limit, &zero);
	if (!lim)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 cap = events_burst * NSEC_PER_SEC;
	__u64 elapsed = now - lim->last;
	if (elapsed >= NSEC_PER_SEC || lim->last == 0)
		lim->tokens = cap;
	else {
		lim->tokens += elapsed * events_per_sec;
		if (lim->tokens > cap)
			lim->tokens = cap;
	}
	lim->last = now;
	if (lim->tokens < NSEC_PER_SEC) {
		if (stats)
			stats->rate_limited++;
		return 0;
	}
	lim->tokens -= NSEC_PER_SEC;
	return 1;
}

static __always_inline void emit(struct __sk_buff *skb, const struct packet *pkt, __u32 endpoint_id,
				 __u32 src_id, __u32 dst_id, __u8 verdict, __u8 reason, __u8 match,
				 __u16 proxy_port)
{
	__u32 zero = 0;
	struct event_stats *stats = bpf_map_lookup_elem(&pal_ev_stats, &zero);
	if (!events_allowed(stats))
		return;
	struct event ev = {
		.timestamp = bpf_ktime_get_ns(),
		.endpoint_id = endpoint_id,
		.ifindex = skb ? skb->ifindex : 0,
		.src_identity = src_id,
		.dst_identity = dst_id,
		.sport = pkt->tuple.sport,
		.dport = pkt->tuple.dport,
		.proto = pkt->tuple.proto,
		.dir = pkt->tuple.dir,
		.verdict = verdict,
		.reason = reason,
		.family = pkt->tuple.family,
		.match = match,
		.tcp_flags = pkt->tcp_flags,
		.proxy_port = proxy_port,
		.pkt_len = pkt->len,
	};
	ev.saddr[0] = pkt->tuple.saddr[0];
	ev.daddr[0] = pkt->tuple.daddr[0];
	if (bpf_ringbuf_output(&pal_events, &ev, sizeof(ev), 0) != 0) {
		if (stats)
			stats->ringbuf_full++;
		return;
	}
	if (stats)
		stats->emitted++;
}

static __always_inline __u32 ipcache_identity(__u32 addr)
{
	struct ipcache_key key = {
		.prefixlen = 32 + 32,
		.family = FAMILY_IPV4,
	};
	key.addr[0] = addr;
	struct ipcache_value *v = bpf_map_lookup_elem(&pal_ipcache, &key);
	return v ? v->identity : IDENTITY_WORLD;
}

/* One rung of the policy ladder: remembers the most specific allow and any deny. */
static __always_inline void policy_rung(void *pmap, __u32 id, __u16 port, __u8 proto, __u8 dir,
					__u8 rung, struct policy_value **allow, __u8 *allow_rung,
					struct policy_value **deny, __u8 *deny_rung)
{
	struct policy_key key = {.identity = id, .dport = port, .proto = proto, .dir = dir};
	struct policy_value *v = bpf_map_lookup_elem(pmap, &key);
	if (!v)
		return;
	if (v->deny) {
		if (!*deny) {
			*deny = v;
			*deny_rung = rung;
		}
	} else if (!*allow) {
		*allow = v;
		*allow_rung = rung;
	}
}

/*
 * policy_verdict evaluates a new flow: most specific allow wins unless any deny on the ladder
 * matches. Returns REASON_NONE when allowed, with *proxy_port and *match set.
 */
static __always_inline __u8 policy_verdict(void *pmap, __u32 id, __u16 port, __u8 proto, __u8 dir,
					   __u32 len, __u16 *proxy_port, __u8 *match)
{
	struct policy_value *allow = NULL, *deny = NULL;
	__u8 allow_rung = MATCH_NONE, deny_rung = MATCH_NONE;

	if (port)
		policy_rung(pmap, id, port, proto, dir, MATCH_ID_PORT_PROTO, &allow, &allow_rung, &deny, &deny_rung);
	policy_rung(pmap, id, 0, proto, dir, MATCH_ID_PROTO, &allow, &allow_rung, &deny, &deny_rung);
	policy_rung(pmap, id, 0, 0, dir, MATCH_ID, &allow, &allow_rung, &deny, &deny_rung);
	if (port)
		policy_rung(pmap, 0, port, proto, dir, MATCH_PORT_PROTO, &allow, &allow_rung, &deny, &deny_rung);
	policy_rung(pmap, 0, 0, proto, dir, MATCH_PROTO, &allow, &allow_rung, &deny, &deny_rung);
	policy_rung(pmap, 0, 0, 0, dir, MATCH_ALL, &allow, &allow_rung, &deny, &deny_rung);

	if (deny) {
		__sync_fetch_and_add(&deny->packets, 1);
		__sync_fetch_and_add(&deny->bytes, len);
		*match = deny_rung;
		return REASON_DENY_RULE;
	}
	if (!allow) {
		*match = MATCH_NONE;
		return REASON_NO_POLICY;
	}
	__sync_fetch_and_add(&allow->packets, 1);
	__sync_fetch_and_add(&allow->bytes, len);
	*match = allow_rung;
	*proxy_port = allow->proxy_port;
	return REASON_NONE;
}

static __always_inline void ct_track(struct ct_value *ct, const struct packet *pkt, int reply, __u64 now)
{
	__sync_fetch_and_add(&ct->packets, 1);
	__sync_fetch_and_add(&ct->bytes, pkt->len);

	__u32 flags = ct->flags;
	__u64 timeout = ct_timeout_other_ns;
	if (pkt->tuple.proto == IPPROTO_TCP) {
		__u32 next = flags;
		if (pkt->tcp_flags & TCPF_RST)
			next |= CT_CLOSED;
		if (pkt->tcp_flags & TCPF_FIN)
			next |= reply ? CT_FIN_REPLY : CT_FIN_ORIGINAL;
		if ((next & (CT_FIN_ORIGINAL | CT_FIN_REPLY)) == (CT_FIN_ORIGINAL | CT_FIN_REPLY))
			next |= CT_CLOSED;
		if (reply && (pkt->tcp_flags & TCPF_ACK))
			next |= CT_ESTABLISHED;
		if (next != flags)
			ct->flags = next;
		if (next & CT_CLOSED) {
			/* A closing flow never gets its lifetime extended. */
			if (next != flags)
				ct->expires = now + ct_timeout_closing_ns;
			return;
		}
		timeout = (next & CT_ESTABLISHED) ? ct_timeout_tcp_ns : ct_timeout_syn_ns;
	}
	if (now + timeout > ct->expires + CT_REFRESH_NS)
		ct->expires = now + timeout;
}

/* parse fills pkt from an Ethernet frame. Returns 0, or the REASON_* that drops it; *skip set for
 * frames the datapath lets through untouched (ARP). */
static __always_inline __u8 parse(struct __sk_buff *skb, struct packet *pkt, __u8 dir, int *skip)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	*skip = 0;
	if ((void *)(eth + 1) > data_end)
		return REASON_MALFORMED;
	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		*skip = 1;
		return REASON_NONE;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return REASON_UNSUPPORTED_L3;

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return REASON_MALFORMED;
	__u32 ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return REASON_MALFORMED;

	pkt->tuple.family = FAMILY_IPV4;
	pkt->tuple.saddr[0] = ip->saddr;
	pkt->tuple.daddr[0] = ip->daddr;
	pkt->tuple.proto = ip->protocol;
	pkt->tuple.dir = dir;
	pkt->len = skb->len;

	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return REASON_MALFORMED;

	void *l4 = (void *)ip + ihl;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return REASON_MALFORMED;
		pkt->tuple.sport = tcp->source;
		pkt->tuple.dport = tcp->dest;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return REASON_MALFORMED;
		pkt->tuple.sport = udp->source;
		pkt->tuple.dport = udp->dest;
	}
	return REASON_NONE;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	struct packet pkt = {};
	int skip;
	__u32 ifindex = skb->ifindex;
	struct endpoint_info *ep = bpf_map_lookup_elem(&pal_endpoints, &ifindex);
	__u32 ep_id = ep ? ep->endpoint_id : 0;

	__u8 reason = parse(skb, &pkt, dir, &skip);
	if (skip)
		return PAL_TCX_NEXT;
	if (reason != REASON_NONE)
		goto drop;
	if (!ep) {
		reason = REASON_UNKNOWN_ENDPOINT;
		goto drop;
	}
	if (dir == DIR_EGRESS && pkt.tuple.saddr[0] != ep->addr[0]) {
		reason = REASON_SPOOFED_SOURCE;
		goto drop;
	}

	__u64 now = bpf_ktime_get_ns();
	int tcp = pkt.tuple.proto == IPPROTO_TCP;
	int new_syn = tcp && (pkt.tcp_flags & (TCPF_SYN | TCPF_ACK | TCPF_RST)) == TCPF_SYN;

	/* Known flow in its original direction. A bare SYN is always evaluated again, so a reused
	 * 5-tuple after FIN/RST (or a policy change) gets a fresh verdict. */
	struct ct_value *ct = bpf_map_lookup_elem(&pal_ct, &pkt.tuple);
	if (ct && !new_syn && ct->expires > now) {
		ct_track(ct, &pkt, 0, now);
		return PAL_TCX_NEXT;
	}
	if (!new_syn) {
		/* Reply of a flow admitted in the opposite direction. */
		struct ct_key rev = {
			.sport = pkt.tuple.dport,
			.dport = pkt.tuple.sport,
			.proto = pkt.tuple.proto,
			.dir = dir == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS,
			.family = pkt.tuple.family,
		};
		rev.saddr[0] = pkt.tuple.daddr[0];
		rev.daddr[0] = pkt.tuple.saddr[0];
		struct ct_value *rct = bpf_map_lookup_elem(&pal_ct, &rev);
		if (rct && rct->expires > now) {
			ct_track(rct, &pkt, 1, now);
			return PAL_TCX_NEXT;
		}
		if (tcp) {
			reason = REASON_NO_CT;
			goto drop;
		}
	}

	/* New flow: the policy of this endpoint in this direction decides. */
	__u32 remote = dir == DIR_INGRESS ? pkt.tuple.saddr[0] : pkt.tuple.daddr[0];
	__u32 remote_id = ipcache_identity(remote);
	void *pmap = bpf_map_lookup_elem(&pal_policy, &ep_id);
	if (!pmap) {
		reason = REASON_NO_POLICY_MAP;
		goto drop;
	}
	__u16 proxy_port = 0;
	__u8 match = MATCH_NONE;
	reason = policy_verdict(pmap, remote_id, bpf_ntohs(pkt.tuple.dport), pkt.tuple.proto, dir, pkt.len,
				&proxy_port, &match);
	if (reason != REASON_NONE) {
		if (ct)
			bpf_map_delete_elem(&pal_ct, &pkt.tuple);
		__u32 local_id = ipcache_identity(ep->addr[0]);
		emit(skb, &pkt, ep_id, dir == DIR_INGRESS ? remote_id : local_id,
		     dir == DIR_INGRESS ? local_id : remote_id, VERDICT_DENIED, reason, match, 0);
		return PAL_TCX_DROP;
	}

	struct ct_value fresh = {
		.created = now,
		.expires = now + (tcp ? ct_timeout_syn_ns : ct_timeout_other_ns),
		.packets = 1,
		.bytes = pkt.len,
		.endpoint_id = ep_id,
		.identity = remote_id,
		.flags = tcp ? CT_SYN_SEEN : 0,
		.proxy_port = proxy_port,
	};
	bpf_map_update_elem(&pal_ct, &pkt.tuple, &fresh, BPF_ANY);
	__u32 local_id = ipcache_identity(ep->addr[0]);
	emit(skb, &pkt, ep_id, dir == DIR_INGRESS ? remote_id : local_id, dir == DIR_INGRESS ? local_id : remote_id,
	     proxy_port ? VERDICT_REDIRECTED : VERDICT_ALLOWED, REASON_NONE, match, proxy_port);
	return PAL_TCX_NEXT;

drop:
	emit(skb, &pkt, ep_id, 0, 0, VERDICT_DENIED, reason, MATCH_NONE, 0);
	return PAL_TCX_DROP;
}

/* Ingress of the host-side veth: packets the endpoint sends (its egress policy). */
SEC("tcx/ingress")
int from_endpoint(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

/* Egress of the host-side veth: packets delivered to the endpoint (its ingress policy). */
SEC("tcx/egress")
int to_endpoint(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

/*
 * Runs in the endpoint's namespace for every new inbound connection. A flow admitted with a proxy
 * port goes to the proxy listener registered for that port; the proxy's own upstream connection to
 * the real server has no such conntrack entry and reaches the server unchanged.
 */
SEC("sk_lookup")
int steer_to_proxy(struct bpf_sk_lookup *ctx)
{
	if (ctx->family != AF_INET || ctx->protocol != IPPROTO_TCP)
		return SK_PASS;

	struct ct_key key = {
		.sport = ctx->remote_port,
		.dport = bpf_htons((__u16)ctx->local_port),
		.proto = IPPROTO_TCP,
		.dir = DIR_INGRESS,
		.family = FAMILY_IPV4,
	};
	key.saddr[0] = ctx->remote_ip4;
	key.daddr[0] = ctx->local_ip4;
	struct ct_value *ct = bpf_map_lookup_elem(&pal_ct, &key);
	if (!ct || !ct->proxy_port)
		return SK_PASS;

	__u32 port = ct->proxy_port;
	struct bpf_sock *sk = bpf_map_lookup_elem(&pal_proxy_socks, &port);
	if (!sk) {
		/* Without its proxy the flow would bypass L7 policy: refuse it. */
		struct packet pkt = {.tuple = key};
		emit(NULL, &pkt, ct->endpoint_id, ct->identity, 0, VERDICT_DENIED, REASON_PROXY_UNAVAILABLE,
		     MATCH_NONE, ct->proxy_port);
		return SK_DROP;
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return err ? SK_DROP : SK_PASS;
}
