/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Host program run by build.rs: prints the C layout of every map key/value (and of the DSR IPv4
 * option) as a Rust table, which the `layout` test compares with the #[repr(C)] mirrors in
 * src/maps.rs, and the constants the Rust side mirrors (forwarding modes, the option's type).
 */
#include <stddef.h>
#include <stdio.h>
#include "halyard/common.h"

#define STRUCT(s) printf("    (\"%s\", \"\", %zu, %zu),\n", #s, sizeof(struct s), _Alignof(struct s))
#define FIELD(s, f) \
	printf("    (\"%s\", \"%s\", %zu, %zu),\n", #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f))

int main(void)
{
	printf("/// (struct, field, offset or size, size or alignment) as the C compiler lays them out.\n");
	printf("pub const C_LAYOUT: &[(&str, &str, usize, usize)] = &[\n");
	STRUCT(lb4_key);
	FIELD(lb4_key, vip);
	FIELD(lb4_key, dport);
	FIELD(lb4_key, proto);
	STRUCT(lb4_service);
	FIELD(lb4_service, svc_id);
	FIELD(lb4_service, backends);
	FIELD(lb4_service, mode);
	FIELD(lb4_service, flags);
	STRUCT(lb4_backend);
	FIELD(lb4_backend, addr);
	FIELD(lb4_backend, port);
	FIELD(lb4_backend, flags);
	FIELD(lb4_backend, nh_mac);
	FIELD(lb4_backend, nh_ifindex);
	STRUCT(ct4_key);
	FIELD(ct4_key, saddr);
	FIELD(ct4_key, daddr);
	FIELD(ct4_key, sport);
	FIELD(ct4_key, dport);
	FIELD(ct4_key, proto);
	STRUCT(ct4_entry);
	FIELD(ct4_entry, backend_id);
	FIELD(ct4_entry, svc_id);
	FIELD(ct4_entry, created_ns);
	FIELD(ct4_entry, last_seen_ns);
	FIELD(ct4_entry, flags);
	FIELD(ct4_entry, nat_port);
	STRUCT(nat4_rev_key);
	FIELD(nat4_rev_key, backend);
	FIELD(nat4_rev_key, node);
	FIELD(nat4_rev_key, bport);
	FIELD(nat4_rev_key, nport);
	FIELD(nat4_rev_key, proto);
	STRUCT(nat4_rev_val);
	FIELD(nat4_rev_val, client);
	FIELD(nat4_rev_val, vip);
	FIELD(nat4_rev_val, cport);
	FIELD(nat4_rev_val, vport);
	STRUCT(hl_stat);
	FIELD(hl_stat, packets);
	FIELD(hl_stat, bytes);
	STRUCT(tunnel4_key);
	FIELD(tunnel4_key, prefixlen);
	FIELD(tunnel4_key, addr);
	STRUCT(tunnel4_value);
	FIELD(tunnel4_value, remote);
	FIELD(tunnel4_value, flags);
	STRUCT(hl_dsr_opt4);
	FIELD(hl_dsr_opt4, type);
	FIELD(hl_dsr_opt4, len);
	FIELD(hl_dsr_opt4, port);
	FIELD(hl_dsr_opt4, addr);
	STRUCT(svc4_rev_value);
	FIELD(svc4_rev_value, vip);
	FIELD(svc4_rev_value, vport);
	STRUCT(lb6_key);
	FIELD(lb6_key, vip);
	FIELD(lb6_key, dport);
	FIELD(lb6_key, proto);
	STRUCT(lb6_backend);
	FIELD(lb6_backend, addr);
	FIELD(lb6_backend, port);
	FIELD(lb6_backend, flags);
	FIELD(lb6_backend, nh_mac);
	FIELD(lb6_backend, nh_ifindex);
	STRUCT(ct6_key);
	FIELD(ct6_key, saddr);
	FIELD(ct6_key, daddr);
	FIELD(ct6_key, sport);
	FIELD(ct6_key, dport);
	FIELD(ct6_key, proto);
	STRUCT(nat6_rev_key);
	FIELD(nat6_rev_key, backend);
	FIELD(nat6_rev_key, node);
	FIELD(nat6_rev_key, bport);
	FIELD(nat6_rev_key, nport);
	FIELD(nat6_rev_key, proto);
	STRUCT(nat6_rev_val);
	FIELD(nat6_rev_val, client);
	FIELD(nat6_rev_val, vip);
	FIELD(nat6_rev_val, cport);
	FIELD(nat6_rev_val, vport);
	STRUCT(hl_dsr_opt6);
	FIELD(hl_dsr_opt6, nexthdr);
	FIELD(hl_dsr_opt6, hdrlen);
	FIELD(hl_dsr_opt6, opt_type);
	FIELD(hl_dsr_opt6, opt_len);
	FIELD(hl_dsr_opt6, addr);
	FIELD(hl_dsr_opt6, port);
	printf("];\n");
	printf("/// The forwarding modes (`HL_MODE_*`) as the C side numbers them.\n");
	printf("pub const C_MODES: &[(&str, u8)] = &[\n");
	printf("    (\"HL_MODE_DSR_IPIP\", %d),\n", HL_MODE_DSR_IPIP);
	printf("    (\"HL_MODE_DSR_GENEVE\", %d),\n", HL_MODE_DSR_GENEVE);
	printf("    (\"HL_MODE_SNAT\", %d),\n", HL_MODE_SNAT);
	printf("    (\"HL_MODE_DSR_OPT\", %d),\n", HL_MODE_DSR_OPT);
	printf("];\n");
	printf("pub const C_DSR_IPV4_OPT_TYPE: u8 = %d;\n", HL_DSR_IPV4_OPT_TYPE);
	printf("pub const C_DSR_IPV4_OPT_LEN: u8 = %d;\n", HL_DSR_IPV4_OPT_LEN);
	printf("pub const C_DSR_IPV6_OPT_TYPE: u8 = %d;\n", HL_DSR_IPV6_OPT_TYPE);
	printf("pub const C_DSR_IPV6_OPT_LEN: u8 = %d;\n", HL_DSR_IPV6_OPT_LEN);
	printf("pub const C_DSR_IPV6_EXT_LEN: u8 = %d;\n", HL_DSR_IPV6_EXT_LEN);
	printf("pub const C_MAGLEV_M: u32 = %d;\n", HL_MAGLEV_M);
	printf("pub const C_COUNTERS: u32 = %d;\n", HL_CNT_MAX);
	printf("pub const C_OVL_COUNTERS: u32 = %d;\n", HL_OVL_CNT_MAX);
	printf("pub const C_EW_COUNTERS: u32 = %d;\n", HL_EW_CNT_MAX);
	return 0;
}
