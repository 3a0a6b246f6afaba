//! TCP MD5 passwords that come from Kubernetes Secrets in the manifest directory (Cilium
//! `authSecretRef`, v2 PeerConfig and v1 PeeringPolicy), against a real BIRD 2 in network
//! namespaces. Needs root and bird2 (skips with a message otherwise).

use std::time::Duration;

use halyard_tests::Agent;
use halyard_tests::netns::{Netns, require_program, require_root, veth_pair, wait_until};
use halyard_tests::peers::{BgpNeighbor, Bird, BirdConfig};

const PASSWORD: &str = "md5-from-a-Secret";

const SERVICE: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lb, labels: {color: blue}}
spec:
  blocks: [{cidr: 172.31.0.0/28}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, labels: {bgp: announce}}
spec: {type: LoadBalancer, ports: [{port: 80}]}
"#;

const CILIUM_V2: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: e2e-node}
status:
  addresses: [{type: InternalIP, address: 10.78.0.2}]
---
apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata: {name: lab}
spec:
  bgpInstances:
    - name: main
      localASN: 65001
      peers:
        - {name: router, peerASN: 65000, peerAddress: 10.78.0.1, peerConfigRef: {name: router}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {name: router}
spec:
  authSecretRef: bgp-auth
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
"#;

/// `md5-from-a-Secret` in base64, as `kubectl create secret generic` writes it.
const SECRET: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: bgp-auth, namespace: kube-system}
type: Opaque
data:
  password: bWQ1LWZyb20tYS1TZWNyZXQ=
"#;

fn router_and_node() -> (Netns, Netns) {
    let router = Netns::new("rtr");
    let node = Netns::new("node");
    veth_pair(&router, "eth0", &["10.78.0.1/24"], &node, "eth0", &["10.78.0.2/24"]);
    (router, node)
}

fn bird_with_password(router: &Netns, local_as: u32) -> Bird {
    Bird::start(
        router,
        &BirdConfig::new("10.78.0.1").neighbor(BgpNeighbor::new("10.78.0.2", 65000, local_as).password(PASSWORD)),
    )
}

/// Without the Secret the session is not started and the log says why; once the Secret is
/// written the session comes up signed with its password, which appears in no output.
#[test]
fn cilium_auth_secret_ref_signs_the_session() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (router, node) = router_and_node();
    let bird = bird_with_password(&router, 65001);
    let agent = Agent::start_in(node.name(), &[("svc.yaml", SERVICE), ("bgp.yaml", CILIUM_V2)], &[]).unwrap();
    agent.wait_for(Duration::from_secs(10), "the missing Secret to be reported", |a| {
        a.log().contains("Secret kube-system/bgp-auth does not exist: the session is not started").then_some(())
    });
    assert_eq!(agent.json(&["bgp", "peers"]), serde_json::json!([]), "no session without the password");

    agent.write_manifest("secret.yaml", SECRET);
    bird.wait_bgp_state("peer1", &["Established"], Duration::from_secs(20));
    let ip = agent.service_ips()["default/web"][0].clone();
    wait_until(Duration::from_secs(10), "BIRD to learn the LB IP over the signed session", || {
        bird.routes(None).contains(&format!("{ip}/32")).then_some(())
    });
    // The password is in no output: log, CLI tables and JSON.
    let peers = agent.cli(&["bgp", "peers", "-o", "json"]);
    let status = agent.cli(&["status", "-o", "json"]);
    let config = agent.cli(&["config", "view"]);
    for text in [
        agent.log(),
        String::from_utf8_lossy(&peers.stdout).into_owned(),
        String::from_utf8_lossy(&status.stdout).into_owned(),
        String::from_utf8_lossy(&config.stdout).into_owned(),
    ] {
        assert!(!text.contains(PASSWORD) && !text.contains("bWQ1LWZyb20tYS1TZWNyZXQ"), "password leaked:\n{text}");
    }

    // A wrong password in the Secret: the session goes down and does not come back.
    agent.write_manifest("secret.yaml", &SECRET.replace("bWQ1LWZyb20tYS1TZWNyZXQ=", "d3Jvbmc="));
    wait_until(Duration::from_secs(15), "the session to be reset with the new key", || {
        (bird.bgp_state("peer1").as_deref() != Some("Established")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(bird.bgp_state("peer1").as_deref(), Some("Established"), "a wrong key must not establish");
}

/// The v1 CiliumBGPPeeringPolicy: a neighbor with `authSecretRef` (Secret in the namespace
/// given by --bgp-secrets-namespace), `exportPodCIDR` and a service selector.
#[test]
fn v1_peering_policy_with_auth_secret_and_pod_cidr() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let (router, node) = router_and_node();
    let bird = bird_with_password(&router, 64512);
    let policy = r#"
apiVersion: v1
kind: Node
metadata: {name: e2e-node, labels: {rack: rack0}}
status:
  addresses: [{type: InternalIP, address: 10.78.0.2}]
---
apiVersion: "cilium.io/v2alpha1"
kind: CiliumBGPPeeringPolicy
metadata:
  name: rack0
spec:
  nodeSelector:
    matchLabels:
      rack: rack0
  virtualRouters:
  - localASN: 64512
    exportPodCIDR: true
    serviceSelector:
      matchLabels:
        bgp: announce
    neighbors:
    - peerAddress: '10.78.0.1/32'
      peerASN: 65000
      connectRetryTimeSeconds: 1
      holdTimeSeconds: 9
      keepAliveTimeSeconds: 3
      authSecretRef: bgp-auth
      advertisedPathAttributes:
      - selectorType: PodCIDR
        communities:
          standard: ["64512:100"]
"#;
    let secret = SECRET.replace("namespace: kube-system", "namespace: cilium-bgp");
    let agent = Agent::start_in(
        node.name(),
        &[("svc.yaml", SERVICE), ("bgp.yaml", policy), ("secret.yaml", &secret)],
        &[
            "--bgp-secrets-namespace",
            "cilium-bgp",
            "--cluster-pool-ipv4-cidr",
            "10.244.0.0/16",
            "--cluster-pool-ipv4-mask-size",
            "24",
        ],
    )
    .unwrap();
    bird.wait_bgp_state("peer1", &["Established"], Duration::from_secs(20));
    let nodes = agent.json(&["node", "list"]);
    let pod_cidr = nodes[0]["podCIDRs"][0].as_str().expect("a pod CIDR").to_string();
    assert!(pod_cidr.starts_with("10.244."), "{nodes}");
    let ip = agent.service_ips()["default/web"][0].clone();
    let routes = wait_until(Duration::from_secs(10), "BIRD to learn the pod CIDR and the LB IP", || {
        let r = bird.routes(None);
        (r.contains(&pod_cidr) && r.contains(&format!("{ip}/32"))).then_some(r)
    });
    assert!(routes.contains("(64512,100)"), "PodCIDR path attribute:\n{routes}");
    assert!(routes.contains("BGP.as_path: 64512"), "{routes}");
    let peers = agent.json(&["bgp", "peers"]);
    assert_eq!(peers[0]["name"], "rack0/64512/10.78.0.1");
}
