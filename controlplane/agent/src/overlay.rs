//! Pod-to-pod connectivity between nodes (`--routing-mode`): every other node with an IPv4 pod
//! CIDR and an IPv4 InternalIP becomes either a tunnel map entry (`tunnel`: VXLAN through a
//! collect-metadata device, or Geneve written in BPF) or a kernel route `CIDR via InternalIP`
//! (`native`). Both are diffed against what is installed, so a restart or an unrelated change
//! touches nothing that is already right.
//!
//! Ownership: the routes carry protocol [`ROUTE_PROTO`] and only routes with that protocol are
//! ever replaced or deleted; the VXLAN device is [`VXLAN_DEVICE`]; maps and tc links are pinned
//! under the datapath's `--bpf-pin-dir` (so forwarding continues while the agent is down, and a
//! restarted agent swaps its programs into the same links). `--uninstall` removes all of it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_datapath::maps::{TUN_F_LOCAL, Tunnel4Value};
use halyard_datapath::overlay::{Cidr4, DEFAULT_VNI, Overlay, OverlayConfig, TunnelProtocol};
use ipnet::IpNet;
use tokio::sync::watch;

use crate::reconcile::Snapshot;

/// The collect-metadata VXLAN device the agent creates in VXLAN mode.
pub const VXLAN_DEVICE: &str = "hl_vxlan";
/// rtnetlink protocol of the routes the agent owns (72 = 'H'; unused by iproute2's
/// rt_protos and by the common routing daemons).
pub const ROUTE_PROTO: u8 = 72;

/// `--routing-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingMode {
    /// Pod traffic between nodes is not Halyard's business (the default).
    Off,
    /// Encapsulation (`--tunnel-protocol`).
    Tunnel,
    /// Kernel routes to each node's pod CIDR via its InternalIP (nodes share an L2 segment).
    Native,
}

impl RoutingMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "tunnel" => Some(Self::Tunnel),
            "native" => Some(Self::Native),
            _ => None,
        }
    }
}

/// Overlay settings from the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySettings {
    pub mode: RoutingMode,
    pub protocol: TunnelProtocol,
    /// UDP port of the tunnel (VXLAN: the device's dstport; Geneve: the BPF encapsulation's).
    pub port: u16,
    pub vni: u32,
    /// Host-side pod interfaces to attach to: exact names, or prefixes ending in `*`.
    pub interfaces: Vec<String>,
    /// The underlay interface (default: the one holding this node's IPv4).
    pub uplink: Option<String>,
    pub pin_dir: PathBuf,
    /// This node's underlay address (default: the Node's IPv4 InternalIP).
    pub node_ipv4: Option<Ipv4Addr>,
}

impl OverlaySettings {
    pub fn enabled(&self) -> bool {
        self.mode != RoutingMode::Off
    }
}

impl Default for OverlaySettings {
    fn default() -> Self {
        Self {
            mode: RoutingMode::Off,
            protocol: TunnelProtocol::Vxlan,
            port: TunnelProtocol::Vxlan.default_port(),
            vni: DEFAULT_VNI,
            interfaces: vec!["lxc*".into()],
            uplink: None,
            pin_dir: PathBuf::from(halyard_datapath::loader::DEFAULT_PIN_DIR),
            node_ipv4: None,
        }
    }
}

/// Whether `ifname` is one of `patterns` (exact names, or prefixes ending in `*`).
pub fn matches(patterns: &[String], ifname: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => ifname.starts_with(prefix),
        None => p == ifname,
    })
}

/// What this node should have installed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Tunnel mode: every pod CIDR of the cluster (this node's own marked local).
    pub tunnels: BTreeMap<Cidr4, Tunnel4Value>,
    /// Native mode: each other node's pod CIDR via its InternalIP.
    pub routes: BTreeMap<Cidr4, Ipv4Addr>,
    /// Why a node was left out (logged).
    pub skipped: Vec<String>,
}

/// One node as the desired-state computation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub pod_cidrs: Vec<IpNet>,
    pub internal_ipv4: Option<Ipv4Addr>,
}

/// The pure part: from every node's pod CIDRs and address to tunnel entries or routes.
pub fn desired_from(mode: RoutingMode, me: &str, my_ip: Ipv4Addr, nodes: &[NodeView]) -> Desired {
    let mut d = Desired::default();
    if mode == RoutingMode::Off {
        return d;
    }
    for n in nodes {
        let v4: Vec<Cidr4> = n
            .pod_cidrs
            .iter()
            .filter_map(|c| match c {
                IpNet::V4(c) => Some(Cidr4::new(c.network(), c.prefix_len())),
                IpNet::V6(_) => None,
            })
            .collect();
        if v4.is_empty() {
            continue;
        }
        if n.name == me {
            if mode == RoutingMode::Tunnel {
                for c in v4 {
                    d.tunnels.insert(c, Tunnel4Value::new(my_ip, TUN_F_LOCAL));
                }
            }
            continue;
        }
        let Some(ip) = n.internal_ipv4 else {
            d.skipped.push(format!("node {}: pod CIDR but no IPv4 InternalIP", n.name));
            continue;
        };
        if ip == my_ip {
            d.skipped.push(format!("node {}: InternalIP {ip} is this node's address", n.name));
            continue;
        }
        for c in v4 {
            match mode {
                RoutingMode::Tunnel => {
                    d.tunnels.insert(c, Tunnel4Value::new(ip, 0));
                }
                RoutingMode::Native => {
                    d.routes.insert(c, ip);
                }
                RoutingMode::Off => {}
            }
        }
    }
    // A remote CIDR overlapping this node's own would steal local traffic: leave it out.
    let local: Vec<Cidr4> = d.tunnels.iter().filter(|(_, v)| v.flags & TUN_F_LOCAL != 0).map(|(c, _)| *c).collect();
    let overlaps = |a: &Cidr4, b: &Cidr4| {
        let len = a.prefix_len.min(b.prefix_len);
        Cidr4::new(a.addr, len) == Cidr4::new(b.addr, len)
    };
    d.tunnels.retain(|c, v| {
        let bad = v.flags & TUN_F_LOCAL == 0 && local.iter().any(|l| overlaps(l, c));
        if bad {
            d.skipped.push(format!("pod CIDR {c} overlaps this node's own"));
        }
        !bad
    });
    d
}

/// Every node of a snapshot, with its allocated pod CIDRs and InternalIP.
pub fn nodes(snap: &Snapshot) -> Vec<NodeView> {
    snap.pods
        .nodes
        .iter()
        .map(|(name, st)| NodeView {
            name: name.clone(),
            pod_cidrs: st.cidrs.clone(),
            internal_ipv4: crate::translate::node_internal_ipv4(&snap.model, name),
        })
        .collect()
}

/// What changed in one apply.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub tunnels_set: usize,
    pub tunnels_removed: usize,
    pub routes_set: usize,
    pub routes_removed: usize,
}

impl ApplyStats {
    pub fn is_noop(&self) -> bool {
        *self == Self::default()
    }
}

/// Runs `ip args…`; Err with its stderr on failure.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let o = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if !o.status.success() {
        anyhow::bail!("`ip {}`: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn parse_cidr(dst: &str) -> Option<Cidr4> {
    let (a, len) = dst.split_once('/').unwrap_or((dst, "32"));
    Some(Cidr4::new(a.parse().ok()?, len.parse().ok()?))
}

/// The routes this agent owns (protocol ROUTE_PROTO, main table): CIDR → gateway.
pub fn owned_routes() -> anyhow::Result<BTreeMap<Cidr4, Option<Ipv4Addr>>> {
    let out = ip(&["-j", "-4", "route", "show", "proto", &ROUTE_PROTO.to_string()])?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    let mut routes = BTreeMap::new();
    for r in v.as_array().into_iter().flatten() {
        let Some(dst) = r["dst"].as_str().and_then(parse_cidr) else { continue };
        routes.insert(dst, r["gateway"].as_str().and_then(|g| g.parse().ok()));
    }
    Ok(routes)
}

/// Brings the owned routes to `want`. A prefix already routed by someone else (another
/// protocol) is left alone and reported.
pub fn apply_routes(want: &BTreeMap<Cidr4, Ipv4Addr>, stats: &mut ApplyStats) -> anyhow::Result<Vec<String>> {
    let have = owned_routes()?;
    let proto = ROUTE_PROTO.to_string();
    let mut conflicts = Vec::new();
    for (cidr, gw) in want {
        if have.get(cidr) == Some(&Some(*gw)) {
            continue;
        }
        let dst = cidr.to_string();
        if !have.contains_key(cidr) {
            let other = ip(&["-j", "-4", "route", "show", "exact", &dst]).unwrap_or_default();
            let other: serde_json::Value = serde_json::from_str(other.trim()).unwrap_or_default();
            if other.as_array().is_some_and(|a| !a.is_empty()) {
                conflicts.push(format!("{dst} is already routed by another owner; not replaced"));
                continue;
            }
        }
        ip(&["route", "replace", &dst, "via", &gw.to_string(), "proto", &proto])?;
        stats.routes_set += 1;
    }
    for cidr in have.keys().filter(|c| !want.contains_key(c)) {
        ip(&["route", "del", &cidr.to_string(), "proto", &proto])?;
        stats.routes_removed += 1;
    }
    Ok(conflicts)
}

/// Creates (or keeps, if it already matches) the collect-metadata VXLAN device; returns its
/// ifindex.
pub fn ensure_vxlan(port: u16) -> anyhow::Result<u32> {
    if let Ok(out) = ip(&["-d", "-j", "link", "show", "dev", VXLAN_DEVICE]) {
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
        let data = &v[0]["linkinfo"]["info_data"];
        let ok = v[0]["linkinfo"]["info_kind"] == "vxlan"
            && data["external"].as_bool() == Some(true)
            && data["port"].as_u64() == Some(u64::from(port));
        if ok {
            ip(&["link", "set", VXLAN_DEVICE, "up"])?;
            return ifindex(VXLAN_DEVICE);
        }
        tracing::info!(device = VXLAN_DEVICE, "VXLAN device has other settings: recreating it");
        ip(&["link", "del", VXLAN_DEVICE])?;
    }
    ip(&["link", "add", VXLAN_DEVICE, "type", "vxlan", "external", "dstport", &port.to_string()])?;
    ip(&["link", "set", VXLAN_DEVICE, "up"])?;
    tracing::info!(device = VXLAN_DEVICE, port, "created the collect-metadata VXLAN device");
    ifindex(VXLAN_DEVICE)
}

pub fn ifindex(ifname: &str) -> anyhow::Result<u32> {
    let path = format!("/sys/class/net/{ifname}/ifindex");
    let s = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("interface {ifname}: {e}"))?;
    s.trim().parse().map_err(|e| anyhow::anyhow!("{path}: {e}"))
}

/// The interface holding `addr` (the default uplink).
fn interface_with(addr: Ipv4Addr) -> Option<String> {
    let out = ip(&["-j", "-4", "addr", "show"]).ok()?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
    v.as_array()?.iter().find_map(|l| {
        l["addr_info"]
            .as_array()?
            .iter()
            .any(|a| a["local"].as_str() == Some(addr.to_string().as_str()))
            .then(|| l["ifname"].as_str().map(String::from))?
    })
}

fn sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    let full = format!("/proc/sys/{path}");
    if std::fs::read_to_string(&full).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&full, value).map_err(|e| anyhow::anyhow!("{full}: {e}"))?;
    tracing::info!("set {} = {value}", path.replace('/', "."));
    Ok(())
}

/// Interfaces present now (name → ifindex).
fn interfaces() -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/sys/class/net").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(i) = ifindex(&name) {
            out.insert(name, i);
        }
    }
    out
}

/// The tunnel half: the loaded object, its links and its map.
struct Tunnel {
    ovl: Overlay,
    /// Pod interfaces attached, with the ifindex they had (a recreated veth gets a new link).
    attached: BTreeMap<String, u32>,
}

impl Tunnel {
    fn start(settings: &OverlaySettings, node_ip: Ipv4Addr) -> anyhow::Result<Self> {
        sysctl("net/ipv4/ip_forward", "1")?;
        let (vxlan_ifindex, uplink_ifindex, rx_dev) = match settings.protocol {
            TunnelProtocol::Vxlan => {
                let i = ensure_vxlan(settings.port)?;
                // The inner source is a remote pod: no reverse-path check on the tunnel device.
                sysctl(&format!("net/ipv4/conf/{VXLAN_DEVICE}/rp_filter"), "0")?;
                (i, 0, VXLAN_DEVICE.to_string())
            }
            TunnelProtocol::Geneve => {
                let uplink =
                    settings.uplink.clone().or_else(|| interface_with(node_ip)).ok_or_else(|| {
                        anyhow::anyhow!("no uplink: set --overlay-uplink (no interface holds {node_ip})")
                    })?;
                (0, ifindex(&uplink)?, uplink)
            }
        };
        let cfg = OverlayConfig {
            pin_dir: settings.pin_dir.clone(),
            protocol: settings.protocol,
            node_ipv4: node_ip,
            vni: settings.vni,
            port: settings.port,
            vxlan_ifindex,
            uplink_ifindex,
        };
        let mut ovl = Overlay::load(cfg).map_err(|e| anyhow::anyhow!("loading the overlay programs: {e}"))?;
        // Links of the other receive device (the protocol changed) or of vanished pods go.
        let gone = ovl.prune_links(|kind, ifname| kind != "tc-ovl-rx" || ifname == rx_dev);
        if !gone.is_empty() {
            tracing::info!(?gone, "stale overlay links removed");
        }
        let mode = ovl.attach_rx(&rx_dev).map_err(|e| anyhow::anyhow!("attaching to {rx_dev}: {e}"))?;
        tracing::info!(interface = %rx_dev, mode, protocol = settings.protocol.as_str(), "overlay receive attached");
        Ok(Self { ovl, attached: BTreeMap::new() })
    }

    /// Attaches to new pod interfaces and forgets vanished ones.
    fn scan(&mut self, patterns: &[String]) {
        let now = interfaces();
        self.attached.retain(|name, idx| now.get(name) == Some(idx));
        for (name, idx) in &now {
            if !matches(patterns, name) || self.attached.contains_key(name) {
                continue;
            }
            match self.ovl.attach_tx(name) {
                Ok(mode) => {
                    tracing::info!(interface = %name, mode, "overlay attached to pod interface");
                    self.attached.insert(name.clone(), *idx);
                }
                Err(e) => tracing::warn!("overlay: attaching to {name}: {e}"),
            }
        }
        let gone = self.ovl.prune_links(|_, _| true);
        if !gone.is_empty() {
            tracing::info!(?gone, "overlay links of vanished interfaces removed");
        }
    }

    fn apply(&mut self, want: &BTreeMap<Cidr4, Tunnel4Value>, stats: &mut ApplyStats) -> anyhow::Result<()> {
        let mut map = self.ovl.tunnels()?;
        let have = map.entries()?;
        for (cidr, v) in want {
            if have.get(cidr) != Some(v) {
                map.upsert(*cidr, v)?;
                stats.tunnels_set += 1;
            }
        }
        for cidr in have.keys().filter(|c| !want.contains_key(c)) {
            map.remove(*cidr)?;
            stats.tunnels_removed += 1;
        }
        Ok(())
    }
}

/// Keeps tunnels or routes in step with the snapshots. Runs on a blocking thread.
pub fn run_blocking(settings: OverlaySettings, node: String, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    let mut snap = snapshots.borrow_and_update().clone();
    // This node's address: from --node-ipv4, else its Node's InternalIP (waiting for it).
    let node_ip = loop {
        if let Some(ip) = settings.node_ipv4.or_else(|| crate::translate::node_internal_ipv4(&snap.model, &node)) {
            break ip;
        }
        tracing::warn!("overlay: waiting for Node {node} to have an IPv4 InternalIP (or set --node-ipv4)");
        loop {
            match snapshots.has_changed() {
                Ok(true) => break,
                Ok(false) => std::thread::sleep(Duration::from_millis(200)),
                Err(_) => return,
            }
        }
        snap = snapshots.borrow_and_update().clone();
    };
    let mut tunnel = None;
    if settings.mode == RoutingMode::Tunnel {
        match Tunnel::start(&settings, node_ip) {
            Ok(t) => tunnel = Some(t),
            Err(e) => {
                tracing::error!("overlay: {e:#}");
                return;
            }
        }
    } else {
        if let Err(e) = sysctl("net/ipv4/ip_forward", "1") {
            tracing::error!("overlay: {e:#}");
        }
        // Native routing needs no BPF: links left by an earlier tunnel-mode run go.
        let gone = halyard_datapath::overlay::prune_overlay_links(&settings.pin_dir, |_, _| false);
        if !gone.is_empty() {
            tracing::info!(?gone, "tunnel-mode links removed (native routing)");
        }
    }
    tracing::info!(mode = ?settings.mode, node_ip = %node_ip, "pod routing started");
    let mut last_skipped = Vec::new();
    loop {
        let want = desired_from(settings.mode, &node, node_ip, &nodes(&snap));
        if want.skipped != last_skipped {
            for s in &want.skipped {
                tracing::warn!("overlay: {s}");
            }
            last_skipped = want.skipped.clone();
        }
        let mut stats = ApplyStats::default();
        let mut result = apply_routes(&want.routes, &mut stats).map(|conflicts| {
            for c in conflicts {
                tracing::warn!("overlay: route {c}");
            }
        });
        if let Some(t) = tunnel.as_mut() {
            t.scan(&settings.interfaces);
            result = result.and_then(|()| t.apply(&want.tunnels, &mut stats));
        }
        match result {
            Ok(()) if !stats.is_noop() => {
                tracing::info!(?stats, tunnels = want.tunnels.len(), routes = want.routes.len(), "pod routing updated")
            }
            Ok(()) => {}
            Err(e) => tracing::error!("overlay: {e:#}"),
        }
        // Wait for a snapshot; rescan pod interfaces every second meanwhile (a CNI adds veths).
        let mut next_scan = Instant::now() + Duration::from_secs(1);
        loop {
            match snapshots.has_changed() {
                Ok(true) => {
                    snap = snapshots.borrow_and_update().clone();
                    break;
                }
                Err(_) => return,
                Ok(false) => {}
            }
            std::thread::sleep(Duration::from_millis(50));
            if Instant::now() >= next_scan {
                if let Some(t) = tunnel.as_mut() {
                    t.scan(&settings.interfaces);
                }
                next_scan = Instant::now() + Duration::from_secs(1);
            }
        }
    }
}

/// `--uninstall`: removes the VXLAN device and every owned route (the pinned maps and links go
/// with the rest of the pin directory). Returns what was removed.
pub fn uninstall() -> Vec<String> {
    let mut removed = Vec::new();
    if ip(&["link", "show", "dev", VXLAN_DEVICE]).is_ok() && ip(&["link", "del", VXLAN_DEVICE]).is_ok() {
        removed.push(format!("device {VXLAN_DEVICE}"));
    }
    if let Ok(routes) = owned_routes() {
        for cidr in routes.keys() {
            if ip(&["route", "del", &cidr.to_string(), "proto", &ROUTE_PROTO.to_string()]).is_ok() {
                removed.push(format!("route {cidr}"));
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidrs: &[&str], ip: Option<&str>) -> NodeView {
        NodeView {
            name: name.into(),
            pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            internal_ipv4: ip.map(|i| i.parse().unwrap()),
        }
    }

    fn cidr(s: &str) -> Cidr4 {
        parse_cidr(s).unwrap()
    }

    const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

    fn cluster() -> Vec<NodeView> {
        vec![
            node("a", &["10.244.0.0/24", "fd00::/112"], Some("192.168.1.1")),
            node("b", &["10.244.1.0/24"], Some("192.168.1.2")),
            node("c", &["10.244.2.0/24", "fd00::1:0/112"], Some("192.168.1.3")),
            node("no-ip", &["10.244.3.0/24"], None),
            node("no-cidr", &[], Some("192.168.1.5")),
        ]
    }

    #[test]
    fn tunnel_mode_maps_every_remote_cidr_and_marks_our_own() {
        let d = desired_from(RoutingMode::Tunnel, "a", ME, &cluster());
        assert!(d.routes.is_empty());
        assert_eq!(d.tunnels.len(), 3);
        assert_eq!(d.tunnels[&cidr("10.244.0.0/24")], Tunnel4Value::new(ME, TUN_F_LOCAL));
        assert_eq!(d.tunnels[&cidr("10.244.1.0/24")], Tunnel4Value::new("192.168.1.2".parse().unwrap(), 0));
        assert_eq!(d.tunnels[&cidr("10.244.2.0/24")].remote(), Ipv4Addr::new(192, 168, 1, 3));
        assert_eq!(d.skipped, vec!["node no-ip: pod CIDR but no IPv4 InternalIP".to_string()]);
    }

    #[test]
    fn native_mode_routes_remote_cidrs_via_their_node() {
        let d = desired_from(RoutingMode::Native, "a", ME, &cluster());
        assert!(d.tunnels.is_empty());
        let want: BTreeMap<_, _> = [
            (cidr("10.244.1.0/24"), Ipv4Addr::new(192, 168, 1, 2)),
            (cidr("10.244.2.0/24"), Ipv4Addr::new(192, 168, 1, 3)),
        ]
        .into();
        assert_eq!(d.routes, want);
    }

    #[test]
    fn off_wants_nothing_and_bad_nodes_are_skipped() {
        assert_eq!(desired_from(RoutingMode::Off, "a", ME, &cluster()), Desired::default());
        let mut nodes = cluster();
        nodes.push(node("twin", &["10.244.9.0/24"], Some("192.168.1.1")));
        nodes.push(node("overlap", &["10.244.0.128/25"], Some("192.168.1.9")));
        let d = desired_from(RoutingMode::Tunnel, "a", ME, &nodes);
        assert!(!d.tunnels.contains_key(&cidr("10.244.9.0/24")));
        assert!(!d.tunnels.contains_key(&cidr("10.244.0.128/25")));
        assert!(d.skipped.iter().any(|s| s.contains("twin")), "{:?}", d.skipped);
        assert!(d.skipped.iter().any(|s| s.contains("overlaps")), "{:?}", d.skipped);
    }

    #[test]
    fn the_same_input_gives_the_same_state() {
        let mut nodes = cluster();
        let a = desired_from(RoutingMode::Tunnel, "b", "192.168.1.2".parse().unwrap(), &nodes);
        nodes.reverse();
        let b = desired_from(RoutingMode::Tunnel, "b", "192.168.1.2".parse().unwrap(), &nodes);
        assert_eq!(a, b);
        assert_eq!(a.tunnels[&cidr("10.244.1.0/24")].flags, TUN_F_LOCAL);
    }

    #[test]
    fn interface_patterns() {
        let p = vec!["lxc*".to_string(), "pod0".to_string()];
        assert!(matches(&p, "lxc12ab"));
        assert!(matches(&p, "pod0"));
        assert!(!matches(&p, "pod01"));
        assert!(!matches(&p, "eth0"));
    }

    #[test]
    fn route_destinations_parse_with_and_without_length() {
        assert_eq!(parse_cidr("10.244.1.0/24"), Some(cidr("10.244.1.0/24")));
        assert_eq!(parse_cidr("10.244.1.7").unwrap().prefix_len, 32);
        assert_eq!(parse_cidr("default"), None);
    }
}
