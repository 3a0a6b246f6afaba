/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pod-to-pod overlay, shared by the tc entry points in tc_overlay.bpf.c.
 *
 *  pod ─veth─▶ tc ingress of the host side (hl_tc_overlay_tx)
 *     destination in a remote pod CIDR (hl_tunnel, LPM)?
 *       VXLAN (RFC 7348):  bpf_skb_set_tunnel_key(remote node, VNI) and redirect to the
 *                          collect-metadata device (`ip link add hl_vxlan type vxlan external
 *                          dstport 8472`); the kernel writes outer IPv4/UDP/VXLAN.
 *       Geneve (RFC 8926): outer IPv4/UDP/Geneve pushed here (this kernel has no geneve module),
 *                          next hop by bpf_fib_lookup, redirect out of the uplink.
 *     otherwise: TC_ACT_OK, the stack handles it.
 *  uplink / hl_vxlan ─▶ tc ingress (hl_tc_overlay_rx)
 *       VXLAN:  the kernel has decapsulated; the inner frame still carries the sending node's
 *               veth MAC, so it is marked PACKET_HOST and the stack routes it to the pod.
 *       Geneve: UDP to CFG_OVL_PORT on this node's address: the outer headers are stripped and
 *               the stack routes the inner packet to the pod (its /32 route on the veth).
 *
 * Like Cilium's tunnel map (now its ipcache's tunnel endpoint), the lookup is one LPM trie from
 * pod CIDR to the node that owns it. The VNI is fixed per cluster (default 2, Cilium's reserved
 * "world" identity): Halyard has no per-pod security identities in the datapath yet.
 */
#ifndef HALYARD_OVERLAY_H
#define HALYARD_OVERLAY_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "config.h"
#include "encap.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Load-time constants of the overlay object (set by the agent, datapath-bpf/src/overlay.rs). */
volatile const __u32 CFG_OVL_MODE = HL_OVL_MODE_VXLAN; /* HL_OVL_MODE_* */
volatile const __u32 CFG_OVL_VNI = 2;                  /* VXLAN/Geneve VNI (24 bits) */
volatile const __u32 CFG_OVL_PORT = 6081;              /* Geneve UDP port (VXLAN: the device's) */
volatile const __u32 CFG_OVL_VXLAN_IFINDEX = 0;        /* the collect-metadata VXLAN device */
volatile const __u32 CFG_OVL_UPLINK_IFINDEX = 0;       /* where Geneve packets leave */

/* Pod CIDR -> node that owns it. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct tunnel4_key);
	__type(value, struct tunnel4_value);
	__uint(max_entries, HL_MAX_TUNNELS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_tunnel SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hl_stat);
	__uint(max_entries, HL_OVL_CNT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_ovl_stats SEC(".maps");

static __always_inline void hl_ovl_count(__u32 idx, __u64 bytes)
{
	struct hl_stat *s = bpf_map_lookup_elem(&hl_ovl_stats, &idx);

	if (s) {
		s->packets += 1;
		s->bytes += bytes;
	}
}

/* The remote node for `daddr`, or NULL (no entry, or this node's own CIDR). */
static __always_inline const struct tunnel4_value *hl_tunnel_lookup(__be32 daddr)
{
	struct tunnel4_key key = { .prefixlen = 32, .addr = daddr };
	const struct tunnel4_value *v = bpf_map_lookup_elem(&hl_tunnel, &key);

	if (!v || (v->flags & HL_TUN_F_LOCAL) || v->remote == 0)
		return NULL;
	return v;
}

/* VXLAN (RFC 7348) through the collect-metadata device: the kernel builds the outer headers. */
static __always_inline int hl_ovl_vxlan(struct __sk_buff *skb, __be32 remote)
{
	struct bpf_tunnel_key key = {};

	key.remote_ipv4 = bpf_ntohl(remote); /* the helper takes host order */
	key.tunnel_id = CFG_OVL_VNI;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX)) {
		hl_ovl_count(HL_OVL_DROP_ENCAP, skb->len);
		return TC_ACT_SHOT;
	}
	hl_ovl_count(HL_OVL_ENCAP_VXLAN, skb->len);
	return bpf_redirect(CFG_OVL_VXLAN_IFINDEX, 0);
}

/* Geneve (RFC 8926) written here: room after the Ethernet header, outer IPv4/UDP/Geneve, MACs of
 * the next hop towards the remote node, out of the uplink. */
static __always_inline int hl_ovl_geneve(struct __sk_buff *skb, __be32 remote)
{
	/* The outer UDP source port spreads flows: the skb's flow hash (computed if missing). */
	__u32 hash = bpf_get_hash_recalc(skb);
	/* ENCAP_L4_UDP marks the skb as UDP-tunnelled, so GSO packets are segmented correctly. */
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP;

	if (bpf_skb_adjust_room(skb, HL_GENEVE_OVL_LEN, BPF_ADJ_ROOM_MAC, flags)) {
		hl_ovl_count(HL_OVL_DROP_ENCAP, skb->len);
		return TC_ACT_SHOT;
	}
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end ||
	    hl_write_geneve_overlay(eth + 1, data_end, remote, CFG_OVL_VNI, CFG_OVL_PORT, hash)) {
		hl_ovl_count(HL_OVL_DROP_ENCAP, skb->len);
		return TC_ACT_SHOT;
	}
	struct bpf_fib_lookup fib = {};

	fib.family = AF_INET;
	fib.ipv4_src = CFG_NODE_IPV4;
	fib.ipv4_dst = remote;
	fib.tot_len = skb->len - sizeof(struct ethhdr);
	/* An output lookup restricted to the uplink, which must forward (the agent turns it on),
	 * else BPF_FIB_LKUP_RET_FWD_DISABLED. */
	fib.ifindex = CFG_OVL_UPLINK_IFINDEX;
	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);

	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		hl_ovl_count(HL_OVL_ENCAP_GENEVE, skb->len);
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* No resolved neighbour yet: let the neighbour subsystem resolve it and fill the MACs. */
		struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = fib.ipv4_dst };

		hl_ovl_count(HL_OVL_ENCAP_NO_NEIGH, skb->len);
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	hl_ovl_count(HL_OVL_DROP_FIB, skb->len);
	return TC_ACT_SHOT;
}

/* Host side of a pod's veth, tc ingress: packets the pod sends. */
static __always_inline int hl_ovl_tx(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4) {
		hl_ovl_count(HL_OVL_PASS_NOT_IPV4, skb->len);
		return TC_ACT_OK;
	}
	const struct tunnel4_value *tun = hl_tunnel_lookup(ip->daddr);

	if (!tun) {
		hl_ovl_count(HL_OVL_PASS_NO_TUNNEL, skb->len);
		return TC_ACT_OK;
	}
	__be32 remote = tun->remote;

	if (CFG_OVL_MODE == HL_OVL_MODE_VXLAN)
		return hl_ovl_vxlan(skb, remote);
	return hl_ovl_geneve(skb, remote);
}

/* Geneve flags byte: O (control packet) and C (critical options present), RFC 8926 §3.4. */
#define HL_GENEVE_F_OAM 0x80
#define HL_GENEVE_F_CRITICAL 0x40

/* tc ingress of the uplink (Geneve) or of hl_vxlan (VXLAN): packets from other nodes. */
static __always_inline int hl_ovl_rx(struct __sk_buff *skb)
{
	if (CFG_OVL_MODE == HL_OVL_MODE_VXLAN) {
		/* Decapsulated by the kernel. The inner destination MAC is the sending pod's gateway on
		 * the other node, so the frame is PACKET_OTHERHOST here and ip_rcv would drop it. */
		if (skb->protocol == bpf_htons(ETH_P_IP) && skb->pkt_type == PACKET_OTHERHOST) {
			bpf_skb_change_type(skb, PACKET_HOST);
			hl_ovl_count(HL_OVL_RX_VXLAN, skb->len);
		}
		return TC_ACT_OK;
	}
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	struct hl_geneve_hdr *gh = (void *)(udp + 1);

	if ((void *)(gh + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP || ip->daddr != CFG_NODE_IPV4 ||
	    udp->dest != bpf_htons(CFG_OVL_PORT))
		return TC_ACT_OK;
	/* Ours only: version 0, inner IPv4, this cluster's VNI; control packets go to the stack. */
	if ((gh->ver_optlen >> 6) != 0 || gh->proto != bpf_htons(0x0800) || (gh->flags & HL_GENEVE_F_OAM))
		return TC_ACT_OK;
	__u32 vni = ((__u32)gh->vni[0] << 16) | ((__u32)gh->vni[1] << 8) | gh->vni[2];

	if (vni != CFG_OVL_VNI)
		return TC_ACT_OK;
	/* We understand no options: a packet with critical ones must be dropped (RFC 8926 §3.5). */
	if (gh->flags & HL_GENEVE_F_CRITICAL) {
		hl_ovl_count(HL_OVL_DROP_CRITICAL, skb->len);
		return TC_ACT_SHOT;
	}
	int strip = HL_GENEVE_OVL_LEN + (gh->ver_optlen & 0x3f) * 4;

	if (bpf_skb_adjust_room(skb, -strip, BPF_ADJ_ROOM_MAC, 0)) {
		hl_ovl_count(HL_OVL_DROP_ENCAP, skb->len);
		return TC_ACT_SHOT;
	}
	hl_ovl_count(HL_OVL_DECAP_GENEVE, skb->len);
	return TC_ACT_OK;
}

#endif
