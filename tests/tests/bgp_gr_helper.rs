//! Graceful restart, helper side (RFC 4724 §4.2): `halyard-bgpd` keeps the routes of a BIRD 2
//! that restarts (`graceful restart on`), then drops those BIRD does not send again, or all of
//! them when BIRD does not come back within its Restart Time. BIRD is "restarted" by killing it
//! (SIGKILL, by PID: its kernel closes the TCP connection, no NOTIFICATION) and starting a new
//! one in the same namespace. BIRD restarts without the Forwarding State bit, so its stale
//! routes go as soon as it is back; FRR (`preserve-fw-state`) sets it, and there End-of-RIB is
//! what removes the route it did not send again. Needs root, bird2 and frr (skips with a
//! message otherwise).

use std::time::Duration;

use halyard_tests::netns::{Netns, require_program, require_root, veth_pair};
use halyard_tests::peers::{BgpNeighbor, Bgpd, Bird, Frr, FrrConfig, Peer};
use serde_json::Value;

const ROUTER: &str = "10.87.0.1";
const NODE: &str = "10.87.0.2";
const KEEP: &str = "198.51.100.0/24";
const GONE: &str = "203.0.113.0/24";

/// BIRD exporting static routes to us, with graceful restart (Restart Time `restart_time`).
fn bird_config(routes: &[&str], restart_time: u16) -> String {
    let statics: String = routes.iter().map(|r| format!("  route {r} blackhole;\n")).collect();
    format!(
        r#"log stderr all;
router id {ROUTER};
protocol device {{ }}
protocol static s4 {{
  ipv4;
{statics}}}
protocol bgp peer1 {{
  debug {{ states, events }};
  local as 65000;
  neighbor {NODE} as 65001;
  graceful restart on;
  graceful restart time {restart_time};
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  ipv4 {{ import all; export all; }};
}}
"#
    )
}

/// `halyard-bgpd` with graceful restart on (so that it advertises the capability).
fn start_speaker(ns: &Netns) -> Bgpd {
    Bgpd::start(ns, ROUTER, |status| {
        format!(
            r#"router_id = "{NODE}"
local_asn = 65001
status_file = "{status}"

[[peer]]
address = "{ROUTER}"
asn = 65000
hold_time = 90
connect_retry_time = 1
graceful_restart = 120
"#,
            status = status.display()
        )
    })
}

fn has(s: &Value, prefixes: &[&str]) -> bool {
    let got: Vec<&str> = s["received"].as_array().into_iter().flatten().filter_map(|p| p.as_str()).collect();
    got.len() == prefixes.len() && prefixes.iter().all(|p| got.contains(p))
}

fn bring_up(restart_time: u16) -> (Netns, Netns, Bird, Bgpd) {
    let router = Netns::new("grrtr");
    let node = Netns::new("grnode");
    veth_pair(&router, "eth0", &[&format!("{ROUTER}/24")], &node, "eth0", &[&format!("{NODE}/24")]);
    let bird = Bird::start_raw(&router, &bird_config(&[KEEP, GONE], restart_time));
    let mut speaker = start_speaker(&node);
    speaker.wait(Duration::from_secs(30), "the session with both routes", |s| {
        s["state"] == "Established" && has(s, &[KEEP, GONE])
    });
    (router, node, bird, speaker)
}

/// BIRD restarts and sends only one of its two routes again: we keep both (stale) while it is
/// away, and once it is back only the one it sent again is left (BIRD clears the Forwarding
/// State bit, so the stale routes go at Established, RFC 4724 §4.2).
#[test]
fn a_restarting_bird_keeps_its_routes_while_it_is_away() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (router, _node, bird, mut speaker) = bring_up(120);
    drop(bird); // SIGKILL: the kernel closes the connection without a NOTIFICATION
    let s = speaker.wait(Duration::from_secs(10), "the session to go down", |s| s["state"] != "Established");
    assert!(has(&s, &[KEEP, GONE]), "routes dropped while the peer restarts: {s:#}");
    assert_eq!(s["stale"], 2, "{s:#}");
    // Still there a few seconds on.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(speaker.received(), [KEEP, GONE]);

    let bird = Bird::start_raw(&router, &bird_config(&[KEEP], 120));
    let s = speaker.wait(Duration::from_secs(30), "the restarted session with only the route sent again", |s| {
        s["state"] == "Established" && has(s, &[KEEP])
    });
    assert_eq!(s["stale"], 0, "{s:#}");
    let log = speaker.child.log();
    assert!(log.contains("graceful restart: keeping the peer's"), "{log}");
    // BIRD sets the Forwarding State bit only when it preserved forwarding; without it the
    // stale routes go as soon as the session is back (RFC 4724 §4.2), otherwise at End-of-RIB.
    assert!(
        log.contains("graceful restart: End-of-RIB for") || log.contains("graceful restart: dropping the stale"),
        "{log}"
    );
    assert_eq!(bird.wait_bgp_state("peer1", &["Established"], Duration::from_secs(5)), "Established");
    eprintln!("{}", log.lines().filter(|l| l.contains("graceful restart")).collect::<Vec<_>>().join("\n"));
}

/// BIRD does not come back within its Restart Time (3 s): its routes go.
#[test]
fn stale_routes_go_when_bird_does_not_come_back_in_time() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (_router, _node, bird, mut speaker) = bring_up(3);
    let pid = bird.pid();
    drop(bird);
    let s = speaker.wait(Duration::from_secs(10), "the session to go down", |s| s["state"] != "Established");
    assert!(has(&s, &[KEEP, GONE]), "routes dropped at once: {s:#}");
    let s = speaker.wait(Duration::from_secs(10), "the stale routes to go after 3 s", |s| has(s, &[]));
    assert_eq!(s["stale"], 0, "{s:#}");
    let log = speaker.child.log();
    assert!(log.contains("graceful restart: time is up"), "BIRD {pid} killed; log:\n{log}");
}

fn frr_config(routes: &[&str]) -> FrrConfig {
    let mut c = FrrConfig::new(ROUTER)
        .neighbor(BgpNeighbor::new(NODE, 65000, 65001))
        .families(true, false)
        .extra("bgp graceful-restart")
        .extra("bgp graceful-restart preserve-fw-state");
    for r in routes {
        c = c.network(r);
    }
    c
}

/// FRR keeps forwarding state across its restart (F bit set): the stale routes wait for its
/// End-of-RIB, which removes the one it did not send again.
#[test]
fn end_of_rib_from_a_restarted_frr_removes_what_it_did_not_send_again() {
    if !require_root() || !Frr::available() {
        return;
    }
    let router = Netns::new("grfrr");
    let node = Netns::new("grfnode");
    veth_pair(&router, "eth0", &[&format!("{ROUTER}/24")], &node, "eth0", &[&format!("{NODE}/24")]);
    let frr = Frr::start(&router, &frr_config(&[KEEP, GONE]));
    let mut speaker = start_speaker(&node);
    speaker.wait(Duration::from_secs(30), "the session with both FRR routes", |s| {
        s["state"] == "Established" && has(s, &[KEEP, GONE])
    });
    drop(frr); // bgpd and zebra killed by PID: no NOTIFICATION
    let s = speaker.wait(Duration::from_secs(10), "the session to go down", |s| s["state"] != "Established");
    assert!(has(&s, &[KEEP, GONE]), "routes dropped while the peer restarts: {s:#}");

    let _frr = Frr::start(&router, &frr_config(&[KEEP]));
    let s = speaker.wait(Duration::from_secs(30), "the restarted session with only the route sent again", |s| {
        s["state"] == "Established" && has(s, &[KEEP])
    });
    assert_eq!(s["stale"], 0, "{s:#}");
    let log = speaker.child.log();
    assert!(log.contains("graceful restart: End-of-RIB for"), "the stale route should go at End-of-RIB:\n{log}");
    assert!(!log.contains("graceful restart: dropping the stale"), "{log}");
}
