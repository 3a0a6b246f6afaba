//! MurmurHash3, x64 128-bit variant (Austin Appleby's `MurmurHash3_x64_128`
//! from SMHasher), written from the algorithm description.
//!
//! The Maglev table builder uses it to derive each backend's `offset` and
//! `skip`, exactly as Cilium's `pkg/murmur3.Hash128` does, so the output
//! must never change: tables built by different agents (and different Rust
//! versions) have to agree slot for slot.
//!
//! Conventions, matching the reference implementation on little-endian
//! machines and Cilium:
//! - the 32-bit seed initialises both 64-bit lanes (`h1 = h2 = seed`);
//! - 16-byte blocks are read as two little-endian `u64`s, on every host;
//! - the result is returned as the pair `(h1, h2)`.

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[inline(always)]
fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

#[inline(always)]
fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

/// Reads up to 8 bytes as a little-endian integer (missing high bytes are 0).
#[inline(always)]
fn le_partial(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// MurmurHash3 x64_128 of `data` with a 32-bit `seed`; returns `(h1, h2)`.
///
/// Identical to SMHasher's `MurmurHash3_x64_128(data, len, seed, out)` with
/// `out = [h1, h2]` on a little-endian host, and to Cilium's
/// `murmur3.Hash128(data, seed)`.
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);

    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let (lo, hi) = block.split_at(8);
        let k1 = u64::from_le_bytes(lo.try_into().expect("8-byte half of a 16-byte block"));
        let k2 = u64::from_le_bytes(hi.try_into().expect("8-byte half of a 16-byte block"));

        h1 ^= mix_k1(k1);
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);

        h2 ^= mix_k2(k2);
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }

    let tail = blocks.remainder();
    if tail.len() > 8 {
        h2 ^= mix_k2(le_partial(&tail[8..]));
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(le_partial(&tail[..tail.len().min(8)]));
    }

    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

#[cfg(test)]
mod tests {
    use super::murmur3_x64_128;

    /// Published x64_128 vectors (SMHasher reference output as also produced by
    /// the Python `mmh3` package's `hash64(data, seed, signed=False)`, which wraps
    /// the reference C code). `(input, seed, h1, h2)`.
    const VECTORS: &[(&[u8], u32, u64, u64)] = &[
        (b"", 0, 0, 0),
        (b"", 1, 0x4610_abe5_6eff_5cb5, 0x5162_2daa_78f8_3583),
        (b"hello", 0, 0xcbd8_a7b3_41bd_9b02, 0x5b1e_906a_48ae_1d19),
        (b"The quick brown fox jumps over the lazy dog", 0, 0xe34b_bc7b_bc07_1b6c, 0x7a43_3ca9_c49a_9347),
        (b"Hello, world!", 123, 0x421c_8c73_8743_acad, 0xf197_32fd_d373_c3f5),
        // Exactly one block, no tail.
        (b"0123456789abcdef", 0, 0x4be0_6d94_cf4a_d1a7, 0x87c3_5b5c_63a7_08da),
        // One block plus a 1-byte tail.
        (b"0123456789abcdefg", 42, 0xd714_4105_f707_cb7c, 0x4981_b28d_2f17_a7db),
        // Four blocks, all-ones seed.
        (
            b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_",
            0xffff_ffff,
            0x5927_87bf_4acb_29f9,
            0x37ce_068e_0ffd_2daf,
        ),
        // A Cilium backend hash string with the murmur part of Cilium's default seed.
        (b"[0.0.0.1:1/TCP,State:active]", 0x24b7_ef82, 0xe5a6_1e34_6c85_d436, 0x53ee_412c_c7f2_0636),
    ];

    #[test]
    fn published_vectors() {
        for &(input, seed, h1, h2) in VECTORS {
            assert_eq!(
                murmur3_x64_128(input, seed),
                (h1, h2),
                "input {:?} seed {seed:#x}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn every_tail_length_is_distinct() {
        // Exercise all 16 tail lengths (0..=15) on top of a full block and
        // make sure each prefix hashes differently (catches tail mix-ups).
        let data: Vec<u8> = (0u8..48).collect();
        let mut seen = std::collections::BTreeSet::new();
        for len in 0..=data.len() {
            assert!(seen.insert(murmur3_x64_128(&data[..len], 7)), "len {len}");
        }
    }
}
