//! RFC 7606 outcomes, attribute by attribute.

mod common;

use std::net::Ipv4Addr;

use common::{hex, update_msg};
use halyard_bgp::wire::*;

const ORIGIN: &str = "40 01 01 00";
const AS_PATH4: &str = "40 02 06 02 01 00 00 fd e9"; // [65001], 4-octet
const AS_PATH2: &str = "40 02 04 02 01 fd e9"; // [65001], 2-octet
const NEXT_HOP: &str = "40 03 04 c0 00 02 fe";
const NLRI: &str = "18 0a 00 00"; // 10.0.0.0/24

fn attrs(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|p| hex(p)).collect()
}

/// Decodes an UPDATE with the valid base attributes plus `extra`, in a 4-octet session.
fn decode_with(extra: &[&str]) -> Result<Update, DecodeError> {
    let mut parts = vec![ORIGIN, AS_PATH4, NEXT_HOP];
    parts.extend_from_slice(extra);
    decode(&update_msg(&[], &attrs(&parts), &hex(NLRI)), true)
}

fn decode(bytes: &[u8], four_octet_as: bool) -> Result<Update, DecodeError> {
    match Message::decode(bytes, &DecodeCxt::new(four_octet_as))? {
        (Message::Update(u), n) if n == bytes.len() => Ok(u),
        other => panic!("not an UPDATE: {other:?}"),
    }
}

fn reset_code(bytes: &[u8]) -> ErrorCode {
    decode(bytes, true).unwrap_err().notification.code
}

#[test]
fn clean_update_has_no_outcome() {
    let u = decode_with(&[]).unwrap();
    assert_eq!(u.outcome(), None);
    assert_eq!(u.attributes.len(), 3);
}

#[test]
fn treat_as_withdraw_cases() {
    for (what, bad) in [
        ("MED length 3 (§7.4)", "80 04 03 00 00 01"),
        ("LOCAL_PREF length 2 (§7.5)", "40 05 02 00 01"),
        ("COMMUNITIES length 5 (§7.8)", "c0 08 05 00 00 00 01 02"),
        ("COMMUNITIES length 0 (§7.8)", "c0 08 00"),
        ("ORIGINATOR_ID length 3 (§7.9)", "80 09 03 01 02 03"),
        ("CLUSTER_LIST length 6 (§7.10)", "80 0a 06 01 02 03 04 05 06"),
        ("EXTENDED_COMMUNITIES length 7 (§7.14)", "c0 10 07 00 02 fd e9 00 00 00"),
        ("LARGE_COMMUNITIES length 13 (RFC 8092)", "c0 20 0d 00 00 fd e9 00 00 00 01 00 00 00 02 03"),
        ("MED flagged well-known (§3.c)", "40 04 04 00 00 00 01"),
    ] {
        let u = decode_with(&[bad]).unwrap();
        assert_eq!(u.outcome(), Some(&Outcome::TreatAsWithdraw), "{what}: {:?}", u.problems);
    }
}

#[test]
fn malformed_mandatory_attributes_treat_as_withdraw() {
    for (what, parts) in [
        ("AS_PATH unknown segment type (§7.2)", [ORIGIN, "40 02 06 05 01 00 00 fd e9", NEXT_HOP]),
        ("AS_PATH segment overrun (§7.2)", [ORIGIN, "40 02 06 02 02 00 00 fd e9", NEXT_HOP]),
        ("AS_PATH one octet left (§7.2)", [ORIGIN, "40 02 07 02 01 00 00 fd e9 02", NEXT_HOP]),
        ("AS_PATH empty segment (§7.2)", [ORIGIN, "40 02 02 02 00", NEXT_HOP]),
        ("AS_PATH with AS 0 (RFC 7607)", [ORIGIN, "40 02 06 02 01 00 00 00 00", NEXT_HOP]),
        ("NEXT_HOP length 5 (§7.3)", [ORIGIN, AS_PATH4, "40 03 05 c0 00 02 fe 00"]),
        ("ORIGIN flagged optional (§3.c)", ["c0 01 01 00", AS_PATH4, NEXT_HOP]),
        ("ORIGIN value 3 (§7.1)", ["40 01 01 03", AS_PATH4, NEXT_HOP]),
        ("ORIGIN length 2 (§7.1)", ["40 01 02 00 00", AS_PATH4, NEXT_HOP]),
    ] {
        let u = decode(&update_msg(&[], &attrs(&parts), &hex(NLRI)), true).unwrap();
        assert_eq!(u.outcome(), Some(&Outcome::TreatAsWithdraw), "{what}: {:?}", u.problems);
    }
}

#[test]
fn attribute_discard_cases() {
    for (what, bad) in [
        ("ATOMIC_AGGREGATE length 1 (§7.6)", "40 06 01 00"),
        ("AGGREGATOR length 6 in a 4-octet session (§7.7)", "c0 07 06 fd e9 c0 00 02 01"),
        ("AGGREGATOR AS 0 (RFC 7607)", "c0 07 08 00 00 00 00 c0 00 02 01"),
        ("AS4_PATH from a 4-octet peer (RFC 6793 §4.1)", "c0 11 06 02 01 00 00 fd e9"),
        ("AS4_AGGREGATOR from a 4-octet peer (RFC 6793 §4.1)", "c0 12 08 00 00 fd e9 c0 00 02 01"),
        ("duplicate ORIGIN (§3.g)", "40 01 01 02"),
    ] {
        let u = decode_with(&[bad]).unwrap();
        assert_eq!(u.outcome(), Some(&Outcome::AttributeDiscard), "{what}: {:?}", u.problems);
        assert_eq!(u.attributes.len(), 3, "{what}");
    }
    // The first ORIGIN wins.
    assert_eq!(decode_with(&["40 01 01 02"]).unwrap().origin(), Some(&Origin::Igp));
}

#[test]
fn malformed_as4_attributes_from_a_2_octet_peer_are_discarded() {
    for bad in ["c0 11 03 02 01 00", "c0 11 06 07 01 00 00 fd e9", "c0 12 06 00 00 fd e9 00 00"] {
        let bytes = update_msg(&[], &attrs(&[ORIGIN, AS_PATH2, NEXT_HOP, bad]), &hex(NLRI));
        let u = decode(&bytes, false).unwrap();
        assert_eq!(u.outcome(), Some(&Outcome::AttributeDiscard), "{bad}: {:?}", u.problems);
        assert_eq!(u.as_path(), Some(&AsPath::sequence(vec![65001])));
    }
}

#[test]
fn garbled_unknown_optional_transitive_is_kept_and_passed_on_partial() {
    // Type 99, optional transitive, content we cannot interpret: not our problem (RFC 4271 §5).
    let u = decode_with(&["c0 63 03 de ad be"]).unwrap();
    assert_eq!(u.outcome(), None);
    let Some(PathAttribute::Unknown(raw)) = u.attributes.last() else { panic!("{:?}", u.attributes) };
    assert_eq!((raw.flags, raw.type_code, raw.value.as_slice()), (0xc0, 99, &[0xde, 0xad, 0xbe][..]));
    let fwd = raw.for_propagation().unwrap();
    assert_eq!(fwd.flags, 0xe0, "Partial set when passed on");
    // Optional non-transitive unknowns are not passed on.
    let u = decode_with(&["80 63 01 00"]).unwrap();
    let Some(PathAttribute::Unknown(raw)) = u.attributes.last() else { panic!() };
    assert_eq!(raw.for_propagation(), None);
}

#[test]
fn garbled_unknown_plus_bad_communities_is_withdraw_not_reset() {
    let u = decode_with(&["c0 63 02 ff ff", "c0 08 03 00 00 01"]).unwrap();
    assert_eq!(u.outcome(), Some(&Outcome::TreatAsWithdraw));
    let w = u.into_withdraw();
    assert_eq!(w.withdrawn, vec!["10.0.0.0/24".parse().unwrap()]);
    assert!(w.nlri.is_empty());
}

#[test]
fn treat_as_withdraw_still_returns_prefixes() {
    // ORIGIN is bad; the NLRI and an IPv6 MP_REACH must come back as withdrawals.
    let mp_reach = "80 0e 1c 00 02 01 10 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 00 30 20 01 0d b8 00 01";
    let bytes = update_msg(&hex("08 0b"), &attrs(&["40 01 01 09", AS_PATH4, NEXT_HOP, mp_reach]), &hex(NLRI));
    let u = decode(&bytes, true).unwrap();
    assert_eq!(u.outcome(), Some(&Outcome::TreatAsWithdraw));
    let w = u.into_withdraw();
    assert_eq!(w.withdrawn, vec!["11.0.0.0/8".parse().unwrap(), "10.0.0.0/24".parse().unwrap()]);
    assert_eq!(w.mp_unreach(), Some(&MpUnreach::Ipv6Unicast(vec!["2001:db8:1::/48".parse().unwrap()])));
    assert!(w.mp_reach().is_none() && w.origin().is_none());
}

#[test]
fn attribute_length_overruns_are_treat_as_withdraw() {
    // RFC 7606 §4: the last attribute overruns the Total Path Attribute Length...
    let bytes = update_msg(&[], &attrs(&[ORIGIN, AS_PATH4, NEXT_HOP, "c0 08 08 00 00"]), &hex(NLRI));
    let u = decode(&bytes, true).unwrap();
    assert_eq!(u.outcome(), Some(&Outcome::TreatAsWithdraw));
    assert_eq!(u.nlri.len(), 1, "NLRI located through the Total Path Attribute Length");
    // ...or fewer than 3 octets remain.
    let bytes = update_msg(&[], &attrs(&[ORIGIN, AS_PATH4, NEXT_HOP, "c0 08"]), &hex(NLRI));
    assert_eq!(decode(&bytes, true).unwrap().outcome(), Some(&Outcome::TreatAsWithdraw));
    // An MP_REACH_NLRI that overruns cannot be located: session reset.
    let bytes = update_msg(&[], &attrs(&[ORIGIN, AS_PATH4, "80 0e 20 00 02 01 10"]), &[]);
    assert_eq!(reset_code(&bytes), ErrorCode::Update(UpdateSubcode::AttributeLengthError));
    // Extended length with only one length octet.
    let bytes = update_msg(&[], &attrs(&[ORIGIN, AS_PATH4, NEXT_HOP, "d0 08 00"]), &hex(NLRI));
    assert_eq!(decode(&bytes, true).unwrap().outcome(), Some(&Outcome::TreatAsWithdraw));
}

#[test]
fn missing_mandatory_attributes_are_treat_as_withdraw() {
    // RFC 7606 §3.d
    for parts in [[AS_PATH4, NEXT_HOP], [ORIGIN, NEXT_HOP], [ORIGIN, AS_PATH4]] {
        let u = decode(&update_msg(&[], &attrs(&parts), &hex(NLRI)), true).unwrap();
        assert_eq!(u.outcome(), Some(&Outcome::TreatAsWithdraw), "{parts:?}");
    }
    // No NLRI: nothing is mandatory (a withdraw-only UPDATE).
    let u = decode(&update_msg(&hex(NLRI), &[], &[]), true).unwrap();
    assert_eq!(u.outcome(), None);
    // MP_REACH only: NEXT_HOP is not needed, ORIGIN and AS_PATH are.
    let mp_reach = "80 0e 1a 00 02 01 10 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 00 20 20 01 0d b8";
    let u = decode(&update_msg(&[], &attrs(&[ORIGIN, AS_PATH4, mp_reach]), &[]), true).unwrap();
    assert_eq!(u.outcome(), None);
    let u = decode(&update_msg(&[], &attrs(&[mp_reach]), &[]), true).unwrap();
    assert_eq!(u.outcome(), Some(&Outcome::TreatAsWithdraw));
}

#[test]
fn session_reset_cases() {
    let base = attrs(&[ORIGIN, AS_PATH4, NEXT_HOP]);
    let with = |extra: &str| {
        let mut a = base.clone();
        a.extend(hex(extra));
        update_msg(&[], &a, &hex(NLRI))
    };
    // RFC 7606 §7.11: MP_REACH next hop length inconsistent / NLRI unparseable.
    assert_eq!(
        reset_code(&with("80 0e 0b 00 02 01 05 01 02 03 04 05 00 00")),
        ErrorCode::Update(UpdateSubcode::OptionalAttributeError)
    );
    assert_eq!(
        reset_code(&with("80 0e 0a 00 01 01 04 0a 00 00 01 00 21 0a")),
        ErrorCode::Update(UpdateSubcode::OptionalAttributeError)
    );
    // MP_UNREACH with a prefix overrun (§7.12) or too short to hold AFI/SAFI.
    assert_eq!(reset_code(&with("80 0f 05 00 02 01 40 20")), ErrorCode::Update(UpdateSubcode::OptionalAttributeError));
    assert_eq!(reset_code(&with("80 0f 02 00 02")), ErrorCode::Update(UpdateSubcode::OptionalAttributeError));
    // §3.g: duplicate MP_UNREACH.
    assert_eq!(
        reset_code(&with("80 0f 03 00 02 01 80 0f 03 00 02 01")),
        ErrorCode::Update(UpdateSubcode::MalformedAttributeList)
    );
    // Unrecognized well-known attribute (RFC 4271 §6.3), data = the attribute.
    let e = decode(&with("40 63 01 00"), true).unwrap_err();
    assert_eq!(e.notification.code, ErrorCode::Update(UpdateSubcode::UnrecognizedWellKnownAttribute));
    assert_eq!(e.notification.data, hex("40 63 01 00"));
    // RFC 7606 §5.3: NLRI / withdrawn routes that cannot be parsed.
    assert_eq!(
        reset_code(&update_msg(&[], &base, &hex("21 0a 00 00 00 00"))),
        ErrorCode::Update(UpdateSubcode::InvalidNetworkField)
    );
    assert_eq!(reset_code(&update_msg(&hex("18 0a"), &[], &[])), ErrorCode::Update(UpdateSubcode::InvalidNetworkField));
}

#[test]
fn length_fields_overrunning_the_message_are_malformed_attribute_list() {
    // RFC 4271 §6.3: Withdrawn Routes Length / Total Path Attribute Length too large.
    let bytes = common::message(2, &hex("00 05 18 0a 00 00"));
    assert_eq!(reset_code(&bytes), ErrorCode::Update(UpdateSubcode::MalformedAttributeList));
    let bytes = common::message(2, &hex("00 00 00 09 40 01 01 00"));
    assert_eq!(reset_code(&bytes), ErrorCode::Update(UpdateSubcode::MalformedAttributeList));
}

#[test]
fn local_pref_and_communities_decode() {
    let u = decode_with(&["40 05 04 00 00 00 64", "c0 08 04 ff ff ff 02"]).unwrap();
    assert_eq!(u.local_pref(), Some(&100));
    assert_eq!(u.communities(), Some(&vec![Community::NO_ADVERTISE]));
    assert_eq!(u.next_hop(), Some(&Ipv4Addr::new(192, 0, 2, 254)));
}
