//! ClusterMesh in the agent: follows each remote cluster's etcd (Cilium's layout, read by
//! `halyard_clustermesh::watch`) and keeps what it shares, so global services can use remote
//! backends (`service.cilium.io/global`, `service.cilium.io/affinity`) and `halyard clustermesh
//! status` can say how each remote is doing.
//!
//! Remote clusters come from a directory in Cilium's format (one etcd config file per cluster,
//! named after it). A cluster whose etcd stays unreachable longer than `stale_ttl` has its state
//! dropped (its backends leave the local services) and re-listed when it comes back — unlike
//! Cilium, which keeps stale backends forever.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use halyard_clustermesh::keys::Resource;
use halyard_clustermesh::remote::RemoteClusterConfig;
use halyard_clustermesh::types::ClusterService;
use halyard_clustermesh::watch::{RemoteEvent, WatchConfig, watch_remote};
use halyard_model::time::rfc3339;
use tokio::sync::watch;

pub const AFFINITY_ANNOTATION: &str = "service.cilium.io/affinity";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    pub cluster_name: String,
    pub cluster_id: u32,
    pub config_dir: Option<PathBuf>,
    pub stale_ttl: Duration,
}

impl MeshSettings {
    pub fn enabled(&self) -> bool {
        self.config_dir.is_some()
    }
}

/// What the agent knows about one remote cluster.
#[derive(Debug, Default, Clone)]
pub struct RemoteState {
    pub config_file: PathBuf,
    pub endpoints: Vec<String>,
    pub connected: bool,
    pub ready: bool,
    pub last_failure: Option<(SystemTime, String)>,
    pub cluster_id: u32,
    /// (namespace, name) → the service as the remote shares it.
    pub services: BTreeMap<(String, String), ClusterService>,
    pub nodes: BTreeSet<String>,
    /// Numeric identity → its labels (`k8s:app=web;…`), as the remote allocated them.
    pub identities: BTreeMap<u32, String>,
    /// The remote's endpoints (ipcache): address → identity.
    pub ipcache: BTreeMap<IpNet, u32>,
    pub malformed: u64,
    pub synced: BTreeSet<&'static str>,
}

#[derive(Debug, Default)]
pub struct MeshState {
    pub remotes: BTreeMap<String, RemoteState>,
    pub config_errors: Vec<String>,
}

pub type SharedMesh = Arc<Mutex<MeshState>>;

fn resource_name(r: Resource) -> &'static str {
    match r {
        Resource::Nodes => "nodes",
        Resource::Services => "services",
        Resource::Identities => "identities",
        Resource::Ip => "ip",
    }
}

/// The backends remote clusters offer for a local global service's port: (cluster, address, port).
/// The remote's port configuration is keyed by port name (Cilium `PortConfiguration`); an unnamed
/// port matches the empty name.
pub fn remote_backends(
    mesh: &MeshState,
    namespace: &str,
    name: &str,
    port_name: &str,
    proto: &str,
) -> Vec<(String, Ipv4Addr, u16)> {
    let mut out = Vec::new();
    for (cluster, st) in &mesh.remotes {
        let Some(svc) = st.services.get(&(namespace.to_string(), name.to_string())) else { continue };
        if !svc.shared {
            continue;
        }
        for (ip, ports) in &svc.backends {
            let Ok(IpAddr::V4(v4)) = ip.parse::<IpAddr>() else { continue };
            if let Some(l4) =
                ports.get(port_name).filter(|l4| l4.protocol.eq_ignore_ascii_case(proto) || l4.protocol.is_empty())
            {
                out.push((cluster.clone(), v4, l4.port));
            }
        }
    }
    out
}

/// Which backends a global service uses, per `service.cilium.io/affinity` (Cilium semantics):
/// `local` prefers local ones and falls back to remote; `remote` the reverse; none/other: all.
pub fn merge_by_affinity<T: Clone>(affinity: Option<&str>, local: &[T], remote: &[T]) -> Vec<T> {
    match affinity.map(str::to_ascii_lowercase).as_deref() {
        Some("local") if !local.is_empty() => local.to_vec(),
        Some("local") => remote.to_vec(),
        Some("remote") if !remote.is_empty() => remote.to_vec(),
        Some("remote") => local.to_vec(),
        _ => local.iter().chain(remote).cloned().collect(),
    }
}

pub fn failure_text(st: &RemoteState) -> (String, String) {
    st.last_failure.as_ref().map(|(t, e)| (e.clone(), rfc3339(*t))).unwrap_or_default()
}

/// How often the config directory is read again.
const CONFIG_RESCAN: Duration = Duration::from_secs(2);

/// What makes a running follower out of date: its config, and the size and time of the
/// certificate files it uses (rotated certificates restart it).
#[derive(Debug, PartialEq)]
struct Running {
    cfg: RemoteClusterConfig,
    files: Vec<Option<(u64, SystemTime)>>,
}

impl Running {
    fn of(cfg: RemoteClusterConfig) -> Running {
        let files = [&cfg.ca_file, &cfg.cert_file, &cfg.key_file]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.len(), m.modified().ok()?))))
            .collect();
        Running { cfg, files }
    }
}

/// Follows every remote cluster configured in the directory until the process ends. The
/// directory is read again every [`CONFIG_RESCAN`]: a new file starts following that cluster,
/// a removed one stops it and drops its state, a changed one (or rotated certificates)
/// restarts it. A file that turns bad is reported and its cluster keeps the last good config;
/// an unreadable directory changes nothing. `changed` ticks whenever remote services change
/// (the datapath re-merges backends).
pub async fn run(settings: MeshSettings, mesh: SharedMesh, changed: watch::Sender<u64>) {
    let Some(dir) = settings.config_dir.clone() else { return };
    let changed = Arc::new(changed);
    let mut running: BTreeMap<String, (Running, tokio::task::JoinHandle<()>)> = BTreeMap::new();
    let mut last_errors: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(CONFIG_RESCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut errors = Vec::new();
        let mut keep_bad: BTreeSet<String> = BTreeSet::new();
        let loaded = RemoteClusterConfig::load_dir(&dir);
        let dir_readable = loaded.is_ok();
        let configs = match loaded {
            Ok((good, bad)) => {
                for e in bad {
                    if let halyard_clustermesh::remote::RemoteConfigError::Invalid { path, .. } = &e
                        && let Some(name) = path.file_name().and_then(|n| n.to_str())
                        && running.contains_key(name)
                    {
                        keep_bad.insert(name.to_string());
                        errors.push(format!("{e} (still following {name} with its last good config)"));
                    } else {
                        errors.push(e.to_string());
                    }
                }
                Some(good)
            }
            Err(e) => {
                errors.push(format!("{e} (remote clusters unchanged)"));
                None
            }
        };
        let mut wanted: BTreeMap<String, Running> = BTreeMap::new();
        for cfg in configs.into_iter().flatten() {
            if cfg.name == settings.cluster_name {
                errors.push(format!("{}: that is this cluster's own name; skipped", cfg.path.display()));
                continue;
            }
            wanted.insert(cfg.name.clone(), Running::of(cfg));
        }
        if errors != last_errors {
            for e in &errors {
                tracing::error!("clustermesh: {e}");
            }
            last_errors = errors.clone();
        }
        mesh.lock().unwrap().config_errors = errors;
        if !dir_readable {
            continue;
        }
        // Stop what is gone or changed.
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, (r, _))| !keep_bad.contains(*name) && wanted.get(*name) != Some(r))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let (_, handle) = running.remove(&name).expect("listed above");
            handle.abort();
            let had = mesh.lock().unwrap().remotes.remove(&name).is_some_and(|st| !st.services.is_empty());
            if wanted.contains_key(&name) {
                tracing::info!(cluster = %name, "clustermesh: config changed; reconnecting");
            } else {
                tracing::info!(cluster = %name, "clustermesh: config removed; no longer following this cluster");
            }
            if had {
                bump(&changed);
            }
        }
        // Start what is new (or changed).
        for (name, r) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            mesh.lock().unwrap().remotes.insert(
                name.clone(),
                RemoteState {
                    config_file: r.cfg.path.clone(),
                    endpoints: r.cfg.endpoints.clone(),
                    ..Default::default()
                },
            );
            let handle = tokio::spawn(follow(r.cfg.clone(), settings.clone(), mesh.clone(), changed.clone()));
            running.insert(name, (r, handle));
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error with its causes ("transport error: ... : invalid peer certificate: UnknownIssuer").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

fn bump(changed: &watch::Sender<u64>) {
    changed.send_modify(|g| *g += 1);
}

/// One remote: connect, watch, health-check; drop its state when stale; start over.
async fn follow(cfg: RemoteClusterConfig, settings: MeshSettings, mesh: SharedMesh, changed: Arc<watch::Sender<u64>>) {
    let name = cfg.name.clone();
    let set = |f: &dyn Fn(&mut RemoteState)| {
        if let Some(st) = mesh.lock().unwrap().remotes.get_mut(&name) {
            f(st);
        }
    };
    let tls = cfg.ca_file.is_some();
    let fail = |e: String| {
        // A server that refuses our client certificate just closes the TLS connection; say what
        // that usually means instead of leaving "connection closed".
        let lower = e.to_lowercase();
        let refused = lower.contains("tcp connect error") || lower.contains("connection refused");
        let e = if tls
            && !refused
            && [
                "connection closed",
                "canceled",
                "cancelled",
                "handshake",
                "reset by peer",
                "broken pipe",
                "unexpected eof",
                "certificate",
                "transport error",
            ]
            .iter()
            .any(|w| lower.contains(w))
        {
            format!(
                "{e} (the TLS connection was closed by the server: it most likely does not accept this client \
                 certificate; check cert-file/key-file in {} and that the remote's CA signed them)",
                cfg.path.display()
            )
        } else {
            e
        };
        tracing::warn!(cluster = %name, "clustermesh: {e}");
        set(&|st| {
            st.connected = false;
            st.last_failure = Some((SystemTime::now(), e.clone()));
        });
    };
    let mut backoff = halyard_clustermesh::watch::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let client = match cfg.connect().await {
            Ok(c) => c,
            Err(e) => {
                fail(e);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        // Staleness is handled here (state dropped, watcher restarted), not in the watcher.
        let wcfg = WatchConfig { backoff_max: Duration::from_secs(2), ..WatchConfig::default() };
        let (handle, mut rx) = watch_remote(client.clone(), name.clone(), wcfg);
        // Aborting this follower (its config was removed) must stop the watcher too.
        let handle = AbortOnDrop(handle);
        let mut health = client.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut unreachable_since: Option<Instant> = None;
        let mut had_state = false;
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    backoff.reset();
                    let mut services_changed = false;
                    {
                        let mut m = mesh.lock().unwrap();
                        let Some(st) = m.remotes.get_mut(&name) else { break };
                        st.connected = true;
                        had_state = true;
                        match ev {
                            RemoteEvent::Config(c) => st.cluster_id = c.id,
                            RemoteEvent::ServiceUpsert(s) => {
                                st.services.insert((s.namespace.clone(), s.name.clone()), *s);
                                services_changed = true;
                            }
                            RemoteEvent::ServiceDelete { namespace, name } => {
                                services_changed |= st.services.remove(&(namespace, name)).is_some();
                            }
                            RemoteEvent::NodeUpsert(n) => {
                                st.nodes.insert(n.name.clone());
                            }
                            RemoteEvent::NodeDelete { name } => {
                                st.nodes.remove(&name);
                            }
                            RemoteEvent::IdentityUpsert { id, labels } => {
                                st.identities.insert(id, labels.to_string());
                            }
                            RemoteEvent::IdentityDelete { id } => {
                                st.identities.remove(&id);
                            }
                            RemoteEvent::IpUpsert(p) => {
                                if let Some(ip) = p.ip {
                                    let prefix = match &p.mask {
                                        Some(m) => IpNet::new(ip, m.iter().map(|b| b.count_ones() as u8).sum()).unwrap_or(IpNet::from(ip)),
                                        None => IpNet::from(ip),
                                    };
                                    st.ipcache.insert(prefix, p.id);
                                }
                            }
                            RemoteEvent::IpDelete { prefix } => {
                                st.ipcache.remove(&prefix);
                            }
                            RemoteEvent::Synced(r) => {
                                st.synced.insert(resource_name(r));
                            }
                            RemoteEvent::Ready => {
                                if !st.ready {
                                    tracing::info!(cluster = %name, services = st.services.len(), nodes = st.nodes.len(), "clustermesh: remote cluster ready");
                                }
                                st.ready = true;
                            }
                            RemoteEvent::Malformed { key, error } => {
                                st.malformed += 1;
                                tracing::warn!(cluster = %name, %key, "clustermesh: skipped malformed entry: {error}");
                            }
                        }
                    }
                    if services_changed {
                        bump(&changed);
                    }
                }
                _ = tick.tick() => {
                    match tokio::time::timeout(Duration::from_secs(2), health.status()).await {
                        Ok(Ok(_)) => {
                            unreachable_since = None;
                            set(&|st| st.connected = true);
                        }
                        Ok(Err(e)) => fail(format!("etcd health check: {}", chain(&e))),
                        Err(_) => fail("etcd health check timed out".to_string()),
                    }
                    let down = mesh.lock().unwrap().remotes.get(&name).is_some_and(|s| !s.connected);
                    if down {
                        let since = *unreachable_since.get_or_insert_with(Instant::now);
                        if had_state && since.elapsed() >= settings.stale_ttl {
                            tracing::warn!(cluster = %name, ttl = ?settings.stale_ttl, "clustermesh: unreachable past the stale TTL; dropping its services until it returns");
                            set(&|st| {
                                st.services.clear();
                                st.nodes.clear();
                                st.identities.clear();
                                st.ipcache.clear();
                                st.ready = false;
                                st.synced.clear();
                            });
                            bump(&changed);
                            // A fresh watcher re-lists everything when the cluster returns.
                            break;
                        }
                    }
                }
            }
        }
        drop(handle);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_follows_cilium() {
        let l = [1, 2];
        let r = [3];
        assert_eq!(merge_by_affinity(None, &l, &r), vec![1, 2, 3]);
        assert_eq!(merge_by_affinity(Some("local"), &l, &r), vec![1, 2]);
        assert_eq!(merge_by_affinity(Some("local"), &[], &r), vec![3]);
        assert_eq!(merge_by_affinity(Some("Remote"), &l, &r), vec![3]);
        assert_eq!(merge_by_affinity(Some("remote"), &l, &[]), vec![1, 2]);
        assert_eq!(merge_by_affinity(Some("none"), &l, &r), vec![1, 2, 3]);
    }
}
