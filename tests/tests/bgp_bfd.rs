//! BFD (RFC 5880/5881) between `halyard-bgpd` and a real BIRD 2, in network namespaces, tied to
//! the BGP session both ways (RFC 5882): BGP hold time 90 s, BFD 100 ms × 3 on both sides, so a
//! teardown within about a second can only come from BFD. Needs root and bird2 (skips with a
//! message otherwise).
//!
//! The failures are made with SIGSTOP (by PID) rather than SIGKILL: a killed daemon's kernel
//! closes its TCP connection at once, and the BGP session would end on that FIN, BFD or not. A
//! stopped one keeps its TCP connection open and goes silent, like a hung router or a dead
//! forwarding path. Everything started is killed by PID when the test ends.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use halyard_tests::netns::{Netns, poll_until, require_program, require_root, veth_pair, wait_until};
use halyard_tests::peers::{BgpNeighbor, Bgpd, Bird, BirdConfig, Peer};

const ROUTER: &str = "10.79.0.1";
const NODE: &str = "10.79.0.2";
/// Generous next to the 300 ms detection time (status file every 200 ms, birdc, a busy CI box),
/// and far below the 90 s hold time.
const BFD_DEADLINE: Duration = Duration::from_millis(1500);

/// `halyard-bgpd` in the node namespace with BFD 100 ms × 3 to the router.
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

[peer.bfd]
min_tx_ms = 100
min_rx_ms = 100
multiplier = 3

[[route]]
prefix = "192.0.2.0/24"
"#,
            status = status.display()
        )
    })
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").args([sig, &pid.to_string()]).stdin(Stdio::null()).status().expect("run kill");
    assert!(st.success(), "kill {sig} {pid} failed");
}

/// Router and node joined by a veth; BIRD (BGP with `bfd on`, hold time 90 s) and our speaker
/// up, with BGP Established and BFD Up on both ends.
fn bring_up() -> (Netns, Netns, Bird, Bgpd) {
    let router = Netns::new("bfdrtr");
    let node = Netns::new("bfdnode");
    veth_pair(&router, "eth0", &[&format!("{ROUTER}/24")], &node, "eth0", &[&format!("{NODE}/24")]);
    let bird = Bird::start(
        &router,
        &BirdConfig::new(ROUTER)
            .neighbor(BgpNeighbor::new(NODE, 65000, 65001).hold_time(90).bfd(true))
            .bfd(100, 100, 3),
    );
    let mut speaker = start_speaker(&node);
    let up = poll_until(Duration::from_secs(30), || {
        if let Some(st) = speaker.child.try_wait() {
            panic!("halyard-bgpd exited ({st}); log:\n{}", speaker.child.log());
        }
        let s = speaker.status();
        let ours = s["state"] == "Established" && s["bfd"]["state"] == "Up";
        let birds = bird.bfd_state(NODE).as_deref() == Some("Up");
        (ours && birds).then_some(s)
    });
    let s = up.unwrap_or_else(|| {
        panic!(
            "BGP + BFD never came up: our status {:#}\nbird bfd: {}\nbird protocols: {}\nhalyard-bgpd log:\n{}\nbird log:\n{}",
            speaker.status(),
            bird.try_birdc("show bfd sessions").unwrap_or_else(|e| e),
            bird.try_birdc("show protocols all").unwrap_or_else(|e| e),
            speaker.child.log(),
            bird.log()
        )
    });
    assert_eq!(s["holdTime"], 90);
    assert_eq!(bird.wait_bgp_state("peer1", &["Established"], Duration::from_secs(5)), "Established");
    (router, node, bird, speaker)
}

/// The router goes silent: our BFD detects it in ~300 ms and our BGP session is torn down
/// (Cease / BFD Down) long before the 90 s hold time; once the router is back, BGP and BFD
/// come back by the normal connect-retry.
#[test]
fn router_failure_tears_our_session_down_within_a_second() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (_router, _node, bird, mut speaker) = bring_up();
    let t0 = Instant::now();
    signal(bird.pid(), "-STOP");
    let down = poll_until(Duration::from_secs(10), || {
        let s = speaker.status();
        (s["state"] != "Established" && s["bfd"]["state"] == "Down").then_some(s)
    });
    let elapsed = t0.elapsed();
    signal(bird.pid(), "-CONT");
    let s =
        down.unwrap_or_else(|| panic!("our session stayed up: {:#}\nlog:\n{}", speaker.status(), speaker.child.log()));
    eprintln!("our session left Established {elapsed:?} after the router froze: {s:#}");
    assert!(elapsed < BFD_DEADLINE, "took {elapsed:?}: {s:#}");
    assert_eq!(s["bfd"]["diag"], "control detection time expired", "{s:#}");
    assert!(s["lastError"].as_str().is_some_and(|e| e.contains("BFD")), "{s:#}");
    let log = speaker.child.log();
    assert!(log.contains("BFD went down"), "{log}");
    assert!(log.contains("sending NOTIFICATION"), "{log}");

    // Back to normal: the session and BFD recover.
    let back = poll_until(Duration::from_secs(30), || {
        let s = speaker.status();
        (s["state"] == "Established" && s["bfd"]["state"] == "Up").then_some(s)
    });
    back.unwrap_or_else(|| {
        panic!("no recovery: {:#}\nlog:\n{}\nbird log:\n{}", speaker.status(), speaker.child.log(), bird.log())
    });
    wait_until(Duration::from_secs(10), "BIRD's BFD to be Up again", || {
        (bird.bfd_state(NODE).as_deref() == Some("Up")).then_some(())
    });
}

/// Our speaker goes silent: BIRD's BFD goes Down in ~300 ms and BIRD (`bfd on`) takes its BGP
/// session down, also long before the hold time.
#[test]
fn our_failure_takes_birds_session_down_within_a_second() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (_router, _node, bird, speaker) = bring_up();
    let t0 = Instant::now();
    signal(speaker.child.pid(), "-STOP");
    let down = poll_until(Duration::from_secs(10), || {
        let bfd = bird.bfd_state(NODE);
        let bgp = bird.bgp_state("peer1");
        (bfd.as_deref() != Some("Up") && bgp.as_deref() != Some("Established")).then_some((bfd, bgp))
    });
    let elapsed = t0.elapsed();
    let info = bird.try_birdc("show protocols all peer1").unwrap_or_else(|e| e);
    signal(speaker.child.pid(), "-CONT");
    let (bfd, bgp) = down.unwrap_or_else(|| panic!("BIRD's session stayed up:\n{info}\nbird log:\n{}", bird.log()));
    eprintln!("BIRD left Established {elapsed:?} after we froze (BFD {bfd:?}, BGP {bgp:?})");
    assert!(elapsed < BFD_DEADLINE, "took {elapsed:?}\n{info}");
    assert!(info.contains("BFD session down"), "BIRD should blame BFD:\n{info}\nbird log:\n{}", bird.log());
}
