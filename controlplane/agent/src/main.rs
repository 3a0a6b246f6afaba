//! `halyard-agent`: the Halyard node agent.
//!
//! ```text
//!  manifest dir ──inotify──▶ watcher thread ──trigger──▶ reconcile thread ──Arc<Snapshot>──▶ gRPC API (unix socket)
//!                                                   │  (scan → model → IPAM → state file)  └──▶ /metrics
//!  resync timer ──────────────────────────────────────┘
//! ```

mod api;
mod bgp;
mod bgp_import;
mod cluster_ip;
mod clustermesh;
mod config;
mod datapath;
mod l2;
mod metrics;
mod overlay;
mod reconcile;
mod state;
mod translate;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::Watcher;

use crate::api::AgentApi;
use crate::config::{AgentConfig, LogFormat, Mode};
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;

fn init_logging(cfg: &AgentConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .map_err(|e| anyhow::anyhow!("log-level: {:?} is not a valid filter: {e}", cfg.log_level))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// `--check`: report every problem in the manifests without starting anything.
fn check(cfg: &AgentConfig) -> anyhow::Result<ExitCode> {
    let mut dir = halyard_model::ManifestDir::open(&cfg.manifest_dir)?;
    let report = dir.scan();
    for d in report.errors.iter().chain(&report.warnings) {
        println!("{d}");
    }
    let model = dir.model();
    let out = halyard_ipam::reconcile(
        &cfg.lbipam,
        &translate::pools(&model),
        &translate::services(&model),
        &halyard_ipam::Assignments::new(),
    );
    for (name, p) in &out.pools {
        if let Some(c) = &p.conflict {
            println!("pool {name}: conflict: {c}");
        }
    }
    println!(
        "{} files, {} objects, {} errors, {} warnings",
        dir.files().len(),
        model.len(),
        report.errors.len(),
        report.warnings.len()
    );
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What a file event says about the manifests.
#[derive(Debug, PartialEq, Eq)]
enum FileEvent {
    /// A manifest is being written (created or modified, not closed yet).
    Writing(std::path::PathBuf),
    /// Something is ready to be read: a manifest closed after writing, renamed into place,
    /// removed, or a directory changed (Kubernetes ConfigMap mounts swap a `..data` symlink).
    Ready(std::path::PathBuf),
}

/// The files a burst of watcher events touched, and those still being written.
#[derive(Debug, Default)]
struct Burst {
    open: std::collections::HashSet<std::path::PathBuf>,
    touched: std::collections::BTreeSet<std::path::PathBuf>,
}

impl FileEvent {
    fn apply(self, burst: &mut Burst) {
        match self {
            FileEvent::Writing(p) => {
                burst.touched.insert(p.clone());
                burst.open.insert(p);
            }
            FileEvent::Ready(p) => {
                burst.open.remove(&p);
                burst.touched.insert(p);
            }
        }
    }
}

/// Sorts a watcher event. Writes to files that are not manifests (an editor's or a tool's
/// temporary file) say nothing until they are renamed to a manifest name.
fn classify(ev: &notify::Event) -> Vec<FileEvent> {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
    let is_manifest = |p: &std::path::Path| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(halyard_model::manifest_dir::is_manifest_name)
    };
    if ev.need_rescan() || ev.paths.is_empty() {
        // Events were lost (inotify queue overflow) or name nothing: an empty path makes the
        // reconcile scan the whole directory.
        return vec![FileEvent::Ready(std::path::PathBuf::new())];
    }
    ev.paths
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let manifest = is_manifest(p);
            // The old name of a rename (`Both` lists it first) of something that is not a
            // manifest, such as a tool's temporary file, says nothing; its new name does.
            let renamed_from = matches!(ev.kind, EventKind::Modify(ModifyKind::Name(RenameMode::From)))
                || (matches!(ev.kind, EventKind::Modify(ModifyKind::Name(RenameMode::Both))) && i == 0);
            if renamed_from && !manifest {
                return None;
            }
            match ev.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) if manifest => {
                    Some(FileEvent::Ready(p.clone()))
                }
                EventKind::Access(_) => None,
                EventKind::Create(CreateKind::File)
                | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
                    manifest.then(|| FileEvent::Writing(p.clone()))
                }
                EventKind::Modify(ModifyKind::Metadata(_)) => manifest.then(|| FileEvent::Ready(p.clone())),
                _ => Some(FileEvent::Ready(p.clone())),
            }
        })
        .collect()
}

/// The reconcile loop, on its own thread: file I/O and IPAM are synchronous and short.
fn spawn_reconcile_loop(
    mut rec: Reconciler,
    cfg: &AgentConfig,
    snapshots: tokio::sync::watch::Sender<Arc<reconcile::Snapshot>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<FileEvent>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            for fe in classify(&ev) {
                tracing::trace!(kind = ?ev.kind, event = ?fe, "manifest directory event");
                let _ = tx.send(fe);
            }
        }
        Err(e) => tracing::warn!("file watcher: {e}"),
    })
    .context("starting the file watcher")?;
    watcher
        .watch(&cfg.manifest_dir, notify::RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", cfg.manifest_dir.display()))?;
    let debounce = Duration::from_millis(cfg.reload_debounce_ms);
    let resync = Duration::from_secs(cfg.resync_seconds);
    std::thread::Builder::new().name("reconcile".into()).spawn(move || {
        let mut next_resync = Instant::now() + resync;
        loop {
            let wait = next_resync.saturating_duration_since(Instant::now());
            // `None`: a periodic resync, which scans the whole directory.
            let mut burst = None;
            match rx.recv_timeout(wait) {
                Ok(first) => {
                    // Reconcile as soon as every manifest being written is closed (or renamed
                    // into place); wait at most `debounce` for one that is still open, so that
                    // a half-written file is not read.
                    let b = burst.insert(Burst::default());
                    first.apply(b);
                    let deadline = Instant::now() + debounce;
                    loop {
                        while let Ok(e) = rx.try_recv() {
                            e.apply(b);
                        }
                        if b.open.is_empty() {
                            break;
                        }
                        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                            Ok(e) => e.apply(b),
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => next_resync = Instant::now() + resync,
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let t = Instant::now();
            match rec.step_paths(false, burst.as_ref().map(|b| &b.touched)) {
                Ok(Some(snap)) => {
                    metrics.reconciles.inc();
                    metrics.reconcile_seconds.observe(t.elapsed().as_secs_f64());
                    metrics.ips_released.inc_by(snap.lb.released.len() as u64);
                    metrics.observe(&snap);
                    let _ = snapshots.send(snap);
                }
                Ok(None) => {}
                // The state file could not be written: keep serving the last snapshot and retry
                // at the next event or resync; nothing is applied half-way.
                Err(e) => tracing::error!("reconcile failed: {e:#}"),
            }
            // Published first, made durable right after (see `Reconciler::commit`).
            rec.commit();
        }
    })?;
    Ok(watcher)
}

async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    tracing::info!(node = %cfg.node_name, manifests = %cfg.manifest_dir.display(), "halyard-agent starting");
    let mut rec = Reconciler::open(cfg.clone())?;
    let metrics = Arc::new(Metrics::new());
    let first = rec.step(true)?.context("first reconcile produced no snapshot")?;
    rec.commit();
    metrics.reconciles.inc();
    metrics.observe(&first);
    let (snap_tx, snap_rx) = tokio::sync::watch::channel(first);
    let _watcher = spawn_reconcile_loop(rec, &cfg, snap_tx, metrics.clone())?;
    let bgp_peers = bgp::PeerStatuses::default();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let l2_status = l2::SharedL2Status::default();
    let mesh = clustermesh::SharedMesh::default();
    let (mesh_tx, mesh_rx) = tokio::sync::watch::channel(0u64);
    if cfg.mesh.enabled() {
        tokio::spawn(clustermesh::run(cfg.mesh.clone(), mesh.clone(), mesh_tx));
    }
    let datapath_status = datapath::SharedDatapathStatus::default();
    if cfg.datapath.enabled() {
        let (settings, node, rx, st) =
            (cfg.datapath.clone(), cfg.node_name.clone(), snap_rx.clone(), datapath_status.clone());
        let remote = datapath::Remote { mesh: mesh.clone(), changed: mesh_rx.clone() };
        std::thread::Builder::new()
            .name("datapath".into())
            .spawn(move || datapath::run_blocking(settings, node, rx, st, remote))
            .context("starting the datapath thread")?;
    }
    if cfg.overlay.enabled() {
        let (settings, node, rx) = (cfg.overlay.clone(), cfg.node_name.clone(), snap_rx.clone());
        std::thread::Builder::new()
            .name("overlay".into())
            .spawn(move || overlay::run_blocking(settings, node, rx))
            .context("starting the overlay thread")?;
    }
    if cfg.cluster_ip.enabled {
        let (settings, node, rx) = (cfg.cluster_ip.clone(), cfg.node_name.clone(), snap_rx.clone());
        std::thread::Builder::new()
            .name("cluster-ip".into())
            .spawn(move || cluster_ip::run_blocking(settings, node, rx))
            .context("starting the ClusterIP thread")?;
    } else {
        cluster_ip::detach(&cfg.cluster_ip);
    }
    let l2_task = tokio::spawn(l2::run(
        snap_rx.clone(),
        cfg.node_name.clone(),
        l2_status.clone(),
        shutdown_rx.clone(),
        cfg.l2_election.clone(),
    ));
    let bgp_rib = bgp_import::SharedRib::default();
    let (learned_tx, learned_rx) = tokio::sync::mpsc::unbounded_channel();
    let import_task = tokio::spawn(bgp_import::run(
        learned_rx,
        cfg.bgp_import.clone(),
        bgp_rib.clone(),
        bgp_peers.clone(),
        shutdown_rx.clone(),
    ));
    let bgp_task = tokio::spawn(bgp::run(
        snap_rx.clone(),
        cfg.node_name.clone(),
        bgp::BgpSettings {
            router_id_fallback: cfg.bgp_router_id,
            secrets_namespace: cfg.bgp_secrets_namespace.clone(),
        },
        bgp_peers.clone(),
        learned_tx,
        shutdown_rx,
    ));

    if let Some(addr) = cfg.metrics_addr {
        let sources = metrics::Sources {
            bgp_peers: bgp_peers.clone(),
            bgp_rib: bgp_rib.clone(),
            l2: l2_status.clone(),
            datapath: datapath_status.clone(),
            mesh: mesh.clone(),
            cluster_ip_pins: cfg.cluster_ip.enabled.then(|| cfg.cluster_ip.pin_dir.clone()),
        };
        let serve = metrics::serve(metrics::bind(addr).await?, metrics.clone(), sources);
        tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!("metrics endpoint stopped: {e:#}");
            }
        });
    }

    let listener = halyard_api::bind(&cfg.socket)
        .await
        .with_context(|| format!("cannot listen on API socket {}", cfg.socket.display()))?;
    let config = cfg
        .entries
        .iter()
        .map(|(k, (v, src))| halyard_api::v1::ConfigEntry { key: k.to_string(), value: v.clone(), source: src.clone() })
        .collect();
    let api = AgentApi {
        mesh: mesh.clone(),
        mesh_settings: cfg.mesh.clone(),
        snapshot: snap_rx,
        bgp_peers,
        bgp_rib,
        l2_status,
        started: Instant::now(),
        node_name: cfg.node_name.clone(),
        manifest_dir: cfg.manifest_dir.display().to_string(),
        state_file: cfg.state_file().display().to_string(),
        config,
    };
    tracing::info!(socket = %cfg.socket.display(), "serving the API");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
    };
    tonic::transport::Server::builder()
        .add_service(halyard_api::AgentServer::new(api))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), shutdown)
        .await
        .context("API server")?;
    let _ = std::fs::remove_file(&cfg.socket);
    // Close BGP sessions with a Cease rather than a dropped connection (RFC 4486).
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), bgp_task).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), import_task).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), l2_task).await;
    Ok(())
}

fn main() -> ExitCode {
    let (cfg, mode) = match AgentConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("halyard-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&cfg) {
        eprintln!("halyard-agent: {e:#}");
        return ExitCode::from(2);
    }
    if mode == Mode::Uninstall {
        let pod_routing = overlay::uninstall();
        if !pod_routing.is_empty() {
            println!("pod routing uninstalled: {}", pod_routing.join(", "));
        }
        let imported = bgp_import::uninstall(&cfg.bgp_import);
        if !imported.is_empty() {
            println!("BGP-imported routes removed: {}", imported.len());
        }
        return match halyard_datapath::loader::uninstall(&cfg.datapath.pin_dir) {
            Ok(removed) => {
                let _ = std::fs::remove_file(&cfg.datapath.names_file);
                let _ = std::fs::remove_file(&cfg.cluster_ip.names_file);
                println!(
                    "datapath uninstalled: {} pins removed from {}",
                    removed.len(),
                    cfg.datapath.pin_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("halyard-agent: --uninstall: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if mode == Mode::Check {
        return check(&cfg).unwrap_or_else(|e| {
            eprintln!("halyard-agent: {e:#}");
            ExitCode::from(2)
        });
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("halyard-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("halyard-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RenameMode};

    fn ev(kind: EventKind, path: &str) -> Vec<FileEvent> {
        classify(&notify::Event::new(kind).add_path(path.into()))
    }

    #[test]
    fn writes_wait_for_the_close_and_temporary_files_say_nothing_until_renamed() {
        let w = |p: &str| vec![FileEvent::Writing(p.into())];
        let r = |p: &str| vec![FileEvent::Ready(p.into())];
        assert_eq!(ev(EventKind::Create(CreateKind::File), "/m/svc.yaml"), w("/m/svc.yaml"));
        assert_eq!(ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), "/m/svc.yaml"), w("/m/svc.yaml"));
        assert_eq!(ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), "/m/svc.yaml"), r("/m/svc.yaml"));
        assert_eq!(ev(EventKind::Access(AccessKind::Read), "/m/svc.yaml"), vec![]);
        // A tool's temporary file: nothing until it is renamed to its manifest name.
        assert_eq!(ev(EventKind::Create(CreateKind::File), "/m/.svc.yaml.tmp"), vec![]);
        assert_eq!(ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), "/m/.svc.yaml.tmp"), vec![]);
        assert_eq!(ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/m/svc.yaml"), r("/m/svc.yaml"));
        assert_eq!(ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), "/m/.svc.yaml.tmp"), vec![]);
        let both = notify::Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path("/m/.svc.yaml.tmp".into())
            .add_path("/m/svc.yaml".into());
        assert_eq!(classify(&both), r("/m/svc.yaml"));
        // A manifest renamed away is gone from its old name.
        assert_eq!(ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), "/m/a.yaml"), r("/m/a.yaml"));
        // A ConfigMap mount swaps its hidden ..data link: that must trigger a reload.
        assert_eq!(ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/m/..data"), r("/m/..data"));
        assert_eq!(ev(EventKind::Remove(notify::event::RemoveKind::File), "/m/old.yaml"), r("/m/old.yaml"));
        // Lost events: a full scan.
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(classify(&overflow), r(""));
        let mut burst = Burst::default();
        for e in ev(EventKind::Create(CreateKind::File), "/m/a.yaml") {
            e.apply(&mut burst);
        }
        assert_eq!(burst.open.len(), 1);
        for e in ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), "/m/a.yaml") {
            e.apply(&mut burst);
        }
        assert!(burst.open.is_empty());
        assert_eq!(burst.touched.len(), 1);
    }
}
