/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Traffic generator for the veth benchmark, run with BPF_PROG_TEST_RUN in live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES): each run stamps a 64-byte TCP SYN from a load-time template onto
 * the frame and sends it out of the ingress veth with XDP_TX. The whole header is rewritten every
 * time because live-frames recycles pages without re-initialising them, and the device under test
 * rewrites headers in place. The source port walks 16384 values, so flows repeat (conntrack hits).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

volatile const __u64 GEN_TEMPLATE[8] = {};
__u32 gen_seq = 0;

SEC("xdp")
int hl_xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *w = data;

	if (data + 64 > data_end)
		return XDP_ABORTED;
#pragma unroll
	for (int i = 0; i < 8; i++)
		w[i] = GEN_TEMPLATE[i];
	__u16 sport = 1024 + (gen_seq++ & 0x3fff);
	*(__be16 *)(data + 34) = bpf_htons(sport);
	return XDP_TX;
}

/* The floor of the veth benchmark: the device under test only drops. */
SEC("xdp")
int hl_xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
