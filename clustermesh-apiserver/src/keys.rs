//! The etcd key layout of a ClusterMesh etcd: builders and a strict parser.
//!
//! Layout (Cilium `pkg/kvstore/kvstore.go`, `pkg/node/store`, `pkg/clustermesh/store/store.go`,
//! `pkg/ipcache/kvstore.go`, `pkg/kvstore/store/syncstore.go`; checked against the txtar fixtures
//! in `clustermesh-apiserver/clustermesh/testdata/`, see `shared/reference/clustermesh.md` §1.2):
//!
//! ```text
//! cilium/.heartbeat                                   RFC 3339 time, leased
//! cilium/cluster-config/<cluster>                     CiliumClusterConfig JSON
//! cilium/synced/<cluster>/<prefix>                    RFC 3339 time (sync canary)
//! cilium/state/nodes/v1/<cluster>/<node>              Node JSON
//! cilium/state/services/v1/<cluster>/<ns>/<name>      ClusterService JSON
//! cilium/state/identities/v1/id/<numeric id>          sorted label string
//! cilium/state/ip/v1/<address space>/<ip>[/<len>]     IPIdentityPair JSON ("default" space)
//! ```
//!
//! Nodes and services are keyed by cluster; identities and ip entries are not (they live in the
//! source cluster's own etcd, so the cluster is implied).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Base prefix of every Cilium key (`kvstore.BaseKeyPrefix`).
pub const BASE_PREFIX: &str = "cilium";
/// Heartbeat key, rewritten every minute by the apiserver (`kvstore.HeartbeatPath`).
pub const HEARTBEAT_KEY: &str = "cilium/.heartbeat";
/// Prefix of the raw exported state.
pub const STATE_PREFIX: &str = "cilium/state";
/// Prefix of per-cluster configs (`kvstore.ClusterConfigPrefix`).
pub const CLUSTER_CONFIG_PREFIX: &str = "cilium/cluster-config";
/// Prefix of the sync canaries (`kvstore.SyncedPrefix`).
pub const SYNCED_PREFIX: &str = "cilium/synced";
/// Address space of ipcache keys written by the apiserver (`ipcache.AddressSpace`).
pub const DEFAULT_ADDRESS_SPACE: &str = "default";
/// Longest cluster name Cilium accepts (`pkg/clustermesh/types/types.go`).
pub const MAX_CLUSTER_NAME_LEN: usize = 32;

/// One exported resource type: a prefix under `cilium/state` and its sync canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Nodes,
    Services,
    Identities,
    Ip,
}

impl Resource {
    pub const ALL: [Resource; 4] = [Resource::Nodes, Resource::Services, Resource::Identities, Resource::Ip];

    /// `cilium/state/<res>/v1`, the prefix the sync canary names.
    pub fn prefix(self) -> &'static str {
        match self {
            Resource::Nodes => "cilium/state/nodes/v1",
            Resource::Services => "cilium/state/services/v1",
            Resource::Identities => "cilium/state/identities/v1",
            Resource::Ip => "cilium/state/ip/v1",
        }
    }

    /// The prefix a watcher of `cluster`'s etcd lists for this resource (trailing `/`).
    pub fn watch_prefix(self, cluster: &str) -> String {
        match self {
            Resource::Nodes | Resource::Services => format!("{}/{cluster}/", self.prefix()),
            Resource::Identities => format!("{}/id/", self.prefix()),
            Resource::Ip => format!("{}/{DEFAULT_ADDRESS_SPACE}/", self.prefix()),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

// ===== builders =====

/// `cilium/state/nodes/v1/<cluster>/<node>`.
pub fn node_key(cluster: &str, node: &str) -> String {
    format!("{}/{cluster}/{node}", Resource::Nodes.prefix())
}

/// `cilium/state/services/v1/<cluster>/<namespace>/<name>`.
pub fn service_key(cluster: &str, namespace: &str, name: &str) -> String {
    format!("{}/{cluster}/{namespace}/{name}", Resource::Services.prefix())
}

/// `cilium/state/identities/v1/id/<id>`.
pub fn identity_key(id: u32) -> String {
    format!("{}/id/{id}", Resource::Identities.prefix())
}

/// `cilium/state/ip/v1/default/<ip>`; a non-host prefix is written `<ip>/<len>`
/// (`IPIdentityPair.PrefixString`).
pub fn ip_key(prefix: IpNet) -> String {
    format!("{}/{DEFAULT_ADDRESS_SPACE}/{}", Resource::Ip.prefix(), prefix_string(prefix))
}

/// `cilium/cluster-config/<cluster>`.
pub fn cluster_config_key(cluster: &str) -> String {
    format!("{CLUSTER_CONFIG_PREFIX}/{cluster}")
}

/// `cilium/synced/<cluster>/cilium/state/<res>/v1`.
pub fn synced_key(cluster: &str, resource: Resource) -> String {
    format!("{SYNCED_PREFIX}/{cluster}/{}", resource.prefix())
}

/// `cilium/synced/<cluster>/`, the prefix a remote watcher watches for canaries.
pub fn synced_prefix(cluster: &str) -> String {
    format!("{SYNCED_PREFIX}/{cluster}/")
}

fn prefix_string(p: IpNet) -> String {
    if p.prefix_len() == p.max_prefix_len() { p.addr().to_string() } else { p.to_string() }
}

/// Cilium's cluster name rule: 1–32 chars of `[a-z0-9-]`, alphanumeric at both ends
/// (`clusterNameRegexStr` in `pkg/clustermesh/types/types.go`).
pub fn validate_cluster_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CLUSTER_NAME_LEN {
        return Err(format!("cluster name must be 1-{MAX_CLUSTER_NAME_LEN} characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !name.chars().all(ok_char) || !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Err(format!(
            "invalid cluster name {name:?}: lowercase alphanumerics and '-', alphanumeric at both ends"
        ));
    }
    Ok(())
}

// ===== parser =====

/// A parsed ClusterMesh key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Heartbeat,
    ClusterConfig {
        cluster: String,
    },
    /// `prefix` is the synced prefix, e.g. `cilium/state/nodes/v1`.
    Synced {
        cluster: String,
        prefix: String,
    },
    Node {
        cluster: String,
        name: String,
    },
    Service {
        cluster: String,
        namespace: String,
        name: String,
    },
    Identity {
        id: u32,
    },
    Ip {
        address_space: String,
        prefix: IpNet,
    },
}

/// A key that does not follow the layout. Names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed clustermesh key {key:?}: {reason}")]
pub struct KeyError {
    pub key: String,
    pub reason: String,
}

impl Key {
    /// Parses a key; anything outside the layout is a [`KeyError`] naming the key.
    pub fn parse(key: &str) -> Result<Key, KeyError> {
        let err = |reason: &str| KeyError { key: key.to_string(), reason: reason.to_string() };
        if key == HEARTBEAT_KEY {
            return Ok(Key::Heartbeat);
        }
        if let Some(rest) = key.strip_prefix("cilium/cluster-config/") {
            let cluster = single_segment(rest).ok_or_else(|| err("expected cilium/cluster-config/<cluster>"))?;
            validate_cluster_name(cluster).map_err(|e| err(&e))?;
            return Ok(Key::ClusterConfig { cluster: cluster.to_string() });
        }
        if let Some(rest) = key.strip_prefix("cilium/synced/") {
            let (cluster, prefix) =
                rest.split_once('/').ok_or_else(|| err("expected cilium/synced/<cluster>/<prefix>"))?;
            validate_cluster_name(cluster).map_err(|e| err(&e))?;
            if prefix.is_empty() || prefix.split('/').any(str::is_empty) {
                return Err(err("empty synced prefix or path segment"));
            }
            return Ok(Key::Synced { cluster: cluster.to_string(), prefix: prefix.to_string() });
        }
        if let Some(rest) = key.strip_prefix("cilium/state/nodes/v1/") {
            let parts = segments(rest, 2).ok_or_else(|| err("expected cilium/state/nodes/v1/<cluster>/<node>"))?;
            validate_cluster_name(parts[0]).map_err(|e| err(&e))?;
            return Ok(Key::Node { cluster: parts[0].to_string(), name: parts[1].to_string() });
        }
        if let Some(rest) = key.strip_prefix("cilium/state/services/v1/") {
            let parts = segments(rest, 3)
                .ok_or_else(|| err("expected cilium/state/services/v1/<cluster>/<namespace>/<name>"))?;
            validate_cluster_name(parts[0]).map_err(|e| err(&e))?;
            return Ok(Key::Service {
                cluster: parts[0].to_string(),
                namespace: parts[1].to_string(),
                name: parts[2].to_string(),
            });
        }
        if let Some(rest) = key.strip_prefix("cilium/state/identities/v1/") {
            let id = rest.strip_prefix("id/").ok_or_else(|| err("expected cilium/state/identities/v1/id/<id>"))?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || (id.len() > 1 && id.starts_with('0')) {
                return Err(err("identity must be a decimal number"));
            }
            let id: u32 = id.parse().map_err(|_| err("identity out of range"))?;
            return Ok(Key::Identity { id });
        }
        if let Some(rest) = key.strip_prefix("cilium/state/ip/v1/") {
            let (space, ip) =
                rest.split_once('/').ok_or_else(|| err("expected cilium/state/ip/v1/<address space>/<ip>"))?;
            if space.is_empty() {
                return Err(err("empty address space"));
            }
            let prefix = parse_ip_or_prefix(ip).ok_or_else(|| err("not an IP address or prefix"))?;
            return Ok(Key::Ip { address_space: space.to_string(), prefix });
        }
        Err(err("not in the clustermesh key layout"))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Heartbeat => f.write_str(HEARTBEAT_KEY),
            Key::ClusterConfig { cluster } => f.write_str(&cluster_config_key(cluster)),
            Key::Synced { cluster, prefix } => write!(f, "{SYNCED_PREFIX}/{cluster}/{prefix}"),
            Key::Node { cluster, name } => f.write_str(&node_key(cluster, name)),
            Key::Service { cluster, namespace, name } => f.write_str(&service_key(cluster, namespace, name)),
            Key::Identity { id } => f.write_str(&identity_key(*id)),
            Key::Ip { address_space, prefix } => {
                write!(f, "{}/{address_space}/{}", Resource::Ip.prefix(), prefix_string(*prefix))
            }
        }
    }
}

fn single_segment(s: &str) -> Option<&str> {
    (!s.is_empty() && !s.contains('/')).then_some(s)
}

fn segments(s: &str, n: usize) -> Option<Vec<&str>> {
    let parts: Vec<&str> = s.split('/').collect();
    (parts.len() == n && parts.iter().all(|p| !p.is_empty())).then_some(parts)
}

fn parse_ip_or_prefix(s: &str) -> Option<IpNet> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    let p: IpNet = s.parse().ok()?;
    // A prefix with host bits set is not something Cilium writes.
    (p.trunc() == p && p.prefix_len() != p.max_prefix_len()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_match_fixture_keys() {
        // Keys from the txtar fixtures (reference §1.3).
        assert_eq!(node_key("cluster3", "test-node-1"), "cilium/state/nodes/v1/cluster3/test-node-1");
        assert_eq!(
            service_key("cluster3", "ns-alpha", "echo-service"),
            "cilium/state/services/v1/cluster3/ns-alpha/echo-service"
        );
        assert_eq!(identity_key(196915), "cilium/state/identities/v1/id/196915");
        assert_eq!(ip_key("10.244.2.74/32".parse().unwrap()), "cilium/state/ip/v1/default/10.244.2.74");
        assert_eq!(
            ip_key("fd00:10:244:2::e024/128".parse().unwrap()),
            "cilium/state/ip/v1/default/fd00:10:244:2::e024"
        );
        assert_eq!(ip_key("10.0.0.0/8".parse().unwrap()), "cilium/state/ip/v1/default/10.0.0.0/8");
        assert_eq!(cluster_config_key("cluster3"), "cilium/cluster-config/cluster3");
        assert_eq!(synced_key("cluster3", Resource::Services), "cilium/synced/cluster3/cilium/state/services/v1");
        assert_eq!(Resource::Services.watch_prefix("c1"), "cilium/state/services/v1/c1/");
        assert_eq!(Resource::Ip.watch_prefix("c1"), "cilium/state/ip/v1/default/");
    }

    #[test]
    fn parse_round_trips() {
        for k in [
            "cilium/.heartbeat",
            "cilium/cluster-config/cluster3",
            "cilium/synced/cluster3/cilium/state/nodes/v1",
            "cilium/state/nodes/v1/cluster3/test-node-1",
            "cilium/state/services/v1/cluster3/ns-alpha/echo-service",
            "cilium/state/identities/v1/id/196915",
            "cilium/state/ip/v1/default/10.244.1.79",
            "cilium/state/ip/v1/default/fd00:10:244:1::d643",
            "cilium/state/ip/v1/default/10.0.0.0/8",
        ] {
            let parsed = Key::parse(k).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.to_string(), k);
        }
        assert_eq!(
            Key::parse("cilium/state/services/v1/c1/ns/web").unwrap(),
            Key::Service { cluster: "c1".into(), namespace: "ns".into(), name: "web".into() }
        );
    }

    #[test]
    fn parse_rejects_malformed_keys_naming_them() {
        for k in [
            "",
            "cilium",
            "cilium/state/nodes/v1/cluster3",
            "cilium/state/nodes/v1/cluster3/",
            "cilium/state/nodes/v1/cluster3/a/b",
            "cilium/state/nodes/v1/Cluster3/n",
            "cilium/state/services/v1/cluster3/ns",
            "cilium/state/services/v1/cluster3//name",
            "cilium/state/identities/v1/id/",
            "cilium/state/identities/v1/id/+5",
            "cilium/state/identities/v1/id/007",
            "cilium/state/identities/v1/id/99999999999",
            "cilium/state/identities/v1/value/k8s:a=b;/node1",
            "cilium/state/ip/v1/default/10.0.0.300",
            "cilium/state/ip/v1/default/10.0.0.1/8",
            "cilium/state/ip/v1//10.0.0.1",
            "cilium/cluster-config/",
            "cilium/cluster-config/a/b",
            "cilium/synced/cluster3",
            "cilium/synced/cluster3/",
            "other/thing",
        ] {
            let e = Key::parse(k).expect_err(k);
            assert_eq!(e.key, k);
            assert!(e.to_string().contains(&format!("{k:?}")), "{e}");
        }
    }

    #[test]
    fn cluster_names() {
        for ok in ["a", "cluster3", "c-1", &"a".repeat(32)] {
            assert!(validate_cluster_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(33)] {
            assert!(validate_cluster_name(bad).is_err(), "{bad}");
        }
    }
}
