//! Property tests for LB-IPAM's invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use halyard_ipam::lbipam::{LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE, SharingScheme};
use halyard_ipam::*;
use proptest::prelude::*;

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn arb_pool(i: usize) -> impl Strategy<Value = PoolSpec> {
    // Small ranges in 10.0.0.0/26 so that overlaps and exhaustion are common.
    (0u32..48, 0u32..12, proptest::option::of(0u8..3), any::<bool>(), any::<bool>(), proptest::option::of(0u32..3))
        .prop_map(move |(start, len, color, disabled, first_last, prio)| {
            let mut p =
                PoolSpec::new(format!("pool{i}"), vec![Block::Range { start: v4(start), stop: v4(start + len) }]);
            if let Some(c) = color {
                let mut s = LabelSelector::default();
                s.match_labels.insert("color".into(), c.to_string());
                p.service_selectors = Some(vec![s]);
            }
            p.disabled = disabled && i.is_multiple_of(3);
            p.allow_first_last = first_last;
            p.priority = prio;
            p
        })
}

fn arb_service(i: usize) -> impl Strategy<Value = ServiceSpec> {
    (
        0u8..2,
        proptest::option::of(0u8..3),
        proptest::option::of(0u8..2),
        proptest::collection::vec((0u8..2, 0u16..3), 0..3),
        proptest::option::of(0u32..60),
        any::<bool>(),
    )
        .prop_map(move |(ns, color, key, ports, requested, local)| {
            let mut s = ServiceSpec::new(format!("ns{ns}"), format!("svc{i}"));
            if let Some(c) = color {
                s.labels.insert("color".into(), c.to_string());
            }
            s.sharing = key.map(|k| Sharing {
                scheme: if k == 0 { SharingScheme::Cilium } else { SharingScheme::MetalLb },
                key: "k".into(),
                cross_namespace: if ns == 0 { vec!["*".into()] } else { vec![] },
            });
            s.ports = ports
                .into_iter()
                .map(|(p, n)| (if p == 0 { Protocol::Tcp } else { Protocol::Udp }, 53 + n))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            s.requested = requested.map(v4).into_iter().collect();
            s.traffic_local = local;
            if local {
                s.pod_selector.insert("app".into(), "x".into());
            }
            s
        })
}

fn arb_world() -> impl Strategy<Value = (Vec<PoolSpec>, Vec<ServiceSpec>)> {
    let pools = (0usize..5).prop_flat_map(|n| (0..n).map(arb_pool).collect::<Vec<_>>());
    let svcs = (0usize..30).prop_flat_map(|n| (0..n).map(arb_service).collect::<Vec<_>>());
    (pools, svcs)
}

fn in_pool(p: &PoolSpec, ip: IpAddr) -> bool {
    p.blocks.iter().any(|b| match b {
        Block::Cidr(n) => n.contains(&ip),
        Block::Range { start, stop } => *start <= ip && ip <= *stop,
    })
}

fn selects(p: &PoolSpec, s: &ServiceSpec) -> bool {
    let mut labels = s.labels.clone();
    labels.insert(LABEL_SERVICE_NAMESPACE.into(), s.key.namespace.clone());
    labels.insert(LABEL_SERVICE_NAME.into(), s.key.name.clone());
    p.service_selectors.as_ref().is_none_or(|v| v.iter().any(|sel| sel.matches(&labels)))
}

/// The invariants every outcome must satisfy.
fn check(pools: &[PoolSpec], svcs: &[ServiceSpec], out: &Outcome) -> Result<(), TestCaseError> {
    let by_key: BTreeMap<_, _> = svcs.iter().map(|s| (&s.key, s)).collect();
    let mut holders: BTreeMap<IpAddr, Vec<&ServiceSpec>> = BTreeMap::new();
    for (key, list) in &out.assignments {
        let s = by_key[key];
        let mut fams = BTreeSet::new();
        for a in list {
            let pool = pools.iter().find(|p| p.name == a.pool).expect("assignment names an existing pool");
            prop_assert!(in_pool(pool, a.ip), "{} outside pool {}", a.ip, a.pool);
            prop_assert!(selects(pool, s), "pool {} does not select {}", a.pool, key);
            if s.requested.is_empty() {
                prop_assert!(fams.insert(Family::of(a.ip)), "two IPs of one family for {}", key);
            } else {
                prop_assert!(s.requested.contains(&a.ip));
            }
            holders.entry(a.ip).or_default().push(s);
        }
    }
    // No IP given twice except through a valid sharing key.
    for (ip, hs) in &holders {
        for (i, a) in hs.iter().enumerate() {
            for b in &hs[i + 1..] {
                let (sa, sb) = (a.sharing.as_ref(), b.sharing.as_ref());
                prop_assert!(sa.is_some() && sb.is_some(), "{ip} given to {} and {} without sharing", a.key, b.key);
                let (sa, sb) = (sa.unwrap(), sb.unwrap());
                prop_assert_eq!(sa.scheme, sb.scheme);
                prop_assert!(a.ports.iter().all(|p| !b.ports.contains(p)), "{ip}: port clash {} / {}", a.key, b.key);
            }
        }
    }
    // Pool counters add up.
    for p in pools {
        if let Some(st) = out.pools.get(&p.name) {
            prop_assert_eq!(st.used + st.available, st.total);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn invariants_hold((pools, svcs) in arb_world()) {
        let out = reconcile(&LbIpamConfig::default(), &pools, &svcs, &Assignments::new());
        check(&pools, &svcs, &out)?;
    }

    /// Same input in any order gives the same output.
    #[test]
    fn deterministic((pools, svcs) in arb_world(), seed in any::<u64>()) {
        let a = reconcile(&LbIpamConfig::default(), &pools, &svcs, &Assignments::new());
        let mut p2 = pools.clone();
        let mut s2 = svcs.clone();
        let rot = (seed as usize) % (s2.len().max(1));
        s2.rotate_left(rot);
        s2.reverse();
        p2.reverse();
        let b = reconcile(&LbIpamConfig::default(), &p2, &s2, &Assignments::new());
        prop_assert_eq!(a, b);
    }

    /// Feeding the output back in changes nothing: restarts never move an IP.
    #[test]
    fn fixpoint((pools, svcs) in arb_world()) {
        let a = reconcile(&LbIpamConfig::default(), &pools, &svcs, &Assignments::new());
        let b = reconcile(&LbIpamConfig::default(), &pools, &svcs, &a.assignments);
        prop_assert!(b.released.is_empty(), "released on restart: {:?}", b.released);
        prop_assert_eq!(&a.assignments, &b.assignments);
        prop_assert_eq!(a.services, b.services);
    }

    /// Starting from any earlier state, invariants hold, and adding a non-overlapping pool or
    /// another service moves no existing assignment.
    #[test]
    fn stable_under_unrelated_changes((pools, svcs) in arb_world(), (pools0, svcs0) in arb_world(), extra in arb_service(99)) {
        let earlier = reconcile(&LbIpamConfig::default(), &pools0, &svcs0, &Assignments::new());
        let now = reconcile(&LbIpamConfig::default(), &pools, &svcs, &earlier.assignments);
        check(&pools, &svcs, &now)?;
        let mut more_pools = pools.clone();
        more_pools.push(PoolSpec::new("zz-unrelated", vec![Block::Range { start: v4(1000), stop: v4(1100) }]));
        let mut more_svcs = svcs.clone();
        more_svcs.push(extra);
        let later = reconcile(&LbIpamConfig::default(), &more_pools, &more_svcs, &now.assignments);
        check(&more_pools, &more_svcs, &later)?;
        for (k, list) in &now.assignments {
            prop_assert_eq!(later.assignments.get(k), Some(list), "{} moved", k);
        }
    }
}
