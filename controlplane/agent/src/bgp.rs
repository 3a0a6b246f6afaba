//! BGP in the agent: from the Cilium BGP v2 resources in the model and LB-IPAM's outcome to the
//! peers this node runs and the prefixes each one advertises; and the task that keeps the
//! running sessions in step with that (starting, stopping, and sending route changes without
//! resetting sessions).
//!
//! Resources (Cilium `Documentation/network/bgp-control-plane/bgp-control-plane-v2.rst`):
//! `CiliumBGPClusterConfig` (node selector, instances with local ASN and peers) →
//! `CiliumBGPPeerConfig` (timers, port, families with an advertisement selector) →
//! `CiliumBGPAdvertisement` (type `Service` with `LoadBalancerIP`/`ExternalIP`, a service
//! selector, communities and local preference).
//! MetalLB's `BGPPeer`/`BGPAdvertisement`/`Community` are read too (see [`metallb`]).
//! MetalLB's `ebgpMultiHop` and Cilium's `ebgpMultihop` set the session's TTL, MetalLB's
//! `bfdProfile` its BFD. GTSM (RFC 5082) has no field in either API: only `halyard-bgpd` sets it.
//! Not yet: the v1 `CiliumBGPPeeringPolicy`, PodCIDR and ClusterIP advertisements, node
//! overrides, MD5 passwords.

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
use halyard_model::{AdvertisementType, BgpAttributes, LabelSelector, Model, ServiceAddressType};
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

/// Computes the sessions and routes for this node. Problems (e.g. no router ID) are returned
/// for the log and status, never panics.
pub fn desired(snap: &Snapshot, node: &str, router_id_fallback: Option<Ipv4Addr>) -> (DesiredPeers, Vec<String>) {
    let model = &snap.model;
    let mut out = DesiredPeers::new();
    let mut problems = Vec::new();
    let node_labels = model.nodes.get(node).map(|n| n.metadata.labels.clone()).unwrap_or_default();
    for (cc_name, cc) in &model.bgp_cluster_configs {
        if !cc.spec.node_selector.as_ref().is_none_or(|s| s.matches(&node_labels)) {
            continue;
        }
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
            for peer in &inst.peers {
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
                    if pc.spec.auth_secret_ref.is_some() {
                        problems.push(format!(
                            "CiliumBGPPeerConfig {}: authSecretRef needs Kubernetes Secrets, which the manifest source \
                             does not read yet: the session runs without TCP MD5 and the peer will refuse it if it \
                             requires a password",
                            pc.metadata.name
                        ));
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
                    for adv in model.bgp_advertisements.values().filter(|a| sel.matches(&a.metadata.labels)) {
                        for entry in &adv.spec.advertisements {
                            if entry.advertisement_type != AdvertisementType::Service {
                                continue;
                            }
                            let Some(svc_opts) = &entry.service else { continue };
                            // A missing selector selects no service (Cilium semantics).
                            let Some(svc_sel) = &entry.selector else { continue };
                            let attrs = Arc::new(attrs_of(entry.attributes.as_ref()));
                            for svc in model.services.values() {
                                if !svc_sel.matches(&translate::selector_labels(svc)) {
                                    continue;
                                }
                                let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
                                let mut ips: Vec<IpAddr> = Vec::new();
                                if svc_opts.addresses.contains(&ServiceAddressType::LoadBalancerIP) {
                                    let key = halyard_ipam::ServiceKey::new(ns, svc.metadata.name.clone());
                                    if let Some(st) = snap.lb.services.get(&key) {
                                        ips.extend(st.ips.iter().map(|a| a.ip));
                                    }
                                }
                                if svc_opts.addresses.contains(&ServiceAddressType::ExternalIP) {
                                    ips.extend(svc.spec.external_ips.iter().copied());
                                }
                                for ip in ips.into_iter().filter(|ip| ip.is_ipv4() == is_v4) {
                                    routes.entry(host_prefix(ip)).or_insert_with(|| attrs.clone());
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
    metallb(snap, node, &node_labels, router_id_fallback, &mut out, &mut problems);
    (out, problems)
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
        if spec.password_secret.is_some() {
            problems.push(format!(
                "BGPPeer {key}: passwordSecret needs Kubernetes Secrets, which the manifest source does not read yet; \
                 use password"
            ));
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
                let labels = model.services.get(skey).map_or(&no_labels, |s| &s.metadata.labels);
                if !translate::any_selector(&a.service_selectors, labels) {
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
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Status of every running peer, read by the API.
pub type PeerStatuses = Arc<Mutex<BTreeMap<String, (PeerConfig, Arc<Mutex<PeerStatus>>)>>>;

/// Keeps sessions in step with each new snapshot.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    node: String,
    router_id_fallback: Option<Ipv4Addr>,
    statuses: PeerStatuses,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut last_problems = Vec::new();
    let incoming = IncomingRoutes::default();
    let mut listeners: BTreeMap<u16, tokio::task::JoinHandle<()>> = BTreeMap::new();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        let (want, problems) = desired(&snap, &node, router_id_fallback);
        if problems != last_problems {
            for p in &problems {
                tracing::warn!("BGP: {p}");
            }
            last_problems = problems;
        }
        // Stop sessions no longer wanted, or whose session parameters changed (a reset is
        // unavoidable for those: ASN, address, timers are negotiated in OPEN).
        let stale: Vec<String> = running
            .iter()
            .filter(|(k, r)| want.get(*k).is_none_or(|d| d.cfg != r.cfg || d.listen_port != r.listen_port))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(r) = running.remove(&k) {
                tracing::info!(peer = %k, "BGP peer removed or reconfigured: stopping its session");
                let _ = r.stop.send(true);
                let _ = r.task.await;
                statuses.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
                incoming.lock().unwrap_or_else(|e| e.into_inner()).remove(&r.cfg.address);
            }
        }
        // One listener per port some instance asks for; stopped when no peer needs it.
        let ports: std::collections::BTreeSet<u16> = want.values().filter_map(|d| d.listen_port).collect();
        listeners.retain(|port, task| {
            let keep = ports.contains(port) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for port in ports {
            listeners.entry(port).or_insert_with(|| {
                let inc = incoming.clone();
                let configs: Vec<ListenPeer> =
                    want.values().filter(|d| d.listen_port == Some(port)).map(|d| ListenPeer::from(&d.cfg)).collect();
                tokio::spawn(async move {
                    let addr = std::net::SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port);
                    if let Err(e) = listen(addr, inc, configs).await {
                        tracing::error!(port, "BGP listener failed: {e}");
                    }
                })
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
                    let ch = PeerChannels {
                        routes: routes_rx.into(),
                        status,
                        stop: stop_rx,
                        incoming: accept,
                        learned: None,
                    };
                    let task = tokio::spawn(run_peer(d.cfg.clone(), ch));
                    let listen_port = d.listen_port;
                    running.insert(k, Running { cfg: d.cfg, listen_port, routes: routes_tx, stop: stop_tx, task });
                }
            }
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    for (_, t) in listeners {
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

    fn snapshot(yaml: &str) -> Snapshot {
        let parsed = halyard_model::parse_manifest(std::path::Path::new("t.yaml"), yaml).expect("parses");
        Snapshot { model: halyard_model::Model::from_objects(parsed.objects), ..Default::default() }
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
        let (peers, problems) = desired(&snapshot(yaml), "n1", None);
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
        let cfg =
            |yaml: &str| desired(&snapshot(yaml), "n1", Some(Ipv4Addr::new(10, 0, 0, 2))).0["main/router"].cfg.clone();
        let c = cfg(CILIUM);
        assert_eq!(c.multihop_ttl, None);
        assert_eq!(c.ttl_policy().ttl, Some(1), "eBGP default");
        assert_eq!(cfg(&CILIUM.replace("spec: {}", "spec: {ebgpMultihop: 1}")).multihop_ttl, None);
        assert_eq!(cfg(&CILIUM.replace("spec: {}", "spec: {ebgpMultihop: 4}")).multihop_ttl, Some(4));
    }
}
