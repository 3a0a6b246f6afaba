//! Who answers ARP/NDP for which LoadBalancer IP: the multi-node election, as a sans-IO state
//! machine with explicit time (quinn-proto style). No sockets, no clocks, no tasks: the driver
//! feeds inputs (`on_*`, each with the time it happened) and performs the returned [`Action`]s
//! **in order**; [`Election::next_deadline`] says when to call [`Election::on_tick`] next.
//!
//! # Model
//! * **Ranking.** Every IP has a deterministic owner: among the *live* nodes eligible for it,
//!   the one with the highest rendezvous (HRW) score `stable_hash(ip, node)` ([`hrw_score`]).
//!   Everyone computes the same owner from the same inputs, IPs spread evenly, and a node
//!   leaving only moves its own IPs.
//! * **Failure detection** is by LAN heartbeats ([`crate::heartbeat`]) every
//!   `heartbeat_interval`; a peer is dead after `missed_heartbeats` intervals without one.
//! * **Fencing authority** is etcd ([`crate::lease`]): one lease per node, one key per node.
//!   A node may answer only while its lease is *provably* valid: until
//!   `sent_at(last acknowledged keep-alive) + min(horizon, ttl) − clock_margin` by its own clock
//!   (the send time, not the receive time: etcd renewed at or after it). It keeps the lease
//!   alive every `keepalive_interval` (< horizon), so `horizon`, not etcd's ≥ 1 s TTL, bounds
//!   how long a node that lost etcd may keep answering. etcd's TTL is only the backstop that
//!   cleans up after crashed nodes.
//!
//! # Rules (the safety argument is in the comments of `Election::step`)
//! 1. No provably valid lease (never granted, validity lapsed, keep-alive said gone, own key
//!    deleted) → withdraw everything at once, acquire nothing.
//! 2. Keep an owned IP while this node is still its top-ranked live eligible node.
//! 3. Acquire an IP (start answering) only when this node is its top-ranked live eligible node
//!    **and** (a) every live peer's latest heartbeat carries the same knowledge digest as ours
//!    (same live set, leases, eligibility and view epochs: the peer has seen our current view
//!    and has withdrawn whatever that view does not give it), **and** (b) every known node that
//!    is *not* live has been fenced — its lease revoked at etcd — and its advertised horizon
//!    (+ margin) has passed since the fence was confirmed, so it has stopped by itself even if
//!    it is alive but cut off from everyone.
//! 4. A fence request against our own still-valid lease is refuted ([`Action::Refute`]): a
//!    node cut off from its peers but not from etcd keeps its IPs, and nobody takes over.
//!    A node cut off from both cannot refute, is revoked, and has stopped by itself by the time
//!    the successor's wait ends.
//! 5. A peer that is heard on the LAN but says its lease is not provably valid (it lost etcd:
//!    an etcd restart or leader election) is *resting* for `lease_grace`: it answers nothing,
//!    but it keeps its place in the ranking, so its IPs wait for it instead of moving, and it
//!    is neither fenced nor waited for. An etcd outage shorter than the grace moves no IP; a
//!    node that stays cut off from etcd longer is then fenced and its IPs move.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::heartbeat::Heartbeat;

// ===== identifiers =====

/// A node's name (the Kubernetes node name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub fn new(name: impl Into<String>) -> NodeId {
        NodeId(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An etcd lease ID (always > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A node and the IPs it may announce (policy node selector matched, interface up with an
/// address, and for externalTrafficPolicy=Local a ready local endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub eligible_ips: BTreeSet<IpAddr>,
}

// ===== stable hashing and ranking =====

/// FNV-1a 64 with length-prefixed fields and a murmur3 finalizer: stable across Rust versions
/// and platforms (unlike `DefaultHasher`), so every node ranks the same way.
#[derive(Debug, Clone)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl StableHasher {
    fn raw(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    /// A variable-length field (prefixed by its length, so fields cannot run together).
    pub fn field(&mut self, b: &[u8]) {
        self.raw(&(b.len() as u64).to_le_bytes());
        self.raw(b);
    }
    pub fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }
    pub fn finish(&self) -> u64 {
        // murmur3 fmix64
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
}

fn ip_field(h: &mut StableHasher, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => h.field(&a.octets()),
        IpAddr::V6(a) => h.field(&a.octets()),
    }
}

/// Rendezvous score of `node` for `ip`: the highest score owns.
pub fn hrw_score(ip: &IpAddr, node: &NodeId) -> u64 {
    let mut h = StableHasher::default();
    ip_field(&mut h, ip);
    h.field(node.as_str().as_bytes());
    h.finish()
}

/// `nodes` ordered best first for `ip` (score descending, ties by name).
pub fn ranking<'a>(ip: &IpAddr, nodes: impl IntoIterator<Item = &'a NodeId>) -> Vec<&'a NodeId> {
    let mut v: Vec<(u64, &NodeId)> = nodes.into_iter().map(|n| (hrw_score(ip, n), n)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    v.into_iter().map(|(_, n)| n).collect()
}

/// The top-ranked node for `ip`, if any.
pub fn owner<'a>(ip: &IpAddr, nodes: impl IntoIterator<Item = &'a NodeId>) -> Option<&'a NodeId> {
    nodes.into_iter().max_by(|a, b| hrw_score(ip, a).cmp(&hrw_score(ip, b)).then_with(|| b.cmp(a)))
}

/// Digest of an eligible set (sent in heartbeats; part of the knowledge digest).
pub fn eligible_digest(ips: &BTreeSet<IpAddr>) -> u64 {
    let mut h = StableHasher::default();
    h.u64(ips.len() as u64);
    for ip in ips {
        ip_field(&mut h, ip);
    }
    h.finish()
}

// ===== configuration =====

/// Timing of the election. Failover after a node dies ≈
/// `heartbeat_interval × missed_heartbeats` (detection) + fence round trips (+ the backend's
/// `refute_window`) + `horizon + clock_margin` (wait until the fenced node has stopped by
/// itself). The defaults give ≤ 30 + (10 + ~6) + 27 ≈ 73 ms on a LAN (etcd round trips of
/// ~2 ms each: put, txn, revoke).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    pub heartbeat_interval: Duration,
    /// A peer is dead after this many intervals without a heartbeat.
    pub missed_heartbeats: u32,
    /// How often this node renews its etcd lease (must be well below `horizon`).
    pub keepalive_interval: Duration,
    /// How long after the send time of its last acknowledged keep-alive a node keeps answering.
    /// Also how long a successor waits after a confirmed fence. Must be the same on all nodes
    /// (it is advertised in heartbeats; successors use the larger of theirs and the peer's).
    pub horizon: Duration,
    /// Allowance for clock-rate drift and timer lateness, taken off on both sides.
    pub clock_margin: Duration,
    /// etcd lease TTL (backstop: only matters for crashed nodes, never for failover time).
    pub lease_ttl: Duration,
    /// How long a fence request stays open for the target to refute it (the driver passes it
    /// to [`crate::lease::LeaseBackend::fence`]). Must cover the target's etcd watch latency
    /// plus one transaction; a refutation that comes too late only costs a needless failover.
    pub refute_window: Duration,
    /// Wait after a refused or failed fence before trying again.
    pub fence_retry: Duration,
    /// Wait after a failed lease grant before trying again.
    pub grant_retry: Duration,
    /// Minimum gap between heartbeats sent early because the view changed.
    pub min_heartbeat_gap: Duration,
    /// How long a peer that is heard on the LAN but has lost its lease's validity (etcd
    /// unreachable for it: an etcd restart, a leader election) keeps its IPs. It answers none of
    /// them meanwhile (rule 1), but nobody takes them over, so an etcd outage shorter than this
    /// moves no IP. After it, the peer is treated as dead (fenced, its IPs taken over).
    pub lease_grace: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            heartbeat_interval: Duration::from_millis(10),
            missed_heartbeats: 3,
            keepalive_interval: Duration::from_millis(8),
            horizon: Duration::from_millis(25),
            clock_margin: Duration::from_millis(2),
            lease_ttl: Duration::from_secs(2),
            refute_window: Duration::from_millis(10),
            fence_retry: Duration::from_millis(50),
            grant_retry: Duration::from_millis(100),
            min_heartbeat_gap: Duration::from_millis(1),
            lease_grace: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missed_heartbeats must be at least 1")]
    MissedHeartbeats,
    #[error("keepalive_interval must be shorter than horizon − clock_margin")]
    KeepAlive,
    #[error("horizon must be ≤ lease_ttl and fit in a u16 of milliseconds")]
    Horizon,
    #[error("clock_margin must be shorter than horizon / 2")]
    Margin,
    #[error("heartbeat_interval must be non-zero")]
    Heartbeat,
}

impl ElectionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.missed_heartbeats == 0 {
            return Err(ConfigError::MissedHeartbeats);
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Heartbeat);
        }
        if self.clock_margin * 2 >= self.horizon {
            return Err(ConfigError::Margin);
        }
        if self.keepalive_interval.is_zero() || self.keepalive_interval >= self.horizon - self.clock_margin {
            return Err(ConfigError::KeepAlive);
        }
        if self.horizon > self.lease_ttl || self.horizon.as_millis() > u128::from(u16::MAX) {
            return Err(ConfigError::Horizon);
        }
        Ok(())
    }

    pub fn dead_after(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }

    /// Validity granted by one acknowledged keep-alive, from its send time.
    fn validity(&self) -> Duration {
        self.horizon.min(self.lease_ttl) - self.clock_margin
    }
}

// ===== inputs and outputs =====

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Grant a lease (TTL `lease_ttl`) and put this node's key under it; report
    /// [`LeaseEvent::Granted`] with the time taken *before* the grant request was sent.
    AcquireLease,
    /// Send one keep-alive; report [`LeaseEvent::Renewed`] with the time taken before sending.
    KeepAlive { lease: LeaseId },
    /// Start answering for this IP (program the responder, send gratuitous ARP / NA).
    Announce(IpAddr),
    /// Stop answering for this IP now (before anything after it in the list).
    Withdraw(IpAddr),
    /// Revoke `node`'s lease unless it refutes: the lease its key is attached to now (`lease`,
    /// from its last heartbeat, may be stale and is only a fallback); report with
    /// [`Election::on_fence_result`]. Fencing only the stale lease would let two nodes that
    /// both re-leased while unable to hear each other take the same IPs.
    Fence { node: NodeId, lease: Option<LeaseId> },
    /// Refute a fence request against our lease (we are alive and hold it).
    Refute { lease: LeaseId },
    /// Send this heartbeat on the LAN.
    SendHeartbeat(Heartbeat),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    Granted {
        lease: LeaseId,
        sent_at: Instant,
    },
    GrantFailed,
    /// A keep-alive sent at `sent_at` was acknowledged with a TTL > 0.
    Renewed {
        lease: LeaseId,
        sent_at: Instant,
    },
    /// A keep-alive failed or timed out (validity then lapses by itself).
    RenewFailed {
        lease: LeaseId,
    },
    /// The lease is gone: keep-alive answered TTL 0 / not found, or our key was deleted.
    Lost {
        lease: LeaseId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceOutcome {
    /// The lease was revoked (or did not exist any more) at etcd.
    Fenced { lease: Option<LeaseId> },
    /// The node refuted: it is alive and holds its lease. Do not take over.
    Refused,
    /// etcd could not be reached or answered an error. Do not take over.
    Failed,
}

// ===== state =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseStatus {
    None { retry_at: Instant },
    Requested,
    Held { lease: LeaseId, valid_until: Instant, next_keepalive: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FenceState {
    None,
    InFlight { lease: Option<LeaseId> },
    Fenced { lease: Option<LeaseId>, safe_at: Instant },
    Retry { after: Instant },
}

#[derive(Debug, Clone)]
struct Peer {
    last_heard: Instant,
    seq: u64,
    lease: Option<LeaseId>,
    lease_valid: bool,
    /// Since when its heartbeats say its lease is not provably valid (same lease throughout).
    invalid_since: Option<Instant>,
    horizon: Duration,
    epoch: u32,
    knowledge: u64,
}

/// The election state of one node. See the module docs.
#[derive(Debug)]
pub struct Election {
    cfg: ElectionConfig,
    me: NodeId,
    candidates: BTreeMap<NodeId, BTreeSet<IpAddr>>,
    peers: BTreeMap<NodeId, Peer>,
    fences: BTreeMap<NodeId, FenceState>,
    lease: LeaseStatus,
    owned: BTreeSet<IpAddr>,
    now: Instant,
    seq: u64,
    epoch: u32,
    view: u64,
    knowledge: u64,
    want: BTreeSet<IpAddr>,
    want_key: Option<u64>,
    /// Since when each wanted IP has been wanted (for the election latency).
    want_since: BTreeMap<IpAddr, Instant>,
    /// Acquisitions not yet taken by [`Election::take_acquisitions`]: IP and how long it took
    /// from wanting it to announcing it.
    acquired: Vec<(IpAddr, Duration)>,
    last_hb_sent: Option<Instant>,
    last_hb_content: Option<(u64, bool, Option<LeaseId>)>,
    hb_pending: bool,
    /// No fences before `started + dead_after`: give peers a chance to be heard first.
    started: Instant,
}

impl Election {
    /// `seq_start` seeds heartbeat sequence numbers (use wall-clock microseconds so a restarted
    /// node's sequence keeps increasing).
    pub fn new(me: NodeId, cfg: ElectionConfig, now: Instant, seq_start: u64) -> Result<Election, ConfigError> {
        cfg.validate()?;
        Ok(Election {
            cfg,
            me,
            candidates: BTreeMap::new(),
            peers: BTreeMap::new(),
            fences: BTreeMap::new(),
            lease: LeaseStatus::None { retry_at: now },
            owned: BTreeSet::new(),
            now,
            seq: seq_start,
            epoch: 0,
            view: 0,
            knowledge: 0,
            want: BTreeSet::new(),
            want_key: None,
            want_since: BTreeMap::new(),
            acquired: Vec::new(),
            last_hb_sent: None,
            last_hb_content: None,
            hb_pending: false,
            started: now,
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.me
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.cfg
    }

    /// The IPs this node answers for right now.
    pub fn owned_ips(&self) -> &BTreeSet<IpAddr> {
        &self.owned
    }

    /// Until when this node may answer (its lease is provably valid), if at all. A datapath
    /// gate (like Cilium's BPF liveness check) should also refuse to answer after this.
    pub fn valid_until(&self) -> Option<Instant> {
        match self.lease {
            LeaseStatus::Held { valid_until, .. } => Some(valid_until),
            _ => None,
        }
    }

    pub fn lease(&self) -> Option<LeaseId> {
        match self.lease {
            LeaseStatus::Held { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// The IPs acquired since the last call, each with its election latency: from the moment
    /// this node's view made it the IP's owner to the announcement (agreement and fencing).
    pub fn take_acquisitions(&mut self) -> Vec<(IpAddr, Duration)> {
        std::mem::take(&mut self.acquired)
    }

    /// Peers currently considered live.
    pub fn live_peers(&self) -> Vec<NodeId> {
        self.peers.keys().filter(|n| self.is_live(n, self.now)).cloned().collect()
    }

    /// Replaces the candidate set (from the agent's model). Should list every node that runs
    /// the announcer, with empty eligible sets where a node may announce nothing.
    pub fn set_candidates(&mut self, candidates: impl IntoIterator<Item = Candidate>, now: Instant) -> Vec<Action> {
        self.candidates = candidates.into_iter().map(|c| (c.node, c.eligible_ips)).collect();
        self.want_key = None;
        self.step(now)
    }

    /// A heartbeat was received at `at`.
    pub fn on_heartbeat(&mut self, hb: &Heartbeat, at: Instant) -> Vec<Action> {
        if hb.node == self.me {
            // Our own datagram looped back (or a duplicate node name: both ignored).
            return Vec::new();
        }
        match self.fences.get(&hb.node).copied().unwrap_or(FenceState::None) {
            // A fenced incarnation is gone for good; it must come back with a new lease.
            FenceState::Fenced { lease, .. } if lease == hb.lease => {
                return self.step(at);
            }
            FenceState::Fenced { .. } | FenceState::Retry { .. } if hb.lease_valid && hb.lease.is_some() => {
                self.fences.insert(hb.node.clone(), FenceState::None);
            }
            _ => {}
        }
        if let Some(p) = self.peers.get(&hb.node)
            && p.lease == hb.lease
            && hb.seq <= p.seq
        {
            return self.step(at); // reordered or duplicated
        }
        let invalid_since = match self.peers.get(&hb.node) {
            _ if hb.lease_valid => None,
            Some(p) if p.lease == hb.lease && p.invalid_since.is_some() => p.invalid_since,
            _ => Some(at),
        };
        self.peers.insert(
            hb.node.clone(),
            Peer {
                last_heard: at,
                seq: hb.seq,
                lease: hb.lease,
                lease_valid: hb.lease_valid,
                invalid_since,
                horizon: Duration::from_millis(u64::from(hb.horizon_ms)),
                epoch: hb.epoch,
                knowledge: hb.knowledge,
            },
        );
        self.step(at)
    }

    /// Time passed; call at [`Election::next_deadline`] (and whenever convenient).
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        self.step(now)
    }

    /// News about our own lease.
    pub fn on_lease_state(&mut self, ev: LeaseEvent, at: Instant) -> Vec<Action> {
        let validity = self.cfg.validity();
        match (ev, self.lease) {
            (LeaseEvent::Granted { lease, sent_at }, LeaseStatus::Requested) => {
                self.lease = LeaseStatus::Held {
                    lease,
                    valid_until: sent_at + validity,
                    next_keepalive: sent_at + self.cfg.keepalive_interval,
                };
            }
            (LeaseEvent::GrantFailed, LeaseStatus::Requested) => {
                self.lease = LeaseStatus::None { retry_at: at + self.cfg.grant_retry };
            }
            (LeaseEvent::Renewed { lease, sent_at }, LeaseStatus::Held { lease: l, valid_until, next_keepalive })
                if lease == l =>
            {
                self.lease =
                    LeaseStatus::Held { lease, valid_until: valid_until.max(sent_at + validity), next_keepalive };
            }
            (LeaseEvent::Lost { lease }, LeaseStatus::Held { lease: l, .. }) if lease == l => {
                self.lease = LeaseStatus::None { retry_at: at };
            }
            _ => {}
        }
        self.step(at)
    }

    /// The result of an [`Action::Fence`] we issued.
    pub fn on_fence_result(&mut self, node: &NodeId, outcome: FenceOutcome, at: Instant) -> Vec<Action> {
        if let Some(FenceState::InFlight { lease: asked }) = self.fences.get(node).copied() {
            let st = match outcome {
                FenceOutcome::Fenced { lease } => {
                    let peer_horizon = self.peers.get(node).map_or(Duration::ZERO, |p| p.horizon);
                    FenceState::Fenced {
                        lease: lease.or(asked),
                        safe_at: at + self.cfg.horizon.max(peer_horizon) + self.cfg.clock_margin,
                    }
                }
                FenceOutcome::Refused | FenceOutcome::Failed => FenceState::Retry { after: at + self.cfg.fence_retry },
            };
            self.fences.insert(node.clone(), st);
        }
        self.step(at)
    }

    /// Someone asks etcd to fence `lease`: refute if it is ours and provably valid.
    pub fn on_fence_request(&mut self, lease: LeaseId, at: Instant) -> Vec<Action> {
        let mut out = self.step(at);
        if let LeaseStatus::Held { lease: l, valid_until, .. } = self.lease
            && l == lease
            && at < valid_until
        {
            out.push(Action::Refute { lease });
        }
        out
    }

    /// When [`Election::on_tick`] must be called next at the latest.
    pub fn next_deadline(&self) -> Instant {
        let mut d = self.last_hb_sent.map_or(self.now, |t| t + self.cfg.heartbeat_interval);
        let mut at = |t: Instant| {
            if t > self.now && t < d {
                d = t;
            }
        };
        if self.hb_pending
            && let Some(t) = self.last_hb_sent
        {
            at(t + self.cfg.min_heartbeat_gap);
        }
        match self.lease {
            LeaseStatus::None { retry_at } => at(retry_at),
            LeaseStatus::Requested => {}
            LeaseStatus::Held { valid_until, next_keepalive, .. } => {
                at(valid_until);
                at(next_keepalive);
            }
        }
        for p in self.peers.values() {
            at(p.last_heard + self.cfg.dead_after());
            if let Some(t) = p.invalid_since {
                at(t + self.cfg.lease_grace);
            }
        }
        for f in self.fences.values() {
            match *f {
                FenceState::Fenced { safe_at, .. } => at(safe_at),
                FenceState::Retry { after } => at(after),
                _ => {}
            }
        }
        d.max(self.now)
    }

    // ===== impl Election: the core =====

    fn lease_valid(&self, now: Instant) -> bool {
        matches!(self.lease, LeaseStatus::Held { valid_until, .. } if now < valid_until)
    }

    fn is_live(&self, node: &NodeId, now: Instant) -> bool {
        self.peers.get(node).is_some_and(|p| {
            now < p.last_heard + self.cfg.dead_after()
                && p.lease_valid
                && p.lease.is_some()
                && !matches!(self.fences.get(node), Some(FenceState::Fenced { lease, .. }) if *lease == p.lease)
        })
    }

    /// Heard, holding a lease it cannot currently prove valid, within `lease_grace`: it answers
    /// nothing (its heartbeat says so, and rule 1 withdrew before it was sent), but it stays in
    /// the ranking so that its IPs wait for it instead of moving.
    fn is_resting(&self, node: &NodeId, now: Instant) -> bool {
        self.peers.get(node).is_some_and(|p| {
            now < p.last_heard + self.cfg.dead_after()
                && !p.lease_valid
                && p.lease.is_some()
                && p.invalid_since.is_some_and(|t| now < t + self.cfg.lease_grace)
                && !matches!(self.fences.get(node), Some(FenceState::Fenced { lease, .. }) if *lease == p.lease)
        })
    }

    fn eligible_of(&self, node: &NodeId) -> u64 {
        self.candidates.get(node).map_or_else(|| eligible_digest(&BTreeSet::new()), eligible_digest)
    }

    fn step(&mut self, at: Instant) -> Vec<Action> {
        let now = at.max(self.now);
        self.now = now;
        let mut out = Vec::new();
        let valid = self.lease_valid(now);

        // The view: live members with their leases and eligibility (per our model).
        let live: Vec<NodeId> = self.peers.keys().filter(|n| self.is_live(n, now)).cloned().collect();
        let resting: Vec<NodeId> = self.peers.keys().filter(|n| self.is_resting(n, now)).cloned().collect();
        let mut members: BTreeMap<&NodeId, Option<LeaseId>> =
            live.iter().chain(&resting).map(|n| (n, self.peers[n].lease)).collect();
        if valid {
            members.insert(&self.me, self.lease());
        }
        let mut h = StableHasher::default();
        for (n, l) in &members {
            h.field(n.as_str().as_bytes());
            h.u64(l.map_or(0, |l| l.0 as u64));
            h.u64(self.eligible_of(n));
        }
        let view = h.finish();
        if view != self.view {
            self.view = view;
            self.epoch = self.epoch.wrapping_add(1);
        }
        // Knowledge = view + everyone's epoch: equal knowledge digests mean each side has seen
        // the other's heartbeat for its *current* view (epochs never repeat), which rules out
        // two nodes acquiring the same IP on crossed, in-flight views.
        let mut h = StableHasher::default();
        h.u64(view);
        for n in members.keys() {
            h.field(n.as_str().as_bytes());
            h.u64(u64::from(if **n == self.me { self.epoch } else { self.peers[*n].epoch }));
        }
        self.knowledge = h.finish();

        // Which IPs this view gives us (cached per view).
        if self.want_key != Some(view) {
            self.want_key = Some(view);
            self.want = if valid {
                let mine = self.candidates.get(&self.me).cloned().unwrap_or_default();
                mine.into_iter()
                    .filter(|ip| {
                        let elig =
                            members.keys().copied().filter(|n| self.candidates.get(*n).is_some_and(|s| s.contains(ip)));
                        owner(ip, elig) == Some(&self.me)
                    })
                    .collect()
            } else {
                BTreeSet::new()
            };
        }

        self.want_since.retain(|ip, _| self.want.contains(ip));
        for ip in &self.want {
            self.want_since.entry(*ip).or_insert(now);
        }

        // Rules 1 and 2: withdraw first, so a heartbeat later in this list never claims a view
        // we still answer outside of.
        let lost: Vec<IpAddr> = self.owned.difference(&self.want).copied().collect();
        for ip in lost {
            self.owned.remove(&ip);
            out.push(Action::Withdraw(ip));
        }

        // Rule 3. Why no two nodes answer for X at once: say N acquires X at t while P answers.
        // * P live in N's view: N and P report the same knowledge digest, so P's heartbeat was
        //   sent after P saw N's current epoch, in the same view, where P is not X's top node:
        //   P withdrew X before sending it (withdrawals precede heartbeats). P can re-acquire
        //   X only in a view where N is not top, after N has acknowledged that view — by then
        //   N has withdrawn X. (Epochs never repeat, so a stale heartbeat cannot pass for a
        //   current one: `crossed_views_do_not_double_acquire`.)
        // * P not live: N fenced P's current lease — revoked at r, confirmed at c ≥ r — and
        //   t ≥ c + horizon + margin. P's acknowledged keep-alives were all sent before r, so
        //   P stopped by r + horizon − margin. A newer lease of P was granted after r, and P
        //   acquires under it only after fencing N (N stops likewise before P starts) or with
        //   N's agreement (first case).
        // * P refuted: P holds a valid lease, N does not take over (partition: no double, no
        //   churn).
        // * P resting (heard, lease not provable, within the grace): P's latest heartbeat says
        //   it answers nothing. P is a member of N's view, so X is not taken from it; for the
        //   IPs N does take, P can only start answering again under rule 3 itself: with N's
        //   agreement (N live in P's view, so P acquires in a view equal to N's, where only
        //   one of them is top) or after fencing N, which N refutes. So P is neither waited
        //   for (agreement) nor fenced.
        let to_acquire: Vec<IpAddr> = self.want.difference(&self.owned).copied().collect();
        if valid && !to_acquire.is_empty() {
            let agreed = live.iter().all(|n| self.peers[n].knowledge == self.knowledge);
            let mut fenced_all = true;
            let may_fence = now >= self.started + self.cfg.dead_after();
            let known: BTreeSet<NodeId> = self.candidates.keys().chain(self.peers.keys()).cloned().collect();
            for n in known.iter().filter(|n| **n != self.me && !live.contains(n) && !resting.contains(n)) {
                let st = self.fences.get(n).copied().unwrap_or(FenceState::None);
                match st {
                    FenceState::Fenced { safe_at, .. } if safe_at <= now => {}
                    FenceState::Fenced { .. } | FenceState::InFlight { .. } => fenced_all = false,
                    FenceState::Retry { after } if after > now => fenced_all = false,
                    FenceState::None | FenceState::Retry { .. } if !may_fence => fenced_all = false,
                    FenceState::None | FenceState::Retry { .. } => {
                        fenced_all = false;
                        let lease = self.peers.get(n).and_then(|p| p.lease);
                        self.fences.insert(n.clone(), FenceState::InFlight { lease });
                        out.push(Action::Fence { node: n.clone(), lease });
                    }
                }
            }
            if agreed && fenced_all {
                for ip in to_acquire {
                    self.owned.insert(ip);
                    let since = self.want_since.get(&ip).copied().unwrap_or(now);
                    self.acquired.push((ip, now.saturating_duration_since(since)));
                    out.push(Action::Announce(ip));
                }
            }
        }

        // Our own lease.
        match self.lease {
            LeaseStatus::None { retry_at } if now >= retry_at => {
                self.lease = LeaseStatus::Requested;
                out.push(Action::AcquireLease);
            }
            LeaseStatus::Held { lease, valid_until, next_keepalive } if now >= next_keepalive => {
                self.lease =
                    LeaseStatus::Held { lease, valid_until, next_keepalive: now + self.cfg.keepalive_interval };
                out.push(Action::KeepAlive { lease });
            }
            _ => {}
        }

        // Heartbeat: periodic, or early (rate-limited) when what it says changed.
        let content = (self.knowledge, valid, self.lease());
        let due = self.last_hb_sent.is_none_or(|t| now >= t + self.cfg.heartbeat_interval);
        let differs = self.last_hb_content != Some(content);
        let changed = differs && self.last_hb_sent.is_none_or(|t| now >= t + self.cfg.min_heartbeat_gap);
        self.hb_pending = differs && !changed && !due;
        if due || changed {
            self.seq += 1;
            self.last_hb_sent = Some(now);
            self.last_hb_content = Some(content);
            out.push(Action::SendHeartbeat(self.heartbeat_now(valid)));
        }
        out
    }

    fn heartbeat_now(&self, valid: bool) -> Heartbeat {
        Heartbeat {
            node: self.me.clone(),
            seq: self.seq,
            lease: self.lease(),
            lease_valid: valid,
            horizon_ms: self.cfg.horizon.as_millis() as u16,
            epoch: self.epoch,
            eligible_digest: self.eligible_of(&self.me),
            knowledge: self.knowledge,
        }
    }
}

#[cfg(test)]
mod tests;
