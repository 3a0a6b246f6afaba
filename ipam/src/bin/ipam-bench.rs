//! LB-IPAM benchmark: prints each figure beside its goal and beside a baseline measured in the
//! same run — a MetalLB-style allocator that walks the pool from its first address and checks a
//! hash set of used IPs (`internal/allocator/allocator.go`), which is what Halyard replaces.
//!
//! Run: `cargo run --release -p halyard-ipam --bin ipam-bench`

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use halyard_ipam::range::IntervalSet;
use halyard_ipam::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

/// Ten /20 pools (4096 IPs each); services pick a pool by label, as pool selectors do.
fn world(services: usize) -> (Vec<PoolSpec>, Vec<ServiceSpec>) {
    let pools = (0..10)
        .map(|i| {
            let mut p =
                PoolSpec::new(format!("pool-{i}"), vec![Block::Cidr(format!("10.{i}.0.0/20").parse().unwrap())]);
            let mut sel = LabelSelector::default();
            sel.match_labels.insert("pool".into(), i.to_string());
            p.service_selectors = Some(vec![sel]);
            p
        })
        .collect();
    let svcs = (0..services)
        .map(|i| {
            let mut s = ServiceSpec::new(format!("ns-{}", i % 50), format!("svc-{i}"));
            s.labels.insert("pool".into(), (i % 10).to_string());
            s.ports = vec![(Protocol::Tcp, 80)];
            s
        })
        .collect();
    (pools, svcs)
}

/// The baseline: linear walk from the pool start, skipping used addresses.
struct LinearPool {
    start: u32,
    size: u32,
    used: HashSet<u32>,
}

impl LinearPool {
    fn alloc(&mut self) -> Option<u32> {
        let ip = (self.start..self.start + self.size).find(|ip| !self.used.contains(ip))?;
        self.used.insert(ip);
        Some(ip)
    }
    fn release(&mut self, ip: u32) {
        self.used.remove(&ip);
    }
}

fn linear_world(services: usize) -> usize {
    let mut pools: Vec<LinearPool> =
        (0..10).map(|i| LinearPool { start: (10 << 24) | (i << 16), size: 4096, used: HashSet::new() }).collect();
    let mut got = 0;
    for i in 0..services {
        if pools[i % 10].alloc().is_some() {
            got += 1;
        }
    }
    got
}

/// Deterministic pseudo-random sequence (splitmix64), independent of any crate version.
fn rng(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `ops` operations alternating release-of-a-random-live-IP and allocate-lowest, with `live`
/// addresses allocated throughout. Returns ns per operation.
fn churn_interval(live: u32, ops: u32) -> f64 {
    let mut free = IntervalSet::new();
    free.insert_range(0, u32::MAX as u128);
    let mut held: Vec<u128> = (0..live).map(|_| free.pop_first().unwrap()).collect();
    // Fragment the set as real churn does: release every third address first.
    let mut seed = 11;
    for h in held.iter_mut().step_by(3) {
        free.insert(*h);
        *h = free.pop_first_from(live as u128 + (rng(&mut seed) % live as u64) as u128).unwrap();
    }
    let t = Instant::now();
    for _ in 0..ops / 2 {
        let i = (rng(&mut seed) % held.len() as u64) as usize;
        free.insert(held[i]);
        held[i] = free.pop_first().unwrap();
    }
    black_box(&held);
    t.elapsed().as_nanos() as f64 / ops as f64
}

fn churn_linear(live: u32, ops: u32) -> f64 {
    let mut pool = LinearPool { start: 0, size: u32::MAX, used: HashSet::new() };
    // Fill directly: filling through `alloc` would itself be quadratic.
    let mut held: Vec<u32> = (0..live).collect();
    pool.used.extend(held.iter().copied());
    let mut seed = 7;
    let t = Instant::now();
    for _ in 0..ops / 2 {
        let i = (rng(&mut seed) % held.len() as u64) as usize;
        pool.release(held[i]);
        held[i] = pool.alloc().unwrap();
    }
    black_box(&held);
    t.elapsed().as_nanos() as f64 / ops as f64
}

fn main() {
    let cfg = LbIpamConfig::default();
    println!("LB-IPAM benchmark (median of runs; release build expected)\n");

    let (pools, svcs) = world(10_000);
    let out = reconcile(&cfg, &pools, &svcs, &Assignments::new());
    let satisfied = out.services.values().filter(|s| s.satisfied).count();
    assert_eq!(satisfied, 10_000, "every service must get an IP");
    let cold = time(7, || reconcile(&cfg, &pools, &svcs, &Assignments::new()));
    let warm = time(7, || reconcile(&cfg, &pools, &svcs, &out.assignments));
    let linear = time(7, || linear_world(10_000));
    println!("1. 10k services across 10 pools (full reconcile: selectors, sharing checks, status)");
    println!("   halyard cold start (no state)       {:>9.2} ms   goal <= 50 ms", cold.as_secs_f64() * 1e3);
    println!(
        "   halyard restart (state kept)        {:>9.2} ms   (validates and keeps every IP)",
        warm.as_secs_f64() * 1e3
    );
    println!(
        "   baseline linear-scan allocator      {:>9.2} ms   (allocation only: no selectors, no status)",
        linear.as_secs_f64() * 1e3
    );

    if std::env::args().nth(1).as_deref() == Some("reconcile") {
        return;
    }
    println!("\n2. 100k allocate/release operations with n live allocations (ns per op)");
    println!("   {:>9}  {:>12}  {:>16}", "n", "halyard", "baseline linear");
    let mut rows = BTreeMap::new();
    for live in [1_000u32, 10_000, 100_000, 1_000_000] {
        let ours = churn_interval(live, 100_000);
        // The baseline is O(n) per allocation: fewer ops at large n keep the run short.
        let base_ops = match live {
            l if l >= 1_000_000 => 200,
            l if l >= 100_000 => 2_000,
            l if l >= 10_000 => 20_000,
            _ => 100_000,
        };
        let base = churn_linear(live, base_ops);
        println!("   {live:>9}  {ours:>12.0}  {base:>16.0}");
        rows.insert(live, ours);
    }
    let growth = rows[&1_000_000] / rows[&1_000];
    println!("   halyard per-op growth from n=1k to n=1M: {growth:.1}x (O(log n) predicts ~2x; O(n) would be 1000x)");
}
