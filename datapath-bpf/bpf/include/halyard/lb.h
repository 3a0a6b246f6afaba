/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Load-balancing decision, shared by the XDP and tc entry points: service lookup -> conntrack ->
 * Maglev. Works on a parsed tuple only, so it does not care which hook runs it.
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

#endif
