//! Every YAML example copied from the Cilium and MetalLB docs loads with zero errors and
//! yields the objects the docs describe.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use halyard_model::*;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> ParsedFile {
    let path = fixture_dir().join(name);
    match parse_manifest_file(&path) {
        Ok(f) => f,
        Err(e) => panic!("{name} must load without errors:\n{e}"),
    }
}

/// Loads a fixture that must also be free of warnings, and returns its model.
fn model(name: &str) -> Model {
    let f = load(name);
    assert!(f.warnings.is_empty(), "{name}: unexpected warnings: {:#?}", f.warnings);
    Model::from_objects(f.objects)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn every_fixture_loads_with_zero_errors() {
    let mut n = 0;
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Source: "), "{} must name its source on the first line", path.display());
        if let Err(e) = parse_manifest_file(&path) {
            panic!("{e}");
        }
        n += 1;
    }
    assert!(n >= 40, "expected the doc fixtures, found {n}");
}

// --- Cilium LB-IPAM -------------------------------------------------------------------------

#[test]
fn lbipam_basic_pool_has_cidr_range_and_single_ip_blocks() {
    let m = model("cilium-lbipam-01-basic-pool.yaml");
    let p = &m.cilium_pools["blue-pool"];
    assert_eq!(p.api_version, "cilium.io/v2alpha1");
    assert_eq!(
        p.spec.blocks,
        vec![
            IpBlock::Cidr("10.0.10.0/24".parse().unwrap()),
            IpBlock::Cidr("2004::/64".parse().unwrap()),
            IpBlock::Range { start: ip("20.0.20.100"), stop: ip("20.0.20.200") },
            IpBlock::Range { start: ip("1.2.3.4"), stop: ip("1.2.3.4") },
        ]
    );
    assert!(p.spec.service_selector.is_none());
    assert!(p.allow_first_last_ips(), "unset means Yes since Cilium 1.16");
    assert!(!p.spec.disabled);
}

#[test]
fn lbipam_service_selectors() {
    let m = model("cilium-lbipam-02-service-selectors.yaml");
    let blue = m.cilium_pools["blue-pool"].spec.service_selector.as_ref().unwrap();
    assert!(blue.matches(&labels(&[("color", "cyan")])));
    assert!(!blue.matches(&labels(&[("color", "red")])));
    let red = m.cilium_pools["red-pool"].spec.service_selector.as_ref().unwrap();
    assert!(red.matches(&labels(&[("color", "red")])));
    let m = model("cilium-lbipam-03-special-selector.yaml");
    let s = m.cilium_pools["blue-pool"].spec.service_selector.as_ref().unwrap();
    assert_eq!(s.match_labels["io.kubernetes.service.namespace"], "tenant-a");
    assert!(model("cilium-lbipam-04-disabled-pool.yaml").cilium_pools["blue-pool"].spec.disabled);
}

#[test]
fn lbipam_services() {
    let m = model("cilium-lbipam-05-service.yaml");
    let s = &m.services[&NamespacedName::new("example", "service-red")];
    assert_eq!(s.spec.type_, ServiceType::LoadBalancer);
    assert_eq!(s.spec.ports[0].port, 1234);
    assert_eq!(s.spec.ports[0].protocol, Protocol::Tcp, "protocol defaults to TCP");
    assert_eq!(s.spec.ports[0].target_port(), TargetPort::Number(1234));

    let m = model("cilium-lbipam-06-requested-ips.yaml");
    let s = &m.services[&NamespacedName::new("example", "service-blue")];
    assert_eq!(s.metadata.annotations["lbipam.cilium.io/ips"], "20.0.10.100,20.0.10.200");

    let m = model("cilium-lbipam-07-sharing-keys.yaml");
    assert_eq!(m.services.len(), 2);
    for s in m.services.values() {
        assert_eq!(s.metadata.annotations["lbipam.cilium.io/sharing-key"], "1234");
    }
}

#[test]
fn lbipam_legacy_cidrs_field_is_an_alias_with_a_warning() {
    let f = load("cilium-lbipam-08-legacy-cidrs.yaml");
    assert_eq!(f.warnings.len(), 1);
    assert_eq!(f.warnings[0].field.as_deref(), Some("spec.cidrs"));
    let m = Model::from_objects(f.objects);
    assert_eq!(m.cilium_pools["blue-pool"].spec.blocks.len(), 2);
}

// --- Cilium L2 announcements -----------------------------------------------------------------

#[test]
fn l2_announcement_policy() {
    let m = model("cilium-l2-01-policy.yaml");
    let p = &m.l2_policies["policy1"];
    assert_eq!(p.spec.interfaces, vec!["^eth[0-9]+".to_string()]);
    assert!(p.spec.external_ips && p.spec.load_balancer_ips);
    let nodes = p.spec.node_selector.as_ref().unwrap();
    assert!(nodes.matches(&labels(&[("kubernetes.io/hostname", "w1")])));
    assert!(!nodes.matches(&labels(&[("node-role.kubernetes.io/control-plane", "")])));
}

// --- Cilium BGP v2 ---------------------------------------------------------------------------

#[test]
fn bgp_v2_cluster_config() {
    let f = load("cilium-bgpv2-01-cluster-config.yaml");
    // The docs put `localPort` on a peer, where the CRD has no such field.
    assert_eq!(f.warnings.len(), 1);
    assert_eq!(f.warnings[0].field.as_deref(), Some("spec.bgpInstances[0].peers[0].localPort"));
    let m = Model::from_objects(f.objects);
    let c = &m.bgp_cluster_configs["cilium-bgp"];
    assert_eq!(c.api_version, "cilium.io/v2");
    let inst = &c.spec.bgp_instances[0];
    assert_eq!(inst.name, "instance-65000");
    assert_eq!(inst.local_asn, Some(65000));
    assert_eq!(inst.peers[1].peer_address.as_ref().unwrap().addr, ip("fd00:11::1"));
    assert_eq!(c.peer_config_refs().collect::<Vec<_>>(), ["cilium-peer", "cilium-peer"]);

    let m = model("cilium-bgpv2-02-cluster-config-v2alpha1.yaml");
    assert_eq!(m.bgp_cluster_configs["cilium-bgp"].api_version, "cilium.io/v2alpha1");
    assert_eq!(m.bgp_cluster_configs["cilium-bgp"].spec.bgp_instances[0].peers[0].peer_asn, Some(65000));
}

#[test]
fn bgp_v2_peer_configs() {
    let m = model("cilium-bgpv2-03-peer-config.yaml");
    let p = &m.bgp_peer_configs["cilium-peer"];
    assert_eq!(p.hold_time_seconds(), 9);
    assert_eq!(p.keep_alive_time_seconds(), 3);
    assert_eq!(p.connect_retry_time_seconds(), 120, "default");
    assert_eq!(p.spec.auth_secret_ref.as_deref(), Some("bgp-auth-secret"));
    assert_eq!(p.ebgp_multihop(), 4);
    assert_eq!(p.graceful_restart(), (true, 15));
    let fam = &p.families()[0];
    assert_eq!((fam.afi.as_str(), fam.safi.as_str()), ("ipv4", "unicast"));
    assert_eq!(fam.advertisements.as_ref().unwrap().match_labels["advertise"], "bgp");

    assert_eq!(
        model("cilium-bgpv2-04-peer-config-timers.yaml").bgp_peer_configs["cilium-peer"].connect_retry_time_seconds(),
        5
    );
    assert_eq!(model("cilium-bgpv2-05-peer-config-multihop.yaml").bgp_peer_configs["cilium-peer"].ebgp_multihop(), 4);
    let t = model("cilium-bgpv2-06-peer-config-transport.yaml");
    assert_eq!(t.bgp_peer_configs["cilium-peer"].peer_port(), 179);
    assert_eq!(t.bgp_peer_configs["cilium-peer"].graceful_restart(), (false, 120));
    let fams = model("cilium-bgpv2-07-peer-config-families.yaml").bgp_peer_configs["cilium-peer"].families();
    assert_eq!(fams.iter().map(|f| f.afi.as_str()).collect::<Vec<_>>(), ["ipv4", "ipv6"]);
}

#[test]
fn bgp_v2_advertisements() {
    let m = model("cilium-bgpv2-08-advert-podcidr-attributes.yaml");
    let a = &m.bgp_advertisements["bgp-advertisements"];
    assert_eq!(a.metadata.labels["advertise"], "bgp");
    let e = &a.spec.advertisements[0];
    assert_eq!(e.advertisement_type, AdvertisementType::PodCIDR);
    let attrs = e.attributes.as_ref().unwrap();
    assert_eq!(attrs.local_preference, Some(99));
    assert_eq!(attrs.communities.as_ref().unwrap().standard, ["65000:99"]);

    let f = load("cilium-bgpv2-09-advert-multipool.yaml");
    assert_eq!(f.warnings.len(), 1, "the CiliumPodIPPool document is an unknown kind");
    assert!(f.warnings[0].message.starts_with("unknown kind CiliumPodIPPool"));
    assert_eq!(f.documents, [2]);

    let m = model("cilium-bgpv2-10-advert-service.yaml");
    let svc = m.bgp_advertisements["bgp-advertisements"].spec.advertisements[0].service.as_ref().unwrap();
    assert_eq!(
        svc.addresses,
        [ServiceAddressType::ClusterIP, ServiceAddressType::ExternalIP, ServiceAddressType::LoadBalancerIP]
    );

    let m = model("cilium-bgpv2-11-advert-all-services.yaml");
    let sel = m.bgp_advertisements["bgp-advertisements"].spec.advertisements[0].selector.as_ref().unwrap();
    assert!(sel.matches(&labels(&[])), "the NotIn dummy expression selects everything");
    assert!(sel.matches(&labels(&[("app", "x")])));

    let m = model("cilium-bgpv2-12-advert-overlapping.yaml");
    let ads = &m.bgp_advertisements["bgp-advertisements"].spec.advertisements;
    assert_eq!(ads.len(), 2);
    assert_eq!(ads[1].attributes.as_ref().unwrap().communities.as_ref().unwrap().large, ["2222:2222:2222"]);
}

#[test]
fn bgp_v2_node_config_override() {
    let m = model("cilium-bgpv2-13-node-config-override.yaml");
    let o = &m.bgp_node_config_overrides["bgpv2-cplane-dev-multi-homing-worker"];
    let i = &o.spec.bgp_instances[0];
    assert_eq!(i.router_id, Some("192.168.10.1".parse().unwrap()));
    assert_eq!(i.local_port, Some(1790));
    assert_eq!(i.local_asn, Some(65010));
    assert_eq!(i.peers[1].local_address.as_ref().unwrap().addr, ip("fd00:11:0:2::2"));
}

// --- Cilium BGP v1 ---------------------------------------------------------------------------

#[test]
fn bgp_v1_peering_policies() {
    let m = model("cilium-bgpv1-01-peering.yaml");
    let vr = &m.bgp_peering_policies["rack0"].spec.virtual_routers[0];
    assert_eq!(vr.local_asn, 64512);
    assert_eq!(vr.neighbors[0].peer_ip(), ip("10.0.0.1"));
    assert_eq!(vr.neighbors[0].peer_asn, 64512);
    assert_eq!(vr.service_advertisements(), [ServiceAddressType::LoadBalancerIP], "default");

    let vr = &model("cilium-bgpv1-02-export-podcidr.yaml").bgp_peering_policies["rack0"].spec.virtual_routers[0];
    assert_eq!(vr.export_pod_cidr, Some(true));
    let vr = &model("cilium-bgpv1-03-pod-ip-pool-selector.yaml").bgp_peering_policies["rack0"].spec.virtual_routers[0];
    assert_eq!(vr.pod_ip_pool_selector.as_ref().unwrap().match_labels["environment"], "production");
    let vr =
        &model("cilium-bgpv1-04-service-advertisements.yaml").bgp_peering_policies["rack0"].spec.virtual_routers[0];
    assert_eq!(vr.service_advertisements().len(), 3);
    let n = &model("cilium-bgpv1-05-md5.yaml").bgp_peering_policies["rack0"].spec.virtual_routers[0].neighbors[0];
    assert_eq!(n.auth_secret_ref.as_deref(), Some("bgp-password"));
    let n = &model("cilium-bgpv1-06-graceful-restart.yaml").bgp_peering_policies["rack0"].spec.virtual_routers[0]
        .neighbors[0];
    assert_eq!(n.graceful_restart.as_ref().unwrap().restart_time_seconds, Some(120));
    let n = &model("cilium-bgpv1-07-path-attributes.yaml").bgp_peering_policies["rack0"].spec.virtual_routers[0]
        .neighbors[0];
    assert_eq!(n.advertised_path_attributes[0].selector_type, "CiliumLoadBalancerIPPool");
    assert_eq!(n.advertised_path_attributes[1].local_preference, Some(150));
    assert_eq!(n.advertised_path_attributes[1].communities.as_ref().unwrap().standard, ["64512:150"]);
    let n = &model("cilium-bgpv1-08-families.yaml").bgp_peering_policies["rack0"].spec.virtual_routers[0].neighbors[0];
    assert_eq!(n.families.len(), 1);
}

// --- MetalLB ---------------------------------------------------------------------------------

fn mlb(name: &str) -> NamespacedName {
    NamespacedName::new("metallb-system", name)
}

#[test]
fn metallb_pools() {
    let m = model("metallb-config-01-pool.yaml");
    let p = &m.metallb_pools[&mlb("first-pool")];
    assert_eq!(p.api_version, "metallb.io/v1beta1");
    assert_eq!(
        p.spec.addresses,
        vec![
            IpBlock::Cidr("192.168.10.0/24".parse().unwrap()),
            IpBlock::Range { start: ip("192.168.9.1"), stop: ip("192.168.9.5") },
            IpBlock::Cidr("fc00:f853:ccd:e799::/124".parse().unwrap()),
        ]
    );
    assert!(p.auto_assign());

    let m = model("metallb-pool-01-auto-assign.yaml");
    assert!(m.metallb_pools[&mlb("cheap")].auto_assign());
    assert!(!m.metallb_pools[&mlb("expensive")].auto_assign());

    let m = model("metallb-pool-02-service-allocation.yaml");
    let p = &m.metallb_pools[&mlb("ippool-ns-service-alloc-sample")];
    assert!(p.spec.avoid_buggy_ips);
    let sa = p.spec.service_allocation.as_ref().unwrap();
    assert_eq!(sa.priority, Some(50));
    assert_eq!(sa.namespaces, ["namespace-a", "namespace-b"]);
    assert!(sa.service_selectors[0].matches(&labels(&[("app", "bar")])));
}

#[test]
fn metallb_l2() {
    let m = model("metallb-config-02-l2.yaml");
    assert_eq!(
        m.metallb_pools[&mlb("first-pool")].spec.addresses,
        [IpBlock::Range { start: ip("192.168.1.240"), stop: ip("192.168.1.250") }]
    );
    assert_eq!(m.l2_advertisements[&mlb("example")].spec, L2AdvertisementSpec::default(), "no spec: all pools");
    assert_eq!(
        model("metallb-config-03-l2-pools.yaml").l2_advertisements[&mlb("example")].spec.ip_address_pools,
        ["first-pool"]
    );
    let a = &model("metallb-l2-01-node-selectors.yaml").l2_advertisements[&mlb("example")];
    assert_eq!(a.spec.node_selectors.len(), 2);
    let a = &model("metallb-l2-02-node-selectors-second.yaml").l2_advertisements[&mlb("example")];
    assert_eq!(a.spec.ip_address_pools, ["second-pool"]);
    assert_eq!(
        model("metallb-l2-03-interfaces.yaml").l2_advertisements[&mlb("example")].spec.interfaces,
        ["eth0", "eth1"]
    );
    assert_eq!(
        model("metallb-l2-04-interfaces-node.yaml").l2_advertisements[&mlb("example")].spec.interfaces,
        ["eth3"]
    );
    let m = model("metallb-l2-05-union.yaml");
    assert_eq!(m.l2_advertisements[&mlb("example-advertisement9")].spec.interfaces, ["eno1"]);
    assert_eq!(m.l2_advertisements[&mlb("example-advertisement10")].spec.ip_address_pools, ["pool1"]);
}

#[test]
fn metallb_bgp_peers() {
    let m = model("metallb-config-04-bgp.yaml");
    let p = &m.metallb_bgp_peers[&mlb("sample")];
    assert_eq!(p.api_version, "metallb.io/v1beta2");
    assert_eq!((p.spec.my_asn, p.spec.peer_asn), (64500, Some(64501)));
    assert_eq!(p.spec.peer_address, Some(ip("10.0.0.1")));
    assert_eq!(p.peer_port(), 179);
    assert!(m.metallb_bgp_advertisements.contains_key(&mlb("example")));

    let p = &model("metallb-bgp-02-peer-node-selectors.yaml").metallb_bgp_peers[&mlb("example")];
    assert_eq!(p.peer_port(), 180);
    assert!(p.spec.node_selectors[0].matches(&labels(&[("rack", "frontend"), ("network-speed", "fast")])));
    assert!(!p.spec.node_selectors[0].matches(&labels(&[("rack", "frontend"), ("network-speed", "slow")])));
    assert!(p.spec.node_selectors[1].matches(&labels(&[("kubernetes.io/hostname", "hostB")])));

    let p = &model("metallb-bgp-05-source-address.yaml").metallb_bgp_peers[&mlb("example")];
    assert_eq!(p.spec.source_address, Some(ip("172.30.0.2")));
    assert_eq!(model("metallb-bgp-07-vrf.yaml").metallb_bgp_peers[&mlb("example")].spec.vrf.as_deref(), Some("red"));
    assert!(
        model("metallb-bgp-09-graceful-restart.yaml").metallb_bgp_peers[&mlb("example")].spec.enable_graceful_restart
    );

    let m = model("metallb-config-06-bfd.yaml");
    let bfd = &m.metallb_bfd_profiles[&mlb("testbfdprofile")];
    assert_eq!((bfd.spec.receive_interval, bfd.spec.transmit_interval), (Some(380), Some(270)));
    assert_eq!(m.metallb_bgp_peers[&mlb("peersample")].spec.bfd_profile.as_deref(), Some("testbfdprofile"));

    let f = load("metallb-bgp-08-frr-k8s.yaml");
    assert_eq!(f.objects.len(), 1);
    assert_eq!(f.warnings.len(), 1);
    assert_eq!(f.warnings[0].document, 2);
    assert!(f.warnings[0].message.contains("unknown kind FRRConfiguration (apiVersion frrk8s.metallb.io/v1beta1)"));
}

#[test]
fn metallb_bgp_advertisements() {
    let f = load("metallb-bgp-01-aggregation.yaml");
    // The docs' pool `198.51.100.10/24` has host bits set: accepted, masked, warned about.
    assert_eq!(f.warnings.len(), 1);
    assert_eq!(f.warnings[0].field.as_deref(), Some("spec.addresses[0]"));
    let m = Model::from_objects(f.objects);
    assert_eq!(m.metallb_pools[&mlb("first-pool")].spec.addresses, [IpBlock::Cidr("198.51.100.0/24".parse().unwrap())]);
    let local = &m.metallb_bgp_advertisements[&mlb("local")];
    assert_eq!(local.aggregation_length(), 32);
    assert_eq!(local.spec.local_pref, Some(100));
    assert_eq!(parse_metallb_community(&local.spec.communities[0]), Ok(MetalLbCommunity::Standard(0xffff_ff02)));
    assert_eq!(m.metallb_bgp_advertisements[&mlb("external")].aggregation_length(), 24);
    assert_eq!(m.metallb_bgp_advertisements[&mlb("external")].aggregation_length_v6(), 128);

    let a = &model("metallb-bgp-03-advert-node-selectors.yaml").metallb_bgp_advertisements[&mlb("example")];
    assert_eq!(a.spec.node_selectors[1].match_labels["kubernetes.io/hostname"], "NodeB");
    let a = &model("metallb-bgp-04-advert-peers.yaml").metallb_bgp_advertisements[&mlb("example")];
    assert_eq!(a.spec.peers, ["PeerA", "PeerB"]);
    assert_eq!(
        model("metallb-config-05-bgp-pools.yaml").metallb_bgp_advertisements[&mlb("example")].spec.ip_address_pools,
        ["first-pool"]
    );

    let m = model("metallb-bgp-06-community-alias.yaml");
    let c = &m.metallb_communities[&mlb("communities")];
    assert_eq!(c.spec.communities[0].name, "vpn-only");
    assert_eq!(c.spec.communities[1].value, "65535:65282");
    assert_eq!(
        parse_metallb_community(&m.metallb_bgp_advertisements[&mlb("local")].spec.communities[0]),
        Ok(MetalLbCommunity::Alias("vpn-only".into()))
    );
}

#[test]
fn a_whole_directory_of_doc_examples_builds_a_model() {
    // All Cilium examples that do not share names: one model, no conflicts.
    let mut all = Vec::new();
    for name in [
        "cilium-lbipam-02-service-selectors.yaml",
        "cilium-lbipam-07-sharing-keys.yaml",
        "cilium-l2-01-policy.yaml",
        "cilium-bgpv2-01-cluster-config.yaml",
        "cilium-bgpv2-03-peer-config.yaml",
        "cilium-bgpv2-10-advert-service.yaml",
        "cilium-bgpv2-13-node-config-override.yaml",
    ] {
        all.extend(load(name).objects);
    }
    let m = Model::from_objects(all);
    assert_eq!(m.len(), 9);
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["cilium_pools"]["red-pool"]["apiVersion"], "cilium.io/v2alpha1");
    assert_eq!(json["services"]["example/service-red"]["spec"]["ports"][0]["port"], 2345);
}
