//! `halyard-bgpd`: the BGP speaker on its own, for interop tests and benchmarks.
//!
//! ```toml
//! router_id = "10.0.0.1"
//! local_asn = 65001
//! status_file = "/run/halyard-bgpd.json"   # optional: peer status, rewritten every 200 ms
//! listen_port = 179      # optional: also accept connections from the configured peers
//! relay = true           # optional: pass routes learned from one peer on to the others
//!
//! [[peer]]
//! address = "10.0.0.2"
//! asn = 65000            # omit to accept any AS
//! hold_time = 90
//! next_hop_v6 = "fd00::1" # for IPv6 prefixes over an IPv4 session
//! password = "secret"     # optional: TCP MD5 (RFC 2385)
//! graceful_restart = 120  # optional: RFC 4724 restart time; stopping then keeps routes at the peer
//!
//! [[generate]]          # many host routes for benchmarks: 10.0.0.0/32, 10.0.0.1/32, ...
//! start = "10.0.0.0"
//! count = 100000
//!
//! [[route]]
//! prefix = "192.0.2.0/24"
//! communities = ["65001:100", "no-export"]
//! large_communities = ["65001:1:2"]
//! local_pref = 200
//! med = 10
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::Parser;
use halyard_bgp::session::{
    Advertisements, IncomingRoutes, Learned, PeerChannels, PeerConfig, PeerStatus, Prefix, RouteAttrs, listen, run_peer,
};
use halyard_bgp::wire::{Community, LargeCommunity};

#[derive(Debug, Parser)]
#[command(name = "halyard-bgpd", version, about = "Halyard's BGP speaker, standalone")]
struct Cli {
    /// TOML configuration file.
    #[arg(short, long)]
    config: PathBuf,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    router_id: Ipv4Addr,
    local_asn: u32,
    status_file: Option<PathBuf>,
    listen_port: Option<u16>,
    /// Relay routes learned from one peer to the others (a minimal RIB; off by default).
    #[serde(default)]
    relay: bool,
    #[serde(default, rename = "peer")]
    peers: Vec<PeerToml>,
    #[serde(default, rename = "route")]
    routes: Vec<RouteToml>,
    #[serde(default)]
    generate: Vec<GenerateToml>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateToml {
    start: Ipv4Addr,
    count: u32,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerToml {
    address: IpAddr,
    asn: Option<u32>,
    port: Option<u16>,
    hold_time: Option<u16>,
    connect_retry_time: Option<u16>,
    next_hop_v6: Option<Ipv6Addr>,
    /// TCP MD5 password (RFC 2385).
    password: Option<String>,
    /// Graceful restart time in seconds (RFC 4724); unset disables graceful restart.
    graceful_restart: Option<u16>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteToml {
    prefix: String,
    #[serde(default)]
    communities: Vec<String>,
    #[serde(default)]
    large_communities: Vec<String>,
    local_pref: Option<u32>,
    med: Option<u32>,
}

/// `ASN:VALUE` or a well-known name (RFC 1997).
fn community(s: &str) -> Result<Community, String> {
    match s {
        "no-export" => return Ok(Community::NO_EXPORT),
        "no-advertise" => return Ok(Community::NO_ADVERTISE),
        "no-export-subconfed" => return Ok(Community::NO_EXPORT_SUBCONFED),
        _ => {}
    }
    let (a, v) = s.split_once(':').ok_or_else(|| format!("community {s:?}: want ASN:VALUE"))?;
    let a: u16 = a.parse().map_err(|_| format!("community {s:?}: {a:?} is not a 16-bit number"))?;
    let v: u16 = v.parse().map_err(|_| format!("community {s:?}: {v:?} is not a 16-bit number"))?;
    Ok(Community((u32::from(a) << 16) | u32::from(v)))
}

/// `GLOBAL:LOCAL1:LOCAL2` (RFC 8092).
fn large_community(s: &str) -> Result<LargeCommunity, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let nums: Result<Vec<u32>, _> = parts.iter().map(|p| p.parse::<u32>()).collect();
    match nums {
        Ok(n) if n.len() == 3 => Ok(LargeCommunity { global_admin: n[0], local_data1: n[1], local_data2: n[2] }),
        _ => Err(format!("large community {s:?}: want three 32-bit numbers A:B:C")),
    }
}

fn load(path: &PathBuf) -> anyhow::Result<(Config, Advertisements)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cfg: Config = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))?;
    let mut routes = Advertisements::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let at = |e: String| anyhow::anyhow!("{}: route[{i}]: {e}", path.display());
        let prefix: Prefix = r.prefix.parse().map_err(at)?;
        let attrs = Arc::new(RouteAttrs {
            communities: r.communities.iter().map(|c| community(c)).collect::<Result<_, _>>().map_err(at)?,
            large_communities: r
                .large_communities
                .iter()
                .map(|c| large_community(c))
                .collect::<Result<_, _>>()
                .map_err(at)?,
            local_pref: r.local_pref,
            med: r.med,
            as_path: Vec::new(),
        });
        routes.insert(prefix, attrs);
    }
    let plain = Arc::new(RouteAttrs::default());
    for g in &cfg.generate {
        let base = u32::from(g.start);
        for i in 0..g.count {
            let ip = Ipv4Addr::from(base.wrapping_add(i));
            let prefix = halyard_bgp::wire::Ipv4Prefix::new(ip, 32).expect("/32 is a valid length");
            routes.insert(Prefix::V4(prefix), plain.clone());
        }
    }
    if cfg.peers.is_empty() {
        bail!("{}: no [[peer]] configured", path.display());
    }
    Ok((cfg, routes))
}

/// The relay RIB: every route learned from a peer is offered to every other peer. Best path per
/// prefix: shortest AS path, then lowest peer address (RFC 4271 §9.1.2.2 a, then a stable
/// tie-break). Events are applied in batches, so a burst of UPDATEs costs one recomputation.
async fn relay(
    mut learned: tokio::sync::mpsc::UnboundedReceiver<Learned>,
    statics: Advertisements,
    senders: BTreeMap<IpAddr, tokio::sync::watch::Sender<Arc<Advertisements>>>,
) {
    // Per prefix, the paths from each peer (a short list: one per peer that sent it).
    type Paths = Vec<(IpAddr, Arc<RouteAttrs>)>;
    let mut rib: BTreeMap<Prefix, Paths> = BTreeMap::new();
    let apply = |ev: Learned, rib: &mut BTreeMap<Prefix, Paths>| {
        if ev.session_down {
            rib.retain(|_, paths| {
                paths.retain(|(from, _)| *from != ev.from);
                !paths.is_empty()
            });
            return;
        }
        for p in ev.withdrawn {
            if let Some(paths) = rib.get_mut(&p) {
                paths.retain(|(from, _)| *from != ev.from);
                if paths.is_empty() {
                    rib.remove(&p);
                }
            }
        }
        for (p, attrs) in ev.announced {
            let paths = rib.entry(p).or_default();
            match paths.iter_mut().find(|(from, _)| *from == ev.from) {
                Some(slot) => slot.1 = attrs,
                None => paths.push((ev.from, attrs)),
            }
        }
    };
    while let Some(ev) = learned.recv().await {
        apply(ev, &mut rib);
        // Let a burst of UPDATEs land before recomputing (each recomputation is O(routes)); a
        // millisecond is far below any BGP timer and turns thousands of passes into a few.
        loop {
            while let Ok(ev) = learned.try_recv() {
                apply(ev, &mut rib);
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            if learned.is_empty() {
                break;
            }
        }
        let best: Vec<(Prefix, IpAddr, &Arc<RouteAttrs>)> = rib
            .iter()
            .filter_map(|(p, paths)| {
                paths.iter().min_by_key(|(from, a)| (a.as_path.len(), *from)).map(|(from, a)| (*p, *from, a))
            })
            .collect();
        for (peer, tx) in &senders {
            let mut adv = statics.clone();
            // Split horizon: a route is not sent back to the peer it came from.
            for (p, _, attrs) in best.iter().filter(|(_, from, _)| from != peer) {
                adv.entry(*p).or_insert_with(|| Arc::clone(attrs));
            }
            let _ = tx.send(Arc::new(adv));
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    let (cfg, routes) = load(&cli.config)?;
    let statics = routes;
    let (learned_tx, learned_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut senders = BTreeMap::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut statuses = BTreeMap::new();
    let mut tasks = Vec::new();
    let incoming = IncomingRoutes::default();
    for p in &cfg.peers {
        let mut pc = PeerConfig::new(p.address.to_string(), cfg.local_asn, cfg.router_id, p.address);
        pc.peer_asn = p.asn;
        pc.port = p.port.unwrap_or(179);
        pc.hold_time = p.hold_time.unwrap_or(90);
        pc.connect_retry_time = p.connect_retry_time.unwrap_or(5);
        pc.next_hop_v6 = p.next_hop_v6;
        pc.password = p.password.clone();
        pc.graceful_restart = p.graceful_restart;
        let status = Arc::new(Mutex::new(PeerStatus::default()));
        statuses.insert(p.address, status.clone());
        let accept = cfg.listen_port.map(|_| {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            incoming.lock().unwrap_or_else(|e| e.into_inner()).insert(p.address, tx);
            rx
        });
        let (routes_tx, routes_rx) = tokio::sync::watch::channel(Arc::new(statics.clone()));
        senders.insert(p.address, routes_tx);
        let learned = cfg.relay.then(|| learned_tx.clone());
        let ch = PeerChannels { routes: routes_rx, status, stop: stop_rx.clone(), incoming: accept, learned };
        tasks.push(tokio::spawn(run_peer(pc, ch)));
    }
    drop(learned_tx);
    if cfg.relay {
        tokio::spawn(relay(learned_rx, statics, senders));
    }
    if let Some(port) = cfg.listen_port {
        let addr = std::net::SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let inc = incoming.clone();
        let keys: Vec<(IpAddr, String)> =
            cfg.peers.iter().filter_map(|p| p.password.clone().map(|pw| (p.address, pw))).collect();
        tokio::spawn(async move {
            if let Err(e) = listen(addr, inc, keys).await {
                tracing::error!(port, "BGP listener failed: {e}");
            }
        });
    }
    let status_file = cfg.status_file.clone();
    let writer = tokio::spawn(async move {
        let Some(path) = status_file else { return };
        loop {
            let v: serde_json::Map<String, serde_json::Value> = statuses
                .iter()
                .map(|(addr, s)| {
                    let s = s.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let received: Vec<String> = s.received.keys().map(|p| p.to_string()).collect();
                    (
                        addr.to_string(),
                        serde_json::json!({
                            "state": s.state.map(|x| format!("{x:?}")),
                            "peerAsn": s.peer_asn,
                            "holdTime": s.hold_time,
                            "advertised": s.advertised_count,
                            "received": received,
                            "updatesIn": s.updates_in,
                            "updatesOut": s.updates_out,
                            "lastError": s.last_error,
                        }),
                    )
                })
                .collect();
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, serde_json::to_vec_pretty(&v).unwrap_or_default()).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Administrative shutdown: every session sends Cease before closing (RFC 4486).
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    writer.abort();
    Ok(())
}
