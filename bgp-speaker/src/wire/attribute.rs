//! Path attributes (RFC 4271 §4.3, §5) and their per-attribute error handling (RFC 7606 §7).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::AS_TRANS;
use super::buf::{Reader, put_u16_at};
use super::error::DecodeError;
use super::notification::UpdateSubcode;
use super::prefix::{Afi, AfiSafi, Ipv4Prefix, Ipv6Prefix, Safi};

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// Attribute flag bits (RFC 4271 §4.3). The low four bits are unused: sent as zero, ignored.
pub mod attr_flags {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
    /// Well-known attributes: optional 0, transitive 1.
    pub const WELL_KNOWN: u8 = TRANSITIVE;
    pub const OPTIONAL_TRANSITIVE: u8 = OPTIONAL | TRANSITIVE;
    pub const OPTIONAL_NON_TRANSITIVE: u8 = OPTIONAL;
}

use attr_flags::{
    EXTENDED_LENGTH, OPTIONAL, OPTIONAL_NON_TRANSITIVE, OPTIONAL_TRANSITIVE, PARTIAL, TRANSITIVE, WELL_KNOWN,
};

// ===== Attribute values =====

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS_PATH segment type (RFC 4271 §4.3; confederation types from RFC 5065 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

/// One AS_PATH segment.
///
/// ```text
/// +-----------------+-----------------+------------------------------+
/// | segment type(1) | AS count (1)    | AS numbers (2 or 4 each)     |
/// +-----------------+-----------------+------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

/// AS_PATH / AS4_PATH (RFC 4271 §4.3, RFC 6793 §3–4). ASNs are always held as `u32`; the width
/// on the wire comes from the context.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

/// AGGREGATOR / AS4_AGGREGATOR (RFC 4271 §5.1.7, RFC 6793 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// A community (RFC 1997): high 16 bits ASN, low 16 bits value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// RFC 1997.
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    /// RFC 1997.
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    /// RFC 1997.
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);
    /// RFC 3765.
    pub const NOPEER: Community = Community(0xFFFF_FF04);
    /// RFC 8326.
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xFFFF_0000);
    /// RFC 7611.
    pub const ACCEPT_OWN: Community = Community(0xFFFF_0001);
    /// RFC 9494.
    pub const LLGR_STALE: Community = Community(0xFFFF_0006);
    /// RFC 9494.
    pub const NO_LLGR: Community = Community(0xFFFF_0007);
    /// RFC 7999.
    pub const BLACKHOLE: Community = Community(0xFFFF_029A);

    pub const fn new(asn: u16, value: u16) -> Self {
        Self(((asn as u32) << 16) | value as u32)
    }

    pub const fn asn(self) -> u16 {
        (self.0 >> 16) as u16
    }

    pub const fn value(self) -> u16 {
        self.0 as u16
    }
}

/// A large community (RFC 8092 §3).
///
/// ```text
/// +------------------------+------------------------+------------------------+
/// | Global Administrator(4)| Local Data Part 1 (4)  | Local Data Part 2 (4)  |
/// +------------------------+------------------------+------------------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data1: u32,
    pub local_data2: u32,
}

/// An extended community (RFC 4360 §2), kept as its eight raw octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtendedCommunity(pub [u8; 8]);

/// An IPv6 next hop: global, plus link-local when the length is 32 (RFC 2545 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6NextHop {
    pub global: Ipv6Addr,
    pub link_local: Option<Ipv6Addr>,
}

/// Next hop of IPv4 unicast MP_REACH_NLRI: IPv4, or IPv6 (RFC 8950 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6NextHop),
}

/// MP_REACH_NLRI (RFC 4760 §3).
///
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Length of Next Hop Network Address (1 octet)            |
/// +---------------------------------------------------------+
/// | Network Address of Next Hop (variable)                  |
/// +---------------------------------------------------------+
/// | Reserved (1 octet)                                      |
/// +---------------------------------------------------------+
/// | Network Layer Reachability Information (variable)       |
/// +---------------------------------------------------------+
/// ```
///
/// IPv4 and IPv6 unicast are typed; other families are kept raw (never use `Other` for those
/// two families: it would decode back as the typed variant).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MpReach {
    Ipv4Unicast { next_hop: NextHop, nlri: Vec<Ipv4Prefix> },
    Ipv6Unicast { next_hop: Ipv6NextHop, nlri: Vec<Ipv6Prefix> },
    Other { family: AfiSafi, next_hop: Vec<u8>, nlri: Vec<u8> },
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
///
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Withdrawn Routes (variable)                             |
/// +---------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MpUnreach {
    Ipv4Unicast(Vec<Ipv4Prefix>),
    Ipv6Unicast(Vec<Ipv6Prefix>),
    Other { family: AfiSafi, withdrawn: Vec<u8> },
}

/// An attribute this codec does not interpret, with its flags (Extended Length and the unused
/// low bits cleared; the encoder recomputes Extended Length).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

impl RawAttribute {
    /// What to pass on to other peers (RFC 4271 §5 and §9.1.4): an unrecognized optional
    /// transitive attribute is passed on with the Partial bit set; an unrecognized optional
    /// non-transitive one is dropped.
    pub fn for_propagation(&self) -> Option<RawAttribute> {
        (self.flags & OPTIONAL_TRANSITIVE == OPTIONAL_TRANSITIVE)
            .then(|| RawAttribute { flags: self.flags | PARTIAL, ..self.clone() })
    }
}

/// One path attribute.
///
/// ```text
/// +---------------------------+--------------------+---------------------+
/// | Attr. Flags | Attr. Type  | Length (1 or 2)    | Value (variable)    |
/// +---------------------------+--------------------+---------------------+
/// ```
///
/// Known attributes are encoded with their standard flags (Partial clear); the received
/// Partial bit of a known optional transitive attribute is not kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathAttribute {
    Origin(Origin),
    AsPath(AsPath),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    AtomicAggregate,
    Aggregator(Aggregator),
    Communities(Vec<Community>),
    OriginatorId(Ipv4Addr),
    ClusterList(Vec<Ipv4Addr>),
    MpReach(MpReach),
    MpUnreach(MpUnreach),
    ExtendedCommunities(Vec<ExtendedCommunity>),
    /// Only meaningful with a 2-octet-AS peer (RFC 6793 §4.2); not sent to 4-octet peers.
    As4Path(AsPath),
    /// Only meaningful with a 2-octet-AS peer (RFC 6793 §4.2); not sent to 4-octet peers.
    As4Aggregator(Aggregator),
    LargeCommunities(Vec<LargeCommunity>),
    Unknown(RawAttribute),
}

// ===== impl AsPath =====

impl AsPath {
    /// A path of one AS_SEQUENCE (empty if `asns` is).
    pub fn sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return Self::default();
        }
        Self { segments: vec![AsSegment { kind: SegmentType::Sequence, asns }] }
    }

    /// Path length for best-path selection (RFC 4271 §9.1.2.2: an AS_SET counts 1; RFC 5065
    /// §5.3: confederation segments count 0).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                SegmentType::ConfedSequence | SegmentType::ConfedSet => 0,
            })
            .sum()
    }

    pub fn asns(&self) -> impl Iterator<Item = u32> + '_ {
        self.segments.iter().flat_map(|s| s.asns.iter().copied())
    }

    /// True when some ASN does not fit 2 octets (so a 2-octet peer needs AS4_PATH).
    pub fn needs_as4(&self) -> bool {
        self.asns().any(|a| a > 0xffff)
    }

    /// RFC 7606 §7.2 / RFC 4271 §6.3: segment types 1–4, non-zero count, no overrun/underrun.
    /// RFC 7607: AS 0 makes the path malformed.
    fn decode(value: &[u8], four_octet: bool) -> Result<Self, &'static str> {
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let (Some(kind), Some(count)) = (r.u8(), r.u8()) else {
                return Err("segment header underrun");
            };
            let kind = match kind {
                1 => SegmentType::Set,
                2 => SegmentType::Sequence,
                3 => SegmentType::ConfedSequence,
                4 => SegmentType::ConfedSet,
                _ => return Err("unknown segment type"),
            };
            if count == 0 {
                return Err("empty segment");
            }
            let mut asns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let asn = if four_octet { r.u32() } else { r.u16().map(u32::from) };
                match asn {
                    Some(0) => return Err("AS 0 in path (RFC 7607)"),
                    Some(a) => asns.push(a),
                    None => return Err("segment overrun"),
                }
            }
            segments.push(AsSegment { kind, asns });
        }
        Ok(Self { segments })
    }

    /// Segments longer than 255 ASNs are split; empty segments are skipped. With 2-octet
    /// encoding, ASNs above 65535 become AS_TRANS (RFC 6793 §4.2.2).
    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        for seg in &self.segments {
            for chunk in seg.asns.chunks(255) {
                out.push(seg.kind as u8);
                out.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
                for &asn in chunk {
                    if four_octet {
                        out.extend_from_slice(&asn.to_be_bytes());
                    } else {
                        out.extend_from_slice(&as2(asn).to_be_bytes());
                    }
                }
            }
        }
    }

    /// The AS4_PATH to send along with this AS_PATH to a 2-octet peer: no confederation segments
    /// (RFC 6793 §4.2.2).
    pub fn to_as4_path(&self) -> AsPath {
        AsPath {
            segments: self
                .segments
                .iter()
                .filter(|s| matches!(s.kind, SegmentType::Set | SegmentType::Sequence))
                .cloned()
                .collect(),
        }
    }

    /// Rebuilds the real path from an AS_PATH received from a 2-octet peer and its AS4_PATH
    /// (RFC 6793 §4.2.3): if AS4_PATH is longer, it is ignored; otherwise the leading
    /// `len(AS_PATH) - len(AS4_PATH)` ASes of AS_PATH are kept and AS4_PATH appended.
    pub fn merge_as4(&self, as4_path: &AsPath) -> AsPath {
        let (n, m) = (self.path_len(), as4_path.path_len());
        if m > n {
            return self.clone();
        }
        let mut need = n - m;
        let mut segments = Vec::new();
        for seg in &self.segments {
            match seg.kind {
                // Confederation segments are not in AS4_PATH: keep the ones met before the cut.
                SegmentType::ConfedSequence | SegmentType::ConfedSet => segments.push(seg.clone()),
                _ if need == 0 => break,
                SegmentType::Set => {
                    segments.push(seg.clone());
                    need -= 1;
                }
                SegmentType::Sequence => {
                    let k = need.min(seg.asns.len());
                    segments.push(AsSegment { kind: SegmentType::Sequence, asns: seg.asns[..k].to_vec() });
                    need -= k;
                }
            }
        }
        segments.extend(as4_path.segments.iter().cloned());
        AsPath { segments }
    }
}

fn as2(asn: u32) -> u16 {
    u16::try_from(asn).unwrap_or(AS_TRANS as u16)
}

// ===== impl MpReach / MpUnreach =====

impl MpReach {
    pub fn family(&self) -> AfiSafi {
        match self {
            Self::Ipv4Unicast { .. } => AfiSafi::IPV4_UNICAST,
            Self::Ipv6Unicast { .. } => AfiSafi::IPV6_UNICAST,
            Self::Other { family, .. } => *family,
        }
    }

    /// RFC 7606 §7.11: an MP_REACH_NLRI that cannot be parsed (bad next hop length, NLRI that
    /// cannot be located) means session reset, hence `&'static str` errors mapped by the caller.
    fn decode(value: &[u8]) -> Result<Self, &'static str> {
        let mut r = Reader::new(value);
        let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
            return Err("truncated header");
        };
        let nh = r.take(usize::from(nh_len)).ok_or("next hop overruns the attribute")?;
        // RFC 4760 §3: Reserved, ignored on receipt (formerly the SNPA count).
        r.u8().ok_or("missing reserved octet")?;
        let nlri = r.rest();
        let family = AfiSafi::new(Afi(afi), Safi(safi));
        Ok(match family {
            AfiSafi::IPV4_UNICAST => {
                let next_hop = match nh.len() {
                    4 => NextHop::Ipv4(Reader::new(nh).ipv4().ok_or("bad next hop")?),
                    16 | 32 => NextHop::Ipv6(decode_ipv6_nh(nh)?),
                    _ => return Err("bad next hop length for IPv4 unicast"),
                };
                Self::Ipv4Unicast { next_hop, nlri: Ipv4Prefix::decode_all(nlri)? }
            }
            AfiSafi::IPV6_UNICAST => {
                Self::Ipv6Unicast { next_hop: decode_ipv6_nh(nh)?, nlri: Ipv6Prefix::decode_all(nlri)? }
            }
            family => Self::Other { family, next_hop: nh.to_vec(), nlri: nlri.to_vec() },
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let family = self.family();
        out.extend_from_slice(&family.afi.0.to_be_bytes());
        out.push(family.safi.0);
        let nh_pos = out.len();
        out.push(0);
        match self {
            Self::Ipv4Unicast { next_hop: NextHop::Ipv4(a), .. } => out.extend_from_slice(&a.octets()),
            Self::Ipv4Unicast { next_hop: NextHop::Ipv6(nh), .. } | Self::Ipv6Unicast { next_hop: nh, .. } => {
                encode_ipv6_nh(nh, out);
            }
            Self::Other { next_hop, .. } => out.extend_from_slice(&next_hop[..next_hop.len().min(255)]),
        }
        out[nh_pos] = u8::try_from(out.len() - nh_pos - 1).unwrap_or(u8::MAX);
        out.push(0); // Reserved
        match self {
            Self::Ipv4Unicast { nlri, .. } => nlri.iter().for_each(|p| p.encode(out)),
            Self::Ipv6Unicast { nlri, .. } => nlri.iter().for_each(|p| p.encode(out)),
            Self::Other { nlri, .. } => out.extend_from_slice(nlri),
        }
    }
}

fn decode_ipv6_nh(nh: &[u8]) -> Result<Ipv6NextHop, &'static str> {
    let mut r = Reader::new(nh);
    match nh.len() {
        16 => Ok(Ipv6NextHop { global: r.ipv6().ok_or("bad next hop")?, link_local: None }),
        32 => Ok(Ipv6NextHop { global: r.ipv6().ok_or("bad next hop")?, link_local: r.ipv6() }),
        _ => Err("bad IPv6 next hop length"),
    }
}

fn encode_ipv6_nh(nh: &Ipv6NextHop, out: &mut Vec<u8>) {
    out.extend_from_slice(&nh.global.octets());
    if let Some(ll) = nh.link_local {
        out.extend_from_slice(&ll.octets());
    }
}

impl MpUnreach {
    pub fn family(&self) -> AfiSafi {
        match self {
            Self::Ipv4Unicast(_) => AfiSafi::IPV4_UNICAST,
            Self::Ipv6Unicast(_) => AfiSafi::IPV6_UNICAST,
            Self::Other { family, .. } => *family,
        }
    }

    /// True for the End-of-RIB marker form (RFC 4724 §2): no withdrawn routes.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Ipv4Unicast(v) => v.is_empty(),
            Self::Ipv6Unicast(v) => v.is_empty(),
            Self::Other { withdrawn, .. } => withdrawn.is_empty(),
        }
    }

    fn decode(value: &[u8]) -> Result<Self, &'static str> {
        let mut r = Reader::new(value);
        let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
            return Err("truncated header");
        };
        let rest = r.rest();
        Ok(match AfiSafi::new(Afi(afi), Safi(safi)) {
            AfiSafi::IPV4_UNICAST => Self::Ipv4Unicast(Ipv4Prefix::decode_all(rest)?),
            AfiSafi::IPV6_UNICAST => Self::Ipv6Unicast(Ipv6Prefix::decode_all(rest)?),
            family => Self::Other { family, withdrawn: rest.to_vec() },
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let family = self.family();
        out.extend_from_slice(&family.afi.0.to_be_bytes());
        out.push(family.safi.0);
        match self {
            Self::Ipv4Unicast(v) => v.iter().for_each(|p| p.encode(out)),
            Self::Ipv6Unicast(v) => v.iter().for_each(|p| p.encode(out)),
            Self::Other { withdrawn, .. } => out.extend_from_slice(withdrawn),
        }
    }
}

// ===== impl PathAttribute =====

/// Why an attribute was not accepted, and what RFC 7606 says to do about it.
#[derive(Debug)]
pub(crate) enum AttrError {
    Discard(String),
    Withdraw(String),
    Reset(DecodeError),
}

impl PathAttribute {
    pub fn type_code(&self) -> u8 {
        use attr_type::*;
        match self {
            Self::Origin(_) => ORIGIN,
            Self::AsPath(_) => AS_PATH,
            Self::NextHop(_) => NEXT_HOP,
            Self::MultiExitDisc(_) => MULTI_EXIT_DISC,
            Self::LocalPref(_) => LOCAL_PREF,
            Self::AtomicAggregate => ATOMIC_AGGREGATE,
            Self::Aggregator(_) => AGGREGATOR,
            Self::Communities(_) => COMMUNITIES,
            Self::OriginatorId(_) => ORIGINATOR_ID,
            Self::ClusterList(_) => CLUSTER_LIST,
            Self::MpReach(_) => MP_REACH_NLRI,
            Self::MpUnreach(_) => MP_UNREACH_NLRI,
            Self::ExtendedCommunities(_) => EXTENDED_COMMUNITIES,
            Self::As4Path(_) => AS4_PATH,
            Self::As4Aggregator(_) => AS4_AGGREGATOR,
            Self::LargeCommunities(_) => LARGE_COMMUNITIES,
            Self::Unknown(raw) => raw.type_code,
        }
    }

    /// The flags this attribute is sent with (Extended Length is added by the encoder).
    pub fn flags(&self) -> u8 {
        match self {
            Self::Origin(_) | Self::AsPath(_) | Self::NextHop(_) | Self::LocalPref(_) | Self::AtomicAggregate => {
                WELL_KNOWN
            }
            Self::MultiExitDisc(_)
            | Self::OriginatorId(_)
            | Self::ClusterList(_)
            | Self::MpReach(_)
            | Self::MpUnreach(_) => OPTIONAL_NON_TRANSITIVE,
            Self::Aggregator(_)
            | Self::Communities(_)
            | Self::ExtendedCommunities(_)
            | Self::As4Path(_)
            | Self::As4Aggregator(_)
            | Self::LargeCommunities(_) => OPTIONAL_TRANSITIVE,
            Self::Unknown(raw) => raw.flags & !(EXTENDED_LENGTH | 0x0f),
        }
    }

    /// Appends flags, type, length and value. Extended Length is set when the value exceeds
    /// 255 octets (RFC 4271 §4.3).
    pub(crate) fn encode(&self, four_octet_as: bool, out: &mut Vec<u8>) {
        let mut value = Vec::new();
        self.encode_value(four_octet_as, &mut value);
        let flags = self.flags();
        if value.len() > 255 {
            out.push(flags | EXTENDED_LENGTH);
            out.push(self.type_code());
            let pos = out.len();
            out.extend_from_slice(&[0, 0]);
            put_u16_at(out, pos, value.len());
        } else {
            out.push(flags);
            out.push(self.type_code());
            out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
        }
        out.extend_from_slice(&value);
    }

    fn encode_value(&self, four_octet_as: bool, out: &mut Vec<u8>) {
        match self {
            Self::Origin(o) => out.push(*o as u8),
            Self::AsPath(p) => p.encode(four_octet_as, out),
            Self::As4Path(p) => p.encode(true, out),
            Self::NextHop(a) | Self::OriginatorId(a) => out.extend_from_slice(&a.octets()),
            Self::MultiExitDisc(v) | Self::LocalPref(v) => out.extend_from_slice(&v.to_be_bytes()),
            Self::AtomicAggregate => {}
            Self::Aggregator(a) => {
                if four_octet_as {
                    out.extend_from_slice(&a.asn.to_be_bytes());
                } else {
                    out.extend_from_slice(&as2(a.asn).to_be_bytes());
                }
                out.extend_from_slice(&a.address.octets());
            }
            Self::As4Aggregator(a) => {
                out.extend_from_slice(&a.asn.to_be_bytes());
                out.extend_from_slice(&a.address.octets());
            }
            Self::Communities(v) => v.iter().for_each(|c| out.extend_from_slice(&c.0.to_be_bytes())),
            Self::ClusterList(v) => v.iter().for_each(|a| out.extend_from_slice(&a.octets())),
            Self::MpReach(m) => m.encode(out),
            Self::MpUnreach(m) => m.encode(out),
            Self::ExtendedCommunities(v) => v.iter().for_each(|c| out.extend_from_slice(&c.0)),
            Self::LargeCommunities(v) => v.iter().for_each(|c| {
                out.extend_from_slice(&c.global_admin.to_be_bytes());
                out.extend_from_slice(&c.local_data1.to_be_bytes());
                out.extend_from_slice(&c.local_data2.to_be_bytes());
            }),
            Self::Unknown(raw) => out.extend_from_slice(&raw.value),
        }
    }

    /// Decodes one attribute value. `raw` is the whole attribute (flags..value), used as the
    /// NOTIFICATION data when the outcome is a reset (RFC 4271 §6.3).
    pub(crate) fn decode(
        flags: u8,
        type_code: u8,
        value: &[u8],
        raw: &[u8],
        four_octet_as: bool,
    ) -> Result<Self, AttrError> {
        use AttrError::{Discard, Withdraw};
        use attr_type::*;
        // RFC 7606 §3.c: Optional/Transitive bits in conflict with the attribute's definition
        // make it malformed; each attribute's own rule then applies.
        let flags_ok = |expected: u8| flags & (OPTIONAL | TRANSITIVE) == expected;
        let len = value.len();
        let mut r = Reader::new(value);
        match type_code {
            // RFC 7606 §7.1
            ORIGIN => {
                if !flags_ok(WELL_KNOWN) || len != 1 {
                    return Err(Withdraw("bad ORIGIN flags or length".into()));
                }
                match value[0] {
                    0 => Ok(Self::Origin(Origin::Igp)),
                    1 => Ok(Self::Origin(Origin::Egp)),
                    2 => Ok(Self::Origin(Origin::Incomplete)),
                    v => Err(Withdraw(format!("undefined ORIGIN {v}"))),
                }
            }
            // RFC 7606 §7.2
            AS_PATH => {
                if !flags_ok(WELL_KNOWN) {
                    return Err(Withdraw("bad AS_PATH flags".into()));
                }
                AsPath::decode(value, four_octet_as)
                    .map(Self::AsPath)
                    .map_err(|e| Withdraw(format!("malformed AS_PATH: {e}")))
            }
            // RFC 7606 §7.3
            NEXT_HOP => match r.ipv4() {
                Some(a) if flags_ok(WELL_KNOWN) && len == 4 => Ok(Self::NextHop(a)),
                _ => Err(Withdraw("bad NEXT_HOP flags or length".into())),
            },
            // RFC 7606 §7.4
            MULTI_EXIT_DISC => match r.u32() {
                Some(v) if flags_ok(OPTIONAL_NON_TRANSITIVE) && len == 4 => Ok(Self::MultiExitDisc(v)),
                _ => Err(Withdraw("bad MULTI_EXIT_DISC flags or length".into())),
            },
            // RFC 7606 §7.5 (attribute discard when it comes from an eBGP peer is the session's
            // call: the codec does not know).
            LOCAL_PREF => match r.u32() {
                Some(v) if flags_ok(WELL_KNOWN) && len == 4 => Ok(Self::LocalPref(v)),
                _ => Err(Withdraw("bad LOCAL_PREF flags or length".into())),
            },
            // RFC 7606 §7.6
            ATOMIC_AGGREGATE => {
                if flags_ok(WELL_KNOWN) && len == 0 {
                    Ok(Self::AtomicAggregate)
                } else {
                    Err(Discard("bad ATOMIC_AGGREGATE flags or length".into()))
                }
            }
            // RFC 7606 §7.7, RFC 6793 §3 (length 6 or 8 by AS width), RFC 7607 (AS 0).
            AGGREGATOR => {
                let want = if four_octet_as { 8 } else { 6 };
                if !flags_ok(OPTIONAL_TRANSITIVE) || len != want {
                    return Err(Discard("bad AGGREGATOR flags or length".into()));
                }
                let asn = if four_octet_as { r.u32() } else { r.u16().map(u32::from) };
                match (asn, r.ipv4()) {
                    (Some(asn), Some(address)) if asn != 0 => Ok(Self::Aggregator(Aggregator { asn, address })),
                    _ => Err(Discard("AGGREGATOR with AS 0".into())),
                }
            }
            // RFC 6793 §6 (as updated by RFC 7606 §7): attribute discard.
            AS4_AGGREGATOR => {
                if !flags_ok(OPTIONAL_TRANSITIVE) || len != 8 {
                    return Err(Discard("bad AS4_AGGREGATOR flags or length".into()));
                }
                match (r.u32(), r.ipv4()) {
                    (Some(asn), Some(address)) if asn != 0 => Ok(Self::As4Aggregator(Aggregator { asn, address })),
                    _ => Err(Discard("AS4_AGGREGATOR with AS 0".into())),
                }
            }
            // RFC 6793 §6: attribute discard.
            AS4_PATH => {
                if !flags_ok(OPTIONAL_TRANSITIVE) {
                    return Err(Discard("bad AS4_PATH flags".into()));
                }
                AsPath::decode(value, true).map(Self::As4Path).map_err(|e| Discard(format!("malformed AS4_PATH: {e}")))
            }
            // RFC 7606 §7.8: not a non-zero multiple of 4 -> treat-as-withdraw.
            COMMUNITIES => {
                if !flags_ok(OPTIONAL_TRANSITIVE) || len == 0 || !len.is_multiple_of(4) {
                    return Err(Withdraw(format!("bad COMMUNITIES flags or length {len}")));
                }
                Ok(Self::Communities(value.chunks_exact(4).map(|c| Community(be_u32(c))).collect()))
            }
            // RFC 7606 §7.9
            ORIGINATOR_ID => match r.ipv4() {
                Some(a) if flags_ok(OPTIONAL_NON_TRANSITIVE) && len == 4 => Ok(Self::OriginatorId(a)),
                _ => Err(Withdraw("bad ORIGINATOR_ID flags or length".into())),
            },
            // RFC 7606 §7.10
            CLUSTER_LIST => {
                if !flags_ok(OPTIONAL_NON_TRANSITIVE) || len == 0 || !len.is_multiple_of(4) {
                    return Err(Withdraw(format!("bad CLUSTER_LIST flags or length {len}")));
                }
                Ok(Self::ClusterList(value.chunks_exact(4).map(|c| Ipv4Addr::from(be_u32(c))).collect()))
            }
            // RFC 7606 §7.14: not a non-zero multiple of 8 -> treat-as-withdraw.
            EXTENDED_COMMUNITIES => {
                if !flags_ok(OPTIONAL_TRANSITIVE) || len == 0 || !len.is_multiple_of(8) {
                    return Err(Withdraw(format!("bad EXTENDED_COMMUNITIES flags or length {len}")));
                }
                Ok(Self::ExtendedCommunities(
                    value.chunks_exact(8).filter_map(|c| c.try_into().ok().map(ExtendedCommunity)).collect(),
                ))
            }
            // RFC 8092 §5: not a non-zero multiple of 12 -> treat-as-withdraw.
            LARGE_COMMUNITIES => {
                if !flags_ok(OPTIONAL_TRANSITIVE) || len == 0 || !len.is_multiple_of(12) {
                    return Err(Withdraw(format!("bad LARGE_COMMUNITIES flags or length {len}")));
                }
                Ok(Self::LargeCommunities(
                    value
                        .chunks_exact(12)
                        .map(|c| LargeCommunity {
                            global_admin: be_u32(&c[0..4]),
                            local_data1: be_u32(&c[4..8]),
                            local_data2: be_u32(&c[8..12]),
                        })
                        .collect(),
                ))
            }
            // RFC 7606 §7.11 / §5.3 / RFC 4760 §7: if the NLRI cannot be parsed, session reset.
            MP_REACH_NLRI | MP_UNREACH_NLRI => {
                if !flags_ok(OPTIONAL_NON_TRANSITIVE) {
                    return Err(AttrError::Reset(DecodeError::update(
                        format!("bad flags {flags:#04x} on attribute {type_code}"),
                        UpdateSubcode::AttributeFlagsError,
                        raw.to_vec(),
                    )));
                }
                let parsed = if type_code == MP_REACH_NLRI {
                    MpReach::decode(value).map(Self::MpReach)
                } else {
                    MpUnreach::decode(value).map(Self::MpUnreach)
                };
                parsed.map_err(|e| {
                    AttrError::Reset(DecodeError::update(
                        format!("malformed attribute {type_code}: {e}"),
                        UpdateSubcode::OptionalAttributeError,
                        raw.to_vec(),
                    ))
                })
            }
            // RFC 4271 §6.3: an unrecognized well-known attribute is a session reset (RFC 7606
            // does not revise this).
            _ if flags & OPTIONAL == 0 => Err(AttrError::Reset(DecodeError::update(
                format!("unrecognized well-known attribute {type_code}"),
                UpdateSubcode::UnrecognizedWellKnownAttribute,
                raw.to_vec(),
            ))),
            _ => Ok(Self::Unknown(RawAttribute {
                flags: flags & !(EXTENDED_LENGTH | 0x0f),
                type_code,
                value: value.to_vec(),
            })),
        }
    }
}

fn be_u32(b: &[u8]) -> u32 {
    b.iter().take(4).fold(0u32, |acc, x| (acc << 8) | u32::from(*x))
}
