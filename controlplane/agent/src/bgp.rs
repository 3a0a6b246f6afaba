//! BGP in the agent: from the Cilium BGP v2 resources in the model and LB-IPAM's outcome to the
//! peers this node runs and the prefixes each one advertises; and the task that keeps the
//! running sessions in step with that (starting, stopping, and sending route changes without
//! resetting sessions).
//!
//! Resources (Cilium `Documentation/network/bgp-control-plane/bgp-control-plane-v2.rst`):
//! `CiliumBGPClusterConfig` (node selector, instances with local ASN and peers) →
//! `CiliumBGPPeerConfig` (timers, port, families with an advertisement selector) →
//! `CiliumBGPAdvertisement` (type `Service` with `LoadBalancerIP`/`ExternalIP`, a service
//! selector, communities and local preference; type `PodCIDR`: this node's pod CIDRs).
//! Overlapping advertisements of one prefix union their communities and keep the highest local
//! preference (Cilium 1.18+).
//! The v1 `CiliumBGPPeeringPolicy` is used as Cilium does: only for a node no v2
//! `CiliumBGPClusterConfig` selects, and only when exactly one policy selects it (see
//! [`cilium_v1`]).
//! MetalLB's `BGPPeer`/`BGPAdvertisement`/`Community` are read too (see [`metallb`]).
//! MetalLB's `ebgpMultiHop` and Cilium's `ebgpMultihop` set the session's TTL, MetalLB's
//! `bfdProfile` its BFD. GTSM (RFC 5082) has no field in either API: only `halyard-bgpd` sets it.
//! TCP MD5 passwords: MetalLB `password`, or a Secret: Cilium `authSecretRef` (v2 PeerConfig, v1
//! neighbor) names one in the BGP secrets namespace (`--bgp-secrets-namespace`, default
//! `kube-system`), MetalLB `passwordSecret` a `kubernetes.io/basic-auth` one; key `password`.
//! When the Secret or its key is missing the session is not started and the problem names the
//! peer and the Secret (Cilium would dial without a password and report
//! `cilium.io/MissingAuthSecret`; a peer that requires MD5 drops those SYNs anyway).
//! Timers: the keepalive is a third of the hold time (`keepAliveTimeSeconds` is not used).
//! Not yet: CiliumPodIPPool advertisements, node overrides, auto-discovery.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use halyard_bgp::bfd::BfdConfig;
use halyard_bgp::session::{
    Advertisements, IncomingRoutes, ListenPeer, PeerChannels, PeerConfig, PeerStatus, Prefix, RouteAttrs, listen,
    run_peer,
};
use halyard_bgp::wire::{Community, Ipv4Prefix, Ipv6Prefix, LargeCommunity};
use halyard_model::validate::{parse_large_community, parse_standard_community, well_known_community};
use halyard_model::{
    AdvertisementType, BgpAttributes, CiliumBgpPathAttributes, CiliumBgpPeeringPolicy, LabelSelector, Model,
    NamespacedName, ServiceAddressType,
};
use ipnet::IpNet;
use tokio::sync::watch;

use crate::reconcile::Snapshot;
use crate::translate;

/// One session this node should run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPeer {
    pub cfg: PeerConfig,
    pub routes: Advertisements,
    /// The instance's `localPort`: accept connections from this peer on it (unset: dial only).
    pub listen_port: Option<u16>,
}

/// `instance/peer` → what to run.
pub type DesiredPeers = BTreeMap<String, DesiredPeer>;

fn attrs_of(a: Option<&BgpAttributes>) -> RouteAttrs {
    let mut out = RouteAttrs::default();
    let Some(a) = a else { return out };
    out.local_pref = a.local_preference;
    if let Some(c) = &a.communities {
        // The model validated these strings, so unparsable ones cannot occur here.
        out.communities.extend(c.standard.iter().filter_map(|s| parse_standard_community(s).ok()).map(Community));
        out.communities.extend(c.well_known.iter().filter_map(|s| well_known_community(s)).map(Community));
        out.large_communities.extend(
            c.large.iter().filter_map(|s| parse_large_community(s).ok()).map(|[g, a, b]| LargeCommunity {
                global_admin: g,
                local_data1: a,
                local_data2: b,
            }),
        );
    }
    out.communities.sort();
    out.communities.dedup();
    out
}

fn host_prefix(ip: IpAddr) -> Prefix {
    match ip {
        IpAddr::V4(a) => Prefix::V4(Ipv4Prefix::new(a, 32).expect("/32 is valid")),
        IpAddr::V6(a) => Prefix::V6(Ipv6Prefix::new(a, 128).expect("/128 is valid")),
    }
}

/// The router ID: the node's first IPv4 InternalIP, else `fallback`.
fn router_id(model: &Model, node: &str, fallback: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    translate::node_internal_ipv4(model, node).or(fallback)
}

/// Cilium's default `--bgp-secrets-namespace`.
pub const DEFAULT_SECRETS_NAMESPACE: &str = "kube-system";

/// What the BGP task takes from the agent's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpSettings {
    /// Router ID when the Node has no IPv4 InternalIP (`--bgp-router-id`).
    pub router_id_fallback: Option<Ipv4Addr>,
    /// Where the Secrets named by Cilium `authSecretRef`s live (`--bgp-secrets-namespace`).
    pub secrets_namespace: String,
}

impl Default for BgpSettings {
    fn default() -> Self {
        BgpSettings { router_id_fallback: None, secrets_namespace: DEFAULT_SECRETS_NAMESPACE.to_string() }
    }
}

/// Linux's `TCP_MD5SIG_MAXKEYLEN`.
const MD5_MAX_KEY_LEN: usize = 80;

/// The TCP MD5 password: key `password` of Secret `namespace/name` (of type `required_type`
/// when given). Errors name the Secret and what is wrong, never the value.
fn secret_password(model: &Model, namespace: &str, name: &str, required_type: Option<&str>) -> Result<String, String> {
    let key = NamespacedName::new(namespace, name);
    let Some(secret) = model.secrets.get(&key) else {
        return Err(format!("Secret {key} does not exist"));
    };
    if let Some(t) = required_type
        && secret.secret_type() != t
    {
        return Err(format!("Secret {key} has type {}, not {t}", secret.secret_type()));
    }
    let Some(value) = secret.get("password") else {
        return Err(format!("Secret {key} has no key \"password\""));
    };
    if value.is_empty() {
        return Err(format!("key \"password\" of Secret {key} is empty"));
    }
    if value.len() > MD5_MAX_KEY_LEN {
        return Err(format!(
            "key \"password\" of Secret {key} is {} bytes long; TCP MD5 keys are at most {MD5_MAX_KEY_LEN}",
            value.len()
        ));
    }
    String::from_utf8(value.expose().to_vec())
        .map_err(|_| format!("key \"password\" of Secret {key} is not UTF-8 text"))
}

/// Adds `attrs` to the route for `prefix`. When several advertisements cover one prefix, their
/// communities are unioned and the highest local preference wins (Cilium 1.18+).
fn add_route(routes: &mut Advertisements, prefix: Prefix, attrs: &Arc<RouteAttrs>) {
    use std::collections::btree_map::Entry;
    match routes.entry(prefix) {
        Entry::Vacant(e) => {
            e.insert(attrs.clone());
        }
        Entry::Occupied(mut e) => {
            if **e.get() != **attrs {
                let mut merged = (**e.get()).clone();
                merge_attrs(&mut merged, attrs);
                e.insert(Arc::new(merged));
            }
        }
    }
}

fn merge_attrs(into: &mut RouteAttrs, from: &RouteAttrs) {
    into.communities.extend(from.communities.iter().copied());
    into.communities.sort();
    into.communities.dedup();
    into.large_communities.extend(from.large_communities.iter().copied());
    into.large_communities.sort();
    into.large_communities.dedup();
    into.local_pref = into.local_pref.max(from.local_pref);
}

pub(crate) fn net_prefix(net: IpNet) -> Option<Prefix> {
    match net {
        IpNet::V4(n) => Ipv4Prefix::new(n.network(), n.prefix_len()).ok().map(Prefix::V4),
        IpNet::V6(n) => Ipv6Prefix::new(n.network(), n.prefix_len()).ok().map(Prefix::V6),
    }
}

/// This node's pod CIDRs: what the allocator gave it (which honours `spec.podCIDRs`), else the
/// Node's own `spec.podCIDR(s)`.
fn node_pod_cidrs(snap: &Snapshot, node: &str) -> Vec<IpNet> {
    match snap.pods.assignments.get(node) {
        Some(c) if !c.is_empty() => c.clone(),
        _ => snap.model.nodes.get(node).map(|n| n.pod_cidrs()).unwrap_or_default(),
    }
}

fn push_once(problems: &mut Vec<String>, p: String) {
    if !problems.contains(&p) {
        problems.push(p);
    }
}

/// Computes the sessions and routes for this node. Problems (e.g. no router ID, a missing
/// Secret) are returned for the log and status, never panics.
pub fn desired(snap: &Snapshot, node: &str, settings: &BgpSettings) -> (DesiredPeers, Vec<String>) {
    let model = &snap.model;
    let mut out = DesiredPeers::new();
    let mut problems = Vec::new();
    let node_labels = model.nodes.get(node).map(|n| n.metadata.labels.clone()).unwrap_or_default();
    let router_id_fallback = settings.router_id_fallback;
    let pod_cidrs = node_pod_cidrs(snap, node);
    // The first v2 ClusterConfig selecting this node: v1 policies are then ignored.
    let mut v2_config: Option<&str> = None;
    for (cc_name, cc) in &model.bgp_cluster_configs {
        if !cc.spec.node_selector.as_ref().is_none_or(|s| s.matches(&node_labels)) {
            continue;
        }
        v2_config.get_or_insert(cc_name.as_str());
        let Some(rid) = router_id(model, node, router_id_fallback) else {
            problems.push(format!(
                "CiliumBGPClusterConfig {cc_name}: no router ID for node {node} (give the Node an IPv4 InternalIP or \
                 set --bgp-router-id)"
            ));
            continue;
        };
        for inst in &cc.spec.bgp_instances {
            let Some(local_asn) = inst.local_asn else {
                problems.push(format!("CiliumBGPClusterConfig {cc_name}: instance {} has no localASN", inst.name));
                continue;
            };
            'peers: for peer in &inst.peers {
                let Some(addr) = &peer.peer_address else {
                    problems.push(format!(
                        "CiliumBGPClusterConfig {cc_name}: peer {} has no peerAddress (auto-discovery is not supported \
                         yet)",
                        peer.name
                    ));
                    continue;
                };
                let mut cfg = PeerConfig::new(peer.name.clone(), local_asn, rid, addr.addr);
                cfg.peer_asn = peer.peer_asn.filter(|a| *a != 0);
                let pc = peer.peer_config_ref.as_ref().and_then(|r| {
                    let found = model.bgp_peer_configs.get(&r.name);
                    if found.is_none() {
                        problems.push(format!(
                            "CiliumBGPClusterConfig {cc_name}: peer {} refers to CiliumBGPPeerConfig {} which does not \
                             exist",
                            peer.name, r.name
                        ));
                    }
                    found
                });
                // Cilium's defaults when no PeerConfig is referenced: IPv4 and IPv6 unicast, nothing advertised.
                let mut selectors: Vec<(bool, &LabelSelector)> = Vec::new();
                if let Some(pc) = pc {
                    if let Some(secret) = pc.spec.auth_secret_ref.as_deref().filter(|s| !s.is_empty()) {
                        match secret_password(model, &settings.secrets_namespace, secret, None) {
                            Ok(pw) => cfg.password = Some(pw),
                            Err(e) => {
                                problems.push(format!(
                                    "CiliumBGPClusterConfig {cc_name}: peer {}: CiliumBGPPeerConfig {} authSecretRef: \
                                     {e}: the session is not started (its TCP MD5 password is unknown)",
                                    peer.name, pc.metadata.name
                                ));
                                continue 'peers;
                            }
                        }
                    }
                    cfg.port = pc.peer_port();
                    if let Some(gr) = pc.spec.graceful_restart.as_ref().filter(|g| g.enabled) {
                        // Cilium's default restart time is 120 s.
                        cfg.graceful_restart = Some(gr.restart_time_seconds.unwrap_or(120).min(4095) as u16);
                    }
                    // Cilium's `ebgpMultihop` (default 1: directly connected) is the TTL of
                    // eBGP sessions; 1 is already our eBGP default.
                    let hops = pc.ebgp_multihop();
                    if hops > 1 {
                        cfg.multihop_ttl = Some(u8::try_from(hops).unwrap_or(u8::MAX));
                    }
                    cfg.hold_time = u16::try_from(pc.hold_time_seconds()).unwrap_or(u16::MAX);
                    cfg.connect_retry_time = u16::try_from(pc.connect_retry_time_seconds()).unwrap_or(u16::MAX);
                    for fam in &pc.spec.families {
                        if fam.safi != "unicast" {
                            continue;
                        }
                        if let Some(sel) = &fam.advertisements {
                            selectors.push((fam.afi == "ipv4", sel));
                        }
                    }
                }
                let mut routes = Advertisements::new();
                for (is_v4, sel) in selectors {
                    for (adv_name, adv) in
                        model.bgp_advertisements.iter().filter(|(_, a)| sel.matches(&a.metadata.labels))
                    {
                        for entry in &adv.spec.advertisements {
                            let attrs = Arc::new(attrs_of(entry.attributes.as_ref()));
                            match entry.advertisement_type {
                                AdvertisementType::Service => {}
                                // This node's pod CIDRs; the selector does not apply (Cilium).
                                AdvertisementType::PodCIDR => {
                                    if pod_cidrs.is_empty() {
                                        push_once(
                                            &mut problems,
                                            format!(
                                                "CiliumBGPAdvertisement {adv_name}: PodCIDR: node {node} has no pod \
                                                 CIDR (no Node object, or its family has no cluster pool)"
                                            ),
                                        );
                                    }
                                    for net in pod_cidrs.iter().filter(|n| n.addr().is_ipv4() == is_v4) {
                                        if let Some(p) = net_prefix(*net) {
                                            add_route(&mut routes, p, &attrs);
                                        }
                                    }
                                    continue;
                                }
                                other => {
                                    push_once(
                                        &mut problems,
                                        format!(
                                            "CiliumBGPAdvertisement {adv_name}: advertisementType {other:?} is not \
                                             supported yet: nothing advertised for it"
                                        ),
                                    );
                                    continue;
                                }
                            }
                            let Some(svc_opts) = &entry.service else { continue };
                            // A missing selector selects no service (Cilium semantics).
                            let Some(svc_sel) = &entry.selector else { continue };
                            for svc in model.services.values() {
                                if !svc_sel.matches(&translate::selector_labels(svc)) {
                                    continue;
                                }
                                let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
                                let mut ips: Vec<IpAddr> = Vec::new();
                                let external = translate::may_advertise(model, svc, node, false);
                                if external && svc_opts.addresses.contains(&ServiceAddressType::LoadBalancerIP) {
                                    let key = halyard_ipam::ServiceKey::new(ns, svc.metadata.name.clone());
                                    if let Some(st) = snap.lb.services.get(&key) {
                                        ips.extend(st.ips.iter().map(|a| a.ip));
                                    }
                                }
                                if external && svc_opts.addresses.contains(&ServiceAddressType::ExternalIP) {
                                    ips.extend(svc.spec.external_ips.iter().copied());
                                }
                                if svc_opts.addresses.contains(&ServiceAddressType::ClusterIP)
                                    && translate::may_advertise(model, svc, node, true)
                                {
                                    ips.extend(translate::cluster_ips(svc));
                                }
                                for ip in ips.into_iter().filter(|ip| ip.is_ipv4() == is_v4) {
                                    add_route(&mut routes, host_prefix(ip), &attrs);
                                }
                            }
                        }
                    }
                }
                let listen_port = inst.local_port.filter(|p| *p != 0);
                out.insert(format!("{}/{}", inst.name, peer.name), DesiredPeer { cfg, routes, listen_port });
            }
        }
    }
    cilium_v1(snap, node, &node_labels, settings, v2_config, &pod_cidrs, &mut out, &mut problems);
    metallb(snap, node, &node_labels, router_id_fallback, &mut out, &mut problems);
    next_hops(model, node, &mut out, &mut problems);
    (out, problems)
}

/// Prefixes of the other family than the session's need a next hop of their family. IPv6 over
/// an IPv4 session (RFC 4760 §3, RFC 2545 §3) gets the node's IPv6 InternalIP. Without one, or
/// for IPv4 over an IPv6 session (RFC 8950 next hops are not sent), a prefix cannot go out on
/// that session: the session skips it and `halyard bgp routes` does not list it. When no
/// session at all can carry a prefix, that is reported.
fn next_hops(model: &Model, node: &str, out: &mut DesiredPeers, problems: &mut Vec<String>) {
    let node_v6 = translate::node_internal_ipv6(model, node);
    let mut dropped: BTreeMap<Prefix, Vec<String>> = BTreeMap::new();
    let mut carried: std::collections::BTreeSet<Prefix> = Default::default();
    for (name, d) in out.iter_mut() {
        if d.cfg.address.is_ipv4() {
            d.cfg.next_hop_v6 = d.cfg.next_hop_v6.or(node_v6);
        }
        let (v4_ok, v6_ok) = (d.cfg.address.is_ipv4(), d.cfg.address.is_ipv6() || d.cfg.next_hop_v6.is_some());
        for p in d.routes.keys() {
            let ok = match p {
                Prefix::V4(_) => v4_ok,
                Prefix::V6(_) => v6_ok,
            };
            if ok {
                carried.insert(*p);
            } else {
                dropped.entry(*p).or_default().push(name.clone());
            }
        }
    }
    for (p, peers) in dropped {
        if carried.contains(&p) {
            continue;
        }
        let why = match p {
            Prefix::V6(_) => format!(
                "their sessions run over IPv4 and node {node} has no IPv6 InternalIP to send as the next hop (add \
                 one, or peer over IPv6)"
            ),
            Prefix::V4(_) => {
                "their sessions run over IPv6 (RFC 8950 next hops are not sent yet): add an IPv4 peer".into()
            }
        };
        push_once(problems, format!("BGP: {p} is not advertised to {}: {why}", peers.join(", ")));
    }
}

/// The v1 node annotation `cilium.io/bgp-virtual-router.<asn>: "router-id=A.B.C.D,local-port=N"`:
/// the router ID and listening port of that virtual router on this node.
fn v1_node_annotation(
    model: &Model,
    node: &str,
    asn: u32,
    problems: &mut Vec<String>,
) -> (Option<Ipv4Addr>, Option<u16>) {
    let key = format!("cilium.io/bgp-virtual-router.{asn}");
    let Some(value) = model.nodes.get(node).and_then(|n| n.metadata.annotations.get(&key)) else {
        return (None, None);
    };
    let (mut rid, mut port) = (None, None);
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("router-id", v)) => match v.parse() {
                Ok(a) => rid = Some(a),
                Err(_) => {
                    problems.push(format!("Node {node}: annotation {key}: router-id {v:?} is not an IPv4 address"))
                }
            },
            Some(("local-port", v)) => match v.parse::<u16>() {
                Ok(p) if p != 0 => port = Some(p),
                _ => problems.push(format!("Node {node}: annotation {key}: local-port {v:?} is not a port")),
            },
            _ => problems.push(format!("Node {node}: annotation {key}: {part:?} is not router-id=… or local-port=…")),
        }
    }
    (rid, port)
}

/// Attributes from the `advertisedPathAttributes` entries of `selector_type` that apply, given
/// whether an entry's selector matches (`None` selects everything).
fn v1_path_attrs(
    list: &[CiliumBgpPathAttributes],
    selector_type: &str,
    matches: impl Fn(&LabelSelector) -> bool,
) -> Arc<RouteAttrs> {
    let mut attrs = RouteAttrs::default();
    for a in list.iter().filter(|a| a.selector_type == selector_type) {
        if a.selector.as_ref().is_none_or(&matches) {
            let b = BgpAttributes { communities: a.communities.clone(), local_preference: a.local_preference };
            merge_attrs(&mut attrs, &attrs_of(Some(&b)));
        }
    }
    Arc::new(attrs)
}

/// The v1 API, `CiliumBGPPeeringPolicy` (`bgp-control-plane-v1.rst`), used as Cilium does:
/// only when no v2 `CiliumBGPClusterConfig` selects the node, and only when exactly one policy
/// selects it (more than one: none applies). Each virtual router peers with its neighbors and
/// advertises this node's pod CIDRs (`exportPodCIDR`) and the LoadBalancer/External IPs of the
/// Services its `serviceSelector` selects (none without one), with the `advertisedPathAttributes`
/// of type `PodCIDR` (selector on the Node's labels) and `CiliumLoadBalancerIPPool` (selector
/// on the labels of the pool the IP came from).
#[allow(clippy::too_many_arguments)]
fn cilium_v1(
    snap: &Snapshot,
    node: &str,
    node_labels: &BTreeMap<String, String>,
    settings: &BgpSettings,
    v2_config: Option<&str>,
    pod_cidrs: &[IpNet],
    out: &mut DesiredPeers,
    problems: &mut Vec<String>,
) {
    let model = &snap.model;
    // An empty or missing nodeSelector selects every node.
    let matching: Vec<(&String, &CiliumBgpPeeringPolicy)> = model
        .bgp_peering_policies
        .iter()
        .filter(|(_, p)| p.spec.node_selector.as_ref().is_none_or(|s| s.matches(node_labels)))
        .collect();
    let names = || matching.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    match (matching.len(), v2_config) {
        (0, _) => return,
        (_, Some(cc)) => {
            problems.push(format!(
                "CiliumBGPPeeringPolicy {}: ignored on node {node}, which CiliumBGPClusterConfig {cc} selects: the v2 \
                 API takes precedence over v1 policies (as in Cilium)",
                names()
            ));
            return;
        }
        (1, None) => {}
        (_, None) => {
            problems.push(format!(
                "CiliumBGPPeeringPolicy {}: more than one policy selects node {node}, so none applies and no v1 \
                 session runs (as in Cilium)",
                names()
            ));
            return;
        }
    }
    let (pname, policy) = matching[0];
    let no_labels = BTreeMap::new();
    for vr in &policy.spec.virtual_routers {
        let asn = vr.local_asn;
        let (ann_rid, listen_port) = v1_node_annotation(model, node, asn, problems);
        let Some(rid) = ann_rid.or_else(|| router_id(model, node, settings.router_id_fallback)) else {
            problems.push(format!(
                "CiliumBGPPeeringPolicy {pname}: virtual router {asn}: no router ID for node {node} (give the Node an \
                 IPv4 InternalIP, the annotation cilium.io/bgp-virtual-router.{asn}=\"router-id=…\", or set \
                 --bgp-router-id)"
            ));
            continue;
        };
        if vr.pod_ip_pool_selector.is_some() {
            push_once(
                problems,
                format!(
                    "CiliumBGPPeeringPolicy {pname}: virtual router {asn}: podIPPoolSelector (multi-pool IPAM) is not \
                     supported: nothing advertised for it"
                ),
            );
        }
        let addr_types = vr.service_advertisements();
        'neighbors: for n in &vr.neighbors {
            let addr = n.peer_ip();
            let key = format!("{pname}/{asn}/{addr}");
            let mut cfg = PeerConfig::new(key.clone(), asn, rid, addr);
            cfg.peer_asn = Some(n.peer_asn).filter(|a| *a != 0);
            cfg.port = n.peer_port.filter(|p| *p != 0).unwrap_or(179);
            // Cilium's defaults (bgpp_types.go): hold 90 s, connect retry 120 s, TTL 1.
            cfg.hold_time = u16::try_from(n.hold_time_seconds.unwrap_or(90)).unwrap_or(u16::MAX);
            cfg.connect_retry_time = u16::try_from(n.connect_retry_time_seconds.unwrap_or(120)).unwrap_or(u16::MAX);
            if let Some(ttl) = n.ebgp_multihop_ttl.filter(|t| *t > 1) {
                cfg.multihop_ttl = Some(u8::try_from(ttl).unwrap_or(u8::MAX));
            }
            if let Some(gr) = n.graceful_restart.as_ref().filter(|g| g.enabled) {
                cfg.graceful_restart = Some(gr.restart_time_seconds.unwrap_or(120).min(4095) as u16);
            }
            if let Some(secret) = n.auth_secret_ref.as_deref().filter(|s| !s.is_empty()) {
                match secret_password(model, &settings.secrets_namespace, secret, None) {
                    Ok(pw) => cfg.password = Some(pw),
                    Err(e) => {
                        problems.push(format!(
                            "CiliumBGPPeeringPolicy {pname}: neighbor {}: authSecretRef: {e}: the session is not \
                             started (its TCP MD5 password is unknown)",
                            n.peer_address
                        ));
                        continue 'neighbors;
                    }
                }
            }
            // Families: IPv4 and IPv6 unicast unless listed.
            let (mut v4, mut v6) = (n.families.is_empty(), n.families.is_empty());
            for f in n.families.iter().filter(|f| f.safi == "unicast") {
                v4 |= f.afi == "ipv4";
                v6 |= f.afi == "ipv6";
            }
            let family_ok = |ip: IpAddr| if ip.is_ipv4() { v4 } else { v6 };
            let attrs_list = &n.advertised_path_attributes;
            let mut routes = Advertisements::new();
            if vr.export_pod_cidr == Some(true) {
                if pod_cidrs.is_empty() {
                    push_once(
                        problems,
                        format!("CiliumBGPPeeringPolicy {pname}: exportPodCIDR: node {node} has no pod CIDR"),
                    );
                }
                let attrs = v1_path_attrs(attrs_list, "PodCIDR", |s| s.matches(node_labels));
                for net in pod_cidrs.iter().filter(|c| family_ok(c.addr())) {
                    if let Some(p) = net_prefix(*net) {
                        add_route(&mut routes, p, &attrs);
                    }
                }
            }
            // Services: Cilium's "match nothing" default without a serviceSelector.
            if let Some(sel) = &vr.service_selector {
                let plain = Arc::new(RouteAttrs::default());
                for svc in model.services.values().filter(|s| sel.matches(&translate::selector_labels(s))) {
                    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
                    if addr_types.contains(&ServiceAddressType::ClusterIP)
                        && translate::may_advertise(model, svc, node, true)
                    {
                        for ip in translate::cluster_ips(svc).into_iter().filter(|ip| family_ok(*ip)) {
                            add_route(&mut routes, host_prefix(ip), &plain);
                        }
                    }
                    if !translate::may_advertise(model, svc, node, false) {
                        continue;
                    }
                    if addr_types.contains(&ServiceAddressType::LoadBalancerIP) {
                        let skey = halyard_ipam::ServiceKey::new(ns, svc.metadata.name.clone());
                        for asg in snap.lb.services.get(&skey).map(|st| st.ips.as_slice()).unwrap_or_default() {
                            if !family_ok(asg.ip) {
                                continue;
                            }
                            let pool = model.cilium_pools.get(&asg.pool).filter(|p| !p.spec.disabled);
                            let pool_labels = pool.map_or(&no_labels, |p| &p.metadata.labels);
                            let attrs = match pool {
                                Some(_) => {
                                    v1_path_attrs(attrs_list, "CiliumLoadBalancerIPPool", |s| s.matches(pool_labels))
                                }
                                None => plain.clone(),
                            };
                            add_route(&mut routes, host_prefix(asg.ip), &attrs);
                        }
                    }
                    if addr_types.contains(&ServiceAddressType::ExternalIP) {
                        for ip in svc.spec.external_ips.iter().copied().filter(|ip| family_ok(*ip)) {
                            add_route(&mut routes, host_prefix(ip), &plain);
                        }
                    }
                }
            }
            out.insert(key, DesiredPeer { cfg, routes, listen_port });
        }
    }
}

/// Adds to `attrs` the MetalLB community strings: `ASN:VALUE`, `large:A:B:C`, or an alias
/// defined by a `Community` object.
fn metallb_communities(model: &Model, list: &[String], attrs: &mut RouteAttrs, problems: &mut Vec<String>) {
    use halyard_model::MetalLbCommunity;
    for c in list {
        let mut parsed = halyard_model::parse_metallb_community(c);
        if let Ok(MetalLbCommunity::Alias(name)) = &parsed {
            let value = model.metallb_communities.values().flat_map(|o| &o.spec.communities).find(|a| a.name == *name);
            parsed = match value {
                Some(a) => halyard_model::parse_metallb_community(&a.value),
                None => Err(format!("community alias {name:?} is not defined by any Community object")),
            };
        }
        match parsed {
            Ok(MetalLbCommunity::Standard(v)) => attrs.communities.push(Community(v)),
            Ok(MetalLbCommunity::Large([g, a, b])) => {
                attrs.large_communities.push(LargeCommunity { global_admin: g, local_data1: a, local_data2: b })
            }
            Ok(MetalLbCommunity::Alias(name)) => {
                problems.push(format!("community alias {name:?} refers to another alias"))
            }
            Err(e) => problems.push(format!("BGPAdvertisement community {c:?}: {e}")),
        }
    }
}

/// MetalLB BGP mode (`website/content/configuration/_advanced_bgp_configuration.md`): every
/// `BGPPeer` selecting this node is a session; each `BGPAdvertisement` selecting this node (and
/// the peer, when it names peers) announces the IPs allocated from its pools (all pools when it
/// names none), aggregated to `aggregationLength`, with its communities and local preference.
fn metallb(
    snap: &Snapshot,
    node: &str,
    node_labels: &BTreeMap<String, String>,
    router_id_fallback: Option<Ipv4Addr>,
    out: &mut DesiredPeers,
    problems: &mut Vec<String>,
) {
    let model = &snap.model;
    let selects_node = |sels: &[LabelSelector]| translate::any_selector(sels, node_labels);
    for (key, peer) in &model.metallb_bgp_peers {
        let spec = &peer.spec;
        if !selects_node(&spec.node_selectors) {
            continue;
        }
        let Some(address) = spec.peer_address else {
            problems.push(format!("BGPPeer {key}: no peerAddress (interface peering is not supported yet)"));
            continue;
        };
        let Some(rid) = spec.router_id.or_else(|| router_id(model, node, router_id_fallback)) else {
            problems.push(format!("BGPPeer {key}: no router ID for node {node} (set routerID, or --bgp-router-id)"));
            continue;
        };
        let mut cfg = PeerConfig::new(key.name.clone(), spec.my_asn, rid, address);
        cfg.peer_asn = spec.peer_asn.filter(|a| *a != 0);
        cfg.port = spec.peer_port.unwrap_or(179);
        if let Some(h) = &spec.hold_time {
            cfg.hold_time = u16::try_from(h.0.as_secs()).unwrap_or(u16::MAX);
        }
        if let Some(c) = &spec.connect_time {
            cfg.connect_retry_time = u16::try_from(c.0.as_secs().max(1)).unwrap_or(u16::MAX);
        }
        cfg.password = spec.password.clone();
        if spec.enable_graceful_restart {
            cfg.graceful_restart = Some(120);
        }
        if spec.ebgp_multi_hop {
            // MetalLB renders `neighbor X ebgp-multihop` for FRR, whose TTL is then 255.
            cfg.multihop_ttl = Some(255);
        }
        if let Some(profile) = &spec.bfd_profile {
            cfg.bfd = metallb_bfd(model, key, profile, spec.ebgp_multi_hop, problems);
        }
        // `passwordSecret`: a kubernetes.io/basic-auth Secret, key `password`, in the peer's
        // namespace unless the reference names one.
        if let Some(name) = spec.password_secret.as_ref().and_then(|r| r.name.as_deref()) {
            let ns = spec.password_secret.as_ref().and_then(|r| r.namespace.as_deref()).unwrap_or(&key.namespace);
            match secret_password(model, ns, name, Some(halyard_model::SECRET_TYPE_BASIC_AUTH)) {
                Ok(pw) => cfg.password = Some(pw),
                Err(e) => {
                    problems.push(format!(
                        "BGPPeer {key}: passwordSecret: {e}: the session is not started (its TCP MD5 password is \
                         unknown)"
                    ));
                    continue;
                }
            }
        }
        let mut routes = Advertisements::new();
        let no_labels = BTreeMap::new();
        for adv in model.metallb_bgp_advertisements.values() {
            let a = &adv.spec;
            if !selects_node(&a.node_selectors) || !(a.peers.is_empty() || a.peers.contains(&key.name)) {
                continue;
            }
            let pools = translate::metallb_pools(model, &a.ip_address_pools, &a.ip_address_pool_selectors);
            let mut attrs = RouteAttrs { local_pref: a.local_pref, ..RouteAttrs::default() };
            metallb_communities(model, &a.communities, &mut attrs, problems);
            let attrs = Arc::new(attrs);
            for (skey, st) in &snap.lb.services {
                let svc = model.services.get(skey);
                let labels = svc.map_or(&no_labels, |s| &s.metadata.labels);
                if !translate::any_selector(&a.service_selectors, labels) {
                    continue;
                }
                // externalTrafficPolicy: Local: only nodes with a ready endpoint announce.
                if svc.is_some_and(|s| !translate::may_advertise(model, s, node, false)) {
                    continue;
                }
                for asg in st.ips.iter().filter(|x| pools.contains(x.pool.as_str())) {
                    let prefix = match asg.ip {
                        IpAddr::V4(ip) => {
                            Ipv4Prefix::new(ip, a.aggregation_length.unwrap_or(32).min(32)).map(Prefix::V4).ok()
                        }
                        IpAddr::V6(ip) => {
                            Ipv6Prefix::new(ip, a.aggregation_length_v6.unwrap_or(128).min(128)).map(Prefix::V6).ok()
                        }
                    };
                    if let Some(p) = prefix {
                        routes.entry(p).or_insert_with(|| attrs.clone());
                    }
                }
            }
        }
        out.insert(format!("metallb/{}", key.name), DesiredPeer { cfg, routes, listen_port: None });
    }
}

/// A MetalLB `BFDProfile` (same namespace as the `BGPPeer`) as our BFD settings, with MetalLB's
/// defaults (`api/v1beta1/bfdprofile_types.go`: 300 ms / 300 ms / 3). What we cannot do is
/// reported: a missing profile (the session then runs without BFD, like the other missing
/// references here), passive and echo mode (RFC 5880 §6.1, §6.4), a multihop peer (our BFD is
/// single-hop, RFC 5881).
fn metallb_bfd(
    model: &Model,
    peer: &halyard_model::NamespacedName,
    profile: &str,
    multihop: bool,
    problems: &mut Vec<String>,
) -> Option<BfdConfig> {
    let pkey = halyard_model::NamespacedName::new(peer.namespace.clone(), profile);
    let Some(p) = model.metallb_bfd_profiles.get(&pkey) else {
        problems.push(format!(
            "BGPPeer {peer}: bfdProfile {profile:?} refers to BFDProfile {pkey} which does not exist: the session runs \
             without BFD"
        ));
        return None;
    };
    let s = &p.spec;
    if s.passive_mode == Some(true) {
        problems.push(format!(
            "BGPPeer {peer}: BFDProfile {pkey}: passiveMode is not supported: BFD sends control packets from the start \
             (active role)"
        ));
    }
    if s.echo_mode == Some(true) {
        problems.push(format!(
            "BGPPeer {peer}: BFDProfile {pkey}: echoMode is not supported (no BFD Echo function): only control packets \
             are used"
        ));
    }
    if multihop {
        problems.push(format!(
            "BGPPeer {peer}: BFDProfile {pkey}: BFD is single-hop only (RFC 5881) and this peer is ebgpMultiHop: BFD \
             comes up only if the peer is directly connected"
        ));
    }
    match BfdConfig::new(
        s.transmit_interval.unwrap_or(300),
        s.receive_interval.unwrap_or(300),
        s.detect_multiplier.unwrap_or(3),
    ) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("BGPPeer {peer}: BFDProfile {pkey}: {e}: the session runs without BFD"));
            None
        }
    }
}

struct Running {
    cfg: PeerConfig,
    listen_port: Option<u16>,
    routes: watch::Sender<Arc<Advertisements>>,
    /// Configuration changes the session applies without a reset.
    update: watch::Sender<PeerConfig>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Status of every running peer, read by the API.
pub type PeerStatuses = Arc<Mutex<BTreeMap<String, (PeerConfig, Arc<Mutex<PeerStatus>>)>>>;

/// Keeps sessions in step with each new snapshot.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    node: String,
    settings: BgpSettings,
    statuses: PeerStatuses,
    learned: tokio::sync::mpsc::UnboundedSender<halyard_bgp::session::Learned>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut last_problems = Vec::new();
    let incoming = IncomingRoutes::default();
    // Port → the peers (MD5 keys, TTL rules) its listener was set up for, and its task.
    let mut listeners: BTreeMap<u16, (Vec<ListenPeer>, tokio::task::JoinHandle<()>)> = BTreeMap::new();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        let (want, problems) = desired(&snap, &node, &settings);
        if problems != last_problems {
            for p in &problems {
                tracing::warn!("BGP: {p}");
            }
            last_problems = problems;
        }
        // Stop sessions no longer wanted, or whose session parameters changed in a way that
        // needs a new session (what OPEN negotiates or the TCP connection carries; see
        // `PeerConfig::needs_reset`). Other changes go to the running session.
        let stale: Vec<String> = running
            .iter()
            .filter(|(k, r)| want.get(*k).is_none_or(|d| r.cfg.needs_reset(&d.cfg) || d.listen_port != r.listen_port))
            .map(|(k, _)| k.clone())
            .collect();
        for (k, r) in running.iter_mut() {
            if let Some(d) = want.get(k)
                && d.cfg != r.cfg
                && !stale.contains(k)
            {
                tracing::info!(peer = %k, "BGP peer settings changed: applied to the running session (no reset)");
                r.cfg = d.cfg.clone();
                let _ = r.update.send(d.cfg.clone());
                if let Some(entry) = statuses.lock().unwrap_or_else(|e| e.into_inner()).get_mut(k) {
                    entry.0 = d.cfg.clone();
                }
            }
        }
        for k in stale {
            if let Some(r) = running.remove(&k) {
                tracing::info!(peer = %k, "BGP peer removed or reconfigured: stopping its session");
                let _ = r.stop.send(true);
                let _ = r.task.await;
                statuses.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
                incoming.lock().unwrap_or_else(|e| e.into_inner()).remove(&r.cfg.address);
            }
        }
        // One listener per port some instance asks for; stopped when no peer needs it, and
        // set up again when its peers change (their MD5 keys are set on the listening socket).
        let mut ports: BTreeMap<u16, Vec<ListenPeer>> = BTreeMap::new();
        for d in want.values() {
            if let Some(port) = d.listen_port {
                ports.entry(port).or_default().push(ListenPeer::from(&d.cfg));
            }
        }
        let outdated: Vec<u16> = listeners
            .iter()
            .filter(|(port, (peers, task))| ports.get(*port) != Some(peers) || task.is_finished())
            .map(|(port, _)| *port)
            .collect();
        for port in outdated {
            if let Some((_, task)) = listeners.remove(&port) {
                task.abort();
                // Wait until the socket is closed, so that the port can be bound again.
                let _ = task.await;
            }
        }
        for (port, configs) in ports {
            listeners.entry(port).or_insert_with(|| {
                let inc = incoming.clone();
                let peers = configs.clone();
                let task = tokio::spawn(async move {
                    let addr = std::net::SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port);
                    if let Err(e) = listen(addr, inc, peers).await {
                        tracing::error!(port, "BGP listener failed: {e}");
                    }
                });
                (configs, task)
            });
        }
        for (k, d) in want {
            match running.get(&k) {
                // Route changes go out as UPDATEs on the live session.
                Some(r) => {
                    if **r.routes.borrow() != d.routes {
                        let _ = r.routes.send(Arc::new(d.routes));
                    }
                }
                None => {
                    tracing::info!(peer = %k, address = %d.cfg.address, "starting BGP session");
                    let (routes_tx, routes_rx) = watch::channel(Arc::new(d.routes));
                    let (stop_tx, stop_rx) = watch::channel(false);
                    let status = Arc::new(Mutex::new(PeerStatus::default()));
                    statuses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(k.clone(), (d.cfg.clone(), status.clone()));
                    let accept = d.listen_port.map(|_| {
                        let (tx, rx) = tokio::sync::mpsc::channel(4);
                        incoming.lock().unwrap_or_else(|e| e.into_inner()).insert(d.cfg.address, tx);
                        rx
                    });
                    let (update_tx, update_rx) = watch::channel(d.cfg.clone());
                    let ch = PeerChannels {
                        routes: routes_rx.into(),
                        status,
                        stop: stop_rx,
                        incoming: accept,
                        learned: Some(learned.clone()),
                        update: Some(update_rx),
                    };
                    let task = tokio::spawn(run_peer(d.cfg.clone(), ch));
                    let listen_port = d.listen_port;
                    running.insert(
                        k,
                        Running { cfg: d.cfg, listen_port, routes: routes_tx, update: update_tx, stop: stop_tx, task },
                    );
                }
            }
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    for (_, (_, t)) in listeners {
        t.abort();
    }
    // The agent is shutting down: send Cease on every session.
    for (_, r) in running {
        let _ = r.stop.send(true);
        let _ = r.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model, with LB-IPAM run over it as the agent does.
    fn snapshot(yaml: &str) -> Snapshot {
        let parsed = halyard_model::parse_manifest(std::path::Path::new("t.yaml"), yaml).expect("parses");
        let model = halyard_model::Model::from_objects(parsed.objects);
        let lb = halyard_ipam::reconcile(
            &halyard_ipam::LbIpamConfig::default(),
            &translate::pools(&model),
            &translate::services(&model),
            &Default::default(),
        );
        Snapshot { model, lb, ..Default::default() }
    }

    fn settings() -> BgpSettings {
        BgpSettings { router_id_fallback: Some(Ipv4Addr::new(10, 0, 0, 2)), ..BgpSettings::default() }
    }

    const METALLB_PEER: &str = r#"
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: tor, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 65000, peerAddress: 10.0.0.1, routerID: 10.0.0.2}
"#;

    const PROFILE: &str = r#"
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec: {transmitInterval: 100, receiveInterval: 200, detectMultiplier: 5}
"#;

    fn metallb_peer(yaml: &str) -> (PeerConfig, Vec<String>) {
        let (peers, problems) = desired(&snapshot(yaml), "n1", &BgpSettings::default());
        (peers["metallb/tor"].cfg.clone(), problems)
    }

    #[test]
    fn metallb_ebgp_multihop_is_ttl_255() {
        let (cfg, problems) = metallb_peer(METALLB_PEER);
        assert_eq!((cfg.multihop_ttl, cfg.ttl_security, cfg.bfd), (None, false, None));
        assert!(problems.is_empty(), "{problems:?}");
        let (cfg, _) =
            metallb_peer(&METALLB_PEER.replace("routerID: 10.0.0.2", "routerID: 10.0.0.2, ebgpMultiHop: true"));
        assert_eq!(cfg.multihop_ttl, Some(255));
        assert_eq!(cfg.ttl_policy().ttl, Some(255));
    }

    #[test]
    fn metallb_bfd_profile_becomes_the_bfd_config() {
        let with_ref = METALLB_PEER.replace("routerID: 10.0.0.2", "routerID: 10.0.0.2, bfdProfile: fast");
        let (cfg, problems) = metallb_peer(&format!("{with_ref}{PROFILE}"));
        assert_eq!(cfg.bfd, Some(BfdConfig::new(100, 200, 5).unwrap()));
        assert!(problems.is_empty(), "{problems:?}");

        // MetalLB's defaults for what the profile leaves out.
        let empty =
            PROFILE.replace("spec: {transmitInterval: 100, receiveInterval: 200, detectMultiplier: 5}", "spec: {}");
        let (cfg, _) = metallb_peer(&format!("{with_ref}{empty}"));
        assert_eq!(cfg.bfd, Some(BfdConfig::new(300, 300, 3).unwrap()));

        // Passive and echo mode are reported, BFD still runs.
        let modes = PROFILE.replace("detectMultiplier: 5}", "detectMultiplier: 5, passiveMode: true, echoMode: true}");
        let (cfg, problems) = metallb_peer(&format!("{with_ref}{modes}"));
        assert!(cfg.bfd.is_some());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0]
                .contains("BGPPeer metallb-system/tor: BFDProfile metallb-system/fast: passiveMode is not supported")
        );
        assert!(problems[1].contains("echoMode is not supported"), "{problems:?}");
    }

    #[test]
    fn a_missing_bfd_profile_is_reported_and_the_peer_runs_without_bfd() {
        let with_ref = METALLB_PEER.replace("routerID: 10.0.0.2", "routerID: 10.0.0.2, bfdProfile: nope");
        let (cfg, problems) = metallb_peer(&format!("{with_ref}{PROFILE}"));
        assert_eq!(cfg.bfd, None);
        assert_eq!(
            problems,
            [
                "BGPPeer metallb-system/tor: bfdProfile \"nope\" refers to BFDProfile metallb-system/nope which does not \
              exist: the session runs without BFD"
            ]
        );
        // A profile of the same name in another namespace does not count.
        let other = PROFILE.replace("name: fast, namespace: metallb-system", "name: nope, namespace: other");
        let (cfg, problems) = metallb_peer(&format!("{with_ref}{other}"));
        assert_eq!((cfg.bfd, problems.len()), (None, 1));
    }

    const CILIUM: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {name: lab}
spec:
  bgpInstances:
    - name: main
      localASN: 65001
      peers:
        - {name: router, peerASN: 65000, peerAddress: 10.0.0.1, peerConfigRef: {name: router}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {name: router}
spec: {}
"#;

    #[test]
    fn cilium_ebgp_multihop_sets_the_ttl_above_one() {
        let cfg = |yaml: &str| desired(&snapshot(yaml), "n1", &settings()).0["main/router"].cfg.clone();
        let c = cfg(CILIUM);
        assert_eq!(c.multihop_ttl, None);
        assert_eq!(c.ttl_policy().ttl, Some(1), "eBGP default");
        assert_eq!(cfg(&CILIUM.replace("spec: {}", "spec: {ebgpMultihop: 1}")).multihop_ttl, None);
        assert_eq!(cfg(&CILIUM.replace("spec: {}", "spec: {ebgpMultihop: 4}")).multihop_ttl, Some(4));
    }

    // ------------------------------------------------------------------------------------------
    // TCP MD5 passwords from Secrets
    // ------------------------------------------------------------------------------------------

    const AUTH_SECRET: &str = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: bgp-auth, namespace: kube-system}
type: Opaque
stringData: {password: t0p-s3cret}
"#;

    fn with_auth(yaml: &str) -> String {
        yaml.replace(
            "kind: CiliumBGPPeerConfig\nmetadata: {name: router}\nspec: {}",
            "kind: CiliumBGPPeerConfig\nmetadata: {name: router}\nspec: {authSecretRef: bgp-auth}",
        )
    }

    #[test]
    fn cilium_auth_secret_ref_sets_the_md5_password() {
        let yaml = format!("{}{AUTH_SECRET}", with_auth(CILIUM));
        let (peers, problems) = desired(&snapshot(&yaml), "n1", &settings());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(peers["main/router"].cfg.password.as_deref(), Some("t0p-s3cret"));
        // base64 `data` works the same.
        let data = AUTH_SECRET.replace("stringData: {password: t0p-s3cret}", "data: {password: dDBwLXMzY3JldA==}");
        let (peers, _) = desired(&snapshot(&format!("{}{data}", with_auth(CILIUM))), "n1", &settings());
        assert_eq!(peers["main/router"].cfg.password.as_deref(), Some("t0p-s3cret"));
    }

    #[test]
    fn cilium_auth_secret_in_another_namespace_needs_the_flag() {
        let secret = AUTH_SECRET.replace("namespace: kube-system", "namespace: cilium-bgp");
        let yaml = format!("{}{secret}", with_auth(CILIUM));
        let (peers, problems) = desired(&snapshot(&yaml), "n1", &settings());
        assert!(!peers.contains_key("main/router"), "not started without its password");
        assert_eq!(
            problems,
            ["CiliumBGPClusterConfig lab: peer router: CiliumBGPPeerConfig router authSecretRef: Secret \
              kube-system/bgp-auth does not exist: the session is not started (its TCP MD5 password is unknown)"]
        );
        let ns = BgpSettings { secrets_namespace: "cilium-bgp".into(), ..settings() };
        let (peers, problems) = desired(&snapshot(&yaml), "n1", &ns);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(peers["main/router"].cfg.password.as_deref(), Some("t0p-s3cret"));
    }

    #[test]
    fn a_secret_without_password_key_is_reported_without_its_values() {
        let secret = AUTH_SECRET.replace("{password: t0p-s3cret}", "{passwd: t0p-s3cret}");
        let (peers, problems) = desired(&snapshot(&format!("{}{secret}", with_auth(CILIUM))), "n1", &settings());
        assert!(peers.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("CiliumBGPPeerConfig router"), "{problems:?}");
        assert!(problems[0].contains("Secret kube-system/bgp-auth has no key \"password\""), "{problems:?}");
        assert!(!problems[0].contains("t0p-s3cret"));
        // Too long for the kernel, or empty: reported, value not shown.
        let long = AUTH_SECRET.replace("t0p-s3cret", &"x".repeat(81));
        let (_, problems) = desired(&snapshot(&format!("{}{long}", with_auth(CILIUM))), "n1", &settings());
        assert!(problems[0].contains("81 bytes long") && !problems[0].contains("xxxx"), "{problems:?}");
        let empty = AUTH_SECRET.replace("t0p-s3cret", "\"\"");
        let (_, problems) = desired(&snapshot(&format!("{}{empty}", with_auth(CILIUM))), "n1", &settings());
        assert!(problems[0].contains("is empty"), "{problems:?}");
    }

    #[test]
    fn metallb_password_secret_is_a_basic_auth_secret() {
        let secret = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: tor-pw, namespace: metallb-system}
type: kubernetes.io/basic-auth
data: {password: cGFzc3dvcmQx}
"#;
        let peer = METALLB_PEER.replace("routerID: 10.0.0.2", "routerID: 10.0.0.2, passwordSecret: {name: tor-pw}");
        let (cfg, problems) = metallb_peer(&format!("{peer}{secret}"));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(cfg.password.as_deref(), Some("password1"));
        // Explicit namespace in the reference.
        let other = secret.replace("namespace: metallb-system", "namespace: secrets");
        let peer2 = peer.replace("{name: tor-pw}", "{name: tor-pw, namespace: secrets}");
        assert_eq!(metallb_peer(&format!("{peer2}{other}")).0.password.as_deref(), Some("password1"));
        // Wrong type, or missing: not started.
        let opaque = secret.replace("kubernetes.io/basic-auth", "Opaque");
        let (peers, problems) = desired(&snapshot(&format!("{peer}{opaque}")), "n1", &settings());
        assert!(peers.is_empty());
        assert_eq!(
            problems,
            ["BGPPeer metallb-system/tor: passwordSecret: Secret metallb-system/tor-pw has type Opaque, not \
              kubernetes.io/basic-auth: the session is not started (its TCP MD5 password is unknown)"]
        );
        let (peers, problems) = desired(&snapshot(&peer), "n1", &settings());
        assert!(
            peers.is_empty() && problems[0].contains("Secret metallb-system/tor-pw does not exist"),
            "{problems:?}"
        );
    }

    // ------------------------------------------------------------------------------------------
    // PodCIDR advertisements
    // ------------------------------------------------------------------------------------------

    const POD_CIDR: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {rack: r1}}
spec: {podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]}
status: {addresses: [{type: InternalIP, address: 10.0.0.2}]}
---
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {name: lab}
spec:
  bgpInstances:
    - name: main
      localASN: 65001
      peers:
        - {name: router, peerASN: 65001, peerAddress: 10.0.0.1, peerConfigRef: {name: router}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {name: router}
spec:
  families:
    - {afi: ipv4, safi: unicast, advertisements: {matchLabels: {advertise: bgp}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPAdvertisement
metadata: {name: pods, labels: {advertise: bgp}}
spec:
  advertisements:
    - advertisementType: PodCIDR
      attributes:
        communities: {standard: ["65001:200"]}
        localPreference: 150
"#;

    fn prefix(s: &str) -> Prefix {
        net_prefix(s.parse().unwrap()).unwrap()
    }

    #[test]
    fn pod_cidr_advertisement_announces_this_nodes_cidrs_per_family() {
        let (peers, problems) = desired(&snapshot(POD_CIDR), "n1", &settings());
        assert!(problems.is_empty(), "{problems:?}");
        let routes = &peers["main/router"].routes;
        assert_eq!(routes.keys().copied().collect::<Vec<_>>(), [prefix("10.244.1.0/24")], "ipv4 family only");
        let attrs = &routes[&prefix("10.244.1.0/24")];
        assert_eq!(attrs.communities, [Community(65001 << 16 | 200)]);
        assert_eq!(attrs.local_pref, Some(150));
        // Both families.
        let both = POD_CIDR.replace(
            "    - {afi: ipv4, safi: unicast, advertisements: {matchLabels: {advertise: bgp}}}",
            "    - {afi: ipv4, safi: unicast, advertisements: {matchLabels: {advertise: bgp}}}\n    - {afi: ipv6, \
             safi: unicast, advertisements: {matchLabels: {advertise: bgp}}}",
        );
        let (peers, _) = desired(&snapshot(&both), "n1", &settings());
        assert_eq!(peers["main/router"].routes.len(), 2);
        assert!(peers["main/router"].routes.contains_key(&prefix("fd00:244:1::/64")));
    }

    /// ClusterIP advertisements, and the traffic policies: with `Local`, only a node with a
    /// ready endpoint of the service advertises it (LB IPs for `externalTrafficPolicy`,
    /// ClusterIPs for `internalTrafficPolicy`).
    #[test]
    fn cluster_ips_and_local_traffic_policies() {
        let services = r#"
---
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lb}
spec: {blocks: [{cidr: 172.20.0.0/28}]}
---
apiVersion: cilium.io/v2
kind: CiliumBGPAdvertisement
metadata: {name: svc, labels: {advertise: bgp}}
spec:
  advertisements:
    - advertisementType: Service
      service: {addresses: [LoadBalancerIP, ClusterIP]}
      selector: {matchLabels: {bgp: "on"}}
---
apiVersion: v1
kind: Service
metadata: {name: cluster, namespace: default, labels: {bgp: "on"}}
spec: {type: LoadBalancer, clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10], ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: here, namespace: default, labels: {bgp: "on"}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: default, labels: {bgp: "on"}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.12
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default, labels: {bgp: "on"}}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: here-1, namespace: default, labels: {kubernetes.io/service-name: here}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.5], nodeName: n1, conditions: {ready: true}}]
ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: elsewhere-1, namespace: default, labels: {kubernetes.io/service-name: elsewhere}}
addressType: IPv4
endpoints: [{addresses: [10.244.2.5], nodeName: n2, conditions: {ready: true}}]
ports: [{port: 80}]
"#;
        let yaml = format!("{}{services}", POD_CIDR.replace("name: pods, labels: {advertise: bgp}", "name: pods"));
        let snap = snapshot(&yaml);
        let (peers, problems) = desired(&snap, "n1", &settings());
        assert!(problems.is_empty(), "{problems:?}");
        let routes: Vec<String> = peers["main/router"].routes.keys().map(|p| p.to_string()).collect();
        let ip = |name: &str| snap.lb.services[&halyard_ipam::ServiceKey::new("default", name)].ips[0].ip;
        let mut want = vec![
            "10.96.0.10/32".to_string(),
            "10.96.0.11/32".to_string(),
            format!("{}/32", ip("cluster")),
            format!("{}/32", ip("here")),
        ];
        want.sort_by_key(|p| p.parse::<Prefix>().unwrap());
        assert_eq!(routes, want, "elsewhere (Local, no endpoint on n1) and headless are not advertised");
    }

    #[test]
    fn pod_cidr_comes_from_the_allocator_first() {
        let yaml = POD_CIDR.replace("spec: {podCIDRs: [10.244.1.0/24, \"fd00:244:1::/64\"]}\n", "");
        let mut snap = snapshot(&yaml);
        let (peers, problems) = desired(&snap, "n1", &settings());
        assert!(peers["main/router"].routes.is_empty());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("PodCIDR: node n1 has no pod CIDR"), "{problems:?}");
        snap.pods.assignments.insert("n1".into(), vec!["10.0.7.0/24".parse().unwrap()]);
        let (peers, problems) = desired(&snap, "n1", &settings());
        assert!(problems.is_empty(), "{problems:?}");
        assert!(peers["main/router"].routes.contains_key(&prefix("10.0.7.0/24")));
    }

    #[test]
    fn overlapping_advertisements_merge_communities_and_keep_the_highest_local_pref() {
        let second = r#"
---
apiVersion: cilium.io/v2
kind: CiliumBGPAdvertisement
metadata: {name: pods-2, labels: {advertise: bgp}}
spec:
  advertisements:
    - advertisementType: PodCIDR
      attributes:
        communities: {standard: ["65001:300"], large: ["65001:1:1"]}
        localPreference: 120
"#;
        let (peers, _) = desired(&snapshot(&format!("{POD_CIDR}{second}")), "n1", &settings());
        let attrs = &peers["main/router"].routes[&prefix("10.244.1.0/24")];
        assert_eq!(attrs.communities, [Community(65001 << 16 | 200), Community(65001 << 16 | 300)]);
        assert_eq!(attrs.large_communities.len(), 1);
        assert_eq!(attrs.local_pref, Some(150));
    }

    // ------------------------------------------------------------------------------------------
    // v1 CiliumBGPPeeringPolicy
    // ------------------------------------------------------------------------------------------

    /// In the shape of Cilium's `bgp-control-plane-v1.rst` examples.
    const V1: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {rack: rack0}}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 10.0.0.2}]}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: blue, labels: {color: blue}}
spec:
  blocks: [{cidr: 172.30.0.0/28}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, labels: {bgp: announce}}
spec: {type: LoadBalancer, ports: [{port: 80}], externalIPs: [198.51.100.9]}
---
apiVersion: v1
kind: Service
metadata: {name: hidden, namespace: default}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: "cilium.io/v2alpha1"
kind: CiliumBGPPeeringPolicy
metadata:
  name: rack0
spec:
  nodeSelector:
    matchLabels:
      rack: rack0
  virtualRouters:
  - localASN: 64512
    exportPodCIDR: true
    serviceSelector:
      matchExpressions:
        - {key: bgp, operator: In, values: [announce]}
    neighbors:
    - peerAddress: '10.0.0.1/32'
      peerASN: 64512
      peerPort: 1179
      eBGPMultihopTTL: 10
      connectRetryTimeSeconds: 12
      holdTimeSeconds: 9
      keepAliveTimeSeconds: 3
      gracefulRestart:
        enabled: true
        restartTimeSeconds: 15
      families:
        - afi: ipv4
          safi: unicast
      advertisedPathAttributes:
      - selectorType: PodCIDR
        communities:
          standard: ["64512:100"]
      - selectorType: CiliumLoadBalancerIPPool
        selector:
          matchLabels:
            color: blue
        communities:
          large: ["64512:2:3"]
        localPreference: 200
    - peerAddress: 'fc00:f853:ccd:e793::50/128'
      peerASN: 65000
"#;

    #[test]
    fn v1_peering_policy_maps_neighbors_timers_and_advertisements() {
        let snap = snapshot(V1);
        let (peers, problems) = desired(&snap, "n1", &BgpSettings::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(peers.keys().collect::<Vec<_>>(), ["rack0/64512/10.0.0.1", "rack0/64512/fc00:f853:ccd:e793::50"]);
        let p = &peers["rack0/64512/10.0.0.1"];
        let c = &p.cfg;
        assert_eq!((c.local_asn, c.peer_asn, c.router_id), (64512, Some(64512), Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!((c.port, c.hold_time, c.connect_retry_time), (1179, 9, 12));
        assert_eq!((c.multihop_ttl, c.graceful_restart, c.password.as_deref()), (Some(10), Some(15), None));
        assert_eq!(p.listen_port, None);
        // Pod CIDR with its attributes; the selected service's LB IP with the pool's (not its
        // ExternalIP: serviceAdvertisements defaults to LoadBalancerIP); the unselected service
        // not at all.
        let web = &snap.lb.services[&halyard_ipam::ServiceKey::new("default", "web")].ips[0].ip;
        assert_eq!(p.routes.len(), 2, "{:?}", p.routes);
        let pod = &p.routes[&prefix("10.244.1.0/24")];
        assert_eq!((pod.communities.as_slice(), pod.local_pref), ([Community(64512 << 16 | 100)].as_slice(), None));
        let lb = &p.routes[&host_prefix(*web)];
        assert_eq!((lb.large_communities.len(), lb.local_pref), (1, Some(200)));
        assert!(lb.communities.is_empty());
        let ext = V1.replace(
            "    exportPodCIDR: true\n",
            "    exportPodCIDR: true\n    serviceAdvertisements: [LoadBalancerIP, ExternalIP]\n",
        );
        let (ext_peers, _) = desired(&snapshot(&ext), "n1", &BgpSettings::default());
        let ext_routes = &ext_peers["rack0/64512/10.0.0.1"].routes;
        assert_eq!(ext_routes.len(), 3);
        assert_eq!(*ext_routes[&prefix("198.51.100.9/32")], RouteAttrs::default());
        // The IPv6 neighbor: defaults, both families, but nothing IPv6 to announce.
        let q = &peers["rack0/64512/fc00:f853:ccd:e793::50"];
        assert_eq!((q.cfg.port, q.cfg.hold_time, q.cfg.connect_retry_time), (179, 90, 120));
        assert_eq!((q.cfg.multihop_ttl, q.cfg.graceful_restart), (None, None));
        assert_eq!(q.routes.len(), 2, "ipv4 routes go to a neighbor with both families");
    }

    #[test]
    fn v1_without_service_selector_announces_no_service() {
        let yaml = V1.replace(
            "    serviceSelector:\n      matchExpressions:\n        - {key: bgp, operator: In, values: [announce]}\n",
            "",
        );
        let (peers, _) = desired(&snapshot(&yaml), "n1", &BgpSettings::default());
        assert_eq!(peers["rack0/64512/10.0.0.1"].routes.keys().collect::<Vec<_>>(), [&prefix("10.244.1.0/24")]);
    }

    #[test]
    fn v1_node_selection_and_precedence() {
        // Not selected.
        let (peers, problems) = desired(&snapshot(&V1.replace("rack: rack0}}", "rack: rack1}}")), "n1", &settings());
        assert!(peers.is_empty() && problems.is_empty(), "{problems:?}");
        // No nodeSelector: every node.
        let all = V1.replace("  nodeSelector:\n    matchLabels:\n      rack: rack0\n", "");
        assert_eq!(desired(&snapshot(&all), "n1", &settings()).0.len(), 2);
        // Two policies: none applies.
        let second = "\n---\napiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata: {name: \
                      other}\nspec:\n  virtualRouters: [{localASN: 1, neighbors: [{peerAddress: 10.9.9.9/32, peerASN: \
                      2}]}]\n";
        let (peers, problems) = desired(&snapshot(&format!("{V1}{second}")), "n1", &settings());
        assert!(peers.is_empty());
        assert_eq!(
            problems,
            ["CiliumBGPPeeringPolicy other, rack0: more than one policy selects node n1, so none applies and no v1 \
              session runs (as in Cilium)"]
        );
        // A v2 ClusterConfig selecting the node wins.
        let v2 = CILIUM
            .replace("metadata: {name: router}", "metadata: {name: router2}")
            .replace("peerConfigRef: {name: router}", "peerConfigRef: {name: router2}");
        let (peers, problems) = desired(&snapshot(&format!("{V1}\n---\n{v2}")), "n1", &settings());
        assert_eq!(peers.keys().collect::<Vec<_>>(), ["main/router"]);
        assert_eq!(
            problems,
            ["CiliumBGPPeeringPolicy rack0: ignored on node n1, which CiliumBGPClusterConfig lab selects: the v2 API \
              takes precedence over v1 policies (as in Cilium)"]
        );
    }

    #[test]
    fn v1_router_id_and_port_annotation_and_auth_secret() {
        let yaml = V1
            .replace(
                "metadata: {name: n1, labels: {rack: rack0}}",
                "metadata:\n  name: n1\n  labels: {rack: rack0}\n  annotations: {cilium.io/bgp-virtual-router.64512: \
                 \"router-id=192.0.2.7,local-port=1790\"}",
            )
            .replace("      peerASN: 65000\n", "      peerASN: 65000\n      authSecretRef: bgp-auth\n");
        let (peers, problems) = desired(&snapshot(&yaml), "n1", &BgpSettings::default());
        let p = &peers["rack0/64512/10.0.0.1"];
        assert_eq!((p.cfg.router_id, p.listen_port), (Ipv4Addr::new(192, 0, 2, 7), Some(1790)));
        assert!(!peers.contains_key("rack0/64512/fc00:f853:ccd:e793::50"));
        assert_eq!(
            problems,
            ["CiliumBGPPeeringPolicy rack0: neighbor fc00:f853:ccd:e793::50/128: authSecretRef: Secret \
              kube-system/bgp-auth does not exist: the session is not started (its TCP MD5 password is unknown)"]
        );
        let (peers, problems) = desired(&snapshot(&format!("{yaml}{AUTH_SECRET}")), "n1", &BgpSettings::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(peers["rack0/64512/fc00:f853:ccd:e793::50"].cfg.password.as_deref(), Some("t0p-s3cret"));
    }
}
