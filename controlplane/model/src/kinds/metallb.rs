//! MetalLB kinds (group `metallb.io`). Field names follow `api/v1beta1/*_types.go` and
//! `api/v1beta2/bgppeer_types.go`; the examples of `website/content/configuration/` load.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize, Serializer};

use crate::diag::Severity;
use crate::meta::{LabelSelector, NameRule, ObjectMeta, check_selectors, null_as_default};
use crate::net::{self, GoDuration, IpBlock};
use crate::validate::{
    Issues, check_overlaps, check_range, idx, join, normalise_block, parse_large_community, parse_standard_community,
};

// ---------------------------------------------------------------------------------------------
// IPAddressPool
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressPool {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: IpAddressPoolSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressPoolSpec {
    /// Each entry is `"CIDR"` or `"start-end"` on the wire; parsed into blocks.
    #[serde(default, with = "net::metallb_addresses")]
    pub addresses: Vec<IpBlock>,
    /// Unset means `true`; see [`IpAddressPool::auto_assign`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    /// Skip addresses ending in `.0` and `.255`.
    #[serde(rename = "avoidBuggyIPs", default)]
    pub avoid_buggy_ips: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower number wins; 0 or unset is the lowest priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

impl IpAddressPool {
    pub fn auto_assign(&self) -> bool {
        self.spec.auto_assign.unwrap_or(true)
    }

    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        if self.spec.addresses.is_empty() {
            // MetalLB: "pool has no prefixes defined".
            issues.error("spec.addresses", "a pool needs at least one address range");
        }
        for (i, b) in self.spec.addresses.iter_mut().enumerate() {
            normalise_block(b, &idx("spec.addresses", i), issues);
        }
        // MetalLB rejects the whole configuration when ranges overlap.
        check_overlaps(&self.spec.addresses, "spec.addresses", Severity::Error, issues);
        if let Some(sa) = &self.spec.service_allocation {
            if sa.priority.is_some_and(|p| p < 0) {
                issues.error("spec.serviceAllocation.priority", "must not be negative");
            }
            for (i, ns) in sa.namespaces.iter().enumerate() {
                if !crate::validate::is_dns1123_label(ns) {
                    issues.error(idx("spec.serviceAllocation.namespaces", i), format!("invalid namespace {ns:?}"));
                }
            }
            check_selectors(&sa.namespace_selectors, "spec.serviceAllocation.namespaceSelectors", issues);
            check_selectors(&sa.service_selectors, "spec.serviceAllocation.serviceSelectors", issues);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// L2Advertisement
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L2Advertisement {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Optional: the docs' minimal example has no spec (it advertises all pools everywhere).
    #[serde(default)]
    pub spec: L2AdvertisementSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools by name. With no names and no selectors, all pools are advertised.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

impl L2Advertisement {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        check_selectors(&self.spec.ip_address_pool_selectors, "spec.ipAddressPoolSelectors", issues);
        check_selectors(&self.spec.node_selectors, "spec.nodeSelectors", issues);
        check_selectors(&self.spec.service_selectors, "spec.serviceSelectors", issues);
        for (i, name) in self.spec.interfaces.iter().enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains('/') || name.chars().any(char::is_whitespace) {
                issues.error(idx("spec.interfaces", i), format!("invalid interface name {name:?}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// BGPPeer (v1beta2; v1beta1 has the same shape for the fields used here)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeer {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BgpPeerSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerSpec {
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    /// Mutually exclusive with `dynamicASN`; one of them is required.
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    pub peer_asn: Option<u32>,
    #[serde(rename = "dynamicASN", default, skip_serializing_if = "Option::is_none")]
    pub dynamic_asn: Option<DynamicAsn>,
    /// FRR modes only (`local-as … no-prepend replace-as`).
    #[serde(rename = "localASN", default, skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
    #[serde(default, with = "net::opt_ip", skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<IpAddr>,
    /// BGP unnumbered over this interface, instead of `peerAddress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, with = "net::opt_ip", skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    /// 0 or unset means 179; at most 16384 (CRD bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    #[serde(default, with = "net::opt_duration", skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<GoDuration>,
    #[serde(default, with = "net::opt_duration", skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<GoDuration>,
    #[serde(default, with = "net::opt_duration", skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<GoDuration>,
    #[serde(rename = "routerID", default, with = "net::opt_ipv4", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<Ipv4Addr>,
    /// Nodes that peer; empty means all.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Plain-text TCP MD5 password. Serialized as `<redacted>` so status output never leaks it.
    #[serde(default, serialize_with = "redact", skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
    #[serde(default)]
    pub enable_graceful_restart: bool,
    #[serde(default)]
    pub ebgp_multi_hop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    /// Deprecated upstream.
    #[serde(rename = "disableMP", default)]
    pub disable_mp: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_stack_address_family: Option<bool>,
}

fn redact<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DynamicAsn {
    /// The peer's ASN must equal `myASN`.
    Internal,
    /// The peer's ASN must differ from `myASN`.
    External,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl BgpPeer {
    pub fn peer_port(&self) -> u16 {
        self.spec.peer_port.filter(|p| *p != 0).unwrap_or(179)
    }

    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        let s = &self.spec;
        match (s.peer_asn, s.dynamic_asn) {
            (Some(_), Some(_)) => issues.error("spec.dynamicASN", "peerASN and dynamicASN are mutually exclusive"),
            (None, None) => issues.error("spec.peerASN", "one of peerASN or dynamicASN is required"),
            _ => {}
        }
        match (&s.peer_address, &s.interface) {
            (Some(_), Some(_)) => issues.error("spec.interface", "peerAddress and interface are mutually exclusive"),
            (None, None) => issues.error("spec.peerAddress", "one of peerAddress or interface is required"),
            _ => {}
        }
        check_range(s.peer_port, 0, 16384, "spec.peerPort", issues);
        let hold = s.hold_time.map(|d| d.0);
        if let Some(h) = hold
            && !h.is_zero()
            && h.as_secs() < 3
        {
            issues.error("spec.holdTime", format!("invalid hold time {}: must be 0 or at least 3s", GoDuration(h)));
        }
        if let (Some(k), Some(h)) = (s.keepalive_time.map(|d| d.0), hold)
            && k > h
        {
            issues.error("spec.keepaliveTime", "keepalive time must not be larger than hold time");
        }
        if let Some(c) = s.connect_time.map(|d| d.0)
            && (c.subsec_nanos() != 0 || !(1..=65535).contains(&c.as_secs()))
        {
            issues.error("spec.connectTime", "connect time must be a whole number of seconds between 1s and 65535s");
        }
        if s.password.is_some() && s.password_secret.as_ref().is_some_and(|p| p.name.is_some()) {
            issues.error("spec.passwordSecret", "password and passwordSecret are mutually exclusive");
        }
        check_selectors(&s.node_selectors, "spec.nodeSelectors", issues);
        if s.disable_mp {
            issues.warn("spec.disableMP", "deprecated upstream");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// BGPAdvertisement
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpAdvertisement {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BgpAdvertisementSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpAdvertisementSpec {
    /// Defaults to 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length: Option<u8>,
    /// Defaults to 128.
    #[serde(rename = "aggregationLengthV6", default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length_v6: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// `"1234:1234"`, `"large:1:2:3"`, or the name of an alias from a `Community` object.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// `BGPPeer` names; empty means all peers.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// A community value as written in a MetalLB `BGPAdvertisement` or `Community`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetalLbCommunity {
    Standard(u32),
    Large([u32; 3]),
    /// A name to resolve through `Community` objects.
    Alias(String),
}

/// Classifies a MetalLB community string: anything with a digit-and-colon shape must parse.
pub fn parse_metallb_community(s: &str) -> Result<MetalLbCommunity, String> {
    if let Some(rest) = s.strip_prefix("large:") {
        return parse_large_community(rest).map(MetalLbCommunity::Large);
    }
    if s.contains(':') || s.chars().all(|c| c.is_ascii_digit()) {
        return parse_standard_community(s).map(MetalLbCommunity::Standard);
    }
    if s.is_empty() {
        return Err("empty community".into());
    }
    Ok(MetalLbCommunity::Alias(s.to_string()))
}

impl BgpAdvertisement {
    pub fn aggregation_length(&self) -> u8 {
        self.spec.aggregation_length.unwrap_or(32)
    }
    pub fn aggregation_length_v6(&self) -> u8 {
        self.spec.aggregation_length_v6.unwrap_or(128)
    }

    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        let s = &self.spec;
        check_range(s.aggregation_length, 1, 32, "spec.aggregationLength", issues);
        check_range(s.aggregation_length_v6, 1, 128, "spec.aggregationLengthV6", issues);
        for (i, c) in s.communities.iter().enumerate() {
            if let Err(e) = parse_metallb_community(c) {
                issues.error(idx("spec.communities", i), e);
            }
        }
        check_selectors(&s.ip_address_pool_selectors, "spec.ipAddressPoolSelectors", issues);
        check_selectors(&s.node_selectors, "spec.nodeSelectors", issues);
        check_selectors(&s.service_selectors, "spec.serviceSelectors", issues);
        let aggregated =
            s.aggregation_length.is_some_and(|l| l != 32) || s.aggregation_length_v6.is_some_and(|l| l != 128);
        if aggregated && !s.service_selectors.is_empty() {
            // Enforced upstream by a CEL rule on the CRD.
            issues.error("spec.serviceSelectors", "cannot be combined with a non-default aggregation length");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Community and BFDProfile
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Community {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CommunitySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub communities: Vec<CommunityAlias>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommunityAlias {
    pub name: String,
    pub value: String,
}

impl Community {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in self.spec.communities.iter().enumerate() {
            let p = idx("spec.communities", i);
            if c.name.is_empty() {
                issues.error(join(&p, "name"), "name is required");
            } else if !seen.insert(c.name.as_str()) {
                issues.error(join(&p, "name"), format!("duplicate community alias {:?}", c.name));
            }
            match parse_metallb_community(&c.value) {
                Ok(MetalLbCommunity::Alias(_)) | Err(_) => {
                    issues.error(join(&p, "value"), format!("invalid community value {:?}", c.value))
                }
                Ok(_) => {}
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BfdProfile {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BfdProfileSpec,
}

/// Intervals in milliseconds (`api/v1beta1/bfdprofile_types.go`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BfdProfileSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_multiplier: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ttl: Option<u32>,
}

impl BfdProfile {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        let s = &self.spec;
        check_range(s.receive_interval, 10, 60000, "spec.receiveInterval", issues);
        check_range(s.transmit_interval, 10, 60000, "spec.transmitInterval", issues);
        check_range(s.detect_multiplier, 2, 255, "spec.detectMultiplier", issues);
        check_range(s.echo_interval, 10, 60000, "spec.echoInterval", issues);
        check_range(s.minimum_ttl, 1, 254, "spec.minimumTtl", issues);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metallb_communities() {
        assert_eq!(parse_metallb_community("65535:65282"), Ok(MetalLbCommunity::Standard(0xffff_ff02)));
        assert_eq!(parse_metallb_community("large:1:2:3"), Ok(MetalLbCommunity::Large([1, 2, 3])));
        assert_eq!(parse_metallb_community("vpn-only"), Ok(MetalLbCommunity::Alias("vpn-only".into())));
        assert!(parse_metallb_community("70000:1").is_err());
        assert!(parse_metallb_community("large:1:2").is_err());
    }
}
