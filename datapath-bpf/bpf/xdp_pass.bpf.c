/* SPDX-License-Identifier: Apache-2.0 */
/*
 * XDP_PASS and nothing else. A veth only accepts XDP_TX/redirected frames from its peer when it
 * runs a native XDP program itself, so lab and test topologies attach this to the bridge-side
 * veth of an LB node. Real NICs do not need it.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int hl_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
