//! Agent configuration: each setting comes from a flag, else an `HALYARD_*` environment variable,
//! else the TOML config file, else its default — and the agent remembers which, for
//! `halyard config view`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use ipnet::IpNet;

/// Command-line flags. Every value is optional here so that the layers below can show through.
#[derive(Debug, clap::Parser)]
#[command(
    name = "halyard-agent",
    version,
    about = "Halyard node agent: LB-IPAM from a manifest directory, served over gRPC"
)]
pub struct Flags {
    /// TOML configuration file; its keys are the flag names with `_` for `-`.
    #[arg(long, env = "HALYARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of Kubernetes-shaped YAML manifests (Services, pools, policies), watched for changes.
    #[arg(long, env = "HALYARD_MANIFEST_DIR", value_name = "DIR")]
    pub manifest_dir: Option<PathBuf>,
    /// Directory for the agent's persistent state (LB-IPAM and pod CIDR assignments).
    #[arg(long, env = "HALYARD_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Unix socket the gRPC API listens on.
    #[arg(long, env = "HALYARD_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Address for the Prometheus `/metrics` endpoint, or `off`.
    #[arg(long, env = "HALYARD_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// This node's name (default: the host name).
    #[arg(long, env = "HALYARD_NODE_NAME")]
    pub node_name: Option<String>,
    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info,halyard_agent=debug`).
    #[arg(long, env = "HALYARD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "HALYARD_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// loadBalancerClass values LB-IPAM serves (comma-separated).
    #[arg(long, env = "HALYARD_LB_CLASSES", value_delimiter = ',')]
    pub lb_classes: Option<Vec<String>>,
    /// Whether LB-IPAM serves services without a loadBalancerClass.
    #[arg(long, env = "HALYARD_LB_SERVE_UNCLASSED")]
    pub lb_serve_unclassed: Option<bool>,
    /// Cluster pool(s) node IPv4 pod CIDRs are carved from (comma-separated).
    #[arg(long, env = "HALYARD_CLUSTER_POOL_IPV4_CIDR", value_delimiter = ',')]
    pub cluster_pool_ipv4_cidr: Option<Vec<IpNet>>,
    /// Prefix length of each node's IPv4 pod CIDR.
    #[arg(long, env = "HALYARD_CLUSTER_POOL_IPV4_MASK_SIZE")]
    pub cluster_pool_ipv4_mask_size: Option<u8>,
    /// Cluster pool(s) node IPv6 pod CIDRs are carved from (comma-separated).
    #[arg(long, env = "HALYARD_CLUSTER_POOL_IPV6_CIDR", value_delimiter = ',')]
    pub cluster_pool_ipv6_cidr: Option<Vec<IpNet>>,
    /// Prefix length of each node's IPv6 pod CIDR.
    #[arg(long, env = "HALYARD_CLUSTER_POOL_IPV6_MASK_SIZE")]
    pub cluster_pool_ipv6_mask_size: Option<u8>,
    /// Longest wait, in milliseconds, for a manifest that is being written to be closed before
    /// reloading (a closed or renamed-in file is read at once).
    #[arg(long, env = "HALYARD_RELOAD_DEBOUNCE_MS")]
    pub reload_debounce_ms: Option<u64>,
    /// Full re-scan of the manifest directory at this interval (seconds), in case an event was missed.
    #[arg(long, env = "HALYARD_RESYNC_SECONDS")]
    pub resync_seconds: Option<u64>,
    /// BGP router ID when this node's Node object has no IPv4 InternalIP.
    #[arg(long, env = "HALYARD_BGP_ROUTER_ID")]
    pub bgp_router_id: Option<std::net::Ipv4Addr>,
    /// Namespace of the Secrets that Cilium `authSecretRef`s name (Cilium's
    /// `--bgp-secrets-namespace`; default `kube-system`).
    #[arg(long, env = "HALYARD_BGP_SECRETS_NAMESPACE", value_name = "NAMESPACE")]
    pub bgp_secrets_namespace: Option<String>,
    /// Install the best BGP routes learned from peers into the kernel (rtnetlink, protocol 73).
    #[arg(long, env = "HALYARD_BGP_IMPORT", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub bgp_import: Option<bool>,
    /// Routing table for imported routes (254 = main).
    #[arg(long, env = "HALYARD_BGP_IMPORT_TABLE", value_name = "ID")]
    pub bgp_import_table: Option<u32>,
    /// Metric (priority) of imported routes.
    #[arg(long, env = "HALYARD_BGP_IMPORT_METRIC")]
    pub bgp_import_metric: Option<u32>,
    /// Import only prefixes inside these CIDRs (comma-separated; default: every prefix).
    #[arg(long, env = "HALYARD_BGP_IMPORT_PREFIXES", value_delimiter = ',', value_name = "CIDRS")]
    pub bgp_import_prefixes: Option<Vec<IpNet>>,
    /// Interfaces the XDP load balancer runs on (comma-separated; none: no LB on this node).
    #[arg(long, env = "HALYARD_DATAPATH_INTERFACES", value_delimiter = ',')]
    pub datapath_interfaces: Option<Vec<String>>,
    /// Interfaces where DSR packets for this node's backends are decapsulated (comma-separated).
    #[arg(long, env = "HALYARD_DATAPATH_DECAP_INTERFACES", value_delimiter = ',')]
    pub datapath_decap_interfaces: Option<Vec<String>>,
    /// How the LB hands packets to backends in DSR: `geneve` (Cilium's Geneve DSR option), `ipip`
    /// (IPIP, or IP6IP6 for IPv6), or `opt` (DNAT to the backend plus Cilium's DSR option on every
    /// packet: an IPv4 option, or an IPv6 Destination Options header).
    #[arg(long, env = "HALYARD_DSR_DISPATCH")]
    pub dsr_dispatch: Option<String>,
    /// Load-balancing mode: `dsr` (backends answer clients directly), `snat` (DNAT + SNAT, replies
    /// come back through this node; backends need nothing), or `hybrid` (DSR for TCP, SNAT for UDP).
    #[arg(long, env = "HALYARD_LB_MODE")]
    pub lb_mode: Option<String>,
    /// Where the load balancer runs (Cilium's `bpf-lb-acceleration`): `native` (XDP, the
    /// default) or `disabled` (tc ingress, for drivers without native XDP; same maps, modes and
    /// decisions).
    #[arg(long, env = "HALYARD_BPF_LB_ACCELERATION")]
    pub bpf_lb_acceleration: Option<String>,
    /// bpffs directory for pinned maps and links (they outlive the agent).
    #[arg(long, env = "HALYARD_BPF_PIN_DIR", value_name = "DIR")]
    pub bpf_pin_dir: Option<PathBuf>,
    /// Outer source address of DSR packets (default: the Node's IPv4 InternalIP).
    #[arg(long, env = "HALYARD_NODE_IPV4")]
    pub node_ipv4: Option<std::net::Ipv4Addr>,
    /// Outer source address of DSR packets to IPv6 backends and the SNAT address of IPv6
    /// services (default: the Node's IPv6 InternalIP; without one, IPv6 frontends are skipped).
    #[arg(long, env = "HALYARD_NODE_IPV6")]
    pub node_ipv6: Option<std::net::Ipv6Addr>,
    /// Maglev seed, 12 bytes in base64; every node must use the same (Cilium's default if unset).
    #[arg(long, env = "HALYARD_MAGLEV_SEED")]
    pub maglev_seed: Option<String>,
    /// L2 announcement election: `single` (this node answers for everything its policies
    /// select), `etcd` (nodes elect one owner per IP: LAN heartbeats + etcd lease fencing) or
    /// `kubernetes` (the same with coordination.k8s.io/v1 Leases; needs l2-horizon-ms >= 1000).
    #[arg(long, env = "HALYARD_L2_ELECTION")]
    pub l2_election: Option<String>,
    /// etcd endpoints for the L2 election (comma-separated URLs).
    #[arg(long, env = "HALYARD_L2_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub l2_etcd_endpoints: Option<Vec<String>>,
    /// Where L2 election heartbeats go: a multicast group or the LAN's broadcast address, with port.
    #[arg(long, env = "HALYARD_L2_HEARTBEAT_GROUP")]
    pub l2_heartbeat_group: Option<std::net::SocketAddr>,
    /// This node's IPv4 address on the heartbeat LAN (for joining a multicast group).
    #[arg(long, env = "HALYARD_L2_HEARTBEAT_LOCAL")]
    pub l2_heartbeat_local: Option<std::net::Ipv4Addr>,
    /// How long a node that is still heard on the LAN but cannot reach etcd keeps its IPs (it
    /// answers none of them meanwhile) before others take them over: an etcd restart shorter
    /// than this moves no IP. Milliseconds (default 3000).
    #[arg(long, env = "HALYARD_L2_LEASE_GRACE_MS")]
    pub l2_lease_grace_ms: Option<u64>,
    /// How long an owner keeps answering after its last acknowledged etcd keep-alive, in ms
    /// (default 25; keep-alives go out every horizon/3). Also what a successor waits after
    /// fencing. Larger values tolerate more scheduling delay and make failover slower. Must be
    /// the same on every node.
    #[arg(long, env = "HALYARD_L2_HORIZON_MS")]
    pub l2_horizon_ms: Option<u64>,
    /// How long a fence request stays open for its target to refute it, in ms (default 25).
    #[arg(long, env = "HALYARD_L2_REFUTE_WINDOW_MS")]
    pub l2_refute_window_ms: Option<u64>,
    /// Kubernetes API server for `--l2-election kubernetes` (default: in-cluster,
    /// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).
    #[arg(long, env = "HALYARD_L2_KUBE_API")]
    pub l2_kube_api: Option<String>,
    /// Namespace of the election's Lease objects (default kube-system).
    #[arg(long, env = "HALYARD_L2_KUBE_NAMESPACE")]
    pub l2_kube_namespace: Option<String>,
    /// Bearer token file (default: the pod's service-account token when in-cluster).
    #[arg(long, env = "HALYARD_L2_KUBE_TOKEN_FILE", value_name = "FILE")]
    pub l2_kube_token_file: Option<PathBuf>,
    /// CA bundle for an https API server (default: the pod's service-account CA when in-cluster).
    #[arg(long, env = "HALYARD_L2_KUBE_CA_FILE", value_name = "FILE")]
    pub l2_kube_ca_file: Option<PathBuf>,
    /// This cluster's name (ClusterMesh; Cilium `cluster.name`).
    #[arg(long, env = "HALYARD_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// This cluster's id, 0-255 (0: not in a mesh).
    #[arg(long, env = "HALYARD_CLUSTER_ID")]
    pub cluster_id: Option<u32>,
    /// Directory of remote cluster etcd configs, one file per cluster (Cilium's format).
    #[arg(long, env = "HALYARD_CLUSTERMESH_CONFIG", value_name = "DIR")]
    pub clustermesh_config: Option<PathBuf>,
    /// Drop a remote cluster's services when its etcd stays unreachable this long (seconds).
    #[arg(long, env = "HALYARD_CLUSTERMESH_STALE_TTL_SECONDS")]
    pub clustermesh_stale_ttl_seconds: Option<u64>,
    /// Pod traffic between nodes: `off` (not Halyard's business), `tunnel` (VXLAN or Geneve
    /// overlay in BPF), or `native` (kernel routes to each node's pod CIDR via its InternalIP).
    #[arg(long, env = "HALYARD_ROUTING_MODE")]
    pub routing_mode: Option<String>,
    /// Tunnel encapsulation: `vxlan` (collect-metadata device) or `geneve` (written in BPF).
    #[arg(long, env = "HALYARD_TUNNEL_PROTOCOL")]
    pub tunnel_protocol: Option<String>,
    /// Tunnel UDP port (default 8472 for VXLAN, as Cilium; 6081 for Geneve).
    #[arg(long, env = "HALYARD_TUNNEL_PORT")]
    pub tunnel_port: Option<u16>,
    /// Host-side pod interfaces the overlay attaches to (comma-separated names, or prefixes
    /// ending in `*`; default `lxc*`). New ones are picked up within a second.
    #[arg(long, env = "HALYARD_OVERLAY_INTERFACES", value_delimiter = ',')]
    pub overlay_interfaces: Option<Vec<String>>,
    /// The node's underlay interface (Geneve leaves and arrives there; default: the interface
    /// holding the node's IPv4).
    #[arg(long, env = "HALYARD_OVERLAY_UPLINK")]
    pub overlay_uplink: Option<String>,
    /// Translate pods' connections to Service ClusterIPs in tc on the pod interfaces
    /// (`overlay-interfaces`): east-west load balancing. Default: on when routing-mode is
    /// `tunnel` or `native`.
    #[arg(long, env = "HALYARD_ENABLE_CLUSTER_IP_LB", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub enable_cluster_ip_lb: Option<bool>,
    /// Validate the configuration and the manifest directory, print what is wrong, and exit.
    #[arg(long)]
    pub check: bool,
    /// Detach the datapath and remove every pinned map and link, then exit.
    #[arg(long)]
    pub uninstall: bool,
}

/// The config file: the same keys as the flags. Unknown keys are errors, so typos do not pass silently.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    manifest_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    metrics_addr: Option<String>,
    node_name: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    lb_classes: Option<Vec<String>>,
    lb_serve_unclassed: Option<bool>,
    cluster_pool_ipv4_cidr: Option<Vec<IpNet>>,
    cluster_pool_ipv4_mask_size: Option<u8>,
    cluster_pool_ipv6_cidr: Option<Vec<IpNet>>,
    cluster_pool_ipv6_mask_size: Option<u8>,
    reload_debounce_ms: Option<u64>,
    resync_seconds: Option<u64>,
    bgp_router_id: Option<std::net::Ipv4Addr>,
    bgp_secrets_namespace: Option<String>,
    bgp_import: Option<bool>,
    bgp_import_table: Option<u32>,
    bgp_import_metric: Option<u32>,
    bgp_import_prefixes: Option<Vec<IpNet>>,
    datapath_interfaces: Option<Vec<String>>,
    datapath_decap_interfaces: Option<Vec<String>>,
    dsr_dispatch: Option<String>,
    lb_mode: Option<String>,
    bpf_lb_acceleration: Option<String>,
    bpf_pin_dir: Option<PathBuf>,
    node_ipv4: Option<std::net::Ipv4Addr>,
    node_ipv6: Option<std::net::Ipv6Addr>,
    maglev_seed: Option<String>,
    l2_election: Option<String>,
    l2_etcd_endpoints: Option<Vec<String>>,
    l2_heartbeat_group: Option<std::net::SocketAddr>,
    l2_heartbeat_local: Option<std::net::Ipv4Addr>,
    l2_lease_grace_ms: Option<u64>,
    l2_horizon_ms: Option<u64>,
    l2_refute_window_ms: Option<u64>,
    l2_kube_api: Option<String>,
    l2_kube_namespace: Option<String>,
    l2_kube_token_file: Option<PathBuf>,
    l2_kube_ca_file: Option<PathBuf>,
    cluster_name: Option<String>,
    cluster_id: Option<u32>,
    clustermesh_config: Option<PathBuf>,
    clustermesh_stale_ttl_seconds: Option<u64>,
    routing_mode: Option<String>,
    tunnel_protocol: Option<String>,
    tunnel_port: Option<u16>,
    overlay_interfaces: Option<Vec<String>>,
    overlay_uplink: Option<String>,
    enable_cluster_ip_lb: Option<bool>,
}

/// What the agent was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Run,
    Check,
    Uninstall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LogFormat {
    Text,
    Json,
}

/// The effective configuration.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub manifest_dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub metrics_addr: Option<SocketAddr>,
    pub node_name: String,
    pub log_level: String,
    pub log_format: LogFormat,
    pub lbipam: halyard_ipam::LbIpamConfig,
    pub cluster_pool: halyard_ipam::podcidr::ClusterPoolConfig,
    pub reload_debounce_ms: u64,
    pub resync_seconds: u64,
    pub bgp_router_id: Option<std::net::Ipv4Addr>,
    pub bgp_secrets_namespace: String,
    pub bgp_import: crate::bgp_import::ImportSettings,
    pub datapath: crate::datapath::DatapathSettings,
    pub mesh: crate::clustermesh::MeshSettings,
    pub overlay: crate::overlay::OverlaySettings,
    pub cluster_ip: crate::cluster_ip::ClusterIpSettings,
    pub l2_election: crate::l2::ElectionSettings,
    /// Each setting's rendered value and where it came from, in key order.
    pub entries: BTreeMap<&'static str, (String, String)>,
}

struct Layers<'a> {
    matches: &'a ArgMatches,
    file: Option<&'a Path>,
    entries: BTreeMap<&'static str, (String, String)>,
}

impl Layers<'_> {
    /// Picks flag/env, else file, else default, and records the source.
    fn pick<T: Clone>(
        &mut self,
        key: &'static str,
        from_cli: Option<T>,
        from_file: Option<T>,
        default: T,
        show: impl Fn(&T) -> String,
    ) -> T {
        let id = key.replace('-', "_");
        let (v, src) = match (from_cli, from_file) {
            (Some(v), _) => {
                let src = match self.matches.value_source(&id) {
                    Some(ValueSource::EnvVariable) => format!("env HALYARD_{}", id.to_uppercase()),
                    _ => "flag".to_string(),
                };
                (v, src)
            }
            (None, Some(v)) => (v, format!("file {}", self.file.map(|p| p.display().to_string()).unwrap_or_default())),
            (None, None) => (default, "default".to_string()),
        };
        self.entries.insert(key, (show(&v), src));
        v
    }
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl AgentConfig {
    /// Parses flags and environment from the process, then layers the config file under them.
    pub fn from_env() -> anyhow::Result<(Self, Mode)> {
        let matches = Flags::command().get_matches();
        let flags = Flags::from_arg_matches(&matches)?;
        let mode = match (flags.check, flags.uninstall) {
            (true, true) => bail!("--check and --uninstall cannot be combined"),
            (true, false) => Mode::Check,
            (false, true) => Mode::Uninstall,
            (false, false) => Mode::Run,
        };
        Ok((Self::from_flags(flags, &matches)?, mode))
    }

    pub fn from_flags(flags: Flags, matches: &ArgMatches) -> anyhow::Result<Self> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.to_string().trim_end()))?
            }
            None => FileConfig::default(),
        };
        let mut l = Layers { matches, file: flags.config.as_deref(), entries: BTreeMap::new() };
        let disp = |p: &PathBuf| p.display().to_string();
        let manifest_dir = l.pick(
            "manifest-dir",
            flags.manifest_dir,
            file.manifest_dir,
            PathBuf::from("/etc/halyard/manifests"),
            disp,
        );
        let state_dir = l.pick("state-dir", flags.state_dir, file.state_dir, PathBuf::from("/var/lib/halyard"), disp);
        let socket = l.pick("socket", flags.socket, file.socket, PathBuf::from(halyard_api::DEFAULT_SOCKET), disp);
        let metrics_raw =
            l.pick("metrics-addr", flags.metrics_addr, file.metrics_addr, "127.0.0.1:9890".to_string(), String::clone);
        let metrics_addr = match metrics_raw.as_str() {
            "off" | "" => None,
            s => Some(
                s.parse::<SocketAddr>()
                    .map_err(|e| anyhow::anyhow!("metrics-addr: {s:?} is not an address:port or `off` ({e})"))?,
            ),
        };
        let node_name = l.pick("node-name", flags.node_name, file.node_name, hostname(), String::clone);
        let log_level = l.pick("log-level", flags.log_level, file.log_level, "info".to_string(), String::clone);
        let log_format =
            match l.pick("log-format", flags.log_format, file.log_format, "text".to_string(), String::clone).as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => bail!("log-format: {other:?} is not one of text, json"),
            };
        let defaults = halyard_ipam::LbIpamConfig::default();
        let classes =
            l.pick("lb-classes", flags.lb_classes, file.lb_classes, defaults.classes.iter().cloned().collect(), |v| {
                list(v)
            });
        let serve_unclassed =
            l.pick("lb-serve-unclassed", flags.lb_serve_unclassed, file.lb_serve_unclassed, true, bool::to_string);
        let pool_defaults = halyard_ipam::podcidr::ClusterPoolConfig::default();
        let cluster_pool = halyard_ipam::podcidr::ClusterPoolConfig {
            ipv4: l.pick(
                "cluster-pool-ipv4-cidr",
                flags.cluster_pool_ipv4_cidr,
                file.cluster_pool_ipv4_cidr,
                vec!["10.0.0.0/8".parse()?],
                |v| list(v),
            ),
            ipv4_mask: l.pick(
                "cluster-pool-ipv4-mask-size",
                flags.cluster_pool_ipv4_mask_size,
                file.cluster_pool_ipv4_mask_size,
                pool_defaults.ipv4_mask,
                u8::to_string,
            ),
            ipv6: l.pick(
                "cluster-pool-ipv6-cidr",
                flags.cluster_pool_ipv6_cidr,
                file.cluster_pool_ipv6_cidr,
                vec![],
                |v| list(v),
            ),
            ipv6_mask: l.pick(
                "cluster-pool-ipv6-mask-size",
                flags.cluster_pool_ipv6_mask_size,
                file.cluster_pool_ipv6_mask_size,
                pool_defaults.ipv6_mask,
                u8::to_string,
            ),
        };
        // Reject impossible pool settings now, not at the first node.
        halyard_ipam::podcidr::reconcile_node_cidrs(&cluster_pool, &[], &BTreeMap::new())
            .map_err(|e| anyhow::anyhow!("cluster pool settings: {e}"))?;
        let reload_debounce_ms =
            l.pick("reload-debounce-ms", flags.reload_debounce_ms, file.reload_debounce_ms, 100, u64::to_string);
        let resync_seconds = l.pick("resync-seconds", flags.resync_seconds, file.resync_seconds, 30, u64::to_string);
        let bgp_router_id =
            l.pick("bgp-router-id", flags.bgp_router_id.map(Some), file.bgp_router_id.map(Some), None, |v| {
                v.map(|a| a.to_string()).unwrap_or_default()
            });
        let bgp_secrets_namespace = l.pick(
            "bgp-secrets-namespace",
            flags.bgp_secrets_namespace,
            file.bgp_secrets_namespace,
            crate::bgp::DEFAULT_SECRETS_NAMESPACE.to_string(),
            String::clone,
        );
        if !halyard_model::validate::is_dns1123_label(&bgp_secrets_namespace) {
            bail!("bgp-secrets-namespace: {bgp_secrets_namespace:?} is not a namespace name (a DNS-1123 label)");
        }
        let import_defaults = crate::bgp_import::ImportSettings::default();
        let bgp_import = crate::bgp_import::ImportSettings {
            enabled: l.pick("bgp-import", flags.bgp_import, file.bgp_import, false, bool::to_string),
            table: l.pick(
                "bgp-import-table",
                flags.bgp_import_table,
                file.bgp_import_table,
                import_defaults.table,
                u32::to_string,
            ),
            metric: l.pick(
                "bgp-import-metric",
                flags.bgp_import_metric,
                file.bgp_import_metric,
                import_defaults.metric,
                u32::to_string,
            ),
            prefixes: l
                .pick("bgp-import-prefixes", flags.bgp_import_prefixes, file.bgp_import_prefixes, vec![], |v| list(v)),
        };
        // 0 is RT_TABLE_UNSPEC; 253..=255 are the kernel's default, main and local tables, of
        // which only main makes sense for routes.
        if bgp_import.table == 0 || bgp_import.table == 253 || bgp_import.table == 255 {
            bail!("bgp-import-table: {} is reserved (use 254 for main, or 1-252 / 256 and up)", bgp_import.table);
        }
        let lb_interfaces =
            l.pick("datapath-interfaces", flags.datapath_interfaces, file.datapath_interfaces, vec![], |v| list(v));
        let decap_interfaces = l.pick(
            "datapath-decap-interfaces",
            flags.datapath_decap_interfaces,
            file.datapath_decap_interfaces,
            vec![],
            |v| list(v),
        );
        let dispatch = match l
            .pick("dsr-dispatch", flags.dsr_dispatch, file.dsr_dispatch, "geneve".to_string(), String::clone)
            .as_str()
        {
            "geneve" => halyard_datapath::maps::ForwardingMode::DsrGeneve,
            "ipip" => halyard_datapath::maps::ForwardingMode::DsrIpip,
            "opt" => halyard_datapath::maps::ForwardingMode::DsrOpt,
            other => bail!("dsr-dispatch: {other:?} is not one of geneve, ipip, opt"),
        };
        let lb_mode = match l.pick("lb-mode", flags.lb_mode, file.lb_mode, "dsr".to_string(), String::clone).as_str() {
            "dsr" => crate::datapath::LbMode::Dsr,
            "snat" => crate::datapath::LbMode::Snat,
            "hybrid" => crate::datapath::LbMode::Hybrid,
            other => bail!("lb-mode: {other:?} is not one of dsr, snat, hybrid"),
        };
        let acceleration = l.pick(
            "bpf-lb-acceleration",
            flags.bpf_lb_acceleration,
            file.bpf_lb_acceleration,
            "native".to_string(),
            String::clone,
        );
        let lb_at_tc = match acceleration.as_str() {
            "native" => false,
            "disabled" => true,
            other => bail!("bpf-lb-acceleration: {other:?} is not one of native, disabled"),
        };
        let pin_dir = l.pick(
            "bpf-pin-dir",
            flags.bpf_pin_dir,
            file.bpf_pin_dir,
            PathBuf::from(halyard_datapath::loader::DEFAULT_PIN_DIR),
            disp,
        );
        let node_ipv4 = l.pick("node-ipv4", flags.node_ipv4.map(Some), file.node_ipv4.map(Some), None, |v| {
            v.map(|a| a.to_string()).unwrap_or_default()
        });
        let node_ipv6 = l.pick("node-ipv6", flags.node_ipv6.map(Some), file.node_ipv6.map(Some), None, |v| {
            v.map(|a| a.to_string()).unwrap_or_default()
        });
        let seed_text = l.pick(
            "maglev-seed",
            flags.maglev_seed,
            file.maglev_seed,
            halyard_datapath::maglev::DEFAULT_SEED.to_string(),
            String::clone,
        );
        let seed = halyard_datapath::maglev::MaglevSeed::from_base64(&seed_text)
            .map_err(|e| anyhow::anyhow!("maglev-seed: {e}"))?;
        let names_file = state_dir.join("datapath.json");
        let election_kind =
            l.pick("l2-election", flags.l2_election, file.l2_election, "single".to_string(), String::clone);
        let l2_endpoints =
            l.pick("l2-etcd-endpoints", flags.l2_etcd_endpoints, file.l2_etcd_endpoints, vec![], |v| list(v));
        let l2_group = l.pick(
            "l2-heartbeat-group",
            flags.l2_heartbeat_group,
            file.l2_heartbeat_group,
            "239.255.72.76:7946".parse()?,
            |a| a.to_string(),
        );
        let l2_local = l.pick(
            "l2-heartbeat-local",
            flags.l2_heartbeat_local.map(Some),
            file.l2_heartbeat_local.map(Some),
            None,
            |v| v.map(|a| a.to_string()).unwrap_or_default(),
        );
        let l2_grace_ms =
            l.pick("l2-lease-grace-ms", flags.l2_lease_grace_ms, file.l2_lease_grace_ms, 3000, u64::to_string);
        if l2_grace_ms > 600_000 {
            bail!("l2-lease-grace-ms: {l2_grace_ms} is above the 600000 ms (10 min) limit");
        }
        let l2_horizon_ms = l.pick("l2-horizon-ms", flags.l2_horizon_ms, file.l2_horizon_ms, 25, u64::to_string);
        // Kubernetes Lease keep-alives are API-server writes: the horizon may be (and should be)
        // much longer there (halyard_l2::lease::kube).
        let max_horizon_ms = if election_kind == "kubernetes" { 60_000 } else { 1000 };
        if !(10..=max_horizon_ms).contains(&l2_horizon_ms) {
            bail!("l2-horizon-ms: {l2_horizon_ms} is outside 10-{max_horizon_ms} ms");
        }
        let l2_refute_ms =
            l.pick("l2-refute-window-ms", flags.l2_refute_window_ms, file.l2_refute_window_ms, 25, u64::to_string);
        if !(1..=5000).contains(&l2_refute_ms) {
            bail!("l2-refute-window-ms: {l2_refute_ms} is outside 1-5000 ms");
        }
        let ms = std::time::Duration::from_millis;
        let l2_timing = halyard_l2::election::ElectionConfig {
            horizon: ms(l2_horizon_ms),
            keepalive_interval: ms((l2_horizon_ms / 3).max(1)),
            clock_margin: ms((l2_horizon_ms / 12).max(2)),
            refute_window: ms(l2_refute_ms),
            lease_grace: ms(l2_grace_ms),
            // Only a backstop (etcd TTL; informational leaseDurationSeconds on Kubernetes).
            lease_ttl: halyard_l2::election::ElectionConfig::default().lease_ttl.max(ms(l2_horizon_ms)),
            ..halyard_l2::election::ElectionConfig::default()
        };
        l2_timing.validate().map_err(|e| anyhow::anyhow!("l2-horizon-ms {l2_horizon_ms}: {e}"))?;
        let l2_election = match election_kind.as_str() {
            "single" => crate::l2::ElectionSettings::Single,
            "etcd" => {
                if l2_endpoints.is_empty() {
                    bail!("l2-election etcd needs l2-etcd-endpoints (the etcd the nodes fence each other through)");
                }
                crate::l2::ElectionSettings::Etcd {
                    endpoints: l2_endpoints,
                    group: l2_group,
                    local: l2_local,
                    timing: Box::new(l2_timing),
                }
            }
            "kubernetes" => {
                let in_cluster = halyard_l2::lease::KubeConfig::in_cluster_api();
                let api = l.pick(
                    "l2-kube-api",
                    flags.l2_kube_api.map(Some),
                    file.l2_kube_api.map(Some),
                    in_cluster.clone(),
                    |v| v.clone().unwrap_or_default(),
                );
                let Some(api) = api else {
                    bail!(
                        "l2-election kubernetes needs l2-kube-api (KUBERNETES_SERVICE_HOST is not set: not in a pod)"
                    );
                };
                let namespace = l.pick(
                    "l2-kube-namespace",
                    flags.l2_kube_namespace,
                    file.l2_kube_namespace,
                    halyard_l2::lease::kube::DEFAULT_NAMESPACE.to_string(),
                    String::clone,
                );
                // The service account's files are the default only in a pod.
                let sa = |p: &str| in_cluster.as_ref().map(|_| PathBuf::from(p));
                let show = |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                let token_file = l.pick(
                    "l2-kube-token-file",
                    flags.l2_kube_token_file.map(Some),
                    file.l2_kube_token_file.map(Some),
                    sa(halyard_l2::lease::kube::IN_CLUSTER_TOKEN),
                    show,
                );
                let ca_file = l.pick(
                    "l2-kube-ca-file",
                    flags.l2_kube_ca_file.map(Some),
                    file.l2_kube_ca_file.map(Some),
                    sa(halyard_l2::lease::kube::IN_CLUSTER_CA),
                    show,
                );
                crate::l2::ElectionSettings::Kubernetes {
                    kube: crate::l2::KubeSettings { api, namespace, token_file, ca_file },
                    group: l2_group,
                    local: l2_local,
                    timing: Box::new(l2_timing),
                }
            }
            other => bail!("l2-election: {other:?} is not one of single, etcd, kubernetes"),
        };
        let cluster_name =
            l.pick("cluster-name", flags.cluster_name, file.cluster_name, "default".to_string(), String::clone);
        halyard_clustermesh::keys::validate_cluster_name(&cluster_name)
            .map_err(|e| anyhow::anyhow!("cluster-name: {cluster_name:?}: {e}"))?;
        let cluster_id = l.pick("cluster-id", flags.cluster_id, file.cluster_id, 0, u32::to_string);
        if cluster_id > 255 {
            bail!("cluster-id: {cluster_id} is not in 0-255");
        }
        let clustermesh_config = l.pick(
            "clustermesh-config",
            flags.clustermesh_config.map(Some),
            file.clustermesh_config.map(Some),
            None,
            |v| v.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        );
        let stale_ttl = l.pick(
            "clustermesh-stale-ttl-seconds",
            flags.clustermesh_stale_ttl_seconds,
            file.clustermesh_stale_ttl_seconds,
            60,
            u64::to_string,
        );
        let routing_mode =
            l.pick("routing-mode", flags.routing_mode, file.routing_mode, "off".to_string(), String::clone);
        let routing_mode = crate::overlay::RoutingMode::parse(&routing_mode)
            .ok_or_else(|| anyhow::anyhow!("routing-mode: {routing_mode:?} is not one of off, tunnel, native"))?;
        let tunnel_protocol = match l
            .pick("tunnel-protocol", flags.tunnel_protocol, file.tunnel_protocol, "vxlan".to_string(), String::clone)
            .as_str()
        {
            "vxlan" => halyard_datapath::overlay::TunnelProtocol::Vxlan,
            "geneve" => halyard_datapath::overlay::TunnelProtocol::Geneve,
            other => bail!("tunnel-protocol: {other:?} is not one of vxlan, geneve"),
        };
        let tunnel_port =
            l.pick("tunnel-port", flags.tunnel_port, file.tunnel_port, tunnel_protocol.default_port(), u16::to_string);
        if tunnel_port == 0 {
            bail!("tunnel-port: must not be 0");
        }
        let overlay_interfaces = l.pick(
            "overlay-interfaces",
            flags.overlay_interfaces,
            file.overlay_interfaces,
            vec!["lxc*".to_string()],
            |v| list(v),
        );
        let overlay_uplink =
            l.pick("overlay-uplink", flags.overlay_uplink.map(Some), file.overlay_uplink.map(Some), None, |v| {
                v.clone().unwrap_or_default()
            });
        let cluster_ip = crate::cluster_ip::ClusterIpSettings {
            enabled: l.pick(
                "enable-cluster-ip-lb",
                flags.enable_cluster_ip_lb,
                file.enable_cluster_ip_lb,
                routing_mode != crate::overlay::RoutingMode::Off,
                bool::to_string,
            ),
            interfaces: overlay_interfaces.clone(),
            pin_dir: pin_dir.clone(),
            seed,
            names_file: state_dir.join(crate::cluster_ip::NAMES_FILE),
        };
        let overlay = crate::overlay::OverlaySettings {
            mode: routing_mode,
            protocol: tunnel_protocol,
            port: tunnel_port,
            vni: halyard_datapath::overlay::DEFAULT_VNI,
            interfaces: overlay_interfaces,
            uplink: overlay_uplink,
            pin_dir: pin_dir.clone(),
            node_ipv4,
        };
        if resync_seconds == 0 {
            bail!("resync-seconds: must be at least 1");
        }
        if let Some(p) = &flags.config {
            l.entries.insert("config", (p.display().to_string(), "flag".to_string()));
        }
        Ok(Self {
            manifest_dir,
            state_dir,
            socket,
            metrics_addr,
            node_name,
            log_level,
            log_format,
            lbipam: halyard_ipam::LbIpamConfig { serve_unclassed, classes: classes.into_iter().collect() },
            cluster_pool,
            reload_debounce_ms,
            resync_seconds,
            bgp_router_id,
            bgp_secrets_namespace,
            bgp_import,
            datapath: crate::datapath::DatapathSettings {
                lb_interfaces,
                decap_interfaces,
                dispatch,
                lb_mode,
                lb_at_tc,
                pin_dir,
                node_ipv4,
                node_ipv6,
                seed,
                names_file: names_file.clone(),
            },
            l2_election,
            mesh: crate::clustermesh::MeshSettings {
                cluster_name,
                cluster_id,
                config_dir: clustermesh_config,
                stale_ttl: std::time::Duration::from_secs(stale_ttl),
            },
            overlay,
            cluster_ip,
            entries: l.entries,
        })
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> anyhow::Result<AgentConfig> {
        let mut argv = vec!["halyard-agent"];
        argv.extend_from_slice(args);
        let matches = Flags::command().try_get_matches_from(argv)?;
        let flags = Flags::from_arg_matches(&matches)?;
        AgentConfig::from_flags(flags, &matches)
    }

    #[test]
    fn bgp_secrets_namespace_defaults_to_kube_system() {
        assert_eq!(load(&[]).unwrap().bgp_secrets_namespace, "kube-system");
        let c = load(&["--bgp-secrets-namespace", "cilium-bgp"]).unwrap();
        assert_eq!(
            (c.bgp_secrets_namespace.as_str(), c.entries["bgp-secrets-namespace"].1.as_str()),
            ("cilium-bgp", "flag")
        );
        assert!(
            load(&["--bgp-secrets-namespace", "Not_A_Namespace"])
                .unwrap_err()
                .to_string()
                .contains("bgp-secrets-namespace")
        );
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "state_dir = \"/from/file\"\nnode_name = \"file-node\"\nlb_serve_unclassed = false\n")
            .unwrap();
        let f = file.to_str().unwrap();
        let c = load(&["--config", f, "--node-name", "flag-node"]).unwrap();
        assert_eq!(c.node_name, "flag-node");
        assert_eq!(c.entries["node-name"].1, "flag");
        assert_eq!(c.state_dir, PathBuf::from("/from/file"));
        assert!(c.entries["state-dir"].1.starts_with("file "));
        assert!(!c.lbipam.serve_unclassed);
        assert_eq!(c.socket, PathBuf::from(halyard_api::DEFAULT_SOCKET));
        assert_eq!(c.entries["socket"].1, "default");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "manifest_dri = \"/x\"\n").unwrap();
        let e = load(&["--config", file.to_str().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("agent.toml") && e.contains("manifest_dri"), "{e}");
        let e = load(&["--metrics-addr", "nowhere"]).unwrap_err().to_string();
        assert!(e.contains("metrics-addr"), "{e}");
        let e = load(&["--cluster-pool-ipv4-mask-size", "4"]).unwrap_err().to_string();
        assert!(e.contains("cluster pool") && e.contains("/4"), "{e}");
        assert!(load(&["--log-format", "xml"]).unwrap_err().to_string().contains("log-format"));
        assert!(load(&["--metrics-addr", "off"]).unwrap().metrics_addr.is_none());
    }

    #[test]
    fn overlay_settings_and_port_defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.overlay.mode, crate::overlay::RoutingMode::Off);
        assert_eq!(c.overlay.port, 8472);
        assert_eq!(c.overlay.interfaces, vec!["lxc*".to_string()]);
        let c =
            load(&["--routing-mode", "tunnel", "--tunnel-protocol", "geneve", "--overlay-interfaces", "veth*,pod0"])
                .unwrap();
        assert_eq!(c.overlay.mode, crate::overlay::RoutingMode::Tunnel);
        assert_eq!(c.overlay.port, 6081);
        assert_eq!(c.overlay.interfaces, vec!["veth*".to_string(), "pod0".to_string()]);
        assert_eq!(load(&["--tunnel-protocol", "geneve", "--tunnel-port", "7000"]).unwrap().overlay.port, 7000);
        assert!(load(&["--routing-mode", "bgp"]).unwrap_err().to_string().contains("routing-mode"));
        assert!(load(&["--tunnel-protocol", "ipip"]).unwrap_err().to_string().contains("tunnel-protocol"));
    }

    #[test]
    fn cluster_ip_lb_follows_the_routing_mode_unless_set() {
        assert!(!load(&[]).unwrap().cluster_ip.enabled);
        let c = load(&["--routing-mode", "native"]).unwrap();
        assert!(c.cluster_ip.enabled);
        assert_eq!(c.cluster_ip.interfaces, vec!["lxc*".to_string()]);
        assert_eq!(c.entries["enable-cluster-ip-lb"], ("true".to_string(), "default".to_string()));
        assert!(load(&["--routing-mode", "tunnel"]).unwrap().cluster_ip.enabled);
        assert!(!load(&["--routing-mode", "tunnel", "--enable-cluster-ip-lb=false"]).unwrap().cluster_ip.enabled);
        let c = load(&["--enable-cluster-ip-lb", "--overlay-interfaces", "veth*"]).unwrap();
        assert!(c.cluster_ip.enabled);
        assert_eq!(c.cluster_ip.interfaces, vec!["veth*".to_string()]);
    }

    #[test]
    fn node_ipv6_is_a_datapath_setting() {
        assert_eq!(load(&[]).unwrap().datapath.node_ipv6, None);
        let c = load(&["--node-ipv6", "fd00:93::2"]).unwrap();
        assert_eq!(c.datapath.node_ipv6, Some("fd00:93::2".parse().unwrap()));
        assert_eq!(c.entries["node-ipv6"], ("fd00:93::2".to_string(), "flag".to_string()));
        assert!(load(&["--node-ipv6", "10.0.0.1"]).is_err(), "an IPv4 address is no --node-ipv6");
    }

    #[test]
    fn l2_election_kubernetes() {
        let c = load(&[
            "--l2-election",
            "kubernetes",
            "--l2-kube-api",
            "https://10.0.0.1:6443",
            "--l2-kube-ca-file",
            "/etc/ca.crt",
            "--l2-horizon-ms",
            "3000",
        ])
        .unwrap();
        let crate::l2::ElectionSettings::Kubernetes { kube, timing, .. } = &c.l2_election else {
            panic!("{:?}", c.l2_election)
        };
        assert_eq!(kube.api, "https://10.0.0.1:6443");
        assert_eq!(kube.namespace, "kube-system");
        assert_eq!(kube.ca_file.as_deref(), Some(Path::new("/etc/ca.crt")));
        assert_eq!(timing.horizon, std::time::Duration::from_secs(3));
        assert_eq!(timing.keepalive_interval, std::time::Duration::from_millis(1000));
        assert!(timing.lease_ttl >= timing.horizon);
        assert_eq!(c.entries["l2-kube-namespace"], ("kube-system".to_string(), "default".to_string()));
        // Long horizons are for the Kubernetes backend only.
        let e = load(&["--l2-election", "etcd", "--l2-etcd-endpoints", "http://e:2379", "--l2-horizon-ms", "3000"]);
        assert!(e.unwrap_err().to_string().contains("outside 10-1000 ms"));
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            let e = load(&["--l2-election", "kubernetes"]).unwrap_err().to_string();
            assert!(e.contains("needs l2-kube-api"), "{e}");
        }
    }
}
