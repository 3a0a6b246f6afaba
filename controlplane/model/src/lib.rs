//! Halyard's desired-state model and its "manifest directory" source.
//!
//! Every Halyard component reads one [`Model`]: Services, EndpointSlices, Nodes, Namespaces, Pods
//! and Secrets (BGP passwords; their values are never shown)
//! plus the Cilium (LB-IPAM pools, L2 announcement policies, BGP control plane v1 and v2) and
//! MetalLB (IPAddressPool, L2Advertisement, BGPPeer, BGPAdvertisement, Community, BFDProfile)
//! resources that configure load-balancer IPs and their announcement.
//!
//! The model comes from a directory of multi-document Kubernetes YAML files
//! ([`ManifestDir`]); YAML copied unchanged from the Cilium and MetalLB documentation loads.
//! Parsing ([`parse_manifest`]) reports every problem of a file at once, with file, document,
//! line/column where serde_yaml knows them, and field path; unknown kinds and unknown fields
//! are warnings, anything else rejects the whole file.
//!
//! Decisions worth knowing:
//! * A CIDR with host bits set (`198.51.100.10/24`) is accepted, masked, and warned about:
//!   MetalLB's own docs use one, Go's `net.ParseCIDR` (MetalLB) and Cilium LB-IPAM
//!   (`rangeFromPrefix` → `prefix.Masked()`) both accept and mask.
//! * Document numbers in diagnostics are 1-based; document 0 means the whole file.
//! * Unknown fields under `status`, and server-managed `metadata` fields, are ignored silently.

pub mod diag;
pub mod kinds;
pub mod manifest_dir;
pub mod meta;
pub mod model;
pub mod net;
pub mod object;
pub mod parse;
pub mod time;
pub mod validate;

pub use diag::{Diagnostic, FileError, Severity};
pub use kinds::cilium::*;
pub use kinds::core::*;
pub use kinds::metallb::*;
pub use manifest_dir::{FileState, ManifestDir, ManifestDirError, ScanReport};
pub use meta::{LabelSelector, LabelSelectorRequirement, NamespacedName, ObjectMeta, SelectorOperator};
pub use model::Model;
pub use net::{GoDuration, IpBlock, PeerAddress, TargetPort};
pub use object::{Kind, Object, ObjectKey};
pub use parse::{MAX_MANIFEST_BYTES, ParsedFile, parse_manifest, parse_manifest_bytes, parse_manifest_file};
