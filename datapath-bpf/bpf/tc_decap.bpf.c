/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Backend side of DSR, at tc ingress of the backend's uplink: strips the IPIP (RFC 2003) or
 * Geneve (RFC 8926, UDP 6081) header the LB node added, so the stack sees the client's packet to
 * the service address (which the backend holds locally) and answers the client directly.
 * This kernel has neither the ipip nor the geneve module, so decapsulation happens here.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "halyard/common.h"
#include "halyard/maps.h"
#include "halyard/encap.h"

SEC("classifier")
int hl_tc_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	int strip;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return TC_ACT_OK;
	if (ip->protocol == IPPROTO_IPIP) {
		strip = sizeof(struct iphdr);
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)(ip + 1);
		struct hl_geneve_hdr *gh = (void *)(udp + 1);

		if ((void *)(gh + 1) > data_end || udp->dest != bpf_htons(HL_GENEVE_PORT))
			return TC_ACT_OK;
		/* Only version 0 with an inner IPv4 packet (RFC 8926 §3.4). */
		if ((gh->ver_optlen >> 6) != 0 || gh->proto != bpf_htons(0x0800))
			return TC_ACT_OK;
		strip = sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct hl_geneve_hdr) +
			(gh->ver_optlen & 0x3f) * 4;
	} else {
		return TC_ACT_OK;
	}
	if (bpf_skb_adjust_room(skb, -strip, BPF_ADJ_ROOM_MAC, 0)) {
		hl_count(HL_CNT_DROP_ENCAP, skb->len);
		return TC_ACT_SHOT;
	}
	hl_count(HL_CNT_DECAP, skb->len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
