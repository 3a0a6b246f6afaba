/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bob Jenkins' lookup3 final mix as used by the Linux kernel's jhash_3words (include/linux/jhash.h):
 * the Maglev flow hash must match the agent's Rust copy (datapath-bpf/src/hash.rs) bit for bit so
 * `halyard bpf maglev` can say which backend a flow goes to.
 */
#ifndef HALYARD_JHASH_H
#define HALYARD_JHASH_H

#include <linux/types.h>

#define HL_JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 hl_rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

static __always_inline __u32 hl_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += HL_JHASH_INITVAL + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	c ^= b; c -= hl_rol32(b, 14);
	a ^= c; a -= hl_rol32(c, 11);
	b ^= a; b -= hl_rol32(a, 25);
	c ^= b; c -= hl_rol32(b, 16);
	a ^= c; a -= hl_rol32(c, 4);
	b ^= a; b -= hl_rol32(a, 14);
	c ^= b; c -= hl_rol32(b, 24);
	return c;
}

#endif
