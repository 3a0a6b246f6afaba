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
#define HL_MODE_DSR_IPIP   1 /* outer IPv4 (proto 4; IPv6: outer IPv6, next header 41) to the
			       * backend; decapsulated by tc_decap */
#define HL_MODE_DSR_GENEVE 2 /* outer IP/UDP/Geneve with Cilium's DSR option (class 0x014B) */
#define HL_MODE_SNAT       3 /* DNAT to the backend and SNAT to this node; replies come back here */
#define HL_MODE_DSR_OPT    4 /* DNAT to the backend + Cilium's IPv4 DSR option or IPv6 DSR
			       * extension header (dsr_opt.h) */

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
	HL_CNT_PASS_NOT_IPV4,   /* neither IPv4 nor IPv6 (ARP, ...) */
	HL_CNT_PASS_NO_SERVICE, /* destination is not a service */
	HL_CNT_PASS_FRAGMENT,   /* IPv4 fragment, or IPv6 with a Fragment header: passed to the stack */
	HL_CNT_PASS_IP_OPTIONS, /* IPv4 options, or IPv6 extension headers: passed to the stack */
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

/* ===== IPv6 north-south load balancing (lb.h hl_lb6_*, maps hl_lb6_*, hl_ct6, hl_nat6_rev) =====
 *
 * Mirrors of the IPv4 structs with 16-byte addresses (four network-order words, so the hot path
 * compares and copies words). What does not depend on the family is shared: a service's value is
 * struct lb4_service, a flow's conntrack value struct ct4_entry, and Maglev tables live in
 * hl_lb4_maglev under the service id (the agent hands out service ids and backend ids from one
 * space for both families, so an id names one table and one backend slot).
 */

/* lb6_key: service frontend (IPv6). Value: struct lb4_service. */
struct lb6_key {
	__be32 vip[4];
	__be16 dport;
	__u8 proto;
	__u8 pad;
};

struct lb6_backend {
	__be32 addr[4];
	__be16 port;  /* backend port (network order) for DNAT; DSR keeps the service port */
	__u8 flags;   /* HL_BE_F_* */
	__u8 pad;
	__u8 nh_mac[6];
	__u16 pad2;
	__u32 nh_ifindex;
};

/* ct6_key: the flow as the client sent it. Value: struct ct4_entry. */
struct ct6_key {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* SNAT reverse translation (IPv6): a backend's reply (backend -> node:nat_port) to the client
 * flow. */
struct nat6_rev_key {
	__be32 backend[4];
	__be32 node[4];
	__be16 bport;
	__be16 nport;
	__u8 proto;
	__u8 pad[3];
};

struct nat6_rev_val {
	__be32 client[4];
	__be32 vip[4];
	__be16 cport;
	__be16 vport;
	__u32 pad;
};

/*
 * Cilium's IPv6 DSR extension header (bpf/lib/nodeport.h: struct dsr_opt_v6, DSR_IPV6_OPT_TYPE): a
 * Destination Options header (RFC 8200 §4.6, next header 60) holding one option of type 0x1B
 * (RFC 8200 §4.2: high bits 00, skip if unknown; bit 2 clear, data does not change en route;
 * number 27, unassigned by IANA), option data length 20: service address, service port, 2 bytes
 * of padding. 24 bytes in all (hdrlen 2: in 8-byte units, the first 8 not counted).
 */
#define HL_DSR_IPV6_OPT_TYPE 0x1B
#define HL_DSR_IPV6_OPT_LEN  20
#define HL_DSR_IPV6_EXT_LEN  24

struct hl_dsr_opt6 {
	__u8 nexthdr;  /* the upper-layer header after it (TCP or UDP) */
	__u8 hdrlen;   /* (HL_DSR_IPV6_EXT_LEN - 8) / 8 */
	__u8 opt_type; /* HL_DSR_IPV6_OPT_TYPE */
	__u8 opt_len;  /* HL_DSR_IPV6_OPT_LEN */
	__be32 addr[4]; /* service address (the VIP) */
	__be16 port;   /* service port */
	__u16 pad;
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

/* ===== East-west: ClusterIP translation at the pod veths (tc_svc.bpf.c, svc.h) ===== */

/*
 * The ClusterIP maps reuse the LB's layouts (lb4_key, lb4_service, lb4_backend, ct4_key,
 * ct4_entry, one-entry Maglev inner arrays) on maps of their own (hl_ew4_*), so the agent's LB
 * and ClusterIP reconcilers never share an id space. The reverse map is keyed by the reply as it
 * leaves the backend (a ct4_key: backend -> client) and holds what the client connected to.
 */
struct svc4_rev_value {
	__be32 vip;   /* the ClusterIP */
	__be16 vport; /* the service port */
	__u8 pad[2];
};

/* ClusterIP counters (index into the per-CPU hl_ew_stats array). Keep in sync with svc.rs. */
enum hl_ew_counter {
	HL_EW_PASS_OTHER = 0, /* from a pod: not IPv4 TCP/UDP, a fragment, or IP options */
	HL_EW_PASS_NO_SERVICE, /* from a pod: not to a ClusterIP */
	HL_EW_DNAT,            /* from a pod: translated to a backend */
	HL_EW_CT_HIT,          /* the flow's conntrack entry kept its backend */
	HL_EW_CT_NEW,          /* new flow (or its backend gone): Maglev chose */
	HL_EW_DROP_NO_BACKEND, /* ClusterIP without (usable) backends */
	HL_EW_DROP_REWRITE,    /* a header could not be rewritten (truncated packet) */
	HL_EW_REV_NAT,         /* to a pod: a backend's reply given the ClusterIP as source */
	HL_EW_PASS_NO_REV,     /* to a pod: not a reply to a translated flow */
	HL_EW_CNT_MAX,
};

#endif
