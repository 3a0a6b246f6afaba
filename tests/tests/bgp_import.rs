//! `--bgp-import`: routes a real BIRD 2 router sends the agent are installed into the node's
//! kernel routing table (rtnetlink, protocol 73), carry traffic, follow withdrawals, survive an
//! agent restart, and are removed on a clean stop and by `--uninstall`. Needs root and bird2.

use std::time::Duration;

use halyard_tests::netns::{Netns, require_program, require_root, veth_pair, wait_until};
use halyard_tests::peers::{BgpNeighbor, Bird, BirdConfig};
use halyard_tests::{Agent, bin};
use serde_json::Value;

const BGP: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: e2e-node, labels: {bgp: "on"}}
status:
  addresses: [{type: InternalIP, address: 10.79.0.2}]
---
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {name: lab}
spec:
  nodeSelector: {matchLabels: {bgp: "on"}}
  bgpInstances:
    - name: main
      localASN: 65001
      peers:
        - {name: router, peerASN: 65000, peerAddress: 10.79.0.1, peerConfigRef: {name: router}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {name: router}
spec:
  timers: {holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 1}
  gracefulRestart: {enabled: true, restartTimeSeconds: 60}
  families:
    - {afi: ipv4, safi: unicast}
    - {afi: ipv6, safi: unicast}
"#;

/// BIRD originating `routes` (static, blackholed at BIRD: only the BGP side matters), with the
/// IPv6 ones sent with next hop fd00:79::1.
fn bird_config(routes: &[&str]) -> BirdConfig {
    let v4: String = routes.iter().filter(|r| !r.contains(':')).map(|r| format!("  route {r} blackhole;\n")).collect();
    let v6: String = routes.iter().filter(|r| r.contains(':')).map(|r| format!("  route {r} blackhole;\n")).collect();
    BirdConfig::new("10.79.0.1")
        .neighbor(BgpNeighbor::new("10.79.0.2", 65000, 65001))
        .channels(true, true)
        .extra(&format!("protocol static s4 {{\n  ipv4;\n{v4}}}\nprotocol static s6 {{\n  ipv6;\n{v6}}}\n"))
}

/// Our routes in the node's main table: destination → (gateway, metric).
fn kernel_routes(node: &Netns) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        let text = node.run_ok(&["ip", "-j", fam, "route", "show", "proto", "73"]);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        for r in v.as_array().into_iter().flatten() {
            out.push((
                r["dst"].as_str().unwrap_or_default().to_string(),
                r["gateway"].as_str().or(r["via"]["host"].as_str()).unwrap_or_default().to_string(),
                r["metric"].as_u64().unwrap_or(0),
            ));
        }
    }
    out.sort();
    out
}

fn has(routes: &[(String, String, u64)], dst: &str) -> bool {
    routes.iter().any(|(d, _, _)| d == dst)
}

#[test]
fn learned_routes_reach_the_kernel_and_follow_the_router() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let router = Netns::new("imprtr");
    let node = Netns::new("impnode");
    veth_pair(&router, "eth0", &["10.79.0.1/24", "fd00:79::1/64"], &node, "eth0", &["10.79.0.2/24", "fd00:79::2/64"]);
    // Something to reach through an imported route: 10.200.0.1 lives on the router.
    router.run_ok(&["ip", "addr", "add", "10.200.0.1/32", "dev", "lo"]);
    let all = ["10.200.0.0/16", "10.201.1.0/24", "10.203.0.0/16", "192.168.77.0/24", "fd00:200::/48"];
    let bird = Bird::start_raw(&router, &bird_raw(&all));
    let flags = [
        "--bgp-import",
        "--bgp-import-metric",
        "30",
        "--bgp-import-prefixes",
        "10.200.0.0/16,10.201.0.0/16,10.203.0.0/16,fd00:200::/32",
    ];
    let mut agent = Agent::start_in(node.name(), &[("bgp.yaml", BGP)], &flags).expect("agent starts");

    let routes = wait_until(Duration::from_secs(20), "the learned routes in the kernel", || {
        let r = kernel_routes(&node);
        (has(&r, "10.200.0.0/16") && has(&r, "10.201.1.0/24") && has(&r, "fd00:200::/48")).then_some(r)
    });
    assert!(routes.contains(&("10.200.0.0/16".into(), "10.79.0.1".into(), 30)), "{routes:?}");
    assert!(routes.contains(&("fd00:200::/48".into(), "fd00:79::1".into(), 30)), "{routes:?}");
    assert!(!has(&routes, "192.168.77.0/24"), "outside --bgp-import-prefixes: {routes:?}");
    // The route carries traffic.
    node.run_ok(&["ping", "-c", "1", "-W", "2", "10.200.0.1"]);

    // The CLI shows each received route, whether it is the best and what the kernel did.
    let received = agent.json(&["bgp", "routes", "received"]);
    let row = |prefix: &str| {
        received.as_array().unwrap().iter().find(|r| r["prefix"] == prefix).cloned().unwrap_or(Value::Null)
    };
    assert_eq!(row("10.200.0.0/16")["kernel"], "installed", "{received:#}");
    assert_eq!(row("10.200.0.0/16")["nextHop"], "10.79.0.1");
    assert_eq!(row("10.200.0.0/16")["asPath"], serde_json::json!([65000]));
    assert_eq!(row("10.200.0.0/16")["best"], true);
    assert_eq!(row("192.168.77.0/24")["kernel"], "skipped: outside --bgp-import-prefixes");
    // A next hop off the link: Linux does not resolve next hops recursively, so the kernel
    // refuses the route, and the reason is shown.
    assert_eq!(row("10.203.0.0/16")["nextHop"], "198.51.100.7", "{received:#}");
    let refused = row("10.203.0.0/16")["kernel"].as_str().unwrap_or_default().to_string();
    assert!(refused.starts_with("refused: "), "{received:#}");
    assert!(!has(&kernel_routes(&node), "10.203.0.0/16"));
    let peers = agent.json(&["bgp", "peers"]);
    assert_eq!(peers[0]["received"], 5, "{peers:#}");
    let text = String::from_utf8(agent.cli(&["bgp", "routes", "received"]).stdout).unwrap();
    eprintln!("{text}");
    assert!(text.contains("NEXT HOP") && text.contains("KERNEL") && text.contains("installed"), "{text}");

    // A withdrawal removes the route; the rest stay.
    reconfigure(&bird, &bird_raw(&["10.200.0.0/16", "192.168.77.0/24", "fd00:200::/48"]));
    wait_until(Duration::from_secs(10), "10.201.1.0/24 to leave the kernel", || {
        (!has(&kernel_routes(&node), "10.201.1.0/24")).then_some(())
    });
    assert!(has(&kernel_routes(&node), "10.200.0.0/16"));

    // The agent dies: its routes stay in the kernel (forwarding goes on). While it is away
    // the router stops sending 10.200.0.0/16; the restarted agent adopts the routes, and once
    // the router's End-of-RIB is in, removes the one it was not sent again.
    agent.kill();
    assert!(has(&kernel_routes(&node), "10.200.0.0/16") && has(&kernel_routes(&node), "fd00:200::/48"));
    reconfigure(&bird, &bird_raw(&["192.168.77.0/24", "fd00:200::/48"]));
    agent.restart().unwrap();
    wait_until(Duration::from_secs(20), "the previous run's 10.200.0.0/16 to be swept", || {
        let r = kernel_routes(&node);
        (!has(&r, "10.200.0.0/16")).then_some(())
    });
    let r = kernel_routes(&node);
    assert!(has(&r, "fd00:200::/48"), "a route learned again must stay: {r:?}");
    assert!(agent.log().contains("keeping the previous run's routes"), "{}", agent.log());

    // `--uninstall` (with the agent gone) removes our routes and nothing else.
    agent.kill();
    node.run_ok(&["ip", "route", "add", "10.250.0.0/24", "via", "10.79.0.1"]);
    // (Its own pin directory, so that the datapath part of --uninstall touches nobody else's.)
    let state = tempfile::tempdir().unwrap();
    let pins = format!("/sys/fs/bpf/halyard-import-test-{}", std::process::id());
    let out = node.run_ok(&[
        bin("halyard-agent").to_str().unwrap(),
        "--uninstall",
        "--state-dir",
        state.path().to_str().unwrap(),
        "--bpf-pin-dir",
        &pins,
    ]);
    assert!(out.contains("BGP-imported routes removed: 1"), "{out}");
    assert!(kernel_routes(&node).is_empty());
    assert!(
        node.run_ok(&["ip", "route", "show", "10.250.0.0/24"]).contains("10.79.0.1"),
        "a route not ours was touched"
    );
}

/// A clean stop removes the routes of a peer without graceful restart.
#[test]
fn a_clean_stop_removes_routes_of_peers_without_graceful_restart() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let router = Netns::new("imprtr2");
    let node = Netns::new("impnode2");
    veth_pair(&router, "eth0", &["10.79.0.1/24", "fd00:79::1/64"], &node, "eth0", &["10.79.0.2/24", "fd00:79::2/64"]);
    let _bird = Bird::start_raw(&router, &bird_raw(&["10.200.0.0/16"]));
    let bgp = BGP.replace("  gracefulRestart: {enabled: true, restartTimeSeconds: 60}\n", "");
    let mut agent = Agent::start_in(node.name(), &[("bgp.yaml", &bgp)], &["--bgp-import"]).expect("agent starts");
    wait_until(Duration::from_secs(20), "the route in the kernel", || {
        has(&kernel_routes(&node), "10.200.0.0/16").then_some(())
    });
    agent.stop();
    assert!(kernel_routes(&node).is_empty(), "{:?}", kernel_routes(&node));
}

/// BIRD's config exporting `routes` to the agent; the IPv6 channel's next hop is set, as the
/// session runs over IPv4.
fn bird_raw(routes: &[&str]) -> String {
    bird_config(routes)
        .render()
        // 10.203.0.0/16 goes out with a next hop that is not on the link.
        .replace(
            "ipv4 { import all; export none; }",
            "ipv4 { import all; export filter { if net = 10.203.0.0/16 then bgp_next_hop = 198.51.100.7; accept; }; }",
        )
        .replace("ipv6 { import all; export none; }", "ipv6 { import all; export all; next hop address fd00:79::1; }")
}

fn reconfigure(bird: &Bird, text: &str) {
    std::fs::write(bird.config_path(), text).unwrap();
    let out = bird.birdc("configure");
    assert!(out.contains("Reconfigured") || out.contains("Reconfiguration in progress"), "birdc configure: {out}");
}
