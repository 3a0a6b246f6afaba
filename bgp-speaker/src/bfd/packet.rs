//! The BFD Control packet, RFC 5880 §4.1: a sans-IO codec for its 24-octet mandatory section.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       My Discriminator                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Your Discriminator                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Desired Min TX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Required Min RX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Required Min Echo RX Interval                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Authentication (RFC 5880 §6.7) is not implemented: a packet with the A bit set is dropped
//! ([`DecodeError::AuthenticationNotSupported`]), which is what §6.8.6 asks of a session that
//! has no authentication configured. We never send the A bit, so the optional Authentication
//! Section never appears in what we encode.

/// The protocol version, RFC 5880 §4.1.
pub const VERSION: u8 = 1;
/// Length of the mandatory section.
pub const PACKET_LEN: usize = 24;

/// Session states (RFC 5880 §4.1 "Sta", §6.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BfdState {
    AdminDown = 0,
    #[default]
    Down = 1,
    Init = 2,
    Up = 3,
}

impl BfdState {
    fn from_bits(b: u8) -> BfdState {
        match b & 3 {
            0 => BfdState::AdminDown,
            1 => BfdState::Down,
            2 => BfdState::Init,
            _ => BfdState::Up,
        }
    }
}

impl std::fmt::Display for BfdState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Diagnostic codes (RFC 5880 §4.1 "Diag"): why the local system last left Up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Diag {
    #[default]
    NoDiagnostic,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9–31: reserved for future use; kept so that decoding and encoding round-trip.
    Reserved(u8),
}

impl Diag {
    pub fn code(self) -> u8 {
        match self {
            Diag::NoDiagnostic => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(c) => c & 0x1f,
        }
    }

    /// The 5-bit field's value (higher bits are ignored).
    pub fn from_code(c: u8) -> Diag {
        match c & 0x1f {
            0 => Diag::NoDiagnostic,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            c => Diag::Reserved(c),
        }
    }
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Diag::NoDiagnostic => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Reserved(c) => return write!(f, "reserved diagnostic {c}"),
        };
        f.write_str(s)
    }
}

/// A BFD Control packet (mandatory section). Intervals are in microseconds, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: BfdState,
    /// P: the sender asks for verification of a parameter change (§6.5).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: Control Plane Independent.
    pub cpi: bool,
    /// D: Demand mode.
    pub demand: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a received packet is discarded (RFC 5880 §6.8.6, first paragraphs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} octets is shorter than a BFD Control packet")]
    Short(usize),
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("length field {field} is below 24 or beyond the {received} octets received")]
    Length { field: u8, received: usize },
    #[error("detect multiplier is zero")]
    ZeroDetectMult,
    #[error("multipoint (M) bit set")]
    Multipoint,
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("your discriminator is zero in state {0}")]
    ZeroYourDiscriminator(BfdState),
    /// We have no authentication configured (and do not implement it), so §6.8.6 says discard.
    #[error("authentication (A bit) is not supported")]
    AuthenticationNotSupported,
}

const P: u8 = 0x20;
const F: u8 = 0x10;
const C: u8 = 0x08;
const A: u8 = 0x04;
const D: u8 = 0x02;
const M: u8 = 0x01;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl ControlPacket {
    /// The 24 octets on the wire (Length 24, A and M clear).
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (VERSION << 5) | self.diag.code();
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        b[1] = ((self.state as u8) << 6)
            | flag(self.poll, P)
            | flag(self.final_, F)
            | flag(self.cpi, C)
            | flag(self.demand, D);
        b[2] = self.detect_mult;
        b[3] = PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        b
    }

    /// Decodes and validates one UDP payload (RFC 5880 §6.8.6: the checks that do not need
    /// session state; demultiplexing by Your Discriminator is the driver's).
    pub fn decode(b: &[u8]) -> Result<ControlPacket, DecodeError> {
        if b.len() < PACKET_LEN {
            return Err(DecodeError::Short(b.len()));
        }
        let version = b[0] >> 5;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let flags = b[1];
        let length = b[3];
        // §6.8.6: "less than the minimum correct value (24 if the A bit is clear, 26
        // otherwise)", or "greater than the payload of the encapsulating protocol".
        let min = if flags & A != 0 { 26 } else { PACKET_LEN };
        if usize::from(length) < min || usize::from(length) > b.len() {
            return Err(DecodeError::Length { field: length, received: b.len() });
        }
        if b[2] == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if flags & M != 0 {
            return Err(DecodeError::Multipoint);
        }
        let state = BfdState::from_bits(flags >> 6);
        let my_disc = be32(b, 4);
        let your_disc = be32(b, 8);
        if my_disc == 0 {
            return Err(DecodeError::ZeroMyDiscriminator);
        }
        if your_disc == 0 && !matches!(state, BfdState::Down | BfdState::AdminDown) {
            return Err(DecodeError::ZeroYourDiscriminator(state));
        }
        if flags & A != 0 {
            return Err(DecodeError::AuthenticationNotSupported);
        }
        Ok(ControlPacket {
            diag: Diag::from_code(b[0]),
            state,
            poll: flags & P != 0,
            final_: flags & F != 0,
            cpi: flags & C != 0,
            demand: flags & D != 0,
            detect_mult: b[2],
            my_disc,
            your_disc,
            desired_min_tx_us: be32(b, 12),
            required_min_rx_us: be32(b, 16),
            required_min_echo_rx_us: be32(b, 20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ControlPacket {
        ControlPacket {
            diag: Diag::ControlDetectionTimeExpired,
            state: BfdState::Up,
            poll: true,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 0x0102_0304,
            your_disc: 0x0a0b_0c0d,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
        }
    }

    #[test]
    fn encodes_the_rfc_layout() {
        let b = sample().encode();
        assert_eq!(
            b,
            [
                0x21, 0xe0, 3, 24, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x01, 0x86, 0xa0, 0x00, 0x04, 0x93, 0xe0,
                0, 0, 0, 0
            ]
        );
        assert_eq!(ControlPacket::decode(&b), Ok(sample()));
    }

    #[test]
    fn a_packet_as_bird_sends_it_in_down_decodes() {
        // Down, diag 0, mult 3, my disc 0x12345678, your disc 0, 1 s / 100 ms / 0.
        let b = [
            0x20, 0x40, 3, 24, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x01, 0x86, 0xa0, 0,
            0, 0, 0,
        ];
        let p = ControlPacket::decode(&b).unwrap();
        assert_eq!(p.state, BfdState::Down);
        assert_eq!((p.my_disc, p.your_disc), (0x1234_5678, 0));
        assert_eq!((p.desired_min_tx_us, p.required_min_rx_us), (1_000_000, 100_000));
        // Trailing octets beyond Length (padding) are accepted.
        let mut padded = b.to_vec();
        padded.extend([0; 4]);
        assert_eq!(ControlPacket::decode(&padded), Ok(p));
    }

    #[test]
    fn invalid_packets_are_rejected() {
        let good = sample().encode();
        let with = |f: &dyn Fn(&mut [u8; 24])| {
            let mut b = good;
            f(&mut b);
            ControlPacket::decode(&b)
        };
        assert_eq!(ControlPacket::decode(&good[..23]), Err(DecodeError::Short(23)));
        assert_eq!(with(&|b| b[0] = (2 << 5) | 1), Err(DecodeError::Version(2)));
        assert_eq!(with(&|b| b[3] = 23), Err(DecodeError::Length { field: 23, received: 24 }));
        assert_eq!(with(&|b| b[3] = 25), Err(DecodeError::Length { field: 25, received: 24 }));
        assert_eq!(with(&|b| b[2] = 0), Err(DecodeError::ZeroDetectMult));
        assert_eq!(with(&|b| b[1] |= M), Err(DecodeError::Multipoint));
        assert_eq!(with(&|b| b[4..8].fill(0)), Err(DecodeError::ZeroMyDiscriminator));
        assert_eq!(with(&|b| b[8..12].fill(0)), Err(DecodeError::ZeroYourDiscriminator(BfdState::Up)));
        // Your Discriminator 0 is fine in Down and AdminDown.
        assert!(
            with(&|b| {
                b[8..12].fill(0);
                b[1] = (BfdState::Down as u8) << 6;
            })
            .is_ok()
        );
        assert!(
            with(&|b| {
                b[8..12].fill(0);
                b[1] = 0;
            })
            .is_ok()
        );
        // Authentication: dropped (with a plausible auth section present).
        let mut auth = good.to_vec();
        auth[1] |= A;
        auth[3] = 28;
        auth.extend([1, 4, 0, 0]);
        assert_eq!(ControlPacket::decode(&auth), Err(DecodeError::AuthenticationNotSupported));
        auth[3] = 25;
        assert_eq!(ControlPacket::decode(&auth), Err(DecodeError::Length { field: 25, received: 28 }));
    }

    fn state() -> impl Strategy<Value = BfdState> {
        prop_oneof![Just(BfdState::AdminDown), Just(BfdState::Down), Just(BfdState::Init), Just(BfdState::Up)]
    }

    fn packet() -> impl Strategy<Value = ControlPacket> {
        (
            (0u8..32, state(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), 1u8..=255),
            (1u32.., any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
        )
            .prop_map(|((diag, state, poll, final_, cpi, demand, detect_mult), (my, your, tx, rx, echo))| {
                let your_disc = if matches!(state, BfdState::Up | BfdState::Init) { your.max(1) } else { your };
                ControlPacket {
                    diag: Diag::from_code(diag),
                    state,
                    poll,
                    final_,
                    cpi,
                    demand,
                    detect_mult,
                    my_disc: my,
                    your_disc,
                    desired_min_tx_us: tx,
                    required_min_rx_us: rx,
                    required_min_echo_rx_us: echo,
                }
            })
    }

    proptest! {
        #[test]
        fn valid_packets_round_trip(p in packet()) {
            let b = p.encode();
            prop_assert_eq!(ControlPacket::decode(&b), Ok(p));
            prop_assert_eq!(ControlPacket::decode(&b).unwrap().encode(), b);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_reencodes(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = ControlPacket::decode(&b) {
                // What decodes re-encodes to the same mandatory section (Length normalised to 24).
                let e = p.encode();
                prop_assert_eq!(&e[4..], &b[4..24]);
                prop_assert_eq!(e[2], b[2]);
                prop_assert_eq!(e[0], b[0]);
            }
        }
    }
}
