//! The tokio driver for one peer: owns the TCP connection, frames and decodes messages with
//! [`crate::wire`], feeds events to the [`crate::fsm`] and carries out its actions, and keeps the
//! peer's Adj-RIB-Out in step with the routes it is told to advertise.
//!
//! ```text
//!  routes ──────────▶ ┌──────────── run_peer ────────────┐ ──▶ TCP to the peer
//!  (table: watch, or  │ Fsm (pure) ◀─ events ─ decoder   │ ◀── TCP from the peer
//!   deltas: mpsc)     │                                  │ ──▶ learned (mpsc, to a RIB):
//!  stop (watch)  ──▶  └──────────────┬───────────────────┘     one message per UPDATE,
//!                                    │                         Down, TableWanted
//!                                    └──▶ PeerStatus (shared, read by API/CLI)
//! ```
//!
//! Two ways to feed routes ([`RouteFeed`]): a whole table that the session diffs against what
//! it sent (the agent's few originated routes), or deltas from a RIB that keeps the table (the
//! relay in `halyard-bgpd`), so nothing is copied per peer. Either way, UPDATEs are packed: the
//! prefixes that share attributes go out together, as many per message as fit.
//!
//! With [`PeerConfig::bfd`] set, a BFD session (RFC 5880/5881, [`crate::bfd`]) runs to the peer
//! address and its state shows in [`PeerStatus::bfd`]. When it goes from Up to Down (not because
//! the peer went AdminDown, RFC 5882 §3.2) the BGP session is torn down at once with Cease /
//! BFD Down (RFC 9384) and comes back by the usual connect-retry. Establishing the BGP session
//! does not wait for BFD (RFC 5882 §4.3 leaves that to configuration); it is logged.
//!
//! TTL ([`TtlPolicy`], [`PeerConfig::ttl_policy`]): eBGP sessions send with TTL 1 unless
//! [`PeerConfig::multihop_ttl`] says otherwise (RFC 4271 §5.1.3 assumes directly connected
//! eBGP peers; BIRD and FRR do the same), iBGP ones with the kernel default. With
//! [`PeerConfig::ttl_security`] (GTSM, RFC 5082 §3) we send with 255 and the kernel drops every
//! segment from the peer that arrives with a TTL below 255 - hops + 1, on the sockets we dial
//! (set before `connect`) and on the ones we accept (see [`listen`]).
//!
//! Graceful restart, helper side (RFC 4724 §4.2, [`crate::gr`]): when both sides advertised the
//! capability ([`PeerConfig::graceful_restart`] set) and the session is lost without a
//! NOTIFICATION (or by hold timer expiry), the peer's routes are kept, stale, for its Restart
//! Time ([`Learned::Stale`], or kept in [`PeerStatus::received`]); End-of-RIB per family then
//! removes those it did not send again ([`Learned::StaleEnd`]), and so does the restart time
//! running out. A restarting peer that reconnects before we noticed the old connection is gone
//! is refused (collision) until our hold timer expires, which then counts as the restart.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::bfd::{Bfd, BfdConfig, BfdSession, BfdState, BfdStatus};
use crate::fsm::{Action, Event, Fsm, FsmConfig, Millis, PeerOpen, State};
use crate::gr::GrHelper;
use crate::wire::{
    AfiSafi, AsPath, Capability, Community, DecodeCxt, EncodeCxt, EncodeError, GrFamily, GracefulRestart, Ipv4Prefix,
    Ipv6NextHop, Ipv6Prefix, LargeCommunity, Message, MpReach, MpUnreach, NextHop, Notification, Open, Origin,
    PathAttribute, Update, frame_len,
};

pub use crate::rib::PathInfo;

/// A prefix of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Prefix {
    V4(Ipv4Prefix),
    V6(Ipv6Prefix),
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefix::V4(p) => p.fmt(f),
            Prefix::V6(p) => p.fmt(f),
        }
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains(':') {
            s.parse::<Ipv6Prefix>().map(Prefix::V6).map_err(|e| format!("{s:?}: {e}"))
        } else {
            s.parse::<Ipv4Prefix>().map(Prefix::V4).map_err(|e| format!("{s:?}: {e}"))
        }
    }
}

/// Path attributes we attach to an advertised prefix (export policy output).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteAttrs {
    /// The AS path as received (empty for routes we originate); our AS is prepended towards
    /// eBGP peers on export. AS_SETs are flattened into the sequence.
    pub as_path: Vec<u32>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    /// Sent to iBGP peers only (RFC 4271 §5.1.5); defaults to 100 there.
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
}

/// What to advertise to a peer: the desired Adj-RIB-Out.
/// Attributes are shared (`Arc`): one set usually covers many prefixes.
pub type Advertisements = BTreeMap<Prefix, Arc<RouteAttrs>>;

/// `Debug` shows whether a password is set, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    pub local_asn: u32,
    /// `None`: accept whatever AS the peer announces.
    pub peer_asn: Option<u32>,
    pub router_id: Ipv4Addr,
    pub address: IpAddr,
    pub port: u16,
    pub hold_time: u16,
    pub connect_retry_time: u16,
    /// Next hop for IPv6 prefixes when the session runs over IPv4 (and the reverse is not
    /// needed: IPv4 prefixes over an IPv6 session use RFC 8950 only when configured later).
    pub next_hop_v6: Option<Ipv6Addr>,
    /// TCP MD5 signature key (RFC 2385).
    pub password: Option<String>,
    /// Graceful restart (RFC 4724) restart time in seconds; `None` disables it. When enabled, the
    /// first OPEN after the process starts carries the Restart State bit, and stopping closes the
    /// connection without a NOTIFICATION so that the peer keeps our routes while we restart.
    pub graceful_restart: Option<u16>,
    /// BFD to the peer address (single-hop, RFC 5881); `None`: no BFD.
    pub bfd: Option<BfdConfig>,
    /// GTSM (RFC 5082): send with TTL 255 and drop what arrives from the peer with a TTL below
    /// 255 - hops + 1, hops being [`Self::multihop_ttl`] (1 when unset). The peer must do the
    /// same, or the session never comes up.
    pub ttl_security: bool,
    /// eBGP multihop: the TTL to send with (1 to 255); with [`Self::ttl_security`], the most
    /// hops the peer may be away. `None`: directly connected (TTL 1 on eBGP).
    pub multihop_ttl: Option<u8>,
}

/// The TTL a session sends with and the least it accepts, from [`PeerConfig::ttl_policy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Outgoing TTL / Hop Limit; `None`: the kernel default (`net.ipv4.ip_default_ttl`).
    pub ttl: Option<u8>,
    /// GTSM: segments with a lower TTL / Hop Limit are dropped by the kernel (RFC 5082 §3).
    pub min_ttl: Option<u8>,
    /// With GTSM, `TCP_USER_TIMEOUT` in seconds (the hold time): every segment of a peer that
    /// sends with too low a TTL is dropped, its ACKs, FIN and RST included, so a connection it
    /// gave up on (or never really took) looks alive to us, and in OpenSent we would wait out
    /// the 4-minute hold timer (RFC 4271 §8). Our unacknowledged OPEN or KEEPALIVE fails it
    /// after this long instead.
    pub stall_timeout_s: Option<u16>,
}

impl TtlPolicy {
    /// Applies the policy to a socket (before `connect`, or right after `accept`). The IPv4
    /// options are set on IPv6 sockets too: they cover v4-mapped peers.
    pub fn apply(&self, sock: &impl std::os::fd::AsFd, ipv6: bool) -> std::io::Result<()> {
        if let Some(ttl) = self.ttl {
            halyard_tcp_md5::ttl::set_ttl(sock, ipv6, ttl)?;
        }
        if let Some(min) = self.min_ttl {
            halyard_tcp_md5::ttl::set_min_ttl(sock, ipv6, min)?;
        }
        if let Some(s) = self.stall_timeout_s {
            halyard_tcp_md5::set_user_timeout(sock, u32::from(s) * 1000)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("local_asn", &self.local_asn)
            .field("peer_asn", &self.peer_asn)
            .field("router_id", &self.router_id)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("hold_time", &self.hold_time)
            .field("connect_retry_time", &self.connect_retry_time)
            .field("next_hop_v6", &self.next_hop_v6)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("graceful_restart", &self.graceful_restart)
            .field("bfd", &self.bfd)
            .field("ttl_security", &self.ttl_security)
            .field("multihop_ttl", &self.multihop_ttl)
            .finish()
    }
}

impl PeerConfig {
    pub fn new(name: impl Into<String>, local_asn: u32, router_id: Ipv4Addr, address: IpAddr) -> Self {
        Self {
            name: name.into(),
            local_asn,
            peer_asn: None,
            router_id,
            address,
            port: 179,
            hold_time: 90,
            connect_retry_time: 5,
            next_hop_v6: None,
            password: None,
            graceful_restart: None,
            bfd: None,
            ttl_security: false,
            multihop_ttl: None,
        }
    }

    /// Whether going from `self` to `new` needs a new session. What is negotiated in OPEN (AS
    /// numbers, router id, hold time, graceful restart) or belongs to the TCP connection
    /// (address, port, MD5 key, TTL and GTSM) does; the rest ([`PeerConfig::bfd`], the
    /// connect-retry time, the IPv6 next hop, the name) is applied to the running session
    /// through [`PeerChannels::update`].
    pub fn needs_reset(&self, new: &PeerConfig) -> bool {
        let live = |c: &PeerConfig| PeerConfig {
            name: String::new(),
            connect_retry_time: 0,
            next_hop_v6: None,
            bfd: None,
            ..c.clone()
        };
        live(self) != live(new)
    }

    /// Whether the session is eBGP as configured: a peer AS other than ours. With no peer AS
    /// configured we cannot know before OPEN, and the TTL is left as for iBGP.
    pub fn is_ebgp(&self) -> bool {
        self.peer_asn.is_some_and(|a| a != self.local_asn)
    }

    /// The TTL rules for this peer:
    /// - GTSM ([`Self::ttl_security`], RFC 5082 §3): send with 255, accept at least
    ///   255 - hops + 1 (hops: [`Self::multihop_ttl`], else 1; so 255 for a neighbour on the
    ///   link), whatever the session type.
    /// - eBGP: send with [`Self::multihop_ttl`], else 1: a directly connected peer
    ///   (RFC 4271 §5.1.3 and common practice, BIRD's and FRR's default), so a session to an
    ///   eBGP peer that is further away does not come up by accident.
    /// - iBGP (or an unknown peer AS): [`Self::multihop_ttl`], else the kernel default.
    pub fn ttl_policy(&self) -> TtlPolicy {
        let hops = self.multihop_ttl.map(|h| h.max(1));
        if self.ttl_security {
            // A hold time of 0 (no keepalives) still gets a bound: the connect-retry time.
            let stall = if self.hold_time > 0 { self.hold_time } else { self.connect_retry_time.max(3) };
            return TtlPolicy {
                ttl: Some(255),
                min_ttl: Some(255 - hops.unwrap_or(1) + 1),
                stall_timeout_s: Some(stall),
            };
        }
        if self.is_ebgp() {
            return TtlPolicy { ttl: Some(hops.unwrap_or(1)), ..TtlPolicy::default() };
        }
        TtlPolicy { ttl: hops, ..TtlPolicy::default() }
    }
}

/// Where a session gets the routes to advertise.
#[derive(Debug)]
pub enum RouteFeed {
    /// The whole desired Adj-RIB-Out; the session diffs each new table against the last one it
    /// sent (and keeps that one). Suits a caller that owns a few routes (the agent).
    Table(watch::Receiver<Arc<Advertisements>>),
    /// Changes only, from a RIB that keeps the table itself (the relay): the session keeps no
    /// copy. On Established and on ROUTE-REFRESH it asks `rib` for the whole table
    /// ([`Learned::TableWanted`]); changes that arrive while the session is down are dropped.
    Deltas { rx: mpsc::UnboundedReceiver<RouteDelta>, rib: mpsc::UnboundedSender<Learned> },
}

impl From<watch::Receiver<Arc<Advertisements>>> for RouteFeed {
    fn from(rx: watch::Receiver<Arc<Advertisements>>) -> Self {
        RouteFeed::Table(rx)
    }
}

/// One step of a change to a peer's Adj-RIB-Out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// Advertise (or replace) these prefixes, all with these attributes: they go out together,
    /// as many per UPDATE as fit (RFC 4271 §4.3).
    Announce(Arc<RouteAttrs>, Vec<Prefix>),
    Withdraw(Vec<Prefix>),
}

/// A batch of changes for one peer, applied in order (so a prefix changed twice in one batch
/// ends in its last state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteDelta {
    pub changes: Vec<RouteChange>,
    /// This batch completes the whole table asked for by [`Learned::TableWanted`] with this
    /// generation; End-of-RIB follows it after Established (RFC 4724 §2).
    pub table_done: Option<u64>,
}

impl RouteDelta {
    /// Appends an announcement, joining the previous one when the attributes are the same `Arc`.
    pub fn announce(&mut self, attrs: &Arc<RouteAttrs>, prefix: Prefix) {
        match self.changes.last_mut() {
            Some(RouteChange::Announce(a, v)) if Arc::ptr_eq(a, attrs) => v.push(prefix),
            _ => self.changes.push(RouteChange::Announce(Arc::clone(attrs), vec![prefix])),
        }
    }

    /// Appends a withdrawal, joining the previous one.
    pub fn withdraw(&mut self, prefix: Prefix) {
        match self.changes.last_mut() {
            Some(RouteChange::Withdraw(v)) => v.push(prefix),
            _ => self.changes.push(RouteChange::Withdraw(vec![prefix])),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.table_done.is_none()
    }
}

/// What a session tells the RIB that relays its routes (and, in [`RouteFeed::Deltas`] mode,
/// feeds it). With a RIB attached, the RIB keeps the Adj-RIB-In: the session only counts UPDATEs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    /// One UPDATE's routes: every announced prefix carries `attrs`, and `info` (next hops,
    /// ORIGIN, MED, LOCAL_PREF and the sender, for best-path selection and kernel import).
    Update { from: IpAddr, attrs: Arc<RouteAttrs>, info: Arc<PathInfo>, announced: Vec<Prefix>, withdrawn: Vec<Prefix> },
    /// The peer sent End-of-RIB for `family` (RFC 4724 §2): its initial table is complete.
    EndOfRib { from: IpAddr, family: AfiSafi },
    /// The session went down: forget everything learned from this peer (stale routes included).
    Down { from: IpAddr },
    /// The peer is restarting (RFC 4724 §4.2): keep its routes of `families`, marked stale, and
    /// forget the others. A stale route stops being stale when the peer sends it again.
    Stale { from: IpAddr, families: Vec<AfiSafi> },
    /// End-of-RIB from the restarted peer, or its time ran out: forget its routes of `family`
    /// that are still stale.
    StaleEnd { from: IpAddr, family: AfiSafi },
    /// The session needs the whole table (it reached Established, or the peer sent a
    /// ROUTE-REFRESH): answer with a [`RouteDelta`] whose `table_done` is `generation`.
    TableWanted { from: IpAddr, generation: u64 },
}

/// The channels one peer's driver works with.
#[derive(Debug)]
pub struct PeerChannels {
    /// What to advertise.
    pub routes: RouteFeed,
    pub status: Arc<Mutex<PeerStatus>>,
    /// Turns true to stop the session.
    pub stop: watch::Receiver<bool>,
    /// Connections the peer opened to us, from [`listen`]; `None`: we only dial out.
    pub incoming: Option<mpsc::Receiver<TcpStream>>,
    /// Where to report received routes; `None`: they are only recorded in the status.
    pub learned: Option<mpsc::UnboundedSender<Learned>>,
    /// New configurations for the running session; only what does not need a reset is taken
    /// from them (see [`PeerConfig::needs_reset`]). `None`: the configuration never changes.
    pub update: Option<watch::Receiver<PeerConfig>>,
}

/// What the API and CLI show about a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    pub state: Option<State>,
    pub peer_asn: Option<u32>,
    pub peer_router_id: Option<Ipv4Addr>,
    pub hold_time: Option<u16>,
    pub established_since: Option<SystemTime>,
    pub families: Vec<AfiSafi>,
    /// Adj-RIB-In: prefixes the peer sent us. Empty
    /// when a RIB is attached ([`PeerChannels::learned`]): the RIB keeps them.
    pub received: BTreeMap<Prefix, ()>,
    /// Adj-RIB-Out as sent (shared with the driver, not copied). It may list prefixes of a
    /// family the session does not carry; `advertised_count` counts only what went out. Both
    /// stay empty with [`RouteFeed::Deltas`]: the RIB knows what it sent.
    pub advertised: Arc<Advertisements>,
    pub advertised_count: usize,
    pub last_error: Option<String>,
    pub updates_in: u64,
    pub updates_out: u64,
    /// The BFD session's status; `None` when BFD is not configured (or could not start: see
    /// `last_error`).
    pub bfd: Option<BfdStatus>,
    /// Of `received`, the routes kept for a restarting peer and not sent again yet (RFC 4724
    /// §4.2). Always 0 with a RIB attached: it marks them.
    pub stale: usize,
}

/// OpenSent/OpenConfirm hold timer with GTSM on (see `run_peer`).
pub const GTSM_OPEN_HOLD_TIME_MS: Millis = 30_000;

/// Encoded UPDATEs are written in chunks of about this size (many messages per `write`).
const WRITE_CHUNK: usize = 64 * 1024;

struct Conn {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
    local: SocketAddr,
    enc: EncodeCxt,
    dec: DecodeCxt,
    families: Vec<AfiSafi>,
    /// The graceful restart capability of the peer's OPEN on this connection.
    peer_gr: Option<GracefulRestart>,
}

struct Driver {
    cfg: PeerConfig,
    fsm: Fsm,
    status: Arc<Mutex<PeerStatus>>,
    conn: Option<Conn>,
    connecting: Option<tokio::task::JoinHandle<std::io::Result<TcpStream>>>,
    /// The last Adj-RIB-Out the peer was synced to (prefixes of families the session does not
    /// carry included: they were skipped, and are skipped again on withdrawal).
    sent: Arc<Advertisements>,
    epoch: Instant,
    /// A session of this process reached Established (ends the RFC 4724 restart state).
    was_established: bool,
    learned: Option<mpsc::UnboundedSender<Learned>>,
    /// Set with [`RouteFeed::Deltas`].
    deltas: Option<DeltaFeed>,
    /// Graceful restart helper state (RFC 4724 §4.2).
    gr: GrHelper,
    /// Stale prefixes in [`PeerStatus::received`] (no RIB attached).
    stale: std::collections::BTreeSet<Prefix>,
    /// The session is Established (between `Action::Established` and `Action::Down`).
    up: bool,
}

/// The session's side of [`RouteFeed::Deltas`].
struct DeltaFeed {
    rib: mpsc::UnboundedSender<Learned>,
    /// Of the last [`Learned::TableWanted`] sent.
    generation: u64,
    /// End-of-RIB is due once the table of this generation has gone out.
    eor_after: Option<u64>,
}

impl Driver {
    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    fn set_status(&self, f: impl FnOnce(&mut PeerStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn is_ibgp(&self, peer_asn: u32) -> bool {
        peer_asn == self.cfg.local_asn
    }

    async fn send(&mut self, msg: &Message) -> std::io::Result<()> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let bytes = msg.encode(&conn.enc).map_err(std::io::Error::other)?;
        conn.writer.write_all(&bytes).await
    }

    /// Writes already encoded messages.
    async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        conn.writer.write_all(bytes).await
    }

    /// Asks the RIB for the whole table ([`RouteFeed::Deltas`]); `eor`: End-of-RIB follows it.
    fn want_table(&mut self, eor: bool) {
        let from = self.cfg.address;
        if let Some(f) = self.deltas.as_mut() {
            f.generation += 1;
            if eor {
                f.eor_after = Some(f.generation);
            }
            let _ = f.rib.send(Learned::TableWanted { from, generation: f.generation });
        }
    }

    /// Carries out FSM actions in order. `update` is the UPDATE that produced `ProcessUpdate`.
    async fn act(&mut self, actions: Vec<Action>, routes: &Arc<Advertisements>, update: Option<Update>) {
        let mut update = update;
        // The NOTIFICATION sent in this batch, if any (decides whether a Down is a restart).
        let mut notified: Option<u8> = None;
        for a in actions {
            let res = match a {
                Action::Connect => {
                    let target = SocketAddr::new(self.cfg.address, self.cfg.port);
                    let password = self.cfg.password.clone();
                    let ttl = self.cfg.ttl_policy();
                    self.connecting = Some(tokio::spawn(dial(target, password, ttl)));
                    Ok(())
                }
                Action::Disconnect => {
                    if let Some(mut c) = self.conn.take() {
                        let _ = c.writer.shutdown().await;
                    }
                    if let Some(h) = self.connecting.take() {
                        h.abort();
                    }
                    Ok(())
                }
                Action::SendOpen { hold_time } => {
                    let mut caps = vec![
                        Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
                        Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
                        Capability::RouteRefresh,
                        Capability::FourOctetAs(self.cfg.local_asn),
                    ];
                    if let Some(restart_time) = self.cfg.graceful_restart {
                        // RFC 4724 §3: R set while we come back from a restart (the first session
                        // of this process); F set: we keep forwarding (the datapath survives).
                        let families = [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]
                            .into_iter()
                            .map(|family| GrFamily { family, forwarding_state: true })
                            .collect();
                        caps.push(Capability::GracefulRestart(GracefulRestart {
                            restart_state: !self.was_established,
                            notification: false,
                            restart_time: restart_time.min(4095),
                            families,
                        }));
                    }
                    let open = Open::new(self.cfg.local_asn, hold_time, self.cfg.router_id, caps);
                    self.send(&Message::Open(open)).await
                }
                Action::SendKeepalive => self.send(&Message::Keepalive).await,
                Action::SendNotification { code, subcode, data } => {
                    notified = Some(code);
                    let n = Notification::new(crate::wire::ErrorCode::from_codes(code, subcode), data);
                    tracing::warn!(peer = %self.cfg.name, "sending NOTIFICATION: {n}");
                    self.send(&Message::Notification(n)).await
                }
                Action::Established(neg) => {
                    tracing::info!(peer = %self.cfg.name, asn = neg.peer_asn, hold = neg.hold_time, "session established");
                    let bfd = self.status.lock().unwrap_or_else(|e| e.into_inner()).bfd;
                    if let Some(b) = bfd.filter(|b| b.state != BfdState::Up) {
                        // RFC 5882 §4.3: not waiting for BFD; the session is torn down only on
                        // an Up → Down transition.
                        tracing::info!(peer = %self.cfg.name, "session established while BFD is {}", b.state);
                    }
                    let families = self.conn.as_ref().map(|c| c.families.clone()).unwrap_or_default();
                    let peer_gr = self.conn.as_ref().and_then(|c| c.peer_gr.clone());
                    self.up = true;
                    for f in self.gr.established(self.now(), peer_gr) {
                        // RFC 4724 §4.2: the new OPEN does not keep this family's forwarding.
                        tracing::info!(peer = %self.cfg.name, "graceful restart: dropping the stale {f:?} routes");
                        self.flush_stale(f);
                    }
                    self.set_status(|s| {
                        s.state = Some(State::Established);
                        s.peer_asn = Some(neg.peer_asn);
                        s.peer_router_id = Some(neg.peer_router_id);
                        s.hold_time = Some(neg.hold_time);
                        s.established_since = Some(SystemTime::now());
                        s.families = families.clone();
                        s.last_error = None;
                    });
                    self.sent = Arc::default();
                    self.was_established = true;
                    if self.deltas.is_some() {
                        // The table comes from the RIB; End-of-RIB follows it (`apply_delta`).
                        self.want_table(true);
                        continue;
                    }
                    let r = self.sync_routes(routes).await;
                    // End-of-RIB per negotiated family (RFC 4724 §2), after the initial table.
                    for f in families {
                        if r.is_ok() {
                            let _ = self.send(&Message::Update(Update::end_of_rib(f))).await;
                        }
                    }
                    r
                }
                Action::Down { reason } => {
                    tracing::warn!(peer = %self.cfg.name, "session down: {reason}");
                    // A restart (RFC 4724 §4.2): the connection failed without a NOTIFICATION,
                    // or our hold timer expired (we sent Hold Timer Expired, code 4).
                    let restartable = match notified {
                        Some(code) => code == 4,
                        None => reason == crate::fsm::TCP_LOST,
                    };
                    let was_up = std::mem::replace(&mut self.up, false);
                    let kept = if was_up {
                        self.gr.lost(self.now(), self.cfg.graceful_restart.is_some(), restartable)
                    } else if self.gr.stale().next().is_some() {
                        // A failed attempt while the peer restarts: its stale routes wait on.
                        Some(self.gr.stale().collect())
                    } else {
                        None
                    };
                    let from = self.cfg.address;
                    match &kept {
                        Some(families) if was_up => {
                            tracing::info!(
                                peer = %self.cfg.name,
                                "graceful restart: keeping the peer's {families:?} routes as stale for up to {} s",
                                self.gr.deadline().map_or(0, |d| d.saturating_sub(self.now()) / 1000)
                            );
                            if let Some(tx) = &self.learned {
                                let _ = tx.send(Learned::Stale { from, families: families.clone() });
                            }
                        }
                        Some(_) => {}
                        None => {
                            if let Some(tx) = &self.learned {
                                let _ = tx.send(Learned::Down { from });
                            }
                        }
                    }
                    let mut stale = std::mem::take(&mut self.stale);
                    if let Some(f) = self.deltas.as_mut() {
                        f.eor_after = None;
                    }
                    self.sent = Arc::default();
                    self.set_status(|s| {
                        s.established_since = None;
                        match &kept {
                            Some(families) => {
                                s.received.retain(|p, _| families.contains(&family_of(p)));
                                stale.extend(s.received.keys().copied());
                            }
                            None => {
                                s.received.clear();
                                stale.clear();
                            }
                        }
                        s.stale = stale.len();
                        s.advertised = Arc::default();
                        s.advertised_count = 0;
                        s.last_error = Some(reason);
                    });
                    self.stale = stale;
                    Ok(())
                }
                Action::ProcessUpdate => {
                    if let Some(u) = update.take() {
                        if let Some(f) = u.end_of_rib_family() {
                            if self.gr.end_of_rib(f) {
                                tracing::info!(peer = %self.cfg.name, "graceful restart: End-of-RIB for {f:?}, dropping what was not sent again");
                                self.flush_stale(f);
                            }
                            if let Some(tx) = &self.learned {
                                let _ = tx.send(Learned::EndOfRib { from: self.cfg.address, family: f });
                            }
                        }
                        self.import(u);
                    }
                    Ok(())
                }
            };
            if let Err(e) = res {
                tracing::warn!(peer = %self.cfg.name, "write failed: {e}");
                let more = self.fsm.handle(self.now(), Event::TcpFailed);
                // TcpFailed only yields Disconnect/Down, which never fail: no recursion needed.
                Box::pin(self.act(more, routes, None)).await;
                break;
            }
        }
        let state = self.fsm.state();
        self.set_status(|s| s.state = Some(state));
    }

    /// Forgets the peer's still stale routes of `family` (RFC 4724 §4.2).
    fn flush_stale(&mut self, family: AfiSafi) {
        if let Some(tx) = &self.learned {
            let _ = tx.send(Learned::StaleEnd { from: self.cfg.address, family });
        }
        let gone: Vec<Prefix> = self.stale.iter().filter(|p| family_of(p) == family).copied().collect();
        for p in &gone {
            self.stale.remove(p);
        }
        let left = self.stale.len();
        self.set_status(|s| {
            for p in &gone {
                s.received.remove(p);
            }
            s.stale = left;
        });
    }

    /// The restart or stale-path time ran out ([`GrHelper::deadline`]).
    fn expire_stale(&mut self) {
        for f in self.gr.expire(self.now()) {
            tracing::info!(peer = %self.cfg.name, "graceful restart: time is up, dropping the stale {f:?} routes");
            self.flush_stale(f);
        }
    }

    /// Adj-RIB-In bookkeeping (no import policy yet: everything is recorded, nothing installed).
    fn import(&mut self, u: Update) {
        // RFC 4271 §9.1.2: a route whose AS_PATH already contains our AS is a loop; RFC 7606
        // treat-as-withdraw likewise turns the announcement into a withdrawal.
        let path = u.effective_as_path();
        let looped = path.as_ref().is_some_and(|p| p.asns().any(|a| a == self.cfg.local_asn));
        let withdraw = matches!(u.outcome(), Some(crate::wire::Outcome::TreatAsWithdraw));
        let u = if looped || withdraw { u.into_withdraw() } else { u };
        let mut announced: Vec<Prefix> = u.nlri.iter().map(|p| Prefix::V4(*p)).collect();
        let mut withdrawn: Vec<Prefix> = u.withdrawn.iter().map(|p| Prefix::V4(*p)).collect();
        for a in &u.attributes {
            match a {
                PathAttribute::MpReach(MpReach::Ipv6Unicast { nlri, .. }) => {
                    announced.extend(nlri.iter().map(|p| Prefix::V6(*p)));
                }
                PathAttribute::MpReach(MpReach::Ipv4Unicast { nlri, .. }) => {
                    announced.extend(nlri.iter().map(|p| Prefix::V4(*p)));
                }
                PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(w)) => {
                    withdrawn.extend(w.iter().map(|p| Prefix::V6(*p)))
                }
                PathAttribute::MpUnreach(MpUnreach::Ipv4Unicast(w)) => {
                    withdrawn.extend(w.iter().map(|p| Prefix::V4(*p)))
                }
                _ => {}
            }
        }
        let rib = self.learned.is_some();
        // Sent again or withdrawn: no longer stale (RFC 4724 §4.2).
        for p in announced.iter().chain(&withdrawn) {
            self.stale.remove(p);
        }
        let stale = self.stale.len();
        self.set_status(|s| {
            s.updates_in += 1;
            s.stale = stale;
            if rib {
                return; // the RIB keeps the Adj-RIB-In
            }
            for p in &withdrawn {
                s.received.remove(p);
            }
            s.received.extend(announced.iter().map(|p| (*p, ())));
        });
        if let Some(tx) = &self.learned
            && (!announced.is_empty() || !withdrawn.is_empty())
        {
            // Transitive attributes travel on; MED and LOCAL_PREF stay in this AS (RFC 4271 §5.1).
            let attrs = Arc::new(RouteAttrs {
                as_path: path.map(|p| p.asns().collect()).unwrap_or_default(),
                communities: u.communities().cloned().unwrap_or_default(),
                large_communities: u.large_communities().cloned().unwrap_or_default(),
                local_pref: None,
                med: None,
            });
            let info = Arc::new(self.path_info(&u));
            let _ = tx.send(Learned::Update { from: self.cfg.address, attrs, info, announced, withdrawn });
        }
    }

    /// What the RIB needs of `u` besides its [`RouteAttrs`].
    fn path_info(&self, u: &Update) -> PathInfo {
        let (peer_asn, peer_router_id) =
            self.fsm.negotiated().map_or((0, Ipv4Addr::UNSPECIFIED), |n| (n.peer_asn, n.peer_router_id));
        let mut info = PathInfo {
            peer_asn,
            peer_router_id,
            ibgp: peer_asn == self.cfg.local_asn,
            origin: u.origin().map_or(0, |o| *o as u8),
            local_pref: u.local_pref().copied(),
            med: u.med().copied(),
            next_hop_v4_nlri: u.next_hop().map(|a| IpAddr::V4(*a)),
            next_hop_v6: None,
            next_hop_v6_link_local: None,
        };
        for a in &u.attributes {
            match a {
                PathAttribute::MpReach(MpReach::Ipv4Unicast { next_hop, .. }) => {
                    info.next_hop_v4_nlri = Some(match next_hop {
                        NextHop::Ipv4(a) => IpAddr::V4(*a),
                        NextHop::Ipv6(h) => IpAddr::V6(h.global),
                    });
                }
                PathAttribute::MpReach(MpReach::Ipv6Unicast { next_hop, .. }) => {
                    info.next_hop_v6 = Some(next_hop.global);
                    info.next_hop_v6_link_local = next_hop.link_local;
                }
                _ => {}
            }
        }
        info
    }

    /// How routes go out on this session; `None` before Established.
    fn export(&self) -> Option<Export> {
        let conn = self.conn.as_ref()?;
        let peer_asn = self.fsm.negotiated()?.peer_asn;
        let next_hop_v4 = match conn.local.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        };
        let next_hop_v6 = match conn.local.ip() {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => self.cfg.next_hop_v6,
        };
        let v4 = conn.families.contains(&AfiSafi::IPV4_UNICAST);
        let v6 = conn.families.contains(&AfiSafi::IPV6_UNICAST);
        Some(Export {
            enc: conn.enc.clone(),
            ibgp: self.is_ibgp(peer_asn),
            local_asn: self.cfg.local_asn,
            next_hop_v4: next_hop_v4.filter(|_| v4),
            next_hop_v6: next_hop_v6.filter(|_| v6),
        })
    }

    /// Sends the difference between what the peer has and `want`, as packed UPDATEs.
    async fn sync_routes(&mut self, want: &Arc<Advertisements>) -> std::io::Result<()> {
        let Some(x) = self.export() else { return Ok(()) };
        let withdraw: Vec<Prefix> = self.sent.keys().filter(|p| !want.contains_key(p)).copied().collect();
        // Group what changed by attribute set, so one UPDATE carries many prefixes.
        let mut groups: Vec<(&Arc<RouteAttrs>, Vec<Prefix>)> = Vec::new();
        for (p, attrs) in want.iter() {
            if self.sent.get(p).is_some_and(|s| Arc::ptr_eq(s, attrs) || s == attrs) {
                continue;
            }
            match groups.iter_mut().find(|g| Arc::ptr_eq(g.0, attrs) || g.0 == attrs) {
                Some(g) => g.1.push(*p),
                None => groups.push((attrs, vec![*p])),
            }
        }
        let mut out = Vec::new();
        let mut count = x.withdraw(&withdraw, &mut out).map_err(std::io::Error::other)?;
        for (attrs, prefixes) in &groups {
            count += x.announce(attrs, prefixes, &mut out).map_err(std::io::Error::other)?;
            if out.len() >= WRITE_CHUNK {
                self.send_raw(&out).await?;
                out.clear();
            }
        }
        self.send_raw(&out).await?;
        self.sent = Arc::clone(want);
        let advertised_count = want.keys().filter(|p| x.carries(p)).count();
        let sent = Arc::clone(want);
        self.set_status(|s| {
            s.advertised = sent;
            s.advertised_count = advertised_count;
            s.updates_out += count;
        });
        Ok(())
    }

    /// A new next hop for IPv6 prefixes on an IPv4 session, without a reset: with a next hop
    /// before and after, the IPv6 routes are announced again with the new one (an implicit
    /// replace, RFC 4271 §3.1); when one side has none, they are withdrawn under the old
    /// settings and announced under the new ones.
    async fn change_next_hop_v6(
        &mut self,
        new: Option<Ipv6Addr>,
        current: &Arc<Advertisements>,
    ) -> std::io::Result<()> {
        let established = self.fsm.state() == State::Established && self.deltas.is_none();
        if established && !(self.cfg.next_hop_v6.is_some() && new.is_some()) {
            let without: Advertisements =
                current.iter().filter(|(p, _)| matches!(p, Prefix::V4(_))).map(|(p, a)| (*p, a.clone())).collect();
            self.sync_routes(&Arc::new(without)).await?;
        }
        tracing::info!(peer = %self.cfg.name, next_hop = ?new, "IPv6 next hop changed: announcing the IPv6 routes again");
        self.cfg.next_hop_v6 = new;
        if established {
            // Forget what was sent for IPv6, so the sync announces it all again.
            let kept: Advertisements =
                self.sent.iter().filter(|(p, _)| matches!(p, Prefix::V4(_))).map(|(p, a)| (*p, a.clone())).collect();
            self.sent = Arc::new(kept);
            self.sync_routes(current).await?;
        }
        Ok(())
    }

    /// Sends one batch of changes from the RIB ([`RouteFeed::Deltas`]), then End-of-RIB if it
    /// completes the table asked for on Established. Outside Established it is dropped: the
    /// table is asked for again on the next Established.
    async fn apply_delta(&mut self, delta: RouteDelta) -> std::io::Result<()> {
        if self.fsm.state() != State::Established {
            return Ok(());
        }
        let Some(x) = self.export() else { return Ok(()) };
        let mut out = Vec::new();
        let mut count = 0;
        for change in &delta.changes {
            count += match change {
                RouteChange::Announce(attrs, prefixes) => x.announce(attrs, prefixes, &mut out),
                RouteChange::Withdraw(prefixes) => x.withdraw(prefixes, &mut out),
            }
            .map_err(std::io::Error::other)?;
            if out.len() >= WRITE_CHUNK {
                self.send_raw(&out).await?;
                out.clear();
            }
        }
        let eor = self.deltas.as_ref().and_then(|f| f.eor_after);
        if delta.table_done.is_some() && delta.table_done == eor {
            // End-of-RIB per negotiated family (RFC 4724 §2), after the initial table.
            let families = self.conn.as_ref().map(|c| c.families.clone()).unwrap_or_default();
            for f in families {
                Message::Update(Update::end_of_rib(f)).encode_into(&x.enc, &mut out).map_err(std::io::Error::other)?;
            }
            if let Some(f) = self.deltas.as_mut() {
                f.eor_after = None;
            }
        }
        self.send_raw(&out).await?;
        self.set_status(|s| s.updates_out += count);
        Ok(())
    }

    /// Turns one decoded message into FSM events (and the side data they need).
    fn on_open(&mut self, open: &Open) -> Event {
        let four = open.four_octet_as().is_some();
        let families: Vec<AfiSafi> = open.families().collect();
        if let Some(c) = self.conn.as_mut() {
            c.enc = EncodeCxt::new(four);
            c.dec = DecodeCxt::new(four);
            // RFC 4760 §8: a peer without MP capabilities speaks IPv4 unicast only.
            c.peer_gr = open.capabilities.iter().find_map(|c| match c {
                Capability::GracefulRestart(g) => Some(g.clone()),
                _ => None,
            });
            c.families = if families.is_empty() {
                vec![AfiSafi::IPV4_UNICAST]
            } else {
                [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST].into_iter().filter(|f| families.contains(f)).collect()
            };
        }
        Event::Open(PeerOpen { asn: open.asn(), hold_time: open.hold_time, router_id: open.bgp_id })
    }
}

// ===== UPDATE packing =====

/// How routes go out on one session, from what it negotiated.
struct Export {
    enc: EncodeCxt,
    ibgp: bool,
    local_asn: u32,
    /// `Some` when the session carries IPv4 unicast and has an IPv4 next hop.
    next_hop_v4: Option<Ipv4Addr>,
    /// `Some` when the session carries IPv6 unicast and has an IPv6 next hop.
    next_hop_v6: Option<Ipv6Addr>,
}

impl Export {
    /// Whether prefixes of this family go out on the session (others are skipped).
    fn carries(&self, p: &Prefix) -> bool {
        match p {
            Prefix::V4(_) => self.next_hop_v4.is_some(),
            Prefix::V6(_) => self.next_hop_v6.is_some(),
        }
    }

    fn split(&self, prefixes: &[Prefix]) -> (Vec<Ipv4Prefix>, Vec<Ipv6Prefix>) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for p in prefixes {
            match p {
                Prefix::V4(x) if self.next_hop_v4.is_some() => v4.push(*x),
                Prefix::V6(x) if self.next_hop_v6.is_some() => v6.push(*x),
                _ => {}
            }
        }
        (v4, v6)
    }

    /// Appends UPDATEs withdrawing `prefixes` to `out`; returns how many.
    fn withdraw(&self, prefixes: &[Prefix], out: &mut Vec<u8>) -> Result<u64, EncodeError> {
        let (v4, v6) = self.split(prefixes);
        let mut n = pack(&self.enc, Update::default(), &v4, v4_len, 0, |u, c| set(&mut u.withdrawn, c), out)?;
        let template = Update {
            attributes: vec![PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(Vec::new()))],
            ..Update::default()
        };
        // One more octet once MP_UNREACH_NLRI outgrows a one-octet length.
        n += pack(&self.enc, template, &v6, v6_len, 1, fill_mp_unreach, out)?;
        Ok(n)
    }

    /// Appends UPDATEs announcing `prefixes` with `attrs` to `out`; returns how many.
    fn announce(&self, attrs: &RouteAttrs, prefixes: &[Prefix], out: &mut Vec<u8>) -> Result<u64, EncodeError> {
        let (v4, v6) = self.split(prefixes);
        let base = self.path_attributes(attrs);
        let mut n = 0;
        if let (Some(nh), false) = (self.next_hop_v4, v4.is_empty()) {
            let mut attributes = base.clone();
            attributes.push(PathAttribute::NextHop(nh));
            let template = Update { attributes, ..Update::default() };
            n += pack(&self.enc, template, &v4, v4_len, 0, |u, c| set(&mut u.nlri, c), out)?;
        }
        if let (Some(global), false) = (self.next_hop_v6, v6.is_empty()) {
            let mut attributes = base;
            let next_hop = Ipv6NextHop { global, link_local: None };
            attributes.push(PathAttribute::MpReach(MpReach::Ipv6Unicast { next_hop, nlri: Vec::new() }));
            let template = Update { attributes, ..Update::default() };
            n += pack(&self.enc, template, &v6, v6_len, 1, fill_mp_reach, out)?;
        }
        Ok(n)
    }

    /// RFC 4271 §5.1: ORIGIN, AS_PATH (our AS prepended on eBGP), MED, LOCAL_PREF (iBGP only),
    /// communities.
    fn path_attributes(&self, attrs: &RouteAttrs) -> Vec<PathAttribute> {
        let ibgp = self.ibgp;
        let mut v = vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(if ibgp {
                AsPath::sequence(attrs.as_path.clone())
            } else {
                AsPath::sequence(std::iter::once(self.local_asn).chain(attrs.as_path.iter().copied()).collect())
            }),
        ];
        if let Some(med) = attrs.med {
            v.push(PathAttribute::MultiExitDisc(med));
        }
        if ibgp {
            v.push(PathAttribute::LocalPref(attrs.local_pref.unwrap_or(100)));
        }
        if !attrs.communities.is_empty() {
            v.push(PathAttribute::Communities(attrs.communities.clone()));
        }
        if !attrs.large_communities.is_empty() {
            v.push(PathAttribute::LargeCommunities(attrs.large_communities.clone()));
        }
        v
    }
}

/// NLRI octets of a prefix (RFC 4271 §4.3: a length octet and the significant octets).
fn v4_len(p: &Ipv4Prefix) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

fn v6_len(p: &Ipv6Prefix) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

fn set<P: Copy>(v: &mut Vec<P>, c: &[P]) {
    v.clear();
    v.extend_from_slice(c);
}

fn fill_mp_reach(u: &mut Update, c: &[Ipv6Prefix]) {
    if let Some(PathAttribute::MpReach(MpReach::Ipv6Unicast { nlri, .. })) = u.attributes.last_mut() {
        set(nlri, c);
    }
}

fn fill_mp_unreach(u: &mut Update, c: &[Ipv6Prefix]) {
    if let Some(PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(w))) = u.attributes.last_mut() {
        set(w, c);
    }
}

/// Appends to `out` the UPDATEs that carry `prefixes` in `template`, as many per message as
/// fit in the negotiated size (RFC 4271 §4.3): `fill` puts a run of prefixes in, `grow` is
/// how many octets the template may gain once filled (an attribute length turning extended).
/// Returns the number of messages.
fn pack<P>(
    enc: &EncodeCxt,
    template: Update,
    prefixes: &[P],
    len: fn(&P) -> usize,
    grow: usize,
    fill: impl Fn(&mut Update, &[P]),
    out: &mut Vec<u8>,
) -> Result<u64, EncodeError> {
    if prefixes.is_empty() {
        return Ok(0);
    }
    let mut msg = Message::Update(template);
    let mut scratch = Vec::new();
    let room = enc.max_message_len.saturating_sub(msg.encode_into(enc, &mut scratch)? + grow);
    let mut n = 0;
    let mut start = 0;
    while start < prefixes.len() {
        let (mut end, mut used) = (start, 0);
        while end < prefixes.len() && (end == start || used + len(&prefixes[end]) <= room) {
            used += len(&prefixes[end]);
            end += 1;
        }
        if let Message::Update(u) = &mut msg {
            fill(u, &prefixes[start..end]);
        }
        msg.encode_into(enc, out)?;
        n += 1;
        start = end;
    }
    Ok(n)
}

/// Opens the TCP connection to a peer, signing it with MD5 when a password is set, with the
/// peer's TTL and GTSM minimum set before `connect` so that the SYN and the SYN-ACK are covered
/// (RFC 5082 §3).
async fn dial(target: SocketAddr, password: Option<String>, ttl: TtlPolicy) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    if let Some(pw) = password {
        halyard_tcp_md5::set_md5_key(&socket, target.ip(), pw.as_bytes())?;
    }
    ttl.apply(&socket, target.is_ipv6()).map_err(|e| std::io::Error::new(e.kind(), format!("setting the TTL: {e}")))?;
    socket.connect(target).await
}

/// What [`listen`] needs to know about one peer it accepts connections from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenPeer {
    pub address: IpAddr,
    /// TCP MD5 key (RFC 2385).
    pub password: Option<String>,
    pub ttl: TtlPolicy,
}

impl From<&PeerConfig> for ListenPeer {
    fn from(c: &PeerConfig) -> Self {
        ListenPeer { address: c.address, password: c.password.clone(), ttl: c.ttl_policy() }
    }
}

/// The TTL settings of a listening socket shared by `peers` (see [`listen`]): it sends SYN-ACKs
/// with 255 when any peer uses GTSM (that peer drops anything less), and its GTSM minimum is
/// the least any peer accepts: the strictest value would drop the SYNs of the peers without
/// GTSM (or further away), so it only filters when every peer on it uses GTSM.
pub fn listener_ttl(peers: &[ListenPeer]) -> TtlPolicy {
    let gtsm = peers.iter().any(|p| p.ttl.min_ttl.is_some());
    let floor = peers.iter().map(|p| p.ttl.min_ttl.unwrap_or(0)).min().unwrap_or(0);
    TtlPolicy { ttl: gtsm.then_some(255), min_ttl: (floor > 0).then_some(floor), stall_timeout_s: None }
}

/// Hands connections accepted by a [`listen`] task to the peer they come from.
pub type IncomingRoutes = Arc<Mutex<HashMap<IpAddr, mpsc::Sender<TcpStream>>>>;

/// Accepts BGP connections on `addr` and passes each to the peer with that source address
/// (RFC 4271 §8: a connection from an unconfigured address is closed). Runs until the listener
/// fails.
///
/// `configs` are the peers' MD5 keys and TTL rules. One socket accepts for every peer, and the
/// kernel completes the handshake before we know which peer it is, so GTSM (RFC 5082 §3) is
/// applied in two places:
/// - on the listener, [`listener_ttl`]: SYN-ACKs go out with 255 if any peer uses GTSM, and
///   the minimum TTL is the *least* strict of the peers' (set only when all of them use GTSM:
///   then spoofed SYNs from afar never reach the handshake; the strictest value instead would
///   lock out the peers without GTSM);
/// - on each accepted socket, that peer's own TTL and minimum, before it is handed over: from
///   then on the kernel drops the segments that arrive with less.
///
/// Left open when peers with and without GTSM share the listener: a far-away sender can still
/// complete a handshake, and a segment that arrived before the per-socket minimum was set is
/// already queued. The connection is then closed when that fails the BGP checks (an OPEN from
/// a spoofed source needs the right AS and sequence numbers), as without GTSM.
pub async fn listen(addr: SocketAddr, peers: IncomingRoutes, configs: Vec<ListenPeer>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let v6 = addr.is_ipv6();
    for p in &configs {
        let Some(pw) = &p.password else { continue };
        // On a dual-stack (IPv6) socket an IPv4 peer is keyed by its v4-mapped address.
        let key_addr = match (addr.ip(), p.address) {
            (IpAddr::V6(_), IpAddr::V4(a)) => IpAddr::V6(a.to_ipv6_mapped()),
            _ => p.address,
        };
        halyard_tcp_md5::set_md5_key(&listener, key_addr, pw.as_bytes())?;
    }
    listener_ttl(&configs).apply(&listener, v6)?;
    let ttls: HashMap<IpAddr, TtlPolicy> = configs.iter().map(|p| (p.address, p.ttl)).collect();
    tracing::info!(%addr, "listening for BGP connections");
    loop {
        let (stream, from) = listener.accept().await?;
        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
        let peer = from.ip().to_canonical();
        let tx = peers.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).cloned();
        match tx {
            Some(tx) => {
                if let Some(ttl) = ttls.get(&peer)
                    && let Err(e) = ttl.apply(&stream, v6)
                {
                    tracing::warn!(%from, "closing BGP connection: cannot set its TTL: {e}");
                    continue;
                }
                let _ = tx.send(stream).await;
            }
            None => tracing::info!(%from, "closing BGP connection from an address that is not a configured peer"),
        }
    }
}

/// The address family of a prefix (unicast).
fn family_of(p: &Prefix) -> AfiSafi {
    match p {
        Prefix::V4(_) => AfiSafi::IPV4_UNICAST,
        Prefix::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}

/// Takes a connected stream as the session's connection.
fn adopt(d: &mut Driver, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    // Accepted on a dual-stack socket, an IPv4 session's local address reads ::ffff:a.b.c.d; the
    // next hop must be the IPv4 address.
    let local = SocketAddr::new(local.ip().to_canonical(), local.port());
    let (reader, writer) = stream.into_split();
    d.conn = Some(Conn {
        reader,
        writer,
        buf: Vec::new(),
        local,
        enc: EncodeCxt::default(),
        dec: DecodeCxt::default(),
        families: Vec::new(),
        peer_gr: None,
    });
}

/// Runs one peer until `stop` turns true, advertising what `routes` feeds it.
pub async fn run_peer(cfg: PeerConfig, ch: PeerChannels) {
    let PeerChannels { routes, status, mut stop, mut incoming, learned, mut update } = ch;
    let (mut table, mut delta_rx, deltas) = match routes {
        RouteFeed::Table(rx) => (Some(rx), None, None),
        RouteFeed::Deltas { rx, rib } => (None, Some(rx), Some(DeltaFeed { rib, generation: 0, eor_after: None })),
    };
    let mut fcfg = FsmConfig::new(cfg.local_asn, cfg.peer_asn, cfg.router_id);
    fcfg.hold_time = cfg.hold_time;
    fcfg.connect_retry_time = cfg.connect_retry_time;
    if cfg.ttl_security {
        // With GTSM, a peer that does not use it still gets our OPEN (and ACKs it, so
        // TCP_USER_TIMEOUT does not fire), while everything it sends is dropped: we would wait
        // the whole 4-minute OpenSent hold timer before trying again. A peer answers an OPEN
        // within milliseconds, so 30 s is ample.
        fcfg.open_hold_time_ms = GTSM_OPEN_HOLD_TIME_MS;
    }
    let mut d = Driver {
        fsm: Fsm::new(fcfg),
        cfg,
        status,
        conn: None,
        connecting: None,
        sent: Arc::default(),
        epoch: Instant::now(),
        was_established: false,
        learned,
        deltas,
        gr: GrHelper::default(),
        stale: Default::default(),
        up: false,
    };
    // With deltas the table is the RIB's: `current` stays empty.
    let mut current = table.as_mut().map(|t| t.borrow_and_update().clone()).unwrap_or_default();
    let mut bfd = match d.cfg.bfd {
        Some(bc) => start_bfd(&d, bc).await,
        None => None,
    };
    let mut bfd_last = bfd.as_ref().map(|b| b.status()).unwrap_or_default();
    let first = d.fsm.handle(0, Event::Start);
    d.act(first, &current, None).await;
    let mut read_buf = vec![0u8; 65536];
    loop {
        let deadline = d.fsm.next_deadline().map(|ms| d.epoch + Duration::from_millis(ms));
        tokio::select! {
            _ = async { match deadline { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                let waiting_for_open = d.fsm.state() == State::OpenSent;
                let acts = d.fsm.poll(d.now());
                d.act(acts, &current, None).await;
                if waiting_for_open && d.cfg.ttl_security && d.fsm.state() != State::OpenSent {
                    let hint = "no OPEN from the peer within 30 s with ttl-security on: the peer must use GTSM too \
                                (RFC 5082), or whatever it sends arrives with too low a TTL and is dropped";
                    tracing::warn!(peer = %d.cfg.name, "{hint}");
                    d.set_status(|s| s.last_error = Some(hint.into()));
                }
                restart_if_idle(&mut d, &current).await;
            }
            res = async { match d.connecting.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => {
                d.connecting = None;
                let ev = match res {
                    Ok(Ok(stream)) => {
                        adopt(&mut d, stream);
                        Event::TcpConnected
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %d.cfg.name, "connect failed: {e}");
                        d.set_status(|s| s.last_error = Some(format!("connect: {e}")));
                        Event::TcpFailed
                    }
                    Err(_) => Event::TcpFailed,
                };
                let acts = d.fsm.handle(d.now(), ev);
                d.act(acts, &current, None).await;
                restart_if_idle(&mut d, &current).await;
            }
            n = async { match d.conn.as_mut() { Some(c) => c.reader.read(&mut read_buf).await, None => std::future::pending().await } } => {
                match n {
                    Ok(0) | Err(_) => {
                        let acts = d.fsm.handle(d.now(), Event::TcpFailed);
                        d.act(acts, &current, None).await;
                    }
                    Ok(n) => {
                        if let Some(c) = d.conn.as_mut() { c.buf.extend_from_slice(&read_buf[..n]); }
                        process_frames(&mut d, &current).await;
                    }
                }
                restart_if_idle(&mut d, &current).await;
            }
            accepted = async { match incoming.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                match accepted {
                    None => incoming = None,
                    // Simplified collision handling (RFC 4271 §6.8): while we have no
                    // connection of our own, the peer's connection wins (our dial-out is
                    // dropped); once we have one, the newer connection is closed and the
                    // existing one carries on. CollisionDetectEstablishedState is FALSE.
                    Some(stream) if d.conn.is_none() && matches!(d.fsm.state(), State::Idle | State::Connect | State::Active) => {
                        if let Some(h) = d.connecting.take() {
                            h.abort();
                        }
                        if d.fsm.state() == State::Idle {
                            let acts = d.fsm.handle(d.now(), Event::AutomaticStart);
                            d.act(acts, &current, None).await;
                            if let Some(h) = d.connecting.take() {
                                h.abort();
                            }
                        }
                        tracing::info!(peer = %d.cfg.name, "accepted a connection from the peer");
                        // `listen` set this already when it knew the peer at start; a peer
                        // configured later gets its TTL and GTSM minimum here.
                        let v6 = stream.local_addr().is_ok_and(|a| a.is_ipv6());
                        if let Err(e) = d.cfg.ttl_policy().apply(&stream, v6) {
                            tracing::warn!(peer = %d.cfg.name, "closing the accepted connection: cannot set its TTL: {e}");
                            continue;
                        }
                        adopt(&mut d, stream);
                        let acts = d.fsm.handle(d.now(), Event::TcpConnected);
                        d.act(acts, &current, None).await;
                    }
                    Some(stream) => {
                        tracing::debug!(peer = %d.cfg.name, "closing a second connection from the peer (collision)");
                        drop(stream);
                    }
                }
            }
            changed = async { match table.as_mut() { Some(t) => t.changed().await, None => std::future::pending().await } } => {
                if changed.is_err() { break; }
                current = table.as_mut().map(|t| t.borrow_and_update().clone()).unwrap_or_default();
                if d.fsm.state() == State::Established && let Err(e) = d.sync_routes(&current).await {
                    tracing::warn!(peer = %d.cfg.name, "sending routes failed: {e}");
                    let acts = d.fsm.handle(d.now(), Event::TcpFailed);
                    d.act(acts, &current, None).await;
                }
            }
            delta = async { match delta_rx.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                let Some(delta) = delta else { break };
                if let Err(e) = d.apply_delta(delta).await {
                    tracing::warn!(peer = %d.cfg.name, "sending routes failed: {e}");
                    let acts = d.fsm.handle(d.now(), Event::TcpFailed);
                    d.act(acts, &current, None).await;
                }
            }
            _ = async { match d.gr.deadline() { Some(ms) => tokio::time::sleep_until(d.epoch + Duration::from_millis(ms)).await, None => std::future::pending().await } } => {
                d.expire_stale();
            }
            st = async { match bfd.as_mut() { Some(b) => b.changed().await, None => std::future::pending().await } } => {
                let Some(st) = st else {
                    tracing::warn!(peer = %d.cfg.name, "the BFD driver stopped");
                    bfd = None;
                    continue;
                };
                let prev = std::mem::replace(&mut bfd_last, st);
                d.set_status(|s| s.bfd = Some(st));
                if st.is_failure_after(&prev) {
                    tracing::warn!(peer = %d.cfg.name, "BFD went down ({}): tearing the BGP session down", st.diag);
                    let acts = d.fsm.handle(d.now(), Event::BfdDown);
                    d.act(acts, &current, None).await;
                    restart_if_idle(&mut d, &current).await;
                }
            }
            changed = async { match update.as_mut() { Some(rx) => rx.changed().await, None => std::future::pending().await } } => {
                if changed.is_err() {
                    update = None;
                    continue;
                }
                let new = update.as_mut().map(|rx| rx.borrow_and_update().clone()).unwrap_or_else(|| d.cfg.clone());
                if d.cfg.needs_reset(&new) {
                    // The caller restarts the session for these; nothing to apply here.
                    continue;
                }
                d.cfg.name = new.name.clone();
                if new.connect_retry_time != d.cfg.connect_retry_time {
                    d.cfg.connect_retry_time = new.connect_retry_time;
                    d.fsm.set_connect_retry_time(new.connect_retry_time);
                }
                if new.bfd != d.cfg.bfd {
                    d.cfg.bfd = new.bfd;
                    match new.bfd {
                        Some(bc) => {
                            // Joining the running session while still holding it changes its
                            // timers in place (a Poll Sequence, RFC 5880 §6.8.3): no AdminDown,
                            // so the peer's BFD, and the sessions it protects, stay up.
                            tracing::info!(peer = %d.cfg.name, "BFD settings changed: applied to the running BFD session");
                            let fresh = start_bfd(&d, bc).await;
                            bfd = fresh;
                        }
                        None => {
                            tracing::info!(peer = %d.cfg.name, "BFD turned off (the BGP session stays)");
                            bfd = None;
                            d.set_status(|s| s.bfd = None);
                        }
                    }
                    bfd_last = bfd.as_ref().map(|b| b.status()).unwrap_or_default();
                }
                if new.next_hop_v6 != d.cfg.next_hop_v6
                    && let Err(e) = d.change_next_hop_v6(new.next_hop_v6, &current).await
                {
                    tracing::warn!(peer = %d.cfg.name, "sending routes failed: {e}");
                    let acts = d.fsm.handle(d.now(), Event::TcpFailed);
                    d.act(acts, &current, None).await;
                }
            }
            _ = stop.changed() => {
                if d.cfg.graceful_restart.is_some() && d.fsm.state() == State::Established {
                    // Stopping for a restart: close without a NOTIFICATION (which would end
                    // graceful restart, RFC 4724 §4) so the peer keeps our routes meanwhile.
                    tracing::info!(peer = %d.cfg.name, "closing the session for a graceful restart");
                    if let Some(mut c) = d.conn.take() {
                        let _ = c.writer.shutdown().await;
                    }
                } else {
                    let acts = d.fsm.handle(d.now(), Event::ManualStop);
                    d.act(acts, &current, None).await;
                }
                break;
            }
        }
    }
}

/// Joins the process's BFD driver for the peer address. BGP runs without BFD when that fails
/// (the reason is in the status).
async fn start_bfd(d: &Driver, cfg: BfdConfig) -> Option<BfdSession> {
    let res = match Bfd::global() {
        Ok(bfd) => bfd.add(d.cfg.address, cfg).await,
        Err(e) => Err(e),
    };
    match res {
        Ok(session) => {
            let st = session.status();
            d.set_status(|s| s.bfd = Some(st));
            Some(session)
        }
        Err(e) => {
            tracing::error!(peer = %d.cfg.name, "BFD cannot start, running without it: {e}");
            d.set_status(|s| s.last_error = Some(format!("BFD: {e}")));
            None
        }
    }
}

/// After an error the FSM rests in Idle; start again after the connect-retry time.
async fn restart_if_idle(d: &mut Driver, current: &Arc<Advertisements>) {
    if d.fsm.state() == State::Idle && d.fsm.next_deadline().is_none() {
        tokio::time::sleep(Duration::from_secs(u64::from(d.cfg.connect_retry_time))).await;
        let acts = d.fsm.handle(d.now(), Event::AutomaticStart);
        d.act(acts, current, None).await;
    }
}

/// Decodes every complete message in the connection buffer and feeds the FSM.
async fn process_frames(d: &mut Driver, current: &Arc<Advertisements>) {
    loop {
        let Some(conn) = d.conn.as_mut() else { return };
        let len = match frame_len(&conn.buf, &conn.dec) {
            Ok(Some(len)) if conn.buf.len() >= len => len,
            Ok(_) => return,
            Err(e) => {
                let n = e.notification.clone();
                let ev = Event::MessageError { code: n.code.code(), subcode: n.code.subcode(), data: n.data };
                let acts = d.fsm.handle(d.now(), ev);
                d.act(acts, current, None).await;
                return;
            }
        };
        let frame: Vec<u8> = conn.buf.drain(..len).collect();
        let decoded = Message::decode(&frame, &conn.dec);
        let (ev, update, refresh) = match decoded {
            Ok((Message::Open(open), _)) => (d.on_open(&open), None, false),
            Ok((Message::Keepalive, _)) => (Event::Keepalive, None, false),
            Ok((Message::Update(u), _)) => (Event::Update, Some(u), false),
            Ok((Message::RouteRefresh(_), _)) => (Event::Update, None, true),
            Ok((Message::Notification(n), _)) => {
                tracing::warn!(peer = %d.cfg.name, "NOTIFICATION received: {n}");
                d.set_status(|s| s.last_error = Some(format!("peer sent NOTIFICATION: {n}")));
                (Event::Notification { code: n.code.code(), subcode: n.code.subcode() }, None, false)
            }
            Err(e) => {
                tracing::warn!(peer = %d.cfg.name, "bad message: {}", e.reason);
                let n = e.notification;
                (Event::MessageError { code: n.code.code(), subcode: n.code.subcode(), data: n.data }, None, false)
            }
        };
        let acts = d.fsm.handle(d.now(), ev);
        d.act(acts, current, update).await;
        if refresh && d.fsm.state() == State::Established {
            // RFC 2918: answer a ROUTE-REFRESH by re-sending the whole Adj-RIB-Out.
            if d.deltas.is_some() {
                d.want_table(false);
            } else {
                d.sent = Arc::default();
                let _ = d.sync_routes(current).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let mut c = PeerConfig::new("p", 65001, Ipv4Addr::new(10, 0, 0, 1), "10.0.0.2".parse().unwrap());
        c.password = Some("s3cret-md5".into());
        let d = format!("{c:?}");
        assert!(!d.contains("s3cret-md5") && d.contains("<redacted>"), "{d}");
    }

    fn export() -> Export {
        Export {
            enc: EncodeCxt::new(true),
            ibgp: false,
            local_asn: 65001,
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            next_hop_v6: Some("fd00::1".parse().unwrap()),
        }
    }

    fn hosts_v4(n: u32) -> Vec<Prefix> {
        (0..n).map(|i| Prefix::V4(Ipv4Prefix::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap())).collect()
    }

    fn hosts_v6(n: u32) -> Vec<Prefix> {
        (0..n)
            .map(|i| Prefix::V6(Ipv6Prefix::new(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)), 128).unwrap()))
            .collect()
    }

    /// Splits the packed messages and decodes each, checking the size limit.
    fn decode_all(mut buf: &[u8]) -> Vec<Update> {
        let dec = DecodeCxt::new(true);
        let mut out = Vec::new();
        while !buf.is_empty() {
            let len = frame_len(buf, &dec).unwrap().unwrap();
            assert!(len <= 4096, "{len}");
            match Message::decode(&buf[..len], &dec).unwrap().0 {
                Message::Update(u) => out.push(u),
                m => panic!("{m:?}"),
            }
            buf = &buf[len..];
        }
        out
    }

    fn nlri(u: &Update) -> Vec<Prefix> {
        let mut v: Vec<Prefix> = u.nlri.iter().map(|p| Prefix::V4(*p)).collect();
        for a in &u.attributes {
            if let PathAttribute::MpReach(MpReach::Ipv6Unicast { nlri, .. }) = a {
                v.extend(nlri.iter().map(|p| Prefix::V6(*p)));
            }
        }
        v
    }

    #[test]
    fn announcements_fill_each_update() {
        let x = export();
        let attrs = RouteAttrs { as_path: vec![65100], ..RouteAttrs::default() };
        let mut want = hosts_v4(10_000);
        want.extend(hosts_v6(1_000));
        let mut out = Vec::new();
        let n = x.announce(&attrs, &want, &mut out).unwrap();
        let updates = decode_all(&out);
        assert_eq!(n as usize, updates.len());
        let got: Vec<Prefix> = updates.iter().flat_map(nlri).collect();
        assert_eq!(got, want);
        // 4096 octets hold 800+ IPv4 /32s (5 octets each) and 200+ IPv6 /128s (17 octets).
        let v4 = updates.iter().filter(|u| !u.nlri.is_empty()).count();
        assert_eq!(v4, 10_000_usize.div_ceil(v4_per_update(&updates)));
        assert!(v4 <= 13, "{v4} UPDATEs for 10000 IPv4 routes");
        assert!(updates.len() - v4 <= 5, "{} UPDATEs for 1000 IPv6 routes", updates.len() - v4);
        assert_eq!(updates[0].effective_as_path().unwrap().asns().collect::<Vec<_>>(), [65001, 65100]);
    }

    fn v4_per_update(updates: &[Update]) -> usize {
        updates[0].nlri.len()
    }

    #[test]
    fn withdrawals_fill_each_update() {
        let x = export();
        let mut gone = hosts_v4(5_000);
        gone.extend(hosts_v6(500));
        let mut out = Vec::new();
        let n = x.withdraw(&gone, &mut out).unwrap();
        let updates = decode_all(&out);
        assert_eq!(n as usize, updates.len());
        assert!(updates.len() <= 7 + 3, "{}", updates.len());
        let mut got: Vec<Prefix> = updates.iter().flat_map(|u| u.withdrawn.iter().map(|p| Prefix::V4(*p))).collect();
        for u in &updates {
            for a in &u.attributes {
                if let PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(w)) = a {
                    got.extend(w.iter().map(|p| Prefix::V6(*p)));
                }
            }
        }
        assert_eq!(got, gone);
    }

    #[test]
    fn families_the_session_does_not_carry_are_skipped() {
        let x = Export { next_hop_v6: None, ..export() };
        let mut out = Vec::new();
        assert_eq!(x.announce(&RouteAttrs::default(), &hosts_v6(3), &mut out).unwrap(), 0);
        assert_eq!(x.withdraw(&hosts_v6(3), &mut out).unwrap(), 0);
        assert!(out.is_empty());
        assert!(!x.carries(&hosts_v6(1)[0]) && x.carries(&hosts_v4(1)[0]));
    }

    #[test]
    fn only_what_open_or_tcp_carries_needs_a_reset() {
        let base = PeerConfig::new("p", 65001, "10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let live = [
            PeerConfig { name: "q".into(), ..base.clone() },
            PeerConfig { connect_retry_time: 30, ..base.clone() },
            PeerConfig { next_hop_v6: Some("fd00::2".parse().unwrap()), ..base.clone() },
            PeerConfig { bfd: Some(BfdConfig::default()), ..base.clone() },
        ];
        for c in &live {
            assert!(!base.needs_reset(c), "{c:?}");
        }
        let reset = [
            PeerConfig { local_asn: 65009, ..base.clone() },
            PeerConfig { peer_asn: Some(65000), ..base.clone() },
            PeerConfig { hold_time: 30, ..base.clone() },
            PeerConfig { port: 1179, ..base.clone() },
            PeerConfig { password: Some("x".into()), ..base.clone() },
            PeerConfig { graceful_restart: Some(120), ..base.clone() },
            PeerConfig { ttl_security: true, ..base.clone() },
            PeerConfig { multihop_ttl: Some(3), ..base.clone() },
        ];
        for c in &reset {
            assert!(base.needs_reset(c), "{c:?}");
        }
    }

    #[test]
    fn ttl_follows_the_session_type_multihop_and_gtsm() {
        let mut c = PeerConfig::new("p", 65001, Ipv4Addr::new(10, 0, 0, 1), "10.0.0.2".parse().unwrap());
        // Unknown peer AS: leave the kernel default.
        assert_eq!(c.ttl_policy(), TtlPolicy::default());
        c.peer_asn = Some(65000);
        assert_eq!(c.ttl_policy(), TtlPolicy { ttl: Some(1), ..TtlPolicy::default() }, "eBGP: directly connected");
        c.multihop_ttl = Some(3);
        assert_eq!(c.ttl_policy(), TtlPolicy { ttl: Some(3), ..TtlPolicy::default() });
        c.ttl_security = true;
        assert_eq!(
            c.ttl_policy(),
            TtlPolicy { ttl: Some(255), min_ttl: Some(253), stall_timeout_s: Some(90) },
            "RFC 5082: 255 - 3 + 1"
        );
        c.multihop_ttl = None;
        assert_eq!(c.ttl_policy().min_ttl, Some(255));
        c.multihop_ttl = Some(255);
        assert_eq!(c.ttl_policy().min_ttl, Some(1));
        c.ttl_security = false;
        c.multihop_ttl = None;
        c.peer_asn = Some(65001);
        assert_eq!(c.ttl_policy(), TtlPolicy::default(), "iBGP: kernel default");
        c.multihop_ttl = Some(10);
        assert_eq!(c.ttl_policy().ttl, Some(10));
    }

    #[test]
    fn a_shared_listener_filters_only_as_much_as_its_least_strict_peer() {
        let peer = |ttl, min_ttl| ListenPeer {
            address: "10.0.0.2".parse().unwrap(),
            password: None,
            ttl: TtlPolicy { ttl, min_ttl, stall_timeout_s: None },
        };
        assert_eq!(listener_ttl(&[]), TtlPolicy::default());
        assert_eq!(listener_ttl(&[peer(Some(1), None)]), TtlPolicy::default());
        assert_eq!(
            listener_ttl(&[peer(Some(255), Some(255)), peer(Some(255), Some(254))]),
            TtlPolicy { ttl: Some(255), min_ttl: Some(254), stall_timeout_s: None }
        );
        // A peer without GTSM on the same socket: no minimum on the listener, but SYN-ACKs
        // still go out with 255 for the GTSM peer.
        assert_eq!(
            listener_ttl(&[peer(Some(255), Some(255)), peer(Some(1), None)]),
            TtlPolicy { ttl: Some(255), min_ttl: None, stall_timeout_s: None }
        );
    }

    #[test]
    fn deltas_join_runs_of_the_same_change() {
        let a = Arc::new(RouteAttrs::default());
        let b = Arc::new(RouteAttrs { as_path: vec![1], ..RouteAttrs::default() });
        let p = hosts_v4(5);
        let mut d = RouteDelta::default();
        assert!(d.is_empty());
        d.announce(&a, p[0]);
        d.announce(&a, p[1]);
        d.withdraw(p[2]);
        d.withdraw(p[3]);
        d.announce(&b, p[4]);
        d.announce(&a, p[2]);
        assert_eq!(
            d.changes,
            [
                RouteChange::Announce(a.clone(), vec![p[0], p[1]]),
                RouteChange::Withdraw(vec![p[2], p[3]]),
                RouteChange::Announce(b, vec![p[4]]),
                RouteChange::Announce(a, vec![p[2]]),
            ]
        );
    }
}
