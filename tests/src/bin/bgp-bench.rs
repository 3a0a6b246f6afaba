//! BGP benchmarks, in network namespaces (method: `shared/reference/bgp.md` §8.2):
//!
//! - relay: injector (`halyard-bgpd`) -> DUT -> BIRD 2 receiver, with `halyard-bgpd`, BIRD 2,
//!   FRR and GoBGP as the DUT side by side in one run;
//! - origination (scenario (b)): N host routes from the DUT to a BIRD 2 receiver, for
//!   `halyard-bgpd` and BIRD 2;
//! - announce latency (`bgp-bench latency [N]`, scenario (a)): N times, one new route is added
//!   to the speaker under test, and a raw receiver written here (a minimal BGP speaker on
//!   `halyard_bgp::wire`, in its own namespace) timestamps the UPDATE carrying it as it is read.
//!   The speaker is the real agent (a new LoadBalancer Service manifest -> reconcile -> BGP),
//!   BIRD 2 (`birdc configure` with one more `protocol static` route), GoBGP (`gobgp global
//!   rib add`) and FRR (`vtysh ... network`), each timed from just before its triggering
//!   command (which is included) to the receiver's read. The agent runs twice: with its
//!   default `reload-debounce-ms` of 100 (`halyard`) and with 0 (`halyard-d0`); since the agent
//!   reloads as soon as a written file is closed or renamed in, the two differ only when a
//!   writer keeps a file open, which the benchmark never does; `DUTS=` picks
//!   among `halyard,halyard-d0,bird,gobgp,frr`. Needs the agent and CLI built too.
//!
//! Run (root, bird2 installed; frr and gobgpd are used when present):
//! `cargo build --release -p halyard-bgp -p halyard-tests && sudo TZ=UTC target/release/bgp-bench [N] [RUNS]`
//! or `cargo build --release --bins && sudo target/release/bgp-bench latency [N]`
//! (`BENCH=origination` runs only the second part, `BENCH=relay` only the first;
//! `DUTS=halyard,bird` only those DUTs;
//! `INJECTOR=/path/to/halyard-bgpd` injects with another build, to compare DUT builds with one
//! injector; `RELAY_TIMEOUT_S` how long a relay run may take, default 120 s or 300 us per
//! route if more).
//!
//! Relay withdrawal: once the receiver holds all N, the injector is stopped (SIGTERM: it sends a
//! Cease), and the DUT must withdraw everything it relayed; timed until the receiver holds 0.
//!
//! Origination timing starts at the instant the receiver's BIRD records the session as
//! Established (its own millisecond timestamp, `timeformat protocol iso long ms`); relay timing
//! at the injector's start. Both stop when the receiver holds all N routes (polled with `birdc
//! show route count` every 10 ms per 100k routes, so figures carry up to that much polling). CPU is the DUT's
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
    /// Relay only: time to withdraw everything once the injector stops.
    withdraw_secs: Option<f64>,
    /// Relay only: `Some(count)` when the receiver was still short of N at the time limit.
    timed_out_at: Option<u64>,
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
    Sample { secs, cpu_secs: proc_cpu_secs(pid), rss_mib: proc_hwm_mib(pid), withdraw_secs: None, timed_out_at: None }
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
    let mut inj_guard =
        inj.spawn([injector.to_str().unwrap(), "-c", conf.to_str().unwrap()], dir.path().join("inj.log"));
    let limit = relay_timeout(n);
    // `show route count` walks BIRD's table: poll less often on big tables (10 ms per 100k
    // routes) so that the receiver is not kept busy answering.
    let poll = Duration::from_millis(10 * u64::from(n / 100_000).max(1));
    let deadline = t0 + limit;
    let mut count = 0;
    while count < u64::from(n) {
        if Instant::now() >= deadline {
            return Sample {
                secs: t0.elapsed().as_secs_f64(),
                cpu_secs: proc_cpu_secs(pid),
                rss_mib: proc_hwm_mib(pid),
                withdraw_secs: None,
                timed_out_at: Some(count),
            };
        }
        std::thread::sleep(poll);
        count = route_count(&rcv);
    }
    let secs = t0.elapsed().as_secs_f64();
    let (cpu_secs, rss_mib) = (proc_cpu_secs(pid), proc_hwm_mib(pid));
    // Withdrawal: stop the injector (it sends a Cease); the DUT must withdraw all it relayed.
    let t1 = Instant::now();
    inj_guard.stop(Duration::from_secs(5));
    let deadline = t1 + limit;
    let mut withdraw_secs = None;
    while Instant::now() < deadline {
        if route_count(&rcv) == 0 {
            withdraw_secs = Some(t1.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(poll);
    }
    Sample { secs, cpu_secs, rss_mib: rss_mib.max(proc_hwm_mib(pid)), withdraw_secs, timed_out_at: None }
}

/// How long one relay run (and its withdrawal) may take: `RELAY_TIMEOUT_S`, else 120 s or 300 µs
/// per route, whichever is more.
fn relay_timeout(n: u32) -> Duration {
    let default = Duration::from_secs(120).max(Duration::from_micros(300 * u64::from(n)));
    std::env::var("RELAY_TIMEOUT_S").ok().and_then(|v| v.parse().ok()).map_or(default, Duration::from_secs)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("latency-receiver") => {
            let _ = args.next();
            latency::receiver(args.next().as_deref().unwrap_or("0.0.0.0:179"));
            return;
        }
        Some("latency") => {
            let _ = args.next();
            let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
            if !require_root() || !require_program("bird", "bird2") {
                std::process::exit(1);
            }
            latency::run(n);
            return;
        }
        _ => {}
    }
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    if !require_root() || !require_program("bird", "bird2") {
        std::process::exit(1);
    }
    // BIRD prints local time; the timestamp parser assumes UTC.
    let tz = std::process::Command::new("date").arg("+%z").output().map(|o| o.stdout).unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&tz).trim(), "+0000", "run the benchmark with TZ=UTC");
    let bgpd = halyard_tests::bin("halyard-bgpd");
    let bench = std::env::var("BENCH").unwrap_or_default();
    if bench != "origination" {
        println!("BGP relay: {n} IPv4 /32 routes, injector -> DUT -> BIRD 2 receiver ({runs} runs each)");
        println!("{}", uptime());
        println!(
            "{:<10} {:>12} {:>20} {:>16} {:>12} {:>14} {:>20}",
            "DUT", "median (s)", "min-max (s)", "CPU us/route", "peak RSS MiB", "withdraw (s)", "withdraw min-max"
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
        println!("{}", uptime());
        println!("anchor (shared/REFERENCE.md, same method, 100k): BIRD 0.090 s, FRR 0.46 s, GoBGP 4.34 s\n");
    }
    if bench == "relay" {
        return;
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
/// A DUT that runs out of time once is not tried again.
fn rounds(kinds: &[&str], runs: usize, mut measure: impl FnMut(&str) -> Sample) -> Vec<Vec<Sample>> {
    let mut out: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (kind, samples) in kinds.iter().zip(&mut out) {
            if samples.iter().any(|s| s.timed_out_at.is_some()) {
                continue;
            }
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

/// `uptime`'s line (load averages over 1, 5 and 15 minutes), as printed around each part.
fn uptime() -> String {
    let out = std::process::Command::new("uptime").output().map(|o| o.stdout).unwrap_or_default();
    format!("uptime: {}", String::from_utf8_lossy(&out).trim())
}

/// `DUTS=halyard,bird` limits a run to those DUTs (default: all).
fn selected(kind: &str) -> bool {
    std::env::var("DUTS").map_or(true, |v| v.split(',').any(|k| k.trim() == kind))
}

fn report(kind: &str, samples: &mut Vec<Sample>, n: u32) {
    if let Some(s) = samples.iter().find(|s| s.timed_out_at.is_some()) {
        println!(
            "{:<10} did not finish in {:.0} s: the receiver held {} of {n} routes (CPU {:.1} s, peak RSS {:.1} MiB)",
            kind,
            s.secs,
            s.timed_out_at.unwrap_or(0),
            s.cpu_secs,
            s.rss_mib
        );
        samples.retain(|s| s.timed_out_at.is_none());
        if samples.is_empty() {
            return;
        }
    }
    samples.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let med = &samples[samples.len() / 2];
    let mut w: Vec<f64> = samples.iter().filter_map(|s| s.withdraw_secs).collect();
    w.sort_by(f64::total_cmp);
    let (wmed, wrange) = match (w.first(), w.last()) {
        (Some(lo), Some(hi)) if w.len() == samples.len() => {
            (format!("{:.3}", w[w.len() / 2]), format!("{lo:.3}-{hi:.3}"))
        }
        (Some(lo), Some(hi)) => {
            (format!("{:.3}", w[w.len() / 2]), format!("{lo:.3}-{hi:.3} ({} of {} done)", w.len(), samples.len()))
        }
        _ => (String::new(), String::new()),
    };
    println!(
        "{:<10} {:>12.3} {:>20} {:>16.2} {:>12.1} {:>14} {:>20}",
        kind,
        med.secs,
        format!("{:.3}-{:.3}", samples[0].secs, samples[samples.len() - 1].secs),
        med.cpu_secs * 1e6 / f64::from(n),
        med.rss_mib,
        wmed,
        wrange
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

/// Announce latency (`bgp-bench latency [N]`): one new route at a time, from the triggering
/// action to the UPDATE read by a raw receiver.
mod latency {
    use std::collections::HashSet;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use halyard_bgp::wire::{
        self, AfiSafi, Capability, DecodeCxt, EncodeCxt, Message, MpReach, MpUnreach, Open, PathAttribute,
    };
    use halyard_tests::Agent;
    use halyard_tests::netns::{Netns, veth_pair};
    use halyard_tests::peers::{BgpNeighbor, Bird, Frr, FrrConfig, Gobgp, GobgpConfig};

    const GOAL_MS: f64 = 5.0;

    fn now_ns() -> u128 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    }

    /// The raw receiver (run inside the receiver's namespace by the parent, as
    /// `bgp-bench latency-receiver ADDR:PORT`): a passive BGP speaker, AS 65000, that accepts
    /// one session and prints one line per event on stdout, with the wall-clock time
    /// (ns since the epoch) taken right after the `read` that completed the message:
    /// `L` listening, `E t` Established, `A prefix t` / `W prefix t` announced / withdrawn,
    /// `R t` End-of-RIB, `X reason` session over.
    pub fn receiver(listen: &str) {
        let out = std::io::stdout();
        let mut out = out.lock();
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("bind {listen}: {e}"));
        let _ = writeln!(out, "L");
        let _ = out.flush();
        let (mut sock, _) = listener.accept().expect("accept");
        let _ = sock.set_nodelay(true);
        let ecx = EncodeCxt::default();
        let caps = vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65000),
        ];
        let open = Message::Open(Open::new(65000, 90, std::net::Ipv4Addr::new(10, 66, 0, 2), caps));
        sock.write_all(&open.encode(&ecx).expect("encode OPEN")).expect("send OPEN");
        let keepalive = Message::Keepalive.encode(&ecx).expect("encode KEEPALIVE");
        let mut cxt = DecodeCxt::new(false);
        let mut established = false;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 17);
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let k = match sock.read(&mut chunk) {
                Ok(0) => {
                    let _ = writeln!(out, "X connection closed");
                    return;
                }
                Ok(k) => k,
                Err(e) => {
                    let _ = writeln!(out, "X read: {e}");
                    return;
                }
            };
            let t = now_ns();
            buf.extend_from_slice(&chunk[..k]);
            let mut off = 0;
            loop {
                let len = match wire::frame_len(&buf[off..], &cxt) {
                    Ok(Some(len)) if buf.len() - off >= len => len,
                    Ok(_) => break,
                    Err(e) => {
                        let _ = writeln!(out, "X framing: {e:?}");
                        return;
                    }
                };
                let msg = match Message::decode(&buf[off..off + len], &cxt) {
                    Ok((m, _)) => m,
                    Err(e) => {
                        let _ = writeln!(out, "X decode: {e:?}");
                        return;
                    }
                };
                off += len;
                match msg {
                    Message::Open(o) => {
                        cxt = DecodeCxt::new(o.four_octet_as().is_some());
                        sock.write_all(&keepalive).expect("send KEEPALIVE");
                        let mut ka = sock.try_clone().expect("clone socket");
                        let bytes = keepalive.clone();
                        std::thread::spawn(move || {
                            while ka.write_all(&bytes).is_ok() {
                                std::thread::sleep(Duration::from_secs(10));
                            }
                        });
                    }
                    Message::Keepalive if !established => {
                        established = true;
                        let _ = writeln!(out, "E {t}");
                    }
                    Message::Update(u) => {
                        if u.nlri.is_empty() && u.withdrawn.is_empty() && u.attributes.is_empty() {
                            let _ = writeln!(out, "R {t}");
                        }
                        for p in &u.nlri {
                            let _ = writeln!(out, "A {p} {t}");
                        }
                        for p in &u.withdrawn {
                            let _ = writeln!(out, "W {p} {t}");
                        }
                        for a in &u.attributes {
                            match a {
                                PathAttribute::MpReach(MpReach::Ipv4Unicast { nlri, .. }) => {
                                    for p in nlri {
                                        let _ = writeln!(out, "A {p} {t}");
                                    }
                                }
                                PathAttribute::MpUnreach(MpUnreach::Ipv4Unicast(w)) => {
                                    for p in w {
                                        let _ = writeln!(out, "W {p} {t}");
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Message::Notification(n) => {
                        let _ = writeln!(out, "X NOTIFICATION {n}");
                        return;
                    }
                    _ => {}
                }
            }
            buf.drain(..off);
            let _ = out.flush();
        }
    }

    /// The receiver process, started by us in its namespace and killed by PID on drop.
    struct Receiver {
        child: Child,
        lines: mpsc::Receiver<String>,
    }

    impl Receiver {
        fn start(ns: &Netns) -> Receiver {
            let exe = std::env::current_exe().expect("own executable");
            let mut child = Command::new("ip")
                .args(["netns", "exec", ns.name()])
                .arg(exe)
                .args(["latency-receiver", "10.66.0.2:179"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the receiver");
            let stdout = child.stdout.take().expect("receiver stdout");
            let (tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            let r = Receiver { child, lines };
            r.wait_for(Duration::from_secs(10), |l| (l == "L").then_some(())).expect("the receiver to listen");
            r
        }

        /// The first line (from now) for which `f` gives `Some`, or `None` after `timeout`.
        fn wait_for<T>(&self, timeout: Duration, mut f: impl FnMut(&str) -> Option<T>) -> Option<T> {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(l) => {
                        if l.starts_with('X') {
                            eprintln!("receiver: {l}");
                        }
                        if let Some(v) = f(&l) {
                            return Some(v);
                        }
                    }
                    Err(_) => return None,
                }
            }
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The i-th route the anchors originate: 172.31.0.0/32, 172.31.0.1/32, ...
    fn anchor_prefix(i: usize) -> String {
        format!("172.31.{}.{}/32", (i >> 8) & 0xff, i & 0xff)
    }

    struct Outcome {
        /// Announce latencies, ms.
        ms: Vec<f64>,
        /// How long the triggering command took to return, ms.
        cmd_ms: Vec<f64>,
        /// Latency counted from the command's return instead (the speaker's own share; negative
        /// when the UPDATE arrived before the command returned).
        after_ms: Vec<f64>,
        missed: usize,
        /// Extra facts to print under the table (the agent's own reconcile time).
        note: Option<String>,
    }

    /// `n` samples: `trigger(i)` adds route i; the sample ends when the receiver reports the
    /// prefix `want(i)` (or, with `None`, any prefix it has not seen before).
    fn sample(
        rcv: &Receiver,
        n: usize,
        want: impl Fn(usize) -> Option<String>,
        mut trigger: impl FnMut(usize),
    ) -> Outcome {
        let mut seen = HashSet::new();
        let mut out = Outcome { ms: Vec::new(), cmd_ms: Vec::new(), after_ms: Vec::new(), missed: 0, note: None };
        // Whatever came with the session (End-of-RIB, initial routes) is not a sample.
        while rcv.lines.try_recv().is_ok() {}
        for i in 0..n {
            let want = want(i);
            let t0 = now_ns();
            trigger(i);
            let cmd_ms = (now_ns() - t0) as f64 / 1e6;
            out.cmd_ms.push(cmd_ms);
            let got = rcv.wait_for(Duration::from_secs(10), |l| {
                let mut f = l.split(' ');
                if f.next()? != "A" {
                    return None;
                }
                let (p, t) = (f.next()?, f.next()?.parse::<u128>().ok()?);
                let hit = match &want {
                    Some(w) => w == p,
                    None => !seen.contains(p),
                };
                seen.insert(p.to_string());
                hit.then(|| t.saturating_sub(t0) as f64 / 1e6)
            });
            match got {
                Some(ms) => {
                    out.ms.push(ms);
                    out.after_ms.push(ms - cmd_ms);
                }
                None => out.missed += 1,
            }
            // Routes arrive one at a time, not in a burst: let the speaker settle.
            std::thread::sleep(Duration::from_millis(30 + (i as u64 * 7) % 20));
        }
        out
    }

    const AGENT_BGP: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lb}
spec:
  blocks: [{cidr: 172.30.0.0/16}]
---
apiVersion: v1
kind: Node
metadata: {name: e2e-node, labels: {bgp: "on"}}
status:
  addresses: [{type: InternalIP, address: 10.66.0.1}]
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
        - {name: rcv, peerASN: 65000, peerAddress: 10.66.0.2, peerConfigRef: {name: rcv}}
---
apiVersion: cilium.io/v2
kind: CiliumBGPPeerConfig
metadata: {name: rcv}
spec:
  timers: {connectRetryTimeSeconds: 1}
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

    fn bird_config(routes: usize) -> String {
        let mut c =
            String::from("log stderr all;\nrouter id 10.66.0.1;\nprotocol device { }\nprotocol static st {\n  ipv4;\n");
        for i in 0..routes {
            c.push_str(&format!("  route {} blackhole;\n", anchor_prefix(i)));
        }
        c.push_str(
            "}\nprotocol bgp rcv {\n  local 10.66.0.1 as 65001;\n  neighbor 10.66.0.2 as 65000;\n  \
             connect delay time 1; connect retry time 1;\n  ipv4 { import none; export all; };\n}\n",
        );
        c
    }

    fn measure(kind: &str, n: usize) -> Result<Outcome, String> {
        let dut = Netns::new("ldut");
        let rcv_ns = Netns::new("lrcv");
        veth_pair(&dut, "eth0", &["10.66.0.1/24"], &rcv_ns, "eth0", &["10.66.0.2/24"]);
        let rcv = Receiver::start(&rcv_ns);
        let up = |what: &str| {
            rcv.wait_for(Duration::from_secs(30), |l| l.starts_with("E ").then_some(()))
                .ok_or_else(|| format!("{what}: no session at the receiver within 30 s"))?;
            // Let the session's initial exchange (End-of-RIB) pass.
            std::thread::sleep(Duration::from_millis(500));
            Ok::<(), String>(())
        };
        match kind {
            "halyard" | "halyard-d0" => {
                let debounce = if kind == "halyard" { "100" } else { "0" };
                let agent = Agent::start_in(
                    dut.name(),
                    &[("bgp.yaml", AGENT_BGP)],
                    &["--reload-debounce-ms", debounce, "--resync-seconds", "3600", "--metrics-addr", "127.0.0.1:9891"],
                )
                .map_err(|e| format!("agent: {e:#}"))?;
                up("agent")?;
                let mut out = sample(
                    &rcv,
                    n,
                    |_| None,
                    |i| {
                        let svc = format!(
                            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default, labels: {{bgp: announce}}}}\n\
                         spec:\n  type: LoadBalancer\n  ports: [{{port: 80}}]\n"
                        );
                        agent.write_manifest(&format!("svc-{i}.yaml"), &svc);
                    },
                );
                // The agent's own share: its reconcile histogram (parse, IPAM, state file with
                // fsync), scraped in its namespace.
                let m = dut.exec(&["curl", "-fsS", "http://127.0.0.1:9891/metrics"]);
                let text = String::from_utf8_lossy(&m.stdout);
                let metric = |suffix: &str| {
                    text.lines()
                        .find(|l| {
                            l.contains("reconcile_duration_seconds")
                                && l.split(' ').next().is_some_and(|k| k.ends_with(suffix))
                        })
                        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                };
                if let (Some(sum), Some(count)) = (metric("_sum"), metric("_count")) {
                    out.note = Some(format!(
                        "{kind}: the agent's reconcile took {:.2} ms on average ({count} reconciles)",
                        sum * 1e3 / count.max(1.0)
                    ));
                }
                drop(agent);
                Ok(out)
            }
            "bird" => {
                let b = Bird::start_raw(&dut, &bird_config(0));
                up("bird")?;
                let conf = b.config_path().to_path_buf();
                Ok(sample(
                    &rcv,
                    n,
                    |i| Some(anchor_prefix(i)),
                    |i| {
                        std::fs::write(&conf, bird_config(i + 1)).expect("write bird.conf");
                        let r = b.try_birdc("configure");
                        assert!(r.as_deref().is_ok_and(|o| o.contains("Reconfigur")), "birdc configure: {r:?}");
                    },
                ))
            }
            "gobgp" => {
                let g = Gobgp::start(
                    &dut,
                    &GobgpConfig::new("10.66.0.1")
                        .neighbor(BgpNeighbor::new("10.66.0.2", 65001, 65000))
                        .families(true, false),
                );
                up("gobgp")?;
                Ok(sample(
                    &rcv,
                    n,
                    |i| Some(anchor_prefix(i)),
                    |i| {
                        g.gobgp(&["global", "rib", "add", &anchor_prefix(i), "-a", "ipv4"]);
                    },
                ))
            }
            _ => {
                let f = Frr::start(
                    &dut,
                    &FrrConfig::new("10.66.0.1")
                        .neighbor(BgpNeighbor::new("10.66.0.2", 65001, 65000))
                        .families(true, false),
                );
                up("frr")?;
                Ok(sample(
                    &rcv,
                    n,
                    |i| Some(anchor_prefix(i)),
                    |i| {
                        let net = format!("network {}", anchor_prefix(i));
                        f.try_vtysh(&["configure terminal", "router bgp 65001", "address-family ipv4 unicast", &net])
                            .expect("vtysh network");
                    },
                ))
            }
        }
    }

    fn pct(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    pub fn run(n: usize) {
        println!(
            "BGP announce latency: {n} times, one new route added to the speaker -> its UPDATE read by a raw receiver"
        );
        println!(
            "(from just before the triggering action, which is included, to the receiver's read; goal p99 <= {GOAL_MS} ms;"
        );
        println!(" cmd = how long the trigger took to return; after = latency counted from that return instead)");
        println!("{}", super::uptime());
        println!(
            "{:<12} {:<44} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>5} {:>5}  goal",
            "DUT",
            "trigger",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "cmd p50",
            "after p50",
            "after p99",
            "miss",
            "load"
        );
        let kinds = [
            ("halyard", "agent: new Service manifest (defaults)"),
            ("halyard-d0", "agent: new Service manifest (debounce 0)"),
            ("bird", "bird.conf + birdc configure (static route)"),
            ("gobgp", "gobgp global rib add"),
            ("frr", "vtysh conf t / router bgp / network"),
        ];
        let mut notes = Vec::new();
        for (kind, trigger) in kinds {
            if !super::selected(kind)
                || (kind == "frr" && !Frr::available())
                || (kind == "gobgp" && !Gobgp::available())
            {
                continue;
            }
            let load = super::load_average();
            match measure(kind, n) {
                Ok(mut o) => {
                    o.ms.sort_by(f64::total_cmp);
                    o.cmd_ms.sort_by(f64::total_cmp);
                    o.after_ms.sort_by(f64::total_cmp);
                    let p99 = pct(&o.ms, 0.99);
                    let goal = if o.missed == 0 && p99 <= GOAL_MS { "meets" } else { "misses" };
                    println!(
                        "{:<12} {:<44} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {:>5} {:>5}  {goal}",
                        kind,
                        trigger,
                        pct(&o.ms, 0.5),
                        pct(&o.ms, 0.9),
                        p99,
                        o.ms.last().copied().unwrap_or(f64::NAN),
                        pct(&o.cmd_ms, 0.5),
                        pct(&o.after_ms, 0.5),
                        pct(&o.after_ms, 0.99),
                        o.missed,
                        load
                    );
                    notes.extend(o.note);
                }
                Err(e) => println!("{kind:<12} {trigger:<44} failed: {e}"),
            }
            let _ = std::io::stdout().flush();
        }
        for note in notes {
            println!("{note}");
        }
        println!("{}", super::uptime());
    }
}
