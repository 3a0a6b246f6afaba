//! `clustermesh-apiserver`: publishes this cluster's global services and nodes (from the same
//! manifest directory the agents read) into this cluster's etcd, in Cilium's key layout and JSON,
//! so other clusters' agents (Halyard or Cilium) can follow it. It keeps a lease-held heartbeat,
//! writes the synced canaries once the first full state is in, and republishes on every change of
//! the manifests (a diff: only changed keys are written).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use halyard_clustermesh::export::{ExportConfig, Exporter};
use halyard_clustermesh::identity::{ClusterId, MaxConnectedClusters};
use halyard_clustermesh::keys::Resource;
use halyard_clustermesh::publish::Publisher;
use halyard_model::ManifestDir;
use notify::Watcher;

#[derive(Debug, Parser)]
#[command(
    name = "clustermesh-apiserver",
    version,
    about = "Publish this cluster's services and nodes into its etcd (Cilium ClusterMesh layout)"
)]
struct Args {
    /// This cluster's name (Cilium `cluster.name`).
    #[arg(long, env = "HALYARD_CLUSTER_NAME")]
    cluster_name: String,
    /// This cluster's id, 1-255 (or 1-511 with --max-connected-clusters 511).
    #[arg(long, env = "HALYARD_CLUSTER_ID")]
    cluster_id: u32,
    #[arg(long, default_value_t = 255)]
    max_connected_clusters: u32,
    /// Manifest directory (the same the agents read).
    #[arg(long, env = "HALYARD_MANIFEST_DIR")]
    manifest_dir: PathBuf,
    /// etcd endpoints of this cluster (comma-separated URLs).
    #[arg(long, env = "HALYARD_ETCD_ENDPOINTS", value_delimiter = ',', required = true)]
    etcd_endpoints: Vec<String>,
    /// CA bundle for the etcd server certificate (enables TLS).
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate and key for etcd (mTLS).
    #[arg(long, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// Create the etcd users and roles (`root`, `admin-<cluster>`, `remote`) and enable
    /// authentication before publishing (idempotent; see `halyard_clustermesh::rbac`).
    #[arg(long)]
    etcd_init_users: bool,
    /// TTL of the lease holding the published state, in seconds.
    #[arg(long, default_value_t = 15)]
    lease_ttl: u64,
    /// Full re-scan interval, in seconds.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HALYARD_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clustermesh-apiserver: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mode = MaxConnectedClusters::from_u32(args.max_connected_clusters)
        .map_err(|e| anyhow::anyhow!("--max-connected-clusters: {e}"))?;
    let id = ClusterId::new(args.cluster_id, mode).map_err(|e| anyhow::anyhow!("--cluster-id: {e}"))?;
    let mut cfg = ExportConfig::new(&args.cluster_name, id).map_err(|e| anyhow::anyhow!("--cluster-name: {e}"))?;
    cfg.max_connected_clusters = mode;
    // etcd may come up after us (or be restarting): wait for it rather than exit.
    let client = loop {
        match halyard_clustermesh::remote::connect(
            &args.etcd_endpoints,
            args.etcd_ca.as_deref(),
            args.etcd_cert.as_deref(),
            args.etcd_key.as_deref(),
        )
        .await
        {
            Ok(c) => break c,
            Err(e) if e.contains("reading ") => anyhow::bail!("{e}"),
            Err(e) => {
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    if args.etcd_init_users {
        let mut admin = client.clone();
        let mut attempts = 0;
        loop {
            match halyard_clustermesh::rbac::init_users(&mut admin, &args.cluster_name).await {
                Ok(done) => {
                    for d in done {
                        tracing::info!("etcd auth: {d}");
                    }
                    break;
                }
                // Auth already on and we are not root: set up by an earlier run.
                Err(e) if e.to_string().contains("permission denied") => {
                    tracing::info!("etcd users already set up (authentication is on)");
                    break;
                }
                Err(e) if attempts < 60 => {
                    attempts += 1;
                    tracing::warn!("--etcd-init-users: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => anyhow::bail!("--etcd-init-users: {e}"),
            }
        }
    }
    let mut probe = client.clone();
    let ttl = Duration::from_secs(args.lease_ttl);
    // etcd may come up after us (or be restarting): wait for it rather than exit.
    let mut publisher = loop {
        match Publisher::new(client.clone(), &args.cluster_name, ttl).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!("etcd {} not ready yet: {e}", args.etcd_endpoints.join(","));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    // Identities already in etcd keep their numbers across restarts.
    let mut exporter = Exporter::new(cfg.clone());
    let adopted = exporter.seed(publisher.published());
    if adopted > 0 {
        tracing::info!(identities = adopted, "kept the identities found in etcd");
    }
    let mut dir = ManifestDir::open(&args.manifest_dir)
        .with_context(|| format!("opening manifest directory {}", args.manifest_dir.display()))?;

    // Changes to the manifests wake the loop; a resync catches anything missed.
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&args.manifest_dir, notify::RecursiveMode::Recursive)?;
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
    std::thread::spawn(move || {
        while rx.recv().is_ok() {
            std::thread::sleep(Duration::from_millis(10));
            while rx.try_recv().is_ok() {}
            if wake_tx.blocking_send(()).is_err() {
                return;
            }
        }
    });
    let mut heartbeat = publisher.spawn_heartbeat(Duration::from_secs(60));
    let mut synced = false;
    let mut resync = tokio::time::interval(Duration::from_secs(args.resync_seconds.max(1)));
    // The lease holding our keys can vanish (etcd restarted empty, or a long partition): check it
    // every second and start over with a new lease, republishing everything.
    let mut lease_check = tokio::time::interval(Duration::from_secs(1));
    let mut broken = false;
    loop {
        if broken {
            match Publisher::new(client.clone(), &args.cluster_name, ttl).await {
                Ok(p) => {
                    heartbeat.abort();
                    publisher = p;
                    heartbeat = publisher.spawn_heartbeat(Duration::from_secs(60));
                    synced = false;
                    broken = false;
                    tracing::info!("new lease; republishing everything");
                }
                Err(e) => {
                    tracing::warn!("etcd still unavailable: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let report = dir.scan();
        for d in dir.diagnostics() {
            if report.changed {
                tracing::warn!("{d}");
            }
        }
        let model = dir.model();
        let desired = exporter.export(&model);
        match publisher.apply(&desired).await {
            Ok(diff) if !diff.is_empty() || !synced => {
                tracing::info!(
                    upserts = diff.upserts.len(),
                    deletes = diff.deletes.len(),
                    keys = desired.len(),
                    "published to etcd"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("publishing failed (will retry): {e}");
                broken = true;
                continue;
            }
        }
        if !synced {
            match publisher.write_synced_canaries(&Resource::ALL).await {
                Ok(()) => {
                    synced = true;
                    tracing::info!(cluster = %args.cluster_name, "initial state published; synced canaries written");
                }
                Err(e) => tracing::error!("writing synced canaries: {e}"),
            }
        }
        tokio::select! {
            _ = wake_rx.recv() => {}
            _ = resync.tick() => {}
            _ = lease_check.tick() => {
                let alive = matches!(
                    tokio::time::timeout(Duration::from_secs(2), probe.lease_time_to_live(publisher.lease_id(), None)).await,
                    Ok(Ok(r)) if r.ttl() > 0
                );
                if !alive {
                    tracing::warn!(lease = publisher.lease_id(), "our etcd lease is gone (etcd restarted or unreachable)");
                    broken = true;
                } else {
                    continue;
                }
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("stopping; the lease keeps the state until it expires");
                return Ok(());
            }
        }
    }
}
