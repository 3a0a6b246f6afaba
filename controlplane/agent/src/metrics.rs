//! Prometheus metrics, served as OpenMetrics text on `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::reconcile::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
    pub address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabels {
    pub interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabels {
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatapathLabels {
    pub action: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CounterLabels {
    pub counter: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub ips_used: Family<PoolLabels, F64Gauge>,
    pub ips_available: Family<PoolLabels, F64Gauge>,
    pub ips_total: Family<PoolLabels, F64Gauge>,
    pub pool_conflicting: Family<PoolLabels, Gauge>,
    pub services: Family<StateLabels, Gauge>,
    pub manifest_diagnostics: Family<SeverityLabels, Gauge>,
    pub reconciles: Counter,
    pub reconcile_seconds: Histogram,
    pub ips_released: Counter,
    pub node_cidrs_used: Family<PoolLabels, F64Gauge>,
    pub bgp_session_up: Family<PeerLabels, Gauge>,
    pub bgp_prefixes_advertised: Family<PeerLabels, Gauge>,
    pub bgp_prefixes_received: Family<PeerLabels, Gauge>,
    /// Learned routes installed into the kernel (`--bgp-import`).
    pub bgp_routes_installed: Gauge,
    pub bgp_updates_in: Family<PeerLabels, Gauge>,
    pub bgp_updates_out: Family<PeerLabels, Gauge>,
    pub bgp_bfd_up: Family<PeerLabels, Gauge>,
    pub l2_owned: Family<InterfaceLabels, Gauge>,
    pub l2_replies: Family<InterfaceLabels, Gauge>,
    pub l2_announcements: Family<InterfaceLabels, Gauge>,
    pub l2_takeovers: Gauge,
    pub l2_election_seconds: Histogram,
    pub datapath_packets: Family<DatapathLabels, Gauge>,
    /// ClusterIP translation in tc, by counter (`halyard bpf cluster-ip list` shows the same).
    pub cluster_ip_packets: Family<CounterLabels, Gauge>,
    pub cluster_ip_bytes: Family<CounterLabels, Gauge>,
    pub datapath_bytes: Family<DatapathLabels, Gauge>,
    pub datapath_up: Gauge,
    pub mesh_ready: Family<ClusterLabels, Gauge>,
    pub mesh_connected: Family<ClusterLabels, Gauge>,
    pub mesh_services: Family<ClusterLabels, Gauge>,
    pub mesh_nodes: Family<ClusterLabels, Gauge>,
    pub mesh_identities: Family<ClusterLabels, Gauge>,
    pub mesh_endpoints: Family<ClusterLabels, Gauge>,
    pub mesh_failures: Family<ClusterLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("halyard");
        let m = Self {
            ips_used: Family::default(),
            ips_available: Family::default(),
            ips_total: Family::default(),
            pool_conflicting: Family::default(),
            services: Family::default(),
            manifest_diagnostics: Family::default(),
            reconciles: Counter::default(),
            reconcile_seconds: Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            ips_released: Counter::default(),
            node_cidrs_used: Family::default(),
            bgp_session_up: Family::default(),
            bgp_prefixes_advertised: Family::default(),
            bgp_prefixes_received: Family::default(),
            bgp_routes_installed: Gauge::default(),
            bgp_updates_in: Family::default(),
            bgp_updates_out: Family::default(),
            bgp_bfd_up: Family::default(),
            l2_owned: Family::default(),
            l2_replies: Family::default(),
            l2_announcements: Family::default(),
            l2_takeovers: Gauge::default(),
            l2_election_seconds: Histogram::new([0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            datapath_packets: Family::default(),
            cluster_ip_packets: Family::default(),
            cluster_ip_bytes: Family::default(),
            datapath_bytes: Family::default(),
            datapath_up: Gauge::default(),
            mesh_ready: Family::default(),
            mesh_connected: Family::default(),
            mesh_services: Family::default(),
            mesh_nodes: Family::default(),
            mesh_identities: Family::default(),
            mesh_endpoints: Family::default(),
            mesh_failures: Family::default(),
            registry: Registry::default(),
        };
        registry.register("lbipam_ips_used", "LoadBalancer IPs in use, per pool", m.ips_used.clone());
        registry.register("lbipam_ips_available", "LoadBalancer IPs still free, per pool", m.ips_available.clone());
        registry.register("lbipam_ips_total", "Allocatable LoadBalancer IPs, per pool", m.ips_total.clone());
        registry.register("lbipam_pool_conflicting", "1 if the pool overlaps another pool", m.pool_conflicting.clone());
        registry.register(
            "lbipam_services",
            "LoadBalancer services by IPAM state (satisfied, unsatisfied, ignored)",
            m.services.clone(),
        );
        registry.register("lbipam_ips_released", "IPs taken back from services", m.ips_released.clone());
        registry.register(
            "manifest_diagnostics",
            "Manifest problems currently reported, by severity",
            m.manifest_diagnostics.clone(),
        );
        registry.register("reconciles", "Reconciles that changed the model", m.reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time to reconcile the model", m.reconcile_seconds.clone());
        registry.register("podcidr_blocks_used", "Node pod CIDRs in use, per cluster pool", m.node_cidrs_used.clone());
        registry.register("bgp_session_up", "1 if the BGP session is Established", m.bgp_session_up.clone());
        registry.register(
            "bgp_prefixes_advertised",
            "Prefixes advertised to the peer",
            m.bgp_prefixes_advertised.clone(),
        );
        registry.register("bgp_prefixes_received", "Prefixes received from the peer", m.bgp_prefixes_received.clone());
        registry.register(
            "bgp_routes_installed",
            "Best paths learned over BGP and installed into the kernel (--bgp-import)",
            m.bgp_routes_installed.clone(),
        );
        registry.register("l2_owned_ips", "IPs this node answers ARP/NDP for, per interface", m.l2_owned.clone());
        registry.register(
            "l2_replies_sent",
            "ARP replies and neighbor advertisements sent since the responder started, per interface",
            m.l2_replies.clone(),
        );
        registry.register(
            "l2_announcements_sent",
            "Gratuitous ARP and unsolicited NA frames sent since the responder started, per interface",
            m.l2_announcements.clone(),
        );
        registry.register(
            "l2_takeovers",
            "IPs this node acquired through the election since it started",
            m.l2_takeovers.clone(),
        );
        registry.register(
            "l2_election_latency_seconds",
            "From this node's view making it an IP's owner to announcing it (agreement and fencing)",
            m.l2_election_seconds.clone(),
        );
        registry.register(
            "bgp_updates_received",
            "UPDATE messages received in the current session (resets with the session)",
            m.bgp_updates_in.clone(),
        );
        registry.register(
            "bgp_bfd_up",
            "1 if the BFD session to the BGP peer is Up, 0 if not (only peers with BFD)",
            m.bgp_bfd_up.clone(),
        );
        registry.register(
            "bgp_updates_sent",
            "UPDATE messages sent in the current session (resets with the session)",
            m.bgp_updates_out.clone(),
        );
        registry.register(
            "cluster_ip_packets",
            "Packets the ClusterIP translation in tc handled, by counter (summed over CPUs)",
            m.cluster_ip_packets.clone(),
        );
        registry.register(
            "cluster_ip_bytes",
            "Bytes the ClusterIP translation in tc handled, by counter",
            m.cluster_ip_bytes.clone(),
        );
        registry.register(
            "datapath_packets",
            "Packets the eBPF datapath handled, by action and reason (counted in BPF, summed over CPUs)",
            m.datapath_packets.clone(),
        );
        registry.register(
            "datapath_bytes",
            "Bytes the eBPF datapath handled, by action and reason",
            m.datapath_bytes.clone(),
        );
        registry.register(
            "datapath_up",
            "1 if the eBPF datapath is loaded and its maps readable",
            m.datapath_up.clone(),
        );
        registry.register("clustermesh_remote_ready", "1 if the remote cluster is fully synced", m.mesh_ready.clone());
        registry.register(
            "clustermesh_remote_connected",
            "1 if the remote cluster's etcd answered the last health check",
            m.mesh_connected.clone(),
        );
        registry.register(
            "clustermesh_remote_services",
            "Global services the remote cluster shares",
            m.mesh_services.clone(),
        );
        registry.register("clustermesh_remote_nodes", "Nodes of the remote cluster", m.mesh_nodes.clone());
        registry.register(
            "clustermesh_remote_identities",
            "Identities of the remote cluster",
            m.mesh_identities.clone(),
        );
        registry.register(
            "clustermesh_remote_endpoints",
            "Endpoint addresses (ipcache entries) of the remote cluster",
            m.mesh_endpoints.clone(),
        );
        registry.register(
            "clustermesh_remote_malformed_entries",
            "Keys or values of the remote cluster skipped as malformed",
            m.mesh_failures.clone(),
        );
        Self { registry, ..m }
    }

    /// Sets the gauges from a reconciled snapshot (pools that disappeared lose their series).
    pub fn observe(&self, snap: &Snapshot) {
        for fam in [&self.ips_used, &self.ips_available, &self.ips_total] {
            fam.clear();
        }
        self.pool_conflicting.clear();
        for (name, p) in &snap.lb.pools {
            let l = PoolLabels { pool: name.clone() };
            self.ips_used.get_or_create(&l).set(p.used as f64);
            self.ips_available.get_or_create(&l).set(p.available as f64);
            self.ips_total.get_or_create(&l).set(p.total as f64);
            self.pool_conflicting.get_or_create(&l).set(i64::from(p.conflict.is_some()));
        }
        let mut counts = [0i64; 3];
        for s in snap.lb.services.values() {
            let i = match (s.satisfied, s.reason) {
                (true, _) => 0,
                (false, halyard_ipam::Reason::Ignored) => 2,
                (false, _) => 1,
            };
            counts[i] += 1;
        }
        for (i, state) in ["satisfied", "unsatisfied", "ignored"].iter().enumerate() {
            self.services.get_or_create(&StateLabels { state: state.to_string() }).set(counts[i]);
        }
        let errors = snap.diagnostics.iter().filter(|d| d.is_error()).count() as i64;
        let warnings = snap.diagnostics.len() as i64 - errors;
        self.manifest_diagnostics.get_or_create(&SeverityLabels { severity: "error".into() }).set(errors);
        self.manifest_diagnostics.get_or_create(&SeverityLabels { severity: "warning".into() }).set(warnings);
        self.node_cidrs_used.clear();
        for p in &snap.pods.pools {
            self.node_cidrs_used.get_or_create(&PoolLabels { pool: p.cidr.to_string() }).set(p.used as f64);
        }
    }

    /// Refreshes the BGP gauges from the live sessions (done at scrape time: sessions change
    /// state on their own, not only at reconciles).
    pub fn observe_bgp(&self, peers: &crate::bgp::PeerStatuses, rib: &crate::bgp_import::SharedRib) {
        let rib = rib.lock().unwrap_or_else(|e| e.into_inner());
        let installed = rib.kernel.values().filter(|k| matches!(k, crate::bgp_import::Kernel::Installed(_))).count();
        self.bgp_routes_installed.set(installed as i64);
        let fams = [
            &self.bgp_session_up,
            &self.bgp_prefixes_advertised,
            &self.bgp_prefixes_received,
            &self.bgp_updates_in,
            &self.bgp_updates_out,
            &self.bgp_bfd_up,
        ];
        for f in fams {
            f.clear();
        }
        for (name, (cfg, st)) in peers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let st = st.lock().unwrap_or_else(|e| e.into_inner());
            let l = PeerLabels { peer: name.clone(), address: cfg.address.to_string() };
            let up = st.state == Some(halyard_bgp::fsm::State::Established);
            self.bgp_session_up.get_or_create(&l).set(i64::from(up));
            self.bgp_prefixes_advertised.get_or_create(&l).set(st.advertised_count as i64);
            self.bgp_prefixes_received.get_or_create(&l).set(rib.received(&cfg.address) as i64);
            self.bgp_updates_in.get_or_create(&l).set(st.updates_in as i64);
            self.bgp_updates_out.get_or_create(&l).set(st.updates_out as i64);
            if let Some(b) = st.bfd {
                self.bgp_bfd_up.get_or_create(&l).set(i64::from(b.state == halyard_bgp::bfd::BfdState::Up));
            }
        }
    }

    /// Refreshes the L2 gauges from the responders' status (at scrape time).
    pub fn observe_l2(&self, l2: &crate::l2::SharedL2Status) {
        let mut st = l2.lock().unwrap_or_else(|e| e.into_inner());
        self.l2_takeovers.set(st.takeovers as i64);
        for s in st.pending_latencies.drain(..) {
            self.l2_election_seconds.observe(s);
        }
        for f in [&self.l2_owned, &self.l2_replies, &self.l2_announcements] {
            f.clear();
        }
        let mut owned: BTreeMap<&str, i64> = BTreeMap::new();
        for (_, iface, _, _) in &st.rows {
            *owned.entry(iface.as_str()).or_default() += 1;
        }
        for (iface, n) in owned {
            self.l2_owned.get_or_create(&InterfaceLabels { interface: iface.to_string() }).set(n);
        }
        for (iface, n) in &st.replies {
            self.l2_replies.get_or_create(&InterfaceLabels { interface: iface.clone() }).set(*n as i64);
        }
        for (iface, n) in &st.announcements {
            self.l2_announcements.get_or_create(&InterfaceLabels { interface: iface.clone() }).set(*n as i64);
        }
    }

    /// Reads the datapath's counters from its pinned maps (at scrape time).
    pub fn observe_datapath(&self, st: &crate::datapath::SharedDatapathStatus) {
        let pin = st.lock().unwrap_or_else(|e| e.into_inner()).pin_dir.clone();
        let Some(pin) = pin else { return };
        let counters = halyard_datapath::lb::LbMaps::open(&pin).and_then(|m| m.counters());
        self.datapath_packets.clear();
        self.datapath_bytes.clear();
        match counters {
            Ok(c) => {
                self.datapath_up.set(1);
                for (counter, packets, bytes) in c {
                    let (action, reason) = counter.labels();
                    let l = DatapathLabels { action: action.into(), reason: reason.into() };
                    self.datapath_packets.get_or_create(&l).set(packets as i64);
                    self.datapath_bytes.get_or_create(&l).set(bytes as i64);
                }
            }
            Err(_) => {
                self.datapath_up.set(0);
            }
        }
    }

    /// Refreshes the ClusterIP counters from the pinned maps (at scrape time); nothing when the
    /// ClusterIP translation is off or not loaded yet.
    pub fn observe_cluster_ip(&self, pin_dir: Option<&std::path::Path>) {
        self.cluster_ip_packets.clear();
        self.cluster_ip_bytes.clear();
        let Some(pin) = pin_dir else { return };
        let Ok(counters) = halyard_datapath::svc::ClusterIpMaps::open(pin).and_then(|m| m.counters()) else { return };
        for (counter, packets, bytes) in counters {
            let l = CounterLabels { counter: counter.name().into() };
            self.cluster_ip_packets.get_or_create(&l).set(packets as i64);
            self.cluster_ip_bytes.get_or_create(&l).set(bytes as i64);
        }
    }

    /// Refreshes the per-remote-cluster gauges (at scrape time).
    pub fn observe_mesh(&self, mesh: &crate::clustermesh::SharedMesh) {
        let m = mesh.lock().unwrap_or_else(|e| e.into_inner());
        for f in [
            &self.mesh_ready,
            &self.mesh_connected,
            &self.mesh_services,
            &self.mesh_nodes,
            &self.mesh_identities,
            &self.mesh_endpoints,
            &self.mesh_failures,
        ] {
            f.clear();
        }
        for (name, st) in &m.remotes {
            let l = ClusterLabels { cluster: name.clone() };
            self.mesh_ready.get_or_create(&l).set(i64::from(st.ready));
            self.mesh_connected.get_or_create(&l).set(i64::from(st.connected));
            self.mesh_services.get_or_create(&l).set(st.services.len() as i64);
            self.mesh_nodes.get_or_create(&l).set(st.nodes.len() as i64);
            self.mesh_identities.get_or_create(&l).set(st.identities.len() as i64);
            self.mesh_endpoints.get_or_create(&l).set(st.ipcache.len() as i64);
            self.mesh_failures.get_or_create(&l).set(st.malformed as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Binds the metrics listener (so that a busy port fails start-up, not a background task).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}

/// What the gauges refreshed at scrape time are read from.
#[derive(Clone, Debug)]
pub struct Sources {
    pub bgp_peers: crate::bgp::PeerStatuses,
    pub bgp_rib: crate::bgp_import::SharedRib,
    pub l2: crate::l2::SharedL2Status,
    pub datapath: crate::datapath::SharedDatapathStatus,
    pub mesh: crate::clustermesh::SharedMesh,
    /// The ClusterIP maps' pin directory, when the translation is on.
    pub cluster_ip_pins: Option<std::path::PathBuf>,
}

/// Serves `/metrics` and `/healthz` until the process exits.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, src: Sources) -> anyhow::Result<()> {
    use axum::routing::get;
    let app =
        axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let m = metrics.clone();
                    m.observe_bgp(&src.bgp_peers, &src.bgp_rib);
                    m.observe_l2(&src.l2);
                    m.observe_datapath(&src.datapath);
                    m.observe_cluster_ip(src.cluster_ip_pins.as_deref());
                    m.observe_mesh(&src.mesh);
                    async move {
                        ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }));
    tracing::info!(addr = %listener.local_addr()?, "serving metrics on /metrics");
    axum::serve(listener, app).await?;
    Ok(())
}
