//! Pod CIDR allocation: per-node CIDRs carved from cluster pools (Cilium's "cluster-pool" mode,
//! options `cluster-pool-ipv4-cidr` / `cluster-pool-ipv4-mask-size`), and host-scope pod IPs
//! handed out from a node's CIDR.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::range::{Family, IntervalSet, ip_to_u128};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodCidrError {
    #[error("cluster pool {cidr}: mask size /{mask} must be between /{min} and /{max}")]
    BadMask { cidr: IpNet, mask: u8, min: u8, max: u8 },
    #[error("cluster pool {cidr}: too many node CIDRs (/{mask} from /{min}); use a mask at most 32 bits longer")]
    TooManyBlocks { cidr: IpNet, mask: u8, min: u8 },
}

/// Cluster-wide pools that node CIDRs are carved from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterPoolConfig {
    pub ipv4: Vec<IpNet>,
    /// Prefix length of each node's IPv4 CIDR (Cilium's default is 24).
    pub ipv4_mask: u8,
    pub ipv6: Vec<IpNet>,
    /// Prefix length of each node's IPv6 CIDR (Cilium's default is 112).
    pub ipv6_mask: u8,
}

impl Default for ClusterPoolConfig {
    fn default() -> Self {
        Self { ipv4: Vec::new(), ipv4_mask: 24, ipv6: Vec::new(), ipv6_mask: 112 }
    }
}

/// A node asking for CIDRs; `requested` are CIDRs it already has (`spec.podCIDRs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRequest {
    pub name: String,
    pub requested: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeCidrStatus {
    pub cidrs: Vec<IpNet>,
    /// Why a family could not be served (exhausted pool, conflicting request).
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CidrPoolStatus {
    pub cidr: IpNet,
    pub mask: u8,
    pub total: u128,
    pub used: u128,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodCidrOutcome {
    /// Node name → its CIDRs: the allocator's persistent state.
    pub assignments: BTreeMap<String, Vec<IpNet>>,
    pub nodes: BTreeMap<String, NodeCidrStatus>,
    pub pools: Vec<CidrPoolStatus>,
}

struct Carver {
    cidr: IpNet,
    mask: u8,
    /// Indices of free node blocks.
    free: IntervalSet,
    total: u128,
}

impl Carver {
    fn new(cidr: IpNet, mask: u8) -> Result<Self, PodCidrError> {
        let max = cidr.max_prefix_len();
        if mask < cidr.prefix_len() || mask > max {
            return Err(PodCidrError::BadMask { cidr, mask, min: cidr.prefix_len(), max });
        }
        let bits = mask - cidr.prefix_len();
        if bits > 32 {
            return Err(PodCidrError::TooManyBlocks { cidr, mask, min: cidr.prefix_len() });
        }
        let total = 1u128 << bits;
        let mut free = IntervalSet::new();
        free.insert_range(0, total - 1);
        Ok(Self { cidr: cidr.trunc(), mask, free, total })
    }

    fn shift(&self) -> u32 {
        (self.cidr.max_prefix_len() - self.mask) as u32
    }

    /// The block index of `net`, if `net` is exactly one of this carver's blocks.
    fn index_of(&self, net: &IpNet) -> Option<u128> {
        if net.prefix_len() != self.mask || !self.cidr.contains(net) {
            return None;
        }
        Some((ip_to_u128(net.network()) - ip_to_u128(self.cidr.network())) >> self.shift())
    }

    fn block(&self, i: u128) -> IpNet {
        let base = ip_to_u128(self.cidr.network()) + (i << self.shift());
        // The prefix length is valid: it was checked against the family in `new`.
        IpNet::new(Family::of(self.cidr.addr()).addr(base), self.mask).expect("mask checked in Carver::new")
    }

    /// Whether `net` overlaps this carver's range at all.
    fn overlaps(&self, net: &IpNet) -> bool {
        self.cidr.contains(net) || net.contains(&self.cidr)
    }
}

/// Assigns node CIDRs. Keeps every previous assignment still inside a pool (and every CIDR a
/// node brings itself), then gives each node without one the lowest free block, nodes in name
/// order. Pure and deterministic, like [`crate::lbipam::reconcile`].
pub fn reconcile_node_cidrs(
    config: &ClusterPoolConfig,
    nodes: &[NodeRequest],
    previous: &BTreeMap<String, Vec<IpNet>>,
) -> Result<PodCidrOutcome, PodCidrError> {
    let mut carvers = Vec::new();
    for c in &config.ipv4 {
        carvers.push(Carver::new(*c, config.ipv4_mask)?);
    }
    for c in &config.ipv6 {
        carvers.push(Carver::new(*c, config.ipv6_mask)?);
    }
    let mut sorted: Vec<&NodeRequest> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|a, b| a.name == b.name);

    let mut out = PodCidrOutcome::default();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    // Pass 1: CIDRs the nodes bring (spec.podCIDRs), then previous assignments.
    for pass in 0..2 {
        for node in &sorted {
            let candidates: Vec<IpNet> =
                if pass == 0 { node.requested.clone() } else { previous.get(&node.name).cloned().unwrap_or_default() };
            for net in candidates {
                let have = out.assignments.entry(node.name.clone()).or_default();
                if have.contains(&net) || have.iter().any(|h| Family::of(h.addr()) == Family::of(net.addr())) {
                    continue;
                }
                let mut ok = true;
                for c in carvers.iter_mut() {
                    if let Some(i) = c.index_of(&net) {
                        ok = c.free.remove(i);
                    } else if c.overlaps(&net) {
                        ok = false; // misaligned or wrong size against the pool: never take it
                    }
                    if !ok {
                        break;
                    }
                }
                if ok {
                    have.push(net);
                } else if pass == 0 {
                    errors.entry(node.name.clone()).or_insert_with(|| {
                        format!("requested pod CIDR {net} conflicts with the cluster pool or another node")
                    });
                }
            }
        }
    }
    // Pass 2: one block per configured family for nodes that lack it.
    for node in &sorted {
        let have = out.assignments.entry(node.name.clone()).or_default();
        for fam in [Family::V4, Family::V6] {
            let fam_carvers: Vec<usize> =
                (0..carvers.len()).filter(|&i| Family::of(carvers[i].cidr.addr()) == fam).collect();
            if fam_carvers.is_empty() || have.iter().any(|h| Family::of(h.addr()) == fam) {
                continue;
            }
            match fam_carvers.iter().find_map(|&i| carvers[i].free.pop_first().map(|b| carvers[i].block(b))) {
                Some(net) => have.push(net),
                None => {
                    errors.entry(node.name.clone()).or_insert_with(|| format!("the {fam} cluster pool is exhausted"));
                }
            }
        }
        have.sort();
    }
    out.assignments.retain(|_, v| !v.is_empty());
    for node in &sorted {
        let cidrs = out.assignments.get(&node.name).cloned().unwrap_or_default();
        out.nodes.insert(node.name.clone(), NodeCidrStatus { cidrs, error: errors.remove(&node.name) });
    }
    out.pools = carvers
        .iter()
        .map(|c| CidrPoolStatus { cidr: c.cidr, mask: c.mask, total: c.total, used: c.total - c.free.len() })
        .collect();
    Ok(out)
}

/// Host-scope pod IPs from one node CIDR. The network address (and, for IPv4, the broadcast
/// address) are never handed out, and the first host address is kept for the node's own router
/// interface, as Cilium does for `cilium_host`.
#[derive(Debug)]
pub struct HostScopeAllocator {
    cidr: IpNet,
    router: Option<IpAddr>,
    free: IntervalSet,
    owners: HashMap<IpAddr, String>,
}

impl HostScopeAllocator {
    pub fn new(cidr: IpNet) -> Self {
        let cidr = cidr.trunc();
        let (s, e) = (ip_to_u128(cidr.network()), ip_to_u128(cidr.broadcast()));
        let mut free = IntervalSet::new();
        free.insert_range(s, e);
        let mut router = None;
        if cidr.prefix_len() + 1 < cidr.max_prefix_len() {
            free.remove(s);
            if matches!(cidr, IpNet::V4(_)) {
                free.remove(e);
            }
            router = free.pop_first().map(|v| Family::of(cidr.addr()).addr(v));
        }
        Self { cidr, router, free, owners: HashMap::new() }
    }

    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The address reserved for the node's router interface.
    pub fn router_ip(&self) -> Option<IpAddr> {
        self.router
    }

    pub fn available(&self) -> u128 {
        self.free.len()
    }

    pub fn owner(&self, ip: IpAddr) -> Option<&str> {
        self.owners.get(&ip).map(String::as_str)
    }

    /// The lowest free address, recorded as `owner`'s.
    pub fn allocate(&mut self, owner: &str) -> Option<IpAddr> {
        let ip = Family::of(self.cidr.addr()).addr(self.free.pop_first()?);
        self.owners.insert(ip, owner.to_string());
        Some(ip)
    }

    /// A specific address (e.g. restoring a pod's IP after a restart).
    pub fn allocate_ip(&mut self, ip: IpAddr, owner: &str) -> Result<(), String> {
        if !self.cidr.contains(&ip) {
            return Err(format!("{ip} is outside {}", self.cidr));
        }
        if let Some(o) = self.owners.get(&ip) {
            return Err(format!("{ip} is already used by {o}"));
        }
        if !self.free.remove(ip_to_u128(ip)) {
            return Err(format!("{ip} is reserved"));
        }
        self.owners.insert(ip, owner.to_string());
        Ok(())
    }

    /// Returns `ip` to the free set; false if it was not allocated.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        if self.owners.remove(&ip).is_none() {
            return false;
        }
        self.free.insert(ip_to_u128(ip));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn cfg() -> ClusterPoolConfig {
        ClusterPoolConfig {
            ipv4: vec![net("10.0.0.0/22")],
            ipv4_mask: 24,
            ipv6: vec![net("fd00::/120")],
            ipv6_mask: 122,
        }
    }

    fn nodes(names: &[&str]) -> Vec<NodeRequest> {
        names.iter().map(|n| NodeRequest { name: n.to_string(), requested: vec![] }).collect()
    }

    #[test]
    fn carves_dual_stack_blocks_in_name_order() {
        let out = reconcile_node_cidrs(&cfg(), &nodes(&["b", "a"]), &BTreeMap::new()).unwrap();
        assert_eq!(out.assignments["a"], vec![net("10.0.0.0/24"), net("fd00::/122")]);
        assert_eq!(out.assignments["b"], vec![net("10.0.1.0/24"), net("fd00::40/122")]);
        assert_eq!(out.pools[0].used, 2);
        assert_eq!(out.pools[0].total, 4);
    }

    #[test]
    fn previous_assignments_are_stable_and_exhaustion_is_reported() {
        let mut prev = BTreeMap::new();
        prev.insert("z".to_string(), vec![net("10.0.3.0/24")]);
        let out = reconcile_node_cidrs(&cfg(), &nodes(&["a", "b", "c", "d", "z"]), &prev).unwrap();
        assert_eq!(out.assignments["z"][0], net("10.0.3.0/24"));
        assert_eq!(out.assignments["c"][0], net("10.0.2.0/24"));
        assert_eq!(out.nodes["d"].error.as_deref(), Some("the IPv4 cluster pool is exhausted"));
        // Removing node a frees its block for d; nobody else moves.
        let out2 = reconcile_node_cidrs(&cfg(), &nodes(&["b", "c", "d", "z"]), &out.assignments).unwrap();
        for n in ["b", "c", "z"] {
            assert_eq!(out2.assignments[n][0], out.assignments[n][0]);
        }
        // z had no IPv6 block (that pool has four blocks for five nodes); now it gets a's.
        assert_eq!(out.nodes["z"].error.as_deref(), Some("the IPv6 cluster pool is exhausted"));
        assert_eq!(out2.assignments["z"][1], net("fd00::/122"));
        assert_eq!(out2.assignments["d"][0], net("10.0.0.0/24"));
        assert!(out2.nodes["d"].error.is_none());
    }

    #[test]
    fn requested_cidrs_are_honoured_or_rejected() {
        let mut req = nodes(&["a", "b"]);
        req[0].requested = vec![net("10.0.2.0/24")];
        req[1].requested = vec![net("10.0.2.0/25")];
        let out = reconcile_node_cidrs(&cfg(), &req, &BTreeMap::new()).unwrap();
        assert_eq!(out.assignments["a"][0], net("10.0.2.0/24"));
        assert!(out.nodes["b"].error.as_deref().unwrap().contains("10.0.2.0/25"));
        assert_eq!(out.assignments["b"][0], net("10.0.0.0/24"));
    }

    #[test]
    fn bad_mask_is_an_error() {
        let c = ClusterPoolConfig { ipv4: vec![net("10.0.0.0/24")], ipv4_mask: 16, ..Default::default() };
        assert!(matches!(reconcile_node_cidrs(&c, &[], &BTreeMap::new()), Err(PodCidrError::BadMask { .. })));
    }

    #[test]
    fn host_scope_reserves_network_broadcast_and_router() {
        let mut h = HostScopeAllocator::new(net("10.0.1.0/29"));
        assert_eq!(h.router_ip(), Some("10.0.1.1".parse().unwrap()));
        assert_eq!(h.available(), 5);
        let a = h.allocate("pod-a").unwrap();
        assert_eq!(a.to_string(), "10.0.1.2");
        assert!(h.allocate_ip("10.0.1.2".parse().unwrap(), "pod-b").unwrap_err().contains("pod-a"));
        assert!(h.allocate_ip("10.0.1.7".parse().unwrap(), "pod-b").unwrap_err().contains("reserved"));
        h.allocate_ip("10.0.1.6".parse().unwrap(), "pod-b").unwrap();
        let rest: Vec<_> = std::iter::from_fn(|| h.allocate("x")).collect();
        assert_eq!(rest.len(), 3);
        assert!(h.release(a));
        assert!(!h.release(a));
        assert_eq!(h.allocate("pod-c"), Some(a));
        let h6 = HostScopeAllocator::new(net("fd00::/126"));
        assert_eq!(h6.router_ip(), Some("fd00::1".parse().unwrap()));
        assert_eq!(h6.available(), 2);
    }
}
