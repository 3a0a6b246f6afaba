//! The etcd [`LeaseBackend`] against a real etcd (/usr/bin/etcd, 3.4) on 127.0.0.1 with random
//! ports, a temporary data dir and `--election-timeout 500 --heartbeat-interval 50` (so the
//! minimum lease TTL is 1 s). Skipped (with a message) if etcd is not installed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use halyard_l2::election::{FenceOutcome, NodeId};
use halyard_l2::lease::{DEFAULT_ROOT, EtcdBackend, LeaseBackend, NodeKeyEvent, list_nodes};

const ETCD: &str = "/usr/bin/etcd";

struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_etcd() -> Option<Etcd> {
    if !std::path::Path::new(ETCD).exists() {
        eprintln!("skipping: {ETCD} not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(ETCD)
        .args(["--name", "l2test", "--data-dir"])
        .arg(dir.path())
        .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("l2test={peer_url}")])
        .args(["--election-timeout", "500", "--heartbeat-interval", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd");
    let etcd = Etcd { child, endpoint, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = etcd_client::Client::connect([&etcd.endpoint], None).await
            && c.get("probe", None).await.is_ok()
        {
            return Some(etcd);
        }
        assert!(Instant::now() < deadline, "etcd did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn backend(e: &Etcd) -> EtcdBackend {
    EtcdBackend::connect(std::slice::from_ref(&e.endpoint), DEFAULT_ROOT, Duration::from_secs(2)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lease_fence_and_refute() {
    let Some(etcd) = start_etcd().await else { return };
    let a = backend(&etcd).await;
    let b = backend(&etcd).await;
    let (na, nb) = (NodeId::new("node-a"), NodeId::new("node-b"));

    // Grant + key layout: halyard/l2/nodes/<node> under the node's lease.
    let la = a.grant(&na, Duration::from_secs(1)).await.unwrap();
    assert_eq!(a.node_key(&na), "halyard/l2/nodes/node-a");
    let mut raw = etcd_client::Client::connect([&etcd.endpoint], None).await.unwrap();
    let got = raw.get("halyard/l2/nodes/node-a", None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!(kv.lease(), la.0);
    assert_eq!(kv.value_str().unwrap(), format!("{:x}", la.0));

    // Keep-alive (fast, as the election does) keeps a 1 s lease past its TTL.
    let t0 = Instant::now();
    let mut max_rtt = Duration::ZERO;
    while t0.elapsed() < Duration::from_millis(1500) {
        let s = Instant::now();
        assert!(a.keep_alive(la).await.unwrap());
        max_rtt = max_rtt.max(s.elapsed());
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    eprintln!("keep-alive max round trip {max_rtt:?}");
    assert_eq!(list_nodes(&a).await.unwrap().get("node-a"), Some(&la));

    // A live node refutes a fence request against its lease.
    let mut watch = a.watch_node(&na).await.unwrap();
    let refuter = {
        let a2 = backend(&etcd).await;
        let na = na.clone();
        tokio::spawn(async move {
            match watch.recv().await {
                Some(NodeKeyEvent::FenceRequested { by, lease, revision }) if lease == la => {
                    assert_eq!(by.as_str(), "node-b");
                    assert!(a2.refute(&na, &by, revision).await.unwrap());
                }
                other => panic!("unexpected {other:?}"),
            }
            watch
        })
    };
    let s = Instant::now();
    let out = b.fence(&nb, &na, None, Duration::from_millis(50)).await.unwrap();
    eprintln!("refuted fence took {:?}", s.elapsed());
    assert_eq!(out, FenceOutcome::Refused);
    let mut watch = refuter.await.unwrap();
    assert!(a.keep_alive(la).await.unwrap());

    // Nobody refutes: the fence revokes the lease, the key disappears, the watch says so and
    // the next keep-alive fails.
    let s = Instant::now();
    let out = b.fence(&nb, &na, Some(la), Duration::from_millis(10)).await.unwrap();
    eprintln!("unrefuted fence took {:?}", s.elapsed());
    assert_eq!(out, FenceOutcome::Fenced { lease: Some(la) });
    assert!(raw.get("halyard/l2/nodes/node-a", None).await.unwrap().kvs().is_empty());
    assert_eq!(b.fence_key(&na, &nb), "halyard/l2/fence/node-a/node-b");
    let pending = etcd_client::GetOptions::new().with_prefix();
    assert!(raw.get("halyard/l2/fence/", Some(pending)).await.unwrap().kvs().is_empty());
    let mut saw_delete = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), watch.recv()).await {
        if ev == NodeKeyEvent::KeyDeleted {
            saw_delete = true;
            break;
        }
    }
    assert!(saw_delete, "key watch did not report the deletion");
    assert!(!a.keep_alive(la).await.unwrap());

    // Fencing again (stale lease, or no key at all) is a successful no-op.
    assert_eq!(b.fence(&nb, &na, Some(la), Duration::ZERO).await.unwrap(), FenceOutcome::Fenced { lease: Some(la) });
    assert_eq!(b.fence(&nb, &na, None, Duration::ZERO).await.unwrap(), FenceOutcome::Fenced { lease: None });

    // Several successors fencing the same silent node at once all succeed.
    let lc = a.grant(&NodeId::new("node-c"), Duration::from_secs(1)).await.unwrap();
    let c = backend(&etcd).await;
    let nc = NodeId::new("node-c");
    let (r1, r2) = tokio::join!(
        b.fence(&nb, &nc, Some(lc), Duration::from_millis(10)),
        c.fence(&na, &nc, Some(lc), Duration::from_millis(10)),
    );
    assert_eq!(r1.unwrap(), FenceOutcome::Fenced { lease: Some(lc) });
    assert_eq!(r2.unwrap(), FenceOutcome::Fenced { lease: Some(lc) });
    assert!(!a.keep_alive(lc).await.unwrap());

    // A new incarnation gets a new lease and key. A fence given its stale lease (from an old
    // heartbeat) still hits the lease its key is attached to now.
    let la2 = a.grant(&na, Duration::from_secs(1)).await.unwrap();
    assert_ne!(la2, la);
    assert!(a.keep_alive(la2).await.unwrap());
    let out = b.fence(&nb, &na, Some(la), Duration::from_millis(10)).await.unwrap();
    assert_eq!(out, FenceOutcome::Fenced { lease: Some(la2) });
    assert!(!a.keep_alive(la2).await.unwrap());
    // Revoking our own lease (graceful shutdown) removes our key.
    let la3 = a.grant(&na, Duration::from_secs(1)).await.unwrap();
    assert_eq!(list_nodes(&a).await.unwrap().get("node-a"), Some(&la3));
    a.revoke(la3).await.unwrap();
    assert!(list_nodes(&a).await.unwrap().is_empty());
}
