//! `l2-failover-bench [RUNS] [kill|peers|peers-etcd]`: what happens to an L2-announced IP when
//! its owner node dies or is partitioned, Halyard's election against keepalived (VRRPv3, 10 ms
//! adverts), side by side in one run.
//!
//! Three nodes and a client on a bridge LAN (network namespaces; Halyard also gets an etcd). A
//! client probes the IP over ARP every 5 ms (`arp-probe`). Each run, at a random phase:
//! * `kill` (default): takes the owner's bridge port down and SIGKILLs its announcer;
//! * `peers`: cuts the owner off from its peers only (heartbeats and VRRP adverts run on a second
//!   bridge, `eth1`, whose port goes down; the client and etcd still reach the owner). The right
//!   outcome is no failover at all: the owner goes on answering alone;
//! * `peers-etcd`: the same, and the owner also loses etcd (a blackhole route). keepalived has
//!   no etcd, so for it this is the same as `peers`.
//!
//! * `load`: no failure; three nodes announce 10, 100 and 1000 services in turn, and the bench
//!   reads etcd's own counters over 10 s: raft proposals committed (writes) and lease
//!   keep-alives received. They must not grow with the number of services.
//!
//! It records the longest run of unanswered probes (the failover time), the probes answered by
//! two MACs, and whether another node answered. Then the partition heals (or the node comes
//! back) and the next run starts once the IP has one owner again. Needs root, etcd-server,
//! keepalived and the workspace binaries
//! (`cargo build --release -p halyard-agent -p halyard-cli -p halyard-tests`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use halyard_tests::etcd::Etcd;
use halyard_tests::netns::{Bridge, Netns, poll_until};
use halyard_tests::{Agent, bin};

const IP: &str = "10.80.1.200";

/// One node's announcer: Halyard's agent or a keepalived.
enum Announcer {
    Halyard(Agent),
    Keepalived { ns: String, conf: std::path::PathBuf, child: Option<Child> },
}

impl Announcer {
    fn kill(&mut self) {
        match self {
            Announcer::Halyard(a) => a.kill(),
            Announcer::Keepalived { child, .. } => {
                if let Some(mut c) = child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
    fn start(&mut self) {
        match self {
            Announcer::Halyard(a) => a.restart().expect("restart agent"),
            Announcer::Keepalived { ns, conf, child } => *child = Some(keepalived(ns, conf)),
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn keepalived(ns: &str, conf: &std::path::Path) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "keepalived", "--dont-fork", "--vrrp", "--log-console", "--use-file"])
        .arg(conf)
        .args(["--pid", &format!("/tmp/hl-ka-{ns}.pid"), "--vrrp_pid", &format!("/tmp/hl-ka-vrrp-{ns}.pid")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keepalived")
}

fn probe(client: &Netns, count: u32) -> serde_json::Value {
    let out = client.run_ok(&[bin("arp-probe").to_str().unwrap(), "eth0", "10.80.1.100", IP, &count.to_string(), "5"]);
    serde_json::from_str(out.trim()).expect("arp-probe output")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// What one run does to the owner.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Kill,
    Peers,
    PeersEtcd,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Kill => "kill",
            Mode::Peers => "peers",
            Mode::PeersEtcd => "peers-etcd",
        }
    }
}

/// Per run: longest gap (ms), double answers, whether a node other than the owner answered.
struct Outcome {
    gaps: Vec<f64>,
    doubles: u64,
    moved: u32,
}

fn run(kind: &str, mode: Mode, runs: u32) -> Outcome {
    let lan = Bridge::new(&format!("fb{kind}"));
    // Partition modes: heartbeats / VRRP adverts on a LAN of their own.
    let hb = (mode != Mode::Kill).then(|| Bridge::new(&format!("fh{kind}")));
    let etcd_ns = Netns::new("fbetcd");
    lan.attach(&etcd_ns, "eth0", &["10.80.1.50/24"]);
    let etcd = (kind == "halyard").then(|| Etcd::start_in(Some(etcd_ns.name()), "10.80.1.50"));
    let client = Netns::new("fbcli");
    lan.attach(&client, "eth0", &["10.80.1.100/24"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    let mut hb_ports = Vec::new();
    let mut ann = Vec::new();
    for i in 1..=3u32 {
        let ns = Netns::new(&format!("fbn{i}"));
        ports.push(lan.attach(&ns, "eth0", &[&format!("10.80.1.1{i}/24")]));
        if let Some(b) = &hb {
            hb_ports.push(b.attach(&ns, "eth1", &[&format!("10.81.1.1{i}/24")]));
        }
        let (group, vrrp_if) = if hb.is_some() { ("10.81.1.255:7946", "eth1") } else { ("10.80.1.255:7946", "eth0") };
        let a = if kind == "halyard" {
            let url = etcd.as_ref().unwrap().url();
            Announcer::Halyard(
                Agent::start_in(
                    ns.name(),
                    &[("m.yaml", halyard_tests::L2_ELECTION_MANIFESTS)],
                    &[
                        "--node-name",
                        &format!("node-{i}"),
                        "--l2-election",
                        "etcd",
                        "--l2-etcd-endpoints",
                        &url,
                        "--l2-heartbeat-group",
                        group,
                        "--log-level",
                        "warn",
                    ],
                )
                .expect("agent"),
            )
        } else {
            let conf = tmp.path().join(format!("ka{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "vrrp_instance VI_1 {{\n  state BACKUP\n  interface {vrrp_if}\n  virtual_router_id 51\n  priority {}\n  \
                     advert_int 0.01\n  version 3\n  virtual_ipaddress {{\n    {IP}/24 dev eth0\n  }}\n}}\n",
                    100 - i * 10
                ),
            )
            .unwrap();
            let child = keepalived(ns.name(), &conf);
            Announcer::Keepalived { ns: ns.name().to_string(), conf, child: Some(child) }
        };
        nodes.push(ns);
        ann.push(a);
    }
    let macs: Vec<String> =
        nodes.iter().map(|n| n.run_ok(&["cat", "/sys/class/net/eth0/address"]).trim().to_lowercase()).collect();
    let owner = |client: &Netns| -> Option<usize> {
        let v = probe(client, 20);
        let m = v["macs"].as_array()?;
        (m.len() == 1).then(|| macs.iter().position(|x| Some(x.as_str()) == m[0].as_str()))?
    };
    let mut out = Outcome { gaps: Vec::new(), doubles: 0, moved: 0 };
    for r in 0..runs {
        let Some(o) = poll_until(Duration::from_secs(15), || owner(&client)) else {
            eprintln!("{kind}: run {r}: no single owner; skipped");
            continue;
        };
        // 1.5 s of probes; the event lands at a random phase after 200-300 ms.
        let c2 = client.name().to_string();
        let prober = std::thread::spawn(move || {
            let out = Command::new("ip")
                .args(["netns", "exec", &c2])
                .arg(bin("arp-probe"))
                .args(["eth0", "10.80.1.100", IP, "300", "5"])
                .output()
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        });
        std::thread::sleep(Duration::from_millis(200 + (fastrand_u64() % 100)));
        match mode {
            // The node drops off the LAN first (that is the moment it stops answering, for both
            // announcers: keepalived leaves the address configured, and the kernel would go on
            // answering ARP for it), then its process dies.
            Mode::Kill => {
                lan.ns().ip_ok(&["link", "set", &ports[o], "down"]);
                ann[o].kill();
            }
            Mode::Peers | Mode::PeersEtcd => {
                hb.as_ref().unwrap().ns().ip_ok(&["link", "set", &hb_ports[o], "down"]);
                if mode == Mode::PeersEtcd {
                    nodes[o].ip_ok(&["route", "add", "blackhole", "10.80.1.50/32"]);
                }
            }
        }
        let v = prober.join().unwrap();
        let gap = v["longest_gap_ms"].as_f64().unwrap_or(f64::NAN);
        let double = v["double"].as_u64().unwrap_or(0);
        let others =
            v["macs"].as_array().map(|m| m.iter().any(|x| x.as_str() != Some(macs[o].as_str()))).unwrap_or(false);
        eprintln!(
            "{kind} {}: run {r}: owner node-{}; longest gap {gap} ms; double answers {double}; another node answered: {others}; \
             answered {} of {}; macs {}",
            mode.name(),
            o + 1,
            v["answered"],
            v["probes"],
            v["macs"]
        );
        out.gaps.push(gap);
        out.doubles += double;
        out.moved += u32::from(others);
        match mode {
            Mode::Kill => {
                lan.ns().ip_ok(&["link", "set", &ports[o], "up"]);
                ann[o].start();
            }
            Mode::Peers | Mode::PeersEtcd => {
                hb.as_ref().unwrap().ns().ip_ok(&["link", "set", &hb_ports[o], "up"]);
                if mode == Mode::PeersEtcd {
                    nodes[o].ip_ok(&["route", "del", "blackhole", "10.80.1.50/32"]);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(ann);
    out
}

/// The L2 election manifests with `n` LoadBalancer services (IPs from a /22).
fn load_manifests(n: u32) -> String {
    let mut m = String::from(
        "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: lan}\nspec:\n  blocks: [{cidr: 10.80.4.0/22}]\n\
         ---\napiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata: {name: lan}\n\
         spec:\n  interfaces: [\"^eth0$\"]\n  loadBalancerIPs: true\n",
    );
    for i in 1..=3 {
        m.push_str(&format!("---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-{i}}}\n"));
    }
    for i in 0..n {
        m.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n\
             spec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n"
        ));
    }
    m
}

/// etcd's counters: (raft proposals committed, lease keep-alive messages received).
fn etcd_counters(ns: &Netns, url: &str) -> (f64, f64) {
    let text = ns.run_ok(&["curl", "-s", &format!("{url}/metrics")]);
    let value = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (
        value("etcd_server_proposals_committed_total "),
        value("grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\""),
    )
}

/// Three agents announcing `n` services: etcd writes/s and keep-alives/s over 10 s, once every
/// IP has its owner.
fn load(n: u32) -> (f64, f64, usize) {
    let lan = Bridge::new("fbload");
    let etcd_ns = Netns::new("fbletcd");
    lan.attach(&etcd_ns, "eth0", &["10.80.1.50/24"]);
    let etcd = Etcd::start_in(Some(etcd_ns.name()), "10.80.1.50");
    let manifests = load_manifests(n);
    let mut agents = Vec::new();
    let mut nodes = Vec::new();
    for i in 1..=3u32 {
        let ns = Netns::new(&format!("fbl{i}"));
        lan.attach(&ns, "eth0", &[&format!("10.80.1.1{i}/24")]);
        let url = etcd.url();
        agents.push(
            Agent::start_in(
                ns.name(),
                &[("m.yaml", &manifests)],
                &[
                    "--node-name",
                    &format!("node-{i}"),
                    "--l2-election",
                    "etcd",
                    "--l2-etcd-endpoints",
                    &url,
                    "--l2-heartbeat-group",
                    "10.80.1.255:7946",
                    "--log-level",
                    "warn",
                ],
            )
            .expect("agent"),
        );
        nodes.push(ns);
    }
    // Every IP owned by exactly one node.
    let owned = |agents: &[Agent]| -> usize {
        agents
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let v: serde_json::Value =
                    serde_json::from_slice(&a.cli(&["l2", "announcements", "-o", "json"]).stdout)
                        .unwrap_or(serde_json::Value::Null);
                v.as_array().map(|r| r.iter().filter(|r| r["owner"] == format!("node-{}", i + 1)).count()).unwrap_or(0)
            })
            .sum()
    };
    let owned_now = poll_until(Duration::from_secs(60), || (owned(&agents) >= n as usize).then_some(()));
    if owned_now.is_none() {
        eprintln!("load {n}: only {} of {n} IPs owned after 60 s", owned(&agents));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (w0, k0) = etcd_counters(&etcd_ns, &etcd.url());
    std::thread::sleep(Duration::from_secs(10));
    let (w1, k1) = etcd_counters(&etcd_ns, &etcd.url());
    let got = owned(&agents);
    drop(agents);
    drop(nodes);
    ((w1 - w0) / 10.0, (k1 - k0) / 10.0, got)
}

fn fastrand_u64() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("load") {
        println!("L2 election load on etcd: three nodes, N announced services, etcd's own counters over 10 s");
        println!("goal: flat in N (load independent of the number of services)");
        println!("{:>10} {:>12} {:>12} {:>14}", "services", "IPs owned", "writes/s", "keep-alives/s");
        for n in [10, 100, 1000] {
            let (w, k, owned) = load(n);
            println!("{n:>10} {owned:>12} {w:>12.1} {k:>14.1}");
        }
        return;
    }
    let runs: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let mode = match std::env::args().nth(2).as_deref() {
        None | Some("kill") => Mode::Kill,
        Some("peers") => Mode::Peers,
        Some("peers-etcd") => Mode::PeersEtcd,
        Some(other) => {
            eprintln!("l2-failover-bench: unknown mode {other:?} (kill, peers, peers-etcd)");
            std::process::exit(2);
        }
    };
    match mode {
        Mode::Kill => {
            println!("L2 failover: owner link down + SIGKILL, client ARP probe every 5 ms, {runs} runs each");
            println!(
                "goal: Halyard p99 <= 100 ms and 0 probes answered by two MACs; anchor: keepalived VRRPv3 with 10 ms adverts, same run"
            );
        }
        Mode::Peers => {
            println!(
                "L2 partition: owner cut off from its peers only (client and etcd reach it), ARP probe every 5 ms, {runs} runs each"
            );
            println!(
                "goal: 0 probes answered by two MACs and no takeover; anchor: keepalived VRRPv3 with 10 ms adverts, same run"
            );
        }
        Mode::PeersEtcd => {
            println!(
                "L2 partition: owner cut off from its peers and from etcd (client reaches it), ARP probe every 5 ms, {runs} runs each"
            );
            println!(
                "goal: 0 probes answered by two MACs; anchor: keepalived VRRPv3 with 10 ms adverts (no etcd: same as peers), same run"
            );
        }
    }
    println!(
        "{:<12} {:>6} {:>13} {:>13} {:>13} {:>14} {:>14}",
        "announcer", "runs", "gap p50 ms", "gap p99 ms", "gap max ms", "double answers", "runs w/ other"
    );
    let only = std::env::var("ONLY").ok();
    for kind in ["halyard", "keepalived"] {
        if only.as_deref().is_some_and(|o| o != kind) {
            continue;
        }
        if kind == "keepalived" && !std::path::Path::new("/usr/sbin/keepalived").exists() {
            println!("{kind:<12} not installed (apt-get install keepalived): anchor skipped");
            continue;
        }
        let mut o = run(kind, mode, runs);
        if o.gaps.is_empty() {
            println!("{kind:<12} no run completed");
            continue;
        }
        let n = o.gaps.len();
        let (p50, p99, max) = (pct(&mut o.gaps, 0.5), pct(&mut o.gaps, 0.99), pct(&mut o.gaps, 1.0));
        println!("{kind:<12} {n:>6} {p50:>13.0} {p99:>13.0} {max:>13.0} {:>14} {:>14}", o.doubles, o.moved);
    }
}
