/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SNAT mode (DSR off): the LB node rewrites the client's packet to go from this node
 * (CFG_NODE_IPV4, a port from HL_SNAT_PORT_MIN..) to the backend (its address and port), so the
 * backend needs nothing special and answers this node; the reply is translated back (from the VIP
 * to the client) here. Addresses and ports change in place: IPv4 header checksum and TCP/UDP
 * checksum are updated incrementally (RFC 1624), the pseudo-header included.
 *
 * Both hooks share the decisions (hl_snat_port: the flow's port, claimed once from the flow hash
 * and kept in its conntrack entry; the reverse entry in hl_nat4_rev) and differ only in packet
 * access: XDP writes through pointers into linear data (hl_rewrite4), tc goes through the skb
 * helpers (hl_rewrite4_skb), which also keep skb->csum (CHECKSUM_COMPLETE) and offloaded
 * checksums (CHECKSUM_PARTIAL: only the pseudo-header part is in the field) right.
 *
 * IPv6 the same way (CFG_NODE_IPV6, hl_nat6_rev, hl_rewrite6 / hl_rewrite6_skb; no IP header
 * checksum), at the end of this file.
 */
#ifndef HALYARD_SNAT_H
#define HALYARD_SNAT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "config.h"
#include "csum.h"
#include "lb.h"
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

enum hl_snat_port_rc {
	HL_SNAT_PORT_OK = 0,
	HL_SNAT_PORT_NO_CT,   /* the flow has no conntrack entry (evicted between decide and here) */
	HL_SNAT_PORT_NO_FREE, /* every probed port is taken */
};

/* The flow's SNAT port: the one its conntrack entry holds, else a fresh claim (hl_snat_claim),
 * recorded in the entry so the flow keeps it. */
static __always_inline enum hl_snat_port_rc hl_snat_port(const struct ct4_key *t,
							 const struct lb4_backend *be, __u32 hash,
							 __be16 *nport)
{
	struct ct4_entry *ct = bpf_map_lookup_elem(&hl_ct4, t);

	if (!ct)
		return HL_SNAT_PORT_NO_CT;
	__be16 p = ct->nat_port;
	if (!p) {
		p = hl_snat_claim(t, be, hash);
		if (!p)
			return HL_SNAT_PORT_NO_FREE;
		ct->nat_port = p;
	}
	*nport = p;
	return HL_SNAT_PORT_OK;
}

/*
 * tc: rewrites (saddr, sport, daddr, dport) of the IPv4 packet after the Ethernet header (no IP
 * options: the parser passed those), whose current values are `old` (the parsed tuple). The
 * headers need not be in the linear part. Invalidates direct packet pointers. Same result as
 * hl_rewrite4: a UDP checksum of zero stays zero, a computed zero becomes 0xffff.
 */
static __always_inline int hl_rewrite4_skb(struct __sk_buff *skb, const struct ct4_key *old,
					   __be32 saddr, __be16 sport, __be32 daddr, __be16 dport)
{
	const __u32 ip_off = sizeof(struct ethhdr);
	const __u32 l4_off = ip_off + sizeof(struct iphdr);
	__u32 csum_off;
	__u64 f = 0;

	if (old->proto == IPPROTO_TCP) {
		csum_off = l4_off + 16;
	} else if (old->proto == IPPROTO_UDP) {
		csum_off = l4_off + 6;
		f = BPF_F_MARK_MANGLED_0;
	} else {
		return -1;
	}
	/* The L4 checksum first: if its field lies past the packet, nothing has changed yet. The
	 * addresses are in the pseudo-header, the ports are not. */
	if (bpf_l4_csum_replace(skb, csum_off, old->saddr, saddr, f | BPF_F_PSEUDO_HDR | 4) ||
	    bpf_l4_csum_replace(skb, csum_off, old->daddr, daddr, f | BPF_F_PSEUDO_HDR | 4) ||
	    bpf_l4_csum_replace(skb, csum_off, old->sport, sport, f | 2) ||
	    bpf_l4_csum_replace(skb, csum_off, old->dport, dport, f | 2))
		return -1;
	if (bpf_l3_csum_replace(skb, ip_off + offsetof(struct iphdr, check), old->saddr, saddr, 4) ||
	    bpf_l3_csum_replace(skb, ip_off + offsetof(struct iphdr, check), old->daddr, daddr, 4))
		return -1;
	/* saddr and daddr are adjacent, and so are the ports: two stores. */
	__be32 addrs[2] = { saddr, daddr };
	__be16 ports[2] = { sport, dport };

	if (bpf_skb_store_bytes(skb, ip_off + offsetof(struct iphdr, saddr), addrs, sizeof(addrs), 0) ||
	    bpf_skb_store_bytes(skb, l4_off, ports, sizeof(ports), 0))
		return -1;
	return 0;
}

/* ===== IPv6 (CFG_NODE_IPV6; reverse entries in hl_nat6_rev). No IPv4 header checksum: only the
 * TCP/UDP checksum, whose pseudo-header holds both 16-byte addresses (RFC 8200 §8.1). ===== */

/* Rewrites (saddr, sport, daddr, dport) of the IPv6 packet at `ip` (TCP or UDP right after the
 * fixed header, as the parser requires). RFC 1624 incremental update: the address change as one
 * bpf_csum_diff over both addresses (old ones in the packet, new ones gathered here), the ports
 * by hand. A UDP checksum of zero (invalid over IPv6) is left as it is; a computed zero becomes
 * 0xffff. */
static __always_inline int hl_rewrite6(struct ipv6hdr *ip, void *data_end, const __be32 *saddr,
				       __be16 sport, const __be32 *daddr, __be16 dport)
{
	struct hl_ports *ports = (void *)(ip + 1);
	__be32 *addrs = (__be32 *)&ip->saddr; /* saddr, then daddr */
	__u16 *l4csum = NULL;
	__be32 to[8];

	if ((void *)(ports + 1) > data_end)
		return -1;
	if (ip->nexthdr == IPPROTO_TCP) {
		if ((void *)(ip + 1) + 18 > data_end)
			return -1;
		l4csum = (void *)(ip + 1) + 16;
	} else if (ip->nexthdr == IPPROTO_UDP) {
		if ((void *)(ip + 1) + 8 > data_end)
			return -1;
		l4csum = (void *)(ip + 1) + 6;
		if (*l4csum == 0)
			l4csum = NULL;
	} else {
		return -1;
	}
	hl_ip6_copy(to, saddr);
	hl_ip6_copy(to + 4, daddr);
	if (l4csum) {
		__s64 diff = bpf_csum_diff(addrs, sizeof(to), to, sizeof(to), 0);

		if (diff < 0)
			return -1;
		__u64 sum = (__u16)~*l4csum;
		sum += (__u32)diff;
		sum += (__u16)~ports->source + (__u16)sport;
		sum += (__u16)~ports->dest + (__u16)dport;
		__u16 c = hl_csum_fold(sum);
		if (ip->nexthdr == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*l4csum = c;
	}
	__builtin_memcpy(addrs, to, sizeof(to));
	ports->source = sport;
	ports->dest = dport;
	return 0;
}

/* hl_snat_claim for IPv6 flows (a BPF-to-BPF call: its keys stay out of the caller's frame). */
static __attribute__((noinline, unused)) __be16
hl_snat6_claim(const struct ct6_key *t, const struct lb6_backend *be, __u32 hash)
{
	struct nat6_rev_key rk = {
		.bport = be->port,
		.proto = t->proto,
	};
	struct nat6_rev_val rv = {
		.cport = t->sport,
		.vport = t->dport,
	};

	hl_ip6_copy(rk.backend, be->addr);
	hl_node_ipv6(rk.node);
	hl_ip6_copy(rv.client, t->saddr);
	hl_ip6_copy(rv.vip, t->daddr);
#pragma unroll
	for (int i = 0; i < 8; i++) {
		rk.nport = bpf_htons(HL_SNAT_PORT_MIN + ((hash + i * 7919) % HL_SNAT_PORT_SPAN));
		if (bpf_map_update_elem(&hl_nat6_rev, &rk, &rv, BPF_NOEXIST) == 0)
			return rk.nport;
	}
	return 0;
}

/* hl_snat_port for IPv6 flows (the port kept in the flow's hl_ct6 entry). */
static __always_inline enum hl_snat_port_rc hl_snat6_port(const struct ct6_key *t,
							  const struct lb6_backend *be, __u32 hash,
							  __be16 *nport)
{
	struct ct4_entry *ct = bpf_map_lookup_elem(&hl_ct6, t);

	if (!ct)
		return HL_SNAT_PORT_NO_CT;
	__be16 p = ct->nat_port;
	if (!p) {
		p = hl_snat6_claim(t, be, hash);
		if (!p)
			return HL_SNAT_PORT_NO_FREE;
		ct->nat_port = p;
	}
	*nport = p;
	return HL_SNAT_PORT_OK;
}

/*
 * tc: hl_rewrite6 through the skb helpers, for the IPv6 packet after the Ethernet header (TCP or
 * UDP after the fixed header), whose current values are `old`. The address change goes into the
 * L4 checksum as one bpf_csum_diff over both addresses (BPF_F_PSEUDO_HDR), the ports as two 16-bit
 * replacements; UDP with BPF_F_MARK_MANGLED_0 (a zero checksum stays, a computed zero becomes
 * 0xffff), so the bytes equal hl_rewrite6's. Invalidates direct packet pointers.
 */
static __always_inline int hl_rewrite6_skb(struct __sk_buff *skb, const struct ct6_key *old,
					   const __be32 *saddr, __be16 sport, const __be32 *daddr,
					   __be16 dport)
{
	const __u32 ip_off = sizeof(struct ethhdr);
	const __u32 l4_off = ip_off + sizeof(struct ipv6hdr);
	__be32 to[8];
	__u32 csum_off;
	__u64 f = 0;

	if (old->proto == IPPROTO_TCP) {
		csum_off = l4_off + 16;
	} else if (old->proto == IPPROTO_UDP) {
		csum_off = l4_off + 6;
		f = BPF_F_MARK_MANGLED_0;
	} else {
		return -1;
	}
	hl_ip6_copy(to, saddr);
	hl_ip6_copy(to + 4, daddr);
	/* The old addresses are adjacent in the tuple (saddr, daddr), as in the packet. */
	__s64 diff = bpf_csum_diff((__be32 *)old->saddr, sizeof(to), to, sizeof(to), 0);
	if (diff < 0)
		return -1;
	/* The L4 checksum first: if its field lies past the packet, nothing has changed yet. */
	if (bpf_l4_csum_replace(skb, csum_off, 0, diff, f | BPF_F_PSEUDO_HDR) ||
	    bpf_l4_csum_replace(skb, csum_off, old->sport, sport, f | 2) ||
	    bpf_l4_csum_replace(skb, csum_off, old->dport, dport, f | 2))
		return -1;
	__be16 ports[2] = { sport, dport };

	if (bpf_skb_store_bytes(skb, ip_off + offsetof(struct ipv6hdr, saddr), to, sizeof(to), 0) ||
	    bpf_skb_store_bytes(skb, l4_off, ports, sizeof(ports), 0))
		return -1;
	return 0;
}

#endif
