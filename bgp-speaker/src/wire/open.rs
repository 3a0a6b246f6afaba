//! OPEN message (RFC 4271 §4.2) with capabilities (RFC 5492) and extended optional parameters
//! length (RFC 9072).

use std::net::Ipv4Addr;

use super::buf::{Reader, put_u16_at};
use super::error::DecodeError;
use super::notification::{ErrorCode, Notification, OpenSubcode};
use super::prefix::{Afi, AfiSafi, Safi};
use super::{AS_TRANS, BGP_VERSION};

/// Optional parameter type carrying capabilities (RFC 5492 §4).
pub const OPT_PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072 §2: an Optional Parameters Length of 255 followed by this "type" means the extended
/// (2-octet length) format.
const OPT_PARAM_EXTENDED: u8 = 255;

/// Capability codes (IANA "Capability Codes").
pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const FQDN: u8 = 73;
}

/// OPEN message body (RFC 4271 §4.2).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+
/// |    Version    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     My Autonomous System      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Hold Time           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         BGP Identifier                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Opt Parm Len  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |             Optional Parameters (variable)                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// The version is always 4 (anything else fails to decode). Capabilities from all optional
/// parameters are flattened, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field: [`AS_TRANS`] when the real ASN needs 4 octets.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

/// Capabilities (RFC 5492 §4).
///
/// ```text
/// +------------------------------+
/// | Capability Code (1 octet)    |
/// +------------------------------+
/// | Capability Length (1 octet)  |
/// +------------------------------+
/// | Capability Value (variable)  |
/// ~                              ~
/// +------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// 1, RFC 4760 §8: AFI (2) | Reserved (1) | SAFI (1).
    Multiprotocol(AfiSafi),
    /// 2, RFC 2918.
    RouteRefresh,
    /// 5, RFC 8950 §3: (NLRI AFI (2), NLRI SAFI (2), Nexthop AFI (2))*.
    ExtendedNextHop(Vec<ExtendedNextHop>),
    /// 64, RFC 4724 §3.
    GracefulRestart(GracefulRestart),
    /// 65, RFC 6793 §3: the 4-octet ASN.
    FourOctetAs(u32),
    /// 69, RFC 7911 §4: (AFI (2), SAFI (1), Send/Receive (1))*. Parsed, not acted on.
    AddPath(Vec<AddPathFamily>),
    /// 70, RFC 7313 §3. Parsed, not acted on.
    EnhancedRouteRefresh,
    /// Anything else (FQDN, extended message, long-lived GR, ...), kept raw.
    Unknown { code: u8, value: Vec<u8> },
}

/// One tuple of the extended next hop capability (RFC 8950 §3). The NLRI SAFI is 2 octets here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtendedNextHop {
    pub nlri_afi: Afi,
    pub nlri_safi: u16,
    pub nexthop_afi: Afi,
}

/// Graceful restart capability (RFC 4724 §3; N bit from RFC 8538 §2).
///
/// ```text
/// +--------------------------------------------------+
/// | Restart Flags (4 bits)                           |
/// +--------------------------------------------------+
/// | Restart Time in seconds (12 bits)                |
/// +--------------------------------------------------+
/// | Address Family Identifier (16 bits)              |
/// +--------------------------------------------------+
/// | Subsequent Address Family Identifier (8 bits)    |
/// +--------------------------------------------------+
/// | Flags for Address Family (8 bits)                |
/// +--------------------------------------------------+
/// | ...                                              |
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): the sender supports GR for NOTIFICATIONs.
    pub notification: bool,
    /// Seconds, 12 bits (larger values are truncated on encode).
    pub restart_time: u16,
    pub families: Vec<GrFamily>,
}

/// Per-AFI/SAFI part of the graceful restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrFamily {
    pub family: AfiSafi,
    /// F bit: forwarding state was preserved.
    pub forwarding_state: bool,
}

/// Add-path send/receive per family (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddPathFamily {
    pub family: AfiSafi,
    /// 1 = receive, 2 = send, 3 = both.
    pub send_receive: u8,
}

const GR_RESTART_STATE: u16 = 0x8000;
const GR_NOTIFICATION: u16 = 0x4000;
const GR_TIME_MASK: u16 = 0x0fff;
const GR_FORWARDING: u8 = 0x80;

fn malformed_cap(code: u8) -> DecodeError {
    // RFC 5492 names no subcode for a malformed capability: use OPEN / Unspecific.
    DecodeError::open(format!("malformed capability {code}"), OpenSubcode::Unspecific, Vec::new())
}

fn read_family(r: &mut Reader<'_>) -> Option<AfiSafi> {
    let afi = r.u16()?;
    let safi = r.u8()?;
    Some(AfiSafi::new(Afi(afi), Safi(safi)))
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Self::Multiprotocol(_) => cap_code::MULTIPROTOCOL,
            Self::RouteRefresh => cap_code::ROUTE_REFRESH,
            Self::ExtendedNextHop(_) => cap_code::EXTENDED_NEXT_HOP,
            Self::GracefulRestart(_) => cap_code::GRACEFUL_RESTART,
            Self::FourOctetAs(_) => cap_code::FOUR_OCTET_AS,
            Self::AddPath(_) => cap_code::ADD_PATH,
            Self::EnhancedRouteRefresh => cap_code::ENHANCED_ROUTE_REFRESH,
            Self::Unknown { code, .. } => *code,
        }
    }

    fn decode(code: u8, value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(value);
        let cap = match code {
            cap_code::MULTIPROTOCOL => {
                let afi = r.u16().ok_or_else(|| malformed_cap(code))?;
                let _reserved = r.u8();
                let safi = r.u8().ok_or_else(|| malformed_cap(code))?;
                Self::Multiprotocol(AfiSafi::new(Afi(afi), Safi(safi)))
            }
            cap_code::ROUTE_REFRESH => Self::RouteRefresh,
            cap_code::ENHANCED_ROUTE_REFRESH => Self::EnhancedRouteRefresh,
            cap_code::EXTENDED_NEXT_HOP => {
                if !value.len().is_multiple_of(6) {
                    return Err(malformed_cap(code));
                }
                let mut v = Vec::new();
                while let (Some(a), Some(s), Some(n)) = (r.u16(), r.u16(), r.u16()) {
                    v.push(ExtendedNextHop { nlri_afi: Afi(a), nlri_safi: s, nexthop_afi: Afi(n) });
                }
                Self::ExtendedNextHop(v)
            }
            cap_code::GRACEFUL_RESTART => {
                let flags = r.u16().ok_or_else(|| malformed_cap(code))?;
                if !r.remaining().is_multiple_of(4) {
                    return Err(malformed_cap(code));
                }
                let mut families = Vec::new();
                while let (Some(family), Some(f)) = (read_family(&mut r), r.u8()) {
                    families.push(GrFamily { family, forwarding_state: f & GR_FORWARDING != 0 });
                }
                Self::GracefulRestart(GracefulRestart {
                    restart_state: flags & GR_RESTART_STATE != 0,
                    notification: flags & GR_NOTIFICATION != 0,
                    restart_time: flags & GR_TIME_MASK,
                    families,
                })
            }
            cap_code::FOUR_OCTET_AS => Self::FourOctetAs(r.u32().ok_or_else(|| malformed_cap(code))?),
            cap_code::ADD_PATH => {
                if !value.len().is_multiple_of(4) {
                    return Err(malformed_cap(code));
                }
                let mut v = Vec::new();
                while let (Some(family), Some(send_receive)) = (read_family(&mut r), r.u8()) {
                    v.push(AddPathFamily { family, send_receive });
                }
                Self::AddPath(v)
            }
            code => return Ok(Self::Unknown { code, value: value.to_vec() }),
        };
        // Fixed-size capabilities must not carry trailing octets.
        if !r.is_empty() {
            return Err(malformed_cap(code));
        }
        Ok(cap)
    }

    fn encode_value(&self, out: &mut Vec<u8>) {
        match self {
            Self::Multiprotocol(f) => {
                out.extend_from_slice(&f.afi.0.to_be_bytes());
                out.push(0);
                out.push(f.safi.0);
            }
            Self::RouteRefresh | Self::EnhancedRouteRefresh => {}
            Self::ExtendedNextHop(v) => {
                for e in v {
                    out.extend_from_slice(&e.nlri_afi.0.to_be_bytes());
                    out.extend_from_slice(&e.nlri_safi.to_be_bytes());
                    out.extend_from_slice(&e.nexthop_afi.0.to_be_bytes());
                }
            }
            Self::GracefulRestart(gr) => {
                let mut flags = gr.restart_time & GR_TIME_MASK;
                if gr.restart_state {
                    flags |= GR_RESTART_STATE;
                }
                if gr.notification {
                    flags |= GR_NOTIFICATION;
                }
                out.extend_from_slice(&flags.to_be_bytes());
                for f in &gr.families {
                    out.extend_from_slice(&f.family.afi.0.to_be_bytes());
                    out.push(f.family.safi.0);
                    out.push(if f.forwarding_state { GR_FORWARDING } else { 0 });
                }
            }
            Self::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Self::AddPath(v) => {
                for a in v {
                    out.extend_from_slice(&a.family.afi.0.to_be_bytes());
                    out.push(a.family.safi.0);
                    out.push(a.send_receive);
                }
            }
            Self::Unknown { value, .. } => out.extend_from_slice(value),
        }
    }

    /// The capability TLV (code, length, value). Values longer than 255 octets are truncated.
    pub fn to_tlv(&self) -> Vec<u8> {
        let mut value = Vec::new();
        self.encode_value(&mut value);
        value.truncate(255);
        let mut out = vec![self.code(), u8::try_from(value.len()).unwrap_or(u8::MAX)];
        out.extend_from_slice(&value);
        out
    }
}

/// What the local side expects of a peer's OPEN; checked by [`Open::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCheck {
    pub local_as: u32,
    pub local_bgp_id: Ipv4Addr,
    /// The configured peer AS, if any (RFC 4271 §6.2 "Bad Peer AS").
    pub peer_as: Option<u32>,
    /// Capability codes the peer must advertise (RFC 5492 §5 "Unsupported Capability").
    pub required_capabilities: Vec<u8>,
}

impl Open {
    /// An OPEN for `asn`: `my_as` is set to [`AS_TRANS`] when `asn` needs 4 octets (RFC 6793 §3).
    /// Include [`Capability::FourOctetAs`] in `capabilities` yourself.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS as u16);
        Self { my_as, hold_time, bgp_id, capabilities }
    }

    /// The 4-octet ASN if advertised, else the 2-octet field (RFC 6793 §4.1).
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    pub fn has_capability(&self, code: u8) -> bool {
        self.capabilities.iter().any(|c| c.code() == code)
    }

    /// Multiprotocol families advertised (RFC 4760 §8). RFC 4760 says a peer that advertises
    /// none supports IPv4 unicast only; that defaulting is the caller's.
    pub fn families(&self) -> impl Iterator<Item = AfiSafi> + '_ {
        self.capabilities.iter().filter_map(|c| match c {
            Capability::Multiprotocol(f) => Some(*f),
            _ => None,
        })
    }

    /// Checks that need local configuration (RFC 4271 §6.2, RFC 6286, RFC 5492 §5); the
    /// config-free checks run in decode.
    pub fn validate(&self, check: &OpenCheck) -> Result<(), Notification> {
        let asn = self.asn();
        if asn == 0 || check.peer_as.is_some_and(|want| want != asn) {
            return Err(Notification::new(ErrorCode::Open(OpenSubcode::BadPeerAs), Vec::new()));
        }
        // RFC 6286 §2.2: within an AS the identifiers must differ.
        if asn == check.local_as && self.bgp_id == check.local_bgp_id {
            return Err(Notification::new(ErrorCode::Open(OpenSubcode::BadBgpIdentifier), Vec::new()));
        }
        let missing: Vec<u8> = check
            .required_capabilities
            .iter()
            .filter(|code| !self.has_capability(**code))
            .flat_map(|code| [*code, 0])
            .collect();
        if !missing.is_empty() {
            return Err(Notification::new(ErrorCode::Open(OpenSubcode::UnsupportedCapability), missing));
        }
        Ok(())
    }

    /// Decodes the body (after the 19-octet header) and runs the checks of RFC 4271 §6.2 that need
    /// no configuration: version, hold time, identifier, optional parameters.
    pub(crate) fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let short = || DecodeError::open("OPEN too short", OpenSubcode::Unspecific, Vec::new());
        let mut r = Reader::new(body);
        let version = r.u8().ok_or_else(short)?;
        if version != BGP_VERSION {
            // RFC 4271 §6.2: data is the largest supported version below the bid (or our
            // smallest): we only have 4.
            return Err(DecodeError::open(
                format!("unsupported version {version}"),
                OpenSubcode::UnsupportedVersionNumber,
                u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            ));
        }
        let my_as = r.u16().ok_or_else(short)?;
        let hold_time = r.u16().ok_or_else(short)?;
        let bgp_id = r.ipv4().ok_or_else(short)?;
        let opt_len = r.u8().ok_or_else(short)?;
        if hold_time == 1 || hold_time == 2 {
            return Err(DecodeError::open(
                format!("unacceptable hold time {hold_time}"),
                OpenSubcode::UnacceptableHoldTime,
                Vec::new(),
            ));
        }
        // RFC 6286 §2.1: a non-zero 32-bit value.
        if bgp_id.is_unspecified() {
            return Err(DecodeError::open("BGP identifier is 0", OpenSubcode::BadBgpIdentifier, Vec::new()));
        }
        let bad_len = || DecodeError::open("optional parameters overrun", OpenSubcode::Unspecific, Vec::new());
        // RFC 9072 §2: Non-Ext OP Len 255 and Non-Ext OP Type 255 announce the extended format.
        let extended = opt_len == 255 && r.peek_u8() == Some(OPT_PARAM_EXTENDED);
        let params = if extended {
            let _ = r.u8();
            let len = r.u16().ok_or_else(bad_len)?;
            r.take(usize::from(len)).ok_or_else(bad_len)?
        } else {
            r.take(usize::from(opt_len)).ok_or_else(bad_len)?
        };
        if !r.is_empty() {
            return Err(DecodeError::open(
                "trailing octets after optional parameters",
                OpenSubcode::Unspecific,
                vec![],
            ));
        }
        let mut capabilities = Vec::new();
        let mut p = Reader::new(params);
        while !p.is_empty() {
            let ptype = p.u8().ok_or_else(bad_len)?;
            let plen = if extended { p.u16() } else { p.u8().map(u16::from) }.ok_or_else(bad_len)?;
            let pval = p.take(usize::from(plen)).ok_or_else(bad_len)?;
            if ptype != OPT_PARAM_CAPABILITIES {
                return Err(DecodeError::open(
                    format!("unsupported optional parameter {ptype}"),
                    OpenSubcode::UnsupportedOptionalParameter,
                    Vec::new(),
                ));
            }
            let mut c = Reader::new(pval);
            while !c.is_empty() {
                let code = c.u8().ok_or_else(bad_len)?;
                let len = c.u8().ok_or_else(bad_len)?;
                let value = c.take(usize::from(len)).ok_or_else(|| malformed_cap(code))?;
                capabilities.push(Capability::decode(code, value)?);
            }
        }
        Ok(Self { my_as, hold_time, bgp_id, capabilities })
    }

    /// Encodes the body. Each capability goes in its own optional parameter (as GoBGP and
    /// BIRD do); if they exceed 255 octets in total, the RFC 9072 extended format is used.
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(BGP_VERSION);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let tlvs: Vec<Vec<u8>> = self.capabilities.iter().map(Capability::to_tlv).collect();
        let short_len: usize = tlvs.iter().map(|t| t.len() + 2).sum();
        if short_len <= 255 {
            out.push(u8::try_from(short_len).unwrap_or(u8::MAX));
            for t in &tlvs {
                out.push(OPT_PARAM_CAPABILITIES);
                out.push(u8::try_from(t.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(t);
            }
        } else {
            out.push(255);
            out.push(OPT_PARAM_EXTENDED);
            let len_pos = out.len();
            out.extend_from_slice(&[0, 0]);
            for t in &tlvs {
                out.push(OPT_PARAM_CAPABILITIES);
                out.extend_from_slice(&u16::try_from(t.len()).unwrap_or(u16::MAX).to_be_bytes());
                out.extend_from_slice(t);
            }
            let len = out.len() - len_pos - 2;
            put_u16_at(out, len_pos, len);
        }
    }
}
