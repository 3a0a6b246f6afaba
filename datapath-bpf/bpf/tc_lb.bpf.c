/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The same north-south load balancer at tc ingress, for devices without native XDP and for the
 * XDP-vs-tc comparison in the benchmark. The decision (parse, service, conntrack, Maglev) is the
 * shared lb.h; only making room and sending differ.
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

#define AF_INET 2

static __always_inline int hl_tc_forward(struct __sk_buff *skb, const struct lb4_backend *be)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	if (be->flags & HL_BE_F_STATIC_NH) {
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, be->nh_mac, ETH_ALEN);
		hl_count(HL_CNT_REDIRECT, skb->len);
		return bpf_redirect(be->nh_ifindex ? be->nh_ifindex : skb->ifindex, 0);
	}
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.ipv4_src = CFG_NODE_IPV4;
	fib.ipv4_dst = be->addr;
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

static __always_inline int hl_tc_lb_run(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hl_lb_decision d = {};
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4;
	int room;

	switch (hl_lb4_decide(data, data_end, skb->len, &d)) {
	case HL_VERDICT_FORWARD:
		break;
	case HL_VERDICT_DROP:
		return TC_ACT_SHOT;
	default:
		return TC_ACT_OK;
	}
	__be32 backend = d.be->addr;
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
	hl_count(HL_CNT_DROP_ENCAP, skb->len);
	return TC_ACT_SHOT;
}

SEC("classifier")
int hl_tc_lb(struct __sk_buff *skb)
{
	return hl_tc_lb_run(skb);
}

/* Benchmark entry (BPF_PROG_TEST_RUN only): the LB, then the encapsulation removed again, so
 * `repeat` measures the hit path each time (as hl_xdp_lb_bench). */
SEC("classifier")
int hl_tc_lb_bench(struct __sk_buff *skb)
{
	int rc = hl_tc_lb_run(skb);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *outer = data + sizeof(struct ethhdr);

	if (rc != TC_ACT_REDIRECT || (void *)(outer + 1) > data_end)
		return rc;
	int len = outer->protocol == IPPROTO_IPIP ? HL_IPIP_LEN : HL_GENEVE_LEN;
	if (bpf_skb_adjust_room(skb, -len, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	return rc;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
