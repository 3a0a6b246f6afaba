//! Typed handles on the IPv6 LB maps (`hl_lb6_svc`, `hl_lb6_be`, `hl_ct6`, `hl_nat6_rev`), next to
//! [`crate::lb::LbMaps`]. What does not depend on the family stays there: the Maglev tables (one
//! outer map for both families, keyed by service id; the agent hands out service and backend ids
//! from one space) and the counters.

use std::collections::BTreeMap;
use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, MapError};

use crate::lb::{CtTimeouts, LbMapError};
use crate::maps::{
    CT_F_CLOSING, CT4_ENTRY_LEN, CT6_KEY_LEN, Ct4Entry, Ct6Key, IPPROTO_TCP, LB4_SERVICE_LEN, LB6_BACKEND_LEN,
    LB6_KEY_LEN, Lb4Service, Lb6Backend, Lb6Key, MapBytes, NAT6_REV_KEY_LEN, NAT6_REV_VAL_LEN, Nat6RevKey, Nat6RevVal,
};

pub const MAP_SERVICES6: &str = "hl_lb6_svc";
pub const MAP_BACKENDS6: &str = "hl_lb6_be";
pub const MAP_CT6: &str = "hl_ct6";
pub const MAP_NAT6_REV: &str = "hl_nat6_rev";

fn op(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> LbMapError {
    move |source| LbMapError::Op { map, op, source }
}

fn open_pinned(dir: &Path, name: &'static str) -> Result<Map, LbMapError> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| LbMapError::Open { path: path.clone(), source })?;
    Map::from_map_data(data).map_err(|source| LbMapError::Open { path, source })
}

/// The IPv6 LB maps of one node.
pub struct Lb6Maps {
    services: HashMap<MapData, [u8; LB6_KEY_LEN], [u8; LB4_SERVICE_LEN]>,
    backends: Array<MapData, [u8; LB6_BACKEND_LEN]>,
    ct: HashMap<MapData, [u8; CT6_KEY_LEN], [u8; CT4_ENTRY_LEN]>,
    nat_rev: HashMap<MapData, [u8; NAT6_REV_KEY_LEN], [u8; NAT6_REV_VAL_LEN]>,
}

impl std::fmt::Debug for Lb6Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lb6Maps").finish_non_exhaustive()
    }
}

impl Lb6Maps {
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
            services: HashMap::try_from(get(MAP_SERVICES6)?).map_err(op(MAP_SERVICES6, "open"))?,
            backends: Array::try_from(get(MAP_BACKENDS6)?).map_err(op(MAP_BACKENDS6, "open"))?,
            ct: HashMap::try_from(get(MAP_CT6)?).map_err(op(MAP_CT6, "open"))?,
            nat_rev: HashMap::try_from(get(MAP_NAT6_REV)?).map_err(op(MAP_NAT6_REV, "open"))?,
        })
    }

    // ===== services =====

    pub fn upsert_service(&mut self, key: &Lb6Key, svc: &Lb4Service) -> Result<(), LbMapError> {
        self.services.insert(key.to_bytes(), svc.to_bytes(), 0).map_err(op(MAP_SERVICES6, "insert"))
    }

    pub fn remove_service(&mut self, key: &Lb6Key) -> Result<(), LbMapError> {
        match self.services.remove(&key.to_bytes()) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(op(MAP_SERVICES6, "remove")(e)),
        }
    }

    pub fn services(&self) -> Result<BTreeMap<Lb6Key, Lb4Service>, LbMapError> {
        self.services
            .iter()
            .map(|r| r.map(|(k, v)| (Lb6Key::from_bytes(&k), Lb4Service::from_bytes(&v))))
            .collect::<Result<_, _>>()
            .map_err(op(MAP_SERVICES6, "iterate"))
    }

    // ===== backends =====

    pub fn upsert_backend(&mut self, id: u32, be: &Lb6Backend) -> Result<(), LbMapError> {
        if be.addr == [0; 16] {
            return Err(LbMapError::Op {
                map: MAP_BACKENDS6,
                op: "insert",
                source: MapError::InvalidName { name: "backend address :: marks an empty slot".into() },
            });
        }
        self.backends.set(id, be.to_bytes(), 0).map_err(op(MAP_BACKENDS6, "insert"))
    }

    /// Empties slot `id` (address :: means empty).
    pub fn remove_backend(&mut self, id: u32) -> Result<(), LbMapError> {
        self.backends.set(id, [0u8; LB6_BACKEND_LEN], 0).map_err(op(MAP_BACKENDS6, "remove"))
    }

    /// The occupied backend slots.
    pub fn backends(&self) -> Result<BTreeMap<u32, Lb6Backend>, LbMapError> {
        let mut out = BTreeMap::new();
        for (i, r) in self.backends.iter().enumerate() {
            let b = Lb6Backend::from_bytes(&r.map_err(op(MAP_BACKENDS6, "iterate"))?);
            if b.addr != [0; 16] {
                out.insert(i as u32, b);
            }
        }
        Ok(out)
    }

    // ===== conntrack =====

    pub fn ct_entries(&self) -> Result<Vec<(Ct6Key, Ct4Entry)>, LbMapError> {
        let mut out = Vec::new();
        for r in self.ct.iter() {
            match r {
                Ok((k, v)) => out.push((Ct6Key::from_bytes(&k), Ct4Entry::from_bytes(&v))),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(op(MAP_CT6, "iterate")(e)),
            }
        }
        Ok(out)
    }

    /// Deletes conntrack entries idle longer than their timeout, and the SNAT reverse entries of
    /// the flows that go (as [`crate::lb::LbMaps::ct_expire`]). Returns how many flows went.
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
            if now_ns.saturating_sub(e.last_seen_ns) <= timeout.as_nanos() as u64 {
                continue;
            }
            match self.ct.remove(&k.to_bytes()) {
                Ok(()) | Err(MapError::KeyNotFound) => gone += 1,
                Err(e) => return Err(op(MAP_CT6, "remove")(e)),
            }
            if e.nat_port != [0, 0]
                && let Ok(b) = self.backends.get(&e.backend_id, 0)
            {
                let b = Lb6Backend::from_bytes(&b);
                let index = rev_index.get_or_insert_with(|| {
                    self.nat_rev
                        .keys()
                        .filter_map(Result::ok)
                        .map(|raw| {
                            let k = Nat6RevKey::from_bytes(&raw);
                            ((k.backend, k.bport, k.nport, k.proto), raw)
                        })
                        .collect::<std::collections::HashMap<_, _>>()
                });
                if let Some(raw) = index.remove(&(b.addr, b.port, e.nat_port, k.proto)) {
                    let _ = self.nat_rev.remove(&raw);
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
    pub fn nat_entries(&self) -> Result<Vec<(Nat6RevKey, Nat6RevVal)>, LbMapError> {
        let mut out = Vec::new();
        for r in self.nat_rev.iter() {
            match r {
                Ok((k, v)) => out.push((Nat6RevKey::from_bytes(&k), Nat6RevVal::from_bytes(&v))),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(op(MAP_NAT6_REV, "iterate")(e)),
            }
        }
        Ok(out)
    }
}
