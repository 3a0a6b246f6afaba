//! The Kubernetes Lease [`LeaseBackend`] against the stand-in API server of the tests crate
//! (`tests/src/kubeapi.rs`: there is no kube-apiserver on the test machines). The same
//! scenarios as `etcd_lease.rs`, plus the optimistic-concurrency paths.
//!
//! The server file is compiled into this test with `#[path]` rather than through a
//! dev-dependency on `halyard-tests`: that crate pulls in the datapath (BPF programs built by
//! clang) and the BGP speaker, which the L2 unit tests should not have to build, and the
//! server is plain std + serde_json.

#[allow(dead_code)]
#[path = "../../tests/src/kubeapi.rs"]
mod kubeapi;
/// The tests crate's throw-away PKI (openssl CLI), for the https test.
#[allow(dead_code)]
#[path = "../../tests/src/tls.rs"]
mod tls;

use std::time::{Duration, Instant};

use halyard_l2::election::{FenceOutcome, LeaseId, NodeId};
use halyard_l2::lease::kube::{FENCE_TARGET_LABEL, LEASE_ID_ANNOTATION, fence_name, node_lease_name};
use halyard_l2::lease::{KubeConfig, KubeLeaseBackend, LeaseBackend, LeaseError, NodeKeyEvent};
use kubeapi::KubeApiServer;

const NS: &str = "kube-system";

fn cfg(server: &KubeApiServer) -> KubeConfig {
    KubeConfig {
        api: server.url(),
        namespace: NS.into(),
        token_file: None,
        ca_file: None,
        timeout: Duration::from_secs(2),
    }
}

async fn backend(server: &KubeApiServer) -> KubeLeaseBackend {
    KubeLeaseBackend::connect(&cfg(server)).await.unwrap()
}

fn n(s: &str) -> NodeId {
    NodeId::new(s)
}

fn lease_annotation(obj: &serde_json::Value) -> Option<LeaseId> {
    let s = obj["metadata"]["annotations"][LEASE_ID_ANNOTATION].as_str()?;
    i64::from_str_radix(s, 16).ok().map(LeaseId)
}

async fn next_event(w: &mut tokio::sync::mpsc::Receiver<NodeKeyEvent>) -> Option<NodeKeyEvent> {
    tokio::time::timeout(Duration::from_secs(3), w.recv()).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_keepalive_revoke_and_object_layout() {
    let server = KubeApiServer::start("127.0.0.1:0").unwrap();
    let a = backend(&server).await;
    let na = n("node-a");

    let la = a.grant(&na, Duration::from_secs(2)).await.unwrap();
    assert!(la.0 > 0);
    assert_eq!(node_lease_name(&na), "halyard-l2-node-a");
    let obj = server.get(NS, "halyard-l2-node-a").expect("node lease created");
    assert_eq!(obj["kind"], "Lease");
    assert_eq!(obj["spec"]["holderIdentity"], "node-a");
    assert_eq!(obj["spec"]["leaseDurationSeconds"], 2);
    assert_eq!(lease_annotation(&obj), Some(la));
    let renew = obj["spec"]["renewTime"].as_str().unwrap().to_string();
    // MicroTime: 2006-01-02T15:04:05.000000Z
    assert_eq!(renew.len(), 27, "{renew}");
    assert!(renew.ends_with('Z') && renew.as_bytes()[19] == b'.', "{renew}");

    // Keep-alives move renewTime and the resourceVersion.
    let rv0 = obj["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap();
    let t0 = Instant::now();
    let mut rounds = 0;
    let mut max_rtt = Duration::ZERO;
    while t0.elapsed() < Duration::from_millis(300) {
        let s = Instant::now();
        assert!(a.keep_alive(la).await.unwrap());
        max_rtt = max_rtt.max(s.elapsed());
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("{rounds} keep-alives, max round trip {max_rtt:?}");
    let obj = server.get(NS, "halyard-l2-node-a").unwrap();
    let rv1 = obj["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(rv1, rv0 + rounds);
    assert!(obj["spec"]["renewTime"].as_str().unwrap() > renew.as_str());
    assert_eq!(a.list_nodes().await.unwrap().get("node-a"), Some(&la));

    // A re-grant replaces the object with a new incarnation; the old lease is gone.
    let la2 = a.grant(&na, Duration::from_secs(2)).await.unwrap();
    assert_ne!(la2, la);
    assert_eq!(lease_annotation(&server.get(NS, "halyard-l2-node-a").unwrap()), Some(la2));
    assert!(!a.keep_alive(la).await.unwrap());
    assert!(a.keep_alive(la2).await.unwrap());

    // Revoke deletes it; revoking again (or an unknown lease) is not an error.
    a.revoke(la2).await.unwrap();
    assert!(server.get(NS, "halyard-l2-node-a").is_none());
    a.revoke(la2).await.unwrap();
    a.revoke(LeaseId(12345)).await.unwrap();
    assert!(!a.keep_alive(la2).await.unwrap());
    assert!(a.list_nodes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_after_delete_and_conflicts() {
    let server = KubeApiServer::start("127.0.0.1:0").unwrap();
    let a = backend(&server).await;
    let na = n("node-a");
    let name = node_lease_name(&na);

    // Someone else touched the object (a label): our resourceVersion is stale → 409 → GET
    // shows our lease id → retried with the new version.
    let la = a.grant(&na, Duration::from_secs(2)).await.unwrap();
    assert!(server.modify(NS, &name, |o| o["metadata"]["labels"] = serde_json::json!({"team": "net"})));
    let before = server.requests();
    assert!(a.keep_alive(la).await.unwrap());
    assert_eq!(server.requests() - before, 3, "PUT (409), GET, PUT");
    assert_eq!(server.get(NS, &name).unwrap()["metadata"]["labels"]["team"], "net");
    assert!(a.keep_alive(la).await.unwrap());

    // Another incarnation replaced it (different lease id): our lease is gone.
    assert!(server.modify(NS, &name, |o| {
        o["metadata"]["annotations"][LEASE_ID_ANNOTATION] = serde_json::json!("abc");
    }));
    assert!(!a.keep_alive(la).await.unwrap());
    // It was not ours any more: revoke leaves it alone.
    a.revoke(la).await.unwrap();
    assert!(server.get(NS, &name).is_some());

    // Deleted behind our back → Ok(false).
    let lb = a.grant(&na, Duration::from_secs(2)).await.unwrap();
    assert!(a.keep_alive(lb).await.unwrap());
    assert!(server.delete(NS, &name));
    assert!(!a.keep_alive(lb).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_refuted_by_a_live_node() {
    let server = KubeApiServer::start("127.0.0.1:0").unwrap();
    let a = backend(&server).await;
    let b = backend(&server).await;
    let (na, nb) = (n("node-a"), n("node-b"));
    let la = a.grant(&na, Duration::from_secs(2)).await.unwrap();
    let mut watch = a.watch_node(&na).await.unwrap();
    let a2 = backend(&server).await;
    let refuter = {
        let na = na.clone();
        tokio::spawn(async move {
            match next_event(&mut watch).await {
                Some(NodeKeyEvent::FenceRequested { by, lease, revision }) => {
                    assert_eq!(by, n("node-b"));
                    assert_eq!(lease, la);
                    assert!(a2.refute(&na, &by, revision).await.unwrap());
                    // Already refuted: a second refute finds nothing pending.
                    assert!(!a2.refute(&na, &by, revision).await.unwrap());
                }
                other => panic!("unexpected {other:?}"),
            }
        })
    };
    let s = Instant::now();
    let out = b.fence(&nb, &na, None, Duration::from_millis(100)).await.unwrap();
    eprintln!("refuted fence took {:?}", s.elapsed());
    assert_eq!(out, FenceOutcome::Refused);
    refuter.await.unwrap();
    assert!(server.get(NS, &fence_name(&na, &nb)).is_none(), "refuted request removed");
    assert!(a.keep_alive(la).await.unwrap());
    assert_eq!(lease_annotation(&server.get(NS, "halyard-l2-node-a").unwrap()), Some(la));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_of_a_silent_node_and_the_watch() {
    let server = KubeApiServer::start("127.0.0.1:0").unwrap();
    let a = backend(&server).await;
    let b = backend(&server).await;
    let (na, nb) = (n("node-a"), n("node-b"));
    let la = a.grant(&na, Duration::from_secs(2)).await.unwrap();
    let mut watch = a.watch_node(&na).await.unwrap();

    // Nobody refutes: the request (its own Lease, labelled with the target) is seen by the
    // target's watch; then the node lease is deleted and the watch says so.
    let fencer = {
        let (na, nb) = (na.clone(), nb.clone());
        tokio::spawn(async move { b.fence(&nb, &na, Some(la), Duration::from_millis(150)).await })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let req = server.get(NS, "halyard-l2-fence-node-a-node-b").expect("fence request pending");
    assert_eq!(req["metadata"]["labels"][FENCE_TARGET_LABEL], "node-a");
    assert_eq!(lease_annotation(&req), Some(la));
    let rv: i64 = req["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        next_event(&mut watch).await,
        Some(NodeKeyEvent::FenceRequested { by: nb.clone(), lease: la, revision: rv })
    );
    assert_eq!(fencer.await.unwrap().unwrap(), FenceOutcome::Fenced { lease: Some(la) });
    assert!(server.get(NS, "halyard-l2-node-a").is_none());
    assert!(server.list(NS).is_empty(), "no fence request left behind: {:?}", server.list(NS));
    assert_eq!(next_event(&mut watch).await, Some(NodeKeyEvent::KeyDeleted));
    assert!(!a.keep_alive(la).await.unwrap());

    // A late refute finds nothing.
    assert!(!a.refute(&na, &nb, rv).await.unwrap());

    // Fencing again (stale lease, or no lease at all) is a successful no-op.
    let b = backend(&server).await;
    assert_eq!(b.fence(&nb, &na, Some(la), Duration::ZERO).await.unwrap(), FenceOutcome::Fenced { lease: Some(la) });
    assert_eq!(b.fence(&nb, &na, None, Duration::ZERO).await.unwrap(), FenceOutcome::Fenced { lease: None });

    // A new incarnation: a fence given the stale lease (from an old heartbeat) hits the lease
    // the node lease carries now.
    let la2 = a.grant(&na, Duration::from_secs(2)).await.unwrap();
    let out = b.fence(&nb, &na, Some(la), Duration::from_millis(10)).await.unwrap();
    assert_eq!(out, FenceOutcome::Fenced { lease: Some(la2) });
    assert!(!a.keep_alive(la2).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fencers_at_once() {
    let server = KubeApiServer::start("127.0.0.1:0").unwrap();
    let a = backend(&server).await;
    let (b, c) = (backend(&server).await, backend(&server).await);
    let (na, nb, nc) = (n("node-a"), n("node-b"), n("node-c"));
    let lc = a.grant(&nc, Duration::from_secs(2)).await.unwrap();
    let (r1, r2) = tokio::join!(
        b.fence(&nb, &nc, Some(lc), Duration::from_millis(50)),
        c.fence(&na, &nc, Some(lc), Duration::from_millis(50)),
    );
    assert_eq!(r1.unwrap(), FenceOutcome::Fenced { lease: Some(lc) });
    assert_eq!(r2.unwrap(), FenceOutcome::Fenced { lease: Some(lc) });
    assert!(!a.keep_alive(lc).await.unwrap());
    assert!(server.list(NS).is_empty(), "{:?}", server.list(NS));

    // One refuted, one not: the target refutes only the request it sees for its lease.
    let lc2 = a.grant(&nc, Duration::from_secs(2)).await.unwrap();
    let mut w = a.watch_node(&nc).await.unwrap();
    let a2 = backend(&server).await;
    let refuter = tokio::spawn(async move {
        // Refute node-b's request only (as if node-a's came from a node it had fenced).
        loop {
            match next_event(&mut w).await {
                Some(NodeKeyEvent::FenceRequested { by, revision, .. }) if by.as_str() == "node-b" => {
                    assert!(a2.refute(&NodeId::new("node-c"), &by, revision).await.unwrap());
                    return;
                }
                Some(_) => {}
                None => panic!("no fence request seen"),
            }
        }
    });
    let (r1, r2) = tokio::join!(
        b.fence(&nb, &nc, None, Duration::from_millis(150)),
        c.fence(&na, &nc, None, Duration::from_millis(150)),
    );
    refuter.await.unwrap();
    assert_eq!(r1.unwrap(), FenceOutcome::Refused);
    assert_eq!(r2.unwrap(), FenceOutcome::Fenced { lease: Some(lc2) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reopens_after_the_server_ends_it() {
    let server = KubeApiServer::start("127.0.0.1:0").unwrap();
    let a = backend(&server).await;
    let b = backend(&server).await;
    let (na, nb) = (n("node-a"), n("node-b"));
    let la = a.grant(&na, Duration::from_secs(2)).await.unwrap();
    let mut watch = a.watch_node(&na).await.unwrap();

    // Watches end (API server restart, LB idle timeout); a fence request made right then is
    // still seen (from the re-list or the new watch).
    server.end_watches();
    let fencer = {
        let (na, nb) = (na.clone(), nb.clone());
        tokio::spawn(async move { b.fence(&nb, &na, None, Duration::from_millis(800)).await })
    };
    match next_event(&mut watch).await {
        Some(NodeKeyEvent::FenceRequested { by, lease, revision }) => {
            assert_eq!((by.as_str(), lease), ("node-b", la));
            assert!(a.refute(&na, &by, revision).await.unwrap());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fencer.await.unwrap().unwrap(), FenceOutcome::Refused);

    // The node lease deleted while no watch is open is reported after the re-list.
    server.end_watches();
    assert!(server.delete(NS, "halyard-l2-node-a"));
    assert_eq!(next_event(&mut watch).await, Some(NodeKeyEvent::KeyDeleted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_and_clear_errors() {
    let server = KubeApiServer::start("127.0.0.1:0").unwrap();
    server.require_token("s3cret");
    // No token: the connect check fails and names the request and the Status.
    let e = KubeLeaseBackend::connect(&cfg(&server)).await.unwrap_err().to_string();
    assert!(e.contains("list leases in namespace kube-system") && e.contains("HTTP 401 Unauthorized"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let b = KubeLeaseBackend::connect(&KubeConfig { token_file: Some(token.clone()), ..cfg(&server) }).await.unwrap();
    let l = b.grant(&n("x"), Duration::from_secs(1)).await.unwrap();
    assert!(b.keep_alive(l).await.unwrap());
    // The token file is read on every request (rotation).
    std::fs::write(&token, "rotated").unwrap();
    let e = b.keep_alive(l).await.unwrap_err().to_string();
    assert!(e.contains("update lease kube-system/halyard-l2-x") && e.contains("401"), "{e}");

    // Invalid names are refused by the server, and the error says which object and why.
    std::fs::write(&token, "s3cret").unwrap();
    let e = b.grant(&n("Not_A_DNS_Name"), Duration::from_secs(1)).await.unwrap_err().to_string();
    assert!(e.contains("halyard-l2-Not_A_DNS_Name") && e.contains("422 Invalid"), "{e}");

    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = KubeConfig { api: format!("http://127.0.0.1:{port}"), ..cfg(&server) };
    match KubeLeaseBackend::connect(&down).await {
        Err(LeaseError::Kube(e)) => assert!(e.to_string().contains("connect to 127.0.0.1"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    // https without a CA file is a configuration error.
    let e = KubeLeaseBackend::new(&KubeConfig { api: "https://10.96.0.1:443".into(), ..cfg(&server) })
        .unwrap_err()
        .to_string();
    assert!(e.contains("CA file"), "{e}");
}

/// https: the stand-in server behind a TLS terminator (tokio-rustls, a certificate from a
/// throw-away CA for 127.0.0.1). The backend verifies it with the CA file; another CA fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_ca_file() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    if std::process::Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipping: openssl not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::Pki::new(&dir.path().join("pki"), "kube-ca");
    let (crt, key) = pki.issue("apiserver", "kube-apiserver", &["127.0.0.1"]);
    let other = tls::Pki::new(&dir.path().join("other"), "other-ca");

    let server = KubeApiServer::start("127.0.0.1:0").unwrap();
    let plain = server.addr();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&crt).unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(sc));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut up) = tokio::net::TcpStream::connect(plain).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });

    let https = KubeConfig { api: format!("https://127.0.0.1:{port}"), ca_file: Some(pki.ca()), ..cfg(&server) };
    let a = KubeLeaseBackend::connect(&https).await.unwrap();
    let b = KubeLeaseBackend::connect(&https).await.unwrap();
    let (na, nb) = (n("node-a"), n("node-b"));
    let la = a.grant(&na, Duration::from_secs(1)).await.unwrap();
    for _ in 0..5 {
        assert!(a.keep_alive(la).await.unwrap());
    }
    let mut w = a.watch_node(&na).await.unwrap();
    assert_eq!(
        b.fence(&nb, &na, None, Duration::from_millis(100)).await.unwrap(),
        FenceOutcome::Fenced { lease: Some(la) }
    );
    assert!(matches!(next_event(&mut w).await, Some(NodeKeyEvent::FenceRequested { lease, .. }) if lease == la));
    assert_eq!(next_event(&mut w).await, Some(NodeKeyEvent::KeyDeleted));

    let wrong = KubeConfig { ca_file: Some(other.ca()), ..https };
    let e = KubeLeaseBackend::connect(&wrong).await.unwrap_err().to_string();
    assert!(e.contains("TLS with 127.0.0.1") && e.contains("certificate"), "{e}");
}
