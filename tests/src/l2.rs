//! Helpers for the L2 announcement tests: who answers ARP, and who says it owns an IP.

use std::collections::BTreeSet;

use crate::Agent;
use crate::netns::Netns;

/// The MACs that answered `count` ARP requests for `ip` (arping prints one line per reply).
pub fn arp_macs(client: &Netns, ip: &str, count: u32) -> BTreeSet<String> {
    let o = client.exec(&["arping", "-c", &count.to_string(), "-w", "2", "-I", "eth0", ip]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| l.split('[').nth(1).and_then(|r| r.split(']').next()).map(|m| m.to_lowercase()))
        .collect()
}

/// Which agents (index i runs `node-{i+1}`) own `ip` according to their own
/// `halyard l2 announcements`.
pub fn owners(agents: &[Option<Agent>], ip: &str) -> Vec<usize> {
    agents
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let a = a.as_ref()?;
            let o = a.cli(&["l2", "announcements", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            v.as_array()?.iter().any(|r| r["ip"] == ip && r["owner"] == format!("node-{}", i + 1)).then_some(i)
        })
        .collect()
}
