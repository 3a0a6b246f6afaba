/* SPDX-License-Identifier: Apache-2.0 */
/*
 * XDP north-south load balancer: service lookup -> conntrack -> Maglev -> DSR dispatch (IPIP,
 * Geneve with Cilium's DSR option, or DNAT plus Cilium's IPv4 DSR option: dsr_opt.h) -> next hop
 * by bpf_fib_lookup (or a static next hop) -> XDP_TX or redirect. Anything that is not a service
 * packet goes to the stack untouched.
 *
 * IPv6 services the same way with IPv6 backends (hl_xdp_lb6_run): IP6IP6 (RFC 2473), Geneve over
 * IPv6 with Cilium's IPv6 DSR option, or DNAT plus Cilium's IPv6 DSR extension header; SNAT to
 * this node's IPv6 address; next hop by bpf_fib_lookup(AF_INET6).
 *
 * Documented non-paths: IPv4 fragments and packets that arrive with IP options are passed to the
 * stack (counted), and so are IPv6 packets with any extension header (a Fragment header counted
 * as a fragment) and ICMPv6, NDP included; as are packets whose next hop has no neighbour entry
 * yet (after encapsulation, so the kernel forwards them and resolves the neighbour for the next
 * ones).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include "halyard/common.h"
#include "halyard/config.h"
#include "halyard/maps.h"
#include "halyard/lb.h"
#include "halyard/encap.h"
#include "halyard/snat.h"
#include "halyard/dsr_opt.h"

#define AF_INET 2

/* Makes `len` bytes of room after the Ethernet header (moving the Ethernet header forward). */
static __always_inline int hl_xdp_push_after_eth(struct xdp_md *ctx, int len)
{
	if (bpf_xdp_adjust_head(ctx, -len))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *neweth = data;
	struct ethhdr *oldeth = data + len;

	if ((void *)(oldeth + 1) > data_end)
		return -1;
	__builtin_memcpy(neweth, oldeth, sizeof(*neweth));
	return 0;
}

/* DSR by IPv4 option: the packet (already DNATed, a 20-byte IPv4 header) gets Cilium's option for
 * vip:vport after its IPv4 header. The Ethernet and IPv4 headers move 8 bytes forward. */
static __always_inline int hl_xdp_insert_dsr_opt(struct xdp_md *ctx, __be32 vip, __be16 vport)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth;
	struct iphdr ip;

	if (data + sizeof(eth) + sizeof(ip) > data_end)
		return -1;
	__builtin_memcpy(&eth, data, sizeof(eth));
	__builtin_memcpy(&ip, data + sizeof(eth), sizeof(ip));
	if (bpf_xdp_adjust_head(ctx, -(int)HL_DSR_IPV4_OPT_LEN))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *neweth = data;
	struct hl_ipv4_dsr *h = (void *)(neweth + 1);

	if ((void *)(h + 1) > data_end)
		return -1;
	__builtin_memcpy(neweth, &eth, sizeof(eth));
	hl_dsr_opt4_build(h, &ip, vip, vport);
	return 0;
}

/* The reverse, for the benchmark entry: what the backend's tc_decap does, in XDP. */
static __always_inline int hl_xdp_remove_dsr_opt(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct hl_ipv4_dsr *h = (void *)(eth + 1);
	struct ethhdr e;
	struct iphdr ip;

	if ((void *)(h + 1) > data_end || hl_dsr_opt4_restore(h, data_end, &ip))
		return -1;
	__builtin_memcpy(&e, eth, sizeof(e));
	if (bpf_xdp_adjust_head(ctx, HL_DSR_IPV4_OPT_LEN))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	struct iphdr *newip = (void *)(eth + 1);

	if ((void *)(newip + 1) > data_end)
		return -1;
	__builtin_memcpy(eth, &e, sizeof(e));
	__builtin_memcpy(newip, &ip, sizeof(ip));
	return 0;
}

/* Sends the frame towards `dst`: by the backend's static next hop when it has one, else by the
 * FIB. `be` may be NULL (SNAT replies go to clients). */
static __always_inline int hl_xdp_forward_to(struct xdp_md *ctx, const struct lb4_backend *be,
					     __be32 dst, __u64 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (be && (be->flags & HL_BE_F_STATIC_NH)) {
		/* The frame was addressed to us: our MAC becomes the source. */
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, be->nh_mac, ETH_ALEN);
		if (be->nh_ifindex == 0 || be->nh_ifindex == ctx->ingress_ifindex) {
			hl_count(HL_CNT_TX, len);
			return XDP_TX;
		}
		hl_count(HL_CNT_REDIRECT, len);
		return bpf_redirect(be->nh_ifindex, 0);
	}

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.ipv4_src = CFG_NODE_IPV4;
	fib.ipv4_dst = dst;
	fib.ifindex = ctx->ingress_ifindex;
	/* Needs forwarding enabled on the ingress device (the agent turns it on), else FWD_DISABLED. */
	int rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		if (fib.ifindex == ctx->ingress_ifindex) {
			hl_count(HL_CNT_TX, len);
			return XDP_TX;
		}
		hl_count(HL_CNT_REDIRECT, len);
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		hl_count(HL_CNT_PASS_NO_NEIGH, len);
		return XDP_PASS;
	}
	hl_count(HL_CNT_DROP_FIB, len);
	return XDP_DROP;
}

static __always_inline int hl_xdp_forward(struct xdp_md *ctx, const struct lb4_backend *be, __u64 len)
{
	return hl_xdp_forward_to(ctx, be, be->addr, len);
}

/* ===== IPv6 (hl_lb6_decide; a BPF-to-BPF call, so the IPv4 path's code stays as it was) ===== */

#define AF_INET6 10

/* hl_xdp_forward_to for IPv6: the static next hop, else bpf_fib_lookup with AF_INET6 (which needs
 * IPv6 forwarding on the ingress device, as the agent sets). */
static __attribute__((noinline)) int
hl_xdp_forward6_to(struct xdp_md *ctx, const struct lb6_backend *be, const __be32 *dst, __u64 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (be && (be->flags & HL_BE_F_STATIC_NH)) {
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, be->nh_mac, ETH_ALEN);
		if (be->nh_ifindex == 0 || be->nh_ifindex == ctx->ingress_ifindex) {
			hl_count(HL_CNT_TX, len);
			return XDP_TX;
		}
		hl_count(HL_CNT_REDIRECT, len);
		return bpf_redirect(be->nh_ifindex, 0);
	}

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET6;
	hl_node_ipv6(fib.ipv6_src);
	hl_ip6_copy(fib.ipv6_dst, dst);
	fib.ifindex = ctx->ingress_ifindex;
	int rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		if (fib.ifindex == ctx->ingress_ifindex) {
			hl_count(HL_CNT_TX, len);
			return XDP_TX;
		}
		hl_count(HL_CNT_REDIRECT, len);
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		hl_count(HL_CNT_PASS_NO_NEIGH, len);
		return XDP_PASS;
	}
	hl_count(HL_CNT_DROP_FIB, len);
	return XDP_DROP;
}

/* IPv6 DSR by extension header: the packet (already DNATed) gets Cilium's Destination Options
 * header after its fixed IPv6 header. The Ethernet and IPv6 headers move 24 bytes forward, in
 * place (ascending 2-byte copies: each source lies above what was written before it). */
static __attribute__((noinline)) int hl_xdp_insert_dsr_opt6(struct xdp_md *ctx, const __be32 *vip,
							    __be16 vport)
{
	if (bpf_xdp_adjust_head(ctx, -(int)HL_DSR_IPV6_EXT_LEN))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct hl_ipv6_dsr *h = (void *)(eth + 1);
	__u16 *w = data;

	if ((void *)(h + 1) > data_end)
		return -1;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(struct ethhdr) + sizeof(struct ipv6hdr)) / 2; i++)
		w[i] = w[i + HL_DSR_IPV6_EXT_LEN / 2];
	h->opt.nexthdr = h->ip.nexthdr;
	h->opt.hdrlen = (HL_DSR_IPV6_EXT_LEN - 8) / 8;
	h->opt.opt_type = HL_DSR_IPV6_OPT_TYPE;
	h->opt.opt_len = HL_DSR_IPV6_OPT_LEN;
	hl_ip6_copy(h->opt.addr, vip);
	h->opt.port = vport;
	h->opt.pad = 0;
	h->ip.nexthdr = HL_IPV6_NEXTHDR_DSTOPTS;
	h->ip.payload_len = bpf_htons(bpf_ntohs(h->ip.payload_len) + HL_DSR_IPV6_EXT_LEN);
	return 0;
}

static __attribute__((noinline)) int hl_xdp_lb6_run(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct hl_lb6_decision d = {};

	switch (hl_lb6_decide(data, data_end, len, &d)) {
	case HL_VERDICT_FORWARD:
		break;
	case HL_VERDICT_DROP:
		return XDP_DROP;
	case HL_VERDICT_SNAT_REPLY: {
		struct ipv6hdr *ip = d.ip;

		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		/* backend:port -> node:nat_port becomes vip:vport -> client:cport. */
		if (hl_rewrite6(ip, data_end, d.rev->vip, d.rev->vport, d.rev->client, d.rev->cport))
			return XDP_PASS;
		hl_count(HL_CNT_SNAT_REPLY, len);
		return hl_xdp_forward6_to(ctx, NULL, d.rev->client, len);
	}
	default:
		return XDP_PASS;
	}

	struct lb6_backend *be = d.be;
	const __be32 *backend = be->addr;

	/* Without an IPv6 address of its own this node can neither encapsulate nor SNAT (the agent
	 * programs no IPv6 frontend then). */
	if (!hl_node_ipv6_set())
		goto encap_fail;
	if (d.mode == HL_MODE_SNAT) {
		struct ct4_entry *ct = bpf_map_lookup_elem(&hl_ct6, &d.tuple);
		struct ipv6hdr *ip = d.ip;
		__be32 node[4];

		if (!ct || (void *)(ip + 1) > data_end)
			goto encap_fail;
		__be16 nport = ct->nat_port;
		if (!nport) {
			nport = hl_snat6_claim(&d.tuple, be, d.hash);
			if (!nport) {
				hl_count(HL_CNT_DROP_SNAT_PORTS, len);
				return XDP_DROP;
			}
			ct->nat_port = nport;
		}
		hl_node_ipv6(node);
		if (hl_rewrite6(ip, data_end, node, nport, backend, be->port))
			goto encap_fail;
		return hl_xdp_forward6_to(ctx, be, backend, len);
	}
	if (d.mode == HL_MODE_DSR_GENEVE) {
		if (hl_xdp_push_after_eth(ctx, HL_GENEVE6_LEN))
			goto encap_fail;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (hl_write_geneve6(data + sizeof(struct ethhdr), data_end, backend, d.tuple.daddr,
				     d.tuple.dport, d.hash, 1))
			goto encap_fail;
	} else if (d.mode == HL_MODE_DSR_IPIP) {
		if (hl_xdp_push_after_eth(ctx, HL_IP6IP6_LEN))
			goto encap_fail;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (hl_write_ip6ip6(data + sizeof(struct ethhdr), data_end, backend, d.hash))
			goto encap_fail;
	} else if (d.mode == HL_MODE_DSR_OPT) {
		struct ipv6hdr *ip = d.ip;

		/* DNAT to the backend's address and port, then the extension header with the
		 * service's. The source stays the client's. */
		if ((void *)(ip + 1) > data_end ||
		    hl_rewrite6(ip, data_end, d.tuple.saddr, d.tuple.sport, backend, be->port) ||
		    hl_xdp_insert_dsr_opt6(ctx, d.tuple.daddr, d.tuple.dport))
			goto encap_fail;
	} else {
		goto encap_fail;
	}
	return hl_xdp_forward6_to(ctx, be, backend, (long)ctx->data_end - (long)ctx->data);

encap_fail:
	hl_count(HL_CNT_DROP_ENCAP, len);
	return XDP_DROP;
}

static __always_inline int hl_xdp_lb_run(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct hl_lb_decision d = {};

	switch (hl_lb4_decide(data, data_end, len, &d)) {
	case HL_VERDICT_FORWARD:
		break;
	case HL_VERDICT_DROP:
		return XDP_DROP;
	case HL_VERDICT_SNAT_REPLY: {
		struct iphdr *ip = d.ip;

		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		/* backend:port -> node:nat_port becomes vip:vport -> client:cport. */
		if (hl_rewrite4(ip, data_end, d.rev.vip, d.rev.vport, d.rev.client, d.rev.cport))
			return XDP_PASS;
		hl_count(HL_CNT_SNAT_REPLY, len);
		return hl_xdp_forward_to(ctx, NULL, d.rev.client, len);
	}
	case HL_VERDICT_NOT_IPV4:
		return hl_xdp_lb6_run(ctx);
	default:
		return XDP_PASS;
	}

	__be32 backend = d.be->addr;
	if (d.mode == HL_MODE_SNAT) {
		struct ct4_entry *ct = bpf_map_lookup_elem(&hl_ct4, &d.tuple);
		struct iphdr *ip = d.ip;

		if (!ct || (void *)(ip + 1) > data_end)
			goto encap_fail;
		__be16 nport = ct->nat_port;
		if (!nport) {
			nport = hl_snat_claim(&d.tuple, d.be, d.hash);
			if (!nport) {
				hl_count(HL_CNT_DROP_SNAT_PORTS, len);
				return XDP_DROP;
			}
			ct->nat_port = nport;
		}
		if (hl_rewrite4(ip, data_end, CFG_NODE_IPV4, nport, backend, d.be->port))
			goto encap_fail;
		return hl_xdp_forward(ctx, d.be, len);
	}
	if (d.mode == HL_MODE_DSR_GENEVE) {
		if (hl_xdp_push_after_eth(ctx, HL_GENEVE_LEN))
			goto encap_fail;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (hl_write_geneve(data + sizeof(struct ethhdr), data_end, backend, d.vip, d.vport,
				    d.hash))
			goto encap_fail;
	} else if (d.mode == HL_MODE_DSR_IPIP) {
		if (hl_xdp_push_after_eth(ctx, HL_IPIP_LEN))
			goto encap_fail;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (hl_write_ipip(data + sizeof(struct ethhdr), data_end, backend))
			goto encap_fail;
	} else if (d.mode == HL_MODE_DSR_OPT) {
		struct iphdr *ip = d.ip;

		/* DNAT to the backend's address and port (checksums updated), then the option with
		 * the service's. The source stays the client's. */
		if ((void *)(ip + 1) > data_end ||
		    hl_rewrite4(ip, data_end, d.tuple.saddr, d.tuple.sport, backend, d.be->port) ||
		    hl_xdp_insert_dsr_opt(ctx, d.vip, d.vport))
			goto encap_fail;
	} else {
		goto encap_fail;
	}
	return hl_xdp_forward(ctx, d.be, (long)ctx->data_end - (long)ctx->data);

encap_fail:
	hl_count(HL_CNT_DROP_ENCAP, len);
	return XDP_DROP;
}

SEC("xdp")
int hl_xdp_lb(struct xdp_md *ctx)
{
	return hl_xdp_lb_run(ctx);
}

/*
 * Benchmark entry (BPF_PROG_TEST_RUN only, never attached): the LB, then the encapsulation undone,
 * so `repeat` re-runs the hit path on the same packet instead of on its own output. Undoing costs
 * an adjust_head and a 14-byte copy (IPIP, Geneve), or the backend's restore in XDP (DSR option:
 * the DNAT reversed, the option removed), which the figures include. An SNAT rewrite is left.
 */
SEC("xdp")
int hl_xdp_lb_bench(struct xdp_md *ctx)
{
	__u64 before = (long)ctx->data_end - (long)ctx->data;
	int rc = hl_xdp_lb_run(ctx);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *outer = (void *)(eth + 1);

	if (rc != XDP_TX || (__u64)(data_end - data) == before || (void *)(outer + 1) > data_end ||
	    eth->h_proto != bpf_htons(ETH_P_IP)) /* the benchmark is IPv4 */
		return rc;
	if (outer->ihl == HL_DSR_OPT_IHL)
		return hl_xdp_remove_dsr_opt(ctx) ? XDP_ABORTED : rc;
	int len = outer->protocol == IPPROTO_IPIP ? HL_IPIP_LEN : HL_GENEVE_LEN;
	struct ethhdr *neweth = data + len;
	if ((void *)(neweth + 1) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(neweth, eth, sizeof(*eth));
	if (bpf_xdp_adjust_head(ctx, len))
		return XDP_ABORTED;
	return rc;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
