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
//! Not yet: MetalLB `BGPPeer`/`BGPAdvertisement`, the v1 `CiliumBGPPeeringPolicy`, PodCIDR and
//! ClusterIP advertisements, node overrides, MD5 passwords.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use halyard_bgp::session::{
    Advertisements, IncomingRoutes, PeerConfig, PeerStatus, Prefix, RouteAttrs, listen, run_peer,
};
use halyard_bgp::wire::{Community, Ipv4Prefix, Ipv6Prefix, LargeCommunity};
use halyard_ipam::lbipam::{LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE};
use halyard_model::validate::{parse_large_community, parse_standard_community, well_known_community};
use halyard_model::{AdvertisementType, BgpAttributes, LabelSelector, Model, ServiceAddressType};
use tokio::sync::watch;

use crate::reconcile::Snapshot;

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
    let from_node = model.nodes.get(node).and_then(|n| {
        n.status.addresses.iter().filter(|a| a.type_ == "InternalIP").find_map(|a| a.address.parse::<Ipv4Addr>().ok())
    });
    from_node.or(fallback)
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
                    cfg.port = pc.peer_port();
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
                            let attrs = attrs_of(entry.attributes.as_ref());
                            for svc in model.services.values() {
                                let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
                                let mut labels = svc.metadata.labels.clone();
                                labels.insert(LABEL_SERVICE_NAMESPACE.into(), ns.to_string());
                                labels.insert(LABEL_SERVICE_NAME.into(), svc.metadata.name.clone());
                                if !svc_sel.matches(&labels) {
                                    continue;
                                }
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
    (out, problems)
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
                tokio::spawn(async move {
                    let addr = std::net::SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port);
                    if let Err(e) = listen(addr, inc).await {
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
                    let task = tokio::spawn(run_peer(d.cfg.clone(), routes_rx, status, stop_rx, accept));
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
