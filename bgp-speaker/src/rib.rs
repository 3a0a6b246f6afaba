//! Best-path selection (RFC 4271 §9.1.2) over the paths a RIB holds for one prefix.
//!
//! A session reports each received route with its [`PathInfo`]: the attributes that only matter
//! for selection and forwarding (origin, LOCAL_PREF, MED, next hops) plus who sent it. With the
//! route's [`RouteAttrs`] (the AS path) that is everything [`compare`] looks at.
//!
//! The order, first difference wins (RFC 4271 §9.1.2.2, with the tie-breaks BIRD, FRR and
//! GoBGP share):
//! 1. highest LOCAL_PREF (100 when an iBGP route has none; eBGP routes use 100, our import
//!    policy sets no other value);
//! 2. shortest AS_PATH (an AS_SET counts as its members here: sets are flattened on receipt);
//! 3. lowest ORIGIN (IGP < EGP < INCOMPLETE);
//! 4. lowest MULTI_EXIT_DISC, compared only between routes from the same neighbour AS (a missing
//!    MED counts as 0, §9.1.2.2 c);
//! 5. eBGP-learned over iBGP-learned;
//! 6. (interior cost to the next hop: not used, every next hop is treated as equally near);
//! 7. lowest BGP Identifier of the sender;
//! 8. lowest peer address.
//!
//! Step 4 is not transitive across neighbour ASes, so [`best`] walks the candidates in a fixed
//! order (the caller's, which is by peer address) and the result is deterministic.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::session::RouteAttrs;

/// LOCAL_PREF assumed when none was received (RFC 4271 §5.1.5 leaves the default to the
/// operator; 100 is what BIRD, FRR and GoBGP use).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// What a session knows about a received route besides its [`RouteAttrs`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathInfo {
    /// The sender's AS and BGP Identifier (from its OPEN).
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// The session is iBGP (same AS on both ends).
    pub ibgp: bool,
    /// ORIGIN: 0 IGP, 1 EGP, 2 INCOMPLETE.
    pub origin: u8,
    /// LOCAL_PREF as received (iBGP only; ignored from eBGP peers, RFC 4271 §5.1.5).
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    /// Next hop of the IPv4 prefixes: NEXT_HOP, or the MP_REACH next hop, which may be IPv6
    /// (RFC 8950).
    pub next_hop_v4_nlri: Option<IpAddr>,
    /// Global and link-local next hop of the IPv6 prefixes (RFC 2545 §3).
    pub next_hop_v6: Option<Ipv6Addr>,
    pub next_hop_v6_link_local: Option<Ipv6Addr>,
}

impl PathInfo {
    /// LOCAL_PREF used for selection.
    pub fn effective_local_pref(&self) -> u32 {
        if self.ibgp { self.local_pref.unwrap_or(DEFAULT_LOCAL_PREF) } else { DEFAULT_LOCAL_PREF }
    }

    /// The next hop to forward `v6` prefixes (or IPv4 ones) through.
    pub fn next_hop(&self, v6: bool) -> Option<IpAddr> {
        if v6 { self.next_hop_v6.map(IpAddr::V6) } else { self.next_hop_v4_nlri }
    }
}

/// One path for a prefix, as a RIB holds it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The peer the route came from.
    pub from: IpAddr,
    pub attrs: &'a RouteAttrs,
    pub info: &'a PathInfo,
}

impl Candidate<'_> {
    /// The neighbour AS for the MED rule: the first AS of the path, or our own AS (the
    /// sender's, for iBGP) when the path is empty.
    fn neighbour_as(&self) -> u32 {
        self.attrs.as_path.first().copied().unwrap_or(self.info.peer_asn)
    }
}

/// `Less` when `a` is the better path (so sorting puts the best first).
pub fn compare(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    let (ai, bi) = (a.info, b.info);
    bi.effective_local_pref()
        .cmp(&ai.effective_local_pref())
        .then_with(|| a.attrs.as_path.len().cmp(&b.attrs.as_path.len()))
        .then_with(|| ai.origin.cmp(&bi.origin))
        .then_with(|| {
            if a.neighbour_as() == b.neighbour_as() {
                ai.med.unwrap_or(0).cmp(&bi.med.unwrap_or(0))
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| ai.ibgp.cmp(&bi.ibgp))
        .then_with(|| ai.peer_router_id.cmp(&bi.peer_router_id))
        .then_with(|| a.from.cmp(&b.from))
}

/// Index of the best of `candidates` (walked in the given order), `None` when empty.
pub fn best(candidates: &[Candidate<'_>]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, c) in candidates.iter().enumerate() {
        match best {
            Some(b) if compare(c, &candidates[b]) != Ordering::Less => {}
            _ => best = Some(i),
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u8) -> PathInfo {
        PathInfo {
            peer_asn: 65001,
            peer_router_id: Ipv4Addr::new(10, 0, 0, id),
            ibgp: false,
            origin: 0,
            local_pref: None,
            med: None,
            next_hop_v4_nlri: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id))),
            next_hop_v6: None,
            next_hop_v6_link_local: None,
        }
    }

    fn path(asns: &[u32]) -> RouteAttrs {
        RouteAttrs { as_path: asns.to_vec(), ..Default::default() }
    }

    fn from(id: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, id))
    }

    /// Which of two (attrs, info) pairs wins, in both argument orders.
    fn winner(a: (&RouteAttrs, &PathInfo), b: (&RouteAttrs, &PathInfo)) -> char {
        let ca = Candidate { from: from(1), attrs: a.0, info: a.1 };
        let cb = Candidate { from: from(2), attrs: b.0, info: b.1 };
        let w1 = best(&[ca, cb]).unwrap();
        let w2 = best(&[cb, ca]).unwrap();
        assert_eq!(w1, 1 - w2, "the order of the candidates must not matter");
        if w1 == 0 { 'a' } else { 'b' }
    }

    #[test]
    fn local_pref_beats_a_shorter_path_and_is_ignored_from_ebgp() {
        let mut ia = info(1);
        ia.ibgp = true;
        ia.local_pref = Some(200);
        let ib = info(2);
        assert_eq!(winner((&path(&[1, 2, 3]), &ia), (&path(&[9]), &ib)), 'a');
        // The same LOCAL_PREF from an eBGP peer means nothing.
        ia.ibgp = false;
        assert_eq!(winner((&path(&[1, 2, 3]), &ia), (&path(&[9]), &ib)), 'b');
        // iBGP without LOCAL_PREF counts as 100.
        let mut ic = info(1);
        ic.ibgp = true;
        let mut id = info(2);
        id.ibgp = true;
        id.local_pref = Some(99);
        assert_eq!(winner((&path(&[1, 2]), &ic), (&path(&[1]), &id)), 'a');
    }

    #[test]
    fn then_path_length_then_origin() {
        let (ia, ib) = (info(1), info(2));
        assert_eq!(winner((&path(&[1, 2]), &ia), (&path(&[3]), &ib)), 'b');
        let mut ia = info(1);
        ia.origin = 2;
        assert_eq!(winner((&path(&[1]), &ia), (&path(&[3]), &ib)), 'b');
    }

    #[test]
    fn med_counts_only_between_routes_from_the_same_neighbour_as() {
        let mut ia = info(1);
        ia.med = Some(50);
        let mut ib = info(2);
        ib.med = Some(10);
        // Same neighbour AS 7: lower MED wins even though b's router id is higher.
        assert_eq!(winner((&path(&[7]), &ia), (&path(&[7]), &ib)), 'b');
        // Different neighbour AS: MED is skipped, the lower router id (a) wins.
        assert_eq!(winner((&path(&[7]), &ia), (&path(&[8]), &ib)), 'a');
        // A missing MED is 0 (the best).
        ia.med = None;
        assert_eq!(winner((&path(&[7]), &ia), (&path(&[7]), &ib)), 'a');
    }

    #[test]
    fn ebgp_over_ibgp_then_router_id_then_address() {
        let mut ia = info(1);
        ia.ibgp = true;
        let ib = info(2);
        assert_eq!(winner((&path(&[7]), &ia), (&path(&[7]), &ib)), 'b');
        let (ia, ib) = (info(3), info(2));
        assert_eq!(winner((&path(&[7]), &ia), (&path(&[7]), &ib)), 'b');
        // Same router id (two sessions to one router): the lower peer address wins.
        let same = info(5);
        let a = Candidate { from: from(9), attrs: &path(&[7]), info: &same };
        let attrs = path(&[7]);
        let b = Candidate { from: from(4), attrs: &attrs, info: &same };
        assert_eq!(compare(&a, &b), Ordering::Greater);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(best(&[]), None);
        let (a, i) = (path(&[]), info(1));
        assert_eq!(best(&[Candidate { from: from(1), attrs: &a, info: &i }]), Some(0));
    }

    #[test]
    fn next_hop_per_family() {
        let mut i = info(1);
        i.next_hop_v6 = Some("fd00::1".parse().unwrap());
        assert_eq!(i.next_hop(false), Some(from(1)));
        assert_eq!(i.next_hop(true), Some("fd00::1".parse().unwrap()));
    }
}
