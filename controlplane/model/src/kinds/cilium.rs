//! Cilium kinds (group `cilium.io`). Field names and defaults follow
//! `pkg/k8s/apis/cilium.io/v2/{lbipam,bgp_cluster,bgp_peer,bgp_advert,bgp_node_override}_types.go`
//! and `v2alpha1/{l2announcement,bgpp}_types.go`; the documented examples in
//! `Documentation/network/{lb-ipam,l2-announcements}.rst` and `bgp-control-plane/*.rst` load.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::diag::Severity;
use crate::meta::SelectorCheck;
use crate::meta::{LabelSelector, NameRule, ObjectMeta, null_as_default};
use crate::net::{self, IpBlock, PeerAddress};
use crate::validate::{
    Issues, check_overlaps, check_range, idx, join, normalise_block, parse_large_community, parse_standard_community,
    well_known_community,
};

/// Checks an optional selector at `path`.
fn check_opt_selector(s: &Option<LabelSelector>, path: &str, issues: &mut Issues) {
    if let Some(s) = s {
        s.check(path, issues);
    }
}

// ---------------------------------------------------------------------------------------------
// CiliumLoadBalancerIPPool (cilium.io/v2alpha1, cilium.io/v2)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumLoadBalancerIPPool {
    /// `cilium.io/v2` or the deprecated `cilium.io/v2alpha1`, as written.
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CiliumLoadBalancerIPPoolSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumLoadBalancerIPPoolSpec {
    /// `cidrs` is the pre-1.15 name of this field, still accepted by Cilium as an alias.
    #[serde(default, alias = "cidrs", with = "net::cilium_block")]
    pub blocks: Vec<IpBlock>,
    /// `None` selects every Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    #[serde(rename = "allowFirstLastIPs", default, skip_serializing_if = "Option::is_none")]
    pub allow_first_last_ips: Option<YesNo>,
    #[serde(default)]
    pub disabled: bool,
}

/// `Yes`/`No` (CRD enum). The Cilium docs spell them in lowercase in prose (`yes`), so the
/// case is not significant here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum YesNo {
    Yes,
    No,
}

impl<'de> Deserialize<'de> for YesNo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = YesNo;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"Yes\" or \"No\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<YesNo, E> {
                match s.to_ascii_lowercase().as_str() {
                    "yes" => Ok(YesNo::Yes),
                    "no" => Ok(YesNo::No),
                    _ => Err(E::custom(format!("invalid value {s:?}, expected \"Yes\" or \"No\""))),
                }
            }
            // YAML 1.1 habits: `allowFirstLastIPs: yes` unquoted is a boolean to some tools.
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<YesNo, E> {
                Ok(if b { YesNo::Yes } else { YesNo::No })
            }
        }
        d.deserialize_any(V)
    }
}

impl CiliumLoadBalancerIPPool {
    /// Whether the first and last address of CIDR blocks may be allocated. Unset means `Yes`
    /// since Cilium 1.16 (it was `No` in 1.15). Ignored for /31, /32, /127, /128.
    pub fn allow_first_last_ips(&self) -> bool {
        self.spec.allow_first_last_ips != Some(YesNo::No)
    }

    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        if self.spec.blocks.is_empty() {
            issues.error("spec.blocks", "a pool needs at least one block");
        }
        for (i, b) in self.spec.blocks.iter_mut().enumerate() {
            normalise_block(b, &join(&idx("spec.blocks", i), "cidr"), issues);
        }
        // Cilium marks a pool with overlapping blocks as conflicting and allocates nothing from it.
        check_overlaps(&self.spec.blocks, "spec.blocks", Severity::Warning, issues);
        check_opt_selector(&self.spec.service_selector, "spec.serviceSelector", issues);
    }
}

// ---------------------------------------------------------------------------------------------
// CiliumL2AnnouncementPolicy (cilium.io/v2alpha1)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumL2AnnouncementPolicy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CiliumL2AnnouncementPolicySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumL2AnnouncementPolicySpec {
    /// `None` selects every Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// `None` makes every node a candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Go regular expressions, OR-ed; empty means all devices.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    #[serde(rename = "externalIPs", default)]
    pub external_ips: bool,
    #[serde(rename = "loadBalancerIPs", default)]
    pub load_balancer_ips: bool,
}

impl CiliumL2AnnouncementPolicy {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        check_opt_selector(&self.spec.service_selector, "spec.serviceSelector", issues);
        check_opt_selector(&self.spec.node_selector, "spec.nodeSelector", issues);
        for (i, r) in self.spec.interfaces.iter().enumerate() {
            if r.is_empty() {
                issues.error(idx("spec.interfaces", i), "empty interface pattern");
            }
        }
        if !self.spec.external_ips && !self.spec.load_balancer_ips {
            // l2-announcements.rst: "a functional policy should always have one or both set to true".
            issues.warn("spec", "externalIPs and loadBalancerIPs are both false: this policy announces nothing");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// BGP control plane v2: CiliumBGPClusterConfig, CiliumBGPPeerConfig, CiliumBGPAdvertisement,
// CiliumBGPNodeConfigOverride (cilium.io/v2, cilium.io/v2alpha1)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpClusterConfig {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CiliumBgpClusterConfigSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpClusterConfigSpec {
    /// `None` applies to all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub bgp_instances: Vec<CiliumBgpInstance>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpInstance {
    pub name: String,
    #[serde(rename = "localASN", default, skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
    /// Listening port; unset means the instance does not listen (dials out only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<CiliumBgpPeer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpPeer {
    pub name: String,
    #[serde(default, with = "net::opt_peer_address", skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<PeerAddress>,
    /// 0 (the CRD default) means "learn the ASN from the peer's OPEN".
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    pub peer_asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_discovery: Option<BgpAutoDiscovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_config_ref: Option<PeerConfigReference>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpAutoDiscovery {
    /// `DefaultGateway` or `Unnumbered`.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_gateway: Option<DefaultGateway>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unnumbered: Option<BgpUnnumbered>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultGateway {
    /// `ipv4` or `ipv6`.
    pub address_family: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpUnnumbered {
    pub interface: String,
}

/// Reference to a `CiliumBGPPeerConfig`. `group`/`kind` exist in v2alpha1 and default to
/// `cilium.io`/`CiliumBGPPeerConfig`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfigReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl CiliumBgpClusterConfig {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        check_opt_selector(&self.spec.node_selector, "spec.nodeSelector", issues);
        let n = self.spec.bgp_instances.len();
        if !(1..=16).contains(&n) {
            issues.error("spec.bgpInstances", format!("needs 1-16 BGP instances, found {n}"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, inst) in self.spec.bgp_instances.iter().enumerate() {
            let p = idx("spec.bgpInstances", i);
            check_name_len(&inst.name, &join(&p, "name"), issues);
            if !names.insert(inst.name.as_str()) {
                issues.error(join(&p, "name"), format!("duplicate BGP instance name {:?}", inst.name));
            }
            if inst.local_asn == Some(0) {
                issues.error(join(&p, "localASN"), "0 is out of range 1-4294967295");
            }
            if inst.local_port == Some(0) {
                issues.error(join(&p, "localPort"), "0 is out of range 1-65535");
            }
            let mut peer_names = std::collections::BTreeSet::new();
            for (j, peer) in inst.peers.iter().enumerate() {
                let pp = idx(&join(&p, "peers"), j);
                check_name_len(&peer.name, &join(&pp, "name"), issues);
                if !peer_names.insert(peer.name.as_str()) {
                    issues.error(join(&pp, "name"), format!("duplicate peer name {:?}", peer.name));
                }
                match &peer.auto_discovery {
                    None if peer.peer_address.is_none() && peer.peer_interface.is_none() => {
                        issues.error(pp.clone(), "a peer needs peerAddress, peerInterface or autoDiscovery")
                    }
                    Some(ad) => check_auto_discovery(ad, &join(&pp, "autoDiscovery"), issues),
                    None => {}
                }
                if let Some(r) = &peer.peer_config_ref {
                    if r.name.is_empty() {
                        issues.error(join(&join(&pp, "peerConfigRef"), "name"), "name is required");
                    }
                    if r.kind.as_deref().is_some_and(|k| k != "CiliumBGPPeerConfig") {
                        issues.warn(join(&join(&pp, "peerConfigRef"), "kind"), "only CiliumBGPPeerConfig is supported");
                    }
                }
            }
        }
    }

    /// Names of the `CiliumBGPPeerConfig`s this config refers to.
    pub fn peer_config_refs(&self) -> impl Iterator<Item = &str> {
        self.spec
            .bgp_instances
            .iter()
            .flat_map(|i| &i.peers)
            .filter_map(|p| p.peer_config_ref.as_ref())
            .map(|r| r.name.as_str())
    }
}

fn check_auto_discovery(ad: &BgpAutoDiscovery, path: &str, issues: &mut Issues) {
    match ad.mode.as_str() {
        "DefaultGateway" => {
            if ad.default_gateway.is_none() {
                issues.error(join(path, "defaultGateway"), "required when mode is DefaultGateway");
            }
        }
        "Unnumbered" => {
            if ad.unnumbered.is_none() == ad.default_gateway.is_none() {
                issues.error(path, "mode Unnumbered needs exactly one of unnumbered or defaultGateway");
            }
        }
        m => issues.error(join(path, "mode"), format!("unknown mode {m:?} (DefaultGateway or Unnumbered)")),
    }
    if let Some(g) = &ad.default_gateway
        && !matches!(g.address_family.as_str(), "ipv4" | "ipv6")
    {
        issues.error(join(&join(path, "defaultGateway"), "addressFamily"), "must be ipv4 or ipv6");
    }
}

fn check_name_len(name: &str, path: &str, issues: &mut Issues) {
    if name.is_empty() || name.len() > 255 {
        issues.error(path, "name must be 1-255 characters");
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpPeerConfig {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CiliumBgpPeerConfigSpec,
}

/// Defaults (from `SetDefaults` in `bgp_peer_types.go`) are applied by the accessor methods,
/// not stored, so that the model shows what the user wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpPeerConfigSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<CiliumBgpTransport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timers: Option<CiliumBgpTimers>,
    /// Secret (in the BGP secrets namespace) holding a `password` key for TCP MD5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebgp_multihop: Option<u32>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<CiliumBgpFamilyWithAdverts>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpTransport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// Deprecated (older releases); has no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// Deprecated (older releases); has no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpTimers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_retry_time_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_time_seconds: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GracefulRestart {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_time_seconds: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpFamilyWithAdverts {
    pub afi: String,
    pub safi: String,
    /// Selects `CiliumBGPAdvertisement`s by label; `None` advertises nothing for this family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertisements: Option<LabelSelector>,
}

/// AFI and SAFI values of the CRD enums (`bgp_peer_types.go`).
const AFIS: &[&str] = &["ipv4", "ipv6", "l2vpn", "ls", "opaque"];
const SAFIS: &[&str] = &[
    "unicast",
    "multicast",
    "mpls_label",
    "encapsulation",
    "vpls",
    "evpn",
    "ls",
    "sr_policy",
    "mup",
    "mpls_vpn",
    "mpls_vpn_multicast",
    "route_target_constraints",
    "flowspec_unicast",
    "flowspec_vpn",
    "key_value",
];

fn check_family(afi: &str, safi: &str, path: &str, issues: &mut Issues) {
    if !AFIS.contains(&afi) {
        issues.error(join(path, "afi"), format!("unknown AFI {afi:?} (one of {})", AFIS.join(", ")));
    }
    if !SAFIS.contains(&safi) {
        issues.error(join(path, "safi"), format!("unknown SAFI {safi:?}"));
    }
    if AFIS.contains(&afi) && SAFIS.contains(&safi) && !(matches!(afi, "ipv4" | "ipv6") && safi == "unicast") {
        issues.warn(path, format!("{afi}/{safi} is not supported (only ipv4/unicast and ipv6/unicast); ignored"));
    }
}

/// Checks hold/keepalive/connect-retry ranges shared by v1 neighbors and v2 peer configs.
fn check_timers(
    connect_retry: Option<u32>,
    hold: Option<u32>,
    keepalive: Option<u32>,
    path: &str,
    names: [&str; 3],
    issues: &mut Issues,
) {
    check_range(connect_retry, 1, i32::MAX as u32, &join(path, names[0]), issues);
    check_range(hold, 3, 65535, &join(path, names[1]), issues);
    check_range(keepalive, 1, 65535, &join(path, names[2]), issues);
    let (h, k) = (hold.unwrap_or(90), keepalive.unwrap_or(30));
    if k > h {
        issues.error(join(path, names[2]), format!("keepalive time {k}s is larger than hold time {h}s"));
    }
}

impl CiliumBgpPeerConfig {
    pub fn peer_port(&self) -> u16 {
        self.spec.transport.as_ref().and_then(|t| t.peer_port).filter(|p| *p != 0).unwrap_or(179)
    }
    pub fn connect_retry_time_seconds(&self) -> u32 {
        self.spec.timers.as_ref().and_then(|t| t.connect_retry_time_seconds).filter(|v| *v != 0).unwrap_or(120)
    }
    pub fn hold_time_seconds(&self) -> u32 {
        self.spec.timers.as_ref().and_then(|t| t.hold_time_seconds).filter(|v| *v != 0).unwrap_or(90)
    }
    pub fn keep_alive_time_seconds(&self) -> u32 {
        self.spec.timers.as_ref().and_then(|t| t.keep_alive_time_seconds).filter(|v| *v != 0).unwrap_or(30)
    }
    pub fn ebgp_multihop(&self) -> u32 {
        self.spec.ebgp_multihop.unwrap_or(1)
    }
    /// `(enabled, restart time seconds)`; restart time defaults to 120.
    pub fn graceful_restart(&self) -> (bool, u32) {
        let gr = self.spec.graceful_restart.as_ref();
        (gr.is_some_and(|g| g.enabled), gr.and_then(|g| g.restart_time_seconds).filter(|v| *v != 0).unwrap_or(120))
    }
    /// Families with defaults applied: ipv6/unicast and ipv4/unicast with no advertisements.
    pub fn families(&self) -> Vec<CiliumBgpFamilyWithAdverts> {
        if !self.spec.families.is_empty() {
            return self.spec.families.clone();
        }
        ["ipv6", "ipv4"]
            .into_iter()
            .map(|afi| CiliumBgpFamilyWithAdverts { afi: afi.into(), safi: "unicast".into(), advertisements: None })
            .collect()
    }

    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        let s = &self.spec;
        if let Some(t) = &s.transport {
            check_range(t.peer_port, 1, 65535, "spec.transport.peerPort", issues);
            if t.local_port.is_some() || t.source_port.is_some() {
                issues.warn("spec.transport", "localPort/sourcePort are deprecated and have no effect");
            }
        }
        if let Some(t) = &s.timers {
            check_timers(
                t.connect_retry_time_seconds,
                t.hold_time_seconds,
                t.keep_alive_time_seconds,
                "spec.timers",
                ["connectRetryTimeSeconds", "holdTimeSeconds", "keepAliveTimeSeconds"],
                issues,
            );
        }
        if let Some(gr) = &s.graceful_restart {
            check_range(gr.restart_time_seconds, 1, 4095, "spec.gracefulRestart.restartTimeSeconds", issues);
        }
        check_range(s.ebgp_multihop, 1, 255, "spec.ebgpMultihop", issues);
        for (i, f) in s.families.iter().enumerate() {
            let p = idx("spec.families", i);
            check_family(&f.afi, &f.safi, &p, issues);
            check_opt_selector(&f.advertisements, &join(&p, "advertisements"), issues);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpAdvertisement {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CiliumBgpAdvertisementSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpAdvertisementSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub advertisements: Vec<BgpAdvertisementEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpAdvertisementEntry {
    pub advertisement_type: AdvertisementType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<BgpServiceOptions>,
    /// Options of the `Interface` type (newer Cilium); kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<serde_json::Value>,
    /// `None` selects *nothing* for this advertisement type (unlike pool selectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BgpAttributes>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdvertisementType {
    PodCIDR,
    CiliumPodIPPool,
    Service,
    Interface,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpServiceOptions {
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<ServiceAddressType>,
    #[serde(rename = "aggregationLengthIPv4", default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length_ipv4: Option<u8>,
    #[serde(rename = "aggregationLengthIPv6", default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length_ipv6: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceAddressType {
    LoadBalancerIP,
    ClusterIP,
    ExternalIP,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<BgpCommunities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_preference: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpCommunities {
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub standard: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub well_known: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub large: Vec<String>,
}

impl BgpCommunities {
    fn check(&self, path: &str, issues: &mut Issues) {
        for (i, c) in self.standard.iter().enumerate() {
            if let Err(e) = parse_standard_community(c) {
                issues.error(idx(&join(path, "standard"), i), e);
            }
        }
        for (i, c) in self.well_known.iter().enumerate() {
            if well_known_community(c).is_none() {
                issues.error(idx(&join(path, "wellKnown"), i), format!("unknown well-known community {c:?}"));
            }
        }
        for (i, c) in self.large.iter().enumerate() {
            if let Err(e) = parse_large_community(c) {
                issues.error(idx(&join(path, "large"), i), e);
            }
        }
    }
}

impl CiliumBgpAdvertisement {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        if self.spec.advertisements.is_empty() {
            issues.warn("spec.advertisements", "no advertisements: this resource advertises nothing");
        }
        for (i, a) in self.spec.advertisements.iter().enumerate() {
            let p = idx("spec.advertisements", i);
            check_opt_selector(&a.selector, &join(&p, "selector"), issues);
            match (&a.advertisement_type, &a.service) {
                (AdvertisementType::Service, None) => {
                    issues.error(join(&p, "service"), "required for advertisementType Service")
                }
                (AdvertisementType::Service, Some(s)) => {
                    if s.addresses.is_empty() {
                        issues.error(join(&join(&p, "service"), "addresses"), "needs at least one address type");
                    }
                    check_range(
                        s.aggregation_length_ipv4,
                        0,
                        31,
                        &join(&join(&p, "service"), "aggregationLengthIPv4"),
                        issues,
                    );
                    check_range(
                        s.aggregation_length_ipv6,
                        0,
                        127,
                        &join(&join(&p, "service"), "aggregationLengthIPv6"),
                        issues,
                    );
                }
                (_, Some(_)) => issues.warn(join(&p, "service"), "ignored: only used by advertisementType Service"),
                _ => {}
            }
            if a.selector.is_none() && a.advertisement_type != AdvertisementType::PodCIDR {
                issues.warn(join(&p, "selector"), "no selector: this advertisement selects nothing");
            }
            if let Some(c) = a.attributes.as_ref().and_then(|a| a.communities.as_ref()) {
                c.check(&join(&join(&p, "attributes"), "communities"), issues);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpNodeConfigOverride {
    #[serde(default)]
    pub api_version: String,
    /// The name is the name of the node the override applies to.
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CiliumBgpNodeConfigOverrideSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpNodeConfigOverrideSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub bgp_instances: Vec<CiliumBgpNodeConfigInstanceOverride>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpNodeConfigInstanceOverride {
    pub name: String,
    #[serde(rename = "routerID", default, with = "net::opt_ipv4", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(rename = "localASN", default, skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<CiliumBgpNodeConfigPeerOverride>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpNodeConfigPeerOverride {
    pub name: String,
    #[serde(default, with = "net::opt_peer_address", skip_serializing_if = "Option::is_none")]
    pub local_address: Option<PeerAddress>,
    /// Deprecated: has no effect upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
}

impl CiliumBgpNodeConfigOverride {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        if self.spec.bgp_instances.is_empty() {
            issues.error("spec.bgpInstances", "needs at least one BGP instance");
        }
        for (i, inst) in self.spec.bgp_instances.iter().enumerate() {
            let p = idx("spec.bgpInstances", i);
            check_name_len(&inst.name, &join(&p, "name"), issues);
            if inst.local_asn == Some(0) {
                issues.error(join(&p, "localASN"), "0 is out of range 1-4294967295");
            }
            for (j, peer) in inst.peers.iter().enumerate() {
                let pp = idx(&join(&p, "peers"), j);
                check_name_len(&peer.name, &join(&pp, "name"), issues);
                if peer.local_port.is_some() {
                    issues.warn(join(&pp, "localPort"), "deprecated and has no effect");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// BGP control plane v1: CiliumBGPPeeringPolicy (cilium.io/v2alpha1)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpPeeringPolicy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CiliumBgpPeeringPolicySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpPeeringPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub virtual_routers: Vec<CiliumBgpVirtualRouter>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpVirtualRouter {
    #[serde(rename = "localASN")]
    pub local_asn: u32,
    #[serde(rename = "exportPodCIDR", default, skip_serializing_if = "Option::is_none")]
    pub export_pod_cidr: Option<bool>,
    #[serde(rename = "podIPPoolSelector", default, skip_serializing_if = "Option::is_none")]
    pub pod_ip_pool_selector: Option<LabelSelector>,
    /// `None` announces no Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Defaults to `[LoadBalancerIP]` when empty; see [`CiliumBgpVirtualRouter::service_advertisements`].
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub service_advertisements: Vec<ServiceAddressType>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub neighbors: Vec<CiliumBgpNeighbor>,
}

impl CiliumBgpVirtualRouter {
    pub fn service_advertisements(&self) -> Vec<ServiceAddressType> {
        if self.service_advertisements.is_empty() {
            vec![ServiceAddressType::LoadBalancerIP]
        } else {
            self.service_advertisements.clone()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpNeighbor {
    /// CIDR notation with a /32 or /128, e.g. `'10.0.0.1/32'` (bgpp_types.go: `Format=cidr`).
    #[serde(with = "net::cidr")]
    pub peer_address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    #[serde(rename = "peerASN")]
    pub peer_asn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<String>,
    #[serde(rename = "eBGPMultihopTTL", default, skip_serializing_if = "Option::is_none")]
    pub ebgp_multihop_ttl: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_retry_time_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_time_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestart>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<CiliumBgpFamily>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub advertised_path_attributes: Vec<CiliumBgpPathAttributes>,
}

impl CiliumBgpNeighbor {
    /// The peer's address (the CIDR's address part).
    pub fn peer_ip(&self) -> IpAddr {
        self.peer_address.addr()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumBgpFamily {
    pub afi: String,
    pub safi: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumBgpPathAttributes {
    /// `PodCIDR`, `CiliumLoadBalancerIPPool` or `CiliumPodIPPool`.
    pub selector_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<BgpCommunities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_preference: Option<u32>,
}

impl CiliumBgpPeeringPolicy {
    pub(crate) fn check(&mut self, issues: &mut Issues) {
        self.metadata.check(NameRule::Subdomain, issues);
        check_opt_selector(&self.spec.node_selector, "spec.nodeSelector", issues);
        if self.spec.virtual_routers.is_empty() {
            issues.error("spec.virtualRouters", "needs at least one virtual router");
        }
        for (i, vr) in self.spec.virtual_routers.iter().enumerate() {
            let p = idx("spec.virtualRouters", i);
            check_opt_selector(&vr.pod_ip_pool_selector, &join(&p, "podIPPoolSelector"), issues);
            check_opt_selector(&vr.service_selector, &join(&p, "serviceSelector"), issues);
            if vr.neighbors.is_empty() {
                issues.error(join(&p, "neighbors"), "needs at least one neighbor");
            }
            for (j, n) in vr.neighbors.iter().enumerate() {
                let np = idx(&join(&p, "neighbors"), j);
                let full = if n.peer_address.addr().is_ipv4() { 32 } else { 128 };
                if n.peer_address.prefix_len() != full {
                    issues
                        .error(join(&np, "peerAddress"), format!("{} must be a single host (/{full})", n.peer_address));
                }
                check_range(n.peer_port, 1, 65535, &join(&np, "peerPort"), issues);
                check_range(n.ebgp_multihop_ttl, 1, 255, &join(&np, "eBGPMultihopTTL"), issues);
                check_timers(
                    n.connect_retry_time_seconds,
                    n.hold_time_seconds,
                    n.keep_alive_time_seconds,
                    &np,
                    ["connectRetryTimeSeconds", "holdTimeSeconds", "keepAliveTimeSeconds"],
                    issues,
                );
                if let Some(gr) = &n.graceful_restart {
                    check_range(
                        gr.restart_time_seconds,
                        1,
                        4095,
                        &join(&join(&np, "gracefulRestart"), "restartTimeSeconds"),
                        issues,
                    );
                }
                for (k, f) in n.families.iter().enumerate() {
                    check_family(&f.afi, &f.safi, &idx(&join(&np, "families"), k), issues);
                }
                for (k, a) in n.advertised_path_attributes.iter().enumerate() {
                    let ap = idx(&join(&np, "advertisedPathAttributes"), k);
                    if !matches!(a.selector_type.as_str(), "PodCIDR" | "CiliumLoadBalancerIPPool" | "CiliumPodIPPool") {
                        issues.error(
                            join(&ap, "selectorType"),
                            format!(
                                "unknown selectorType {:?} (PodCIDR, CiliumLoadBalancerIPPool or CiliumPodIPPool)",
                                a.selector_type
                            ),
                        );
                    }
                    check_opt_selector(&a.selector, &join(&ap, "selector"), issues);
                    if let Some(c) = &a.communities {
                        c.check(&join(&ap, "communities"), issues);
                    }
                }
            }
        }
    }
}
