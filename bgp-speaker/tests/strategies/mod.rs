//! proptest strategies for wire messages (included with `mod strategies;`).
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use halyard_bgp::wire::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// How large ASNs may be.
#[derive(Debug, Clone, Copy)]
pub enum AsWidth {
    Two,
    Four,
}

fn asn(width: AsWidth) -> BoxedStrategy<u32> {
    // AS 0 is malformed (RFC 7607).
    match width {
        AsWidth::Two => (1u32..=0xffff).boxed(),
        AsWidth::Four => (1u32..=u32::MAX).boxed(),
    }
}

pub fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

pub fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

pub fn family() -> impl Strategy<Value = AfiSafi> {
    (any::<u16>(), any::<u8>()).prop_map(|(a, s)| AfiSafi::new(Afi(a), Safi(s)))
}

/// A family that is neither IPv4 nor IPv6 unicast (those decode to the typed variants).
pub fn other_family() -> impl Strategy<Value = AfiSafi> {
    family().prop_filter("typed family", |f| *f != AfiSafi::IPV4_UNICAST && *f != AfiSafi::IPV6_UNICAST)
}

pub fn prefix4() -> impl Strategy<Value = Ipv4Prefix> {
    (ipv4(), 0u8..=32).prop_map(|(a, l)| Ipv4Prefix::new(a, l).unwrap())
}

pub fn prefix6() -> impl Strategy<Value = Ipv6Prefix> {
    (ipv6(), 0u8..=128).prop_map(|(a, l)| Ipv6Prefix::new(a, l).unwrap())
}

pub fn as_path(width: AsWidth, confed: bool) -> impl Strategy<Value = AsPath> {
    let kinds = if confed {
        prop_oneof![
            Just(SegmentType::Set),
            Just(SegmentType::Sequence),
            Just(SegmentType::ConfedSequence),
            Just(SegmentType::ConfedSet)
        ]
        .boxed()
    } else {
        prop_oneof![Just(SegmentType::Set), Just(SegmentType::Sequence)].boxed()
    };
    vec((kinds, vec(asn(width), 1..6)).prop_map(|(kind, asns)| AsSegment { kind, asns }), 0..4)
        .prop_map(|segments| AsPath { segments })
}

fn ipv6_next_hop() -> impl Strategy<Value = Ipv6NextHop> {
    (ipv6(), option::of(ipv6())).prop_map(|(global, link_local)| Ipv6NextHop { global, link_local })
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (prop_oneof![ipv4().prop_map(NextHop::Ipv4), ipv6_next_hop().prop_map(NextHop::Ipv6)], vec(prefix4(), 0..4))
            .prop_map(|(next_hop, nlri)| MpReach::Ipv4Unicast { next_hop, nlri }),
        (ipv6_next_hop(), vec(prefix6(), 0..4)).prop_map(|(next_hop, nlri)| MpReach::Ipv6Unicast { next_hop, nlri }),
        (other_family(), vec(any::<u8>(), 0..33), vec(any::<u8>(), 0..20))
            .prop_map(|(family, next_hop, nlri)| MpReach::Other { family, next_hop, nlri }),
    ]
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        vec(prefix4(), 0..4).prop_map(MpUnreach::Ipv4Unicast),
        vec(prefix6(), 0..4).prop_map(MpUnreach::Ipv6Unicast),
        (other_family(), vec(any::<u8>(), 0..20))
            .prop_map(|(family, withdrawn)| MpUnreach::Other { family, withdrawn }),
    ]
}

fn unknown_attr() -> impl Strategy<Value = RawAttribute> {
    // Type codes this codec does not interpret; flags always optional (else: reset).
    let type_code = prop_oneof![11u8..=13, 19u8..=31, 33u8..=255];
    let flags = prop_oneof![Just(0x80u8), Just(0xa0), Just(0xc0), Just(0xe0)];
    (flags, type_code, vec(any::<u8>(), 0..300)).prop_map(|(flags, type_code, value)| RawAttribute {
        flags,
        type_code,
        value,
    })
}

/// Any attribute except AS4_PATH/AS4_AGGREGATOR (those are synthesized or dropped by the encoder).
pub fn attribute(width: AsWidth) -> impl Strategy<Value = PathAttribute> {
    prop_oneof![
        prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)].prop_map(PathAttribute::Origin),
        as_path(width, true).prop_map(PathAttribute::AsPath),
        ipv4().prop_map(PathAttribute::NextHop),
        any::<u32>().prop_map(PathAttribute::MultiExitDisc),
        any::<u32>().prop_map(PathAttribute::LocalPref),
        Just(PathAttribute::AtomicAggregate),
        (asn(width), ipv4()).prop_map(|(asn, address)| PathAttribute::Aggregator(Aggregator { asn, address })),
        vec(any::<u32>().prop_map(Community), 1..5).prop_map(PathAttribute::Communities),
        ipv4().prop_map(PathAttribute::OriginatorId),
        vec(ipv4(), 1..4).prop_map(PathAttribute::ClusterList),
        mp_reach().prop_map(PathAttribute::MpReach),
        mp_unreach().prop_map(PathAttribute::MpUnreach),
        vec(any::<[u8; 8]>().prop_map(ExtendedCommunity), 1..4).prop_map(PathAttribute::ExtendedCommunities),
        vec(
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(g, a, b)| LargeCommunity {
                global_admin: g,
                local_data1: a,
                local_data2: b
            }),
            1..4
        )
        .prop_map(PathAttribute::LargeCommunities),
        unknown_attr().prop_map(PathAttribute::Unknown),
    ]
}

/// An UPDATE that decodes cleanly back to itself: distinct attribute types, and the mandatory
/// attributes whenever something is announced.
pub fn update(width: AsWidth) -> impl Strategy<Value = Update> {
    (vec(prefix4(), 0..5), vec(attribute(width), 0..8), vec(prefix4(), 0..5)).prop_map(
        move |(withdrawn, attrs, nlri)| {
            let mut seen = HashSet::new();
            let mut attributes: Vec<PathAttribute> = attrs.into_iter().filter(|a| seen.insert(a.type_code())).collect();
            let announces = !nlri.is_empty() || seen.contains(&attr_type::MP_REACH_NLRI);
            if announces {
                if seen.insert(attr_type::ORIGIN) {
                    attributes.push(PathAttribute::Origin(Origin::Igp));
                }
                if seen.insert(attr_type::AS_PATH) {
                    attributes.push(PathAttribute::AsPath(AsPath::default()));
                }
            }
            if !nlri.is_empty() && seen.insert(attr_type::NEXT_HOP) {
                attributes.push(PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)));
            }
            Update { withdrawn, attributes, nlri, problems: Vec::new() }
        },
    )
}

fn capability() -> impl Strategy<Value = Capability> {
    let gr_family =
        (family(), any::<bool>()).prop_map(|(family, forwarding_state)| GrFamily { family, forwarding_state });
    prop_oneof![
        family().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        vec(
            (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(a, s, n)| ExtendedNextHop {
                nlri_afi: Afi(a),
                nlri_safi: s,
                nexthop_afi: Afi(n)
            }),
            0..4
        )
        .prop_map(Capability::ExtendedNextHop),
        (any::<bool>(), any::<bool>(), 0u16..=4095, vec(gr_family, 0..4)).prop_map(
            |(restart_state, notification, restart_time, families)| Capability::GracefulRestart(GracefulRestart {
                restart_state,
                notification,
                restart_time,
                families
            })
        ),
        any::<u32>().prop_map(Capability::FourOctetAs),
        vec((family(), any::<u8>()).prop_map(|(family, send_receive)| AddPathFamily { family, send_receive }), 0..4)
            .prop_map(Capability::AddPath),
        (prop_oneof![3u8..=4, 6u8..=63, 71u8..=255], vec(any::<u8>(), 0..16))
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

pub fn open() -> impl Strategy<Value = Open> {
    (
        any::<u16>(),
        any::<u16>().prop_filter("hold time 1 or 2", |h| *h != 1 && *h != 2),
        (1u32..).prop_map(Ipv4Addr::from),
        vec(capability(), 0..24),
    )
        .prop_map(|(my_as, hold_time, bgp_id, capabilities)| Open { my_as, hold_time, bgp_id, capabilities })
}

pub fn notification() -> impl Strategy<Value = Notification> {
    (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..40))
        .prop_map(|(c, s, data)| Notification::new(ErrorCode::from_codes(c, s), data))
}

pub fn route_refresh() -> impl Strategy<Value = RouteRefresh> {
    (family(), any::<u8>()).prop_map(|(family, s)| RouteRefresh { family, subtype: RefreshSubtype::from_u8(s) })
}

pub fn message(width: AsWidth) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(width).prop_map(Message::Update),
        notification().prop_map(Message::Notification),
        Just(Message::Keepalive),
        route_refresh().prop_map(Message::RouteRefresh),
    ]
}
