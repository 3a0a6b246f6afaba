/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Backend side of DSR, at tc ingress of the backend's uplink: strips the IPIP (RFC 2003) or
 * Geneve (RFC 8926, UDP 6081) header the LB node added, or, for a packet carrying Cilium's IPv4
 * DSR option (ihl 7, first option type 0x9a, length 8), puts the service address and port back
 * from the option and removes it (dsr_opt.h). Either way the stack sees the client's packet to
 * the service address (which the backend holds locally) and answers the client directly.
 * This kernel has neither the ipip nor the geneve module, so decapsulation happens here.
 *
 * IPv6 the same way (hl_tc_decap6): IP6IP6 (RFC 2473; there is no ip6_tunnel module either),
 * Geneve over IPv6 (inner protocol 0x86DD), and Cilium's IPv6 DSR extension header.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "halyard/common.h"
#include "halyard/maps.h"
#include "halyard/encap.h"
#include "halyard/dsr_opt.h"

/* Everything this program reads: Ethernet, IPv4 with the DSR option or IPv6, and a Geneve
 * header or the ports. Pulled into the linear part when the driver left it paged. */
#define HL_DECAP_PULL_LEN 72

/*
 * IPv6: IP6IP6 (next header 41: the outer 40 bytes go), Geneve over IPv6 to port 6081 with an inner
 * IPv6 packet (protocol 0x86DD: outer IPv6, UDP, Geneve and its options go), or Cilium's DSR
 * extension header (dsr_opt.h: VIP and port restored, the header removed). The outer UDP checksum
 * is not checked here (this runs before the UDP layer would), as for IPv4.
 */
static __attribute__((noinline)) int hl_tc_decap6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	int strip;

	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return TC_ACT_OK;
	if (ip6->nexthdr == HL_IPV6_NEXTHDR_DSTOPTS) {
		switch (hl_skb_dsr_opt6_restore(skb)) {
		case HL_DSR_OPT_RESTORED:
			hl_count(HL_CNT_DECAP, skb->len);
			return TC_ACT_OK;
		case HL_DSR_OPT_FAILED:
			hl_count(HL_CNT_DROP_ENCAP, skb->len);
			return TC_ACT_SHOT;
		default:
			return TC_ACT_OK;
		}
	}
	if (ip6->nexthdr == HL_IPV6_NEXTHDR_IPV6) {
		strip = sizeof(struct ipv6hdr);
	} else if (ip6->nexthdr == IPPROTO_UDP) {
		struct udphdr *udp = (void *)(ip6 + 1);
		struct hl_geneve_hdr *gh = (void *)(udp + 1);

		if ((void *)(gh + 1) > data_end || udp->dest != bpf_htons(HL_GENEVE_PORT))
			return TC_ACT_OK;
		if ((gh->ver_optlen >> 6) != 0 || gh->proto != bpf_htons(ETH_P_IPV6))
			return TC_ACT_OK;
		strip = sizeof(struct ipv6hdr) + sizeof(struct udphdr) + sizeof(struct hl_geneve_hdr) +
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

SEC("classifier")
int hl_tc_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	int strip;

	if (data + HL_DECAP_PULL_LEN > data_end && skb->len > (__u32)(data_end - data)) {
		if (bpf_skb_pull_data(skb, skb->len < HL_DECAP_PULL_LEN ? skb->len : HL_DECAP_PULL_LEN))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	eth = data;
	ip = (void *)(eth + 1);
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return hl_tc_decap6(skb);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (ip->ihl == HL_DSR_OPT_IHL) {
		switch (hl_skb_dsr_opt4_restore(skb)) {
		case HL_DSR_OPT_RESTORED:
			hl_count(HL_CNT_DECAP, skb->len);
			return TC_ACT_OK;
		case HL_DSR_OPT_FAILED:
			hl_count(HL_CNT_DROP_ENCAP, skb->len);
			return TC_ACT_SHOT;
		default:
			return TC_ACT_OK;
		}
	}
	if (ip->ihl != 5)
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
