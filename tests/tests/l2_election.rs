//! L2 announcements with the multi-node election: three nodes on a bridge LAN run the agent with
//! `--l2-election etcd` (LAN heartbeats + etcd lease fencing, a real etcd in its own namespace).
//! Each LB IP is answered by exactly one node; SIGKILL of the owner plus its link going down moves
//! the IP to another node, and the client's ARP follows. Needs root, arping and etcd.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use halyard_tests::Agent;
use halyard_tests::etcd::{self, Etcd};
use halyard_tests::netns::{Bridge, Netns, require_program, require_root, wait_until};

const MANIFESTS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lan}
spec:
  blocks: [{start: 10.80.1.200, stop: 10.80.1.209}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: lan}
spec:
  interfaces: ["^eth0$"]
  loadBalancerIPs: true
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, annotations: {lbipam.cilium.io/ips: "10.80.1.200"}}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default, annotations: {lbipam.cilium.io/ips: "10.80.1.201"}}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default, annotations: {lbipam.cilium.io/ips: "10.80.1.202"}}
spec: {type: LoadBalancer, ports: [{port: 53}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
---
apiVersion: v1
kind: Node
metadata: {name: node-3}
"#;

/// The MACs that answered `count` ARP requests for `ip` (arping prints one line per reply).
fn arp_macs(client: &Netns, ip: &str, count: u32) -> BTreeSet<String> {
    let o = client.exec(&["arping", "-c", &count.to_string(), "-w", "2", "-I", "eth0", ip]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| l.split('[').nth(1).and_then(|r| r.split(']').next()).map(|m| m.to_lowercase()))
        .collect()
}

/// Which agent owns `ip` according to its own `halyard l2 announcements`.
fn owners(agents: &[Option<Agent>], ip: &str) -> Vec<usize> {
    agents
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let a = a.as_ref()?;
            let o = a.cli(&["l2", "announcements", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            v.as_array()?.iter().any(|r| r["ip"] == ip && r["owner"] == format!("node-{}", i + 1)).then_some(i)
        })
        .collect()
}

#[test]
fn one_owner_per_ip_and_failover_after_sigkill() {
    if !require_root() || !require_program("arping", "iputils-arping") || !etcd::available("l2 election") {
        return;
    }
    let lan = Bridge::new("l2el");
    let etcd_ns = Netns::new("l2etcd");
    lan.attach(&etcd_ns, "eth0", &["10.80.1.50/24"]);
    let etcd = Etcd::start_in(Some(etcd_ns.name()), "10.80.1.50");
    let client = Netns::new("l2cli");
    lan.attach(&client, "eth0", &["10.80.1.100/24"]);
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    let mut agents: Vec<Option<Agent>> = Vec::new();
    for i in 1..=3 {
        let ns = Netns::new(&format!("l2n{i}"));
        ports.push(lan.attach(&ns, "eth0", &[&format!("10.80.1.1{i}/24")]));
        let agent = Agent::start_in(
            ns.name(),
            &[("m.yaml", MANIFESTS)],
            &[
                "--node-name",
                &format!("node-{i}"),
                "--l2-election",
                "etcd",
                "--l2-etcd-endpoints",
                &etcd.url(),
                "--l2-heartbeat-group",
                "10.80.1.255:7946",
            ],
        )
        .unwrap();
        nodes.push(ns);
        agents.push(Some(agent));
    }
    let macs: Vec<String> =
        nodes.iter().map(|n| n.run_ok(&["cat", "/sys/class/net/eth0/address"]).trim().to_lowercase()).collect();

    // Exactly one owner per IP, and the client hears exactly that node.
    let ips = ["10.80.1.200", "10.80.1.201", "10.80.1.202"];
    let mut owner_of = Vec::new();
    for ip in ips {
        let o = halyard_tests::netns::poll_until(Duration::from_secs(20), || {
            let o = owners(&agents, ip);
            (o.len() == 1).then(|| o[0])
        })
        .unwrap_or_else(|| {
            for a in agents.iter().flatten() {
                eprintln!("---- agent log ----\n{}", a.log());
                eprintln!("{}", String::from_utf8_lossy(&a.cli(&["l2", "announcements"]).stdout));
            }
            panic!("no single owner for {ip}")
        });
        let heard = wait_until(Duration::from_secs(10), "an ARP reply", || {
            let m = arp_macs(&client, ip, 3);
            (!m.is_empty()).then_some(m)
        });
        assert_eq!(
            heard,
            BTreeSet::from([macs[o].clone()]),
            "{ip}: replies must come from the owner node-{} only",
            o + 1
        );
        owner_of.push(o);
    }
    // An address nobody holds gets no answer.
    assert!(arp_macs(&client, "10.80.1.209", 1).is_empty());

    // The client's kernel resolves .200 (a ping: the ARP entry is what matters), to the owner.
    let victim = owner_of[0];
    let _ = client.exec(&["ping", "-c", "1", "-W", "1", "10.80.1.200"]);
    let before = client.ip_ok(&["neigh", "show", "10.80.1.200"]).to_lowercase();
    assert!(before.contains(&macs[victim]), "client's neighbour entry: {before}");

    // The owner of .200 dies hard and its link goes down: another node takes over.
    let t0 = Instant::now();
    agents[victim].as_mut().unwrap().kill();
    lan.ns().ip_ok(&["link", "set", &ports[victim], "down"]);
    let new_owner = wait_until(Duration::from_secs(10), "a new owner for 10.80.1.200", || {
        let o = owners(&agents, "10.80.1.200");
        (o.len() == 1 && o[0] != victim).then(|| o[0])
    });
    let took = t0.elapsed();
    let heard = wait_until(Duration::from_secs(10), "the client to hear the new owner", || {
        let m = arp_macs(&client, "10.80.1.200", 2);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(heard, BTreeSet::from([macs[new_owner].clone()]), "after failover only node-{} answers", new_owner + 1);
    // The client's neighbour entry moved by itself (gratuitous ARP on takeover).
    let neigh = wait_until(Duration::from_secs(5), "the client's neighbour entry to follow", || {
        let n = client.ip_ok(&["neigh", "show", "10.80.1.200"]).to_lowercase();
        n.contains(&macs[new_owner]).then_some(n)
    });
    eprintln!("failover (kill to a single new owner in the CLI) took {took:?}; neighbour: {neigh}");
    // The other IPs did not move unless they were the victim's.
    for (k, ip) in ips.iter().enumerate().skip(1) {
        if owner_of[k] != victim {
            assert_eq!(owners(&agents, ip), vec![owner_of[k]], "{ip} moved although its owner lives");
        }
    }
}
