//! Typed handles on the LB maps, opened from their pins (the agent and the CLI both use them) or
//! taken from a freshly loaded object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, HashOfMaps, Map, MapData, MapError, PerCpuArray};

use crate::maps::{
    CT_F_CLOSING, CT4_ENTRY_LEN, CT4_KEY_LEN, Counter, Ct4Entry, Ct4Key, HL_STAT_LEN, HlStat, IPPROTO_TCP,
    LB4_BACKEND_LEN, LB4_KEY_LEN, LB4_SERVICE_LEN, Lb4Backend, Lb4Key, Lb4Service, MAGLEV_M, MaglevLut, MapBytes,
    NAT4_REV_KEY_LEN, NAT4_REV_VAL_LEN, Nat4RevKey, Nat4RevVal,
};

pub const MAP_SERVICES: &str = "hl_lb4_svc";
pub const MAP_BACKENDS: &str = "hl_lb4_be";
pub const MAP_MAGLEV: &str = "hl_lb4_maglev";
pub const MAP_CT: &str = "hl_ct4";
pub const MAP_STATS: &str = "hl_stats";
pub const MAP_NAT_REV: &str = "hl_nat4_rev";

/// Errors from the LB maps, each naming the map and what was done.
#[derive(Debug, thiserror::Error)]
pub enum LbMapError {
    #[error("opening pinned map {path}: {source}")]
    Open { path: PathBuf, source: MapError },
    #[error("map {map}: {op}: {source}")]
    Op { map: &'static str, op: &'static str, source: MapError },
    #[error("map {0} missing from the BPF object")]
    Missing(&'static str),
}

fn op(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> LbMapError {
    move |source| LbMapError::Op { map, op, source }
}

/// How long an idle flow keeps its conntrack entry (Cilium's defaults for established TCP and
/// for everything else; a closing TCP flow goes quickly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtTimeouts {
    pub tcp: std::time::Duration,
    pub closing: std::time::Duration,
    pub other: std::time::Duration,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        Self {
            tcp: std::time::Duration::from_secs(21600),
            closing: std::time::Duration::from_secs(10),
            other: std::time::Duration::from_secs(60),
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock the datapath stamps conntrack entries with.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The LB maps of one node.
pub struct LbMaps {
    services: HashMap<MapData, [u8; LB4_KEY_LEN], [u8; LB4_SERVICE_LEN]>,
    backends: Array<MapData, [u8; LB4_BACKEND_LEN]>,
    maglev: HashOfMaps<MapData, u32, Array<MapData, MaglevLut>>,
    ct: HashMap<MapData, [u8; CT4_KEY_LEN], [u8; CT4_ENTRY_LEN]>,
    stats: PerCpuArray<MapData, [u8; HL_STAT_LEN]>,
    nat_rev: HashMap<MapData, [u8; NAT4_REV_KEY_LEN], [u8; NAT4_REV_VAL_LEN]>,
}

impl std::fmt::Debug for LbMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbMaps").finish_non_exhaustive()
    }
}

fn open_pinned(dir: &Path, name: &'static str) -> Result<Map, LbMapError> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| LbMapError::Open { path: path.clone(), source })?;
    Map::from_map_data(data).map_err(|source| LbMapError::Open { path, source })
}

impl LbMaps {
    /// Opens the maps pinned under `pin_dir` (by a running or earlier agent).
    pub fn open(pin_dir: &Path) -> Result<Self, LbMapError> {
        Self::from_maps(|name| open_pinned(pin_dir, name))
    }

    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, LbMapError> {
        Self::from_maps(|name| ebpf.take_map(name).ok_or(LbMapError::Missing(name)))
    }

    fn from_maps(mut get: impl FnMut(&'static str) -> Result<Map, LbMapError>) -> Result<Self, LbMapError> {
        Ok(Self {
            services: HashMap::try_from(get(MAP_SERVICES)?).map_err(op(MAP_SERVICES, "open"))?,
            backends: Array::try_from(get(MAP_BACKENDS)?).map_err(op(MAP_BACKENDS, "open"))?,
            maglev: HashOfMaps::try_from(get(MAP_MAGLEV)?).map_err(op(MAP_MAGLEV, "open"))?,
            ct: HashMap::try_from(get(MAP_CT)?).map_err(op(MAP_CT, "open"))?,
            stats: PerCpuArray::try_from(get(MAP_STATS)?).map_err(op(MAP_STATS, "open"))?,
            nat_rev: HashMap::try_from(get(MAP_NAT_REV)?).map_err(op(MAP_NAT_REV, "open"))?,
        })
    }

    // ===== services =====

    pub fn upsert_service(&mut self, key: &Lb4Key, svc: &Lb4Service) -> Result<(), LbMapError> {
        self.services.insert(key.to_bytes(), svc.to_bytes(), 0).map_err(op(MAP_SERVICES, "insert"))
    }

    pub fn remove_service(&mut self, key: &Lb4Key) -> Result<(), LbMapError> {
        match self.services.remove(&key.to_bytes()) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(op(MAP_SERVICES, "remove")(e)),
        }
    }

    pub fn services(&self) -> Result<BTreeMap<Lb4Key, Lb4Service>, LbMapError> {
        self.services
            .iter()
            .map(|r| r.map(|(k, v)| (Lb4Key::from_bytes(&k), Lb4Service::from_bytes(&v))))
            .collect::<Result<_, _>>()
            .map_err(op(MAP_SERVICES, "iterate"))
    }

    // ===== backends =====

    pub fn upsert_backend(&mut self, id: u32, be: &Lb4Backend) -> Result<(), LbMapError> {
        if be.addr == [0; 4] {
            return Err(LbMapError::Op {
                map: MAP_BACKENDS,
                op: "insert",
                source: MapError::InvalidName { name: "backend address 0.0.0.0 marks an empty slot".into() },
            });
        }
        self.backends.set(id, be.to_bytes(), 0).map_err(op(MAP_BACKENDS, "insert"))
    }

    /// Empties slot `id` (an array slot cannot be deleted; address 0 means empty).
    pub fn remove_backend(&mut self, id: u32) -> Result<(), LbMapError> {
        match self.backends.set(id, [0u8; LB4_BACKEND_LEN], 0) {
            Ok(()) => Ok(()),
            Err(e) => Err(op(MAP_BACKENDS, "remove")(e)),
        }
    }

    /// The occupied backend slots.
    pub fn backends(&self) -> Result<BTreeMap<u32, Lb4Backend>, LbMapError> {
        let mut out = BTreeMap::new();
        for (i, r) in self.backends.iter().enumerate() {
            let b = Lb4Backend::from_bytes(&r.map_err(op(MAP_BACKENDS, "iterate"))?);
            if b.addr != [0; 4] {
                out.insert(i as u32, b);
            }
        }
        Ok(out)
    }

    // ===== Maglev =====

    /// Installs a whole table for `svc_id`: a fresh inner map, filled, then swapped in with one
    /// update, so packets see the old table or the new one and never a mix.
    pub fn set_maglev(&mut self, svc_id: u32, table: &[u32]) -> Result<(), LbMapError> {
        assert_eq!(table.len(), MAGLEV_M, "Maglev table must have {MAGLEV_M} slots");
        let mut lut: Box<MaglevLut> = Box::new([0; MAGLEV_M]);
        lut.copy_from_slice(table);
        let mut inner: Array<MapData, MaglevLut> = Array::create(1, 0).map_err(op(MAP_MAGLEV, "create inner map"))?;
        inner.set(0, lut, 0).map_err(op(MAP_MAGLEV, "fill inner map"))?;
        self.maglev.insert(svc_id, &inner, 0).map_err(op(MAP_MAGLEV, "swap inner map"))
    }

    pub fn remove_maglev(&mut self, svc_id: u32) -> Result<(), LbMapError> {
        match self.maglev.remove(&svc_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(op(MAP_MAGLEV, "remove")(e)),
        }
    }

    /// The table installed for `svc_id`, if any.
    pub fn maglev(&self, svc_id: u32) -> Result<Option<Vec<u32>>, LbMapError> {
        let inner = match self.maglev.get(&svc_id, 0) {
            Ok(inner) => inner,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(op(MAP_MAGLEV, "lookup")(e)),
        };
        let lut = inner.get(&0, 0).map_err(op(MAP_MAGLEV, "read inner map"))?;
        Ok(Some(lut.to_vec()))
    }

    pub fn maglev_ids(&self) -> Result<Vec<u32>, LbMapError> {
        self.maglev.keys().collect::<Result<_, _>>().map_err(op(MAP_MAGLEV, "iterate"))
    }

    // ===== conntrack =====

    pub fn ct_entries(&self) -> Result<Vec<(Ct4Key, Ct4Entry)>, LbMapError> {
        let mut out = Vec::new();
        for r in self.ct.iter() {
            match r {
                Ok((k, v)) => out.push((Ct4Key::from_bytes(&k), Ct4Entry::from_bytes(&v))),
                // An LRU entry evicted while we walk: the walk goes on from the next key.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(op(MAP_CT, "iterate")(e)),
            }
        }
        Ok(out)
    }

    /// Deletes conntrack entries idle longer than their timeout. Returns how many went.
    pub fn ct_expire(&mut self, now_ns: u64, t: &CtTimeouts) -> Result<usize, LbMapError> {
        let mut gone = 0;
        let mut rev_index = None;
        for (k, e) in self.ct_entries()? {
            let timeout = if e.flags & CT_F_CLOSING != 0 {
                t.closing
            } else if k.proto == IPPROTO_TCP {
                t.tcp
            } else {
                t.other
            };
            if now_ns.saturating_sub(e.last_seen_ns) > timeout.as_nanos() as u64 {
                match self.ct.remove(&k.to_bytes()) {
                    Ok(()) | Err(MapError::KeyNotFound) => gone += 1,
                    Err(e) => return Err(op(MAP_CT, "remove")(e)),
                }
                // Its SNAT reverse entry frees the port.
                if e.nat_port != [0, 0]
                    && let Ok(b) = self.backends.get(&e.backend_id, 0)
                {
                    let b = Lb4Backend::from_bytes(&b);
                    // The node address is not in the conntrack entry: match on the rest (one
                    // index of the reverse map per call, built on first need).
                    let index = rev_index.get_or_insert_with(|| {
                        self.nat_rev
                            .keys()
                            .filter_map(Result::ok)
                            .map(|raw| {
                                let k = Nat4RevKey::from_bytes(&raw);
                                ((k.backend, k.bport, k.nport, k.proto), raw)
                            })
                            .collect::<std::collections::HashMap<_, _>>()
                    });
                    if let Some(raw) = index.remove(&(b.addr, b.port, e.nat_port, k.proto)) {
                        let _ = self.nat_rev.remove(&raw);
                    }
                }
            }
        }
        Ok(gone)
    }

    pub fn ct_clear(&mut self) -> Result<usize, LbMapError> {
        let keys: Vec<_> = self.ct.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = self.ct.remove(k);
        }
        Ok(keys.len())
    }

    /// SNAT reverse translations: (backend reply key, client flow).
    pub fn nat_entries(&self) -> Result<Vec<(Nat4RevKey, Nat4RevVal)>, LbMapError> {
        let mut out = Vec::new();
        for r in self.nat_rev.iter() {
            match r {
                Ok((k, v)) => out.push((Nat4RevKey::from_bytes(&k), Nat4RevVal::from_bytes(&v))),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(op(MAP_NAT_REV, "iterate")(e)),
            }
        }
        Ok(out)
    }

    // ===== counters =====

    /// Each counter summed over CPUs: (counter, packets, bytes).
    pub fn counters(&self) -> Result<Vec<(Counter, u64, u64)>, LbMapError> {
        let mut out = Vec::with_capacity(Counter::ALL.len());
        for c in Counter::ALL {
            let per_cpu = self.stats.get(&(c as u32), 0).map_err(op(MAP_STATS, "read"))?;
            let (mut p, mut b) = (0u64, 0u64);
            for v in per_cpu.iter() {
                let s = HlStat::from_bytes(v);
                p += s.packets;
                b += s.bytes;
            }
            out.push((c, p, b));
        }
        // The datapath does not count receptions (a lookup per packet saved): every packet ends
        // in exactly one pass/drop/forward counter, so their sum is what was received.
        let (mut p, mut b) = (0, 0);
        for (c, cp, cb) in &out {
            if c.is_outcome() {
                p += cp;
                b += cb;
            }
        }
        out[Counter::Rx as usize] = (Counter::Rx, p, b);
        Ok(out)
    }
}
