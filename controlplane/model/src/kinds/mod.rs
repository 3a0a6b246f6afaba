//! Typed Kubernetes objects, one module per API group family.

pub mod cilium;
pub mod core;
pub mod metallb;
