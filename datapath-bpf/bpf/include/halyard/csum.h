/* SPDX-License-Identifier: Apache-2.0 */
/* Internet checksum helpers (RFC 1071). */
#ifndef HALYARD_CSUM_H
#define HALYARD_CSUM_H

#include <linux/types.h>
#include <linux/ip.h>

static __always_inline __u16 hl_csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Checksum of a 20-byte IPv4 header (no options) whose check field is zero. */
static __always_inline __u16 hl_ipv4_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u64 sum = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return hl_csum_fold(sum);
}

/* Checksum of an IPv4 header of `words` 16-bit words (a constant: 10 plus 2 per option word)
 * whose check field is zero. */
static __always_inline __u16 hl_ipv4_csum_words(const void *hdr, const int words)
{
	const __u16 *w = hdr;
	__u64 sum = 0;
#pragma unroll
	for (int i = 0; i < words; i++)
		sum += w[i];
	return hl_csum_fold(sum);
}

/* RFC 1624 incremental update: replace a 32-bit field `from` with `to` in checksum `check`. */
static __always_inline __u16 hl_csum_replace4(__u16 check, __be32 from, __be32 to)
{
	__u64 sum = (__u16)~check;
	sum += (__u16)~(from & 0xffff) + (__u16)~(from >> 16);
	sum += (to & 0xffff) + (to >> 16);
	return hl_csum_fold(sum);
}

static __always_inline __u16 hl_csum_replace2(__u16 check, __be16 from, __be16 to)
{
	__u64 sum = (__u16)~check;
	sum += (__u16)~from;
	sum += to;
	return hl_csum_fold(sum);
}

#endif
