//! One BFD session's state machine (RFC 5880 §6.2, §6.8), asynchronous mode, as pure code:
//! packets and an explicit `now` in, packets out. The driver ([`super::driver`]) owns the sockets
//! and the clock and calls [`Machine::receive`] and [`Machine::poll`].
//!
//! ```text
//!                             +--+
//!                             |  | UP, ADMIN DOWN, TIMER
//!                             |  V
//!                     DOWN  +------+  INIT
//!              +------------|      |------------+
//!              |            | DOWN |            |
//!              |  +-------->|      |<--------+  |
//!              |  |         +------+         |  |
//!              |  |                          |  |
//!              |  |               ADMIN DOWN,|  |
//!              |  |ADMIN DOWN,          DOWN,|  |
//!              |  |TIMER                TIMER|  |
//!              V  |                          |  V
//!            +------+                      +------+
//!       +----|      |                      |      |----+
//!   DOWN|    | INIT |--------------------->|  UP  |    |INIT, UP
//!       +--->|      | INIT, UP             |      |<---+
//!            +------+                      +------+
//! ```
//!
//! Not implemented: Demand mode (we never set D; a peer's D bit only stops our periodic
//! packets, §6.8.7), the Echo function (we advertise Required Min Echo RX 0), authentication.

use super::BfdConfig;
use super::packet::{BfdState, ControlPacket, Diag};

/// Microseconds on the driver's monotonic clock (BFD intervals are in µs on the wire).
pub type Micros = u64;

/// RFC 5880 §6.8.3: while the session is not Up, Desired Min TX is at least one second.
pub const SLOW_TX_US: u32 = 1_000_000;

/// One session, RFC 5880 §6.8.1 state variables plus its two timers.
#[derive(Clone, Debug)]
pub struct Machine {
    cfg: BfdConfig,
    /// bfd.LocalDiscr
    local_disc: u32,
    /// bfd.SessionState
    state: BfdState,
    /// bfd.LocalDiag
    diag: Diag,
    /// bfd.RemoteDiscr (0 until the peer is heard, and again after a Detection Time of silence).
    remote_disc: u32,
    /// bfd.RemoteSessionState
    remote_state: BfdState,
    /// The Diag the peer last sent.
    remote_diag: Diag,
    /// bfd.RemoteDemandMode
    remote_demand: bool,
    /// bfd.RemoteMinRxInterval (initialised to 1 µs).
    remote_min_rx_us: u32,
    /// The peer's last Desired Min TX Interval and Detect Mult (for the Detection Time).
    remote_desired_min_tx_us: u32,
    remote_detect_mult: u8,
    /// bfd.DesiredMinTxInterval and bfd.RequiredMinRxInterval: what we advertise.
    desired_min_tx_us: u32,
    required_min_rx_us: u32,
    /// The values in effect: they lag the advertised ones while a Poll Sequence runs (§6.8.3).
    tx_in_use_us: u32,
    rx_in_use_us: u32,
    /// A Poll Sequence is in progress: our packets carry P until a packet with F arrives (§6.5).
    polling: bool,
    tx_at: Option<Micros>,
    detect_at: Option<Micros>,
    rng: u64,
}

// ===== impl Machine =====

impl Machine {
    /// A session in Down (§6.8.1), transmitting at once (and then at the slow rate). `seed`
    /// feeds the transmit jitter; any value but the same for two sessions is fine.
    pub fn new(cfg: BfdConfig, local_disc: u32, now: Micros, seed: u64) -> Machine {
        assert!(local_disc != 0, "RFC 5880 §6.8.1: bfd.LocalDiscr must be nonzero");
        let desired = cfg.min_tx_us().max(SLOW_TX_US);
        Machine {
            cfg,
            local_disc,
            state: BfdState::Down,
            diag: Diag::NoDiagnostic,
            remote_disc: 0,
            remote_state: BfdState::Down,
            remote_diag: Diag::NoDiagnostic,
            remote_demand: false,
            remote_min_rx_us: 1,
            remote_desired_min_tx_us: 0,
            remote_detect_mult: 0,
            desired_min_tx_us: desired,
            required_min_rx_us: cfg.min_rx_us(),
            tx_in_use_us: desired,
            rx_in_use_us: cfg.min_rx_us(),
            polling: false,
            tx_at: Some(now),
            detect_at: None,
            rng: seed | 1,
        }
    }

    pub fn state(&self) -> BfdState {
        self.state
    }

    pub fn diag(&self) -> Diag {
        self.diag
    }

    pub fn remote_state(&self) -> BfdState {
        self.remote_state
    }

    pub fn remote_diag(&self) -> Diag {
        self.remote_diag
    }

    pub fn local_disc(&self) -> u32 {
        self.local_disc
    }

    pub fn remote_disc(&self) -> u32 {
        self.remote_disc
    }

    pub fn config(&self) -> &BfdConfig {
        &self.cfg
    }

    /// A Poll Sequence is in progress.
    pub fn polling(&self) -> bool {
        self.polling
    }

    /// The interval between our periodic packets before jitter (§6.8.7): the larger of our
    /// Desired Min TX in use and the peer's Required Min RX.
    pub fn tx_interval_us(&self) -> u32 {
        self.tx_in_use_us.max(self.remote_min_rx_us)
    }

    /// The Detection Time (§6.8.4, asynchronous mode): the peer's Detect Mult times the larger
    /// of our Required Min RX (in use) and the peer's last Desired Min TX. `None` before the peer
    /// was heard.
    pub fn detection_time_us(&self) -> Option<Micros> {
        (self.remote_detect_mult > 0).then(|| {
            Micros::from(self.remote_detect_mult) * Micros::from(self.rx_in_use_us.max(self.remote_desired_min_tx_us))
        })
    }

    /// The earliest timer deadline, for the driver to sleep until.
    pub fn next_deadline(&self) -> Option<Micros> {
        [self.tx_at, self.detect_at].into_iter().flatten().min()
    }

    /// Fires the timers due at `now`: the Detection Time (§6.8.4) and periodic transmission
    /// (§6.8.7). Returns the packets to send.
    pub fn poll(&mut self, now: Micros) -> Vec<ControlPacket> {
        let mut out = Vec::new();
        if self.detect_at.is_some_and(|t| t <= now) {
            self.detect_at = None;
            self.detection_time_expired(now);
        }
        if self.tx_at.is_some_and(|t| t <= now) {
            self.tx_at = None;
            if self.periodic_allowed() {
                out.push(self.packet(false));
                self.tx_at = Some(now + self.jittered(self.tx_interval_us()));
            }
        }
        out
    }

    /// §6.8.4: no valid packet for a Detection Time.
    fn detection_time_expired(&mut self, now: Micros) {
        if matches!(self.state, BfdState::Init | BfdState::Up) {
            self.diag = Diag::ControlDetectionTimeExpired;
            self.set_state(now, BfdState::Down);
        }
        // §6.8.1: bfd.RemoteDiscr is zeroed after a Detection Time of silence; the other remote
        // variables go back to their initial values with it.
        self.remote_disc = 0;
        self.remote_state = BfdState::Down;
        self.remote_demand = false;
        self.remote_min_rx_us = 1;
        self.remote_desired_min_tx_us = 0;
        self.remote_detect_mult = 0;
    }

    /// §6.8.7: no periodic packets when the peer wants none (Required Min RX 0) or runs Demand
    /// mode with both ends Up. (We take the Active role, so bfd.RemoteDiscr 0 is no bar.)
    fn periodic_allowed(&self) -> bool {
        let demand = self.remote_demand && self.state == BfdState::Up && self.remote_state == BfdState::Up;
        self.state != BfdState::AdminDown && self.remote_min_rx_us != 0 && !demand
    }

    /// Processes a packet the driver has decoded (§6.8.6 checks done) and matched to this
    /// session. Returns the packet to send at once: the Final answering a Poll.
    pub fn receive(&mut self, now: Micros, p: &ControlPacket) -> Option<ControlPacket> {
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_diag = p.diag;
        self.remote_demand = p.demand;
        self.remote_min_rx_us = p.required_min_rx_us;
        self.remote_desired_min_tx_us = p.desired_min_tx_us;
        self.remote_detect_mult = p.detect_mult;
        // §6.8.6: "If the Final (F) bit is set and there is a Poll Sequence in progress, the Poll
        // Sequence MUST be terminated": the advertised values are now in effect.
        if p.final_ && self.polling {
            self.polling = false;
            self.tx_in_use_us = self.desired_min_tx_us;
            self.rx_in_use_us = self.required_min_rx_us;
        }
        // The Detection Time restarts with every valid packet (§6.8.4).
        self.detect_at = self.detection_time_us().map(|d| now + d);
        if self.state == BfdState::AdminDown {
            return None; // §6.8.6: discard
        }
        if p.state == BfdState::AdminDown {
            if self.state != BfdState::Down {
                self.diag = Diag::NeighborSignaledSessionDown;
                self.set_state(now, BfdState::Down);
            }
        } else {
            match (self.state, p.state) {
                (BfdState::Down, BfdState::Down) => self.set_state(now, BfdState::Init),
                (BfdState::Down, BfdState::Init) => self.set_state(now, BfdState::Up),
                (BfdState::Init, BfdState::Init | BfdState::Up) => self.set_state(now, BfdState::Up),
                (BfdState::Up, BfdState::Down) => {
                    self.diag = Diag::NeighborSignaledSessionDown;
                    self.set_state(now, BfdState::Down);
                }
                _ => {}
            }
        }
        // Transmission resumes (or speeds up) with the peer's new parameters.
        self.reschedule_tx(now);
        // §6.8.6: a Poll is answered with a Final "as soon as practicable, without respect to
        // the transmission timer" (§6.8.7); P and F are never both set.
        p.poll.then(|| self.packet(true))
    }

    /// Takes the session administratively down (§6.8.16) and returns the packet that tells the
    /// peer (it must not take its clients down for this, RFC 5882 §3.2). Periodic transmission
    /// stops: the driver sends the returned packet a few times and then forgets the session.
    pub fn admin_down(&mut self, now: Micros) -> ControlPacket {
        self.diag = Diag::AdministrativelyDown;
        self.set_state(now, BfdState::AdminDown);
        self.tx_at = None;
        self.detect_at = None;
        self.packet(false)
    }

    fn set_state(&mut self, now: Micros, new: BfdState) {
        let old = self.state;
        if old == new {
            return;
        }
        self.state = new;
        if new == BfdState::Up {
            self.diag = Diag::NoDiagnostic;
        }
        // §6.8.3: Desired Min TX is at least 1 s unless Up; it changes when entering or leaving Up.
        let desired = if new == BfdState::Up { self.cfg.min_tx_us() } else { self.cfg.min_tx_us().max(SLOW_TX_US) };
        if old == BfdState::Up {
            // A new session starts from scratch: no Poll left over from the last one.
            self.polling = false;
            self.rx_in_use_us = self.required_min_rx_us;
        }
        self.set_desired_min_tx(now, desired);
    }

    /// Changes the advertised Desired Min TX (§6.8.3): a Poll Sequence verifies the change while
    /// Up; a decrease applies at once, an increase only once the Poll ends.
    fn set_desired_min_tx(&mut self, now: Micros, desired: u32) {
        if desired == self.desired_min_tx_us {
            return;
        }
        let increase = desired > self.desired_min_tx_us;
        self.desired_min_tx_us = desired;
        if self.state == BfdState::Up {
            self.polling = true;
            if !increase {
                self.tx_in_use_us = desired;
            }
        } else {
            self.tx_in_use_us = desired;
        }
        self.reschedule_tx(now);
    }

    /// Changes the configured intervals and multiplier of a running session. New intervals are
    /// verified with a Poll Sequence while Up (§6.8.3): a larger Required Min RX applies at once
    /// (the peer may slow down only after the Final), a smaller one only after the Poll.
    pub fn reconfigure(&mut self, now: Micros, cfg: BfdConfig) {
        self.cfg = cfg;
        if cfg.min_rx_us() != self.required_min_rx_us {
            let increase = cfg.min_rx_us() > self.required_min_rx_us;
            self.required_min_rx_us = cfg.min_rx_us();
            if self.state == BfdState::Up {
                self.polling = true;
                if increase {
                    self.rx_in_use_us = cfg.min_rx_us();
                }
            } else {
                self.rx_in_use_us = cfg.min_rx_us();
            }
        }
        let desired = if self.state == BfdState::Up { cfg.min_tx_us() } else { cfg.min_tx_us().max(SLOW_TX_US) };
        self.set_desired_min_tx(now, desired);
    }

    /// Brings the next periodic packet forward when the interval got shorter, and restarts
    /// transmission that had stopped.
    fn reschedule_tx(&mut self, now: Micros) {
        if !self.periodic_allowed() {
            return;
        }
        let interval = Micros::from(self.tx_interval_us());
        match self.tx_at {
            None => self.tx_at = Some(now),
            Some(t) if t > now + interval => self.tx_at = Some(now + self.jittered(self.tx_interval_us())),
            Some(_) => {}
        }
    }

    /// §6.8.7: each interval is reduced by a random 0–25 % (10–25 % when Detect Mult is 1, so
    /// that the interval stays at most 90 %).
    fn jittered(&mut self, interval_us: u32) -> Micros {
        // xorshift64*: jitter needs no cryptographic randomness.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        let (lo, hi) = if self.cfg.multiplier() == 1 { (7_500, 9_000) } else { (7_500, 10_000) };
        let permyriad = lo + r % (hi - lo + 1);
        Micros::from(interval_us) * permyriad / 10_000
    }

    /// Our next Control packet (§6.8.7).
    fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            // Our BFD runs in the same process as the control plane: C is clear.
            cpi: false,
            demand: false,
            detect_mult: self.cfg.multiplier(),
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx_us: self.desired_min_tx_us,
            required_min_rx_us: self.required_min_rx_us,
            required_min_echo_rx_us: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Micros = 1_000;

    fn cfg(tx_ms: u32, rx_ms: u32, mult: u32) -> BfdConfig {
        BfdConfig::new(tx_ms, rx_ms, mult).unwrap()
    }

    /// What the peer sends: its discriminator 77, 100 ms / 100 ms × 3.
    fn peer(state: BfdState, your: u32) -> ControlPacket {
        ControlPacket {
            diag: Diag::NoDiagnostic,
            state,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 77,
            your_disc: your,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
            required_min_echo_rx_us: 0,
        }
    }

    /// A session brought Up at t = 10 ms (three-way handshake via Down → Init → Up).
    fn up() -> Machine {
        let mut m = Machine::new(cfg(100, 100, 3), 5, 0, 42);
        let first = m.poll(0);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].state, first[0].your_disc, first[0].desired_min_tx_us), (BfdState::Down, 0, SLOW_TX_US));
        assert_eq!(m.receive(5 * MS, &peer(BfdState::Down, 0)), None);
        assert_eq!(m.state(), BfdState::Init);
        assert_eq!(m.receive(10 * MS, &peer(BfdState::Init, 5)), None);
        assert_eq!(m.state(), BfdState::Up);
        m
    }

    #[test]
    fn three_way_handshake_and_the_poll_to_fast_timers() {
        let mut m = up();
        assert_eq!(m.remote_disc(), 77);
        // Entering Up lowers Desired Min TX from 1 s to 100 ms, with a Poll Sequence (§6.8.3);
        // the decrease applies at once, so the next packet comes within 100 ms.
        assert!(m.polling());
        assert_eq!(m.tx_interval_us(), 100_000);
        let t = m.next_deadline().unwrap();
        assert!(t <= 110 * MS, "{t}");
        let sent = m.poll(t);
        assert_eq!(sent.len(), 1);
        assert!(sent[0].poll && !sent[0].final_);
        assert_eq!((sent[0].state, sent[0].your_disc, sent[0].desired_min_tx_us), (BfdState::Up, 77, 100_000));
        // The peer's Final ends the Poll.
        let mut fin = peer(BfdState::Up, 5);
        fin.final_ = true;
        m.receive(t + MS, &fin);
        assert!(!m.polling());
        let t2 = m.next_deadline().unwrap();
        assert!(!m.poll(t2)[0].poll);
    }

    #[test]
    fn detection_time_expiry_takes_the_session_down() {
        let mut m = up();
        // Detection Time = 3 × max(100 ms, 100 ms) from the last packet (10 ms).
        assert_eq!(m.detection_time_us(), Some(300 * MS));
        let mut t = 10 * MS;
        while t < 309 * MS {
            m.poll(t);
            t += MS;
        }
        assert_eq!(m.state(), BfdState::Up);
        m.poll(310 * MS);
        assert_eq!(m.state(), BfdState::Down);
        assert_eq!(m.diag(), Diag::ControlDetectionTimeExpired);
        assert_eq!(m.remote_disc(), 0);
        // Back to the slow rate, still sending (Down), with the diagnostic and Your Disc 0.
        let t = m.next_deadline().unwrap();
        let p = m.poll(t);
        assert_eq!((p[0].state, p[0].diag, p[0].your_disc), (BfdState::Down, Diag::ControlDetectionTimeExpired, 0));
        assert_eq!(p[0].desired_min_tx_us, SLOW_TX_US);
        assert!(!p[0].poll);
    }

    #[test]
    fn the_peer_signalling_down_or_admin_down() {
        let mut m = up();
        m.receive(20 * MS, &peer(BfdState::Down, 5));
        assert_eq!((m.state(), m.diag()), (BfdState::Down, Diag::NeighborSignaledSessionDown));
        // Down + Down → Init, Init + Up → Up.
        m.receive(30 * MS, &peer(BfdState::Down, 5));
        assert_eq!(m.state(), BfdState::Init);
        m.receive(40 * MS, &peer(BfdState::Up, 5));
        assert_eq!((m.state(), m.diag()), (BfdState::Up, Diag::NoDiagnostic));
        m.receive(50 * MS, &peer(BfdState::AdminDown, 0));
        assert_eq!((m.state(), m.remote_state()), (BfdState::Down, BfdState::AdminDown));
        // Up is only reached through Init: Down + Up does nothing (§6.2).
        m.receive(60 * MS, &peer(BfdState::Up, 5));
        assert_eq!(m.state(), BfdState::Down);
    }

    #[test]
    fn a_poll_is_answered_at_once_with_a_final() {
        let mut m = up();
        let mut p = peer(BfdState::Up, 5);
        p.poll = true;
        p.desired_min_tx_us = 50_000;
        p.required_min_rx_us = 300_000;
        let fin = m.receive(20 * MS, &p).expect("a Final");
        assert!(fin.final_ && !fin.poll, "P and F are never both set");
        // The peer's slower Required Min RX slows us down: max(100 ms, 300 ms).
        assert_eq!(m.tx_interval_us(), 300_000);
        // Its faster Desired Min TX shortens the Detection Time only to 3 × our 100 ms.
        assert_eq!(m.detection_time_us(), Some(300 * MS));
    }

    #[test]
    fn timers_follow_the_rfc_formulas() {
        let mut m = Machine::new(cfg(300, 200, 5), 9, 0, 1);
        m.poll(0);
        // While not Up we advertise 1 s (§6.8.3) and transmit at that rate.
        assert_eq!(m.tx_interval_us(), SLOW_TX_US);
        let mut p = peer(BfdState::Down, 0);
        p.desired_min_tx_us = 1_000_000;
        p.detect_mult = 4;
        m.receive(0, &p);
        // Detection Time: peer mult 4 × max(our rx 200 ms, peer tx 1 s).
        assert_eq!(m.detection_time_us(), Some(4 * 1_000_000));
        p.state = BfdState::Up;
        p.your_disc = 9;
        p.desired_min_tx_us = 50_000;
        p.required_min_rx_us = 400_000;
        m.receive(MS, &p);
        assert_eq!(m.state(), BfdState::Up);
        assert_eq!(m.tx_interval_us(), 400_000, "max(our 300 ms, peer rx 400 ms)");
        assert_eq!(m.detection_time_us(), Some(4 * 200_000), "4 × max(our rx 200 ms, peer tx 50 ms)");
        // A peer asking for no packets (Required Min RX 0) gets none (§6.8.7).
        p.required_min_rx_us = 0;
        for k in 1..=7 {
            m.receive(k * 100 * MS, &p);
            assert!(m.poll(k * 100 * MS + 50 * MS).is_empty());
        }
        assert_eq!(m.state(), BfdState::Up);
    }

    #[test]
    fn jitter_stays_within_75_to_100_percent_and_90_with_multiplier_one() {
        for (mult, max) in [(3, 100_000), (1, 90_000)] {
            let mut m = Machine::new(cfg(100, 100, mult), 1, 0, 7);
            let (mut lo, mut hi) = (Micros::MAX, 0);
            for _ in 0..2_000 {
                let j = m.jittered(100_000);
                lo = lo.min(j);
                hi = hi.max(j);
            }
            assert!((75_000..76_000).contains(&lo), "mult {mult}: min {lo}");
            assert!((max - 999..=max).contains(&hi), "mult {mult}: max {hi}");
        }
    }

    #[test]
    fn slower_timers_wait_for_the_poll_to_end() {
        let mut m = up();
        let mut fin = peer(BfdState::Up, 5);
        fin.final_ = true;
        m.receive(20 * MS, &fin);
        assert!(!m.polling());
        // Slower tx, faster rx: both take effect only after the Final (§6.8.3).
        m.reconfigure(30 * MS, cfg(500, 50, 3));
        assert!(m.polling());
        assert_eq!(m.tx_interval_us(), 100_000);
        assert_eq!(m.detection_time_us(), Some(300 * MS));
        let t = m.next_deadline().unwrap();
        let sent = m.poll(t);
        assert!(sent[0].poll);
        assert_eq!((sent[0].desired_min_tx_us, sent[0].required_min_rx_us), (500_000, 50_000));
        m.receive(t + MS, &fin);
        assert_eq!(m.tx_interval_us(), 500_000);
        assert_eq!(m.detection_time_us(), Some(300 * MS), "3 × max(50 ms, peer tx 100 ms)");
    }

    #[test]
    fn admin_down_stops_everything() {
        let mut m = up();
        let p = m.admin_down(20 * MS);
        assert_eq!((p.state, p.diag), (BfdState::AdminDown, Diag::AdministrativelyDown));
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.receive(30 * MS, &peer(BfdState::Up, 5)), None);
        assert_eq!(m.state(), BfdState::AdminDown);
    }
}
