//! The LAN heartbeat between L2 announcers: a small fixed binary datagram sent by every node
//! every `ElectionConfig::heartbeat_interval` (and at once when its view changes), by UDP
//! multicast/broadcast on the announcing LAN. It is the fast failure detector of the election
//! ([`crate::election`]); etcd stays the fencing authority ([`crate::lease`]).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     magic "HL2B" (4 bytes)                    |
//! +---------------+---------------+-------------------------------+
//! |  version (1)  |     flags     |        horizon_ms (u16)       |
//! +---------------+---------------+-------------------------------+
//! |                        sequence (u64)                         |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                 lease id (i64, 0 = no lease)                  |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                      view epoch (u32)                         |
//! +---------------------------------------------------------------+
//! |                    eligible digest (u64)                      |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                   knowledge digest (u64)                      |
//! |                                                               |
//! +---------------+-----------------------------------------------+
//! | name len (u8) |  node name (1..=253 bytes, UTF-8) ...         |
//! +---------------+-----------------------------------------------+
//! ```
//! All integers are big-endian. flags bit 0 = `LEASE_VALID` (the sender's lease is provably
//! valid right now, so it may be answering); other bits must be zero in version 1.

use crate::election::{LeaseId, NodeId};

pub const MAGIC: [u8; 4] = *b"HL2B";
pub const VERSION: u8 = 1;
/// Bytes before the node name.
pub const HEADER_LEN: usize = 45;
pub const MAX_NAME_LEN: usize = 253;
pub const MAX_LEN: usize = HEADER_LEN + MAX_NAME_LEN;

pub const FLAG_LEASE_VALID: u8 = 0x01;

/// One heartbeat, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub node: NodeId,
    /// Increases by one per datagram; receivers drop anything not newer (reordering).
    pub seq: u64,
    /// The sender's etcd lease, if it holds one.
    pub lease: Option<LeaseId>,
    /// The sender's lease is provably valid (it may be answering).
    pub lease_valid: bool,
    /// How long after its last acknowledged keep-alive the sender stops answering: a successor
    /// that fenced it waits this long (plus margin) before announcing.
    pub horizon_ms: u16,
    /// Bumped each time the sender's view (live nodes, their leases and eligibility) changes.
    pub epoch: u32,
    /// Digest of the sender's own eligible IPs (per its model), to spot model disagreement.
    pub eligible_digest: u64,
    /// Digest of everything the sender knows that ownership depends on (live nodes with lease,
    /// eligibility and epoch). Acquisitions wait until all live nodes report the same digest.
    pub knowledge: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram too short: {0} bytes")]
    Short(usize),
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported version {0}")]
    Version(u8),
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("bad node name length {0}")]
    NameLen(usize),
    #[error("node name is not UTF-8")]
    NameUtf8,
    #[error("datagram length {got} does not match its name length (expected {expected})")]
    Length { got: usize, expected: usize },
    #[error("negative lease id")]
    Lease,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("node name must be 1..=253 bytes, got {0}")]
    NameLen(usize),
}

impl Heartbeat {
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let name = self.node.as_str().as_bytes();
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(EncodeError::NameLen(name.len()));
        }
        let mut b = Vec::with_capacity(HEADER_LEN + name.len());
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(if self.lease_valid { FLAG_LEASE_VALID } else { 0 });
        b.extend_from_slice(&self.horizon_ms.to_be_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.lease.map_or(0, |l| l.0).to_be_bytes());
        b.extend_from_slice(&self.epoch.to_be_bytes());
        b.extend_from_slice(&self.eligible_digest.to_be_bytes());
        b.extend_from_slice(&self.knowledge.to_be_bytes());
        b.push(name.len() as u8);
        b.extend_from_slice(name);
        Ok(b)
    }

    /// Decodes one datagram; never panics, rejects anything that is not exactly one heartbeat.
    pub fn decode(b: &[u8]) -> Result<Heartbeat, DecodeError> {
        if b.len() < HEADER_LEN + 1 {
            return Err(DecodeError::Short(b.len()));
        }
        if b[0..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if b[4] != VERSION {
            return Err(DecodeError::Version(b[4]));
        }
        let flags = b[5];
        if flags & !FLAG_LEASE_VALID != 0 {
            return Err(DecodeError::Flags(flags));
        }
        let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let horizon_ms = u16::from_be_bytes([b[6], b[7]]);
        let seq = u64_at(8);
        let lease = i64::from_be_bytes(b[16..24].try_into().expect("8 bytes"));
        if lease < 0 {
            return Err(DecodeError::Lease);
        }
        let epoch = u32::from_be_bytes(b[24..28].try_into().expect("4 bytes"));
        let eligible_digest = u64_at(28);
        let knowledge = u64_at(36);
        let name_len = b[44] as usize;
        if name_len == 0 || name_len > MAX_NAME_LEN {
            return Err(DecodeError::NameLen(name_len));
        }
        if b.len() != HEADER_LEN + name_len {
            return Err(DecodeError::Length { got: b.len(), expected: HEADER_LEN + name_len });
        }
        let name = std::str::from_utf8(&b[HEADER_LEN..]).map_err(|_| DecodeError::NameUtf8)?;
        Ok(Heartbeat {
            node: NodeId::new(name),
            seq,
            lease: (lease != 0).then_some(LeaseId(lease)),
            lease_valid: flags & FLAG_LEASE_VALID != 0,
            horizon_ms,
            epoch,
            eligible_digest,
            knowledge,
        })
    }
}

// ===== tokio UDP transport =====

/// A UDP heartbeat socket: sends to a (multicast or broadcast) group address and receives from
/// the same port. Thin: no timers, the election decides when to send.
#[derive(Debug)]
pub struct HeartbeatSocket {
    sock: tokio::net::UdpSocket,
    group: std::net::SocketAddr,
}

impl HeartbeatSocket {
    /// Binds `bind` (e.g. 0.0.0.0:7946) and sends to `group`. For an IPv4 multicast group it
    /// joins the group on `iface_addr`; for broadcast it enables SO_BROADCAST.
    pub async fn bind(
        bind: std::net::SocketAddr,
        group: std::net::SocketAddr,
        iface_addr: std::net::Ipv4Addr,
    ) -> std::io::Result<HeartbeatSocket> {
        let sock = tokio::net::UdpSocket::bind(bind).await?;
        match group.ip() {
            std::net::IpAddr::V4(g) if g.is_multicast() => {
                sock.join_multicast_v4(g, iface_addr)?;
                sock.set_multicast_loop_v4(false)?;
            }
            std::net::IpAddr::V4(_) => sock.set_broadcast(true)?,
            std::net::IpAddr::V6(g) if g.is_multicast() => sock.join_multicast_v6(&g, 0)?,
            std::net::IpAddr::V6(_) => {}
        }
        Ok(HeartbeatSocket { sock, group })
    }

    pub async fn send(&self, hb: &Heartbeat) -> std::io::Result<()> {
        let b = hb.encode().map_err(std::io::Error::other)?;
        self.sock.send_to(&b, self.group).await.map(|_| ())
    }

    /// Receives the next well-formed heartbeat; malformed datagrams are skipped.
    pub async fn recv(&self) -> std::io::Result<Heartbeat> {
        let mut buf = [0u8; MAX_LEN + 1];
        loop {
            let (n, from) = self.sock.recv_from(&mut buf).await?;
            match Heartbeat::decode(&buf[..n]) {
                Ok(hb) => return Ok(hb),
                Err(e) => tracing::debug!(%from, error = %e, "dropping bad heartbeat"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Heartbeat {
        Heartbeat {
            node: NodeId::new("n1"),
            seq: 0x0102030405060708,
            lease: Some(LeaseId(0x1122334455667788)),
            lease_valid: true,
            horizon_ms: 25,
            epoch: 7,
            eligible_digest: 0xAABBCCDDEEFF0011,
            knowledge: 0x2233445566778899,
        }
    }

    const SAMPLE_BYTES: [u8; 47] = [
        b'H', b'L', b'2', b'B', // magic
        1, 0x01, 0x00, 25, // version, flags, horizon
        1, 2, 3, 4, 5, 6, 7, 8, // seq
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // lease
        0, 0, 0, 7, // epoch
        0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0x00, 0x11, // eligible digest
        0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, // knowledge
        2, b'n', b'1', // name
    ];

    #[test]
    fn encodes_to_vector() {
        assert_eq!(sample().encode().unwrap(), SAMPLE_BYTES.to_vec());
    }

    #[test]
    fn decodes_vector() {
        assert_eq!(Heartbeat::decode(&SAMPLE_BYTES).unwrap(), sample());
    }

    #[test]
    fn no_lease_roundtrip() {
        let hb = Heartbeat { lease: None, lease_valid: false, ..sample() };
        let b = hb.encode().unwrap();
        assert_eq!(&b[16..24], &[0; 8]);
        assert_eq!(b[5], 0);
        assert_eq!(Heartbeat::decode(&b).unwrap(), hb);
    }

    #[test]
    fn rejects_garbage() {
        use DecodeError::*;
        assert_eq!(Heartbeat::decode(&[]), Err(Short(0)));
        assert_eq!(Heartbeat::decode(&SAMPLE_BYTES[..45]), Err(Short(45)));
        let with = |i: usize, v: u8| {
            let mut b = SAMPLE_BYTES.to_vec();
            b[i] = v;
            Heartbeat::decode(&b)
        };
        assert_eq!(with(0, b'X'), Err(BadMagic));
        assert_eq!(with(4, 2), Err(Version(2)));
        assert_eq!(with(5, 0x81), Err(Flags(0x81)));
        assert_eq!(with(16, 0x80), Err(Lease));
        assert_eq!(with(44, 0), Err(NameLen(0)));
        assert_eq!(with(44, 3), Err(Length { got: 47, expected: 48 }));
        assert_eq!(with(45, 0xff), Err(NameUtf8));
        let mut long = SAMPLE_BYTES.to_vec();
        long.push(0);
        assert_eq!(Heartbeat::decode(&long), Err(Length { got: 48, expected: 47 }));
    }

    #[test]
    fn decode_never_panics_on_prefixes_and_flips() {
        for n in 0..SAMPLE_BYTES.len() {
            let _ = Heartbeat::decode(&SAMPLE_BYTES[..n]);
        }
        for i in 0..SAMPLE_BYTES.len() {
            for bit in 0..8 {
                let mut b = SAMPLE_BYTES.to_vec();
                b[i] ^= 1 << bit;
                let _ = Heartbeat::decode(&b);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_arbitrary_bytes_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = Heartbeat::decode(&b);
        }

        #[test]
        fn roundtrip(
            name in "[a-z0-9.-]{1,253}",
            seq in proptest::prelude::any::<u64>(),
            lease in 0..i64::MAX,
            lease_valid in proptest::prelude::any::<bool>(),
            horizon_ms in proptest::prelude::any::<u16>(),
            epoch in proptest::prelude::any::<u32>(),
            eligible_digest in proptest::prelude::any::<u64>(),
            knowledge in proptest::prelude::any::<u64>(),
        ) {
            let hb = Heartbeat {
                node: NodeId::new(name),
                seq,
                lease: (lease != 0).then_some(LeaseId(lease)),
                lease_valid,
                horizon_ms,
                epoch,
                eligible_digest,
                knowledge,
            };
            let b = hb.encode().unwrap();
            proptest::prop_assert_eq!(b.len(), HEADER_LEN + hb.node.as_str().len());
            proptest::prop_assert_eq!(Heartbeat::decode(&b).unwrap(), hb);
        }
    }

    #[test]
    fn encode_rejects_bad_names() {
        let hb = Heartbeat { node: NodeId::new(""), ..sample() };
        assert_eq!(hb.encode(), Err(EncodeError::NameLen(0)));
        let hb = Heartbeat { node: NodeId::new("x".repeat(254)), ..sample() };
        assert_eq!(hb.encode(), Err(EncodeError::NameLen(254)));
        let hb = Heartbeat { node: NodeId::new("x".repeat(253)), ..sample() };
        assert_eq!(Heartbeat::decode(&hb.encode().unwrap()).unwrap(), hb);
    }
}
