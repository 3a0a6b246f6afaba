//! Numeric security identities and cluster ids.
//!
//! Rules from Cilium `pkg/identity/numericidentity.go`, `pkg/clustermesh/types/option.go` and
//! `types.go` (reference `clustermesh.md` §1.5), docs `network/clustermesh/setup.rst`:
//!
//! ```text
//!  31      24 23            16 15                      0
//! +----------+----------------+-------------------------+
//! |  scope   |   cluster id   |     cluster-local id    |   255 mode: 8-bit cluster id
//! +----------+-------------+--+-------------------------+
//! |  scope   | cluster id  |      cluster-local id      |   511 mode: 9-bit cluster id
//! +----------+-------------+----------------------------+
//! ```
//!
//! Wire identities are 24 bits; the scope byte is 0 for global/reserved identities, 1 for
//! local (CIDR) identities, 2 for the remote-node scope. Cluster N > 0 allocates from
//! `[N << shift, ((N + 1) << shift) - 1]`; cluster 0 (no mesh) starts at 256 so that it does not
//! collide with reserved identities.

use std::collections::BTreeMap;
use std::fmt;

use crate::types::LabelSet;

/// Identities are 24 bits on the wire (`NumericIdentityBitlength`).
pub const IDENTITY_BITS: u32 = 24;
/// First identity a cluster without a cluster id allocates (`MinimalNumericIdentity`).
pub const MIN_LOCAL_IDENTITY_CLUSTER0: u32 = 256;
/// Scope of local (CIDR) identities (`IdentityScopeLocal`).
pub const SCOPE_LOCAL: u32 = 1 << 24;
/// Scope of remote-node identities (`IdentityScopeRemoteNode`).
pub const SCOPE_REMOTE_NODE: u32 = 2 << 24;

/// How many clusters a mesh may hold (`max-connected-clusters`, fixed at install, the same
/// everywhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MaxConnectedClusters {
    #[default]
    C255,
    C511,
}

impl MaxConnectedClusters {
    /// From the config value (0 means the default, 255).
    pub fn from_u32(n: u32) -> Result<MaxConnectedClusters, IdentityError> {
        match n {
            0 | 255 => Ok(MaxConnectedClusters::C255),
            511 => Ok(MaxConnectedClusters::C511),
            _ => Err(IdentityError::MaxConnectedClusters(n)),
        }
    }

    pub fn as_u32(self) -> u32 {
        match self {
            MaxConnectedClusters::C255 => 255,
            MaxConnectedClusters::C511 => 511,
        }
    }

    /// Bits of the cluster id in an identity: log2(max + 1).
    pub fn cluster_id_bits(self) -> u32 {
        (self.as_u32() + 1).trailing_zeros()
    }

    /// `clusterIDShift` = 24 − bits: 16 or 15.
    pub fn cluster_id_shift(self) -> u32 {
        IDENTITY_BITS - self.cluster_id_bits()
    }

    /// Cluster-local identities per cluster: 65 535 or 32 767 (setup.rst).
    pub fn identities_per_cluster(self) -> u32 {
        (1 << self.cluster_id_shift()) - 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("cluster id {id} out of range 1-{max}")]
    ClusterId { id: u32, max: u32 },
    #[error("max-connected-clusters must be 255 or 511, not {0}")]
    MaxConnectedClusters(u32),
    #[error("remote cluster runs max-connected-clusters={remote}, this one {local}: they must match")]
    MaxConnectedClustersMismatch { local: u32, remote: u32 },
    #[error("cluster id {0} is already used by another connected cluster")]
    DuplicateClusterId(u32),
    #[error("identity range of cluster {cluster_id} is exhausted")]
    Exhausted { cluster_id: u32 },
}

/// A validated cluster id: 1–255, or 1–511 in 511 mode (0 is "no mesh" and not valid here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(u16);

impl ClusterId {
    pub fn new(id: u32, mode: MaxConnectedClusters) -> Result<ClusterId, IdentityError> {
        if id == 0 || id > mode.as_u32() {
            return Err(IdentityError::ClusterId { id, max: mode.as_u32() });
        }
        Ok(ClusterId(id as u16))
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `ValidateRemoteConfig`: the remote's cluster id must be valid and, when this cluster runs in
/// 511 mode, the remote's `maxConnectedClusters` must match (0 means 255).
pub fn validate_remote(
    local: MaxConnectedClusters,
    remote_id: u32,
    remote_max: u32,
) -> Result<ClusterId, IdentityError> {
    let id = ClusterId::new(remote_id, local)?;
    let remote = MaxConnectedClusters::from_u32(remote_max)?;
    if local == MaxConnectedClusters::C511 && remote != local {
        return Err(IdentityError::MaxConnectedClustersMismatch { local: local.as_u32(), remote: remote.as_u32() });
    }
    Ok(id)
}

/// Reserved identities (`pkg/identity/numericidentity.go`, `ReservedIdentity*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reserved {
    Unknown = 0,
    Host = 1,
    World = 2,
    Unmanaged = 3,
    Health = 4,
    Init = 5,
    RemoteNode = 6,
    KubeApiserver = 7,
    Ingress = 8,
    WorldIpv4 = 9,
    WorldIpv6 = 10,
    EncryptedOverlay = 11,
}

impl Reserved {
    pub const ALL: [Reserved; 12] = [
        Reserved::Unknown,
        Reserved::Host,
        Reserved::World,
        Reserved::Unmanaged,
        Reserved::Health,
        Reserved::Init,
        Reserved::RemoteNode,
        Reserved::KubeApiserver,
        Reserved::Ingress,
        Reserved::WorldIpv4,
        Reserved::WorldIpv6,
        Reserved::EncryptedOverlay,
    ];

    pub fn id(self) -> NumericIdentity {
        NumericIdentity(self as u32)
    }

    /// The label Cilium gives it (`reserved:<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Reserved::Unknown => "unknown",
            Reserved::Host => "host",
            Reserved::World => "world",
            Reserved::Unmanaged => "unmanaged",
            Reserved::Health => "health",
            Reserved::Init => "init",
            Reserved::RemoteNode => "remote-node",
            Reserved::KubeApiserver => "kube-apiserver",
            Reserved::Ingress => "ingress",
            Reserved::WorldIpv4 => "world-ipv4",
            Reserved::WorldIpv6 => "world-ipv6",
            Reserved::EncryptedOverlay => "encrypted-overlay",
        }
    }

    pub fn from_id(id: u32) -> Option<Reserved> {
        Reserved::ALL.into_iter().find(|r| *r as u32 == id)
    }
}

/// Where an identity lives, from its top byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Reserved, well-known (100–115 upstream) and cluster-allocated identities.
    Global,
    /// Node-local CIDR identities.
    Local,
    RemoteNode,
    Unknown(u8),
}

/// A numeric security identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumericIdentity(pub u32);

impl NumericIdentity {
    pub fn scope(self) -> Scope {
        match self.0 >> 24 {
            0 => Scope::Global,
            1 => Scope::Local,
            2 => Scope::RemoteNode,
            n => Scope::Unknown(n as u8),
        }
    }

    /// Reserved identities sit below 256 (`IsReservedIdentity` checks the reserved table).
    pub fn reserved(self) -> Option<Reserved> {
        Reserved::from_id(self.0)
    }

    /// The cluster id bits of a global identity (`GetClusterID`).
    pub fn cluster_id(self, mode: MaxConnectedClusters) -> u32 {
        (self.0 >> mode.cluster_id_shift()) & mode.as_u32()
    }
}

impl fmt::Display for NumericIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The allocation range of a cluster (inclusive), `MinimalAllocationIdentity` /
/// `MaximumAllocationIdentity`. `cluster_id` 0 means no mesh.
pub fn allocation_range(cluster_id: u32, mode: MaxConnectedClusters) -> (u32, u32) {
    let shift = mode.cluster_id_shift();
    let min = if cluster_id > 0 { cluster_id << shift } else { MIN_LOCAL_IDENTITY_CLUSTER0 };
    (min, ((cluster_id + 1) << shift) - 1)
}

/// A deterministic allocator of cluster-scoped identities for label sets: an existing set keeps
/// its identity, a new one takes the lowest free identity of the cluster's range. Feeding the
/// same sequence of sets always gives the same identities; [`IdentityAllocator::allocate_all`]
/// sorts first so that the result depends only on the set of label sets.
#[derive(Clone, Debug)]
pub struct IdentityAllocator {
    cluster_id: u32,
    range: (u32, u32),
    by_labels: BTreeMap<LabelSet, NumericIdentity>,
    by_id: BTreeMap<u32, LabelSet>,
}

impl IdentityAllocator {
    pub fn new(cluster_id: ClusterId, mode: MaxConnectedClusters) -> IdentityAllocator {
        IdentityAllocator {
            cluster_id: cluster_id.get(),
            range: allocation_range(cluster_id.get(), mode),
            by_labels: BTreeMap::new(),
            by_id: BTreeMap::new(),
        }
    }

    pub fn range(&self) -> (u32, u32) {
        self.range
    }

    pub fn get(&self, labels: &LabelSet) -> Option<NumericIdentity> {
        self.by_labels.get(labels).copied()
    }

    pub fn labels(&self, id: NumericIdentity) -> Option<&LabelSet> {
        self.by_id.get(&id.0)
    }

    pub fn allocate(&mut self, labels: &LabelSet) -> Result<NumericIdentity, IdentityError> {
        if let Some(id) = self.by_labels.get(labels) {
            return Ok(*id);
        }
        // Lowest gap: walk the allocated ids in order.
        let mut candidate = self.range.0;
        for &used in self.by_id.keys() {
            if used > candidate {
                break;
            }
            candidate = used + 1;
        }
        if candidate > self.range.1 {
            return Err(IdentityError::Exhausted { cluster_id: self.cluster_id });
        }
        let id = NumericIdentity(candidate);
        self.by_labels.insert(labels.clone(), id);
        self.by_id.insert(candidate, labels.clone());
        Ok(id)
    }

    /// Allocates every set, in sorted order, for a result that does not depend on input order.
    pub fn allocate_all<'a>(
        &mut self,
        sets: impl IntoIterator<Item = &'a LabelSet>,
    ) -> Result<Vec<(LabelSet, NumericIdentity)>, IdentityError> {
        let mut sorted: Vec<&LabelSet> = sets.into_iter().collect();
        sorted.sort();
        sorted.dedup();
        sorted.into_iter().map(|s| Ok((s.clone(), self.allocate(s)?))).collect()
    }

    /// Records an identity allocated earlier (read back from etcd). Refused when the id is out
    /// of range or either the id or the label set is already taken.
    pub fn adopt(&mut self, id: NumericIdentity, labels: &LabelSet) -> bool {
        if !(self.range.0..=self.range.1).contains(&id.0)
            || self.by_id.contains_key(&id.0)
            || self.by_labels.contains_key(labels)
        {
            return false;
        }
        self.by_labels.insert(labels.clone(), id);
        self.by_id.insert(id.0, labels.clone());
        true
    }

    pub fn release(&mut self, labels: &LabelSet) -> Option<NumericIdentity> {
        let id = self.by_labels.remove(labels)?;
        self.by_id.remove(&id.0);
        Some(id)
    }

    /// Every allocated identity, by id.
    pub fn iter(&self) -> impl Iterator<Item = (NumericIdentity, &LabelSet)> {
        self.by_id.iter().map(|(id, l)| (NumericIdentity(*id), l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M255: MaxConnectedClusters = MaxConnectedClusters::C255;
    const M511: MaxConnectedClusters = MaxConnectedClusters::C511;

    #[test]
    fn shifts_and_sizes() {
        assert_eq!((M255.cluster_id_bits(), M255.cluster_id_shift()), (8, 16));
        assert_eq!((M511.cluster_id_bits(), M511.cluster_id_shift()), (9, 15));
        assert_eq!(M255.identities_per_cluster(), 65535);
        assert_eq!(M511.identities_per_cluster(), 32767);
        assert_eq!(MaxConnectedClusters::from_u32(0), Ok(M255));
        assert!(MaxConnectedClusters::from_u32(127).is_err());
    }

    #[test]
    fn ranges_match_fixture_identities() {
        // Cluster 3's fixture identities 196915 and 199472 (reference §1.3).
        assert_eq!(allocation_range(3, M255), (196608, 262143));
        assert_eq!(NumericIdentity(196915).cluster_id(M255), 3);
        assert_eq!(NumericIdentity(199472).cluster_id(M255), 3);
        assert_eq!(allocation_range(0, M255), (256, 65535));
        assert_eq!(allocation_range(255, M255), (255 << 16, (256 << 16) - 1));
        assert_eq!(allocation_range(511, M511), (511 << 15, (1 << 24) - 1));
        assert_eq!(NumericIdentity(511 << 15).cluster_id(M511), 511);
        // The same number means another cluster in 511 mode.
        assert_eq!(NumericIdentity(196915).cluster_id(M511), 6);
    }

    #[test]
    fn cluster_id_validation() {
        assert!(ClusterId::new(0, M255).is_err());
        assert!(ClusterId::new(1, M255).is_ok());
        assert!(ClusterId::new(255, M255).is_ok());
        assert_eq!(ClusterId::new(256, M255), Err(IdentityError::ClusterId { id: 256, max: 255 }));
        assert!(ClusterId::new(511, M511).is_ok());
        assert!(ClusterId::new(512, M511).is_err());
        assert!(validate_remote(M255, 7, 0).is_ok());
        assert!(validate_remote(M255, 7, 511).is_ok(), "255-mode clusters accept either");
        assert!(validate_remote(M511, 7, 255).is_err());
        assert!(validate_remote(M511, 300, 511).is_ok());
        assert!(validate_remote(M255, 300, 255).is_err());
    }

    #[test]
    fn reserved_and_scopes() {
        assert_eq!(Reserved::Host.id(), NumericIdentity(1));
        assert_eq!(Reserved::World.id().0, 2);
        assert_eq!(Reserved::RemoteNode.id().0, 6);
        assert_eq!(Reserved::KubeApiserver.id().0, 7);
        assert_eq!(Reserved::EncryptedOverlay.id().0, 11);
        assert_eq!(NumericIdentity(4).reserved(), Some(Reserved::Health));
        assert_eq!(NumericIdentity(12).reserved(), None);
        assert_eq!(Reserved::WorldIpv6.name(), "world-ipv6");
        assert_eq!(NumericIdentity(196915).scope(), Scope::Global);
        assert_eq!(NumericIdentity(SCOPE_LOCAL | 5).scope(), Scope::Local);
        assert_eq!(NumericIdentity(SCOPE_REMOTE_NODE | 5).scope(), Scope::RemoteNode);
    }

    fn set(app: &str) -> LabelSet {
        let mut s = LabelSet::new();
        s.insert("k8s", "app", app);
        s
    }

    #[test]
    fn allocator_is_deterministic_and_reuses_gaps() {
        let mut a = IdentityAllocator::new(ClusterId::new(3, M255).unwrap(), M255);
        let x = a.allocate(&set("x")).unwrap();
        let y = a.allocate(&set("y")).unwrap();
        assert_eq!((x.0, y.0), (196608, 196609));
        assert_eq!(a.allocate(&set("x")).unwrap(), x);
        assert_eq!(a.release(&set("x")), Some(x));
        assert_eq!(a.allocate(&set("z")).unwrap(), x, "lowest gap reused");
        assert_eq!(a.labels(y), Some(&set("y")));

        let mut b = IdentityAllocator::new(ClusterId::new(3, M255).unwrap(), M255);
        let mut c = IdentityAllocator::new(ClusterId::new(3, M255).unwrap(), M255);
        let r1 = b.allocate_all([&set("b"), &set("a"), &set("c")]).unwrap();
        let r2 = c.allocate_all([&set("c"), &set("b"), &set("a"), &set("a")]).unwrap();
        assert_eq!(r1, r2);
    }

    #[test]
    fn allocator_exhaustion() {
        let mut a = IdentityAllocator::new(ClusterId::new(1, M511).unwrap(), M511);
        a.range = (a.range.0, a.range.0 + 1);
        a.allocate(&set("1")).unwrap();
        a.allocate(&set("2")).unwrap();
        assert_eq!(a.allocate(&set("3")), Err(IdentityError::Exhausted { cluster_id: 1 }));
    }
}
