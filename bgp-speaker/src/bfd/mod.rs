//! Bidirectional Forwarding Detection: RFC 5880 in asynchronous mode over single-hop IPv4 and
//! IPv6 (RFC 5881), for fast failure detection under BGP sessions (RFC 5882).
//!
//! - [`packet`]: the sans-IO codec for the Control packet (§4.1) and its validation (§6.8.6).
//! - [`machine`]: one session's state machine with explicit time (§6.2, §6.8).
//! - [`driver`]: the sockets (UDP 3784, TTL 255 both ways, RFC 5881 §4–5) and timers, on a
//!   thread of its own; one session per peer address, state changes published on a `watch`.
//!
//! Not implemented: authentication (packets with the A bit are dropped), Demand mode, the Echo
//! function, multi-hop (RFC 5883), passive role.

pub mod driver;
pub mod machine;
pub mod packet;

pub use driver::{Bfd, BfdSession, BfdStatus, DriverOptions};
pub use packet::{BfdState, ControlPacket, Diag};

/// The timers of one BFD session, as configured (RFC 5880 §6.8.1 bfd.DesiredMinTxInterval,
/// bfd.RequiredMinRxInterval, bfd.DetectMult). Built by [`BfdConfig::new`], which checks the
/// same ranges as MetalLB's `BFDProfile` (intervals 10–60000 ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BfdConfig {
    min_tx_ms: u32,
    min_rx_ms: u32,
    multiplier: u8,
}

/// A [`BfdConfig`] value out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BfdConfigError {
    #[error("BFD detect multiplier {0} is out of range (1–255)")]
    Multiplier(u32),
    #[error(
        "BFD {which} interval {ms} ms is out of range ({}–{} ms)",
        BfdConfig::MIN_INTERVAL_MS,
        BfdConfig::MAX_INTERVAL_MS
    )]
    Interval { which: &'static str, ms: u32 },
}

impl Default for BfdConfig {
    /// 300 ms / 300 ms / 3, the defaults of FRR and MetalLB's `BFDProfile`.
    fn default() -> Self {
        BfdConfig { min_tx_ms: 300, min_rx_ms: 300, multiplier: 3 }
    }
}

impl BfdConfig {
    pub const MIN_INTERVAL_MS: u32 = 10;
    pub const MAX_INTERVAL_MS: u32 = 60_000;

    /// Desired Min TX and Required Min RX in milliseconds, and the Detect Mult.
    pub fn new(min_tx_ms: u32, min_rx_ms: u32, multiplier: u32) -> Result<BfdConfig, BfdConfigError> {
        for (which, ms) in [("transmit", min_tx_ms), ("receive", min_rx_ms)] {
            if !(Self::MIN_INTERVAL_MS..=Self::MAX_INTERVAL_MS).contains(&ms) {
                return Err(BfdConfigError::Interval { which, ms });
            }
        }
        let multiplier =
            u8::try_from(multiplier).ok().filter(|m| *m > 0).ok_or(BfdConfigError::Multiplier(multiplier))?;
        Ok(BfdConfig { min_tx_ms, min_rx_ms, multiplier })
    }

    pub fn min_tx_ms(&self) -> u32 {
        self.min_tx_ms
    }

    pub fn min_rx_ms(&self) -> u32 {
        self.min_rx_ms
    }

    pub fn multiplier(&self) -> u8 {
        self.multiplier
    }

    pub(crate) fn min_tx_us(&self) -> u32 {
        self.min_tx_ms * 1_000
    }

    pub(crate) fn min_rx_us(&self) -> u32 {
        self.min_rx_ms * 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_ranges() {
        assert_eq!(BfdConfig::default(), BfdConfig::new(300, 300, 3).unwrap());
        assert!(BfdConfig::new(10, 60_000, 255).is_ok());
        assert_eq!(BfdConfig::new(300, 300, 0), Err(BfdConfigError::Multiplier(0)));
        assert_eq!(BfdConfig::new(300, 300, 256), Err(BfdConfigError::Multiplier(256)));
        assert_eq!(BfdConfig::new(9, 300, 3), Err(BfdConfigError::Interval { which: "transmit", ms: 9 }));
        let e = BfdConfig::new(300, 60_001, 3).unwrap_err();
        assert_eq!(e.to_string(), "BFD receive interval 60001 ms is out of range (10–60000 ms)");
    }
}
