//! L2 announcements in the agent: which IPv4 LoadBalancer/External IPs this node answers ARP
//! for, on which interfaces, from `CiliumL2AnnouncementPolicy` (Cilium
//! `Documentation/network/l2-announcements.rst`) and MetalLB `L2Advertisement`; and the task
//! that keeps one ARP responder per interface in step.
//!
//! IPv4 addresses are answered with ARP, IPv6 with NDP. Election: the single-node backend
//! (this node owns every selected IP), or the multi-node election (LAN heartbeats, with etcd
//! or Kubernetes `coordination.k8s.io/v1` Leases as the fencing authority).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use halyard_l2::election::{Candidate, ElectionConfig, NodeId};
use halyard_l2::responder::{Responder, candidate_interfaces};
use tokio::sync::watch;

use crate::reconcile::Snapshot;
use crate::translate;

/// Interface → the IPv4 addresses answered on it.
pub type Desired = BTreeMap<String, BTreeSet<IpAddr>>;

/// One announced IP on one interface: (ip, interface, service, policy).
pub type Row = (IpAddr, String, String, String);

/// Who decides which node answers for an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionSettings {
    /// This node answers for everything its policies select (one announcing node).
    Single,
    /// Nodes elect an owner per IP: LAN heartbeats for fast failure detection, etcd leases for
    /// fencing (see `halyard_l2::election`).
    Etcd {
        endpoints: Vec<String>,
        group: std::net::SocketAddr,
        local: Option<std::net::Ipv4Addr>,
        /// Horizon, keep-alive interval, refute window, lease grace.
        timing: Box<ElectionConfig>,
    },
    /// The same election with `coordination.k8s.io/v1` Leases as the fencing authority
    /// (`halyard_l2::lease::kube`: every keep-alive is an API-server write, so the horizon is
    /// much longer and failover slower).
    Kubernetes {
        kube: KubeSettings,
        group: std::net::SocketAddr,
        local: Option<std::net::Ipv4Addr>,
        timing: Box<ElectionConfig>,
    },
}

/// Where the election's Lease objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    pub api: String,
    pub namespace: String,
    pub token_file: Option<std::path::PathBuf>,
    pub ca_file: Option<std::path::PathBuf>,
}

/// What `halyard l2 announcements` shows: the rows, plus replies and MAC per interface.
#[derive(Debug, Default)]
pub struct L2Status {
    /// With an election: the IPs this node currently owns (`None`: single node, owns all).
    pub owned: Option<BTreeSet<IpAddr>>,
    /// With an election: the election's state in a few words (lease, peers).
    pub election: Option<String>,
    pub rows: Vec<Row>,
    pub replies: BTreeMap<String, u64>,
    pub announcements: BTreeMap<String, u64>,
    pub macs: BTreeMap<String, String>,
    /// Since when this node has answered for each IP (acquired, or first announced).
    pub since: BTreeMap<IpAddr, std::time::SystemTime>,
    /// With an election: the lease, as `halyard l2 announcements` shows it.
    pub lease: Option<String>,
    /// With an election: IPs acquired so far, and the election latencies not yet scraped.
    pub takeovers: u64,
    pub pending_latencies: Vec<f64>,
}

impl L2Status {
    /// This node now answers for `ips`: new ones start their `since`, gone ones lose it.
    fn answering(&mut self, ips: &BTreeSet<IpAddr>) {
        let now = std::time::SystemTime::now();
        self.since.retain(|ip, _| ips.contains(ip));
        for ip in ips {
            self.since.entry(*ip).or_insert(now);
        }
    }
}

pub type SharedL2Status = Arc<Mutex<L2Status>>;

/// Whether `node` may announce `svc`: any node for `externalTrafficPolicy: Cluster`; for `Local`,
/// only a node with a ready endpoint of the service (traffic must stay on the node it reaches,
/// so a node without one would black-hole it).
fn may_announce(model: &halyard_model::Model, svc: &halyard_model::Service, node: &str) -> bool {
    crate::translate::may_advertise(model, svc, node, false)
}

/// Computes the announcements. Bad interface regexes are reported, and that policy is skipped.
pub fn desired(snap: &Snapshot, node: &str, interfaces: &[String]) -> (Desired, Vec<Row>, Vec<String>) {
    let model = &snap.model;
    let node_labels = model.nodes.get(node).map(|n| n.metadata.labels.clone()).unwrap_or_default();
    let mut out = Desired::new();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut add = |ip: IpAddr, ifaces: &[String], svc: &str, policy: &str| {
        for i in ifaces {
            if out.entry(i.clone()).or_default().insert(ip) {
                rows.push((ip, i.clone(), svc.to_string(), policy.to_string()));
            }
        }
    };
    for (name, pol) in &model.l2_policies {
        let spec = &pol.spec;
        if !spec.node_selector.as_ref().is_none_or(|s| s.matches(&node_labels)) {
            continue;
        }
        let regexes: Result<Vec<regex::Regex>, _> = spec.interfaces.iter().map(|r| regex::Regex::new(r)).collect();
        let regexes = match regexes {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("CiliumL2AnnouncementPolicy {name}: bad interface regex: {e}"));
                continue;
            }
        };
        let ifaces: Vec<String> = interfaces
            .iter()
            .filter(|i| regexes.is_empty() || regexes.iter().any(|r| r.is_match(i)))
            .cloned()
            .collect();
        for svc in model.services.values() {
            if !spec.service_selector.as_ref().is_none_or(|s| s.matches(&translate::selector_labels(svc)))
                || !may_announce(model, svc, node)
            {
                continue;
            }
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let key = halyard_ipam::ServiceKey::new(ns, svc.metadata.name.clone());
            let svc_name = key.to_string();
            if spec.load_balancer_ips
                && let Some(st) = snap.lb.services.get(&key)
            {
                for a in &st.ips {
                    add(a.ip, &ifaces, &svc_name, &format!("CiliumL2AnnouncementPolicy/{name}"));
                }
            }
            if spec.external_ips {
                for ip in &svc.spec.external_ips {
                    add(*ip, &ifaces, &svc_name, &format!("CiliumL2AnnouncementPolicy/{name}"));
                }
            }
        }
    }
    let no_labels = BTreeMap::new();
    for (key, adv) in &model.l2_advertisements {
        let spec = &adv.spec;
        if !translate::any_selector(&spec.node_selectors, &node_labels) {
            continue;
        }
        let ifaces: Vec<String> =
            interfaces.iter().filter(|i| spec.interfaces.is_empty() || spec.interfaces.contains(i)).cloned().collect();
        let pools = translate::metallb_pools(model, &spec.ip_address_pools, &spec.ip_address_pool_selectors);
        for (skey, st) in &snap.lb.services {
            let labels = model.services.get(skey).map_or(&no_labels, |s| &s.metadata.labels);
            if !translate::any_selector(&spec.service_selectors, labels)
                || model.services.get(skey).is_some_and(|s| !may_announce(model, s, node))
            {
                continue;
            }
            for a in st.ips.iter().filter(|a| pools.contains(a.pool.as_str())) {
                add(a.ip, &ifaces, &skey.to_string(), &format!("L2Advertisement/{}", key.name));
            }
        }
    }
    rows.sort();
    (out, rows, problems)
}

/// Every node that may announce, with the IPs it may announce: the policies evaluated for each
/// Node in the model (and this node). Interface patterns are evaluated against this node's
/// interfaces, so every node is assumed to name its LAN interfaces alike.
fn candidates(snap: &Snapshot, me: &str, interfaces: &[String]) -> Vec<Candidate> {
    let mut nodes: BTreeSet<String> = snap.model.nodes.keys().cloned().collect();
    nodes.insert(me.to_string());
    nodes
        .into_iter()
        .map(|n| {
            let (want, ..) = desired(snap, &n, interfaces);
            Candidate { node: NodeId::new(n), eligible_ips: want.into_values().flatten().collect() }
        })
        .collect()
}

/// The responders and what they may answer: where (`desired`), and whether (the election's
/// owned set and deadline). Shared between the L2 loop and the election's sink.
#[derive(Default)]
struct Answering {
    responders: BTreeMap<String, Responder>,
    desired: Desired,
    owned: Option<BTreeSet<IpAddr>>,
    deadline: Option<std::time::Instant>,
}

impl Answering {
    fn apply(&self) {
        for (iface, r) in &self.responders {
            let want = self.desired.get(iface).cloned().unwrap_or_default();
            let ips = match &self.owned {
                None => want,
                Some(owned) => want.intersection(owned).copied().collect(),
            };
            r.set_deadline(self.deadline);
            r.set_owned(ips);
        }
    }
}

struct Sink(Arc<Mutex<Answering>>, SharedL2Status);

impl halyard_l2::driver::OwnershipSink for Sink {
    fn set_owned(&mut self, ips: &BTreeSet<IpAddr>) {
        let mut a = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if a.owned.as_ref() != Some(ips) {
            tracing::info!(owned = ?ips, "L2 election: ownership changed");
        }
        a.owned = Some(ips.clone());
        a.apply();
        let mut st = self.1.lock().unwrap_or_else(|e| e.into_inner());
        st.answering(ips);
        st.owned = Some(ips.clone());
    }
    fn acquired(&mut self, ip: IpAddr, latency: std::time::Duration) {
        tracing::info!(%ip, latency_ms = latency.as_secs_f64() * 1e3, "L2 election: acquired");
        let mut st = self.1.lock().unwrap_or_else(|e| e.into_inner());
        st.takeovers += 1;
        // Bounded, in case nobody scrapes.
        if st.pending_latencies.len() < 10_000 {
            st.pending_latencies.push(latency.as_secs_f64());
        }
    }
    fn lease(&mut self, lease: Option<(halyard_l2::election::LeaseId, bool)>) {
        let text = match lease {
            Some((id, true)) => format!("held {id} (valid)"),
            Some((id, false)) => format!("held {id} (not provable: etcd unreachable?)"),
            None => "none".to_string(),
        };
        self.1.lock().unwrap_or_else(|e| e.into_inner()).lease = Some(text);
    }
    fn set_deadline(&mut self, until: std::time::Instant) {
        let mut a = self.0.lock().unwrap_or_else(|e| e.into_inner());
        a.deadline = Some(until);
        for r in a.responders.values() {
            r.set_deadline(Some(until));
        }
    }
}

/// Starts the election (etcd or Kubernetes backend, heartbeat socket, driver). Until it owns
/// something, this node answers nothing.
async fn start_election(
    settings: &ElectionSettings,
    node: &str,
    answering: Arc<Mutex<Answering>>,
    status: SharedL2Status,
    candidates: watch::Receiver<Vec<Candidate>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    match settings {
        ElectionSettings::Single => Ok(()),
        ElectionSettings::Etcd { endpoints, group, local, timing } => {
            // The refute window defaults to 25 ms here (the library's is 10 ms): on a loaded
            // 2-core host an owner's refute (etcd watch + write) was seen to arrive after 10 ms.
            // It adds 15 ms to failover.
            let cfg = (**timing).clone();
            let backend = halyard_l2::lease::EtcdBackend::connect(
                endpoints,
                halyard_l2::lease::DEFAULT_ROOT,
                std::time::Duration::from_secs(1),
            )
            .await
            .map_err(|e| anyhow::anyhow!("L2 election: etcd {}: {e}", endpoints.join(",")))?
            .with_keepalive_timeout(cfg.horizon);
            let what = format!("etcd {} + LAN heartbeats on {group}", endpoints.join(","));
            spawn_driver(backend, cfg, what, *group, *local, node, answering, status, candidates, shutdown).await
        }
        ElectionSettings::Kubernetes { kube, group, local, timing } => {
            let cfg = (**timing).clone();
            if cfg.horizon < std::time::Duration::from_secs(1) {
                tracing::warn!(
                    horizon = ?cfg.horizon,
                    "L2 election on Kubernetes Leases: every keep-alive is an API-server write (one per node \
                     every horizon/3); l2-horizon-ms 1000 or more is recommended"
                );
            }
            let kc = halyard_l2::lease::KubeConfig {
                api: kube.api.clone(),
                namespace: kube.namespace.clone(),
                token_file: kube.token_file.clone(),
                ca_file: kube.ca_file.clone(),
                // An API-server write (admission, etcd raft) is much slower than an etcd
                // keep-alive; never less than the horizon.
                timeout: cfg.horizon.max(std::time::Duration::from_secs(2)),
            };
            // Fails here (unreachable, TLS, token, RBAC) with the cause, not at the first grant.
            let backend = halyard_l2::lease::KubeLeaseBackend::connect(&kc)
                .await
                .map_err(|e| anyhow::anyhow!("L2 election: Kubernetes API {}: {e}", kube.api))?
                .with_keepalive_timeout(cfg.horizon);
            let what = format!("kubernetes {} leases in {} + LAN heartbeats on {group}", kube.api, kube.namespace);
            spawn_driver(backend, cfg, what, *group, *local, node, answering, status, candidates, shutdown).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn spawn_driver<B: halyard_l2::lease::LeaseBackend + 'static>(
    backend: B,
    cfg: ElectionConfig,
    what: String,
    group: std::net::SocketAddr,
    local: Option<std::net::Ipv4Addr>,
    node: &str,
    answering: Arc<Mutex<Answering>>,
    status: SharedL2Status,
    candidates: watch::Receiver<Vec<Candidate>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let bind = std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), group.port());
    let socket =
        halyard_l2::heartbeat::HeartbeatSocket::bind(bind, group, local.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED))
            .await
            .map_err(|e| anyhow::anyhow!("L2 election: heartbeat socket on {group}: {e}"))?;
    {
        let mut a = answering.lock().unwrap_or_else(|e| e.into_inner());
        a.owned = Some(BTreeSet::new());
        a.apply();
    }
    {
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        st.election = Some(what);
        // Owns nothing until the election says otherwise.
        st.owned = Some(BTreeSet::new());
    }
    let sink = Sink(answering, status);
    let me = NodeId::new(node);
    tokio::spawn(async move {
        if let Err(e) =
            halyard_l2::driver::run(me, cfg, Arc::new(backend), Arc::new(socket), candidates, sink, shutdown).await
        {
            tracing::error!("L2 election stopped: {e}");
        }
    });
    Ok(())
}

/// Keeps one responder per interface that has something to announce; with an election, each
/// answers only for the IPs this node owns.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    node: String,
    status: SharedL2Status,
    mut shutdown: watch::Receiver<bool>,
    election: ElectionSettings,
) {
    let answering = Arc::new(Mutex::new(Answering::default()));
    let mut last_problems = Vec::new();
    let (cand_tx, cand_rx) = watch::channel(Vec::new());
    if election != ElectionSettings::Single {
        let first = snapshots.borrow().clone();
        let _ = cand_tx.send(candidates(&first, &node, &candidate_interfaces()));
        if let Err(e) =
            start_election(&election, &node, answering.clone(), status.clone(), cand_rx, shutdown.clone()).await
        {
            // Without the election this node must not answer at all (it cannot know it owns).
            tracing::error!("{e:#}; this node will not answer ARP/NDP");
            {
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                st.election = Some(format!("failed: {e:#}"));
                st.owned = Some(BTreeSet::new());
            }
            let mut a = answering.lock().unwrap_or_else(|e| e.into_inner());
            a.owned = Some(BTreeSet::new());
        }
    }
    loop {
        let snap = snapshots.borrow_and_update().clone();
        let ifaces = candidate_interfaces();
        let (want, rows, problems) = desired(&snap, &node, &ifaces);
        if election != ElectionSettings::Single {
            let c = candidates(&snap, &node, &ifaces);
            cand_tx.send_if_modified(|old| {
                let changed = *old != c;
                if changed {
                    *old = c;
                }
                changed
            });
        }
        if problems != last_problems {
            for p in &problems {
                tracing::warn!("L2: {p}");
            }
            last_problems = problems;
        }
        {
            let mut a = answering.lock().unwrap_or_else(|e| e.into_inner());
            a.responders.retain(|iface, _| {
                let keep = want.contains_key(iface);
                if !keep {
                    tracing::info!(%iface, "L2: nothing to announce on this interface any more: responder stopped");
                }
                keep
            });
            for iface in want.keys() {
                if !a.responders.contains_key(iface) {
                    match Responder::start(iface) {
                        Ok(r) => {
                            tracing::info!(%iface, mac = %r.mac(), "L2: ARP responder started");
                            a.responders.insert(iface.clone(), r);
                        }
                        Err(e) => tracing::error!(%iface, "L2: {e}"),
                    }
                }
            }
            a.desired = want;
            a.apply();
            let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
            if st.owned.is_none() {
                // One node: it answers for every row from the moment the row appears.
                st.answering(&rows.iter().map(|r| r.0).collect());
            }
            st.rows = rows;
            st.macs = a.responders.iter().map(|(i, r)| (i.clone(), r.mac().to_string())).collect();
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
            // Refresh the reply counters now and then even when nothing changes.
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let a = answering.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        st.replies = a.responders.iter().map(|(i, r)| (i.clone(), r.replies_sent())).collect();
        st.announcements = a.responders.iter().map(|(i, r)| (i.clone(), r.announcements_sent())).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str) -> Snapshot {
        let parsed = halyard_model::parse_manifest(std::path::Path::new("t.yaml"), yaml).expect("parses");
        Snapshot { model: halyard_model::Model::from_objects(parsed.objects), ..Default::default() }
    }

    const ETP_LOCAL: &str = r#"
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: lan}
spec: {externalIPs: true}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  externalIPs: ["10.9.0.1"]
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
  - addresses: ["10.1.0.5"]
    nodeName: node-a
  - addresses: ["10.1.0.6"]
    nodeName: node-b
    conditions: {ready: false}
"#;

    const POLICIES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: edge-1, labels: {role: edge}}
---
apiVersion: v1
kind: Node
metadata: {name: core-1, labels: {role: core}}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: edge-web}
spec:
  nodeSelector: {matchLabels: {role: edge}}
  serviceSelector: {matchLabels: {tier: web}}
  interfaces: ["^eth[0-9]+$"]
  externalIPs: true
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: broken}
spec:
  interfaces: ["eth(("]
  externalIPs: true
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, labels: {tier: web}}
spec: {type: ClusterIP, externalIPs: ["10.9.1.1"], ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default, labels: {tier: db}}
spec: {type: ClusterIP, externalIPs: ["10.9.1.2"], ports: [{port: 5432}]}
"#;

    #[test]
    fn policies_select_services_nodes_and_interfaces_and_a_bad_regex_is_reported() {
        // The model accepts any string; the bad regex is found here, and only that policy is skipped.
        let snap = snapshot(POLICIES);
        let ifaces: Vec<String> = ["eth0", "eth1", "wlan0", "lo"].iter().map(|s| s.to_string()).collect();
        let (want, rows, problems) = desired(&snap, "edge-1", &ifaces);
        let web: IpAddr = "10.9.1.1".parse().unwrap();
        assert_eq!(want.keys().cloned().collect::<Vec<_>>(), ["eth0", "eth1"], "interfaces by regex: {want:?}");
        assert!(want.values().all(|ips| ips == &BTreeSet::from([web])), "only the web service: {want:?}");
        assert!(rows.iter().all(|r| r.3 == "CiliumL2AnnouncementPolicy/edge-web"), "{rows:?}");
        assert!(
            problems.iter().any(|p| p.contains("CiliumL2AnnouncementPolicy broken") && p.contains("regex")),
            "the broken policy is named: {problems:?}"
        );
        let (want, _, _) = desired(&snap, "core-1", &ifaces);
        assert!(want.is_empty(), "the node selector leaves core-1 out: {want:?}");
    }

    #[test]
    fn external_traffic_policy_local_needs_a_ready_local_endpoint() {
        let snap = snapshot(ETP_LOCAL);
        let ifaces = vec!["eth0".to_string()];
        let ips = |node: &str| desired(&snap, node, &ifaces).0.into_values().flatten().collect::<Vec<_>>();
        assert_eq!(ips("node-a"), vec!["10.9.0.1".parse::<IpAddr>().unwrap()], "node-a has a ready endpoint");
        assert!(ips("node-b").is_empty(), "node-b's endpoint is not ready");
        assert!(ips("node-c").is_empty(), "node-c has no endpoint");
        // With Cluster, every node may announce.
        let snap = snapshot(&ETP_LOCAL.replace("externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster"));
        assert_eq!(desired(&snap, "node-c", &ifaces).0.len(), 1);
        // The election's candidates carry the same eligibility, for every Node in the model.
        let nodes = "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node-b}\n";
        let snap = snapshot(&format!("{ETP_LOCAL}{nodes}"));
        let c = candidates(&snap, "node-c", &ifaces);
        let all: Vec<_> = c.iter().map(|c| c.node.as_str()).collect();
        assert_eq!(all, ["node-a", "node-b", "node-c"]);
        let eligible: Vec<_> = c.iter().filter(|c| !c.eligible_ips.is_empty()).map(|c| c.node.as_str()).collect();
        assert_eq!(eligible, ["node-a"], "only the node with a ready local endpoint may own the IP");
    }
}
