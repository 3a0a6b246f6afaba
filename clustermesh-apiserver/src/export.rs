//! What a cluster publishes, derived purely from the [`Model`]: a map from etcd key to the exact
//! value bytes. Publishing is then a diff of the last published map and the new one
//! ([`diff`]), applied by the publisher.
//!
//! Rules (Cilium docs `network/clustermesh/global-services.rst`, `clustermesh.md` §2.1):
//! * A Service is exported when `service.cilium.io/global` (legacy `io.cilium/global-service`) is
//!   `"true"` and `service.cilium.io/shared` (legacy `io.cilium/shared-service`) is not `"false"`
//!   (shared defaults to true for a global service). `shared: "false"` means: use remote
//!   backends, export nothing.
//! * Its namespace must be global: `clustermesh.cilium.io/global` on the Namespace, defaulting to
//!   [`ExportConfig::default_global_namespace`] (true upstream).
//! * Frontends are the ClusterIPs with the Service ports; backends are the ready endpoints of its
//!   EndpointSlices with the slice ports (`globalnamespace-services.txtar`: ClusterIP 10.96.0.10
//!   port 80 → frontend, endpoint 10.244.1.10 with slice port 8080 → backend).
//! * Every node is exported; the cluster config is always exported.
//!
//! Annotation values are compared case-insensitively (Cilium lower-cases them).

use std::collections::BTreeMap;
use std::net::IpAddr;

use halyard_model::{ClusterIp, Model, NamespacedName, Protocol, Service};

use crate::identity::{ClusterId, MaxConnectedClusters};
use crate::keys;
use crate::types::{
    CiliumClusterConfig, ClusterConfigCapabilities, ClusterService, GoCidr, L4Addr, Node, NodeAddress,
    PortConfiguration, to_go_json,
};

pub const GLOBAL_ANNOTATION: &str = "service.cilium.io/global";
pub const GLOBAL_ANNOTATION_LEGACY: &str = "io.cilium/global-service";
pub const SHARED_ANNOTATION: &str = "service.cilium.io/shared";
pub const SHARED_ANNOTATION_LEGACY: &str = "io.cilium/shared-service";
pub const GLOBAL_NAMESPACE_ANNOTATION: &str = "clustermesh.cilium.io/global";
/// WireGuard public key annotation on nodes (`annotation.WireguardPubKey`).
pub const WG_PUB_KEY_ANNOTATION: &str = "network.cilium.io/wg-pub-key";
/// `source.CustomResource`: the apiserver exports nodes from CiliumNodes (`ciliumnodes.txtar`).
pub const NODE_SOURCE: &str = "custom-resource";

/// Who this cluster is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    pub cluster_name: String,
    pub cluster_id: ClusterId,
    pub max_connected_clusters: MaxConnectedClusters,
    /// `clustermesh-default-global-namespace` (true upstream).
    pub default_global_namespace: bool,
    /// `serviceExportsEnabled` in the cluster config; `Some(false)` as the apiserver without MCS-API.
    pub service_exports_enabled: Option<bool>,
}

impl ExportConfig {
    /// Validates the name; `cluster_id` is validated by its type.
    pub fn new(cluster_name: &str, cluster_id: ClusterId) -> Result<ExportConfig, String> {
        keys::validate_cluster_name(cluster_name)?;
        Ok(ExportConfig {
            cluster_name: cluster_name.to_string(),
            cluster_id,
            max_connected_clusters: MaxConnectedClusters::C255,
            default_global_namespace: true,
            service_exports_enabled: Some(false),
        })
    }
}

/// Key → value bytes, as they go to etcd.
pub type Exported = BTreeMap<String, Vec<u8>>;

/// The changes that turn `old` into `new`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub upserts: BTreeMap<String, Vec<u8>>,
    pub deletes: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// Unchanged values are skipped (as Cilium's SyncStore does).
pub fn diff(old: &Exported, new: &Exported) -> Diff {
    let upserts = new.iter().filter(|(k, v)| old.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let deletes = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
    Diff { upserts, deletes }
}

/// The cluster config this cluster publishes (`clusterconfig.txtar`).
pub fn cluster_config(cfg: &ExportConfig) -> CiliumClusterConfig {
    CiliumClusterConfig {
        id: cfg.cluster_id.get(),
        capabilities: ClusterConfigCapabilities {
            synced_canaries: true,
            cached: false,
            max_connected_clusters: cfg.max_connected_clusters.as_u32(),
            service_exports_enabled: cfg.service_exports_enabled,
            endpoint_slices_export_mode: String::new(),
        },
    }
}

/// Everything this cluster publishes: cluster config, nodes and exported services.
pub fn export(model: &Model, cfg: &ExportConfig) -> Exported {
    let mut out = Exported::new();
    out.insert(keys::cluster_config_key(&cfg.cluster_name), to_go_json(&cluster_config(cfg)));
    for node in model.nodes.values() {
        let n = node_value(node, cfg);
        out.insert(keys::node_key(&cfg.cluster_name, &n.name), to_go_json(&n));
    }
    for (key, svc) in &model.services {
        if let Some(cs) = cluster_service(model, key, svc, cfg) {
            out.insert(keys::service_key(&cfg.cluster_name, &key.namespace, &key.name), to_go_json(&cs));
        }
    }
    out
}

fn annotation<'a>(annotations: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| annotations.get(*n)).map(String::as_str)
}

fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn is_false(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("false"))
}

/// Whether a Service is global (its backends merge with remote ones).
pub fn is_global(svc: &Service) -> bool {
    is_true(annotation(&svc.metadata.annotations, &[GLOBAL_ANNOTATION, GLOBAL_ANNOTATION_LEGACY]))
}

/// Whether a global Service's local backends are exported (default true).
pub fn is_shared(svc: &Service) -> bool {
    is_global(svc) && !is_false(annotation(&svc.metadata.annotations, &[SHARED_ANNOTATION, SHARED_ANNOTATION_LEGACY]))
}

/// Whether a namespace is global (exports its services).
pub fn is_global_namespace(model: &Model, namespace: &str, cfg: &ExportConfig) -> bool {
    let ann = model.namespaces.get(namespace).and_then(|ns| ns.metadata.annotations.get(GLOBAL_NAMESPACE_ANNOTATION));
    match ann.map(String::as_str) {
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        _ => cfg.default_global_namespace,
    }
}

fn protocol(p: Protocol) -> String {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
    .to_string()
}

/// The ClusterService of an exported Service, `None` when it is not exported.
pub fn cluster_service(
    model: &Model,
    key: &NamespacedName,
    svc: &Service,
    cfg: &ExportConfig,
) -> Option<ClusterService> {
    if !is_shared(svc) || !is_global_namespace(model, &key.namespace, cfg) {
        return None;
    }
    let mut ports = PortConfiguration::new();
    for p in &svc.spec.ports {
        ports.insert(p.name.clone().unwrap_or_default(), L4Addr { protocol: protocol(p.protocol), port: p.port });
    }
    let mut frontend_ips: Vec<IpAddr> = svc.spec.cluster_ips.iter().filter_map(ClusterIp::addr).collect();
    frontend_ips.extend(svc.spec.cluster_ip.and_then(|c| c.addr()));
    let frontends = frontend_ips.into_iter().map(|ip| (ip.to_string(), ports.clone())).collect();

    let mut backends: BTreeMap<String, PortConfiguration> = BTreeMap::new();
    let mut hostnames = BTreeMap::new();
    for slice in model.endpoint_slices_for(key) {
        let slice_ports: PortConfiguration = slice
            .ports
            .iter()
            .filter_map(|p| {
                Some((p.name.clone().unwrap_or_default(), L4Addr { protocol: protocol(p.protocol), port: p.port? }))
            })
            .collect();
        for ep in slice.endpoints.iter().filter(|e| e.is_ready()) {
            for ip in ep.ip_addresses() {
                backends.entry(ip.to_string()).or_default().extend(slice_ports.clone());
                if let Some(h) = &ep.hostname {
                    hostnames.insert(ip.to_string(), h.clone());
                }
            }
        }
    }
    Some(ClusterService {
        cluster: cfg.cluster_name.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        frontends,
        backends,
        hostnames,
        zones: BTreeMap::new(),
        labels: svc.metadata.labels.clone(),
        selector: svc.spec.selector.clone(),
        include_external: true,
        shared: true,
        cluster_id: cfg.cluster_id.get(),
    })
}

/// The Node value of a model node. Kubernetes Nodes carry no health/ingress IPs, boot id or
/// encryption key, so those are empty; nil maps stay `null` as Go writes them.
pub fn node_value(node: &halyard_model::Node, cfg: &ExportConfig) -> Node {
    let addresses: Vec<NodeAddress> = node
        .status
        .addresses
        .iter()
        .filter_map(|a| Some(NodeAddress { type_: a.type_.clone(), ip: Some(a.address.parse().ok()?) }))
        .collect();
    let cidrs = node.pod_cidrs();
    let (v4, v6): (Vec<_>, Vec<_>) = cidrs.into_iter().partition(|c| c.addr().is_ipv4());
    let secondary = |c: &[ipnet::IpNet]| (c.len() > 1).then(|| c[1..].iter().map(|n| GoCidr::from_net(*n)).collect());
    let non_empty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    Node {
        name: node.metadata.name.clone(),
        cluster: cfg.cluster_name.clone(),
        ip_addresses: (!addresses.is_empty()).then_some(addresses),
        ipv4_alloc_cidr: v4.first().map(|n| GoCidr::from_net(*n)),
        ipv4_secondary_alloc_cidrs: secondary(&v4),
        ipv6_alloc_cidr: v6.first().map(|n| GoCidr::from_net(*n)),
        ipv6_secondary_alloc_cidrs: secondary(&v6),
        ipv4_health_ip: None,
        ipv6_health_ip: None,
        ipv4_ingress_ip: None,
        ipv6_ingress_ip: None,
        cluster_id: cfg.cluster_id.get(),
        source: NODE_SOURCE.to_string(),
        encryption_key: 0,
        labels: non_empty(&node.metadata.labels),
        annotations: non_empty(&node.metadata.annotations),
        node_identity: 0,
        wireguard_pub_key: node.metadata.annotations.get(WG_PUB_KEY_ANNOTATION).cloned().unwrap_or_default(),
        boot_id: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halyard_model::parse_manifest_bytes;

    fn model(yaml: &str) -> Model {
        let parsed = parse_manifest_bytes(std::path::Path::new("test.yaml"), yaml.as_bytes());
        Model::from_objects(parsed.expect("manifest parses").objects)
    }

    fn cfg() -> ExportConfig {
        ExportConfig::new("cluster3", ClusterId::new(3, MaxConnectedClusters::C255).unwrap()).unwrap()
    }

    /// The objects of `globalnamespace-services.txtar` (ns-alpha global, ns-beta not).
    const FIXTURE_OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: ns-alpha
  annotations:
    clustermesh.cilium.io/global: "true"
---
apiVersion: v1
kind: Namespace
metadata:
  name: ns-beta
  annotations:
    clustermesh.cilium.io/global: "false"
---
apiVersion: v1
kind: Service
metadata:
  name: echo-service
  namespace: ns-alpha
  annotations:
    service.cilium.io/global: "true"
    service.cilium.io/shared: "true"
spec:
  clusterIP: 10.96.0.10
  clusterIPs:
  - 10.96.0.10
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080
  selector:
    app: echo
  type: ClusterIP
---
apiVersion: v1
kind: Service
metadata:
  name: echo-service
  namespace: ns-beta
  annotations:
    service.cilium.io/global: "true"
spec:
  clusterIP: 10.96.0.20
  ports:
  - name: http
    port: 80
  selector:
    app: echo
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  labels:
    kubernetes.io/service-name: echo-service
  name: echo-service-abc12
  namespace: ns-alpha
addressType: IPv4
endpoints:
- addresses:
  - 10.244.1.10
  conditions:
    ready: true
    serving: true
    terminating: false
  nodeName: worker1
- addresses:
  - 10.244.1.11
  conditions:
    ready: false
ports:
- name: http
  port: 8080
  protocol: TCP
"#;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let pretty = std::fs::read_to_string(path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        // Re-serialize through our type to get the compact form with Go field order.
        let cs: ClusterService = serde_json::from_value(v).unwrap();
        String::from_utf8(to_go_json(&cs)).unwrap()
    }

    #[test]
    fn global_service_export_matches_fixture() {
        let m = model(FIXTURE_OBJECTS);
        let out = export(&m, &cfg());
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(keys, ["cilium/cluster-config/cluster3", "cilium/state/services/v1/cluster3/ns-alpha/echo-service"]);
        let svc = String::from_utf8(out["cilium/state/services/v1/cluster3/ns-alpha/echo-service"].clone()).unwrap();
        assert_eq!(svc, fixture("service-ns-alpha-echo-service.json"));
        assert_eq!(
            String::from_utf8(out["cilium/cluster-config/cluster3"].clone()).unwrap(),
            r#"{"id":3,"capabilities":{"syncedCanaries":true,"maxConnectedClusters":255,"serviceExportsEnabled":false}}"#
        );
    }

    #[test]
    fn shared_false_and_non_global_are_not_exported() {
        let mut m = model(FIXTURE_OBJECTS);
        let key = NamespacedName::new("ns-alpha", "echo-service");
        let svc = m.services.get_mut(&key).unwrap();
        svc.metadata.annotations.insert(SHARED_ANNOTATION.into(), "False".into());
        assert!(is_global(svc) && !is_shared(svc));
        assert_eq!(export(&m, &cfg()).len(), 1);
        let svc = m.services.get_mut(&key).unwrap();
        svc.metadata.annotations.clear();
        svc.metadata.annotations.insert(GLOBAL_ANNOTATION_LEGACY.into(), "true".into());
        assert!(is_shared(svc));
        assert_eq!(export(&m, &cfg()).len(), 2);
        let svc = m.services.get_mut(&key).unwrap();
        svc.metadata.annotations.clear();
        assert_eq!(export(&m, &cfg()).len(), 1);
    }

    #[test]
    fn default_global_namespace_applies_without_annotation() {
        let mut m = model(FIXTURE_OBJECTS);
        m.namespaces.get_mut("ns-beta").unwrap().metadata.annotations.clear();
        assert_eq!(export(&m, &cfg()).len(), 3);
        let mut c = cfg();
        c.default_global_namespace = false;
        assert_eq!(export(&m, &c).len(), 2);
    }

    #[test]
    fn nodes_are_exported() {
        let m = model(
            r#"
apiVersion: v1
kind: Node
metadata:
  name: worker1
  labels:
    kubernetes.io/hostname: worker1
spec:
  podCIDRs: [10.244.0.0/24, "fd00:10:244::/64"]
status:
  addresses:
  - type: InternalIP
    address: 172.18.0.2
  - type: Hostname
    address: worker1
"#,
        );
        let out = export(&m, &cfg());
        let v = String::from_utf8(out["cilium/state/nodes/v1/cluster3/worker1"].clone()).unwrap();
        assert_eq!(
            v,
            concat!(
                r#"{"Name":"worker1","Cluster":"cluster3","IPAddresses":[{"Type":"InternalIP","IP":"172.18.0.2"}],"#,
                r#""IPv4AllocCIDR":{"IP":"10.244.0.0","Mask":"////AA=="},"IPv4SecondaryAllocCIDRs":null,"#,
                r#""IPv6AllocCIDR":{"IP":"fd00:10:244::","Mask":"//////////8AAAAAAAAAAA=="},"IPv6SecondaryAllocCIDRs":null,"#,
                r#""IPv4HealthIP":"","IPv6HealthIP":"","IPv4IngressIP":"","IPv6IngressIP":"","ClusterID":3,"#,
                r#""Source":"custom-resource","EncryptionKey":0,"Labels":{"kubernetes.io/hostname":"worker1"},"#,
                r#""Annotations":null,"WireguardPubKey":"","BootID":""}"#
            )
        );
    }

    #[test]
    fn diff_of_two_maps() {
        let old: Exported = [("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())].into();
        let new: Exported =
            [("b".into(), b"3".to_vec()), ("c".into(), b"4".to_vec()), ("a".into(), b"1".to_vec())].into();
        let d = diff(&old, &new);
        assert_eq!(d.upserts.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert!(d.deletes.is_empty());
        let d = diff(&new, &Exported::new());
        assert_eq!(d.deletes, ["a", "b", "c"]);
        assert!(diff(&new, &new).is_empty());
    }
}
