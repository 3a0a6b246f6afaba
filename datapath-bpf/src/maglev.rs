//! Maglev consistent-hashing lookup tables for the XDP load balancer.
//!
//! # Algorithm
//!
//! Maglev is described in Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, §3.4
//! (<https://research.google/pubs/pub44824>). Every backend gets a
//! pseudo-random permutation of the `M` table slots, given by
//! `offset = h1 mod M` and `skip = h2 mod (M-1) + 1` (`M` prime, so every
//! `skip` is coprime to `M`). Backends take turns claiming their most
//! preferred slot that is still empty until all `M` slots are filled. With
//! equal weights every backend ends up with ⌊M/N⌋ or ⌈M/N⌉ slots, and
//! removing a backend moves few of the other backends' slots.
//!
//! # Compatibility with Cilium
//!
//! The builder follows Cilium's `pkg/maglev` (cilium/cilium, v1.17+) so that
//! a Halyard node and a Cilium node given the same backends, seed and `M`
//! produce the same table:
//!
//! - `M` is one of Cilium's primes ([`SUPPORTED_TABLE_SIZES`]);
//! - the seed is 12 bytes of base64, split big-endian into the murmur seed
//!   (bytes 0–3) and the two jhash seeds the BPF side uses (bytes 4–7, 8–11);
//! - `h1, h2` come from MurmurHash3 x64_128 ([`crate::murmur3`]) of the
//!   canonical backend string ([`backend_hash_string`]) with the murmur seed;
//! - backends are sorted by that string before the table is built, so the
//!   result does not depend on input order or on node-local backend IDs;
//! - weights use Cilium's turn-skipping scheme (inspired by Envoy PR 2982):
//!   a backend's turn is passed on while `(n+1)·weight < counter`, where the
//!   counter starts at `weight / N` and grows by the weight sum on each pick.
//!   Weights only take effect when `weight_sum / N > 1`, so the default weight
//!   100 on every backend gives exactly the unweighted table. Cilium keeps the
//!   counters in `float64`; this module uses the equivalent integer form
//!   `weight / N` (truncated) `+ picks · weight_sum`, which matches as long as
//!   the counters stay far below 2^52 (`weight_sum · M` < 2^52, i.e. any
//!   realistic input).
//!
//! Cilium's own unit-test vectors (the weighted 2/13/111/10 counts at
//! `M = 1021` and the full run-length-encoded table of `TestReproducible` at
//! `M = 251`) are reproduced in this module's tests.
//!
//! # Implementation
//!
//! [`build_table`] keeps only `(next slot, skip)` per backend — O(N) state,
//! as in Katran's `MaglevBase` — instead of the N×M permutation matrix Cilium
//! materialises, and advances each backend's cursor with an add-and-subtract
//! rather than a modulo; occupancy is a bitmap (16 KiB at M = 131071). Most
//! probing happens while the last few slots are filled, so once at most
//! sqrt(M) slots are empty it switches to ranking those slots directly: slot
//! `s` sits at position `(s − offset)·skip⁻¹ mod M` of a backend's
//! permutation, and the empty slot with the lowest position is exactly the
//! one probing would reach. The result is identical, only faster. [`build_table_full_permutation`] is the literal
//! Cilium-style algorithm (full permutation, `float64` weight counters); it is
//! kept as the test oracle and as a benchmark anchor.

use std::fmt;
use std::net::IpAddr;

use crate::murmur3::murmur3_x64_128;

/// Table sizes (primes) accepted by [`build_table`]; the same list as Cilium's
/// `bpf-lb-maglev-table-size`.
pub const SUPPORTED_TABLE_SIZES: [u32; 10] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071];

/// Default table size, as in Cilium (good for up to ~160 backends at M > 100·N).
pub const DEFAULT_TABLE_SIZE: u32 = 16381;

/// Default backend weight, as in Cilium. Equal weights give the unweighted table.
pub const DEFAULT_BACKEND_WEIGHT: u16 = 100;

/// Cilium's default cluster-wide Maglev seed: 12 bytes, base64.
pub const DEFAULT_SEED: &str = "JLfvgnHc2kaSUFaI";

/// Number of bytes a Maglev seed decodes to.
const SEED_LEN: usize = 12;

/// The cluster-wide Maglev seed, split as Cilium splits it.
///
/// All nodes must use the same seed, or they build different tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevSeed {
    /// Bytes 0–3 (big-endian): seed of the murmur3 hash that builds the table.
    pub murmur: u32,
    /// Bytes 4–7 (big-endian): jhash seed for IPv4 flows (`HASH_INIT4_SEED`).
    pub jhash0: u32,
    /// Bytes 8–11 (big-endian): jhash seed for IPv6 flows (`HASH_INIT6_SEED`).
    pub jhash1: u32,
}

impl MaglevSeed {
    /// Decodes a standard-alphabet, padded base64 string (as produced by
    /// `head -c12 /dev/urandom | base64 -w0`) that must yield exactly 12 bytes.
    pub fn from_base64(s: &str) -> Result<Self, MaglevError> {
        let bytes = decode_base64(s)
            .map_err(|reason| MaglevError::BadSeed { reason: format!("cannot decode base64 seed {s:?}: {reason}") })?;
        if bytes.len() != SEED_LEN {
            return Err(MaglevError::BadSeed {
                reason: format!(
                    "seed {s:?} decodes to {} bytes, expected exactly {SEED_LEN} \
                     (generate one with `head -c12 /dev/urandom | base64 -w0`)",
                    bytes.len()
                ),
            });
        }
        let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Ok(Self { murmur: word(0), jhash0: word(4), jhash1: word(8) })
    }
}

impl Default for MaglevSeed {
    fn default() -> Self {
        Self::from_base64(DEFAULT_SEED).expect("DEFAULT_SEED is valid base64 of 12 bytes")
    }
}

/// Value of one base64 character of the standard alphabet.
fn base64_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Strict RFC 4648 §4 base64 decoding (standard alphabet, `=` padding
/// required), like Go's `base64.StdEncoding` minus its newline skipping.
fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    let input = s.as_bytes();
    if !input.len().is_multiple_of(4) {
        return Err(format!("length {} is not a multiple of 4 (padding with '=' is required)", input.len()));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let quads = input.len() / 4;
    for (q, quad) in input.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return Err(format!("misplaced '=' padding in group {}", q + 1));
        }
        let mut acc = 0u32;
        for (k, &c) in quad[..4 - pad].iter().enumerate() {
            let v = base64_value(c)
                .ok_or_else(|| format!("invalid character {:?} at position {}", char::from(c), q * 4 + k))?;
            acc |= v << (18 - 6 * k);
        }
        let [_, b0, b1, b2] = acc.to_be_bytes();
        out.extend_from_slice(&[b0, b1, b2][..3 - pad]);
        // Non-canonical encodings (set bits in the dropped part) are rejected,
        // as Go's strict decoder would.
        let dropped_bits = match pad {
            1 => acc & 0xff,
            2 => acc & 0xffff,
            _ => 0,
        };
        if dropped_bits != 0 {
            return Err(format!("non-canonical trailing bits in group {}", q + 1));
        }
    }
    Ok(out)
}

/// Layer-4 protocol of a backend, as it appears in the hash string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Proto {
    Tcp,
    Udp,
    Sctp,
    Any,
}

impl L4Proto {
    /// Cilium's `L4Type` spelling (`"TCP"`, `"UDP"`, `"SCTP"`, `"ANY"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
            Self::Any => "ANY",
        }
    }
}

impl fmt::Display for L4Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cilium's canonical backend string, used both to sort backends and as the
/// murmur3 input: `"[10.0.0.1:80/TCP,State:active]"` for IPv4 and
/// `"[[fd00::1]:80/TCP,State:active]"` for IPv6.
///
/// This string must never change, or nodes running different versions build
/// different tables. Addresses are printed in their canonical text form
/// (RFC 5952 for IPv6, as Go's `netip.Addr.String()` does).
pub fn backend_hash_string(addr: IpAddr, port: u16, proto: L4Proto) -> String {
    backend_hash_string_scoped(addr, port, proto, false)
}

/// [`backend_hash_string`] with Cilium's internal-scope marker: when
/// `internal` is true (`ScopeInternal` backends), `"/i"` follows the protocol.
pub fn backend_hash_string_scoped(addr: IpAddr, port: u16, proto: L4Proto, internal: bool) -> String {
    let scope = if internal { "/i" } else { "" };
    match addr {
        IpAddr::V4(a) => format!("[{a}:{port}/{proto}{scope},State:active]"),
        IpAddr::V6(a) => format!("[[{a}]:{port}/{proto}{scope},State:active]"),
    }
}

/// One backend as the table builder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Node-local backend ID; this is what the table slots hold.
    pub id: u32,
    /// Cluster-wide name; see [`backend_hash_string`]. Must be unique.
    pub hash_string: String,
    /// Relative weight; 0 excludes the backend (Cilium's maintenance state).
    pub weight: u16,
}

impl MaglevBackend {
    /// A backend with the canonical hash string and [`DEFAULT_BACKEND_WEIGHT`].
    pub fn new(id: u32, addr: IpAddr, port: u16, proto: L4Proto) -> Self {
        Self { id, hash_string: backend_hash_string(addr, port, proto), weight: DEFAULT_BACKEND_WEIGHT }
    }

    /// The same backend with another weight.
    pub fn with_weight(mut self, weight: u16) -> Self {
        self.weight = weight;
        self
    }
}

/// Why a Maglev table (or seed) could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("unsupported Maglev table size {size}: it must be one of the primes {}", supported_sizes_text())]
    UnsupportedTableSize { size: u32 },

    #[error("cannot build a Maglev table with no backends: at least one is required")]
    NoBackends,

    #[error(
        "all {count} Maglev backends have weight 0: weight 0 excludes a backend, \
         so at least one needs a weight in 1..=65535 (default {DEFAULT_BACKEND_WEIGHT})"
    )]
    AllWeightsZero { count: usize },

    #[error(
        "Maglev backends {first_id} and {second_id} share the hash string {hash_string:?}: \
         hash strings must be unique"
    )]
    DuplicateBackend { hash_string: String, first_id: u32, second_id: u32 },

    #[error("bad Maglev hash seed: {reason}; a seed is 12 bytes in standard padded base64, e.g. {DEFAULT_SEED:?}")]
    BadSeed { reason: String },
}

fn supported_sizes_text() -> String {
    let sizes: Vec<String> = SUPPORTED_TABLE_SIZES.iter().map(u32::to_string).collect();
    sizes.join(", ")
}

/// Validates the inputs and returns the backends that take part, sorted by
/// hash string (the canonical, node-independent order).
fn prepare(backends: &[MaglevBackend], m: u32) -> Result<Vec<&MaglevBackend>, MaglevError> {
    if !SUPPORTED_TABLE_SIZES.contains(&m) {
        return Err(MaglevError::UnsupportedTableSize { size: m });
    }
    if backends.is_empty() {
        return Err(MaglevError::NoBackends);
    }
    let mut active: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if active.is_empty() {
        return Err(MaglevError::AllWeightsZero { count: backends.len() });
    }
    active.sort_unstable_by(|a, b| a.hash_string.cmp(&b.hash_string));
    if let Some(pair) = active.windows(2).find(|w| w[0].hash_string == w[1].hash_string) {
        let (lo, hi) = (pair[0].id.min(pair[1].id), pair[0].id.max(pair[1].id));
        return Err(MaglevError::DuplicateBackend {
            hash_string: pair[0].hash_string.clone(),
            first_id: lo,
            second_id: hi,
        });
    }
    Ok(active)
}

/// `(offset, skip)` of one backend for table size `m`, as in the paper and Cilium.
fn offset_and_skip(hash_string: &str, m: u32, seed: &MaglevSeed) -> (u32, u32) {
    let (h1, h2) = murmur3_x64_128(hash_string.as_bytes(), seed.murmur);
    let m = u64::from(m);
    // Both results are < m <= 131071, so they fit in u32.
    ((h1 % m) as u32, (h2 % (m - 1) + 1) as u32)
}

/// Whether Cilium's weighting is in effect: only if `weight_sum / N > 1`.
fn weights_used(backends: &[&MaglevBackend]) -> (bool, u64) {
    let weight_sum: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    (weight_sum / backends.len() as u64 > 1, weight_sum)
}

/// Builds the Maglev lookup table: `table[i]` is the backend ID for slot `i`.
///
/// The result depends only on each backend's `(hash_string, weight)` and ID,
/// the seed and `m` — not on the order of `backends`. Backends with weight 0
/// are left out. Runs in O(N + M log M) on average with O(N) extra state.
///
/// # Errors
///
/// [`MaglevError::UnsupportedTableSize`] if `m` is not in
/// [`SUPPORTED_TABLE_SIZES`], [`MaglevError::NoBackends`] for an empty slice,
/// [`MaglevError::AllWeightsZero`] if no backend has a non-zero weight, and
/// [`MaglevError::DuplicateBackend`] if two backends share a hash string.
pub fn build_table(backends: &[MaglevBackend], m: u32, seed: &MaglevSeed) -> Result<Vec<u32>, MaglevError> {
    let sorted = prepare(backends, m)?;
    let n = sorted.len();
    let (weighted, weight_sum) = weights_used(&sorted);

    let mut filler = Filler::new(&sorted, m, seed);
    if weighted {
        let weights: Vec<u64> = sorted.iter().map(|b| u64::from(b.weight)).collect();
        // Integer form of Cilium's float64 counters: trunc(w / N) + picks * weight_sum.
        let mut counters: Vec<u64> = weights.iter().map(|&w| w / n as u64).collect();
        let mut turn = 0usize;
        for filled_count in 0..u64::from(m) {
            let mut i = turn;
            // Terminates: summing `(n+1)·w_i < counter_i` over all i would give
            // weight_sum < Σ trunc(w_i / N) <= weight_sum / N.
            while (filled_count + 1) * weights[i] < counters[i] {
                i += 1;
                if i == n {
                    i = 0;
                }
            }
            counters[i] += weight_sum;
            filler.claim(i);
            turn += 1;
            if turn == n {
                turn = 0;
            }
        }
    } else {
        // Plain Maglev round robin: exactly M claims fill the table. With more
        // backends than slots the surplus backends never get a turn.
        for turn in (0..n).cycle().take(m as usize) {
            filler.claim(turn);
        }
    }
    Ok(filler.table)
}

/// At or below this many empty slots, [`Filler`] stops probing permutations and
/// computes each backend's preference among the remaining slots directly.
/// Probing costs about M/E steps per claim when E slots are empty (most of
/// the work happens in the last few percent of the table); the direct
/// search costs E multiply-modulo steps, so the crossover is near sqrt(M).
fn tail_threshold(m: u32) -> usize {
    m.isqrt() as usize
}

/// Table-filling state of [`build_table`]: O(N) per-backend state plus the
/// table and a one-bit-per-slot occupancy map.
struct Filler {
    m: u32,
    table: Vec<u32>,
    /// One bit per slot: 16 KiB at M = 131071, so probing stays in L1.
    filled: Vec<u64>,
    /// Empty slots still to fill.
    remaining: usize,
    /// `tail_threshold(m)`, hoisted out of the per-claim path.
    tail_at: usize,
    ids: Vec<u32>,
    offsets: Vec<u32>,
    skips: Vec<u32>,
    /// Per backend: the next position of its permutation to try, as a slot.
    /// Every slot it passed over is filled.
    next: Vec<u32>,
    /// Empty slots, collected once `remaining` drops to the tail threshold.
    empty: Vec<u32>,
    /// Per backend: skip⁻¹ mod M (0 = not computed yet), used in the tail.
    inv_skip: Vec<u32>,
}

impl Filler {
    fn new(sorted: &[&MaglevBackend], m: u32, seed: &MaglevSeed) -> Self {
        let n = sorted.len();
        let mut offsets = Vec::with_capacity(n);
        let mut skips = Vec::with_capacity(n);
        for b in sorted {
            let (offset, skip) = offset_and_skip(&b.hash_string, m, seed);
            offsets.push(offset);
            skips.push(skip);
        }
        Self {
            m,
            table: vec![0; m as usize],
            filled: vec![0; (m as usize).div_ceil(64)],
            remaining: m as usize,
            tail_at: tail_threshold(m),
            ids: sorted.iter().map(|b| b.id).collect(),
            next: offsets.clone(),
            offsets,
            skips,
            empty: Vec::new(),
            inv_skip: Vec::new(),
        }
    }

    /// Gives backend `i` its most preferred empty slot. Only called while at
    /// least one slot is empty.
    fn claim(&mut self, i: usize) {
        let slot = if self.remaining > self.tail_at { self.probe(i) } else { self.search_tail(i) };
        self.table[slot as usize] = self.ids[i];
        self.remaining -= 1;
    }

    /// Walks backend `i`'s permutation from its cursor to the first empty
    /// slot (the paper's Pseudocode 1), with add-and-subtract instead of `%`.
    /// Terminates within M steps because the permutation visits every slot.
    fn probe(&mut self, i: usize) -> u32 {
        let (m, skip) = (self.m, self.skips[i]);
        let mut slot = self.next[i];
        while self.filled[(slot >> 6) as usize] & (1 << (slot & 63)) != 0 {
            slot += skip;
            if slot >= m {
                slot -= m;
            }
        }
        self.filled[(slot >> 6) as usize] |= 1 << (slot & 63);
        let mut after = slot + skip;
        if after >= m {
            after -= m;
        }
        self.next[i] = after;
        slot
    }

    /// Same answer as [`Self::probe`], found by ranking the few empty slots:
    /// slot `s` is at position `(s - offset) · skip⁻¹ mod M` of backend `i`'s
    /// permutation, and every slot before its cursor is already filled, so the
    /// empty slot with the lowest position is the one probing would reach.
    fn search_tail(&mut self, i: usize) -> u32 {
        let m = self.m;
        if self.empty.is_empty() {
            self.collect_empty();
        }
        if self.inv_skip[i] == 0 {
            self.inv_skip[i] = inverse_mod_prime(self.skips[i], m);
        }
        let (offset, inv) = (self.offsets[i], u64::from(self.inv_skip[i]));
        let (m64, barrett) = (u64::from(m), u64::MAX / u64::from(m));
        let mut best = (u64::MAX, 0usize);
        for (k, &s) in self.empty.iter().enumerate() {
            let delta = if s >= offset { s - offset } else { s + m - offset };
            // `x % m` by Barrett reduction (the quotient estimate is at most
            // one too small), avoiding a 64-bit division per candidate.
            let x = u64::from(delta) * inv;
            let q = ((u128::from(x) * u128::from(barrett)) >> 64) as u64;
            let mut pos = x - q * m64;
            if pos >= m64 {
                pos -= m64;
            }
            if pos < best.0 {
                best = (pos, k);
            }
        }
        // The cursor is not needed any more: the tail phase lasts to the end.
        self.empty.swap_remove(best.1)
    }

    fn collect_empty(&mut self) {
        self.empty.reserve(self.remaining);
        for (w, &word) in self.filled.iter().enumerate() {
            let mut free = !word;
            while free != 0 {
                let slot = (w as u32) * 64 + free.trailing_zeros();
                if slot < self.m {
                    self.empty.push(slot);
                }
                free &= free - 1;
            }
        }
        debug_assert_eq!(self.empty.len(), self.remaining);
        self.inv_skip = vec![0; self.ids.len()];
    }
}

/// `a⁻¹ mod p` for prime `p` and `0 < a < p`, by the extended Euclidean
/// algorithm (a few u32 divisions; Fermat's a^(p-2) would need ~34 u64 `%`).
fn inverse_mod_prime(a: u32, p: u32) -> u32 {
    let (mut r0, mut r1) = (i64::from(p), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    debug_assert_eq!(r0, 1, "{a} is not invertible mod {p}");
    t0.rem_euclid(i64::from(p)) as u32
}

/// Reference implementation: the straightforward Cilium algorithm, which
/// first materialises the whole N×M permutation matrix and keeps the weight
/// counters in `f64`, exactly as `pkg/maglev` does. Same contract and result
/// as [`build_table`], but O(N·M) time and memory (N×M `u32`s: 262 MB for
/// N = 1000, M = 65521). Meant for tests and benchmarks.
///
/// # Errors
///
/// The same as [`build_table`].
pub fn build_table_full_permutation(
    backends: &[MaglevBackend],
    m: u32,
    seed: &MaglevSeed,
) -> Result<Vec<u32>, MaglevError> {
    let sorted = prepare(backends, m)?;
    let l = sorted.len();
    let mu = m as usize;
    let (weighted, weight_sum) = weights_used(&sorted);

    let mut perm = vec![0u32; l * mu];
    for (i, b) in sorted.iter().enumerate() {
        let (offset, skip) = offset_and_skip(&b.hash_string, m, seed);
        let row = &mut perm[i * mu..(i + 1) * mu];
        row[0] = offset;
        for j in 1..mu {
            row[j] = ((u64::from(row[j - 1]) + u64::from(skip)) % u64::from(m)) as u32;
        }
    }

    let mut weight_cntr: Vec<f64> = sorted.iter().map(|b| f64::from(b.weight) / l as f64).collect();
    let mut next = vec![0usize; l];
    let mut entry = vec![None::<u32>; mu];

    for n in 0..u64::from(m) {
        let mut i = (n % l as u64) as usize;
        loop {
            if weighted {
                // `as u64` truncates like Go's uint64(float64).
                if (n + 1) * u64::from(sorted[i].weight) < weight_cntr[i] as u64 {
                    i = (i + 1) % l;
                    continue;
                }
                weight_cntr[i] += weight_sum as f64;
            }
            let mut c = perm[i * mu + next[i]] as usize;
            while entry[c].is_some() {
                next[i] += 1;
                c = perm[i * mu + next[i]] as usize;
            }
            entry[c] = Some(sorted[i].id);
            next[i] += 1;
            break;
        }
    }
    Ok(entry.into_iter().map(|e| e.expect("Maglev fills every slot")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Cilium's test helper `mkAddr(i)`: IPv4 address with value `i`
    /// (big-endian), port `i`, TCP.
    fn cilium_backend(i: u32, id: u32, weight: u16) -> MaglevBackend {
        MaglevBackend {
            id,
            hash_string: backend_hash_string(IpAddr::V4(Ipv4Addr::from(i)), (i % 65535) as u16, L4Proto::Tcp),
            weight,
        }
    }

    /// `n` equal-weight backends with distinct 10.x addresses and IDs 1..=n.
    fn backends(n: u32, weight: u16) -> Vec<MaglevBackend> {
        (0..n)
            .map(|i| {
                MaglevBackend::new(
                    i + 1,
                    IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
                    8080,
                    L4Proto::Tcp,
                )
                .with_weight(weight)
            })
            .collect()
    }

    fn counts(table: &[u32]) -> BTreeMap<u32, usize> {
        let mut c = BTreeMap::new();
        for &id in table {
            *c.entry(id).or_insert(0) += 1;
        }
        c
    }

    fn seed() -> MaglevSeed {
        MaglevSeed::default()
    }

    /// Deterministic xorshift shuffle, so tests need no RNG crate.
    fn shuffle<T>(v: &mut [T], mut state: u64) {
        for i in (1..v.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v.swap(i, (state % (i as u64 + 1)) as usize);
        }
    }

    #[test]
    fn default_seed_splits_like_cilium() {
        // base64 "JLfvgnHc2kaSUFaI" = 24 b7 ef 82 | 71 dc da 46 | 92 50 56 88.
        assert_eq!(MaglevSeed::default(), MaglevSeed { murmur: 0x24b7_ef82, jhash0: 0x71dc_da46, jhash1: 0x9250_5688 });
    }

    #[test]
    fn base64_decoder() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(decode_base64("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        assert!(decode_base64("Zm9").is_err());
        assert!(decode_base64("Zm9v!mFy").is_err());
        assert!(decode_base64("Zg==Zm9v").is_err());
        assert!(decode_base64("Z===").is_err());
        assert!(decode_base64("Zh==").is_err()); // non-canonical
    }

    #[test]
    fn bad_seeds_are_rejected() {
        for s in ["", "not base64!!", "JLfvgnHc2kaS", "JLfvgnHc2kaSUFaIAAAA", "JLfvgnHc2kaSUFa"] {
            let err = MaglevSeed::from_base64(s).unwrap_err();
            assert!(matches!(err, MaglevError::BadSeed { .. }), "{s:?}: {err}");
        }
        let msg = MaglevSeed::from_base64("JLfvgnHc2kaS").unwrap_err().to_string();
        assert!(msg.contains("9 bytes") && msg.contains("12"), "{msg}");
    }

    #[test]
    fn hash_strings_match_cilium_format() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(backend_hash_string(v4, 80, L4Proto::Tcp), "[10.0.0.1:80/TCP,State:active]");
        assert_eq!(backend_hash_string(v4, 53, L4Proto::Udp), "[10.0.0.1:53/UDP,State:active]");
        let v6: IpAddr = "fd00:0:0::1".parse().unwrap();
        assert_eq!(backend_hash_string(v6, 443, L4Proto::Sctp), "[[fd00::1]:443/SCTP,State:active]");
        let mapped = IpAddr::V6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped());
        assert_eq!(backend_hash_string(mapped, 0, L4Proto::Any), "[[::ffff:1.2.3.4]:0/ANY,State:active]");
        assert_eq!(backend_hash_string(IpAddr::V6(Ipv6Addr::LOCALHOST), 1, L4Proto::Tcp), "[[::1]:1/TCP,State:active]");
        assert_eq!(backend_hash_string_scoped(v4, 80, L4Proto::Tcp, true), "[10.0.0.1:80/TCP/i,State:active]");
        // Cilium's mkAddr(1).
        assert_eq!(cilium_backend(1, 0, 1).hash_string, "[0.0.0.1:1/TCP,State:active]");
    }

    /// Cilium `TestWeightedBackendWithRemoval`: weights 2/13/111/10 at M=1021.
    #[test]
    fn cilium_weighted_counts() {
        let bs = vec![
            cilium_backend(1, 1, 2),
            cilium_backend(2, 2, 13),
            cilium_backend(3, 3, 111),
            cilium_backend(4, 4, 10),
        ];
        for build in [build_table, build_table_full_permutation] {
            let before = build(&bs, 1021, &seed()).unwrap();
            let c = counts(&before);
            assert_eq!(c.into_iter().collect::<Vec<_>>(), vec![(1, 16), (2, 98), (3, 832), (4, 75)]);
            // Removing backend 1 reassigns its slots; Cilium asserts that less
            // than 1% of the others move for these particular names.
            let after = build(&bs[1..], 1021, &seed()).unwrap();
            let moved = before.iter().zip(&after).filter(|(b, a)| **b != 1 && a != b).count();
            assert!((moved as f64) / 1021.0 < 0.01, "moved {moved}");
        }
    }

    /// Cilium `TestReproducible`: the whole table at M=251, run-length encoded.
    #[test]
    fn cilium_reproducible_table() {
        const EXPECTED: &str = "2(5),3(1),2(3),1(1),2(2),0(1),2(1),3(1),2(1),3(1),2(1),1(1),2(7),1(1),2(14),3(1),2(1),\
            1(2),2(12),3(1),2(3),1(1),2(4),3(1),2(8),3(1),2(2),1(1),2(16),1(2),2(3),3(1),2(11),1(2),2(4),3(1),2(3),\
            1(1),2(4),3(1),2(1),0(1),1(1),2(8),1(1),2(7),1(1),2(4),3(1),2(1),3(1),2(9),1(2),2(5),1(1),2(7),3(1),2(1),\
            3(1),1(1),2(8),1(1),2(4),0(1),2(1),1(1),2(5),3(1),2(3),1(1),2(4),3(1),2(3),1(1),2(12),0(1),3(1),2(3),3(1),\
            2(4),3(1),2(2),1(1),2(7)";
        let mut expected = Vec::new();
        for run in EXPECTED.split(',') {
            let (id, count) = run.trim_end_matches(')').split_once('(').unwrap();
            let (id, count): (u32, usize) = (id.parse().unwrap(), count.parse().unwrap());
            expected.extend(std::iter::repeat_n(id, count));
        }
        let bs = vec![
            cilium_backend(1, 0, 2),
            cilium_backend(3, 1, 13),
            cilium_backend(4, 2, 111),
            cilium_backend(5, 3, 10),
        ];
        assert_eq!(build_table(&bs, 251, &seed()).unwrap(), expected);
        assert_eq!(build_table_full_permutation(&bs, 251, &seed()).unwrap(), expected);
    }

    /// Pins our own output so that a change of hash, string format or order
    /// is caught: 3 named backends, default weight and seed, M = 251.
    #[test]
    fn golden_first_entries() {
        let bs = vec![
            MaglevBackend::new(10, "10.0.0.1".parse().unwrap(), 80, L4Proto::Tcp),
            MaglevBackend::new(20, "10.0.0.2".parse().unwrap(), 80, L4Proto::Tcp),
            MaglevBackend::new(30, "fd00::3".parse().unwrap(), 80, L4Proto::Tcp),
        ];
        let table = build_table(&bs, 251, &seed()).unwrap();
        assert_eq!(table[..16], GOLDEN_251);
    }

    /// Computed by this implementation (whose Cilium compatibility the two
    /// `cilium_*` tests establish) and pinned on 2026-11-21.
    const GOLDEN_251: [u32; 16] = [30, 20, 10, 30, 20, 10, 30, 20, 10, 10, 20, 10, 30, 20, 30, 10];

    fn assert_balanced(n: u32, m: u32) {
        let table = build_table(&backends(n, DEFAULT_BACKEND_WEIGHT), m, &seed()).unwrap();
        let c = counts(&table);
        assert_eq!(c.len(), n as usize);
        let (lo, hi) = ((m / n) as usize, m.div_ceil(n) as usize);
        for (id, count) in c {
            assert!((lo..=hi).contains(&count), "backend {id}: {count} not in {lo}..={hi}");
        }
    }

    #[test]
    fn balanced_3_of_1021() {
        assert_balanced(3, 1021);
    }

    #[test]
    fn balanced_100_of_16381() {
        assert_balanced(100, 16381);
    }

    #[test]
    fn balanced_1000_of_65521() {
        assert_balanced(1000, 65521);
    }

    #[test]
    fn default_weights_equal_unweighted_table() {
        let w100 = build_table(&backends(50, DEFAULT_BACKEND_WEIGHT), 4093, &seed()).unwrap();
        let w1 = build_table(&backends(50, 1), 4093, &seed()).unwrap();
        let w7 = build_table(&backends(50, 7), 4093, &seed()).unwrap();
        assert_eq!(w100, w1);
        assert_eq!(w100, w7);
    }

    #[test]
    fn minimal_disruption_on_removal() {
        let all = backends(100, DEFAULT_BACKEND_WEIGHT);
        let before = build_table(&all, 16381, &seed()).unwrap();
        for removed_idx in [0usize, 37, 99] {
            let removed = all[removed_idx].id;
            let rest: Vec<_> = all.iter().filter(|b| b.id != removed).cloned().collect();
            let after = build_table(&rest, 16381, &seed()).unwrap();
            let mut moved = 0usize;
            let mut survivors_slots = 0usize;
            for (b, a) in before.iter().zip(&after) {
                assert_ne!(*a, removed);
                if *b != removed {
                    survivors_slots += 1;
                    if a != b {
                        moved += 1;
                    }
                }
            }
            let frac = moved as f64 / survivors_slots as f64;
            assert!(frac < 0.03, "removing {removed}: {moved}/{survivors_slots} moved");
        }
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut bs = backends(200, DEFAULT_BACKEND_WEIGHT);
        for (i, b) in bs.iter_mut().enumerate() {
            b.weight = 1 + (i as u16 * 37) % 300;
        }
        let reference = build_table(&bs, 16381, &seed()).unwrap();
        for round in 1..=5u64 {
            shuffle(&mut bs, 0x9e37_79b9_7f4a_7c15 ^ round);
            assert_eq!(build_table(&bs, 16381, &seed()).unwrap(), reference);
        }
    }

    #[test]
    fn matches_full_permutation_oracle() {
        type WeightOf = fn(usize) -> u16;
        let cases: &[(u32, u32, WeightOf)] = &[
            (1, 251, |_| 100),
            (2, 251, |_| 1),
            (3, 1021, |_| 100),
            (7, 509, |i| [1, 2, 3, 500, 65535, 9, 100][i]),
            (10, 2039, |i| (i as u16 + 1) * 10),
            (97, 8191, |i| 1 + (i as u16 % 5)),
            (100, 16381, |_| DEFAULT_BACKEND_WEIGHT),
            (150, 16381, |i| if i % 10 == 0 { 1000 } else { 100 }),
            (300, 251, |_| 100), // more backends than slots
            (40, 32749, |i| 1 + ((i * 7919) % 1000) as u16),
        ];
        for &(n, m, weight) in cases {
            let mut bs = backends(n, 1);
            for (i, b) in bs.iter_mut().enumerate() {
                b.weight = weight(i);
            }
            assert_eq!(
                build_table(&bs, m, &seed()).unwrap(),
                build_table_full_permutation(&bs, m, &seed()).unwrap(),
                "n={n} m={m}"
            );
        }
    }

    #[test]
    fn other_seed_gives_other_table() {
        let bs = backends(5, DEFAULT_BACKEND_WEIGHT);
        let other = MaglevSeed::from_base64("AAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(other.murmur, 0);
        assert_ne!(build_table(&bs, 1021, &seed()).unwrap(), build_table(&bs, 1021, &other).unwrap());
    }

    #[test]
    fn zero_weight_backends_are_excluded() {
        let mut bs = backends(4, DEFAULT_BACKEND_WEIGHT);
        bs[2].weight = 0;
        let table = build_table(&bs, 1021, &seed()).unwrap();
        assert!(!table.contains(&bs[2].id));
        let without: Vec<_> = bs.iter().filter(|b| b.weight > 0).cloned().collect();
        assert_eq!(table, build_table(&without, 1021, &seed()).unwrap());
        assert_eq!(table, build_table_full_permutation(&bs, 1021, &seed()).unwrap());
    }

    #[test]
    fn errors() {
        let bs = backends(3, DEFAULT_BACKEND_WEIGHT);
        for build in [build_table, build_table_full_permutation] {
            for bad in [0, 1, 250, 1000, 16383, 65537, 131072, u32::MAX] {
                let err = build(&bs, bad, &seed()).unwrap_err();
                assert_eq!(err, MaglevError::UnsupportedTableSize { size: bad });
                let msg = err.to_string();
                assert!(msg.contains(&bad.to_string()) && msg.contains("16381"), "{msg}");
            }
            assert_eq!(build(&[], 251, &seed()), Err(MaglevError::NoBackends));
            let zero = backends(2, 0);
            assert_eq!(build(&zero, 251, &seed()), Err(MaglevError::AllWeightsZero { count: 2 }));
            let mut dup = backends(3, 100);
            dup[2].hash_string = dup[0].hash_string.clone();
            assert_eq!(
                build(&dup, 251, &seed()),
                Err(MaglevError::DuplicateBackend {
                    hash_string: dup[0].hash_string.clone(),
                    first_id: 1,
                    second_id: 3,
                })
            );
        }
        assert!(MaglevError::AllWeightsZero { count: 2 }.to_string().contains("weight 0"));
    }

    #[test]
    fn modular_inverse() {
        for m in SUPPORTED_TABLE_SIZES {
            for a in [1, 2, 3, m / 2, m - 2, m - 1] {
                let inv = inverse_mod_prime(a, m);
                assert!(inv > 0 && inv < m);
                assert_eq!(u64::from(a) * u64::from(inv) % u64::from(m), 1, "{a} mod {m}");
            }
        }
    }

    #[test]
    fn every_supported_size_fills_every_slot() {
        let bs = backends(13, DEFAULT_BACKEND_WEIGHT);
        for m in SUPPORTED_TABLE_SIZES {
            let table = build_table(&bs, m, &seed()).unwrap();
            assert_eq!(table.len(), m as usize);
            assert_eq!(counts(&table).len(), 13);
        }
    }
}
