/* SPDX-License-Identifier: Apache-2.0 */
/* Header parsing shared by the entry points: Ethernet -> IPv4 or IPv6 -> TCP/UDP ports. */
#ifndef HALYARD_PARSE_H
#define HALYARD_PARSE_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
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
	HL_PARSE_NOT_IPV4, /* not the family asked for (hl_parse_ipv6: not IPv6 either) */
	HL_PARSE_MALFORMED,
	HL_PARSE_OPTIONS,  /* IPv4 options; IPv6 extension headers */
	HL_PARSE_FRAGMENT, /* IPv4 fragment; IPv6 Fragment header */
	HL_PARSE_NOT_L4,   /* IP but neither TCP nor UDP (ICMP, ICMPv6 and NDP, ...): never a service */
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

/*
 * IPv6 extension headers (RFC 8200 §4, IANA "IPv6 Extension Header Types"): Hop-by-Hop, Routing,
 * Fragment, ESP, AH, Destination Options, Mobility, HIP, Shim6 and the two experimental values.
 * The LB does not walk them: a packet with one goes to the stack (like an IPv4 packet with
 * options), a Fragment header counted as a fragment.
 */
static __always_inline int hl_ipv6_is_ext(__u8 nexthdr)
{
	switch (nexthdr) {
	case 0:   /* Hop-by-Hop Options */
	case 43:  /* Routing */
	case 50:  /* ESP */
	case 51:  /* AH */
	case 60:  /* Destination Options */
	case 135: /* Mobility */
	case 139: /* HIP */
	case 140: /* Shim6 */
	case 253: /* experimentation (RFC 3692) */
	case 254:
		return 1;
	default:
		return 0;
	}
}

#define HL_IPV6_NEXTHDR_FRAGMENT 44

/*
 * The IPv6 counterpart: Ethernet -> fixed IPv6 header whose next header is TCP or UDP -> ports.
 * Everything else is not a service packet: ICMPv6 (NDP included) is HL_PARSE_NOT_L4, an extension
 * header HL_PARSE_OPTIONS (HL_PARSE_FRAGMENT for a Fragment header), and the caller passes them
 * to the stack untouched. Fills `t` and points `ip_out` at the IPv6 header.
 */
static __always_inline enum hl_parse hl_parse_ipv6(void *data, void *data_end, struct ct6_key *t,
						   struct ipv6hdr **ip_out, __u8 *tcp_flags)
{
	struct ethhdr *eth = data;
	struct ipv6hdr *ip = (void *)(eth + 1);
	struct hl_ports *ports = (void *)(ip + 1);
	__u8 nh;

	if ((void *)(eth + 1) > data_end)
		return HL_PARSE_MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IPV6))
		return HL_PARSE_NOT_IPV4;
	if ((void *)(ip + 1) > data_end)
		return HL_PARSE_MALFORMED;
	if (ip->version != 6)
		return HL_PARSE_MALFORMED;
	nh = ip->nexthdr;
	if (nh != IPPROTO_TCP && nh != IPPROTO_UDP) {
		if (nh == HL_IPV6_NEXTHDR_FRAGMENT)
			return HL_PARSE_FRAGMENT;
		return hl_ipv6_is_ext(nh) ? HL_PARSE_OPTIONS : HL_PARSE_NOT_L4;
	}
	if ((void *)(ports + 1) > data_end)
		return HL_PARSE_MALFORMED;
	*tcp_flags = 0;
	if (nh == IPPROTO_TCP) {
		__u8 *flags = (void *)(ip + 1) + 13;

		if ((void *)(flags + 1) > data_end)
			return HL_PARSE_MALFORMED;
		*tcp_flags = *flags;
	}
	__builtin_memcpy(t->saddr, &ip->saddr, sizeof(t->saddr));
	__builtin_memcpy(t->daddr, &ip->daddr, sizeof(t->daddr));
	t->sport = ports->source;
	t->dport = ports->dest;
	t->proto = nh;
	t->pad[0] = t->pad[1] = t->pad[2] = 0;
	*ip_out = ip;
	return HL_PARSE_OK;
}

/* IPv6 addresses as four network-order words. */
static __always_inline int hl_ip6_eq(const __be32 *a, const __be32 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

static __always_inline int hl_ip6_is_zero(const __be32 *a)
{
	return (a[0] | a[1] | a[2] | a[3]) == 0;
}

static __always_inline void hl_ip6_copy(__be32 *dst, const __be32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

#endif
