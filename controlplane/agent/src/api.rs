//! The gRPC API (`halyard.v1.Agent`) over the latest snapshot.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use halyard_api::v1;
use halyard_model::{IpBlock, Kind};
use tonic::{Request, Response, Status};

use crate::reconcile::Snapshot;
use crate::translate;

/// The latest snapshot, swapped in whole by the reconcile loop.
pub type Shared = tokio::sync::watch::Receiver<Arc<Snapshot>>;

#[derive(Debug)]
pub struct AgentApi {
    pub mesh: crate::clustermesh::SharedMesh,
    pub mesh_settings: crate::clustermesh::MeshSettings,
    pub snapshot: Shared,
    pub bgp_peers: crate::bgp::PeerStatuses,
    pub bgp_rib: crate::bgp_import::SharedRib,
    pub l2_status: crate::l2::SharedL2Status,
    pub started: Instant,
    pub node_name: String,
    pub manifest_dir: String,
    pub state_file: String,
    pub config: Vec<v1::ConfigEntry>,
}

impl AgentApi {
    fn snap(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }
}

fn rfc3339(t: Option<SystemTime>) -> String {
    t.map(halyard_model::time::rfc3339).unwrap_or_default()
}

/// `ipv4/unicast` style, as `cilium bgp peers` prints families.
fn family_name(f: halyard_bgp::wire::AfiSafi) -> String {
    use halyard_bgp::wire::AfiSafi;
    match f {
        AfiSafi::IPV4_UNICAST => "ipv4/unicast".to_string(),
        AfiSafi::IPV6_UNICAST => "ipv6/unicast".to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl halyard_api::Agent for AgentApi {
    async fn get_status(&self, _: Request<v1::StatusRequest>) -> Result<Response<v1::StatusReply>, Status> {
        let s = self.snap();
        let mut objects = std::collections::HashMap::new();
        for key in s.model.keys() {
            *objects.entry(key.kind.to_string()).or_insert(0u32) += 1;
        }
        let diagnostics = s
            .diagnostics
            .iter()
            .map(|d| v1::Diagnostic {
                severity: d.severity.to_string(),
                file: d.file.display().to_string(),
                document: d.document as u32,
                field: d.field.clone().unwrap_or_default(),
                message: d.message.clone(),
                text: d.to_string(),
            })
            .collect();
        Ok(Response::new(v1::StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_name: self.node_name.clone(),
            mode: "standalone (manifest directory)".to_string(),
            manifest_dir: self.manifest_dir.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            generation: s.generation,
            last_reconcile: rfc3339(s.reconciled_at),
            diagnostics,
            services: s.lb.services.len() as u32,
            services_satisfied: s.lb.services.values().filter(|x| x.satisfied).count() as u32,
            pools: s.lb.pools.len() as u32,
            objects,
            state_file: self.state_file.clone(),
            files: s.files as u32,
        }))
    }

    async fn list_services(
        &self,
        req: Request<v1::ListServicesRequest>,
    ) -> Result<Response<v1::ListServicesReply>, Status> {
        let ns = req.into_inner().namespace;
        let s = self.snap();
        // Backends as the datapath merges them (local, and remote ones for global services).
        let (lb, remote_of) = {
            let m = self.mesh.lock().unwrap_or_else(|e| e.into_inner());
            let mut remote_of = std::collections::BTreeMap::new();
            for (cluster, st) in &m.remotes {
                for svc in st.services.values() {
                    for ip in svc.backends.keys() {
                        remote_of.insert(ip.clone(), cluster.clone());
                    }
                }
            }
            (crate::datapath::desired(&s, &self.node_name, Some(&m)), remote_of)
        };
        let backends_of = |key: &halyard_ipam::ServiceKey| -> Vec<String> {
            let name = key.to_string();
            lb.units
                .iter()
                .filter(|(u, _)| u.service == name)
                .flat_map(|(u, b)| {
                    let proto = if u.proto == halyard_datapath::maps::IPPROTO_UDP { "UDP" } else { "TCP" };
                    b.iter().map(move |(a, p)| (a.to_string(), *p, proto))
                })
                .chain(lb.units6.iter().filter(|(u, _)| u.service == name).flat_map(|(u, b)| {
                    let proto = if u.proto == halyard_datapath::maps::IPPROTO_UDP { "UDP" } else { "TCP" };
                    b.iter().map(move |(a, p)| (format!("[{a}]"), *p, proto))
                }))
                .map(|(a, p, proto)| match remote_of.get(&a) {
                    Some(c) => format!("{a}:{p}/{proto} ({c})"),
                    None => format!("{a}:{p}/{proto}"),
                })
                .collect()
        };
        let services = s
            .services
            .iter()
            .filter(|spec| ns.is_empty() || spec.key.namespace == ns)
            .map(|spec| {
                let st = s.lb.services.get(&spec.key);
                v1::Service {
                    namespace: spec.key.namespace.clone(),
                    name: spec.key.name.clone(),
                    r#type: "LoadBalancer".to_string(),
                    load_balancer_class: spec.load_balancer_class.clone().unwrap_or_default(),
                    ips: st.map(|x| x.ips.iter().map(|a| a.ip.to_string()).collect()).unwrap_or_default(),
                    pools: st.map(|x| x.ips.iter().map(|a| a.pool.clone()).collect()).unwrap_or_default(),
                    satisfied: st.is_some_and(|x| x.satisfied),
                    reason: st.map(|x| x.reason.to_string()).unwrap_or_default(),
                    message: st.map(|x| x.message.clone()).unwrap_or_default(),
                    ports: spec.ports.iter().map(|(proto, port)| format!("{port}/{proto}")).collect(),
                    shared_with: st.map(|x| x.shared_with.iter().map(|k| k.to_string()).collect()).unwrap_or_default(),
                    family_policy: format!("{:?}", spec.family_policy),
                    sharing_key: spec.sharing.as_ref().map(|x| x.key.clone()).unwrap_or_default(),
                    backends: backends_of(&spec.key),
                }
            })
            .collect();
        Ok(Response::new(v1::ListServicesReply { services }))
    }

    async fn list_pools(&self, _: Request<v1::ListPoolsRequest>) -> Result<Response<v1::ListPoolsReply>, Status> {
        let s = self.snap();
        // The fields both pool kinds share; usage and conflicts come from LB-IPAM's status.
        let pool = |name: &str, kind: Kind, api_version: &str, blocks: &[IpBlock], disabled: bool, selector: String| {
            let st = s.lb.pools.get(name);
            let count = |f: fn(&halyard_ipam::PoolStatus) -> u128| st.map(|x| f(x).to_string()).unwrap_or_default();
            v1::Pool {
                name: name.to_string(),
                kind: kind.to_string(),
                api_version: api_version.to_string(),
                blocks: blocks.iter().map(|b| b.to_string()).collect(),
                total: count(|x| x.total),
                used: count(|x| x.used),
                available: count(|x| x.available),
                disabled,
                conflict: st.and_then(|x| x.conflict.clone()).unwrap_or_default(),
                selector,
            }
        };
        let mut pools = Vec::new();
        for (name, p) in &s.model.cilium_pools {
            let selector = p.spec.service_selector.as_ref().map(translate::render_selector).unwrap_or_default();
            let kind = Kind::CiliumLoadBalancerIPPool;
            pools.push(pool(name, kind, &p.api_version, &p.spec.blocks, p.spec.disabled, selector));
        }
        for (key, p) in &s.model.metallb_pools {
            let selector = p
                .spec
                .service_allocation
                .as_ref()
                .map(|a| a.service_selectors.iter().map(translate::render_selector).collect::<Vec<_>>().join(" | "))
                .unwrap_or_default();
            pools.push(pool(&key.name, Kind::IpAddressPool, &p.api_version, &p.spec.addresses, false, selector));
        }
        pools.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.kind.cmp(&b.kind)));
        Ok(Response::new(v1::ListPoolsReply { pools }))
    }

    async fn list_nodes(&self, _: Request<v1::ListNodesRequest>) -> Result<Response<v1::ListNodesReply>, Status> {
        let s = self.snap();
        let nodes = s
            .model
            .nodes
            .values()
            .map(|n| {
                let st = s.pods.nodes.get(&n.metadata.name);
                v1::Node {
                    name: n.metadata.name.clone(),
                    pod_cidrs: st.map(|x| x.cidrs.iter().map(|c| c.to_string()).collect()).unwrap_or_default(),
                    error: st.and_then(|x| x.error.clone()).unwrap_or_default(),
                    addresses: n.status.addresses.iter().map(|a| format!("{}={}", a.type_, a.address)).collect(),
                }
            })
            .collect();
        Ok(Response::new(v1::ListNodesReply { nodes }))
    }

    async fn list_bgp_peers(
        &self,
        _: Request<v1::ListBgpPeersRequest>,
    ) -> Result<Response<v1::ListBgpPeersReply>, Status> {
        let rib = self.bgp_rib.lock().unwrap_or_else(|e| e.into_inner());
        let peers = self
            .bgp_peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, (cfg, st))| {
                let st = st.lock().unwrap_or_else(|e| e.into_inner());
                v1::BgpPeer {
                    name: name.clone(),
                    local_asn: cfg.local_asn,
                    peer_asn: st.peer_asn.or(cfg.peer_asn).unwrap_or(0),
                    address: cfg.address.to_string(),
                    state: st.state.map(|s| format!("{s:?}").to_lowercase()).unwrap_or_else(|| "idle".into()),
                    uptime_seconds: st
                        .established_since
                        .and_then(|t| t.elapsed().ok())
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    families: st.families.iter().map(|f| family_name(*f)).collect(),
                    received: rib.received(&cfg.address) as u32,
                    advertised: st.advertised_count as u32,
                    last_error: st.last_error.clone().unwrap_or_default(),
                    hold_time: st.hold_time.map(u32::from).unwrap_or(0),
                    router_id: cfg.router_id.to_string(),
                    bfd: st.bfd.map(|b| b.state.to_string().to_lowercase()).unwrap_or_default(),
                    bfd_diag: st.bfd.map(|b| b.diag.to_string()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(v1::ListBgpPeersReply { peers }))
    }

    async fn list_bgp_routes(
        &self,
        req: Request<v1::ListBgpRoutesRequest>,
    ) -> Result<Response<v1::ListBgpRoutesReply>, Status> {
        let received = match req.into_inner().direction.as_str() {
            "" | "advertised" => false,
            "received" => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "direction {other:?}: use \"advertised\" or \"received\""
                )));
            }
        };
        let mut routes = Vec::new();
        let rib = self.bgp_rib.lock().unwrap_or_else(|e| e.into_inner());
        for (name, (cfg, st)) in self.bgp_peers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if received {
                let Some(table) = rib.peers.get(&cfg.address) else { continue };
                let mut list: Vec<_> = table.iter().collect();
                list.sort_by_key(|(p, _)| **p);
                for (p, path) in list {
                    let best = rib.best.get(p) == Some(&cfg.address);
                    let v6 = matches!(p, halyard_bgp::session::Prefix::V6(_));
                    routes.push(v1::BgpRoute {
                        peer: name.clone(),
                        prefix: p.to_string(),
                        next_hop: path.info.next_hop(v6).map(|a| a.to_string()).unwrap_or_default(),
                        as_path: path.attrs.as_path.clone(),
                        best,
                        kernel: if best {
                            rib.kernel.get(p).map(|k| k.describe()).unwrap_or_default()
                        } else {
                            String::new()
                        },
                        stale: path.stale,
                    });
                }
                continue;
            }
            let st = st.lock().unwrap_or_else(|e| e.into_inner());
            // Only what the session carries: the Adj-RIB-Out may hold families it did not agree
            // on, or has no next hop for (see `bgp::next_hops`).
            let carried = |p: &halyard_bgp::session::Prefix| {
                let (fam, next_hop) = match p {
                    halyard_bgp::session::Prefix::V4(_) => {
                        (halyard_bgp::wire::AfiSafi::IPV4_UNICAST, cfg.address.is_ipv4())
                    }
                    halyard_bgp::session::Prefix::V6(_) => {
                        (halyard_bgp::wire::AfiSafi::IPV6_UNICAST, cfg.address.is_ipv6() || cfg.next_hop_v6.is_some())
                    }
                };
                next_hop && st.families.contains(&fam)
            };
            routes.extend(st.advertised.keys().filter(|p| carried(p)).map(|p| v1::BgpRoute {
                peer: name.clone(),
                prefix: p.to_string(),
                ..Default::default()
            }));
        }
        Ok(Response::new(v1::ListBgpRoutesReply { routes }))
    }

    async fn list_l2_announcements(
        &self,
        _: Request<v1::ListL2AnnouncementsRequest>,
    ) -> Result<Response<v1::ListL2AnnouncementsReply>, Status> {
        let st = self.l2_status.lock().unwrap_or_else(|e| e.into_inner());
        let announcements = st
            .rows
            .iter()
            .map(|(ip, iface, svc, policy)| v1::L2Announcement {
                ip: ip.to_string(),
                interface: iface.clone(),
                service: svc.clone(),
                policy: policy.clone(),
                // With an election, an IP this node does not own is answered by a peer.
                owner: if st.owned.as_ref().is_none_or(|o| o.contains(ip)) {
                    self.node_name.clone()
                } else {
                    "standby (another node)".to_string()
                },
                mac: st.macs.get(iface).cloned().unwrap_or_default(),
                replies: st.replies.get(iface).copied().unwrap_or(0),
                since: if st.owned.as_ref().is_none_or(|o| o.contains(ip)) {
                    rfc3339(st.since.get(ip).copied())
                } else {
                    String::new()
                },
                lease: st.lease.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(v1::ListL2AnnouncementsReply { announcements }))
    }

    async fn get_cluster_mesh(
        &self,
        _: Request<v1::ClusterMeshRequest>,
    ) -> Result<Response<v1::ClusterMeshReply>, Status> {
        let m = self.mesh.lock().unwrap_or_else(|e| e.into_inner());
        let clusters = m
            .remotes
            .iter()
            .map(|(name, st)| {
                let (last_failure, last_failure_time) = crate::clustermesh::failure_text(st);
                v1::RemoteCluster {
                    name: name.clone(),
                    endpoints: st.endpoints.clone(),
                    connected: st.connected,
                    ready: st.ready,
                    last_failure,
                    last_failure_time,
                    cluster_id: st.cluster_id,
                    nodes: st.nodes.len() as u64,
                    services: st.services.len() as u64,
                    identities: st.identities.len() as u64,
                    backends: st.services.values().map(|s| s.backends.len() as u64).sum(),
                    malformed: st.malformed,
                    synced: st.synced.iter().map(|s| s.to_string()).collect(),
                    config_file: st.config_file.display().to_string(),
                    pod_endpoints: st.ipcache.len() as u64,
                }
            })
            .collect();
        Ok(Response::new(v1::ClusterMeshReply {
            cluster_name: self.mesh_settings.cluster_name.clone(),
            cluster_id: self.mesh_settings.cluster_id,
            enabled: self.mesh_settings.enabled(),
            clusters,
            config_errors: m.config_errors.clone(),
        }))
    }

    async fn get_config(&self, _: Request<v1::GetConfigRequest>) -> Result<Response<v1::GetConfigReply>, Status> {
        Ok(Response::new(v1::GetConfigReply { entries: self.config.clone() }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_known_instants() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(super::rfc3339(Some(UNIX_EPOCH)), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(Some(UNIX_EPOCH + Duration::from_secs(1_795_307_040))), "2026-11-22T00:24:00Z");
        assert_eq!(super::rfc3339(Some(UNIX_EPOCH + Duration::from_secs(951_782_400))), "2000-02-29T00:00:00Z");
    }
}
