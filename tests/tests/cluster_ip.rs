//! East-west load balancing end to end: pods connecting to a Service's ClusterIP.
//!
//! Two nodes on a bridge LAN, each running the real `halyard-agent` (pod routing by VXLAN,
//! Geneve or native routes; the ClusterIP translation is on by default with any of them). Node 1
//! has the client pod (`lxc0`) and one backend pod (`lxc1`); node 2 has two backend pods. The
//! Service `default/web` (ClusterIP 10.96.0.10, port 80 -> targetPort 8080) has the three
//! backends in its EndpointSlice. The client opens many real TCP connections to 10.96.0.10:80:
//! every one must connect and get a backend's greeting (so the SYN-ACK came back from
//! 10.96.0.10:80), the connections must spread over the local and the remote backends, and
//! tcpdump in the client pod must never see a backend's own address. Removing backends from the
//! EndpointSlice must move new connections to the others. Needs root.

use std::collections::BTreeMap;
use std::time::Duration;

use halyard_tests::netns::{Bpffs, Bridge, ChildGuard, Netns, require_program, require_root, veth_pair, wait_until};
use halyard_tests::{Agent, bin};

const NODE_IPS: [&str; 2] = ["192.168.78.1", "192.168.78.2"];
const POD_CIDRS: [&str; 2] = ["10.244.1.0/24", "10.244.2.0/24"];
const GATEWAY: &str = "169.254.1.1";
const CLUSTER_IP: &str = "10.96.0.10";
const CLIENT: &str = "10.244.1.10";
/// (pod IP, node index, host-side interface, name the server answers with).
const BACKENDS: [(&str, usize, &str, &str); 3] = [
    ("10.244.1.11", 0, "lxc1", "be-local"),
    ("10.244.2.10", 1, "lxc0", "be-remote-a"),
    ("10.244.2.11", 1, "lxc1", "be-remote-b"),
];

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

/// The Service and an EndpointSlice holding the backends named in `names`.
fn service_manifest(names: &[&str]) -> String {
    let endpoints: String = BACKENDS
        .iter()
        .filter(|b| names.contains(&b.3))
        .map(|(ip, node, _, _)| format!("  - addresses: [\"{ip}\"]\n    nodeName: n{}\n", node + 1))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  clusterIP: {CLUSTER_IP}\n  clusterIPs: [{CLUSTER_IP}]\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{endpoints}"
    )
}

struct Lab {
    _lan: Bridge,
    _fs: Bpffs,
    nodes: Vec<Netns>,
    client: Netns,
    _backends: Vec<Netns>,
    agents: Vec<Agent>,
    pins: Vec<std::path::PathBuf>,
    _servers: Vec<ChildGuard>,
}

/// A pod behind `host_if` on `node`, as a CNI plugin would wire it.
fn pod(node: &Netns, host_if: &str, ip: &str, offload: bool) -> Netns {
    let pod = Netns::new("pod");
    veth_pair(node, host_if, &[&format!("{GATEWAY}/32")], &pod, "eth0", &[&format!("{ip}/32")]);
    // Room for the 50-byte VXLAN/Geneve headers on a 1500-byte underlay.
    pod.ip_ok(&["link", "set", "eth0", "mtu", "1400"]);
    pod.ip_ok(&["route", "add", GATEWAY, "dev", "eth0", "scope", "link"]);
    pod.ip_ok(&["route", "add", "default", "via", GATEWAY, "dev", "eth0"]);
    if !offload {
        // Full checksums from the pod (encapsulated packets would otherwise carry partial ones).
        pod.run_ok(&["ethtool", "-K", "eth0", "tx", "off"]);
    }
    node.ip_ok(&["route", "add", &format!("{ip}/32"), "dev", host_if, "scope", "link"]);
    pod
}

fn lab(args: &[&str], offload: bool) -> Lab {
    let lan = Bridge::new("ciplan");
    let fs = Bpffs::new("cip");
    let mut nodes = Vec::new();
    for (i, node_ip) in NODE_IPS.iter().enumerate() {
        let n = Netns::new(&format!("cipn{}", i + 1));
        lan.attach(&n, "eth0", &[&format!("{node_ip}/24")]);
        nodes.push(n);
    }
    let client = pod(&nodes[0], "lxc0", CLIENT, offload);
    let mut backends = Vec::new();
    let mut servers = Vec::new();
    for (ip, node, host_if, name) in BACKENDS {
        let p = pod(&nodes[node], host_if, ip, offload);
        let log = std::env::temp_dir().join(format!("cip-{name}-{}.log", std::process::id()));
        servers.push(p.spawn([bin("lab-tcp").to_str().unwrap(), "serve", "0.0.0.0:8080", name], log));
        backends.push(p);
    }
    let all: Vec<&str> = BACKENDS.iter().map(|b| b.3).collect();
    let (nodes_yaml, svc_yaml) = (nodes_manifest(), service_manifest(&all));
    let mut agents = Vec::new();
    let mut pins = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let pin = fs.dir.join(format!("n{}", i + 1));
        let name = format!("n{}", i + 1);
        let mut a = vec![
            "--node-name",
            name.as_str(),
            "--bpf-pin-dir",
            pin.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:9897",
        ];
        a.extend_from_slice(args);
        let files = [("nodes.yaml", nodes_yaml.as_str()), ("web.yaml", svc_yaml.as_str())];
        agents.push(Agent::start_in(n.name(), &files, &a).unwrap());
        pins.push(pin);
    }
    let l = Lab { _lan: lan, _fs: fs, nodes, client, _backends: backends, agents, pins, _servers: servers };
    for i in 0..2 {
        wait_backends(&l, i, 3);
    }
    // Pod routing both ways to each backend, then the ClusterIP itself.
    for (ip, ..) in BACKENDS {
        wait_until(Duration::from_secs(20), &format!("the client pinging {ip}"), || {
            l.client.exec(&["ping", "-c", "1", "-W", "1", ip]).status.success().then_some(())
        });
    }
    wait_until(Duration::from_secs(20), "a first connection to the ClusterIP", || {
        let out = probe(&l, 1);
        BACKENDS.iter().any(|b| out.contains_key(b.3)).then_some(())
    });
    l
}

/// `halyard bpf cluster-ip list -o json` on node `i`.
fn cluster_ip_list(l: &Lab, i: usize) -> serde_json::Value {
    let out = l.agents[i].cli(&["bpf", "cluster-ip", "list", "--pin-dir", l.pins[i].to_str().unwrap(), "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Waits until node `i`'s map gives 10.96.0.10:80/TCP exactly `n` backends in its Maglev table.
fn wait_backends(l: &Lab, i: usize, n: usize) {
    let what = format!("node {} to have {n} ClusterIP backends", i + 1);
    l.agents[i].wait_for(Duration::from_secs(20), &what, |_| {
        let v = cluster_ip_list(l, i);
        let fe = v.as_array()?.iter().find(|e| e["frontend"] == format!("{CLUSTER_IP}:80/TCP"))?.clone();
        (fe["service"] == "default/web:80/TCP" && fe["backends"].as_array()?.len() == n).then_some(())
    });
}

/// `count` TCP connections from the client pod to ClusterIP:80, one after another: the name
/// each got (errors fail the test).
fn probe(l: &Lab, count: u32) -> BTreeMap<String, usize> {
    let out =
        l.client.exec(&[bin("lab-tcp").to_str().unwrap(), "probe", &format!("{CLUSTER_IP}:80"), &count.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut got = BTreeMap::new();
    for line in text.lines() {
        *got.entry(line.to_string()).or_insert(0) += 1;
    }
    got
}

fn assert_all_ok(got: &BTreeMap<String, usize>, count: usize, allowed: &[&str], what: &str) {
    let ok: usize = got.iter().filter(|(k, _)| allowed.contains(&k.as_str())).map(|(_, v)| v).sum();
    assert_eq!(ok, count, "{what}: every connection must reach one of {allowed:?}: {got:?}");
}

fn tools() -> bool {
    require_root()
        && require_program("tcpdump", "tcpdump")
        && require_program("ethtool", "ethtool")
        && require_program("ping", "iputils-ping")
}

/// 60 connections spread over the local backend and both remote ones, and the client never sees
/// a backend's address (tcpdump on its eth0): every reply comes from ClusterIP:80.
fn spread_and_replies_from_the_cluster_ip(l: &Lab, tag: &str) {
    let cap = std::env::temp_dir().join(format!("cip-cap-{}-{tag}.txt", std::process::id()));
    let mut tcpdump = l.client.spawn(["tcpdump", "-i", "eth0", "-l", "-n", "tcp"], &cap);
    std::thread::sleep(Duration::from_millis(700));
    let got = probe(l, 60);
    std::thread::sleep(Duration::from_millis(300));
    tcpdump.stop(Duration::from_millis(200));
    let all: Vec<&str> = BACKENDS.iter().map(|b| b.3).collect();
    assert_all_ok(&got, 60, &all, tag);
    for name in &all {
        assert!(got.get(*name).copied().unwrap_or(0) > 0, "{tag}: no connection reached {name}: {got:?}");
    }
    let text = std::fs::read_to_string(&cap).unwrap_or_default();
    let from_vip = text.lines().filter(|x| x.contains(&format!("{CLUSTER_IP}.80 > {CLIENT}."))).count();
    assert!(from_vip >= 120, "{tag}: replies from {CLUSTER_IP}:80 seen by the client: {from_vip}\n{text}");
    for (ip, ..) in BACKENDS {
        assert!(!text.contains(ip), "{tag}: the client saw backend address {ip}:\n{text}");
    }
    // Node 1's conntrack holds the client's flows, each on one of the backends.
    let ct = l.agents[0].cli(&["bpf", "cluster-ip", "ct", "--pin-dir", l.pins[0].to_str().unwrap(), "-o", "json"]);
    let ct: serde_json::Value = serde_json::from_slice(&ct.stdout).unwrap_or_default();
    let flows = ct.as_array().map(Vec::as_slice).unwrap_or_default();
    assert!(flows.len() >= 60, "{tag}: flows tracked on node 1: {ct}");
    for f in flows {
        let be = f["backend"].as_str().unwrap_or_default();
        assert!(
            f["clusterIP"] == format!("{CLUSTER_IP}:80")
                && f["source"].as_str().is_some_and(|s| s.starts_with(CLIENT))
                && BACKENDS.iter().any(|b| be == format!("{}:8080", b.0)),
            "{tag}: flow {f}"
        );
    }
    // Both hooks counted on node 1: translations from the client, replies translated back.
    let out = l.agents[0].cli(&["bpf", "cluster-ip", "list", "--pin-dir", l.pins[0].to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("from_pod_translated") && table.contains("to_pod_reply_translated"),
        "{tag}: counters:\n{table}"
    );
    // The same counters in the metrics (scraped inside node 1's namespace).
    let metrics = l.nodes[0].run_ok(&["curl", "-fsS", "http://127.0.0.1:9897/metrics"]);
    let value = |counter: &str| {
        let prefix = format!("halyard_cluster_ip_packets{{counter=\"{counter}\"}} ");
        metrics.lines().find_map(|line| line.strip_prefix(prefix.as_str())?.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    assert!(value("from_pod_translated") >= 60, "{tag}: metrics:\n{metrics}");
    assert!(value("to_pod_reply_translated") >= 60, "{tag}: metrics:\n{metrics}");
}

#[test]
fn vxlan_cluster_ip_spreads_translates_back_and_follows_the_endpoint_slice() {
    if !tools() {
        return;
    }
    let mut l = lab(&["--routing-mode", "tunnel", "--tunnel-protocol", "vxlan"], false);
    spread_and_replies_from_the_cluster_ip(&l, "vxlan");

    // The local backend leaves the EndpointSlice: new connections go to the remote ones only.
    let remote = ["be-remote-a", "be-remote-b"];
    for a in &l.agents {
        a.write_manifest("web.yaml", &service_manifest(&remote));
    }
    wait_backends(&l, 0, 2);
    let got = probe(&l, 30);
    assert_all_ok(&got, 30, &remote, "without the local backend");
    assert!(got.len() == 2, "both remote backends still used: {got:?}");
    // Then one remote backend too: everything to the last one.
    for a in &l.agents {
        a.write_manifest("web.yaml", &service_manifest(&["be-remote-b"]));
    }
    wait_backends(&l, 0, 1);
    assert_all_ok(&probe(&l, 10), 10, &["be-remote-b"], "one backend left");
    // And back: the local one (on node 1) takes connections again.
    let all: Vec<&str> = BACKENDS.iter().map(|b| b.3).collect();
    for a in &l.agents {
        a.write_manifest("web.yaml", &service_manifest(&all));
    }
    wait_backends(&l, 0, 3);
    let got = probe(&l, 30);
    assert_all_ok(&got, 30, &all, "all backends back");
    assert!(got.contains_key("be-local"), "{got:?}");

    // A connection through the ClusterIP survives an agent restart on the client's node: the
    // maps stay, the programs are swapped into the pinned links.
    let log = std::env::temp_dir().join(format!("cip-hold-{}.log", std::process::id()));
    let mut hold = l.client.spawn([bin("lab-tcp").to_str().unwrap(), "hold", &format!("{CLUSTER_IP}:80"), "4"], &log);
    std::thread::sleep(Duration::from_millis(800));
    l.agents[0].restart().unwrap();
    let status = wait_until(Duration::from_secs(15), "the held connection to end", || hold.try_wait());
    let held = hold.log();
    assert!(status.success() && held.contains("held "), "connection broken across the restart: {held}");
    for link in ["tc-svc-in-lxc0", "tc-svc-out-lxc0", "tc-svc-in-lxc1", "tc-svc-out-lxc1", "tc-ovl-tx-lxc0"] {
        assert!(l.pins[0].join("links").join(link).exists(), "link {link} not pinned after the restart");
    }

    // --uninstall removes the links and maps with the rest: the ClusterIP is gone.
    l.agents[0].stop();
    let pin = l.pins[0].to_str().unwrap();
    let out = l.nodes[0].exec(&[bin("halyard-agent").to_str().unwrap(), "--uninstall", "--bpf-pin-dir", pin]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!l.pins[0].exists(), "pins left under {pin}");
    let got = probe(&l, 1);
    assert!(got.keys().all(|k| k.starts_with("error")), "ClusterIP still answered after --uninstall: {got:?}");
}

#[test]
fn geneve_cluster_ip_reaches_local_and_remote_backends() {
    if !tools() {
        return;
    }
    let l = lab(&["--routing-mode", "tunnel", "--tunnel-protocol", "geneve", "--overlay-uplink", "eth0"], false);
    spread_and_replies_from_the_cluster_ip(&l, "geneve");
}

#[test]
fn native_routing_cluster_ip_with_checksum_offload() {
    if !tools() {
        return;
    }
    // Pods keep tx checksum offload on: packets reach tc as CHECKSUM_PARTIAL.
    let l = lab(&["--routing-mode", "native"], true);
    spread_and_replies_from_the_cluster_ip(&l, "native");
}
