//! Round trip of every golden value (tests/fixtures, copied from Cilium's clustermesh-apiserver
//! txtar tests): parse, serialize again, compare bytes — both the indented form the fixtures are
//! written in and the compact form Go's `json.Marshal` stores in etcd.

use halyard_clustermesh::keys::{Key, Resource};
use halyard_clustermesh::types::{
    CiliumClusterConfig, ClusterService, IpIdentityPair, LabelSet, Node, from_json, to_go_json,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim_end().to_string()
}

/// Removes the whitespace outside JSON strings: the compact form Go writes.
fn compact(pretty: &str) -> String {
    let mut out = String::new();
    let (mut in_str, mut escaped) = (false, false);
    for c in pretty.chars() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let pretty = fixture(name);
    let value: T = from_json(name, pretty.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serde_json::to_string_pretty(&value).unwrap(), pretty, "{name}: indented form");
    let stored = compact(&pretty);
    let parsed_compact: T = from_json(name, stored.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(to_go_json(&parsed_compact)).unwrap(), stored, "{name}: compact form");
    value
}

#[test]
fn cluster_configs() {
    let c: CiliumClusterConfig = round_trip("cluster-config-cluster3.json");
    assert_eq!(c.id, 3);
    assert!(c.capabilities.synced_canaries);
    assert_eq!(c.capabilities.service_exports_enabled, Some(false));
    let c: CiliumClusterConfig = round_trip("cluster-config-serviceexport.json");
    assert_eq!(c.capabilities.service_exports_enabled, Some(true));
    let c: CiliumClusterConfig = round_trip("cluster-config-endpointslices-only.json");
    assert_eq!(c.capabilities.endpoint_slices_export_mode, "endpointslices-only");
}

#[test]
fn services() {
    for (file, ns) in
        [("service-ns-alpha-echo-service.json", "ns-alpha"), ("service-ns-beta-echo-service.json", "ns-beta")]
    {
        let s: ClusterService = round_trip(file);
        let key = format!("cilium/state/services/v1/cluster3/{ns}/echo-service");
        let Key::Service { cluster, namespace, name } = Key::parse(&key).unwrap() else { panic!() };
        s.validate(&key, &cluster, &namespace, &name, Some(3)).unwrap();
        assert!(s.shared && s.include_external);
    }
}

#[test]
fn nodes() {
    let n: Node = round_trip("node-test-node-1.json");
    assert_eq!(n.ipv4_alloc_cidr.unwrap().to_net(), Some("10.244.0.0/24".parse().unwrap()));
    assert_eq!(n.ipv6_alloc_cidr.unwrap().to_net(), Some("fd00:10:244::/64".parse().unwrap()));
    assert_eq!(n.ipv4_ingress_ip, None);
    let n: Node = round_trip("node-test-node-2.json");
    assert_eq!(n.annotations, None);
    assert_eq!(n.encryption_key, 7);
}

#[test]
fn ipcache_entries() {
    for f in
        ["ip-10.244.1.79.json", "ip-10.244.2.74.json", "ip-fd00-10-244-1--d643.json", "ip-fd00-10-244-2--e024.json"]
    {
        let e: IpIdentityPair = round_trip(f);
        assert!(e.ip.is_some() && e.mask.is_none());
    }
    let e: IpIdentityPair = round_trip("ip-10.244.2.74.json");
    assert_eq!(e.named_ports.len(), 2);
    assert_eq!(e.key, 5);
}

#[test]
fn identities() {
    let text = fixture("identities.txt");
    let mut lines = text.lines();
    let mut n = 0;
    while let (Some(k), Some(v)) = (lines.next(), lines.next()) {
        let key = k.strip_prefix("# ").unwrap();
        let Key::Identity { id } = Key::parse(key).unwrap() else { panic!("{key}") };
        assert!((196608..=262143).contains(&id), "cluster 3's range");
        let set = LabelSet::parse(v).unwrap();
        assert_eq!(set.to_string(), v);
        assert_eq!(set.get("io.cilium.k8s.policy.cluster"), Some("cluster3"));
        n += 1;
    }
    assert_eq!(n, 2);
    let _ = Resource::ALL;
}
