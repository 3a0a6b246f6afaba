//! Interop of the standalone speaker `halyard-bgpd` with real FRR and GoBGP peers, in network
//! namespaces: session setup, the attributes the peer sees on our routes (AS path, MED,
//! standard and large communities, IPv6 next hop over an IPv4 session), 4-byte ASNs, routes the
//! peer originates, Cease on SIGTERM, and hand-crafted UPDATEs from ExaBGP. Needs root, `frr`,
//! `gobgpd` and `exabgp` (each test skips with a message otherwise).
//!
//! Each test uses its own /24 (`10.88.N.0/24`, `fd00:88:N::/64`; peer `.1`, speaker `.2`) in
//! its own pair of namespaces, so the tests can run in parallel.

use std::path::PathBuf;
use std::time::Duration;

use halyard_tests::netns::{ChildGuard, Netns, require_root, veth_pair, wait_until};
use halyard_tests::peers::{BgpNeighbor, Exabgp, ExabgpConfig, Frr, FrrConfig, Gobgp, GobgpConfig, Peer};
use serde_json::Value;

const PEER_ASN: u32 = 65000;
const FOUR_BYTE_ASN: u32 = 4_200_000_001;
const PEER_PREFIX: &str = "198.51.100.0/24";
const TIMEOUT: Duration = Duration::from_secs(20);

/// Two namespaces joined by a veth: the peer at `10.88.N.1` / `fd00:88:N::1`, the speaker at
/// `.2` / `::2`.
struct Topo {
    peer: Netns,
    us: Netns,
    n: u8,
}

impl Topo {
    fn new(n: u8, peer_kind: &str) -> Topo {
        let peer = Netns::new(peer_kind);
        let us = Netns::new("hybgpd");
        let p4 = format!("10.88.{n}.1/24");
        let p6 = format!("fd00:88:{n}::1/64");
        let u4 = format!("10.88.{n}.2/24");
        let u6 = format!("fd00:88:{n}::2/64");
        veth_pair(&peer, "eth0", &[&p4, &p6], &us, "eth0", &[&u4, &u6]);
        Topo { peer, us, n }
    }

    fn peer_addr(&self) -> String {
        format!("10.88.{}.1", self.n)
    }

    fn our_addr(&self) -> String {
        format!("10.88.{}.2", self.n)
    }

    fn our_v6(&self) -> String {
        format!("fd00:88:{}::2", self.n)
    }
}

/// `halyard-bgpd -c CONF` in our namespace, with its status file.
struct Speaker {
    child: ChildGuard,
    status: PathBuf,
    peer: String,
    _dir: tempfile::TempDir,
}

impl Speaker {
    fn start(topo: &Topo, local_asn: u32) -> Speaker {
        let dir = tempfile::Builder::new().prefix("halyard-bgpd-").tempdir().expect("tempdir");
        let status = dir.path().join("status.json");
        let conf = dir.path().join("halyard-bgpd.toml");
        let text = format!(
            r#"router_id = "{us}"
local_asn = {local_asn}
status_file = "{status}"

[[peer]]
address = "{peer}"
asn = {PEER_ASN}
hold_time = 9
connect_retry_time = 1
next_hop_v6 = "{v6}"

[[route]]
prefix = "192.0.2.0/24"
communities = ["65001:100", "no-export"]
large_communities = ["65001:1:2"]
med = 10

[[route]]
prefix = "2001:db8:1::/48"
"#,
            us = topo.our_addr(),
            peer = topo.peer_addr(),
            v6 = topo.our_v6(),
            status = status.display(),
        );
        std::fs::write(&conf, text).expect("write halyard-bgpd.toml");
        let bin = halyard_tests::bin("halyard-bgpd");
        let child = topo.us.spawn([bin.as_os_str(), "-c".as_ref(), conf.as_os_str()], dir.path().join("bgpd.log"));
        Speaker { child, status, peer: topo.peer_addr(), _dir: dir }
    }

    /// Our status entry for the peer (`Null` until the status file exists).
    fn status(&self) -> Value {
        let v: Option<Value> = std::fs::read_to_string(&self.status).ok().and_then(|t| serde_json::from_str(&t).ok());
        v.map(|v| v[&self.peer].clone()).unwrap_or(Value::Null)
    }

    fn wait_established(&mut self, peer_log: impl Fn() -> String) -> Value {
        let found = halyard_tests::netns::poll_until(TIMEOUT, || {
            if let Some(st) = self.child.try_wait() {
                panic!("halyard-bgpd exited ({st}); log:\n{}", self.child.log());
            }
            let s = self.status();
            (s["state"] == "Established").then_some(s)
        });
        found.unwrap_or_else(|| {
            panic!(
                "our session never got Established; status {:#}\nhalyard-bgpd log:\n{}\npeer log:\n{}",
                self.status(),
                self.child.log(),
                peer_log()
            )
        })
    }

    /// Waits until the speaker's status lists `prefix` as received from the peer.
    fn wait_received(&self, prefix: &str, peer_log: impl Fn() -> String) -> Value {
        let found = halyard_tests::netns::poll_until(TIMEOUT, || {
            let s = self.status();
            let has = s["received"].as_array().is_some_and(|r| r.iter().any(|p| p == prefix));
            has.then_some(s)
        });
        found.unwrap_or_else(|| {
            panic!(
                "{prefix} never showed up in our received list: {:#}\nhalyard-bgpd log:\n{}\npeer log:\n{}",
                self.status(),
                self.child.log(),
                peer_log()
            )
        })
    }

    fn stop(&mut self) {
        self.child.stop(Duration::from_secs(10));
    }

    fn log(&self) -> String {
        self.child.log()
    }
}

fn frr_start(topo: &Topo, our_asn: u32) -> Frr {
    let cfg = FrrConfig::new(&topo.peer_addr())
        .neighbor(BgpNeighbor::new(&topo.our_addr(), PEER_ASN, our_asn).hold_time(9))
        .network(PEER_PREFIX);
    Frr::start(&topo.peer, &cfg)
}

fn gobgp_start(topo: &Topo, our_asn: u32) -> Gobgp {
    let cfg = GobgpConfig::new(&topo.peer_addr())
        .neighbor(BgpNeighbor::new(&topo.our_addr(), PEER_ASN, our_asn).hold_time(9));
    let g = Gobgp::start(&topo.peer, &cfg);
    g.add_route(PEER_PREFIX);
    g
}

fn frr_skip() -> bool {
    !require_root() || !Frr::available()
}

fn gobgp_skip() -> bool {
    !require_root() || !Gobgp::available()
}

/// FRR learns both our routes with all their attributes; we learn FRR's route.
#[test]
fn frr_exchanges_routes_with_attributes() {
    if frr_skip() {
        return;
    }
    let topo = Topo::new(41, "frr");
    let frr = frr_start(&topo, 65001);
    let mut us = Speaker::start(&topo, 65001);
    let ours = topo.our_addr();
    frr.wait_established(&ours, TIMEOUT);
    let st = us.wait_established(|| frr.log());
    assert_eq!(st["peerAsn"], PEER_ASN);
    assert_eq!(st["holdTime"], 9);

    let v4 = wait_until(TIMEOUT, "FRR to learn 192.0.2.0/24", || {
        let r = frr.route_json("ipv4", "192.0.2.0/24");
        r["paths"].as_array().is_some_and(|p| !p.is_empty()).then_some(r)
    });
    let path = &v4["paths"][0];
    assert_eq!(path["aspath"]["string"], "65001", "{v4:#}");
    assert_eq!(path["metric"], 10, "{v4:#}");
    assert_eq!(path["valid"], true, "{v4:#}");
    let communities: Vec<&str> =
        path["community"]["list"].as_array().map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert_eq!(communities, ["65001:100", "noExport"], "{v4:#}");
    assert_eq!(path["largeCommunity"]["list"], serde_json::json!(["65001:1:2"]), "{v4:#}");
    assert_eq!(path["nexthops"][0]["ip"], ours.as_str(), "{v4:#}");

    let v6 = wait_until(TIMEOUT, "FRR to learn 2001:db8:1::/48", || {
        let r = frr.routes_json("ipv6");
        r["routes"]["2001:db8:1::/48"].as_array().is_some_and(|p| !p.is_empty()).then_some(r)
    });
    let path6 = &v6["routes"]["2001:db8:1::/48"][0];
    assert_eq!(path6["path"], "65001", "{v6:#}");
    assert_eq!(path6["valid"], true, "{v6:#}");
    let hops = path6["nexthops"].as_array().cloned().unwrap_or_default();
    assert!(hops.iter().any(|h| h["ip"] == topo.our_v6().as_str()), "IPv6 next hop should be ours: {v6:#}");

    let summary = frr.bgp_summary_json();
    assert_eq!(summary["ipv4Unicast"]["peers"][&ours]["pfxRcd"], 1, "{summary:#}");
    assert_eq!(summary["ipv6Unicast"]["peers"][&ours]["pfxRcd"], 1, "{summary:#}");

    // FRR's own routes reach us: from the config, and one added at run time.
    us.wait_received(PEER_PREFIX, || frr.log());
    frr.configure_bgp(&["address-family ipv4 unicast", "network 203.0.113.0/24"]);
    us.wait_received("203.0.113.0/24", || frr.log());
    // FRR echoes our own IPv6 route back (AS path 65000 65001); it is a loop and not accepted
    // (RFC 4271 §9.1.2).
    let received = us.status()["received"].clone();
    assert!(!received.as_array().unwrap().iter().any(|p| p == "2001:db8:1::/48"), "{received:#}");
    assert!(us.status()["lastError"].is_null(), "{:#}\n{}", us.status(), us.log());
    assert_eq!(frr.neighbor_json(&ours)["messageStats"]["notificationsRecv"], 0);
}

/// On SIGTERM our speaker sends Cease/Administrative Shutdown; FRR drops the session and our
/// routes.
#[test]
fn frr_sees_cease_and_withdraws_on_sigterm() {
    if frr_skip() {
        return;
    }
    let topo = Topo::new(42, "frr");
    let frr = frr_start(&topo, 65001);
    let mut us = Speaker::start(&topo, 65001);
    let ours = topo.our_addr();
    frr.wait_established(&ours, TIMEOUT);
    us.wait_established(|| frr.log());
    wait_until(TIMEOUT, "FRR to learn our two routes", || {
        let s = frr.bgp_summary_json();
        (s["ipv4Unicast"]["peers"][&ours]["pfxRcd"] == 1 && s["ipv6Unicast"]["peers"][&ours]["pfxRcd"] == 1)
            .then_some(())
    });

    us.stop();
    let n = wait_until(TIMEOUT, "FRR to see the session go down", || {
        let n = frr.neighbor_json(&ours);
        (n["bgpState"] != "Established" && !n["lastResetDueTo"].is_null()).then_some(n)
    });
    assert_eq!(n["lastResetDueTo"], "BGP Notification received", "{n:#}\nFRR log:\n{}", frr.log());
    assert_eq!(n["lastNotificationReason"], "Cease/Administrative Shutdown", "{n:#}\nFRR log:\n{}", frr.log());
    // Exactly one NOTIFICATION on the wire. (FRR 8.4's `notificationsRecv` counts each received
    // NOTIFICATION twice — bgp_process_packet and bgp_notify_receive both bump `notify_in` — so
    // count bgpd's log lines instead.)
    let log = frr.log();
    let notified = format!("%NOTIFICATION: received from neighbor {ours} 6/2 (Cease/Administrative Shutdown)");
    assert_eq!(log.matches(&notified).count(), 1, "FRR log:\n{log}");
    wait_until(TIMEOUT, "FRR to drop our routes", || {
        let v4 = frr.routes_json("ipv4");
        let v6 = frr.routes_json("ipv6");
        (v4["routes"].get("192.0.2.0/24").is_none() && v6["routes"].get("2001:db8:1::/48").is_none()).then_some(())
    });
    // FRR's own route is still there.
    assert!(frr.routes_json("ipv4")["routes"].get(PEER_PREFIX).is_some());
    assert!(us.log().contains("Cease"), "our log:\n{}", us.log());
}

/// GoBGP with a 4-byte local ASN on our side: GoBGP sees AS path 4200000001, MED, communities
/// and large communities, and the IPv6 route with our next hop; we learn GoBGP's route.
#[test]
fn gobgp_exchanges_routes_with_4byte_asn() {
    if gobgp_skip() {
        return;
    }
    let topo = Topo::new(43, "gobgp");
    let gobgp = gobgp_start(&topo, FOUR_BYTE_ASN);
    let mut us = Speaker::start(&topo, FOUR_BYTE_ASN);
    let ours = topo.our_addr();
    gobgp.wait_established(&ours, TIMEOUT);
    let st = us.wait_established(|| gobgp.log());
    assert_eq!(st["peerAsn"], PEER_ASN);
    assert_eq!(st["holdTime"], 9);

    let v4 = wait_until(TIMEOUT, "GoBGP to learn 192.0.2.0/24", || {
        let r = gobgp.rib_json("ipv4");
        r.get("192.0.2.0/24").is_some().then_some(r)
    });
    let path = &v4["192.0.2.0/24"][0];
    let attr = |p: &Value, t: u64| p["attrs"].as_array().and_then(|a| a.iter().find(|x| x["type"] == t).cloned());
    let as_path = attr(path, 2).unwrap_or_else(|| panic!("no AS_PATH: {v4:#}"));
    assert_eq!(as_path["as_paths"][0]["asns"], serde_json::json!([FOUR_BYTE_ASN]), "{v4:#}");
    assert_eq!(attr(path, 4).map(|m| m["metric"].clone()), Some(10.into()), "MED: {v4:#}");
    let communities = attr(path, 8).unwrap_or_else(|| panic!("no COMMUNITIES: {v4:#}"));
    let want_std = [(65001u64 << 16) | 100, 0xFFFF_FF01];
    assert_eq!(communities["communities"], serde_json::json!(want_std), "{v4:#}");
    let large = attr(path, 32).unwrap_or_else(|| panic!("no LARGE_COMMUNITY: {v4:#}"));
    assert_eq!(large["value"], serde_json::json!([{"ASN": 65001, "LocalData1": 1, "LocalData2": 2}]), "{v4:#}");
    let nh = attr(path, 3).unwrap_or_else(|| panic!("no NEXT_HOP: {v4:#}"));
    assert_eq!(nh["nexthop"], ours.as_str(), "{v4:#}");
    let text = gobgp.rib("ipv4");
    assert!(text.contains("4200000001"), "{text}");

    let v6 = wait_until(TIMEOUT, "GoBGP to learn 2001:db8:1::/48", || {
        let r = gobgp.rib_json("ipv6");
        r.get("2001:db8:1::/48").is_some().then_some(r)
    });
    let path6 = &v6["2001:db8:1::/48"][0];
    let mp = attr(path6, 14).unwrap_or_else(|| panic!("no MP_REACH_NLRI: {v6:#}"));
    assert_eq!(mp["nexthop"], topo.our_v6().as_str(), "{v6:#}");
    let as_path6 = attr(path6, 2).unwrap_or_else(|| panic!("no AS_PATH: {v6:#}"));
    assert_eq!(as_path6["as_paths"][0]["asns"], serde_json::json!([FOUR_BYTE_ASN]), "{v6:#}");

    us.wait_received(PEER_PREFIX, || gobgp.log());
    assert!(us.status()["lastError"].is_null(), "{:#}\n{}", us.status(), us.log());
    let n = gobgp.neighbor_json(&ours);
    assert_eq!(n["conf"]["peer_asn"], FOUR_BYTE_ASN, "{n:#}");
    assert!(n["state"]["messages"]["received"]["notification"].is_null(), "{n:#}\n{}", gobgp.log());
}

/// On SIGTERM GoBGP receives Cease/Administrative Shutdown and withdraws our routes.
#[test]
fn gobgp_sees_cease_and_withdraws_on_sigterm() {
    if gobgp_skip() {
        return;
    }
    let topo = Topo::new(44, "gobgp");
    let gobgp = gobgp_start(&topo, 65001);
    let mut us = Speaker::start(&topo, 65001);
    let ours = topo.our_addr();
    gobgp.wait_established(&ours, TIMEOUT);
    us.wait_established(|| gobgp.log());
    wait_until(TIMEOUT, "GoBGP to learn our two routes", || {
        (gobgp.rib_json("ipv4").get("192.0.2.0/24").is_some()
            && gobgp.rib_json("ipv6").get("2001:db8:1::/48").is_some())
        .then_some(())
    });

    us.stop();
    wait_until(TIMEOUT, "GoBGP to see the session go down", || {
        gobgp.neighbor_state(&ours).filter(|s| s != "established")
    });
    let n = gobgp.neighbor_json(&ours);
    assert_eq!(n["state"]["messages"]["received"]["notification"], 1, "{n:#}\ngobgpd log:\n{}", gobgp.log());
    let log = wait_until(TIMEOUT, "gobgpd to log the Cease", || {
        let l = gobgp.log();
        l.contains("Peer Down").then_some(l)
    });
    assert!(
        log.contains("notification-received code 6(cease) subcode 2(administrative shutdown)"),
        "gobgpd log:\n{log}"
    );
    wait_until(TIMEOUT, "GoBGP to drop our routes", || {
        (gobgp.rib_json("ipv4").get("192.0.2.0/24").is_none()
            && gobgp
                .try_gobgp(&["global", "rib", "-a", "ipv6", "-j"])
                .map(|t| !t.contains("2001:db8:1::/48"))
                .unwrap_or(false))
        .then_some(())
    });
    assert!(gobgp.rib_json("ipv4").get(PEER_PREFIX).is_some(), "GoBGP's own route stays");
}

/// ExaBGP sends hand-crafted UPDATEs: an unknown optional transitive attribute is accepted, a
/// malformed MED (2 bytes instead of 4) is treated as a withdraw (RFC 7606 §7.4) without
/// resetting the session, and plain withdraws work.
#[test]
fn exabgp_crafted_updates() {
    if !require_root() || !Exabgp::available() {
        return;
    }
    let topo = Topo::new(45, "exabgp");
    let ours = topo.our_addr();
    let neighbor = BgpNeighbor::new(&ours, PEER_ASN, 65001).local_address(&topo.peer_addr()).hold_time(9).passive(true);
    let cfg = ExabgpConfig::new(&topo.peer_addr()).neighbor(neighbor).route(&format!("{PEER_PREFIX} next-hop self"));
    let exa = Exabgp::start(&topo.peer, &cfg);
    let mut us = Speaker::start(&topo, 65001);
    exa.wait_established(&ours, TIMEOUT);
    us.wait_established(|| exa.log());
    us.wait_received(PEER_PREFIX, || exa.log());

    // What ExaBGP decoded from our UPDATE for 192.0.2.0/24.
    let update = wait_until(TIMEOUT, "ExaBGP to receive 192.0.2.0/24", || {
        exa.received_updates(&ours).into_iter().find(|u| u.to_string().contains("\"192.0.2.0/24\""))
    });
    let attrs = &update["attribute"];
    assert_eq!(attrs["as-path"], serde_json::json!([65001]), "{update:#}");
    assert_eq!(attrs["med"], 10, "{update:#}");
    assert_eq!(attrs["community"], serde_json::json!([[65001, 100], [65535, 65281]]), "{update:#}");
    assert_eq!(attrs["large-community"], serde_json::json!([[65001, 1, 2]]), "{update:#}");

    let has = |p: &str| us.status()["received"].as_array().is_some_and(|r| r.iter().any(|x| x == p));
    // Unknown optional transitive attribute (type 240): accepted.
    exa.announce("203.0.113.0/24 next-hop self attribute [ 0xf0 0xc0 0x0102 ]");
    us.wait_received("203.0.113.0/24", || exa.log());
    // Malformed MED (length 2): treat-as-withdraw, session stays up.
    exa.announce("203.0.113.0/24 next-hop self attribute [ 0x04 0x80 0x0102 ]");
    wait_until(TIMEOUT, "the malformed UPDATE to withdraw 203.0.113.0/24", || (!has("203.0.113.0/24")).then_some(()));
    // A plain withdraw.
    exa.withdraw(&format!("{PEER_PREFIX} next-hop self"));
    wait_until(TIMEOUT, "198.51.100.0/24 to be withdrawn", || (!has(PEER_PREFIX)).then_some(()));

    let st = us.status();
    assert_eq!(st["state"], "Established", "{st:#}\n{}", us.log());
    assert_eq!(exa.neighbor_state(&ours).as_deref(), Some("up"), "{}", exa.log());
    assert!(exa.events_of("notification", &ours).is_empty(), "we sent a NOTIFICATION: {:?}", exa.events());

    // SIGTERM: ExaBGP receives Cease/Administrative Shutdown.
    us.stop();
    let n = wait_until(TIMEOUT, "ExaBGP to receive our NOTIFICATION", || exa.events_of("notification", &ours).pop());
    assert_eq!(
        (n["neighbor"]["notification"]["code"].clone(), n["neighbor"]["notification"]["subcode"].clone()),
        (6.into(), 2.into()),
        "{n:#}"
    );
    wait_until(TIMEOUT, "ExaBGP to see the session go down", || {
        (exa.neighbor_state(&ours).as_deref() == Some("down")).then_some(())
    });
}
