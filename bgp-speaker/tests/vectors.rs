//! Byte vectors written from the RFC diagrams, checked in both directions.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::{assert_both_ways, four, hex, message, two};
use halyard_bgp::wire::*;

fn p4(s: &str) -> Ipv4Prefix {
    s.parse().unwrap()
}

fn p6(s: &str) -> Ipv6Prefix {
    s.parse().unwrap()
}

#[test]
fn keepalive_is_19_octets() {
    let bytes = hex("ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff  00 13  04");
    assert_eq!(bytes.len(), 19);
    let (e, d) = four();
    assert_both_ways(&Message::Keepalive, &bytes, &e, &d);
}

fn sample_open() -> Open {
    Open::new(
        65001,
        90,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65001),
            Capability::GracefulRestart(GracefulRestart {
                restart_state: false,
                notification: true,
                restart_time: 120,
                families: vec![
                    GrFamily { family: AfiSafi::IPV4_UNICAST, forwarding_state: true },
                    GrFamily { family: AfiSafi::IPV6_UNICAST, forwarding_state: false },
                ],
            }),
        ],
    )
}

#[test]
fn open_with_capabilities() {
    // RFC 4271 §4.2 + RFC 5492 §4: one optional parameter (type 2) per capability.
    let body = hex("04          # version
         fd e9       # my AS 65001
         00 5a       # hold time 90
         c0 00 02 01 # BGP identifier 192.0.2.1
         2a          # opt parm len 42
         02 06  01 04 00 01 00 01   # MP IPv4 unicast (RFC 4760 §8)
         02 06  01 04 00 02 00 01   # MP IPv6 unicast
         02 02  02 00               # route refresh (RFC 2918)
         02 06  41 04 00 00 fd e9   # 4-octet AS 65001 (RFC 6793)
         02 0c  40 0a 40 78         # GR: N bit, restart time 120 (RFC 4724 §3, RFC 8538)
                00 01 01 80         #   IPv4 unicast, forwarding state preserved
                00 02 01 00         #   IPv6 unicast");
    let bytes = message(1, &body);
    assert_eq!(bytes.len(), 71);
    let (e, d) = four();
    let open = sample_open();
    assert_both_ways(&Message::Open(open.clone()), &bytes, &e, &d);
    assert_eq!(open.asn(), 65001);
    assert_eq!(open.families().collect::<Vec<_>>(), [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]);
}

#[test]
fn open_with_all_capabilities_in_one_parameter_decodes_the_same() {
    // FRR and Junos put all capabilities in one optional parameter.
    let body = hex("04 fd e9 00 5a c0 00 02 01  22
         02 20
            01 04 00 01 00 01
            01 04 00 02 00 01
            02 00
            41 04 00 00 fd e9
            40 0a 40 78 00 01 01 80 00 02 01 00");
    let (msg, _) = Message::decode(&message(1, &body), &DecodeCxt::default()).unwrap();
    assert_eq!(msg, Message::Open(sample_open()));
}

#[test]
fn open_with_4_octet_asn_uses_as_trans() {
    let open = Open::new(4_200_000_000, 180, Ipv4Addr::new(10, 0, 0, 1), vec![Capability::FourOctetAs(4_200_000_000)]);
    assert_eq!(u32::from(open.my_as), AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_000);
    let bytes = Message::Open(open).encode(&EncodeCxt::default()).unwrap();
    assert_eq!(&bytes[19..22], &hex("04 5b a0"));
    assert_eq!(&bytes[29..], &hex("02 06 41 04 fa 56 ea 00"));
}

#[test]
fn open_parses_unknown_add_path_enhanced_refresh_and_extended_next_hop() {
    let body = hex("04 fd e9 00 5a c0 00 02 01  18
         02 16
            46 00                   # enhanced route refresh (RFC 7313)
            45 04 00 01 01 03       # add-path IPv4 unicast send+receive (RFC 7911)
            05 06 00 01 00 01 00 02 # extended next hop: IPv4 unicast over IPv6 (RFC 8950)
            49 04 02 68 31 00       # FQDN: kept raw");
    let (msg, _) = Message::decode(&message(1, &body), &DecodeCxt::default()).unwrap();
    let Message::Open(open) = msg else { panic!("not an OPEN") };
    assert_eq!(
        open.capabilities,
        vec![
            Capability::EnhancedRouteRefresh,
            Capability::AddPath(vec![AddPathFamily { family: AfiSafi::IPV4_UNICAST, send_receive: 3 }]),
            Capability::ExtendedNextHop(vec![ExtendedNextHop {
                nlri_afi: Afi::IPV4,
                nlri_safi: 1,
                nexthop_afi: Afi::IPV6
            }]),
            Capability::Unknown { code: 73, value: hex("02 68 31 00") },
        ]
    );
}

#[test]
fn open_with_rfc9072_extended_optional_parameters() {
    let caps: Vec<Capability> = (0..60u8).map(|i| Capability::Unknown { code: 200, value: vec![i; 3] }).collect();
    let open = Open::new(65001, 90, Ipv4Addr::new(192, 0, 2, 1), caps);
    let bytes = Message::Open(open.clone()).encode(&EncodeCxt::default()).unwrap();
    // Non-Ext OP Len 255, Non-Ext OP Type 255, then a 2-octet length (RFC 9072 §2).
    assert_eq!(&bytes[28..31], &[0xff, 0xff, 0x01]);
    let (msg, _) = Message::decode(&bytes, &DecodeCxt::default()).unwrap();
    assert_eq!(msg, Message::Open(open));
}

fn sample_update() -> Update {
    Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![65001, 65002])),
            PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 254)),
            PathAttribute::MultiExitDisc(100),
            PathAttribute::LocalPref(200),
            PathAttribute::Communities(vec![Community::new(65001, 100), Community::NO_EXPORT]),
            PathAttribute::LargeCommunities(vec![LargeCommunity {
                global_admin: 65001,
                local_data1: 1,
                local_data2: 2,
            }]),
        ],
        nlri: vec![p4("10.0.0.0/24"), p4("192.0.2.1/32")],
        ..Update::default()
    }
}

#[test]
fn update_ipv4_with_4_octet_as_path() {
    let bytes = common::update_msg(
        &[],
        &hex("40 01 01 00                                  # ORIGIN IGP
             40 02 0a 02 02 00 00 fd e9 00 00 fd ea       # AS_PATH SEQ [65001 65002], 4-octet
             40 03 04 c0 00 02 fe                         # NEXT_HOP 192.0.2.254
             80 04 04 00 00 00 64                         # MED 100
             40 05 04 00 00 00 c8                         # LOCAL_PREF 200
             c0 08 08 fd e9 00 64 ff ff ff 01             # COMMUNITIES 65001:100 NO_EXPORT
             c0 20 0c 00 00 fd e9 00 00 00 01 00 00 00 02 # LARGE_COMMUNITIES 65001:1:2"),
        &hex("18 0a 00 00   20 c0 00 02 01"),
    );
    assert_eq!(bytes.len(), 96);
    let (e, d) = four();
    let update = sample_update();
    assert_both_ways(&Message::Update(update.clone()), &bytes, &e, &d);
    assert_eq!(update.communities().unwrap()[1], Community::NO_EXPORT);
    assert_eq!(update.as_path().unwrap().path_len(), 2);
}

#[test]
fn update_ipv4_with_2_octet_as_path() {
    let (e, d) = two();
    let bytes = Message::Update(sample_update()).encode(&e).unwrap();
    assert_eq!(&bytes[27..36], &hex("40 02 06 02 02 fd e9 fd ea"));
    let (msg, _) = Message::decode(&bytes, &d).unwrap();
    assert_eq!(msg, Message::Update(sample_update()));
}

#[test]
fn update_to_2_octet_peer_gets_as_trans_and_as4_path() {
    // RFC 6793 §4.2.2
    let update = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![65001, 4_200_000_000])),
            PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 254)),
            PathAttribute::Aggregator(Aggregator { asn: 4_200_000_000, address: Ipv4Addr::new(192, 0, 2, 9) }),
        ],
        nlri: vec![p4("10.0.0.0/24")],
        ..Update::default()
    };
    let want = common::update_msg(
        &[],
        &hex("40 01 01 00
             40 02 06 02 02 fd e9 5b a0                 # AS_PATH [65001 AS_TRANS]
             c0 11 0a 02 02 00 00 fd e9 fa 56 ea 00     # AS4_PATH [65001 4200000000]
             40 03 04 c0 00 02 fe
             c0 07 06 5b a0 c0 00 02 09                 # AGGREGATOR AS_TRANS
             c0 12 08 fa 56 ea 00 c0 00 02 09           # AS4_AGGREGATOR"),
        &hex("18 0a 00 00"),
    );
    let (e, d) = two();
    assert_eq!(Message::Update(update.clone()).encode(&e).unwrap(), want);
    let (Message::Update(got), _) = Message::decode(&want, &d).unwrap() else { panic!() };
    assert!(got.problems.is_empty());
    assert_eq!(got.effective_as_path().as_ref(), update.as_path());
    assert_eq!(got.effective_aggregator().as_ref(), update.aggregator());
    assert_eq!(got.aggregator().map(|a| a.asn), Some(AS_TRANS));

    // To a 4-octet peer the same UPDATE has no AS4_* attributes.
    let (e4, _) = four();
    let bytes = Message::Update(update).encode(&e4).unwrap();
    assert!(!bytes.windows(2).any(|w| w == [0xc0, 0x11] || w == [0xc0, 0x12]));
}

#[test]
fn update_ipv6_mp_reach_with_link_local_next_hop() {
    let update = Update {
        attributes: vec![
            PathAttribute::MpReach(MpReach::Ipv6Unicast {
                next_hop: Ipv6NextHop {
                    global: "2001:db8::1".parse().unwrap(),
                    link_local: Some("fe80::1".parse().unwrap()),
                },
                nlri: vec![p6("2001:db8:1::/48")],
            }),
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::default()),
        ],
        ..Update::default()
    };
    let bytes = common::update_msg(
        &[],
        &hex("80 0e 2c                   # MP_REACH_NLRI, optional non-transitive, 44 octets
             00 02 01                   # AFI IPv6, SAFI unicast
             20                         # next hop length 32
             20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01   # 2001:db8::1
             fe 80 00 00 00 00 00 00 00 00 00 00 00 00 00 01   # fe80::1
             00                         # reserved
             30 20 01 0d b8 00 01       # 2001:db8:1::/48
             40 01 01 00
             40 02 00                   # empty AS_PATH (iBGP)"),
        &[],
    );
    let (e, d) = four();
    assert_both_ways(&Message::Update(update), &bytes, &e, &d);
}

#[test]
fn update_ipv4_nlri_with_ipv6_next_hop_rfc8950() {
    let update = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Incomplete),
            PathAttribute::AsPath(AsPath::sequence(vec![65001])),
            PathAttribute::MpReach(MpReach::Ipv4Unicast {
                next_hop: NextHop::Ipv6(Ipv6NextHop { global: "2001:db8::1".parse().unwrap(), link_local: None }),
                nlri: vec![p4("10.0.0.0/24")],
            }),
        ],
        ..Update::default()
    };
    let bytes = common::update_msg(
        &[],
        &hex("40 01 01 02
             40 02 06 02 01 00 00 fd e9
             80 0e 19 00 01 01 10 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 00 18 0a 00 00"),
        &[],
    );
    let (e, d) = four();
    assert_both_ways(&Message::Update(update), &bytes, &e, &d);
}

#[test]
fn update_withdraw_ipv4_and_ipv6() {
    let update = Update {
        withdrawn: vec![p4("10.0.0.0/8"), p4("0.0.0.0/0")],
        attributes: vec![PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(vec![p6("2001:db8::/32")]))],
        ..Update::default()
    };
    let bytes = common::update_msg(&hex("08 0a 00"), &hex("80 0f 08 00 02 01 20 20 01 0d b8"), &[]);
    let (e, d) = four();
    assert_both_ways(&Message::Update(update), &bytes, &e, &d);
}

#[test]
fn end_of_rib_markers() {
    // RFC 4724 §2
    let (e, d) = four();
    let v4 = hex("ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff 00 17 02 00 00 00 00");
    assert_both_ways(&Message::Update(Update::end_of_rib(AfiSafi::IPV4_UNICAST)), &v4, &e, &d);
    assert_eq!(Update::end_of_rib(AfiSafi::IPV4_UNICAST).end_of_rib_family(), Some(AfiSafi::IPV4_UNICAST));

    let v6 = common::update_msg(&[], &hex("80 0f 03 00 02 01"), &[]);
    assert_eq!(v6.len(), 29);
    assert_both_ways(&Message::Update(Update::end_of_rib(AfiSafi::IPV6_UNICAST)), &v6, &e, &d);
    let (Message::Update(u), _) = Message::decode(&v6, &d).unwrap() else { panic!() };
    assert_eq!(u.end_of_rib_family(), Some(AfiSafi::IPV6_UNICAST));
    assert!(u.problems.is_empty(), "an MP_UNREACH-only UPDATE needs no mandatory attributes");
    assert_eq!(sample_update().end_of_rib_family(), None);
}

#[test]
fn attribute_over_255_octets_uses_extended_length() {
    let communities: Vec<Community> = (0..70u32).map(Community).collect(); // 280 octets
    let update = Update { attributes: vec![PathAttribute::Communities(communities)], ..Update::default() };
    let (e, d) = four();
    let bytes = Message::Update(update.clone()).encode(&e).unwrap();
    assert_eq!(&bytes[23..27], &hex("d0 08 01 18")); // flags 0xc0|0x10, type 8, length 280
    let (msg, _) = Message::decode(&bytes, &d).unwrap();
    assert_eq!(msg, Message::Update(update));
}

#[test]
fn notification_admin_shutdown_with_communication() {
    // RFC 4271 §4.5, RFC 4486 subcode 2, RFC 9003 length-prefixed UTF-8.
    let n = Notification::admin_shutdown("bye");
    let bytes = message(3, &hex("06 02 03 62 79 65"));
    assert_eq!(bytes.len(), 25);
    let (e, d) = four();
    assert_both_ways(&Message::Notification(n.clone()), &bytes, &e, &d);
    assert_eq!(n.shutdown_communication(), Some("bye"));
    assert_eq!(n.code, ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown));
}

#[test]
fn notification_hold_timer_expired_and_unknown_codes() {
    let (e, d) = four();
    let n = Notification::new(ErrorCode::HoldTimerExpired, vec![]);
    assert_both_ways(&Message::Notification(n), &message(3, &hex("04 00")), &e, &d);
    let n = Notification::new(ErrorCode::Other { code: 42, subcode: 7 }, vec![1, 2]);
    assert_both_ways(&Message::Notification(n), &message(3, &hex("2a 07 01 02")), &e, &d);
    let n = Notification::max_prefixes(AfiSafi::IPV4_UNICAST, 1000);
    assert_both_ways(&Message::Notification(n), &message(3, &hex("06 01 00 01 01 00 00 03 e8")), &e, &d);
}

#[test]
fn route_refresh() {
    // RFC 2918 §3, subtype from RFC 7313.
    let (e, d) = four();
    let rr = RouteRefresh::request(AfiSafi::IPV6_UNICAST);
    assert_both_ways(&Message::RouteRefresh(rr), &message(5, &hex("00 02 00 01")), &e, &d);
    let borr = RouteRefresh { family: AfiSafi::IPV4_UNICAST, subtype: RefreshSubtype::BeginningOfRefresh };
    assert_both_ways(&Message::RouteRefresh(borr), &message(5, &hex("00 01 01 01")), &e, &d);
}

#[test]
fn route_refresh_too_long_is_a_route_refresh_error() {
    // RFC 7313 §5: error code 7, subcode 1, data = the message.
    let bytes = message(5, &hex("00 01 01 01 00"));
    let err = Message::decode(&bytes, &DecodeCxt::default()).unwrap_err();
    assert_eq!(err.notification.code, ErrorCode::RouteRefresh(RouteRefreshSubcode::InvalidMessageLength));
    assert_eq!(err.notification.data, bytes);
}

#[test]
fn decode_consumes_one_message_from_a_stream() {
    let (e, d) = four();
    let mut stream = Message::Keepalive.encode(&e).unwrap();
    Message::Update(sample_update()).encode_into(&e, &mut stream).unwrap();
    let (first, n) = Message::decode(&stream, &d).unwrap();
    assert_eq!((first, n), (Message::Keepalive, 19));
    let (second, m) = Message::decode(&stream[n..], &d).unwrap();
    assert_eq!(second, Message::Update(sample_update()));
    assert_eq!(n + m, stream.len());
}

#[test]
fn encode_refuses_oversized_messages() {
    let nlri: Vec<Ipv4Prefix> = (0..1100u32).map(|i| Ipv4Prefix::new(Ipv4Addr::from(i << 8), 24).unwrap()).collect();
    let update = Update { nlri, ..sample_update() };
    let mut out = vec![1, 2, 3];
    let err = Message::Update(update.clone()).encode_into(&EncodeCxt::new(true), &mut out).unwrap_err();
    assert!(matches!(err, EncodeError::TooLong { max: 4096, .. }));
    assert_eq!(out, [1, 2, 3], "nothing appended on error");
    // With RFC 8654 extended messages the same UPDATE fits.
    let e = EncodeCxt { max_message_len: MAX_EXTENDED_MESSAGE_LEN, ..EncodeCxt::new(true) };
    let d = DecodeCxt { max_message_len: MAX_EXTENDED_MESSAGE_LEN, ..DecodeCxt::new(true) };
    let bytes = Message::Update(update.clone()).encode(&e).unwrap();
    assert_eq!(Message::decode(&bytes, &d).unwrap().0, Message::Update(update));
    assert!(Message::decode(&bytes, &DecodeCxt::new(true)).is_err());
}

#[test]
fn ipv6_prefix_display_and_masking() {
    assert_eq!(p6("2001:db8::1/32").to_string(), "2001:db8::/32");
    assert_eq!(p6("2001:db8::1/32").addr(), Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
}

#[test]
fn as4_path_is_ignored_after_a_2_octet_aggregator() {
    // RFC 6793 §4.2.3: AGGREGATOR with a real AS (not AS_TRANS) -> ignore AS4_PATH.
    let bytes = common::update_msg(
        &[],
        &hex("40 01 01 00
             40 02 06 02 02 fd e9 5b a0
             c0 11 0a 02 02 00 00 fd e9 fa 56 ea 00
             40 03 04 c0 00 02 fe
             c0 07 06 fd ea c0 00 02 09"),
        &hex("18 0a 00 00"),
    );
    let (Message::Update(got), _) = Message::decode(&bytes, &DecodeCxt::new(false)).unwrap() else { panic!() };
    assert_eq!(got.effective_as_path(), Some(AsPath::sequence(vec![65001, AS_TRANS])));
    assert_eq!(got.effective_aggregator().map(|a| a.asn), Some(65002));
}

#[test]
fn as4_path_merge_keeps_leading_as_path_entries() {
    // RFC 6793 §4.2.3: AS_PATH has 3 ASes, AS4_PATH 2 -> keep the first of AS_PATH.
    let as_path = AsPath::sequence(vec![65010, AS_TRANS, AS_TRANS]);
    let as4 = AsPath::sequence(vec![4_200_000_001, 4_200_000_002]);
    let merged = as_path.merge_as4(&as4);
    assert_eq!(merged.asns().collect::<Vec<_>>(), [65010, 4_200_000_001, 4_200_000_002]);
    // A longer AS4_PATH is ignored.
    assert_eq!(AsPath::sequence(vec![65010]).merge_as4(&as4), AsPath::sequence(vec![65010]));
}
