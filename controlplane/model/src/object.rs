//! The closed set of kinds Halyard reads, their API versions and scopes, and [`Object`].

use std::fmt;

use serde::{Serialize, Serializer};

use crate::kinds::cilium::*;
use crate::kinds::core::*;
use crate::kinds::metallb::*;
use crate::meta::ObjectMeta;
use crate::validate::Issues;

/// A kind Halyard understands. `Display` gives the Kubernetes kind name (`CiliumBGPPeerConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
    Namespace,
    Pod,
    Secret,
    CiliumLoadBalancerIPPool,
    CiliumL2AnnouncementPolicy,
    CiliumBgpClusterConfig,
    CiliumBgpPeerConfig,
    CiliumBgpAdvertisement,
    CiliumBgpNodeConfigOverride,
    CiliumBgpPeeringPolicy,
    IpAddressPool,
    L2Advertisement,
    BgpPeer,
    BgpAdvertisement,
    Community,
    BfdProfile,
}

/// API versions are listed newest first.
const CORE_V1: &[&str] = &["v1"];
const DISCOVERY_V1: &[&str] = &["discovery.k8s.io/v1"];
const CILIUM_V2_V2ALPHA1: &[&str] = &["cilium.io/v2", "cilium.io/v2alpha1"];
const CILIUM_V2ALPHA1: &[&str] = &["cilium.io/v2alpha1"];
const METALLB_V1BETA1: &[&str] = &["metallb.io/v1beta1"];
const METALLB_V1BETA2_V1BETA1: &[&str] = &["metallb.io/v1beta2", "metallb.io/v1beta1"];

impl Kind {
    pub const ALL: [Kind; 19] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Node,
        Kind::Namespace,
        Kind::Pod,
        Kind::Secret,
        Kind::CiliumLoadBalancerIPPool,
        Kind::CiliumL2AnnouncementPolicy,
        Kind::CiliumBgpClusterConfig,
        Kind::CiliumBgpPeerConfig,
        Kind::CiliumBgpAdvertisement,
        Kind::CiliumBgpNodeConfigOverride,
        Kind::CiliumBgpPeeringPolicy,
        Kind::IpAddressPool,
        Kind::L2Advertisement,
        Kind::BgpPeer,
        Kind::BgpAdvertisement,
        Kind::Community,
        Kind::BfdProfile,
    ];

    /// The Kubernetes `kind` string.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::CiliumLoadBalancerIPPool => "CiliumLoadBalancerIPPool",
            Kind::CiliumL2AnnouncementPolicy => "CiliumL2AnnouncementPolicy",
            Kind::CiliumBgpClusterConfig => "CiliumBGPClusterConfig",
            Kind::CiliumBgpPeerConfig => "CiliumBGPPeerConfig",
            Kind::CiliumBgpAdvertisement => "CiliumBGPAdvertisement",
            Kind::CiliumBgpNodeConfigOverride => "CiliumBGPNodeConfigOverride",
            Kind::CiliumBgpPeeringPolicy => "CiliumBGPPeeringPolicy",
            Kind::IpAddressPool => "IPAddressPool",
            Kind::L2Advertisement => "L2Advertisement",
            Kind::BgpPeer => "BGPPeer",
            Kind::BgpAdvertisement => "BGPAdvertisement",
            Kind::Community => "Community",
            Kind::BfdProfile => "BFDProfile",
        }
    }

    /// Supported `apiVersion`s, newest first.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::Service | Kind::Node | Kind::Namespace | Kind::Pod | Kind::Secret => CORE_V1,
            Kind::EndpointSlice => DISCOVERY_V1,
            Kind::CiliumLoadBalancerIPPool
            | Kind::CiliumBgpClusterConfig
            | Kind::CiliumBgpPeerConfig
            | Kind::CiliumBgpAdvertisement
            | Kind::CiliumBgpNodeConfigOverride => CILIUM_V2_V2ALPHA1,
            Kind::CiliumL2AnnouncementPolicy | Kind::CiliumBgpPeeringPolicy => CILIUM_V2ALPHA1,
            Kind::IpAddressPool
            | Kind::L2Advertisement
            | Kind::BgpAdvertisement
            | Kind::Community
            | Kind::BfdProfile => METALLB_V1BETA1,
            Kind::BgpPeer => METALLB_V1BETA2_V1BETA1,
        }
    }

    /// The API group (`""` for core).
    pub fn group(self) -> &'static str {
        group_of(self.api_versions()[0])
    }

    /// Namespaced kinds get namespace `default` when none is given; cluster-scoped kinds have none.
    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            Kind::Service
                | Kind::EndpointSlice
                | Kind::Pod
                | Kind::Secret
                | Kind::IpAddressPool
                | Kind::L2Advertisement
                | Kind::BgpPeer
                | Kind::BgpAdvertisement
                | Kind::Community
                | Kind::BfdProfile
        )
    }
}

/// `cilium.io/v2` → `cilium.io`; `v1` → `""`.
pub(crate) fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Result of looking up a document's `apiVersion` and `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Known(Kind),
    /// The group and kind are known, the version is not.
    UnsupportedVersion(Kind),
    Unknown,
}

pub(crate) fn lookup(api_version: &str, kind: &str) -> Lookup {
    let Some(k) = Kind::ALL.into_iter().find(|k| k.name() == kind && k.group() == group_of(api_version)) else {
        return Lookup::Unknown;
    };
    if k.api_versions().contains(&api_version) { Lookup::Known(k) } else { Lookup::UnsupportedVersion(k) }
}

/// Identity of an object: kind, namespace (namespaced kinds only) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    /// `Service default/web`, `CiliumLoadBalancerIPPool blue`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One object of any supported kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum Object {
    Service(Service),
    EndpointSlice(EndpointSlice),
    Node(Node),
    Namespace(Namespace),
    Pod(Pod),
    Secret(Secret),
    CiliumLoadBalancerIPPool(CiliumLoadBalancerIPPool),
    #[serde(rename = "IPAddressPool")]
    IpAddressPool(IpAddressPool),
    CiliumL2AnnouncementPolicy(CiliumL2AnnouncementPolicy),
    #[serde(rename = "CiliumBGPClusterConfig")]
    CiliumBgpClusterConfig(CiliumBgpClusterConfig),
    #[serde(rename = "CiliumBGPPeerConfig")]
    CiliumBgpPeerConfig(CiliumBgpPeerConfig),
    #[serde(rename = "CiliumBGPAdvertisement")]
    CiliumBgpAdvertisement(CiliumBgpAdvertisement),
    #[serde(rename = "CiliumBGPNodeConfigOverride")]
    CiliumBgpNodeConfigOverride(CiliumBgpNodeConfigOverride),
    #[serde(rename = "CiliumBGPPeeringPolicy")]
    CiliumBgpPeeringPolicy(CiliumBgpPeeringPolicy),
    L2Advertisement(L2Advertisement),
    #[serde(rename = "BGPPeer")]
    BgpPeer(BgpPeer),
    #[serde(rename = "BGPAdvertisement")]
    BgpAdvertisement(BgpAdvertisement),
    Community(Community),
    #[serde(rename = "BFDProfile")]
    BfdProfile(BfdProfile),
}

/// Applies `$body` to the inner value of every variant, bound as `$o`.
macro_rules! each {
    ($self:expr, $o:ident => $body:expr) => {
        match $self {
            Object::Service($o) => $body,
            Object::EndpointSlice($o) => $body,
            Object::Node($o) => $body,
            Object::Namespace($o) => $body,
            Object::Pod($o) => $body,
            Object::Secret($o) => $body,
            Object::CiliumLoadBalancerIPPool($o) => $body,
            Object::IpAddressPool($o) => $body,
            Object::CiliumL2AnnouncementPolicy($o) => $body,
            Object::CiliumBgpClusterConfig($o) => $body,
            Object::CiliumBgpPeerConfig($o) => $body,
            Object::CiliumBgpAdvertisement($o) => $body,
            Object::CiliumBgpNodeConfigOverride($o) => $body,
            Object::CiliumBgpPeeringPolicy($o) => $body,
            Object::L2Advertisement($o) => $body,
            Object::BgpPeer($o) => $body,
            Object::BgpAdvertisement($o) => $body,
            Object::Community($o) => $body,
            Object::BfdProfile($o) => $body,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Node(_) => Kind::Node,
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Secret(_) => Kind::Secret,
            Object::CiliumLoadBalancerIPPool(_) => Kind::CiliumLoadBalancerIPPool,
            Object::IpAddressPool(_) => Kind::IpAddressPool,
            Object::CiliumL2AnnouncementPolicy(_) => Kind::CiliumL2AnnouncementPolicy,
            Object::CiliumBgpClusterConfig(_) => Kind::CiliumBgpClusterConfig,
            Object::CiliumBgpPeerConfig(_) => Kind::CiliumBgpPeerConfig,
            Object::CiliumBgpAdvertisement(_) => Kind::CiliumBgpAdvertisement,
            Object::CiliumBgpNodeConfigOverride(_) => Kind::CiliumBgpNodeConfigOverride,
            Object::CiliumBgpPeeringPolicy(_) => Kind::CiliumBgpPeeringPolicy,
            Object::L2Advertisement(_) => Kind::L2Advertisement,
            Object::BgpPeer(_) => Kind::BgpPeer,
            Object::BgpAdvertisement(_) => Kind::BgpAdvertisement,
            Object::Community(_) => Kind::Community,
            Object::BfdProfile(_) => Kind::BfdProfile,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each!(self, o => &o.metadata)
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each!(self, o => &mut o.metadata)
    }

    /// The `apiVersion` the object was written with.
    pub fn api_version(&self) -> &str {
        each!(self, o => &o.api_version)
    }

    /// The object's identity. Namespaced kinds without a namespace are in `default`;
    /// cluster-scoped kinds never have one.
    pub fn key(&self) -> ObjectKey {
        let kind = self.kind();
        let m = self.metadata();
        let namespace = kind.is_namespaced().then(|| m.namespace.clone().unwrap_or_else(|| "default".to_string()));
        ObjectKey { kind, namespace, name: m.name.clone() }
    }

    /// Scope normalisation and the per-kind semantic checks (which may normalise values).
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        let kind = self.kind();
        let meta = self.metadata_mut();
        if kind.is_namespaced() {
            if meta.namespace.is_none() {
                meta.namespace = Some("default".to_string());
            }
        } else if let Some(ns) = meta.namespace.take() {
            issues.warn("metadata.namespace", format!("{kind} is cluster-scoped; namespace {ns:?} ignored"));
        }
        match self {
            Object::Service(o) => o.check(issues),
            Object::EndpointSlice(o) => o.check(issues),
            Object::Node(o) => o.check(issues),
            Object::Namespace(o) => o.check(issues),
            Object::Pod(o) => o.check(issues),
            Object::Secret(o) => o.check(issues),
            Object::CiliumLoadBalancerIPPool(o) => o.check(issues),
            Object::IpAddressPool(o) => o.check(issues),
            Object::CiliumL2AnnouncementPolicy(o) => o.check(issues),
            Object::CiliumBgpClusterConfig(o) => o.check(issues),
            Object::CiliumBgpPeerConfig(o) => o.check(issues),
            Object::CiliumBgpAdvertisement(o) => o.check(issues),
            Object::CiliumBgpNodeConfigOverride(o) => o.check(issues),
            Object::CiliumBgpPeeringPolicy(o) => o.check(issues),
            Object::L2Advertisement(o) => o.check(issues),
            Object::BgpPeer(o) => o.check(issues),
            Object::BgpAdvertisement(o) => o.check(issues),
            Object::Community(o) => o.check(issues),
            Object::BfdProfile(o) => o.check(issues),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_group_kind_and_version() {
        assert_eq!(lookup("v1", "Service"), Lookup::Known(Kind::Service));
        assert_eq!(lookup("cilium.io/v2", "CiliumLoadBalancerIPPool"), Lookup::Known(Kind::CiliumLoadBalancerIPPool));
        assert_eq!(
            lookup("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool"),
            Lookup::Known(Kind::CiliumLoadBalancerIPPool)
        );
        assert_eq!(
            lookup("cilium.io/v1", "CiliumLoadBalancerIPPool"),
            Lookup::UnsupportedVersion(Kind::CiliumLoadBalancerIPPool)
        );
        assert_eq!(lookup("metallb.io/v1beta2", "BGPPeer"), Lookup::Known(Kind::BgpPeer));
        assert_eq!(lookup("metallb.io/v1beta2", "IPAddressPool"), Lookup::UnsupportedVersion(Kind::IpAddressPool));
        assert_eq!(lookup("apps/v1", "Deployment"), Lookup::Unknown);
        // Same kind name in another group is another resource.
        assert_eq!(lookup("example.com/v1", "Service"), Lookup::Unknown);
        assert_eq!(lookup("v2", "Service"), Lookup::UnsupportedVersion(Kind::Service));
    }

    #[test]
    fn every_kind_has_a_consistent_group() {
        for k in Kind::ALL {
            for v in k.api_versions() {
                assert_eq!(group_of(v), k.group(), "{k}");
            }
        }
    }

    #[test]
    fn keys_display() {
        let k = ObjectKey { kind: Kind::Service, namespace: Some("default".into()), name: "web".into() };
        assert_eq!(k.to_string(), "Service default/web");
        let k = ObjectKey { kind: Kind::CiliumLoadBalancerIPPool, namespace: None, name: "blue".into() };
        assert_eq!(k.to_string(), "CiliumLoadBalancerIPPool blue");
    }
}
