//! Halyard ClusterMesh: the local cluster's global services, nodes and cluster config published
//! into that cluster's etcd in Cilium's key layout and JSON, and the watcher an agent uses to
//! follow remote clusters' etcds.
//!
//! * [`keys`]: the key layout (builders, strict parser).
//! * [`types`]: Cilium's values, byte-compatible with Go's `encoding/json` output.
//! * [`identity`]: numeric security identities, cluster ids, reserved identities, an allocator.
//! * [`export`]: pure derivation of the key → value map a cluster publishes from a
//!   [`halyard_model::Model`]; publishing is a diff of two such maps.
//! * [`publish`]: applies that diff to etcd (txns, a lease with keep-alive, heartbeat, canaries).
//! * [`watch`]: list-then-watch of a remote cluster's etcd with re-list, synthesized deletes,
//!   back-off, canary-gated readiness, malformed entries reported and skipped.
//!
//! Formats come from Cilium (`github.com/cilium/cilium`); each module names its sources, and
//! `shared/reference/clustermesh.md` collects them.

pub mod export;
pub mod identity;
pub mod keys;
pub mod publish;
pub mod rbac;
pub mod remote;
pub mod types;
pub mod watch;
