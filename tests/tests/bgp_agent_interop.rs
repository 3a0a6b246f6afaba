//! The agent (`halyard-agent` over a manifest directory, as in `bgp_bird.rs`) against real FRR
//! (bgpd + zebra) and GoBGP (gobgpd) routers, and ExaBGP for a crafted UPDATE, in network
//! namespaces. FRR and GoBGP each run the same two scenarios, each against its own agent:
//!
//! * **eBGP, dual stack** (Cilium v2 `CiliumBGPClusterConfig`/`PeerConfig`/`Advertisement`):
//!   4-byte ASNs on both sides (4200000001 ↔ 4200000002); an IPv4 session the agent dials (the
//!   router is passive) and an IPv6 session the router dials (the instance's `localPort: 179`;
//!   the agent's own dial-out goes to port 1179, where nothing listens), signed with TCP MD5
//!   from a Secret (`authSecretRef`); `ss` in the router's namespace shows who opened each
//!   connection. Then the exact IPv4 and IPv6 LB prefixes, next hops, AS path, communities and
//!   large communities in the router's RIB; a deleted Service is withdrawn and a changed
//!   community arrives, neither resetting the sessions (the router's session counters); then
//!   the router freezes (SIGSTOP) and the agent's hold timer (3 s) takes its sessions down,
//!   as `halyard bgp peers` shows; resumed, the router gets the session back.
//! * **iBGP** (MetalLB `BGPPeer`/`BGPAdvertisement`, 4200000001 on both sides): TCP MD5 with a
//!   wrong password (the router's kernel counts the bad signatures, nothing establishes), then
//!   the right one; local-pref, communities and large communities at the router; graceful
//!   restart: the agent is SIGKILLed, the router keeps its routes marked stale, a Service is
//!   deleted meanwhile, and after the restart the router has End-of-RIB, the deleted Service's
//!   route is flushed and the other one is still there, no longer stale.
//!
//! ExaBGP sends the agent a malformed UPDATE (RFC 7606 treat-as-withdraw; the session stays).
//! ExaBGP also receives the IPv6 LB IP over an IPv6 session and over an IPv4 one (next hop: the
//! Node's IPv6 InternalIP), checked in its decoded JSON.
//!
//! Needs root, `frr`, `gobgpd` and `exabgp` (each test skips with a message when its daemon is
//! missing). Each test uses its own /24 (`10.112.N.0/24`, `fd00:112:N::/64`; router `.1`, node
//! `.2`) in its own pair of namespaces, so the tests run in parallel.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use halyard_tests::Agent;
use halyard_tests::netns::{Netns, poll_until, require_root, veth_pair};
use halyard_tests::peers::{BgpNeighbor, Exabgp, ExabgpConfig, Frr, FrrConfig, Gobgp, GobgpConfig, Peer};
use serde_json::Value;

const AGENT_ASN: u32 = 4_200_000_001;
const ROUTER_ASN: u32 = 4_200_000_002;
const TIMEOUT: Duration = Duration::from_secs(20);
const NO_EXPORT: &str = "65535:65281";

// ---------------------------------------------------------------------------------------------
// Topology
// ---------------------------------------------------------------------------------------------

/// The router at `10.112.N.1` / `fd00:112:N::1`, the agent's node at `.2` / `::2`.
struct Topo {
    router: Netns,
    node: Netns,
    n: u8,
}

impl Topo {
    fn new(n: u8, router_kind: &str) -> Topo {
        let router = Netns::new(router_kind);
        let node = Netns::new("aginode");
        let r4 = format!("10.112.{n}.1/24");
        let r6 = format!("fd00:112:{n}::1/64");
        let n4 = format!("10.112.{n}.2/24");
        let n6 = format!("fd00:112:{n}::2/64");
        veth_pair(&router, "eth0", &[&r4, &r6], &node, "eth0", &[&n4, &n6]);
        // FRR resets an IPv6 session that comes up before its interface has a link-local
        // address ("nexthop_set failed"): wait until DAD is done with them.
        for ns in [&router, &node] {
            let ready = poll_until(Duration::from_secs(10), || {
                let all = ns.ip_ok(&["-6", "addr", "show", "dev", "eth0", "scope", "link"]);
                let tentative = ns.ip_ok(&["-6", "addr", "show", "dev", "eth0", "tentative"]);
                (all.contains("fe80:") && tentative.trim().is_empty()).then_some(())
            });
            assert!(ready.is_some(), "no usable IPv6 link-local address in {}", ns.name());
        }
        Topo { router, node, n }
    }

    fn router4(&self) -> String {
        format!("10.112.{}.1", self.n)
    }

    fn router6(&self) -> String {
        format!("fd00:112:{}::1", self.n)
    }

    fn node4(&self) -> String {
        format!("10.112.{}.2", self.n)
    }

    fn node6(&self) -> String {
        format!("fd00:112:{}::2", self.n)
    }

    /// Who opened the established TCP connections between the router and `neighbor`, from `ss`
    /// in the router's namespace: `true` for each the router dialled (its remote port is 179),
    /// `false` for each the neighbor dialled (the router's local port is 179).
    fn router_dialled(&self, neighbor: &str) -> Vec<bool> {
        let text = self.router.run_ok(&["ss", "-Htn", "state", "established"]);
        let split = |end: &str| -> Option<(String, u16)> {
            let (addr, port) = end.rsplit_once(':')?;
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            Some((addr.trim_start_matches("::ffff:").to_string(), port.parse().ok()?))
        };
        let mut out = Vec::new();
        for line in text.lines() {
            // Recv-Q Send-Q Local:Port Peer:Port (no State column with a state filter).
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(peer)) = (cols.get(2).and_then(|c| split(c)), cols.get(3).and_then(|c| split(c)))
            else {
                continue;
            };
            if peer.0 == neighbor {
                out.push(peer.1 == 179 && local.1 != 179);
            }
        }
        out
    }

    /// TCP MIB counter `name` (`TCPMD5Failure`, …) of the router's namespace, from
    /// `/proc/net/netstat` read inside it.
    fn router_tcp_counter(&self, name: &str) -> u64 {
        let text = self.router.run_ok(&["cat", "/proc/net/netstat"]);
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [head, values] = pair else { continue };
            let (Some(("TcpExt", h)), Some(("TcpExt", v))) = (head.split_once(':'), values.split_once(':')) else {
                continue;
            };
            if let Some((_, value)) = h.split_whitespace().zip(v.split_whitespace()).find(|(k, _)| *k == name) {
                return value.parse().unwrap_or_else(|_| panic!("TcpExt {name} = {value:?}"));
            }
        }
        panic!("no TcpExt counter {name} in the router's /proc/net/netstat:\n{text}");
    }
}

/// Prints how long each phase took (shown on failure, or with `--nocapture`).
struct Steps {
    what: String,
    start: Instant,
}

impl Steps {
    fn new(what: &str) -> Steps {
        Steps { what: what.to_string(), start: Instant::now() }
    }

    fn done(&self, phase: &str) {
        eprintln!("{}: {phase} at {:.1?}", self.what, self.start.elapsed());
    }
}

/// Sends `sig` (`STOP`, `CONT`) to a process we started, by PID.
fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).stdin(Stdio::null()).status();
    assert!(st.is_ok_and(|s| s.success()), "kill -{sig} {pid} failed");
}

// ---------------------------------------------------------------------------------------------
// The routers, seen the same way
// ---------------------------------------------------------------------------------------------

/// One path in a router's RIB, normalised across FRR and GoBGP.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Path {
    /// The global next hop.
    next_hop: String,
    as_path: Vec<u32>,
    /// `"high:low"`, sorted (well-known ones numerically: no-export is `65535:65281`).
    communities: Vec<String>,
    /// `"global:data1:data2"`, sorted.
    large: Vec<String>,
    local_pref: Option<u64>,
    /// Kept for a restarting neighbor (RFC 4724).
    stale: bool,
}

/// What the tests need from a router daemon.
trait Router {
    fn kind(&self) -> &'static str;
    /// The session state with `neighbor`, lower case (`established`, `active`, …).
    fn state(&self, neighbor: &str) -> Option<String>;
    /// The RIB of `afi` (`"ipv4"`, `"ipv6"`): prefix → its (first) path.
    fn routes(&self, afi: &str) -> BTreeMap<String, Path>;
    /// Something that changes whenever the session with `neighbor` is established again (and
    /// only then): FRR's `connectionsEstablished`, GoBGP's flops and uptime.
    fn session_epoch(&self, neighbor: &str) -> String;
    /// Whether End-of-RIB for `afi` came from `neighbor` on the current session.
    fn eor_received(&self, neighbor: &str, afi: &str) -> bool;
    /// The BGP daemon's PID (to freeze it).
    fn daemon_pid(&self) -> u32;
    /// Neighbor details and the daemon's log, for failure messages.
    fn details(&self, neighbor: &str) -> String;
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect()
}

impl Router for Frr {
    fn kind(&self) -> &'static str {
        "frr"
    }

    fn state(&self, neighbor: &str) -> Option<String> {
        self.neighbor_state(neighbor).map(|s| s.to_lowercase())
    }

    fn routes(&self, afi: &str) -> BTreeMap<String, Path> {
        let table = self.routes_json(afi);
        let prefixes: Vec<String> =
            table["routes"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        let mut out = BTreeMap::new();
        for prefix in prefixes {
            let detail = self.route_json(afi, &prefix);
            // Gone between the two commands.
            let Some(p) = detail["paths"].as_array().and_then(|p| p.first()) else { continue };
            let hops = p["nexthops"].as_array().cloned().unwrap_or_default();
            let global = hops.iter().find(|h| h["scope"].is_null() || h["scope"] == "global");
            let mut communities: Vec<String> = strs(&p["community"]["list"])
                .into_iter()
                .map(|c| match c.as_str() {
                    "noExport" => NO_EXPORT.to_string(),
                    "noAdvertise" => "65535:65282".to_string(),
                    _ => c,
                })
                .collect();
            communities.sort();
            let mut large = strs(&p["largeCommunity"]["list"]);
            large.sort();
            // `string` is "Local" when empty; the segments are the AS numbers.
            let as_path = p["aspath"]["segments"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|seg| seg["list"].as_array().cloned().unwrap_or_default())
                .map(|a| a.as_u64().and_then(|a| u32::try_from(a).ok()).unwrap_or_else(|| panic!("AS path {p}")))
                .collect();
            let path = Path {
                next_hop: global.and_then(|h| h["ip"].as_str()).unwrap_or_default().to_string(),
                as_path,
                communities,
                large,
                local_pref: p["locPrf"].as_u64(),
                stale: p["stale"] == true,
            };
            out.insert(prefix, path);
        }
        out
    }

    fn session_epoch(&self, neighbor: &str) -> String {
        let n = self.neighbor_json(neighbor);
        format!("connectionsEstablished={}", n["connectionsEstablished"])
    }

    fn eor_received(&self, neighbor: &str, afi: &str) -> bool {
        let n = self.neighbor_json(neighbor);
        let key = format!("{afi}Unicast");
        n["gracefulRestartInfo"]["endOfRibRecv"][&key] == true
    }

    fn daemon_pid(&self) -> u32 {
        Peer::pid(self)
    }

    fn details(&self, neighbor: &str) -> String {
        format!("FRR neighbor {neighbor}: {:#}\nFRR log:\n{}", self.neighbor_json(neighbor), self.log())
    }
}

impl Router for Gobgp {
    fn kind(&self) -> &'static str {
        "gobgp"
    }

    fn state(&self, neighbor: &str) -> Option<String> {
        self.neighbor_state(neighbor)
    }

    fn routes(&self, afi: &str) -> BTreeMap<String, Path> {
        let rib = self.rib_json(afi);
        let mut out = BTreeMap::new();
        for (prefix, paths) in rib.as_object().into_iter().flatten() {
            let Some(p) = paths.as_array().and_then(|p| p.first()) else { continue };
            let attrs = p["attrs"].as_array().cloned().unwrap_or_default();
            let attr = |t: u64| attrs.iter().find(|a| a["type"] == t).cloned().unwrap_or(Value::Null);
            let as_path = attr(2)["as_paths"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|seg| seg["asns"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_u64().and_then(|a| u32::try_from(a).ok()))
                .collect();
            let next_hop = if afi == "ipv4" { attr(3)["nexthop"].clone() } else { attr(14)["nexthop"].clone() };
            let mut communities: Vec<String> = attr(8)["communities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                .collect();
            communities.sort();
            let mut large: Vec<String> = attr(32)["value"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| format!("{}:{}:{}", l["ASN"], l["LocalData1"], l["LocalData2"]))
                .collect();
            large.sort();
            let path = Path {
                next_hop: next_hop.as_str().unwrap_or_default().to_string(),
                as_path,
                communities,
                large,
                local_pref: attr(5)["value"].as_u64(),
                stale: p["stale"] == true,
            };
            out.insert(prefix.clone(), path);
        }
        out
    }

    fn session_epoch(&self, neighbor: &str) -> String {
        let n = self.neighbor_json(neighbor);
        format!("flops={} uptime={}", n["state"]["flops"], n["timers"]["state"]["uptime"])
    }

    fn eor_received(&self, neighbor: &str, afi: &str) -> bool {
        let n = self.neighbor_json(neighbor);
        let family = if afi == "ipv4" { 1 } else { 2 };
        n["afi_safis"].as_array().into_iter().flatten().any(|f| {
            f["config"]["family"]["afi"] == family && f["mp_graceful_restart"]["state"]["end_of_rib_received"] == true
        })
    }

    fn daemon_pid(&self) -> u32 {
        Peer::pid(self)
    }

    fn details(&self, neighbor: &str) -> String {
        format!("gobgp neighbor {neighbor}: {:#}\ngobgpd log:\n{}", self.neighbor_json(neighbor), Peer::log(self))
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting, with everything that helps when it times out
// ---------------------------------------------------------------------------------------------

/// The agent's peer entry for `address` from `halyard bgp peers -o json` (`Null` if none).
fn agent_peer(agent: &Agent, address: &str) -> Value {
    let peers = agent.json(&["bgp", "peers"]);
    peers.as_array().into_iter().flatten().find(|p| p["address"] == address).cloned().unwrap_or(Value::Null)
}

/// Polls `f` every 50 ms for up to `timeout`; panics with the agent's peers and log and the
/// router's details for `neighbor` otherwise.
fn wait<T>(
    timeout: Duration,
    what: &str,
    agent: &Agent,
    router: &dyn Router,
    neighbor: &str,
    f: impl FnMut() -> Option<T>,
) -> T {
    poll_until(timeout, f).unwrap_or_else(|| {
        // Not `Agent::json`: the agent may be down on purpose.
        let peers = agent.cli(&["bgp", "peers", "-o", "json"]);
        panic!(
            "timed out after {timeout:?} waiting for {what}\nagent peers: {}{}\nagent log:\n{}\n{}",
            String::from_utf8_lossy(&peers.stdout),
            String::from_utf8_lossy(&peers.stderr),
            agent.log(),
            router.details(neighbor)
        )
    })
}

fn wait_both_established(agent: &Agent, router: &dyn Router, neighbor: &str, address: &str) {
    wait(
        TIMEOUT,
        &format!("the session with {address} to be established on both ends"),
        agent,
        router,
        neighbor,
        || {
            let ours = agent_peer(agent, address)["state"] == "established";
            (ours && router.state(neighbor).as_deref() == Some("established")).then_some(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: eBGP, dual stack, both directions, updates without a reset, hold timer
// ---------------------------------------------------------------------------------------------

/// Pool, and an unselected Service.
const EBGP_POOL: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lb}
spec:
  blocks: [{cidr: 172.29.0.0/28}, {cidr: "fd00:29::/120"}]
---
apiVersion: v1
kind: Service
metadata: {name: private, namespace: default, annotations: {lbipam.cilium.io/ips: "172.29.0.12"}}
spec: {type: LoadBalancer, ports: [{port: 8080}]}
"#;

const EBGP_WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {bgp: announce}
  annotations: {lbipam.cilium.io/ips: "172.29.0.10,fd00:29::10"}
spec: {type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ports: [{port: 80}]}
"#;

const EBGP_API: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default, labels: {bgp: announce}, annotations: {lbipam.cilium.io/ips: "172.29.0.11"}}
spec: {type: LoadBalancer, ports: [{port: 443}]}
"#;

/// TCP MD5 key of the IPv6 session, which the router dials: set on the agent's listening socket.
const DIAL_IN_PASSWORD: &str = "dial-in-md5";

/// `out4`: IPv4, the agent dials (the router is passive). `in6`: IPv6, the router dials the
/// instance's `localPort`, signing with TCP MD5 (the key from a Secret, Cilium
/// `authSecretRef`); the agent's own attempts go to port 1179, where nothing listens.
fn ebgp_manifest(topo: &Topo, community: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Node
metadata: {{name: e2e-node, labels: {{bgp: "on"}}}}
status:
  addresses: [{{type: InternalIP, address: {node4}}}]
---
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {{name: interop}}
spec:
  nodeSelector: {{matchLabels: {{bgp: "on"}}}}
  bgpInstances:
    - name: main
      localASN: {AGENT_ASN}
      localPort: 179
      peers:
        - {{name: out4, peerASN: {ROUTER_ASN}, peerAddress: {router4}, peerConfigRef: {{name: dial-out}}}}
        - {{name: in6, peerASN: {ROUTER_ASN}, peerAddress: "{router6}", peerConfigRef: {{name: dial-in}}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {{name: dial-out}}
spec:
  timers: {{holdTimeSeconds: 3, keepAliveTimeSeconds: 1, connectRetryTimeSeconds: 1}}
  families:
    - {{afi: ipv4, safi: unicast, advertisements: {{matchLabels: {{advertise: bgp}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: dial-in-auth, namespace: kube-system}}
type: Opaque
stringData: {{password: {DIAL_IN_PASSWORD}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {{name: dial-in}}
spec:
  authSecretRef: dial-in-auth
  transport: {{peerPort: 1179}}
  timers: {{holdTimeSeconds: 3, keepAliveTimeSeconds: 1, connectRetryTimeSeconds: 1}}
  families:
    - {{afi: ipv6, safi: unicast, advertisements: {{matchLabels: {{advertise: bgp}}}}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPAdvertisement
metadata: {{name: lb, labels: {{advertise: bgp}}}}
spec:
  advertisements:
    - advertisementType: Service
      service: {{addresses: [LoadBalancerIP]}}
      selector: {{matchLabels: {{bgp: announce}}}}
      attributes:
        communities: {{standard: ["{community}"], wellKnown: [no-export], large: ["{AGENT_ASN}:7:9"]}}
"#,
        node4 = topo.node4(),
        router4 = topo.router4(),
        router6 = topo.router6(),
    )
}

fn start_ebgp_agent(topo: &Topo) -> Agent {
    let bgp = ebgp_manifest(topo, "65001:100");
    let files = [("pool.yaml", EBGP_POOL), ("web.yaml", EBGP_WEB), ("api.yaml", EBGP_API), ("bgp.yaml", &bgp)];
    let agent = Agent::start_in(topo.node.name(), &files, &[]).expect("agent starts");
    let ips = agent.service_ips();
    assert_eq!(ips["default/web"], ["172.29.0.10", "fd00:29::10"], "{ips:?}");
    assert_eq!(ips["default/api"], ["172.29.0.11"], "{ips:?}");
    assert_eq!(ips["default/private"], ["172.29.0.12"], "{ips:?}");
    agent
}

fn ebgp_scenario(topo: &Topo, router: &dyn Router, agent: &Agent) {
    let (node4, node6) = (topo.node4(), topo.node6());
    let (router4, router6) = (topo.router4(), topo.router6());
    let kind = router.kind();
    let steps = Steps::new(&format!("{kind} eBGP"));

    // 1. Both sessions up: IPv4 dialled by the agent, IPv6 dialled by the router.
    wait_both_established(agent, router, &node4, &router4);
    wait_both_established(agent, router, &node6, &router6);
    for address in [&router4, &router6] {
        let p = agent_peer(agent, address);
        assert_eq!((p["localASN"].as_u64(), p["peerASN"].as_u64()), (Some(4_200_000_001), Some(4_200_000_002)), "{p}");
        assert_eq!(p["holdTime"], 3, "{p}");
        assert_eq!(p["routerID"], node4.as_str(), "{p}");
        assert!(p["lastError"].as_str().is_none_or(str::is_empty), "{p}");
    }
    assert_eq!(topo.router_dialled(&node4), [false], "{kind} is passive: only the agent dials IPv4");
    assert_eq!(topo.router_dialled(&node6), [true], "{kind} dials the agent's localPort over IPv6");
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("accepted a connection from the peer") && l.contains("in6")),
        "the agent should log accepting in6:\n{log}"
    );
    steps.done("both sessions up");

    // 2-4. Exactly the selected LB IPs, with our next hop, AS path and communities.
    let want = |community: &str| Path {
        next_hop: String::new(),
        as_path: vec![AGENT_ASN],
        communities: {
            let mut c = vec![community.to_string(), NO_EXPORT.to_string()];
            c.sort();
            c
        },
        large: vec![format!("{AGENT_ASN}:7:9")],
        local_pref: None,
        stale: false,
    };
    let with_hop = |hop: &str, community: &str| Path { next_hop: hop.to_string(), ..want(community) };
    let v4_both = BTreeMap::from([
        ("172.29.0.10/32".to_string(), with_hop(&node4, "65001:100")),
        ("172.29.0.11/32".to_string(), with_hop(&node4, "65001:100")),
    ]);
    let v6_web = BTreeMap::from([("fd00:29::10/128".to_string(), with_hop(&node6, "65001:100"))]);
    let converged = |v4: &BTreeMap<String, Path>, v6: &BTreeMap<String, Path>| {
        let (mut last4, mut last6) = (BTreeMap::new(), BTreeMap::new());
        let ok = poll_until(TIMEOUT, || {
            last4 = router.routes("ipv4");
            last6 = router.routes("ipv6");
            (last4 == *v4 && last6 == *v6).then_some(())
        });
        if ok.is_none() {
            panic!(
                "{kind}'s RIB never became\n  ipv4 {v4:#?}\n  ipv6 {v6:#?}\nlast seen\n  ipv4 {last4:#?}\n  ipv6 \
                 {last6:#?}\nagent log:\n{}\n{}",
                agent.log(),
                router.details(&node4)
            );
        }
    };
    converged(&v4_both, &v6_web);
    steps.done("routes at the router");
    let p = agent_peer(agent, &router4);
    assert_eq!(p["advertised"], 2, "{p}");
    assert_eq!(agent_peer(agent, &router6)["advertised"], 1);
    let epoch4 = router.session_epoch(&node4);
    let epoch6 = router.session_epoch(&node6);
    let log_before = agent.log().len();

    // 5. Deleting a Service withdraws its route; a changed community is re-announced. Neither
    // resets a session.
    agent.remove_manifest("api.yaml");
    let v4_web = BTreeMap::from([("172.29.0.10/32".to_string(), with_hop(&node4, "65001:100"))]);
    converged(&v4_web, &v6_web);
    agent.write_manifest("bgp.yaml", &ebgp_manifest(topo, "65001:200"));
    let v4_new = BTreeMap::from([("172.29.0.10/32".to_string(), with_hop(&node4, "65001:200"))]);
    let v6_new = BTreeMap::from([("fd00:29::10/128".to_string(), with_hop(&node6, "65001:200"))]);
    converged(&v4_new, &v6_new);
    for (neighbor, before) in [(&node4, &epoch4), (&node6, &epoch6)] {
        assert_eq!(router.state(neighbor).as_deref(), Some("established"), "{}", router.details(neighbor));
        assert_eq!(
            &router.session_epoch(neighbor),
            before,
            "the session with {neighbor} was reset by a route change\n{}",
            router.details(neighbor)
        );
    }
    let log = agent.log();
    assert!(!log[log_before..].contains("session down"), "a session went down on a route change:\n{log}");
    steps.done("withdraw and community change");

    // 8. The router freezes: the agent's hold timer (3 s) takes both sessions down.
    let pid = router.daemon_pid();
    signal(pid, "STOP");
    let frozen = Instant::now();
    let down = poll_until(Duration::from_secs(10), || {
        let (a, b) = (agent_peer(agent, &router4), agent_peer(agent, &router6));
        (a["state"] != "established" && b["state"] != "established").then_some((a, b))
    });
    let elapsed = frozen.elapsed();
    signal(pid, "CONT");
    steps.done(&format!("hold timer expired after {elapsed:.1?}"));
    let (a, b) = down.unwrap_or_else(|| {
        panic!(
            "the agent kept its sessions with a frozen {kind} for 10 s (hold time 3 s): {:#}\nagent log:\n{}",
            agent.json(&["bgp", "peers"]),
            agent.log()
        )
    });
    // The last KEEPALIVE came about 1 s (a third of the hold time) or less before the freeze:
    // the sessions end 2-3 s after it (with slack for a loaded machine).
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(6)).contains(&elapsed),
        "sessions left Established {elapsed:?} after the freeze (hold time 3 s): {a} {b}"
    );
    for p in [&a, &b] {
        let err = p["lastError"].as_str().unwrap_or_default().to_lowercase();
        assert!(err.contains("hold"), "lastError should name the hold timer: {p}\nagent log:\n{}", agent.log());
    }
    // Resumed, the router gets the session the agent dials back, and its route. (Not waiting
    // for the IPv6 one: GoBGP dials only every 5-10 s.)
    wait_both_established(agent, router, &node4, &router4);
    wait(TIMEOUT, "the IPv4 route back at the router", agent, router, &node4, || {
        (router.routes("ipv4") == v4_new).then_some(())
    });
    steps.done("IPv4 session and route back");
}

fn frr_ebgp(topo: &Topo) -> Frr {
    let cfg = FrrConfig::new(&topo.router4())
        .neighbor(BgpNeighbor::new(&topo.node4(), ROUTER_ASN, AGENT_ASN).passive(true).hold_time(3))
        .neighbor(BgpNeighbor::new(&topo.node6(), ROUTER_ASN, AGENT_ASN).hold_time(3).password(DIAL_IN_PASSWORD));
    Frr::start(&topo.router, &cfg)
}

fn gobgp_ebgp(topo: &Topo) -> Gobgp {
    let cfg = GobgpConfig::new(&topo.router4())
        .neighbor(BgpNeighbor::new(&topo.node4(), ROUTER_ASN, AGENT_ASN).passive(true).hold_time(3))
        .neighbor(BgpNeighbor::new(&topo.node6(), ROUTER_ASN, AGENT_ASN).hold_time(3).password(DIAL_IN_PASSWORD));
    Gobgp::start(&topo.router, &cfg)
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: iBGP, MD5, local-pref, graceful restart
// ---------------------------------------------------------------------------------------------

const PASSWORD: &str = "halyard-md5-key";

const IBGP_WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, annotations: {metallb.io/loadBalancerIPs: 172.29.1.10}}
spec: {type: LoadBalancer, ports: [{port: 80}]}
"#;

const IBGP_API: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default, annotations: {metallb.io/loadBalancerIPs: 172.29.1.11}}
spec: {type: LoadBalancer, ports: [{port: 443}]}
"#;

fn ibgp_manifest(topo: &Topo, password: &str) -> String {
    format!(
        r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: pool, namespace: metallb-system}}
spec: {{addresses: [172.29.1.0/28]}}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: tor, namespace: metallb-system}}
spec:
  myASN: {AGENT_ASN}
  peerASN: {AGENT_ASN}
  peerAddress: {router4}
  routerID: {node4}
  holdTime: 9s
  connectTime: 1s
  password: {password}
  enableGracefulRestart: true
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: ibgp, namespace: metallb-system}}
spec:
  ipAddressPools: [pool]
  localPref: 250
  communities: ["65001:300", "large:{AGENT_ASN}:1:2"]
"#,
        router4 = topo.router4(),
        node4 = topo.node4(),
    )
}

fn ibgp_scenario(topo: &Topo, router: &dyn Router) {
    let (node4, router4) = (topo.node4(), topo.router4());
    let kind = router.kind();
    let steps = Steps::new(&format!("{kind} iBGP"));

    // 7. A wrong MD5 password: the router's kernel drops our signed SYNs (and counts them);
    // nothing establishes.
    let md5_failures = topo.router_tcp_counter("TCPMD5Failure");
    let files = [("web.yaml", IBGP_WEB), ("api.yaml", IBGP_API), ("bgp.yaml", &ibgp_manifest(topo, "not-the-key"))];
    let mut agent = Agent::start_in(topo.node.name(), &files, &[]).expect("agent starts");
    let ips = agent.service_ips();
    assert_eq!(
        (ips["default/web"].as_slice(), ips["default/api"].as_slice()),
        (&["172.29.1.10".to_string()][..], &["172.29.1.11".to_string()][..])
    );
    let started = Instant::now();
    wait(
        TIMEOUT,
        "the router's kernel to reject two segments signed with the wrong key",
        &agent,
        router,
        &node4,
        || (topo.router_tcp_counter("TCPMD5Failure") >= md5_failures + 2).then_some(()),
    );
    // And for at least 3 s (three connect retries) nothing establishes.
    while started.elapsed() < Duration::from_secs(3) {
        assert_ne!(
            router.state(&node4).as_deref(),
            Some("established"),
            "a wrong MD5 key established\n{}",
            router.details(&node4)
        );
        assert_ne!(agent_peer(&agent, &router4)["state"], "established", "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The right password.
    agent.write_manifest("bgp.yaml", &ibgp_manifest(topo, PASSWORD));
    wait_both_established(&agent, router, &node4, &router4);
    let p = agent_peer(&agent, &router4);
    assert_eq!((p["localASN"].as_u64(), p["peerASN"].as_u64()), (Some(4_200_000_001), Some(4_200_000_001)), "{p}");
    steps.done("MD5: wrong key rejected, right key established");

    // 3-4. iBGP: empty AS path, our local-pref, communities and large communities.
    let path = |stale: bool| Path {
        next_hop: node4.clone(),
        as_path: vec![],
        communities: vec!["65001:300".to_string()],
        large: vec![format!("{AGENT_ASN}:1:2")],
        local_pref: Some(250),
        stale,
    };
    let both = |stale: bool| {
        BTreeMap::from([("172.29.1.10/32".to_string(), path(stale)), ("172.29.1.11/32".to_string(), path(stale))])
    };
    let mut last = BTreeMap::new();
    wait(TIMEOUT, "the router to learn both LB IPs with local-pref 250", &agent, router, &node4, || {
        last = router.routes("ipv4");
        (last == both(false)).then_some(())
    });
    assert!(router.routes("ipv6").is_empty(), "{:#?}", router.routes("ipv6"));
    wait(TIMEOUT, "End-of-RIB from the agent", &agent, router, &node4, || {
        router.eor_received(&node4, "ipv4").then_some(())
    });

    steps.done("routes and End-of-RIB at the router");

    // 6. Graceful restart: SIGKILL. The router keeps both routes, stale, while the agent is away.
    agent.kill();
    wait(TIMEOUT, "the router to keep both routes as stale while the agent is down", &agent, router, &node4, || {
        let down = router.state(&node4).as_deref() != Some("established");
        (down && router.routes("ipv4") == both(true)).then_some(())
    });
    steps.done("routes kept as stale");
    // While it is away, api goes; after the restart End-of-RIB flushes its stale route (without
    // End-of-RIB a helper keeps stale routes for minutes: FRR's stale-path time is 360 s, our
    // restart time 120 s).
    agent.remove_manifest("api.yaml");
    agent.restart().expect("agent restarts");
    wait_both_established(&agent, router, &node4, &router4);
    let web = BTreeMap::from([("172.29.1.10/32".to_string(), path(false))]);
    let mut seen = BTreeMap::new();
    let flushed = poll_until(TIMEOUT, || {
        seen = router.routes("ipv4");
        (seen == web && router.eor_received(&node4, "ipv4")).then_some(())
    });
    assert!(
        flushed.is_some(),
        "after the restart {kind} should have End-of-RIB, web's route fresh and api's flushed; RIB {seen:#?}\nagent \
         log:\n{}\n{}",
        agent.log(),
        router.details(&node4)
    );
    steps.done("restarted: End-of-RIB, stale route flushed");
}

fn frr_ibgp(topo: &Topo) -> Frr {
    let n = BgpNeighbor::new(&topo.node4(), AGENT_ASN, AGENT_ASN).password(PASSWORD).graceful_restart(true);
    Frr::start(&topo.router, &FrrConfig::new(&topo.router4()).neighbor(n))
}

fn gobgp_ibgp(topo: &Topo) -> Gobgp {
    let n = BgpNeighbor::new(&topo.node4(), AGENT_ASN, AGENT_ASN).password(PASSWORD).graceful_restart(true);
    Gobgp::start(&topo.router, &GobgpConfig::new(&topo.router4()).neighbor(n))
}

// ---------------------------------------------------------------------------------------------
// IPv6 LB IPs on an IPv4 session
// ---------------------------------------------------------------------------------------------

/// One IPv4 session whose PeerConfig selects the LB IPs for both families.
fn v6_over_v4_manifest(topo: &Topo) -> String {
    format!(
        r#"
apiVersion: v1
kind: Node
metadata: {{name: e2e-node}}
status:
  addresses: [{{type: InternalIP, address: {node4}}}]
---
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {{name: interop}}
spec:
  bgpInstances:
    - name: main
      localASN: {AGENT_ASN}
      peers:
        - {{name: router, peerASN: {ROUTER_ASN}, peerAddress: {router4}, peerConfigRef: {{name: both}}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {{name: both}}
spec:
  timers: {{connectRetryTimeSeconds: 1}}
  families:
    - {{afi: ipv4, safi: unicast, advertisements: {{matchLabels: {{advertise: bgp}}}}}}
    - {{afi: ipv6, safi: unicast, advertisements: {{matchLabels: {{advertise: bgp}}}}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPAdvertisement
metadata: {{name: lb, labels: {{advertise: bgp}}}}
spec:
  advertisements:
    - advertisementType: Service
      service: {{addresses: [LoadBalancerIP]}}
      selector: {{matchLabels: {{bgp: announce}}}}
"#,
        node4 = topo.node4(),
        router4 = topo.router4(),
    )
}

// ---------------------------------------------------------------------------------------------
// ExaBGP: a malformed UPDATE to the agent
// ---------------------------------------------------------------------------------------------

const EXA_PREFIX: &str = "198.51.100.0/24";
const EXA_CRAFTED: &str = "203.0.113.0/24";

fn exabgp_manifest(topo: &Topo) -> String {
    format!(
        r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: pool, namespace: metallb-system}}
spec: {{addresses: [172.29.2.0/28]}}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: exa, namespace: metallb-system}}
spec: {{myASN: {AGENT_ASN}, peerASN: {ROUTER_ASN}, peerAddress: {router4}, routerID: {node4}, holdTime: 9s, connectTime: 1s}}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: all, namespace: metallb-system}}
spec: {{communities: ["65001:400"]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default, annotations: {{metallb.io/loadBalancerIPs: 172.29.2.10}}}}
spec: {{type: LoadBalancer, ports: [{{port: 80}}]}}
"#,
        router4 = topo.router4(),
        node4 = topo.node4(),
    )
}

/// The prefixes the agent has received from its peers (`halyard bgp routes received`), sorted.
fn agent_received(agent: &Agent) -> Vec<String> {
    let routes = agent.json(&["bgp", "routes", "received"]);
    let mut v: Vec<String> =
        routes.as_array().into_iter().flatten().filter_map(|r| r["prefix"].as_str().map(String::from)).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

fn frr_skip() -> bool {
    !require_root() || !Frr::available()
}

fn gobgp_skip() -> bool {
    !require_root() || !Gobgp::available()
}

#[test]
fn frr_ebgp_dual_stack_both_directions_updates_and_hold_timer() {
    if frr_skip() {
        return;
    }
    let topo = Topo::new(1, "agifrr");
    let frr = frr_ebgp(&topo);
    let agent = start_ebgp_agent(&topo);
    ebgp_scenario(&topo, &frr, &agent);
}

#[test]
fn gobgp_ebgp_dual_stack_both_directions_updates_and_hold_timer() {
    if gobgp_skip() {
        return;
    }
    let topo = Topo::new(2, "agigobgp");
    let gobgp = gobgp_ebgp(&topo);
    let agent = start_ebgp_agent(&topo);
    ebgp_scenario(&topo, &gobgp, &agent);
}

#[test]
fn frr_ibgp_md5_local_pref_and_graceful_restart() {
    if frr_skip() {
        return;
    }
    let topo = Topo::new(3, "agifrr");
    let frr = frr_ibgp(&topo);
    ibgp_scenario(&topo, &frr);
}

#[test]
fn gobgp_ibgp_md5_local_pref_and_graceful_restart() {
    if gobgp_skip() {
        return;
    }
    let topo = Topo::new(4, "agigobgp");
    let gobgp = gobgp_ibgp(&topo);
    ibgp_scenario(&topo, &gobgp);
}

/// ExaBGP (passive; the agent dials) receives the LB IP with our 4-byte AS path and community,
/// and sends the agent a route, another one, then a malformed UPDATE for the second (a MED of 2
/// bytes instead of 4): the agent treats it as a withdraw (RFC 7606 §7.4) and keeps the session.
#[test]
fn exabgp_malformed_update_is_treat_as_withdraw_at_the_agent() {
    if !require_root() || !Exabgp::available() {
        return;
    }
    let topo = Topo::new(5, "agiexa");
    let (node4, router4) = (topo.node4(), topo.router4());
    let neighbor = BgpNeighbor::new(&node4, ROUTER_ASN, AGENT_ASN).local_address(&router4).hold_time(9).passive(true);
    let cfg = ExabgpConfig::new(&router4).neighbor(neighbor).route(&format!("{EXA_PREFIX} next-hop self"));
    let exa = Exabgp::start(&topo.router, &cfg);
    let agent = Agent::start_in(topo.node.name(), &[("m.yaml", &exabgp_manifest(&topo))], &[]).expect("agent starts");
    let fail = |what: &str| -> String {
        format!(
            "{what}\nagent peers: {:#}\nagent log:\n{}\nexabgp events: {:#?}\nexabgp log:\n{}",
            agent.json(&["bgp", "peers"]),
            agent.log(),
            exa.events(),
            exa.log()
        )
    };
    let check = |timeout: Duration, what: &str, mut f: Box<dyn FnMut() -> bool + '_>| {
        if poll_until(timeout, || f().then_some(())).is_none() {
            panic!("{}", fail(&format!("timed out after {timeout:?} waiting for {what}")));
        }
    };
    exa.wait_established(&node4, TIMEOUT);
    check(TIMEOUT, "the agent's session", Box::new(|| agent_peer(&agent, &router4)["state"] == "established"));

    // ExaBGP decoded our UPDATE: 4-byte AS path, community, next hop.
    let update = poll_until(TIMEOUT, || {
        exa.received_updates(&node4).into_iter().find(|u| u.to_string().contains("\"172.29.2.10/32\""))
    })
    .unwrap_or_else(|| panic!("{}", fail("ExaBGP never received 172.29.2.10/32")));
    assert_eq!(update["attribute"]["as-path"], serde_json::json!([AGENT_ASN]), "{update:#}");
    assert_eq!(update["attribute"]["community"], serde_json::json!([[65001, 400]]), "{update:#}");
    assert!(update.to_string().contains(&format!("\"{node4}\"")), "next hop should be {node4}: {update:#}");

    let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    check(TIMEOUT, "the agent to receive ExaBGP's route", Box::new(|| agent_received(&agent) == want(&[EXA_PREFIX])));
    exa.announce(&format!("{EXA_CRAFTED} next-hop self"));
    check(
        TIMEOUT,
        "the agent to receive the second route",
        Box::new(|| agent_received(&agent) == want(&[EXA_PREFIX, EXA_CRAFTED])),
    );
    let since = agent_peer(&agent, &router4)["uptimeSeconds"].as_u64().expect("uptimeSeconds");
    let started = Instant::now();
    // Malformed MED (length 2): treat-as-withdraw; the session stays up.
    exa.announce(&format!("{EXA_CRAFTED} next-hop self attribute [ 0x04 0x80 0x0102 ]"));
    check(
        TIMEOUT,
        "the malformed UPDATE to withdraw the second route",
        Box::new(|| agent_received(&agent) == want(&[EXA_PREFIX])),
    );
    let p = agent_peer(&agent, &router4);
    assert_eq!(p["state"], "established", "{}", fail("the session went down"));
    assert_eq!(p["received"], 1, "{p}");
    // Not re-established meanwhile: the uptime kept counting.
    let uptime = p["uptimeSeconds"].as_u64().expect("uptimeSeconds");
    assert!(uptime + 1 >= since + started.elapsed().as_secs(), "uptime went from {since} to {uptime}: {p}");
    assert_eq!(exa.neighbor_state(&node4).as_deref(), Some("up"), "{}", fail("ExaBGP's session went down"));
    assert!(exa.events_of("notification", &node4).is_empty(), "{}", fail("the agent sent a NOTIFICATION"));
    let log = agent.log();
    assert!(!log.contains("session down"), "{log}");
}

/// What `halyard bgp routes advertised` lists for a session is what the router got on it. Here
/// an IPv4 session negotiates IPv6 unicast and its PeerConfig selects the dual-stack Service
/// for both families. Without an IPv6 InternalIP on the Node there is no next hop for the IPv6
/// route: it is reported, not sent and not listed. With one, it goes out with that next hop,
/// without a session reset.
#[test]
fn frr_gets_what_the_agent_lists_as_advertised_on_an_ipv4_session() {
    if frr_skip() {
        return;
    }
    let topo = Topo::new(6, "agifrr");
    let (node4, router4) = (topo.node4(), topo.router4());
    let frr = Frr::start(
        &topo.router,
        &FrrConfig::new(&router4).neighbor(BgpNeighbor::new(&node4, ROUTER_ASN, AGENT_ASN).passive(true)),
    );
    let files = [("pool.yaml", EBGP_POOL), ("web.yaml", EBGP_WEB), ("bgp.yaml", &v6_over_v4_manifest(&topo))];
    let agent = Agent::start_in(topo.node.name(), &files, &[]).expect("agent starts");
    wait_both_established(&agent, &frr, &node4, &router4);
    wait(TIMEOUT, "the IPv4 route at FRR", &agent, &frr, &node4, || {
        frr.routes("ipv4").contains_key("172.29.0.10/32").then_some(())
    });
    let listed = || {
        let routes = agent.json(&["bgp", "routes", "advertised"]);
        let mut v: Vec<String> =
            routes.as_array().into_iter().flatten().filter_map(|r| r["prefix"].as_str().map(String::from)).collect();
        v.sort();
        v
    };
    let at_frr = || {
        let mut v: Vec<String> = frr.routes("ipv4").into_keys().chain(frr.routes("ipv6").into_keys()).collect();
        v.sort();
        v
    };
    let (mut l, mut f) = (Vec::new(), Vec::new());
    let same = poll_until(Duration::from_secs(10), || {
        (l, f) = (listed(), at_frr());
        (l == f).then_some(())
    });
    let p = agent_peer(&agent, &router4);
    assert!(
        same.is_some(),
        "`halyard bgp routes advertised` lists {l:?}, FRR has {f:?}; `halyard bgp peers`: advertised {}, families \
         {}\nagent log:\n{}",
        p["advertised"],
        p["families"],
        agent.log()
    );
    assert_eq!(p["advertised"].as_u64(), Some(l.len() as u64), "{p}");
    assert_eq!(l, vec!["172.29.0.10/32".to_string()]);
    assert!(agent.log().contains("fd00:29::10/128 is not advertised to main/router"), "{}", agent.log());

    // The Node gets an IPv6 InternalIP: the IPv6 route goes out with it as the next hop, on
    // the same session (a next hop is not negotiated: no reset).
    let epoch = frr.session_epoch(&node4);
    let node6 = topo.node6();
    agent.write_manifest(
        "bgp.yaml",
        &v6_over_v4_manifest(&topo).replace(
            &format!("address: {node4}}}]"),
            &format!("address: {node4}}}, {{type: InternalIP, address: {node6}}}]"),
        ),
    );
    let v6 = wait(TIMEOUT, "the IPv6 route at FRR", &agent, &frr, &node4, || {
        frr.routes("ipv6").get("fd00:29::10/128").cloned()
    });
    assert_eq!(v6.next_hop, node6);
    assert_eq!(frr.session_epoch(&node4), epoch, "the session was reset for a new next hop");
    let same = poll_until(Duration::from_secs(10), || {
        (l, f) = (listed(), at_frr());
        (l == f).then_some(())
    });
    assert!(same.is_some(), "listed {l:?}, FRR has {f:?}");
    assert_eq!(l.len(), 2, "{l:?}");
}

// ---------------------------------------------------------------------------------------------
// ExaBGP: IPv6 LB IPs, over an IPv6 session and over an IPv4 one
// ---------------------------------------------------------------------------------------------

/// Two sessions to ExaBGP: `v4` over IPv4 with both families (the IPv6 route's next hop is the
/// Node's IPv6 InternalIP) and `v6` over IPv6 with IPv6 only.
fn exabgp_dual_stack_manifest(topo: &Topo) -> String {
    format!(
        r#"
apiVersion: v1
kind: Node
metadata: {{name: e2e-node}}
status:
  addresses: [{{type: InternalIP, address: {node4}}}, {{type: InternalIP, address: "{node6}"}}]
---
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {{name: interop}}
spec:
  bgpInstances:
    - name: main
      localASN: {AGENT_ASN}
      peers:
        - {{name: v4, peerASN: {ROUTER_ASN}, peerAddress: {router4}, peerConfigRef: {{name: both}}}}
        - {{name: v6, peerASN: {ROUTER_ASN}, peerAddress: "{router6}", peerConfigRef: {{name: v6only}}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {{name: both}}
spec:
  timers: {{holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 1}}
  families:
    - {{afi: ipv4, safi: unicast, advertisements: {{matchLabels: {{advertise: bgp}}}}}}
    - {{afi: ipv6, safi: unicast, advertisements: {{matchLabels: {{advertise: bgp}}}}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {{name: v6only}}
spec:
  timers: {{holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 1}}
  families:
    - {{afi: ipv6, safi: unicast, advertisements: {{matchLabels: {{advertise: bgp}}}}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPAdvertisement
metadata: {{name: lb, labels: {{advertise: bgp}}}}
spec:
  advertisements:
    - advertisementType: Service
      service: {{addresses: [LoadBalancerIP]}}
      selector: {{matchLabels: {{bgp: announce}}}}
      attributes:
        communities: {{standard: ["65001:600"], wellKnown: [no-export], large: ["{AGENT_ASN}:6:1"]}}
"#,
        node4 = topo.node4(),
        node6 = topo.node6(),
        router4 = topo.router4(),
        router6 = topo.router6(),
    )
}

/// What ExaBGP decoded from the UPDATEs a neighbor sent: for each announced prefix of `family`
/// (`"ipv4 unicast"`, `"ipv6 unicast"`), its next hop (the key ExaBGP files the NLRI under:
/// NEXT_HOP for IPv4, MP_REACH_NLRI's next hop for IPv6) and the UPDATE's attributes. The
/// latest announcement of a prefix wins; a withdrawal removes it.
fn exabgp_rib(exa: &Exabgp, neighbor: &str, family: &str) -> BTreeMap<String, (String, Value)> {
    let mut rib = BTreeMap::new();
    for update in exa.received_updates(neighbor) {
        for (next_hop, nlris) in update["announce"][family].as_object().into_iter().flatten() {
            for nlri in nlris.as_array().into_iter().flatten() {
                // ExaBGP 4.2: `{"nlri": "prefix"}`; older releases: the bare prefix.
                let prefix = nlri["nlri"].as_str().or(nlri.as_str()).unwrap_or_else(|| panic!("NLRI {update:#}"));
                rib.insert(prefix.to_string(), (next_hop.clone(), update["attribute"].clone()));
            }
        }
        for nlri in update["withdraw"][family].as_array().into_iter().flatten() {
            rib.remove(nlri["nlri"].as_str().or(nlri.as_str()).unwrap_or_default());
        }
    }
    rib
}

/// ExaBGP (passive; the agent dials both sessions) receives the dual-stack Service's IPv6 LB
/// IP over the IPv6 session and over the IPv4 session (next hop: the Node's IPv6 InternalIP),
/// and its IPv4 LB IP over the IPv4 session only: exact prefixes, next hops, 4-byte AS path,
/// communities and large communities, from ExaBGP's decoded JSON.
#[test]
fn exabgp_receives_ipv6_lb_ips_over_ipv6_and_ipv4_sessions() {
    if !require_root() || !Exabgp::available() {
        return;
    }
    let topo = Topo::new(7, "agiexa");
    let (node4, router4, node6, router6) = (topo.node4(), topo.router4(), topo.node6(), topo.router6());
    let neighbor = |ours: &str, local: &str| {
        BgpNeighbor::new(ours, ROUTER_ASN, AGENT_ASN).local_address(local).hold_time(9).passive(true)
    };
    let cfg = ExabgpConfig::new(&router4).neighbor(neighbor(&node4, &router4)).neighbor(neighbor(&node6, &router6));
    let exa = Exabgp::start(&topo.router, &cfg);
    let files = [("pool.yaml", EBGP_POOL), ("web.yaml", EBGP_WEB), ("bgp.yaml", &exabgp_dual_stack_manifest(&topo))];
    let agent = Agent::start_in(topo.node.name(), &files, &[]).expect("agent starts");
    let ips = agent.service_ips();
    assert_eq!(ips["default/web"], ["172.29.0.10", "fd00:29::10"], "{ips:?}");
    let fail = |what: &str| -> String {
        format!(
            "{what}\nagent peers: {:#}\nagent log:\n{}\nexabgp events: {:#?}\nexabgp log:\n{}",
            agent.json(&["bgp", "peers"]),
            agent.log(),
            exa.events(),
            exa.log()
        )
    };
    exa.wait_established(&node4, TIMEOUT);
    exa.wait_established(&node6, TIMEOUT);
    for address in [&router4, &router6] {
        if poll_until(TIMEOUT, || (agent_peer(&agent, address)["state"] == "established").then_some(())).is_none() {
            panic!("{}", fail(&format!("the agent's session with {address} never came up")));
        }
    }

    let attributes = serde_json::json!({
        "origin": "igp",
        "as-path": [AGENT_ASN],
        "confederation-path": [],
        "community": [[65001, 600], [65535, 65281]],
        "large-community": [[AGENT_ASN, 6, 1]],
    });
    let entry = |hop: &str| (hop.to_string(), attributes.clone());
    let want = [
        (&node4, "ipv4 unicast", BTreeMap::from([("172.29.0.10/32".to_string(), entry(&node4))])),
        (&node4, "ipv6 unicast", BTreeMap::from([("fd00:29::10/128".to_string(), entry(&node6))])),
        (&node6, "ipv4 unicast", BTreeMap::new()),
        (&node6, "ipv6 unicast", BTreeMap::from([("fd00:29::10/128".to_string(), entry(&node6))])),
    ];
    let mut last = Vec::new();
    let converged = poll_until(TIMEOUT, || {
        last = want.iter().map(|(n, family, _)| exabgp_rib(&exa, n, family)).collect();
        want.iter().zip(&last).all(|((_, _, w), seen)| w == seen).then_some(())
    });
    if converged.is_none() {
        panic!("{}", fail(&format!("ExaBGP's decoded routes never became {want:#?}\nlast seen {last:#?}")));
    }
    // IPv6 NLRI only travel in MP_REACH_NLRI (RFC 4760), and ExaBGP files them under its next
    // hop: every IPv6 announcement on either session named the node's global address and
    // nothing else (no link-local, no `::`, no IPv4-mapped address).
    for n in [&node4, &node6] {
        let updates = exa.received_updates(n);
        let v6: Vec<&Value> = updates.iter().filter(|u| u["announce"]["ipv6 unicast"].is_object()).collect();
        assert!(!v6.is_empty(), "{}", fail(&format!("no IPv6 announcement from {n}")));
        for u in v6 {
            let hops: Vec<&String> =
                u["announce"]["ipv6 unicast"].as_object().into_iter().flatten().map(|(h, _)| h).collect();
            assert_eq!(hops, [&node6], "{u:#}");
        }
    }
    for (address, count) in [(&router4, 2), (&router6, 1)] {
        let p = agent_peer(&agent, address);
        assert_eq!(p["advertised"], count, "{p}");
    }
    assert_eq!(exa.neighbor_state(&node4).as_deref(), Some("up"));
    assert_eq!(exa.neighbor_state(&node6).as_deref(), Some("up"));
    assert!(exa.events_of("notification", &node4).is_empty(), "{}", fail("a NOTIFICATION on v4"));
    assert!(exa.events_of("notification", &node6).is_empty(), "{}", fail("a NOTIFICATION on v6"));
}
