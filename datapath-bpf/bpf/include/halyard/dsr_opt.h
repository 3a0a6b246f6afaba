/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DSR dispatch by IPv4 option (HL_MODE_DSR_OPT, `--dsr-dispatch opt`); for IPv6 services by
 * Cilium's Destination Options extension header (at the end of this file).
 *
 *  LB node: | IPv4 (ihl 7) client -> backend | DSR option (8) | TCP/UDP :backend port ... |
 *  backend: | IPv4 (ihl 5) client -> VIP     | TCP/UDP :service port ...                  |
 *
 * The option bytes are Cilium's (bpf/lib/common.h: DSR_IPV4_OPT_TYPE, struct dsr_opt_v4): type
 * IPOPT_COPY | 0x1a = 0x9a, length 8, then the service port (be16) and the service address (be32).
 * The LB node DNATs the packet to the backend's address and port (the backend entry's), puts the
 * option right after the 20-byte IPv4 header (ihl 5 -> 7, tot_len + 8, header checksum over the 28
 * bytes; the L4 checksum covers no IP option, so only the DNAT changes it), and forwards it as in
 * the IPIP mode. The backend (tc_decap) puts the service address and port back from the option and
 * removes it, so its stack sees the client's packet to VIP:port (the VIP held locally, as for
 * IPIP) and answers the client directly from the VIP.
 *
 * Where Halyard differs from Cilium: Cilium adds the option to TCP SYNs only (and to every UDP
 * packet) and keeps per-flow state on the backend to translate the replies. Here EVERY packet of
 * a flow, TCP and UDP, carries it, so the backend stays stateless: it needs no conntrack, survives
 * restarts and flows that move between LB nodes, and a reply is a plain socket reply. The cost is
 * 8 bytes on every packet instead of on the SYN only.
 *
 * Packets that arrive at the LB with IP options of their own are still passed to the stack
 * (parse.h), and the backend handles only an unfragmented TCP/UDP packet whose header is exactly
 * the 20 bytes plus this option: anything else is left to the stack untouched.
 */
#ifndef HALYARD_DSR_OPT_H
#define HALYARD_DSR_OPT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "csum.h"
#include "parse.h"

/* The IPv4 header with the option, as the LB node sends it. */
struct hl_ipv4_dsr {
	struct iphdr ip;
	struct hl_dsr_opt4 opt;
};

#define HL_DSR_OPT_IHL (sizeof(struct hl_ipv4_dsr) / 4)

/* Fills `out` with the 20-byte header `ip` (already DNATed, no options) grown by the option for
 * vip:vport, with its header checksum. */
static __always_inline void hl_dsr_opt4_build(struct hl_ipv4_dsr *out, const struct iphdr *ip,
					      __be32 vip, __be16 vport)
{
	out->ip = *ip;
	out->ip.ihl = HL_DSR_OPT_IHL;
	out->ip.tot_len = bpf_htons(bpf_ntohs(ip->tot_len) + HL_DSR_IPV4_OPT_LEN);
	out->ip.check = 0;
	out->opt.type = HL_DSR_IPV4_OPT_TYPE;
	out->opt.len = HL_DSR_IPV4_OPT_LEN;
	out->opt.port = vport;
	out->opt.addr = vip;
	out->ip.check = hl_ipv4_csum_words(out, sizeof(*out) / 2);
}

/* Whether the header at `h` (28 bytes readable) is an IPv4 header carrying exactly our option, on
 * an unfragmented TCP or UDP packet. Fragments are the stack's: only the first has the ports. */
static __always_inline int hl_is_dsr_opt4(const struct hl_ipv4_dsr *h)
{
	return h->ip.version == 4 && h->ip.ihl == HL_DSR_OPT_IHL && h->opt.type == HL_DSR_IPV4_OPT_TYPE &&
	       h->opt.len == HL_DSR_IPV4_OPT_LEN && !(h->ip.frag_off & bpf_htons(0x3fff)) &&
	       (h->ip.protocol == IPPROTO_TCP || h->ip.protocol == IPPROTO_UDP);
}

/* The 20-byte header the backend's stack must see: destination back to the VIP, no option. */
static __always_inline void hl_dsr_opt4_strip(struct iphdr *out, const struct hl_ipv4_dsr *h)
{
	*out = h->ip;
	out->ihl = 5;
	out->tot_len = bpf_htons(bpf_ntohs(h->ip.tot_len) - HL_DSR_IPV4_OPT_LEN);
	out->daddr = h->opt.addr;
	out->check = 0;
	out->check = hl_ipv4_csum(out);
}

/*
 * Pointer variant (XDP; the benchmark entry undoes the LB's work with it): restores the L4
 * destination port and checksum in place after the 28-byte header at `h`, and fills `out` with the
 * header to write once the option is gone. Returns -1 (nothing changed) when it is not ours.
 */
static __always_inline int hl_dsr_opt4_restore(struct hl_ipv4_dsr *h, void *data_end,
					       struct iphdr *out)
{
	struct hl_ports *ports = (void *)(h + 1);
	__u16 *l4csum;

	if ((void *)(h + 1) > data_end || !hl_is_dsr_opt4(h))
		return -1;
	if (h->ip.protocol == IPPROTO_TCP) {
		if ((void *)(h + 1) + 18 > data_end)
			return -1;
		l4csum = (void *)(h + 1) + 16;
	} else {
		if ((void *)(h + 1) + 8 > data_end)
			return -1;
		l4csum = (void *)(h + 1) + 6;
		if (*l4csum == 0) /* no UDP checksum: stays none */
			l4csum = NULL;
	}
	if (l4csum) {
		__u16 c = *l4csum;

		c = hl_csum_replace4(c, h->ip.daddr, h->opt.addr);
		c = hl_csum_replace2(c, ports->dest, h->opt.port);
		if (h->ip.protocol == IPPROTO_UDP && c == 0)
			c = 0xffff; /* RFC 768 */
		*l4csum = c;
	}
	ports->dest = h->opt.port;
	hl_dsr_opt4_strip(out, h);
	return 0;
}

/*
 * tc, LB node: adds the option to the (already DNATed) packet after the Ethernet header. The
 * headers need not be in the linear part. bpf_skb_adjust_room at BPF_ADJ_ROOM_NET opens the room
 * right after the fixed 20-byte IPv4 header (zeroed, GSO size reduced to match), and the header is
 * written back whole with BPF_F_RECOMPUTE_CSUM, so a CHECKSUM_COMPLETE skb->csum stays right.
 * Invalidates direct packet pointers.
 */
static __always_inline int hl_skb_dsr_opt4_insert(struct __sk_buff *skb, __be32 vip, __be16 vport)
{
	const __u32 ip_off = sizeof(struct ethhdr);
	struct hl_ipv4_dsr h;
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, ip_off, &ip, sizeof(ip)))
		return -1;
	hl_dsr_opt4_build(&h, &ip, vip, vport);
	if (bpf_skb_adjust_room(skb, HL_DSR_IPV4_OPT_LEN, BPF_ADJ_ROOM_NET, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, ip_off, &h, sizeof(h), BPF_F_RECOMPUTE_CSUM))
		return -1;
	return 0;
}

enum hl_dsr_opt_rc {
	HL_DSR_OPT_NONE = 0, /* not a DSR-option packet (or too short): untouched */
	HL_DSR_OPT_RESTORED, /* client -> VIP:port again, option removed */
	HL_DSR_OPT_FAILED,   /* partly rewritten: drop it */
};

/*
 * tc, backend side (tc_decap, and the tc benchmark entry): puts the service address and port back
 * from the option and removes it. The L4 checksum goes through bpf_l4_csum_replace (the address
 * with BPF_F_PSEUDO_HDR, UDP with BPF_F_MARK_MANGLED_0), so CHECKSUM_PARTIAL and COMPLETE skbs stay
 * right. bpf_skb_adjust_room(-8, BPF_ADJ_ROOM_NET) removes the 8 bytes after the fixed IPv4 header
 * (the kernel moves the Ethernet and IPv4 headers up and takes the removed bytes out of a
 * CHECKSUM_COMPLETE sum); the 20-byte header is then written back whole (ihl 5, tot_len - 8, the
 * VIP, a fresh checksum) with BPF_F_RECOMPUTE_CSUM. Invalidates direct packet pointers.
 */
static __always_inline enum hl_dsr_opt_rc hl_skb_dsr_opt4_restore(struct __sk_buff *skb)
{
	const __u32 ip_off = sizeof(struct ethhdr);
	const __u32 l4_off = ip_off + sizeof(struct hl_ipv4_dsr);
	struct hl_ipv4_dsr h;
	struct hl_ports ports;
	struct iphdr ip;
	__u32 csum_off;
	__u64 f = 0;

	if (bpf_skb_load_bytes(skb, ip_off, &h, sizeof(h)) || !hl_is_dsr_opt4(&h))
		return HL_DSR_OPT_NONE;
	if (h.ip.protocol == IPPROTO_TCP) {
		csum_off = l4_off + 16;
	} else {
		csum_off = l4_off + 6;
		f = BPF_F_MARK_MANGLED_0;
	}
	if (bpf_skb_load_bytes(skb, l4_off, &ports, sizeof(ports)))
		return HL_DSR_OPT_NONE;
	/* The L4 checksum first: if its field lies past the packet, nothing has changed yet. */
	if (bpf_l4_csum_replace(skb, csum_off, h.ip.daddr, h.opt.addr, f | BPF_F_PSEUDO_HDR | 4))
		return HL_DSR_OPT_NONE;
	if (bpf_l4_csum_replace(skb, csum_off, ports.dest, h.opt.port, f | 2) ||
	    bpf_skb_store_bytes(skb, l4_off + offsetof(struct hl_ports, dest), &h.opt.port,
				sizeof(h.opt.port), 0))
		return HL_DSR_OPT_FAILED;
	if (bpf_skb_adjust_room(skb, -HL_DSR_IPV4_OPT_LEN, BPF_ADJ_ROOM_NET, 0))
		return HL_DSR_OPT_FAILED;
	hl_dsr_opt4_strip(&ip, &h);
	if (bpf_skb_store_bytes(skb, ip_off, &ip, sizeof(ip), BPF_F_RECOMPUTE_CSUM))
		return HL_DSR_OPT_FAILED;
	return HL_DSR_OPT_RESTORED;
}

/* ===== IPv6: Cilium's DSR extension header (struct hl_dsr_opt6, common.h) =====
 *
 *  LB node: | IPv6 client -> backend, nexthdr 60 | Dest. Options (24) | TCP/UDP :backend port |
 *  backend: | IPv6 client -> VIP, nexthdr TCP/UDP                      | TCP/UDP :service port |
 *
 * The LB node DNATs the packet (hl_rewrite6 / hl_rewrite6_skb: the checksum follows the new
 * destination and port) and inserts Cilium's Destination Options header right after the fixed
 * IPv6 header: next header = the upper layer's, hdrlen 2, then the option (type 0x1B, data length
 * 20: service address, service port, 2 bytes of padding), so the IPv6 header gets next header 60
 * and payload_len + 24. The L4 checksum is unchanged by the insertion: its pseudo-header has the
 * final destination and the upper-layer length (RFC 8200 §8.1), neither of which the header
 * changes. Every packet of a flow carries it, as with IPv4 (above), so the backend stays
 * stateless: its tc_decap takes a packet whose only extension header is exactly this one, puts the
 * service address and port back and removes it. Anything else is left to the stack.
 */

/* The IPv6 header with the extension header, as the LB node sends it. */
struct hl_ipv6_dsr {
	struct ipv6hdr ip;
	struct hl_dsr_opt6 opt;
};

#define HL_IPV6_NEXTHDR_DSTOPTS 60

/* Fills `out` with the (DNATed) header `ip` followed by Cilium's option for vip:vport. */
static __always_inline void hl_dsr_opt6_build(struct hl_ipv6_dsr *out, const struct ipv6hdr *ip,
					      const __be32 *vip, __be16 vport)
{
	out->ip = *ip;
	out->ip.payload_len = bpf_htons(bpf_ntohs(ip->payload_len) + HL_DSR_IPV6_EXT_LEN);
	out->ip.nexthdr = HL_IPV6_NEXTHDR_DSTOPTS;
	out->opt.nexthdr = ip->nexthdr;
	out->opt.hdrlen = (HL_DSR_IPV6_EXT_LEN - 8) / 8;
	out->opt.opt_type = HL_DSR_IPV6_OPT_TYPE;
	out->opt.opt_len = HL_DSR_IPV6_OPT_LEN;
	hl_ip6_copy(out->opt.addr, vip);
	out->opt.port = vport;
	out->opt.pad = 0;
}

/* Whether `h` (64 bytes readable) is an IPv6 header followed by exactly our extension header,
 * then TCP or UDP. */
static __always_inline int hl_is_dsr_opt6(const struct hl_ipv6_dsr *h)
{
	return h->ip.version == 6 && h->ip.nexthdr == HL_IPV6_NEXTHDR_DSTOPTS &&
	       h->opt.hdrlen == (HL_DSR_IPV6_EXT_LEN - 8) / 8 &&
	       h->opt.opt_type == HL_DSR_IPV6_OPT_TYPE &&
	       h->opt.opt_len == HL_DSR_IPV6_OPT_LEN &&
	       (h->opt.nexthdr == IPPROTO_TCP || h->opt.nexthdr == IPPROTO_UDP) &&
	       bpf_ntohs(h->ip.payload_len) >= HL_DSR_IPV6_EXT_LEN;
}

/* The 40-byte header the backend's stack must see: destination back to the VIP, no extension. */
static __always_inline void hl_dsr_opt6_strip(struct ipv6hdr *out, const struct hl_ipv6_dsr *h)
{
	*out = h->ip;
	out->payload_len = bpf_htons(bpf_ntohs(h->ip.payload_len) - HL_DSR_IPV6_EXT_LEN);
	out->nexthdr = h->opt.nexthdr;
	hl_ip6_copy((__be32 *)&out->daddr, h->opt.addr);
}

/*
 * tc, LB node: adds the extension header to the (already DNATed) packet. bpf_skb_adjust_room at
 * BPF_ADJ_ROOM_NET opens the room right after the fixed 40-byte IPv6 header (GSO size reduced to
 * match); the IPv6 header and the extension header are then written whole with
 * BPF_F_RECOMPUTE_CSUM. Invalidates direct packet pointers. A BPF-to-BPF call: its 104 bytes of
 * headers stay out of the caller's frame (lb.h: hl_lb6_decide).
 */
static __attribute__((noinline, unused)) int
hl_skb_dsr_opt6_insert(struct __sk_buff *skb, const __be32 *vip, __be16 vport)
{
	const __u32 ip_off = sizeof(struct ethhdr);
	struct hl_ipv6_dsr h;
	struct ipv6hdr ip;

	if (bpf_skb_load_bytes(skb, ip_off, &ip, sizeof(ip)))
		return -1;
	hl_dsr_opt6_build(&h, &ip, vip, vport);
	if (bpf_skb_adjust_room(skb, HL_DSR_IPV6_EXT_LEN, BPF_ADJ_ROOM_NET, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, ip_off, &h, sizeof(h), BPF_F_RECOMPUTE_CSUM))
		return -1;
	return 0;
}

/*
 * tc, backend side (tc_decap): puts the service address and port back from the extension header
 * and removes it. The address goes into the L4 checksum as a bpf_csum_diff (BPF_F_PSEUDO_HDR),
 * the port as a 16-bit replacement (UDP with BPF_F_MARK_MANGLED_0), so CHECKSUM_PARTIAL and
 * COMPLETE skbs stay right; bpf_skb_adjust_room(-24, BPF_ADJ_ROOM_NET) removes the 24 bytes after
 * the fixed header and the 40-byte header is written back (next header TCP/UDP, payload_len - 24,
 * the VIP) with BPF_F_RECOMPUTE_CSUM. Invalidates direct packet pointers.
 */
static __always_inline enum hl_dsr_opt_rc hl_skb_dsr_opt6_restore(struct __sk_buff *skb)
{
	const __u32 ip_off = sizeof(struct ethhdr);
	const __u32 l4_off = ip_off + sizeof(struct hl_ipv6_dsr);
	struct hl_ipv6_dsr h;
	struct hl_ports ports;
	struct ipv6hdr ip;
	__u32 csum_off;
	__u64 f = 0;

	if (bpf_skb_load_bytes(skb, ip_off, &h, sizeof(h)) || !hl_is_dsr_opt6(&h))
		return HL_DSR_OPT_NONE;
	if (h.opt.nexthdr == IPPROTO_TCP) {
		csum_off = l4_off + 16;
	} else {
		csum_off = l4_off + 6;
		f = BPF_F_MARK_MANGLED_0;
	}
	if (bpf_skb_load_bytes(skb, l4_off, &ports, sizeof(ports)))
		return HL_DSR_OPT_NONE;
	__s64 diff = bpf_csum_diff((__be32 *)&h.ip.daddr, 16, h.opt.addr, 16, 0);
	if (diff < 0)
		return HL_DSR_OPT_NONE;
	/* The L4 checksum first: if its field lies past the packet, nothing has changed yet. */
	if (bpf_l4_csum_replace(skb, csum_off, 0, diff, f | BPF_F_PSEUDO_HDR))
		return HL_DSR_OPT_NONE;
	if (bpf_l4_csum_replace(skb, csum_off, ports.dest, h.opt.port, f | 2) ||
	    bpf_skb_store_bytes(skb, l4_off + offsetof(struct hl_ports, dest), &h.opt.port,
				sizeof(h.opt.port), 0))
		return HL_DSR_OPT_FAILED;
	if (bpf_skb_adjust_room(skb, -HL_DSR_IPV6_EXT_LEN, BPF_ADJ_ROOM_NET, 0))
		return HL_DSR_OPT_FAILED;
	hl_dsr_opt6_strip(&ip, &h);
	if (bpf_skb_store_bytes(skb, ip_off, &ip, sizeof(ip), BPF_F_RECOMPUTE_CSUM))
		return HL_DSR_OPT_FAILED;
	return HL_DSR_OPT_RESTORED;
}

#endif
