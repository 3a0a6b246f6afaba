//! Cilium's ClusterMesh values, byte-compatible with what Cilium's Go code writes to etcd.
//!
//! Every struct lists its fields in the Go struct's order, since `encoding/json` writes them in
//! that order and byte compatibility depends on it. Go maps are written with sorted keys, hence
//! `BTreeMap` with `String` keys (IP keys sort as strings there, not numerically). Go `nil` maps
//! and slices become `null`, modelled with `Option` where Cilium writes `null` in practice.
//!
//! Sources (Cilium, `github.com/cilium/cilium`): `pkg/clustermesh/store/store.go` (ClusterService,
//! "WARNING - STABLE API"), `pkg/clustermesh/types/types.go` (CiliumClusterConfig),
//! `pkg/node/types/node.go` (Node), `pkg/identity/key.go` / `pkg/labels` (label strings),
//! `pkg/ipcache/types.go` (IPIdentityPair). Golden values: `tests/fixtures/` (see its README).
//!
//! Reading is lenient like Go's decoder (missing fields take zero values, unknown fields are
//! ignored), then [`ClusterService::validate`] and friends apply Cilium's checks. One difference:
//! Go matches field names case-insensitively, serde does not.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that could not be decoded or failed validation. Names the key it came from.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("invalid JSON in {key:?}: {source}")]
    Json { key: String, source: serde_json::Error },
    #[error("invalid value in {key:?}: {reason}")]
    Invalid { key: String, reason: String },
}

/// Serializes like Go's `json.Marshal`: compact, and `<`, `>`, `&`, U+2028, U+2029 escaped as
/// `\u003c`-style sequences (`encoding/json` `HTMLEscape` is on by default).
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Serializing our own types into a Vec cannot fail: no map has non-string keys.
    value.serialize(&mut ser).expect("serializing a clustermesh value");
    out
}

/// Decodes a JSON value read from `key`.
pub fn from_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ValueError> {
    serde_json::from_slice(bytes).map_err(|source| ValueError::Json { key: key.to_string(), source })
}

struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(esc.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// Go `net.IP` in JSON: its text form, `""` for a nil IP.
mod go_ip {
    use super::*;

    pub fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("invalid IP address {s:?}")))
    }
}

/// Go `[]byte` / `net.IPMask` in JSON: standard base64, `null` for nil.
mod go_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_str(&BASE64.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => BASE64.decode(s.as_bytes()).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

// ===== ClusterService =====

/// `loadbalancer.L4Addr` (no JSON tags, so Go field names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4Addr {
    #[serde(rename = "Protocol", default)]
    pub protocol: String,
    #[serde(rename = "Port", default)]
    pub port: u16,
}

/// `store.PortConfiguration`: port name → L4 address.
pub type PortConfiguration = BTreeMap<String, L4Addr>;

/// Topology hints of a backend (`store.BackendZone`). Field tags are from the reference, which
/// quotes the shape `{"zone": "...", "forZones": [{"name": "..."}]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendZone {
    #[serde(default)]
    pub zone: String,
    #[serde(rename = "forZones", default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub for_zones: Vec<ForZone>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForZone {
    #[serde(default)]
    pub name: String,
}

/// A global service as one cluster exports it (`store.ClusterService`, key
/// `cilium/state/services/v1/<cluster>/<ns>/<name>`). A `null` frontends/backends/labels/selector
/// is read as empty and written back as `{}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterService {
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    /// Frontend IP → ports.
    #[serde(default, deserialize_with = "null_as_default")]
    pub frontends: BTreeMap<String, PortConfiguration>,
    /// Backend IP → ports.
    #[serde(default, deserialize_with = "null_as_default")]
    pub backends: BTreeMap<String, PortConfiguration>,
    /// Backend IP → hostname (`omitempty`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_as_default")]
    pub hostnames: BTreeMap<String, String>,
    /// Backend IP → topology zone (`omitempty`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_as_default")]
    pub zones: BTreeMap<String, BackendZone>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub selector: BTreeMap<String, String>,
    #[serde(rename = "includeExternal", default)]
    pub include_external: bool,
    #[serde(default)]
    pub shared: bool,
    #[serde(rename = "clusterID", default)]
    pub cluster_id: u32,
}

impl ClusterService {
    /// Cilium's checks on a decoded ClusterService (`ClusterService.validate` plus the
    /// `ClusterNameValidator`, `NamespacedNameValidator` and `ClusterIDValidator` of a remote
    /// watcher): non-empty names, the cluster and `ns/name` of the key, the remote's cluster id,
    /// and IP keys without IPv6 zone.
    pub fn validate(
        &self,
        key: &str,
        cluster: &str,
        namespace: &str,
        name: &str,
        cluster_id: Option<u32>,
    ) -> Result<(), ValueError> {
        let bad = |reason: String| Err(ValueError::Invalid { key: key.to_string(), reason });
        if self.cluster.is_empty() || self.namespace.is_empty() || self.name.is_empty() {
            return bad("cluster, namespace and name must be set".into());
        }
        if self.cluster != cluster {
            return bad(format!("cluster {:?} does not match the key's {cluster:?}", self.cluster));
        }
        if self.namespace != namespace || self.name != name {
            return bad(format!("{}/{} does not match the key's {namespace}/{name}", self.namespace, self.name));
        }
        if let Some(id) = cluster_id
            && self.cluster_id != id
        {
            return bad(format!("clusterID {} does not match the remote's {id}", self.cluster_id));
        }
        for ip in self.frontends.keys().chain(self.backends.keys()) {
            if ip.parse::<IpAddr>().is_err() {
                return bad(format!("{ip:?} is not an IP address (IPv6 zones are not allowed)"));
            }
        }
        Ok(())
    }
}

// ===== CiliumClusterConfig =====

/// `cilium/cluster-config/<cluster>` (`types.CiliumClusterConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumClusterConfig {
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    /// Go's `omitempty` does not apply to structs: always written.
    #[serde(default)]
    pub capabilities: ClusterConfigCapabilities,
}

/// `types.CiliumClusterConfigCapabilities`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfigCapabilities {
    /// Per-prefix sync canaries are written (`cilium/synced/...`).
    #[serde(rename = "syncedCanaries", default, skip_serializing_if = "is_false")]
    pub synced_canaries: bool,
    /// Written by KVStoreMesh for a cached copy (keys under `cilium/cache`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cached: bool,
    /// 255 or 511; 0 (absent) means 255.
    #[serde(rename = "maxConnectedClusters", default, skip_serializing_if = "is_zero_u32")]
    pub max_connected_clusters: u32,
    /// MCS-API ServiceExports; `None` = not supported (a Go `*bool`).
    #[serde(rename = "serviceExportsEnabled", default, skip_serializing_if = "Option::is_none")]
    pub service_exports_enabled: Option<bool>,
    /// Newer Cilium (`--clustermesh-service-v2`); `omitempty` inferred from the default fixture,
    /// which lacks it.
    #[serde(rename = "endpointSlicesExportMode", default, skip_serializing_if = "String::is_empty")]
    pub endpoint_slices_export_mode: String,
}

// ===== Node =====

/// A CIDR as Go's `cidr.CIDR` (embedded `*net.IPNet`) writes it: `{"IP": "...", "Mask": base64}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoCidr {
    #[serde(rename = "IP", with = "go_ip", default)]
    pub ip: Option<IpAddr>,
    #[serde(rename = "Mask", with = "go_bytes", default)]
    pub mask: Option<Vec<u8>>,
}

impl GoCidr {
    pub fn from_net(net: IpNet) -> GoCidr {
        let mask = match net.netmask() {
            IpAddr::V4(m) => m.octets().to_vec(),
            IpAddr::V6(m) => m.octets().to_vec(),
        };
        GoCidr { ip: Some(net.network()), mask: Some(mask) }
    }

    /// The prefix, when the mask is contiguous and matches the address family.
    pub fn to_net(&self) -> Option<IpNet> {
        let ip = self.ip?;
        let mask = self.mask.as_ref()?;
        let want = if ip.is_ipv4() { 4 } else { 16 };
        if mask.len() != want {
            return None;
        }
        let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
        let contiguous =
            mask.iter().flat_map(|b| (0..8).rev().map(move |i| b >> i & 1)).skip(ones as usize).all(|b| b == 0);
        contiguous.then(|| IpNet::new(ip, ones as u8).ok()).flatten()
    }
}

/// `nodeTypes.Address`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `CiliumInternalIP`, …
    #[serde(rename = "Type", default)]
    pub type_: String,
    #[serde(rename = "IP", with = "go_ip", default)]
    pub ip: Option<IpAddr>,
}

/// `cilium/state/nodes/v1/<cluster>/<node>` (`nodeTypes.Node`, no JSON tags).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub cluster: String,
    #[serde(rename = "IPAddresses", default)]
    pub ip_addresses: Option<Vec<NodeAddress>>,
    #[serde(rename = "IPv4AllocCIDR", default)]
    pub ipv4_alloc_cidr: Option<GoCidr>,
    #[serde(rename = "IPv4SecondaryAllocCIDRs", default)]
    pub ipv4_secondary_alloc_cidrs: Option<Vec<GoCidr>>,
    #[serde(rename = "IPv6AllocCIDR", default)]
    pub ipv6_alloc_cidr: Option<GoCidr>,
    #[serde(rename = "IPv6SecondaryAllocCIDRs", default)]
    pub ipv6_secondary_alloc_cidrs: Option<Vec<GoCidr>>,
    #[serde(rename = "IPv4HealthIP", with = "go_ip", default)]
    pub ipv4_health_ip: Option<IpAddr>,
    #[serde(rename = "IPv6HealthIP", with = "go_ip", default)]
    pub ipv6_health_ip: Option<IpAddr>,
    #[serde(rename = "IPv4IngressIP", with = "go_ip", default)]
    pub ipv4_ingress_ip: Option<IpAddr>,
    #[serde(rename = "IPv6IngressIP", with = "go_ip", default)]
    pub ipv6_ingress_ip: Option<IpAddr>,
    #[serde(rename = "ClusterID", default)]
    pub cluster_id: u32,
    /// `custom-resource` for nodes the apiserver exports from CiliumNodes.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub encryption_key: u8,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Absent from the current fixtures; written only when non-zero (inferred, see module docs).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub node_identity: u32,
    #[serde(default)]
    pub wireguard_pub_key: String,
    #[serde(rename = "BootID", default)]
    pub boot_id: String,
}

// ===== IPIdentityPair =====

/// `identity.NamedPort` inside an ipcache entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NamedPort {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub protocol: String,
}

/// `cilium/state/ip/v1/default/<ip>` (`identity.IPIdentityPair`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpIdentityPair {
    #[serde(rename = "IP", with = "go_ip", default)]
    pub ip: Option<IpAddr>,
    /// Only for CIDR entries (`omitempty`).
    #[serde(rename = "Mask", with = "go_bytes", default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Vec<u8>>,
    #[serde(rename = "HostIP", with = "go_ip", default)]
    pub host_ip: Option<IpAddr>,
    #[serde(rename = "ID", default)]
    pub id: u32,
    /// IPsec / WireGuard key index.
    #[serde(rename = "Key", default)]
    pub key: u8,
    #[serde(rename = "Metadata", default)]
    pub metadata: String,
    #[serde(rename = "K8sNamespace", default, skip_serializing_if = "String::is_empty")]
    pub k8s_namespace: String,
    #[serde(rename = "K8sPodName", default, skip_serializing_if = "String::is_empty")]
    pub k8s_pod_name: String,
    #[serde(rename = "K8sPodUID", default, skip_serializing_if = "String::is_empty")]
    pub k8s_pod_uid: String,
    #[serde(rename = "K8sServiceAccount", default, skip_serializing_if = "String::is_empty")]
    pub k8s_service_account: String,
    #[serde(
        rename = "NamedPorts",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub named_ports: Vec<NamedPort>,
}

// ===== identity labels =====

/// One security label, `source:key=value` (`labels.Label`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub source: String,
    pub key: String,
    pub value: String,
}

/// A label set as stored under `cilium/state/identities/v1/id/<id>`: each label as
/// `source:key=value;`, sorted by key, one label per key (`labels.Labels.SortedList`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSet(BTreeMap<String, Label>);

impl LabelSet {
    pub fn new() -> LabelSet {
        LabelSet::default()
    }

    /// Adds a label; a later label with the same key replaces the earlier one.
    pub fn insert(&mut self, source: &str, key: &str, value: &str) {
        self.0.insert(key.to_string(), Label { source: source.into(), key: key.into(), value: value.into() });
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of label `key`, whatever its source.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|l| l.value.as_str())
    }

    /// Parses the kvstore form. Every label must be `source:key=value;` with non-empty source
    /// and key, and each key must appear once.
    pub fn parse(s: &str) -> Result<LabelSet, String> {
        let body = s.strip_suffix(';').ok_or_else(|| format!("label list {s:?} does not end with ';'"))?;
        let mut set = LabelSet::new();
        for item in body.split(';') {
            let (source, rest) = item.split_once(':').ok_or_else(|| format!("label {item:?} has no source"))?;
            let (key, value) = rest.split_once('=').ok_or_else(|| format!("label {item:?} has no '='"))?;
            if source.is_empty() || key.is_empty() {
                return Err(format!("label {item:?} has an empty source or key"));
            }
            if set.0.contains_key(key) {
                return Err(format!("label key {key:?} appears twice"));
            }
            set.insert(source, key, value);
        }
        Ok(set)
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in self.0.values() {
            write!(f, "{}:{}={};", l.source, l.key, l.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_escaping() {
        let v = serde_json::json!({"a": "<b>&\u{2028}\"\n"});
        assert_eq!(String::from_utf8(to_go_json(&v)).unwrap(), r#"{"a":"\u003cb\u003e\u0026\u2028\"\n"}"#);
    }

    #[test]
    fn cidr_conversion() {
        let c = GoCidr::from_net("10.244.0.0/24".parse().unwrap());
        assert_eq!(String::from_utf8(to_go_json(&c)).unwrap(), r#"{"IP":"10.244.0.0","Mask":"////AA=="}"#);
        assert_eq!(c.to_net(), Some("10.244.0.0/24".parse().unwrap()));
        let c6 = GoCidr::from_net("fd00:10:244::/64".parse().unwrap());
        assert_eq!(
            String::from_utf8(to_go_json(&c6)).unwrap(),
            r#"{"IP":"fd00:10:244::","Mask":"//////////8AAAAAAAAAAA=="}"#
        );
        let odd = GoCidr { ip: Some("10.0.0.0".parse().unwrap()), mask: Some(vec![255, 0, 255, 0]) };
        assert_eq!(odd.to_net(), None);
    }

    #[test]
    fn label_sets() {
        let s = "k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:io.kubernetes.pod.namespace=bar;";
        let set = LabelSet::parse(s).unwrap();
        assert_eq!(set.to_string(), s);
        assert_eq!(set.get("app"), Some("baz"));
        let mut built = LabelSet::new();
        built.insert("k8s", "io.kubernetes.pod.namespace", "bar");
        built.insert("k8s", "app", "baz");
        built.insert("k8s", "io.cilium.k8s.policy.cluster", "cluster3");
        assert_eq!(built.to_string(), s);
        assert_eq!(LabelSet::parse("reserved:host=;").unwrap().to_string(), "reserved:host=;");
        for bad in ["", "k8s:a=b", "a=b;", "k8s:a;", ":a=b;", "k8s:=b;", "k8s:a=1;k8s:a=2;"] {
            assert!(LabelSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn null_maps_read_as_empty() {
        let s: ClusterService =
            from_json("k", br#"{"cluster":"c","namespace":"n","name":"x","frontends":null,"labels":null}"#).unwrap();
        assert!(s.frontends.is_empty() && s.labels.is_empty());
        assert!(s.validate("k", "c", "n", "x", None).is_ok());
        assert!(s.validate("k", "other", "n", "x", None).is_err());
        assert!(s.validate("k", "c", "n", "x", Some(3)).is_err());
    }

    #[test]
    fn validation_rejects_bad_ips() {
        let mut s =
            ClusterService { cluster: "c".into(), namespace: "n".into(), name: "x".into(), ..Default::default() };
        s.backends.insert("fe80::1%eth0".into(), PortConfiguration::new());
        assert!(s.validate("k", "c", "n", "x", None).is_err());
    }

    #[test]
    fn malformed_json_names_the_key() {
        let e = from_json::<Node>("cilium/state/nodes/v1/c/n", b"{not json").unwrap_err();
        assert!(e.to_string().contains("cilium/state/nodes/v1/c/n"));
        let e = from_json::<Node>("k", br#"{"IPv4HealthIP":"nope"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid IP"), "{e}");
    }
}
