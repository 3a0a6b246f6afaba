/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Load-time constants (.rodata). One prebuilt object is specialised at load time: the agent sets
 * these through aya's EbpfLoader::set_global, and the verifier prunes branches they disable.
 */
#ifndef HALYARD_CONFIG_H
#define HALYARD_CONFIG_H

#include <linux/types.h>

volatile const __u32 CFG_HASH_SEED = 0;  /* Maglev jhash seed (bytes 4-7 of the 12-byte seed) */
volatile const __be32 CFG_NODE_IPV4 = 0; /* outer source address of DSR encapsulation */
volatile const __u32 CFG_GENEVE_VNI = 2; /* VNI of DSR Geneve packets (2: Cilium's "world") */
/* IPv6: this node's address (outer source of DSR encapsulation, SNAT address; all zero: IPv6
 * frontends are not forwarded), and the flow-hash seed (bytes 8-11 of the 12-byte seed, Cilium's
 * HASH_INIT6_SEED). */
volatile const __be32 CFG_NODE_IPV6[4] = {};
volatile const __u32 CFG_HASH_SEED6 = 0;

#endif
