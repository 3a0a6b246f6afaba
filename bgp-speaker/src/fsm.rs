//! The BGP finite state machine, RFC 4271 §8, as pure code: events in (with an explicit `now`),
//! actions out. No sockets and no clocks; the session driver owns the TCP connection and calls
//! [`Fsm::handle`] and [`Fsm::poll`].
//!
//! Optional session attributes not implemented (RFC 4271 §8.1.1): DelayOpen, DampPeerOscillations,
//! IdleHoldTimer, SendNOTIFICATIONwithoutOPEN, TrackTcpState. CollisionDetectEstablishedState is
//! FALSE (the default). `AllowAutomaticStart` is true: after an error the FSM goes to Idle and the
//! driver restarts it with [`Event::AutomaticStart`] after its own back-off.

use std::net::Ipv4Addr;

/// Milliseconds on the driver's monotonic clock.
pub type Millis = u64;

/// The [`Action::Down`] reason when the connection closed or failed without a NOTIFICATION.
pub const TCP_LOST: &str = "TCP connection lost";

/// RFC 4271 §8.2.2: "a large value" for the HoldTimer while waiting for OPEN; 4 minutes suggested.
pub const OPEN_HOLD_TIME_MS: Millis = 240_000;

/// NOTIFICATION error codes used by the FSM (RFC 4271 §4.5).
pub mod code {
    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM_ERROR: u8 = 5;
    pub const CEASE: u8 = 6;
    /// OPEN subcodes (RFC 4271 §6.2).
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// Cease subcodes (RFC 4486).
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    /// Cease subcode for a session torn down because BFD went down (RFC 9384).
    pub const BFD_DOWN: u8 = 10;
    /// FSM error subcodes (RFC 6608).
    pub const UNEXPECTED_IN_OPENSENT: u8 = 1;
    pub const UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// RFC 4271 §8.2.2 states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// What the peer said in its OPEN, as far as the FSM cares (the codec parses the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerOpen {
    /// The 4-octet AS when the capability was sent (RFC 6793), else the 2-octet field.
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
}

/// Parameters agreed when the session comes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// Seconds; 0 means no hold timer and no keepalives (RFC 4271 §4.2).
    pub hold_time: u16,
    pub keepalive_ms: Millis,
}

/// Inputs, named after the RFC 4271 §8.1 events they stand for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Events 1/3 (ManualStart, AutomaticStart); with `passive` set, events 4/5.
    Start,
    AutomaticStart,
    /// Event 2 (ManualStop): administrative shutdown, with an optional RFC 8203 message.
    ManualStop,
    /// Events 16/17 (Tcp_CR_Acked, TcpConnectionConfirmed): a TCP connection is up.
    TcpConnected,
    /// Event 18 (TcpConnectionFails).
    TcpFailed,
    /// Event 19 (BGPOpen): a well-formed OPEN (the codec already checked its syntax).
    Open(PeerOpen),
    /// Events 21/22 (BGPHeaderErr, BGPOpenMsgErr): the codec found an error and the driver
    /// sends the NOTIFICATION the codec mapped it to (given here).
    MessageError {
        code: u8,
        subcode: u8,
        data: Vec<u8>,
    },
    /// Event 23 (OpenCollisionDump): collision resolution chose the other connection.
    CollisionDump,
    /// Events 24/25 (NotifMsgVerErr, NotifMsg).
    Notification {
        code: u8,
        subcode: u8,
    },
    /// Event 26 (KeepAliveMsg).
    Keepalive,
    /// Event 27 (UpdateMsg) — also ROUTE-REFRESH, which restarts the hold timer the same way.
    Update,
    /// The BFD session under this peer went from Up to Down (RFC 5882 §4.2, not an RFC 4271
    /// event): the connection is torn down at once with Cease / BFD Down (RFC 9384).
    BfdDown,
}

/// Outputs for the driver to carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (after sending anything queued before this action).
    Disconnect,
    SendOpen {
        hold_time: u16,
    },
    SendKeepalive,
    SendNotification {
        code: u8,
        subcode: u8,
        data: Vec<u8>,
    },
    /// The session reached Established: start sending routes.
    Established(Negotiated),
    /// The session left Established (or failed before it): drop the peer's routes, unless
    /// graceful restart keeps them (the RIB decides).
    Down {
        reason: String,
    },
    /// UPDATE messages may be processed (sent by the FSM so the driver needs no state check).
    ProcessUpdate,
}

/// Local configuration of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsmConfig {
    pub local_asn: u32,
    /// `None`: accept the AS the peer announces (Cilium's `peerASN: 0`).
    pub peer_asn: Option<u32>,
    pub router_id: Ipv4Addr,
    /// Seconds we offer (RFC 4271 suggests 90; Cilium's default is 90).
    pub hold_time: u16,
    /// Keepalive interval in seconds; `None`: a third of the negotiated hold time.
    pub keepalive_time: Option<u16>,
    /// ConnectRetryTime in seconds (RFC 4271 suggests 120; Cilium's default is 120).
    pub connect_retry_time: u16,
    /// Wait for the peer to connect instead of connecting (events 4/5).
    pub passive: bool,
    /// HoldTimer while waiting for the peer's OPEN (RFC 4271 §8.2.2 "a large value"; default
    /// [`OPEN_HOLD_TIME_MS`]).
    pub open_hold_time_ms: Millis,
}

impl FsmConfig {
    pub fn new(local_asn: u32, peer_asn: Option<u32>, router_id: Ipv4Addr) -> Self {
        Self {
            local_asn,
            peer_asn,
            router_id,
            hold_time: 90,
            keepalive_time: None,
            connect_retry_time: 120,
            passive: false,
            open_hold_time_ms: OPEN_HOLD_TIME_MS,
        }
    }
}

/// One peer's state machine.
#[derive(Clone, Debug)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    /// RFC 4271 §8: ConnectRetryCounter.
    connect_retry_counter: u32,
    connect_retry_at: Option<Millis>,
    hold_at: Option<Millis>,
    keepalive_at: Option<Millis>,
    negotiated: Option<Negotiated>,
}

// ===== impl Fsm =====

impl Fsm {
    pub fn new(cfg: FsmConfig) -> Self {
        Self {
            cfg,
            state: State::Idle,
            connect_retry_counter: 0,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
            negotiated: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// A new ConnectRetryTime, used from the next time the timer is started.
    pub fn set_connect_retry_time(&mut self, seconds: u16) {
        self.cfg.connect_retry_time = seconds;
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// The earliest timer deadline, for the driver to sleep until.
    pub fn next_deadline(&self) -> Option<Millis> {
        [self.connect_retry_at, self.hold_at, self.keepalive_at].into_iter().flatten().min()
    }

    /// Fires every timer due at `now` (events 9, 10, 11).
    pub fn poll(&mut self, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        if self.hold_at.is_some_and(|t| t <= now) {
            self.hold_at = None;
            out.extend(self.hold_timer_expired());
        }
        if self.connect_retry_at.is_some_and(|t| t <= now) {
            self.connect_retry_at = None;
            out.extend(self.connect_retry_expired(now));
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.keepalive_at = None;
            out.extend(self.keepalive_timer_expired(now));
        }
        out
    }

    fn connect_retry_ms(&self) -> Millis {
        Millis::from(self.cfg.connect_retry_time) * 1000
    }

    /// Back to Idle after an error (RFC 4271 §8.2.2: release resources, drop the connection,
    /// increment ConnectRetryCounter).
    fn enter_idle(&mut self, out: &mut Vec<Action>, reason: String) {
        let was_up = self.state != State::Idle;
        self.state = State::Idle;
        self.connect_retry_counter += 1;
        self.connect_retry_at = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.negotiated = None;
        if was_up {
            out.push(Action::Disconnect);
            out.push(Action::Down { reason });
        }
    }

    fn notify_and_idle(&mut self, out: &mut Vec<Action>, code: u8, subcode: u8, data: Vec<u8>, reason: String) {
        out.push(Action::SendNotification { code, subcode, data });
        self.enter_idle(out, reason);
    }

    fn fsm_error_subcode(&self) -> u8 {
        match self.state {
            State::OpenSent => code::UNEXPECTED_IN_OPENSENT,
            State::OpenConfirm => code::UNEXPECTED_IN_OPENCONFIRM,
            _ => code::UNEXPECTED_IN_ESTABLISHED,
        }
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, now: Millis, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, ev) {
            // ----- Idle (§8.2.2): only starts are acted on -----
            (State::Idle, Event::Start | Event::AutomaticStart) => {
                self.connect_retry_at = Some(now + self.connect_retry_ms());
                if self.cfg.passive {
                    self.state = State::Active;
                } else {
                    self.state = State::Connect;
                    out.push(Action::Connect);
                }
            }
            (State::Idle, _) => {}

            // ----- ManualStop in any other state -----
            (_, Event::ManualStop) => {
                if matches!(self.state, State::OpenSent | State::OpenConfirm | State::Established) {
                    out.push(Action::SendNotification {
                        code: code::CEASE,
                        subcode: code::ADMINISTRATIVE_SHUTDOWN,
                        data: Vec::new(),
                    });
                }
                self.enter_idle(&mut out, "administrative shutdown".into());
                // §8.2.2: ManualStop sets ConnectRetryCounter to zero.
                self.connect_retry_counter = 0;
            }

            // ----- Connect and Active (§8.2.2) -----
            (State::Connect | State::Active, Event::Start | Event::AutomaticStart) => {}
            (State::Connect | State::Active, Event::TcpConnected) => {
                self.connect_retry_at = None;
                out.push(Action::SendOpen { hold_time: self.cfg.hold_time });
                self.hold_at = Some(now + self.cfg.open_hold_time_ms);
                self.state = State::OpenSent;
            }
            (State::Connect, Event::TcpFailed) => {
                // Retry when the ConnectRetryTimer fires; meanwhile listen (Active).
                self.connect_retry_at = Some(now + self.connect_retry_ms());
                self.state = State::Active;
            }
            (State::Active, Event::TcpFailed) => {
                self.connect_retry_at = Some(now + self.connect_retry_ms());
                self.connect_retry_counter += 1;
                self.state = State::Idle;
            }
            // No connection to tear down yet.
            (State::Connect | State::Active, Event::BfdDown) => {}
            (State::Connect | State::Active, Event::Notification { .. }) => {
                // NotifMsgVerErr before OPEN: no error counted (RFC 4271 §8.2.2, event 24).
                self.enter_idle(&mut out, "NOTIFICATION before OPEN".into());
            }
            (State::Connect | State::Active, ev) => {
                self.enter_idle(&mut out, format!("unexpected {ev:?} in {:?}", self.state));
            }

            // ----- OpenSent -----
            (State::OpenSent, Event::Open(peer)) => {
                if let Some((subcode, data, why)) = self.check_open(&peer) {
                    self.notify_and_idle(&mut out, code::OPEN_MESSAGE_ERROR, subcode, data, why);
                } else {
                    let neg = self.negotiate(&peer);
                    out.push(Action::SendKeepalive);
                    self.start_session_timers(now, &neg);
                    self.negotiated = Some(neg);
                    self.state = State::OpenConfirm;
                }
            }
            (State::OpenSent, Event::TcpFailed) => {
                // §8.2.2: close, restart ConnectRetryTimer, go to Active.
                self.hold_at = None;
                self.connect_retry_at = Some(now + self.connect_retry_ms());
                self.state = State::Active;
                out.push(Action::Disconnect);
            }

            // ----- OpenConfirm -----
            (State::OpenConfirm, Event::Keepalive) => {
                let neg = self.negotiated.expect("negotiated in OpenSent");
                self.restart_hold(now);
                self.state = State::Established;
                out.push(Action::Established(neg));
            }

            // ----- Established -----
            (State::Established, Event::Keepalive) => self.restart_hold(now),
            (State::Established, Event::Update) => {
                self.restart_hold(now);
                out.push(Action::ProcessUpdate);
            }

            // ----- shared by OpenSent, OpenConfirm, Established -----
            (_, Event::Start | Event::AutomaticStart) => {}
            (_, Event::TcpFailed) => self.enter_idle(&mut out, TCP_LOST.into()),
            (_, Event::Notification { code, subcode }) => {
                self.enter_idle(&mut out, format!("NOTIFICATION received: code {code} subcode {subcode}"));
            }
            (_, Event::MessageError { code, subcode, data }) => {
                self.notify_and_idle(&mut out, code, subcode, data, format!("message error {code}/{subcode}"));
            }
            (_, Event::BfdDown) => {
                self.notify_and_idle(&mut out, code::CEASE, code::BFD_DOWN, Vec::new(), "BFD session went down".into())
            }
            (_, Event::CollisionDump) => self.notify_and_idle(
                &mut out,
                code::CEASE,
                code::CONNECTION_COLLISION_RESOLUTION,
                Vec::new(),
                "connection collision resolution".into(),
            ),
            // OPEN in OpenConfirm/Established, KEEPALIVE/UPDATE in OpenSent, UPDATE in
            // OpenConfirm, TcpConnected when already connected: an FSM error (RFC 6608).
            (_, ev) => {
                let sub = self.fsm_error_subcode();
                self.notify_and_idle(&mut out, code::FSM_ERROR, sub, Vec::new(), format!("unexpected {ev:?}"));
            }
        }
        out
    }

    /// RFC 4271 §6.2 checks the FSM owns (syntax was checked by the codec). Returns
    /// (subcode, data, reason) on error.
    fn check_open(&self, peer: &PeerOpen) -> Option<(u8, Vec<u8>, String)> {
        if let Some(want) = self.cfg.peer_asn
            && want != peer.asn
        {
            return Some((code::BAD_PEER_AS, Vec::new(), format!("peer AS {} is not the configured {want}", peer.asn)));
        }
        // §6.2: 1 and 2 seconds are unacceptable; 0 (no keepalives) and ≥ 3 are fine.
        if matches!(peer.hold_time, 1 | 2) {
            return Some((
                code::UNACCEPTABLE_HOLD_TIME,
                Vec::new(),
                format!("hold time {} s is unacceptable", peer.hold_time),
            ));
        }
        // RFC 6286 §2.2: zero is invalid; equal identifiers are invalid only within one AS.
        let same_as = peer.asn == self.cfg.local_asn;
        if peer.router_id.is_unspecified() || (same_as && peer.router_id == self.cfg.router_id) {
            return Some((
                code::BAD_BGP_IDENTIFIER,
                Vec::new(),
                format!("peer BGP identifier {} is invalid", peer.router_id),
            ));
        }
        None
    }

    fn negotiate(&self, peer: &PeerOpen) -> Negotiated {
        let hold_time = self.cfg.hold_time.min(peer.hold_time);
        let keepalive_ms = if hold_time == 0 {
            0
        } else {
            let third = Millis::from(hold_time) * 1000 / 3;
            // A configured interval never exceeds a third of the hold time (§10).
            self.cfg.keepalive_time.map_or(third, |k| (Millis::from(k) * 1000).min(third))
        };
        Negotiated { peer_asn: peer.asn, peer_router_id: peer.router_id, hold_time, keepalive_ms }
    }

    fn start_session_timers(&mut self, now: Millis, neg: &Negotiated) {
        if neg.hold_time == 0 {
            self.hold_at = None;
            self.keepalive_at = None;
        } else {
            self.hold_at = Some(now + Millis::from(neg.hold_time) * 1000);
            self.keepalive_at = Some(now + neg.keepalive_ms);
        }
    }

    fn restart_hold(&mut self, now: Millis) {
        if let Some(neg) = self.negotiated
            && neg.hold_time > 0
        {
            self.hold_at = Some(now + Millis::from(neg.hold_time) * 1000);
        }
    }

    /// Event 10.
    fn hold_timer_expired(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::OpenSent | State::OpenConfirm | State::Established => {
                self.notify_and_idle(&mut out, code::HOLD_TIMER_EXPIRED, 0, Vec::new(), "hold timer expired".into())
            }
            _ => {}
        }
        out
    }

    /// Event 9.
    fn connect_retry_expired(&mut self, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Connect => {
                // Drop the attempt in progress and try again.
                out.push(Action::Disconnect);
                out.push(Action::Connect);
                self.connect_retry_at = Some(now + self.connect_retry_ms());
            }
            State::Active => {
                self.connect_retry_at = Some(now + self.connect_retry_ms());
                if !self.cfg.passive {
                    self.state = State::Connect;
                    out.push(Action::Connect);
                }
            }
            // Automatic restart after a TCP failure in Active (AllowAutomaticStart).
            State::Idle if !self.cfg.passive => {
                self.connect_retry_at = Some(now + self.connect_retry_ms());
                self.state = State::Connect;
                out.push(Action::Connect);
            }
            _ => {}
        }
        out
    }

    /// Event 11.
    fn keepalive_timer_expired(&mut self, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        if let (State::OpenConfirm | State::Established, Some(neg)) = (self.state, self.negotiated)
            && neg.keepalive_ms > 0
        {
            out.push(Action::SendKeepalive);
            self.keepalive_at = Some(now + neg.keepalive_ms);
        }
        out
    }
}

/// RFC 4271 §6.8 collision resolution: of two connections between the same pair of speakers,
/// keep the one initiated by the speaker with the higher BGP Identifier (compared as 32-bit
/// unsigned integers). Returns true when the connection *we* initiated survives.
pub fn keep_locally_initiated(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn fsm() -> Fsm {
        Fsm::new(FsmConfig::new(65001, Some(65000), id("10.0.0.1")))
    }

    fn open(asn: u32, hold: u16) -> Event {
        Event::Open(PeerOpen { asn, hold_time: hold, router_id: id("10.0.0.2") })
    }

    /// Drives a session to Established at t=0; returns the FSM.
    fn established() -> Fsm {
        let mut f = fsm();
        assert_eq!(f.handle(0, Event::Start), vec![Action::Connect]);
        assert_eq!(f.handle(0, Event::TcpConnected), vec![Action::SendOpen { hold_time: 90 }]);
        assert_eq!(f.handle(0, open(65000, 30)), vec![Action::SendKeepalive]);
        assert_eq!(f.state(), State::OpenConfirm);
        let out = f.handle(0, Event::Keepalive);
        assert!(matches!(out.as_slice(), [Action::Established(n)] if n.hold_time == 30 && n.keepalive_ms == 10_000));
        f
    }

    #[test]
    fn happy_path_negotiates_the_smaller_hold_time() {
        let f = established();
        assert_eq!(f.state(), State::Established);
        assert_eq!(f.next_deadline(), Some(10_000));
    }

    #[test]
    fn keepalives_are_sent_and_hold_timer_expiry_tears_down() {
        let mut f = established();
        assert_eq!(f.poll(10_000), vec![Action::SendKeepalive]);
        assert_eq!(f.poll(20_000), vec![Action::SendKeepalive]);
        // An UPDATE at 25 s restarts the hold timer (to 55 s).
        assert_eq!(f.handle(25_000, Event::Update), vec![Action::ProcessUpdate]);
        assert_eq!(f.poll(30_000), vec![Action::SendKeepalive]);
        assert!(f.poll(54_999).iter().all(|a| *a == Action::SendKeepalive));
        let out = f.poll(55_000);
        assert_eq!(out[0], Action::SendNotification { code: code::HOLD_TIMER_EXPIRED, subcode: 0, data: vec![] });
        assert!(out.contains(&Action::Disconnect));
        assert!(matches!(out.last(), Some(Action::Down { reason }) if reason.contains("hold timer")));
        assert_eq!(f.state(), State::Idle);
        assert_eq!(f.connect_retry_counter(), 1);
    }

    #[test]
    fn open_errors_map_to_notifications() {
        let cases = [(open(65099, 90), code::BAD_PEER_AS), (open(65000, 2), code::UNACCEPTABLE_HOLD_TIME)];
        for (ev, sub) in cases {
            let mut f = fsm();
            f.handle(0, Event::Start);
            f.handle(0, Event::TcpConnected);
            let out = f.handle(1, ev);
            assert!(matches!(&out[0], Action::SendNotification { code: 2, subcode, .. } if *subcode == sub), "{out:?}");
            assert_eq!(f.state(), State::Idle);
        }
        // iBGP peer with our own identifier.
        let mut f = Fsm::new(FsmConfig::new(65000, Some(65000), id("10.0.0.1")));
        f.handle(0, Event::Start);
        f.handle(0, Event::TcpConnected);
        let out = f.handle(0, Event::Open(PeerOpen { asn: 65000, hold_time: 90, router_id: id("10.0.0.1") }));
        assert!(matches!(&out[0], Action::SendNotification { code: 2, subcode: 3, .. }));
    }

    #[test]
    fn dynamic_peer_as_and_zero_hold_time() {
        let mut f = Fsm::new(FsmConfig::new(65001, None, id("10.0.0.1")));
        f.handle(0, Event::Start);
        f.handle(0, Event::TcpConnected);
        assert_eq!(f.handle(0, open(4_200_000_000, 0)), vec![Action::SendKeepalive]);
        let out = f.handle(0, Event::Keepalive);
        assert!(matches!(out.as_slice(), [Action::Established(n)] if n.peer_asn == 4_200_000_000 && n.hold_time == 0));
        assert_eq!(f.next_deadline(), None, "hold time 0: no keepalives, no hold timer");
    }

    #[test]
    fn unexpected_messages_are_fsm_errors() {
        let mut f = fsm();
        f.handle(0, Event::Start);
        f.handle(0, Event::TcpConnected);
        let out = f.handle(0, Event::Update);
        assert_eq!(
            out[0],
            Action::SendNotification { code: code::FSM_ERROR, subcode: code::UNEXPECTED_IN_OPENSENT, data: vec![] }
        );
        let mut f = established();
        let out = f.handle(0, open(65000, 90));
        assert_eq!(
            out[0],
            Action::SendNotification { code: code::FSM_ERROR, subcode: code::UNEXPECTED_IN_ESTABLISHED, data: vec![] }
        );
    }

    #[test]
    fn connect_failures_retry_on_the_connect_retry_timer() {
        let mut f = fsm();
        f.handle(0, Event::Start);
        assert!(f.handle(5, Event::TcpFailed).is_empty());
        assert_eq!(f.state(), State::Active);
        assert_eq!(f.next_deadline(), Some(120_005));
        assert_eq!(f.poll(120_005), vec![Action::Connect]);
        assert_eq!(f.state(), State::Connect);
        // A connect attempt that hangs is abandoned and retried when the timer fires again.
        assert_eq!(f.poll(240_005), vec![Action::Disconnect, Action::Connect]);
    }

    #[test]
    fn a_shorter_open_hold_time_gives_up_on_a_silent_peer_sooner() {
        let mut cfg = FsmConfig::new(65001, Some(65000), id("10.0.0.1"));
        cfg.open_hold_time_ms = 30_000;
        let mut f = Fsm::new(cfg);
        f.handle(0, Event::Start);
        f.handle(5, Event::TcpConnected);
        assert_eq!(f.state(), State::OpenSent);
        assert_eq!(f.next_deadline(), Some(30_005));
        let out = f.poll(30_005);
        assert!(out.contains(&Action::Disconnect), "{out:?}");
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn passive_peers_wait_and_notifications_go_idle() {
        let mut cfg = FsmConfig::new(65001, Some(65000), id("10.0.0.1"));
        cfg.passive = true;
        let mut f = Fsm::new(cfg);
        assert!(f.handle(0, Event::Start).is_empty());
        assert_eq!(f.state(), State::Active);
        f.handle(1, Event::TcpConnected);
        assert_eq!(f.state(), State::OpenSent);
        assert_eq!(f.next_deadline(), Some(1 + OPEN_HOLD_TIME_MS));
        let out = f.handle(2, Event::Notification { code: 6, subcode: 2 });
        assert_eq!(out[0], Action::Disconnect);
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn manual_stop_sends_cease_and_collisions_resolve_by_identifier() {
        let mut f = established();
        let out = f.handle(1, Event::ManualStop);
        assert_eq!(out[0], Action::SendNotification { code: 6, subcode: 2, data: vec![] });
        assert_eq!(f.state(), State::Idle);
        assert_eq!(f.connect_retry_counter(), 0);
        assert!(keep_locally_initiated(id("10.0.0.2"), id("10.0.0.1")));
        assert!(!keep_locally_initiated(id("9.255.255.255"), id("10.0.0.1")));
        let mut f = established();
        let out = f.handle(1, Event::CollisionDump);
        assert_eq!(out[0], Action::SendNotification { code: 6, subcode: 7, data: vec![] });
    }

    #[test]
    fn bfd_down_tears_the_session_down_with_cease_10() {
        let mut f = established();
        let out = f.handle(1, Event::BfdDown);
        assert_eq!(out[0], Action::SendNotification { code: code::CEASE, subcode: code::BFD_DOWN, data: vec![] });
        assert!(out.contains(&Action::Disconnect));
        assert!(matches!(out.last(), Some(Action::Down { reason }) if reason.contains("BFD")));
        assert_eq!(f.state(), State::Idle);
        // Before a connection exists there is nothing to tear down.
        let mut f = fsm();
        f.handle(0, Event::Start);
        assert!(f.handle(1, Event::BfdDown).is_empty());
        assert_eq!(f.state(), State::Connect);
        assert!(Fsm::new(FsmConfig::new(1, None, id("10.0.0.1"))).handle(0, Event::BfdDown).is_empty());
    }
}
