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
//! * Pods in global namespaces become identities and ipcache entries ([`Exporter`]).
//!
//! Annotation values are compared case-insensitively (Cilium lower-cases them).

use std::collections::BTreeMap;
use std::net::IpAddr;

use halyard_model::{ClusterIp, Model, NamespacedName, Pod, Protocol, Service};
use ipnet::IpNet;

use crate::identity::{ClusterId, IdentityAllocator, MaxConnectedClusters, NumericIdentity};
use crate::keys::{self, Key};
use crate::types::{
    CiliumClusterConfig, ClusterConfigCapabilities, ClusterService, GoCidr, IpIdentityPair, L4Addr, LabelSet,
    NamedPort, Node, NodeAddress, PortConfiguration, to_go_json,
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

// ===== endpoints and identities =====

/// Label keys Cilium leaves out of security identities by default (`pkg/labelsfilter`,
/// default prefix list): Kubernetes-internal and per-instance labels that would give every pod
/// its own identity. A key is left out when it starts with one of these.
const FILTERED_LABEL_PREFIXES: &[&str] = &[
    "io.kubernetes",
    "kubernetes.io",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
    "batch.kubernetes.io/controller-uid",
    "k8s.io",
    "pod-template-generation",
    "pod-template-hash",
    "controller-revision-hash",
    "annotation",
    "etcd_node",
];

/// `k8s:io.kubernetes.pod.namespace`, `k8s:io.cilium.k8s.policy.cluster`, … (`pkg/k8s/apis/cilium.io`).
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const POLICY_CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";
pub const POLICY_SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

fn identity_relevant(key: &str) -> bool {
    !FILTERED_LABEL_PREFIXES.iter().any(|p| key.starts_with(p)) && !key.contains("beta.kubernetes.io")
}

/// The security labels of a pod, as Cilium derives them: its (filtered) labels, its namespace,
/// its service account, its namespace's labels and the cluster name, all with source `k8s`.
pub fn pod_identity_labels(model: &Model, pod: &Pod, namespace: &str, cfg: &ExportConfig) -> LabelSet {
    let mut set = LabelSet::new();
    for (k, v) in &pod.metadata.labels {
        if identity_relevant(k) {
            set.insert("k8s", k, v);
        }
    }
    if let Some(ns) = model.namespaces.get(namespace) {
        for (k, v) in &ns.metadata.labels {
            set.insert("k8s", &format!("{NAMESPACE_LABELS_PREFIX}{k}"), v);
        }
    }
    set.insert("k8s", POD_NAMESPACE_LABEL, namespace);
    set.insert("k8s", POLICY_SERVICE_ACCOUNT_LABEL, pod.spec.service_account_name.as_deref().unwrap_or("default"));
    set.insert("k8s", POLICY_CLUSTER_LABEL, &cfg.cluster_name);
    set
}

/// Export with state: security identities stay stable as pods come and go (a label set keeps
/// its identity while any pod has it; a new one takes the lowest free identity of the cluster's
/// range), and when two pods claim one IP the first keeps it until it goes away (Cilium's
/// duplicate-IP rule, `ciliumendpoints.txtar`).
///
/// Exported, besides [`export`]: `cilium/state/identities/v1/id/<id>` for every label set in use
/// and `cilium/state/ip/v1/default/<ip>` for every pod IP, for pods in global namespaces that
/// have their own endpoint (not host-network, not finished).
#[derive(Clone, Debug)]
pub struct Exporter {
    cfg: ExportConfig,
    ids: IdentityAllocator,
    ip_owner: BTreeMap<IpAddr, NamespacedName>,
}

impl Exporter {
    pub fn new(cfg: ExportConfig) -> Exporter {
        let ids = IdentityAllocator::new(cfg.cluster_id, cfg.max_connected_clusters);
        Exporter { cfg, ids, ip_owner: BTreeMap::new() }
    }

    pub fn config(&self) -> &ExportConfig {
        &self.cfg
    }

    /// Takes over the identities already in etcd (from an earlier run), so that a restart keeps
    /// every pod's identity. Entries outside this cluster's range or that do not parse are
    /// ignored (and deleted by the next publish, as they are not exported).
    pub fn seed(&mut self, published: &Exported) -> usize {
        let (lo, hi) = self.ids.range();
        let mut n = 0;
        for (key, value) in published {
            let Ok(Key::Identity { id }) = Key::parse(key) else { continue };
            if !(lo..=hi).contains(&id) {
                continue;
            }
            let Ok(labels) = std::str::from_utf8(value).map_err(|e| e.to_string()).and_then(LabelSet::parse) else {
                continue;
            };
            if self.ids.adopt(NumericIdentity(id), &labels) {
                n += 1;
            }
        }
        n
    }

    /// Everything this cluster publishes for `model`.
    pub fn export(&mut self, model: &Model) -> Exported {
        let mut out = export(model, &self.cfg);
        // Endpoints: (pod key, pod, labels), in key order.
        let mut endpoints = Vec::new();
        for (key, pod) in &model.pods {
            if pod.is_endpoint() && is_global_namespace(model, &key.namespace, &self.cfg) {
                endpoints.push((key, pod, pod_identity_labels(model, pod, &key.namespace, &self.cfg)));
            }
        }
        // Release the label sets no pod has any more, then allocate the new ones in sorted order.
        let in_use: std::collections::BTreeSet<&LabelSet> = endpoints.iter().map(|(_, _, l)| l).collect();
        let gone: Vec<LabelSet> = self.ids.iter().map(|(_, l)| l.clone()).filter(|l| !in_use.contains(l)).collect();
        for l in &gone {
            self.ids.release(l);
        }
        for labels in &in_use {
            if let Err(e) = self.ids.allocate(labels) {
                tracing::error!("no identity for {labels}: {e}");
            }
        }
        for (id, labels) in self.ids.iter() {
            out.insert(keys::identity_key(id.0), labels.to_string().into_bytes());
        }
        // IP ownership: the current owner keeps an IP while it still claims it.
        let mut claims: BTreeMap<IpAddr, Vec<&NamespacedName>> = BTreeMap::new();
        for (key, pod, _) in &endpoints {
            for ip in pod.ips() {
                claims.entry(ip).or_default().push(key);
            }
        }
        self.ip_owner.retain(|ip, owner| claims.get(ip).is_some_and(|c| c.contains(&&*owner)));
        for (ip, claimers) in &claims {
            self.ip_owner.entry(*ip).or_insert_with(|| claimers[0].clone());
        }
        for (key, pod, labels) in &endpoints {
            let Some(id) = self.ids.get(labels) else { continue };
            for ip in pod.ips() {
                if self.ip_owner.get(&ip) != Some(*key) {
                    continue;
                }
                let pair = ip_identity_pair(pod, key, ip, id);
                out.insert(keys::ip_key(IpNet::from(ip)), to_go_json(&pair));
            }
        }
        out
    }
}

/// The ipcache entry of one pod IP (`ciliumendpoints.txtar`).
fn ip_identity_pair(pod: &Pod, key: &NamespacedName, ip: IpAddr, id: NumericIdentity) -> IpIdentityPair {
    let mut named_ports: Vec<NamedPort> = pod
        .spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone().filter(|n| !n.is_empty())?,
                port: p.container_port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
            })
        })
        .collect();
    // Declaration order, as the endpoint lists them; the first port of a name wins.
    let mut seen = std::collections::BTreeSet::new();
    named_ports.retain(|p| seen.insert(p.name.clone()));
    IpIdentityPair {
        ip: Some(ip),
        mask: None,
        host_ip: pod.status.host_ip,
        id: id.0,
        key: 0,
        metadata: String::new(),
        k8s_namespace: key.namespace.clone(),
        k8s_pod_name: key.name.clone(),
        k8s_pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        k8s_service_account: pod.spec.service_account_name.clone().unwrap_or_else(|| "default".to_string()),
        named_ports,
    }
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

    const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: bar
  labels:
    team: blue
---
apiVersion: v1
kind: Pod
metadata:
  name: cep-002
  namespace: bar
  uid: cep-pod-uid
  labels:
    app: baz
    pod-template-hash: 5d8f7c
spec:
  nodeName: worker1
  containers:
  - name: web
    image: nginx
    ports:
    - name: http
      containerPort: 8080
    - name: dns
      containerPort: 53
      protocol: UDP
status:
  phase: Running
  hostIP: 172.18.0.2
  podIP: 10.244.2.74
  podIPs:
  - ip: 10.244.2.74
---
apiVersion: v1
kind: Pod
metadata:
  name: host-agent
  namespace: bar
spec:
  hostNetwork: true
status:
  podIP: 172.18.0.2
"#;

    fn pod(name: &str, ns: &str, app: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\n\
             spec:\n  serviceAccountName: sa1\nstatus:\n  phase: Running\n  podIP: {ip}\n"
        )
    }

    fn ids(out: &Exported) -> BTreeMap<u32, String> {
        out.iter()
            .filter_map(|(k, v)| match Key::parse(k) {
                Ok(Key::Identity { id }) => Some((id, String::from_utf8(v.clone()).unwrap())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pods_become_identities_and_ipcache_entries() {
        let m = model(PODS);
        let mut ex = Exporter::new(cfg());
        let out = ex.export(&m);
        let labels = "k8s:app=baz;k8s:io.cilium.k8s.namespace.labels.team=blue;k8s:io.cilium.k8s.policy.cluster=cluster3;\
                      k8s:io.cilium.k8s.policy.serviceaccount=default;k8s:io.kubernetes.pod.namespace=bar;";
        // Cluster 3 allocates from 3 << 16; the pod-template-hash label is filtered out.
        assert_eq!(ids(&out), BTreeMap::from([(196608, labels.to_string())]));
        let ip = String::from_utf8(out["cilium/state/ip/v1/default/10.244.2.74"].clone()).unwrap();
        assert_eq!(
            ip,
            concat!(
                r#"{"IP":"10.244.2.74","HostIP":"172.18.0.2","ID":196608,"Key":0,"Metadata":"","#,
                r#""K8sNamespace":"bar","K8sPodName":"cep-002","K8sPodUID":"cep-pod-uid","K8sServiceAccount":"default","#,
                r#""NamedPorts":[{"Name":"http","Port":8080,"Protocol":"TCP"},{"Name":"dns","Port":53,"Protocol":"UDP"}]}"#
            )
        );
        // The host-network pod has no endpoint of its own.
        assert!(!out.contains_key("cilium/state/ip/v1/default/172.18.0.2"));
        // A non-global namespace exports no endpoints.
        let mut m2 = m.clone();
        m2.namespaces
            .get_mut("bar")
            .unwrap()
            .metadata
            .annotations
            .insert(GLOBAL_NAMESPACE_ANNOTATION.into(), "false".into());
        let out = Exporter::new(cfg()).export(&m2);
        assert!(ids(&out).is_empty() && !out.keys().any(|k| k.starts_with("cilium/state/ip/")));
    }

    #[test]
    fn identities_stay_stable_as_label_sets_come_and_go() {
        let mut ex = Exporter::new(cfg());
        let m = model(&format!(
            "{}---\n{}",
            pod("p1", "default", "web", "10.0.0.1"),
            pod("p2", "default", "web", "10.0.0.2")
        ));
        let first = ids(&ex.export(&m));
        assert_eq!(first.len(), 1, "two pods, one label set: {first:?}");
        let web_id = *first.keys().next().unwrap();
        // A label set that sorts before "web" does not take web's identity.
        let m = model(&format!(
            "{}---\n{}",
            pod("p1", "default", "web", "10.0.0.1"),
            pod("p3", "default", "api", "10.0.0.3")
        ));
        let second = ids(&ex.export(&m));
        assert_eq!(second.len(), 2);
        assert!(second[&web_id].contains("k8s:app=web;"), "{second:?}");
        // web goes away: its identity is released, api keeps its own.
        let m = model(&pod("p3", "default", "api", "10.0.0.3"));
        let third = ids(&ex.export(&m));
        assert_eq!(third.len(), 1);
        assert!(!third.contains_key(&web_id));
        // A restarted apiserver reading etcd back keeps the same numbers.
        let published = ex.export(&m);
        let mut again = Exporter::new(cfg());
        assert_eq!(again.seed(&published), 1);
        let m = model(&format!(
            "{}---\n{}",
            pod("p3", "default", "api", "10.0.0.3"),
            pod("p4", "default", "db", "10.0.0.4")
        ));
        let after = ids(&again.export(&m));
        let api_id = *third.keys().next().unwrap();
        assert!(after[&api_id].contains("k8s:app=api;"), "{after:?}");
        assert_eq!(after.len(), 2);
    }

    #[test]
    fn the_first_pod_keeps_a_duplicate_ip_until_it_goes() {
        let mut ex = Exporter::new(cfg());
        let key = "cilium/state/ip/v1/default/10.0.0.9";
        let owner = |out: &Exported| {
            let v: serde_json::Value = serde_json::from_slice(&out[key]).unwrap();
            v["K8sPodName"].as_str().unwrap().to_string()
        };
        let out = ex.export(&model(&pod("zeta", "default", "a", "10.0.0.9")));
        assert_eq!(owner(&out), "zeta");
        let both = model(&format!(
            "{}---\n{}",
            pod("zeta", "default", "a", "10.0.0.9"),
            pod("alpha", "default", "b", "10.0.0.9")
        ));
        assert_eq!(owner(&ex.export(&both)), "zeta", "the first claimer stays primary");
        let out = ex.export(&model(&pod("alpha", "default", "b", "10.0.0.9")));
        assert_eq!(owner(&out), "alpha");
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
