//! The agent advertises LoadBalancer IPs to a real BIRD 2 router over BGP, in network
//! namespaces. Needs root and bird2 (skips with a message otherwise).

use std::collections::BTreeMap;
use std::time::Duration;

use halyard_tests::Agent;
use halyard_tests::netns::{Netns, poll_until, require_program, require_root, veth_pair, wait_until};
use halyard_tests::peers::{BgpNeighbor, Bird, BirdConfig, Peer};

const POOL_AND_SERVICES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lb}
spec:
  blocks: [{cidr: 172.30.0.0/28}, {cidr: "fd00:30::/120"}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, labels: {bgp: announce}}
spec:
  type: LoadBalancer
  ipFamilyPolicy: PreferDualStack
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default, labels: {bgp: announce}}
spec:
  type: LoadBalancer
  ports: [{port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: private, namespace: default}
spec:
  type: LoadBalancer
  ports: [{port: 8080}]
"#;

const BGP: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: e2e-node, labels: {bgp: "on"}}
status:
  addresses: [{type: InternalIP, address: 10.77.0.2}]
---
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {name: lab}
spec:
  nodeSelector: {matchLabels: {bgp: "on"}}
  bgpInstances:
    - name: main
      localASN: 65001
      peers:
        - {name: router, peerASN: 65000, peerAddress: 10.77.0.1, peerConfigRef: {name: router}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {name: router}
spec:
  timers: {holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 1}
  families:
    - {afi: ipv4, safi: unicast, advertisements: {matchLabels: {advertise: bgp}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPAdvertisement
metadata: {name: lb, labels: {advertise: bgp}}
spec:
  advertisements:
    - advertisementType: Service
      service: {addresses: [LoadBalancerIP]}
      selector: {matchLabels: {bgp: announce}}
      attributes:
        communities: {standard: ["65001:100"], wellKnown: [no-export], large: ["65001:7:9"]}
"#;

/// The router (10.77.0.1) and the node (10.77.0.2), joined by a veth link.
fn router_and_node() -> (Netns, Netns) {
    let router = Netns::new("rtr");
    let node = Netns::new("node");
    veth_pair(&router, "eth0", &["10.77.0.1/24"], &node, "eth0", &["10.77.0.2/24"]);
    (router, node)
}

#[test]
fn lb_ips_reach_bird_and_follow_service_changes() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (router, node) = router_and_node();
    let bird =
        Bird::start(&router, &BirdConfig::new("10.77.0.1").neighbor(BgpNeighbor::new("10.77.0.2", 65000, 65001)));
    let agent = Agent::start_in(
        node.name(),
        &[("svc.yaml", POOL_AND_SERVICES), ("bgp.yaml", BGP)],
        &["--metrics-addr", "127.0.0.1:9890"],
    )
    .expect("agent starts");

    let peers = wait_until(Duration::from_secs(15), "the session to be established", || {
        let p = agent.json(&["bgp", "peers"]);
        (p[0]["state"] == "established").then_some(p)
    });
    assert_eq!(peers[0]["peerASN"], 65000);
    assert_eq!(peers[0]["localASN"], 65001);
    assert_eq!(peers[0]["holdTime"], 9);

    let ips = agent.service_ips();
    let web = &ips["default/web"][0];
    let api = &ips["default/api"][0];
    let private = &ips["default/private"][0];
    let routes = wait_until(Duration::from_secs(10), "BIRD to learn both LB IPs", || {
        let r = bird.routes(None);
        (r.contains(&format!("{web}/32")) && r.contains(&format!("{api}/32"))).then_some(r)
    });
    assert!(!routes.contains(&format!("{private}/32")), "unselected service advertised:\n{routes}");
    assert!(routes.contains("(65001,100)") && routes.contains("(65535,65281)"), "communities:\n{routes}");
    assert!(routes.contains("(65001, 7, 9)"), "large community:\n{routes}");
    assert!(routes.contains("BGP.as_path: 65001"), "{routes}");
    assert!(!routes.contains("fd00:30"), "only the ipv4 family is configured:\n{routes}");
    let advertised = agent.json(&["bgp", "routes", "advertised"]);
    assert_eq!(advertised.as_array().unwrap().len(), 2);
    // Metrics, scraped inside the node's namespace (the agent listens on its loopback there).
    let metrics = node.run_ok(&["curl", "-fsS", "http://127.0.0.1:9890/metrics"]);
    let labels = "{peer=\"main/router\",address=\"10.77.0.1\"}";
    assert!(metrics.contains(&format!("halyard_bgp_session_up{labels} 1")), "{metrics}");
    assert!(metrics.contains(&format!("halyard_bgp_prefixes_advertised{labels} 2")), "{metrics}");

    // Deleting a service withdraws its route with an UPDATE; the session stays up.
    agent.write_manifest(
        "svc.yaml",
        &POOL_AND_SERVICES
            .replace("name: api, namespace: default, labels: {bgp: announce}", "name: api, namespace: default"),
    );
    wait_until(Duration::from_secs(10), "the api route to be withdrawn", || {
        (!bird.routes(None).contains(&format!("{api}/32"))).then_some(())
    });
    assert!(bird.routes(None).contains(&format!("{web}/32")));
    let state = bird.wait_bgp_state("peer1", &["Established"], Duration::from_secs(1));
    assert_eq!(state, "Established", "the session must not reset on a route change");
    drop(agent);
}

/// With `localPort` set the agent also accepts the router's connection: here the router is the
/// only side that can open one (our dial-out goes to a port nothing listens on).
#[test]
fn the_agent_accepts_a_session_the_router_opens() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (router, node) = router_and_node();
    let bird =
        Bird::start(&router, &BirdConfig::new("10.77.0.1").neighbor(BgpNeighbor::new("10.77.0.2", 65000, 65001)));
    let bgp = BGP
        .replace(
            "    - name: main\n      localASN: 65001\n",
            "    - name: main\n      localASN: 65001\n      localPort: 179\n",
        )
        .replace("  timers:", "  transport: {peerPort: 1179}\n  timers:");
    assert!(bgp.contains("localPort: 179") && bgp.contains("peerPort: 1179"), "{bgp}");
    let agent = Agent::start_in(node.name(), &[("svc.yaml", POOL_AND_SERVICES), ("bgp.yaml", &bgp)], &[]).unwrap();
    wait_until(Duration::from_secs(15), "the router's session to be accepted", || {
        let p = agent.json(&["bgp", "peers"]);
        (p[0]["state"] == "established").then_some(())
    });
    let web = agent.service_ips()["default/web"][0].clone();
    wait_until(Duration::from_secs(10), "BIRD to learn the web IP", || {
        bird.routes(None).contains(&format!("{web}/32")).then_some(())
    });
    assert!(agent.log().contains("accepted a connection from the peer"), "{}", agent.log());
}

/// MetalLB's BGP YAML, unchanged in shape from its docs: BGPPeer + BGPAdvertisement.
#[test]
fn metallb_bgp_peer_and_advertisement_reach_bird() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (router, node) = router_and_node();
    let bird =
        Bird::start(&router, &BirdConfig::new("10.77.0.1").neighbor(BgpNeighbor::new("10.77.0.2", 65000, 64512)));
    let metallb = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: first-pool, namespace: metallb-system}
spec:
  addresses: [192.168.10.0/24]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: sample, namespace: metallb-system}
spec:
  myASN: 64512
  peerASN: 65000
  peerAddress: 10.77.0.1
  routerID: 10.77.0.2
  holdTime: 9s
  connectTime: 1s
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: local, namespace: metallb-system}
spec:
  ipAddressPools: [first-pool]
  aggregationLength: 32
  communities: [64512:1234, "large:64512:1:1", no-advertise]
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: communities, namespace: metallb-system}
spec:
  communities:
    - {name: no-advertise, value: "65535:65282"}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  ports: [{port: 80}]
"#;
    let agent = Agent::start_in(node.name(), &[("metallb.yaml", metallb)], &[]).unwrap();
    let ip = agent.service_ips()["default/web"][0].clone();
    assert!(ip.starts_with("192.168.10."), "{ip}");
    let routes = wait_until(Duration::from_secs(15), "BIRD to learn the MetalLB IP", || {
        let r = bird.routes(None);
        r.contains(&format!("{ip}/32")).then_some(r)
    });
    assert!(routes.contains("BGP.as_path: 64512"), "{routes}");
    assert!(routes.contains("(64512,1234)") && routes.contains("(65535,65282)"), "{routes}");
    assert!(routes.contains("(64512, 1, 1)"), "{routes}");
    let peers = agent.json(&["bgp", "peers"]);
    assert_eq!(peers[0]["name"], "metallb/sample");
    assert_eq!(peers[0]["state"], "established");
}

/// TCP MD5 (RFC 2385) with MetalLB's `password`: a wrong key never brings the session up, the
/// right one does.
#[test]
fn md5_protected_session_needs_the_right_password() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (router, node) = router_and_node();
    let cfg =
        |pw: &str| BirdConfig::new("10.77.0.1").neighbor(BgpNeighbor::new("10.77.0.2", 65000, 64512).password(pw));
    let bird = Bird::start(&router, &cfg("not-the-key"));
    let manifests = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool, namespace: metallb-system}
spec: {addresses: [192.168.20.0/28]}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: tor, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 65000, peerAddress: 10.77.0.1, routerID: 10.77.0.2, connectTime: 1s, password: s3cret}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: all, namespace: metallb-system}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: LoadBalancer, ports: [{port: 80}]}
"#;
    let agent = Agent::start_in(node.name(), &[("m.yaml", manifests)], &[]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(bird.bgp_state("peer1").as_deref(), Some("Established"), "a wrong MD5 key must not establish");
    assert_ne!(agent.json(&["bgp", "peers"])[0]["state"], "established");
    bird.reconfigure(&cfg("s3cret"));
    bird.wait_bgp_state("peer1", &["Established"], Duration::from_secs(20));
    let ip = agent.service_ips()["default/web"][0].clone();
    wait_until(Duration::from_secs(10), "the route over the signed session", || {
        bird.routes(None).contains(&format!("{ip}/32")).then_some(())
    });
}

/// Graceful restart (RFC 4724): the router keeps the LB routes while the agent restarts, and
/// End-of-RIB after the restart flushes only what went away meanwhile.
#[test]
fn graceful_restart_keeps_routes_across_an_agent_restart() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (router, node) = router_and_node();
    // BIRD's default `graceful restart aware` makes it a receiving (helper) speaker.
    let bird =
        Bird::start(&router, &BirdConfig::new("10.77.0.1").neighbor(BgpNeighbor::new("10.77.0.2", 65000, 65001)));
    let bgp = BGP.replace("  timers:", "  gracefulRestart: {enabled: true, restartTimeSeconds: 60}\n  timers:");
    let mut agent = Agent::start_in(node.name(), &[("svc.yaml", POOL_AND_SERVICES), ("bgp.yaml", &bgp)], &[]).unwrap();
    let ips = agent.service_ips();
    let (web, api) = (ips["default/web"][0].clone(), ips["default/api"][0].clone());
    wait_until(Duration::from_secs(15), "both routes at BIRD", || {
        let r = bird.routes(None);
        (r.contains(&format!("{web}/32")) && r.contains(&format!("{api}/32"))).then_some(())
    });
    let proto = bird.birdc("show protocols all peer1");
    assert!(proto.contains("Neighbor graceful restart") || proto.contains("graceful restart"), "{proto}");

    agent.stop();
    // The session is down, yet BIRD keeps both routes (stale) for the restart time.
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(bird.bgp_state("peer1").as_deref(), Some("Established"));
    let r = bird.routes(None);
    assert!(
        r.contains(&format!("{web}/32")) && r.contains(&format!("{api}/32")),
        "routes dropped during restart:\n{r}"
    );

    // While the agent is down, api stops being advertised; after the restart its stale route
    // must go (End-of-RIB) and web's must stay.
    let svc = POOL_AND_SERVICES
        .replace("name: api, namespace: default, labels: {bgp: announce}", "name: api, namespace: default");
    std::fs::write(agent.manifests.join("svc.yaml"), svc).unwrap();
    agent.restart().unwrap();
    bird.wait_bgp_state("peer1", &["Established"], Duration::from_secs(20));
    wait_until(Duration::from_secs(10), "the stale api route to be flushed after End-of-RIB", || {
        (!bird.routes(None).contains(&format!("{api}/32"))).then_some(())
    });
    assert!(bird.routes(None).contains(&format!("{web}/32")));
}

/// Cilium v2 `advertisementType: PodCIDR`: BIRD learns the pod CIDR the agent allocated to
/// this node, with the advertisement's communities, next to the LB IPs.
#[test]
fn pod_cidr_advertisement_reaches_bird() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (router, node) = router_and_node();
    let bird =
        Bird::start(&router, &BirdConfig::new("10.77.0.1").neighbor(BgpNeighbor::new("10.77.0.2", 65000, 65001)));
    let pods = "\n---\napiVersion: cilium.io/v2\nkind: CiliumBGPAdvertisement\nmetadata: {name: pods, labels: \
                {advertise: bgp}}\nspec:\n  advertisements:\n    - advertisementType: PodCIDR\n      attributes: \
                {communities: {standard: [\"65001:300\"]}}\n";
    let bgp = format!("{BGP}{pods}");
    let agent = Agent::start_in(
        node.name(),
        &[("svc.yaml", POOL_AND_SERVICES), ("bgp.yaml", &bgp)],
        &["--cluster-pool-ipv4-cidr", "10.244.0.0/16", "--cluster-pool-ipv4-mask-size", "24"],
    )
    .unwrap();
    let nodes = agent.json(&["node", "list"]);
    let pod_cidr = nodes[0]["podCIDRs"][0].as_str().expect("a pod CIDR").to_string();
    assert!(pod_cidr.starts_with("10.244.") && pod_cidr.ends_with("/24"), "{nodes}");
    let web = agent.service_ips()["default/web"][0].clone();
    let routes = wait_until(Duration::from_secs(15), "BIRD to learn the pod CIDR", || {
        let r = bird.routes(None);
        (r.contains(&pod_cidr) && r.contains(&format!("{web}/32"))).then_some(r)
    });
    assert!(routes.contains("(65001,300)"), "PodCIDR communities:\n{routes}");
    let advertised = agent.json(&["bgp", "routes", "advertised"]);
    assert_eq!(advertised.as_array().unwrap().len(), 3, "{advertised}");
}

// ---------------------------------------------------------------------------------------------
// Dual stack: IPv4 and IPv6 LB IPs at BIRD, over an IPv4 and an IPv6 session
// ---------------------------------------------------------------------------------------------

/// A dual-stack Service (fixed IPs) and an IPv4-only one, both selected for BGP.
const DUAL_STACK_SERVICES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lb}
spec:
  blocks: [{cidr: 172.30.76.0/28}, {cidr: "fd00:30:76::/120"}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {bgp: announce}
  annotations: {lbipam.cilium.io/ips: "172.30.76.10,fd00:30:76::10"}
spec: {type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default, labels: {bgp: announce}, annotations: {lbipam.cilium.io/ips: "172.30.76.11"}}
spec: {type: LoadBalancer, ports: [{port: 443}]}
"#;

/// Two sessions to one router: `v4` over IPv4 carrying both families (the IPv6 routes get the
/// Node's IPv6 InternalIP as next hop, in MP_REACH_NLRI), and `v6` over IPv6 carrying IPv6.
const DUAL_STACK_BGP: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: e2e-node, labels: {bgp: "on"}}
status:
  addresses: [{type: InternalIP, address: 10.76.0.2}, {type: InternalIP, address: "fd00:76::2"}]
---
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {name: lab}
spec:
  nodeSelector: {matchLabels: {bgp: "on"}}
  bgpInstances:
    - name: main
      localASN: 65001
      peers:
        - {name: v4, peerASN: 65000, peerAddress: 10.76.0.1, peerConfigRef: {name: both}}
        - {name: v6, peerASN: 65000, peerAddress: "fd00:76::1", peerConfigRef: {name: v6only}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {name: both}
spec:
  timers: {holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 1}
  families:
    - {afi: ipv4, safi: unicast, advertisements: {matchLabels: {advertise: bgp}}}
    - {afi: ipv6, safi: unicast, advertisements: {matchLabels: {advertise: bgp}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {name: v6only}
spec:
  timers: {holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 1}
  families:
    - {afi: ipv6, safi: unicast, advertisements: {matchLabels: {advertise: bgp}}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPAdvertisement
metadata: {name: lb, labels: {advertise: bgp}}
spec:
  advertisements:
    - advertisementType: Service
      service: {addresses: [LoadBalancerIP]}
      selector: {matchLabels: {bgp: announce}}
      attributes:
        communities: {standard: ["65001:176"], large: ["65001:7:6"]}
"#;

/// One route of `birdc show route all`, as BIRD prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BirdRoute {
    prefix: String,
    /// The protocol that brought it (`v4`, `v6`).
    protocol: String,
    /// The resolved next hop line, without `via ` (`10.76.0.2 on eth0`).
    via: String,
    /// `BGP.next_hop`, `BGP.as_path`, `BGP.community`, … → value.
    attrs: BTreeMap<String, String>,
}

/// Parses `show route all` output: a route starts at a line beginning with its prefix, or, for
/// more routes to the same prefix, at an indented line naming the route type (`unicast [...`);
/// its details are the indented lines that follow (`via …`, `Type: …`, `BGP.x: …`).
fn parse_bird_routes(text: &str) -> Vec<BirdRoute> {
    let mut out: Vec<BirdRoute> = Vec::new();
    let mut prefix = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || line.starts_with("Table ") {
            continue;
        }
        let head = if !line.starts_with(char::is_whitespace) {
            let mut words = trimmed.splitn(2, char::is_whitespace);
            prefix = words.next().unwrap_or_default().to_string();
            Some(words.next().unwrap_or_default().trim())
        } else if trimmed.starts_with("unicast [") || trimmed.starts_with("unreachable [") {
            Some(trimmed)
        } else {
            None
        };
        if let Some(head) = head {
            let protocol = head.split_once('[').and_then(|(_, r)| r.split_whitespace().next()).unwrap_or_default();
            out.push(BirdRoute {
                prefix: prefix.clone(),
                protocol: protocol.to_string(),
                via: String::new(),
                attrs: BTreeMap::new(),
            });
            continue;
        }
        let Some(route) = out.last_mut() else { continue };
        if let Some(via) = trimmed.strip_prefix("via ") {
            route.via = via.to_string();
        } else if let Some((key, value)) = trimmed.split_once(": ") {
            route.attrs.insert(key.to_string(), value.trim().to_string());
        }
    }
    out
}

/// The routes protocol `protocol` put into `table` (`master4`, `master6`).
fn bird_routes_from(bird: &Bird, table: &str, protocol: &str) -> Vec<BirdRoute> {
    parse_bird_routes(&bird.birdc(&format!("show route all table {table} protocol {protocol}")))
}

/// The agent advertises a dual-stack Service to BIRD over two sessions: `v4` (IPv4, both
/// families; the IPv6 route's next hop is the Node's IPv6 InternalIP) and `v6` (IPv6, IPv6
/// only). BIRD's `master4` and `master6` hold exactly the expected prefixes per session, each
/// with the node's address as `BGP.next_hop` and as the resolved gateway, our AS path and
/// communities.
#[test]
fn dual_stack_lb_ips_reach_bird_over_ipv4_and_ipv6_sessions() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let router = Netns::new("rtr6");
    let node = Netns::new("node6");
    veth_pair(&router, "eth0", &["10.76.0.1/24", "fd00:76::1/64"], &node, "eth0", &["10.76.0.2/24", "fd00:76::2/64"]);
    let cfg = BirdConfig::new("10.76.0.1")
        .neighbor(BgpNeighbor::new("10.76.0.2", 65000, 65001).name("v4"))
        .neighbor(BgpNeighbor::new("fd00:76::2", 65000, 65001).name("v6"));
    // BIRD logs "Missing link-local address" for each session when it comes up before DAD is
    // done with BIRD's own fe80:: address on eth0 (as here: nothing waits for it). That is
    // about the link-local next hop BIRD would send with its own IPv6 routes (it exports none);
    // the routes it receives are accepted with the global next hop we send, which `gateway
    // direct` (the default for a direct eBGP session) resolves on the shared /64. So neither
    // `next hop keep` nor `gateway recursive` is needed, and the test does not depend on DAD.
    let bird = Bird::start(&router, &cfg);
    let agent =
        Agent::start_in(node.name(), &[("svc.yaml", DUAL_STACK_SERVICES), ("bgp.yaml", DUAL_STACK_BGP)], &[]).unwrap();
    let ips = agent.service_ips();
    assert_eq!(ips["default/web"], ["172.30.76.10", "fd00:30:76::10"], "{ips:?}");
    assert_eq!(ips["default/api"], ["172.30.76.11"], "{ips:?}");

    for name in ["v4", "v6"] {
        bird.wait_bgp_state(name, &["Established"], Duration::from_secs(20));
    }
    let routes = |proto: &str, table: &str, gw: &str, prefixes: &[&str]| {
        BTreeMap::from_iter(prefixes.iter().map(|p| {
            let mut attrs = BTreeMap::new();
            attrs.insert("Type".to_string(), "BGP univ".to_string());
            attrs.insert("BGP.origin".to_string(), "IGP".to_string());
            attrs.insert("BGP.as_path".to_string(), "65001".to_string());
            attrs.insert("BGP.next_hop".to_string(), gw.to_string());
            attrs.insert("BGP.local_pref".to_string(), "100".to_string());
            attrs.insert("BGP.community".to_string(), "(65001,176)".to_string());
            attrs.insert("BGP.large_community".to_string(), "(65001, 7, 6)".to_string());
            let route =
                BirdRoute { prefix: p.to_string(), protocol: proto.to_string(), via: format!("{gw} on eth0"), attrs };
            ((table.to_string(), p.to_string()), route)
        }))
    };
    let mut want = routes("v4", "master4", "10.76.0.2", &["172.30.76.10/32", "172.30.76.11/32"]);
    want.extend(routes("v4", "master6", "fd00:76::2", &["fd00:30:76::10/128"]));
    let want_v6 = routes("v6", "master6", "fd00:76::2", &["fd00:30:76::10/128"]);
    let seen = |proto: &str| {
        let mut m = BTreeMap::new();
        for table in ["master4", "master6"] {
            for r in bird_routes_from(&bird, table, proto) {
                m.insert((table.to_string(), r.prefix.clone()), r);
            }
        }
        m
    };
    let (mut last4, mut last6) = (BTreeMap::new(), BTreeMap::new());
    let ok = poll_until(Duration::from_secs(20), || {
        (last4, last6) = (seen("v4"), seen("v6"));
        (last4 == want && last6 == want_v6).then_some(())
    });
    assert!(
        ok.is_some(),
        "BIRD's tables never became\n  v4: {want:#?}\n  v6: {want_v6:#?}\nlast seen\n  v4: {last4:#?}\n  v6: \
         {last6:#?}\n{}\nagent log:\n{}\nbird log:\n{}",
        bird.routes(None),
        agent.log(),
        bird.log()
    );
    // Both sessions are still up (no error on the IPv6 next hops), and the agent lists what it
    // sent on each.
    for name in ["v4", "v6"] {
        assert_eq!(bird.bgp_state(name).as_deref(), Some("Established"), "{}", bird.log());
    }
    let peers = agent.json(&["bgp", "peers"]);
    let advertised = |address: &str| {
        peers.as_array().into_iter().flatten().find(|p| p["address"] == address).map(|p| p["advertised"].clone())
    };
    assert_eq!(advertised("10.76.0.1"), Some(3.into()), "{peers:#}");
    assert_eq!(advertised("fd00:76::1"), Some(1.into()), "{peers:#}");
}
