/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Halyard datapath: the structs shared by the BPF programs and the agent.
 *
 * Every struct here has a #[repr(C)] mirror in datapath-bpf/src/maps.rs. The build script compiles
 * bpf/layout.c for the host and the `layout` test compares sizeof/offsetof of each field with the
 * Rust side, so a change on one side only fails the build's tests, never corrupts a map.
 *
 * Byte order: addresses and ports are kept in network byte order (as they sit in the packet), so
 * the hot path never swaps; ids and counters are host order.
 */
#ifndef HALYARD_COMMON_H
#define HALYARD_COMMON_H

#include <linux/types.h>

/* Maglev lookup table size (prime, one of Cilium's sizes). The table is the value of a one-entry
 * inner array, so the verifier needs the bound at compile time; build.rs may override it. */
#ifndef HL_MAGLEV_M
#define HL_MAGLEV_M 16381
#endif

#ifndef HL_MAX_SERVICES
#define HL_MAX_SERVICES 65536
#endif
#ifndef HL_MAX_BACKENDS
#define HL_MAX_BACKENDS 65536
#endif
#ifndef HL_CT_ENTRIES
#define HL_CT_ENTRIES 262144
#endif

/* Service forwarding modes (lb4_service.mode). */
#define HL_MODE_DSR_IPIP   1 /* outer IPv4 (proto 4) to the backend; decapsulated by tc_decap */
#define HL_MODE_DSR_GENEVE 2 /* outer IPv4/UDP/Geneve with Cilium's DSR option (class 0x014B) */
#define HL_MODE_SNAT       3 /* DNAT to the backend and SNAT to this node; replies come back here */
#define HL_MODE_DSR_OPT    4 /* DNAT to the backend + Cilium's IPv4 DSR option (dsr_opt.h) */

/* SNAT source ports (this node's address), the range Cilium's NodePort SNAT uses by default. */
#define HL_SNAT_PORT_MIN 32768
#define HL_SNAT_PORT_SPAN 28232

/* Service flags. */
#define HL_SVC_F_AFFINITY  0x01 /* hash without the source port: one client, one backend */

/* Backend flags. */
#define HL_BE_F_STATIC_NH  0x01 /* use nh_mac/nh_ifindex instead of bpf_fib_lookup */

/* Geneve (RFC 8926) and Cilium's DSR option: class 0x014B (IANA: Cilium), type 0x81 (critical). */
#define HL_GENEVE_PORT     6081
#define HL_GENEVE_DSR_CLASS 0x014B
#define HL_GENEVE_DSR_TYPE 0x81

/* Cilium's IPv4 DSR option (bpf/lib/common.h: DSR_IPV4_OPT_TYPE, struct dsr_opt_v4): type
 * IPOPT_COPY | 0x1a (copied into fragments, number 26, unassigned by IANA), length 8 bytes. */
#define HL_DSR_IPV4_OPT_TYPE 0x9a
#define HL_DSR_IPV4_OPT_LEN  8

/* The option as it sits in the packet, right after the 20-byte IPv4 header (ihl 5 -> 7). */
struct hl_dsr_opt4 {
	__u8 type;   /* HL_DSR_IPV4_OPT_TYPE */
	__u8 len;    /* HL_DSR_IPV4_OPT_LEN */
	__be16 port; /* service port */
	__be32 addr; /* service address (the VIP) */
};

/* Counters (index into the per-CPU hl_stats array). Keep in sync with maps.rs `Counter`. */
enum hl_counter {
	HL_CNT_RX = 0,          /* packets seen */
	HL_CNT_PASS_NOT_IPV4,   /* not IPv4 (or IPv6 without a service) */
	HL_CNT_PASS_NO_SERVICE, /* destination is not a service */
	HL_CNT_PASS_FRAGMENT,   /* IPv4 fragment: passed to the stack */
	HL_CNT_PASS_IP_OPTIONS, /* IPv4 header with options: passed to the stack */
	HL_CNT_PASS_NO_NEIGH,   /* next hop has no neighbour entry yet: the kernel resolves it */
	HL_CNT_DROP_NO_BACKEND, /* service without (usable) backends */
	HL_CNT_DROP_MALFORMED,  /* truncated headers */
	HL_CNT_DROP_ENCAP,      /* could not make room for encapsulation */
	HL_CNT_DROP_FIB,        /* backend unreachable by the routing table */
	HL_CNT_CT_HIT,          /* flow found in conntrack, backend kept */
	HL_CNT_CT_NEW,          /* flow new (or its backend gone): Maglev chose */
	HL_CNT_TX,              /* sent back out of the ingress device */
	HL_CNT_REDIRECT,        /* redirected to another device */
	HL_CNT_DECAP,           /* tc_decap: DSR packet decapsulated */
	HL_CNT_SNAT_REPLY,      /* a backend's reply translated back and sent to the client */
	HL_CNT_DROP_SNAT_PORTS, /* no free SNAT port found for a new flow */
	HL_CNT_MAX,
};

/* lb4_key: service frontend (IPv4). */
struct lb4_key {
	__be32 vip;
	__be16 dport;
	__u8 proto;
	__u8 pad;
};

struct lb4_service {
	__u32 svc_id;   /* key of the Maglev outer map */
	__u16 backends; /* active backends (0: drop) */
	__u8 mode;      /* HL_MODE_* */
	__u8 flags;     /* HL_SVC_F_* */
};

struct lb4_backend {
	__be32 addr;
	__be16 port;  /* backend port (network order) for DNAT; DSR keeps the service port */
	__u8 flags;   /* HL_BE_F_* */
	__u8 pad;
	__u8 nh_mac[6];
	__u16 pad2;
	__u32 nh_ifindex;
};

/* ct4_key: the flow as the client sent it. */
struct ct4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* ct4_entry.flags */
#define HL_CT_F_CLOSING 0x01 /* a FIN or RST was seen: the agent ages it out quickly */

struct ct4_entry {
	__u32 backend_id;
	__u32 svc_id;
	__u64 created_ns;   /* CLOCK_MONOTONIC when first seen */
	__u64 last_seen_ns; /* CLOCK_MONOTONIC (coarse), refreshed at most once a second */
	__u8 flags;         /* HL_CT_F_* */
	__u8 pad;
	__be16 nat_port;    /* SNAT mode: this node's source port for the flow (0: none yet) */
	__u8 pad2[4];
};

/* SNAT reverse translation: a backend's reply (backend -> node:nat_port) to the client flow. */
struct nat4_rev_key {
	__be32 backend;
	__be32 node;
	__be16 bport;
	__be16 nport;
	__u8 proto;
	__u8 pad[3];
};

struct nat4_rev_val {
	__be32 client;
	__be32 vip;
	__be16 cport;
	__be16 vport;
	__u32 pad;
};

struct maglev_lut {
	__u32 backend_ids[HL_MAGLEV_M];
};

/* hl_stats value: one per counter per CPU. */
struct hl_stat {
	__u64 packets;
	__u64 bytes;
};

/* ===== Pod overlay (tc_overlay.bpf.c, overlay.h) ===== */

#ifndef HL_MAX_TUNNELS
#define HL_MAX_TUNNELS 16384
#endif

/* Overlay encapsulations (CFG_OVL_MODE). */
#define HL_OVL_MODE_VXLAN  1 /* bpf_skb_set_tunnel_key + redirect to a collect-metadata VXLAN device */
#define HL_OVL_MODE_GENEVE 2 /* outer IPv4/UDP/Geneve written in BPF (no geneve module needed) */

/* tunnel4_value.flags */
#define HL_TUN_F_LOCAL 0x01 /* this node's own pod CIDR: delivered by the stack, never encapsulated */

/* hl_tunnel key: an IPv4 pod CIDR (LPM trie: prefix length in bits, then the address). */
struct tunnel4_key {
	__u32 prefixlen;
	__be32 addr;
};

/* hl_tunnel value: the node that owns the CIDR (its underlay address). */
struct tunnel4_value {
	__be32 remote;
	__u8 flags; /* HL_TUN_F_* */
	__u8 pad[3];
};

/* Overlay counters (index into the per-CPU hl_ovl_stats array). Keep in sync with overlay.rs. */
enum hl_ovl_counter {
	HL_OVL_PASS_NOT_IPV4 = 0, /* tx: not IPv4 (passed) */
	HL_OVL_PASS_NO_TUNNEL,    /* tx: destination in no remote pod CIDR (passed to the stack) */
	HL_OVL_ENCAP_VXLAN,       /* tx: tunnel key set, redirected to the VXLAN device */
	HL_OVL_ENCAP_GENEVE,      /* tx: Geneve headers pushed, redirected out of the uplink */
	HL_OVL_ENCAP_NO_NEIGH,    /* tx: Geneve, next hop unresolved: bpf_redirect_neigh resolves it */
	HL_OVL_DROP_ENCAP,        /* tx: could not make room / set the tunnel key */
	HL_OVL_DROP_FIB,          /* tx: remote node unreachable by the routing table */
	HL_OVL_RX_VXLAN,          /* rx: packet from the VXLAN device handed to the stack as ours */
	HL_OVL_DECAP_GENEVE,      /* rx: Geneve header stripped */
	HL_OVL_DROP_CRITICAL,     /* rx: Geneve packet with critical options we do not know */
	HL_OVL_CNT_MAX,
};

#endif
