//! `halyard bpf cluster-ip ...`: the east-west ClusterIP maps (`hl_ew4_*`), read from their pins,
//! with service and backend names from the agent's `cluster-ip.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::Context;
use halyard_datapath::maps::{CT_F_CLOSING, IPPROTO_UDP, MAGLEV_M, SVC_F_AFFINITY};
use halyard_datapath::svc::ClusterIpMaps;
use serde_json::{Value, json};

use crate::bpf::Locations;
use crate::table;

#[derive(Debug, Default, serde::Deserialize)]
struct Names {
    #[serde(default)]
    services: BTreeMap<u32, Unit>,
    #[serde(default)]
    draining: BTreeSet<u32>,
}

#[derive(Debug, serde::Deserialize)]
struct Unit {
    service: String,
    port: u16,
    proto: u8,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "TCP",
        17 => "UDP",
        _ => "?",
    }
}

fn open(loc: &Locations) -> anyhow::Result<(ClusterIpMaps, Names)> {
    let maps = ClusterIpMaps::open(&loc.pin_dir).with_context(|| {
        format!(
            "the ClusterIP translation is not loaded (no maps pinned under {}); is the agent running with \
             --routing-mode tunnel|native or --enable-cluster-ip-lb?",
            loc.pin_dir.display()
        )
    })?;
    let file = loc.names_file.with_file_name("cluster-ip.json");
    let names = std::fs::read(file).ok().and_then(|b| serde_json::from_slice::<Names>(&b).ok()).unwrap_or_default();
    Ok((maps, names))
}

fn label(names: &Names, id: u32) -> String {
    names
        .services
        .get(&id)
        .map(|u| format!("{}:{}/{}", u.service, u.port, if u.proto == IPPROTO_UDP { "UDP" } else { "TCP" }))
        .unwrap_or_else(|| format!("#{id}"))
}

/// `halyard bpf cluster-ip list`: each ClusterIP frontend with its backends and their Maglev
/// share, then the non-zero counters and the number of tracked flows.
pub fn list(loc: &Locations, json_out: bool) -> anyhow::Result<String> {
    let (maps, names) = open(loc)?;
    let backends = maps.backends()?;
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for (key, svc) in maps.services()? {
        let mut share: BTreeMap<u32, usize> = BTreeMap::new();
        for id in maps.maglev(svc.svc_id)?.unwrap_or_default() {
            *share.entry(id).or_insert(0) += 1;
        }
        let frontend = format!("{}:{}/{}", key.vip(), key.port(), proto_name(key.proto));
        let service = label(&names, svc.svc_id);
        let affinity = svc.flags & SVC_F_AFFINITY != 0;
        if share.is_empty() {
            rows.push(vec![frontend.clone(), service.clone(), "(none: dropped)".into(), "-".into()]);
        }
        let mut bl = Vec::new();
        for (i, (id, slots)) in share.iter().enumerate() {
            let addr = backends.get(id).map(ToString::to_string).unwrap_or_else(|| format!("#{id}"));
            let draining = names.draining.contains(id);
            let pct = *slots as f64 * 100.0 / MAGLEV_M as f64;
            let (f, s) = if i == 0 { (frontend.clone(), service.clone()) } else { (String::new(), String::new()) };
            rows.push(vec![f, s, format!("{addr} ({id})"), format!("{slots} ({pct:.1}%)")]);
            bl.push(json!({"id": id, "address": addr, "slots": slots, "draining": draining}));
        }
        items.push(json!({"frontend": frontend, "service": service, "serviceId": svc.svc_id,
                          "sessionAffinity": affinity, "backends": bl}));
    }
    if json_out {
        return Ok(serde_json::to_string_pretty(&Value::from(items))? + "\n");
    }
    let mut out = table::render(&["CLUSTER-IP", "SERVICE", "BACKEND (ID)", "MAGLEV SLOTS"], &rows);
    let nonzero: Vec<Vec<String>> = maps
        .counters()?
        .iter()
        .filter(|(_, p, _)| *p > 0)
        .map(|(c, p, b)| vec![c.name().to_string(), p.to_string(), b.to_string()])
        .collect();
    if !nonzero.is_empty() {
        out.push('\n');
        out.push_str(&table::render(&["COUNTER", "PACKETS", "BYTES"], &nonzero));
    }
    out.push_str(&format!("\n{} tracked flows\n", maps.ct_entries()?.len()));
    Ok(out)
}

/// `halyard bpf cluster-ip ct`: pods' flows to ClusterIPs and the backend each is pinned to.
pub fn ct(loc: &Locations, json_out: bool) -> anyhow::Result<String> {
    let (maps, names) = open(loc)?;
    let backends = maps.backends()?;
    let now = halyard_datapath::lb::monotonic_ns();
    let mut entries = maps.ct_entries()?;
    entries.sort_by_key(|(k, _)| *k);
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for (k, e) in entries {
        let src = format!("{}:{}", Ipv4Addr::from(k.saddr), u16::from_be_bytes(k.sport));
        let dst = format!("{}:{}", Ipv4Addr::from(k.daddr), u16::from_be_bytes(k.dport));
        let be = backends
            .get(&e.backend_id)
            .map(ToString::to_string)
            .unwrap_or_else(|| format!("#{} (deleted)", e.backend_id));
        let idle = now.saturating_sub(e.last_seen_ns) / 1_000_000_000;
        let closing = e.flags & CT_F_CLOSING != 0;
        items.push(json!({"source": src, "clusterIP": dst, "protocol": proto_name(k.proto), "backend": be,
                          "backendId": e.backend_id, "service": label(&names, e.svc_id),
                          "idleSeconds": idle, "closing": closing}));
        rows.push(vec![
            src,
            dst,
            proto_name(k.proto).into(),
            be,
            label(&names, e.svc_id),
            format!("{idle}s{}", if closing { " (closing)" } else { "" }),
        ]);
    }
    if json_out {
        return Ok(serde_json::to_string_pretty(&Value::from(items))? + "\n");
    }
    Ok(table::render(&["SOURCE", "CLUSTER-IP", "PROTO", "BACKEND", "SERVICE", "IDLE"], &rows))
}
