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
---
apiVersion: v1
kind: Pod
metadata:
  name: web-{idx}
  namespace: default
  labels: {{app: web, pod-template-hash: 7f{idx}}}
spec:
  nodeName: node-{idx}
  containers: [{{name: web, image: nginx, ports: [{{name: http, containerPort: 80}}]}}]
status:
  phase: Running
  hostIP: 10.97.0.{idx}
  podIP: 10.20.{idx}.1
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
        // Identities and endpoints: each remote's pod, with an identity from its cluster's range.
        wait_until(Duration::from_secs(20), "each remote's identity and endpoint known", || {
            let m = mesh(agent);
            let c = m["clusters"].as_array().cloned().unwrap_or_default();
            c.iter().all(|c| c["identities"] == 1 && c["podEndpoints"] == 1).then_some(())
        });
    }
    // `halyard service list` shows the merged backends, remote ones with their cluster.
    let list = agents[0].json(&["service", "list"]);
    let web = list.as_array().and_then(|l| l.iter().find(|s| s["name"] == "web")).cloned().unwrap_or(Value::Null);
    let mut backends: Vec<String> =
        web["backends"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_string()).collect();
    backends.sort();
    assert_eq!(backends, ["10.20.1.1:80/TCP", "10.20.2.1:80/TCP (c2)", "10.20.3.1:80/TCP (c3)"], "{list}");
    // What cluster c2 published: the pod's identity is the first of c2's range (2 << 16), and
    // its ipcache entry points at it (Cilium's key layout and JSON).
    let id = etcds[1].ctl(&["get", "cilium/state/identities/v1/id/131072", "--print-value-only"]).unwrap();
    assert_eq!(
        id.trim(),
        "k8s:app=web;k8s:io.cilium.k8s.policy.cluster=c2;k8s:io.cilium.k8s.policy.serviceaccount=default;\
         k8s:io.kubernetes.pod.namespace=default;"
    );
    let ip = etcds[1].ctl(&["get", "cilium/state/ip/v1/default/10.20.2.1", "--print-value-only"]).unwrap();
    let ip: Value = serde_json::from_str(ip.trim()).unwrap();
    assert_eq!(
        (ip["ID"].as_u64(), ip["HostIP"].as_str(), ip["K8sPodName"].as_str()),
        (Some(131072), Some("10.97.0.2"), Some("web-2"))
    );
    // c3 deletes its service (its pod stays): c3's backend leaves c1's and c2's services.
    agents[2].write_manifest("c.yaml", &cluster_manifests(3, false));
    for (i, agent) in agents.iter().enumerate().take(2) {
        let vip = format!("10.96.1.{}", i + 1);
        wait_until(Duration::from_secs(20), "c3's backend gone", || {
            (backends_of(agent, &vip) == ["10.20.1.1:80", "10.20.2.1:80"]).then_some(())
        });
        let c3 = mesh(agent)["clusters"].as_array().unwrap().iter().find(|c| c["name"] == "c3").cloned().unwrap();
        assert_eq!(c3["services"], 0);
        assert_eq!(c3["nodes"], 1, "c3's node is still shared: {c3}");
        assert_eq!(c3["podEndpoints"], 1, "c3's pod is still there: {c3}");
    }
    // c2's pod goes: its endpoint and (unused) identity leave c1 and c3.
    let no_pod = cluster_manifests(2, true);
    let no_pod = no_pod.split("---\n").filter(|d| !d.contains("kind: Pod")).collect::<Vec<_>>().join("---\n");
    agents[1].write_manifest("c.yaml", &no_pod);
    for i in [0, 2] {
        wait_until(Duration::from_secs(20), "c2's endpoint and identity gone", || {
            let m = mesh(&agents[i]);
            let c2 = m["clusters"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "c2").cloned())?;
            (c2["podEndpoints"] == 0 && c2["identities"] == 0 && c2["services"] == 1).then_some(())
        });
    }
    drop(apis);
}

// ===== without root: a remote cluster written straight into etcd =====

/// Cluster "far" (id 5) as its apiserver would leave it: config, canaries, and the given
/// services (name → backend) and nodes.
fn put_far(etcd: &Etcd, services: &[(&str, &str)], nodes: &[&str]) {
    etcd.ctl(&[
        "put",
        "cilium/cluster-config/far",
        r#"{"id":5,"capabilities":{"syncedCanaries":true,"maxConnectedClusters":255}}"#,
    ])
    .unwrap();
    for (name, backend) in services {
        put_far_service(etcd, name, backend);
    }
    for n in nodes {
        etcd.ctl(&["put", &format!("cilium/state/nodes/v1/far/{n}"), &format!(r#"{{"Name":"{n}","Cluster":"far"}}"#)])
            .unwrap();
    }
    etcd.ctl(&["put", "cilium/state/identities/v1/id/327681", "k8s:app=web;k8s:io.cilium.k8s.policy.cluster=far;"])
        .unwrap();
    etcd.ctl(&[
        "put",
        "cilium/state/ip/v1/default/10.50.0.1",
        r#"{"IP":"10.50.0.1","HostIP":"","ID":327681,"Key":0,"Metadata":""}"#,
    ])
    .unwrap();
    for res in ["nodes", "services", "identities", "ip"] {
        etcd.ctl(&["put", &format!("cilium/synced/far/cilium/state/{res}/v1"), "2026-11-22T00:00:00Z"]).unwrap();
    }
}

fn put_far_service(etcd: &Etcd, name: &str, backend: &str) {
    let v = format!(
        r#"{{"cluster":"far","namespace":"default","name":"{name}","frontends":{{}},"backends":{{"{backend}":{{"http":{{"Protocol":"TCP","Port":80}}}}}},"labels":{{}},"selector":{{}},"includeExternal":true,"shared":true,"clusterID":5}}"#
    );
    etcd.ctl(&["put", &format!("cilium/state/services/v1/far/default/{name}"), &v]).unwrap();
}

fn far(agent: &Agent) -> Value {
    mesh(agent)["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "far").cloned())
        .unwrap_or(Value::Null)
}

/// (services, nodes, identities, endpoints) the agent knows of "far".
fn far_counts(agent: &Agent) -> (u64, u64, u64, u64) {
    let f = far(agent);
    let n = |k: &str| f[k].as_u64().unwrap_or(u64::MAX);
    (n("services"), n("nodes"), n("identities"), n("podEndpoints"))
}

#[test]
fn a_watch_that_falls_behind_a_compaction_relists_and_deletes_what_vanished() {
    if !etcd::available("clustermesh compaction") {
        return;
    }
    let mut etcd = Etcd::start();
    put_far(&etcd, &[("a", "10.60.0.1"), ("b", "10.60.0.2")], &["far-1", "far-2"]);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("far"), format!("endpoints:\n- {}\n", etcd.url())).unwrap();
    let agent = Agent::start_with(
        &[],
        &["--cluster-name", "home", "--cluster-id", "1", "--clustermesh-config", tmp.path().to_str().unwrap()],
    )
    .unwrap();
    agent.wait_for(Duration::from_secs(20), "far ready with 2 services, 2 nodes", |a| {
        (far(a)["ready"] == true && far_counts(a) == (2, 2, 1, 1)).then_some(())
    });

    // While the agent cannot reach etcd: a service, a node and the endpoint go, a service comes,
    // and the history is compacted past the revision the agent's watch would resume from.
    etcd.while_unreachable(|e| {
        e.ctl(&["del", "cilium/state/services/v1/far/default/b"]).unwrap();
        e.ctl(&["del", "cilium/state/nodes/v1/far/far-2"]).unwrap();
        e.ctl(&["del", "cilium/state/ip/v1/default/10.50.0.1"]).unwrap();
        put_far_service(e, "c", "10.60.0.3");
        e.ctl(&["compact", &e.revision().to_string()]).unwrap();
    });
    agent.wait_for(Duration::from_secs(30), "far relisted: services a and c, one node, no endpoint", |a| {
        (far_counts(a) == (2, 1, 1, 0)).then_some(())
    });
    // Every prefix (nodes, services, identities, ip, canaries) finds its revision compacted and
    // re-lists; some only after their back-off, so wait for all five.
    agent.wait_for(Duration::from_secs(30), "all five watches re-listed after the compaction", |a| {
        (a.log().matches("revision compacted").count() >= 5).then_some(())
    });

    // An ordinary etcd restart is resumed from the last revision: no re-list, changes still seen.
    let relists = |log: &str| log.matches("re-listing").count();
    let before = relists(&agent.log());
    etcd.restart();
    std::thread::sleep(Duration::from_secs(1));
    put_far_service(&etcd, "d", "10.60.0.4");
    agent.wait_for(Duration::from_secs(30), "service d seen after the restart", |a| {
        (far_counts(a).0 == 3).then_some(())
    });
    assert_eq!(relists(&agent.log()), before, "a restart on the same data resumes the watch:\n{}", agent.log());
}

#[test]
fn the_clustermesh_config_directory_is_followed_while_running() {
    if !etcd::available("clustermesh config reload") {
        return;
    }
    let etcd = Etcd::start();
    put_far(&etcd, &[("a", "10.60.0.1")], &["far-1"]);
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(
        &[],
        &["--cluster-name", "home", "--cluster-id", "1", "--clustermesh-config", tmp.path().to_str().unwrap()],
    )
    .unwrap();
    assert_eq!(mesh(&agent)["clusters"].as_array().map(Vec::len), Some(0), "{}", mesh(&agent));

    // A new file: the cluster is followed.
    std::fs::write(tmp.path().join("far"), format!("endpoints:\n- {}\n", etcd.url())).unwrap();
    agent.wait_for(Duration::from_secs(20), "far followed after its file appeared", |a| {
        (far(a)["ready"] == true && far_counts(a) == (1, 1, 1, 1)).then_some(())
    });
    // The file turns bad: reported, and far keeps being followed with the last good config.
    std::fs::write(tmp.path().join("far"), "endpoints: [\n").unwrap();
    agent.wait_for(Duration::from_secs(10), "the bad file reported", |a| {
        let m = mesh(a);
        let errs = m["configErrors"].as_array().cloned().unwrap_or_default();
        errs.iter().any(|e| e.as_str().unwrap_or("").contains("still following far")).then_some(())
    });
    assert_eq!(far(&agent)["ready"], true);
    // A file for a cluster that does not answer, and far's file fixed again.
    std::fs::write(tmp.path().join("nowhere"), "endpoints:\n- http://127.0.0.1:9\n").unwrap();
    std::fs::write(tmp.path().join("far"), format!("endpoints:\n- {}\n", etcd.url())).unwrap();
    agent.wait_for(Duration::from_secs(10), "two remotes, no config errors", |a| {
        let m = mesh(a);
        (m["clusters"].as_array().map(Vec::len) == Some(2) && m["configErrors"].as_array().is_some_and(Vec::is_empty))
            .then_some(())
    });
    // Removing the file stops following far and drops its state.
    std::fs::remove_file(tmp.path().join("far")).unwrap();
    agent.wait_for(Duration::from_secs(10), "far dropped after its file was removed", |a| {
        let m = mesh(a);
        let names: Vec<String> = m["clusters"]
            .as_array()
            .map(|c| c.iter().map(|c| c["name"].as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default();
        (names == ["nowhere"]).then_some(())
    });
}
