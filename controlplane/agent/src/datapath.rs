//! The eBPF datapath in the agent: Services with LoadBalancer/External IPs and their ready
//! EndpointSlice addresses become LB map entries (frontends, backends, one Maglev table per
//! service port), diffed against what the maps hold so a restart or an unrelated change touches
//! nothing that is already right.
//!
//! IPv6 LoadBalancer IPs and ExternalIPs become IPv6 frontends with the service's IPv6 endpoints
//! as backends (their own maps, `hl_lb6_*`); a dual-stack service port has one Maglev table per
//! family, under two service ids from the one id space both families share (as do backend ids).
//!
//! Ids are node-local and stable: a frontend keeps its service id and a backend address keeps its
//! backend id for as long as they exist (restarts included, since ids are read back from the
//! pinned maps). A backend that leaves a service drains: it leaves the Maglev table at once (no new
//! flows) but its backend entry stays while conntrack still has flows on it, so established
//! connections end where they started.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halyard_datapath::lb::LbMaps;
use halyard_datapath::lb6::Lb6Maps;
use halyard_datapath::loader::{Datapath, DatapathConfig};
use halyard_datapath::maglev::{L4Proto, MaglevBackend, MaglevSeed, build_table};
use halyard_datapath::maps::{
    ForwardingMode, IPPROTO_TCP, IPPROTO_UDP, Lb4Backend, Lb4Key, Lb4Service, Lb6Backend, Lb6Key, MAGLEV_M,
};
use halyard_model::{Model, Protocol, TargetPort};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::reconcile::Snapshot;

/// Datapath settings from the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathSettings {
    /// Interfaces the XDP load balancer runs on (empty: no LB on this node).
    pub lb_interfaces: Vec<String>,
    /// Interfaces where DSR packets for local backends are decapsulated.
    pub decap_interfaces: Vec<String>,
    pub dispatch: ForwardingMode,
    pub lb_mode: LbMode,
    /// Run the load balancer at tc ingress instead of XDP (`--bpf-lb-acceleration disabled`).
    pub lb_at_tc: bool,
    pub pin_dir: PathBuf,
    pub node_ipv4: Option<Ipv4Addr>,
    /// This node's IPv6 address (`--node-ipv6`, else the Node's IPv6 InternalIP): needed for IPv6
    /// frontends (outer source of DSR, SNAT address).
    pub node_ipv6: Option<Ipv6Addr>,
    pub seed: MaglevSeed,
    /// Names of services and backends, for `halyard bpf` (the maps hold only ids).
    pub names_file: PathBuf,
}

impl DatapathSettings {
    pub fn enabled(&self) -> bool {
        !self.lb_interfaces.is_empty() || !self.decap_interfaces.is_empty()
    }
}

/// How frontends forward (`--lb-mode`; Cilium's `loadBalancer.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbMode {
    /// Direct server return with the configured dispatch (Geneve, IPIP or the IPv4 option).
    Dsr,
    /// DNAT + SNAT through this node.
    Snat,
    /// DSR for TCP, SNAT for UDP (no MTU change for UDP).
    Hybrid,
}

impl LbMode {
    pub fn forwarding(self, dispatch: ForwardingMode, proto: u8) -> ForwardingMode {
        match (self, proto) {
            (LbMode::Dsr, _) => dispatch,
            (LbMode::Snat, _) => ForwardingMode::Snat,
            (LbMode::Hybrid, IPPROTO_UDP) => ForwardingMode::Snat,
            (LbMode::Hybrid, _) => dispatch,
        }
    }
}

/// One load-balanced service port: what a Maglev table is built for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unit {
    pub service: String,
    pub port: u16,
    pub proto: u8,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = if self.proto == IPPROTO_UDP { "UDP" } else { "TCP" };
        write!(f, "{}:{}/{}", self.service, self.port, p)
    }
}

/// What the maps should hold, without ids.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Frontend (VIP, port, proto) -> unit.
    pub frontends: BTreeMap<Lb4Key, Unit>,
    /// Unit -> its backends (address, port), sorted.
    pub units: BTreeMap<Unit, BTreeSet<(Ipv4Addr, u16)>>,
    /// Services skipped, with the reason (shown in logs).
    pub skipped: Vec<String>,
    /// IPv6 frontends ([VIP], port, proto) -> unit: the service's IPv6 LoadBalancer IPs and
    /// ExternalIPs.
    pub frontends6: BTreeMap<Lb6Key, Unit>,
    /// Unit -> its IPv6 backends, for the units that have IPv6 frontends.
    pub units6: BTreeMap<Unit, BTreeSet<(Ipv6Addr, u16)>>,
}

fn proto_num(p: Protocol) -> Option<u8> {
    match p {
        Protocol::Tcp => Some(IPPROTO_TCP),
        Protocol::Udp => Some(IPPROTO_UDP),
        Protocol::Sctp => None,
    }
}

/// Derives the desired LB state from a snapshot: LoadBalancer IPs assigned by LB-IPAM, plus
/// `spec.externalIPs`, for every TCP/UDP port; backends are the ready IPv4 endpoints of the
/// service's EndpointSlices, on the port the slice gives for the service port's name. With
/// `externalTrafficPolicy: Local` only the endpoints on `node` (their `nodeName`) are used, and
/// no remote-cluster ones: as in Cilium, such a service has no backends (its traffic is dropped)
/// on a node without a local endpoint, which is why only nodes with one announce it.
pub fn desired(snap: &Snapshot, node: &str, mesh: Option<&crate::clustermesh::MeshState>) -> Desired {
    desired_from(
        &snap.model,
        node,
        |key| snap.lb.services.get(key).map(|s| s.ips.iter().map(|a| a.ip).collect()).unwrap_or_default(),
        |ns, name, port, proto| {
            mesh.map(|m| {
                crate::clustermesh::remote_backends(m, ns, name, port, proto)
                    .into_iter()
                    .map(|(_, a, p)| (a, p))
                    .collect()
            })
            .unwrap_or_default()
        },
    )
}

pub fn desired_from(
    model: &Model,
    node: &str,
    lb_ips: impl Fn(&halyard_ipam::ServiceKey) -> Vec<IpAddr>,
    remote: impl Fn(&str, &str, &str, &str) -> Vec<(Ipv4Addr, u16)>,
) -> Desired {
    let mut out = Desired::default();
    for svc in model.services.values() {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let key = halyard_ipam::ServiceKey::new(ns, svc.metadata.name.clone());
        let mut vips: Vec<Ipv4Addr> = lb_ips(&key)
            .into_iter()
            .chain(svc.spec.external_ips.iter().copied())
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        vips.sort();
        vips.dedup();
        if vips.is_empty() {
            continue;
        }
        let slices: Vec<_> = model.endpoint_slices_for(&key).collect();
        let local_only = svc.spec.external_traffic_policy == Some(halyard_model::TrafficPolicy::Local);
        for sp in &svc.spec.ports {
            let Some(proto) = proto_num(sp.protocol) else {
                out.skipped.push(format!("{key}: port {} is SCTP, which the datapath does not balance", sp.port));
                continue;
            };
            let unit = Unit { service: key.to_string(), port: sp.port, proto };
            let only_on = local_only.then_some(node);
            let mut backends = ready_backends(&slices, halyard_model::AddressType::IPv4, sp, only_on, v4);
            if local_only && backends.is_empty() {
                out.skipped.push(format!(
                    "{key}: port {}: externalTrafficPolicy Local and no ready endpoint on this node: no backends",
                    sp.port
                ));
            }
            if is_global(svc) && !local_only {
                let pname = sp.name.as_deref().unwrap_or("");
                let pstr = if proto == IPPROTO_UDP { "UDP" } else { "TCP" };
                let local: Vec<(Ipv4Addr, u16)> = backends.iter().copied().collect();
                let remote = remote(ns, &svc.metadata.name, pname, pstr);
                let affinity = svc.metadata.annotations.get(crate::clustermesh::AFFINITY_ANNOTATION);
                backends = crate::clustermesh::merge_by_affinity(affinity.map(String::as_str), &local, &remote)
                    .into_iter()
                    .collect();
            }
            for vip in &vips {
                out.frontends.insert(Lb4Key::new(*vip, sp.port, proto), unit.clone());
            }
            out.units.insert(unit, backends);
        }
    }
    desired6_into(model, node, &lb_ips, &mut out);
    out
}

/// The port an EndpointSlice gives for service port `sp`: the slice names its ports after the
/// service's, and an unnamed single port matches the unnamed service port.
fn slice_port(slice: &halyard_model::EndpointSlice, sp: &halyard_model::ServicePort) -> Option<u16> {
    slice.ports.iter().find(|p| p.name == sp.name && p.protocol == sp.protocol).and_then(|p| p.port).or(
        match sp.target_port() {
            TargetPort::Number(n) => Some(n),
            TargetPort::Name(_) => None,
        },
    )
}

/// The ready endpoints of `sp` in the slices of one address family, as (address, port):
/// `pick` keeps the addresses of that family. With `only_on` set, only endpoints on that node
/// (the `Local` traffic policies).
pub(crate) fn ready_backends<A: Ord>(
    slices: &[&halyard_model::EndpointSlice],
    family: halyard_model::AddressType,
    sp: &halyard_model::ServicePort,
    only_on: Option<&str>,
    pick: impl Fn(IpAddr) -> Option<A>,
) -> BTreeSet<(A, u16)> {
    let mut out = BTreeSet::new();
    for slice in slices.iter().filter(|s| s.address_type == family) {
        let Some(port) = slice_port(slice, sp) else { continue };
        for ep in &slice.endpoints {
            if ep.conditions.ready == Some(false) || only_on.is_some_and(|n| ep.node_name.as_deref() != Some(n)) {
                continue;
            }
            out.extend(ep.ip_addresses().filter_map(&pick).map(|a| (a, port)));
        }
    }
    out
}

pub(crate) fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn v6(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

/// The IPv6 half of [`desired_from`]: IPv6 LoadBalancer IPs and ExternalIPs become frontends,
/// the ready endpoints of the service's IPv6 EndpointSlices their backends, with the same port
/// and `externalTrafficPolicy` rules. Remote clusters' backends are IPv4 only (ClusterMesh has no
/// IPv6 backends yet), so an IPv6 frontend gets this cluster's backends.
fn desired6_into(
    model: &Model,
    node: &str,
    lb_ips: &impl Fn(&halyard_ipam::ServiceKey) -> Vec<IpAddr>,
    out: &mut Desired,
) {
    for svc in model.services.values() {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let key = halyard_ipam::ServiceKey::new(ns, svc.metadata.name.clone());
        let mut vips: Vec<Ipv6Addr> = lb_ips(&key)
            .into_iter()
            .chain(svc.spec.external_ips.iter().copied())
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            })
            .collect();
        vips.sort();
        vips.dedup();
        if vips.is_empty() {
            continue;
        }
        let slices: Vec<_> = model.endpoint_slices_for(&key).collect();
        let local_only = svc.spec.external_traffic_policy == Some(halyard_model::TrafficPolicy::Local);
        for sp in &svc.spec.ports {
            let Some(proto) = proto_num(sp.protocol) else {
                out.skipped.push(format!("{key}: port {} is SCTP, which the datapath does not balance", sp.port));
                continue;
            };
            let unit = Unit { service: key.to_string(), port: sp.port, proto };
            let only_on = local_only.then_some(node);
            let backends = ready_backends(&slices, halyard_model::AddressType::IPv6, sp, only_on, v6);
            if backends.is_empty() {
                out.skipped.push(format!(
                    "{key}: port {}: IPv6 frontends {vips:?} and no ready IPv6 endpoint{}: no backends",
                    sp.port,
                    if local_only { " on this node (externalTrafficPolicy Local)" } else { "" }
                ));
            }
            for vip in &vips {
                out.frontends6.insert(Lb6Key::new(*vip, sp.port, proto), unit.clone());
            }
            out.units6.insert(unit, backends);
        }
    }
}

/// A service shared across the mesh (`service.cilium.io/global`, or the legacy
/// `io.cilium/global-service`).
fn is_global(svc: &halyard_model::Service) -> bool {
    ["service.cilium.io/global", "io.cilium/global-service"]
        .iter()
        .any(|k| svc.metadata.annotations.get(*k).is_some_and(|v| v.eq_ignore_ascii_case("true")))
}

/// Names for `halyard bpf`, written next to the agent's state.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Names {
    pub services: BTreeMap<u32, Unit>,
    pub backends: BTreeMap<u32, String>,
    pub draining: BTreeSet<u32>,
    pub dispatch: String,
    pub interfaces: Vec<String>,
}

/// The agent's view of what it wrote, rebuilt from the maps at start.
#[derive(Debug, Default)]
struct Applied {
    frontends: BTreeMap<Lb4Key, Lb4Service>,
    unit_ids: BTreeMap<Unit, u32>,
    backend_ids: BTreeMap<(Ipv4Addr, u16), u32>,
    backends: BTreeMap<u32, Lb4Backend>,
    tables: BTreeMap<u32, Vec<u32>>,
    draining: BTreeSet<u32>,
    frontends6: BTreeMap<Lb6Key, Lb4Service>,
    /// IPv6 units' service ids (their own tables: a dual-stack unit has one id per family).
    unit_ids6: BTreeMap<Unit, u32>,
    backend_ids6: BTreeMap<(Ipv6Addr, u16), u32>,
    backends6: BTreeMap<u32, Lb6Backend>,
}

/// Counts of what one apply changed (all zero when nothing needed doing).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub frontends_written: usize,
    pub frontends_removed: usize,
    pub backends_written: usize,
    pub backends_removed: usize,
    pub tables_written: usize,
    pub tables_removed: usize,
}

impl ApplyStats {
    pub fn is_noop(&self) -> bool {
        *self == Self::default()
    }
}

/// Drives the LB maps towards [`Desired`].
pub struct LbReconciler {
    maps: LbMaps,
    /// The IPv6 maps (None: IPv6 frontends are not programmed).
    maps6: Option<Lb6Maps>,
    applied: Applied,
    mode: ForwardingMode,
    lb_mode: LbMode,
    seed: MaglevSeed,
}

impl std::fmt::Debug for LbReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbReconciler").field("mode", &self.mode).finish_non_exhaustive()
    }
}

fn lowest_free(used: impl Iterator<Item = u32>) -> u32 {
    let used: BTreeSet<u32> = used.collect();
    (1..).find(|i| !used.contains(i)).unwrap_or(1)
}

impl LbReconciler {
    /// Reads back what earlier runs left in the (pinned) maps, IPv6 ones included when given.
    pub fn new(
        maps: LbMaps,
        maps6: Option<Lb6Maps>,
        mode: ForwardingMode,
        lb_mode: LbMode,
        seed: MaglevSeed,
        names: Option<Names>,
    ) -> anyhow::Result<Self> {
        let mut applied = Applied { frontends: maps.services()?, backends: maps.backends()?, ..Default::default() };
        for (id, be) in &applied.backends {
            applied.backend_ids.insert((be.addr(), be.port()), *id);
        }
        if let Some(m6) = &maps6 {
            applied.frontends6 = m6.services()?;
            applied.backends6 = m6.backends()?;
            for (id, be) in &applied.backends6 {
                applied.backend_ids6.insert((be.addr(), be.port()), *id);
            }
        }
        for id in maps.maglev_ids()? {
            if let Some(t) = maps.maglev(id)? {
                applied.tables.insert(id, t);
            }
        }
        // Units back from the names file; a frontend whose unit is unknown is re-keyed below.
        if let Some(n) = names {
            for (id, unit) in n.services {
                if applied.frontends.values().any(|s| s.svc_id == id) {
                    applied.unit_ids.insert(unit, id);
                } else if applied.frontends6.values().any(|s| s.svc_id == id) {
                    applied.unit_ids6.insert(unit, id);
                }
            }
            applied.draining = n
                .draining
                .into_iter()
                .filter(|id| applied.backends.contains_key(id) || applied.backends6.contains_key(id))
                .collect();
        }
        Ok(Self { maps, maps6, applied, mode, lb_mode, seed })
    }

    /// Makes the maps match `want`. Order: backends, tables, frontends, then removals, so a
    /// packet never finds a frontend whose table or backends are missing.
    pub fn apply(&mut self, want: &Desired) -> anyhow::Result<ApplyStats> {
        let mut st = ApplyStats::default();
        // Ids for units (stable: from the frontends the maps hold, else the lowest free).
        for (fe, unit) in &want.frontends {
            if !self.applied.unit_ids.contains_key(unit)
                && let Some(svc) = self.applied.frontends.get(fe)
                && !self.applied.unit_ids.values().chain(self.applied.unit_ids6.values()).any(|id| *id == svc.svc_id)
            {
                self.applied.unit_ids.insert(unit.clone(), svc.svc_id);
            }
        }
        // IPv6 units the same way, before any new id is handed out (one id space).
        let v6 = self.maps6.is_some();
        let (frontends6, units6) =
            if v6 { (&want.frontends6, &want.units6) } else { (&BTreeMap::new(), &BTreeMap::new()) };
        for (fe, unit) in frontends6 {
            if !self.applied.unit_ids6.contains_key(unit)
                && let Some(svc) = self.applied.frontends6.get(fe)
                && !self.applied.unit_ids.values().chain(self.applied.unit_ids6.values()).any(|id| *id == svc.svc_id)
            {
                self.applied.unit_ids6.insert(unit.clone(), svc.svc_id);
            }
        }
        self.applied.unit_ids.retain(|u, _| want.units.contains_key(u));
        self.applied.unit_ids6.retain(|u, _| units6.contains_key(u));
        // Not yet removed IPv6 frontends keep their ids until they go (below).
        let held6: BTreeSet<u32> = self.applied.frontends6.values().map(|s| s.svc_id).collect();
        for unit in want.units.keys() {
            if !self.applied.unit_ids.contains_key(unit) {
                let id = lowest_free(
                    self.applied.unit_ids.values().chain(self.applied.unit_ids6.values()).chain(held6.iter()).copied(),
                );
                self.applied.unit_ids.insert(unit.clone(), id);
            }
        }
        for unit in units6.keys() {
            if !self.applied.unit_ids6.contains_key(unit) {
                let held4 = self.applied.frontends.values().map(|s| s.svc_id);
                let id = lowest_free(
                    self.applied.unit_ids.values().chain(self.applied.unit_ids6.values()).copied().chain(held4),
                );
                self.applied.unit_ids6.insert(unit.clone(), id);
            }
        }

        // Backends.
        let wanted_backends: BTreeSet<(Ipv4Addr, u16)> = want.units.values().flatten().copied().collect();
        for &(addr, port) in &wanted_backends {
            let id = match self.applied.backend_ids.get(&(addr, port)) {
                Some(id) => *id,
                None => {
                    let id = lowest_free(self.applied.backends.keys().chain(self.applied.backends6.keys()).copied());
                    self.applied.backend_ids.insert((addr, port), id);
                    id
                }
            };
            self.applied.draining.remove(&id);
            let be = Lb4Backend::new(addr, port);
            if self.applied.backends.get(&id) != Some(&be) {
                self.maps.upsert_backend(id, &be)?;
                self.applied.backends.insert(id, be);
                st.backends_written += 1;
            }
        }
        let wanted_backends6: BTreeSet<(Ipv6Addr, u16)> = units6.values().flatten().copied().collect();
        if let Some(maps6) = self.maps6.as_mut() {
            for &(addr, port) in &wanted_backends6 {
                let id = match self.applied.backend_ids6.get(&(addr, port)) {
                    Some(id) => *id,
                    None => {
                        let id =
                            lowest_free(self.applied.backends.keys().chain(self.applied.backends6.keys()).copied());
                        self.applied.backend_ids6.insert((addr, port), id);
                        id
                    }
                };
                self.applied.draining.remove(&id);
                let be = Lb6Backend::new(addr, port);
                if self.applied.backends6.get(&id) != Some(&be) {
                    maps6.upsert_backend(id, &be)?;
                    self.applied.backends6.insert(id, be);
                    st.backends_written += 1;
                }
            }
        }

        // Maglev tables.
        for (unit, backends) in &want.units {
            let svc_id = self.applied.unit_ids[unit];
            if backends.is_empty() {
                if self.applied.tables.remove(&svc_id).is_some() {
                    self.maps.remove_maglev(svc_id)?;
                    st.tables_removed += 1;
                }
                continue;
            }
            let mb: Vec<MaglevBackend> = backends
                .iter()
                .map(|(a, p)| {
                    let proto = if unit.proto == IPPROTO_UDP { L4Proto::Udp } else { L4Proto::Tcp };
                    MaglevBackend::new(self.applied.backend_ids[&(*a, *p)], IpAddr::V4(*a), *p, proto)
                })
                .collect();
            let table = build_table(&mb, MAGLEV_M as u32, &self.seed)?;
            if self.applied.tables.get(&svc_id) != Some(&table) {
                self.maps.set_maglev(svc_id, &table)?;
                self.applied.tables.insert(svc_id, table);
                st.tables_written += 1;
            }
        }
        // IPv6 tables: the same builder and outer map, over the unit's IPv6 backends.
        for (unit, backends) in units6 {
            let svc_id = self.applied.unit_ids6[unit];
            if backends.is_empty() {
                if self.applied.tables.remove(&svc_id).is_some() {
                    self.maps.remove_maglev(svc_id)?;
                    st.tables_removed += 1;
                }
                continue;
            }
            let proto = if unit.proto == IPPROTO_UDP { L4Proto::Udp } else { L4Proto::Tcp };
            let mb: Vec<MaglevBackend> = backends
                .iter()
                .map(|(a, p)| MaglevBackend::new(self.applied.backend_ids6[&(*a, *p)], IpAddr::V6(*a), *p, proto))
                .collect();
            let table = build_table(&mb, MAGLEV_M as u32, &self.seed)?;
            if self.applied.tables.get(&svc_id) != Some(&table) {
                self.maps.set_maglev(svc_id, &table)?;
                self.applied.tables.insert(svc_id, table);
                st.tables_written += 1;
            }
        }

        // Frontends.
        for (fe, unit) in &want.frontends {
            let svc = Lb4Service {
                svc_id: self.applied.unit_ids[unit],
                backends: want.units[unit].len().min(u16::MAX as usize) as u16,
                mode: self.lb_mode.forwarding(self.mode, fe.proto) as u8,
                flags: 0,
            };
            if self.applied.frontends.get(fe) != Some(&svc) {
                self.maps.upsert_service(fe, &svc)?;
                self.applied.frontends.insert(*fe, svc);
                st.frontends_written += 1;
            }
        }
        if let Some(maps6) = self.maps6.as_mut() {
            for (fe, unit) in frontends6 {
                let svc = Lb4Service {
                    svc_id: self.applied.unit_ids6[unit],
                    backends: units6[unit].len().min(u16::MAX as usize) as u16,
                    mode: self.lb_mode.forwarding(self.mode, fe.proto) as u8,
                    flags: 0,
                };
                if self.applied.frontends6.get(fe) != Some(&svc) {
                    maps6.upsert_service(fe, &svc)?;
                    self.applied.frontends6.insert(*fe, svc);
                    st.frontends_written += 1;
                }
            }
            let stale6: Vec<Lb6Key> =
                self.applied.frontends6.keys().filter(|k| !frontends6.contains_key(k)).copied().collect();
            for k in stale6 {
                maps6.remove_service(&k)?;
                self.applied.frontends6.remove(&k);
                st.frontends_removed += 1;
            }
        }

        // Removals.
        let stale: Vec<Lb4Key> =
            self.applied.frontends.keys().filter(|k| !want.frontends.contains_key(k)).copied().collect();
        for k in stale {
            self.maps.remove_service(&k)?;
            self.applied.frontends.remove(&k);
            st.frontends_removed += 1;
        }
        let live_ids: BTreeSet<u32> =
            self.applied.unit_ids.values().chain(self.applied.unit_ids6.values()).copied().collect();
        let stale_tables: Vec<u32> = self.applied.tables.keys().filter(|id| !live_ids.contains(id)).copied().collect();
        for id in stale_tables {
            self.maps.remove_maglev(id)?;
            self.applied.tables.remove(&id);
            st.tables_removed += 1;
        }
        for (key, id) in &self.applied.backend_ids {
            if !wanted_backends.contains(key) {
                self.applied.draining.insert(*id);
            }
        }
        for (key, id) in &self.applied.backend_ids6 {
            if !wanted_backends6.contains(key) {
                self.applied.draining.insert(*id);
            }
        }
        st.backends_removed += self.collect_drained()?;
        Ok(st)
    }

    /// Ages out idle conntrack entries (so drained backends can go). Returns how many.
    pub fn expire_ct(&mut self) -> anyhow::Result<usize> {
        let now = halyard_datapath::lb::monotonic_ns();
        let t = halyard_datapath::lb::CtTimeouts::default();
        let v6 = match self.maps6.as_mut() {
            Some(m) => m.ct_expire(now, &t)?,
            None => 0,
        };
        Ok(self.maps.ct_expire(now, &t)? + v6)
    }

    /// Deletes draining backends no conntrack entry refers to any more. Returns how many.
    pub fn collect_drained(&mut self) -> anyhow::Result<usize> {
        if self.applied.draining.is_empty() {
            return Ok(0);
        }
        let mut in_use: BTreeSet<u32> = self.maps.ct_entries()?.into_iter().map(|(_, e)| e.backend_id).collect();
        if let Some(m) = &self.maps6 {
            in_use.extend(m.ct_entries()?.into_iter().map(|(_, e)| e.backend_id));
        }
        let gone: Vec<u32> = self.applied.draining.iter().filter(|id| !in_use.contains(id)).copied().collect();
        for id in &gone {
            if self.applied.backends6.contains_key(id) {
                if let Some(m) = self.maps6.as_mut() {
                    m.remove_backend(*id)?;
                }
                self.applied.backends6.remove(id);
                self.applied.backend_ids6.retain(|_, v| v != id);
            } else {
                self.maps.remove_backend(*id)?;
                self.applied.backends.remove(id);
                self.applied.backend_ids.retain(|_, v| v != id);
            }
            self.applied.draining.remove(id);
        }
        Ok(gone.len())
    }

    pub fn names(&self, interfaces: &[String]) -> Names {
        Names {
            services: self
                .applied
                .unit_ids
                .iter()
                .chain(self.applied.unit_ids6.iter())
                .map(|(u, id)| (*id, u.clone()))
                .collect(),
            backends: self
                .applied
                .backends
                .iter()
                .map(|(id, b)| (*id, b.to_string()))
                .chain(self.applied.backends6.iter().map(|(id, b)| (*id, b.to_string())))
                .collect(),
            draining: self.applied.draining.clone(),
            dispatch: match self.lb_mode {
                LbMode::Dsr => self.mode.as_str().to_string(),
                LbMode::Snat => "snat".to_string(),
                LbMode::Hybrid => format!("hybrid ({} for TCP, snat for UDP)", self.mode.as_str()),
            },
            interfaces: interfaces.to_vec(),
        }
    }
}

/// Remote clusters' backends for global services, and a tick when they change.
#[derive(Debug)]
pub struct Remote {
    pub mesh: crate::clustermesh::SharedMesh,
    pub changed: watch::Receiver<u64>,
}

/// What the API and metrics show about the datapath.
#[derive(Debug, Default, Clone)]
pub struct DatapathStatus {
    pub enabled: bool,
    pub attached: Vec<String>,
    pub error: Option<String>,
    pub pin_dir: Option<PathBuf>,
}

pub type SharedDatapathStatus = Arc<Mutex<DatapathStatus>>;

fn node_ipv4(settings: &DatapathSettings, model: &Model, node: &str) -> Option<Ipv4Addr> {
    settings.node_ipv4.or_else(|| crate::translate::node_internal_ipv4(model, node))
}

fn node_ipv6(settings: &DatapathSettings, model: &Model, node: &str) -> Option<Ipv6Addr> {
    settings.node_ipv6.or_else(|| crate::translate::node_internal_ipv6(model, node))
}

/// Loads and attaches the programs, then keeps the maps in step with the snapshots. Runs on a
/// blocking thread (map updates are syscalls).
pub fn run_blocking(
    settings: DatapathSettings,
    node: String,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    status: SharedDatapathStatus,
    mut remote: Remote,
) {
    let set_error = |e: String| {
        tracing::error!("datapath: {e}");
        status.lock().unwrap().error = Some(e);
    };
    let first = snapshots.borrow_and_update().clone();
    let node_ip = node_ipv4(&settings, &first.model, &node);
    let node_ip6 = node_ipv6(&settings, &first.model, &node);
    if !settings.lb_interfaces.is_empty() && node_ip.is_none() && node_ip6.is_none() {
        set_error(format!(
            "no address for DSR encapsulation and SNAT: set --node-ipv4 (and --node-ipv6 for IPv6 services), \
             or give Node {node} an InternalIP"
        ));
        return;
    }
    let cfg = DatapathConfig {
        pin_dir: settings.pin_dir.clone(),
        node_ipv4: node_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        hash_seed: settings.seed.jhash0,
        geneve_vni: 2,
        node_ipv6: node_ip6.unwrap_or(Ipv6Addr::UNSPECIFIED),
        hash_seed6: settings.seed.jhash1,
    };
    let mut dp = match Datapath::load(cfg) {
        Ok(dp) => dp,
        Err(e) => return set_error(format!("loading the BPF programs: {e}")),
    };
    let mut attached = Vec::new();
    for ifname in &settings.lb_interfaces {
        // bpf_fib_lookup answers only for devices that forward (the LB sends packets on).
        let sysctl = format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding");
        match std::fs::read_to_string(&sysctl) {
            Ok(v) if v.trim() == "1" => {}
            _ => match std::fs::write(&sysctl, "1") {
                Ok(()) => {
                    tracing::info!(interface = %ifname, "enabled IPv4 forwarding (needed by the XDP load balancer)")
                }
                Err(e) => return set_error(format!("enabling IPv4 forwarding on {ifname} ({sysctl}): {e}")),
            },
        }
        // The same for IPv6 (bpf_fib_lookup with AF_INET6), when this node has an IPv6 address.
        // A forwarding interface ignores router advertisements unless accept_ra is 2.
        let sysctl6 = format!("/proc/sys/net/ipv6/conf/{ifname}/forwarding");
        if node_ip6.is_some() && std::fs::read_to_string(&sysctl6).map(|v| v.trim() != "1").unwrap_or(true) {
            match std::fs::write(&sysctl6, "1") {
                Ok(()) => tracing::info!(interface = %ifname, "enabled IPv6 forwarding (needed by the load balancer)"),
                Err(e) => tracing::warn!("datapath: enabling IPv6 forwarding on {ifname} ({sysctl6}): {e}"),
            }
        }
        let (hook, result) =
            if settings.lb_at_tc { ("tc", dp.attach_tc_lb(ifname)) } else { ("XDP", dp.attach_xdp_lb(ifname)) };
        match result {
            Ok(mode) => {
                tracing::info!(interface = %ifname, mode, "{hook} load balancer attached");
                attached.push(format!("{}-lb:{ifname} ({mode})", hook.to_lowercase()));
            }
            Err(e) => return set_error(format!("attaching the {hook} load balancer to {ifname}: {e}")),
        }
    }
    for ifname in &settings.decap_interfaces {
        match dp.attach_tc_decap(ifname) {
            Ok(mode) => {
                tracing::info!(interface = %ifname, mode, "DSR decapsulation attached");
                attached.push(format!("tc-decap:{ifname} ({mode})"));
            }
            Err(e) => return set_error(format!("attaching DSR decapsulation to {ifname}: {e}")),
        }
    }
    {
        let mut s = status.lock().unwrap();
        s.enabled = true;
        s.attached = attached;
        s.pin_dir = Some(settings.pin_dir.clone());
    }
    if settings.lb_interfaces.is_empty() {
        // Backend role only: nothing to reconcile. Keep the programs loaded until shutdown.
        while snapshots.has_changed().is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
        return;
    }
    let names = std::fs::read(&settings.names_file).ok().and_then(|b| serde_json::from_slice::<Names>(&b).ok());
    let maps = match dp.maps() {
        Ok(m) => m,
        Err(e) => return set_error(format!("opening the LB maps: {e}")),
    };
    let maps6 = match dp.maps6() {
        Ok(m) => m,
        Err(e) => return set_error(format!("opening the IPv6 LB maps: {e}")),
    };
    let mut rec = match LbReconciler::new(maps, Some(maps6), settings.dispatch, settings.lb_mode, settings.seed, names)
    {
        Ok(r) => r,
        Err(e) => return set_error(format!("reading the LB maps: {e:#}")),
    };
    let mut snap = first;
    let mut neighbours = BTreeSet::new();
    let mut warned = BTreeSet::new();
    loop {
        let mut want = {
            let mesh = remote.mesh.lock().unwrap();
            desired(&snap, &node, Some(&mesh))
        };
        // A family without a node address cannot be forwarded (no DSR source, no SNAT address).
        if node_ip.is_none() && !want.frontends.is_empty() && warned.insert("v4") {
            tracing::warn!("datapath: IPv4 frontends skipped: no node IPv4 (set --node-ipv4 or an InternalIP)");
        }
        if node_ip6.is_none() && !want.frontends6.is_empty() && warned.insert("v6") {
            tracing::warn!("datapath: IPv6 frontends skipped: no node IPv6 (set --node-ipv6 or an IPv6 InternalIP)");
        }
        if node_ip.is_none() {
            want.frontends.clear();
            want.units.clear();
        }
        if node_ip6.is_none() {
            want.frontends6.clear();
            want.units6.clear();
        }
        let added = ensure_neighbours(
            want.units
                .values()
                .flatten()
                .map(|(a, _)| IpAddr::V4(*a))
                .chain(want.units6.values().flatten().map(|(a, _)| IpAddr::V6(*a))),
            &mut neighbours,
        );
        if !added.is_empty() {
            tracing::info!(next_hops = ?added, "managed neighbour entries for backends");
        }
        for s in &want.skipped {
            tracing::debug!("datapath: {s}");
        }
        match rec.apply(&want) {
            Ok(st) => {
                if !st.is_noop() {
                    tracing::info!(
                        ?st,
                        frontends = want.frontends.len(),
                        frontends6 = want.frontends6.len(),
                        "LB maps updated"
                    );
                }
                let names = rec.names(&settings.lb_interfaces);
                if let Err(e) = write_names(&settings.names_file, &names) {
                    tracing::warn!("datapath: writing {}: {e}", settings.names_file.display());
                }
                status.lock().unwrap().error = None;
            }
            Err(e) => set_error(format!("updating the LB maps: {e:#}")),
        }
        // Wait for a change (polled: this thread stays out of the runtime, which may be shutting
        // down); every 2 s, collect drained backends.
        let mut idle = 0u32;
        loop {
            match snapshots.has_changed() {
                Ok(true) => break,
                Err(_) => return,
                Ok(false) => {}
            }
            if remote.changed.has_changed().unwrap_or(false) {
                remote.changed.mark_unchanged();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            idle += 1;
            if !idle.is_multiple_of(40) {
                continue;
            }
            {
                match rec.expire_ct() {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(entries = n, "idle conntrack entries aged out"),
                    Err(e) => tracing::warn!("datapath: conntrack aging: {e:#}"),
                }
                match rec.collect_drained() {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(backends = n, "drained backends removed");
                        let _ = write_names(&settings.names_file, &rec.names(&settings.lb_interfaces));
                    }
                    Err(e) => tracing::warn!("datapath: conntrack scan: {e:#}"),
                }
            }
        }
        snap = snapshots.borrow_and_update().clone();
    }
}

/// Makes the kernel keep a resolved neighbour entry for each backend's next hop (`managed`,
/// Linux >= 5.16; IPv4 and IPv6 alike), so `bpf_fib_lookup` in XDP finds a MAC from the first
/// packet on; without one,
/// the datapath passes the packet to the stack, which cannot forward it (its outer source is
/// this node). Returns the next hops newly ensured.
fn ensure_neighbours(backends: impl Iterator<Item = IpAddr>, done: &mut BTreeSet<IpAddr>) -> Vec<String> {
    let mut added = Vec::new();
    for addr in backends {
        if done.contains(&addr) {
            continue;
        }
        let out = match std::process::Command::new("ip").args(["-j", "route", "get", &addr.to_string()]).output() {
            Ok(o) if o.status.success() => o.stdout,
            Ok(o) => {
                tracing::warn!("datapath: no route to backend {addr}: {}", String::from_utf8_lossy(&o.stderr).trim());
                continue;
            }
            Err(e) => {
                tracing::warn!("datapath: cannot run `ip route get`: {e}");
                return added;
            }
        };
        let route: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        let (Some(dev), nh) = (
            route[0]["dev"].as_str(),
            route[0]["gateway"].as_str().map(String::from).unwrap_or_else(|| addr.to_string()),
        ) else {
            continue;
        };
        if dev == "lo" {
            done.insert(addr);
            continue;
        }
        let st = std::process::Command::new("ip")
            .args(["neigh", "replace", &nh, "dev", dev, "managed", "extern_learn"])
            .output();
        match st {
            Ok(o) if o.status.success() => {
                done.insert(addr);
                added.push(format!("{nh} dev {dev}"));
            }
            Ok(o) => tracing::warn!(
                "datapath: managed neighbour {nh} on {dev}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::warn!("datapath: cannot run `ip neigh`: {e}"),
        }
    }
    added
}

fn write_names(path: &std::path::Path, names: &Names) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(names).unwrap_or_default())?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(yaml: &str) -> Model {
        let parsed = halyard_model::parse_manifest(std::path::Path::new("t.yaml"), yaml).expect("parses");
        Model::from_objects(parsed.objects)
    }

    fn web(policy: &str) -> String {
        format!(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  annotations: {{service.cilium.io/global: "true"}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  externalIPs: ["10.9.0.1"]
  ports: [{{port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints:
  - addresses: ["10.1.0.5"]
    nodeName: node-a
  - addresses: ["10.1.0.6"]
    nodeName: node-b
  - addresses: ["10.1.0.7"]
"#
        )
    }

    fn backends(m: &Model, node: &str) -> (Vec<(Ipv4Addr, u16)>, Vec<String>) {
        let remote = |_: &str, _: &str, _: &str, _: &str| vec![(Ipv4Addr::new(10, 2, 0, 1), 8080)];
        let d = desired_from(m, node, |_| Vec::new(), remote);
        let b = d.units.values().flatten().copied().collect();
        (b, d.skipped)
    }

    #[test]
    fn external_traffic_policy_local_keeps_only_this_nodes_endpoints() {
        let cluster = model(&web("Cluster"));
        let (b, _) = backends(&cluster, "node-a");
        assert_eq!(b.len(), 4, "all endpoints and the remote cluster's: {b:?}");
        let local = model(&web("Local"));
        assert_eq!(backends(&local, "node-a").0, vec![(Ipv4Addr::new(10, 1, 0, 5), 8080)]);
        assert_eq!(backends(&local, "node-b").0, vec![(Ipv4Addr::new(10, 1, 0, 6), 8080)]);
        let (b, skipped) = backends(&local, "node-c");
        assert!(b.is_empty(), "no local endpoint, no remote ones: {b:?}");
        assert!(skipped.iter().any(|s| s.contains("externalTrafficPolicy Local")), "{skipped:?}");
    }

    #[test]
    fn ipv6_lb_ips_external_ips_and_endpoints_become_ipv6_frontends_and_backends() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: default}
spec:
  type: LoadBalancer
  externalIPs: ["10.9.0.2", "fd00:9::2"]
  ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-4, namespace: default, labels: {kubernetes.io/service-name: dual}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
  - addresses: ["10.1.0.5"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-6, namespace: default, labels: {kubernetes.io/service-name: dual}}
addressType: IPv6
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
  - addresses: ["fd00:1::5"]
    nodeName: node-a
  - addresses: ["fd00:1::6"]
    nodeName: node-b
  - addresses: ["fd00:1::7"]
    conditions: {ready: false}
"#;
        let m = model(yaml);
        let lb_v6: Ipv6Addr = "fd00:96::10".parse().unwrap();
        let lb_ips = |_: &halyard_ipam::ServiceKey| vec![IpAddr::V6(lb_v6)];
        let d = desired_from(&m, "node-a", lb_ips, |_, _, _, _| Vec::new());
        let http = Unit { service: "default/dual".into(), port: 80, proto: IPPROTO_TCP };
        let dns = Unit { service: "default/dual".into(), port: 53, proto: IPPROTO_UDP };
        // IPv4: the IPv4 ExternalIP only, IPv4 endpoints only.
        assert_eq!(
            d.frontends.keys().map(|k| (k.vip(), k.port())).collect::<Vec<_>>(),
            vec![(Ipv4Addr::new(10, 9, 0, 2), 53), (Ipv4Addr::new(10, 9, 0, 2), 80)]
        );
        assert_eq!(d.units[&http], BTreeSet::from([(Ipv4Addr::new(10, 1, 0, 5), 8080)]));
        // IPv6: the LB-IPAM address and the IPv6 ExternalIP, each port; ready IPv6 endpoints.
        let mut fe6: Vec<_> = d.frontends6.iter().map(|(k, u)| (k.vip().to_string(), k.port(), k.proto, u)).collect();
        fe6.sort();
        assert_eq!(
            fe6,
            vec![
                ("fd00:96::10".to_string(), 53, IPPROTO_UDP, &dns),
                ("fd00:96::10".to_string(), 80, IPPROTO_TCP, &http),
                ("fd00:9::2".to_string(), 53, IPPROTO_UDP, &dns),
                ("fd00:9::2".to_string(), 80, IPPROTO_TCP, &http),
            ]
        );
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(d.units6[&http], BTreeSet::from([(v6("fd00:1::5"), 8080), (v6("fd00:1::6"), 8080)]));
        assert_eq!(d.units6[&dns], BTreeSet::from([(v6("fd00:1::5"), 5353), (v6("fd00:1::6"), 5353)]));
        // externalTrafficPolicy Local: this node's IPv6 endpoints only.
        let local = model(&yaml.replace("type: LoadBalancer", "type: LoadBalancer\n  externalTrafficPolicy: Local"));
        let d = desired_from(&local, "node-b", lb_ips, |_, _, _, _| Vec::new());
        assert_eq!(d.units6[&http], BTreeSet::from([(v6("fd00:1::6"), 8080)]));
        let d = desired_from(&local, "node-c", lb_ips, |_, _, _, _| Vec::new());
        assert!(d.units6[&http].is_empty());
        assert!(d.skipped.iter().any(|s| s.contains("no ready IPv6 endpoint")), "{:?}", d.skipped);
        // A service with IPv4 addresses only has no IPv6 frontend.
        let d = desired_from(&m, "node-a", |_| Vec::new(), |_, _, _, _| Vec::new());
        assert!(d.frontends6.keys().all(|k| k.vip() == v6("fd00:9::2")));
        let v4only = model(&yaml.replace(", \"fd00:9::2\"", ""));
        let d = desired_from(&v4only, "node-a", |_| Vec::new(), |_, _, _, _| Vec::new());
        assert!(d.frontends6.is_empty() && d.units6.is_empty());
    }
}
