//! East-west service translation: loading `tc_svc.bpf.o`, attaching its two programs to pod
//! veths, and typed handles on its maps (`hl_ew4_*`), pinned next to the LB and overlay maps.
//!
//! ```text
//!   pod ─veth─▶ tc ingress: hl_svc_from_pod (first) ──TCX_NEXT──▶ hl_tc_overlay_tx (if any)
//!                 ClusterIP:port ─ conntrack ─ Maglev ─▶ DNAT to backend pod:targetPort
//!   pod ◀─veth── tc egress:  hl_svc_to_pod: backend:targetPort ─▶ ClusterIP:port (reply)
//! ```
//!
//! The ingress program goes first in the interface's TCX chain ([`LinkOrder::first`]) and hands
//! every packet on with `TCX_NEXT`, so the overlay (or, with no other program, the stack) sees
//! the translated packet. The maps use the LB's layouts ([`Lb4Key`], [`Lb4Service`],
//! [`Lb4Backend`], [`Ct4Key`], [`Ct4Entry`]) but are separate maps with their own ids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, HashOfMaps, Map, MapData, MapError, PerCpuArray};
use aya::programs::tc::TcAttachType;
use aya::programs::{LinkOrder, SchedClassifier};
use aya::{Ebpf, EbpfLoader};

use crate::lb::{CtTimeouts, LbMapError};
use crate::loader::{DatapathError, attach_tcx, is_on_bpffs, prog_err, program};
use crate::maps::{
    CT_F_CLOSING, CT4_ENTRY_LEN, CT4_KEY_LEN, Ct4Entry, Ct4Key, HL_STAT_LEN, HlStat, IPPROTO_TCP, LB4_BACKEND_LEN,
    LB4_KEY_LEN, LB4_SERVICE_LEN, Lb4Backend, Lb4Key, Lb4Service, MAGLEV_M, MaglevLut, MapBytes, SVC4_REV_VALUE_LEN,
    Svc4RevValue,
};

pub static TC_SVC_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_svc.bpf.o"));

/// tc ingress of a pod's host-side veth (traffic from the pod).
pub const PROG_SVC_FROM_POD: &str = "hl_svc_from_pod";
/// tc egress of a pod's host-side veth (traffic to the pod).
pub const PROG_SVC_TO_POD: &str = "hl_svc_to_pod";
pub const MAP_EW_SERVICES: &str = "hl_ew4_svc";
pub const MAP_EW_BACKENDS: &str = "hl_ew4_be";
pub const MAP_EW_MAGLEV: &str = "hl_ew4_maglev";
pub const MAP_EW_CT: &str = "hl_ew4_ct";
pub const MAP_EW_REV: &str = "hl_ew4_rev";
pub const MAP_EW_STATS: &str = "hl_ew_stats";

/// Kinds of pinned links (`links/<kind>-<ifname>`).
pub const LINK_FROM_POD: &str = "tc-svc-in";
pub const LINK_TO_POD: &str = "tc-svc-out";

/// Load-time settings of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIpConfig {
    pub pin_dir: PathBuf,
    /// Maglev flow-hash seed (`CFG_HASH_SEED`; the LB's, from the cluster's Maglev seed).
    pub hash_seed: u32,
}

/// The loaded object.
#[derive(Debug)]
pub struct ClusterIp {
    cfg: ClusterIpConfig,
    obj: Ebpf,
}

impl ClusterIp {
    /// Loads both programs, creating or reusing the pinned maps.
    pub fn load(cfg: ClusterIpConfig) -> Result<Self, DatapathError> {
        std::fs::create_dir_all(cfg.pin_dir.join("links"))
            .map_err(|source| DatapathError::PinDir { path: cfg.pin_dir.clone(), source })?;
        if !is_on_bpffs(&cfg.pin_dir) {
            return Err(DatapathError::NotBpffs(cfg.pin_dir.clone()));
        }
        let mut obj = EbpfLoader::new()
            .default_map_pin_directory(&cfg.pin_dir)
            .override_global("CFG_HASH_SEED", &cfg.hash_seed, true)
            .load(TC_SVC_OBJ)
            .map_err(|source| DatapathError::Load { object: "tc_svc.bpf.o", source: Box::new(source) })?;
        for name in [PROG_SVC_FROM_POD, PROG_SVC_TO_POD] {
            let p: &mut SchedClassifier = program(&mut obj, name)?;
            p.load().map_err(prog_err(name, "load (verifier)"))?;
        }
        Ok(Self { cfg, obj })
    }

    pub fn config(&self) -> &ClusterIpConfig {
        &self.cfg
    }

    pub fn prog_from_pod(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        program(&mut self.obj, PROG_SVC_FROM_POD)
    }

    pub fn prog_to_pod(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        program(&mut self.obj, PROG_SVC_TO_POD)
    }

    /// Where the link of `kind` on `ifname` is pinned.
    pub fn link_path(&self, kind: &str, ifname: &str) -> PathBuf {
        self.cfg.pin_dir.join("links").join(format!("{kind}-{ifname}"))
    }

    /// Attaches both programs to the pod interface `ifname` (pinned TCX links): ingress first in
    /// its chain, so it runs before the overlay; egress. An earlier run's links get these
    /// programs swapped in and keep their place. Returns how each was attached.
    pub fn attach(&mut self, ifname: &str) -> Result<(&'static str, &'static str), DatapathError> {
        let path = self.link_path(LINK_FROM_POD, ifname);
        let ingress = attach_tcx(
            self.prog_from_pod()?,
            PROG_SVC_FROM_POD,
            ifname,
            &path,
            TcAttachType::Ingress,
            LinkOrder::first(),
        )?;
        let path = self.link_path(LINK_TO_POD, ifname);
        let egress =
            attach_tcx(self.prog_to_pod()?, PROG_SVC_TO_POD, ifname, &path, TcAttachType::Egress, LinkOrder::first())?;
        Ok((ingress, egress))
    }

    /// Removes this object's pinned links whose interface is gone or that `keep(ifname)` rejects.
    pub fn prune_links(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        prune_svc_links(&self.cfg.pin_dir, keep)
    }

    /// Typed handles on the maps.
    pub fn maps(&self) -> Result<ClusterIpMaps, DatapathError> {
        Ok(ClusterIpMaps::open(&self.cfg.pin_dir)?)
    }
}

/// Removes the ClusterIP links pinned under `pin_dir/links` whose interface is gone (in this
/// network namespace) or that `keep(ifname)` rejects; unpinning the last reference detaches
/// the program. Returns `kind:ifname` of each link removed.
pub fn prune_svc_links(pin_dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut gone = Vec::new();
    let Ok(entries) = std::fs::read_dir(pin_dir.join("links")) else { return gone };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((kind, ifname)) = [LINK_FROM_POD, LINK_TO_POD]
            .iter()
            .find_map(|k| name.strip_prefix(k).and_then(|r| r.strip_prefix('-')).map(|i| (*k, i)))
        else {
            continue;
        };
        if Path::new("/sys/class/net").join(ifname).exists() && keep(ifname) {
            continue;
        }
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
    gone
}

/// The ClusterIP counters (`enum hl_ew_counter`), in map order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EwCounter {
    PassOther = 0,
    PassNoService,
    Dnat,
    CtHit,
    CtNew,
    DropNoBackend,
    DropRewrite,
    RevNat,
    PassNoRev,
}

impl EwCounter {
    pub const ALL: [EwCounter; 9] = [
        EwCounter::PassOther,
        EwCounter::PassNoService,
        EwCounter::Dnat,
        EwCounter::CtHit,
        EwCounter::CtNew,
        EwCounter::DropNoBackend,
        EwCounter::DropRewrite,
        EwCounter::RevNat,
        EwCounter::PassNoRev,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PassOther => "from_pod_not_translatable",
            Self::PassNoService => "from_pod_not_a_cluster_ip",
            Self::Dnat => "from_pod_translated",
            Self::CtHit => "conntrack_hit",
            Self::CtNew => "conntrack_new",
            Self::DropNoBackend => "dropped_no_backend",
            Self::DropRewrite => "dropped_rewrite_failed",
            Self::RevNat => "to_pod_reply_translated",
            Self::PassNoRev => "to_pod_untouched",
        }
    }
}

/// A reverse entry: a backend's reply (backend -> client, as a [`Ct4Key`]) and the ClusterIP it
/// is given as source.
pub type RevEntry = (Ct4Key, Svc4RevValue);

fn op(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> LbMapError {
    move |source| LbMapError::Op { map, op, source }
}

fn open_pinned(dir: &Path, name: &'static str) -> Result<Map, LbMapError> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| LbMapError::Open { path: path.clone(), source })?;
    Map::from_map_data(data).map_err(|source| LbMapError::Open { path, source })
}

fn absent_ok(r: Result<(), MapError>, map: &'static str, what: &'static str) -> Result<(), LbMapError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(op(map, what)(e)),
    }
}

/// The ClusterIP maps of one node (opened from their pins: the agent and the CLI use them).
pub struct ClusterIpMaps {
    services: HashMap<MapData, [u8; LB4_KEY_LEN], [u8; LB4_SERVICE_LEN]>,
    backends: Array<MapData, [u8; LB4_BACKEND_LEN]>,
    maglev: HashOfMaps<MapData, u32, Array<MapData, MaglevLut>>,
    ct: HashMap<MapData, [u8; CT4_KEY_LEN], [u8; CT4_ENTRY_LEN]>,
    rev: HashMap<MapData, [u8; CT4_KEY_LEN], [u8; SVC4_REV_VALUE_LEN]>,
    stats: PerCpuArray<MapData, [u8; HL_STAT_LEN]>,
}

impl std::fmt::Debug for ClusterIpMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIpMaps").finish_non_exhaustive()
    }
}

impl ClusterIpMaps {
    /// Opens the maps pinned under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, LbMapError> {
        let get = |name| open_pinned(pin_dir, name);
        Ok(Self {
            services: HashMap::try_from(get(MAP_EW_SERVICES)?).map_err(op(MAP_EW_SERVICES, "open"))?,
            backends: Array::try_from(get(MAP_EW_BACKENDS)?).map_err(op(MAP_EW_BACKENDS, "open"))?,
            maglev: HashOfMaps::try_from(get(MAP_EW_MAGLEV)?).map_err(op(MAP_EW_MAGLEV, "open"))?,
            ct: HashMap::try_from(get(MAP_EW_CT)?).map_err(op(MAP_EW_CT, "open"))?,
            rev: HashMap::try_from(get(MAP_EW_REV)?).map_err(op(MAP_EW_REV, "open"))?,
            stats: PerCpuArray::try_from(get(MAP_EW_STATS)?).map_err(op(MAP_EW_STATS, "open"))?,
        })
    }

    // ===== frontends =====

    pub fn upsert_service(&mut self, key: &Lb4Key, svc: &Lb4Service) -> Result<(), LbMapError> {
        self.services.insert(key.to_bytes(), svc.to_bytes(), 0).map_err(op(MAP_EW_SERVICES, "insert"))
    }

    pub fn remove_service(&mut self, key: &Lb4Key) -> Result<(), LbMapError> {
        absent_ok(self.services.remove(&key.to_bytes()), MAP_EW_SERVICES, "remove")
    }

    pub fn services(&self) -> Result<BTreeMap<Lb4Key, Lb4Service>, LbMapError> {
        self.services
            .iter()
            .map(|r| r.map(|(k, v)| (Lb4Key::from_bytes(&k), Lb4Service::from_bytes(&v))))
            .collect::<Result<_, _>>()
            .map_err(op(MAP_EW_SERVICES, "iterate"))
    }

    // ===== backends =====

    pub fn upsert_backend(&mut self, id: u32, be: &Lb4Backend) -> Result<(), LbMapError> {
        if be.addr == [0; 4] {
            return Err(LbMapError::Op {
                map: MAP_EW_BACKENDS,
                op: "insert",
                source: MapError::InvalidName { name: "backend address 0.0.0.0 marks an empty slot".into() },
            });
        }
        self.backends.set(id, be.to_bytes(), 0).map_err(op(MAP_EW_BACKENDS, "insert"))
    }

    /// Empties slot `id` (address 0 means empty).
    pub fn remove_backend(&mut self, id: u32) -> Result<(), LbMapError> {
        self.backends.set(id, [0u8; LB4_BACKEND_LEN], 0).map_err(op(MAP_EW_BACKENDS, "remove"))
    }

    /// The occupied backend slots.
    pub fn backends(&self) -> Result<BTreeMap<u32, Lb4Backend>, LbMapError> {
        let mut out = BTreeMap::new();
        for (i, r) in self.backends.iter().enumerate() {
            let b = Lb4Backend::from_bytes(&r.map_err(op(MAP_EW_BACKENDS, "iterate"))?);
            if b.addr != [0; 4] {
                out.insert(i as u32, b);
            }
        }
        Ok(out)
    }

    // ===== Maglev =====

    /// Installs a whole table for `svc_id` through a fresh inner map swapped in with one update.
    pub fn set_maglev(&mut self, svc_id: u32, table: &[u32]) -> Result<(), LbMapError> {
        assert_eq!(table.len(), MAGLEV_M, "Maglev table must have {MAGLEV_M} slots");
        let mut lut: Box<MaglevLut> = Box::new([0; MAGLEV_M]);
        lut.copy_from_slice(table);
        let mut inner: Array<MapData, MaglevLut> =
            Array::create(1, 0).map_err(op(MAP_EW_MAGLEV, "create inner map"))?;
        inner.set(0, lut, 0).map_err(op(MAP_EW_MAGLEV, "fill inner map"))?;
        self.maglev.insert(svc_id, &inner, 0).map_err(op(MAP_EW_MAGLEV, "swap inner map"))
    }

    pub fn remove_maglev(&mut self, svc_id: u32) -> Result<(), LbMapError> {
        absent_ok(self.maglev.remove(&svc_id), MAP_EW_MAGLEV, "remove")
    }

    /// The table installed for `svc_id`, if any.
    pub fn maglev(&self, svc_id: u32) -> Result<Option<Vec<u32>>, LbMapError> {
        let inner = match self.maglev.get(&svc_id, 0) {
            Ok(inner) => inner,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(op(MAP_EW_MAGLEV, "lookup")(e)),
        };
        let lut = inner.get(&0, 0).map_err(op(MAP_EW_MAGLEV, "read inner map"))?;
        Ok(Some(lut.to_vec()))
    }

    pub fn maglev_ids(&self) -> Result<Vec<u32>, LbMapError> {
        self.maglev.keys().collect::<Result<_, _>>().map_err(op(MAP_EW_MAGLEV, "iterate"))
    }

    // ===== conntrack and reverse entries =====

    pub fn ct_entries(&self) -> Result<Vec<(Ct4Key, Ct4Entry)>, LbMapError> {
        let mut out = Vec::new();
        for r in self.ct.iter() {
            match r {
                Ok((k, v)) => out.push((Ct4Key::from_bytes(&k), Ct4Entry::from_bytes(&v))),
                // An LRU entry evicted while we walk: the walk goes on from the next key.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(op(MAP_EW_CT, "iterate")(e)),
            }
        }
        Ok(out)
    }

    pub fn rev_entries(&self) -> Result<Vec<RevEntry>, LbMapError> {
        let mut out = Vec::new();
        for r in self.rev.iter() {
            match r {
                Ok((k, v)) => out.push((Ct4Key::from_bytes(&k), Svc4RevValue::from_bytes(&v))),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(op(MAP_EW_REV, "iterate")(e)),
            }
        }
        Ok(out)
    }

    /// Deletes conntrack entries idle longer than their timeout, each with its reverse entry.
    /// Then deletes reverse entries whose flow conntrack no longer has (evicted). Returns how
    /// many flows went.
    pub fn ct_expire(&mut self, now_ns: u64, t: &CtTimeouts) -> Result<usize, LbMapError> {
        // Backends by id as flows name them (one lookup each, not a walk of the whole array).
        let mut backends: std::collections::HashMap<u32, Option<Lb4Backend>> = std::collections::HashMap::new();
        let mut gone = 0;
        let mut live = std::collections::HashSet::new();
        for (k, e) in self.ct_entries()? {
            let timeout = if e.flags & CT_F_CLOSING != 0 {
                t.closing
            } else if k.proto == IPPROTO_TCP {
                t.tcp
            } else {
                t.other
            };
            let be = *backends.entry(e.backend_id).or_insert_with(|| {
                let b = self.backends.get(&e.backend_id, 0).ok().map(|raw| Lb4Backend::from_bytes(&raw));
                b.filter(|b| b.addr != [0; 4])
            });
            let rev_key = be.map(|b| Ct4Key {
                saddr: b.addr,
                daddr: k.saddr,
                sport: b.port,
                dport: k.sport,
                proto: k.proto,
                pad: [0; 3],
            });
            if now_ns.saturating_sub(e.last_seen_ns) > timeout.as_nanos() as u64 {
                absent_ok(self.ct.remove(&k.to_bytes()), MAP_EW_CT, "remove")?;
                if let Some(rk) = rev_key {
                    absent_ok(self.rev.remove(&rk.to_bytes()), MAP_EW_REV, "remove")?;
                }
                gone += 1;
            } else if let Some(rk) = rev_key {
                live.insert(rk.to_bytes());
            }
        }
        // Reverse entries whose flow conntrack no longer has (evicted from the LRU) go too; one
        // not seen in the walk above (a flow that started since) is looked up again first.
        for (k, _) in self.rev_entries()? {
            let raw = k.to_bytes();
            if !live.contains(&raw) && self.ct_of_rev(&k).is_none() {
                absent_ok(self.rev.remove(&raw), MAP_EW_REV, "remove")?;
            }
        }
        Ok(gone)
    }

    /// The conntrack entry a reverse entry belongs to, if conntrack still has it on that backend
    /// (what the datapath checks before it translates a reply).
    fn ct_of_rev(&self, rev: &Ct4Key) -> Option<Ct4Entry> {
        let v = Svc4RevValue::from_bytes(&self.rev.get(&rev.to_bytes(), 0).ok()?);
        let key =
            Ct4Key { saddr: rev.daddr, daddr: v.vip, sport: rev.dport, dport: v.vport, proto: rev.proto, pad: [0; 3] };
        let e = Ct4Entry::from_bytes(&self.ct.get(&key.to_bytes(), 0).ok()?);
        let be = Lb4Backend::from_bytes(&self.backends.get(&e.backend_id, 0).ok()?);
        (be.addr == rev.saddr && be.port == rev.sport).then_some(e)
    }

    // ===== counters =====

    /// Packets and bytes per counter, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(EwCounter, u64, u64)>, LbMapError> {
        let mut out = Vec::with_capacity(EwCounter::ALL.len());
        for c in EwCounter::ALL {
            let per_cpu = self.stats.get(&(c as u32), 0).map_err(op(MAP_EW_STATS, "read"))?;
            let (mut p, mut b) = (0u64, 0u64);
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
        assert_eq!(EwCounter::ALL.len(), crate::maps::EW_COUNTERS as usize);
        for (i, c) in EwCounter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
