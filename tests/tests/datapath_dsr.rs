//! The XDP load balancer end to end, with real TCP: a client on a LAN bridge connects to a
//! LoadBalancer IP; the LB node's agent (XDP, Maglev, Geneve, IPIP or IPv4-option DSR) spreads
//! connections over three backends whose agents decapsulate in tc; replies go from the backends
//! straight to the client (seen by the source MACs tcpdump captures on the client). Removing a
//! backend keeps its established connection; restarting the LB agent drops none. The same over
//! IPv6 (a dual-stack service: IP6IP6, Geneve over IPv6, Cilium's IPv6 DSR extension header, and
//! SNAT to the node's IPv6 address). Needs root.

use std::collections::BTreeMap;
use std::time::Duration;

use halyard_tests::netns::{Bpffs, Bridge, ChildGuard, Netns, require_program, require_root, wait_until};
use halyard_tests::{Agent, bin};

const VIP: &str = "10.96.0.10";
const VIP6: &str = "fd00:96::10";
const NODE6: &str = "fd00:93::2";

/// The IPv4 manifests, plus an IPv6 pool block, `RequireDualStack`, and an IPv6 EndpointSlice
/// (backend `b` at fd00:93::1b): one service, both families.
fn manifests_dual(backends: &[u32]) -> String {
    let eps: Vec<String> = backends
        .iter()
        .map(|b| format!("  - addresses: [\"fd00:93::1{b}\"]\n    conditions: {{ready: true}}\n"))
        .collect();
    manifests(backends)
        .replace(
            &format!("blocks: [{{cidr: {VIP}/32}}]"),
            &format!("blocks: [{{cidr: {VIP}/32}}, {{cidr: {VIP6}/128}}]"),
        )
        .replace("  type: LoadBalancer\n", "  type: LoadBalancer\n  ipFamilyPolicy: RequireDualStack\n")
        + &format!(
            r#"---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-6
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints:
{}"#,
            eps.concat()
        )
}

fn manifests(backends: &[u32]) -> String {
    let eps: Vec<String> = backends
        .iter()
        .map(|b| format!("  - addresses: [\"10.93.0.1{b}\"]\n    conditions: {{ready: true}}\n"))
        .collect();
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {{name: vip}}
spec:
  blocks: [{{cidr: {VIP}/32}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints:
{}"#,
        eps.concat()
    )
}

struct Lab {
    _lan: Bridge,
    _fs: Bpffs,
    client: Netns,
    lb: Netns,
    backends: Vec<Netns>,
    lb_agent: Agent,
    _backend_agents: Vec<Agent>,
    _servers: Vec<ChildGuard>,
    macs: BTreeMap<String, String>,
}

fn mac(ns: &Netns) -> String {
    ns.run_ok(&["cat", "/sys/class/net/eth0/address"]).trim().to_string()
}

fn lab(dispatch: &str) -> Lab {
    lab_mode(dispatch, "dsr")
}

/// `lb_mode` "snat": the backends are plain servers (no VIP, no decapsulation).
fn lab_mode(dispatch: &str, lb_mode: &str) -> Lab {
    lab_full(dispatch, lb_mode, "native")
}

/// `acceleration`: `native` (the LB in XDP) or `disabled` (the LB at tc ingress).
fn lab_full(dispatch: &str, lb_mode: &str, acceleration: &str) -> Lab {
    lab_fam(dispatch, lb_mode, acceleration, false)
}

/// `dual`: every node also gets an IPv6 address (fd00:93::/64, `nodad`), the service is dual-stack
/// (`manifests_dual`), the backends hold VIP6 too and the LB agent runs with `--node-ipv6`.
fn lab_fam(dispatch: &str, lb_mode: &str, acceleration: &str, dual: bool) -> Lab {
    let dsr = lb_mode != "snat";
    let lan = Bridge::new("dsrlan");
    let fs = Bpffs::new("dsr");
    let client = Netns::new("client");
    let lb = Netns::new("lb");
    let addrs = |v4: &str, v6: String| if dual { vec![v4.to_string(), v6] } else { vec![v4.to_string()] };
    let client_addrs = addrs("10.93.0.100/24", "fd00:93::100/64".into());
    lan.attach(&client, "eth0", &client_addrs.iter().map(String::as_str).collect::<Vec<_>>());
    let lb_addrs = addrs("10.93.0.2/24", format!("{NODE6}/64"));
    let lb_port = lan.attach(&lb, "eth0", &lb_addrs.iter().map(String::as_str).collect::<Vec<_>>());
    // veth hands XDP_TX frames only to a peer that runs native XDP itself.
    lan.ns().run_ok(&[
        bin("veth-xdp-pass").to_str().unwrap(),
        &lb_port,
        fs.dir.join(format!("pass-{lb_port}")).to_str().unwrap(),
    ]);
    // veth leaves TCP checksums to "hardware" (CHECKSUM_PARTIAL); a frame that goes through XDP
    // loses that promise, so the client computes them in software, as a real NIC's wire would.
    client.run_ok(&["ethtool", "-K", "eth0", "tx", "off"]);
    client.ip_ok(&["route", "add", &format!("{VIP}/32"), "via", "10.93.0.2"]);
    if dual {
        client.ip_ok(&["-6", "route", "add", &format!("{VIP6}/128"), "via", NODE6]);
    }
    let mut macs = BTreeMap::new();
    macs.insert(mac(&lb), "lb".to_string());
    let mut backends = Vec::new();
    let mut servers = Vec::new();
    let mut backend_agents = Vec::new();
    for b in 1..=3u32 {
        let ns = Netns::new(&format!("be{b}"));
        let be_addrs = addrs(&format!("10.93.0.1{b}/24"), format!("fd00:93::1{b}/64"));
        lan.attach(&ns, "eth0", &be_addrs.iter().map(String::as_str).collect::<Vec<_>>());
        // The service address is local on the backend (DSR: it answers as the VIP); it must not
        // answer ARP for it on the LAN.
        // In SNAT mode the backends' replies go through XDP on the LB node, which (veth only)
        // loses the "checksum left to hardware" promise: compute checksums in software.
        if !dsr {
            ns.run_ok(&["ethtool", "-K", "eth0", "tx", "off"]);
        }
        if dsr {
            ns.ip_ok(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
            ns.run_ok(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]);
            if dual {
                // IPv6 answers neighbour solicitations only for addresses on the asking interface,
                // so VIP6 on lo stays quiet on the LAN.
                ns.add_addr("lo", &format!("{VIP6}/128"));
            }
        }
        // [::]:80 takes IPv4 connections too (IPV6_V6ONLY is off by default).
        servers.push(ns.spawn(
            [bin("lab-tcp").to_str().unwrap(), "serve", if dual { "[::]:80" } else { "0.0.0.0:80" }, &format!("b{b}")],
            std::env::temp_dir().join(format!("lab-tcp-{}-{b}.log", std::process::id())),
        ));
        let pin = fs.dir.join(format!("be{b}"));
        if dsr {
            backend_agents.push(
                Agent::start_in(
                    ns.name(),
                    &[],
                    &[
                        "--datapath-decap-interfaces",
                        "eth0",
                        "--bpf-pin-dir",
                        pin.to_str().unwrap(),
                        "--node-name",
                        &format!("be{b}"),
                    ],
                )
                .unwrap(),
            );
        }
        macs.insert(mac(&ns), format!("b{b}"));
        backends.push(ns);
    }
    let pin = fs.dir.join("lb");
    let pin_s = pin.to_str().unwrap();
    let mut args = vec![
        "--datapath-interfaces",
        "eth0",
        "--dsr-dispatch",
        dispatch,
        "--lb-mode",
        lb_mode,
        "--bpf-lb-acceleration",
        acceleration,
        "--bpf-pin-dir",
        pin_s,
        "--node-ipv4",
        "10.93.0.2",
    ];
    if dual {
        args.extend(["--node-ipv6", NODE6]);
    }
    let web = if dual { manifests_dual(&[1, 2, 3]) } else { manifests(&[1, 2, 3]) };
    let lb_agent = Agent::start_in(lb.name(), &[("web.yaml", &web)], &args).unwrap();
    let frontends = if dual { 2 } else { 1 };
    wait_until(Duration::from_secs(10), "the LB entry", || {
        let o = lb_agent.cli(&["bpf", "lb", "list", "-o", "json"]);
        let l: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (l.as_array().is_some_and(|a| a.len() == frontends)
            && l.as_array()?.iter().all(|f| f["backends"].as_array().is_some_and(|b| b.len() == 3)))
        .then_some(())
    });
    Lab { _lan: lan, _fs: fs, client, lb, backends, lb_agent, _backend_agents: backend_agents, _servers: servers, macs }
}

fn probe(l: &Lab, n: u32) -> BTreeMap<String, u32> {
    probe_at(l, &format!("{VIP}:80"), n)
}

fn probe_at(l: &Lab, target: &str, n: u32) -> BTreeMap<String, u32> {
    let out = l.client.run_ok(&[bin("lab-tcp").to_str().unwrap(), "probe", target, &n.to_string()]);
    let mut counts = BTreeMap::new();
    for line in out.lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}

fn run_dsr(dispatch: &str) {
    run_mode(dispatch, "dsr");
}

fn run_mode(dispatch: &str, lb_mode: &str) {
    run_full(dispatch, lb_mode, "native");
}

fn run_full(dispatch: &str, lb_mode: &str, acceleration: &str) {
    let l = lab_full(dispatch, lb_mode, acceleration);
    // Capture on the client: who do the replies come from, at L2?
    let cap =
        std::env::temp_dir().join(format!("dsr-cap-{}-{dispatch}-{lb_mode}-{acceleration}.txt", std::process::id()));
    let mut tcpdump = l
        .client
        .spawn(["tcpdump", "-i", "eth0", "-l", "-n", "-e", "-c", "400", &format!("tcp and src host {VIP}")], &cap);
    // IPv4-option dispatch: what reaches backend 1 (tcpdump sees it before tc ingress) is DNATed to
    // it and carries Cilium's option (type 0x9a, length 8, the VIP) right after a 20-byte header.
    let opt_cap = std::env::temp_dir().join(format!("dsr-opt-cap-{}-{acceleration}.txt", std::process::id()));
    let mut opt_dump = (dispatch == "opt").then(|| {
        let filter = "ip[0] == 0x47 and ip[20] == 0x9a and ip[21] == 8 and ip[24:4] == 0x0a60000a \
                      and ip[22:2] == 80 and dst host 10.93.0.11 and tcp dst port 80";
        l.backends[0].spawn(["tcpdump", "-i", "eth0", "-l", "-n", "-c", "200", filter], &opt_cap)
    });
    std::thread::sleep(Duration::from_millis(700));
    // The first packets may find no neighbour entry yet and take the kernel's path; retry until
    // the backends answer.
    wait_until(Duration::from_secs(10), "a first answer through the LB", || {
        probe(&l, 1).keys().next().filter(|k| k.starts_with('b')).cloned()
    });
    let counts = probe(&l, 90);
    assert_eq!(counts.values().sum::<u32>(), 90, "{counts:?}");
    for b in ["b1", "b2", "b3"] {
        let c = counts.get(b).copied().unwrap_or(0);
        assert!(c >= 10, "backend {b} got {c} of 90 connections: {counts:?}");
    }
    std::thread::sleep(Duration::from_millis(500));
    tcpdump.stop(Duration::from_millis(200));
    if let Some(mut d) = opt_dump.take() {
        d.stop(Duration::from_millis(200));
        let text = std::fs::read_to_string(&opt_cap).unwrap_or_default();
        let seen = text.lines().filter(|l| l.contains(" > 10.93.0.11.80:")).count();
        assert!(seen >= 10, "backend 1 should receive option-carrying packets to 10.93.0.11:80: {text}");
    }
    let text = std::fs::read_to_string(&cap).unwrap_or_default();
    let mut from = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains(" > ")) {
        let src = line.split_whitespace().nth(1).unwrap_or("").to_string();
        *from.entry(l.macs.get(&src).cloned().unwrap_or(src)).or_insert(0u32) += 1;
    }
    if lb_mode == "snat" {
        assert!(from.keys().all(|k| k == "lb"), "SNAT: replies come back through the LB node: {from:?}");
    } else {
        assert!(
            from.keys().all(|k| k.starts_with('b')),
            "replies must come straight from the backends (DSR): {from:?}"
        );
        assert_eq!(from.len(), 3, "replies from all three backends: {from:?}");
    }
    // The LB node's program (XDP, or tc) did the forwarding.
    let counters = l.lb_agent.json(&["bpf", "counters"]);
    let fwd: u64 = counters
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "forwarded")
        .map(|c| c["packets"].as_u64().unwrap())
        .sum();
    assert!(fwd >= 90, "XDP forwarded {fwd} packets: {counters}");
    let ct = l.lb_agent.json(&["bpf", "ct", "list"]);
    assert!(ct.as_array().unwrap().len() >= 90, "conntrack: {ct}");
}

/// The IPv6 counterpart of [`run_full`]: a dual-stack service, 90 connections to [VIP6]:80 spread
/// over the three backends' IPv6 addresses; in DSR the replies come from the backends' MACs (and
/// from VIP6), in SNAT from the LB node's. Also checks `bpf lb list`, `bpf ct list` and `bpf
/// maglev --flow` show the IPv6 side, and that IPv4 still goes through the same service.
fn run_v6(dispatch: &str, lb_mode: &str, acceleration: &str) {
    let l = lab_fam(dispatch, lb_mode, acceleration, true);
    let target = format!("[{VIP6}]:80");
    let cap =
        std::env::temp_dir().join(format!("dsr6-cap-{}-{dispatch}-{lb_mode}-{acceleration}.txt", std::process::id()));
    let mut tcpdump = l.client.spawn(
        ["tcpdump", "-i", "eth0", "-l", "-n", "-e", "-c", "400", &format!("ip6 and tcp and src host {VIP6}")],
        &cap,
    );
    // DSR by extension header: what reaches backend 1 is DNATed to it (fd00:93::11) and carries
    // Cilium's Destination Options header (next header 60; option 0x1B, length 20, VIP6).
    let opt_cap = std::env::temp_dir().join(format!("dsr6-opt-cap-{}-{acceleration}.txt", std::process::id()));
    let mut opt_dump = (dispatch == "opt" && lb_mode == "dsr").then(|| {
        let filter = "ip6 and ip6[6] == 60 and ip6[40] == 6 and ip6[41] == 2 and ip6[42] == 0x1b and ip6[43] == 20 \
                      and ip6[44:4] == 0xfd000096 and ip6[56:4] == 0x10 and ip6[60:2] == 80 and dst host fd00:93::11";
        l.backends[0].spawn(["tcpdump", "-i", "eth0", "-l", "-n", "-c", "200", filter], &opt_cap)
    });
    std::thread::sleep(Duration::from_millis(700));
    wait_until(Duration::from_secs(10), "a first answer through the LB over IPv6", || {
        probe_at(&l, &target, 1).keys().next().filter(|k| k.starts_with('b')).cloned()
    });
    let counts = probe_at(&l, &target, 90);
    assert_eq!(counts.values().sum::<u32>(), 90, "{counts:?}");
    for b in ["b1", "b2", "b3"] {
        let c = counts.get(b).copied().unwrap_or(0);
        assert!(c >= 10, "backend {b} got {c} of 90 IPv6 connections: {counts:?}");
    }
    // The same service over IPv4, through the same agent and program.
    let v4 = probe(&l, 12);
    assert_eq!(v4.iter().filter(|(k, _)| k.starts_with('b')).map(|(_, n)| n).sum::<u32>(), 12, "{v4:?}");
    std::thread::sleep(Duration::from_millis(500));
    tcpdump.stop(Duration::from_millis(200));
    if let Some(mut d) = opt_dump.take() {
        d.stop(Duration::from_millis(200));
        let text = std::fs::read_to_string(&opt_cap).unwrap_or_default();
        let seen = text.lines().filter(|l| l.contains("IP6 ")).count();
        assert!(seen >= 10, "backend 1 should receive extension-header packets to fd00:93::11: {text}");
    }
    let text = std::fs::read_to_string(&cap).unwrap_or_default();
    let mut from = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains(" > ")) {
        let src = line.split_whitespace().nth(1).unwrap_or("").to_string();
        *from.entry(l.macs.get(&src).cloned().unwrap_or(src)).or_insert(0u32) += 1;
    }
    assert!(from.values().sum::<u32>() >= 90, "replies seen on the client: {from:?}\n{text}");
    if lb_mode == "snat" {
        assert!(from.keys().all(|k| k == "lb"), "SNAT: replies come back through the LB node: {from:?}");
    } else {
        assert!(
            from.keys().all(|k| k.starts_with('b')),
            "replies must come straight from the backends (DSR): {from:?}"
        );
        assert_eq!(from.len(), 3, "replies from all three backends: {from:?}");
    }
    // The CLI shows the IPv6 side: the frontend with its backends and shares, the flows, and which
    // backend a given IPv6 client flow maps to.
    let list = l.lb_agent.json(&["bpf", "lb", "list"]);
    let fe6 =
        list.as_array().unwrap().iter().find(|f| f["frontend"] == format!("[{VIP6}]:80/TCP")).expect("IPv6 frontend");
    let bes: Vec<&str> = fe6["backends"].as_array().unwrap().iter().map(|b| b["address"].as_str().unwrap()).collect();
    assert_eq!(bes.len(), 3, "{fe6}");
    assert!(bes.iter().all(|b| b.starts_with("[fd00:93::1") && b.ends_with("]:80")), "{bes:?}");
    let ct = l.lb_agent.json(&["bpf", "ct", "list"]);
    let v6_flows: Vec<&serde_json::Value> = ct
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"].as_str().unwrap().starts_with("[fd00:93::100]:"))
        .collect();
    assert!(v6_flows.len() >= 90, "IPv6 conntrack entries: {ct}");
    assert!(
        v6_flows.iter().all(|e| e["frontend"] == target && e["backend"].as_str().unwrap().starts_with("[fd00:93::1"))
    );
    // `service list` shows both families' backends and both LoadBalancer IPs.
    let svcs = l.lb_agent.json(&["service", "list"]);
    let web = svcs.as_array().and_then(|l| l.iter().find(|s| s["name"] == "web")).expect("web");
    let mut backends: Vec<&str> = web["backends"].as_array().unwrap().iter().map(|b| b.as_str().unwrap()).collect();
    backends.sort();
    assert_eq!(
        backends,
        [
            "10.93.0.11:80/TCP",
            "10.93.0.12:80/TCP",
            "10.93.0.13:80/TCP",
            "[fd00:93::11]:80/TCP",
            "[fd00:93::12]:80/TCP",
            "[fd00:93::13]:80/TCP"
        ],
        "{svcs}"
    );
    assert_eq!(web["ips"], serde_json::json!([VIP, VIP6]), "{web}");
    // `bpf maglev --flow` predicts (in Rust) the backend the datapath chose for real flows.
    for e in v6_flows.iter().take(5) {
        let flow = e["source"].as_str().unwrap();
        let m = l.lb_agent.json(&["bpf", "maglev", "default/web", "--flow", flow]);
        let tables = m.as_array().unwrap();
        assert_eq!(tables.len(), 2, "one table per family: {m}");
        let predicted: Vec<&str> = tables.iter().filter_map(|t| t["flow"]["backend"].as_str()).collect();
        assert_eq!(predicted, vec![e["backend"].as_str().unwrap()], "flow {flow}: only the IPv6 table answers: {m}");
    }
    let counters = l.lb_agent.json(&["bpf", "counters"]);
    let fwd: u64 = counters
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "forwarded")
        .map(|c| c["packets"].as_u64().unwrap())
        .sum();
    assert!(fwd >= 90, "the LB forwarded {fwd} packets: {counters}");
}

#[test]
fn ipv6_dsr_ip6ip6_spreads_connections_and_replies_bypass_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_v6("ipip", "dsr", "native");
}

#[test]
fn ipv6_dsr_geneve_spreads_connections_and_replies_bypass_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_v6("geneve", "dsr", "native");
}

#[test]
fn ipv6_dsr_extension_header_spreads_connections_and_replies_bypass_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    // DNAT to the backend plus Cilium's IPv6 DSR extension header; tc_decap restores [VIP6]:80.
    run_v6("opt", "dsr", "native");
}

#[test]
fn ipv6_dsr_geneve_at_tc_spreads_connections_and_replies_bypass_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_v6("geneve", "dsr", "disabled");
}

#[test]
fn ipv6_snat_spreads_connections_to_plain_backends_and_replies_return_through_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_v6("geneve", "snat", "native");
}

#[test]
fn ipv6_snat_at_tc_spreads_connections_and_replies_return_through_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_v6("geneve", "snat", "disabled");
}

#[test]
fn dsr_geneve_spreads_connections_and_replies_bypass_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_dsr("geneve");
}

#[test]
fn snat_spreads_connections_to_plain_backends_and_replies_return_through_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_mode("geneve", "snat");
}

#[test]
fn snat_at_tc_spreads_connections_and_replies_return_through_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_full("geneve", "snat", "disabled");
}

#[test]
fn dsr_at_tc_spreads_connections_and_replies_bypass_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_full("geneve", "dsr", "disabled");
}

#[test]
fn dsr_ipip_spreads_connections_and_replies_bypass_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_dsr("ipip");
}

#[test]
fn dsr_opt_spreads_connections_and_replies_bypass_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    // DNAT to the backend plus Cilium's IPv4 DSR option; the backends' tc_decap restores VIP:80.
    run_dsr("opt");
}

#[test]
fn dsr_opt_at_tc_spreads_connections_and_replies_bypass_the_lb() {
    if !require_root() || !require_program("tcpdump", "tcpdump") || !require_program("ethtool", "ethtool") {
        return;
    }
    run_full("opt", "dsr", "disabled");
}

#[test]
fn removed_backend_keeps_established_flow_and_restart_drops_nothing() {
    if !require_root() || !require_program("ethtool", "ethtool") {
        return;
    }
    let mut l = lab("geneve");
    wait_until(Duration::from_secs(10), "a first answer through the LB", || {
        probe(&l, 1).keys().next().filter(|k| k.starts_with('b')).cloned()
    });
    // Long-lived connections, one per backend at least.
    let hold = |secs: &str| {
        let log = std::env::temp_dir().join(format!("hold-{}-{}.log", std::process::id(), rand_suffix()));
        let g = l.client.spawn([bin("lab-tcp").to_str().unwrap(), "hold", &format!("{VIP}:80"), secs], &log);
        (g, log)
    };
    let holds: Vec<_> = (0..12).map(|_| hold("6")).collect();
    std::thread::sleep(Duration::from_millis(800));
    let names: Vec<String> = holds
        .iter()
        .map(|(_, log)| std::fs::read_to_string(log).unwrap_or_default().lines().next().unwrap_or("").to_string())
        .collect();
    assert!(names.iter().any(|n| n == "b2"), "some held connection should be on b2: {names:?}");
    // b2 leaves the service, and the LB agent restarts while the connections run.
    l.lb_agent.write_manifest("web.yaml", &manifests(&[1, 3]));
    wait_until(Duration::from_secs(10), "b2 out of the Maglev table", || {
        let list = l.lb_agent.json(&["bpf", "lb", "list"]);
        (list[0]["backends"].as_array().map(|b| b.len()) == Some(2)).then_some(())
    });
    let fresh = probe(&l, 30);
    assert!(!fresh.contains_key("b2"), "new connections must avoid the removed backend: {fresh:?}");
    l.lb_agent.restart().unwrap();
    for (mut g, log) in holds {
        let status = wait_until(Duration::from_secs(15), "held connection to finish", || g.try_wait());
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success() && out.contains("held"), "an established connection broke: {out}");
    }
    // The connections are closed (FIN seen: their entries are "closing"); conntrack ages them
    // out after 10 s, and then the drained backend itself is removed.
    let ct = l.lb_agent.json(&["bpf", "ct", "list"]);
    assert!(ct.as_array().unwrap().iter().any(|e| e["draining"] == true && e["closing"] == true), "{ct}");
    wait_until(Duration::from_secs(30), "the drained backend to be collected", || {
        let ct = l.lb_agent.json(&["bpf", "ct", "list"]);
        let draining =
            ct.as_array().unwrap().iter().any(|e| e["backend"].as_str().unwrap_or("").starts_with("10.93.0.12"));
        (!draining).then_some(())
    });
    let _ = (&l.lb, &l.backends);
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn uninstall_removes_programs_and_pins() {
    if !require_root() {
        return;
    }
    let fs = Bpffs::new("uninst");
    let a = Netns::new("uninst");
    let b = Netns::new("uninst2");
    halyard_tests::netns::veth_pair(&a, "eth0", &["10.94.0.1/24"], &b, "eth0", &["10.94.0.2/24"]);
    let pin = fs.dir.join("node");
    let pin_s = pin.to_str().unwrap();
    let mut agent = Agent::start_in(
        a.name(),
        &[],
        &[
            "--datapath-interfaces",
            "eth0",
            "--bpf-pin-dir",
            pin_s,
            "--node-ipv4",
            "10.94.0.1",
            "--metrics-addr",
            "127.0.0.1:9893",
        ],
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the XDP program on eth0", || {
        a.ip_ok(&["link", "show", "eth0"]).contains("prog/xdp").then_some(())
    });
    // Counters are exported.
    let metrics = wait_until(Duration::from_secs(5), "datapath metrics", || {
        let o = a.exec(&["curl", "-s", "http://127.0.0.1:9893/metrics"]);
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        t.contains("halyard_datapath_up 1").then_some(t)
    });
    assert!(metrics.contains("halyard_datapath_packets{action=\"passed\",reason=\"no_service\"}"), "{metrics}");
    // Stopped agent: the program stays (pinned link), so traffic keeps flowing.
    agent.stop();
    assert!(a.ip_ok(&["link", "show", "eth0"]).contains("prog/xdp"));
    let out = a.exec(&[bin("halyard-agent").to_str().unwrap(), "--uninstall", "--bpf-pin-dir", pin_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("uninstalled"));
    assert!(!a.ip_ok(&["link", "show", "eth0"]).contains("prog/xdp"), "XDP program still attached");
    assert!(!pin.exists(), "pins left under {}", pin.display());
}
