/* SPDX-License-Identifier: Apache-2.0 */
/*
 * East-west ClusterIP translation at tc (see halyard/svc.h), on the host side of every pod veth:
 * `hl_svc_from_pod` at ingress (traffic from the pod; attached first in the TCX chain, before
 * the overlay's hl_tc_overlay_tx, and always handing the packet on with TCX_NEXT), and
 * `hl_svc_to_pod` at egress (traffic to the pod: backends' replies get the ClusterIP back).
 */
#include "halyard/svc.h"

SEC("classifier")
int hl_svc_from_pod(struct __sk_buff *skb)
{
	return hl_ew_from_pod(skb);
}

SEC("classifier")
int hl_svc_to_pod(struct __sk_buff *skb)
{
	return hl_ew_to_pod(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
