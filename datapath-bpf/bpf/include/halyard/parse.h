/* SPDX-License-Identifier: Apache-2.0 */
/* Header parsing shared by the entry points: Ethernet -> IPv4 -> TCP/UDP ports. */
#ifndef HALYARD_PARSE_H
#define HALYARD_PARSE_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "common.h"

struct hl_ports {
	__be16 source;
	__be16 dest;
};

/* TCP flags (RFC 9293 §3.1), byte 13 of the TCP header. */
#define HL_TCP_FIN 0x01
#define HL_TCP_SYN 0x02
#define HL_TCP_RST 0x04
#define HL_TCP_ACK 0x10

enum hl_parse {
	HL_PARSE_OK = 0,
	HL_PARSE_NOT_IPV4,
	HL_PARSE_MALFORMED,
	HL_PARSE_OPTIONS,
	HL_PARSE_FRAGMENT,
	HL_PARSE_NOT_L4, /* IPv4 but neither TCP nor UDP: never a service */
};

/* Fills `t` with the flow tuple; `ip_out` points at the IPv4 header. */
static __always_inline enum hl_parse hl_parse_ipv4(void *data, void *data_end, struct ct4_key *t,
						   struct iphdr **ip_out, __u8 *tcp_flags)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct hl_ports *ports = (void *)(ip + 1);

	if ((void *)(eth + 1) > data_end)
		return HL_PARSE_MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return HL_PARSE_NOT_IPV4;
	if ((void *)(ip + 1) > data_end)
		return HL_PARSE_MALFORMED;
	if (ip->ihl != 5)
		return ip->ihl < 5 ? HL_PARSE_MALFORMED : HL_PARSE_OPTIONS;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return HL_PARSE_NOT_L4;
	/* More-fragments or a non-zero offset: only the first fragment has ports. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return HL_PARSE_FRAGMENT;
	if ((void *)(ports + 1) > data_end)
		return HL_PARSE_MALFORMED;
	*tcp_flags = 0;
	if (ip->protocol == IPPROTO_TCP) {
		__u8 *flags = (void *)(ip + 1) + 13;

		if ((void *)(flags + 1) > data_end)
			return HL_PARSE_MALFORMED;
		*tcp_flags = *flags;
	}
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->sport = ports->source;
	t->dport = ports->dest;
	t->proto = ip->protocol;
	t->pad[0] = t->pad[1] = t->pad[2] = 0;
	*ip_out = ip;
	return HL_PARSE_OK;
}

#endif
