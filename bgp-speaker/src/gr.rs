//! The receiving-speaker ("helper") side of graceful restart (RFC 4724 §4.2), pure and with
//! explicit time like [`crate::fsm`]: it decides which families' routes of a restarting peer are
//! kept (stale) and when they go; the session driver carries that out (its status, or
//! [`crate::session::Learned`] messages to a RIB).
//!
//! - The session is lost by a TCP failure (closed or reset without a NOTIFICATION) or by hold
//!   timer expiry, both sides advertised the capability, and the peer's last OPEN listed
//!   families: its routes of those families are kept, marked stale; the others go at once. The
//!   peer's Restart Time starts (§4.2: routes are deleted if the session is not back by then).
//!   Hold timer expiry is included as RFC 8538 §4 does (for us it means a peer that went silent,
//!   as a restarting one does).
//! - The session is back: a family the new OPEN does not list, or lists with the Forwarding
//!   State bit clear, loses its stale routes at once (§4.2). The others wait for the peer's
//!   End-of-RIB, at most [`STALE_PATH_MS`].
//! - End-of-RIB for a family: the routes of that family still stale (not re-advertised since)
//!   are deleted (§4.2).

use std::collections::BTreeSet;

use crate::fsm::Millis;
use crate::wire::{AfiSafi, GracefulRestart};

/// How long stale routes wait for End-of-RIB once the session is back (RFC 4724 §4.2 leaves
/// the value local; 360 s is FRR's default `stalepath-time`).
pub const STALE_PATH_MS: Millis = 360_000;

/// One peer's helper state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrHelper {
    /// The peer's capability in the OPEN of the session that is (or was last) Established.
    peer_cap: Option<GracefulRestart>,
    /// Families whose routes are stale.
    stale: BTreeSet<AfiSafi>,
    /// When the stale routes go if nothing else removed them.
    deadline: Option<Millis>,
}

impl GrHelper {
    /// The session reached Established with this OPEN capability (`None`: the peer did not
    /// advertise graceful restart). Returns the stale families to flush now.
    pub fn established(&mut self, now: Millis, cap: Option<GracefulRestart>) -> Vec<AfiSafi> {
        let keep =
            |f: &AfiSafi| cap.as_ref().is_some_and(|c| c.families.iter().any(|g| g.family == *f && g.forwarding_state));
        let flush: Vec<AfiSafi> = self.stale.iter().filter(|f| !keep(f)).copied().collect();
        self.stale.retain(keep);
        self.deadline = (!self.stale.is_empty()).then_some(now + STALE_PATH_MS);
        self.peer_cap = cap;
        flush
    }

    /// The Established session was lost. `enabled`: we advertised the capability too;
    /// `restartable`: a TCP failure or hold timer expiry (not a NOTIFICATION or BFD).
    /// Returns the families to keep as stale (`None`: not a restart, delete everything).
    pub fn lost(&mut self, now: Millis, enabled: bool, restartable: bool) -> Option<Vec<AfiSafi>> {
        let cap = self.peer_cap.take();
        let families: Vec<AfiSafi> = match cap.as_ref() {
            Some(c) if enabled && restartable && !c.families.is_empty() => {
                c.families.iter().map(|g| g.family).collect()
            }
            _ => {
                self.stale.clear();
                self.deadline = None;
                return None;
            }
        };
        self.stale.extend(families.iter().copied());
        // Families stale from an earlier restart that this capability does not list go now.
        self.stale.retain(|f| families.contains(f));
        let restart_time = cap.map_or(0, |c| Millis::from(c.restart_time));
        self.deadline = Some(now + restart_time * 1000);
        Some(families)
    }

    /// End-of-RIB for `family` (RFC 4724 §2): whether its stale routes are to be flushed now.
    pub fn end_of_rib(&mut self, family: AfiSafi) -> bool {
        let was = self.stale.remove(&family);
        if self.stale.is_empty() {
            self.deadline = None;
        }
        was
    }

    /// When [`Self::expire`] has something to do.
    pub fn deadline(&self) -> Option<Millis> {
        self.deadline
    }

    /// The restart or stale-path time ran out: every stale family is flushed.
    pub fn expire(&mut self, now: Millis) -> Vec<AfiSafi> {
        if self.deadline.is_none_or(|d| now < d) {
            return Vec::new();
        }
        self.deadline = None;
        std::mem::take(&mut self.stale).into_iter().collect()
    }

    /// Families whose routes are stale now.
    pub fn stale(&self) -> impl Iterator<Item = AfiSafi> + '_ {
        self.stale.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::GrFamily;

    const V4: AfiSafi = AfiSafi::IPV4_UNICAST;
    const V6: AfiSafi = AfiSafi::IPV6_UNICAST;

    fn cap(restart_time: u16, families: &[(AfiSafi, bool)]) -> Option<GracefulRestart> {
        Some(GracefulRestart {
            restart_state: false,
            notification: false,
            restart_time,
            families: families.iter().map(|&(family, f)| GrFamily { family, forwarding_state: f }).collect(),
        })
    }

    #[test]
    fn a_restart_keeps_the_listed_families_until_end_of_rib() {
        let mut h = GrHelper::default();
        assert!(h.established(0, cap(120, &[(V4, true), (V6, true)])).is_empty());
        assert_eq!(h.lost(1_000, true, true), Some(vec![V4, V6]));
        assert_eq!(h.deadline(), Some(121_000), "the peer's restart time");
        assert!(h.expire(120_999).is_empty());
        // Back within the restart time, with F set for IPv4 only: IPv6's stale routes go now.
        assert_eq!(h.established(5_000, cap(120, &[(V4, true), (V6, false)])), [V6]);
        assert_eq!(h.stale().collect::<Vec<_>>(), [V4]);
        assert_eq!(h.deadline(), Some(5_000 + STALE_PATH_MS));
        assert!(!h.end_of_rib(V6));
        assert!(h.end_of_rib(V4));
        assert_eq!(h.deadline(), None);
        assert!(h.stale().next().is_none());
    }

    #[test]
    fn stale_routes_go_when_the_peer_does_not_come_back_in_time() {
        let mut h = GrHelper::default();
        h.established(0, cap(30, &[(V4, false)]));
        assert_eq!(h.lost(0, true, true), Some(vec![V4]));
        assert_eq!(h.expire(30_000), [V4]);
        assert_eq!(h.deadline(), None);
        // Back without the capability at all: nothing left to flush.
        assert!(h.established(40_000, None).is_empty());
    }

    #[test]
    fn no_helping_without_both_capabilities_or_after_a_notification() {
        let mut h = GrHelper::default();
        h.established(0, cap(120, &[(V4, true)]));
        assert_eq!(h.lost(0, false, true), None, "we did not advertise graceful restart");
        h.established(0, cap(120, &[(V4, true)]));
        assert_eq!(h.lost(0, true, false), None, "NOTIFICATION or BFD down");
        h.established(0, None);
        assert_eq!(h.lost(0, true, true), None, "the peer did not advertise it");
        h.established(0, cap(120, &[]));
        assert_eq!(h.lost(0, true, true), None, "no families: nothing to keep");
        // A restart while routes are stale, then a full loss, clears everything.
        h.established(0, cap(120, &[(V4, true)]));
        h.lost(0, true, true);
        assert_eq!(h.established(1, cap(120, &[(V4, true)])), Vec::<AfiSafi>::new());
        assert_eq!(h.lost(2, true, false), None);
        assert!(h.stale().next().is_none() && h.deadline().is_none());
    }
}
