/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The LB maps. Every map is pinned by name (LIBBPF_PIN_BY_NAME) under the agent's bpffs directory,
 * so the XDP and tc objects share them and they survive agent restarts (established flows keep
 * their conntrack entries and backends).
 */
#ifndef HALYARD_MAPS_H
#define HALYARD_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "common.h"

/* Service frontends: (VIP, port, proto) -> service. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, HL_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_lb4_svc SEC(".maps");

/* Backends by node-local id (small integers, so an array: its lookup is inlined, no hashing). A
 * slot whose address is 0 is empty. An id is never reused while a conntrack entry may refer to
 * it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, HL_MAX_BACKENDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_lb4_be SEC(".maps");

/* Maglev: service id -> one-entry inner array holding the whole table (as Cilium's
 * cilium_lb4_maglev). The agent builds a fresh inner map and swaps it in with one update, so the
 * datapath sees the old table or the new one, never a mix. */
struct hl_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32) * HL_MAGLEV_M);
	__uint(max_entries, 1);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, HL_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct hl_maglev_inner);
} hl_lb4_maglev SEC(".maps");

/* Connection tracking for load-balanced flows: the flow keeps its backend across backend-set
 * changes as long as that backend exists. LRU: idle flows age out under pressure. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct4_entry);
	__uint(max_entries, HL_CT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_ct4 SEC(".maps");

/* SNAT mode: reverse translations, one per translated flow (LRU, like conntrack). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat4_rev_key);
	__type(value, struct nat4_rev_val);
	__uint(max_entries, HL_CT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_nat4_rev SEC(".maps");

/* ===== IPv6 frontends, backends, conntrack and SNAT (Maglev tables: in hl_lb4_maglev) ===== */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb6_key);
	__type(value, struct lb4_service);
	__uint(max_entries, HL_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_lb6_svc SEC(".maps");

/* Indexed by the same ids as hl_lb4_be (one id space); a slot whose address is all zero is
 * empty. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb6_backend);
	__uint(max_entries, HL_MAX_BACKENDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_lb6_be SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct6_key);
	__type(value, struct ct4_entry);
	__uint(max_entries, HL_CT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_ct6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat6_rev_key);
	__type(value, struct nat6_rev_val);
	__uint(max_entries, HL_CT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_nat6_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hl_stat);
	__uint(max_entries, HL_CNT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_stats SEC(".maps");

static __always_inline void hl_count(__u32 idx, __u64 bytes)
{
	struct hl_stat *s = bpf_map_lookup_elem(&hl_stats, &idx);

	if (s) {
		s->packets += 1;
		s->bytes += bytes;
	}
}

#endif
