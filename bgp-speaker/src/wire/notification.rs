//! NOTIFICATION message (RFC 4271 §4.5) with typed error codes (RFC 4271 §6, RFC 4486, RFC 7313,
//! RFC 8538, RFC 9234) and the shutdown communication (RFC 9003).

use super::buf::Reader;
use super::prefix::AfiSafi;

macro_rules! subcode_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A value this codec does not name (kept so that decode/encode round-trips).
            Other(u8),
        }

        impl $name {
            pub fn from_u8(v: u8) -> Self {
                match v {
                    $($val => Self::$var,)*
                    v => Self::Other(v),
                }
            }

            pub fn to_u8(self) -> u8 {
                match self {
                    $(Self::$var => $val,)*
                    Self::Other(v) => v,
                }
            }
        }
    };
}

subcode_enum!(
    /// Message Header Error subcodes (RFC 4271 §4.5).
    HeaderSubcode {
        Unspecific = 0,
        ConnectionNotSynchronized = 1,
        BadMessageLength = 2,
        BadMessageType = 3,
    }
);

subcode_enum!(
    /// OPEN Message Error subcodes (RFC 4271 §4.5, RFC 5492 §5, RFC 9234 §4.2).
    OpenSubcode {
        Unspecific = 0,
        UnsupportedVersionNumber = 1,
        BadPeerAs = 2,
        BadBgpIdentifier = 3,
        UnsupportedOptionalParameter = 4,
        UnacceptableHoldTime = 6,
        UnsupportedCapability = 7,
        RoleMismatch = 11,
    }
);

subcode_enum!(
    /// UPDATE Message Error subcodes (RFC 4271 §4.5).
    UpdateSubcode {
        Unspecific = 0,
        MalformedAttributeList = 1,
        UnrecognizedWellKnownAttribute = 2,
        MissingWellKnownAttribute = 3,
        AttributeFlagsError = 4,
        AttributeLengthError = 5,
        InvalidOriginAttribute = 6,
        InvalidNextHopAttribute = 8,
        OptionalAttributeError = 9,
        InvalidNetworkField = 10,
        MalformedAsPath = 11,
    }
);

subcode_enum!(
    /// Finite State Machine Error subcodes (RFC 6608 §3).
    FsmSubcode {
        Unspecified = 0,
        UnexpectedInOpenSent = 1,
        UnexpectedInOpenConfirm = 2,
        UnexpectedInEstablished = 3,
    }
);

subcode_enum!(
    /// Cease subcodes (RFC 4486 §4, RFC 8538 §5 Hard Reset, RFC 9384 BFD Down).
    CeaseSubcode {
        Unspecific = 0,
        MaximumPrefixesReached = 1,
        AdministrativeShutdown = 2,
        PeerDeconfigured = 3,
        AdministrativeReset = 4,
        ConnectionRejected = 5,
        OtherConfigurationChange = 6,
        ConnectionCollisionResolution = 7,
        OutOfResources = 8,
        HardReset = 9,
        BfdDown = 10,
    }
);

subcode_enum!(
    /// ROUTE-REFRESH Message Error subcodes (RFC 7313 §5).
    RouteRefreshSubcode {
        Reserved = 0,
        InvalidMessageLength = 1,
    }
);

/// Error code and subcode of a NOTIFICATION (RFC 4271 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1
    MessageHeader(HeaderSubcode),
    /// 2
    Open(OpenSubcode),
    /// 3
    Update(UpdateSubcode),
    /// 4 (subcode 0 only; other subcodes decode as [`ErrorCode::Other`])
    HoldTimerExpired,
    /// 5
    Fsm(FsmSubcode),
    /// 6
    Cease(CeaseSubcode),
    /// 7 (RFC 7313)
    RouteRefresh(RouteRefreshSubcode),
    /// Any other code.
    Other { code: u8, subcode: u8 },
}

impl ErrorCode {
    pub fn from_codes(code: u8, subcode: u8) -> Self {
        match code {
            1 => Self::MessageHeader(HeaderSubcode::from_u8(subcode)),
            2 => Self::Open(OpenSubcode::from_u8(subcode)),
            3 => Self::Update(UpdateSubcode::from_u8(subcode)),
            4 if subcode == 0 => Self::HoldTimerExpired,
            5 => Self::Fsm(FsmSubcode::from_u8(subcode)),
            6 => Self::Cease(CeaseSubcode::from_u8(subcode)),
            7 => Self::RouteRefresh(RouteRefreshSubcode::from_u8(subcode)),
            code => Self::Other { code, subcode },
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::MessageHeader(_) => 1,
            Self::Open(_) => 2,
            Self::Update(_) => 3,
            Self::HoldTimerExpired => 4,
            Self::Fsm(_) => 5,
            Self::Cease(_) => 6,
            Self::RouteRefresh(_) => 7,
            Self::Other { code, .. } => code,
        }
    }

    pub fn subcode(self) -> u8 {
        match self {
            Self::MessageHeader(s) => s.to_u8(),
            Self::Open(s) => s.to_u8(),
            Self::Update(s) => s.to_u8(),
            Self::HoldTimerExpired => 0,
            Self::Fsm(s) => s.to_u8(),
            Self::Cease(s) => s.to_u8(),
            Self::RouteRefresh(s) => s.to_u8(),
            Self::Other { subcode, .. } => subcode,
        }
    }
}

/// NOTIFICATION message body (RFC 4271 §4.5).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Error code    | Error subcode |   Data (variable)             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    pub code: ErrorCode,
    pub data: Vec<u8>,
}

/// Longest shutdown communication (RFC 9003 §2).
pub const MAX_SHUTDOWN_COMMUNICATION_LEN: usize = 255;

impl Notification {
    pub fn new(code: ErrorCode, data: Vec<u8>) -> Self {
        Self { code, data }
    }

    pub fn cease(subcode: CeaseSubcode) -> Self {
        Self::new(ErrorCode::Cease(subcode), Vec::new())
    }

    /// Cease / Administrative Shutdown with a shutdown communication (RFC 9003 §2). The message
    /// is truncated to 255 octets on a character boundary.
    pub fn admin_shutdown(message: &str) -> Self {
        Self::with_shutdown_communication(CeaseSubcode::AdministrativeShutdown, message)
    }

    /// Cease / Administrative Reset with a shutdown communication (RFC 9003 §2).
    pub fn admin_reset(message: &str) -> Self {
        Self::with_shutdown_communication(CeaseSubcode::AdministrativeReset, message)
    }

    fn with_shutdown_communication(subcode: CeaseSubcode, message: &str) -> Self {
        let mut end = message.len().min(MAX_SHUTDOWN_COMMUNICATION_LEN);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = &message.as_bytes()[..end];
        let mut data = Vec::with_capacity(1 + text.len());
        data.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
        data.extend_from_slice(text);
        Self::new(ErrorCode::Cease(subcode), data)
    }

    /// Cease / Maximum Number of Prefixes Reached, with the data of RFC 4486 §4 (AFI, SAFI,
    /// upper bound).
    pub fn max_prefixes(family: AfiSafi, limit: u32) -> Self {
        let mut data = Vec::with_capacity(7);
        data.extend_from_slice(&family.afi.0.to_be_bytes());
        data.push(family.safi.0);
        data.extend_from_slice(&limit.to_be_bytes());
        Self::new(ErrorCode::Cease(CeaseSubcode::MaximumPrefixesReached), data)
    }

    /// The shutdown communication of a Cease / Administrative Shutdown or Reset (RFC 9003 §2):
    /// `None` if this is not one, or if the length or UTF-8 is invalid (the caller may then log
    /// `data` in hex, as RFC 9003 §4 suggests).
    pub fn shutdown_communication(&self) -> Option<&str> {
        if !matches!(
            self.code,
            ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown | CeaseSubcode::AdministrativeReset)
        ) {
            return None;
        }
        let mut r = Reader::new(&self.data);
        let len = r.u8()?;
        std::str::from_utf8(r.take(usize::from(len))?).ok()
    }

    pub(crate) fn decode_body(body: &[u8]) -> Option<Self> {
        let mut r = Reader::new(body);
        let code = r.u8()?;
        let subcode = r.u8()?;
        Some(Self::new(ErrorCode::from_codes(code, subcode), r.rest().to_vec()))
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.code.code());
        out.push(self.code.subcode());
        out.extend_from_slice(&self.data);
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} (code {}, subcode {})", self.code, self.code.code(), self.code.subcode())?;
        if let Some(msg) = self.shutdown_communication() {
            write!(f, ": {msg:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=255u8 {
            for subcode in 0..=255u8 {
                let c = ErrorCode::from_codes(code, subcode);
                assert_eq!((c.code(), c.subcode()), (code, subcode));
            }
        }
    }

    #[test]
    fn shutdown_communication_truncates_on_char_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let n = Notification::admin_shutdown(&long);
        assert_eq!(n.data[0], 254);
        assert_eq!(n.shutdown_communication().unwrap().chars().count(), 127);
    }
}
