//! BGP benchmarks, in network namespaces (method: `shared/reference/bgp.md` §8.2):
//!
//! - relay: injector (`halyard-bgpd`) -> DUT -> BIRD 2 receiver, with `halyard-bgpd`, BIRD 2,
//!   FRR and GoBGP as the DUT side by side in one run;
//! - origination (scenario (b)): N host routes from the DUT to a BIRD 2 receiver, for
//!   `halyard-bgpd` and BIRD 2.
//!
//! Run (root, bird2 installed; frr and gobgpd are used when present):
//! `cargo build --release -p halyard-bgp -p halyard-tests && sudo TZ=UTC target/release/bgp-bench [N] [RUNS]`
//! (`BENCH=origination` runs only the second part; `DUTS=halyard,bird` only those DUTs;
//! `INJECTOR=/path/to/halyard-bgpd` injects with another build, to compare DUT builds with one
//! injector).
//!
//! Origination timing starts at the instant the receiver's BIRD records the session as
//! Established (its own millisecond timestamp, `timeformat protocol iso long ms`); relay timing
//! at the injector's start. Both stop when the receiver holds all N routes (polled with `birdc
//! show route count` every 10 ms, so figures carry up to ~10 ms of polling). CPU is the DUT's
//! utime+stime at that moment (so it includes start-up), RSS its peak (VmHWM). DUTs take turns
//! run by run, and the host's load average is printed: compare DUTs within one run only.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use halyard_tests::netns::{Netns, require_program, require_root, veth_pair, wait_until};
use halyard_tests::peers::{BgpNeighbor, Bird, BirdConfig};

struct Sample {
    secs: f64,
    cpu_secs: f64,
    rss_mib: f64,
}

fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: utime and stime are the 12th and 13th of those.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn proc_hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Parses BIRD's `YYYY-MM-DD HH:MM:SS.mmm` (local time; this machine runs on UTC, which the
/// benchmark checks) into a `SystemTime`.
fn established_at(date: &str, time: &str) -> Option<std::time::SystemTime> {
    let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (hms, ms) = time.split_once('.')?;
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    // Days from civil (Howard Hinnant's algorithm).
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let millis: u64 = ms.parse().ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?) + Duration::from_millis(millis))
}

fn route_count(rcv: &Bird) -> u64 {
    let out = rcv.try_birdc("show route count").unwrap_or_default();
    out.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn measure(dut_kind: &str, n: u32, bgpd: &std::path::Path) -> Sample {
    let dut = Netns::new("dut");
    let rcv_ns = Netns::new("rcv");
    veth_pair(&dut, "eth0", &["10.66.0.1/24"], &rcv_ns, "eth0", &["10.66.0.2/24"]);
    let rcv_conf = BirdConfig::new("10.66.0.2").neighbor(BgpNeighbor::new("10.66.0.1", 65000, 65001)).render();
    let rcv_conf = rcv_conf.replace("timeformat protocol iso long;", "timeformat protocol iso long ms;");
    assert!(rcv_conf.contains("iso long ms"), "{rcv_conf}");
    let rcv = Bird::start_raw(&rcv_ns, &rcv_conf);
    let dir = tempfile::tempdir().expect("tempdir");
    // Keep the DUT alive until measured: both kinds are killed on drop.
    let (_guard_h, _guard_b, pid);
    match dut_kind {
        "halyard" => {
            let conf = dir.path().join("bgpd.toml");
            let text = format!(
                "router_id = \"10.66.0.1\"\nlocal_asn = 65001\n[[peer]]\naddress = \"10.66.0.2\"\nasn = 65000\n\
                 connect_retry_time = 1\n[[generate]]\nstart = \"10.0.0.0\"\ncount = {n}\n"
            );
            std::fs::write(&conf, text).expect("write config");
            let g = dut.spawn([bgpd.to_str().unwrap(), "-c", conf.to_str().unwrap()], dir.path().join("bgpd.log"));
            pid = g.pid();
            _guard_h = Some(g);
            _guard_b = None;
        }
        _ => {
            let mut c = String::from("log stderr all;\nrouter id 10.66.0.1;\nprotocol device { }\n");
            c.push_str("protocol static { ipv4;\n");
            for i in 0..n {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000u32 + i);
                let _ = writeln!(c, "  route {ip}/32 blackhole;");
            }
            c.push_str("}\nprotocol bgp rcv {\n  local 10.66.0.1 as 65001;\n  neighbor 10.66.0.2 as 65000;\n");
            c.push_str("  connect delay time 1; connect retry time 1;\n  ipv4 { import none; export all; };\n}\n");
            let b = Bird::start_raw(&dut, &c);
            pid = halyard_tests::peers::Peer::pid(&b);
            _guard_h = None;
            _guard_b = Some(b);
        }
    }
    // t0: when the receiver recorded the session as Established (BIRD's clock, local time).
    let since = wait_until(Duration::from_secs(30), "the DUT session at the receiver", || {
        let out = rcv.try_birdc("show protocols").ok()?;
        let line = out.lines().find(|l| l.starts_with("peer1 ") && l.contains("Established"))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        established_at(f.get(4)?, f.get(5)?)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while route_count(&rcv) < u64::from(n) {
        assert!(Instant::now() < deadline, "{dut_kind}: receiver stuck at {} of {n} routes", route_count(&rcv));
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = std::time::SystemTime::now().duration_since(since).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    Sample { secs, cpu_secs: proc_cpu_secs(pid), rss_mib: proc_hwm_mib(pid) }
}

/// Relay: injector (halyard-bgpd, AS 65100) -> DUT (AS 65001) -> BIRD receiver (AS 65000).
/// The DUT and receiver are up first; timing runs from the injector's start until the receiver
/// holds all N routes (so it includes the injector's session set-up, equally for every DUT).
fn measure_relay(dut_kind: &str, n: u32, bgpd: &std::path::Path) -> Sample {
    use halyard_tests::peers::{Frr, FrrConfig, Gobgp, GobgpConfig, Peer};
    let inj = Netns::new("inj");
    let dut = Netns::new("dut");
    let rcv_ns = Netns::new("rcv");
    veth_pair(&inj, "eth0", &["10.67.0.1/24"], &dut, "eth0", &["10.67.0.2/24"]);
    veth_pair(&dut, "eth1", &["10.66.0.1/24"], &rcv_ns, "eth0", &["10.66.0.2/24"]);
    let rcv = Bird::start(&rcv_ns, &BirdConfig::new("10.66.0.2").neighbor(BgpNeighbor::new("10.66.0.1", 65000, 65001)));
    let dir = tempfile::tempdir().expect("tempdir");
    let to_inj = || BgpNeighbor::new("10.67.0.1", 65001, 65100);
    let to_rcv = || BgpNeighbor::new("10.66.0.2", 65001, 65000);
    // The DUT stays alive until measured: its guard kills it on drop.
    let (_guard, pid): (Box<dyn std::any::Any>, u32) = match dut_kind {
        "halyard" => {
            let conf = dir.path().join("dut.toml");
            let text = "router_id = \"10.66.0.1\"\nlocal_asn = 65001\nrelay = true\nlisten_port = 179\n\
                        [[peer]]\naddress = \"10.67.0.1\"\nasn = 65100\nconnect_retry_time = 1\n\
                        [[peer]]\naddress = \"10.66.0.2\"\nasn = 65000\nconnect_retry_time = 1\n";
            std::fs::write(&conf, text).expect("write config");
            let g = dut.spawn([bgpd.to_str().unwrap(), "-c", conf.to_str().unwrap()], dir.path().join("dut.log"));
            let pid = g.pid();
            (Box::new(g), pid)
        }
        "bird" => {
            let c = "log stderr all;\nrouter id 10.66.0.1;\nprotocol device { }\n\
                     protocol bgp inj { local 10.67.0.2 as 65001; neighbor 10.67.0.1 as 65100;\n\
                       connect delay time 1; connect retry time 1; ipv4 { import all; export all; }; }\n\
                     protocol bgp rcv { local 10.66.0.1 as 65001; neighbor 10.66.0.2 as 65000;\n\
                       connect delay time 1; connect retry time 1; ipv4 { import all; export all; }; }\n";
            let b = Bird::start_raw(&dut, c);
            let pid = b.pid();
            (Box::new(b), pid)
        }
        "frr" => {
            let f = Frr::start(
                &dut,
                &FrrConfig::new("10.66.0.1").neighbor(to_inj()).neighbor(to_rcv()).families(true, false),
            );
            let pid = f.pid();
            (Box::new(f), pid)
        }
        _ => {
            let g = Gobgp::start(
                &dut,
                &GobgpConfig::new("10.66.0.1").neighbor(to_inj()).neighbor(to_rcv()).families(true, false),
            );
            let pid = g.pid();
            (Box::new(g), pid)
        }
    };
    wait_until(Duration::from_secs(30), "the DUT session at the receiver", || {
        rcv.bgp_state("peer1").filter(|s| s == "Established").map(|_| ())
    });
    let conf = dir.path().join("inj.toml");
    let text = format!(
        "router_id = \"10.67.0.1\"\nlocal_asn = 65100\n[[peer]]\naddress = \"10.67.0.2\"\nasn = 65001\n\
         connect_retry_time = 1\n[[generate]]\nstart = \"10.0.0.0\"\ncount = {n}\n"
    );
    std::fs::write(&conf, text).expect("write config");
    let t0 = Instant::now();
    let injector = std::env::var_os("INJECTOR").map_or_else(|| bgpd.to_path_buf(), std::path::PathBuf::from);
    let _inj = inj.spawn([injector.to_str().unwrap(), "-c", conf.to_str().unwrap()], dir.path().join("inj.log"));
    let deadline = t0 + Duration::from_secs(120);
    while route_count(&rcv) < u64::from(n) {
        assert!(Instant::now() < deadline, "{dut_kind}: receiver stuck at {} of {n} routes", route_count(&rcv));
        std::thread::sleep(Duration::from_millis(10));
    }
    Sample { secs: t0.elapsed().as_secs_f64(), cpu_secs: proc_cpu_secs(pid), rss_mib: proc_hwm_mib(pid) }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    if !require_root() || !require_program("bird", "bird2") {
        std::process::exit(1);
    }
    // BIRD prints local time; the timestamp parser assumes UTC.
    let tz = std::process::Command::new("date").arg("+%z").output().map(|o| o.stdout).unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&tz).trim(), "+0000", "run the benchmark with TZ=UTC");
    let bgpd = halyard_tests::bin("halyard-bgpd");
    if std::env::var("BENCH").as_deref() != Ok("origination") {
        println!("BGP relay: {n} IPv4 /32 routes, injector -> DUT -> BIRD 2 receiver ({runs} runs each)");
        println!(
            "{:<10} {:>12} {:>20} {:>16} {:>12}",
            "DUT", "median (s)", "min-max (s)", "CPU us/route", "peak RSS MiB"
        );
        let kinds: Vec<&str> = ["halyard", "bird", "frr", "gobgp"]
            .into_iter()
            .filter(|k| {
                selected(k)
                    && (*k != "frr" || halyard_tests::peers::Frr::available())
                    && (*k != "gobgp" || halyard_tests::peers::Gobgp::available())
            })
            .collect();
        let load = load_average();
        let samples = rounds(&kinds, runs, |kind| measure_relay(kind, n, &bgpd));
        for (kind, mut s) in kinds.iter().zip(samples) {
            report(kind, &mut s, n);
        }
        println!("host load average (1 min) before/after: {load} / {}", load_average());
        println!("anchor (shared/REFERENCE.md, same method): BIRD 0.090 s, FRR 0.46 s, GoBGP 4.34 s\n");
    }
    println!("BGP origination: {n} IPv4 /32 routes from the DUT to a BIRD 2 receiver ({runs} runs each)");
    println!("{:<10} {:>12} {:>20} {:>16} {:>12}", "DUT", "median (s)", "min-max (s)", "CPU us/route", "peak RSS MiB");
    let kinds: Vec<&str> = ["halyard", "bird"].into_iter().filter(|k| selected(k)).collect();
    let load = load_average();
    let samples = rounds(&kinds, runs, |kind| measure(kind, n, &bgpd));
    for (kind, mut s) in kinds.iter().zip(samples) {
        report(kind, &mut s, n);
    }
    println!("host load average (1 min) before/after: {load} / {}", load_average());
}

/// Measures every DUT `runs` times, taking the DUTs in turn run by run, so that a change in the
/// machine's load (it may be shared) hits every DUT alike. Samples per DUT, in `kinds` order.
fn rounds(kinds: &[&str], runs: usize, mut measure: impl FnMut(&str) -> Sample) -> Vec<Vec<Sample>> {
    let mut out: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (kind, samples) in kinds.iter().zip(&mut out) {
            samples.push(measure(kind));
        }
    }
    out
}

/// The host's 1-minute load average, a guard against reading figures taken on a busy machine.
fn load_average() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().next().unwrap_or("?").to_string()
}

/// `DUTS=halyard,bird` limits a run to those DUTs (default: all).
fn selected(kind: &str) -> bool {
    std::env::var("DUTS").map_or(true, |v| v.split(',').any(|k| k.trim() == kind))
}

fn report(kind: &str, samples: &mut [Sample], n: u32) {
    samples.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let med = &samples[samples.len() / 2];
    println!(
        "{:<10} {:>12.3} {:>20} {:>16.2} {:>12.1}",
        kind,
        med.secs,
        format!("{:.3}-{:.3}", samples[0].secs, samples[samples.len() - 1].secs),
        med.cpu_secs * 1e6 / f64::from(n),
        med.rss_mib
    );
}
