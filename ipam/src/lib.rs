//! Address management for Halyard, as pure logic (no I/O, no clocks):
//! * [`lbipam`] — LoadBalancer IPs for services from pools (Cilium LB-IPAM and MetalLB
//!   IPAddressPool semantics);
//! * [`podcidr`] — per-node pod CIDRs from cluster pools, and host-scope pod IPs;
//! * [`range`] — the interval set both are built on (O(log n) per operation).

pub mod lbipam;
pub mod podcidr;
pub mod range;
pub mod selector;

pub use lbipam::{
    Assignment, Assignments, Block, FamilyPolicy, LbIpamConfig, Outcome, PoolSpec, PoolStatus, Protocol, Reason,
    ServiceKey, ServiceSpec, ServiceStatus, Sharing, SharingScheme, reconcile,
};
pub use range::Family;
pub use selector::{LabelSelector, LabelSelectorRequirement, SelectorOperator};
