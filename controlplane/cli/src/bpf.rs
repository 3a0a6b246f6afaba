//! `halyard bpf ...`: the datapath's maps, read straight from their pins (as `cilium bpf` does),
//! with service and backend names from the agent's `datapath.json`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use halyard_datapath::hash::{flow_hash, flow_hash6_with};
use halyard_datapath::lb::LbMaps;
use halyard_datapath::lb6::Lb6Maps;
use halyard_datapath::maglev::MaglevSeed;
use halyard_datapath::maps::{ForwardingMode, IPPROTO_UDP, MAGLEV_M};
use serde_json::{Value, json};

use crate::table;

/// Where the datapath lives, from the agent's configuration (or flags, or defaults).
#[derive(Debug, Clone)]
pub struct Locations {
    pub pin_dir: PathBuf,
    pub names_file: PathBuf,
    pub seed: MaglevSeed,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Names {
    #[serde(default)]
    services: BTreeMap<u32, Unit>,
    #[serde(default)]
    draining: std::collections::BTreeSet<u32>,
}

#[derive(Debug, serde::Deserialize)]
struct Unit {
    service: String,
    port: u16,
    proto: u8,
}

impl Unit {
    fn label(&self) -> String {
        format!("{}:{}/{}", self.service, self.port, if self.proto == IPPROTO_UDP { "UDP" } else { "TCP" })
    }
}

fn open(loc: &Locations) -> anyhow::Result<(LbMaps, Names)> {
    let maps = LbMaps::open(&loc.pin_dir).with_context(|| {
        format!(
            "the datapath is not loaded (no maps pinned under {}); is the agent running with --datapath-interfaces?",
            loc.pin_dir.display()
        )
    })?;
    let names =
        std::fs::read(&loc.names_file).ok().and_then(|b| serde_json::from_slice::<Names>(&b).ok()).unwrap_or_default();
    Ok((maps, names))
}

/// The IPv6 maps, when the loaded datapath has them (an older one pinned none).
fn open6(loc: &Locations) -> Option<Lb6Maps> {
    Lb6Maps::open(&loc.pin_dir).ok()
}

/// Backend id -> `address:port` (IPv6 as `[address]:port`), over both families' maps (one id
/// space).
fn backend_names(maps: &LbMaps, maps6: Option<&Lb6Maps>) -> anyhow::Result<BTreeMap<u32, String>> {
    let mut out: BTreeMap<u32, String> = maps.backends()?.into_iter().map(|(id, b)| (id, b.to_string())).collect();
    if let Some(m) = maps6 {
        out.extend(m.backends()?.into_iter().map(|(id, b)| (id, b.to_string())));
    }
    Ok(out)
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "TCP",
        17 => "UDP",
        _ => "?",
    }
}

fn service_label(names: &Names, id: u32) -> String {
    names.services.get(&id).map(Unit::label).unwrap_or_else(|| format!("#{id}"))
}

/// Slots per backend id in a table.
fn shares(table: &[u32]) -> BTreeMap<u32, usize> {
    let mut m = BTreeMap::new();
    for id in table {
        *m.entry(*id).or_insert(0) += 1;
    }
    m
}

pub fn lb_list(loc: &Locations, json_out: bool) -> anyhow::Result<String> {
    let (maps, names) = open(loc)?;
    let maps6 = open6(loc);
    let backends = backend_names(&maps, maps6.as_ref())?;
    let mut rows = Vec::new();
    let mut items = Vec::new();
    // IPv4 frontends, then IPv6 ones (`[address]:port`).
    let mut frontends: Vec<(String, halyard_datapath::maps::Lb4Service)> = maps
        .services()?
        .into_iter()
        .map(|(key, svc)| (format!("{}:{}/{}", key.vip(), key.port(), proto_name(key.proto)), svc))
        .collect();
    if let Some(m) = &maps6 {
        frontends.extend(
            m.services()?
                .into_iter()
                .map(|(key, svc)| (format!("[{}]:{}/{}", key.vip(), key.port(), proto_name(key.proto)), svc)),
        );
    }
    for (frontend, svc) in frontends {
        let table = maps.maglev(svc.svc_id)?;
        let share = table.as_deref().map(shares).unwrap_or_default();
        let mode = ForwardingMode::from_u8(svc.mode).map(|m| m.as_str()).unwrap_or("?");
        let label = service_label(&names, svc.svc_id);
        if share.is_empty() {
            rows.push(vec![frontend.clone(), label.clone(), mode.into(), "(none: dropped)".into(), "-".into()]);
        }
        // One pass: the JSON item and the table rows (frontend, service and mode on the first).
        let mut bl = Vec::new();
        for (i, (id, slots)) in share.iter().enumerate() {
            let addr = backends.get(id).cloned().unwrap_or_else(|| format!("#{id}"));
            let pct = *slots as f64 * 100.0 / MAGLEV_M as f64;
            let (f, s, m) = if i == 0 {
                (frontend.clone(), label.clone(), mode.to_string())
            } else {
                (String::new(), String::new(), String::new())
            };
            rows.push(vec![f, s, m, format!("{addr} ({id})"), format!("{slots} ({pct:.1}%)")]);
            bl.push(json!({"id": id, "address": addr, "slots": slots}));
        }
        items.push(
            json!({"frontend": frontend, "service": label, "serviceId": svc.svc_id, "mode": mode, "backends": bl}),
        );
    }
    if json_out {
        return Ok(serde_json::to_string_pretty(&Value::from(items))? + "\n");
    }
    Ok(table::render(&["FRONTEND", "SERVICE", "MODE", "BACKEND (ID)", "MAGLEV SLOTS"], &rows))
}

/// `halyard bpf maglev <service>`: the table of one service port, and optionally the backend a
/// given client flow maps to.
pub fn maglev(loc: &Locations, which: &str, flow: Option<&str>, json_out: bool) -> anyhow::Result<String> {
    let (maps, names) = open(loc)?;
    let maps6 = open6(loc);
    let mut svcs: Vec<halyard_datapath::maps::Lb4Service> = maps.services()?.into_values().collect();
    // Tables of IPv6 frontends (a dual-stack service port has one per family).
    let mut v6_ids = std::collections::BTreeSet::new();
    if let Some(m) = &maps6 {
        let s6 = m.services()?;
        v6_ids.extend(s6.values().map(|s| s.svc_id));
        svcs.extend(s6.into_values());
    }
    let ids: Vec<u32> = match which.parse::<u32>() {
        Ok(id) => vec![id],
        Err(_) => {
            let mut v: Vec<u32> = names
                .services
                .iter()
                .filter(|(_, u)| {
                    u.service == which || u.label() == which || format!("{}:{}", u.service, u.port) == which
                })
                .map(|(id, _)| *id)
                .collect();
            v.dedup();
            v
        }
    };
    anyhow::ensure!(
        !ids.is_empty(),
        "no load-balanced service {which:?}; `halyard bpf lb list` shows them (name as namespace/name[:port[/proto]], or the id)"
    );
    let backends = backend_names(&maps, maps6.as_ref())?;
    let mut out = String::new();
    let mut items = Vec::new();
    for id in ids {
        let Some(table) = maps.maglev(id)? else {
            out.push_str(&format!("{}: no Maglev table (no backends)\n", service_label(&names, id)));
            continue;
        };
        let share = shares(&table);
        let affinity_flags = svcs.iter().find(|s| s.svc_id == id).map(|s| s.flags & 1 != 0).unwrap_or(false);
        let mut chosen = None;
        let mut other_family = false;
        if let Some(f) = flow {
            // 192.0.2.7:40000, or [2001:db8::7]:40000 for an IPv6 service's table.
            let (src, sport) = f
                .parse::<std::net::SocketAddr>()
                .map(|a| (a.ip(), a.port()))
                .ok()
                .or_else(|| {
                    f.rsplit_once(':').and_then(|(a, p)| Some((a.parse::<IpAddr>().ok()?, p.parse::<u16>().ok()?)))
                })
                .with_context(|| format!("--flow {f:?}: expected CLIENT-IP:PORT ([CLIENT-IPv6]:PORT)"))?;
            let unit = names.services.get(&id);
            let (port, proto) = unit.map(|u| (u.port, u.proto)).unwrap_or((0, 6));
            // Each family has its hash and seed (Cilium's HASH_INIT4_SEED / HASH_INIT6_SEED).
            let h = match src {
                IpAddr::V4(src) => flow_hash(src, sport, port, proto, loc.seed.jhash0, affinity_flags),
                IpAddr::V6(src) => flow_hash6_with(src, sport, port, proto, loc.seed.jhash1, affinity_flags),
            };
            let slot = (h % MAGLEV_M as u32) as usize;
            // A flow of the other family never meets this table.
            if src.is_ipv6() == v6_ids.contains(&id) {
                chosen = Some((f.to_string(), slot, table[slot]));
            } else {
                other_family = true;
            }
        }
        let label = service_label(&names, id);
        let be = |bid: &u32| backends.get(bid).cloned().unwrap_or_else(|| format!("#{bid}"));
        if json_out {
            items.push(json!({
                "service": label, "serviceId": id, "tableSize": MAGLEV_M,
                "backends": share.iter().map(|(b, n)| json!({"id": b, "address": be(b), "slots": n})).collect::<Vec<_>>(),
                "flow": chosen.as_ref().map(|(f, s, b)| json!({"flow": f, "slot": s, "backendId": b, "backend": be(b)})),
                "firstSlots": &table[..32.min(table.len())],
            }));
            continue;
        }
        out.push_str(&format!("{label} (service id {id}), table size {MAGLEV_M}\n"));
        let rows: Vec<Vec<String>> = share
            .iter()
            .map(|(b, n)| {
                vec![format!("{b}"), be(b), n.to_string(), format!("{:.2}%", *n as f64 * 100.0 / MAGLEV_M as f64)]
            })
            .collect();
        out.push_str(&table::render(&["BACKEND ID", "ADDRESS", "SLOTS", "SHARE"], &rows));
        let first: Vec<String> = table.iter().take(24).map(u32::to_string).collect();
        out.push_str(&format!("slots 0..24: {}\n", first.join(" ")));
        if let Some((f, slot, b)) = chosen {
            out.push_str(&format!("flow {f} -> slot {slot} -> backend {} ({b})\n", be(&b)));
        }
        if other_family {
            let fam = if v6_ids.contains(&id) { "IPv6" } else { "IPv4" };
            out.push_str(&format!("flow {}: not an {fam} client, which this table is for\n", flow.unwrap_or("")));
        }
    }
    if json_out {
        return Ok(serde_json::to_string_pretty(&Value::from(items))? + "\n");
    }
    Ok(out)
}

pub fn ct_list(loc: &Locations, json_out: bool) -> anyhow::Result<String> {
    let (maps, names) = open(loc)?;
    let maps6 = open6(loc);
    let backends = backend_names(&maps, maps6.as_ref())?;
    let now = Some(halyard_datapath::lb::monotonic_ns());
    let mut v4 = maps.ct_entries()?;
    v4.sort_by_key(|(k, _)| *k);
    // (source, frontend, protocol, entry): IPv4 flows, then IPv6 ones.
    let mut entries: Vec<(String, String, u8, halyard_datapath::maps::Ct4Entry)> = v4
        .into_iter()
        .map(|(k, e)| {
            let src = format!("{}:{}", Ipv4Addr::from(k.saddr), u16::from_be_bytes(k.sport));
            let dst = format!("{}:{}", Ipv4Addr::from(k.daddr), u16::from_be_bytes(k.dport));
            (src, dst, k.proto, e)
        })
        .collect();
    if let Some(m) = &maps6 {
        let mut v6 = m.ct_entries()?;
        v6.sort_by_key(|(k, _)| *k);
        entries.extend(v6.into_iter().map(|(k, e)| {
            let src = format!("[{}]:{}", std::net::Ipv6Addr::from(k.saddr), u16::from_be_bytes(k.sport));
            let dst = format!("[{}]:{}", std::net::Ipv6Addr::from(k.daddr), u16::from_be_bytes(k.dport));
            (src, dst, k.proto, e)
        }));
    }
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for (src, dst, proto, e) in entries {
        let be = backends.get(&e.backend_id).cloned().unwrap_or_else(|| format!("#{} (deleted)", e.backend_id));
        let draining = names.draining.contains(&e.backend_id);
        let age = now.map(|n| n.saturating_sub(e.created_ns) / 1_000_000_000);
        let idle = now.map(|n| n.saturating_sub(e.last_seen_ns) / 1_000_000_000);
        let closing = e.flags & halyard_datapath::maps::CT_F_CLOSING != 0;
        items.push(json!({"source": src, "frontend": dst, "protocol": proto_name(proto), "backend": be,
                          "backendId": e.backend_id, "service": service_label(&names, e.svc_id), "draining": draining,
                          "ageSeconds": age, "idleSeconds": idle, "closing": closing}));
        rows.push(vec![
            src,
            dst,
            proto_name(proto).into(),
            if draining { format!("{be} (draining)") } else { be },
            service_label(&names, e.svc_id),
            age.map(|a| format!("{a}s")).unwrap_or("-".into()),
            format!(
                "{}{}",
                idle.map(|a| format!("{a}s")).unwrap_or("-".into()),
                if closing { " (closing)" } else { "" }
            ),
        ]);
    }
    if json_out {
        return Ok(serde_json::to_string_pretty(&Value::from(items))? + "\n");
    }
    Ok(table::render(&["SOURCE", "FRONTEND", "PROTO", "BACKEND", "SERVICE", "AGE", "IDLE"], &rows))
}

pub fn counters(loc: &Locations, json_out: bool) -> anyhow::Result<String> {
    let (maps, _) = open(loc)?;
    let c = maps.counters()?;
    if json_out {
        let v: Vec<Value> = c
            .iter()
            .map(|(k, p, b)| {
                let (a, r) = k.labels();
                json!({"action": a, "reason": r, "packets": p, "bytes": b})
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&Value::from(v))? + "\n");
    }
    let rows: Vec<Vec<String>> = c
        .iter()
        .map(|(k, p, b)| {
            let (a, r) = k.labels();
            vec![a.into(), r.into(), p.to_string(), b.to_string()]
        })
        .collect();
    Ok(table::render(&["ACTION", "REASON", "PACKETS", "BYTES"], &rows))
}

pub fn default_locations(pin_dir: Option<&Path>) -> Locations {
    Locations {
        pin_dir: pin_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(halyard_datapath::loader::DEFAULT_PIN_DIR)),
        names_file: PathBuf::from("/var/lib/halyard/datapath.json"),
        seed: MaglevSeed::default(),
    }
}
