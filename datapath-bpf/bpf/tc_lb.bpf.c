/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The same north-south load balancer at tc ingress, for devices without native XDP and for the
 * XDP-vs-tc comparison in the benchmark. The decision (parse, service, conntrack, Maglev, SNAT
 * ports and reverse entries) is the shared lb.h and snat.h, on the same pinned maps as XDP; only
 * packet access (making room, rewriting through the skb helpers) and sending differ.
 *
 * Modes as in XDP: DSR (IPIP, Geneve, or the IPv4 option), SNAT (DNAT to the backend and SNAT to
 * this node; the backend's replies are translated back here), and hybrid (the agent gives each
 * service its mode). IPv6 services too (hl_tc_lb6_run: IP6IP6, Geneve over IPv6, the IPv6 DSR
 * extension header, SNAT), with the same bytes as XDP except that a GSO packet's outer Geneve
 * UDP checksum is zero (see there).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "halyard/common.h"
#include "halyard/config.h"
#include "halyard/maps.h"
#include "halyard/lb.h"
#include "halyard/encap.h"
#include "halyard/snat.h"
#include "halyard/dsr_opt.h"

#define AF_INET 2

/* Ethernet + IPv4 without options + a TCP header without options: all the parser reads. */
#define HL_TC_PARSE_LEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + 20)

/* Sends the frame towards `dst`: by the backend's static next hop when it has one, else by the
 * FIB. `be` may be NULL (SNAT replies go to clients). */
static __always_inline int hl_tc_forward_to(struct __sk_buff *skb, const struct lb4_backend *be,
					    __be32 dst)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	if (be && (be->flags & HL_BE_F_STATIC_NH)) {
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, be->nh_mac, ETH_ALEN);
		hl_count(HL_CNT_REDIRECT, skb->len);
		return bpf_redirect(be->nh_ifindex ? be->nh_ifindex : skb->ifindex, 0);
	}
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.ipv4_src = CFG_NODE_IPV4;
	fib.ipv4_dst = dst;
	fib.ifindex = skb->ifindex;
	/* Needs forwarding enabled on the ingress device (the agent turns it on), else FWD_DISABLED. */
	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		hl_count(HL_CNT_REDIRECT, skb->len);
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		hl_count(HL_CNT_PASS_NO_NEIGH, skb->len);
		return TC_ACT_OK;
	}
	hl_count(HL_CNT_DROP_FIB, skb->len);
	return TC_ACT_SHOT;
}

static __always_inline int hl_tc_forward(struct __sk_buff *skb, const struct lb4_backend *be)
{
	return hl_tc_forward_to(skb, be, be->addr);
}

/* ===== IPv6 (hl_lb6_decide; a BPF-to-BPF call, so the IPv4 path's code stays as it was) ===== */

#define AF_INET6 10

/* Ethernet + IPv6 + a TCP header without options: all the IPv6 parser reads. */
#define HL_TC_PARSE6_LEN (sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + 20)

/* hl_tc_forward_to for IPv6. */
static __attribute__((noinline)) int
hl_tc_forward6_to(struct __sk_buff *skb, const struct lb6_backend *be, const __be32 *dst)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	if (be && (be->flags & HL_BE_F_STATIC_NH)) {
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, be->nh_mac, ETH_ALEN);
		hl_count(HL_CNT_REDIRECT, skb->len);
		return bpf_redirect(be->nh_ifindex ? be->nh_ifindex : skb->ifindex, 0);
	}
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET6;
	hl_node_ipv6(fib.ipv6_src);
	hl_ip6_copy(fib.ipv6_dst, dst);
	fib.ifindex = skb->ifindex;
	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		hl_count(HL_CNT_REDIRECT, skb->len);
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		hl_count(HL_CNT_PASS_NO_NEIGH, skb->len);
		return TC_ACT_OK;
	}
	hl_count(HL_CNT_DROP_FIB, skb->len);
	return TC_ACT_SHOT;
}

static __attribute__((noinline)) int hl_tc_lb6_run(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hl_lb6_decision d = {};
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV6;
	__u32 len = skb->len;
	int room;

	if (data + HL_TC_PARSE6_LEN > data_end && len > (__u32)(data_end - data)) {
		if (bpf_skb_pull_data(skb, len < HL_TC_PARSE6_LEN ? len : HL_TC_PARSE6_LEN))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	switch (hl_lb6_decide(data, data_end, len, &d)) {
	case HL_VERDICT_FORWARD:
		break;
	case HL_VERDICT_DROP:
		return TC_ACT_SHOT;
	case HL_VERDICT_SNAT_REPLY:
		if (hl_rewrite6_skb(skb, &d.tuple, d.rev->vip, d.rev->vport, d.rev->client, d.rev->cport))
			return TC_ACT_OK;
		hl_count(HL_CNT_SNAT_REPLY, len);
		return hl_tc_forward6_to(skb, NULL, d.rev->client);
	default:
		return TC_ACT_OK;
	}
	struct lb6_backend *be = d.be;
	const __be32 *backend = be->addr;

	if (!hl_node_ipv6_set())
		goto encap_fail;
	if (d.mode == HL_MODE_SNAT) {
		__be16 nport = 0;
		__be32 node[4];

		switch (hl_snat6_port(&d.tuple, be, d.hash, &nport)) {
		case HL_SNAT_PORT_OK:
			break;
		case HL_SNAT_PORT_NO_FREE:
			hl_count(HL_CNT_DROP_SNAT_PORTS, len);
			return TC_ACT_SHOT;
		default:
			goto encap_fail;
		}
		hl_node_ipv6(node);
		if (hl_rewrite6_skb(skb, &d.tuple, node, nport, backend, be->port))
			goto encap_fail;
		return hl_tc_forward6_to(skb, be, backend);
	}
	if (d.mode == HL_MODE_DSR_OPT) {
		if (hl_rewrite6_skb(skb, &d.tuple, d.tuple.saddr, d.tuple.sport, backend, be->port) ||
		    hl_skb_dsr_opt6_insert(skb, d.tuple.daddr, d.tuple.dport))
			goto encap_fail;
		return hl_tc_forward6_to(skb, be, backend);
	}
	if (d.mode == HL_MODE_DSR_GENEVE) {
		room = HL_GENEVE6_LEN;
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
	} else if (d.mode == HL_MODE_DSR_IPIP) {
		room = HL_IP6IP6_LEN;
	} else {
		goto encap_fail;
	}
	if (bpf_skb_adjust_room(skb, room, BPF_ADJ_ROOM_MAC, flags))
		goto encap_fail;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (d.mode == HL_MODE_DSR_GENEVE) {
		/* A GSO packet is cut into segments after this, each of which would need its own
		 * outer checksum, which the kernel computes only for tunnels it set up itself: GSO
		 * packets go with a zero UDP checksum (RFC 6935, RFC 6936: allowed for tunnels over
		 * IPv6), every other packet (and every XDP one) with the full checksum. */
		if (hl_write_geneve6(data + sizeof(struct ethhdr), data_end, backend, d.tuple.daddr,
				     d.tuple.dport, d.hash, skb->gso_size == 0))
			goto encap_fail;
	} else if (hl_write_ip6ip6(data + sizeof(struct ethhdr), data_end, backend, d.hash)) {
		goto encap_fail;
	}
	return hl_tc_forward6_to(skb, be, backend);

encap_fail:
	hl_count(HL_CNT_DROP_ENCAP, len);
	return TC_ACT_SHOT;
}

static __always_inline int hl_tc_lb_run(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hl_lb_decision d = {};
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4;
	__u32 len = skb->len;
	int room;

	/* Unlike XDP's, an skb's headers may sit partly outside its linear part (paged receive,
	 * GRO): pull what the parser reads (no more than the packet has) when it is not there. */
	if (data + HL_TC_PARSE_LEN > data_end && len > (__u32)(data_end - data)) {
		if (bpf_skb_pull_data(skb, len < HL_TC_PARSE_LEN ? len : HL_TC_PARSE_LEN))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	switch (hl_lb4_decide(data, data_end, len, &d)) {
	case HL_VERDICT_FORWARD:
		break;
	case HL_VERDICT_DROP:
		return TC_ACT_SHOT;
	case HL_VERDICT_SNAT_REPLY:
		/* backend:port -> node:nat_port becomes vip:vport -> client:cport. */
		if (hl_rewrite4_skb(skb, &d.tuple, d.rev.vip, d.rev.vport, d.rev.client, d.rev.cport))
			return TC_ACT_OK;
		hl_count(HL_CNT_SNAT_REPLY, len);
		return hl_tc_forward_to(skb, NULL, d.rev.client);
	case HL_VERDICT_NOT_IPV4:
		return hl_tc_lb6_run(skb);
	default:
		return TC_ACT_OK;
	}
	__be32 backend = d.be->addr;
	if (d.mode == HL_MODE_SNAT) {
		__be16 nport = 0;

		switch (hl_snat_port(&d.tuple, d.be, d.hash, &nport)) {
		case HL_SNAT_PORT_OK:
			break;
		case HL_SNAT_PORT_NO_FREE:
			hl_count(HL_CNT_DROP_SNAT_PORTS, len);
			return TC_ACT_SHOT;
		default:
			goto encap_fail;
		}
		if (hl_rewrite4_skb(skb, &d.tuple, CFG_NODE_IPV4, nport, backend, d.be->port))
			goto encap_fail;
		return hl_tc_forward(skb, d.be);
	}
	if (d.mode == HL_MODE_DSR_OPT) {
		/* DNAT to the backend (the source stays the client's), then the option. */
		if (hl_rewrite4_skb(skb, &d.tuple, d.tuple.saddr, d.tuple.sport, backend, d.be->port) ||
		    hl_skb_dsr_opt4_insert(skb, d.vip, d.vport))
			goto encap_fail;
		return hl_tc_forward(skb, d.be);
	}
	if (d.mode == HL_MODE_DSR_GENEVE) {
		room = HL_GENEVE_LEN;
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
	} else if (d.mode == HL_MODE_DSR_IPIP) {
		room = HL_IPIP_LEN;
	} else {
		goto encap_fail;
	}
	if (bpf_skb_adjust_room(skb, room, BPF_ADJ_ROOM_MAC, flags))
		goto encap_fail;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (d.mode == HL_MODE_DSR_GENEVE) {
		if (hl_write_geneve(data + sizeof(struct ethhdr), data_end, backend, d.vip, d.vport,
				    d.hash))
			goto encap_fail;
	} else if (hl_write_ipip(data + sizeof(struct ethhdr), data_end, backend)) {
		goto encap_fail;
	}
	return hl_tc_forward(skb, d.be);

encap_fail:
	hl_count(HL_CNT_DROP_ENCAP, len);
	return TC_ACT_SHOT;
}

SEC("classifier")
int hl_tc_lb(struct __sk_buff *skb)
{
	return hl_tc_lb_run(skb);
}

/* Benchmark entry (BPF_PROG_TEST_RUN only): the LB, then the encapsulation removed again, so
 * `repeat` measures the hit path each time (as hl_xdp_lb_bench; the DSR option by the backend's
 * own restore). An SNAT rewrite adds nothing and is left as it is. */
SEC("classifier")
int hl_tc_lb_bench(struct __sk_buff *skb)
{
	__u32 before = skb->len;
	int rc = hl_tc_lb_run(skb);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *outer = data + sizeof(struct ethhdr);

	if (rc != TC_ACT_REDIRECT || skb->len == before || (void *)(outer + 1) > data_end ||
	    skb->protocol != bpf_htons(ETH_P_IP)) /* the benchmark is IPv4 */
		return rc;
	if (outer->ihl == HL_DSR_OPT_IHL)
		return hl_skb_dsr_opt4_restore(skb) == HL_DSR_OPT_RESTORED ? rc : TC_ACT_SHOT;
	int len = outer->protocol == IPPROTO_IPIP ? HL_IPIP_LEN : HL_GENEVE_LEN;
	if (bpf_skb_adjust_room(skb, -len, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	return rc;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
