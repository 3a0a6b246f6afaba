//! `clustermesh-bench`: how fast remote changes reach an agent's model through etcd, beside etcd's
//! own watch delivery (the anchor), measured in one run; and how long an agent takes to bootstrap
//! 250k endpoints (ipcache entries) from a remote cluster, with its peak RSS.
//!
//! Usage: `clustermesh-bench [RATE_PER_S] [SECONDS] [BOOTSTRAP_ENTRIES]` (defaults 1000 10 250000).
//! Starts its own etcd (Debian etcd-server 3.4) on loopback with a temporary data directory.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp, WatchOptions};
use halyard_clustermesh::keys::{self, Resource};
use halyard_clustermesh::types::{
    CiliumClusterConfig, ClusterConfigCapabilities, ClusterService, IpIdentityPair, L4Addr, to_go_json,
};
use halyard_clustermesh::watch::{RemoteEvent, WatchConfig, watch_remote};

/// The etcd process and its data directory (removed when dropped, after the process).
struct Etcd(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_etcd() -> anyhow::Result<(Etcd, String, Client)> {
    let dir = tempfile::tempdir()?;
    let (c, p) = (free_port(), free_port());
    let curl = format!("http://127.0.0.1:{c}");
    let purl = format!("http://127.0.0.1:{p}");
    let child = Command::new("/usr/bin/etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &curl, "--advertise-client-urls", &curl])
        .args(["--listen-peer-urls", &purl, "--initial-advertise-peer-urls", &purl])
        .args(["--initial-cluster", &format!("bench={purl}"), "--initial-cluster-state", "new"])
        .args(["--quota-backend-bytes", "4294967296", "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting /usr/bin/etcd (apt-get install etcd-server): {e}"))?;
    let etcd = Etcd(child, dir);
    for _ in 0..100 {
        if let Ok(mut cl) = Client::connect([curl.as_str()], None).await
            && cl.get("probe", None).await.is_ok()
        {
            return Ok((etcd, curl, cl));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("etcd did not come up")
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn service(seq: u64) -> ClusterService {
    let mut s = ClusterService {
        cluster: "east".into(),
        namespace: "bench".into(),
        name: format!("svc-{}", seq % 100),
        shared: true,
        cluster_id: 1,
        ..Default::default()
    };
    s.labels.insert("seq".into(), seq.to_string());
    let mut ports = BTreeMap::new();
    ports.insert("http".to_string(), L4Addr { protocol: "TCP".into(), port: 80 });
    for b in 0..(1 + seq % 8) {
        s.backends.insert(format!("10.1.{}.{}", seq % 250, b + 1), ports.clone());
    }
    s
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn put_config(client: &mut Client) -> anyhow::Result<()> {
    let cfg = CiliumClusterConfig {
        id: 1,
        capabilities: ClusterConfigCapabilities { max_connected_clusters: 255, ..Default::default() },
    };
    client.put(keys::cluster_config_key("east"), to_go_json(&cfg), None).await?;
    Ok(())
}

/// Part 1: write service changes at `rate`/s for `secs` seconds; time each until the
/// halyard watcher (the agent's path) and a raw etcd watch (the anchor) see it.
async fn propagation(client: &mut Client, rate: u64, secs: u64) -> anyhow::Result<()> {
    put_config(client).await?;
    let total = rate * secs;
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total as usize]));

    // Anchor: etcd's own watch on the same prefix, parsing only the sequence number.
    let mut raw =
        client.watch(Resource::Services.watch_prefix("east"), Some(WatchOptions::new().with_prefix())).await?;
    let sent_raw = sent.clone();
    let raw_task = tokio::spawn(async move {
        let mut lat = Vec::new();
        while let Ok(Some(resp)) = raw.message().await {
            let now = Instant::now();
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let v = kv.value_str().unwrap_or("");
                if let Some(seq) =
                    v.split("\"seq\":\"").nth(1).and_then(|r| r.split('"').next()).and_then(|s| s.parse::<usize>().ok())
                    && let Some(Some(t)) = sent_raw.lock().unwrap().get(seq)
                {
                    lat.push(now.duration_since(*t).as_secs_f64() * 1e3);
                }
            }
            if lat.len() as u64 >= total {
                break;
            }
        }
        lat
    });

    // The agent's path: list + watch + decode + validate into typed events.
    let (handle, mut rx) = watch_remote(client.clone(), "east".into(), WatchConfig::default());
    let sent_hl = sent.clone();
    let hl_task = tokio::spawn(async move {
        let mut lat = Vec::new();
        while let Some(ev) = rx.recv().await {
            if let RemoteEvent::ServiceUpsert(s) = ev {
                let now = Instant::now();
                if let Some(seq) = s.labels.get("seq").and_then(|s| s.parse::<usize>().ok())
                    && let Some(Some(t)) = sent_hl.lock().unwrap().get(seq)
                {
                    lat.push(now.duration_since(*t).as_secs_f64() * 1e3);
                }
                if lat.len() as u64 >= total {
                    break;
                }
            }
        }
        lat
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for seq in 0..total {
        let due = start + interval * seq as u32;
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let key = keys::service_key("east", "bench", &format!("svc-{}", seq % 100));
        let value = to_go_json(&service(seq));
        sent.lock().unwrap()[seq as usize] = Some(Instant::now());
        let mut c = client.clone();
        tokio::spawn(async move {
            let _ = c.put(key, value, None).await;
        });
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let mut hl = tokio::time::timeout(Duration::from_secs(30), hl_task).await??;
    let mut rawl = tokio::time::timeout(Duration::from_secs(30), raw_task).await??;
    handle.abort();
    println!("ClusterMesh propagation: {total} service changes at {achieved:.0}/s (target {rate}/s), write -> seen");
    println!("goal: halyard watcher p99 <= 100 ms; anchor: etcd's own watch delivery, same run (reference: ~10 ms)");
    println!("{:<30} {:>8} {:>9} {:>9} {:>9}", "path", "events", "p50 ms", "p99 ms", "max ms");
    for (name, v) in [("halyard watcher (typed)", &mut hl), ("etcd raw watch (anchor)", &mut rawl)] {
        let n = v.len();
        let (p50, p99, max) = (percentile(v, 0.5), percentile(v, 0.99), percentile(v, 1.0));
        println!("{name:<30} {n:>8} {p50:>9.2} {p99:>9.2} {max:>9.2}");
    }
    let p99 = percentile(&mut hl, 0.99);
    println!("goal check: p99 {p99:.2} ms -> {}", if p99 <= 100.0 { "MET" } else { "MISSED" });
    Ok(())
}

/// Part 2 (writer): fills etcd with `n` ipcache entries of cluster "east" in txns of 128.
async fn fill_ipcache(client: &mut Client, n: u32) -> anyhow::Result<Duration> {
    put_config(client).await?;
    let t = Instant::now();
    let mut ops = Vec::with_capacity(128);
    let mut inflight = Vec::new();
    for i in 0..n {
        let ip = Ipv4Addr::from(0x0a00_0000 + i);
        let pair = IpIdentityPair {
            ip: Some(ip.into()),
            host_ip: Some(Ipv4Addr::new(192, 168, 1, (i % 250) as u8).into()),
            id: 65536 + (i % 5000),
            ..Default::default()
        };
        ops.push(TxnOp::put(keys::ip_key(ipnet::IpNet::from(std::net::IpAddr::V4(ip))), to_go_json(&pair), None));
        if ops.len() == 128 || i + 1 == n {
            let txn = Txn::new().and_then(std::mem::take(&mut ops));
            let mut c = client.clone();
            inflight.push(tokio::spawn(async move { c.txn(txn).await.map(|_| ()) }));
            if inflight.len() >= 16 {
                for h in inflight.drain(..) {
                    h.await??;
                }
            }
        }
    }
    for h in inflight {
        h.await??;
    }
    Ok(t.elapsed())
}

/// Part 2 (reader, a child process so its RSS is its own): time to Ready and ip entries seen.
async fn bootstrap_reader(url: &str, n: u64) -> anyhow::Result<()> {
    let client = Client::connect([url], None).await?;
    let t = Instant::now();
    let (handle, mut rx) = watch_remote(client, "east".into(), WatchConfig { page_size: 1000, ..Default::default() });
    let mut ips = 0u64;
    let mut store: BTreeMap<ipnet::IpNet, u32> = BTreeMap::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            RemoteEvent::IpUpsert(p) => {
                ips += 1;
                if let Some(ip) = p.ip {
                    store.insert(ipnet::IpNet::from(ip), p.id);
                }
            }
            RemoteEvent::Ready => break,
            _ => {}
        }
    }
    let took = t.elapsed();
    handle.abort();
    println!("{} {} {} {}", took.as_secs_f64(), ips, store.len(), vm_hwm_kib());
    anyhow::ensure!(ips == n, "saw {ips} of {n} entries");
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--bootstrap-reader") {
        return bootstrap_reader(&args[2], args[3].parse()?).await;
    }
    let rate: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let n: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(250_000);

    let (_etcd, url, mut client) = start_etcd().await?;
    propagation(&mut client, rate, secs).await?;

    println!();
    let (_etcd2, url2, mut client2) = start_etcd().await?;
    let _ = url;
    let fill = fill_ipcache(&mut client2, n).await?;
    let out = Command::new(std::env::current_exe()?).args(["--bootstrap-reader", &url2, &n.to_string()]).output()?;
    anyhow::ensure!(out.status.success(), "reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = line.split_whitespace().collect();
    let secs: f64 = f[0].parse()?;
    let hwm_mib = f[3].parse::<f64>()? / 1024.0;
    println!("ClusterMesh bootstrap: {n} endpoints (ipcache entries) of one remote cluster, fresh agent-side watcher");
    println!("goal: <= 10 s for 250k (Cilium's CI scale test: 250 clusters x 1000 endpoints in <= 60 s)");
    println!("etcd filled in {:.1} s (txns of 128)", fill.as_secs_f64());
    println!("list + decode + store until Ready: {secs:.2} s, {} entries, peak RSS {hwm_mib:.1} MiB", f[1]);
    println!("goal check: {secs:.2} s -> {}", if secs <= 10.0 { "MET" } else { "MISSED" });
    Ok(())
}
