//! ROUTE-REFRESH message (RFC 2918 §3; subtype from RFC 7313 §3.2).

use super::buf::Reader;
use super::error::DecodeError;
use super::notification::{ErrorCode, RouteRefreshSubcode};
use super::prefix::{Afi, AfiSafi, Safi};

/// ROUTE-REFRESH body.
///
/// ```text
///  0       7      15      23      31
/// +-------+-------+-------+-------+
/// |      AFI      | Subtype | SAFI |
/// +-------+-------+-------+-------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    pub family: AfiSafi,
    pub subtype: RefreshSubtype,
}

/// Message subtype (RFC 7313 §3.2; "Reserved" in RFC 2918).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefreshSubtype {
    /// 0: a normal route refresh request.
    Request,
    /// 1: Beginning of Route Refresh.
    BeginningOfRefresh,
    /// 2: End of Route Refresh.
    EndOfRefresh,
    /// 3–255: reserved; RFC 7313 §5 says ignore the message.
    Other(u8),
}

impl RefreshSubtype {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Request,
            1 => Self::BeginningOfRefresh,
            2 => Self::EndOfRefresh,
            v => Self::Other(v),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::Request => 0,
            Self::BeginningOfRefresh => 1,
            Self::EndOfRefresh => 2,
            Self::Other(v) => v,
        }
    }
}

impl RouteRefresh {
    pub fn request(family: AfiSafi) -> Self {
        Self { family, subtype: RefreshSubtype::Request }
    }

    /// `message` is the whole message, header included: RFC 7313 §5 puts it in the NOTIFICATION.
    pub(crate) fn decode_body(body: &[u8], message: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let (Some(afi), Some(subtype), Some(safi)) = (r.u16(), r.u8(), r.u8()) else {
            return Err(DecodeError::new(
                "ROUTE-REFRESH shorter than 4 octets",
                ErrorCode::RouteRefresh(RouteRefreshSubcode::InvalidMessageLength),
                message.to_vec(),
            ));
        };
        let subtype = RefreshSubtype::from_u8(subtype);
        // RFC 7313 §5: a BoRR/EoRR (and, here, any) ROUTE-REFRESH longer than 4 octets is an
        // error. (Subtype 0 with ORF entries, RFC 5291, is not supported.)
        if !r.is_empty() {
            return Err(DecodeError::new(
                "ROUTE-REFRESH longer than 4 octets",
                ErrorCode::RouteRefresh(RouteRefreshSubcode::InvalidMessageLength),
                message.to_vec(),
            ));
        }
        Ok(Self { family: AfiSafi::new(Afi(afi), Safi(safi)), subtype })
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.family.afi.0.to_be_bytes());
        out.push(self.subtype.to_u8());
        out.push(self.family.safi.0);
    }
}
