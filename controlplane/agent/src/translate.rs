//! From the model to LB-IPAM's inputs: pools from `CiliumLoadBalancerIPPool` and MetalLB
//! `IPAddressPool`, and LoadBalancer services with their annotations.
//!
//! Annotations understood (sources: Cilium `Documentation/network/lb-ipam.rst`, MetalLB
//! `website/content/usage/_index.md`):
//! * requested IPs: `lbipam.cilium.io/ips` (alias `io.cilium/lb-ipam-ips`),
//!   `metallb.io/loadBalancerIPs` (alias `metallb.universe.tf/loadBalancerIPs`), and the
//!   deprecated `spec.loadBalancerIP`;
//! * sharing: `lbipam.cilium.io/sharing-key` (alias `io.cilium/lb-ipam-sharing-key`) with
//!   `lbipam.cilium.io/sharing-cross-namespace`, and `metallb.io/allow-shared-ip`
//!   (alias `metallb.universe.tf/allow-shared-ip`);
//! * pool pinning: `metallb.io/address-pool` (alias `metallb.universe.tf/address-pool`).

use std::net::IpAddr;

use halyard_ipam::lbipam::{Block, FamilyPolicy, PoolSpec, Protocol, ServiceSpec, Sharing, SharingScheme};
use halyard_ipam::{Family, LabelSelector};
use halyard_model::{IpBlock, Model, Service, ServiceType, TrafficPolicy};

pub const REQUESTED_IPS: [&str; 4] = [
    "lbipam.cilium.io/ips",
    "io.cilium/lb-ipam-ips",
    "metallb.io/loadBalancerIPs",
    "metallb.universe.tf/loadBalancerIPs",
];
pub const CILIUM_SHARING_KEY: [&str; 2] = ["lbipam.cilium.io/sharing-key", "io.cilium/lb-ipam-sharing-key"];
pub const CILIUM_CROSS_NAMESPACE: [&str; 2] =
    ["lbipam.cilium.io/sharing-cross-namespace", "io.cilium/lb-ipam-sharing-cross-namespace"];
pub const METALLB_SHARING_KEY: [&str; 2] = ["metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip"];
pub const METALLB_POOL: [&str; 2] = ["metallb.io/address-pool", "metallb.universe.tf/address-pool"];

fn block(b: &IpBlock) -> Block {
    match b {
        IpBlock::Cidr(n) => Block::Cidr(*n),
        IpBlock::Range { start, stop } => Block::Range { start: *start, stop: *stop },
    }
}

/// Every pool in the model, whichever CRD it came from.
pub fn pools(model: &Model) -> Vec<PoolSpec> {
    let mut out = Vec::new();
    for (name, p) in &model.cilium_pools {
        let mut spec = PoolSpec::new(name.clone(), p.spec.blocks.iter().map(block).collect());
        spec.created = p.metadata.creation_timestamp.clone();
        spec.service_selectors = p.spec.service_selector.clone().map(|s| vec![s]);
        spec.allow_first_last = p.allow_first_last_ips();
        spec.disabled = p.spec.disabled;
        out.push(spec);
    }
    for (key, p) in &model.metallb_pools {
        // MetalLB pools live in one namespace (metallb-system); services name them by name alone.
        let mut spec = PoolSpec::new(key.name.clone(), p.spec.addresses.iter().map(block).collect());
        spec.created = p.metadata.creation_timestamp.clone();
        spec.auto_assign = p.auto_assign();
        spec.avoid_buggy_ips = p.spec.avoid_buggy_ips;
        if let Some(a) = &p.spec.service_allocation {
            spec.priority = a.priority.and_then(|x| u32::try_from(x).ok());
            spec.namespaces = a.namespaces.clone();
            spec.namespace_selectors = a.namespace_selectors.clone();
            if !a.service_selectors.is_empty() {
                spec.service_selectors = Some(a.service_selectors.clone());
            }
        }
        out.push(spec);
    }
    out
}

/// The first annotation of `keys` that is set, with the key it was found under.
fn annotation<'a>(svc: &'a Service, keys: &[&'static str]) -> Option<(&'static str, &'a str)> {
    keys.iter().find_map(|k| svc.metadata.annotations.get(*k).map(|v| (*k, v.trim())))
}

fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// LB-IPAM's view of one LoadBalancer service. Unreadable annotations make the spec `invalid`
/// (with a message naming the annotation) rather than being skipped.
pub fn service(model: &Model, svc: &Service) -> ServiceSpec {
    let ns = svc.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let mut spec = ServiceSpec::new(ns.clone(), svc.metadata.name.clone());
    spec.created = svc.metadata.creation_timestamp.clone();
    spec.labels = svc.metadata.labels.clone();
    if let Some(n) = model.namespaces.get(&ns) {
        spec.namespace_labels = n.metadata.labels.clone();
    }
    spec.load_balancer_class = svc.spec.load_balancer_class.clone();
    spec.ports = svc
        .spec
        .ports
        .iter()
        .map(|p| {
            let proto = match p.protocol {
                halyard_model::Protocol::Tcp => Protocol::Tcp,
                halyard_model::Protocol::Udp => Protocol::Udp,
                halyard_model::Protocol::Sctp => Protocol::Sctp,
            };
            (proto, p.port)
        })
        .collect();
    spec.family_policy = match svc.spec.ip_family_policy {
        Some(halyard_model::IpFamilyPolicy::PreferDualStack) => FamilyPolicy::PreferDualStack,
        Some(halyard_model::IpFamilyPolicy::RequireDualStack) => FamilyPolicy::RequireDualStack,
        _ => FamilyPolicy::SingleStack,
    };
    spec.ip_families = svc
        .spec
        .ip_families
        .iter()
        .map(|f| match f {
            halyard_model::IpFamily::IPv4 => Family::V4,
            halyard_model::IpFamily::IPv6 => Family::V6,
        })
        .collect();
    spec.traffic_local = svc.spec.external_traffic_policy == Some(TrafficPolicy::Local);
    spec.pod_selector = svc.spec.selector.clone();
    let mut problems = Vec::new();

    // Requested IPs: every source that is set must agree.
    let mut requested: Vec<(String, Vec<IpAddr>)> = Vec::new();
    for keys in [&REQUESTED_IPS[..2], &REQUESTED_IPS[2..]] {
        if let Some((key, value)) = annotation(svc, keys) {
            let mut ips = Vec::new();
            for item in split_list(value) {
                match item.parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => problems.push(format!("annotation {key}: {item:?} is not an IP address")),
                }
            }
            requested.push((format!("annotation {key}"), ips));
        }
    }
    if let Some(ip) = svc.spec.load_balancer_ip {
        requested.push(("spec.loadBalancerIP".to_string(), vec![ip]));
    }
    if let Some(((first_src, first), rest)) = requested.split_first() {
        let norm = |v: &Vec<IpAddr>| {
            let mut v = v.clone();
            v.sort();
            v.dedup();
            v
        };
        for (src, ips) in rest {
            if norm(ips) != norm(first) {
                problems.push(format!("{first_src} and {src} request different IPs"));
            }
        }
        spec.requested = norm(first);
    }

    // Sharing keys: Cilium's and MetalLB's are separate key spaces; setting both is ambiguous.
    let cilium = annotation(svc, &CILIUM_SHARING_KEY);
    let metallb = annotation(svc, &METALLB_SHARING_KEY);
    match (cilium, metallb) {
        (Some((k1, _)), Some((k2, _))) => problems.push(format!("annotations {k1} and {k2} are both set: use one")),
        (Some((key, v)), None) | (None, Some((key, v))) if v.is_empty() => {
            problems.push(format!("annotation {key} is empty"));
        }
        (Some((_, v)), None) => {
            let cross = annotation(svc, &CILIUM_CROSS_NAMESPACE)
                .map(|(_, c)| split_list(c).map(String::from).collect())
                .unwrap_or_default();
            spec.sharing = Some(Sharing { scheme: SharingScheme::Cilium, key: v.to_string(), cross_namespace: cross });
        }
        (None, Some((_, v))) => {
            spec.sharing =
                Some(Sharing { scheme: SharingScheme::MetalLb, key: v.to_string(), cross_namespace: vec![] });
        }
        (None, None) => {}
    }
    spec.pool_pin = annotation(svc, &METALLB_POOL).map(|(_, v)| v.to_string());
    if !problems.is_empty() {
        spec.invalid = Some(problems.join("; "));
    }
    spec
}

/// Every LoadBalancer service, as LB-IPAM inputs.
pub fn services(model: &Model) -> Vec<ServiceSpec> {
    model.services.values().filter(|s| s.spec.type_ == ServiceType::LoadBalancer).map(|s| service(model, s)).collect()
}

/// A service's labels plus Cilium's namespace/name pseudo-labels, for service selectors.
/// The first IPv4 InternalIP of Node `node` in the model (BGP router ID, DSR source address).
pub fn node_internal_ipv4(model: &Model, node: &str) -> Option<std::net::Ipv4Addr> {
    model.nodes.get(node).and_then(|n| {
        n.status.addresses.iter().filter(|a| a.type_ == "InternalIP").find_map(|a| a.address.parse().ok())
    })
}

pub fn node_internal_ipv6(model: &Model, node: &str) -> Option<std::net::Ipv6Addr> {
    model.nodes.get(node).and_then(|n| {
        n.status.addresses.iter().filter(|a| a.type_ == "InternalIP").find_map(|a| a.address.parse().ok())
    })
}

/// The Service's cluster IPs (`spec.clusterIPs`, else `spec.clusterIP`), none when headless.
pub fn cluster_ips(svc: &Service) -> Vec<std::net::IpAddr> {
    let from_list: Vec<_> = svc.spec.cluster_ips.iter().filter_map(|c| c.addr()).collect();
    if !from_list.is_empty() {
        return from_list;
    }
    svc.spec.cluster_ip.as_ref().and_then(|c| c.addr()).into_iter().collect()
}

/// Whether `node` has a ready endpoint of `svc` (by the EndpointSlices' `nodeName`).
pub fn has_local_endpoint(model: &Model, svc: &Service, node: &str) -> bool {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let key = halyard_ipam::ServiceKey::new(ns, svc.metadata.name.clone());
    model.endpoint_slices_for(&key).any(|slice| {
        slice.endpoints.iter().any(|ep| ep.conditions.ready != Some(false) && ep.node_name.as_deref() == Some(node))
    })
}

/// Whether `node` may attract traffic for `svc`'s addresses (announce them over BGP or ARP):
/// always for the `Cluster` policies; for `externalTrafficPolicy: Local` (LoadBalancer and
/// external IPs) or `internalTrafficPolicy: Local` (`cluster_ip`), only with a ready endpoint
/// on the node, since the traffic must stay on the node it reaches (Cilium and MetalLB do the
/// same).
pub fn may_advertise(model: &Model, svc: &Service, node: &str, cluster_ip: bool) -> bool {
    let policy = if cluster_ip { svc.spec.internal_traffic_policy } else { svc.spec.external_traffic_policy };
    policy != Some(TrafficPolicy::Local) || has_local_endpoint(model, svc, node)
}

pub fn selector_labels(svc: &Service) -> std::collections::BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone();
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    labels.insert(halyard_ipam::lbipam::LABEL_SERVICE_NAMESPACE.into(), ns.to_string());
    labels.insert(halyard_ipam::lbipam::LABEL_SERVICE_NAME.into(), svc.metadata.name.clone());
    labels
}

/// MetalLB's list-of-selectors rule (`nodeSelectors`, `serviceSelectors`): an empty list
/// matches everything, otherwise any selector may match.
pub fn any_selector(selectors: &[LabelSelector], labels: &std::collections::BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

/// MetalLB's `ipAddressPools` / `ipAddressPoolSelectors` (on L2Advertisement and
/// BGPAdvertisement): the named or selected pools, or every pool when both are empty.
pub fn metallb_pools<'a>(
    model: &'a Model,
    names: &[String],
    selectors: &[LabelSelector],
) -> std::collections::BTreeSet<&'a str> {
    model
        .metallb_pools
        .iter()
        .filter(|(key, p)| {
            (names.is_empty() && selectors.is_empty())
                || names.contains(&key.name)
                || selectors.iter().any(|s| s.matches(&p.metadata.labels))
        })
        .map(|(key, _)| key.name.as_str())
        .collect()
}

/// A selector rendered for people: `color=blue,tier in (web,api)`.
pub fn render_selector(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in &s.match_expressions {
        use halyard_ipam::SelectorOperator::*;
        parts.push(match e.operator {
            In => format!("{} in ({})", e.key, e.values.join(",")),
            NotIn => format!("{} notin ({})", e.key, e.values.join(",")),
            Exists => e.key.clone(),
            DoesNotExist => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(yaml: &str) -> Model {
        let parsed = halyard_model::parse_manifest(std::path::Path::new("t.yaml"), yaml).expect("parses");
        Model::from_objects(parsed.objects)
    }

    #[test]
    fn annotations_become_requests_and_sharing() {
        let m = model(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: dns
  namespace: infra
  annotations:
    lbipam.cilium.io/ips: "10.0.0.5, 10.0.0.6"
    lbipam.cilium.io/sharing-key: dns
    lbipam.cilium.io/sharing-cross-namespace: "*"
spec:
  type: LoadBalancer
  ports: [{port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata:
  name: bad
  annotations:
    metallb.io/loadBalancerIPs: "10.0.0.300"
    metallb.io/allow-shared-ip: k
spec:
  type: LoadBalancer
  loadBalancerIP: 10.0.0.9
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: internal}
spec:
  ports: [{port: 80}]
"#,
        );
        let specs = services(&m);
        assert_eq!(specs.len(), 2, "ClusterIP services are not LB-IPAM's business");
        let dns = specs.iter().find(|s| s.key.name == "dns").unwrap();
        assert_eq!(dns.requested, vec!["10.0.0.5".parse::<IpAddr>().unwrap(), "10.0.0.6".parse().unwrap()]);
        assert_eq!(dns.sharing.as_ref().unwrap().cross_namespace, vec!["*"]);
        assert_eq!(dns.ports, vec![(Protocol::Udp, 53)]);
        let bad = specs.iter().find(|s| s.key.name == "bad").unwrap();
        let why = bad.invalid.as_deref().unwrap();
        assert!(why.contains("metallb.io/loadBalancerIPs") && why.contains("10.0.0.300"), "{why}");
        assert!(why.contains("spec.loadBalancerIP"), "{why}");
        assert_eq!(bad.sharing.as_ref().unwrap().scheme, SharingScheme::MetalLb);
    }
}
