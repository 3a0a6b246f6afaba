/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Outer headers for DSR dispatch. Both writers fill `len` bytes that the caller has already made
 * room for right after the Ethernet header; they work on plain pointers so XDP and tc share them.
 *
 *  IPIP (RFC 2003):   | outer IPv4 (proto 4) | inner IPv4 ... unchanged |
 *  Geneve (RFC 8926): | outer IPv4 | UDP 6081 | Geneve base (8) | DSR option (4 + 8) | inner IPv4 |
 *
 * The Geneve DSR option is Cilium's (bpf/lib/common.h, struct geneve_dsr_opt4): class 0x014B,
 * type 0x81 (critical bit set), length 2 words, body { be32 service address; be16 service port;
 * u16 pad }. The protocol type is 0x0800: the inner packet is IPv4 with no inner Ethernet header.
 *
 * IPv6 (backends of IPv6 services; the inner packet is the client's IPv6 packet, unchanged):
 *
 *  IP6IP6 (RFC 2473):  | outer IPv6 (next header 41) | inner IPv6 ... unchanged |
 *  Geneve (RFC 8926):  | outer IPv6 (17) | UDP 6081 | Geneve (8) | DSR opt (4 + 20) | inner IPv6 |
 *
 * The IPv6 DSR option is Cilium's struct geneve_dsr_opt6 (bpf/lib/common.h): the same class and
 * type, length 5 words, body { 16-byte service address; be16 service port; u16 pad }; protocol type
 * 0x86DD. The outer header copies the inner traffic class, carries a flow label from the flow hash
 * (RFC 6438: tunnel entry points label flows so the underlay can spread them) and hop limit 64.
 * Over IPv6 the outer UDP checksum is not optional (RFC 8200 §8.1): it is computed without
 * reading the payload (hl_geneve6_csum, the kernel's "local checksum offload" identity).
 */
#ifndef HALYARD_ENCAP_H
#define HALYARD_ENCAP_H

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "config.h"
#include "csum.h"
#include "parse.h"

#define HL_IPIP_LEN (sizeof(struct iphdr))

struct hl_geneve_hdr {
	__u8 ver_optlen; /* version (2 bits) | option length in 4-byte words (6 bits) */
	__u8 flags;      /* O | C | reserved */
	__be16 proto;
	__u8 vni[3];
	__u8 reserved;
};

struct hl_geneve_dsr_opt4 {
	__be16 opt_class;
	__u8 type;
	__u8 length; /* reserved (3 bits) | length in 4-byte words (5 bits), header excluded */
	__be32 addr;
	__be16 port;
	__u16 pad;
};

#define HL_GENEVE_LEN \
	(sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct hl_geneve_hdr) + \
	 sizeof(struct hl_geneve_dsr_opt4))

static __always_inline void hl_write_outer_ip(struct iphdr *outer, const struct iphdr *inner,
					      __u8 proto, __u16 extra, __be32 daddr)
{
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = inner->tos;
	outer->tot_len = bpf_htons(bpf_ntohs(inner->tot_len) + extra);
	outer->id = 0;
	outer->frag_off = bpf_htons(0x4000); /* DF: we never fragment */
	outer->ttl = 64;
	outer->protocol = proto;
	outer->check = 0;
	outer->saddr = CFG_NODE_IPV4;
	outer->daddr = daddr;
	outer->check = hl_ipv4_csum(outer);
}

/* `p` points at the room (HL_GENEVE_LEN bytes) followed by the unchanged inner IPv4 header. */
static __always_inline int hl_write_geneve(void *p, void *data_end, __be32 backend, __be32 vip,
					   __be16 vport, __u32 hash)
{
	struct iphdr *outer = p;
	struct udphdr *udp = (void *)(outer + 1);
	struct hl_geneve_hdr *gh = (void *)(udp + 1);
	struct hl_geneve_dsr_opt4 *opt = (void *)(gh + 1);
	struct iphdr *inner = (void *)(opt + 1);

	if ((void *)(inner + 1) > data_end)
		return -1;
	hl_write_outer_ip(outer, inner, IPPROTO_UDP, HL_GENEVE_LEN, backend);
	/* Source port from the flow hash so receivers spread flows over queues (RFC 8926 §3.3). */
	udp->source = bpf_htons((hash & 0x3fff) | 0xc000);
	udp->dest = bpf_htons(HL_GENEVE_PORT);
	udp->len = bpf_htons(bpf_ntohs(inner->tot_len) + HL_GENEVE_LEN - sizeof(struct iphdr));
	udp->check = 0; /* allowed for IPv4 (RFC 768, RFC 8926 §3.3) */
	gh->ver_optlen = sizeof(struct hl_geneve_dsr_opt4) / 4;
	gh->flags = 0x40; /* C: the packet carries a critical option */
	gh->proto = bpf_htons(0x0800);
	gh->vni[0] = (CFG_GENEVE_VNI >> 16) & 0xff;
	gh->vni[1] = (CFG_GENEVE_VNI >> 8) & 0xff;
	gh->vni[2] = CFG_GENEVE_VNI & 0xff;
	gh->reserved = 0;
	opt->opt_class = bpf_htons(HL_GENEVE_DSR_CLASS);
	opt->type = HL_GENEVE_DSR_TYPE;
	opt->length = (sizeof(struct hl_geneve_dsr_opt4) - 4) / 4;
	opt->addr = vip;
	opt->port = vport;
	opt->pad = 0;
	return 0;
}

static __always_inline int hl_write_ipip(void *p, void *data_end, __be32 backend)
{
	struct iphdr *outer = p;
	struct iphdr *inner = (void *)(outer + 1);

	if ((void *)(inner + 1) > data_end)
		return -1;
	hl_write_outer_ip(outer, inner, IPPROTO_IPIP, HL_IPIP_LEN, backend);
	return 0;
}

/* ===== IPv6 ===== */

#define HL_IPV6_NEXTHDR_IPV6 41 /* IPv6 encapsulated in IPv6 (RFC 2473) */
#define HL_IP6IP6_LEN (sizeof(struct ipv6hdr))

struct hl_geneve_dsr_opt6 {
	__be16 opt_class;
	__u8 type;
	__u8 length; /* reserved (3 bits) | length in 4-byte words (5 bits), header excluded: 5 */
	__be32 addr[4];
	__be16 port;
	__u16 pad;
};

#define HL_GENEVE6_LEN \
	(sizeof(struct ipv6hdr) + sizeof(struct udphdr) + sizeof(struct hl_geneve_hdr) + \
	 sizeof(struct hl_geneve_dsr_opt6))

/* The outer IPv6 header for `inner` (whose payload is TCP/UDP without extension headers):
 * `extra` bytes of outer headers after this one. */
static __always_inline void hl_write_outer_ip6(struct ipv6hdr *outer, const struct ipv6hdr *inner,
					       __u8 nexthdr, __u16 extra, const __be32 *daddr,
					       __u32 hash)
{
	/* version 6 | traffic class (the inner one) | flow label (20 bits of the flow hash) */
	__u32 tclass = (bpf_ntohl(*(const __be32 *)inner) >> 20) & 0xff;
	__be32 *w = (__be32 *)outer;

	w[0] = bpf_htonl((6U << 28) | (tclass << 20) | (hash & 0xfffff));
	outer->payload_len = bpf_htons(bpf_ntohs(inner->payload_len) + sizeof(struct ipv6hdr) + extra);
	outer->nexthdr = nexthdr;
	outer->hop_limit = 64;
	w[2] = CFG_NODE_IPV6[0];
	w[3] = CFG_NODE_IPV6[1];
	w[4] = CFG_NODE_IPV6[2];
	w[5] = CFG_NODE_IPV6[3];
	w[6] = daddr[0];
	w[7] = daddr[1];
	w[8] = daddr[2];
	w[9] = daddr[3];
}

/* `p` points at the room (HL_IP6IP6_LEN bytes) followed by the unchanged inner IPv6 header. */
static __always_inline int hl_write_ip6ip6(void *p, void *data_end, const __be32 *backend,
					   __u32 hash)
{
	struct ipv6hdr *outer = p;
	struct ipv6hdr *inner = (void *)(outer + 1);

	if ((void *)(inner + 1) > data_end)
		return -1;
	hl_write_outer_ip6(outer, inner, HL_IPV6_NEXTHDR_IPV6, 0, backend, hash);
	return 0;
}

/*
 * The outer UDP checksum of a Geneve-over-IPv6 frame, from headers only. The UDP payload is our
 * headers, then the inner IPv6 header, then the inner TCP/UDP segment, whose own checksum makes
 * the segment sum to the complement of the inner pseudo-header's sum (a valid segment sums to
 * 0xffff with its pseudo-header; RFC 1071). So the segment never needs to be read: the sum is
 * pseudo-header(outer) + UDP header + Geneve + option + inner header + ~pseudo-header(inner).
 * That also holds for a CHECKSUM_PARTIAL inner segment (its field holds the pseudo-header sum
 * until the device fills it in), as the kernel's lco_csum() relies on. Every offset from the UDP
 * header is even, so the odd-length rule pads the same byte either way. The sums over packet
 * bytes are bpf_csum_diff's (the kernel's csum_partial). A computed 0 is sent as 0xffff
 * (RFC 8200 §8.1). Returns 0 if a helper fails (the caller then sends no checksum).
 */
static __always_inline __u16 hl_geneve6_csum(struct ipv6hdr *outer, struct udphdr *udp,
					     struct ipv6hdr *inner)
{
	__s64 out, hdrs, in;
	__u64 sum;

	/* outer addresses; UDP, Geneve, option and inner IPv6 header (contiguous); inner addresses */
	out = bpf_csum_diff(NULL, 0, (__be32 *)&outer->saddr, 32, 0);
	hdrs = bpf_csum_diff(NULL, 0, (__be32 *)udp,
			     sizeof(*udp) + sizeof(struct hl_geneve_hdr) +
				     sizeof(struct hl_geneve_dsr_opt6) + sizeof(*inner),
			     0);
	in = bpf_csum_diff(NULL, 0, (__be32 *)&inner->saddr, 32, 0);
	if (out < 0 || hdrs < 0 || in < 0)
		return 0;
	/* the pseudo-headers' length and next-header words */
	sum = (__u64)(__u32)out + (__u32)hdrs + bpf_htonl(bpf_ntohs(udp->len)) + bpf_htonl(IPPROTO_UDP);
	/* inner pseudo-header, complemented: the inner segment's own sum */
	sum += hl_csum_fold((__u64)(__u32)in + bpf_htonl(bpf_ntohs(inner->payload_len)) +
			    bpf_htonl(inner->nexthdr));
	__u16 c = hl_csum_fold(sum);
	return c ? c : 0xffff;
}

/* `p` points at the room (HL_GENEVE6_LEN bytes) followed by the unchanged inner IPv6 header.
 * `csum`: compute the outer UDP checksum (else 0, RFC 6935/6936: the tc path's GSO packets). */
static __always_inline int hl_write_geneve6(void *p, void *data_end, const __be32 *backend,
					    const __be32 *vip, __be16 vport, __u32 hash, int csum)
{
	struct ipv6hdr *outer = p;
	struct udphdr *udp = (void *)(outer + 1);
	struct hl_geneve_hdr *gh = (void *)(udp + 1);
	struct hl_geneve_dsr_opt6 *opt = (void *)(gh + 1);
	struct ipv6hdr *inner = (void *)(opt + 1);

	if ((void *)(inner + 1) > data_end)
		return -1;
	hl_write_outer_ip6(outer, inner, IPPROTO_UDP, HL_GENEVE6_LEN - sizeof(struct ipv6hdr), backend,
			   hash);
	udp->source = bpf_htons((hash & 0x3fff) | 0xc000);
	udp->dest = bpf_htons(HL_GENEVE_PORT);
	udp->len = bpf_htons(bpf_ntohs(inner->payload_len) + sizeof(struct ipv6hdr) + HL_GENEVE6_LEN -
			     sizeof(struct ipv6hdr));
	udp->check = 0;
	gh->ver_optlen = sizeof(struct hl_geneve_dsr_opt6) / 4;
	gh->flags = 0x40; /* C: the packet carries a critical option */
	gh->proto = bpf_htons(ETH_P_IPV6);
	gh->vni[0] = (CFG_GENEVE_VNI >> 16) & 0xff;
	gh->vni[1] = (CFG_GENEVE_VNI >> 8) & 0xff;
	gh->vni[2] = CFG_GENEVE_VNI & 0xff;
	gh->reserved = 0;
	opt->opt_class = bpf_htons(HL_GENEVE_DSR_CLASS);
	opt->type = HL_GENEVE_DSR_TYPE;
	opt->length = (sizeof(struct hl_geneve_dsr_opt6) - 4) / 4;
	hl_ip6_copy(opt->addr, vip);
	opt->port = vport;
	opt->pad = 0;
	if (csum)
		udp->check = hl_geneve6_csum(outer, udp, inner);
	return 0;
}

/*
 * Pod overlay over Geneve (RFC 8926), no options: | outer IPv4 | UDP | Geneve base (8) | inner IPv4 |.
 * The protocol type is 0x0800 (the inner packet is IPv4 without its Ethernet header), the VNI and
 * the UDP port come from the caller. Separate from the DSR writer above, whose critical option
 * and fixed port the DSR golden tests pin down.
 */
#define HL_GENEVE_OVL_LEN (sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct hl_geneve_hdr))

/* `p` points at the room (HL_GENEVE_OVL_LEN bytes) followed by the unchanged inner IPv4 header. */
static __always_inline int hl_write_geneve_overlay(void *p, void *data_end, __be32 remote, __u32 vni,
						   __u16 port, __u32 hash)
{
	struct iphdr *outer = p;
	struct udphdr *udp = (void *)(outer + 1);
	struct hl_geneve_hdr *gh = (void *)(udp + 1);
	struct iphdr *inner = (void *)(gh + 1);

	if ((void *)(inner + 1) > data_end)
		return -1;
	hl_write_outer_ip(outer, inner, IPPROTO_UDP, HL_GENEVE_OVL_LEN, remote);
	/* Source port from the flow hash, so the underlay spreads flows (RFC 8926 §3.3). */
	udp->source = bpf_htons((hash & 0x3fff) | 0xc000);
	udp->dest = bpf_htons(port);
	udp->len = bpf_htons(bpf_ntohs(inner->tot_len) + HL_GENEVE_OVL_LEN - sizeof(struct iphdr));
	udp->check = 0; /* allowed for IPv4 (RFC 768, RFC 8926 §3.3) */
	gh->ver_optlen = 0; /* version 0, no options */
	gh->flags = 0;      /* neither O (control) nor C (critical options) */
	gh->proto = bpf_htons(0x0800);
	gh->vni[0] = (vni >> 16) & 0xff;
	gh->vni[1] = (vni >> 8) & 0xff;
	gh->vni[2] = vni & 0xff;
	gh->reserved = 0;
	return 0;
}

#endif
