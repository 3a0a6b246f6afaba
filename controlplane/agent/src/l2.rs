//! L2 announcements in the agent: which IPv4 LoadBalancer/External IPs this node answers ARP
//! for, on which interfaces, from `CiliumL2AnnouncementPolicy` (Cilium
//! `Documentation/network/l2-announcements.rst`) and MetalLB `L2Advertisement`; and the task
//! that keeps one ARP responder per interface in step.
//!
//! IPv4 addresses are answered with ARP, IPv6 with NDP. Election today is the single-node
//! backend: this node owns every selected IP. The multi-node backends (LAN heartbeats with etcd
//! fencing) come with the rest of issue 6.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use halyard_l2::responder::{Responder, candidate_interfaces};
use tokio::sync::watch;

use crate::reconcile::Snapshot;
use crate::translate;

/// Interface → the IPv4 addresses answered on it.
pub type Desired = BTreeMap<String, BTreeSet<IpAddr>>;

/// One announced IP on one interface: (ip, interface, service, policy).
pub type Row = (IpAddr, String, String, String);

/// What `halyard l2 announcements` shows: the rows, plus replies and MAC per interface.
#[derive(Debug, Default)]
pub struct L2Status {
    pub rows: Vec<Row>,
    pub replies: BTreeMap<String, u64>,
    pub announcements: BTreeMap<String, u64>,
    pub macs: BTreeMap<String, String>,
}

pub type SharedL2Status = Arc<Mutex<L2Status>>;

/// Computes the announcements. Bad interface regexes are reported, and that policy is skipped.
pub fn desired(snap: &Snapshot, node: &str, interfaces: &[String]) -> (Desired, Vec<Row>, Vec<String>) {
    let model = &snap.model;
    let node_labels = model.nodes.get(node).map(|n| n.metadata.labels.clone()).unwrap_or_default();
    let mut out = Desired::new();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut add = |ip: IpAddr, ifaces: &[String], svc: &str, policy: &str| {
        for i in ifaces {
            if out.entry(i.clone()).or_default().insert(ip) {
                rows.push((ip, i.clone(), svc.to_string(), policy.to_string()));
            }
        }
    };
    for (name, pol) in &model.l2_policies {
        let spec = &pol.spec;
        if !spec.node_selector.as_ref().is_none_or(|s| s.matches(&node_labels)) {
            continue;
        }
        let regexes: Result<Vec<regex::Regex>, _> = spec.interfaces.iter().map(|r| regex::Regex::new(r)).collect();
        let regexes = match regexes {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("CiliumL2AnnouncementPolicy {name}: bad interface regex: {e}"));
                continue;
            }
        };
        let ifaces: Vec<String> = interfaces
            .iter()
            .filter(|i| regexes.is_empty() || regexes.iter().any(|r| r.is_match(i)))
            .cloned()
            .collect();
        for svc in model.services.values() {
            if !spec.service_selector.as_ref().is_none_or(|s| s.matches(&translate::selector_labels(svc))) {
                continue;
            }
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let key = halyard_ipam::ServiceKey::new(ns, svc.metadata.name.clone());
            let svc_name = key.to_string();
            if spec.load_balancer_ips
                && let Some(st) = snap.lb.services.get(&key)
            {
                for a in &st.ips {
                    add(a.ip, &ifaces, &svc_name, &format!("CiliumL2AnnouncementPolicy/{name}"));
                }
            }
            if spec.external_ips {
                for ip in &svc.spec.external_ips {
                    add(*ip, &ifaces, &svc_name, &format!("CiliumL2AnnouncementPolicy/{name}"));
                }
            }
        }
    }
    let no_labels = BTreeMap::new();
    for (key, adv) in &model.l2_advertisements {
        let spec = &adv.spec;
        if !translate::any_selector(&spec.node_selectors, &node_labels) {
            continue;
        }
        let ifaces: Vec<String> =
            interfaces.iter().filter(|i| spec.interfaces.is_empty() || spec.interfaces.contains(i)).cloned().collect();
        let pools = translate::metallb_pools(model, &spec.ip_address_pools, &spec.ip_address_pool_selectors);
        for (skey, st) in &snap.lb.services {
            let labels = model.services.get(skey).map_or(&no_labels, |s| &s.metadata.labels);
            if !translate::any_selector(&spec.service_selectors, labels) {
                continue;
            }
            for a in st.ips.iter().filter(|a| pools.contains(a.pool.as_str())) {
                add(a.ip, &ifaces, &skey.to_string(), &format!("L2Advertisement/{}", key.name));
            }
        }
    }
    rows.sort();
    (out, rows, problems)
}

/// Keeps one responder per interface that has something to announce.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    node: String,
    status: SharedL2Status,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut responders: BTreeMap<String, Responder> = BTreeMap::new();
    let mut last_problems = Vec::new();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        let (want, rows, problems) = desired(&snap, &node, &candidate_interfaces());
        if problems != last_problems {
            for p in &problems {
                tracing::warn!("L2: {p}");
            }
            last_problems = problems;
        }
        responders.retain(|iface, _| {
            let keep = want.contains_key(iface);
            if !keep {
                tracing::info!(%iface, "L2: nothing to announce on this interface any more: responder stopped");
            }
            keep
        });
        for (iface, ips) in want {
            if !responders.contains_key(&iface) {
                match Responder::start(&iface) {
                    Ok(r) => {
                        tracing::info!(%iface, mac = %r.mac(), "L2: ARP responder started");
                        responders.insert(iface.clone(), r);
                    }
                    Err(e) => {
                        tracing::error!(%iface, "L2: {e}");
                        continue;
                    }
                }
            }
            if let Some(r) = responders.get(&iface) {
                r.set_owned(ips);
            }
        }
        {
            let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
            st.rows = rows;
            st.macs = responders.iter().map(|(i, r)| (i.clone(), r.mac().to_string())).collect();
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
            // Refresh the reply counters now and then even when nothing changes.
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        st.replies = responders.iter().map(|(i, r)| (i.clone(), r.replies_sent())).collect();
        st.announcements = responders.iter().map(|(i, r)| (i.clone(), r.announcements_sent())).collect();
    }
}
