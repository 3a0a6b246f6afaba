//! `#[repr(C)]` mirrors of every map key and value in `bpf/include/halyard/common.h`, with their
//! byte encodings.
//!
//! The maps are handled as byte arrays (`[u8; N]`, which aya accepts as plain data) and each mirror
//! encodes itself field by field at its `offset_of!` position. That keeps the crate free of
//! `unsafe` and makes byte order explicit: fields the datapath compares with packet bytes
//! (addresses, ports) are stored as network-order byte arrays, ids and counters in host order.
//! The `layout` test checks every size and offset against the C compiler's (`C_LAYOUT`, generated
//! by build.rs from bpf/layout.c).

use std::mem::{offset_of, size_of};
use std::net::{Ipv4Addr, Ipv6Addr};

include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));

/// Maglev table size compiled into the BPF objects (`HL_MAGLEV_M`).
pub const MAGLEV_M: usize = C_MAGLEV_M as usize;

/// One Maglev table as the inner map stores it.
pub type MaglevLut = [u32; MAGLEV_M];

/// A value that can be written into and read from a map's bytes at a given offset.
trait Field: Sized {
    fn put(&self, buf: &mut [u8], off: usize);
    fn get(buf: &[u8], off: usize) -> Self;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn put(&self, buf: &mut [u8], off: usize) {
                buf[off..off + size_of::<$t>()].copy_from_slice(&self.to_ne_bytes());
            }
            fn get(buf: &[u8], off: usize) -> Self {
                let mut b = [0u8; size_of::<$t>()];
                b.copy_from_slice(&buf[off..off + size_of::<$t>()]);
                <$t>::from_ne_bytes(b)
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64);

impl<const N: usize> Field for [u8; N] {
    fn put(&self, buf: &mut [u8], off: usize) {
        buf[off..off + N].copy_from_slice(self);
    }
    fn get(buf: &[u8], off: usize) -> Self {
        let mut b = [0u8; N];
        b.copy_from_slice(&buf[off..off + N]);
        b
    }
}

/// Conversion between a mirror and the bytes of its map key or value.
pub trait MapBytes<const N: usize>: Sized {
    fn to_bytes(&self) -> [u8; N];
    fn from_bytes(bytes: &[u8; N]) -> Self;
}

macro_rules! mirror {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),* }

        impl MapBytes<{ size_of::<$name>() }> for $name {
            fn to_bytes(&self) -> [u8; size_of::<$name>()] {
                let mut b = [0u8; size_of::<$name>()];
                $( Field::put(&self.$field, &mut b, offset_of!($name, $field)); )*
                b
            }
            fn from_bytes(b: &[u8; size_of::<$name>()]) -> Self {
                Self { $( $field: Field::get(b, offset_of!($name, $field)) ),* }
            }
        }

        impl $name {
            /// (field, offset, size) of each field, for the layout test.
            pub fn fields() -> Vec<(&'static str, usize, usize)> {
                vec![$( (stringify!($field), offset_of!($name, $field), size_of::<$ty>()) ),*]
            }
        }
    };
}

mirror! {
    /// `struct lb4_key`: a service frontend.
    /// Aligned like the C struct (its `__be32` fields), though encoded byte by byte.
    #[repr(align(4))]
    Lb4Key { vip: [u8; 4], dport: [u8; 2], proto: u8, pad: u8 }
}

mirror! {
    /// `struct lb4_service`.
    Lb4Service { svc_id: u32, backends: u16, mode: u8, flags: u8 }
}

mirror! {
    /// `struct lb4_backend`.
    /// Aligned like the C struct (its `__be32` fields), though encoded byte by byte.
    #[repr(align(4))]
    Lb4Backend {
        addr: [u8; 4],
        port: [u8; 2],
        flags: u8,
        pad: u8,
        nh_mac: [u8; 6],
        pad2: u16,
        nh_ifindex: u32,
    }
}

mirror! {
    /// `struct ct4_key`: a flow as the client sent it.
    /// Aligned like the C struct (its `__be32` fields), though encoded byte by byte.
    #[repr(align(4))]
    Ct4Key { saddr: [u8; 4], daddr: [u8; 4], sport: [u8; 2], dport: [u8; 2], proto: u8, pad: [u8; 3] }
}

mirror! {
    /// `struct ct4_entry`.
    Ct4Entry {
        backend_id: u32,
        svc_id: u32,
        created_ns: u64,
        last_seen_ns: u64,
        flags: u8,
        pad: u8,
        /// SNAT mode: this node's source port for the flow (network order; 0 = none).
        nat_port: [u8; 2],
        pad2: [u8; 4],
    }
}

mirror! {
    /// `struct nat4_rev_key`: a backend's reply to an SNAT flow.
    #[repr(align(4))]
    Nat4RevKey { backend: [u8; 4], node: [u8; 4], bport: [u8; 2], nport: [u8; 2], proto: u8, pad: [u8; 3] }
}

mirror! {
    /// `struct nat4_rev_val`: the client flow it translates back to.
    #[repr(align(4))]
    Nat4RevVal { client: [u8; 4], vip: [u8; 4], cport: [u8; 2], vport: [u8; 2], pad: u32 }
}

mirror! {
    /// `struct hl_stat`: one counter on one CPU.
    HlStat { packets: u64, bytes: u64 }
}

mirror! {
    /// `struct tunnel4_key`: an IPv4 pod CIDR in the `hl_tunnel` LPM trie (aya's
    /// `lpm_trie::Key<[u8; 4]>` has the same bytes).
    #[repr(align(4))]
    Tunnel4Key { prefixlen: u32, addr: [u8; 4] }
}

mirror! {
    /// `struct tunnel4_value`: the node that owns a pod CIDR.
    #[repr(align(4))]
    Tunnel4Value { remote: [u8; 4], flags: u8, pad: [u8; 3] }
}

mirror! {
    /// `struct hl_dsr_opt4`: Cilium's IPv4 DSR option (`struct dsr_opt_v4`) as it sits in a
    /// packet after the 20-byte IPv4 header, in [`ForwardingMode::DsrOpt`]. Not a map entry: mirrored
    /// so the layout test pins its bytes down.
    #[repr(align(4))]
    DsrOpt4 { r#type: u8, len: u8, port: [u8; 2], addr: [u8; 4] }
}

/// `HL_DSR_IPV4_OPT_TYPE`: Cilium's `DSR_IPV4_OPT_TYPE`, `IPOPT_COPY | 0x1a`.
pub const DSR_IPV4_OPT_TYPE: u8 = 0x9a;
/// `HL_DSR_IPV4_OPT_LEN`: the option's length in bytes, type and length included.
pub const DSR_IPV4_OPT_LEN: u8 = 8;

impl DsrOpt4 {
    /// The option for service `vip:port`.
    pub fn new(vip: Ipv4Addr, port: u16) -> Self {
        Self { r#type: DSR_IPV4_OPT_TYPE, len: DSR_IPV4_OPT_LEN, port: port.to_be_bytes(), addr: vip.octets() }
    }
}

mirror! {
    /// `struct svc4_rev_value`: what a pod connected to (ClusterIP and service port), in the
    /// `hl_ew4_rev` map keyed by the backend's reply ([`Ct4Key`]: backend -> client).
    #[repr(align(4))]
    Svc4RevValue { vip: [u8; 4], vport: [u8; 2], pad: [u8; 2] }
}

pub const SVC4_REV_VALUE_LEN: usize = size_of::<Svc4RevValue>();
/// Number of ClusterIP counters (`HL_EW_CNT_MAX`).
pub const EW_COUNTERS: u32 = C_EW_COUNTERS;

impl Svc4RevValue {
    pub fn new(vip: Ipv4Addr, port: u16) -> Self {
        Self { vip: vip.octets(), vport: port.to_be_bytes(), pad: [0; 2] }
    }
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.vip)
    }
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.vport)
    }
}

pub const TUNNEL4_VALUE_LEN: usize = size_of::<Tunnel4Value>();
/// `HL_TUN_F_LOCAL`: this node's own pod CIDR (never encapsulated).
pub const TUN_F_LOCAL: u8 = 0x01;
/// Number of overlay counters (`HL_OVL_CNT_MAX`).
pub const OVL_COUNTERS: u32 = C_OVL_COUNTERS;

impl Tunnel4Value {
    pub fn new(remote: Ipv4Addr, flags: u8) -> Self {
        Self { remote: remote.octets(), flags, pad: [0; 3] }
    }
    pub fn remote(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.remote)
    }
}

pub const LB4_KEY_LEN: usize = size_of::<Lb4Key>();
pub const LB4_SERVICE_LEN: usize = size_of::<Lb4Service>();
pub const LB4_BACKEND_LEN: usize = size_of::<Lb4Backend>();
pub const CT4_KEY_LEN: usize = size_of::<Ct4Key>();
pub const CT4_ENTRY_LEN: usize = size_of::<Ct4Entry>();
pub const HL_STAT_LEN: usize = size_of::<HlStat>();
pub const NAT4_REV_KEY_LEN: usize = size_of::<Nat4RevKey>();
pub const NAT4_REV_VAL_LEN: usize = size_of::<Nat4RevVal>();

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Forwarding modes (`HL_MODE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForwardingMode {
    /// Outer IPv4 (protocol 4, RFC 2003) to the backend, removed there by `tc_decap`; for IPv6
    /// services outer IPv6 (next header 41, RFC 2473).
    DsrIpip = 1,
    /// Outer IPv4/UDP/Geneve (RFC 8926) with Cilium's DSR option (class 0x014B, type 0x81); for
    /// IPv6 services outer IPv6 with the option's IPv6 form.
    DsrGeneve = 2,
    /// DNAT to the backend and SNAT to this node (DSR off): replies come back through this node.
    Snat = 3,
    /// DNAT to the backend plus Cilium's IPv4 DSR option ([`DsrOpt4`]: service address and port)
    /// after the IPv4 header (IPv6: its Destination Options header, [`DsrOpt6`]), on every packet;
    /// `tc_decap` puts the service address back.
    DsrOpt = 4,
}

impl ForwardingMode {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::DsrIpip),
            2 => Some(Self::DsrGeneve),
            3 => Some(Self::Snat),
            4 => Some(Self::DsrOpt),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DsrIpip => "dsr-ipip",
            Self::DsrGeneve => "dsr-geneve",
            Self::Snat => "snat",
            Self::DsrOpt => "dsr-opt",
        }
    }
}

pub const SVC_F_AFFINITY: u8 = 0x01;
/// `HL_CT_F_CLOSING`: a FIN or RST was seen on the flow.
pub const CT_F_CLOSING: u8 = 0x01;
pub const BE_F_STATIC_NH: u8 = 0x01;

impl Lb4Key {
    pub fn new(vip: Ipv4Addr, port: u16, proto: u8) -> Self {
        Self { vip: vip.octets(), dport: port.to_be_bytes(), proto, pad: 0 }
    }
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.vip)
    }
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.dport)
    }
}

impl Lb4Backend {
    pub fn new(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr: addr.octets(), port: port.to_be_bytes(), ..Default::default() }
    }
    /// Send to this MAC (out of `ifindex`, 0 = the ingress device) instead of asking the FIB.
    pub fn with_static_next_hop(mut self, mac: [u8; 6], ifindex: u32) -> Self {
        self.flags |= BE_F_STATIC_NH;
        self.nh_mac = mac;
        self.nh_ifindex = ifindex;
        self
    }
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
}

/// `address:port`, as the CLI and the agent's names show a backend.
impl std::fmt::Display for Lb4Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.addr(), self.port())
    }
}

impl Ct4Key {
    pub fn new(saddr: Ipv4Addr, sport: u16, daddr: Ipv4Addr, dport: u16, proto: u8) -> Self {
        Self {
            saddr: saddr.octets(),
            daddr: daddr.octets(),
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            proto,
            pad: [0; 3],
        }
    }
}

// ===== IPv6 load balancing: the mirrors of `lb6_key`, `lb6_backend`, `ct6_key`, `nat6_rev_key`,
// `nat6_rev_val` and `hl_dsr_opt6`. The service value is [`Lb4Service`] and the conntrack value
// [`Ct4Entry`], as in C; Maglev tables share `hl_lb4_maglev` (ids from one space). =====

mirror! {
    /// `struct lb6_key`: an IPv6 service frontend.
    #[repr(align(4))]
    Lb6Key { vip: [u8; 16], dport: [u8; 2], proto: u8, pad: u8 }
}

mirror! {
    /// `struct lb6_backend`.
    #[repr(align(4))]
    Lb6Backend {
        addr: [u8; 16],
        port: [u8; 2],
        flags: u8,
        pad: u8,
        nh_mac: [u8; 6],
        pad2: u16,
        nh_ifindex: u32,
    }
}

mirror! {
    /// `struct ct6_key`: an IPv6 flow as the client sent it.
    #[repr(align(4))]
    Ct6Key { saddr: [u8; 16], daddr: [u8; 16], sport: [u8; 2], dport: [u8; 2], proto: u8, pad: [u8; 3] }
}

mirror! {
    /// `struct nat6_rev_key`: a backend's reply to an IPv6 SNAT flow.
    #[repr(align(4))]
    Nat6RevKey { backend: [u8; 16], node: [u8; 16], bport: [u8; 2], nport: [u8; 2], proto: u8, pad: [u8; 3] }
}

mirror! {
    /// `struct nat6_rev_val`: the IPv6 client flow it translates back to.
    #[repr(align(4))]
    Nat6RevVal { client: [u8; 16], vip: [u8; 16], cport: [u8; 2], vport: [u8; 2], pad: u32 }
}

mirror! {
    /// `struct hl_dsr_opt6`: Cilium's IPv6 DSR extension header (`struct dsr_opt_v6`): a
    /// Destination Options header with one option of type 0x1B, as it sits after the fixed IPv6
    /// header in [`ForwardingMode::DsrOpt`] for IPv6 services. Not a map entry: mirrored so the
    /// layout test pins its bytes down.
    #[repr(align(4))]
    DsrOpt6 { nexthdr: u8, hdrlen: u8, opt_type: u8, opt_len: u8, addr: [u8; 16], port: [u8; 2], pad: u16 }
}

/// `HL_DSR_IPV6_OPT_TYPE`: Cilium's `DSR_IPV6_OPT_TYPE` (skip if unknown, not changed en route).
pub const DSR_IPV6_OPT_TYPE: u8 = 0x1b;
/// `HL_DSR_IPV6_OPT_LEN`: the option's data length (address, port, padding).
pub const DSR_IPV6_OPT_LEN: u8 = 20;
/// `HL_DSR_IPV6_EXT_LEN`: the whole extension header's length in bytes.
pub const DSR_IPV6_EXT_LEN: u8 = 24;

pub const LB6_KEY_LEN: usize = size_of::<Lb6Key>();
pub const LB6_BACKEND_LEN: usize = size_of::<Lb6Backend>();
pub const CT6_KEY_LEN: usize = size_of::<Ct6Key>();
pub const NAT6_REV_KEY_LEN: usize = size_of::<Nat6RevKey>();
pub const NAT6_REV_VAL_LEN: usize = size_of::<Nat6RevVal>();

impl DsrOpt6 {
    /// The extension header for service `[vip]:port` in front of upper-layer protocol `nexthdr`.
    pub fn new(nexthdr: u8, vip: Ipv6Addr, port: u16) -> Self {
        Self {
            nexthdr,
            hdrlen: (DSR_IPV6_EXT_LEN - 8) / 8,
            opt_type: DSR_IPV6_OPT_TYPE,
            opt_len: DSR_IPV6_OPT_LEN,
            addr: vip.octets(),
            port: port.to_be_bytes(),
            pad: 0,
        }
    }
}

impl Lb6Key {
    pub fn new(vip: Ipv6Addr, port: u16, proto: u8) -> Self {
        Self { vip: vip.octets(), dport: port.to_be_bytes(), proto, pad: 0 }
    }
    pub fn vip(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.vip)
    }
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.dport)
    }
}

impl Lb6Backend {
    pub fn new(addr: Ipv6Addr, port: u16) -> Self {
        Self { addr: addr.octets(), port: port.to_be_bytes(), ..Default::default() }
    }
    /// Send to this MAC (out of `ifindex`, 0 = the ingress device) instead of asking the FIB.
    pub fn with_static_next_hop(mut self, mac: [u8; 6], ifindex: u32) -> Self {
        self.flags |= BE_F_STATIC_NH;
        self.nh_mac = mac;
        self.nh_ifindex = ifindex;
        self
    }
    pub fn addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
}

/// `[address]:port`, as the CLI and the agent's names show an IPv6 backend.
impl std::fmt::Display for Lb6Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]:{}", self.addr(), self.port())
    }
}

impl Ct6Key {
    pub fn new(saddr: Ipv6Addr, sport: u16, daddr: Ipv6Addr, dport: u16, proto: u8) -> Self {
        Self {
            saddr: saddr.octets(),
            daddr: daddr.octets(),
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            proto,
            pad: [0; 3],
        }
    }
}

/// The datapath's counters (`enum hl_counter`), in map order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    Rx = 0,
    PassNotIpv4,
    PassNoService,
    PassFragment,
    PassIpOptions,
    PassNoNeigh,
    DropNoBackend,
    DropMalformed,
    DropEncap,
    DropFib,
    CtHit,
    CtNew,
    Tx,
    Redirect,
    Decap,
    SnatReply,
    DropSnatPorts,
}

impl Counter {
    pub const ALL: [Counter; 17] = [
        Counter::Rx,
        Counter::PassNotIpv4,
        Counter::PassNoService,
        Counter::PassFragment,
        Counter::PassIpOptions,
        Counter::PassNoNeigh,
        Counter::DropNoBackend,
        Counter::DropMalformed,
        Counter::DropEncap,
        Counter::DropFib,
        Counter::CtHit,
        Counter::CtNew,
        Counter::Tx,
        Counter::Redirect,
        Counter::Decap,
        Counter::SnatReply,
        Counter::DropSnatPorts,
    ];

    /// Whether every packet of the LB program ends in exactly one counter of this kind.
    pub fn is_outcome(self) -> bool {
        !matches!(self, Counter::Rx | Counter::CtHit | Counter::CtNew | Counter::Decap)
    }

    /// (metric label "action", metric label "reason").
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            Counter::Rx => ("received", "all"),
            Counter::PassNotIpv4 => ("passed", "not_ipv4"),
            Counter::PassNoService => ("passed", "no_service"),
            Counter::PassFragment => ("passed", "fragment"),
            Counter::PassIpOptions => ("passed", "ip_options"),
            Counter::PassNoNeigh => ("passed", "no_neighbour"),
            Counter::DropNoBackend => ("dropped", "no_backend"),
            Counter::DropMalformed => ("passed", "malformed"),
            Counter::DropEncap => ("dropped", "encap_failed"),
            Counter::DropFib => ("dropped", "unreachable"),
            Counter::CtHit => ("conntrack", "hit"),
            Counter::CtNew => ("conntrack", "new"),
            Counter::Tx => ("forwarded", "tx"),
            Counter::Redirect => ("forwarded", "redirect"),
            Counter::Decap => ("decapsulated", "dsr"),
            Counter::SnatReply => ("forwarded", "snat_reply"),
            Counter::DropSnatPorts => ("dropped", "snat_ports_exhausted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, size: usize, align: usize, fields: Vec<(&'static str, usize, usize)>) {
        let c: Vec<_> = C_LAYOUT.iter().filter(|(s, ..)| *s == name).collect();
        assert!(!c.is_empty(), "struct {name} missing from bpf/layout.c");
        let (_, _, c_size, c_align) = c.iter().find(|(_, f, ..)| f.is_empty()).unwrap();
        assert_eq!((size, align), (*c_size, *c_align), "size/alignment of struct {name}");
        for (_, field, off, fsize) in c.iter().filter(|(_, f, ..)| !f.is_empty()) {
            // A Rust keyword is mirrored as a raw identifier (`r#type`).
            let r = fields
                .iter()
                .find(|(f, ..)| f.trim_start_matches("r#") == *field)
                .unwrap_or_else(|| panic!("{name}.{field} has no Rust mirror"));
            assert_eq!((r.1, r.2), (*off, *fsize), "offset/size of {name}.{field}");
        }
    }

    #[test]
    fn layout_matches_c() {
        check("lb4_key", size_of::<Lb4Key>(), align_of::<Lb4Key>(), Lb4Key::fields());
        check("lb4_service", size_of::<Lb4Service>(), align_of::<Lb4Service>(), Lb4Service::fields());
        check("lb4_backend", size_of::<Lb4Backend>(), align_of::<Lb4Backend>(), Lb4Backend::fields());
        check("ct4_key", size_of::<Ct4Key>(), align_of::<Ct4Key>(), Ct4Key::fields());
        check("ct4_entry", size_of::<Ct4Entry>(), align_of::<Ct4Entry>(), Ct4Entry::fields());
        check("hl_stat", size_of::<HlStat>(), align_of::<HlStat>(), HlStat::fields());
        check("nat4_rev_key", size_of::<Nat4RevKey>(), align_of::<Nat4RevKey>(), Nat4RevKey::fields());
        check("nat4_rev_val", size_of::<Nat4RevVal>(), align_of::<Nat4RevVal>(), Nat4RevVal::fields());
        assert_eq!(C_COUNTERS as usize, Counter::ALL.len());
        check("tunnel4_key", size_of::<Tunnel4Key>(), align_of::<Tunnel4Key>(), Tunnel4Key::fields());
        check("tunnel4_value", size_of::<Tunnel4Value>(), align_of::<Tunnel4Value>(), Tunnel4Value::fields());
        assert_eq!(size_of::<Tunnel4Key>(), size_of::<aya::maps::lpm_trie::Key<[u8; 4]>>());
        check("hl_dsr_opt4", size_of::<DsrOpt4>(), align_of::<DsrOpt4>(), DsrOpt4::fields());
    }

    #[test]
    fn cluster_ip_layout_matches_c() {
        check("svc4_rev_value", size_of::<Svc4RevValue>(), align_of::<Svc4RevValue>(), Svc4RevValue::fields());
        let v = Svc4RevValue::new(Ipv4Addr::new(10, 96, 0, 10), 80);
        assert_eq!(v.to_bytes(), [10, 96, 0, 10, 0, 80, 0, 0]);
        assert_eq!((Svc4RevValue::from_bytes(&v.to_bytes()).vip(), v.port()), (Ipv4Addr::new(10, 96, 0, 10), 80));
    }

    #[test]
    fn ipv6_layout_and_dsr_extension_header_match_c() {
        check("lb6_key", size_of::<Lb6Key>(), align_of::<Lb6Key>(), Lb6Key::fields());
        check("lb6_backend", size_of::<Lb6Backend>(), align_of::<Lb6Backend>(), Lb6Backend::fields());
        check("ct6_key", size_of::<Ct6Key>(), align_of::<Ct6Key>(), Ct6Key::fields());
        check("nat6_rev_key", size_of::<Nat6RevKey>(), align_of::<Nat6RevKey>(), Nat6RevKey::fields());
        check("nat6_rev_val", size_of::<Nat6RevVal>(), align_of::<Nat6RevVal>(), Nat6RevVal::fields());
        check("hl_dsr_opt6", size_of::<DsrOpt6>(), align_of::<DsrOpt6>(), DsrOpt6::fields());
        assert_eq!(
            (DSR_IPV6_OPT_TYPE, DSR_IPV6_OPT_LEN, DSR_IPV6_EXT_LEN),
            (C_DSR_IPV6_OPT_TYPE, C_DSR_IPV6_OPT_LEN, C_DSR_IPV6_EXT_LEN)
        );
        assert_eq!(DSR_IPV6_EXT_LEN as usize, size_of::<DsrOpt6>());
        // Cilium's bytes: next header, hdrlen 2, type 0x1B, length 20, address, port, padding.
        let vip: Ipv6Addr = "fd00:96::10".parse().unwrap();
        let mut want = vec![IPPROTO_TCP, 2, 0x1b, 20];
        want.extend_from_slice(&vip.octets());
        want.extend_from_slice(&[0, 80, 0, 0]);
        assert_eq!(DsrOpt6::new(IPPROTO_TCP, vip, 80).to_bytes().to_vec(), want);
        let k = Lb6Key::new(vip, 443, IPPROTO_UDP);
        assert_eq!(Lb6Key::from_bytes(&k.to_bytes()), k);
        assert_eq!((k.vip(), k.port()), (vip, 443));
        let b = Lb6Backend::new("fd00::7".parse().unwrap(), 8080).with_static_next_hop([1, 2, 3, 4, 5, 6], 9);
        assert_eq!(Lb6Backend::from_bytes(&b.to_bytes()), b);
        assert_eq!(b.to_string(), "[fd00::7]:8080");
    }

    #[test]
    fn forwarding_modes_and_dsr_option_match_c() {
        let rust = [
            ("HL_MODE_DSR_IPIP", ForwardingMode::DsrIpip),
            ("HL_MODE_DSR_GENEVE", ForwardingMode::DsrGeneve),
            ("HL_MODE_SNAT", ForwardingMode::Snat),
            ("HL_MODE_DSR_OPT", ForwardingMode::DsrOpt),
        ];
        assert_eq!(C_MODES.len(), rust.len(), "a mode added on one side only");
        for (name, mode) in rust {
            let (_, c) = C_MODES.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} missing in C"));
            assert_eq!(mode as u8, *c, "{name}");
            assert_eq!(ForwardingMode::from_u8(*c), Some(mode));
        }
        assert_eq!((DSR_IPV4_OPT_TYPE, DSR_IPV4_OPT_LEN), (C_DSR_IPV4_OPT_TYPE, C_DSR_IPV4_OPT_LEN));
        assert_eq!(DSR_IPV4_OPT_LEN as usize, size_of::<DsrOpt4>());
        // Cilium's bytes: type, length, port, address (network order).
        assert_eq!(DsrOpt4::new(Ipv4Addr::new(10, 96, 0, 10), 80).to_bytes(), [0x9a, 8, 0, 80, 10, 96, 0, 10]);
    }

    #[test]
    fn encodings_round_trip_and_use_network_order_for_wire_fields() {
        let k = Lb4Key::new(Ipv4Addr::new(10, 96, 0, 1), 80, IPPROTO_TCP);
        assert_eq!(k.to_bytes(), [10, 96, 0, 1, 0, 80, 6, 0]);
        assert_eq!(Lb4Key::from_bytes(&k.to_bytes()), k);
        let b = Lb4Backend::new(Ipv4Addr::new(10, 0, 0, 7), 8080).with_static_next_hop([1, 2, 3, 4, 5, 6], 9);
        assert_eq!(Lb4Backend::from_bytes(&b.to_bytes()), b);
        let e = Ct4Entry {
            backend_id: 7,
            svc_id: 3,
            created_ns: 99,
            last_seen_ns: 100,
            flags: 1,
            pad: 0,
            nat_port: [0x80, 0x01],
            pad2: [0; 4],
        };
        assert_eq!(Ct4Entry::from_bytes(&e.to_bytes()), e);
    }
}
