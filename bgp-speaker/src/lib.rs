//! Halyard's BGP-4 speaker.
//!
//! [`wire`], the sans-IO message codec; [`fsm`], the RFC 4271 state machine with explicit time;
//! [`session`], the tokio driver for one peer (dialling out and accepting); [`rib`], best-path
//! selection; [`bfd`], single-hop BFD (RFC 5880/5881) that tears a session down when the path
//! fails; [`gr`], the graceful-restart helper (receiving speaker) logic. The driver does TCP MD5
//! and GTSM.

pub mod bfd;
pub mod fsm;
pub mod gr;
pub mod rib;
pub mod session;
pub mod wire;
