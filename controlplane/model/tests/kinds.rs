//! Per-kind parsing for kinds the documentation fixtures do not cover (or only partly).

use std::path::Path;

use halyard_model::*;

fn one(text: &str) -> (Object, Vec<Diagnostic>) {
    match parse_manifest(Path::new("k.yaml"), text) {
        Ok(mut f) => {
            assert_eq!(f.objects.len(), 1);
            (f.objects.remove(0), f.warnings)
        }
        Err(e) => panic!("{e}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    parse_manifest(Path::new("k.yaml"), text).unwrap_err().errors().cloned().collect()
}

#[test]
fn endpoint_slice() {
    let (o, w) = one(r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: prod
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  protocol: TCP
  port: 8080
endpoints:
- addresses: ["10.1.0.5"]
  conditions:
    ready: true
    serving: true
    terminating: false
  nodeName: worker-1
  zone: a
  targetRef:
    kind: Pod
    name: web-1
    namespace: prod
- addresses: ["10.1.0.6"]
  conditions:
    ready: false
    terminating: true
"#);
    assert!(w.is_empty(), "{w:#?}");
    let Object::EndpointSlice(s) = &o else { panic!() };
    assert_eq!(s.service_name(), Some("web"));
    assert_eq!(s.ports[0].port, Some(8080));
    assert!(s.endpoints[0].is_ready() && s.endpoints[0].is_serving());
    assert_eq!(s.endpoints[0].node_name.as_deref(), Some("worker-1"));
    assert_eq!(s.endpoints[0].target_ref.as_ref().unwrap().name.as_deref(), Some("web-1"));
    assert!(!s.endpoints[1].is_ready() && !s.endpoints[1].is_serving() && s.endpoints[1].is_terminating());
    assert_eq!(s.endpoints[0].ip_addresses().collect::<Vec<_>>(), ["10.1.0.5".parse::<std::net::IpAddr>().unwrap()]);

    let m = Model::from_objects([o]);
    let svc = NamespacedName::new("prod", "web");
    assert_eq!(m.endpoint_slices_for(&svc).count(), 1);
    assert_eq!(m.endpoint_slices_for(&NamespacedName::new("default", "web")).count(), 0);
}

#[test]
fn endpoint_slice_addresses_must_match_the_address_type() {
    let e = errors(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv6\nendpoints:\n- addresses: [\"fd00::1\", \"10.0.0.1\"]\n",
    );
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].field.as_deref(), Some("endpoints[0].addresses[1]"));
    let e = errors("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\naddressType: IP\n");
    assert_eq!(e[0].field.as_deref(), Some("addressType"));
    // A slice without the service-name label is legal but useless: a warning.
    let (_, w) = one(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\naddressType: FQDN\nendpoints:\n- addresses: [\"db.example.com\"]\n",
    );
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].field.as_deref(), Some("metadata.labels"));
}

#[test]
fn node_from_kubectl_output() {
    let (o, w) = one(r#"apiVersion: v1
kind: Node
metadata:
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: worker-1
    rack: rack0
  name: worker-1
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs:
  - 10.244.1.0/24
  - fd00:10:244:1::/64
  providerID: kind://docker/kind/worker-1
status:
  addresses:
  - address: 172.18.0.3
    type: InternalIP
  - address: fc00:f853:ccd:e793::3
    type: InternalIP
  - address: worker-1
    type: Hostname
  allocatable:
    cpu: "8"
  nodeInfo:
    kubeletVersion: v1.31.0
"#);
    assert!(w.is_empty(), "{w:#?}");
    assert_eq!(o.key().namespace, None);
    let Object::Node(n) = &o else { panic!() };
    assert_eq!(n.pod_cidrs().len(), 2);
    assert_eq!(n.address_of_type("InternalIP"), Some("172.18.0.3".parse().unwrap()));
    assert_eq!(n.address_of_type("Hostname"), None, "not an IP");
    assert_eq!(n.metadata.labels["rack"], "rack0");
}

#[test]
fn node_pod_cidrs_are_checked() {
    let e = errors("apiVersion: v1\nkind: Node\nmetadata:\n  name: n\nspec:\n  podCIDRs: [10.0.0.0/24, 10.1.0.0/24]\n");
    assert_eq!(e[0].field.as_deref(), Some("spec.podCIDRs"));
    let e = errors("apiVersion: v1\nkind: Node\nmetadata:\n  name: n\nspec:\n  podCIDR: 10.0.0.0/33\n");
    assert_eq!(e[0].field.as_deref(), Some("spec.podCIDR"));
    assert_eq!(e[0].line, Some(6));
}

#[test]
fn namespace() {
    let (o, w) = one(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tenant-a\n  labels:\n    team: a\nspec:\n  finalizers: [kubernetes]\nstatus:\n  phase: Active\n",
    );
    assert!(w.is_empty());
    assert_eq!(o.key().to_string(), "Namespace tenant-a");
    assert_eq!(o.metadata().labels["team"], "a");
}

#[test]
fn bgp_cluster_config_discovery_and_zones() {
    let (o, w) = one(r#"apiVersion: cilium.io/v2
kind: CiliumBGPClusterConfig
metadata:
  name: c
spec:
  bgpInstances:
  - name: i
    localASN: 4200000000
    localPort: 179
    peers:
    - name: unnumbered
      peerASN: 0
      autoDiscovery:
        mode: Unnumbered
        unnumbered:
          interface: eth1
    - name: gw
      autoDiscovery:
        mode: DefaultGateway
        defaultGateway:
          addressFamily: ipv6
    - name: ll
      peerAddress: fe80::1%eth2
      peerASN: 65001
"#);
    assert!(w.is_empty(), "{w:#?}");
    let Object::CiliumBgpClusterConfig(c) = &o else { panic!() };
    let i = &c.spec.bgp_instances[0];
    assert_eq!(i.local_asn, Some(4_200_000_000));
    assert_eq!(i.peers[0].auto_discovery.as_ref().unwrap().unnumbered.as_ref().unwrap().interface, "eth1");
    assert_eq!(i.peers[2].peer_address.as_ref().unwrap().zone.as_deref(), Some("eth2"));

    let e = errors(
        "apiVersion: cilium.io/v2\nkind: CiliumBGPClusterConfig\nmetadata:\n  name: c\nspec:\n  bgpInstances:\n  - name: i\n    peers:\n    - name: p\n    - name: p\n      peerAddress: 10.0.0.1\n      autoDiscovery:\n        mode: Magic\n",
    );
    let fields: Vec<_> = e.iter().map(|d| d.field.as_deref().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "spec.bgpInstances[0].peers[0]",
            "spec.bgpInstances[0].peers[1].name",
            "spec.bgpInstances[0].peers[1].autoDiscovery.mode"
        ]
    );
    let e = errors(
        "apiVersion: cilium.io/v2\nkind: CiliumBGPClusterConfig\nmetadata:\n  name: c\nspec:\n  bgpInstances: []\n",
    );
    assert!(e[0].message.contains("1-16"), "{}", e[0].message);
    let e = errors(
        "apiVersion: cilium.io/v2\nkind: CiliumBGPClusterConfig\nmetadata:\n  name: c\nspec:\n  bgpInstances:\n  - name: i\n    localASN: 4294967296\n",
    );
    assert_eq!(e[0].field.as_deref(), Some("spec.bgpInstances[0].localASN"));
    assert_eq!(e[0].line, Some(8));
}

#[test]
fn l2_policy_that_announces_nothing_is_a_warning() {
    let (_, w) = one(
        "apiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata:\n  name: p\nspec:\n  interfaces: [eth0]\n",
    );
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains("announces nothing"));
}

#[test]
fn community_and_bfd_ranges() {
    let e = errors(
        "apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata:\n  name: c\nspec:\n  communities:\n  - name: a\n    value: 1:70000\n  - name: a\n    value: large:1:2:3\n",
    );
    let fields: Vec<_> = e.iter().map(|d| d.field.as_deref().unwrap()).collect();
    assert_eq!(fields, ["spec.communities[0].value", "spec.communities[1].name"]);
    let e = errors(
        "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata:\n  name: b\nspec:\n  detectMultiplier: 1\n",
    );
    assert_eq!(e[0].field.as_deref(), Some("spec.detectMultiplier"));
    assert_eq!(e[0].message, "1 is out of range 2-255");
}

#[test]
fn metallb_bgp_peer_v1beta1_and_dynamic_asn() {
    let (o, w) = one(
        "apiVersion: metallb.io/v1beta1\nkind: BGPPeer\nmetadata:\n  name: p\n  namespace: metallb-system\nspec:\n  myASN: 64512\n  dynamicASN: external\n  interface: eth0\n  keepaliveTime: 10s\n  holdTime: 30s\n  connectTime: 5s\n  routerID: 10.0.0.1\n",
    );
    assert!(w.is_empty(), "{w:#?}");
    let Object::BgpPeer(p) = &o else { panic!() };
    assert_eq!(p.api_version, "metallb.io/v1beta1");
    assert_eq!(p.spec.dynamic_asn, Some(DynamicAsn::External));
    assert_eq!(p.spec.connect_time.map(|d| d.0.as_secs()), Some(5));
    let e = errors(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n  myASN: 1\n  peerASN: 2\n  dynamicASN: internal\n  peerAddress: 10.0.0.1\n  keepaliveTime: 60s\n  holdTime: 30s\n",
    );
    let fields: Vec<_> = e.iter().map(|d| d.field.as_deref().unwrap()).collect();
    assert_eq!(fields, ["spec.dynamicASN", "spec.keepaliveTime"]);
}

#[test]
fn model_json_is_stable_and_keyed_by_name() {
    let (o, _) = one(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: p\n  namespace: metallb-system\nspec:\n  addresses: [\"10.0.0.1 - 10.0.0.9\", 10.1.0.0/24]\n",
    );
    let json = serde_json::to_value(Model::from_objects([o.clone()])).unwrap();
    assert_eq!(
        json["metallb_pools"]["metallb-system/p"]["spec"]["addresses"],
        serde_json::json!(["10.0.0.1-10.0.0.9", "10.1.0.0/24"])
    );
    let tagged = serde_json::to_value(&o).unwrap();
    assert_eq!(tagged["kind"], "IPAddressPool");
    assert_eq!(tagged["apiVersion"], "metallb.io/v1beta1");
}

#[test]
fn pod_as_kubectl_prints_it() {
    // What `kubectl get pod -o yaml` prints, trimmed: everything ClusterMesh does not read is
    // accepted without warnings.
    let (o, w) = one(r#"apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f7c-x2x
  namespace: prod
  uid: 1f0e-77
  labels: {app: web, pod-template-hash: 5d8f7c}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f7c, uid: abc}]
spec:
  nodeName: worker1
  serviceAccountName: web
  restartPolicy: Always
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: web
    image: nginx:1.27
    resources: {limits: {cpu: 100m}}
    ports:
    - {name: http, containerPort: 8080, protocol: TCP}
    - {containerPort: 9090}
status:
  phase: Running
  conditions: [{type: Ready, status: "True"}]
  hostIP: 172.18.0.2
  hostIPs: [{ip: 172.18.0.2}]
  podIP: 10.244.1.7
  podIPs: [{ip: 10.244.1.7}, {ip: "fd00:10:244:1::7"}]
  containerStatuses: [{name: web, ready: true, restartCount: 0}]
"#);
    assert!(w.is_empty(), "{w:?}");
    let Object::Pod(p) = o else { panic!() };
    assert_eq!(p.ips().len(), 2);
    assert!(p.is_endpoint());
    assert_eq!(p.spec.containers[0].ports[0].container_port, 8080);
    assert_eq!(p.spec.service_account_name.as_deref(), Some("web"));
}

#[test]
fn pod_errors_name_the_field() {
    let e = errors(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus:\n  podIP: 10.0.0.1\n  podIPs: [{ip: 10.0.0.2}]\n",
    );
    assert!(e.iter().any(|d| d.to_string().contains("podIPs[0] must equal podIP")), "{e:?}");
    let e = errors(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    ports: [{containerPort: 80, protocol: ICMP}]\n",
    );
    assert!(e.iter().any(|d| d.to_string().contains("spec.containers[0].ports[0].protocol")), "{e:?}");
    let (o, _) =
        one("apiVersion: v1\nkind: Pod\nmetadata: {name: done}\nstatus: {phase: Succeeded, podIP: 10.0.0.3}\n");
    let Object::Pod(p) = o else { panic!() };
    assert!(!p.is_endpoint(), "a finished pod has no endpoint");
}
