//! Benchmark for the Maglev table builder.
//!
//! Times `build_table` (O(N) state) against `build_table_full_permutation`
//! (Cilium-style N×M permutation) for a few (M, N) pairs, with equal and with
//! mixed weights, and reports the balance of the resulting tables.
//!
//! Usage: `maglev-bench [--json] [--runs N] [--oracle-runs N]`
//! (build with `--release`; debug timings are meaningless).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use halyard_datapath::maglev::{
    DEFAULT_BACKEND_WEIGHT, L4Proto, MaglevBackend, MaglevError, MaglevSeed, build_table, build_table_full_permutation,
};

/// Goal for M = 65521, N = 1000 with equal weights.
const GOAL_MS: f64 = 1.0;
/// Maglev paper (NSDI 2016, §5.3): table build time at M = 65537, N = 1000.
const PAPER_MS: f64 = 1.8;

const CASES: [(u32, u32); 3] = [(65521, 1000), (16381, 100), (131071, 1000)];

#[derive(Debug)]
struct Options {
    json: bool,
    runs: usize,
    oracle_runs: usize,
}

#[derive(Debug)]
struct Stats {
    median_ms: f64,
    p99_ms: f64,
    runs: usize,
}

#[derive(Debug)]
struct CaseResult {
    m: u32,
    n: u32,
    weighted: bool,
    fast: Stats,
    oracle: Stats,
    identical: bool,
    min_entries: usize,
    max_entries: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options { json: false, runs: 50, oracle_runs: 50 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut count = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v: &usize| v > 0)
                .ok_or_else(|| format!("{name} needs a positive integer"))
        };
        match arg.as_str() {
            "--json" => opts.json = true,
            "--runs" => opts.runs = count("--runs")?,
            "--oracle-runs" => opts.oracle_runs = count("--oracle-runs")?,
            "-h" | "--help" => {
                return Err("usage: maglev-bench [--json] [--runs N] [--oracle-runs N]".into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(opts)
}

/// `n` backends 10.x.y.z:8080/TCP; with `weighted`, weights spread over 1..=200.
fn backends(n: u32, weighted: bool) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i));
            let weight = if weighted { 1 + ((i * 7919) % 200) as u16 } else { DEFAULT_BACKEND_WEIGHT };
            MaglevBackend::new(i + 1, addr, 8080, L4Proto::Tcp).with_weight(weight)
        })
        .collect()
}

type Builder = fn(&[MaglevBackend], u32, &MaglevSeed) -> Result<Vec<u32>, MaglevError>;

fn time_builder(
    build: Builder,
    backends: &[MaglevBackend],
    m: u32,
    seed: &MaglevSeed,
    runs: usize,
) -> Result<(Stats, Vec<u32>), MaglevError> {
    // One warm-up run, which also provides the table to check.
    let table = build(backends, m, seed)?;
    let mut samples: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let t = build(black_box(backends), black_box(m), black_box(seed))?;
        samples.push(start.elapsed());
        black_box(t);
    }
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Nearest-rank percentiles.
    let rank = |p: f64| ((p * runs as f64).ceil() as usize).clamp(1, runs) - 1;
    Ok((Stats { median_ms: ms(samples[rank(0.5)]), p99_ms: ms(samples[rank(0.99)]), runs }, table))
}

fn run_case(m: u32, n: u32, weighted: bool, opts: &Options, seed: &MaglevSeed) -> Result<CaseResult, MaglevError> {
    let bs = backends(n, weighted);
    let (fast, table) = time_builder(build_table, &bs, m, seed, opts.runs)?;
    let (oracle, oracle_table) = time_builder(build_table_full_permutation, &bs, m, seed, opts.oracle_runs)?;

    let mut per_backend = vec![0usize; n as usize + 1];
    for &id in &table {
        per_backend[id as usize] += 1;
    }
    let per_backend = &per_backend[1..];
    Ok(CaseResult {
        m,
        n,
        weighted,
        fast,
        oracle,
        identical: table == oracle_table,
        min_entries: per_backend.iter().copied().min().unwrap_or(0),
        max_entries: per_backend.iter().copied().max().unwrap_or(0),
    })
}

fn print_text(results: &[CaseResult], opts: &Options) {
    println!(
        "Maglev table build ({} runs of build_table, {} of build_table_full_permutation; p99 = nearest rank)",
        opts.runs, opts.oracle_runs
    );
    println!("goal: build_table <= {GOAL_MS:.1} ms at M=65521 N=1000; paper anchor: {PAPER_MS} ms at M=65537 N=1000");
    println!();
    println!(
        "{:>7} {:>5} {:>8} | {:>10} {:>10} | {:>11} {:>11} | {:>7} | {:>9} {:>9} | same",
        "M", "N", "weights", "fast med", "fast p99", "full med", "full p99", "speedup", "min/bknd", "max/bknd"
    );
    for r in results {
        println!(
            "{:>7} {:>5} {:>8} | {:>7.3} ms {:>7.3} ms | {:>8.2} ms {:>8.2} ms | {:>6.1}x | {:>9} {:>9} | {}",
            r.m,
            r.n,
            if r.weighted { "1..200" } else { "equal" },
            r.fast.median_ms,
            r.fast.p99_ms,
            r.oracle.median_ms,
            r.oracle.p99_ms,
            r.oracle.median_ms / r.fast.median_ms,
            r.min_entries,
            r.max_entries,
            if r.identical { "yes" } else { "NO" },
        );
    }
    if let Some(r) = goal_case(results) {
        println!();
        println!(
            "goal check (M=65521 N=1000 equal weights): median {:.3} ms, p99 {:.3} ms -> {} (goal {GOAL_MS:.1} ms, paper {PAPER_MS} ms)",
            r.fast.median_ms,
            r.fast.p99_ms,
            if r.fast.median_ms <= GOAL_MS { "MET" } else { "MISSED" },
        );
    }
}

fn goal_case(results: &[CaseResult]) -> Option<&CaseResult> {
    results.iter().find(|r| r.m == 65521 && r.n == 1000 && !r.weighted)
}

fn print_json(results: &[CaseResult], opts: &Options) {
    let stats =
        |s: &Stats| format!("{{\"median_ms\":{:.4},\"p99_ms\":{:.4},\"runs\":{}}}", s.median_ms, s.p99_ms, s.runs);
    let cases: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{{\"m\":{},\"n\":{},\"weighted\":{},\"build_table\":{},\"build_table_full_permutation\":{},\
                 \"tables_identical\":{},\"min_entries_per_backend\":{},\"max_entries_per_backend\":{}}}",
                r.m,
                r.n,
                r.weighted,
                stats(&r.fast),
                stats(&r.oracle),
                r.identical,
                r.min_entries,
                r.max_entries
            )
        })
        .collect();
    let goal_met = goal_case(results).map(|r| r.fast.median_ms <= GOAL_MS);
    println!(
        "{{\"runs\":{},\"oracle_runs\":{},\"goal_ms\":{GOAL_MS},\"paper_anchor_ms\":{PAPER_MS},\"goal_met\":{},\"cases\":[{}]}}",
        opts.runs,
        opts.oracle_runs,
        goal_met.map_or("null".to_string(), |g| g.to_string()),
        cases.join(",")
    );
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let seed = MaglevSeed::default();
    let mut results = Vec::new();
    for weighted in [false, true] {
        for (m, n) in CASES {
            match run_case(m, n, weighted, &opts, &seed) {
                Ok(r) => results.push(r),
                Err(e) => {
                    eprintln!("M={m} N={n}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if opts.json {
        print_json(&results, &opts);
    } else {
        print_text(&results, &opts);
    }
    if results.iter().all(|r| r.identical) {
        ExitCode::SUCCESS
    } else {
        eprintln!("build_table and build_table_full_permutation disagree");
        ExitCode::FAILURE
    }
}
