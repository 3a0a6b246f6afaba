//! Halyard's BGP-4 speaker.
//!
//! Work in progress (issue 3): [`wire`], the sans-IO message codec; [`fsm`], the RFC 4271 state
//! machine with explicit time; [`session`], the tokio driver for one peer (active side). The
//! RIB with best-path selection, passive peers, MD5/GTSM, graceful restart and BFD follow.

pub mod fsm;
pub mod session;
pub mod wire;
