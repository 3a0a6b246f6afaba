//! Publish → watch round trip against a real etcd (Debian's etcd-server, /usr/bin/etcd) on
//! loopback: random free ports, a temporary data dir, killed by PID on drop. Skipped (with a
//! message) when the binary is missing.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use halyard_clustermesh::export::{ExportConfig, export};
use halyard_clustermesh::identity::{ClusterId, MaxConnectedClusters};
use halyard_clustermesh::keys::{self, Resource};
use halyard_clustermesh::publish::{DEFAULT_LEASE_TTL, Publisher};
use halyard_clustermesh::watch::{RemoteEvent, WatchConfig, watch_remote};
use halyard_model::{Model, parse_manifest_bytes};
use tokio::sync::mpsc::Receiver;

const ETCD: &str = "/usr/bin/etcd";

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_etcd() -> Option<(Etcd, Client)> {
    if !Path::new(ETCD).exists() {
        eprintln!("skipping: {ETCD} not installed");
        return None;
    }
    Some(start_etcd_on(free_port(), free_port()).await)
}

/// Starts a fresh etcd (new empty data dir) on the given ports and waits until it answers.
async fn start_etcd_on(cport: u16, pport: u16) -> (Etcd, Client) {
    let dir = tempfile::tempdir().unwrap();
    let curl = format!("http://127.0.0.1:{cport}");
    let purl = format!("http://127.0.0.1:{pport}");
    let child = Command::new(ETCD)
        .args(["--name", "cm-test", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &curl, "--advertise-client-urls", &curl])
        .args(["--listen-peer-urls", &purl, "--initial-advertise-peer-urls", &purl])
        .args(["--initial-cluster", &format!("cm-test={purl}"), "--initial-cluster-state", "new"])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100", "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd");
    let etcd = Etcd { child, url: curl, _dir: dir };
    for _ in 0..100 {
        if let Ok(mut c) = Client::connect([etcd.url.as_str()], None).await
            && c.get("probe", None).await.is_ok()
        {
            return (etcd, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd did not become healthy at {}", etcd.url);
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations:
    service.cilium.io/global: "true"
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
  selector:
    app: web
---
apiVersion: v1
kind: Service
metadata:
  name: consumer-only
  namespace: shop
  annotations:
    service.cilium.io/global: "true"
    service.cilium.io/shared: "false"
spec:
  clusterIP: 10.96.0.11
  ports:
  - name: http
    port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
- addresses: [10.244.1.10]
ports:
- name: http
  port: 8080
  protocol: TCP
---
apiVersion: v1
kind: Node
metadata:
  name: worker1
spec:
  podCIDR: 10.244.1.0/24
status:
  addresses:
  - type: InternalIP
    address: 172.18.0.2
"#;

fn model() -> Model {
    let parsed = parse_manifest_bytes(Path::new("m.yaml"), MANIFEST.as_bytes()).expect("manifest");
    Model::from_objects(parsed.objects)
}

fn export_cfg() -> ExportConfig {
    ExportConfig::new("c1", ClusterId::new(7, MaxConnectedClusters::C255).unwrap()).unwrap()
}

/// The next event, or a panic after 10 s.
async fn next(rx: &mut Receiver<RemoteEvent>) -> RemoteEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("event within 10 s").expect("channel open")
}

async fn until(rx: &mut Receiver<RemoteEvent>, mut pred: impl FnMut(&RemoteEvent) -> bool) -> Vec<RemoteEvent> {
    let mut seen = Vec::new();
    loop {
        let e = next(rx).await;
        let done = pred(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_watch_round_trip() {
    let Some((_etcd, mut client)) = start_etcd().await else { return };
    let cfg = export_cfg();
    let mut m = model();
    let desired = export(&m, &cfg);

    // A stale key from an "earlier run" under our own prefix is removed by the first apply.
    let stale = keys::service_key("c1", "old", "gone");
    client.put(stale.clone(), "{}", None).await.unwrap();

    let mut publisher = Publisher::new(client.clone(), "c1", DEFAULT_LEASE_TTL).await.unwrap();
    let d = publisher.apply(&desired).await.unwrap();
    assert_eq!(d.deletes, std::slice::from_ref(&stale));
    assert_eq!(d.upserts.len(), 3, "config, node, one shared service: {:?}", d.upserts.keys());
    publisher.write_synced_canaries(&Resource::ALL).await.unwrap();
    publisher.heartbeat().await.unwrap();

    // Stored bytes are exactly the exported ones; state keys are leased, the config is not.
    let svc_key = keys::service_key("c1", "shop", "web");
    let got = client.get(svc_key.clone(), None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!(kv.value(), desired[&svc_key].as_slice());
    assert_eq!(kv.lease(), publisher.lease_id());
    let cfg_kv = client.get(keys::cluster_config_key("c1"), None).await.unwrap();
    assert_eq!(cfg_kv.kvs()[0].lease(), 0);
    assert!(client.get(stale, None).await.unwrap().kvs().is_empty());
    assert!(!client.get(keys::HEARTBEAT_KEY, None).await.unwrap().kvs().is_empty());

    // Watch it as a remote cluster would.
    let wcfg = WatchConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..WatchConfig::default()
    };
    let (handle, mut rx) = watch_remote(client.clone(), "c1".into(), wcfg);
    let events = until(&mut rx, |e| *e == RemoteEvent::Ready).await;
    let RemoteEvent::Config(c) = &events[0] else { panic!("config first: {events:?}") };
    assert_eq!(c.id, 7);
    let svc = events
        .iter()
        .find_map(|e| match e {
            RemoteEvent::ServiceUpsert(s) => Some(s),
            _ => None,
        })
        .expect("service event");
    assert_eq!((svc.namespace.as_str(), svc.name.as_str(), svc.cluster_id), ("shop", "web", 7));
    assert!(svc.backends.contains_key("10.244.1.10"));
    assert!(events.iter().any(|e| matches!(e, RemoteEvent::NodeUpsert(n) if n.name == "worker1")));
    assert!(!events.iter().any(|e| matches!(e, RemoteEvent::ServiceUpsert(s) if s.name == "consumer-only")));
    for r in Resource::ALL {
        assert!(events.contains(&RemoteEvent::Synced(r)), "{r} synced");
    }

    // Malformed JSON is reported with its key and skipped; the watch goes on.
    let bad = keys::service_key("c1", "shop", "bad");
    client.put(bad.clone(), "{not json", None).await.unwrap();
    let e = next(&mut rx).await;
    let RemoteEvent::Malformed { key, error } = e else { panic!("expected Malformed, got {e:?}") };
    assert_eq!(key, bad);
    assert!(error.contains("invalid JSON"), "{error}");
    client.delete(bad, None).await.unwrap();
    // Deleting the malformed key yields a typed delete (the key itself is well-formed).
    assert_eq!(next(&mut rx).await, RemoteEvent::ServiceDelete { namespace: "shop".into(), name: "bad".into() });

    // Update: a new backend propagates.
    let slice = m.endpoint_slices.values_mut().next().unwrap();
    slice.endpoints[0].addresses.push("10.244.1.11".into());
    publisher.apply(&export(&m, &cfg)).await.unwrap();
    let e = next(&mut rx).await;
    let RemoteEvent::ServiceUpsert(s) = e else { panic!("expected upsert, got {e:?}") };
    assert!(s.backends.contains_key("10.244.1.11"));

    // Delete propagation: the service stops being global.
    let svc = m.services.values_mut().find(|s| s.metadata.name == "web").unwrap();
    svc.metadata.annotations.clear();
    let d = publisher.apply(&export(&m, &cfg)).await.unwrap();
    assert_eq!(d.deletes, [svc_key]);
    assert_eq!(next(&mut rx).await, RemoteEvent::ServiceDelete { namespace: "shop".into(), name: "web".into() });

    // Revoking the lease removes every leased key: the node goes, the config stays.
    publisher.revoke().await.unwrap();
    let e = until(&mut rx, |e| matches!(e, RemoteEvent::NodeDelete { .. })).await;
    assert_eq!(e.last(), Some(&RemoteEvent::NodeDelete { name: "worker1".into() }));
    assert_eq!(client.get(keys::cluster_config_key("c1"), None).await.unwrap().kvs().len(), 1);
    handle.abort();
}

/// The remote's etcd is replaced by an empty one (a clustermesh-apiserver restart: its etcd is
/// stateless): the watcher reconnects, re-lists, and synthesizes deletes for what is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relist_after_etcd_restart_synthesizes_deletes() {
    use halyard_clustermesh::watch::{KvEvent, run_list_watch};
    let Some((etcd, mut client)) = start_etcd().await else { return };
    let prefix = "cilium/state/nodes/v1/c1/";
    for n in ["a", "b"] {
        client.put(format!("{prefix}{n}"), "{}", None).await.unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let wcfg = WatchConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..WatchConfig::default()
    };
    let task = tokio::spawn(run_list_watch(client.clone(), prefix.into(), wcfg, tx));
    async fn recv(rx: &mut Receiver<KvEvent>) -> KvEvent {
        tokio::time::timeout(Duration::from_secs(15), rx.recv()).await.expect("event in time").expect("open")
    }
    let mut first = Vec::new();
    while first.last() != Some(&KvEvent::ListDone) {
        first.push(recv(&mut rx).await);
    }
    assert_eq!(first.len(), 3, "{first:?}");

    // Watch events flow.
    client.delete(format!("{prefix}a"), None).await.unwrap();
    assert_eq!(recv(&mut rx).await, KvEvent::Delete { key: format!("{prefix}a") });

    // Replace etcd by an empty one on the same ports holding only "c".
    let cport: u16 = etcd.url.rsplit(':').next().unwrap().parse().unwrap();
    // The peer port is not kept; any free one will do for the new single-member cluster.
    let pport = free_port();
    drop(etcd);
    let (etcd2, mut client2) = start_etcd_on(cport, pport).await;
    client2.put(format!("{prefix}c"), "{}", Some(PutOptions::new())).await.unwrap();

    // The re-list may run before or after "c" is written: "c" arrives from the list or from the
    // new watch; "b" gets a synthesized delete either way.
    let want_c = KvEvent::Upsert { key: format!("{prefix}c"), value: b"{}".to_vec() };
    let want_b = KvEvent::Delete { key: format!("{prefix}b") };
    let mut after = Vec::new();
    while !(after.contains(&want_c) && after.contains(&want_b) && after.contains(&KvEvent::ListDone)) {
        after.push(recv(&mut rx).await);
    }
    assert_eq!(after.iter().filter(|e| **e == want_b).count(), 1, "{after:?}");
    // And the new watch is live.
    client2.delete(format!("{prefix}c"), None).await.unwrap();
    assert_eq!(recv(&mut rx).await, KvEvent::Delete { key: format!("{prefix}c") });
    task.abort();
    drop(etcd2);
}

/// A restarted publisher (new lease) takes over the keys of the previous run: unchanged ones
/// are rewritten under its own lease, so they survive the old lease's expiry, and identities
/// read back keep their numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_publisher_moves_its_keys_to_its_own_lease() {
    use halyard_clustermesh::export::Exporter;
    let Some((_etcd, mut client)) = start_etcd().await else { return };
    let mut m = model();
    let pod = r#"apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
status: {phase: Running, podIP: 10.244.1.10, hostIP: 172.18.0.2}
"#;
    let parsed = parse_manifest_bytes(Path::new("p.yaml"), pod.as_bytes()).expect("pod");
    for o in parsed.objects {
        m.insert(o);
    }
    let mut first = Publisher::new(client.clone(), "c1", Duration::from_secs(60)).await.unwrap();
    let mut ex = Exporter::new(export_cfg());
    let desired = ex.export(&m);
    let id_key = desired.keys().find(|k| k.starts_with("cilium/state/identities/v1/id/")).cloned().expect("identity");
    assert_eq!(id_key, format!("cilium/state/identities/v1/id/{}", 7 << 16));
    first.apply(&desired).await.unwrap();
    let old_lease = first.lease_id();
    drop(first); // no more keep-alives; the lease would expire after 60 s

    let mut second = Publisher::new(client.clone(), "c1", Duration::from_secs(60)).await.unwrap();
    let mut ex2 = Exporter::new(export_cfg());
    assert_eq!(ex2.seed(second.published()), 1, "the identity is read back");
    let again = ex2.export(&m);
    assert_eq!(again, desired, "same keys, same identity numbers, same bytes");
    let d = second.apply(&again).await.unwrap();
    assert!(d.deletes.is_empty());
    client.lease_revoke(old_lease).await.unwrap();
    for key in again.keys().filter(|k| !k.starts_with("cilium/cluster-config/")) {
        let kv = client.get(key.clone(), None).await.unwrap();
        let kv = kv.kvs().first().unwrap_or_else(|| panic!("{key} survived the old lease"));
        assert_eq!(kv.lease(), second.lease_id(), "{key} moved to the new lease");
    }
}
