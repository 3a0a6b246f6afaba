//! The pod overlay: loading `tc_overlay.bpf.o`, attaching its two programs, and the `hl_tunnel`
//! map (pod CIDR → the node that owns it), pinned next to the LB maps.
//!
//! ```text
//!   pod ─veth─▶ hl_tc_overlay_tx (tc ingress, host side): remote pod CIDR?
//!                  VXLAN (RFC 7348): tunnel key + redirect to the collect-metadata device
//!                  Geneve (RFC 8926): outer IPv4/UDP/Geneve pushed in BPF, out of the uplink
//!   uplink / hl_vxlan ─▶ hl_tc_overlay_rx (tc ingress): Geneve stripped / VXLAN marked ours,
//!                  then the host routes the inner packet to the pod's veth
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Map, MapData, MapError, PerCpuArray};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};

use crate::lb::LbMapError;
use crate::loader::{DatapathError, attach_tc, is_on_bpffs, prog_err, program};
use crate::maps::{HL_STAT_LEN, HlStat, MapBytes, TUNNEL4_VALUE_LEN, Tunnel4Value};

pub static TC_OVERLAY_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_overlay.bpf.o"));

pub const PROG_TC_OVERLAY_TX: &str = "hl_tc_overlay_tx";
pub const PROG_TC_OVERLAY_RX: &str = "hl_tc_overlay_rx";
pub const MAP_TUNNEL: &str = "hl_tunnel";
pub const MAP_OVL_STATS: &str = "hl_ovl_stats";

/// Cilium's VXLAN port (IANA's is 4789) and the IANA Geneve port.
pub const VXLAN_PORT: u16 = 8472;
pub const GENEVE_PORT: u16 = 6081;
/// Default VNI: 2, Cilium's reserved "world" identity (Halyard carries no per-pod identity yet).
pub const DEFAULT_VNI: u32 = 2;

/// How pod packets to other nodes are encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelProtocol {
    /// VXLAN (RFC 7348) through a collect-metadata (`external`) VXLAN device.
    Vxlan = 1,
    /// Geneve (RFC 8926) written by the BPF program itself.
    Geneve = 2,
}

impl TunnelProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vxlan => "vxlan",
            Self::Geneve => "geneve",
        }
    }
    pub fn default_port(self) -> u16 {
        match self {
            Self::Vxlan => VXLAN_PORT,
            Self::Geneve => GENEVE_PORT,
        }
    }
}

/// Load-time settings of the overlay object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    pub pin_dir: PathBuf,
    pub protocol: TunnelProtocol,
    /// Geneve: the outer source address, and the address decapsulated packets must be sent to.
    pub node_ipv4: Ipv4Addr,
    pub vni: u32,
    /// Geneve UDP port (VXLAN: the device's `dstport`, not used by the program).
    pub port: u16,
    /// VXLAN: the collect-metadata device packets are redirected to.
    pub vxlan_ifindex: u32,
    /// Geneve: the uplink (next-hop lookup restricted to it).
    pub uplink_ifindex: u32,
}

/// The loaded overlay object.
#[derive(Debug)]
pub struct Overlay {
    cfg: OverlayConfig,
    obj: Ebpf,
}

impl Overlay {
    /// Loads both programs (creating or reusing the pinned `hl_tunnel` and `hl_ovl_stats`).
    pub fn load(cfg: OverlayConfig) -> Result<Self, DatapathError> {
        std::fs::create_dir_all(cfg.pin_dir.join("links"))
            .map_err(|source| DatapathError::PinDir { path: cfg.pin_dir.clone(), source })?;
        if !is_on_bpffs(&cfg.pin_dir) {
            return Err(DatapathError::NotBpffs(cfg.pin_dir.clone()));
        }
        let node = u32::from_ne_bytes(cfg.node_ipv4.octets());
        let mode = cfg.protocol as u32;
        let port = u32::from(cfg.port);
        let mut obj = EbpfLoader::new()
            .default_map_pin_directory(&cfg.pin_dir)
            .override_global("CFG_NODE_IPV4", &node, true)
            .override_global("CFG_OVL_MODE", &mode, true)
            .override_global("CFG_OVL_VNI", &cfg.vni, true)
            .override_global("CFG_OVL_PORT", &port, true)
            .override_global("CFG_OVL_VXLAN_IFINDEX", &cfg.vxlan_ifindex, true)
            .override_global("CFG_OVL_UPLINK_IFINDEX", &cfg.uplink_ifindex, true)
            .load(TC_OVERLAY_OBJ)
            .map_err(|source| DatapathError::Load { object: "tc_overlay.bpf.o", source: Box::new(source) })?;
        for name in [PROG_TC_OVERLAY_TX, PROG_TC_OVERLAY_RX] {
            let p: &mut SchedClassifier = program(&mut obj, name)?;
            p.load().map_err(prog_err(name, "load (verifier)"))?;
        }
        Ok(Self { cfg, obj })
    }

    pub fn config(&self) -> &OverlayConfig {
        &self.cfg
    }

    /// The pod-side program (tc ingress of the host side of pod veths).
    pub fn tx(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        program(&mut self.obj, PROG_TC_OVERLAY_TX)
    }

    /// The receive program (tc ingress of the uplink for Geneve, of the VXLAN device for VXLAN).
    pub fn rx(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        program(&mut self.obj, PROG_TC_OVERLAY_RX)
    }

    /// Where the link of `kind` on `ifname` is pinned.
    pub fn link_path(&self, kind: &str, ifname: &str) -> PathBuf {
        self.cfg.pin_dir.join("links").join(format!("{kind}-{ifname}"))
    }

    /// Attaches the pod-side program at tc ingress of `ifname` (a pinned TCX link; an earlier
    /// run's link gets this program swapped in).
    pub fn attach_tx(&mut self, ifname: &str) -> Result<&'static str, DatapathError> {
        let path = self.link_path("tc-ovl-tx", ifname);
        attach_tc(self.tx()?, PROG_TC_OVERLAY_TX, ifname, &path)
    }

    /// Attaches the receive program at tc ingress of `ifname`.
    pub fn attach_rx(&mut self, ifname: &str) -> Result<&'static str, DatapathError> {
        let path = self.link_path("tc-ovl-rx", ifname);
        attach_tc(self.rx()?, PROG_TC_OVERLAY_RX, ifname, &path)
    }

    /// Removes pinned overlay links whose interface no longer exists (a pod went away), or that
    /// `keep(kind, ifname)` rejects. Returns `kind:ifname` of each link removed.
    pub fn prune_links(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<String> {
        prune_overlay_links(&self.cfg.pin_dir, keep)
    }

    /// The tunnel map of this object.
    pub fn tunnels(&self) -> Result<TunnelMap, DatapathError> {
        Ok(TunnelMap::open(&self.cfg.pin_dir)?)
    }
}

/// Removes the overlay links pinned under `pin_dir/links` whose interface is gone (in this
/// network namespace) or that `keep(kind, ifname)` rejects (`kind` is `tc-ovl-tx` or
/// `tc-ovl-rx`). Unpinning the last reference detaches the program.
pub fn prune_overlay_links(pin_dir: &Path, keep: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let mut gone = Vec::new();
    let Ok(entries) = std::fs::read_dir(pin_dir.join("links")) else { return gone };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((kind, ifname)) = ["tc-ovl-tx-", "tc-ovl-rx-"]
            .iter()
            .find_map(|k| name.strip_prefix(k).map(|i| (k.trim_end_matches('-'), i)))
        else {
            continue;
        };
        let exists = Path::new("/sys/class/net").join(ifname).exists();
        if !exists || !keep(kind, ifname) {
            match aya::programs::links::PinnedLink::from_pin(e.path()) {
                Ok(link) => {
                    let _ = link.unpin();
                }
                Err(_) => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            gone.push(format!("{kind}:{ifname}"));
        }
    }
    gone
}

/// The overlay counters (`enum hl_ovl_counter`), in map order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OvlCounter {
    PassNotIpv4 = 0,
    PassNoTunnel,
    EncapVxlan,
    EncapGeneve,
    EncapNoNeigh,
    DropEncap,
    DropFib,
    RxVxlan,
    DecapGeneve,
    DropCritical,
}

impl OvlCounter {
    pub const ALL: [OvlCounter; 10] = [
        OvlCounter::PassNotIpv4,
        OvlCounter::PassNoTunnel,
        OvlCounter::EncapVxlan,
        OvlCounter::EncapGeneve,
        OvlCounter::EncapNoNeigh,
        OvlCounter::DropEncap,
        OvlCounter::DropFib,
        OvlCounter::RxVxlan,
        OvlCounter::DecapGeneve,
        OvlCounter::DropCritical,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PassNotIpv4 => "pass_not_ipv4",
            Self::PassNoTunnel => "pass_no_tunnel",
            Self::EncapVxlan => "encap_vxlan",
            Self::EncapGeneve => "encap_geneve",
            Self::EncapNoNeigh => "encap_geneve_resolving_neighbour",
            Self::DropEncap => "drop_encap",
            Self::DropFib => "drop_unreachable",
            Self::RxVxlan => "rx_vxlan",
            Self::DecapGeneve => "decap_geneve",
            Self::DropCritical => "drop_geneve_critical_option",
        }
    }
}

/// A pod CIDR as the tunnel map keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr4 {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Cidr4 {
    /// The CIDR with its host bits cleared (the trie would match the same, but keys should be
    /// canonical so diffs compare equal).
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        let len = prefix_len.min(32);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Self { addr: Ipv4Addr::from(u32::from(addr) & mask), prefix_len: len }
    }
}

impl std::fmt::Display for Cidr4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Typed handle on the pinned `hl_tunnel` (and the overlay counters).
pub struct TunnelMap {
    map: LpmTrie<MapData, [u8; 4], [u8; TUNNEL4_VALUE_LEN]>,
    stats: Option<PerCpuArray<MapData, [u8; HL_STAT_LEN]>>,
}

impl std::fmt::Debug for TunnelMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelMap").finish_non_exhaustive()
    }
}

fn op(op: &'static str) -> impl FnOnce(MapError) -> LbMapError {
    move |source| LbMapError::Op { map: MAP_TUNNEL, op, source }
}

fn open_pinned(dir: &Path, name: &'static str) -> Result<Map, LbMapError> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| LbMapError::Open { path: path.clone(), source })?;
    Map::from_map_data(data).map_err(|source| LbMapError::Open { path, source })
}

impl TunnelMap {
    /// Opens the map pinned under `pin_dir` (by a running or earlier agent).
    pub fn open(pin_dir: &Path) -> Result<Self, LbMapError> {
        let map = LpmTrie::try_from(open_pinned(pin_dir, MAP_TUNNEL)?).map_err(op("open"))?;
        let stats = open_pinned(pin_dir, MAP_OVL_STATS).ok().and_then(|m| PerCpuArray::try_from(m).ok());
        Ok(Self { map, stats })
    }

    pub fn upsert(&mut self, cidr: Cidr4, value: &Tunnel4Value) -> Result<(), LbMapError> {
        let key = Key::new(u32::from(cidr.prefix_len), cidr.addr.octets());
        self.map.insert(&key, value.to_bytes(), 0).map_err(op("insert"))
    }

    pub fn remove(&mut self, cidr: Cidr4) -> Result<(), LbMapError> {
        let key = Key::new(u32::from(cidr.prefix_len), cidr.addr.octets());
        match self.map.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(op("remove")(e)),
        }
    }

    /// Every entry, by CIDR.
    pub fn entries(&self) -> Result<BTreeMap<Cidr4, Tunnel4Value>, LbMapError> {
        self.map
            .iter()
            .map(|r| {
                r.map(|(k, v)| {
                    (Cidr4::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8), Tunnel4Value::from_bytes(&v))
                })
            })
            .collect::<Result<_, _>>()
            .map_err(op("iterate"))
    }

    /// Packets and bytes per overlay counter, summed over CPUs (empty if the map is missing).
    pub fn counters(&self) -> Result<Vec<(OvlCounter, u64, u64)>, LbMapError> {
        let Some(stats) = &self.stats else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for c in OvlCounter::ALL {
            let per_cpu = stats.get(&(c as u32), 0).map_err(|source| LbMapError::Op {
                map: MAP_OVL_STATS,
                op: "read",
                source,
            })?;
            let (mut p, mut b) = (0, 0);
            for v in per_cpu.iter() {
                let s = HlStat::from_bytes(v);
                p += s.packets;
                b += s.bytes;
            }
            out.push((c, p, b));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_match_c() {
        assert_eq!(OvlCounter::ALL.len(), crate::maps::OVL_COUNTERS as usize);
        for (i, c) in OvlCounter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn cidr_is_canonical() {
        assert_eq!(Cidr4::new(Ipv4Addr::new(10, 1, 2, 3), 24).to_string(), "10.1.2.0/24");
        assert_eq!(Cidr4::new(Ipv4Addr::new(10, 1, 2, 3), 0).to_string(), "0.0.0.0/0");
        assert_eq!(Cidr4::new(Ipv4Addr::new(10, 1, 2, 3), 40).to_string(), "10.1.2.3/32");
    }
}
