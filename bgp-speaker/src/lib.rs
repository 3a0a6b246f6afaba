//! Halyard's BGP-4 speaker.
//!
//! Work in progress (issue 3). Today: [`wire`], the sans-IO message codec, and [`fsm`], the
//! RFC 4271 state machine with explicit time. The RIB, export policy and the tokio session
//! driver follow.

pub mod fsm;
pub mod wire;
