//! L2 announcements elected through Kubernetes Leases: three nodes on a bridge LAN run the agent
//! with `--l2-election kubernetes` (LAN heartbeats + `coordination.k8s.io/v1` Lease fencing)
//! against the stand-in API server (`kube-lease-server`, `halyard_tests::kubeapi`: there is no
//! kube-apiserver on the test machines) in its own namespace on the LAN, with a bearer token.
//! Each LB IP is answered by exactly one node; SIGKILL of the owner plus its link going down
//! moves the IP (after the 1 s horizon the Kubernetes backend needs), the dead node's Lease is
//! deleted by the fence, and the client's ARP follows. Needs root and arping.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use halyard_tests::Agent;
use halyard_tests::l2::{arp_macs, owners};
use halyard_tests::netns::{Bridge, ChildGuard, Netns, poll_until, require_program, require_root, wait_until};

const API: &str = "http://10.80.1.50:6443";
const TOKEN: &str = "e2e-token";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";

/// The Lease objects, as the client sees them over the API: name → holderIdentity.
fn leases(client: &Netns) -> Option<Vec<(String, String)>> {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let o = client.exec(&["curl", "-sf", "-m", "2", "-H", &auth, &format!("{API}{LEASES}")]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    Some(
        v["items"]
            .as_array()?
            .iter()
            .map(|l| {
                let name = l["metadata"]["name"].as_str().unwrap_or_default().to_string();
                (name, l["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string())
            })
            .collect(),
    )
}

struct Cluster {
    lan: Bridge,
    _api_ns: Netns,
    _api: ChildGuard,
    client: Netns,
    _nodes: Vec<Netns>,
    ports: Vec<String>,
    agents: Vec<Option<Agent>>,
    macs: Vec<String>,
    _dir: tempfile::TempDir,
}

fn cluster(tag: &str) -> Cluster {
    let dir = tempfile::Builder::new().prefix("halyard-kube-e2e-").tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let lan = Bridge::new(tag);
    let api_ns = Netns::new(&format!("{tag}k"));
    lan.attach(&api_ns, "eth0", &["10.80.1.50/24"]);
    let api = api_ns.spawn(
        [halyard_tests::bin("kube-lease-server").to_str().unwrap(), "--listen", "10.80.1.50:6443", "--token", TOKEN],
        dir.path().join("kube-lease-server.log"),
    );
    let client = Netns::new(&format!("{tag}c"));
    lan.attach(&client, "eth0", &["10.80.1.100/24"]);
    wait_until(Duration::from_secs(10), "the stand-in API server", || leases(&client));
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    let mut agents = Vec::new();
    let token = token.to_str().unwrap().to_string();
    for i in 1..=3 {
        let ns = Netns::new(&format!("{tag}{i}"));
        ports.push(lan.attach(&ns, "eth0", &[&format!("10.80.1.1{i}/24")]));
        let name = format!("node-{i}");
        let args = [
            "--node-name",
            &name,
            "--l2-election",
            "kubernetes",
            "--l2-kube-api",
            API,
            "--l2-kube-token-file",
            &token,
            "--l2-heartbeat-group",
            "10.80.1.255:7946",
            "--l2-horizon-ms",
            "1000",
            "--l2-refute-window-ms",
            "300",
        ];
        let agent = Agent::start_in(ns.name(), &[("m.yaml", halyard_tests::L2_ELECTION_MANIFESTS)], &args).unwrap();
        nodes.push(ns);
        agents.push(Some(agent));
    }
    let macs = nodes.iter().map(|n| n.run_ok(&["cat", "/sys/class/net/eth0/address"]).trim().to_lowercase()).collect();
    Cluster { lan, _api_ns: api_ns, _api: api, client, _nodes: nodes, ports, agents, macs, _dir: dir }
}

#[test]
fn kube_leases_one_owner_per_ip_and_failover_after_sigkill() {
    if !require_root() || !require_program("arping", "iputils-arping") || !require_program("curl", "curl") {
        return;
    }
    let mut c = cluster("l2k");
    let client = &c.client;
    let ips = ["10.80.1.200", "10.80.1.201", "10.80.1.202"];
    let mut owner_of = Vec::new();
    for ip in ips {
        let o = poll_until(Duration::from_secs(30), || {
            let o = owners(&c.agents, ip);
            (o.len() == 1).then(|| o[0])
        })
        .unwrap_or_else(|| {
            for a in c.agents.iter().flatten() {
                eprintln!("---- agent log ----\n{}", a.log());
                eprintln!("{}", String::from_utf8_lossy(&a.cli(&["l2", "announcements"]).stdout));
            }
            panic!("no single owner for {ip}")
        });
        let heard = wait_until(Duration::from_secs(10), "an ARP reply", || {
            let m = arp_macs(client, ip, 3);
            (!m.is_empty()).then_some(m)
        });
        assert_eq!(heard, BTreeSet::from([c.macs[o].clone()]), "{ip}: replies must come from node-{} only", o + 1);
        owner_of.push(o);
    }
    assert!(arp_macs(client, "10.80.1.209", 1).is_empty(), "nobody answers for an unassigned address");

    // Every node holds its Lease object, named after it, with itself as holder.
    let mut l = leases(client).expect("list leases");
    l.sort();
    assert_eq!(
        l,
        (1..=3).map(|i| (format!("halyard-l2-node-{i}"), format!("node-{i}"))).collect::<Vec<_>>(),
        "node leases"
    );

    let victim = owner_of[0];
    let _ = client.exec(&["ping", "-c", "1", "-W", "1", "10.80.1.200"]);
    let before = client.ip_ok(&["neigh", "show", "10.80.1.200"]).to_lowercase();
    assert!(before.contains(&c.macs[victim]), "client's neighbour entry: {before}");

    // The owner dies hard and its link goes down: a peer fences it through the API server
    // (its Lease is deleted) and takes over after the horizon.
    let t0 = Instant::now();
    c.agents[victim].as_mut().unwrap().kill();
    c.lan.ns().ip_ok(&["link", "set", &c.ports[victim], "down"]);
    let new_owner = wait_until(Duration::from_secs(20), "a new owner for 10.80.1.200", || {
        let o = owners(&c.agents, "10.80.1.200");
        (o.len() == 1 && o[0] != victim).then(|| o[0])
    });
    let took = t0.elapsed();
    let heard = wait_until(Duration::from_secs(10), "the client to hear the new owner", || {
        let m = arp_macs(client, "10.80.1.200", 2);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(
        heard,
        BTreeSet::from([c.macs[new_owner].clone()]),
        "after failover only node-{} answers",
        new_owner + 1
    );
    let neigh = wait_until(Duration::from_secs(5), "the client's neighbour entry to follow", || {
        let n = client.ip_ok(&["neigh", "show", "10.80.1.200"]).to_lowercase();
        n.contains(&c.macs[new_owner]).then_some(n)
    });
    eprintln!("failover (kill to a single new owner in the CLI) took {took:?}; neighbour: {neigh}");
    let gone = format!("halyard-l2-node-{}", victim + 1);
    let l = leases(client).expect("list leases");
    assert!(!l.iter().any(|(n, _)| *n == gone), "the dead node's Lease was deleted by the fence: {l:?}");
    assert!(!l.iter().any(|(n, _)| n.starts_with("halyard-l2-fence-")), "no fence request left: {l:?}");
    for (k, ip) in ips.iter().enumerate().skip(1) {
        if owner_of[k] != victim {
            assert_eq!(owners(&c.agents, ip), vec![owner_of[k]], "{ip} moved although its owner lives");
        }
    }
}

/// An unreachable API server is a clear error at startup, and the node answers nothing.
#[test]
fn kube_election_reports_an_unreachable_api_server() {
    if !require_root() {
        return;
    }
    // In an empty namespace: nothing listens on the API port, and no host interface is touched.
    let ns = Netns::new("l2ku");
    let api = "http://127.0.0.1:6443";
    let agent = Agent::start_in(
        ns.name(),
        &[("m.yaml", halyard_tests::L2_ELECTION_MANIFESTS)],
        &["--node-name", "node-1", "--l2-election", "kubernetes", "--l2-kube-api", api, "--l2-horizon-ms", "1000"],
    )
    .unwrap();
    let want = format!("L2 election: Kubernetes API {api}: kubernetes API: list leases in namespace kube-system");
    let log = poll_until(Duration::from_secs(10), || {
        let l = agent.log();
        l.contains(&want).then_some(l)
    })
    .unwrap_or_else(|| panic!("no startup error naming the API server; log:\n{}", agent.log()));
    assert!(log.contains("connect to 127.0.0.1"), "{log}");
    assert!(log.contains("this node will not answer ARP/NDP"), "{log}");
}
