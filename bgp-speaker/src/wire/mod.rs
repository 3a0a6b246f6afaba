//! BGP-4 wire codec: sans-IO encode/decode of BGP messages (RFC 4271 §4).
//!
//! - [`frame_len`] tells a framing reader how long the next message is;
//! - [`Message::decode`] decodes one message from the front of a buffer;
//! - [`Message::encode`] appends one message to a buffer.
//!
//! What negotiation changes (4-octet AS, maximum message size, add-path) travels in
//! [`DecodeCxt`] / [`EncodeCxt`]. Decode errors carry the NOTIFICATION to send; UPDATE errors
//! that RFC 7606 lets a session survive are reported in [`Update::problems`] instead.

mod attribute;
mod buf;
mod error;
mod notification;
mod open;
mod prefix;
mod route_refresh;
mod update;

pub use attribute::{
    Aggregator, AsPath, AsSegment, Community, ExtendedCommunity, Ipv6NextHop, LargeCommunity, MpReach, MpUnreach,
    NextHop, Origin, PathAttribute, RawAttribute, SegmentType, attr_flags, attr_type,
};
pub use error::{AttrProblem, DecodeError, EncodeError, Outcome};
pub use notification::{
    CeaseSubcode, ErrorCode, FsmSubcode, HeaderSubcode, MAX_SHUTDOWN_COMMUNICATION_LEN, Notification, OpenSubcode,
    RouteRefreshSubcode, UpdateSubcode,
};
pub use open::{
    AddPathFamily, Capability, ExtendedNextHop, GrFamily, GracefulRestart, OPT_PARAM_CAPABILITIES, Open, OpenCheck,
    cap_code,
};
pub use prefix::{Afi, AfiSafi, Ipv4Prefix, Ipv6Prefix, PrefixLenError, Safi};
pub use route_refresh::{RefreshSubtype, RouteRefresh};
pub use update::Update;

use buf::put_u16_at;

/// The all-ones marker that starts every message (RFC 4271 §4.1).
pub const MARKER: [u8; 16] = [0xff; 16];
/// Header length (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Maximum message length without RFC 8654 extended messages (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message length with RFC 8654 extended messages.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// The only BGP version we speak.
pub const BGP_VERSION: u8 = 4;
/// The 2-octet stand-in for a 4-octet ASN (RFC 6793 §9).
pub const AS_TRANS: u32 = 23456;

/// Message type codes (RFC 4271 §4.1, RFC 2918 §3).
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

// ===== Contexts =====

/// What the session negotiated that changes how received messages are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeCxt {
    /// Both sides advertised the 4-octet AS capability (RFC 6793): AS_PATH/AGGREGATOR carry
    /// 4-octet ASNs, and AS4_PATH/AS4_AGGREGATOR are discarded.
    pub four_octet_as: bool,
    /// Largest acceptable message: 4096, or 65535 with RFC 8654 (not negotiated yet).
    pub max_message_len: usize,
    /// Families for which we receive path identifiers (RFC 7911). Not implemented: the codec
    /// ignores this, so do not advertise add-path receive until it is.
    pub add_path: Vec<AfiSafi>,
}

/// What the session negotiated that changes how sent messages are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeCxt {
    /// The peer advertised the 4-octet AS capability (RFC 6793); if not, 4-octet ASNs go out as
    /// AS_TRANS with AS4_PATH/AS4_AGGREGATOR.
    pub four_octet_as: bool,
    /// Largest message we may send: 4096, or 65535 with RFC 8654.
    pub max_message_len: usize,
    /// Families for which we send path identifiers (RFC 7911). Not implemented: ignored.
    pub add_path: Vec<AfiSafi>,
}

impl DecodeCxt {
    pub fn new(four_octet_as: bool) -> Self {
        Self { four_octet_as, max_message_len: MAX_MESSAGE_LEN, add_path: Vec::new() }
    }
}

impl EncodeCxt {
    pub fn new(four_octet_as: bool) -> Self {
        Self { four_octet_as, max_message_len: MAX_MESSAGE_LEN, add_path: Vec::new() }
    }
}

/// Before negotiation: 2-octet AS, 4096 octets.
impl Default for DecodeCxt {
    fn default() -> Self {
        Self::new(false)
    }
}

/// Before negotiation: 2-octet AS, 4096 octets.
impl Default for EncodeCxt {
    fn default() -> Self {
        Self::new(false)
    }
}

// ===== Message =====

/// A BGP message (RFC 4271 §4).
///
/// Header (RFC 4271 §4.1):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +                                                               +
/// |                           Marker                              |
/// +                                                               +
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |          Length               |      Type     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// Smallest length of each message type, header included (RFC 4271 §4.2–§4.5, RFC 2918 §3).
fn min_len(type_code: u8) -> Option<usize> {
    match type_code {
        msg_type::OPEN => Some(29),
        msg_type::UPDATE => Some(23),
        msg_type::NOTIFICATION => Some(21),
        msg_type::KEEPALIVE => Some(HEADER_LEN),
        msg_type::ROUTE_REFRESH => Some(23),
        _ => None,
    }
}

/// For a framing reader: `Ok(None)` until the 19-octet header is in; then `Ok(Some(n))`, the
/// total length of the message at the front of `buf` (wait until `buf.len() >= n`, then call
/// [`Message::decode`]). Header errors (RFC 4271 §6.1) are reported as soon as they are visible,
/// a bad marker even before the header is complete.
pub fn frame_len(buf: &[u8], cxt: &DecodeCxt) -> Result<Option<usize>, DecodeError> {
    if buf.iter().take(MARKER.len()).any(|b| *b != 0xff) {
        return Err(DecodeError::not_synchronized());
    }
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let length = u16::from_be_bytes([header[16], header[17]]);
    let type_code = header[18];
    let len = usize::from(length);
    if len < HEADER_LEN || len > cxt.max_message_len.min(MAX_EXTENDED_MESSAGE_LEN) {
        return Err(DecodeError::bad_length("outside 19..=max", length));
    }
    let min = min_len(type_code).ok_or_else(|| DecodeError::bad_type(type_code))?;
    // RFC 4271 §6.1: too short for its type, or a KEEPALIVE that is not exactly 19.
    if len < min || (type_code == msg_type::KEEPALIVE && len != HEADER_LEN) {
        return Err(DecodeError::bad_length(format!("wrong length for message type {type_code}"), length));
    }
    Ok(Some(len))
}

impl Message {
    pub fn type_code(&self) -> u8 {
        match self {
            Self::Open(_) => msg_type::OPEN,
            Self::Update(_) => msg_type::UPDATE,
            Self::Notification(_) => msg_type::NOTIFICATION,
            Self::Keepalive => msg_type::KEEPALIVE,
            Self::RouteRefresh(_) => msg_type::ROUTE_REFRESH,
        }
    }

    /// Decodes the message at the front of `buf`; returns it and the number of octets used.
    ///
    /// `buf` must hold the whole message (see [`frame_len`]); a short buffer is reported as a
    /// bad length. For UPDATE, `Err` means session reset; RFC 7606 treat-as-withdraw and
    /// attribute-discard come back in [`Update::problems`].
    pub fn decode(buf: &[u8], cxt: &DecodeCxt) -> Result<(Message, usize), DecodeError> {
        let len = match frame_len(buf, cxt)? {
            Some(len) if len <= buf.len() => len,
            Some(len) => {
                let length = u16::try_from(len).unwrap_or(u16::MAX);
                return Err(DecodeError::bad_length(format!("only {} octets available", buf.len()), length));
            }
            None => return Err(DecodeError::bad_length("incomplete header", 0)),
        };
        let message = &buf[..len];
        let body = &message[HEADER_LEN..];
        let msg = match message[18] {
            msg_type::OPEN => Message::Open(Open::decode_body(body)?),
            msg_type::UPDATE => Message::Update(Update::decode_body(body, cxt)?),
            msg_type::NOTIFICATION => Message::Notification(
                // Length >= 21 was checked, so code and subcode are present.
                Notification::decode_body(body).ok_or_else(|| DecodeError::bad_length("short NOTIFICATION", 0))?,
            ),
            msg_type::KEEPALIVE => Message::Keepalive,
            msg_type::ROUTE_REFRESH => Message::RouteRefresh(RouteRefresh::decode_body(body, message)?),
            t => return Err(DecodeError::bad_type(t)),
        };
        Ok((msg, len))
    }

    /// Encodes the message into a new buffer.
    pub fn encode(&self, cxt: &EncodeCxt) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(cxt, &mut out)?;
        Ok(out)
    }

    /// Appends the message to `out` and returns its length. If it would exceed
    /// `cxt.max_message_len`, nothing is appended (split UPDATEs before that).
    pub fn encode_into(&self, cxt: &EncodeCxt, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let start = out.len();
        out.extend_from_slice(&MARKER);
        out.extend_from_slice(&[0, 0]);
        out.push(self.type_code());
        match self {
            Self::Open(m) => m.encode_body(out),
            Self::Update(m) => m.encode_body(cxt, out),
            Self::Notification(m) => m.encode_body(out),
            Self::Keepalive => {}
            Self::RouteRefresh(m) => m.encode_body(out),
        }
        let len = out.len() - start;
        let max = cxt.max_message_len.min(MAX_EXTENDED_MESSAGE_LEN);
        if len > max {
            out.truncate(start);
            return Err(EncodeError::TooLong { len, max });
        }
        put_u16_at(out, start + 16, len);
        Ok(len)
    }
}
