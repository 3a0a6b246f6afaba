//! Pod-to-pod traffic between two nodes, end to end: two nodes on a bridge LAN, each with one
//! "pod" namespace behind a veth whose host side is `lxc0` (set up as a CNI would: pod IP from
//! the node's PodCIDR, default route via a link-local gateway on the host side, a /32 route on
//! the node). The real `halyard-agent` runs on each node with `--routing-mode tunnel` (VXLAN or
//! Geneve) or `native`; TCP from pod A to pod B must work, and tcpdump on the LAN must show the
//! encapsulation with the pod addresses inside (or the plain pod addresses, natively). Needs root.

use std::time::Duration;

use halyard_tests::netns::{Bpffs, Bridge, ChildGuard, Netns, require_program, require_root, veth_pair, wait_until};
use halyard_tests::{Agent, bin};

const NODE_IPS: [&str; 2] = ["192.168.77.1", "192.168.77.2"];
const POD_CIDRS: [&str; 2] = ["10.244.1.0/24", "10.244.2.0/24"];
const POD_IPS: [&str; 2] = ["10.244.1.10", "10.244.2.10"];
const GATEWAY: &str = "169.254.1.1";

fn nodes_manifest() -> String {
    (0..2)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: n{}}}\nspec: {{podCIDR: {}}}\n\
                 status:\n  addresses: [{{type: InternalIP, address: {}}}]\n",
                i + 1,
                POD_CIDRS[i],
                NODE_IPS[i]
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

struct Lab {
    lan: Bridge,
    _fs: Bpffs,
    nodes: Vec<Netns>,
    pods: Vec<Netns>,
    agents: Vec<Agent>,
    pins: Vec<std::path::PathBuf>,
    /// The LAN bridge port of node 1 (where tcpdump listens).
    port1: String,
    _server: ChildGuard,
}

/// A pod behind `lxc0` on `node`, as a CNI plugin would wire it.
fn pod(node: &Netns, i: usize) -> Netns {
    let pod = Netns::new(&format!("pod{}", i + 1));
    veth_pair(node, "lxc0", &[&format!("{GATEWAY}/32")], &pod, "eth0", &[&format!("{}/32", POD_IPS[i])]);
    // Room for the 50-byte VXLAN/Geneve headers on a 1500-byte underlay.
    pod.ip_ok(&["link", "set", "eth0", "mtu", "1400"]);
    pod.ip_ok(&["route", "add", GATEWAY, "dev", "eth0", "scope", "link"]);
    pod.ip_ok(&["route", "add", "default", "via", GATEWAY, "dev", "eth0"]);
    // veth leaves checksums to "hardware"; encapsulated packets then carry partial ones.
    pod.run_ok(&["ethtool", "-K", "eth0", "tx", "off"]);
    node.ip_ok(&["route", "add", &format!("{}/32", POD_IPS[i]), "dev", "lxc0", "scope", "link"]);
    pod
}

fn lab(args: &[&str]) -> Lab {
    let lan = Bridge::new("ovllan");
    let fs = Bpffs::new("ovl");
    let mut nodes = Vec::new();
    let mut pods = Vec::new();
    let mut port1 = String::new();
    for (i, node_ip) in NODE_IPS.iter().enumerate() {
        let n = Netns::new(&format!("node{}", i + 1));
        let port = lan.attach(&n, "eth0", &[&format!("{node_ip}/24")]);
        if i == 0 {
            port1 = port;
        }
        pods.push(pod(&n, i));
        nodes.push(n);
    }
    let server = pods[1].spawn(
        [bin("lab-tcp").to_str().unwrap(), "serve", "0.0.0.0:80", "pod-b"],
        std::env::temp_dir().join(format!("ovl-lab-tcp-{}.log", std::process::id())),
    );
    let manifest = nodes_manifest();
    let mut agents = Vec::new();
    let mut pins = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let pin = fs.dir.join(format!("n{}", i + 1));
        let mut a = vec!["--node-name", if i == 0 { "n1" } else { "n2" }, "--bpf-pin-dir", pin.to_str().unwrap()];
        a.extend_from_slice(args);
        agents.push(Agent::start_in(n.name(), &[("nodes.yaml", &manifest)], &a).unwrap());
        pins.push(pin);
    }
    Lab { lan, _fs: fs, nodes, pods, agents, pins, port1, _server: server }
}

fn ping_ok(l: &Lab) -> bool {
    l.pods[0].exec(&["ping", "-c", "1", "-W", "1", POD_IPS[1]]).status.success()
}

/// Waits for pod A to reach pod B, then opens `n` TCP connections while tcpdump listens on
/// node 1's LAN port with `filter`; returns tcpdump's text.
fn traffic(l: &Lab, tag: &str, tcpdump_args: &[&str]) -> String {
    wait_until(Duration::from_secs(20), "pod A pinging pod B", || ping_ok(l).then_some(()));
    let cap = std::env::temp_dir().join(format!("ovl-cap-{}-{tag}.txt", std::process::id()));
    let mut args = vec!["tcpdump", "-i", &l.port1, "-l", "-n", "-v", "-c", "40"];
    args.extend_from_slice(tcpdump_args);
    let mut tcpdump = l.lan.ns().spawn(args, &cap);
    std::thread::sleep(Duration::from_millis(700));
    let out = l.pods[0].run_ok(&[bin("lab-tcp").to_str().unwrap(), "probe", &format!("{}:80", POD_IPS[1]), "5"]);
    assert_eq!(out.lines().filter(|x| *x == "pod-b").count(), 5, "TCP from pod A to pod B: {out}");
    std::thread::sleep(Duration::from_millis(500));
    tcpdump.stop(Duration::from_millis(200));
    std::fs::read_to_string(&cap).unwrap_or_default()
}

fn tools() -> bool {
    require_root()
        && require_program("tcpdump", "tcpdump")
        && require_program("ethtool", "ethtool")
        && require_program("ping", "iputils-ping")
}

/// The inner pod addresses appear in the decoded capture, both ways.
fn assert_inner(text: &str, what: &str) {
    let fwd = format!("{}.", POD_IPS[0]);
    let back = format!("> {}.", POD_IPS[0]);
    assert!(
        text.contains(&fwd) && text.contains(&format!("> {}.80", POD_IPS[1])) && text.contains(&back),
        "{what}: pod addresses not seen inside the capture:\n{text}"
    );
}

#[test]
fn vxlan_overlay_carries_pod_tcp() {
    if !tools() {
        return;
    }
    let mut l = lab(&["--routing-mode", "tunnel", "--tunnel-protocol", "vxlan"]);
    // tcpdump calls 8472 OTV; -T vxlan decodes it as VXLAN (RFC 7348).
    let text = traffic(&l, "vxlan", &["-T", "vxlan", "udp", "port", "8472"]);
    assert!(text.contains("VXLAN") && text.contains("vni 2"), "no VXLAN (vni 2) seen on the LAN:\n{text}");
    assert_inner(&text, "VXLAN");
    assert!(l.nodes[0].ip_ok(&["-d", "link", "show", "hl_vxlan"]).contains("external"));
    let tl = l.agents[0].cli(&["bpf", "tunnel", "list", "--pin-dir", l.pins[0].to_str().unwrap(), "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&tl.stdout).unwrap_or_default();
    assert!(
        v.as_array().is_some_and(|a| a.iter().any(|e| e["cidr"] == POD_CIDRS[1] && e["remote"] == NODE_IPS[1])),
        "halyard bpf tunnel list: {}{}",
        String::from_utf8_lossy(&tl.stdout),
        String::from_utf8_lossy(&tl.stderr)
    );

    // A restarted agent swaps its programs into the pinned links; the overlay keeps working.
    l.agents[0].restart().unwrap();
    wait_until(Duration::from_secs(10), "pod A reaching pod B after a restart", || ping_ok(&l).then_some(()));

    // --uninstall removes the device, the programs and the pins.
    l.agents[0].stop();
    let pin = l.pins[0].to_str().unwrap();
    let out = l.nodes[0].exec(&[bin("halyard-agent").to_str().unwrap(), "--uninstall", "--bpf-pin-dir", pin]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!l.nodes[0].ip(&["link", "show", "hl_vxlan"]).status.success(), "hl_vxlan still there");
    assert!(!l.pins[0].exists(), "pins left under {pin}");
    assert!(!ping_ok(&l), "pod traffic still tunnelled after --uninstall");
}

#[test]
fn geneve_overlay_in_bpf_carries_pod_tcp() {
    if !tools() {
        return;
    }
    let l = lab(&["--routing-mode", "tunnel", "--tunnel-protocol", "geneve", "--overlay-uplink", "eth0"]);
    let text = traffic(&l, "geneve", &["udp", "port", "6081"]);
    assert!(text.contains("Geneve") && text.contains("vni 0x2"), "no Geneve (vni 2) seen on the LAN:\n{text}");
    assert_inner(&text, "Geneve");
    // No device: the encapsulation is BPF's, on lxc0 and eth0.
    assert!(!l.nodes[0].ip(&["link", "show", "hl_vxlan"]).status.success());
}

#[test]
fn native_routing_puts_plain_pod_packets_on_the_wire() {
    if !tools() {
        return;
    }
    let mut l = lab(&["--routing-mode", "native"]);
    let text = traffic(&l, "native", &["host", POD_IPS[1]]);
    assert_inner(&text, "native");
    assert!(!text.contains("Geneve") && !text.contains("VXLAN") && !text.contains("UDP"), "{text}");
    let routes = l.nodes[0].ip_ok(&["route", "show", "proto", "72"]);
    assert!(routes.contains(&format!("{} via {}", POD_CIDRS[1], NODE_IPS[1])), "owned routes: {routes}");
    // Someone else's route is never touched; --uninstall removes only ours.
    l.nodes[0].ip_ok(&["route", "add", "10.250.0.0/24", "via", NODE_IPS[1], "proto", "static"]);
    l.agents[0].stop();
    let pin = l.pins[0].to_str().unwrap();
    let out = l.nodes[0].exec(&[bin("halyard-agent").to_str().unwrap(), "--uninstall", "--bpf-pin-dir", pin]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(l.nodes[0].ip_ok(&["route", "show", "proto", "72"]).trim().is_empty());
    assert!(l.nodes[0].ip_ok(&["route", "show"]).contains("10.250.0.0/24"));
}
