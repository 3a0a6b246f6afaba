//! Halyard's eBPF datapath: the BPF programs (C under `bpf/`, compiled by build.rs), the Rust
//! mirrors of their maps, typed map handles, the loader/attacher with pinning, and the Maglev
//! table builder.
//!
//! ```text
//!   client ──▶ LB node: XDP hl_xdp_lb ──(service? ct? maglev)──▶ IPIP / Geneve / IPv4-option DSR ──▶ backend
//!                                                                  tc hl_tc_decap strips it,
//!   client ◀───────────────────────── reply from the VIP, straight from the backend ◀──┘
//! ```

pub mod hash;
pub mod lb;
pub mod lb6;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod murmur3;
pub mod overlay;
pub mod svc;
