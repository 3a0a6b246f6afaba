//! [`Model`]: the whole desired state, one map per kind.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::kinds::cilium::*;
use crate::kinds::core::*;
use crate::kinds::metallb::*;
use crate::meta::NamespacedName;
use crate::object::{Kind, Object, ObjectKey};

/// The desired state every Halyard component reads. Cluster-scoped kinds are keyed by name,
/// namespaced kinds by [`NamespacedName`] (namespace `default` when none was given).
/// Inserting an object whose key exists replaces it (last one wins); the manifest directory
/// guarantees keys are unique before building a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Model {
    pub services: BTreeMap<NamespacedName, Service>,
    pub endpoint_slices: BTreeMap<NamespacedName, EndpointSlice>,
    pub nodes: BTreeMap<String, Node>,
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<NamespacedName, Pod>,
    /// Values are redacted when the model is serialized or debug-printed.
    pub secrets: BTreeMap<NamespacedName, Secret>,
    pub cilium_pools: BTreeMap<String, CiliumLoadBalancerIPPool>,
    pub metallb_pools: BTreeMap<NamespacedName, IpAddressPool>,
    pub l2_policies: BTreeMap<String, CiliumL2AnnouncementPolicy>,
    pub bgp_cluster_configs: BTreeMap<String, CiliumBgpClusterConfig>,
    pub bgp_peer_configs: BTreeMap<String, CiliumBgpPeerConfig>,
    pub bgp_advertisements: BTreeMap<String, CiliumBgpAdvertisement>,
    pub bgp_node_config_overrides: BTreeMap<String, CiliumBgpNodeConfigOverride>,
    pub bgp_peering_policies: BTreeMap<String, CiliumBgpPeeringPolicy>,
    pub l2_advertisements: BTreeMap<NamespacedName, L2Advertisement>,
    pub metallb_bgp_peers: BTreeMap<NamespacedName, BgpPeer>,
    pub metallb_bgp_advertisements: BTreeMap<NamespacedName, BgpAdvertisement>,
    pub metallb_communities: BTreeMap<NamespacedName, Community>,
    pub metallb_bfd_profiles: BTreeMap<NamespacedName, BfdProfile>,
}

fn nn(key: &ObjectKey) -> NamespacedName {
    NamespacedName::new(key.namespace.clone().unwrap_or_else(|| "default".to_string()), key.name.clone())
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Model {
        let mut m = Model::default();
        for o in objects {
            m.insert(o);
        }
        m
    }

    /// Inserts (or replaces) an object; returns the key it is stored under.
    pub fn insert(&mut self, object: Object) -> ObjectKey {
        let key = object.key();
        let name = key.name.clone();
        match object {
            Object::Service(o) => {
                self.services.insert(nn(&key), o);
            }
            Object::EndpointSlice(o) => {
                self.endpoint_slices.insert(nn(&key), o);
            }
            Object::Node(o) => {
                self.nodes.insert(name, o);
            }
            Object::Namespace(o) => {
                self.namespaces.insert(name, o);
            }
            Object::Pod(o) => {
                self.pods.insert(nn(&key), o);
            }
            Object::Secret(o) => {
                self.secrets.insert(nn(&key), o);
            }
            Object::CiliumLoadBalancerIPPool(o) => {
                self.cilium_pools.insert(name, o);
            }
            Object::IpAddressPool(o) => {
                self.metallb_pools.insert(nn(&key), o);
            }
            Object::CiliumL2AnnouncementPolicy(o) => {
                self.l2_policies.insert(name, o);
            }
            Object::CiliumBgpClusterConfig(o) => {
                self.bgp_cluster_configs.insert(name, o);
            }
            Object::CiliumBgpPeerConfig(o) => {
                self.bgp_peer_configs.insert(name, o);
            }
            Object::CiliumBgpAdvertisement(o) => {
                self.bgp_advertisements.insert(name, o);
            }
            Object::CiliumBgpNodeConfigOverride(o) => {
                self.bgp_node_config_overrides.insert(name, o);
            }
            Object::CiliumBgpPeeringPolicy(o) => {
                self.bgp_peering_policies.insert(name, o);
            }
            Object::L2Advertisement(o) => {
                self.l2_advertisements.insert(nn(&key), o);
            }
            Object::BgpPeer(o) => {
                self.metallb_bgp_peers.insert(nn(&key), o);
            }
            Object::BgpAdvertisement(o) => {
                self.metallb_bgp_advertisements.insert(nn(&key), o);
            }
            Object::Community(o) => {
                self.metallb_communities.insert(nn(&key), o);
            }
            Object::BfdProfile(o) => {
                self.metallb_bfd_profiles.insert(nn(&key), o);
            }
        }
        key
    }

    /// Removes the object with this key, returning it.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Object> {
        let n = &key.name;
        let k = nn(key);
        match key.kind {
            Kind::Service => self.services.remove(&k).map(Object::Service),
            Kind::EndpointSlice => self.endpoint_slices.remove(&k).map(Object::EndpointSlice),
            Kind::Node => self.nodes.remove(n).map(Object::Node),
            Kind::Namespace => self.namespaces.remove(n).map(Object::Namespace),
            Kind::Pod => self.pods.remove(&k).map(Object::Pod),
            Kind::Secret => self.secrets.remove(&k).map(Object::Secret),
            Kind::CiliumLoadBalancerIPPool => self.cilium_pools.remove(n).map(Object::CiliumLoadBalancerIPPool),
            Kind::IpAddressPool => self.metallb_pools.remove(&k).map(Object::IpAddressPool),
            Kind::CiliumL2AnnouncementPolicy => self.l2_policies.remove(n).map(Object::CiliumL2AnnouncementPolicy),
            Kind::CiliumBgpClusterConfig => self.bgp_cluster_configs.remove(n).map(Object::CiliumBgpClusterConfig),
            Kind::CiliumBgpPeerConfig => self.bgp_peer_configs.remove(n).map(Object::CiliumBgpPeerConfig),
            Kind::CiliumBgpAdvertisement => self.bgp_advertisements.remove(n).map(Object::CiliumBgpAdvertisement),
            Kind::CiliumBgpNodeConfigOverride => {
                self.bgp_node_config_overrides.remove(n).map(Object::CiliumBgpNodeConfigOverride)
            }
            Kind::CiliumBgpPeeringPolicy => self.bgp_peering_policies.remove(n).map(Object::CiliumBgpPeeringPolicy),
            Kind::L2Advertisement => self.l2_advertisements.remove(&k).map(Object::L2Advertisement),
            Kind::BgpPeer => self.metallb_bgp_peers.remove(&k).map(Object::BgpPeer),
            Kind::BgpAdvertisement => self.metallb_bgp_advertisements.remove(&k).map(Object::BgpAdvertisement),
            Kind::Community => self.metallb_communities.remove(&k).map(Object::Community),
            Kind::BfdProfile => self.metallb_bfd_profiles.remove(&k).map(Object::BfdProfile),
        }
    }

    /// All objects, grouped by kind in [`Kind::ALL`] order, each group in key order.
    pub fn objects(&self) -> Vec<Object> {
        let mut out = Vec::with_capacity(self.len());
        out.extend(self.services.values().cloned().map(Object::Service));
        out.extend(self.endpoint_slices.values().cloned().map(Object::EndpointSlice));
        out.extend(self.nodes.values().cloned().map(Object::Node));
        out.extend(self.namespaces.values().cloned().map(Object::Namespace));
        out.extend(self.pods.values().cloned().map(Object::Pod));
        out.extend(self.secrets.values().cloned().map(Object::Secret));
        out.extend(self.cilium_pools.values().cloned().map(Object::CiliumLoadBalancerIPPool));
        out.extend(self.l2_policies.values().cloned().map(Object::CiliumL2AnnouncementPolicy));
        out.extend(self.bgp_cluster_configs.values().cloned().map(Object::CiliumBgpClusterConfig));
        out.extend(self.bgp_peer_configs.values().cloned().map(Object::CiliumBgpPeerConfig));
        out.extend(self.bgp_advertisements.values().cloned().map(Object::CiliumBgpAdvertisement));
        out.extend(self.bgp_node_config_overrides.values().cloned().map(Object::CiliumBgpNodeConfigOverride));
        out.extend(self.bgp_peering_policies.values().cloned().map(Object::CiliumBgpPeeringPolicy));
        out.extend(self.metallb_pools.values().cloned().map(Object::IpAddressPool));
        out.extend(self.l2_advertisements.values().cloned().map(Object::L2Advertisement));
        out.extend(self.metallb_bgp_peers.values().cloned().map(Object::BgpPeer));
        out.extend(self.metallb_bgp_advertisements.values().cloned().map(Object::BgpAdvertisement));
        out.extend(self.metallb_communities.values().cloned().map(Object::Community));
        out.extend(self.metallb_bfd_profiles.values().cloned().map(Object::BfdProfile));
        out
    }

    /// Keys of all objects, in [`Model::objects`] order.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.objects().iter().map(Object::key).collect()
    }

    pub fn len(&self) -> usize {
        self.services.len()
            + self.endpoint_slices.len()
            + self.nodes.len()
            + self.namespaces.len()
            + self.pods.len()
            + self.secrets.len()
            + self.cilium_pools.len()
            + self.metallb_pools.len()
            + self.l2_policies.len()
            + self.bgp_cluster_configs.len()
            + self.bgp_peer_configs.len()
            + self.bgp_advertisements.len()
            + self.bgp_node_config_overrides.len()
            + self.bgp_peering_policies.len()
            + self.l2_advertisements.len()
            + self.metallb_bgp_peers.len()
            + self.metallb_bgp_advertisements.len()
            + self.metallb_communities.len()
            + self.metallb_bfd_profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The EndpointSlices of a Service (same namespace, `kubernetes.io/service-name` label).
    pub fn endpoint_slices_for<'a>(
        &'a self,
        service: &'a NamespacedName,
    ) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        self.endpoint_slices
            .iter()
            .filter(move |(k, s)| k.namespace == service.namespace && s.service_name() == Some(service.name.as_str()))
            .map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ObjectMeta;

    fn pool(name: &str) -> Object {
        Object::CiliumLoadBalancerIPPool(CiliumLoadBalancerIPPool {
            api_version: "cilium.io/v2".into(),
            metadata: ObjectMeta::named(name),
            spec: CiliumLoadBalancerIPPoolSpec::default(),
        })
    }

    #[test]
    fn insert_remove_and_enumerate() {
        let mut m = Model::from_objects([pool("a"), pool("b")]);
        assert_eq!(m.len(), 2);
        let keys = m.keys();
        assert_eq!(keys[0].to_string(), "CiliumLoadBalancerIPPool a");
        assert!(m.remove(&keys[0]).is_some());
        assert!(m.remove(&keys[0]).is_none());
        assert_eq!(m.len(), 1);
        assert_eq!(m.objects(), vec![pool("b")]);
    }

    #[test]
    fn serializes_to_json_with_string_keys() {
        let mut svc = Service {
            api_version: "v1".into(),
            metadata: ObjectMeta::named("web"),
            spec: ServiceSpec::default(),
            status: ServiceStatus::default(),
        };
        svc.metadata.namespace = Some("prod".into());
        let m = Model::from_objects([Object::Service(svc), pool("blue")]);
        let v = serde_json::to_value(&m).unwrap();
        assert!(v["services"]["prod/web"].is_object());
        assert!(v["cilium_pools"]["blue"].is_object());
    }
}
