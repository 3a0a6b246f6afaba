//! `arp-probe IFACE SOURCE-IP TARGET-IP COUNT INTERVAL-MS`: sends COUNT ARP requests for TARGET,
//! one every INTERVAL ms, and listens between them. Prints one JSON line: probes sent, probes
//! answered, probes answered by two or more MACs (split brain), the MACs in the order they first
//! answered, and the longest run of unanswered probes in ms. For the L2 tests and the failover
//! benchmark; runs inside a network namespace.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pnet_datalink::{Channel, Config};

fn request(src_mac: [u8; 6], src: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    // RFC 826: Ethernet, IPv4, hlen 6, plen 4, request.
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&src_mac);
    f[28..32].copy_from_slice(&src.octets());
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The sender MAC of an ARP reply from `target`, if `frame` is one.
fn reply_from(frame: &[u8], target: Ipv4Addr) -> Option<[u8; 6]> {
    (frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2] && frame[28..32] == target.octets())
        .then(|| frame[22..28].try_into().unwrap())
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: arp-probe IFACE SOURCE-IP TARGET-IP COUNT INTERVAL-MS");
        return ExitCode::from(2);
    }
    let (Ok(src), Ok(target), Ok(count), Ok(interval)) =
        (a[2].parse::<Ipv4Addr>(), a[3].parse::<Ipv4Addr>(), a[4].parse::<u32>(), a[5].parse::<u64>())
    else {
        eprintln!("arp-probe: bad arguments");
        return ExitCode::from(2);
    };
    let Some(ni) = pnet_datalink::interfaces().into_iter().find(|i| i.name == a[1]) else {
        eprintln!("arp-probe: no interface {}", a[1]);
        return ExitCode::FAILURE;
    };
    let mac = ni.mac.map(|m| m.octets()).unwrap_or_default();
    let cfg = Config { read_timeout: Some(Duration::from_millis(1)), ..Config::default() };
    let (mut tx, mut rx) = match pnet_datalink::channel(&ni, cfg) {
        Ok(Channel::Ethernet(tx, rx)) => (tx, rx),
        _ => {
            eprintln!("arp-probe: cannot open {}", a[1]);
            return ExitCode::FAILURE;
        }
    };
    let frame = request(mac, src, target);
    let interval = Duration::from_millis(interval);
    let (mut answered, mut double) = (0u32, 0u32);
    let mut order: Vec<String> = Vec::new();
    let (mut gap, mut longest_gap) = (0u32, 0u32);
    let start = Instant::now();
    for n in 0..count {
        let due = start + interval * n;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let _ = tx.send_to(&frame, None);
        let end = Instant::now() + interval;
        let mut macs = std::collections::BTreeSet::new();
        while Instant::now() < end {
            if let Ok(f) = rx.next()
                && let Some(m) = reply_from(f, target)
            {
                macs.insert(m);
            }
        }
        if macs.is_empty() {
            gap += 1;
            longest_gap = longest_gap.max(gap);
        } else {
            gap = 0;
            answered += 1;
        }
        if macs.len() > 1 {
            double += 1;
        }
        for m in macs {
            let s = m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            if !order.contains(&s) {
                order.push(s);
            }
        }
    }
    let macs: Vec<String> = order.iter().map(|m| format!("\"{m}\"")).collect();
    println!(
        "{{\"probes\":{count},\"answered\":{answered},\"double\":{double},\"macs\":[{}],\"longest_gap_ms\":{}}}",
        macs.join(","),
        longest_gap as u64 * interval.as_millis() as u64
    );
    ExitCode::SUCCESS
}
