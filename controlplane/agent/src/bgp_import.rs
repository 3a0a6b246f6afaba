//! The agent's BGP RIB: every route the peers send (Adj-RIB-In per peer), the best path per
//! prefix (RFC 4271 §9.1.2, [`halyard_bgp::rib`]), and, with `--bgp-import`, the best paths
//! installed into the kernel through rtnetlink.
//!
//! Ownership: installed routes carry protocol [`IMPORT_PROTO`] in `--bgp-import-table`; only
//! routes with that protocol in that table are touched (`ip route show table T proto 73`).
//!
//! What is not installed, with the reason shown by `halyard bgp routes received`:
//! - prefixes outside `--bgp-import-prefixes` (when set);
//! - prefixes this node advertises itself (a route reflected back must not loop our own LB IPs
//!   through the router);
//! - routes without a usable next hop;
//! - routes the kernel refuses (for example an iBGP next hop that is not on a connected
//!   network: Linux does not resolve next hops recursively).
//!
//! Restarts: on start the routes a previous run installed are adopted, not flushed, so
//! forwarding goes on while the sessions come back (as the peers keep ours, RFC 4724). Those not
//! learned again are removed once every peer has sent End-of-RIB for each of its families, or
//! after [`LEFTOVER_GRACE`]. A clean shutdown removes the routes of peers without graceful
//! restart and keeps the others (the sessions close for a restart then); `--uninstall` removes
//! everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use halyard_bgp::rib::{self, Candidate, PathInfo};
use halyard_bgp::session::{Learned, Prefix, RouteAttrs};
use halyard_bgp::wire::AfiSafi;
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};

use crate::bgp::PeerStatuses;
use halyard_tcp_md5::rtnl::{self, Op, Owner, Rtnl};

/// rtnetlink protocol of the routes imported from BGP (73 = 'I'; unused by iproute2's
/// rt_protos and by the common routing daemons, and not the overlay's 72).
pub const IMPORT_PROTO: u8 = 73;

/// How long routes installed by a previous run wait for the peers to send them again.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(120);

/// `--bgp-import*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSettings {
    /// Install best paths into the kernel.
    pub enabled: bool,
    pub table: u32,
    pub metric: u32,
    /// Only prefixes inside one of these (empty: all).
    pub prefixes: Vec<IpNet>,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings { enabled: false, table: 254, metric: 20, prefixes: Vec::new() }
    }
}

impl ImportSettings {
    fn owner(&self) -> Owner {
        Owner { table: self.table, protocol: IMPORT_PROTO, metric: self.metric }
    }
}

/// One received path.
#[derive(Clone, Debug)]
pub struct Path {
    pub attrs: Arc<RouteAttrs>,
    pub info: Arc<PathInfo>,
    /// Kept for a restarting peer and not sent again yet (RFC 4724 §4.2); still used.
    pub stale: bool,
}

/// What happened to a best path in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kernel {
    Installed(IpAddr),
    /// Not installed, and why.
    Skipped(String),
    /// The kernel refused it.
    Refused(String),
}

impl Kernel {
    pub fn describe(&self) -> String {
        match self {
            Kernel::Installed(_) => "installed".into(),
            Kernel::Skipped(why) => format!("skipped: {why}"),
            Kernel::Refused(why) => format!("refused: {why}"),
        }
    }
}

/// The agent's RIB (shared with the API and the metrics).
#[derive(Debug, Default)]
pub struct Rib {
    /// Adj-RIB-In per peer address.
    pub peers: BTreeMap<IpAddr, HashMap<Prefix, Path>>,
    /// Best path per prefix: the peer it came from.
    pub best: BTreeMap<Prefix, IpAddr>,
    /// Kernel state of each best path (empty with import off).
    pub kernel: BTreeMap<Prefix, Kernel>,
    /// Families each peer sent End-of-RIB for since its session came up.
    end_of_rib: BTreeMap<IpAddr, BTreeSet<AfiSafi>>,
    /// Routes a previous run installed that nobody sent again yet: prefix → gateway.
    pub leftovers: BTreeMap<Prefix, IpAddr>,
}

pub type SharedRib = Arc<Mutex<Rib>>;

fn net_of(p: &Prefix) -> IpNet {
    match p {
        Prefix::V4(p) => IpNet::new(IpAddr::V4(p.addr()), p.prefix_len()).expect("valid prefix length"),
        Prefix::V6(p) => IpNet::new(IpAddr::V6(p.addr()), p.prefix_len()).expect("valid prefix length"),
    }
}

fn prefix_of(n: &IpNet) -> Option<Prefix> {
    crate::bgp::net_prefix(*n)
}

impl Rib {
    /// Routes received from `peer`.
    pub fn received(&self, peer: &IpAddr) -> usize {
        self.peers.get(peer).map_or(0, |r| r.len())
    }

    /// Applies one message from a session; returns the prefixes whose paths changed.
    fn apply(&mut self, ev: Learned, changed: &mut BTreeSet<Prefix>) {
        match ev {
            Learned::Update { from, attrs, info, announced, withdrawn } => {
                let table = self.peers.entry(from).or_default();
                for p in withdrawn {
                    if table.remove(&p).is_some() {
                        changed.insert(p);
                    }
                }
                for p in announced {
                    table.insert(p, Path { attrs: attrs.clone(), info: info.clone(), stale: false });
                    changed.insert(p);
                }
            }
            Learned::Down { from } => {
                self.end_of_rib.remove(&from);
                if let Some(table) = self.peers.remove(&from) {
                    changed.extend(table.into_keys());
                }
            }
            Learned::Stale { from, families } => {
                self.end_of_rib.remove(&from);
                if let Some(table) = self.peers.get_mut(&from) {
                    table.retain(|p, path| {
                        let keep = families.contains(&family_of(p));
                        if keep {
                            path.stale = true;
                        } else {
                            changed.insert(*p);
                        }
                        keep
                    });
                }
            }
            Learned::StaleEnd { from, family } => {
                if let Some(table) = self.peers.get_mut(&from) {
                    table.retain(|p, path| {
                        let gone = path.stale && family_of(p) == family;
                        if gone {
                            changed.insert(*p);
                        }
                        !gone
                    });
                }
            }
            Learned::EndOfRib { from, family } => {
                self.end_of_rib.entry(from).or_default().insert(family);
            }
            Learned::TableWanted { .. } => {}
        }
    }

    /// Recomputes the best path of `p`.
    fn select(&mut self, p: &Prefix) -> Option<(IpAddr, &Path)> {
        let mut cands: Vec<Candidate<'_>> = Vec::new();
        for (from, table) in &self.peers {
            if let Some(path) = table.get(p) {
                cands.push(Candidate { from: *from, attrs: &path.attrs, info: &path.info });
            }
        }
        let i = rib::best(&cands)?;
        let from = cands[i].from;
        let path = self.peers.get(&from)?.get(p)?;
        Some((from, path))
    }
}

fn family_of(p: &Prefix) -> AfiSafi {
    match p {
        Prefix::V4(_) => AfiSafi::IPV4_UNICAST,
        Prefix::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}

/// Prefixes this node advertises to any peer.
fn our_prefixes(statuses: &PeerStatuses) -> BTreeSet<Prefix> {
    let mut out = BTreeSet::new();
    for (_, st) in statuses.lock().unwrap_or_else(|e| e.into_inner()).values() {
        out.extend(st.lock().unwrap_or_else(|e| e.into_inner()).advertised.keys().copied());
    }
    out
}

/// Every running peer reached Established and sent End-of-RIB for each family it carries.
fn all_tables_in(rib: &Rib, statuses: &PeerStatuses) -> bool {
    let statuses = statuses.lock().unwrap_or_else(|e| e.into_inner());
    statuses.values().all(|(cfg, st)| {
        let st = st.lock().unwrap_or_else(|e| e.into_inner());
        st.established_since.is_some()
            && rib.end_of_rib.get(&cfg.address).is_some_and(|got| st.families.iter().all(|f| got.contains(f)))
    })
}

/// The kernel route `path` asks for `p`, or why there is none.
fn wanted(settings: &ImportSettings, p: &Prefix, path: &Path, ours: &BTreeSet<Prefix>) -> Result<IpAddr, String> {
    let net = net_of(p);
    if !settings.prefixes.is_empty() && !settings.prefixes.iter().any(|allowed| allowed.contains(&net)) {
        return Err("outside --bgp-import-prefixes".into());
    }
    if ours.contains(p) {
        return Err("this node advertises it".into());
    }
    let v6 = matches!(p, Prefix::V6(_));
    match path.info.next_hop(v6) {
        Some(nh) if !nh.is_unspecified() => Ok(nh),
        _ => Err("no next hop".into()),
    }
}

/// Brings the kernel in line with the best paths of `changed` (all prefixes when `None`).
fn sync(
    rib: &mut Rib,
    settings: &ImportSettings,
    nl: Option<&mut Rtnl>,
    changed: &BTreeSet<Prefix>,
    ours: &BTreeSet<Prefix>,
) {
    let mut ops: Vec<(Prefix, Op, Option<IpAddr>)> = Vec::new();
    for p in changed {
        let selected = rib.select(p).map(|(from, path)| (from, wanted(settings, p, path, ours)));
        let was = rib.kernel.get(p).cloned();
        match selected {
            None => {
                rib.best.remove(p);
                rib.kernel.remove(p);
                if settings.enabled && matches!(was, Some(Kernel::Installed(_))) {
                    ops.push((*p, Op::Delete(net_of(p)), None));
                }
            }
            Some((from, want)) => {
                rib.best.insert(*p, from);
                if !settings.enabled {
                    continue;
                }
                match want {
                    Ok(gw) => {
                        rib.leftovers.remove(p);
                        if was != Some(Kernel::Installed(gw)) {
                            ops.push((*p, Op::Replace(rtnl::Route { dst: net_of(p), gateway: gw }), Some(gw)));
                        }
                    }
                    Err(why) => {
                        if matches!(was, Some(Kernel::Installed(_))) || rib.leftovers.remove(p).is_some() {
                            ops.push((*p, Op::Delete(net_of(p)), None));
                        }
                        rib.kernel.insert(*p, Kernel::Skipped(why));
                    }
                }
            }
        }
    }
    let Some(nl) = nl else { return };
    if ops.is_empty() {
        return;
    }
    let list: Vec<Op> = ops.iter().map(|(_, op, _)| *op).collect();
    match nl.apply(&list, &settings.owner()) {
        Ok(results) => {
            for ((p, op, gw), res) in ops.into_iter().zip(results) {
                match (op, res) {
                    (Op::Replace(_), Ok(())) => {
                        rib.kernel.insert(p, Kernel::Installed(gw.expect("a replace has a gateway")));
                    }
                    (Op::Replace(r), Err(e)) => {
                        // Retried every few seconds: said once, not on every retry.
                        if !matches!(rib.kernel.get(&p), Some(Kernel::Refused(old)) if *old == e) {
                            tracing::warn!(prefix = %p, gateway = %r.gateway, "BGP import: the kernel refused the route: {e}");
                        }
                        rib.kernel.insert(p, Kernel::Refused(e));
                    }
                    (Op::Delete(_), Ok(())) => {}
                    // Gone already (someone deleted it by hand): the wanted state holds.
                    (Op::Delete(_), Err(e)) if e.contains("No such process") => {}
                    (Op::Delete(_), Err(e)) => {
                        tracing::warn!(prefix = %p, "BGP import: could not delete the route: {e}");
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!("BGP import: rtnetlink failed: {e}; routes will be retried on the next change");
            for (p, _, _) in ops {
                rib.kernel.insert(p, Kernel::Refused(format!("rtnetlink: {e}")));
            }
        }
    }
}

/// Removes the routes of a previous run nobody sent again.
fn sweep_leftovers(rib: &mut Rib, settings: &ImportSettings, nl: &mut Rtnl) {
    let gone: Vec<Prefix> = std::mem::take(&mut rib.leftovers).into_keys().collect();
    if gone.is_empty() {
        return;
    }
    let ops: Vec<Op> = gone.iter().map(|p| Op::Delete(net_of(p))).collect();
    match nl.apply(&ops, &settings.owner()) {
        Ok(_) => {
            tracing::info!(routes = gone.len(), "BGP import: removed routes of the previous run not learned again")
        }
        Err(e) => tracing::error!("BGP import: could not remove routes of the previous run: {e}"),
    }
}

/// Removes every route this agent installed in `settings`' table (`--uninstall`).
pub fn uninstall(settings: &ImportSettings) -> Vec<String> {
    let mut done = Vec::new();
    let owner = settings.owner();
    let Ok(mut nl) = Rtnl::open() else { return done };
    let Ok(routes) = nl.dump(&owner) else { return done };
    let ops: Vec<Op> = routes.iter().map(|(r, _)| Op::Delete(r.dst)).collect();
    if let Ok(res) = nl.apply(&ops, &owner) {
        for ((r, _), res) in routes.iter().zip(res) {
            if res.is_ok() {
                done.push(format!("route {} via {} (BGP import, table {})", r.dst, r.gateway, settings.table));
            }
        }
    }
    done
}

/// Keeps the RIB (and with import on, the kernel) in step with what the sessions learn.
pub async fn run(
    mut learned: mpsc::UnboundedReceiver<Learned>,
    settings: ImportSettings,
    shared: SharedRib,
    statuses: PeerStatuses,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut nl = None;
    if settings.enabled {
        match Rtnl::open() {
            Ok(mut s) => {
                match s.dump(&settings.owner()) {
                    Ok(routes) => {
                        let mut rib = shared.lock().unwrap_or_else(|e| e.into_inner());
                        let mut other_metric = Vec::new();
                        for (r, metric) in routes {
                            match prefix_of(&r.dst) {
                                Some(p) if metric == settings.metric => {
                                    rib.leftovers.insert(p, r.gateway);
                                    rib.kernel.insert(p, Kernel::Installed(r.gateway));
                                }
                                // Installed with another --bgp-import-metric: a new route would
                                // sit beside it, so it goes now.
                                _ => other_metric.push(Op::Delete(r.dst)),
                            }
                        }
                        if !other_metric.is_empty() {
                            let _ = s.apply(&other_metric, &settings.owner());
                        }
                        if !rib.leftovers.is_empty() {
                            tracing::info!(
                                routes = rib.leftovers.len(),
                                "BGP import: keeping the previous run's routes until the peers send them again"
                            );
                        }
                    }
                    Err(e) => tracing::error!("BGP import: cannot read the routing table: {e}"),
                }
                nl = Some(s);
            }
            Err(e) => tracing::error!("BGP import: cannot open rtnetlink, nothing will be installed: {e}"),
        }
    }
    let started = Instant::now();
    let mut last_ours = BTreeSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut changed = BTreeSet::new();
        let mut full = false;
        tokio::select! {
            ev = learned.recv() => {
                let Some(ev) = ev else { break };
                let mut rib = shared.lock().unwrap_or_else(|e| e.into_inner());
                rib.apply(ev, &mut changed);
                // Take whatever else is queued: one kernel batch for a burst of UPDATEs.
                for _ in 0..10_000 {
                    match learned.try_recv() {
                        Ok(ev) => rib.apply(ev, &mut changed),
                        Err(_) => break,
                    }
                }
            }
            _ = tick.tick() => full = true,
            _ = shutdown.changed() => break,
        }
        // Only needed to decide what goes into the kernel.
        let ours = if settings.enabled { our_prefixes(&statuses) } else { BTreeSet::new() };
        let mut rib = shared.lock().unwrap_or_else(|e| e.into_inner());
        let rib = &mut *rib;
        if full {
            if ours != last_ours {
                // What we advertise changed: a route may have to go, or may be allowed now.
                changed = rib.best.keys().chain(rib.kernel.keys()).copied().collect();
            } else {
                // Retry what the kernel refused (an interface may have come up since).
                changed = rib.kernel.iter().filter(|(_, k)| matches!(k, Kernel::Refused(_))).map(|(p, _)| *p).collect();
            }
            last_ours = ours.clone();
        }
        if !changed.is_empty() {
            tokio::task::block_in_place(|| sync(rib, &settings, nl.as_mut(), &changed, &ours));
        }
        if let Some(nl) = nl.as_mut()
            && !rib.leftovers.is_empty()
            && (started.elapsed() >= LEFTOVER_GRACE || all_tables_in(rib, &statuses))
        {
            sweep_leftovers(rib, &settings, nl);
        }
    }
    // Clean shutdown. A session without graceful restart ends with a Cease and the peer drops
    // our routes, so the routes learned from it go too. A session with graceful restart is
    // closed for a restart (the peer keeps ours, RFC 4724 §4): its routes stay installed and
    // the next run adopts them.
    if let Some(nl) = nl.as_mut() {
        let restarting: BTreeSet<IpAddr> = statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|(cfg, _)| cfg.graceful_restart.is_some())
            .map(|(cfg, _)| cfg.address)
            .collect();
        let rib = shared.lock().unwrap_or_else(|e| e.into_inner());
        let ops: Vec<Op> = rib
            .kernel
            .iter()
            .filter(|(p, k)| {
                matches!(k, Kernel::Installed(_)) && !rib.best.get(*p).is_some_and(|from| restarting.contains(from))
            })
            .map(|(p, _)| Op::Delete(net_of(p)))
            .collect();
        let kept = rib.kernel.values().filter(|k| matches!(k, Kernel::Installed(_))).count() - ops.len();
        if !ops.is_empty() {
            let _ = nl.apply(&ops, &settings.owner());
        }
        tracing::info!(
            removed = ops.len(),
            kept,
            "BGP import: shutting down (routes of graceful-restart peers are kept)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halyard_bgp::session::Prefix;
    use std::net::Ipv4Addr;

    fn info(id: u8, nh: &str, ibgp: bool, local_pref: Option<u32>) -> Arc<PathInfo> {
        Arc::new(PathInfo {
            peer_asn: if ibgp { 65000 } else { 65100 + id as u32 },
            peer_router_id: Ipv4Addr::new(10, 0, 0, id),
            ibgp,
            origin: 0,
            local_pref,
            med: None,
            next_hop_v4_nlri: Some(nh.parse().unwrap()),
            next_hop_v6: None,
            next_hop_v6_link_local: None,
        })
    }

    fn update(from: &str, path: &[u32], info: Arc<PathInfo>, announced: &[&str], withdrawn: &[&str]) -> Learned {
        Learned::Update {
            from: from.parse().unwrap(),
            attrs: Arc::new(RouteAttrs { as_path: path.to_vec(), ..Default::default() }),
            info,
            announced: announced.iter().map(|p| p.parse().unwrap()).collect(),
            withdrawn: withdrawn.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn on() -> ImportSettings {
        ImportSettings { enabled: true, ..Default::default() }
    }

    /// Applies the events and syncs without a kernel: the wanted state shows in `kernel` as
    /// Skipped or (for installs, since no socket confirms them) as not yet Installed.
    fn feed(rib: &mut Rib, settings: &ImportSettings, evs: Vec<Learned>, ours: &[&str]) -> Vec<(Prefix, IpAddr)> {
        let mut changed = BTreeSet::new();
        for ev in evs {
            rib.apply(ev, &mut changed);
        }
        let ours: BTreeSet<Prefix> = ours.iter().map(|s| p(s)).collect();
        sync(rib, settings, None, &changed, &ours);
        rib.best.iter().map(|(p, from)| (*p, *from)).collect()
    }

    #[test]
    fn the_best_path_follows_announcements_withdrawals_and_sessions() {
        let mut rib = Rib::default();
        let s = ImportSettings::default();
        let a = info(1, "192.0.2.1", false, None);
        let b = info(2, "192.0.2.2", false, None);
        let best = feed(
            &mut rib,
            &s,
            vec![
                update("192.0.2.1", &[65101, 7], a.clone(), &["10.1.0.0/16"], &[]),
                update("192.0.2.2", &[65102], b.clone(), &["10.1.0.0/16", "10.2.0.0/16"], &[]),
            ],
            &[],
        );
        // The shorter AS path (peer 2) wins 10.1/16.
        assert_eq!(
            best,
            vec![(p("10.1.0.0/16"), "192.0.2.2".parse().unwrap()), (p("10.2.0.0/16"), "192.0.2.2".parse().unwrap())]
        );
        // Import is off: no kernel state is kept at all.
        assert!(rib.kernel.is_empty());
        // Peer 2 withdraws 10.1/16: peer 1's path takes over.
        let best = feed(&mut rib, &s, vec![update("192.0.2.2", &[], b.clone(), &[], &["10.1.0.0/16"])], &[]);
        assert_eq!(best[0], (p("10.1.0.0/16"), "192.0.2.1".parse().unwrap()));
        // Peer 2's session goes down: its last prefix is gone.
        let best = feed(&mut rib, &s, vec![Learned::Down { from: "192.0.2.2".parse().unwrap() }], &[]);
        assert_eq!(best, vec![(p("10.1.0.0/16"), "192.0.2.1".parse().unwrap())]);
        assert!(!rib.kernel.contains_key(&p("10.2.0.0/16")));
        assert_eq!(rib.received(&"192.0.2.1".parse().unwrap()), 1);
    }

    #[test]
    fn stale_routes_stay_until_end_of_rib_removes_those_not_sent_again() {
        let mut rib = Rib::default();
        let s = ImportSettings::default();
        let a = info(1, "192.0.2.1", false, None);
        let from: IpAddr = "192.0.2.1".parse().unwrap();
        feed(
            &mut rib,
            &s,
            vec![update("192.0.2.1", &[65101], a.clone(), &["10.1.0.0/16", "10.2.0.0/16", "fd00:1::/48"], &[])],
            &[],
        );
        let best = feed(&mut rib, &s, vec![Learned::Stale { from, families: vec![AfiSafi::IPV4_UNICAST] }], &[]);
        // IPv6 was not kept; IPv4 is, marked stale.
        assert_eq!(best.len(), 2);
        assert!(rib.peers[&from].values().all(|path| path.stale));
        let best = feed(
            &mut rib,
            &s,
            vec![
                update("192.0.2.1", &[65101], a, &["10.1.0.0/16"], &[]),
                Learned::StaleEnd { from, family: AfiSafi::IPV4_UNICAST },
            ],
            &[],
        );
        assert_eq!(best, vec![(p("10.1.0.0/16"), from)]);
        assert!(!rib.peers[&from][&p("10.1.0.0/16")].stale);
    }

    #[test]
    fn import_skips_what_it_must_not_install_and_says_why() {
        let mut rib = Rib::default();
        let mut s = on();
        s.prefixes = vec!["10.0.0.0/8".parse().unwrap()];
        let a = info(1, "192.0.2.1", false, None);
        let mut no_nh = (*info(2, "0.0.0.0", false, None)).clone();
        no_nh.next_hop_v4_nlri = None;
        feed(
            &mut rib,
            &s,
            vec![
                update("192.0.2.1", &[65101], a, &["10.1.0.0/16", "172.16.0.0/12", "10.9.9.9/32"], &[]),
                update("192.0.2.2", &[65102], Arc::new(no_nh), &["10.3.0.0/16"], &[]),
            ],
            &["10.9.9.9/32"],
        );
        let k = |s: &str| rib.kernel.get(&p(s)).cloned();
        assert_eq!(k("172.16.0.0/12"), Some(Kernel::Skipped("outside --bgp-import-prefixes".into())));
        assert_eq!(k("10.9.9.9/32"), Some(Kernel::Skipped("this node advertises it".into())));
        assert_eq!(k("10.3.0.0/16"), Some(Kernel::Skipped("no next hop".into())));
        // Without a socket nothing is confirmed installed yet.
        assert_eq!(k("10.1.0.0/16"), None);
    }

    #[test]
    fn all_tables_in_needs_end_of_rib_for_every_family() {
        let mut rib = Rib::default();
        let from: IpAddr = "192.0.2.1".parse().unwrap();
        let mut changed = BTreeSet::new();
        rib.apply(Learned::EndOfRib { from, family: AfiSafi::IPV4_UNICAST }, &mut changed);
        assert!(rib.end_of_rib[&from].contains(&AfiSafi::IPV4_UNICAST));
        rib.apply(Learned::Down { from }, &mut changed);
        assert!(!rib.end_of_rib.contains_key(&from));
    }
}
