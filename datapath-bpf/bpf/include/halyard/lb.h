/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Load-balancing decision, shared by the XDP and tc entry points: service lookup -> conntrack ->
 * Maglev. Works on a parsed tuple only, so it does not care which hook runs it. IPv4 first
 * (hl_lb4_decide, the fast path, unchanged by IPv6); what is not IPv4 goes to hl_lb6_decide.
 */
#ifndef HALYARD_LB_H
#define HALYARD_LB_H

#include "common.h"
#include "config.h"
#include "jhash.h"
#include "maps.h"
#include "parse.h"


/*
 * The flow hash, as Cilium's __hash_from_tuple_v4: jhash_3words(saddr, dport << 16 | sport, proto,
 * seed), with the words as they sit in the packet. The destination is left out so the same client
 * flow picks the same backend on every VIP of the service and on every LB node.
 */
static __always_inline __u32 hl_flow_hash(const struct ct4_key *t, __u8 svc_flags)
{
	__u32 sport = (svc_flags & HL_SVC_F_AFFINITY) ? 0 : t->sport;

	return hl_jhash_3words(t->saddr, ((__u32)t->dport << 16) | sport, t->proto, CFG_HASH_SEED);
}

/* Returns the backend for the flow (and its id), or NULL when the service has none usable. */
static __always_inline struct lb4_backend *hl_lb4_select(const struct lb4_service *svc,
							 const struct ct4_key *tuple, __u8 tcp_flags,
							 __u32 *hash_out)
{
	struct lb4_backend *be;
	struct ct4_entry *ct;
	__u32 hash = hl_flow_hash(tuple, svc->flags);

	*hash_out = hash;
	ct = bpf_map_lookup_elem(&hl_ct4, tuple);
	/* A new SYN on a closing flow (port reuse) is a new connection: choose again. */
	if (ct && ct->svc_id == svc->svc_id &&
	    !((ct->flags & HL_CT_F_CLOSING) && (tcp_flags & (HL_TCP_SYN | HL_TCP_ACK)) == HL_TCP_SYN)) {
		__u32 id = ct->backend_id;

		be = bpf_map_lookup_elem(&hl_lb4_be, &id);
		if (be && be->addr) {
			/* Aging: a coarse clock, written at most once a second per flow. */
			__u64 now = bpf_ktime_get_coarse_ns();

			if (tcp_flags & (HL_TCP_FIN | HL_TCP_RST)) {
				ct->flags |= HL_CT_F_CLOSING;
				ct->last_seen_ns = now;
			} else if (now - ct->last_seen_ns > 1000000000ULL) {
				ct->last_seen_ns = now;
			}
			hl_count(HL_CNT_CT_HIT, 0);
			return be;
		}
	}
	if (svc->backends == 0)
		return NULL;

	__u32 svc_id = svc->svc_id;
	void *inner = bpf_map_lookup_elem(&hl_lb4_maglev, &svc_id);
	if (!inner)
		return NULL;
	__u32 zero = 0;
	__u32 *lut = bpf_map_lookup_elem(inner, &zero);
	if (!lut)
		return NULL;

	__u32 idx = hash % HL_MAGLEV_M;
	/* Keep the compiler from dropping the check the verifier needs to bound the read. */
	asm volatile("" : "+r"(idx));
	if (idx >= HL_MAGLEV_M)
		return NULL;
	__u32 id = lut[idx];

	be = bpf_map_lookup_elem(&hl_lb4_be, &id);
	if (!be || !be->addr)
		return NULL;

	__u64 now = bpf_ktime_get_coarse_ns();
	struct ct4_entry entry = {
		.backend_id = id,
		.svc_id = svc->svc_id,
		.created_ns = now,
		.last_seen_ns = now,
		.flags = (tcp_flags & (HL_TCP_FIN | HL_TCP_RST)) ? HL_CT_F_CLOSING : 0,
	};
	bpf_map_update_elem(&hl_ct4, tuple, &entry, BPF_ANY);
	hl_count(HL_CNT_CT_NEW, 0);
	return be;
}

enum hl_verdict {
	HL_VERDICT_PASS = 0, /* not a service packet: to the stack, untouched */
	HL_VERDICT_DROP,
	HL_VERDICT_FORWARD,    /* encapsulate per `mode` and send to `be` */
	HL_VERDICT_SNAT_REPLY, /* a backend's reply to an SNAT flow: translate back (`rev`) */
	HL_VERDICT_NOT_IPV4,   /* hl_lb4_decide: not IPv4, nothing counted; try hl_lb6_decide */
};

struct hl_lb_decision {
	struct lb4_backend *be;
	__u32 hash;
	__be32 vip;
	__be16 vport;
	__u8 mode;
	struct ct4_key tuple;
	struct iphdr *ip;
	struct nat4_rev_val rev;
};

/* Parse, count and decide. Shared by every hook that load-balances. */
static __always_inline enum hl_verdict hl_lb4_decide(void *data, void *data_end, __u64 len,
						     struct hl_lb_decision *d)
{
	struct ct4_key tuple;
	struct iphdr *ip = NULL;
	__u8 tcp_flags = 0;

	/* No RX counter: one map lookup less per packet; userspace adds up the outcomes. */
	switch (hl_parse_ipv4(data, data_end, &tuple, &ip, &tcp_flags)) {
	case HL_PARSE_OK:
		break;
	case HL_PARSE_NOT_IPV4:
		/* IPv6 (or neither): the caller's IPv6 path decides and counts, off the IPv4 path. */
		return HL_VERDICT_NOT_IPV4;
	case HL_PARSE_OPTIONS:
		hl_count(HL_CNT_PASS_IP_OPTIONS, len);
		return HL_VERDICT_PASS;
	case HL_PARSE_FRAGMENT:
		hl_count(HL_CNT_PASS_FRAGMENT, len);
		return HL_VERDICT_PASS;
	case HL_PARSE_NOT_L4:
		hl_count(HL_CNT_PASS_NO_SERVICE, len);
		return HL_VERDICT_PASS;
	default:
		/* Not ours to judge: the stack drops what is truly broken. */
		hl_count(HL_CNT_DROP_MALFORMED, len);
		return HL_VERDICT_PASS;
	}

	struct lb4_key key = { .vip = tuple.daddr, .dport = tuple.dport, .proto = tuple.proto };
	struct lb4_service *svc = bpf_map_lookup_elem(&hl_lb4_svc, &key);
	if (!svc) {
		/* Only packets to this node's own address can be SNAT replies. */
		if (CFG_NODE_IPV4 && tuple.daddr == CFG_NODE_IPV4) {
			struct nat4_rev_key rk = {
				.backend = tuple.saddr,
				.node = tuple.daddr,
				.bport = tuple.sport,
				.nport = tuple.dport,
				.proto = tuple.proto,
			};
			struct nat4_rev_val *rv = bpf_map_lookup_elem(&hl_nat4_rev, &rk);

			if (rv) {
				d->rev = *rv;
				d->ip = ip;
				d->tuple = tuple;
				return HL_VERDICT_SNAT_REPLY;
			}
		}
		hl_count(HL_CNT_PASS_NO_SERVICE, len);
		return HL_VERDICT_PASS;
	}
	d->be = hl_lb4_select(svc, &tuple, tcp_flags, &d->hash);
	if (!d->be) {
		hl_count(HL_CNT_DROP_NO_BACKEND, len);
		return HL_VERDICT_DROP;
	}
	d->vip = key.vip;
	d->vport = key.dport;
	d->mode = svc->mode;
	d->tuple = tuple;
	d->ip = ip;
	return HL_VERDICT_FORWARD;
}

/* ===== IPv6 ===== */

/* The kernel's (and Cilium's bpf/lib/jhash.h) lookup3 mix and final mix. */
#define hl_jhash_mix(a, b, c)                          \
	do {                                           \
		a -= c; a ^= hl_rol32(c, 4);  c += b;  \
		b -= a; b ^= hl_rol32(a, 6);  a += c;  \
		c -= b; c ^= hl_rol32(b, 8);  b += a;  \
		a -= c; a ^= hl_rol32(c, 16); c += b;  \
		b -= a; b ^= hl_rol32(a, 19); a += c;  \
		c -= b; c ^= hl_rol32(b, 4);  b += a;  \
	} while (0)

#define hl_jhash_final(a, b, c)                        \
	do {                                           \
		c ^= b; c -= hl_rol32(b, 14);          \
		a ^= c; a -= hl_rol32(c, 11);          \
		b ^= a; b -= hl_rol32(a, 25);          \
		c ^= b; c -= hl_rol32(b, 16);          \
		a ^= c; a -= hl_rol32(c, 4);           \
		b ^= a; b -= hl_rol32(a, 14);          \
		c ^= b; c -= hl_rol32(b, 24);          \
	} while (0)

/*
 * The IPv6 flow hash, as Cilium's __hash_from_tuple_v6 (bpf/lib/hash.h): the source address's
 * words 1-3 mixed, then word 4, dport << 16 | sport and the protocol added and mixed, then the
 * IPv6 seed (HASH_INIT6_SEED: bytes 8-11 of the Maglev seed) added and the final mix; words as
 * they sit in the packet. The destination is left out, as for IPv4. Rust: hash::flow_hash6.
 */
static __always_inline __u32 hl_flow_hash6(const struct ct6_key *t, __u8 svc_flags)
{
	__u32 sport = (svc_flags & HL_SVC_F_AFFINITY) ? 0 : t->sport;
	__u32 a = t->saddr[0], b = t->saddr[1], c = t->saddr[2];

	hl_jhash_mix(a, b, c);
	a += t->saddr[3];
	b += ((__u32)t->dport << 16) | sport;
	c += t->proto;
	hl_jhash_mix(a, b, c);
	a += CFG_HASH_SEED6;
	hl_jhash_final(a, b, c);
	return c;
}

/* This node's IPv6 address (CFG_NODE_IPV6) as four words. */
static __always_inline void hl_node_ipv6(__be32 *out)
{
	out[0] = CFG_NODE_IPV6[0];
	out[1] = CFG_NODE_IPV6[1];
	out[2] = CFG_NODE_IPV6[2];
	out[3] = CFG_NODE_IPV6[3];
}

/* Whether this node has an IPv6 address (else IPv6 frontends cannot be forwarded). */
static __always_inline int hl_node_ipv6_set(void)
{
	return (CFG_NODE_IPV6[0] | CFG_NODE_IPV6[1] | CFG_NODE_IPV6[2] | CFG_NODE_IPV6[3]) != 0;
}

/* hl_lb4_select for IPv6 flows: conntrack (hl_ct6) first, then the service's Maglev table (the
 * same hl_lb4_maglev), backends from hl_lb6_be. */
static __always_inline struct lb6_backend *hl_lb6_select(const struct lb4_service *svc,
							 const struct ct6_key *tuple, __u8 tcp_flags,
							 __u32 *hash_out)
{
	struct lb6_backend *be;
	struct ct4_entry *ct;
	__u32 hash = hl_flow_hash6(tuple, svc->flags);

	*hash_out = hash;
	ct = bpf_map_lookup_elem(&hl_ct6, tuple);
	if (ct && ct->svc_id == svc->svc_id &&
	    !((ct->flags & HL_CT_F_CLOSING) && (tcp_flags & (HL_TCP_SYN | HL_TCP_ACK)) == HL_TCP_SYN)) {
		__u32 id = ct->backend_id;

		be = bpf_map_lookup_elem(&hl_lb6_be, &id);
		if (be && !hl_ip6_is_zero(be->addr)) {
			__u64 now = bpf_ktime_get_coarse_ns();

			if (tcp_flags & (HL_TCP_FIN | HL_TCP_RST)) {
				ct->flags |= HL_CT_F_CLOSING;
				ct->last_seen_ns = now;
			} else if (now - ct->last_seen_ns > 1000000000ULL) {
				ct->last_seen_ns = now;
			}
			hl_count(HL_CNT_CT_HIT, 0);
			return be;
		}
	}
	if (svc->backends == 0)
		return NULL;

	__u32 svc_id = svc->svc_id;
	void *inner = bpf_map_lookup_elem(&hl_lb4_maglev, &svc_id);
	if (!inner)
		return NULL;
	__u32 zero = 0;
	__u32 *lut = bpf_map_lookup_elem(inner, &zero);
	if (!lut)
		return NULL;

	__u32 idx = hash % HL_MAGLEV_M;
	asm volatile("" : "+r"(idx));
	if (idx >= HL_MAGLEV_M)
		return NULL;
	__u32 id = lut[idx];

	be = bpf_map_lookup_elem(&hl_lb6_be, &id);
	if (!be || hl_ip6_is_zero(be->addr))
		return NULL;

	__u64 now = bpf_ktime_get_coarse_ns();
	struct ct4_entry entry = {
		.backend_id = id,
		.svc_id = svc->svc_id,
		.created_ns = now,
		.last_seen_ns = now,
		.flags = (tcp_flags & (HL_TCP_FIN | HL_TCP_RST)) ? HL_CT_F_CLOSING : 0,
	};
	bpf_map_update_elem(&hl_ct6, tuple, &entry, BPF_ANY);
	hl_count(HL_CNT_CT_NEW, 0);
	return be;
}

struct hl_lb6_decision {
	struct lb6_backend *be;
	__u32 hash;
	__u8 mode;
	struct ct6_key tuple; /* the service is tuple.daddr:tuple.dport */
	struct ipv6hdr *ip;
	struct nat6_rev_val *rev; /* in hl_nat6_rev (the stack is tight: IPv4's frame plus this) */
};

/* hl_lb4_decide for what is not IPv4: IPv6 TCP/UDP to a service, or an SNAT reply to this node's
 * IPv6 address. ICMPv6 (NDP too), extension headers, fragments and non-IP pass, counted.
 *
 * The IPv6 path runs as BPF-to-BPF calls below the IPv4 path's frame (which stays as it was), and
 * the verifier bounds the frames of a call chain to 512 bytes together: hence the noinline
 * functions here and in the entry points, each with a small frame. */
static __attribute__((noinline, unused)) enum hl_verdict
hl_lb6_decide(void *data, void *data_end, __u64 len, struct hl_lb6_decision *d)
{
	struct ct6_key *tuple = &d->tuple;
	struct ipv6hdr *ip = NULL;
	__u8 tcp_flags = 0;

	switch (hl_parse_ipv6(data, data_end, tuple, &ip, &tcp_flags)) {
	case HL_PARSE_OK:
		break;
	case HL_PARSE_NOT_IPV4:
		hl_count(HL_CNT_PASS_NOT_IPV4, len);
		return HL_VERDICT_PASS;
	case HL_PARSE_OPTIONS:
		hl_count(HL_CNT_PASS_IP_OPTIONS, len);
		return HL_VERDICT_PASS;
	case HL_PARSE_FRAGMENT:
		hl_count(HL_CNT_PASS_FRAGMENT, len);
		return HL_VERDICT_PASS;
	case HL_PARSE_NOT_L4:
		hl_count(HL_CNT_PASS_NO_SERVICE, len);
		return HL_VERDICT_PASS;
	default:
		hl_count(HL_CNT_DROP_MALFORMED, len);
		return HL_VERDICT_PASS;
	}

	struct lb6_key key = { .dport = tuple->dport, .proto = tuple->proto };
	hl_ip6_copy(key.vip, tuple->daddr);
	struct lb4_service *svc = bpf_map_lookup_elem(&hl_lb6_svc, &key);
	if (!svc) {
		struct nat6_rev_key rk = {
			.bport = tuple->sport,
			.nport = tuple->dport,
			.proto = tuple->proto,
		};

		/* Only packets to this node's own address can be SNAT replies. */
		hl_node_ipv6(rk.node);
		if (!hl_ip6_is_zero(rk.node) && hl_ip6_eq(tuple->daddr, rk.node)) {
			hl_ip6_copy(rk.backend, tuple->saddr);
			d->rev = bpf_map_lookup_elem(&hl_nat6_rev, &rk);
			if (d->rev) {
				d->ip = ip;
				return HL_VERDICT_SNAT_REPLY;
			}
		}
		hl_count(HL_CNT_PASS_NO_SERVICE, len);
		return HL_VERDICT_PASS;
	}
	d->be = hl_lb6_select(svc, tuple, tcp_flags, &d->hash);
	if (!d->be) {
		hl_count(HL_CNT_DROP_NO_BACKEND, len);
		return HL_VERDICT_DROP;
	}
	d->mode = svc->mode;
	d->ip = ip;
	return HL_VERDICT_FORWARD;
}

#endif
