//! Decode/encode errors. Every [`DecodeError`] carries the NOTIFICATION it maps to; UPDATE
//! problems that RFC 7606 lets us survive are reported as [`AttrProblem`]s instead.

use std::fmt;

use super::notification::{ErrorCode, HeaderSubcode, Notification, OpenSubcode, UpdateSubcode};

/// A message that cannot be accepted: the session must send `notification` and close
/// (RFC 4271 §6; for UPDATE, the "session reset" of RFC 7606 §2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} -> NOTIFICATION {notification}")]
pub struct DecodeError {
    /// What went wrong, for logs.
    pub reason: String,
    /// The NOTIFICATION to send (RFC 4271 §6.1–§6.3).
    pub notification: Notification,
}

impl DecodeError {
    pub fn new(reason: impl Into<String>, code: ErrorCode, data: Vec<u8>) -> Self {
        Self { reason: reason.into(), notification: Notification::new(code, data) }
    }

    /// RFC 4271 §6.1: marker not all ones.
    pub(crate) fn not_synchronized() -> Self {
        Self::new(
            "connection not synchronized: marker is not all ones",
            ErrorCode::MessageHeader(HeaderSubcode::ConnectionNotSynchronized),
            Vec::new(),
        )
    }

    /// RFC 4271 §6.1: the Data field carries the erroneous Length field.
    pub(crate) fn bad_length(reason: impl fmt::Display, length: u16) -> Self {
        Self::new(
            format!("bad message length {length}: {reason}"),
            ErrorCode::MessageHeader(HeaderSubcode::BadMessageLength),
            length.to_be_bytes().to_vec(),
        )
    }

    /// RFC 4271 §6.1: the Data field carries the erroneous Type field.
    pub(crate) fn bad_type(type_code: u8) -> Self {
        Self::new(
            format!("bad message type {type_code}"),
            ErrorCode::MessageHeader(HeaderSubcode::BadMessageType),
            vec![type_code],
        )
    }

    pub(crate) fn open(reason: impl Into<String>, subcode: OpenSubcode, data: Vec<u8>) -> Self {
        Self::new(reason, ErrorCode::Open(subcode), data)
    }

    pub(crate) fn update(reason: impl Into<String>, subcode: UpdateSubcode, data: Vec<u8>) -> Self {
        Self::new(reason, ErrorCode::Update(subcode), data)
    }

    /// This error as an RFC 7606 outcome.
    pub fn outcome(&self) -> Outcome {
        Outcome::Reset(self.notification.clone())
    }
}

/// Encoding failed; nothing was appended to the output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// RFC 4271 §4.1 (or RFC 8654 when extended messages are negotiated): split the UPDATE.
    #[error("message of {len} octets exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
}

/// How an UPDATE error is handled (RFC 7606 §2), ordered from mildest to most severe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// "attribute discard": the attribute was dropped; the rest of the UPDATE is used.
    AttributeDiscard,
    /// "treat-as-withdraw": every prefix announced by the UPDATE (NLRI field and MP_REACH_NLRI)
    /// must be handled as withdrawn; see [`super::Update::into_withdraw`].
    TreatAsWithdraw,
    /// "session reset": send the NOTIFICATION and close.
    Reset(Notification),
}

impl Outcome {
    /// 0 discard, 1 treat-as-withdraw, 2 reset.
    pub fn severity(&self) -> u8 {
        match self {
            Self::AttributeDiscard => 0,
            Self::TreatAsWithdraw => 1,
            Self::Reset(_) => 2,
        }
    }
}

/// One attribute-level problem found while decoding an UPDATE that did not need a session reset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrProblem {
    /// Attribute type code, or `None` for a problem with the attribute list itself
    /// (e.g. RFC 7606 §4 overrun, §3.d missing attribute names it though).
    pub type_code: Option<u8>,
    /// [`Outcome::AttributeDiscard`] or [`Outcome::TreatAsWithdraw`].
    pub outcome: Outcome,
    /// What went wrong, for logs.
    pub reason: String,
}

impl fmt::Display for AttrProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.type_code {
            Some(t) => write!(f, "attribute {t}: {} ({:?})", self.reason, self.outcome),
            None => write!(f, "attribute list: {} ({:?})", self.reason, self.outcome),
        }
    }
}
