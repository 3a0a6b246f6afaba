//! ClusterMesh end to end with real etcd: cluster "east" publishes a global service with its
//! clustermesh-apiserver; the agent of cluster "west" follows east's etcd and merges east's
//! backends into its own global service, in the XDP load balancer's maps. Covers affinity,
//! deletes, malformed values, an etcd that comes back empty, and the stale TTL. Needs root (the
//! datapath) and etcd.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use halyard_tests::etcd::{self, Etcd, Tls};
use halyard_tests::netns::{Bpffs, Netns, require_root, veth_pair, wait_until};
use halyard_tests::tls::Pki;
use halyard_tests::{Agent, bin};
use serde_json::Value;

const EAST_WEB: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  annotations: {service.cilium.io/global: "true"}
spec:
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-east
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
  - addresses: ["10.20.0.1"]
  - addresses: ["10.20.0.2"]
"#;

const EAST_NODE: &str = r#"apiVersion: v1
kind: Node
metadata: {name: east-1}
status:
  addresses: [{type: InternalIP, address: 192.168.20.1}]
"#;

fn west_web(affinity: Option<&str>) -> String {
    let ann = match affinity {
        Some(a) => format!("{{service.cilium.io/global: \"true\", service.cilium.io/affinity: \"{a}\"}}"),
        None => "{service.cilium.io/global: \"true\"}".to_string(),
    };
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {{name: vip}}
spec:
  blocks: [{{cidr: 10.96.0.20/32}}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  annotations: {ann}
spec:
  type: LoadBalancer
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-west
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints:
  - addresses: ["10.30.0.1"]
"#
    )
}

/// A clustermesh-apiserver in a namespace, killed by PID on drop.
struct ApiServer {
    child: Child,
}

impl ApiServer {
    fn start(netns: &str, etcd: &Etcd, manifests: &Path, log: &Path) -> ApiServer {
        Self::start_with(netns, etcd, manifests, log, &[])
    }

    /// Cluster "east" (id 1) with extra flags.
    fn start_with(netns: &str, etcd: &Etcd, manifests: &Path, log: &Path, extra: &[&str]) -> ApiServer {
        Self::start_cluster(netns, "east", 1, etcd, manifests, log, extra)
    }

    fn start_cluster(
        netns: &str,
        name: &str,
        id: u32,
        etcd: &Etcd,
        manifests: &Path,
        log: &Path,
        extra: &[&str],
    ) -> ApiServer {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(bin("clustermesh-apiserver"))
            .args(extra)
            .args(["--cluster-name", name, "--cluster-id", &id.to_string(), "--lease-ttl", "5"])
            .args(["--etcd-endpoints", &etcd.url()])
            .arg("--manifest-dir")
            .arg(manifests)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        ApiServer { child }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mesh(agent: &Agent) -> Value {
    let o = agent.cli(&["clustermesh", "status", "-o", "json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

fn east(agent: &Agent) -> Value {
    mesh(agent)["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "east").cloned())
        .unwrap_or(Value::Null)
}

/// The backend addresses of the web frontend in the LB maps, sorted.
fn lb_backends(agent: &Agent) -> Vec<String> {
    let o = agent.cli(&["bpf", "lb", "list", "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let mut out: Vec<String> = v
        .as_array()
        .and_then(|a| a.iter().find(|f| f["frontend"] == "10.96.0.20:80/TCP"))
        .and_then(|f| f["backends"].as_array())
        .map(|b| b.iter().map(|b| b["address"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn wait_backends(agent: &Agent, want: &[&str], what: &str) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_until(Duration::from_secs(20), what, || (lb_backends(agent) == want).then_some(()));
}

#[test]
fn remote_backends_follow_east_through_deletes_restarts_and_outages() {
    if !require_root() || !etcd::available("clustermesh") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let east_dir = tmp.path().join("east-manifests");
    std::fs::create_dir(&east_dir).unwrap();
    std::fs::write(east_dir.join("web.yaml"), EAST_WEB).unwrap();
    std::fs::write(east_dir.join("node.yaml"), EAST_NODE).unwrap();
    // East's etcd and apiserver in one namespace, west's node in another, joined by a veth.
    let fs = Bpffs::new("mesh");
    let node = Netns::new("west");
    let east_ns = Netns::new("east");
    veth_pair(&node, "eth0", &["10.95.0.2/24"], &east_ns, "eth0", &["10.95.0.1/24"]);
    let mut etcd_east = Etcd::start_in(Some(east_ns.name()), "10.95.0.1");
    let _api = ApiServer::start(east_ns.name(), &etcd_east, &east_dir, &tmp.path().join("apiserver.log"));
    let mesh_dir = tmp.path().join("mesh");
    std::fs::create_dir(&mesh_dir).unwrap();
    std::fs::write(mesh_dir.join("east"), format!("endpoints:\n- {}\n", etcd_east.url())).unwrap();
    std::fs::write(mesh_dir.join("broken"), "endpoints: []\n").unwrap();
    let pin = fs.dir.join("west");
    let mut agent = Agent::start_in(
        node.name(),
        &[("web.yaml", &west_web(None))],
        &[
            "--cluster-name",
            "west",
            "--cluster-id",
            "2",
            "--clustermesh-config",
            mesh_dir.to_str().unwrap(),
            "--clustermesh-stale-ttl-seconds",
            "2",
            "--datapath-interfaces",
            "eth0",
            "--bpf-pin-dir",
            pin.to_str().unwrap(),
            "--node-ipv4",
            "10.95.0.2",
        ],
    )
    .unwrap();

    // 1. East is followed: connected, ready, its node and global service seen.
    let e = wait_until(Duration::from_secs(20), "east ready", || {
        let e = east(&agent);
        (e["ready"] == true && e["services"] == 1 && e["nodes"] == 1).then_some(e)
    });
    assert_eq!(e["connected"], true);
    assert_eq!(e["clusterID"], 1);
    assert_eq!(e["backends"], 2);
    let m = mesh(&agent);
    assert_eq!(m["clusterName"], "west");
    assert!(m["configErrors"].to_string().contains("broken"), "a bad config file is reported: {m}");
    let text = String::from_utf8_lossy(&agent.cli(&["clustermesh", "status"]).stdout).to_string();
    assert!(text.contains("east") && text.contains("1/1 remote clusters ready"), "{text}");

    // 2. The global service uses local and remote backends.
    wait_backends(&agent, &["10.20.0.1:80", "10.20.0.2:80", "10.30.0.1:80"], "merged backends");

    // 3. Affinity local: local backends only while there are any.
    agent.write_manifest("web.yaml", &west_web(Some("local")));
    wait_backends(&agent, &["10.30.0.1:80"], "affinity local");
    agent.write_manifest("web.yaml", &west_web(None));
    wait_backends(&agent, &["10.20.0.1:80", "10.20.0.2:80", "10.30.0.1:80"], "affinity removed");

    // 4. East deletes its service: its backends leave west's service.
    std::fs::remove_file(east_dir.join("web.yaml")).unwrap();
    wait_backends(&agent, &["10.30.0.1:80"], "east's delete propagated");
    std::fs::write(east_dir.join("web.yaml"), EAST_WEB).unwrap();
    wait_backends(&agent, &["10.20.0.1:80", "10.20.0.2:80", "10.30.0.1:80"], "east's service back");

    // 5. A malformed value in east's etcd is reported and skipped; nothing crashes.
    etcd_east.ctl(&["put", "cilium/state/services/v1/east/default/garbage", "{not json"]).unwrap();
    wait_until(Duration::from_secs(10), "malformed entry counted", || {
        (east(&agent)["malformed"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    assert_eq!(east(&agent)["services"], 1);

    // 6. East's etcd comes back empty: the apiserver republishes, west resyncs with no stale
    //    entries (the garbage key is gone with the old etcd).
    etcd_east.restart_empty();
    wait_until(Duration::from_secs(30), "east republished and resynced", || {
        let e = east(&agent);
        (e["ready"] == true && e["services"] == 1 && e["connected"] == true).then_some(())
    });
    wait_backends(&agent, &["10.20.0.1:80", "10.20.0.2:80", "10.30.0.1:80"], "backends after etcd restart");
    assert!(etcd_east.ctl(&["get", "cilium/state/services/v1/east/default/garbage"]).unwrap().is_empty());

    // 7. East unreachable past the stale TTL (2 s): its backends are removed, and return with it.
    etcd_east.kill();
    wait_backends(&agent, &["10.30.0.1:80"], "stale east dropped");
    let e = east(&agent);
    assert_eq!(e["connected"], false);
    assert!(!e["lastFailure"].as_str().unwrap_or("").is_empty(), "{e}");
    etcd_east.restart_empty();
    wait_backends(&agent, &["10.20.0.1:80", "10.20.0.2:80", "10.30.0.1:80"], "east back after the outage");
    agent.stop();
}

#[test]
fn mtls_and_roles_let_remotes_only_read_and_refuse_wrong_certificates() {
    if !require_root()
        || !etcd::available("clustermesh mtls")
        || !halyard_tests::netns::require_program("openssl", "openssl")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"), "east-ca");
    let (server_crt, server_key) = pki.issue("server", "etcd", &["10.95.1.1", "127.0.0.1"]);
    let (root_crt, root_key) = pki.issue("root", "root", &[]);
    let (admin_crt, admin_key) = pki.issue("admin", "admin-east", &[]);
    let (remote_crt, remote_key) = pki.issue("remote", "remote", &[]);
    let rogue = Pki::new(&tmp.path().join("rogue"), "rogue-ca");
    let (rogue_crt, rogue_key) = rogue.issue("remote", "remote", &[]);

    let east_dir = tmp.path().join("east-manifests");
    std::fs::create_dir(&east_dir).unwrap();
    std::fs::write(east_dir.join("web.yaml"), EAST_WEB).unwrap();
    let node = Netns::new("tlswest");
    let east_ns = Netns::new("tlseast");
    veth_pair(&node, "eth0", &["10.95.1.2/24"], &east_ns, "eth0", &["10.95.1.1/24"]);
    let tls =
        Tls { ca: pki.ca(), cert: server_crt, key: server_key, ctl_cert: root_crt.clone(), ctl_key: root_key.clone() };
    let etcd_east = Etcd::start_tls(Some(east_ns.name()), "10.95.1.1", tls);
    let ca = pki.ca();
    let _api = ApiServer::start_with(
        east_ns.name(),
        &etcd_east,
        &east_dir,
        &tmp.path().join("apiserver.log"),
        &[
            "--etcd-ca",
            ca.to_str().unwrap(),
            "--etcd-cert",
            admin_crt.to_str().unwrap(),
            "--etcd-key",
            admin_key.to_str().unwrap(),
            "--etcd-init-users",
        ],
    );

    let mesh_dir = tmp.path().join("mesh");
    std::fs::create_dir(&mesh_dir).unwrap();
    let conf = |crt: &Path, key: &Path| {
        format!(
            "endpoints:\n- {}\ntrusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
            etcd_east.url(),
            ca.display(),
            crt.display(),
            key.display()
        )
    };
    std::fs::write(mesh_dir.join("east"), conf(&remote_crt, &remote_key)).unwrap();
    // Same etcd, a certificate from another CA: must be refused.
    std::fs::write(mesh_dir.join("east-rogue"), conf(&rogue_crt, &rogue_key)).unwrap();
    let agent = Agent::start_in(
        node.name(),
        &[],
        &["--cluster-name", "west", "--cluster-id", "2", "--clustermesh-config", mesh_dir.to_str().unwrap()],
    )
    .unwrap();

    // The remote user reads what it needs over mTLS.
    let e = wait_until(Duration::from_secs(30), "east ready over mTLS", || {
        let e = east(&agent);
        (e["ready"] == true && e["services"] == 1).then_some(e)
    });
    assert_eq!(e["backends"], 2, "{e}");

    // The rogue certificate is refused, and the status says so.
    let rogue_state = wait_until(Duration::from_secs(15), "the rogue cluster's failure", || {
        let m = mesh(&agent);
        let r = m["clusters"].as_array()?.iter().find(|c| c["name"] == "east-rogue")?.clone();
        (!r["lastFailure"].as_str().unwrap_or("").is_empty()).then_some(r)
    });
    assert_eq!(rogue_state["connected"], false);
    assert_eq!(rogue_state["ready"], false);
    let why = rogue_state["lastFailure"].as_str().unwrap().to_lowercase();
    assert!(why.contains("certificate") || why.contains("tls") || why.contains("handshake"), "unclear failure: {why}");

    // etcd's roles: the remote user may read the state, not write it, not read other clusters' config.
    let remote = Some((remote_crt.as_path(), remote_key.as_path()));
    assert!(etcd_east.ctl_as(remote, &["get", "cilium/state/", "--prefix", "--keys-only"]).unwrap().contains("east"));
    let denied = etcd_east.ctl_as(remote, &["put", "cilium/state/services/v1/east/default/x", "{}"]).unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    let denied = etcd_east.ctl_as(remote, &["get", "cilium/cluster-config/other"]).unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    // No client certificate at all: refused by the TLS layer.
    assert!(etcd_east.ctl_as(None, &["get", "cilium/state/", "--prefix", "--keys-only"]).is_err());
    // The cluster's own apiserver wrote with its admin identity (the state is there).
    assert!(etcd_east.ctl(&["get", "cilium/cluster-config/east"]).unwrap().contains("east"));
}

fn cluster_manifests(idx: u32, with_service: bool) -> String {
    let mut s = format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {{name: vip}}
spec:
  blocks: [{{cidr: 10.96.1.{idx}/32}}]
---
apiVersion: v1
kind: Node
metadata: {{name: node-{idx}}}
status:
  addresses: [{{type: InternalIP, address: 10.97.0.{idx}}}]
"#
    );
    if with_service {
        s.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  annotations: {{service.cilium.io/global: "true"}}
spec:
  type: LoadBalancer
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-{idx}
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints:
  - addresses: ["10.20.{idx}.1"]
"#
        ));
    }
    s
}

fn backends_of(agent: &Agent, vip: &str) -> Vec<String> {
    let o = agent.cli(&["bpf", "lb", "list", "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let mut out: Vec<String> = v
        .as_array()
        .and_then(|a| a.iter().find(|f| f["frontend"] == format!("{vip}:80/TCP")))
        .and_then(|f| f["backends"].as_array())
        .map(|b| b.iter().map(|b| b["address"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn three_clusters_share_services_and_nodes_both_ways() {
    if !require_root() || !etcd::available("clustermesh three clusters") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fs = Bpffs::new("mesh3");
    let lan = halyard_tests::netns::Bridge::new("mesh3");
    let names = ["c1", "c2", "c3"];
    let nss: Vec<Netns> = (1..=3).map(|i| Netns::new(&format!("mesh{i}"))).collect();
    for (i, ns) in nss.iter().enumerate() {
        lan.attach(ns, "eth0", &[&format!("10.97.0.{}/24", i + 1)]);
    }
    let etcds: Vec<Etcd> =
        nss.iter().enumerate().map(|(i, ns)| Etcd::start_in(Some(ns.name()), &format!("10.97.0.{}", i + 1))).collect();
    let mut agents = Vec::new();
    let mut apis = Vec::new();
    for (i, ns) in nss.iter().enumerate() {
        let idx = i as u32 + 1;
        let mesh_dir = tmp.path().join(format!("mesh-{idx}"));
        std::fs::create_dir(&mesh_dir).unwrap();
        for (j, other) in names.iter().enumerate() {
            if j != i {
                std::fs::write(mesh_dir.join(other), format!("endpoints:\n- {}\n", etcds[j].url())).unwrap();
            }
        }
        let pin = fs.dir.join(names[i]);
        let agent = Agent::start_in(
            ns.name(),
            &[("c.yaml", &cluster_manifests(idx, true))],
            &[
                "--cluster-name",
                names[i],
                "--cluster-id",
                &idx.to_string(),
                "--node-name",
                &format!("node-{idx}"),
                "--clustermesh-config",
                mesh_dir.to_str().unwrap(),
                "--datapath-interfaces",
                "eth0",
                "--bpf-pin-dir",
                pin.to_str().unwrap(),
                "--node-ipv4",
                &format!("10.97.0.{idx}"),
            ],
        )
        .unwrap();
        // The cluster's apiserver publishes from the same manifests its agent reads.
        let log = tmp.path().join(format!("apiserver-{idx}.log"));
        let api = ApiServer::start_cluster(ns.name(), names[i], idx, &etcds[i], &agent.manifests, &log, &[]);
        agents.push(agent);
        apis.push(api);
    }
    let all = ["10.20.1.1:80", "10.20.2.1:80", "10.20.3.1:80"];
    for (i, agent) in agents.iter().enumerate() {
        let vip = format!("10.96.1.{}", i + 1);
        wait_until(Duration::from_secs(30), &format!("cluster c{} sees all three backends", i + 1), || {
            (backends_of(agent, &vip) == all).then_some(())
        });
        let m = mesh(agent);
        let clusters = m["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 2, "{m}");
        for c in clusters {
            assert_eq!(c["ready"], true, "{m}");
            assert_eq!(c["nodes"], 1, "each remote's node is known: {m}");
            assert_eq!(c["services"], 1, "{m}");
        }
    }
    // c3 stops sharing: its backend leaves c1's and c2's services; c3 keeps all of them.
    agents[2].write_manifest("c.yaml", &cluster_manifests(3, false));
    for (i, agent) in agents.iter().enumerate().take(2) {
        let vip = format!("10.96.1.{}", i + 1);
        wait_until(Duration::from_secs(20), "c3's backend gone", || {
            (backends_of(agent, &vip) == ["10.20.1.1:80", "10.20.2.1:80"]).then_some(())
        });
        let c3 = mesh(agent)["clusters"].as_array().unwrap().iter().find(|c| c["name"] == "c3").cloned().unwrap();
        assert_eq!(c3["services"], 0);
        assert_eq!(c3["nodes"], 1, "c3's node is still shared: {c3}");
    }
    drop(apis);
}
