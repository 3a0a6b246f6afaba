/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SNAT mode (DSR off): the LB node rewrites the client's packet to go from this node
 * (CFG_NODE_IPV4, a port from HL_SNAT_PORT_MIN..) to the backend (its address and port), so the
 * backend needs nothing special and answers this node; the reply is translated back (from the VIP
 * to the client) here. Addresses and ports change in place: IPv4 header checksum and TCP/UDP
 * checksum are updated incrementally (RFC 1624), the pseudo-header included.
 */
#ifndef HALYARD_SNAT_H
#define HALYARD_SNAT_H

#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "config.h"
#include "csum.h"
#include "maps.h"
#include "parse.h"

/* Rewrites (saddr, sport, daddr, dport) of the IPv4 packet at `ip`. */
static __always_inline int hl_rewrite4(struct iphdr *ip, void *data_end, __be32 saddr, __be16 sport,
				       __be32 daddr, __be16 dport)
{
	struct hl_ports *ports = (void *)(ip + 1);
	__u16 *l4csum = NULL;

	if ((void *)(ports + 1) > data_end)
		return -1;
	if (ip->protocol == IPPROTO_TCP) {
		if ((void *)(ip + 1) + 18 > data_end)
			return -1;
		l4csum = (void *)(ip + 1) + 16;
	} else if (ip->protocol == IPPROTO_UDP) {
		if ((void *)(ip + 1) + 8 > data_end)
			return -1;
		l4csum = (void *)(ip + 1) + 6;
		if (*l4csum == 0) /* no UDP checksum: stays none */
			l4csum = NULL;
	}
	if (l4csum) {
		__u16 c = *l4csum;

		c = hl_csum_replace4(c, ip->saddr, saddr);
		c = hl_csum_replace4(c, ip->daddr, daddr);
		c = hl_csum_replace2(c, ports->source, sport);
		c = hl_csum_replace2(c, ports->dest, dport);
		if (ip->protocol == IPPROTO_UDP && c == 0)
			c = 0xffff; /* RFC 768: a computed zero is sent as all ones */
		*l4csum = c;
	}
	__u16 ic = ip->check;
	ic = hl_csum_replace4(ic, ip->saddr, saddr);
	ic = hl_csum_replace4(ic, ip->daddr, daddr);
	ip->check = ic;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ports->source = sport;
	ports->dest = dport;
	return 0;
}

/* A free SNAT port for the flow (its reverse entry inserted), or 0. Probes a few ports from the
 * flow hash; BPF_NOEXIST makes the claim atomic. */
static __always_inline __be16 hl_snat_claim(const struct ct4_key *t, const struct lb4_backend *be, __u32 hash)
{
	struct nat4_rev_key rk = {
		.backend = be->addr,
		.node = CFG_NODE_IPV4,
		.bport = be->port,
		.proto = t->proto,
	};
	struct nat4_rev_val rv = {
		.client = t->saddr,
		.vip = t->daddr,
		.cport = t->sport,
		.vport = t->dport,
	};

#pragma unroll
	for (int i = 0; i < 8; i++) {
		rk.nport = bpf_htons(HL_SNAT_PORT_MIN + ((hash + i * 7919) % HL_SNAT_PORT_SPAN));
		if (bpf_map_update_elem(&hl_nat4_rev, &rk, &rv, BPF_NOEXIST) == 0)
			return rk.nport;
	}
	return 0;
}

#endif
