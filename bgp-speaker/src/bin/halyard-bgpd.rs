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
//! multihop_ttl = 2        # optional: eBGP multihop, the TTL to send with (1–255; eBGP default 1)
//! ttl_security = true     # optional: GTSM (RFC 5082): send with 255, accept ≥ 255 - hops + 1,
//!                         # hops = multihop_ttl or 1
//!
//! [peer.bfd]             # optional: BFD (RFC 5880/5881) to the peer; BFD down tears BGP down
//! min_tx_ms = 300        # each optional, defaults 300 / 300 / 3 (intervals 10–60000 ms)
//! min_rx_ms = 300
//! multiplier = 3
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

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::Parser;
use halyard_bgp::bfd::BfdConfig;
use halyard_bgp::fsm::State;
use halyard_bgp::session::{
    Advertisements, IncomingRoutes, Learned, ListenPeer, PathInfo, PeerChannels, PeerConfig, PeerStatus, Prefix,
    RouteAttrs, RouteDelta, RouteFeed, listen, run_peer,
};
use halyard_bgp::wire::{AfiSafi, Community, LargeCommunity};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

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
    /// BFD to the peer (RFC 5880/5881); unset: no BFD.
    bfd: Option<BfdToml>,
    /// eBGP multihop TTL (1–255); with `ttl_security`, the most hops the peer may be away.
    multihop_ttl: Option<u32>,
    /// GTSM (RFC 5082).
    #[serde(default)]
    ttl_security: bool,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BfdToml {
    min_tx_ms: Option<u32>,
    min_rx_ms: Option<u32>,
    multiplier: Option<u32>,
}

impl BfdToml {
    fn config(&self) -> Result<BfdConfig, halyard_bgp::bfd::BfdConfigError> {
        let d = BfdConfig::default();
        BfdConfig::new(
            self.min_tx_ms.unwrap_or(d.min_tx_ms()),
            self.min_rx_ms.unwrap_or(d.min_rx_ms()),
            self.multiplier.unwrap_or(u32::from(d.multiplier())),
        )
    }
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
    for (i, p) in cfg.peers.iter().enumerate() {
        if let Some(Err(e)) = p.bfd.as_ref().map(BfdToml::config) {
            bail!("{}: peer[{i}] ({}): bfd: {e}", path.display(), p.address);
        }
        if let Some(t) = p.multihop_ttl
            && !(1..=255).contains(&t)
        {
            bail!("{}: peer[{i}] ({}): multihop_ttl {t} is out of range (1–255)", path.display(), p.address);
        }
    }
    let mut addresses: Vec<IpAddr> = cfg.peers.iter().map(|p| p.address).collect();
    addresses.sort();
    if let Some(w) = addresses.windows(2).find(|w| w[0] == w[1]) {
        bail!("{}: peer {} is configured twice", path.display(), w[0]);
    }
    Ok((cfg, routes))
}

// ===== Relay RIB =====

fn family_of(p: &Prefix) -> AfiSafi {
    match p {
        Prefix::V4(_) => AfiSafi::IPV4_UNICAST,
        Prefix::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}

/// Where a path came from: [`LOCAL`] for the configured routes, peers numbered from 1 in
/// address order (so comparing sources compares addresses).
type Source = u32;
const LOCAL: Source = 0;

#[derive(Clone, Debug)]
struct Path {
    from: Source,
    attrs: Arc<RouteAttrs>,
    /// What selection needs besides `attrs` (shared by the prefixes of one UPDATE); `None` for
    /// our own routes.
    info: Option<Arc<PathInfo>>,
}

impl Path {
    /// Best-path order ([`halyard_bgp::rib::compare`]), our own routes first. The source
    /// stands in for the peer address in the last tie-break: sources are numbered in address
    /// order.
    fn rank(a: &Path, b: &Path) -> std::cmp::Ordering {
        use halyard_bgp::rib::{Candidate, compare};
        match (&a.info, &b.info) {
            (Some(ai), Some(bi)) => compare(
                &Candidate { from: IpAddr::V4(Ipv4Addr::from(a.from)), attrs: &a.attrs, info: ai },
                &Candidate { from: IpAddr::V4(Ipv4Addr::from(b.from)), attrs: &b.attrs, info: bi },
            ),
            _ => (a.from != LOCAL).cmp(&(b.from != LOCAL)).then(a.from.cmp(&b.from)),
        }
    }

    fn same(&self, other: &Path) -> bool {
        self.from == other.from && Arc::ptr_eq(&self.attrs, &other.attrs) && self.info == other.info
    }
}

/// The best path of a prefix changed from `old` to `new`.
struct BestChange {
    old: Option<Path>,
    new: Option<Path>,
}

/// The Loc-RIB: one entry per prefix with its best path; the other paths are kept only for
/// the few prefixes that several sources sent. Attribute sets are interned, so equal
/// attributes from different UPDATEs share one `Arc` (and one outgoing UPDATE).
#[derive(Default)]
struct LocRib {
    best: BTreeMap<Prefix, Path>,
    /// Every path (the best included), for prefixes with more than one.
    multi: HashMap<Prefix, Vec<Path>>,
    attrs: HashSet<Arc<RouteAttrs>>,
    /// Interned sets after the last sweep of unused ones.
    attrs_swept: usize,
    /// Per source, its paths kept while it restarts and not sent again yet (RFC 4724 §4.2).
    stale: HashMap<Source, HashSet<Prefix>>,
}

impl LocRib {
    fn intern(&mut self, attrs: Arc<RouteAttrs>) -> Arc<RouteAttrs> {
        if let Some(a) = self.attrs.get(&attrs) {
            return Arc::clone(a);
        }
        if self.attrs.len() >= 2 * self.attrs_swept + 64 {
            self.attrs.retain(|a| Arc::strong_count(a) > 1);
            self.attrs_swept = self.attrs.len();
        }
        self.attrs.insert(Arc::clone(&attrs));
        attrs
    }

    /// Adds or replaces the path from `path.from`.
    fn insert(&mut self, prefix: Prefix, path: Path) -> Option<BestChange> {
        let best = match self.best.entry(prefix) {
            Entry::Vacant(e) => {
                e.insert(path.clone());
                return Some(BestChange { old: None, new: Some(path) });
            }
            Entry::Occupied(e) => e.into_mut(),
        };
        let new = match self.multi.get_mut(&prefix) {
            None if best.from == path.from => {
                if best.same(&path) {
                    return None;
                }
                path
            }
            None => {
                let paths = vec![best.clone(), path];
                let new = paths.iter().min_by(|a, b| Path::rank(a, b)).cloned()?;
                self.multi.insert(prefix, paths);
                new
            }
            Some(paths) => {
                match paths.iter_mut().find(|p| p.from == path.from) {
                    Some(slot) => *slot = path,
                    None => paths.push(path),
                }
                paths.iter().min_by(|a, b| Path::rank(a, b)).cloned()?
            }
        };
        if new.same(best) {
            return None;
        }
        let old = std::mem::replace(best, new.clone());
        Some(BestChange { old: Some(old), new: Some(new) })
    }

    /// Removes the path from `from`.
    fn remove(&mut self, prefix: Prefix, from: Source) -> Option<BestChange> {
        let best = self.best.get_mut(&prefix)?;
        let Some(paths) = self.multi.get_mut(&prefix) else {
            if best.from != from {
                return None;
            }
            let old = self.best.remove(&prefix);
            return Some(BestChange { old, new: None });
        };
        let before = paths.len();
        paths.retain(|p| p.from != from);
        if paths.len() == before {
            return None;
        }
        let new = paths.iter().min_by(|a, b| Path::rank(a, b)).cloned()?;
        if paths.len() == 1 {
            self.multi.remove(&prefix);
        }
        if new.same(best) {
            return None;
        }
        let old = std::mem::replace(best, new.clone());
        Some(BestChange { old: Some(old), new: Some(new) })
    }

    /// Prefixes `from` sent (its Adj-RIB-In).
    fn received_from(&self, from: Source) -> impl Iterator<Item = &Prefix> {
        self.best.iter().filter_map(move |(p, path)| {
            let has = match self.multi.get(p) {
                Some(paths) => paths.iter().any(|x| x.from == from),
                None => path.from == from,
            };
            has.then_some(p)
        })
    }

    /// Prefixes advertised to peer `to`: every best path except those it sent (split horizon).
    fn advertised_to(&self, to: Source) -> usize {
        self.best.values().filter(|p| p.from != to).count()
    }
}

/// The relay: every route learned from a peer is offered to every other peer (best path
/// only; split horizon: never back to the peer the best path came from). Each change goes out
/// to the sessions as a [`RouteDelta`]; a session that comes up gets the whole table.
struct Relay {
    rib: Arc<Mutex<LocRib>>,
    /// Per peer (index = source - 1): its address, its session's feed, changes not yet sent.
    peers: Vec<(IpAddr, UnboundedSender<RouteDelta>, RouteDelta)>,
}

impl Relay {
    fn source(&self, addr: IpAddr) -> Option<Source> {
        self.peers.iter().position(|(a, _, _)| *a == addr).map(|i| i as Source + 1)
    }

    /// Queues what a change of best path means for each peer.
    fn propagate(peers: &mut [(IpAddr, UnboundedSender<RouteDelta>, RouteDelta)], prefix: Prefix, c: BestChange) {
        for (i, (_, _, delta)) in peers.iter_mut().enumerate() {
            let to = i as Source + 1;
            match &c.new {
                Some(new) if new.from != to => delta.announce(&new.attrs, prefix),
                _ if c.old.as_ref().is_some_and(|o| o.from != to) => delta.withdraw(prefix),
                _ => {}
            }
        }
    }

    fn apply(&mut self, ev: Learned) {
        let mut rib = self.rib.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            Learned::Update { from, attrs, info, announced, withdrawn } => {
                let Some(from) = self.source(from) else { return };
                if let Some(stale) = rib.stale.get_mut(&from) {
                    for p in announced.iter().chain(&withdrawn) {
                        stale.remove(p);
                    }
                }
                for p in withdrawn {
                    if let Some(c) = rib.remove(p, from) {
                        Self::propagate(&mut self.peers, p, c);
                    }
                }
                if announced.is_empty() {
                    return;
                }
                let attrs = rib.intern(attrs);
                for p in announced {
                    if let Some(c) =
                        rib.insert(p, Path { from, attrs: Arc::clone(&attrs), info: Some(Arc::clone(&info)) })
                    {
                        Self::propagate(&mut self.peers, p, c);
                    }
                }
            }
            Learned::Down { from } => {
                let Some(from) = self.source(from) else { return };
                rib.stale.remove(&from);
                Self::remove_source(&mut rib, &mut self.peers, from, |_| true);
            }
            Learned::Stale { from, families } => {
                // RFC 4724 §4.2: keep the restarting peer's paths of these families (stale),
                // drop the others.
                let Some(from) = self.source(from) else { return };
                Self::remove_source(&mut rib, &mut self.peers, from, |p| !families.contains(&family_of(p)));
                let kept: HashSet<Prefix> = rib.received_from(from).copied().collect();
                rib.stale.entry(from).or_default().extend(kept);
            }
            Learned::StaleEnd { from, family } => {
                let Some(from) = self.source(from) else { return };
                let Some(stale) = rib.stale.get_mut(&from) else { return };
                let gone: Vec<Prefix> = stale.iter().filter(|p| family_of(p) == family).copied().collect();
                for p in &gone {
                    stale.remove(p);
                }
                if stale.is_empty() {
                    rib.stale.remove(&from);
                }
                for p in gone {
                    if let Some(c) = rib.remove(p, from) {
                        Self::propagate(&mut self.peers, p, c);
                    }
                }
            }
            // The relay's tables follow the updates; nothing waits for a peer's initial table.
            Learned::EndOfRib { .. } => {}
            Learned::TableWanted { from, generation } => {
                let Some(to) = self.source(from) else { return };
                // After whatever is queued for the peer, so the table ends up as the RIB's.
                let delta = &mut self.peers[to as usize - 1].2;
                for (p, path) in rib.best.iter().filter(|(_, path)| path.from != to) {
                    delta.announce(&path.attrs, *p);
                }
                delta.table_done = Some(generation);
            }
        }
    }

    /// Removes the paths from `from` of the prefixes `which` selects, propagating each change.
    fn remove_source(
        rib: &mut LocRib,
        peers: &mut [(IpAddr, UnboundedSender<RouteDelta>, RouteDelta)],
        from: Source,
        which: impl Fn(&Prefix) -> bool,
    ) {
        // Prefixes with other paths first (alternatives take over), then the rest in one pass.
        let shared: Vec<Prefix> = rib
            .multi
            .iter()
            .filter(|(p, paths)| which(p) && paths.iter().any(|x| x.from == from))
            .map(|(p, _)| *p)
            .collect();
        for p in shared {
            if let Some(c) = rib.remove(p, from) {
                Self::propagate(peers, p, c);
            }
        }
        rib.best.retain(|p, path| {
            if path.from != from || !which(p) {
                return true;
            }
            Self::propagate(peers, *p, BestChange { old: Some(path.clone()), new: None });
            false
        });
    }

    /// Sends the queued changes.
    fn flush(&mut self) {
        for (_, tx, delta) in &mut self.peers {
            if !delta.is_empty() {
                let _ = tx.send(std::mem::take(delta));
            }
        }
    }

    async fn run(mut self, mut learned: UnboundedReceiver<Learned>) {
        while let Some(ev) = learned.recv().await {
            self.apply(ev);
            // Whatever else is already queued goes into the same batch (fewer, fuller UPDATEs).
            while let Ok(ev) = learned.try_recv() {
                self.apply(ev);
            }
            self.flush();
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
    let statics = Arc::new(routes);
    let (learned_tx, learned_rx) = unbounded_channel();
    // Relay: the Loc-RIB holds the configured routes and everything learned; sessions get
    // deltas. Otherwise every session advertises the configured routes (a shared table).
    let rib = Arc::new(Mutex::new(LocRib::default()));
    let mut relay_peers = Vec::new();
    if cfg.relay {
        let mut r = rib.lock().unwrap_or_else(|e| e.into_inner());
        for (p, attrs) in statics.iter() {
            let attrs = r.intern(Arc::clone(attrs));
            r.best.insert(*p, Path { from: LOCAL, attrs, info: None });
        }
    }
    // Peers in address order: their index + 1 is their relay source number.
    let mut peers: Vec<&PeerToml> = cfg.peers.iter().collect();
    peers.sort_by_key(|p| p.address);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut statuses = BTreeMap::new();
    let mut tasks = Vec::new();
    let incoming = IncomingRoutes::default();
    let mut listen_peers = Vec::new();
    // The table senders live as long as the sessions (a closed feed ends a session).
    let mut watches = Vec::new();
    for p in peers {
        let mut pc = PeerConfig::new(p.address.to_string(), cfg.local_asn, cfg.router_id, p.address);
        pc.peer_asn = p.asn;
        pc.port = p.port.unwrap_or(179);
        pc.hold_time = p.hold_time.unwrap_or(90);
        pc.connect_retry_time = p.connect_retry_time.unwrap_or(5);
        pc.next_hop_v6 = p.next_hop_v6;
        pc.password = p.password.clone();
        pc.graceful_restart = p.graceful_restart;
        // Checked in `load`.
        pc.bfd = p.bfd.as_ref().and_then(|b| b.config().ok());
        pc.multihop_ttl = p.multihop_ttl.and_then(|t| u8::try_from(t).ok());
        pc.ttl_security = p.ttl_security;
        listen_peers.push(ListenPeer::from(&pc));
        let status = Arc::new(Mutex::new(PeerStatus::default()));
        statuses.insert(p.address, status.clone());
        let accept = cfg.listen_port.map(|_| {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            incoming.lock().unwrap_or_else(|e| e.into_inner()).insert(p.address, tx);
            rx
        });
        let routes = if cfg.relay {
            let (tx, rx) = unbounded_channel();
            relay_peers.push((p.address, tx, RouteDelta::default()));
            RouteFeed::Deltas { rx, rib: learned_tx.clone() }
        } else {
            let (tx, rx) = tokio::sync::watch::channel(Arc::clone(&statics));
            watches.push(tx);
            RouteFeed::Table(rx)
        };
        let learned = cfg.relay.then(|| learned_tx.clone());
        let ch = PeerChannels { routes, status, stop: stop_rx.clone(), incoming: accept, learned, update: None };
        tasks.push(tokio::spawn(run_peer(pc, ch)));
    }
    drop(learned_tx);
    let mut relay_sources = Vec::new();
    if cfg.relay {
        drop(statics);
        let sources: Vec<IpAddr> = relay_peers.iter().map(|(a, _, _)| *a).collect();
        tokio::spawn(Relay { rib: Arc::clone(&rib), peers: relay_peers }.run(learned_rx));
        relay_sources = sources;
    }
    if let Some(port) = cfg.listen_port {
        let addr = std::net::SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let inc = incoming.clone();
        tokio::spawn(async move {
            if let Err(e) = listen(addr, inc, listen_peers).await {
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
                    let mut s = s.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let mut received: Vec<String> = s.received.keys().map(|p| p.to_string()).collect();
                    // Relay: the Loc-RIB knows what the peer sent and what it is sent.
                    if let Some(i) = relay_sources.iter().position(|a| a == addr) {
                        let rib = rib.lock().unwrap_or_else(|e| e.into_inner());
                        let source = i as Source + 1;
                        received = rib.received_from(source).map(|p| p.to_string()).collect();
                        s.advertised_count =
                            if s.state == Some(State::Established) { rib.advertised_to(source) } else { 0 };
                    }
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
                            "stale": s.stale,
                            "bfd": s.bfd.map(|b| serde_json::json!({
                                "state": b.state.to_string(),
                                "diag": b.diag.to_string(),
                                "remoteState": b.remote_state.to_string(),
                            })),
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

#[cfg(test)]
mod tests {
    use super::*;
    use halyard_bgp::session::RouteChange;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const C: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));

    fn prefix(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn attrs(path: &[u32]) -> Arc<RouteAttrs> {
        Arc::new(RouteAttrs { as_path: path.to_vec(), ..RouteAttrs::default() })
    }

    /// A relay between peers A, B and C, and the receiving ends of their feeds.
    fn relay() -> (Relay, Vec<UnboundedReceiver<RouteDelta>>) {
        let mut rxs = Vec::new();
        let peers = [A, B, C]
            .into_iter()
            .map(|a| {
                let (tx, rx) = unbounded_channel();
                rxs.push(rx);
                (a, tx, RouteDelta::default())
            })
            .collect();
        (Relay { rib: Arc::default(), peers }, rxs)
    }

    fn update(from: IpAddr, path: &[u32], announced: &[&str], withdrawn: &[&str]) -> Learned {
        Learned::Update {
            from,
            attrs: attrs(path),
            info: Arc::new(PathInfo {
                peer_asn: 65000,
                peer_router_id: std::net::Ipv4Addr::UNSPECIFIED,
                ibgp: false,
                origin: 0,
                local_pref: None,
                med: None,
                next_hop_v4_nlri: None,
                next_hop_v6: None,
                next_hop_v6_link_local: None,
            }),
            announced: announced.iter().map(|p| prefix(p)).collect(),
            withdrawn: withdrawn.iter().map(|p| prefix(p)).collect(),
        }
    }

    /// What each peer was sent since the last call, as (announced with AS path, withdrawn).
    fn sent(r: &mut Relay, rxs: &mut [UnboundedReceiver<RouteDelta>]) -> Vec<Vec<(String, Option<Vec<u32>>)>> {
        r.flush();
        rxs.iter_mut()
            .map(|rx| {
                let mut v = Vec::new();
                while let Ok(d) = rx.try_recv() {
                    for c in d.changes {
                        match c {
                            RouteChange::Announce(a, ps) => {
                                v.extend(ps.iter().map(|p| (p.to_string(), Some(a.as_path.clone()))))
                            }
                            RouteChange::Withdraw(ps) => v.extend(ps.iter().map(|p| (p.to_string(), None))),
                        }
                    }
                }
                v
            })
            .collect()
    }

    fn ann(p: &str, path: &[u32]) -> (String, Option<Vec<u32>>) {
        (p.to_string(), Some(path.to_vec()))
    }

    fn wd(p: &str) -> (String, Option<Vec<u32>>) {
        (p.to_string(), None)
    }

    #[test]
    fn bfd_tables_are_checked() {
        let dir = tempfile_dir();
        let conf = |bfd: &str| {
            let path = dir.join("c.toml");
            let text = format!("router_id = \"10.0.0.1\"\nlocal_asn = 65001\n[[peer]]\naddress = \"10.0.0.2\"\n{bfd}");
            std::fs::write(&path, text).unwrap();
            load(&path).map(|(c, _)| c)
        };
        let c = conf("[peer.bfd]\nmin_tx_ms = 100\n").unwrap();
        assert_eq!(c.peers[0].bfd.as_ref().unwrap().config().unwrap(), BfdConfig::new(100, 300, 3).unwrap());
        assert!(conf("").unwrap().peers[0].bfd.is_none());
        let e = conf("[peer.bfd]\nmultiplier = 0\n").unwrap_err().to_string();
        assert!(e.contains("peer[0] (10.0.0.2): bfd: BFD detect multiplier 0 is out of range"), "{e}");
        let e = conf("[peer.bfd]\nmin_rx_ms = 5\n").unwrap_err().to_string();
        assert!(e.contains("receive interval 5 ms is out of range (10–60000 ms)"), "{e}");
        let e = conf("[peer.bfd]\nmin_tx_ms = 60001\n").unwrap_err().to_string();
        assert!(e.contains("transmit interval 60001 ms"), "{e}");
        assert!(conf("[peer.bfd]\nfoo = 1\n").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ttl_settings_are_checked() {
        // Not under `tempfile_dir()`: the BFD test removes that one when it ends.
        let dir = std::env::temp_dir().join(format!("halyard-bgpd-ttl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = |extra: &str| {
            let path = dir.join("c.toml");
            let text =
                format!("router_id = \"10.0.0.1\"\nlocal_asn = 65001\n[[peer]]\naddress = \"10.0.0.2\"\n{extra}");
            std::fs::write(&path, text).unwrap();
            load(&path).map(|(c, _)| c)
        };
        let c = conf("multihop_ttl = 2\nttl_security = true\n").unwrap();
        assert_eq!((c.peers[0].multihop_ttl, c.peers[0].ttl_security), (Some(2), true));
        let c = conf("").unwrap();
        assert_eq!((c.peers[0].multihop_ttl, c.peers[0].ttl_security), (None, false));
        for bad in ["multihop_ttl = 0", "multihop_ttl = 256"] {
            let e = conf(bad).unwrap_err().to_string();
            assert!(e.contains("peer[0] (10.0.0.2): multihop_ttl") && e.contains("out of range (1–255)"), "{e}");
        }
        assert!(conf("ttl_security = \"yes\"").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("halyard-bgpd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn routes_go_to_every_other_peer() {
        let (mut r, mut rxs) = relay();
        r.apply(update(A, &[100], &["192.0.2.0/24", "198.51.100.0/24"], &[]));
        let s = sent(&mut r, &mut rxs);
        assert!(s[0].is_empty(), "split horizon: {:?}", s[0]);
        assert_eq!(s[1], [ann("192.0.2.0/24", &[100]), ann("198.51.100.0/24", &[100])]);
        assert_eq!(s[1], s[2]);
        // One change per prefix, in one run: both prefixes share the attributes.
        r.apply(update(A, &[100], &[], &["192.0.2.0/24"]));
        assert_eq!(sent(&mut r, &mut rxs), [vec![], vec![wd("192.0.2.0/24")], vec![wd("192.0.2.0/24")]]);
    }

    #[test]
    fn shortest_as_path_wins_and_the_other_takes_over() {
        let (mut r, mut rxs) = relay();
        r.apply(update(A, &[100, 200], &["192.0.2.0/24"], &[]));
        sent(&mut r, &mut rxs);
        // B's shorter path wins: A now gets it, C gets the replacement, B gets a withdrawal
        // (the best path is its own).
        r.apply(update(B, &[300], &["192.0.2.0/24"], &[]));
        assert_eq!(
            sent(&mut r, &mut rxs),
            [vec![ann("192.0.2.0/24", &[300])], vec![wd("192.0.2.0/24")], vec![ann("192.0.2.0/24", &[300])]]
        );
        // A longer path from C changes nothing.
        r.apply(update(C, &[1, 2, 3], &["192.0.2.0/24"], &[]));
        assert_eq!(sent(&mut r, &mut rxs), [vec![], vec![], vec![]]);
        // B goes away: A's path (shorter than C's) takes over.
        r.apply(Learned::Down { from: B });
        assert_eq!(
            sent(&mut r, &mut rxs),
            [vec![wd("192.0.2.0/24")], vec![ann("192.0.2.0/24", &[100, 200])], vec![ann("192.0.2.0/24", &[100, 200])]]
        );
        // A withdraws: C's path is left.
        r.apply(update(A, &[], &[], &["192.0.2.0/24"]));
        assert_eq!(
            sent(&mut r, &mut rxs),
            [vec![ann("192.0.2.0/24", &[1, 2, 3])], vec![ann("192.0.2.0/24", &[1, 2, 3])], vec![wd("192.0.2.0/24")]]
        );
        let rib = r.rib.lock().unwrap();
        assert!(rib.multi.is_empty());
        assert_eq!(rib.best.len(), 1);
    }

    #[test]
    fn equal_paths_tie_break_on_the_lower_address() {
        let (mut r, mut rxs) = relay();
        r.apply(update(B, &[2], &["192.0.2.0/24"], &[]));
        r.apply(update(A, &[1], &["192.0.2.0/24"], &[]));
        // Within one batch the changes for C come in order: B's path, then A's.
        let s = sent(&mut r, &mut rxs);
        assert_eq!(s[2], [ann("192.0.2.0/24", &[2]), ann("192.0.2.0/24", &[1])]);
        assert_eq!(r.rib.lock().unwrap().best[&prefix("192.0.2.0/24")].from, 1);
    }

    #[test]
    fn own_routes_win_and_a_session_gets_the_whole_table() {
        let (mut r, mut rxs) = relay();
        {
            let mut rib = r.rib.lock().unwrap();
            let own = rib.intern(attrs(&[]));
            rib.best.insert(prefix("203.0.113.0/24"), Path { from: LOCAL, attrs: own, info: None });
        }
        r.apply(update(A, &[], &["203.0.113.0/24", "192.0.2.0/24"], &[]));
        sent(&mut r, &mut rxs);
        // An announcement and a withdrawal queued for B before its table: the table follows them.
        r.apply(update(A, &[], &[], &["192.0.2.0/24"]));
        r.apply(update(C, &[7], &["198.51.100.0/24"], &[]));
        r.apply(Learned::TableWanted { from: B, generation: 4 });
        r.flush();
        let d: Vec<RouteDelta> = std::iter::from_fn(|| rxs[1].try_recv().ok()).collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].table_done, Some(4));
        let own = attrs(&[]);
        let seven = attrs(&[7]);
        let p = |s| prefix(s);
        let expect = [
            RouteChange::Withdraw(vec![p("192.0.2.0/24")]),
            // The queued announcement and the table's join: same attributes.
            RouteChange::Announce(seven, vec![p("198.51.100.0/24"), p("198.51.100.0/24")]),
            RouteChange::Announce(own, vec![p("203.0.113.0/24")]),
        ];
        assert_eq!(d[0].changes, expect);
        let rib = r.rib.lock().unwrap();
        assert_eq!(rib.received_from(1).count(), 1);
        assert_eq!(rib.advertised_to(3), 1);
    }

    #[test]
    fn a_restarting_peer_keeps_its_routes_until_end_of_rib() {
        let (mut r, mut rxs) = relay();
        r.apply(update(A, &[100], &["192.0.2.0/24", "198.51.100.0/24", "fd00::/64"], &[]));
        sent(&mut r, &mut rxs);
        // A restarts with graceful restart for IPv4 only: its IPv6 route goes, IPv4 stays.
        r.apply(Learned::Stale { from: A, families: vec![AfiSafi::IPV4_UNICAST] });
        assert_eq!(sent(&mut r, &mut rxs), [vec![], vec![wd("fd00::/64")], vec![wd("fd00::/64")]]);
        // Back: it sends one of the two again (new attributes), then End-of-RIB.
        r.apply(update(A, &[100, 1], &["192.0.2.0/24"], &[]));
        assert_eq!(sent(&mut r, &mut rxs)[1], [ann("192.0.2.0/24", &[100, 1])]);
        r.apply(Learned::StaleEnd { from: A, family: AfiSafi::IPV4_UNICAST });
        assert_eq!(sent(&mut r, &mut rxs), [vec![], vec![wd("198.51.100.0/24")], vec![wd("198.51.100.0/24")]]);
        let rib = r.rib.lock().unwrap();
        assert_eq!(rib.received_from(1).map(|p| p.to_string()).collect::<Vec<_>>(), ["192.0.2.0/24"]);
        assert!(rib.stale.is_empty());
    }

    #[test]
    fn a_peer_that_does_not_come_back_loses_its_stale_routes() {
        let (mut r, mut rxs) = relay();
        r.apply(update(B, &[200], &["192.0.2.0/24"], &[]));
        r.apply(Learned::Stale { from: B, families: vec![AfiSafi::IPV4_UNICAST] });
        sent(&mut r, &mut rxs);
        // The restart time runs out (the session sends StaleEnd per family).
        r.apply(Learned::StaleEnd { from: B, family: AfiSafi::IPV6_UNICAST });
        assert_eq!(sent(&mut r, &mut rxs), [vec![], vec![], vec![]]);
        r.apply(Learned::StaleEnd { from: B, family: AfiSafi::IPV4_UNICAST });
        assert_eq!(sent(&mut r, &mut rxs), [vec![wd("192.0.2.0/24")], vec![], vec![wd("192.0.2.0/24")]]);
        assert!(r.rib.lock().unwrap().best.is_empty());
    }

    #[test]
    fn equal_attributes_share_one_set() {
        let (mut r, mut rxs) = relay();
        r.apply(update(A, &[100], &["192.0.2.0/24"], &[]));
        r.apply(update(A, &[100], &["198.51.100.0/24"], &[]));
        r.flush();
        for rx in &mut rxs[1..] {
            let d = rx.try_recv().unwrap();
            assert_eq!(d.changes.len(), 1, "one run: {:?}", d.changes);
        }
        // Re-announcing the same route is no change.
        r.apply(update(A, &[100], &["192.0.2.0/24"], &[]));
        assert_eq!(sent(&mut r, &mut rxs), [vec![], vec![], vec![]]);
    }
}
