//! Fuzz the ARP request and NDP solicitation parsers the responders run on every frame of the
//! LAN, and the replies built from what they accept.
#![no_main]

use halyard_l2::{arp, ndp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(req) = arp::parse_request(data) {
        let _ = arp::reply(&req, [2, 0, 0, 0, 0, 1].into());
    }
    if let Some(ns) = ndp::parse_solicitation(data) {
        let _ = ndp::advertisement(&ns, [2, 0, 0, 0, 0, 1]);
    }
});
