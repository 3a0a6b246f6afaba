//! Core Kubernetes kinds: `v1 Service`, `discovery.k8s.io/v1 EndpointSlice`, `v1 Node`,
//! `v1 Namespace`, `v1 Pod`, `v1 Secret` (field names from k8s.io/api core/v1 and discovery/v1
//! types).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::meta::{NameRule, ObjectMeta, null_as_default};
use crate::net::{self, TargetPort};
use crate::validate::{Issues, idx, join, normalise_cidr};

// ---------------------------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
    #[serde(default, skip_serializing_if = "ServiceStatus::is_empty")]
    pub status: ServiceStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type", default)]
    pub type_: ServiceType,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(
        rename = "clusterIP",
        default,
        deserialize_with = "opt_cluster_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_ip: Option<ClusterIp>,
    #[serde(
        rename = "clusterIPs",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cluster_ips: Vec<ClusterIp>,
    #[serde(rename = "externalIPs", default, with = "net::vec_ip", skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// Deprecated in Kubernetes 1.24 but still honoured by Cilium LB-IPAM and MetalLB.
    #[serde(rename = "loadBalancerIP", default, with = "net::opt_ip", skip_serializing_if = "Option::is_none")]
    pub load_balancer_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    #[serde(default, with = "net::vec_cidr", skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<IpNet>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<IpFamily>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<IpFamilyPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<TrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_load_balancer_node_ports: Option<bool>,
    #[serde(default, with = "net::opt_port", skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_not_ready_addresses: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// `spec.clusterIP`: an address, or `None` for a headless Service. An empty string means
/// "allocate one" and deserializes as absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterIp {
    Headless,
    Addr(IpAddr),
}

impl ClusterIp {
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            ClusterIp::Headless => None,
            ClusterIp::Addr(a) => Some(*a),
        }
    }
}

impl Serialize for ClusterIp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ClusterIp::Headless => s.serialize_str("None"),
            ClusterIp::Addr(a) => s.collect_str(a),
        }
    }
}

/// `Some(ClusterIp)`, or `None` for the empty string ("allocate one").
struct ClusterIpElem(Option<ClusterIp>);

impl<'de> Deserialize<'de> for ClusterIpElem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ClusterIpElem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an IP address or \"None\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ClusterIpElem, E> {
                match s {
                    "" => Ok(ClusterIpElem(None)),
                    "None" => Ok(ClusterIpElem(Some(ClusterIp::Headless))),
                    _ => net::parse_ip(s).map(|a| ClusterIpElem(Some(ClusterIp::Addr(a)))).map_err(E::custom),
                }
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for ClusterIp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ClusterIpElem::deserialize(d)?.0.ok_or_else(|| serde::de::Error::custom("empty cluster IP"))
    }
}

fn opt_cluster_ip<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ClusterIp>, D::Error> {
    Ok(Option::<ClusterIpElem>::deserialize(d)?.and_then(|e| e.0))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpFamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionAffinity {
    None,
    ClientIP,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(with = "net::port")]
    pub port: u16,
    /// Defaults to `port` when absent (Kubernetes defaulting); see [`ServicePort::target_port`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    #[serde(default, with = "net::opt_port", skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl ServicePort {
    pub fn target_port(&self) -> TargetPort {
        self.target_port.clone().unwrap_or(TargetPort::Number(self.port))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default, skip_serializing_if = "LoadBalancerStatus::is_empty")]
    pub load_balancer: LoadBalancerStatus,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<serde_json::Value>,
}

impl ServiceStatus {
    pub fn is_empty(&self) -> bool {
        self.load_balancer.is_empty() && self.conditions.is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<LoadBalancerIngress>,
}

impl LoadBalancerStatus {
    pub fn is_empty(&self) -> bool {
        self.ingress.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerIngress {
    #[serde(default, with = "net::opt_ip", skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `VIP` or `Proxy` (Kubernetes 1.30+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_mode: Option<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<serde_json::Value>,
}

impl Service {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Rfc1035Label, issues);
        let spec = &mut self.spec;
        let mut seen = BTreeMap::new();
        for (i, p) in spec.ports.iter().enumerate() {
            let path = idx("spec.ports", i);
            if let Some(name) = &p.name {
                if !crate::validate::is_dns1123_label(name) {
                    issues.error(join(&path, "name"), format!("invalid port name {name:?}: must be a DNS-1123 label"));
                }
                if let Some(prev) = seen.insert(name.clone(), i) {
                    issues
                        .error(join(&path, "name"), format!("duplicate port name {name:?} (also spec.ports[{prev}])"));
                }
            } else if spec.ports.len() > 1 {
                // Kubernetes requires names once there is more than one port.
                issues.error(join(&path, "name"), "port name is required when a Service has more than one port");
            }
            if let Some(TargetPort::Name(n)) = &p.target_port
                && (n.is_empty()
                    || n.len() > 15
                    || !n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            {
                issues.error(join(&path, "targetPort"), format!("invalid target port name {n:?}"));
            }
        }
        // Same (port, protocol) twice is rejected by the API server.
        for (i, a) in spec.ports.iter().enumerate() {
            if let Some(j) = spec.ports[..i].iter().position(|b| b.port == a.port && b.protocol == a.protocol) {
                issues.error(
                    idx("spec.ports", i),
                    format!("duplicate port {}/{:?} (also spec.ports[{j}])", a.port, a.protocol),
                );
            }
        }
        if spec.ip_families.len() > 2 || (spec.ip_families.len() == 2 && spec.ip_families[0] == spec.ip_families[1]) {
            issues.error("spec.ipFamilies", "at most one entry per IP family (IPv4, IPv6) is allowed");
        }
        if spec.ip_families.len() == 2 && spec.ip_family_policy == Some(IpFamilyPolicy::SingleStack) {
            issues.error("spec.ipFamilies", "two IP families need ipFamilyPolicy PreferDualStack or RequireDualStack");
        }
        if let (Some(ClusterIp::Addr(first)), Some(ClusterIp::Addr(c0))) = (spec.cluster_ip, spec.cluster_ips.first())
            && first != *c0
        {
            issues.error("spec.clusterIPs", "clusterIPs[0] must equal clusterIP");
        }
        if spec.type_ == ServiceType::ExternalName && spec.external_name.as_deref().unwrap_or("").is_empty() {
            issues.error("spec.externalName", "required for type ExternalName");
        }
        if spec.type_ != ServiceType::LoadBalancer {
            if spec.load_balancer_ip.is_some() {
                issues.warn("spec.loadBalancerIP", "ignored: only used by Services of type LoadBalancer");
            }
            if spec.load_balancer_class.is_some() {
                issues.error("spec.loadBalancerClass", "may only be set on Services of type LoadBalancer");
            }
        }
        if spec.external_traffic_policy.is_some()
            && !matches!(spec.type_, ServiceType::LoadBalancer | ServiceType::NodePort)
            && spec.external_ips.is_empty()
        {
            issues.warn(
                "spec.externalTrafficPolicy",
                "ignored: only used by NodePort and LoadBalancer Services or with externalIPs",
            );
        }
        for (i, r) in spec.load_balancer_source_ranges.iter_mut().enumerate() {
            normalise_cidr(r, &idx("spec.loadBalancerSourceRanges", i), issues);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// EndpointSlice
// ---------------------------------------------------------------------------------------------

/// Label linking an EndpointSlice to its Service (discovery/v1 `LabelServiceName`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub address_type: AddressType,
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AddressType {
    IPv4,
    IPv6,
    #[serde(rename = "FQDN")]
    Fqdn,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Kept as strings because `addressType: FQDN` slices hold host names; see
    /// [`Endpoint::ip_addresses`]. IP addresses are checked against `addressType`.
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: EndpointConditions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hints: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_topology: Option<BTreeMap<String, String>>,
}

impl Endpoint {
    /// The addresses that parse as IPs (all of them for IPv4/IPv6 slices, which are validated).
    pub fn ip_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses.iter().filter_map(|a| a.parse().ok())
    }

    /// discovery/v1 semantics: a nil `ready` means ready.
    pub fn is_ready(&self) -> bool {
        self.conditions.ready.unwrap_or(true)
    }

    /// discovery/v1 semantics: a nil `serving` falls back to `ready`.
    pub fn is_serving(&self) -> bool {
        self.conditions.serving.unwrap_or_else(|| self.is_ready())
    }

    pub fn is_terminating(&self) -> bool {
        self.conditions.terminating.unwrap_or(false)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
    /// `nil` means "all ports" in discovery/v1.
    #[serde(default, with = "net::opt_port", skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl EndpointSlice {
    /// The Service this slice belongs to (`kubernetes.io/service-name` label).
    pub fn service_name(&self) -> Option<&str> {
        self.metadata.labels.get(SERVICE_NAME_LABEL).map(String::as_str)
    }

    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        if self.service_name().is_none() {
            issues.warn(
                "metadata.labels",
                format!("no {SERVICE_NAME_LABEL:?} label: this slice belongs to no Service and is not used"),
            );
        }
        if self.endpoints.len() > 1000 {
            issues.error("endpoints", "at most 1000 endpoints per slice");
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let p = join(&idx("endpoints", i), "addresses");
            if e.addresses.is_empty() || e.addresses.len() > 100 {
                issues.error(p.clone(), "an endpoint needs 1-100 addresses");
            }
            for (j, a) in e.addresses.iter().enumerate() {
                let ok = match self.address_type {
                    AddressType::IPv4 => a.parse::<std::net::Ipv4Addr>().is_ok(),
                    AddressType::IPv6 => a.parse::<std::net::Ipv6Addr>().is_ok(),
                    AddressType::Fqdn => crate::validate::is_dns1123_subdomain(a),
                };
                if !ok {
                    issues.error(idx(&p, j), format!("invalid {:?} address {a:?}", self.address_type));
                }
            }
        }
        if self.ports.len() > 100 {
            issues.error("ports", "at most 100 ports per slice");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Node and Namespace
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default)]
    pub status: NodeStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    #[serde(rename = "podCIDR", default, with = "net::opt_cidr", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<IpNet>,
    #[serde(rename = "podCIDRs", default, with = "net::vec_cidr", skip_serializing_if = "Vec::is_empty")]
    pub pod_cidrs: Vec<IpNet>,
    #[serde(rename = "providerID", default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<serde_json::Value>,
    #[serde(rename = "externalID", default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_source: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`, `InternalDNS`, `ExternalDNS`.
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

impl Node {
    /// All pod CIDRs: `spec.podCIDRs`, or `spec.podCIDR` when only that is set.
    pub fn pod_cidrs(&self) -> Vec<IpNet> {
        if self.spec.pod_cidrs.is_empty() {
            self.spec.pod_cidr.into_iter().collect()
        } else {
            self.spec.pod_cidrs.clone()
        }
    }

    /// The first address of the given type (`InternalIP`, …) that is an IP.
    pub fn address_of_type(&self, type_: &str) -> Option<IpAddr> {
        self.status.addresses.iter().filter(|a| a.type_ == type_).find_map(|a| a.address.parse().ok())
    }

    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        if let Some(c) = &mut self.spec.pod_cidr {
            normalise_cidr(c, "spec.podCIDR", issues);
        }
        for (i, c) in self.spec.pod_cidrs.iter_mut().enumerate() {
            normalise_cidr(c, &idx("spec.podCIDRs", i), issues);
        }
        if self.spec.pod_cidrs.len() > 2
            || (self.spec.pod_cidrs.len() == 2
                && self.spec.pod_cidrs[0].addr().is_ipv4() == self.spec.pod_cidrs[1].addr().is_ipv4())
        {
            issues.error("spec.podCIDRs", "at most one CIDR per IP family");
        }
        if let (Some(a), Some(b)) = (self.spec.pod_cidr, self.spec.pod_cidrs.first())
            && a != *b
        {
            issues.error("spec.podCIDRs", "podCIDRs[0] must equal podCIDR");
        }
        for (i, a) in self.status.addresses.iter().enumerate() {
            if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP") && a.address.parse::<IpAddr>().is_err() {
                issues
                    .error(join(&idx("status.addresses", i), "address"), format!("invalid IP address {:?}", a.address));
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
}

impl Namespace {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Label, issues);
    }
}

// ---------------------------------------------------------------------------------------------
// Pod (read for ClusterMesh: identities from its labels, endpoints from its IPs)
// ---------------------------------------------------------------------------------------------

/// A `v1 Pod`. Only what ClusterMesh needs is typed; the rest of the spec (containers, volumes,
/// …) is kept as-is without warnings, since real Pod manifests carry much more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
    /// `TCP` (default), `UDP`, `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    #[serde(rename = "podIP", default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<IpAddr>,
    #[serde(rename = "podIPs", default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIp {
    pub ip: IpAddr,
}

impl Pod {
    /// The pod's addresses (`podIPs`, else `podIP`), one per family.
    pub fn ips(&self) -> Vec<IpAddr> {
        if self.status.pod_ips.is_empty() {
            self.status.pod_ip.into_iter().collect()
        } else {
            self.status.pod_ips.iter().map(|p| p.ip).collect()
        }
    }

    /// Whether the pod has its own endpoint: not host-network, and not finished.
    pub fn is_endpoint(&self) -> bool {
        self.spec.host_network != Some(true)
            && !matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"))
            && !self.ips().is_empty()
    }

    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        if let (Some(a), Some(b)) = (self.status.pod_ip, self.status.pod_ips.first())
            && a != b.ip
        {
            issues.error("status.podIPs", "podIPs[0] must equal podIP");
        }
        let ips = self.ips();
        if ips.len() > 2 || (ips.len() == 2 && ips[0].is_ipv4() == ips[1].is_ipv4()) {
            issues.error("status.podIPs", "at most one IP per family");
        }
        for (i, c) in self.spec.containers.iter().enumerate() {
            for (j, p) in c.ports.iter().enumerate() {
                let path = idx(&join(&idx("spec.containers", i), "ports"), j);
                if p.container_port == 0 {
                    issues.error(join(&path, "containerPort"), "must be 1-65535");
                }
                if let Some(proto) = &p.protocol
                    && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
                {
                    issues.error(join(&path, "protocol"), format!("unsupported protocol {proto:?} (TCP, UDP or SCTP)"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Secret (read for BGP TCP-MD5 passwords: Cilium `authSecretRef`, MetalLB `passwordSecret`)
// ---------------------------------------------------------------------------------------------

/// Secret type of MetalLB's `passwordSecret` (core/v1 `SecretTypeBasicAuth`).
pub const SECRET_TYPE_BASIC_AUTH: &str = "kubernetes.io/basic-auth";

/// Annotation `kubectl apply` writes; on a Secret it holds the whole object, values included,
/// so it is dropped when the Secret is read.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A `v1 Secret`. `data` is base64 (decoded when read), `stringData` plain text; a key in both
/// takes its `stringData` value, as the API server does. Values never appear in diagnostics,
/// in `Debug` output or when the model is serialized (the API, `halyard`): they show as
/// `<redacted>`. Only the keys are visible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `Opaque` when absent.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, deserialize_with = "secret_base64_map", skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, SecretValue>,
    #[serde(default, deserialize_with = "secret_string_map", skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, SecretValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// The bytes of one Secret value. `Debug` and `Serialize` never show them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: impl Into<Vec<u8>>) -> SecretValue {
        SecretValue(bytes.into())
    }

    /// The secret bytes. Do not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for SecretValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Reads a map of strings without ever putting a value into an error message (serde's own
/// "invalid type: integer `1234`" would).
fn secret_map<'de, D: serde::Deserializer<'de>>(
    d: D,
    field: &'static str,
    decode: fn(&str) -> Result<Vec<u8>, String>,
) -> Result<BTreeMap<String, SecretValue>, D::Error> {
    use serde::de::Error;
    let Some(raw) = Option::<BTreeMap<String, serde_yaml::Value>>::deserialize(d)? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let bytes = match v {
            serde_yaml::Value::String(s) => {
                decode(&s).map_err(|e| D::Error::custom(format!("{field}: key {k:?} {e}")))?
            }
            // Kubernetes JSON turns a null value into empty bytes.
            serde_yaml::Value::Null => Vec::new(),
            _ => return Err(D::Error::custom(format!("{field}: key {k:?} must be a string (value not shown)"))),
        };
        out.insert(k, SecretValue(bytes));
    }
    Ok(out)
}

fn secret_base64_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, SecretValue>, D::Error> {
    secret_map(d, "data", decode_base64)
}

fn secret_string_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, SecretValue>, D::Error> {
    secret_map(d, "stringData", |s| Ok(s.as_bytes().to_vec()))
}

/// Standard base64 with padding (RFC 4648 §4), as Go's `base64.StdEncoding` that decodes a
/// Secret's `data`: line breaks are skipped, anything else outside the alphabet is an error.
/// Errors describe the position, never the text.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let chars: Vec<(usize, u8)> = text.bytes().enumerate().filter(|(_, c)| !matches!(c, b'\r' | b'\n')).collect();
    if !chars.len().is_multiple_of(4) {
        return Err(format!(
            "is not valid base64: {} characters is not a multiple of 4 (is the padding missing, or is this \
             plain text that belongs in stringData?)",
            chars.len()
        ));
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let quads = chars.len() / 4;
    for (q, quad) in chars.chunks(4).enumerate() {
        let last = q + 1 == quads;
        let pad = quad.iter().rev().take_while(|(_, c)| *c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            let (at, _) = quad.iter().find(|(_, c)| *c == b'=').copied().unwrap_or(quad[0]);
            return Err(format!("is not valid base64: misplaced padding '=' at offset {at}"));
        }
        let mut v = 0u32;
        for &(at, c) in &quad[..4 - pad] {
            let Some(s) = sextet(c) else {
                return Err(format!("is not valid base64: invalid character at offset {at}"));
            };
            v = v << 6 | u32::from(s);
        }
        v <<= 6 * pad as u32;
        let bytes = v.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Ok(out)
}

impl Secret {
    /// The value of `key` (`stringData` over `data`).
    pub fn get(&self, key: &str) -> Option<&SecretValue> {
        self.string_data.get(key).or_else(|| self.data.get(key))
    }

    /// The keys present in `data` or `stringData`.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let mut keys: Vec<&str> = self.data.keys().chain(self.string_data.keys()).map(String::as_str).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
    }

    /// `type`, `Opaque` when absent.
    pub fn secret_type(&self) -> &str {
        self.type_.as_deref().filter(|t| !t.is_empty()).unwrap_or("Opaque")
    }

    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.annotations.remove(LAST_APPLIED);
        self.metadata.check(NameRule::Subdomain, issues);
        for (field, map) in [("data", &self.data), ("stringData", &self.string_data)] {
            for k in map.keys() {
                let ok = !k.is_empty()
                    && k.len() <= 253
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !ok {
                    issues.error(
                        join(field, k),
                        format!("invalid key {k:?}: must consist of alphanumerics, '-', '_' or '.'"),
                    );
                }
            }
        }
        let total: usize = self.keys().filter_map(|k| self.get(k)).map(SecretValue::len).sum();
        if total > 1024 * 1024 {
            issues.error("data", "a Secret holds at most 1 MiB of data");
        }
        // The API server's rules for the types Halyard reads (core/v1 validation).
        if self.secret_type() == SECRET_TYPE_BASIC_AUTH
            && self.get("username").is_none()
            && self.get("password").is_none()
        {
            issues.error("data", "a kubernetes.io/basic-auth Secret needs a username or password key");
        }
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;
    use crate::{Diagnostic, Model, Object, parse_manifest};

    fn parse(yaml: &str) -> Result<Vec<Object>, Vec<Diagnostic>> {
        parse_manifest(std::path::Path::new("s.yaml"), yaml).map(|p| p.objects).map_err(|e| e.diagnostics)
    }

    fn secret(yaml: &str) -> Secret {
        match parse(yaml).expect("parses").remove(0) {
            Object::Secret(s) => s,
            o => panic!("{o:?}"),
        }
    }

    fn all_text(diags: &[Diagnostic]) -> String {
        diags.iter().map(|d| format!("{d}\n{d:?}\n")).collect()
    }

    #[test]
    fn base64_matches_go_std_encoding() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("czNjcmV0\nLXB3").unwrap(), b"s3cret-pw", "line breaks are skipped");
        assert_eq!(decode_base64("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        assert!(decode_base64("Zm9").unwrap_err().contains("multiple of 4"));
        assert!(decode_base64("Zm9v!A==").unwrap_err().contains("invalid character at offset 4"));
        assert!(decode_base64("Zg==Zg==").unwrap_err().contains("misplaced padding"));
        assert!(decode_base64("Z===").unwrap_err().contains("misplaced padding"));
        assert!(decode_base64("Zm9v YmFy").is_err(), "spaces are not base64");
    }

    const SECRET: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: bgp-auth-secret
  namespace: kube-system
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"data":{"password":"c2VjcmV0LXB3"}}'
type: Opaque
data:
  password: c2VjcmV0LXB3
stringData:
  other: plain-text-value
"#;

    #[test]
    fn secret_parses_and_decodes() {
        let s = secret(SECRET);
        assert_eq!(s.get("password").unwrap().expose(), b"secret-pw");
        assert_eq!(s.get("other").unwrap().expose(), b"plain-text-value");
        assert_eq!(s.keys().collect::<Vec<_>>(), ["other", "password"]);
        assert_eq!(s.secret_type(), "Opaque");
        assert!(s.metadata.annotations.is_empty(), "kubectl's copy of the object (with the values) is dropped");
        // stringData wins over data for the same key.
        let both = secret(&SECRET.replace("other: plain-text-value", "password: from-string-data"));
        assert_eq!(both.get("password").unwrap().expose(), b"from-string-data");
        // Namespaced; default namespace when none is given.
        let m = Model::from_objects([Object::Secret(secret(&SECRET.replace("  namespace: kube-system\n", "")))]);
        assert!(m.secrets.contains_key(&crate::NamespacedName::new("default", "bgp-auth-secret")));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn secret_values_are_redacted_in_debug_and_json() {
        let s = secret(SECRET);
        let m = Model::from_objects([Object::Secret(s.clone())]);
        let json = serde_json::to_string(&m).unwrap();
        let debug = format!("{m:?} {s:?} {:?}", m.objects());
        for text in [&json, &debug] {
            assert!(!text.contains("secret-pw") && !text.contains("c2VjcmV0LXB3"), "{text}");
            assert!(!text.contains("plain-text-value"), "{text}");
            assert!(text.contains("<redacted>") && text.contains("password"), "keys stay visible: {text}");
        }
    }

    #[test]
    fn bad_base64_names_the_key_not_the_value() {
        let diags = parse(&SECRET.replace("password: c2VjcmV0LXB3", "password: not*base64")).unwrap_err();
        let text = all_text(&diags);
        assert_eq!(diags.len(), 1, "{text}");
        assert!(text.contains("key \"password\" is not valid base64"), "{text}");
        assert!(!text.contains("not*base64"), "the value leaked: {text}");
        // Plain text in data is the common mistake.
        let diags = parse(&SECRET.replace("password: c2VjcmV0LXB3", "password: hunter2")).unwrap_err();
        let text = all_text(&diags);
        assert!(text.contains("stringData") && !text.contains("hunter2"), "{text}");
        // A non-string value: serde would print it; we do not.
        let diags = parse(&SECRET.replace("other: plain-text-value", "other: 987654321")).unwrap_err();
        let text = all_text(&diags);
        assert!(text.contains("key \"other\" must be a string") && !text.contains("987654321"), "{text}");
    }

    #[test]
    fn secret_checks() {
        let diags = parse(&SECRET.replace("other: plain", "\"bad key\": plain")).unwrap_err();
        assert!(all_text(&diags).contains("invalid key \"bad key\""), "{}", all_text(&diags));
        let basic = SECRET.replace("type: Opaque", "type: kubernetes.io/basic-auth");
        assert_eq!(secret(&basic).secret_type(), SECRET_TYPE_BASIC_AUTH);
        let diags =
            parse(&basic.replace("password: c2Vj", "pw: c2Vj").replace("  other: plain-text-value\n", "")).unwrap_err();
        assert!(all_text(&diags).contains("needs a username or password key"), "{}", all_text(&diags));
    }
}
