/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map layouts and constants shared by the Palisade datapath programs. The Go side mirrors them
 * through the bpf2go-generated types; keep both in step (TestLayouts checks the sizes).
 *
 * Addresses are stored as four 32-bit words in network byte order so that IPv6 fits the same keys;
 * IPv4 uses word 0 and leaves the rest zero.
 */
#ifndef PALISADE_DATAPATH_H
#define PALISADE_DATAPATH_H

#include <linux/types.h>

/* Direction of a flow from the endpoint's point of view. */
#define DIR_INGRESS 0 /* into the endpoint: egress hook of its host-side veth */
#define DIR_EGRESS 1  /* out of the endpoint: ingress hook of its host-side veth */

#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

/* Reserved identity of any address the ipcache does not know. */
#define IDENTITY_WORLD 2

/* TCX verdicts (linux/bpf.h of the build machine may predate them). */
#define PAL_TCX_NEXT -1
#define PAL_TCX_PASS 0
#define PAL_TCX_DROP 2

/* Event verdicts. */
#define VERDICT_ALLOWED 1
#define VERDICT_DENIED 2
#define VERDICT_REDIRECTED 3

/* Why a packet was denied (or, for allowed events, 0). */
#define REASON_NONE 0
#define REASON_NO_POLICY 1        /* no policy entry matched */
#define REASON_DENY_RULE 2        /* a deny entry matched */
#define REASON_NO_CT 3            /* TCP packet that is not a SYN and belongs to no tracked flow */
#define REASON_NO_POLICY_MAP 4    /* the endpoint has no policy installed yet */
#define REASON_SPOOFED_SOURCE 5   /* the endpoint sent from an address that is not its own */
#define REASON_UNSUPPORTED_L3 6   /* not IPv4 or ARP */
#define REASON_MALFORMED 7        /* truncated header or non-first fragment */
#define REASON_UNKNOWN_ENDPOINT 8 /* program attached to an interface no endpoint is registered for */
#define REASON_PROXY_UNAVAILABLE 9 /* flow needs the proxy but no proxy socket is registered */

/* Which lookup of the policy ladder matched, most specific first. */
#define MATCH_NONE 0
#define MATCH_ID_PORT_PROTO 1
#define MATCH_ID_PROTO 2
#define MATCH_ID 3
#define MATCH_PORT_PROTO 4
#define MATCH_PROTO 5
#define MATCH_ALL 6

/* Conntrack flags: TCP state of a flow. */
#define CT_SYN_SEEN (1 << 0)
#define CT_ESTABLISHED (1 << 1)
#define CT_FIN_ORIGINAL (1 << 2)
#define CT_FIN_REPLY (1 << 3)
#define CT_CLOSED (1 << 4)

struct ipcache_key {
	__u32 prefixlen; /* 32 (family and padding) + prefix length of the address */
	__u8 family;
	__u8 pad[3];
	__u32 addr[4];
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;
};

struct policy_key {
	__u32 identity; /* 0 = any identity */
	__u16 dport;    /* host byte order; 0 = any port */
	__u8 proto;     /* 0 = any protocol (then dport is 0) */
	__u8 dir;
};

struct policy_value {
	__u16 proxy_port; /* host byte order; 0 = no redirect */
	__u8 deny;
	__u8 pad[5];
	__u64 packets; /* packets evaluated against this entry (new flows and denied packets) */
	__u64 bytes;
};

struct ct_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* direction the flow was admitted in, relative to endpoint_id */
	__u8 family;
	__u8 pad;
};

struct ct_value {
	__u64 created; /* CLOCK_MONOTONIC ns */
	__u64 expires; /* CLOCK_MONOTONIC ns */
	__u64 packets;
	__u64 bytes;
	__u32 endpoint_id; /* endpoint whose policy admitted the flow */
	__u32 identity;    /* identity of the peer */
	__u32 flags;       /* CT_* */
	__u16 proxy_port;
	__u16 pad;
};

struct endpoint_info {
	__u32 endpoint_id;
	__u8 family;
	__u8 pad[3];
	__u32 addr[4];
};

struct event {
	__u64 timestamp; /* CLOCK_MONOTONIC ns */
	__u32 endpoint_id;
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u8 verdict;
	__u8 reason;
	__u8 family;
	__u8 match;
	__u8 tcp_flags;
	__u8 pad;
	__u16 proxy_port;
	__u16 pad2;
	__u32 pkt_len;
};

struct event_limit {
	__u64 tokens; /* token-nanoseconds: one event costs 1e9 */
	__u64 last;
};

struct event_stats {
	__u64 emitted;
	__u64 rate_limited;
	__u64 ringbuf_full;
};

#endif
