//! Header (RFC 4271 §6.1) and OPEN (RFC 4271 §6.2, RFC 5492) errors map to the right
//! NOTIFICATION.

mod common;

use std::net::Ipv4Addr;

use common::{hex, message};
use halyard_bgp::wire::*;

fn decode_err(bytes: &[u8]) -> DecodeError {
    Message::decode(bytes, &DecodeCxt::default()).unwrap_err()
}

fn code(e: &DecodeError) -> (u8, u8) {
    (e.notification.code.code(), e.notification.code.subcode())
}

#[test]
fn bad_marker_is_connection_not_synchronized() {
    let mut bytes = message(4, &[]);
    bytes[3] = 0;
    let e = decode_err(&bytes);
    assert_eq!(e.notification.code, ErrorCode::MessageHeader(HeaderSubcode::ConnectionNotSynchronized));
    assert!(e.notification.data.is_empty());
    // Detected before the header is complete.
    assert!(frame_len(&bytes[..5], &DecodeCxt::default()).is_err());
}

#[test]
fn bad_lengths_carry_the_length_field() {
    for (len, ty) in [(18u16, 4u8), (4097, 2), (20, 4), (28, 1), (22, 2), (20, 3), (22, 5), (0xffff, 2)] {
        let mut bytes = vec![0xff; 16];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.push(ty);
        bytes.resize(usize::from(len).max(19), 0);
        let e = decode_err(&bytes);
        assert_eq!(code(&e), (1, 2), "length {len} type {ty}");
        assert_eq!(e.notification.data, len.to_be_bytes(), "length {len} type {ty}");
    }
}

#[test]
fn bad_type_carries_the_type() {
    let e = decode_err(&message(9, &[]));
    assert_eq!(e.notification.code, ErrorCode::MessageHeader(HeaderSubcode::BadMessageType));
    assert_eq!(e.notification.data, [9]);
}

#[test]
fn frame_len_for_a_framing_reader() {
    let cxt = DecodeCxt::default();
    let bytes = common::update_msg(&[], &[], &hex("18 0a 00 00"));
    assert_eq!(frame_len(&[], &cxt), Ok(None));
    assert_eq!(frame_len(&bytes[..18], &cxt), Ok(None));
    assert_eq!(frame_len(&bytes[..19], &cxt), Ok(Some(bytes.len())));
    assert_eq!(frame_len(&bytes, &cxt), Ok(Some(bytes.len())));
    // Message::decode needs the whole message.
    assert_eq!(code(&Message::decode(&bytes[..20], &cxt).unwrap_err()), (1, 2));
}

fn open_body(version: u8, my_as: u16, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&my_as.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(u8::try_from(params.len()).unwrap());
    b.extend_from_slice(params);
    b
}

#[test]
fn open_unsupported_version_says_our_version() {
    let e = decode_err(&message(1, &open_body(3, 65001, 90, [1, 2, 3, 4], &[])));
    assert_eq!(e.notification.code, ErrorCode::Open(OpenSubcode::UnsupportedVersionNumber));
    assert_eq!(e.notification.data, [0, 4]);
}

#[test]
fn open_hold_time_one_or_two_is_unacceptable() {
    for hold in [1, 2] {
        let e = decode_err(&message(1, &open_body(4, 65001, hold, [1, 2, 3, 4], &[])));
        assert_eq!(e.notification.code, ErrorCode::Open(OpenSubcode::UnacceptableHoldTime));
    }
    for hold in [0, 3, 90] {
        assert!(
            Message::decode(&message(1, &open_body(4, 65001, hold, [1, 2, 3, 4], &[])), &DecodeCxt::default()).is_ok()
        );
    }
}

#[test]
fn open_zero_identifier_is_bad() {
    let e = decode_err(&message(1, &open_body(4, 65001, 90, [0, 0, 0, 0], &[])));
    assert_eq!(e.notification.code, ErrorCode::Open(OpenSubcode::BadBgpIdentifier));
}

#[test]
fn open_non_capability_parameter_is_unsupported() {
    // Type 1 (authentication, deprecated by RFC 5492).
    let e = decode_err(&message(1, &open_body(4, 65001, 90, [1, 2, 3, 4], &hex("01 02 00 00"))));
    assert_eq!(e.notification.code, ErrorCode::Open(OpenSubcode::UnsupportedOptionalParameter));
}

#[test]
fn open_malformed_capabilities_and_parameters() {
    for params in [
        "02 05 41 03 00 00 01",    // 4-octet AS of length 3
        "02 04 01 02 00 01",       // multiprotocol of length 2
        "02 04 40 02 00",          // capability overruns the parameter
        "02 09 41 04 00 00 fd e9", // parameter overruns opt parm len
    ] {
        let e = decode_err(&message(1, &open_body(4, 65001, 90, [1, 2, 3, 4], &hex(params))));
        assert_eq!(e.notification.code.code(), 2, "{params}");
    }
}

#[test]
fn open_validate_peer_as_identifier_and_required_capabilities() {
    let open = Open::new(65002, 90, Ipv4Addr::new(10, 0, 0, 2), vec![Capability::FourOctetAs(65002)]);
    let check = OpenCheck {
        local_as: 65001,
        local_bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        peer_as: Some(65002),
        required_capabilities: vec![],
    };
    assert_eq!(open.validate(&check), Ok(()));

    let n = open.validate(&OpenCheck { peer_as: Some(65003), ..check.clone() }).unwrap_err();
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::BadPeerAs));

    let ibgp = OpenCheck { local_as: 65002, local_bgp_id: Ipv4Addr::new(10, 0, 0, 2), ..check.clone() };
    assert_eq!(open.validate(&ibgp).unwrap_err().code, ErrorCode::Open(OpenSubcode::BadBgpIdentifier));

    let needs_mp = OpenCheck { required_capabilities: vec![cap_code::MULTIPROTOCOL, cap_code::FOUR_OCTET_AS], ..check };
    let n = open.validate(&needs_mp).unwrap_err();
    assert_eq!(n.code, ErrorCode::Open(OpenSubcode::UnsupportedCapability));
    assert_eq!(n.data, [1, 0]);
}

#[test]
fn decode_error_displays_reason_and_notification() {
    let e = decode_err(&message(9, &[]));
    let s = e.to_string();
    assert!(s.contains("bad message type 9"), "{s}");
    assert!(matches!(e.outcome(), Outcome::Reset(_)));
}
