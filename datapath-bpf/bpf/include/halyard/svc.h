/* SPDX-License-Identifier: Apache-2.0 */
/*
 * East-west service translation: pods reaching a Service's ClusterIP, at tc on the host side of
 * every pod veth, shared by the entry points in tc_svc.bpf.c.
 *
 *  pod ─veth─▶ tc ingress (hl_svc_from_pod, first in the TCX chain)
 *     (ClusterIP, port, proto) in hl_ew4_svc?
 *       conntrack (hl_ew4_ct) keeps the flow's backend, else Maglev (hl_ew4_maglev) chooses;
 *       DNAT to the backend pod's address and port (incremental checksums, RFC 1624, through
 *       the skb helpers); the reverse entry goes into hl_ew4_rev.
 *     then TCX_NEXT either way: the overlay (hl_tc_overlay_tx, next in the chain) tunnels the
 *     packet to a remote backend's node, or the stack delivers it to a local backend's veth.
 *  backend ─▶ … ─▶ tc egress of the client's veth (hl_svc_to_pod)
 *       a reply (backend:port -> client:port) of a translated flow gets the ClusterIP and the
 *       service port back as its source, so the client's socket sees whom it connected to.
 *
 * As in Cilium, the decision is the north-south LB's (conntrack first, then Maglev with Cilium's
 * flow hash, which leaves the destination out), on the same map layouts (common.h) but on maps of
 * their own. The code is kept apart from lb.h and parse.h, which the north-south LB owns.
 * IPv4 only; fragments and packets with IP options are not translated.
 */
#ifndef HALYARD_SVC_H
#define HALYARD_SVC_H

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "config.h"
#include "jhash.h"

/*
 * TCX verdicts (include/uapi/linux/bpf.h, enum tcx_action_base, Linux >= 6.6): TCX_NEXT (-1, the
 * value of TC_ACT_UNSPEC) runs the next program attached to the hook, and ends as a pass after
 * the last one; TCX_PASS (0, TC_ACT_OK) would skip the rest of the chain.
 */
#define HL_TCX_NEXT TC_ACT_UNSPEC

#ifndef HL_EW_CT_ENTRIES
#define HL_EW_CT_ENTRIES 131072
#endif

/* TCP flags (RFC 9293 §3.1), byte 13 of the TCP header. */
#define HL_EW_TCP_FIN 0x01
#define HL_EW_TCP_SYN 0x02
#define HL_EW_TCP_RST 0x04
#define HL_EW_TCP_ACK 0x10

/* ClusterIP frontends: (ClusterIP, port, proto) -> service (its id keys the Maglev table). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, HL_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_ew4_svc SEC(".maps");

/* Backend pods by node-local id; address 0 is an empty slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, HL_MAX_BACKENDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_ew4_be SEC(".maps");

/* Service id -> one-entry inner array holding the Maglev table, swapped whole by the agent. */
struct hl_ew_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32) * HL_MAGLEV_M);
	__uint(max_entries, 1);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, HL_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct hl_ew_maglev_inner);
} hl_ew4_maglev SEC(".maps");

/* Conntrack: the client's flow (pod -> ClusterIP) -> its backend. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct4_entry);
	__uint(max_entries, HL_EW_CT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_ew4_ct SEC(".maps");

/* Reverse translation: the reply (backend -> client) -> the ClusterIP and port to put back. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct svc4_rev_value);
	__uint(max_entries, HL_EW_CT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_ew4_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hl_stat);
	__uint(max_entries, HL_EW_CNT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_ew_stats SEC(".maps");

static __always_inline void hl_ew_count(__u32 idx, __u64 bytes)
{
	struct hl_stat *s = bpf_map_lookup_elem(&hl_ew_stats, &idx);

	if (s) {
		s->packets += 1;
		s->bytes += bytes;
	}
}

/* Ethernet + IPv4 without options + a TCP header without options: all the parser reads. */
#define HL_EW_PARSE_LEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + 20)
#define HL_EW_IP_OFF sizeof(struct ethhdr)
#define HL_EW_L4_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr))

/*
 * The flow tuple of an unfragmented IPv4 TCP/UDP packet without IP options, and its TCP flags.
 * Pulls the headers into the linear part first when they are not all there (paged skbs, GRO).
 * Returns 0, or -1 for anything else (never translated).
 */
static __always_inline int hl_ew_parse(struct __sk_buff *skb, struct ct4_key *t, __u8 *tcp_flags)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 len = skb->len;

	if (data + HL_EW_PARSE_LEN > data_end && len > (__u32)(data_end - data)) {
		if (bpf_skb_pull_data(skb, len < HL_EW_PARSE_LEN ? len : HL_EW_PARSE_LEN))
			return -1;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__be16 *ports = (void *)(ip + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	/* Options, or a fragment (more-fragments set or a non-zero offset): left to the stack. */
	if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	if ((void *)(ports + 2) > data_end)
		return -1;
	*tcp_flags = 0;
	if (ip->protocol == IPPROTO_TCP) {
		__u8 *flags = (void *)(ip + 1) + 13;

		if ((void *)(flags + 1) > data_end)
			return -1;
		*tcp_flags = *flags;
	}
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->sport = ports[0];
	t->dport = ports[1];
	t->proto = ip->protocol;
	t->pad[0] = t->pad[1] = t->pad[2] = 0;
	return 0;
}

/*
 * The north-south LB's flow hash (lb.h's hl_flow_hash, Cilium's __hash_from_tuple_v4):
 * jhash_3words(saddr, dport << 16 | sport, proto, seed) with the words as they sit in the packet,
 * the destination left out; without the source port for ClientIP session affinity. The agent's
 * Rust copy (hash.rs) is bit-equal, so the CLI can tell which backend a flow gets.
 */
static __always_inline __u32 hl_ew_flow_hash(const struct ct4_key *t, __u8 svc_flags)
{
	__u32 sport = (svc_flags & HL_SVC_F_AFFINITY) ? 0 : t->sport;

	return hl_jhash_3words(t->saddr, ((__u32)t->dport << 16) | sport, t->proto, CFG_HASH_SEED);
}

/* The backend for the flow: its conntrack entry's while that backend exists (and the flow is
 * not a new SYN on a closing one), else Maglev's, recorded. NULL when there is none. */
static __always_inline struct lb4_backend *hl_ew_select(const struct lb4_service *svc,
							 const struct ct4_key *tuple, __u8 tcp_flags)
{
	struct lb4_backend *be;
	struct ct4_entry *ct = bpf_map_lookup_elem(&hl_ew4_ct, tuple);

	if (ct && ct->svc_id == svc->svc_id &&
	    !((ct->flags & HL_CT_F_CLOSING) &&
	      (tcp_flags & (HL_EW_TCP_SYN | HL_EW_TCP_ACK)) == HL_EW_TCP_SYN)) {
		__u32 id = ct->backend_id;

		be = bpf_map_lookup_elem(&hl_ew4_be, &id);
		if (be && be->addr) {
			/* Aging: a coarse clock, written at most once a second per flow. */
			__u64 now = bpf_ktime_get_coarse_ns();

			if (tcp_flags & (HL_EW_TCP_FIN | HL_EW_TCP_RST)) {
				ct->flags |= HL_CT_F_CLOSING;
				ct->last_seen_ns = now;
			} else if (now - ct->last_seen_ns > 1000000000ULL) {
				ct->last_seen_ns = now;
			}
			hl_ew_count(HL_EW_CT_HIT, 0);
			return be;
		}
	}
	if (svc->backends == 0)
		return NULL;

	__u32 svc_id = svc->svc_id;
	void *inner = bpf_map_lookup_elem(&hl_ew4_maglev, &svc_id);

	if (!inner)
		return NULL;
	__u32 zero = 0;
	__u32 *lut = bpf_map_lookup_elem(inner, &zero);

	if (!lut)
		return NULL;
	__u32 idx = hl_ew_flow_hash(tuple, svc->flags) % HL_MAGLEV_M;
	/* Keep the compiler from dropping the check the verifier needs to bound the read. */
	asm volatile("" : "+r"(idx));
	if (idx >= HL_MAGLEV_M)
		return NULL;
	__u32 id = lut[idx];

	be = bpf_map_lookup_elem(&hl_ew4_be, &id);
	if (!be || !be->addr)
		return NULL;

	__u64 now = bpf_ktime_get_coarse_ns();
	struct ct4_entry entry = {
		.backend_id = id,
		.svc_id = svc->svc_id,
		.created_ns = now,
		.last_seen_ns = now,
		.flags = (tcp_flags & (HL_EW_TCP_FIN | HL_EW_TCP_RST)) ? HL_CT_F_CLOSING : 0,
	};
	bpf_map_update_elem(&hl_ew4_ct, tuple, &entry, BPF_ANY);
	hl_ew_count(HL_EW_CT_NEW, 0);
	return be;
}

/*
 * Replaces one address (at `addr_off`: the source or the destination) and the matching port (at
 * `port_off`) of the TCP/UDP packet, whose old values are `from_*`. The IPv4 header checksum and
 * the L4 checksum (the address is in its pseudo-header: RFC 9293 §3.1, RFC 768) are updated
 * incrementally (RFC 1624) by bpf_l3/l4_csum_replace, which also keep CHECKSUM_PARTIAL skbs
 * (only the pseudo-header sum is in the field) and skb->csum of CHECKSUM_COMPLETE ones right. A
 * UDP checksum of zero (none) stays zero, a computed zero is sent as 0xffff
 * (BPF_F_MARK_MANGLED_0). The L4 checksum goes first: if its field lies past the packet, nothing
 * has changed yet.
 */
static __always_inline int hl_ew_rewrite(struct __sk_buff *skb, __u8 proto, __u32 addr_off,
					 __be32 from_addr, __be32 to_addr, __u32 port_off,
					 __be16 from_port, __be16 to_port)
{
	__u32 csum_off = HL_EW_L4_OFF + 16; /* TCP: checksum at byte 16 */
	__u64 f = 0;

	if (proto == IPPROTO_UDP) {
		csum_off = HL_EW_L4_OFF + 6;
		f = BPF_F_MARK_MANGLED_0;
	}
	if (bpf_l4_csum_replace(skb, csum_off, from_addr, to_addr, f | BPF_F_PSEUDO_HDR | 4) ||
	    bpf_l4_csum_replace(skb, csum_off, from_port, to_port, f | 2) ||
	    bpf_l3_csum_replace(skb, HL_EW_IP_OFF + offsetof(struct iphdr, check), from_addr, to_addr, 4))
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, &to_addr, sizeof(to_addr), 0) ||
	    bpf_skb_store_bytes(skb, port_off, &to_port, sizeof(to_port), 0))
		return -1;
	return 0;
}

/* tc ingress of a pod's host-side veth: packets the pod sends. */
static __always_inline int hl_ew_from_pod(struct __sk_buff *skb)
{
	struct ct4_key t = {};
	__u8 tcp_flags = 0;
	__u32 len = skb->len;

	if (hl_ew_parse(skb, &t, &tcp_flags)) {
		hl_ew_count(HL_EW_PASS_OTHER, len);
		return HL_TCX_NEXT;
	}
	struct lb4_key key = { .vip = t.daddr, .dport = t.dport, .proto = t.proto };
	struct lb4_service *svc = bpf_map_lookup_elem(&hl_ew4_svc, &key);

	if (!svc) {
		hl_ew_count(HL_EW_PASS_NO_SERVICE, len);
		return HL_TCX_NEXT;
	}
	struct lb4_backend *be = hl_ew_select(svc, &t, tcp_flags);

	if (!be) {
		/* No endpoint: nothing can answer (kube-proxy rejects, Cilium drops). */
		hl_ew_count(HL_EW_DROP_NO_BACKEND, len);
		return TC_ACT_SHOT;
	}
	__be32 baddr = be->addr;
	__be16 bport = be->port;
	/* The reply's tuple -> what the client connected to; written only when missing or stale,
	 * so a flow's later packets cost a lookup, not a write. */
	struct ct4_key rk = {
		.saddr = baddr,
		.daddr = t.saddr,
		.sport = bport,
		.dport = t.sport,
		.proto = t.proto,
	};
	struct svc4_rev_value *rv = bpf_map_lookup_elem(&hl_ew4_rev, &rk);

	if (!rv || rv->vip != t.daddr || rv->vport != t.dport) {
		struct svc4_rev_value v = { .vip = t.daddr, .vport = t.dport };

		bpf_map_update_elem(&hl_ew4_rev, &rk, &v, BPF_ANY);
	}
	if (hl_ew_rewrite(skb, t.proto, HL_EW_IP_OFF + offsetof(struct iphdr, daddr), t.daddr, baddr,
			  HL_EW_L4_OFF + 2, t.dport, bport)) {
		hl_ew_count(HL_EW_DROP_REWRITE, len);
		return TC_ACT_SHOT;
	}
	/* The flow hash (VXLAN's and Geneve's outer source port) is recomputed on the new tuple. */
	bpf_set_hash_invalid(skb);
	hl_ew_count(HL_EW_DNAT, len);
	return HL_TCX_NEXT;
}

/* tc egress of a pod's host-side veth: packets to the pod. */
static __always_inline int hl_ew_to_pod(struct __sk_buff *skb)
{
	struct ct4_key t = {};
	__u8 tcp_flags = 0;
	__u32 len = skb->len;

	if (hl_ew_parse(skb, &t, &tcp_flags)) {
		hl_ew_count(HL_EW_PASS_NO_REV, len);
		return HL_TCX_NEXT;
	}
	struct svc4_rev_value *rv = bpf_map_lookup_elem(&hl_ew4_rev, &t);

	if (!rv) {
		hl_ew_count(HL_EW_PASS_NO_REV, len);
		return HL_TCX_NEXT;
	}
	__be32 vip = rv->vip;
	__be16 vport = rv->vport;
	/* Only a reply of a flow conntrack still holds, on this backend: a stale reverse entry
	 * (its flow aged out or moved) must not rewrite a direct pod-to-pod connection. */
	struct ct4_key ck = {
		.saddr = t.daddr,
		.daddr = vip,
		.sport = t.dport,
		.dport = vport,
		.proto = t.proto,
	};
	struct ct4_entry *ct = bpf_map_lookup_elem(&hl_ew4_ct, &ck);

	if (!ct) {
		hl_ew_count(HL_EW_PASS_NO_REV, len);
		return HL_TCX_NEXT;
	}
	__u32 id = ct->backend_id;
	struct lb4_backend *be = bpf_map_lookup_elem(&hl_ew4_be, &id);

	if (!be || be->addr != t.saddr || be->port != t.sport) {
		hl_ew_count(HL_EW_PASS_NO_REV, len);
		return HL_TCX_NEXT;
	}
	if (hl_ew_rewrite(skb, t.proto, HL_EW_IP_OFF + offsetof(struct iphdr, saddr), t.saddr, vip,
			  HL_EW_L4_OFF, t.sport, vport)) {
		hl_ew_count(HL_EW_DROP_REWRITE, len);
		return TC_ACT_SHOT;
	}
	hl_ew_count(HL_EW_REV_NAT, len);
	return HL_TCX_NEXT;
}

#endif
