//! eBGP TTL, multihop and GTSM (RFC 5082) between `halyard-bgpd` and a real BIRD 2, in network
//! namespaces. Needs root and bird2 (skips with a message otherwise).
//!
//! Two topologies:
//! - direct: node ── router (one link, the peer one hop away);
//! - routed: node ── mid ── far, where `mid` forwards IPv4 and BIRD runs in `far`, two hops
//!   away: its packets reach the node with the TTL they were sent with minus one.
//!
//! Negative outcomes are asserted over a window of several connect-retry rounds (1 s on both
//! sides), together with the kernel counter that explains them: `TcpExt TCPMinTTLDrop` on the
//! node (segments our GTSM minimum dropped) or `Icmp OutTimeExcds` on `mid` (our TTL 1 packets
//! dying there). A positive control on the same topology follows each negative, so a broken
//! setup cannot pass as a refused session.

use std::time::Duration;

use halyard_tests::netns::{Netns, poll_until, require_program, require_root, veth_pair};
use halyard_tests::peers::{BgpNeighbor, Bgpd, Bird, BirdConfig, Peer};

/// How long a session that must not come up is watched.
const NEGATIVE_WINDOW: Duration = Duration::from_secs(6);

/// `halyard-bgpd` in a namespace with one peer. `peer_extra`: TOML lines added to the
/// `[[peer]]` table; `listen`: accept on port 179 too.
fn start_speaker(ns: &Netns, router_id: &str, peer: &str, peer_extra: &str, listen: bool) -> Bgpd {
    let listen = if listen { "listen_port = 179\n" } else { "" };
    Bgpd::start(ns, peer, |status| {
        format!(
            r#"router_id = "{router_id}"
local_asn = 65001
status_file = "{status}"
{listen}
[[peer]]
address = "{peer}"
asn = 65000
hold_time = 9
connect_retry_time = 1
{peer_extra}

[[route]]
prefix = "192.0.2.0/24"
"#,
            status = status.display()
        )
    })
}

/// Waits until both ends are Established; panics with both sides' view otherwise.
fn wait_established(speaker: &mut Bgpd, bird: &Bird, what: &str) {
    let up = poll_until(Duration::from_secs(30), || {
        (speaker.established() && bird.bgp_state("peer1").as_deref() == Some("Established")).then_some(())
    });
    if up.is_none() {
        panic!(
            "{what}: the session never came up\nour status: {:#}\nbird: {}\nhalyard-bgpd log:\n{}\nbird log:\n{}",
            speaker.status(),
            bird.try_birdc("show protocols all peer1").unwrap_or_else(|e| e),
            speaker.child.log(),
            bird.log()
        );
    }
}

/// Watches for [`NEGATIVE_WINDOW`] that neither end reaches Established.
fn assert_never_established(speaker: &mut Bgpd, bird: &Bird, what: &str) {
    let up = poll_until(NEGATIVE_WINDOW, || {
        (speaker.established() || bird.bgp_state("peer1").as_deref() == Some("Established")).then_some(())
    });
    assert!(
        up.is_none(),
        "{what}: the session came up\nour status: {:#}\nbird: {}\nhalyard-bgpd log:\n{}",
        speaker.status(),
        bird.try_birdc("show protocols all peer1").unwrap_or_else(|e| e),
        speaker.child.log()
    );
    let s = speaker.status();
    let state = s["state"].as_str().unwrap_or("none").to_string();
    assert!(["Idle", "Connect", "Active", "OpenSent"].contains(&state.as_str()), "{what}: our state {state}: {s:#}");
}

/// A counter from `/proc/net/netstat` or `/proc/net/snmp` inside `ns` (`group` is the line
/// prefix, e.g. `TcpExt`, `Icmp`).
fn counter(ns: &Netns, file: &str, group: &str, name: &str) -> u64 {
    let text = ns.run_ok(&["cat", file]);
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        panic!("no {group} lines in {file}:\n{text}");
    };
    let i = names.split_whitespace().position(|n| n == name).unwrap_or_else(|| panic!("no {name} in {file}"));
    values.split_whitespace().nth(i).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad {name} in {file}"))
}

fn min_ttl_drops(node: &Netns) -> u64 {
    counter(node, "/proc/net/netstat", "TcpExt", "TCPMinTTLDrop")
}

fn time_exceeded_sent(mid: &Netns) -> u64 {
    counter(mid, "/proc/net/snmp", "Icmp", "OutTimeExcds")
}

const NODE_D: &str = "10.83.0.2";
const ROUTER_D: &str = "10.83.0.1";

const NODE: &str = "10.83.1.2";
const MID_NODE_SIDE: &str = "10.83.1.1";
const MID_FAR_SIDE: &str = "10.83.2.1";
const FAR: &str = "10.83.2.2";

/// node ── mid ── far, IPv4 forwarding on in `mid`, default routes through it.
fn routed() -> (Netns, Netns, Netns) {
    let node = Netns::new("ttlnode");
    let mid = Netns::new("ttlmid");
    let far = Netns::new("ttlfar");
    veth_pair(&node, "eth0", &[&format!("{NODE}/24")], &mid, "eth0", &[&format!("{MID_NODE_SIDE}/24")]);
    veth_pair(&mid, "eth1", &[&format!("{MID_FAR_SIDE}/24")], &far, "eth0", &[&format!("{FAR}/24")]);
    mid.run_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.ip_ok(&["route", "add", "default", "via", MID_NODE_SIDE]);
    far.ip_ok(&["route", "add", "default", "via", MID_FAR_SIDE]);
    let ping = node.exec(&["ping", "-c", "1", "-W", "2", FAR]);
    assert!(ping.status.success(), "no route node → far: {}", String::from_utf8_lossy(&ping.stdout));
    (node, mid, far)
}

/// GTSM on both ends of a directly connected eBGP session: both send with TTL 255 and accept
/// nothing less; the session comes up whichever side connects (we also listen).
#[test]
fn gtsm_on_both_sides_establishes() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let router = Netns::new("gtsmrtr");
    let node = Netns::new("gtsmnode");
    veth_pair(&router, "eth0", &[&format!("{ROUTER_D}/24")], &node, "eth0", &[&format!("{NODE_D}/24")]);
    let bird = Bird::start(
        &router,
        &BirdConfig::new(ROUTER_D).neighbor(BgpNeighbor::new(NODE_D, 65000, 65001).ttl_security(true)),
    );
    let mut speaker = start_speaker(&node, NODE_D, ROUTER_D, "ttl_security = true", true);
    wait_established(&mut speaker, &bird, "GTSM on both sides");
    let routes = bird.routes(None);
    assert!(routes.contains("192.0.2.0/24"), "{routes}");
    // BIRD's minimum is 255 too: that it took our segments shows we send with 255.
    assert!(bird.birdc("show protocols all peer1").contains("Established"));
}

/// GTSM on our side, BIRD two hops away with `multihop 2` and no GTSM: its segments reach us
/// with TTL 1, below our minimum (255 - 2 + 1 = 254), and the kernel drops them: the SYNs it
/// sends to our listener, and its OPEN and ACKs on the connection we dial (BIRD answers SYNs
/// from its listener with TTL 255, so our dial-out may complete the handshake and sit in
/// OpenSent). The session never comes up. Once BIRD turns GTSM on (same topology) and our
/// speaker starts afresh, it does: the positive control that the routed setup itself works.
/// (Without the restart, our half-dead OpenSent connection may wait for `TCP_USER_TIMEOUT`, or,
/// when BIRD's ACK of our OPEN got through, for the 4-minute OpenSent hold timer, since BIRD's
/// FIN/RST are dropped too: that made this test flaky on CI.)
#[test]
fn gtsm_drops_a_peer_two_hops_away_that_does_not_use_it() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (node, _mid, far) = routed();
    let neighbor = BgpNeighbor::new(NODE, 65000, 65001).multihop(2);
    let bird = Bird::start(&far, &BirdConfig::new(FAR).neighbor(neighbor.clone()));
    let drops_before = min_ttl_drops(&node);
    let mut speaker = start_speaker(&node, NODE, FAR, "ttl_security = true\nmultihop_ttl = 2", true);
    assert_never_established(&mut speaker, &bird, "GTSM against a peer without it");
    let drops = min_ttl_drops(&node) - drops_before;
    assert!(drops > 0, "no segment was dropped by the GTSM minimum (TCPMinTTLDrop unchanged)");
    eprintln!("TCPMinTTLDrop: {drops} segments dropped while BIRD lacked GTSM");

    // Positive control: BIRD with GTSM sends with 255, which arrives with 254.
    drop(speaker);
    bird.reconfigure(&BirdConfig::new(FAR).neighbor(neighbor.ttl_security(true)));
    let mut speaker = start_speaker(&node, NODE, FAR, "ttl_security = true\nmultihop_ttl = 2", true);
    wait_established(&mut speaker, &bird, "GTSM on both sides, two hops apart");
}

/// eBGP multihop: BIRD two hops away with `multihop 2`. With our default eBGP TTL of 1 our
/// packets die at `mid` (it sends ICMP Time Exceeded) and the session never comes up; with
/// `multihop_ttl = 2` it does. We do not listen here, so only our own connection counts.
#[test]
fn ebgp_multihop_needs_the_ttl() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (node, mid, far) = routed();
    let bird = Bird::start(&far, &BirdConfig::new(FAR).neighbor(BgpNeighbor::new(NODE, 65000, 65001).multihop(2)));
    let exceeded_before = time_exceeded_sent(&mid);
    let mut speaker = start_speaker(&node, NODE, FAR, "", false);
    assert_never_established(&mut speaker, &bird, "eBGP with TTL 1 to a peer two hops away");
    let exceeded = time_exceeded_sent(&mid) - exceeded_before;
    assert!(exceeded > 0, "mid sent no ICMP Time Exceeded: our SYNs did not die there");
    drop(speaker);

    let mut speaker = start_speaker(&node, NODE, FAR, "multihop_ttl = 2", false);
    wait_established(&mut speaker, &bird, "eBGP multihop 2");
    let routes = bird.routes(None);
    assert!(routes.contains("192.0.2.0/24"), "{routes}");
}
