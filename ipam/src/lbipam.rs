//! LB-IPAM: assigns LoadBalancer IPs to services from pools.
//!
//! [`reconcile`] is a pure function of (config, pools, services, previous assignments). It keeps
//! every previous assignment that is still valid — so restarting, or editing an unrelated pool,
//! never moves an IP — and then allocates for the services that still need addresses, in a
//! deterministic order. Feeding its output back in as `previous` yields the same output (it is a
//! fixpoint), which is what makes restarts free of churn.
//!
//! Semantics follow Cilium LB-IPAM (`Documentation/network/lb-ipam.rst`) and MetalLB
//! (`website/content/configuration/_advanced_ipaddresspool_configuration.md`,
//! `website/content/usage/_index.md`) where the two agree; where they differ:
//! * Overlapping pools are a soft conflict (Cilium), not a rejected config (MetalLB). The pool that
//!   loses is the one *without* existing assignments, then the newer one, then the later name — so
//!   adding an overlapping pool never takes IPs away from services that have them. A conflicting
//!   pool keeps its existing assignments and makes no new ones, like a disabled pool.
//! * Sharing is protocol-aware (MetalLB's `Proto/Port` rule; Cilium ≥ 1.17): TCP/53 and UDP/53
//!   can share one IP, two TCP/80 cannot.
//! * Pool priority (MetalLB `serviceAllocation.priority`: lower number first, 0/unset last) is
//!   honoured for both kinds; ties are broken by pool name, never at random.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::range::{Family, IntervalSet, ip_to_u128};
use crate::selector::LabelSelector;

/// The service pseudo-labels Cilium's `serviceSelector` understands.
pub const LABEL_SERVICE_NAMESPACE: &str = "io.kubernetes.service.namespace";
pub const LABEL_SERVICE_NAME: &str = "io.kubernetes.service.name";

// ===== inputs =====

/// `namespace/name` of a service. Serialised as that string (usable as a JSON map key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for ServiceKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ServiceKey::new(ns, name))
            }
            _ => Err(format!("invalid service key {s:?}: want namespace/name")),
        }
    }
}

impl serde::Serialize for ServiceKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ServiceKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One block of a pool: a CIDR or an inclusive start–stop range.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Block {
    Cidr(IpNet),
    Range { start: IpAddr, stop: IpAddr },
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Block::Cidr(n) => write!(f, "{n}"),
            Block::Range { start, stop } => write!(f, "{start}-{stop}"),
        }
    }
}

/// A pool as LB-IPAM sees it, whichever CRD it came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolSpec {
    /// Unique among pools (the agent qualifies MetalLB's namespaced names).
    pub name: String,
    /// RFC 3339 creation time, if known; the older of two overlapping pools wins.
    pub created: Option<String>,
    pub blocks: Vec<Block>,
    /// Cilium `serviceSelector` / MetalLB `serviceSelectors` (any of them); `None` selects all.
    pub service_selectors: Option<Vec<LabelSelector>>,
    /// MetalLB `serviceAllocation.namespaces` and `.namespaceSelectors`: when either is non-empty
    /// the service's namespace must be listed or match one of the selectors.
    pub namespaces: Vec<String>,
    pub namespace_selectors: Vec<LabelSelector>,
    /// Cilium `allowFirstLastIPs` (default Yes since 1.16). Applies to CIDR blocks wider than
    /// /31 (IPv4) or /127 (IPv6).
    pub allow_first_last: bool,
    /// MetalLB `avoidBuggyIPs`: skip IPv4 addresses ending in .0 or .255.
    pub avoid_buggy_ips: bool,
    /// Cilium `disabled`: no new allocations; existing ones stay.
    pub disabled: bool,
    /// MetalLB `autoAssign`: when false the pool serves only requested IPs or pinned services.
    pub auto_assign: bool,
    /// MetalLB `serviceAllocation.priority`: lower first; `None` or 0 sorts last.
    pub priority: Option<u32>,
}

impl PoolSpec {
    /// A pool with the given blocks and default settings (Cilium defaults).
    pub fn new(name: impl Into<String>, blocks: Vec<Block>) -> Self {
        Self {
            name: name.into(),
            created: None,
            blocks,
            service_selectors: None,
            namespaces: Vec::new(),
            namespace_selectors: Vec::new(),
            allow_first_last: true,
            avoid_buggy_ips: false,
            disabled: false,
            auto_assign: true,
            priority: None,
        }
    }
}

/// Which annotation family a sharing key came from; keys of different schemes never mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum SharingScheme {
    /// `lbipam.cilium.io/sharing-key` (+ `sharing-cross-namespace`).
    Cilium,
    /// `metallb.io/allow-shared-ip`.
    MetalLb,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sharing {
    pub scheme: SharingScheme,
    pub key: String,
    /// Cilium `sharing-cross-namespace`: namespaces (or `*`) this service may share with.
    pub cross_namespace: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// A LoadBalancer service as LB-IPAM sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSpec {
    pub key: ServiceKey,
    pub created: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Labels of the service's Namespace object, for MetalLB `namespaceSelectors`.
    pub namespace_labels: BTreeMap<String, String>,
    pub load_balancer_class: Option<String>,
    /// Requested IPs (annotations or `spec.loadBalancerIP`). When non-empty, exactly these.
    pub requested: Vec<IpAddr>,
    pub sharing: Option<Sharing>,
    pub ports: Vec<(Protocol, u16)>,
    pub family_policy: FamilyPolicy,
    /// `spec.ipFamilies`; the first entry is the SingleStack family (IPv4 when empty).
    pub ip_families: Vec<Family>,
    /// `externalTrafficPolicy: Local`.
    pub traffic_local: bool,
    /// The pod selector (`spec.selector`), compared when Local services share an IP.
    pub pod_selector: BTreeMap<String, String>,
    /// MetalLB `metallb.io/address-pool`: only this pool.
    pub pool_pin: Option<String>,
    /// Set when the service's annotations could not be understood: nothing new is allocated,
    /// nothing it holds is released, and the reason is reported.
    pub invalid: Option<String>,
}

impl ServiceSpec {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            key: ServiceKey::new(namespace, name),
            created: None,
            labels: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            load_balancer_class: None,
            requested: Vec::new(),
            sharing: None,
            ports: Vec::new(),
            family_policy: FamilyPolicy::SingleStack,
            ip_families: Vec::new(),
            traffic_local: false,
            pod_selector: BTreeMap::new(),
            pool_pin: None,
            invalid: None,
        }
    }

    /// The families this service wants, in preference order.
    pub fn wanted_families(&self) -> Vec<Family> {
        let first = self.ip_families.first().copied().unwrap_or(Family::V4);
        match self.family_policy {
            FamilyPolicy::SingleStack => vec![first],
            _ => {
                let other = if first == Family::V4 { Family::V6 } else { Family::V4 };
                vec![first, other]
            }
        }
    }
}

/// Which services this allocator serves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LbIpamConfig {
    /// Serve services without `spec.loadBalancerClass`.
    pub serve_unclassed: bool,
    /// `spec.loadBalancerClass` values served; services with any other class are left alone.
    pub classes: BTreeSet<String>,
}

impl Default for LbIpamConfig {
    fn default() -> Self {
        Self {
            serve_unclassed: true,
            classes: ["io.cilium/bgp-control-plane", "io.cilium/l2-announcer", "halyard.io/bgp", "halyard.io/l2"]
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }
}

impl LbIpamConfig {
    pub fn serves(&self, class: Option<&str>) -> bool {
        match class {
            None => self.serve_unclassed,
            Some(c) => self.classes.contains(c),
        }
    }
}

// ===== outputs =====

/// One IP held by a service, and the pool it came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    pub ip: IpAddr,
    pub pool: String,
}

/// What every service holds; the allocator's persistent state.
pub type Assignments = BTreeMap<ServiceKey, Vec<Assignment>>;

/// Why a service has (or lacks) its addresses. Names follow Cilium's
/// `cilium.io/IPAMRequestSatisfied` reasons where one exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Satisfied,
    NoPool,
    PoolSelectorMismatch,
    OutOfIps,
    AlreadyAllocated,
    InvalidRequest,
    /// The service's `loadBalancerClass` is not one this allocator serves.
    Ignored,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Satisfied => "satisfied",
            Reason::NoPool => "no_pool",
            Reason::PoolSelectorMismatch => "pool_selector_mismatch",
            Reason::OutOfIps => "out_of_ips",
            Reason::AlreadyAllocated => "already_allocated",
            Reason::InvalidRequest => "invalid_request",
            Reason::Ignored => "ignored",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceStatus {
    pub ips: Vec<Assignment>,
    pub satisfied: bool,
    pub reason: Reason,
    pub message: String,
    /// Other services holding one of this service's IPs through a sharing key.
    pub shared_with: Vec<ServiceKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolStatus {
    pub total: u128,
    pub used: u128,
    pub available: u128,
    pub disabled: bool,
    /// Set when the pool overlaps another pool (or itself): Cilium's `cilium.io/PoolConflict`.
    pub conflict: Option<String>,
}

/// An IP taken away from a service, and why (for logs and events).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Release {
    pub service: ServiceKey,
    pub ip: IpAddr,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub assignments: Assignments,
    pub services: BTreeMap<ServiceKey, ServiceStatus>,
    pub pools: BTreeMap<String, PoolStatus>,
    pub released: Vec<Release>,
}

// ===== the allocator =====

struct Pool<'a> {
    spec: &'a PoolSpec,
    /// Allocatable addresses not held by anyone, per family.
    free: [IntervalSet; 2],
    total: u128,
    conflict: Option<String>,
}

impl Pool<'_> {
    fn usable(&self) -> bool {
        !self.spec.disabled && self.conflict.is_none()
    }

    fn has_family(&self, f: Family) -> bool {
        self.spec.blocks.iter().any(|b| block_family(b) == f)
    }

    fn selects(&self, svc: &Svc<'_>) -> bool {
        let spec = self.spec;
        if svc.spec.pool_pin.as_ref().is_some_and(|p| *p != spec.name) {
            return false;
        }
        let by_labels =
            spec.service_selectors.as_ref().is_none_or(|sels| sels.iter().any(|s| s.matches_with(|k| svc.label(k))));
        let by_namespace = (spec.namespaces.is_empty() && spec.namespace_selectors.is_empty())
            || spec.namespaces.contains(&svc.spec.key.namespace)
            || spec.namespace_selectors.iter().any(|s| s.matches(&svc.spec.namespace_labels));
        by_labels && by_namespace
    }
}

struct Svc<'a> {
    spec: &'a ServiceSpec,
}

impl<'a> Svc<'a> {
    /// The service's labels plus Cilium's name/namespace pseudo-labels.
    fn label(&self, key: &str) -> Option<&'a str> {
        match key {
            LABEL_SERVICE_NAMESPACE => Some(&self.spec.key.namespace),
            LABEL_SERVICE_NAME => Some(&self.spec.key.name),
            _ => self.spec.labels.get(key).map(String::as_str),
        }
    }
}

/// Who holds an IP: the pool it came from and the services (indices into `State::svcs`).
struct Holder {
    pool: usize,
    services: Vec<usize>,
    /// Every pool whose free set the IP was taken out of (more than one when pools overlap).
    taken_from: Vec<usize>,
}

/// Working state of one reconcile. Services are referred to by index (sorted by key) so that
/// the hot paths compare integers, not strings.
struct State<'a> {
    pools: Vec<Pool<'a>>,
    svcs: Vec<Svc<'a>>,
    holders: HashMap<IpAddr, Holder>,
    /// IPs held under each sharing key, for finding one to share.
    shared: HashMap<(SharingScheme, &'a str), BTreeSet<IpAddr>>,
    /// IPs each service holds, by service index.
    held: Vec<Vec<IpAddr>>,
    released: Vec<Release>,
}

fn block_family(b: &Block) -> Family {
    match b {
        Block::Cidr(n) => Family::of(n.addr()),
        Block::Range { start, .. } => Family::of(*start),
    }
}

/// The inclusive `u128` span a block covers.
fn block_span(b: &Block) -> (u128, u128) {
    match b {
        Block::Cidr(n) => (ip_to_u128(n.network()), ip_to_u128(n.broadcast())),
        Block::Range { start, stop } => {
            let (a, z) = (ip_to_u128(*start), ip_to_u128(*stop));
            (a.min(z), a.max(z))
        }
    }
}

/// Builds a pool's allocatable sets: its blocks less first/last and "buggy" addresses.
fn allocatable(spec: &PoolSpec) -> [IntervalSet; 2] {
    let mut sets = [IntervalSet::new(), IntervalSet::new()];
    for b in &spec.blocks {
        let fam = block_family(b);
        let (s, e) = block_span(b);
        if let Block::Range { start, stop } = b
            && Family::of(*start) != Family::of(*stop)
        {
            continue; // mixed-family range: rejected as a conflict in `check_pools`
        }
        let set = &mut sets[fam.index()];
        set.insert_range(s, e);
        if let Block::Cidr(n) = b {
            let max = match fam {
                Family::V4 => 32,
                Family::V6 => 128,
            };
            // RFC 3021 / RFC 6164: /31 and /127 (and host routes) have no network/broadcast.
            if !spec.allow_first_last && n.prefix_len() + 1 < max {
                set.remove(s);
                set.remove(e);
            }
        }
        if spec.avoid_buggy_ips && fam == Family::V4 {
            // Every address ending in .0 or .255 inside [s, e].
            let mut base = s & !0xff;
            while base <= e {
                for v in [base, base | 0xff] {
                    if v >= s && v <= e {
                        set.remove(v);
                    }
                }
                base += 0x100;
            }
        }
    }
    sets
}

/// Orders pools (holders of previous assignments first, then older, then by name) and marks
/// the ones that overlap an earlier pool, or themselves, as conflicting.
fn check_pools<'a>(pools: &'a [PoolSpec], previous: &Assignments) -> Vec<Pool<'a>> {
    let holding: BTreeSet<&str> = previous.values().flatten().map(|a| a.pool.as_str()).collect();
    let mut order: Vec<&PoolSpec> = pools.iter().collect();
    order.sort_by(|a, b| {
        let key = |p: &PoolSpec| (!holding.contains(p.name.as_str()), p.created.is_none(), p.created.clone());
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    // Accepted spans per family: start -> (end, pool name, block).
    let mut accepted: [BTreeMap<u128, (u128, &str, String)>; 2] = [BTreeMap::new(), BTreeMap::new()];
    let mut names = BTreeSet::new();
    // (spec, its spans, conflict found without looking at other pools, overlaps another pool)
    let mut checked = Vec::with_capacity(order.len());
    for spec in order {
        let mut conflict = None;
        if !names.insert(spec.name.as_str()) {
            conflict = Some(format!("duplicate pool name {:?}", spec.name));
        }
        let mut own: Vec<(Family, u128, u128, String)> = Vec::new();
        for b in &spec.blocks {
            if let Block::Range { start, stop } = b
                && Family::of(*start) != Family::of(*stop)
            {
                conflict.get_or_insert_with(|| format!("block {b} mixes IPv4 and IPv6"));
                continue;
            }
            let (s, e) = block_span(b);
            own.push((block_family(b), s, e, b.to_string()));
        }
        own.sort();
        for w in own.windows(2) {
            if w[0].0 == w[1].0 && w[1].1 <= w[0].2 {
                conflict.get_or_insert_with(|| format!("block {} overlaps block {} of the same pool", w[1].3, w[0].3));
            }
        }
        let overlaps = own.iter().any(|(fam, s, e, _)| {
            accepted[fam.index()].range(..=*e).next_back().is_some_and(|(_, (pe, _, _))| pe >= s)
        });
        if conflict.is_none() && !overlaps {
            for (fam, s, e, text) in &own {
                accepted[fam.index()].insert(*s, (*e, spec.name.as_str(), text.clone()));
            }
        }
        checked.push((spec, own, conflict, overlaps));
    }
    // Describe overlaps against the final set of accepted pools, so that the message does not
    // depend on the order the pools were checked in.
    let mut out: Vec<Pool<'a>> = checked
        .into_iter()
        .map(|(spec, own, mut conflict, overlaps)| {
            if overlaps && conflict.is_none() {
                let mut hits: Vec<String> = Vec::new();
                for (fam, s, e, text) in &own {
                    for (_, (pe, other, otext)) in accepted[fam.index()].range(..=*e).rev() {
                        if pe < s {
                            break;
                        }
                        hits.push(format!("block {text} overlaps block {otext} of pool {other}"));
                    }
                }
                hits.sort();
                conflict = Some(hits.join("; "));
            }
            let free = allocatable(spec);
            let total = free[0].len().saturating_add(free[1].len());
            Pool { spec, free, total, conflict }
        })
        .collect();
    // Everything downstream iterates pools in name order.
    out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    out
}

/// Whether two services may hold the same IP.
fn compatible(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    let (Some(sa), Some(sb)) = (&a.sharing, &b.sharing) else { return false };
    if sa.scheme != sb.scheme || sa.key != sb.key {
        return false;
    }
    // Cilium: cross-namespace sharing must be allowed on both sides. MetalLB keys are cluster-wide.
    if sa.scheme == SharingScheme::Cilium && a.key.namespace != b.key.namespace {
        let allows = |s: &Sharing, ns: &str| s.cross_namespace.iter().any(|n| n == "*" || n == ns);
        if !allows(sa, &b.key.namespace) || !allows(sb, &a.key.namespace) {
            return false;
        }
    }
    // Protocol-aware: the same port number under different protocols is fine.
    if a.ports.iter().any(|p| b.ports.contains(p)) {
        return false;
    }
    // Both Cluster, or the same non-empty set of pods (Cilium also wants equal policies).
    if !a.traffic_local && !b.traffic_local {
        return true;
    }
    let same_pods = !a.pod_selector.is_empty() && a.pod_selector == b.pod_selector;
    same_pods && (a.traffic_local == b.traffic_local || sa.scheme == SharingScheme::MetalLb)
}

impl<'a> State<'a> {
    /// Can service `si` take `ip` (held by someone already) by sharing?
    fn can_share(&self, si: usize, ip: IpAddr) -> Result<(), String> {
        let Some(h) = self.holders.get(&ip) else { return Ok(()) };
        let spec = self.svcs[si].spec;
        for &other in &h.services {
            if !compatible(spec, self.svcs[other].spec) {
                return Err(format!("{ip} is already used by service {}", self.svcs[other].spec.key));
            }
        }
        Ok(())
    }

    fn take(&mut self, si: usize, ip: IpAddr, pool: usize) {
        let spec = self.svcs[si].spec;
        let pools = &mut self.pools;
        let h = self.holders.entry(ip).or_insert_with(|| {
            // An IP is held once, whichever pool it came from: take it out of every pool that
            // has it, so that an overlapping (conflicting) pool cannot hand it out again.
            let v = ip_to_u128(ip);
            let taken_from = (0..pools.len()).filter(|&p| pools[p].free[Family::of(ip).index()].remove(v)).collect();
            Holder { pool, services: Vec::new(), taken_from }
        });
        h.services.push(si);
        if let Some(s) = &spec.sharing {
            self.shared.entry((s.scheme, s.key.as_str())).or_default().insert(ip);
        }
        self.held[si].push(ip);
    }

    fn give_back(&mut self, si: usize, ip: IpAddr) {
        if let Some(h) = self.holders.get_mut(&ip) {
            h.services.retain(|&k| k != si);
            if h.services.is_empty() {
                for &p in &h.taken_from {
                    self.pools[p].free[Family::of(ip).index()].insert(ip_to_u128(ip));
                }
                self.holders.remove(&ip);
                if let Some(s) = &self.svcs[si].spec.sharing
                    && let Some(set) = self.shared.get_mut(&(s.scheme, s.key.as_str()))
                {
                    set.remove(&ip);
                }
            }
        }
        self.held[si].retain(|x| *x != ip);
    }

    /// Is `ip` inside pool `p`'s allocatable set (free, or already held from it)?
    fn covers(&self, p: usize, ip: IpAddr) -> bool {
        self.pools[p].free[Family::of(ip).index()].contains(ip_to_u128(ip))
            || self.holders.get(&ip).is_some_and(|h| h.pool == p)
    }

    /// Decides whether a previous assignment stays. Returns the pool to keep it in.
    fn keep_previous(&self, si: usize, a: &Assignment) -> Result<usize, String> {
        let svc = &self.svcs[si];
        let spec = svc.spec;
        let ip = a.ip;
        let pool = self
            .pools
            .iter()
            .position(|p| p.spec.name == a.pool)
            .filter(|&p| self.covers(p, ip))
            // The recorded pool is gone or shrank: re-home the IP if another pool covers it.
            .or_else(|| (0..self.pools.len()).find(|&p| self.covers(p, ip) && self.pools[p].selects(svc)));
        let Some(p) = pool else {
            return Err(format!("no pool covers {ip} any more (it was in pool {})", a.pool));
        };
        if spec.invalid.is_some() {
            return Ok(p); // keep what it has until the request is readable again
        }
        if !self.pools[p].selects(svc) {
            return Err(format!("pool {} no longer selects the service", self.pools[p].spec.name));
        }
        let kept = &self.held[si];
        let fam = Family::of(ip);
        if spec.requested.is_empty() {
            if !spec.wanted_families().contains(&fam) {
                return Err(format!("the service no longer wants {fam} addresses"));
            }
            if kept.iter().any(|k| Family::of(*k) == fam) {
                return Err(format!("the service already holds another {fam} address"));
            }
        } else if !spec.requested.contains(&ip) {
            return Err("the service requests other IPs now".to_string());
        }
        if kept.contains(&ip) {
            return Err("duplicate assignment".to_string());
        }
        self.can_share(si, ip).map(|()| p)
    }
}

/// Computes the assignment of LoadBalancer IPs. See the module docs for the rules.
pub fn reconcile(
    config: &LbIpamConfig,
    pools: &[PoolSpec],
    services: &[ServiceSpec],
    previous: &Assignments,
) -> Outcome {
    let mut specs: Vec<&ServiceSpec> = services.iter().collect();
    specs.sort_by(|a, b| a.key.cmp(&b.key));
    // A duplicate key keeps the first spec (the caller's model has unique keys).
    specs.dedup_by(|a, b| a.key == b.key);
    let svcs: Vec<Svc<'_>> = specs.iter().map(|spec| Svc { spec }).collect();
    let index: HashMap<&ServiceKey, usize> = specs.iter().enumerate().map(|(i, s)| (&s.key, i)).collect();
    let mut st = State {
        pools: check_pools(pools, previous),
        held: vec![Vec::new(); svcs.len()],
        svcs,
        holders: HashMap::with_capacity(previous.len()),
        shared: HashMap::new(),
        released: Vec::new(),
    };

    // 1. Keep every previous assignment that is still valid, in key order.
    for (key, list) in previous {
        let handled = index.get(key).copied().filter(|&i| config.serves(specs[i].load_balancer_class.as_deref()));
        let Some(si) = handled else {
            let why =
                if index.contains_key(key) { "its loadBalancerClass is not served" } else { "the service is gone" };
            st.released.extend(list.iter().map(|a| Release { service: key.clone(), ip: a.ip, reason: why.into() }));
            continue;
        };
        let mut sorted = list.clone();
        sorted.sort();
        for a in &sorted {
            match st.keep_previous(si, a) {
                Ok(p) => st.take(si, a.ip, p),
                Err(reason) => st.released.push(Release { service: key.clone(), ip: a.ip, reason }),
            }
        }
    }

    // 2. Allocate for services that still need addresses: older first, then by key.
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (specs[a], specs[b]);
        (a.created.is_none(), &a.created, &a.key).cmp(&(b.created.is_none(), &b.created, &b.key))
    });
    let mut failures: Vec<Option<(Reason, String)>> = vec![None; specs.len()];
    for si in order {
        let spec = specs[si];
        failures[si] = if !config.serves(spec.load_balancer_class.as_deref()) {
            Some((
                Reason::Ignored,
                format!(
                    "loadBalancerClass {:?} is not served by this allocator",
                    spec.load_balancer_class.as_deref().unwrap_or("")
                ),
            ))
        } else if let Some(why) = &spec.invalid {
            Some((Reason::InvalidRequest, why.clone()))
        } else if !spec.requested.is_empty() {
            allocate_requested(&mut st, si)
        } else {
            allocate_any(&mut st, si)
        };
    }

    // 3. Report.
    let mut out = Outcome { released: st.released, ..Outcome::default() };
    // Services are visited in key order: collecting sorted pairs lets the maps bulk-build.
    let mut assignments = Vec::with_capacity(specs.len());
    let mut statuses = Vec::with_capacity(specs.len());
    for (si, failure) in failures.into_iter().enumerate() {
        let key = &specs[si].key;
        let mut ips: Vec<Assignment> = st.held[si]
            .iter()
            .map(|ip| Assignment { ip: *ip, pool: st.pools[st.holders[ip].pool].spec.name.clone() })
            .collect();
        ips.sort();
        let mut shared_with: Vec<ServiceKey> = ips
            .iter()
            .flat_map(|a| st.holders[&a.ip].services.iter())
            .filter(|&&k| k != si)
            .map(|&k| specs[k].key.clone())
            .collect();
        shared_with.sort();
        shared_with.dedup();
        if !ips.is_empty() {
            assignments.push((key.clone(), ips.clone()));
        }
        let (satisfied, reason, message) = match failure {
            None => (true, Reason::Satisfied, String::new()),
            Some((r, m)) => (false, r, m),
        };
        statuses.push((key.clone(), ServiceStatus { ips, satisfied, reason, message, shared_with }));
    }
    out.assignments = assignments.into_iter().collect();
    out.services = statuses.into_iter().collect();
    for p in &st.pools {
        let available = p.free[0].len().saturating_add(p.free[1].len());
        out.pools.insert(
            p.spec.name.clone(),
            PoolStatus {
                total: p.total,
                // In use by anyone, whichever pool it was handed out from.
                used: p.total - available,
                available,
                disabled: p.spec.disabled,
                conflict: p.conflict.clone(),
            },
        );
    }
    out
}

/// Requested IPs: exactly these, each from a pool that covers it and selects the service.
/// Returns the failure, if any (IPs that could be had are kept even when another fails).
fn allocate_requested(st: &mut State<'_>, si: usize) -> Option<(Reason, String)> {
    let spec = st.svcs[si].spec;
    let selects: Vec<bool> = st.pools.iter().map(|p| p.selects(&st.svcs[si])).collect();
    let mut failure = None;
    for &ip in &spec.requested {
        if st.held[si].contains(&ip) {
            continue;
        }
        let covering: Vec<usize> = (0..st.pools.len()).filter(|&p| st.covers(p, ip)).collect();
        let Some(&p) = covering.iter().find(|&&p| selects[p] && st.pools[p].usable()) else {
            // The reason must not depend on pool order (which follows previous holders):
            // a usable pool that does not select the service explains more than a disabled one.
            let mismatch =
                covering.iter().copied().filter(|&p| st.pools[p].usable()).min_by_key(|&p| &st.pools[p].spec.name);
            let unusable = covering.iter().copied().min_by_key(|&p| &st.pools[p].spec.name);
            let why = match (mismatch, unusable) {
                (Some(p), _) => (
                    Reason::PoolSelectorMismatch,
                    format!(
                        "requested IP {ip} is in pool {} whose selector does not match this service",
                        st.pools[p].spec.name
                    ),
                ),
                (None, Some(p)) => {
                    let pool = &st.pools[p];
                    let state =
                        pool.conflict.as_deref().map_or("disabled".to_string(), |c| format!("conflicting: {c}"));
                    (Reason::NoPool, format!("requested IP {ip} is in pool {} which is {state}", pool.spec.name))
                }
                (None, None) => (Reason::NoPool, format!("requested IP {ip} is not in any pool")),
            };
            failure.get_or_insert(why);
            continue;
        };
        match st.can_share(si, ip) {
            Ok(()) => st.take(si, ip, p),
            Err(m) => {
                failure.get_or_insert((Reason::AlreadyAllocated, m));
            }
        }
    }
    failure
}

/// One address per wanted family: shared under the sharing key if possible, else fresh.
fn allocate_any(st: &mut State<'_>, si: usize) -> Option<(Reason, String)> {
    let spec = st.svcs[si].spec;
    let selects: Vec<bool> = st.pools.iter().map(|p| p.selects(&st.svcs[si])).collect();
    let have: Vec<Family> = st.held[si].iter().map(|ip| Family::of(*ip)).collect();
    let mut failures = Vec::new();
    let mut new = Vec::new();
    for fam in spec.wanted_families() {
        if have.contains(&fam) {
            continue;
        }
        let mut eligible: Vec<usize> = (0..st.pools.len())
            .filter(|&p| {
                let pool = &st.pools[p];
                selects[p]
                    && pool.usable()
                    && pool.has_family(fam)
                    && (pool.spec.auto_assign || spec.pool_pin.is_some())
            })
            .collect();
        eligible.sort_by_key(|&p| {
            let prio = st.pools[p].spec.priority.filter(|&x| x > 0).unwrap_or(u32::MAX);
            (prio, &st.pools[p].spec.name)
        });
        // Share an IP already held under the same key, if every holder agrees.
        let mut got = None;
        if let Some(s) = &spec.sharing
            && let Some(ips) = st.shared.get(&(s.scheme, s.key.as_str()))
        {
            got = ips
                .iter()
                .filter(|ip| Family::of(**ip) == fam)
                .find(|ip| eligible.contains(&st.holders[ip].pool) && st.can_share(si, **ip).is_ok())
                .map(|ip| (*ip, st.holders[ip].pool));
        }
        if got.is_none() {
            got = eligible.iter().find_map(|&p| st.pools[p].free[fam.index()].first().map(|v| (fam.addr(v), p)));
        }
        match got {
            Some((ip, p)) => {
                st.take(si, ip, p);
                new.push(ip);
            }
            None => {
                let any_family = st.pools.iter().any(|p| p.has_family(fam));
                let any_selecting = (0..st.pools.len()).any(|p| selects[p] && st.pools[p].has_family(fam));
                let missing_pin = spec.pool_pin.as_ref().filter(|pin| !st.pools.iter().any(|p| p.spec.name == **pin));
                failures.push(if let Some(pin) = missing_pin {
                    (Reason::NoPool, format!("pool {pin:?} named by the service does not exist"))
                } else if !any_family {
                    (Reason::NoPool, format!("no pool has {fam} addresses"))
                } else if !any_selecting {
                    (Reason::PoolSelectorMismatch, format!("no pool with {fam} addresses selects this service"))
                } else if eligible.is_empty() {
                    (
                        Reason::NoPool,
                        format!(
                            "every pool with {fam} addresses that selects this service is disabled, conflicting \
                             or not auto-assigning"
                        ),
                    )
                } else {
                    (
                        Reason::OutOfIps,
                        format!("all pools with {fam} addresses that select this service ran out of IPs"),
                    )
                });
            }
        }
    }
    match spec.family_policy {
        FamilyPolicy::RequireDualStack if !failures.is_empty() => {
            // All or nothing: do not hold half a dual-stack request taken in this pass.
            for ip in new {
                st.give_back(si, ip);
            }
        }
        FamilyPolicy::PreferDualStack if !st.held[si].is_empty() => return None,
        _ => {}
    }
    failures.into_iter().next()
}
