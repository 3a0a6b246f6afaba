//! `halyard`: the command-line client of halyard-agent.

mod bpf;
mod cluster_ip;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use halyard_api::v1;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "halyard", version, about = "Inspect a running Halyard agent")]
struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, env = "HALYARD_SOCKET", default_value = halyard_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Agent health, what is loaded, and any manifest errors in force.
    Status,
    /// LoadBalancer services and their IPs.
    #[command(subcommand, alias = "services", alias = "svc")]
    Service(ServiceCmd),
    /// LB-IPAM pools.
    #[command(subcommand)]
    Ipam(IpamCmd),
    /// Nodes and their pod CIDRs.
    #[command(subcommand, alias = "nodes")]
    Node(NodeCmd),
    /// The agent's effective configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// BGP sessions and routes.
    #[command(subcommand)]
    Bgp(BgpCmd),
    /// L2 (ARP) announcements.
    #[command(subcommand)]
    L2(L2Cmd),
    /// ClusterMesh: the remote clusters this agent follows.
    #[command(subcommand)]
    Clustermesh(ClustermeshCmd),
    /// The eBPF datapath's maps: load-balancer entries, Maglev tables, conntrack, counters.
    #[command(subcommand)]
    Bpf(BpfCmd),
    /// Print a shell completion script (e.g. `halyard completion bash > /etc/bash_completion.d/halyard`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCmd {
    /// List LoadBalancer services.
    #[command(alias = "ls")]
    List {
        /// Only this namespace.
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum IpamCmd {
    /// List pools with usage and conflicts.
    Pools,
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// List nodes and their pod CIDRs.
    #[command(alias = "ls")]
    List,
}

#[derive(Debug, Subcommand)]
enum BgpCmd {
    /// BGP peers: local AS, peer AS, address, state, BFD state, uptime, families, received,
    /// advertised.
    Peers,
    /// Prefixes advertised to (default) or received from each peer.
    Routes {
        #[arg(value_parser = ["advertised", "received"], default_value = "advertised")]
        direction: String,
    },
}

#[derive(Debug, Subcommand)]
enum L2Cmd {
    /// IPs this node answers ARP for: IP, interface, owner, MAC, service, policy.
    Announcements,
}

#[derive(Debug, Subcommand)]
enum ClustermeshCmd {
    /// Each remote cluster: connected, ready, last failure, nodes/services/identities, sync state.
    Status,
}

#[derive(Debug, Subcommand)]
enum BpfCmd {
    /// Load-balancer sub-commands.
    #[command(subcommand)]
    Lb(BpfLbCmd),
    /// The Maglev table of a service (namespace/name[:port[/proto]] or service id).
    Maglev {
        service: String,
        /// Show which backend this client flow (IP:PORT, or [IPv6]:PORT for an IPv6 table) maps to.
        #[arg(long)]
        flow: Option<String>,
        #[command(flatten)]
        at: PinDirArg,
    },
    /// Connection-tracking entries of load-balanced flows.
    #[command(subcommand)]
    Ct(BpfCtCmd),
    /// Datapath packet counters by action and reason.
    Counters {
        #[command(flatten)]
        at: PinDirArg,
    },
    /// Pod overlay sub-commands (`--routing-mode tunnel`).
    #[command(subcommand)]
    Tunnel(BpfTunnelCmd),
    /// East-west ClusterIP translation sub-commands (pods to Service ClusterIPs).
    #[command(subcommand, name = "cluster-ip")]
    ClusterIp(BpfClusterIpCmd),
}

#[derive(Debug, Subcommand)]
enum BpfClusterIpCmd {
    /// ClusterIP frontends with their backend pods and Maglev share, and the counters.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        at: PinDirArg,
    },
    /// Pods' flows to ClusterIPs and the backend each is pinned to.
    Ct {
        #[command(flatten)]
        at: PinDirArg,
    },
}

#[derive(Debug, Subcommand)]
enum BpfTunnelCmd {
    /// Pod CIDRs and the node each is tunnelled to, with the overlay counters.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        at: PinDirArg,
    },
}

#[derive(Debug, clap::Args)]
struct PinDirArg {
    /// bpffs directory of the pinned maps (default: the agent's `bpf-pin-dir`).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BpfLbCmd {
    /// Frontends with their backends and Maglev share.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        at: PinDirArg,
    },
}

#[derive(Debug, Subcommand)]
enum BpfCtCmd {
    /// Flows and the backend each is pinned to.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        at: PinDirArg,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Show every setting, its value and where it came from.
    View,
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".to_string() } else { s.to_string() }
}

fn joined(v: &[String]) -> String {
    if v.is_empty() { "-".to_string() } else { v.join(",") }
}

/// Decimal counters become JSON numbers when they fit in 64 bits (IPv6 pools may not).
fn count(s: &str) -> Value {
    s.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(s))
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    let json_out = cli.output == Output::Json;
    if let Command::Completion { shell } = cli.command {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "halyard", &mut buf);
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    if let Command::Bpf(cmd) = cli.command {
        let pin = match &cmd {
            BpfCmd::Lb(BpfLbCmd::List { at }) | BpfCmd::Ct(BpfCtCmd::List { at }) | BpfCmd::Counters { at } => {
                at.pin_dir.clone()
            }
            BpfCmd::Maglev { at, .. } => at.pin_dir.clone(),
            BpfCmd::Tunnel(BpfTunnelCmd::List { at }) => at.pin_dir.clone(),
            BpfCmd::ClusterIp(BpfClusterIpCmd::List { at } | BpfClusterIpCmd::Ct { at }) => at.pin_dir.clone(),
        };
        let loc = bpf_locations(&cli.socket, pin.as_deref()).await?;
        return match cmd {
            BpfCmd::Lb(BpfLbCmd::List { .. }) => bpf::lb_list(&loc, json_out),
            BpfCmd::Maglev { service, flow, .. } => bpf::maglev(&loc, &service, flow.as_deref(), json_out),
            BpfCmd::Ct(BpfCtCmd::List { .. }) => bpf::ct_list(&loc, json_out),
            BpfCmd::Counters { .. } => bpf::counters(&loc, json_out),
            BpfCmd::Tunnel(BpfTunnelCmd::List { .. }) => bpf_tunnel_list(&loc.pin_dir, json_out),
            BpfCmd::ClusterIp(BpfClusterIpCmd::List { .. }) => cluster_ip::list(&loc, json_out),
            BpfCmd::ClusterIp(BpfClusterIpCmd::Ct { .. }) => cluster_ip::ct(&loc, json_out),
        };
    }
    let mut client = halyard_api::connect(&cli.socket).await?;
    let text = match cli.command {
        Command::Bpf(_) => unreachable!("handled above"),
        Command::Completion { .. } => unreachable!("handled above"),
        Command::Status => {
            let s = client.get_status(v1::StatusRequest {}).await?.into_inner();
            let diags: Vec<Value> = s
                .diagnostics
                .iter()
                .map(|d| {
                    json!({"severity": d.severity, "file": d.file, "document": d.document, "field": d.field,
                           "message": d.message, "text": d.text})
                })
                .collect();
            if json_out {
                serde_json::to_string_pretty(&json!({
                    "version": s.version, "node": s.node_name, "mode": s.mode, "manifestDir": s.manifest_dir,
                    "uptimeSeconds": s.uptime_seconds, "generation": s.generation, "lastReconcile": s.last_reconcile,
                    "files": s.files, "objects": s.objects, "services": s.services,
                    "servicesSatisfied": s.services_satisfied, "pools": s.pools, "stateFile": s.state_file,
                    "diagnostics": diags,
                }))? + "\n"
            } else {
                let errors = s.diagnostics.iter().filter(|d| d.severity == "error").count();
                let warnings = s.diagnostics.len() - errors;
                let mut objects: Vec<String> = s.objects.iter().map(|(k, v)| format!("{k}={v}")).collect();
                objects.sort();
                let rows = vec![
                    vec![
                        "Agent:".into(),
                        format!("running, version {}, up {}", s.version, human_duration(s.uptime_seconds)),
                    ],
                    vec!["Node:".into(), s.node_name.clone()],
                    vec!["Mode:".into(), s.mode.clone()],
                    vec!["Manifests:".into(), format!("{} ({} files)", s.manifest_dir, s.files)],
                    vec!["Objects:".into(), joined(&objects)],
                    vec![
                        "LB-IPAM:".into(),
                        format!("{}/{} services satisfied, {} pools", s.services_satisfied, s.services, s.pools),
                    ],
                    vec!["Reconciled:".into(), format!("generation {} at {}", s.generation, s.last_reconcile)],
                    vec!["State file:".into(), s.state_file.clone()],
                    vec!["Problems:".into(), format!("{errors} errors, {warnings} warnings")],
                ];
                let mut out = String::new();
                for r in rows {
                    out.push_str(&format!("{:<12}{}\n", r[0], r[1]));
                }
                for d in &s.diagnostics {
                    out.push_str(&format!("  {}: {}\n", d.severity, d.text));
                }
                out
            }
        }
        Command::Service(ServiceCmd::List { namespace }) => {
            let req = v1::ListServicesRequest { namespace: namespace.unwrap_or_default() };
            let list = client.list_services(req).await?.into_inner().services;
            if json_out {
                let v: Vec<Value> = list
                    .iter()
                    .map(|s| {
                        json!({"namespace": s.namespace, "name": s.name, "type": s.r#type,
                               "loadBalancerClass": s.load_balancer_class, "ips": s.ips, "pools": s.pools,
                               "ports": s.ports, "satisfied": s.satisfied, "reason": s.reason, "message": s.message,
                               "sharedWith": s.shared_with, "sharingKey": s.sharing_key,
                               "ipFamilyPolicy": s.family_policy, "backends": s.backends})
                    })
                    .collect();
                serde_json::to_string_pretty(&v)? + "\n"
            } else if list.is_empty() {
                "No LoadBalancer services.\n".to_string()
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        let status =
                            if s.satisfied { "ok".to_string() } else { format!("{}: {}", s.reason, s.message) };
                        vec![
                            s.namespace.clone(),
                            s.name.clone(),
                            joined(&s.ips),
                            joined(&s.pools),
                            joined(&s.ports),
                            dash(&s.sharing_key),
                            s.backends.len().to_string(),
                            status,
                        ]
                    })
                    .collect();
                table::render(
                    &["NAMESPACE", "NAME", "EXTERNAL-IP", "POOL", "PORTS", "SHARING", "BACKENDS", "STATUS"],
                    &rows,
                )
            }
        }
        Command::Ipam(IpamCmd::Pools) => {
            let pools = client.list_pools(v1::ListPoolsRequest {}).await?.into_inner().pools;
            if json_out {
                let v: Vec<Value> = pools
                    .iter()
                    .map(|p| {
                        json!({"name": p.name, "kind": p.kind, "apiVersion": p.api_version, "blocks": p.blocks,
                               "total": count(&p.total), "used": count(&p.used), "available": count(&p.available),
                               "disabled": p.disabled, "conflict": p.conflict, "selector": p.selector})
                    })
                    .collect();
                serde_json::to_string_pretty(&v)? + "\n"
            } else if pools.is_empty() {
                "No pools. Add a CiliumLoadBalancerIPPool or IPAddressPool to the manifest directory.\n".to_string()
            } else {
                let rows: Vec<Vec<String>> = pools
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.kind.clone(),
                            joined(&p.blocks),
                            p.used.clone(),
                            p.available.clone(),
                            p.total.clone(),
                            if p.disabled { "yes".into() } else { "no".into() },
                            dash(&p.conflict),
                        ]
                    })
                    .collect();
                table::render(&["NAME", "KIND", "BLOCKS", "USED", "AVAILABLE", "TOTAL", "DISABLED", "CONFLICT"], &rows)
            }
        }
        Command::Node(NodeCmd::List) => {
            let nodes = client.list_nodes(v1::ListNodesRequest {}).await?.into_inner().nodes;
            if json_out {
                let v: Vec<Value> = nodes
                    .iter()
                    .map(|n| json!({"name": n.name, "podCIDRs": n.pod_cidrs, "addresses": n.addresses, "error": n.error}))
                    .collect();
                serde_json::to_string_pretty(&v)? + "\n"
            } else if nodes.is_empty() {
                "No nodes.\n".to_string()
            } else {
                let rows: Vec<Vec<String>> = nodes
                    .iter()
                    .map(|n| vec![n.name.clone(), joined(&n.addresses), joined(&n.pod_cidrs), dash(&n.error)])
                    .collect();
                table::render(&["NAME", "ADDRESSES", "POD-CIDRS", "PROBLEM"], &rows)
            }
        }
        Command::Bgp(BgpCmd::Peers) => {
            let peers = client.list_bgp_peers(v1::ListBgpPeersRequest {}).await?.into_inner().peers;
            if json_out {
                let v: Vec<Value> = peers
                    .iter()
                    .map(|p| {
                        json!({"name": p.name, "localASN": p.local_asn, "peerASN": p.peer_asn, "address": p.address,
                               "state": p.state, "uptimeSeconds": p.uptime_seconds, "families": p.families,
                               "received": p.received, "advertised": p.advertised, "holdTime": p.hold_time,
                               "routerID": p.router_id, "lastError": p.last_error,
                               "bfd": (!p.bfd.is_empty()).then_some(&p.bfd),
                               "bfdDiag": (!p.bfd_diag.is_empty()).then_some(&p.bfd_diag)})
                    })
                    .collect();
                serde_json::to_string_pretty(&v)? + "\n"
            } else if peers.is_empty() {
                "No BGP peers. Add a CiliumBGPClusterConfig selecting this node to the manifest directory.\n"
                    .to_string()
            } else {
                let rows: Vec<Vec<String>> = peers
                    .iter()
                    .map(|p| {
                        let peer_as = if p.peer_asn == 0 { "-".to_string() } else { p.peer_asn.to_string() };
                        let state = if p.last_error.is_empty() || p.state == "established" {
                            p.state.clone()
                        } else {
                            format!("{} ({})", p.state, p.last_error)
                        };
                        vec![
                            p.local_asn.to_string(),
                            peer_as,
                            p.address.clone(),
                            state,
                            if p.bfd.is_empty() { "-".into() } else { p.bfd.clone() },
                            if p.state == "established" { human_duration(p.uptime_seconds) } else { "-".into() },
                            joined(&p.families),
                            p.received.to_string(),
                            p.advertised.to_string(),
                        ]
                    })
                    .collect();
                table::render(
                    &[
                        "LOCAL AS",
                        "PEER AS",
                        "PEER ADDRESS",
                        "SESSION STATE",
                        "BFD",
                        "UPTIME",
                        "FAMILIES",
                        "RECEIVED",
                        "ADVERTISED",
                    ],
                    &rows,
                )
            }
        }
        Command::Bgp(BgpCmd::Routes { direction }) => {
            let req = v1::ListBgpRoutesRequest { direction: direction.clone() };
            let routes = client.list_bgp_routes(req).await?.into_inner().routes;
            let received = direction == "received";
            if json_out {
                let v: Vec<Value> = routes
                    .iter()
                    .map(|r| {
                        if received {
                            json!({"peer": r.peer, "prefix": r.prefix, "nextHop": r.next_hop, "asPath": r.as_path,
                                   "best": r.best, "stale": r.stale,
                                   "kernel": (!r.kernel.is_empty()).then_some(&r.kernel)})
                        } else {
                            json!({"peer": r.peer, "prefix": r.prefix})
                        }
                    })
                    .collect();
                serde_json::to_string_pretty(&v)? + "\n"
            } else if routes.is_empty() {
                format!("No {direction} routes.\n")
            } else if received {
                let rows: Vec<Vec<String>> = routes
                    .iter()
                    .map(|r| {
                        let path: Vec<String> = r.as_path.iter().map(|a| a.to_string()).collect();
                        let mut flags = String::new();
                        if r.best {
                            flags.push('*');
                        }
                        if r.stale {
                            flags.push_str(" stale");
                        }
                        vec![
                            r.peer.clone(),
                            r.prefix.clone(),
                            r.next_hop.clone(),
                            path.join(" "),
                            flags.trim().to_string(),
                            r.kernel.clone(),
                        ]
                    })
                    .collect();
                table::render(&["PEER", "PREFIX", "NEXT HOP", "AS PATH", "BEST", "KERNEL"], &rows)
            } else {
                let rows: Vec<Vec<String>> = routes.iter().map(|r| vec![r.peer.clone(), r.prefix.clone()]).collect();
                table::render(&["PEER", "PREFIX"], &rows)
            }
        }
        Command::L2(L2Cmd::Announcements) => {
            let list =
                client.list_l2_announcements(v1::ListL2AnnouncementsRequest {}).await?.into_inner().announcements;
            if json_out {
                let v: Vec<Value> = list
                    .iter()
                    .map(|a| {
                        json!({"ip": a.ip, "interface": a.interface, "service": a.service, "policy": a.policy,
                               "owner": a.owner, "mac": a.mac, "replies": a.replies,
                               "since": (!a.since.is_empty()).then_some(&a.since),
                               "lease": (!a.lease.is_empty()).then_some(&a.lease)})
                    })
                    .collect();
                serde_json::to_string_pretty(&v)? + "\n"
            } else if list.is_empty() {
                "No L2 announcements. Add a CiliumL2AnnouncementPolicy or L2Advertisement that selects services.\n"
                    .to_string()
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|a| {
                        vec![
                            a.ip.clone(),
                            a.interface.clone(),
                            a.owner.clone(),
                            dash(&a.mac),
                            a.service.clone(),
                            a.policy.clone(),
                            a.replies.to_string(),
                            dash(&a.since),
                            dash(&a.lease),
                        ]
                    })
                    .collect();
                table::render(
                    &["IP", "INTERFACE", "OWNER", "MAC", "SERVICE", "POLICY", "REPLIES", "SINCE", "LEASE"],
                    &rows,
                )
            }
        }
        Command::Clustermesh(ClustermeshCmd::Status) => {
            let m = client.get_cluster_mesh(v1::ClusterMeshRequest {}).await?.into_inner();
            if json_out {
                let clusters: Vec<Value> = m
                    .clusters
                    .iter()
                    .map(|c| {
                        json!({"name": c.name, "endpoints": c.endpoints, "connected": c.connected, "ready": c.ready,
                               "clusterID": c.cluster_id, "nodes": c.nodes, "services": c.services,
                               "identities": c.identities, "podEndpoints": c.pod_endpoints, "backends": c.backends, "malformed": c.malformed,
                               "synced": c.synced, "lastFailure": c.last_failure,
                               "lastFailureTime": c.last_failure_time, "configFile": c.config_file})
                    })
                    .collect();
                serde_json::to_string_pretty(&json!({
                    "clusterName": m.cluster_name, "clusterID": m.cluster_id, "enabled": m.enabled,
                    "clusters": clusters, "configErrors": m.config_errors,
                }))? + "\n"
            } else if !m.enabled {
                format!(
                    "ClusterMesh is not enabled on this agent (cluster {} id {}); set --clustermesh-config DIR.\n",
                    m.cluster_name, m.cluster_id
                )
            } else {
                let ready = m.clusters.iter().filter(|c| c.ready).count();
                let mut out = format!(
                    "Cluster {} (id {}): {}/{} remote clusters ready\n",
                    m.cluster_name,
                    m.cluster_id,
                    ready,
                    m.clusters.len()
                );
                let rows: Vec<Vec<String>> = m
                    .clusters
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            if c.cluster_id == 0 { "-".into() } else { c.cluster_id.to_string() },
                            if c.connected { "yes".into() } else { "no".into() },
                            if c.ready { "yes".into() } else { "no".into() },
                            c.nodes.to_string(),
                            c.services.to_string(),
                            c.backends.to_string(),
                            c.identities.to_string(),
                            c.pod_endpoints.to_string(),
                            if c.last_failure.is_empty() {
                                "-".into()
                            } else {
                                format!("{} ({})", c.last_failure, c.last_failure_time)
                            },
                        ]
                    })
                    .collect();
                out.push_str(&table::render(
                    &[
                        "CLUSTER",
                        "ID",
                        "CONNECTED",
                        "READY",
                        "NODES",
                        "SERVICES",
                        "BACKENDS",
                        "IDENTITIES",
                        "ENDPOINTS",
                        "LAST FAILURE",
                    ],
                    &rows,
                ));
                for e in &m.config_errors {
                    out.push_str(&format!("  error: {e}\n"));
                }
                out
            }
        }
        Command::Config(ConfigCmd::View) => {
            let entries = client.get_config(v1::GetConfigRequest {}).await?.into_inner().entries;
            if json_out {
                let v: serde_json::Map<String, Value> =
                    entries.iter().map(|e| (e.key.clone(), json!({"value": e.value, "source": e.source}))).collect();
                serde_json::to_string_pretty(&v)? + "\n"
            } else {
                let rows: Vec<Vec<String>> =
                    entries.iter().map(|e| vec![e.key.clone(), dash(&e.value), e.source.clone()]).collect();
                table::render(&["KEY", "VALUE", "SOURCE"], &rows)
            }
        }
    };
    Ok(text)
}

/// `halyard bpf tunnel list`: the pinned `hl_tunnel` map (pod CIDR -> node), and the overlay
/// counters.
fn bpf_tunnel_list(pin_dir: &std::path::Path, json_out: bool) -> anyhow::Result<String> {
    use halyard_datapath::maps::TUN_F_LOCAL;
    let map = halyard_datapath::overlay::TunnelMap::open(pin_dir).map_err(|e| {
        anyhow::anyhow!(
            "the overlay is not loaded ({e}); is the agent running with --routing-mode tunnel (pin dir {})?",
            pin_dir.display()
        )
    })?;
    let entries = map.entries()?;
    let counters = map.counters()?;
    if json_out {
        let items: Vec<Value> = entries
            .iter()
            .map(|(c, v)| {
                json!({"cidr": c.to_string(), "remote": v.remote().to_string(), "local": v.flags & TUN_F_LOCAL != 0})
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&Value::from(items))? + "\n");
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|(c, v)| {
            let local = v.flags & TUN_F_LOCAL != 0;
            vec![c.to_string(), v.remote().to_string(), if local { "local" } else { "tunnel" }.to_string()]
        })
        .collect();
    let mut out = table::render(&["POD CIDR", "NODE", "KIND"], &rows);
    let nonzero: Vec<Vec<String>> = counters
        .iter()
        .filter(|(_, p, _)| *p > 0)
        .map(|(c, p, b)| vec![c.name().to_string(), p.to_string(), b.to_string()])
        .collect();
    if !nonzero.is_empty() {
        out.push('\n');
        out.push_str(&table::render(&["COUNTER", "PACKETS", "BYTES"], &nonzero));
    }
    Ok(out)
}

/// The pin directory, names file and seed the agent uses (from its configuration), or defaults
/// when no agent answers; `--pin-dir` wins.
async fn bpf_locations(socket: &std::path::Path, pin_dir: Option<&std::path::Path>) -> anyhow::Result<bpf::Locations> {
    let mut loc = bpf::default_locations(pin_dir);
    if let Ok(mut client) = halyard_api::connect(socket).await
        && let Ok(cfg) = client.get_config(v1::GetConfigRequest {}).await
    {
        for e in cfg.into_inner().entries {
            match e.key.as_str() {
                "bpf-pin-dir" if pin_dir.is_none() => loc.pin_dir = PathBuf::from(e.value),
                "state-dir" => loc.names_file = PathBuf::from(e.value).join("datapath.json"),
                "maglev-seed" => {
                    if let Ok(s) = halyard_datapath::maglev::MaglevSeed::from_base64(&e.value) {
                        loc.seed = s;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(loc)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // A gRPC status carries its own message; show that rather than the debug form.
            let msg = match e.downcast_ref::<tonic::Status>() {
                Some(s) => format!("the agent answered with an error: {}", s.message()),
                None => format!("{e:#}"),
            };
            eprintln!("halyard: {msg}");
            ExitCode::FAILURE
        }
    }
}
