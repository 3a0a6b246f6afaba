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
 */
#ifndef HALYARD_ENCAP_H
#define HALYARD_ENCAP_H

#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "config.h"
#include "csum.h"

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
