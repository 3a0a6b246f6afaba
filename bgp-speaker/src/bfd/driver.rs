//! The BFD driver: sockets and timers for every session of the process, on a thread of its own
//! (with its own single-threaded tokio runtime, so sessions outlive any one caller's runtime).
//!
//! ```text
//!  Bfd::add(peer, cfg) ──▶ ┌──────────────── thread "halyard-bfd" ───────────────────┐
//!  BfdSession (drop:       │  UDP [::]:3784 ──▶ TTL 255? ──▶ decode ──▶ demux by Your │
//!   AdminDown, forget) ──▶ │  (IP_RECVTTL,      (RFC 5881    (§6.8.6)   Discriminator,│
//!                          │   RECVHOPLIMIT)      §5)                   or source     │
//!                          │                                    │                     │
//!                          │  timers ──▶ Machine (pure, one per peer) ──▶ UDP from    │
//!                          │                                    │   49152–65535, TTL  │
//!                          │                                    │   255, to peer:3784 │
//!                          └────────────────────────────────────┼─────────────────────┘
//!                                       watch<BfdStatus> ◀──────┘ (one per session)
//! ```
//!
//! RFC 5881 §4: Control packets go to UDP port 3784 from a source port in 49152–65535 that
//! stays the same for the session (each session has its own sending socket, so the port is
//! unique on the system). §5: they are sent with TTL / Hop Limit 255, and received ones with any
//! other value are dropped (GTSM, RFC 5082).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::BfdConfig;
use super::machine::{Machine, Micros};
use super::packet::{BfdState, ControlPacket, Diag};
use halyard_tcp_md5::ttl;

/// RFC 5881 §4: the destination port of single-hop Control packets.
pub const CONTROL_PORT: u16 = 3784;
/// RFC 5881 §4: the source port range.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// RFC 5881 §5: the TTL / Hop Limit sent and required.
pub const TTL: u8 = 255;

/// Where the driver listens and which port it sends to (tests use other ports on loopback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverOptions {
    /// `[::]:3784` by default (dual-stack; `0.0.0.0:3784` when the host has no IPv6).
    pub listen: SocketAddr,
    pub peer_port: u16,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            listen: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), CONTROL_PORT),
            peer_port: CONTROL_PORT,
        }
    }
}

/// What a session's owner sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BfdStatus {
    pub state: BfdState,
    /// Why we last left Up (RFC 5880 §4.1).
    pub diag: Diag,
    /// The state the peer last reported: a peer in AdminDown takes us Down, but per RFC 5882
    /// §3.2 that must not take the client session (BGP) down.
    pub remote_state: BfdState,
    pub local_disc: u32,
    pub remote_disc: u32,
}

impl BfdStatus {
    /// RFC 5882 §3.2: an Up → Down transition the client should act on (not one caused by the
    /// peer going AdminDown, nor our own AdminDown). Changes seen through a `watch` may skip a
    /// step (Up → Down → Init reads as Up → Init), so leaving Up for Down or Init counts.
    pub fn is_failure_after(&self, previous: &BfdStatus) -> bool {
        previous.state == BfdState::Up
            && matches!(self.state, BfdState::Down | BfdState::Init)
            && self.remote_state != BfdState::AdminDown
    }
}

enum Cmd {
    Add { peer: IpAddr, cfg: BfdConfig, reply: oneshot::Sender<io::Result<watch::Receiver<BfdStatus>>> },
    Remove { peer: IpAddr },
}

/// A handle on a running driver (cheap to clone). The driver stops once every handle and
/// every [`BfdSession`] is gone.
#[derive(Clone, Debug)]
pub struct Bfd {
    cmds: mpsc::UnboundedSender<Cmd>,
    local: SocketAddr,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Add { peer, cfg, .. } => write!(f, "Add({peer}, {cfg:?})"),
            Cmd::Remove { peer } => write!(f, "Remove({peer})"),
        }
    }
}

impl Bfd {
    /// Binds the receiving socket and starts the driver thread.
    pub fn start(opts: DriverOptions) -> io::Result<Bfd> {
        let sock = match StdUdpSocket::bind(opts.listen) {
            Ok(s) => s,
            // No IPv6 on this host: IPv4 only.
            Err(e) if opts.listen.is_ipv6() && opts.listen.ip().is_unspecified() => {
                tracing::debug!("BFD: cannot bind {}: {e}; trying IPv4 only", opts.listen);
                StdUdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), opts.listen.port()))?
            }
            Err(e) => return Err(e),
        };
        let local = sock.local_addr()?;
        sock.set_nonblocking(true)?;
        ttl::set_recv_ttl(&sock, local.is_ipv6())?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new().name("halyard-bfd".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("BFD: cannot start a runtime: {e}"),
            };
            rt.block_on(async move {
                match UdpSocket::from_std(sock) {
                    Ok(sock) => Driver::new(opts).run(sock, rx).await,
                    Err(e) => tracing::error!("BFD: {e}"),
                }
            });
        })?;
        Ok(Bfd { cmds: tx, local })
    }

    /// The process-wide driver on UDP 3784, started on first use. A failure to start (port
    /// taken, no privileges) is returned every time.
    pub fn global() -> io::Result<Bfd> {
        static GLOBAL: OnceLock<Result<Bfd, String>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Bfd::start(DriverOptions::default()).map_err(|e| format!("BFD on UDP {CONTROL_PORT}: {e}")))
            .clone()
            .map_err(io::Error::other)
    }

    /// The address the driver receives on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts (or joins) the session with `peer`. Sessions are per peer address: a second
    /// `add` for the same peer shares the session (and its timers become `cfg`). Dropping the
    /// last [`BfdSession`] of a peer sends AdminDown and forgets the session.
    pub async fn add(&self, peer: IpAddr, cfg: BfdConfig) -> io::Result<BfdSession> {
        let peer = peer.to_canonical();
        let (reply, rx) = oneshot::channel();
        let stopped = || io::Error::other("the BFD driver has stopped");
        self.cmds.send(Cmd::Add { peer, cfg, reply }).map_err(|_| stopped())?;
        let status = rx.await.map_err(|_| stopped())??;
        Ok(BfdSession { peer, status, cmds: self.cmds.clone() })
    }
}

/// One user's hold on a BFD session; dropping it releases the session.
#[derive(Debug)]
pub struct BfdSession {
    peer: IpAddr,
    status: watch::Receiver<BfdStatus>,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl BfdSession {
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    pub fn status(&self) -> BfdStatus {
        *self.status.borrow()
    }

    /// A receiver of the session's status (each change is published).
    pub fn watch(&self) -> watch::Receiver<BfdStatus> {
        self.status.clone()
    }

    /// Waits for the next change and returns the new status; `None` if the driver stopped.
    pub async fn changed(&mut self) -> Option<BfdStatus> {
        self.status.changed().await.ok()?;
        Some(*self.status.borrow_and_update())
    }
}

impl Drop for BfdSession {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Remove { peer: self.peer });
    }
}

// ===== the driver thread =====

struct Session {
    machine: Machine,
    /// Bound to a port in [`SOURCE_PORTS`], TTL 255.
    tx: StdUdpSocket,
    status: watch::Sender<BfdStatus>,
    users: usize,
}

struct Driver {
    opts: DriverOptions,
    epoch: Instant,
    sessions: HashMap<IpAddr, Session>,
    by_disc: HashMap<u32, IpAddr>,
    rng: u64,
}

impl Driver {
    fn new(opts: DriverOptions) -> Driver {
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        Driver {
            opts,
            epoch: Instant::now(),
            sessions: HashMap::new(),
            by_disc: HashMap::new(),
            rng: (t ^ (u64::from(std::process::id()) << 32)) | 1,
        }
    }

    fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    async fn run(mut self, sock: UdpSocket, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let deadline = self.sessions.values().filter_map(|s| s.machine.next_deadline()).min();
            let sleep_until = deadline.map(|us| self.epoch + Duration::from_micros(us));
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Add { peer, cfg, reply }) => {
                        let _ = reply.send(self.add(peer, cfg));
                    }
                    Some(Cmd::Remove { peer }) => self.remove(peer),
                    None => break,
                },
                got = sock.async_io(Interest::READABLE, || {
                    let mut buf = [0u8; 256];
                    ttl::recv_with_ttl(&sock, &mut buf).map(|(n, from, ttl)| (buf, n.min(buf.len()), from, ttl))
                }) => match got {
                    Ok((buf, n, from, ttl)) => self.datagram(&buf[..n], from, ttl),
                    Err(e) => {
                        tracing::warn!("BFD: receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = async { match sleep_until { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    self.timers();
                }
            }
        }
        for peer in self.sessions.keys().copied().collect::<Vec<_>>() {
            if let Some(s) = self.sessions.get_mut(&peer) {
                s.users = 1;
            }
            self.remove(peer);
        }
    }

    fn add(&mut self, peer: IpAddr, cfg: BfdConfig) -> io::Result<watch::Receiver<BfdStatus>> {
        let now = self.now();
        if let Some(s) = self.sessions.get_mut(&peer) {
            s.users += 1;
            if *s.machine.config() != cfg {
                tracing::info!(%peer, "BFD: session shared by another user; timers now {cfg:?}");
                s.machine.reconfigure(now, cfg);
            }
            return Ok(s.status.subscribe());
        }
        let tx = self.bind_source(peer)?;
        let disc = loop {
            let d = self.random() as u32;
            if d != 0 && !self.by_disc.contains_key(&d) {
                break d;
            }
        };
        let seed = self.random();
        let machine = Machine::new(cfg, disc, now, seed);
        let (status, rx) = watch::channel(status_of(&machine));
        tracing::info!(%peer, source = %tx.local_addr().map(|a| a.to_string()).unwrap_or_default(), disc, "BFD: session added ({cfg:?})");
        self.by_disc.insert(disc, peer);
        self.sessions.insert(peer, Session { machine, tx, status, users: 1 });
        Ok(rx)
    }

    fn remove(&mut self, peer: IpAddr) {
        let Some(s) = self.sessions.get_mut(&peer) else { return };
        s.users -= 1;
        if s.users > 0 {
            return;
        }
        let Some(mut s) = self.sessions.remove(&peer) else { return };
        self.by_disc.remove(&s.machine.local_disc());
        // RFC 5880 §6.8.16: tell the peer we are going AdminDown (it must not take its clients
        // down for this). One packet, best effort: if it is lost, the peer detects the silence.
        let p = s.machine.admin_down(self.now());
        send(&s.tx, peer, self.opts.peer_port, &p);
        tracing::info!(%peer, "BFD: session removed");
    }

    /// A socket for one session's packets: a free port in 49152–65535, TTL / Hop Limit 255.
    fn bind_source(&mut self, peer: IpAddr) -> io::Result<StdUdpSocket> {
        let any = match peer {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let span = u64::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free source port");
        for _ in 0..64 {
            let port = SOURCE_PORTS.start() + (self.random() % span) as u16;
            match StdUdpSocket::bind(SocketAddr::new(any, port)) {
                Ok(s) => {
                    s.set_nonblocking(true)?;
                    match peer {
                        IpAddr::V4(_) => s.set_ttl(u32::from(TTL))?,
                        IpAddr::V6(_) => ttl::set_unicast_hops_v6(&s, TTL)?,
                    }
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One received datagram: RFC 5881 §5 TTL check, RFC 5880 §6.8.6 validation and demux.
    fn datagram(&mut self, bytes: &[u8], from: SocketAddr, ttl: Option<u8>) {
        let src = from.ip().to_canonical();
        if ttl != Some(TTL) {
            tracing::debug!(%src, ?ttl, "BFD: dropping a packet whose TTL is not 255 (RFC 5881 §5)");
            return;
        }
        let p = match ControlPacket::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%src, "BFD: dropping an invalid packet: {e}");
                return;
            }
        };
        // §6.8.6: Your Discriminator selects the session; while it is zero, the source address
        // does (single-hop: one session per peer address). A packet from another address than
        // the session's peer is dropped.
        let peer = if p.your_disc != 0 { self.by_disc.get(&p.your_disc).copied() } else { Some(src) };
        let Some(s) = peer.filter(|peer| *peer == src).and_then(|peer| self.sessions.get_mut(&peer)) else {
            tracing::debug!(%src, your_disc = p.your_disc, "BFD: no session for this packet");
            return;
        };
        let now = self.epoch.elapsed().as_micros() as Micros;
        let before = s.machine.state();
        if let Some(fin) = s.machine.receive(now, &p) {
            send(&s.tx, src, self.opts.peer_port, &fin);
        }
        publish(src, s, before);
    }

    fn timers(&mut self) {
        let now = self.now();
        for (peer, s) in &mut self.sessions {
            if s.machine.next_deadline().is_some_and(|t| t <= now) {
                let before = s.machine.state();
                for p in s.machine.poll(now) {
                    send(&s.tx, *peer, self.opts.peer_port, &p);
                }
                publish(*peer, s, before);
            }
        }
    }
}

fn status_of(m: &Machine) -> BfdStatus {
    BfdStatus {
        state: m.state(),
        diag: m.diag(),
        remote_state: m.remote_state(),
        local_disc: m.local_disc(),
        remote_disc: m.remote_disc(),
    }
}

fn publish(peer: IpAddr, s: &Session, before: BfdState) {
    let st = status_of(&s.machine);
    if st.state != before {
        tracing::info!(%peer, "BFD: {before} -> {} ({}; peer {})", st.state, st.diag, st.remote_state);
    }
    s.status.send_if_modified(|old| {
        let changed = *old != st;
        *old = st;
        changed
    });
}

/// Best effort: BFD tolerates lost packets, so a full socket buffer just drops one.
fn send(tx: &StdUdpSocket, peer: IpAddr, port: u16, p: &ControlPacket) {
    if let Err(e) = tx.send_to(&p.encode(), SocketAddr::new(peer, port)) {
        tracing::debug!(%peer, "BFD: send failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn free_port() -> u16 {
        StdUdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn on_loopback(listen: u16, peer_port: u16) -> Bfd {
        Bfd::start(DriverOptions { listen: SocketAddr::new(LO, listen), peer_port }).unwrap()
    }

    /// Two drivers on `lo` (v4 or v6), each sending to the other's port.
    fn pair(lo: IpAddr) -> (Bfd, Bfd) {
        let port = || StdUdpSocket::bind(SocketAddr::new(lo, 0)).unwrap().local_addr().unwrap().port();
        let (pa, pb) = (port(), port());
        let a = Bfd::start(DriverOptions { listen: SocketAddr::new(lo, pa), peer_port: pb }).unwrap();
        let b = Bfd::start(DriverOptions { listen: SocketAddr::new(lo, pb), peer_port: pa }).unwrap();
        (a, b)
    }

    async fn wait_for(s: &mut BfdSession, want: BfdState, within: Duration) -> BfdStatus {
        tokio::time::timeout(within, async {
            loop {
                if s.status().state == want {
                    return s.status();
                }
                s.changed().await.expect("driver running");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("not {want} within {within:?}: {:?}", s.status()))
    }

    /// Two drivers on loopback, each sending to the other's port (both ends are 127.0.0.1): the
    /// session comes Up; when one end goes away it says AdminDown, which is no failure for BGP.
    #[tokio::test]
    async fn two_drivers_come_up_and_part_with_admin_down() {
        two_drivers(LO).await;
    }

    /// The same over IPv6 (Hop Limit 255 and IPV6_RECVHOPLIMIT); skipped without IPv6.
    #[tokio::test]
    async fn two_drivers_over_ipv6() {
        let lo = IpAddr::V6(Ipv6Addr::LOCALHOST);
        if StdUdpSocket::bind(SocketAddr::new(lo, 0)).is_err() {
            eprintln!("skipped: no IPv6 loopback");
            return;
        }
        two_drivers(lo).await;
    }

    async fn two_drivers(lo: IpAddr) {
        let (a, b) = pair(lo);
        let cfg = BfdConfig::new(20, 20, 3).unwrap();
        let mut sa = a.add(lo, cfg).await.unwrap();
        let mut sb = b.add(lo, cfg).await.unwrap();
        wait_for(&mut sa, BfdState::Up, Duration::from_secs(5)).await;
        wait_for(&mut sb, BfdState::Up, Duration::from_secs(5)).await;
        assert_ne!(sa.status().local_disc, sb.status().local_disc);
        assert_eq!(sa.status().remote_disc, sb.status().local_disc);
        let up = sa.status();
        drop(sb);
        let st = wait_for(&mut sa, BfdState::Down, Duration::from_secs(2)).await;
        assert_eq!((st.remote_state, st.diag), (BfdState::AdminDown, Diag::NeighborSignaledSessionDown));
        assert!(!st.is_failure_after(&up));
    }

    /// A hand-made peer on a plain socket: packets with TTL 254 are ignored (RFC 5881 §5), the
    /// same with TTL 255 bring the session up, and silence takes it down after the Detection
    /// Time, as a failure.
    #[tokio::test]
    async fn ttl_below_255_is_ignored_and_silence_is_detected() {
        let fake = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        fake.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let listen = free_port();
        let bfd = on_loopback(listen, fake.local_addr().unwrap().port());
        let mut s = bfd.add(LO, BfdConfig::new(50, 50, 3).unwrap()).await.unwrap();
        // The driver's first packet: Down, from a port in 49152–65535.
        let mut buf = [0u8; 64];
        let (n, from) = fake.recv_from(&mut buf).unwrap();
        assert!(SOURCE_PORTS.contains(&from.port()), "{from}");
        let theirs = ControlPacket::decode(&buf[..n]).unwrap();
        assert_eq!((theirs.state, theirs.your_disc), (BfdState::Down, 0));
        let mut p = ControlPacket {
            diag: Diag::NoDiagnostic,
            state: BfdState::Down,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 4242,
            your_disc: 0,
            desired_min_tx_us: 50_000,
            required_min_rx_us: 50_000,
            required_min_echo_rx_us: 0,
        };
        let to = SocketAddr::new(LO, listen);
        fake.set_ttl(254).unwrap();
        for _ in 0..5 {
            fake.send_to(&p.encode(), to).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!((s.status().state, s.status().remote_disc), (BfdState::Down, 0), "TTL 254 must be ignored");
        fake.set_ttl(255).unwrap();
        fake.send_to(&p.encode(), to).unwrap();
        wait_for(&mut s, BfdState::Init, Duration::from_secs(1)).await;
        assert_eq!(s.status().remote_disc, 4242);
        p.state = BfdState::Up;
        p.your_disc = theirs.my_disc;
        fake.send_to(&p.encode(), to).unwrap();
        let up = wait_for(&mut s, BfdState::Up, Duration::from_secs(1)).await;
        // Silence: Down after 3 × 50 ms.
        let t = std::time::Instant::now();
        let down = wait_for(&mut s, BfdState::Down, Duration::from_secs(2)).await;
        assert!(t.elapsed() < Duration::from_millis(400), "{:?}", t.elapsed());
        assert_eq!(down.diag, Diag::ControlDetectionTimeExpired);
        assert!(down.is_failure_after(&up));
    }
}
