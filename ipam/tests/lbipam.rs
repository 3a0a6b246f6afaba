//! Behaviour of LB-IPAM through its public API.
#![allow(clippy::cloned_ref_to_slice_refs)] // `&[p.clone()]` reads better in these tests

use std::net::IpAddr;

use halyard_ipam::lbipam::{Release, SharingScheme};
use halyard_ipam::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Block {
    Block::Cidr(s.parse().unwrap())
}

fn range(a: &str, b: &str) -> Block {
    Block::Range { start: ip(a), stop: ip(b) }
}

fn svc(name: &str) -> ServiceSpec {
    ServiceSpec::new("default", name)
}

fn run(pools: &[PoolSpec], svcs: &[ServiceSpec]) -> Outcome {
    reconcile(&LbIpamConfig::default(), pools, svcs, &Assignments::new())
}

fn ips_of(out: &Outcome, name: &str) -> Vec<String> {
    out.services[&ServiceKey::new("default", name)].ips.iter().map(|a| a.ip.to_string()).collect()
}

fn status<'a>(out: &'a Outcome, name: &str) -> &'a ServiceStatus {
    &out.services[&ServiceKey::new("default", name)]
}

fn with_ports(mut s: ServiceSpec, ports: &[(Protocol, u16)]) -> ServiceSpec {
    s.ports = ports.to_vec();
    s
}

fn sharing(mut s: ServiceSpec, key: &str) -> ServiceSpec {
    s.sharing = Some(Sharing { scheme: SharingScheme::Cilium, key: key.into(), cross_namespace: vec![] });
    s
}

#[test]
fn allocates_lowest_free_ip_and_honours_first_last() {
    let mut p = PoolSpec::new("blue", vec![cidr("10.0.0.0/30")]);
    let out = run(&[p.clone()], &[svc("a"), svc("b")]);
    assert_eq!(ips_of(&out, "a"), ["10.0.0.0"]);
    assert_eq!(ips_of(&out, "b"), ["10.0.0.1"]);
    assert_eq!(out.pools["blue"].total, 4);
    assert_eq!(out.pools["blue"].used, 2);
    assert_eq!(out.pools["blue"].available, 2);

    p.allow_first_last = false;
    let out = run(&[p.clone()], &[svc("a"), svc("b"), svc("c")]);
    assert_eq!(ips_of(&out, "a"), ["10.0.0.1"]);
    assert_eq!(ips_of(&out, "b"), ["10.0.0.2"]);
    assert_eq!(status(&out, "c").reason, Reason::OutOfIps);
    assert!(status(&out, "c").message.contains("ran out of IPs"), "{}", status(&out, "c").message);
    assert_eq!(out.pools["blue"].total, 2);

    // /31 and /32 keep both addresses whatever the setting (RFC 3021).
    let p31 = PoolSpec { allow_first_last: false, ..PoolSpec::new("p31", vec![cidr("10.0.1.0/31")]) };
    assert_eq!(run(&[p31], &[]).pools["p31"].total, 2);
}

#[test]
fn ranges_ipv6_and_buggy_ips() {
    let p = PoolSpec::new("r", vec![range("10.0.0.254", "10.0.1.1"), cidr("2001:db8::/64")]);
    let out = run(&[p.clone()], &[svc("a")]);
    assert_eq!(ips_of(&out, "a"), ["10.0.0.254"]);
    assert_eq!(out.pools["r"].total, 4 + (1u128 << 64));
    let buggy = PoolSpec { avoid_buggy_ips: true, ..p };
    let out = run(&[buggy], &[svc("a"), svc("b"), svc("c")]);
    assert_eq!(ips_of(&out, "a"), ["10.0.0.254"]);
    assert_eq!(ips_of(&out, "b"), ["10.0.1.1"]); // .255 and .0 skipped
    assert_eq!(status(&out, "c").reason, Reason::OutOfIps);

    let mut v6 = svc("v6");
    v6.ip_families = vec![Family::V6];
    let out = run(&[PoolSpec::new("r", vec![cidr("2001:db8::/64")])], &[v6]);
    assert_eq!(ips_of(&out, "v6"), ["2001:db8::"]);
}

#[test]
fn selectors_pseudo_labels_namespaces_and_reasons() {
    let mut red = PoolSpec::new("red", vec![cidr("10.0.0.0/24")]);
    let mut sel = LabelSelector::default();
    sel.match_labels.insert("color".into(), "red".into());
    red.service_selectors = Some(vec![sel]);
    let mut by_name = PoolSpec::new("by-name", vec![cidr("10.0.1.0/24")]);
    let mut sel = LabelSelector::default();
    sel.match_labels.insert("io.kubernetes.service.name".into(), "named".into());
    by_name.service_selectors = Some(vec![sel]);
    let mut only_prod = PoolSpec::new("prod", vec![cidr("10.0.2.0/24")]);
    only_prod.namespaces = vec!["prod".into()];

    let mut r = svc("r");
    r.labels.insert("color".into(), "red".into());
    let plain = svc("plain");
    let mut p = ServiceSpec::new("prod", "p");
    p.labels.insert("color".into(), "green".into());
    let out = run(&[red, by_name, only_prod], &[r, svc("named"), plain, p]);
    assert_eq!(ips_of(&out, "r"), ["10.0.0.0"]);
    assert_eq!(ips_of(&out, "named"), ["10.0.1.0"]);
    assert_eq!(status(&out, "plain").reason, Reason::PoolSelectorMismatch);
    assert_eq!(out.services[&ServiceKey::new("prod", "p")].ips[0].ip, ip("10.0.2.0"));

    assert_eq!(run(&[], &[svc("x")]).services[&ServiceKey::new("default", "x")].reason, Reason::NoPool);
}

#[test]
fn disabled_pool_keeps_existing_but_gives_nothing_new() {
    let p = PoolSpec::new("p", vec![cidr("10.0.0.0/24")]);
    let first = run(&[p.clone()], &[svc("a")]);
    let disabled = PoolSpec { disabled: true, ..p };
    let out = reconcile(&LbIpamConfig::default(), &[disabled], &[svc("a"), svc("b")], &first.assignments);
    assert_eq!(ips_of(&out, "a"), ["10.0.0.0"]);
    assert!(status(&out, "a").satisfied);
    assert_eq!(status(&out, "b").reason, Reason::NoPool);
    assert!(status(&out, "b").message.contains("disabled"));
    assert!(out.pools["p"].disabled);
}

#[test]
fn overlapping_pools_conflict_without_disturbing_existing_holders() {
    let old = PoolSpec::new("zzz-old", vec![cidr("10.0.0.0/24")]);
    let first = run(&[old.clone()], &[svc("a")]);
    // A new pool named earlier in the alphabet overlaps: it must lose, because "zzz-old" holds IPs.
    let new = PoolSpec::new("aaa-new", vec![cidr("10.0.0.128/25")]);
    let out = reconcile(&LbIpamConfig::default(), &[new, old], &[svc("a"), svc("b")], &first.assignments);
    assert_eq!(ips_of(&out, "a"), ["10.0.0.0"]);
    assert_eq!(ips_of(&out, "b"), ["10.0.0.1"]);
    let c = out.pools["aaa-new"].conflict.as_deref().unwrap();
    assert!(c.contains("zzz-old") && c.contains("10.0.0.0/24"), "{c}");
    assert!(out.pools["zzz-old"].conflict.is_none());

    // Without previous holders, the older creation time wins.
    let mut x = PoolSpec::new("x", vec![cidr("10.1.0.0/24")]);
    x.created = Some("2026-01-02T00:00:00Z".into());
    let mut y = PoolSpec::new("y", vec![range("10.1.0.10", "10.1.0.20")]);
    y.created = Some("2026-01-01T00:00:00Z".into());
    let out = run(&[x, y], &[]);
    assert!(out.pools["x"].conflict.is_some());
    assert!(out.pools["y"].conflict.is_none());

    // A pool overlapping itself is conflicting too.
    let selfish = PoolSpec::new("s", vec![cidr("10.2.0.0/24"), range("10.2.0.5", "10.2.0.6")]);
    assert!(run(&[selfish], &[]).pools["s"].conflict.as_deref().unwrap().contains("same pool"));
}

#[test]
fn requested_ips() {
    let p = PoolSpec::new("p", vec![cidr("10.0.0.0/24")]);
    let mut a = svc("a");
    a.requested = vec![ip("10.0.0.200")];
    let mut b = svc("b");
    b.requested = vec![ip("10.0.0.200")];
    let mut c = svc("c");
    c.requested = vec![ip("192.0.2.1")];
    let out = run(&[p], &[a, b, c, svc("d")]);
    assert_eq!(ips_of(&out, "a"), ["10.0.0.200"]);
    assert_eq!(status(&out, "b").reason, Reason::AlreadyAllocated);
    assert!(status(&out, "b").message.contains("default/a"));
    assert_eq!(status(&out, "c").reason, Reason::NoPool);
    assert!(status(&out, "c").message.contains("192.0.2.1"));
    assert_eq!(ips_of(&out, "d"), ["10.0.0.0"]);
}

#[test]
fn sharing_is_protocol_aware() {
    use Protocol::*;
    let p = PoolSpec::new("p", vec![cidr("10.0.0.0/24")]);
    let dns_tcp = sharing(with_ports(svc("dns-tcp"), &[(Tcp, 53)]), "dns");
    let dns_udp = sharing(with_ports(svc("dns-udp"), &[(Udp, 53)]), "dns");
    let web1 = sharing(with_ports(svc("web1"), &[(Tcp, 80)]), "web");
    let web2 = sharing(with_ports(svc("web2"), &[(Tcp, 80)]), "web");
    let other_key = sharing(with_ports(svc("other"), &[(Tcp, 443)]), "nope");
    let out = run(&[p], &[dns_tcp, dns_udp, web1, web2, other_key]);
    assert_eq!(ips_of(&out, "dns-tcp"), ips_of(&out, "dns-udp"));
    assert_eq!(status(&out, "dns-tcp").shared_with, vec![ServiceKey::new("default", "dns-udp")]);
    assert_ne!(ips_of(&out, "web1"), ips_of(&out, "web2"));
    assert_ne!(ips_of(&out, "other"), ips_of(&out, "dns-tcp"));
    assert_eq!(out.pools["p"].used, 4);

    // Requesting an IP held by a compatible service shares it.
    let mut req = sharing(with_ports(svc("req"), &[(Tcp, 8053)]), "dns");
    req.requested = vec![ip(&ips_of(&out, "dns-tcp")[0])];
    let all = [sharing(with_ports(svc("dns-tcp"), &[(Tcp, 53)]), "dns"), req];
    let out = run(&[PoolSpec::new("p", vec![cidr("10.0.0.0/24")])], &all);
    assert!(status(&out, "req").satisfied, "{:?}", status(&out, "req"));
    assert_eq!(ips_of(&out, "req"), ips_of(&out, "dns-tcp"));
}

#[test]
fn cross_namespace_sharing_needs_consent_on_both_sides_for_cilium() {
    let p = PoolSpec::new("p", vec![cidr("10.0.0.0/24")]);
    let mk = |ns: &str, port: u16, cross: &[&str], scheme| {
        let mut s = ServiceSpec::new(ns, "s");
        s.ports = vec![(Protocol::Tcp, port)];
        s.sharing =
            Some(Sharing { scheme, key: "k".into(), cross_namespace: cross.iter().map(|c| c.to_string()).collect() });
        s
    };
    let key = |ns: &str| ServiceKey::new(ns, "s");
    let one_sided =
        run(&[p.clone()], &[mk("a", 1, &["*"], SharingScheme::Cilium), mk("b", 2, &[], SharingScheme::Cilium)]);
    assert_ne!(one_sided.services[&key("a")].ips, one_sided.services[&key("b")].ips);
    let both =
        run(&[p.clone()], &[mk("a", 1, &["b"], SharingScheme::Cilium), mk("b", 2, &["*"], SharingScheme::Cilium)]);
    assert_eq!(both.services[&key("a")].ips, both.services[&key("b")].ips);
    let metallb = run(&[p], &[mk("a", 1, &[], SharingScheme::MetalLb), mk("b", 2, &[], SharingScheme::MetalLb)]);
    assert_eq!(metallb.services[&key("a")].ips, metallb.services[&key("b")].ips);
}

#[test]
fn local_traffic_policy_sharing_needs_identical_pods() {
    let p = PoolSpec::new("p", vec![cidr("10.0.0.0/24")]);
    let mk = |name: &str, port: u16, app: &str| {
        let mut s = sharing(with_ports(svc(name), &[(Protocol::Tcp, port)]), "k");
        s.traffic_local = true;
        s.pod_selector.insert("app".into(), app.into());
        s
    };
    let out = run(&[p.clone()], &[mk("a", 1, "x"), mk("b", 2, "x"), mk("c", 3, "y")]);
    assert_eq!(ips_of(&out, "a"), ips_of(&out, "b"));
    assert_ne!(ips_of(&out, "a"), ips_of(&out, "c"));
}

#[test]
fn load_balancer_class_filtering() {
    let p = PoolSpec::new("p", vec![cidr("10.0.0.0/24")]);
    let mut foreign = svc("foreign");
    foreign.load_balancer_class = Some("example.com/other".into());
    let mut cilium = svc("cilium");
    cilium.load_balancer_class = Some("io.cilium/l2-announcer".into());
    let out = run(&[p.clone()], &[foreign.clone(), cilium, svc("plain")]);
    assert_eq!(status(&out, "foreign").reason, Reason::Ignored);
    assert!(status(&out, "foreign").ips.is_empty());
    assert_eq!(ips_of(&out, "cilium"), ["10.0.0.0"]);
    assert_eq!(ips_of(&out, "plain"), ["10.0.0.1"]);
    let only_classed = LbIpamConfig { serve_unclassed: false, ..LbIpamConfig::default() };
    let out = reconcile(&only_classed, &[p], &[foreign, svc("plain")], &Assignments::new());
    assert_eq!(status(&out, "plain").reason, Reason::Ignored);
}

#[test]
fn dual_stack_policies() {
    let v4only = PoolSpec::new("v4", vec![cidr("10.0.0.0/24")]);
    let both = PoolSpec::new("v6", vec![cidr("fd00::/120")]);
    let mut prefer = svc("prefer");
    prefer.family_policy = FamilyPolicy::PreferDualStack;
    let mut require = svc("require");
    require.family_policy = FamilyPolicy::RequireDualStack;
    let mut single6 = svc("single6");
    single6.ip_families = vec![Family::V6];

    let out = run(&[v4only.clone()], &[prefer.clone(), require.clone(), single6.clone()]);
    assert!(status(&out, "prefer").satisfied);
    assert_eq!(ips_of(&out, "prefer"), ["10.0.0.0"]);
    assert!(!status(&out, "require").satisfied);
    assert!(status(&out, "require").ips.is_empty(), "RequireDualStack holds nothing when a family is missing");
    assert_eq!(status(&out, "single6").reason, Reason::NoPool);
    assert_eq!(out.pools["v4"].used, 1);

    let out = run(&[v4only, both], &[prefer, require, single6]);
    assert_eq!(ips_of(&out, "prefer"), ["10.0.0.0", "fd00::"]);
    assert_eq!(ips_of(&out, "require"), ["10.0.0.1", "fd00::1"]);
    assert_eq!(ips_of(&out, "single6"), ["fd00::2"]);
}

#[test]
fn priority_and_auto_assign() {
    let mut low = PoolSpec::new("a-low", vec![cidr("10.0.0.0/24")]);
    low.priority = Some(20);
    let mut high = PoolSpec::new("b-high", vec![cidr("10.0.1.0/24")]);
    high.priority = Some(10);
    let mut manual = PoolSpec::new("0-manual", vec![cidr("10.0.2.0/24")]);
    manual.auto_assign = false;
    let mut pinned = svc("pinned");
    pinned.pool_pin = Some("0-manual".into());
    let mut missing = svc("missing");
    missing.pool_pin = Some("nope".into());
    let out = run(&[low, high, manual], &[svc("a"), pinned, missing]);
    assert_eq!(ips_of(&out, "a"), ["10.0.1.0"]);
    assert_eq!(ips_of(&out, "pinned"), ["10.0.2.0"]);
    assert!(status(&out, "missing").message.contains("\"nope\""));
}

#[test]
fn stable_across_restart_and_unrelated_edits() {
    let p1 = PoolSpec::new("p1", vec![cidr("10.0.0.0/29")]);
    let p2 = PoolSpec::new("p2", vec![cidr("10.0.1.0/29")]);
    let svcs: Vec<ServiceSpec> = (0..6).map(|i| svc(&format!("s{i}"))).collect();
    let first = run(&[p1.clone(), p2.clone()], &svcs);
    // Restart: same inputs with the saved state -> identical, nothing released.
    let again = reconcile(&LbIpamConfig::default(), &[p1.clone(), p2.clone()], &svcs, &first.assignments);
    assert_eq!(again, first);
    // Edit p2 (unrelated to the p1 holders) and delete s0; add a service.
    let p2b = PoolSpec { priority: Some(1), ..PoolSpec::new("p2", vec![cidr("10.0.1.0/28")]) };
    let mut svcs2: Vec<ServiceSpec> = svcs[1..].to_vec();
    svcs2.push(svc("new"));
    let out = reconcile(&LbIpamConfig::default(), &[p1, p2b], &svcs2, &first.assignments);
    for s in &svcs2[..5] {
        assert_eq!(out.services[&s.key].ips, first.services[&s.key].ips, "{} moved", s.key);
    }
    assert_eq!(
        out.released,
        vec![Release {
            service: ServiceKey::new("default", "s0"),
            ip: ip("10.0.0.0"),
            reason: "the service is gone".into()
        }]
    );
    // p2 now has priority: the new service comes from it.
    assert_eq!(ips_of(&out, "new"), ["10.0.1.0"]);
}

#[test]
fn shrinking_a_pool_moves_only_what_it_no_longer_covers() {
    let p = PoolSpec::new("p", vec![cidr("10.0.0.0/29")]);
    let svcs: Vec<ServiceSpec> = (0..8).map(|i| svc(&format!("s{i}"))).collect();
    let first = run(&[p], &svcs);
    let small = PoolSpec::new("p", vec![cidr("10.0.0.4/30")]);
    let out = reconcile(&LbIpamConfig::default(), &[small], &svcs, &first.assignments);
    for i in 4..8 {
        assert_eq!(ips_of(&out, &format!("s{i}")), [format!("10.0.0.{i}")]);
    }
    assert_eq!(out.released.len(), 4);
    assert!(out.released[0].reason.contains("no pool covers"));
    assert_eq!(status(&out, "s0").reason, Reason::OutOfIps);
    // A renamed pool with the same range re-homes IPs instead of moving them.
    let renamed = PoolSpec::new("q", vec![cidr("10.0.0.0/29")]);
    let out = reconcile(&LbIpamConfig::default(), &[renamed], &svcs, &first.assignments);
    for s in &svcs {
        assert_eq!(out.services[&s.key].ips[0].ip, first.services[&s.key].ips[0].ip);
        assert_eq!(out.services[&s.key].ips[0].pool, "q");
    }
}

#[test]
fn invalid_request_keeps_what_it_holds() {
    let p = PoolSpec::new("p", vec![cidr("10.0.0.0/24")]);
    let first = run(&[p.clone()], &[svc("a")]);
    let mut bad = svc("a");
    bad.invalid = Some("annotation lbipam.cilium.io/ips: invalid IP \"10.0.0.300\"".into());
    let out = reconcile(&LbIpamConfig::default(), &[p], &[bad], &first.assignments);
    assert_eq!(ips_of(&out, "a"), ["10.0.0.0"]);
    assert_eq!(status(&out, "a").reason, Reason::InvalidRequest);
    assert!(out.released.is_empty());
}

#[test]
fn assignments_round_trip_through_json() {
    let out = run(&[PoolSpec::new("p", vec![cidr("10.0.0.0/24")])], &[svc("a")]);
    let text = serde_json::to_string(&out.assignments).unwrap();
    assert!(text.contains("\"default/a\""), "{text}");
    let back: Assignments = serde_json::from_str(&text).unwrap();
    assert_eq!(back, out.assignments);
}
