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

#endif
