//! The agent runs BFD (RFC 5880/5881) with a real BIRD 2 from MetalLB YAML: a `BGPPeer` with
//! `bfdProfile` pointing at a `BFDProfile`. `halyard bgp peers` shows the BFD state (table
//! column and JSON), the metrics export `bgp_bfd_up`, and BIRD sees its BFD session Up. Needs
//! root and bird2 (skips with a message otherwise).

use std::time::Duration;

use halyard_tests::Agent;
use halyard_tests::netns::{Netns, poll_until, require_program, require_root, veth_pair};
use halyard_tests::peers::{BgpNeighbor, Bird, BirdConfig, Peer};

const ROUTER: &str = "10.85.0.1";
const NODE: &str = "10.85.0.2";

const METALLB: &str = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool, namespace: metallb-system}
spec: {addresses: [192.168.30.0/28]}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: tor, namespace: metallb-system}
spec:
  myASN: 64512
  peerASN: 65000
  peerAddress: 10.85.0.1
  routerID: 10.85.0.2
  holdTime: 90s
  connectTime: 1s
  bfdProfile: fast
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec: {transmitInterval: 100, receiveInterval: 100, detectMultiplier: 3}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: all, namespace: metallb-system}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: LoadBalancer, ports: [{port: 80}]}
"#;

#[test]
fn metallb_bfd_profile_brings_bfd_up_with_bird() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let router = Netns::new("abfdrtr");
    let node = Netns::new("abfdnode");
    veth_pair(&router, "eth0", &[&format!("{ROUTER}/24")], &node, "eth0", &[&format!("{NODE}/24")]);
    let bird = Bird::start(
        &router,
        &BirdConfig::new(ROUTER)
            .neighbor(BgpNeighbor::new(NODE, 65000, 64512).hold_time(90).bfd(true))
            .bfd(100, 100, 3),
    );
    let agent = Agent::start_in(node.name(), &[("metallb.yaml", METALLB)], &["--metrics-addr", "127.0.0.1:9891"])
        .expect("agent starts");

    let up = poll_until(Duration::from_secs(30), || {
        let p = agent.json(&["bgp", "peers"]);
        let ours = p[0]["state"] == "established" && p[0]["bfd"] == "up";
        let birds = bird.bfd_state(NODE).as_deref() == Some("Up");
        (ours && birds).then_some(p)
    });
    let peers = up.unwrap_or_else(|| {
        panic!(
            "BGP + BFD never came up: {:#}\nbird bfd: {}\nagent log:\n{}\nbird log:\n{}",
            agent.json(&["bgp", "peers"]),
            bird.try_birdc("show bfd sessions").unwrap_or_else(|e| e),
            agent.log(),
            bird.log()
        )
    });
    assert_eq!(peers[0]["name"], "metallb/tor");
    assert_eq!(bird.wait_bgp_state("peer1", &["Established"], Duration::from_secs(5)), "Established");

    // The table has a BFD column.
    let out = agent.cli(&["bgp", "peers"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("BFD"), "{table}");
    let row = table.lines().find(|l| l.contains(ROUTER)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.split_whitespace().any(|c| c == "up"), "{table}");

    let metrics = node.run_ok(&["curl", "-fsS", "http://127.0.0.1:9891/metrics"]);
    let labels = format!("{{peer=\"metallb/tor\",address=\"{ROUTER}\"}}");
    assert!(metrics.contains(&format!("halyard_bgp_bfd_up{labels} 1")), "{metrics}");

    // A changed BFDProfile is applied to the running BFD session: the BGP session stays (BIRD's
    // protocol line, with its "since" time, is unchanged) and BFD stays up.
    let line =
        || bird.birdc("show protocols peer1").lines().find(|l| l.starts_with("peer1")).unwrap_or_default().to_string();
    let before = line();
    agent.write_manifest(
        "metallb.yaml",
        &METALLB.replace("transmitInterval: 100, receiveInterval: 100", "transmitInterval: 200, receiveInterval: 200"),
    );
    let restarted = poll_until(Duration::from_secs(20), || {
        let log = agent.log();
        let p = agent.json(&["bgp", "peers"]);
        (log.contains("applied to the running BFD session")
            && p[0]["bfd"] == "up"
            && bird.bfd_state(NODE).as_deref() == Some("Up"))
        .then_some(())
    });
    assert!(
        restarted.is_some(),
        "BFD did not come back: {:#}
{}",
        agent.json(&["bgp", "peers"]),
        agent.log()
    );
    assert_eq!(line(), before, "the BGP session was reset by a BFD change");
    assert!(!agent.log().contains("stopping its session"), "{}", agent.log());
}
