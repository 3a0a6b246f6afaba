//! East-west load balancing: pods reaching a Service's ClusterIP (`--enable-cluster-ip-lb`, on
//! by default when `--routing-mode` is `tunnel` or `native`).
//!
//! Every Service with an IPv4 `spec.clusterIP`/`clusterIPs` (not `None`) and its ready
//! EndpointSlice endpoints become entries of the ClusterIP maps (`hl_ew4_*`): a frontend per
//! (ClusterIP, port, protocol), a backend per (pod IP, target port), one Maglev table per service
//! port. As for the north-south LB (`datapath.rs`), they are diffed against what the maps hold,
//! ids stay stable across restarts (read back from the pinned maps and the names file), and a
//! backend that leaves drains: no new flows, its established ones stay until conntrack forgets
//! them. `internalTrafficPolicy: Local` keeps this node's endpoints only; `sessionAffinity:
//! ClientIP` hashes without the client's port.
//!
//! The programs (`tc_svc.bpf.c`) go on the host side of every pod interface (the
//! `--overlay-interfaces` patterns), found within a second: the translation at tc ingress, first
//! in the TCX chain so the overlay sees the translated packet, and the reverse translation of
//! replies at tc egress. Links are pinned under `--bpf-pin-dir`, re-attached on restart (the new
//! program swapped into the same link) and removed by `--uninstall` with everything else there.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_datapath::lb::CtTimeouts;
use halyard_datapath::maglev::{L4Proto, MaglevBackend, MaglevSeed, build_table};
use halyard_datapath::maps::{IPPROTO_TCP, IPPROTO_UDP, Lb4Backend, Lb4Key, Lb4Service, MAGLEV_M, SVC_F_AFFINITY};
use halyard_datapath::svc::{ClusterIp, ClusterIpConfig, ClusterIpMaps};
use halyard_model::{Model, Protocol};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::datapath::Unit;
use crate::reconcile::Snapshot;

/// Settings from the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIpSettings {
    pub enabled: bool,
    /// Host-side pod interfaces (the overlay's patterns: exact names or prefixes ending in `*`).
    pub interfaces: Vec<String>,
    pub pin_dir: PathBuf,
    pub seed: MaglevSeed,
    /// Names of services and backends, for `halyard bpf cluster-ip list`.
    pub names_file: PathBuf,
}

/// The names file next to the agent's state.
pub const NAMES_FILE: &str = "cluster-ip.json";

/// What the ClusterIP maps should hold, without ids.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Desired {
    /// (ClusterIP, port, proto) -> service port.
    pub frontends: BTreeMap<Lb4Key, Unit>,
    /// Service port -> its backends (pod address, target port).
    pub units: BTreeMap<Unit, BTreeSet<(Ipv4Addr, u16)>>,
    /// Service ports with `sessionAffinity: ClientIP`.
    pub affinity: BTreeSet<Unit>,
    /// Ports left out, with the reason.
    pub skipped: Vec<String>,
}

fn proto_num(p: Protocol) -> Option<u8> {
    match p {
        Protocol::Tcp => Some(IPPROTO_TCP),
        Protocol::Udp => Some(IPPROTO_UDP),
        Protocol::Sctp => None,
    }
}

/// Derives the ClusterIP state from the model: IPv4 cluster IPs of every Service that has one
/// (headless and ExternalName Services have none), each TCP/UDP port, and as backends the ready
/// IPv4 endpoints of its EndpointSlices on the port the slice gives for the service port's name
/// (or a numeric targetPort), as the north-south LB does.
pub fn desired_from(model: &Model, node: &str) -> Desired {
    let mut out = Desired::default();
    for svc in model.services.values() {
        if svc.spec.type_ == halyard_model::ServiceType::ExternalName {
            continue;
        }
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let key = halyard_ipam::ServiceKey::new(ns, svc.metadata.name.clone());
        let mut vips: Vec<Ipv4Addr> = svc
            .spec
            .cluster_ip
            .iter()
            .chain(svc.spec.cluster_ips.iter())
            .filter_map(|c| match c.addr() {
                Some(IpAddr::V4(v4)) if !v4.is_unspecified() => Some(v4),
                _ => None,
            })
            .collect();
        vips.sort();
        vips.dedup();
        if vips.is_empty() {
            continue;
        }
        let slices: Vec<_> = model.endpoint_slices_for(&key).collect();
        let local_only = svc.spec.internal_traffic_policy == Some(halyard_model::TrafficPolicy::Local);
        let affinity = svc.spec.session_affinity == Some(halyard_model::SessionAffinity::ClientIP);
        for sp in &svc.spec.ports {
            let Some(proto) = proto_num(sp.protocol) else {
                out.skipped.push(format!("{key}: port {} is SCTP, which the datapath does not translate", sp.port));
                continue;
            };
            let unit = Unit { service: key.to_string(), port: sp.port, proto };
            let only_on = local_only.then_some(node);
            let backends = crate::datapath::ready_backends(
                &slices,
                halyard_model::AddressType::IPv4,
                sp,
                only_on,
                crate::datapath::v4,
            );
            if backends.is_empty() {
                out.skipped.push(format!("{key}: port {}: no ready endpoint: connections are dropped", sp.port));
            }
            for vip in &vips {
                out.frontends.insert(Lb4Key::new(*vip, sp.port, proto), unit.clone());
            }
            if affinity {
                out.affinity.insert(unit.clone());
            }
            out.units.insert(unit, backends);
        }
    }
    out
}

/// Names for `halyard bpf cluster-ip list` (the maps hold only ids).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    pub services: BTreeMap<u32, Unit>,
    pub backends: BTreeMap<u32, String>,
    pub draining: BTreeSet<u32>,
    pub interfaces: Vec<String>,
}

/// What the agent wrote, rebuilt from the maps at start.
#[derive(Debug, Default)]
struct Applied {
    frontends: BTreeMap<Lb4Key, Lb4Service>,
    unit_ids: BTreeMap<Unit, u32>,
    backend_ids: BTreeMap<(Ipv4Addr, u16), u32>,
    backends: BTreeMap<u32, Lb4Backend>,
    tables: BTreeMap<u32, Vec<u32>>,
    draining: BTreeSet<u32>,
}

/// What one apply changed.
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

fn lowest_free(used: impl Iterator<Item = u32>) -> u32 {
    let used: BTreeSet<u32> = used.collect();
    (1..).find(|i| !used.contains(i)).unwrap_or(1)
}

/// Drives the ClusterIP maps towards [`Desired`]; the same rules as the LB's reconciler
/// (`datapath::LbReconciler`), on maps of its own.
pub struct Reconciler {
    maps: ClusterIpMaps,
    applied: Applied,
    seed: MaglevSeed,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("cluster_ip::Reconciler").finish_non_exhaustive()
    }
}

impl Reconciler {
    /// Reads back what earlier runs left in the (pinned) maps.
    pub fn new(maps: ClusterIpMaps, seed: MaglevSeed, names: Option<Names>) -> anyhow::Result<Self> {
        let mut applied = Applied { frontends: maps.services()?, backends: maps.backends()?, ..Default::default() };
        for (id, be) in &applied.backends {
            applied.backend_ids.insert((be.addr(), be.port()), *id);
        }
        for id in maps.maglev_ids()? {
            if let Some(t) = maps.maglev(id)? {
                applied.tables.insert(id, t);
            }
        }
        if let Some(n) = names {
            for (id, unit) in n.services {
                if applied.frontends.values().any(|s| s.svc_id == id) {
                    applied.unit_ids.insert(unit, id);
                }
            }
            applied.draining = n.draining.into_iter().filter(|id| applied.backends.contains_key(id)).collect();
        }
        Ok(Self { maps, applied, seed })
    }

    /// Makes the maps match `want`: backends, tables, frontends, then removals, so a packet
    /// never finds a frontend whose table or backends are missing.
    pub fn apply(&mut self, want: &Desired) -> anyhow::Result<ApplyStats> {
        let mut st = ApplyStats::default();
        // Service ids: kept from the frontends the maps hold, else the lowest free.
        for (fe, unit) in &want.frontends {
            if !self.applied.unit_ids.contains_key(unit)
                && let Some(svc) = self.applied.frontends.get(fe)
                && !self.applied.unit_ids.values().any(|id| *id == svc.svc_id)
            {
                self.applied.unit_ids.insert(unit.clone(), svc.svc_id);
            }
        }
        self.applied.unit_ids.retain(|u, _| want.units.contains_key(u));
        for unit in want.units.keys() {
            if !self.applied.unit_ids.contains_key(unit) {
                let id = lowest_free(self.applied.unit_ids.values().copied());
                self.applied.unit_ids.insert(unit.clone(), id);
            }
        }

        let wanted_backends: BTreeSet<(Ipv4Addr, u16)> = want.units.values().flatten().copied().collect();
        for &(addr, port) in &wanted_backends {
            let id = match self.applied.backend_ids.get(&(addr, port)) {
                Some(id) => *id,
                None => {
                    let id = lowest_free(self.applied.backends.keys().copied());
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

        for (unit, backends) in &want.units {
            let svc_id = self.applied.unit_ids[unit];
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
                .map(|(a, p)| MaglevBackend::new(self.applied.backend_ids[&(*a, *p)], IpAddr::V4(*a), *p, proto))
                .collect();
            let table = build_table(&mb, MAGLEV_M as u32, &self.seed)?;
            if self.applied.tables.get(&svc_id) != Some(&table) {
                self.maps.set_maglev(svc_id, &table)?;
                self.applied.tables.insert(svc_id, table);
                st.tables_written += 1;
            }
        }

        for (fe, unit) in &want.frontends {
            let svc = Lb4Service {
                svc_id: self.applied.unit_ids[unit],
                backends: want.units[unit].len().min(u16::MAX as usize) as u16,
                mode: 0,
                flags: if want.affinity.contains(unit) { SVC_F_AFFINITY } else { 0 },
            };
            if self.applied.frontends.get(fe) != Some(&svc) {
                self.maps.upsert_service(fe, &svc)?;
                self.applied.frontends.insert(*fe, svc);
                st.frontends_written += 1;
            }
        }

        let stale: Vec<Lb4Key> =
            self.applied.frontends.keys().filter(|k| !want.frontends.contains_key(k)).copied().collect();
        for k in stale {
            self.maps.remove_service(&k)?;
            self.applied.frontends.remove(&k);
            st.frontends_removed += 1;
        }
        let live_ids: BTreeSet<u32> = self.applied.unit_ids.values().copied().collect();
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
        st.backends_removed += self.collect_drained()?;
        Ok(st)
    }

    /// Ages out idle flows (and their reverse entries). Returns how many.
    pub fn expire_ct(&mut self) -> anyhow::Result<usize> {
        Ok(self.maps.ct_expire(halyard_datapath::lb::monotonic_ns(), &CtTimeouts::default())?)
    }

    /// Deletes draining backends no conntrack entry refers to any more. Returns how many.
    pub fn collect_drained(&mut self) -> anyhow::Result<usize> {
        if self.applied.draining.is_empty() {
            return Ok(0);
        }
        let in_use: BTreeSet<u32> = self.maps.ct_entries()?.into_iter().map(|(_, e)| e.backend_id).collect();
        let gone: Vec<u32> = self.applied.draining.iter().filter(|id| !in_use.contains(id)).copied().collect();
        for id in &gone {
            self.maps.remove_backend(*id)?;
            self.applied.draining.remove(id);
            self.applied.backends.remove(id);
            self.applied.backend_ids.retain(|_, v| v != id);
        }
        Ok(gone.len())
    }

    pub fn names(&self, interfaces: &[String]) -> Names {
        Names {
            services: self.applied.unit_ids.iter().map(|(u, id)| (*id, u.clone())).collect(),
            backends: self.applied.backends.iter().map(|(id, b)| (*id, b.to_string())).collect(),
            draining: self.applied.draining.clone(),
            interfaces: interfaces.to_vec(),
        }
    }
}

/// Interfaces present now (name -> ifindex).
fn interfaces() -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/sys/class/net").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(i) = crate::overlay::ifindex(&name) {
            out.insert(name, i);
        }
    }
    out
}

/// The loaded programs and the pod interfaces they are attached to.
struct Attacher {
    obj: ClusterIp,
    /// Attached interfaces with the ifindex they had (a recreated veth gets new links).
    attached: BTreeMap<String, u32>,
}

impl Attacher {
    /// Attaches to new pod interfaces; links of vanished ones (or of interfaces no longer
    /// matching) are removed.
    fn scan(&mut self, patterns: &[String]) {
        let now = interfaces();
        self.attached.retain(|name, idx| now.get(name) == Some(idx));
        for (name, idx) in &now {
            if !crate::overlay::matches(patterns, name) || self.attached.contains_key(name) {
                continue;
            }
            match self.obj.attach(name) {
                Ok((ingress, egress)) => {
                    tracing::info!(interface = %name, ingress, egress, "ClusterIP translation attached to pod interface");
                    self.attached.insert(name.clone(), *idx);
                }
                Err(e) => tracing::warn!("cluster-ip: attaching to {name}: {e}"),
            }
        }
        let gone = self.obj.prune_links(|ifname| crate::overlay::matches(patterns, ifname));
        if !gone.is_empty() {
            tracing::info!(?gone, "ClusterIP links of vanished interfaces removed");
        }
    }
}

fn write_names(path: &std::path::Path, names: &Names) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(names).unwrap_or_default())?;
    std::fs::rename(tmp, path)
}

/// Turned off: links an earlier run pinned are removed, so pods' packets are no longer
/// translated (the maps stay pinned until `--uninstall`).
pub fn detach(settings: &ClusterIpSettings) {
    let gone = halyard_datapath::svc::prune_svc_links(&settings.pin_dir, |_| false);
    if !gone.is_empty() {
        tracing::info!(?gone, "ClusterIP translation is off: its links were removed");
    }
}

/// Loads and attaches the programs, then keeps the maps in step with the snapshots. Runs on a
/// blocking thread (map updates are syscalls).
pub fn run_blocking(settings: ClusterIpSettings, node: String, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    let cfg = ClusterIpConfig { pin_dir: settings.pin_dir.clone(), hash_seed: settings.seed.jhash0 };
    let obj = match ClusterIp::load(cfg) {
        Ok(o) => o,
        Err(e) => return tracing::error!("cluster-ip: loading the BPF programs: {e}"),
    };
    let maps = match obj.maps() {
        Ok(m) => m,
        Err(e) => return tracing::error!("cluster-ip: opening the maps: {e}"),
    };
    let names = std::fs::read(&settings.names_file).ok().and_then(|b| serde_json::from_slice::<Names>(&b).ok());
    let mut rec = match Reconciler::new(maps, settings.seed, names) {
        Ok(r) => r,
        Err(e) => return tracing::error!("cluster-ip: reading the maps: {e:#}"),
    };
    let mut attacher = Attacher { obj, attached: BTreeMap::new() };
    tracing::info!(interfaces = ?settings.interfaces, "ClusterIP translation started");
    let mut snap = snapshots.borrow_and_update().clone();
    let mut last_skipped = Vec::new();
    loop {
        let want = desired_from(&snap.model, &node);
        if want.skipped != last_skipped {
            for s in &want.skipped {
                tracing::info!("cluster-ip: {s}");
            }
            last_skipped = want.skipped.clone();
        }
        // Maps before links: a pod interface attached now finds its services already there.
        match rec.apply(&want) {
            Ok(st) if !st.is_noop() => tracing::info!(?st, frontends = want.frontends.len(), "ClusterIP maps updated"),
            Ok(_) => {}
            Err(e) => tracing::error!("cluster-ip: updating the maps: {e:#}"),
        }
        attacher.scan(&settings.interfaces);
        let save = |rec: &Reconciler| {
            if let Err(e) = write_names(&settings.names_file, &rec.names(&settings.interfaces)) {
                tracing::warn!("cluster-ip: writing {}: {e}", settings.names_file.display());
            }
        };
        save(&rec);
        // Wait for a snapshot; meanwhile rescan pod interfaces every second (a CNI adds veths)
        // and age conntrack every two.
        let mut next_scan = Instant::now() + Duration::from_secs(1);
        let mut next_age = Instant::now() + Duration::from_secs(2);
        loop {
            match snapshots.has_changed() {
                Ok(true) => break,
                Err(_) => return,
                Ok(false) => {}
            }
            std::thread::sleep(Duration::from_millis(50));
            let now = Instant::now();
            if now >= next_scan {
                attacher.scan(&settings.interfaces);
                next_scan = now + Duration::from_secs(1);
            }
            if now >= next_age {
                match rec.expire_ct() {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(flows = n, "idle ClusterIP flows aged out"),
                    Err(e) => tracing::warn!("cluster-ip: conntrack aging: {e:#}"),
                }
                match rec.collect_drained() {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(backends = n, "drained ClusterIP backends removed");
                        save(&rec);
                    }
                    Err(e) => tracing::warn!("cluster-ip: conntrack scan: {e:#}"),
                }
                next_age = now + Duration::from_secs(2);
            }
        }
        snap = snapshots.borrow_and_update().clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(yaml: &str) -> Model {
        let parsed = halyard_model::parse_manifest(std::path::Path::new("t.yaml"), yaml).expect("parses");
        Model::from_objects(parsed.objects)
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00::10"]
  ports: [{name: http, port: 80, targetPort: http}, {name: dns, port: 53, protocol: UDP, targetPort: dns}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: ["10.244.1.11"]
    nodeName: n1
  - addresses: ["10.244.2.10"]
    nodeName: n2
  - addresses: ["10.244.2.11"]
    nodeName: n2
    conditions: {ready: false}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: default}
spec:
  clusterIP: 10.96.0.11
  internalTrafficPolicy: Local
  sessionAffinity: ClientIP
  ports: [{port: 81, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: local-1, namespace: default, labels: {kubernetes.io/service-name: local}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
  - addresses: ["10.244.1.11"]
    nodeName: n1
  - addresses: ["10.244.2.10"]
    nodeName: n2
"#;

    fn unit(service: &str, port: u16, proto: u8) -> Unit {
        Unit { service: service.into(), port, proto }
    }

    #[test]
    fn cluster_ips_ports_and_ready_endpoints() {
        let d = desired_from(&model(WEB), "n1");
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        // IPv4 cluster IPs only (IPv6 is not translated yet); no frontend for the headless one.
        assert_eq!(
            d.frontends.keys().copied().collect::<Vec<_>>(),
            vec![
                Lb4Key::new(vip, 53, IPPROTO_UDP),
                Lb4Key::new(vip, 80, IPPROTO_TCP),
                Lb4Key::new(Ipv4Addr::new(10, 96, 0, 11), 81, IPPROTO_TCP)
            ]
        );
        // By port name (http -> 8080); the not-ready endpoint is left out.
        let http: Vec<_> = d.units[&unit("default/web", 80, IPPROTO_TCP)].iter().copied().collect();
        assert_eq!(http, vec![(Ipv4Addr::new(10, 244, 1, 11), 8080), (Ipv4Addr::new(10, 244, 2, 10), 8080)]);
        // A named targetPort the slice does not list: no backends, reported.
        assert!(d.units[&unit("default/web", 53, IPPROTO_UDP)].is_empty());
        assert!(d.skipped.iter().any(|s| s.contains("port 53")), "{:?}", d.skipped);
        // internalTrafficPolicy Local: this node's endpoint only; ClientIP affinity.
        let local = unit("default/local", 81, IPPROTO_TCP);
        assert_eq!(d.units[&local].iter().copied().collect::<Vec<_>>(), vec![(Ipv4Addr::new(10, 244, 1, 11), 8080)]);
        assert_eq!(
            desired_from(&model(WEB), "n2").units[&local].iter().copied().collect::<Vec<_>>(),
            vec![(Ipv4Addr::new(10, 244, 2, 10), 8080)]
        );
        assert_eq!(d.affinity.iter().cloned().collect::<Vec<_>>(), vec![local]);
    }

    #[test]
    fn services_without_a_cluster_ip_want_nothing() {
        let m = model(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: default}\n\
             spec: {type: ExternalName, externalName: example.org, ports: [{port: 80}]}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: pending, namespace: default}\n\
             spec: {clusterIP: \"\", ports: [{port: 80}]}\n",
        );
        assert_eq!(desired_from(&m, "n1"), Desired::default());
    }
}
