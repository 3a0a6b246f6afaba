//! A set of free addresses kept as disjoint, non-adjacent closed intervals over `u128`.
//!
//! IPv4 addresses are stored as their `u32` value widened to `u128`, IPv6 as-is, so one type
//! serves both families (a pool keeps one set per family). Every operation is O(log n) in the
//! number of intervals, and memory grows with fragmentation, not with the size of the range:
//! a free /64 is one entry.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family of an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }

    /// Converts a `u128` position back to an address of this family.
    pub fn addr(self, v: u128) -> IpAddr {
        match self {
            // Values of a V4 set never exceed u32::MAX: they are only ever built from IPv4 addresses.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An address as a `u128` position within its family.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Disjoint closed intervals `[start, end]`, keyed by `start`. Adjacent intervals are merged,
/// so the representation of a given set is unique (two equal sets compare equal).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalSet {
    spans: BTreeMap<u128, u128>,
    /// Number of members, saturating at `u128::MAX` (only a full IPv6 /0 reaches it).
    len: u128,
}

impl IntervalSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of members (saturating).
    pub fn len(&self) -> u128 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Number of intervals (a measure of fragmentation).
    pub fn intervals(&self) -> usize {
        self.spans.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.spans.iter().map(|(&s, &e)| (s, e))
    }

    pub fn contains(&self, v: u128) -> bool {
        self.spans.range(..=v).next_back().is_some_and(|(_, &e)| e >= v)
    }

    /// The lowest member, if any.
    pub fn first(&self) -> Option<u128> {
        self.spans.first_key_value().map(|(&s, _)| s)
    }

    /// Adds `[start, end]`, merging with neighbours. Members already present are not counted twice.
    pub fn insert_range(&mut self, start: u128, end: u128) {
        debug_assert!(start <= end);
        let (mut s, mut e) = (start, end);
        // Absorb every interval that overlaps or touches [s, e].
        loop {
            let touching = self
                .spans
                .range(..=e.saturating_add(1))
                .next_back()
                .map(|(&ps, &pe)| (ps, pe))
                .filter(|&(_, pe)| pe.saturating_add(1) >= s);
            let Some((ps, pe)) = touching else { break };
            self.spans.remove(&ps);
            self.len = self.len.saturating_sub(span_len(ps, pe));
            s = s.min(ps);
            e = e.max(pe);
        }
        self.spans.insert(s, e);
        self.len = self.len.saturating_add(span_len(s, e));
    }

    pub fn insert(&mut self, v: u128) {
        self.insert_range(v, v);
    }

    /// Removes every member of `[start, end]`.
    pub fn remove_range(&mut self, start: u128, end: u128) {
        debug_assert!(start <= end);
        loop {
            let hit = self.spans.range(..=end).next_back().map(|(&ps, &pe)| (ps, pe)).filter(|&(_, pe)| pe >= start);
            let Some((ps, pe)) = hit else { break };
            self.spans.remove(&ps);
            self.len = self.len.saturating_sub(span_len(ps, pe));
            if ps < start {
                self.spans.insert(ps, start - 1);
                self.len = self.len.saturating_add(span_len(ps, start - 1));
            }
            if pe > end {
                self.spans.insert(end + 1, pe);
                self.len = self.len.saturating_add(span_len(end + 1, pe));
            }
            if ps < start {
                // Everything at or after `start` has been handled; earlier spans end before it.
                break;
            }
        }
    }

    /// Removes `v`; returns whether it was a member.
    pub fn remove(&mut self, v: u128) -> bool {
        if !self.contains(v) {
            return false;
        }
        self.remove_range(v, v);
        true
    }

    /// Removes and returns the lowest member.
    pub fn pop_first(&mut self) -> Option<u128> {
        let (s, e) = self.spans.pop_first()?;
        self.len = self.len.saturating_sub(1);
        if s < e {
            self.spans.insert(s + 1, e);
        }
        Some(s)
    }

    /// Removes and returns the lowest member `>= from`, if any.
    pub fn pop_first_from(&mut self, from: u128) -> Option<u128> {
        let v = if self.contains(from) { from } else { *self.spans.range(from..).next()?.0 };
        self.remove(v);
        Some(v)
    }

    /// Number of members in `[start, end]`.
    pub fn count_in(&self, start: u128, end: u128) -> u128 {
        let mut n: u128 = 0;
        let first = self.spans.range(..=start).next_back().map(|(&s, _)| s).unwrap_or(start);
        for (&s, &e) in self.spans.range(first..=end) {
            let (a, b) = (s.max(start), e.min(end));
            if a <= b {
                n = n.saturating_add(span_len(a, b));
            }
        }
        n
    }
}

/// Size of `[s, e]`, saturating (only [0, u128::MAX] saturates).
fn span_len(s: u128, e: u128) -> u128 {
    (e - s).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn insert_merges_adjacent_and_overlapping() {
        let mut s = IntervalSet::new();
        s.insert_range(10, 19);
        s.insert_range(30, 39);
        s.insert_range(20, 29);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(10, 39)]);
        assert_eq!(s.len(), 30);
        s.insert_range(5, 12);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(5, 39)]);
        assert_eq!(s.len(), 35);
    }

    #[test]
    fn remove_splits() {
        let mut s = IntervalSet::new();
        s.insert_range(0, 9);
        assert!(s.remove(5));
        assert!(!s.remove(5));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, 4), (6, 9)]);
        s.remove_range(3, 7);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, 2), (8, 9)]);
        assert_eq!(s.len(), 5);
        assert_eq!(s.count_in(1, 8), 3);
    }

    #[test]
    fn full_ipv6_space_saturates() {
        let mut s = IntervalSet::new();
        s.insert_range(0, u128::MAX);
        assert_eq!(s.len(), u128::MAX);
        assert_eq!(s.pop_first(), Some(0));
        assert_eq!(s.first(), Some(1));
        assert!(s.remove(u128::MAX));
        assert!(!s.contains(u128::MAX));
    }

    proptest! {
        /// The interval set behaves exactly like a set of integers under any operation sequence.
        #[test]
        fn matches_a_plain_set(ops in proptest::collection::vec((0u8..5, 0u128..200, 0u128..20), 0..200)) {
            let mut s = IntervalSet::new();
            let mut model = BTreeSet::new();
            for (op, a, w) in ops {
                let b = a + w;
                match op {
                    0 => { s.insert_range(a, b); model.extend(a..=b); }
                    1 => { s.remove_range(a, b); for v in a..=b { model.remove(&v); } }
                    2 => { prop_assert_eq!(s.pop_first(), model.pop_first()); }
                    3 => {
                        let want = model.range(a..).next().copied();
                        if let Some(v) = want { model.remove(&v); }
                        prop_assert_eq!(s.pop_first_from(a), want);
                    }
                    _ => { prop_assert_eq!(s.count_in(a, b), model.range(a..=b).count() as u128); }
                }
                prop_assert_eq!(s.len(), model.len() as u128);
                prop_assert_eq!(s.first(), model.first().copied());
                // Canonical form: disjoint, non-adjacent, ordered.
                let spans: Vec<_> = s.iter().collect();
                for w in spans.windows(2) { prop_assert!(w[0].1 + 1 < w[1].0); }
            }
            for v in 0..230 { prop_assert_eq!(s.contains(v), model.contains(&v)); }
        }
    }
}
