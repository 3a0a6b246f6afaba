//! L2 announcements: a client on the LAN bridge resolves a LoadBalancer IP with arping and gets
//! the node's MAC; unowned IPs get no answer; deleting the service stops the answers. Needs root
//! and arping (iputils-arping).

use std::process::Output;
use std::time::Duration;

use halyard_tests::Agent;
use halyard_tests::netns::{Bridge, Netns, require_program, require_root, wait_until};

const MANIFESTS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lan}
spec:
  blocks: [{start: 10.80.0.100, stop: 10.80.0.110}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: lan}
spec:
  interfaces: ["^eth[0-9]+"]
  loadBalancerIPs: true
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  ports: [{port: 80}]
"#;

fn arping(client: &Netns, ip: &str) -> Output {
    client.exec(&["arping", "-c", "1", "-w", "2", "-I", "eth0", ip])
}

#[test]
fn arping_resolves_the_lb_ip_to_the_node() {
    if !require_root() || !require_program("arping", "iputils-arping") {
        return;
    }
    let lan = Bridge::new("lan");
    let node = Netns::new("node");
    let client = Netns::new("cli");
    lan.attach(&node, "eth0", &["10.80.0.2/24"]);
    lan.attach(&client, "eth0", &["10.80.0.10/24"]);
    let agent = Agent::start_in(node.name(), &[("m.yaml", MANIFESTS)], &["--metrics-addr", "127.0.0.1:9890"]).unwrap();
    let ip = agent.service_ips()["default/web"][0].clone();
    assert_eq!(ip, "10.80.0.100");
    let ann = wait_until(Duration::from_secs(10), "the announcement", || {
        let a = agent.json(&["l2", "announcements"]);
        (a.as_array().is_some_and(|v| !v.is_empty()) && a[0]["mac"] != "").then_some(a)
    });
    assert_eq!(ann[0]["interface"], "eth0");
    assert_eq!(ann[0]["owner"], "e2e-node");
    let node_mac = node.run_ok(&["cat", "/sys/class/net/eth0/address"]).trim().to_lowercase();
    assert_eq!(ann[0]["mac"].as_str().unwrap().to_lowercase(), node_mac);

    let out = wait_until(Duration::from_secs(10), "an ARP reply", || {
        let o = arping(&client, &ip);
        o.status.success().then_some(o)
    });
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains(&node_mac), "reply not from the node's MAC {node_mac}:\n{text}");

    // Metrics: one owned IP on eth0, replies counted, and the takeover announcement repeated
    // (two frames — request and reply forms — at once and again 1.1 s later at least).
    let value = |m: &str, name: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(&format!("{name}{{interface=\"eth0\"}}")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let metrics = wait_until(Duration::from_secs(10), "repeated announcements and replies in the metrics", || {
        let m = node.run_ok(&["curl", "-fsS", "http://127.0.0.1:9890/metrics"]);
        (value(&m, "halyard_l2_announcements_sent") >= 4 && value(&m, "halyard_l2_replies_sent") >= 1).then_some(m)
    });
    assert_eq!(value(&metrics, "halyard_l2_owned_ips"), 1, "{metrics}");

    // An IP of the pool that nobody holds is not answered.
    assert!(!arping(&client, "10.80.0.105").status.success(), "an unowned IP was answered");

    // Service gone: the IP is no longer answered.
    agent.write_manifest("m.yaml", &MANIFESTS.replace("kind: Service", "kind: ConfigMapNotAService"));
    wait_until(Duration::from_secs(10), "the answers to stop", || {
        (!arping(&client, &ip).status.success()).then_some(())
    });
    let replies = agent.json(&["l2", "announcements"]);
    assert!(replies.as_array().unwrap().is_empty(), "{replies}");
}

/// IPv6: ndisc6 on the client gets a Neighbor Advertisement with the node's MAC.
#[test]
fn ndisc6_resolves_an_ipv6_lb_ip_to_the_node() {
    if !require_root() || !require_program("ndisc6", "ndisc6") {
        return;
    }
    let lan = Bridge::new("lan");
    let node = Netns::new("node");
    let client = Netns::new("cli");
    lan.attach(&node, "eth0", &["fd00:80::2/64"]);
    lan.attach(&client, "eth0", &["fd00:80::10/64"]);
    let manifests = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lan6}
spec:
  blocks: [{start: "fd00:80::100", stop: "fd00:80::110"}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: lan}
spec:
  loadBalancerIPs: true
---
apiVersion: v1
kind: Service
metadata: {name: web6, namespace: default}
spec:
  type: LoadBalancer
  ipFamilies: [IPv6]
  ports: [{port: 80}]
"#;
    let agent = Agent::start_in(node.name(), &[("m.yaml", manifests)], &[]).unwrap();
    let ip = agent.service_ips()["default/web6"][0].clone();
    assert_eq!(ip, "fd00:80::100");
    let node_mac = node.run_ok(&["cat", "/sys/class/net/eth0/address"]).trim().to_lowercase();
    let out = wait_until(Duration::from_secs(10), "a neighbor advertisement", || {
        let o = client.exec(&["ndisc6", "-1", "-r", "2", "-w", "1000", &ip, "eth0"]);
        o.status.success().then_some(o)
    });
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains(&node_mac), "NA not from the node's MAC {node_mac}:\n{text}");
    let unowned = client.exec(&["ndisc6", "-1", "-r", "1", "-w", "500", "fd00:80::105", "eth0"]);
    assert!(!unowned.status.success(), "an unowned IPv6 address was answered");
}
