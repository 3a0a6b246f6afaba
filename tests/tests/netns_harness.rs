//! Tests of the network-namespace harness itself (`halyard_tests::netns`, `halyard_tests::peers`).
//!
//! NEEDS ROOT: every test except `bird_config_renders` creates network namespaces with
//! `ip netns`; without root (or without a usable `ip netns`) they print `skipped: …` and pass.
//! Packages: iproute2 (ip), iputils-ping (ping), bird2 (bird, birdc). Without `ping` the veth test
//! checks reachability with a TCP probe instead; without bird the BIRD tests skip.
//! Only addresses inside the namespaces the tests create are used.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use halyard_tests::netns::{
    Bridge, Netns, find_program, netns_list, poll_until, require_program, require_root, veth_pair, wait_until,
};
use halyard_tests::peers::{BgpNeighbor, Bird, BirdConfig, Peer, parse_protocols};

/// Whether `from` reaches `addr`: `ping -c1 -W1` when ping is installed; otherwise a TCP connect
/// to a closed port (port 9), where "Connection refused" proves the SYN got there and the RST
/// came back.
fn reaches(from: &Netns, addr: &str) -> bool {
    if find_program("ping").is_some() {
        from.exec(&["ping", "-c1", "-W1", addr]).status.success()
    } else {
        let probe = format!("exec 3<>/dev/tcp/{addr}/9");
        let out = from.exec(&["timeout", "2", "bash", "-c", &probe]);
        String::from_utf8_lossy(&out.stderr).contains("Connection refused")
    }
}

fn assert_reaches(from: &Netns, addr: &str) {
    wait_until(Duration::from_secs(5), &format!("{addr} to answer from {}", from.name()), || {
        reaches(from, addr).then_some(())
    });
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn veth_pair_pings_v4_and_v6_and_drop_removes_namespaces() {
    if !require_root() {
        return;
    }
    if find_program("ping").is_none() {
        println!("note: `ping` not installed (Debian package iputils-ping); using a TCP probe instead");
    }
    let a = Netns::new("va");
    let b = Netns::new("vb");
    veth_pair(&a, "eth0", &["10.200.0.1/24", "fd00:200::1/64"], &b, "eth0", &["10.200.0.2/24", "fd00:200::2/64"]);
    assert_reaches(&a, "10.200.0.2");
    assert_reaches(&b, "10.200.0.1");
    assert_reaches(&a, "fd00:200::2");
    assert_reaches(&b, "fd00:200::1");

    // A process spawned in `a` whose guard outlives the namespace: dropping `a` kills it.
    let mut sleeper = a.spawn(["sleep", "300"], std::env::temp_dir().join(format!("{}-sleep.log", a.name())));
    assert!(sleeper.try_wait().is_none(), "sleep exited at once: {}", sleeper.log());
    assert_eq!(a.pids(), vec![sleeper.pid()]);

    let names = [a.name().to_string(), b.name().to_string()];
    assert!(names.iter().all(|n| netns_list().contains(n)), "{names:?} not in {:?}", netns_list());
    drop(a);
    drop(b);
    let gone = netns_list();
    assert!(!names.iter().any(|n| gone.contains(n)), "{names:?} still in `ip netns list`: {gone:?}");
    let status = wait_until(Duration::from_secs(5), "the spawned sleep to die", || sleeper.try_wait());
    assert!(!status.success(), "sleep was killed, not finished: {status}");
    let _ = std::fs::remove_file(sleeper.log_path());
}

#[test]
fn namespaces_are_deleted_when_the_test_body_panics() {
    if !require_root() {
        return;
    }
    let names = Mutex::new(Vec::new());
    let pid = Mutex::new(None);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let a = Netns::new("pa");
        let b = Netns::new("pb");
        names.lock().unwrap().extend([a.name().to_string(), b.name().to_string()]);
        veth_pair(&a, "veth0", &["10.201.0.1/30"], &b, "veth0", &["10.201.0.2/30"]);
        let log = std::env::temp_dir().join(format!("{}-sleep.log", b.name()));
        let child = b.spawn(["sleep", "300"], log);
        *pid.lock().unwrap() = Some(child.pid());
        panic!("deliberate panic inside the test body (expected)");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    let list = netns_list();
    assert!(!names.iter().any(|n| list.contains(n)), "{names:?} left behind after a panic: {list:?}");
    let pid = pid.into_inner().unwrap().expect("sleep was started");
    assert!(!pid_alive(pid), "sleep {pid} still alive after the panic");
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{}-sleep.log", names[1])));
}

#[test]
fn bridge_joins_three_namespaces() {
    if !require_root() {
        return;
    }
    let lan = Bridge::new("lan");
    let n1 = Netns::new("n1");
    let n2 = Netns::new("n2");
    let c = Netns::new("c");
    lan.attach(&n1, "eth0", &["10.202.0.11/24", "fd00:202::11/64"]);
    lan.attach(&n2, "eth0", &["10.202.0.12/24", "fd00:202::12/64"]);
    let port = lan.attach(&c, "eth0", &["10.202.0.100/24", "fd00:202::100/64"]);
    for addr in ["10.202.0.11", "10.202.0.12", "fd00:202::11", "fd00:202::12"] {
        assert_reaches(&c, addr);
    }
    assert_reaches(&n1, "10.202.0.12");
    assert_eq!(port, "p2");
    let ports = lan.ns().ip_ok(&["-o", "link", "show", "master", Bridge::NAME]);
    assert_eq!(ports.lines().count(), 3, "bridge ports: {ports}");
}

#[test]
fn bird_config_renders() {
    let config =
        BirdConfig::new("10.203.0.1").neighbor(BgpNeighbor::new("10.203.0.2", 65010, 65020).hold_time(9)).neighbor(
            BgpNeighbor::new("fd00:203::2", 65010, 65020)
                .name("v6peer")
                .passive(true)
                .multihop(2)
                .password("s3cr3t")
                .local_address("fd00:203::1")
                .port(1790),
        );
    let text = config.render();
    for line in [
        "router id 10.203.0.1;",
        "protocol device { }",
        "protocol bgp peer1 {",
        "  local as 65010;",
        "  neighbor 10.203.0.2 as 65020;",
        "  hold time 9;",
        "protocol bgp v6peer {",
        "  local fd00:203::1 as 65010;",
        "  neighbor fd00:203::2 port 1790 as 65020;",
        "  passive on;",
        "  multihop 2;",
        "  password \"s3cr3t\";",
        "  ipv4 { import all; export none; };",
        "  ipv6 { import all; export none; };",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("protocol kernel"));
    assert_eq!(config.protocol_name(0), "peer1");
    assert_eq!(config.protocol_name(1), "v6peer");

    // BIRD itself accepts it (parse only; no root needed).
    if let Some(bird) = find_program("bird") {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("bird.conf");
        std::fs::write(&conf, &text).unwrap();
        let out = std::process::Command::new(bird).arg("-p").arg("-c").arg(&conf).output().unwrap();
        assert!(out.status.success(), "bird -p: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    } else {
        println!("note: `bird` not installed (Debian package bird2); config not parse-checked");
    }
}

#[test]
fn parse_protocols_reads_birds_table() {
    let text = "Name       Proto      Table      State  Since         Info\n\
                device1    Device     ---        up     2026-05-01 10:00:00  \n\
                peer1      BGP        ---        start  10:00:00.123  Active        Socket: Connection refused\n";
    let rows = parse_protocols(text);
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].name.as_str(), rows[0].proto.as_str(), rows[0].info.as_str()), ("device1", "Device", ""));
    assert_eq!(rows[1].state, "start");
    assert_eq!(rows[1].info, "Active Socket: Connection refused");
}

#[test]
fn bird_starts_answers_and_tries_a_silent_neighbor() {
    if !require_root() || !require_program("bird", "bird2") || !require_program("birdc", "bird2") {
        return;
    }
    let a = Netns::new("ba");
    let b = Netns::new("bb");
    veth_pair(&a, "eth0", &["10.204.0.1/24", "fd00:204::1/64"], &b, "eth0", &["10.204.0.2/24", "fd00:204::2/64"]);
    // Nothing listens in `b`: the IPv4 session gets refused, the IPv6 one (MD5, multihop) too.
    let config = BirdConfig::new("10.204.0.1")
        .neighbor(BgpNeighbor::new("10.204.0.2", 65001, 65002).name("silent4").hold_time(9))
        .neighbor(
            BgpNeighbor::new("fd00:204::2", 65001, 65002)
                .name("silent6")
                .local_address("fd00:204::1")
                .multihop(2)
                .password("halyard"),
        )
        .neighbor(BgpNeighbor::new("10.204.0.2", 65001, 65003).name("waiting").port(1790).passive(true));
    let bird = Bird::start(&a, &config);
    let pid = bird.pid();
    // `ip netns exec` execs: the PID we hold is BIRD's own, not a wrapper's.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "bird", "PID {pid} is not bird");
    assert_eq!(a.pids(), vec![pid]);

    let status = bird.birdc("show status");
    assert!(status.contains("Daemon is up and running"), "show status: {status}");
    assert!(status.contains("10.204.0.1"), "router id missing from show status: {status}");

    for name in ["silent4", "silent6"] {
        bird.wait_bgp_state(name, &["Active", "Connect"], Duration::from_secs(10));
    }
    bird.wait_bgp_state("waiting", &["Active", "Connect", "Passive"], Duration::from_secs(10));
    // BIRD really connected to 10.204.0.2 (connect delay 1 s): `b`'s kernel refused it. (The
    // MD5 session cannot see that: Linux drops the unsigned RST, so it stays in Connect/Active.)
    wait_until(Duration::from_secs(10), "silent4 to report `Connection refused`", || {
        bird.try_birdc("show protocols all silent4").ok().filter(|s| s.contains("Connection refused"))
    });
    println!("{}", bird.birdc("show protocols"));
    let protocols = bird.protocols();
    let names: Vec<&str> = protocols.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["device1", "silent4", "silent6", "waiting"], "{protocols:?}");
    let silent4 = &protocols[1];
    assert_eq!(silent4.proto, "BGP");
    assert!(
        silent4.info.starts_with("Active") || silent4.info.starts_with("Connect"),
        "silent4 info: {:?}\n{}",
        silent4.info,
        bird.birdc("show protocols")
    );
    // Nothing was received, and the tables exist.
    let routes = bird.routes(None);
    assert!(!routes.contains("unicast"), "unexpected routes:\n{routes}");
    bird.routes(Some("master6"));

    let dir = bird.dir().to_path_buf();
    assert!(bird.socket().starts_with(&dir));
    drop(bird);
    assert!(!pid_alive(pid), "bird {pid} still alive after drop");
    assert!(a.pids().is_empty());
    assert!(!dir.exists(), "bird's directory {} left behind", dir.display());
    // `b` never ran anything.
    assert!(b.pids().is_empty());
    let _ = poll_until(Duration::ZERO, || Some(()));
}
