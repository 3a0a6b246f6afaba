/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pod-to-pod overlay at tc (see halyard/overlay.h): `hl_tc_overlay_tx` on the host side of every
 * pod veth (ingress: traffic from the pod), `hl_tc_overlay_rx` at ingress of the node's uplink
 * (Geneve, decapsulated here) or of the collect-metadata VXLAN device (VXLAN, decapsulated by the
 * kernel). VXLAN is RFC 7348, Geneve RFC 8926.
 */
#include "halyard/overlay.h"

SEC("classifier")
int hl_tc_overlay_tx(struct __sk_buff *skb)
{
	return hl_ovl_tx(skb);
}

SEC("classifier")
int hl_tc_overlay_rx(struct __sk_buff *skb)
{
	return hl_ovl_rx(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
