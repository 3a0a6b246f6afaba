//! Typed network values (CIDRs, addresses, ranges, ports, durations) and their serde glue.
//!
//! Every value is parsed *inside* a serde visitor, so that a bad value fails at its own field
//! path with serde_yaml's line and column of the scalar (an error raised after `String::deserialize`
//! returns would be attributed to the enclosing mapping instead).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

// ---------------------------------------------------------------------------------------------
// Parsing functions (shared by the serde glue and by callers that hold strings).
// ---------------------------------------------------------------------------------------------

/// Parses `a.b.c.d/n` or `x::/n`. Host bits are kept as written (see [`crate::validate`] which
/// warns about and normalises them), because both Go's `net.ParseCIDR` (MetalLB,
/// `internal/config`) and Cilium's LB-IPAM (`rangeFromPrefix` masks the prefix) accept them.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if !t.contains('/') {
        return Err(format!("invalid CIDR {s:?}: missing \"/<prefix length>\""));
    }
    IpNet::from_str(t).map_err(|_| format!("invalid CIDR {s:?}"))
}

/// Parses a bare IPv4 or IPv6 address (no zone, no prefix length).
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    IpAddr::from_str(s.trim()).map_err(|_| format!("invalid IP address {s:?}"))
}

/// Parses a MetalLB `IPAddressPool.spec.addresses[]` entry: a CIDR, or `start-end` with optional
/// spaces around the dash (MetalLB `internal/config/config.go ParseCIDR` trims both sides).
/// A bare address is rejected like MetalLB does: its docs say to write `/32` for one address.
pub fn parse_metallb_address(s: &str) -> Result<IpBlock, String> {
    let Some((a, b)) = s.split_once('-') else {
        return parse_cidr(s).map(IpBlock::Cidr);
    };
    let start =
        IpAddr::from_str(a.trim()).map_err(|_| format!("invalid IP range {s:?}: invalid start IP {:?}", a.trim()))?;
    let stop =
        IpAddr::from_str(b.trim()).map_err(|_| format!("invalid IP range {s:?}: invalid end IP {:?}", b.trim()))?;
    IpBlock::range(start, stop).map_err(|e| format!("invalid IP range {s:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// IpBlock
// ---------------------------------------------------------------------------------------------

/// One block of a load-balancer pool: a CIDR or an inclusive address range.
///
/// Cilium `CiliumLoadBalancerIPPool.spec.blocks[]` is `{cidr}` or `{start, stop?}` (a start
/// without stop is one address); MetalLB `IPAddressPool.spec.addresses[]` is `"cidr"` or
/// `"start-end"`. Both forms land here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpBlock {
    Cidr(IpNet),
    Range { start: IpAddr, stop: IpAddr },
}

impl IpBlock {
    /// Builds a range, checking family and order.
    pub fn range(start: IpAddr, stop: IpAddr) -> Result<IpBlock, String> {
        if start.is_ipv4() != stop.is_ipv4() {
            return Err(format!("start {start} and stop {stop} are of different IP families"));
        }
        if start > stop {
            return Err(format!("start {start} is after stop {stop}"));
        }
        Ok(IpBlock::Range { start, stop })
    }

    /// First address of the block (the network address for a CIDR).
    pub fn first(&self) -> IpAddr {
        match self {
            IpBlock::Cidr(n) => n.network(),
            IpBlock::Range { start, .. } => *start,
        }
    }

    /// Last address of the block (the broadcast address for an IPv4 CIDR).
    pub fn last(&self) -> IpAddr {
        match self {
            IpBlock::Cidr(n) => n.broadcast(),
            IpBlock::Range { stop, .. } => *stop,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.first().is_ipv4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && self.first() <= ip && ip <= self.last()
    }

    /// True if the two blocks share at least one address.
    pub fn overlaps(&self, other: &IpBlock) -> bool {
        self.is_ipv4() == other.is_ipv4() && self.first() <= other.last() && other.first() <= self.last()
    }
}

impl fmt::Display for IpBlock {
    /// CIDR as `a/n`, a range as `start-stop` (MetalLB syntax).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpBlock::Cidr(n) => write!(f, "{n}"),
            IpBlock::Range { start, stop } => write!(f, "{start}-{stop}"),
        }
    }
}

/// The Cilium wire form of a block. `cidr: ""` is what `kubectl get -o yaml` prints for a range
/// block (the Go field has no `omitempty`), so empty strings count as absent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCiliumBlock {
    #[serde(default, with = "opt_cidr")]
    cidr: Option<IpNet>,
    #[serde(default, with = "opt_ip")]
    start: Option<IpAddr>,
    #[serde(default, with = "opt_ip")]
    stop: Option<IpAddr>,
}

impl TryFrom<RawCiliumBlock> for IpBlock {
    type Error = String;
    fn try_from(raw: RawCiliumBlock) -> Result<Self, String> {
        match (raw.cidr, raw.start, raw.stop) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                Err("a block has either \"cidr\" or \"start\"/\"stop\", not both".to_string())
            }
            (Some(n), None, None) => Ok(IpBlock::Cidr(n)),
            (None, Some(start), stop) => IpBlock::range(start, stop.unwrap_or(start)),
            (None, None, Some(_)) => Err("a block with \"stop\" needs \"start\"".to_string()),
            (None, None, None) => Err("a block needs \"cidr\" or \"start\"".to_string()),
        }
    }
}

/// Deserializes a Cilium block (`{cidr}` or `{start, stop?}`) and serializes it back the same way.
pub(crate) mod cilium_block {
    use super::*;

    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        cidr: Option<&'a IpNet>,
        #[serde(skip_serializing_if = "Option::is_none")]
        start: Option<&'a IpAddr>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stop: Option<&'a IpAddr>,
    }

    pub(crate) struct Elem(pub IpBlock);

    impl<'de> Deserialize<'de> for Elem {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let raw = RawCiliumBlock::deserialize(d)?;
            IpBlock::try_from(raw).map(Elem).map_err(de::Error::custom)
        }
    }

    impl Serialize for Elem {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let out = match &self.0 {
                IpBlock::Cidr(n) => Out { cidr: Some(n), start: None, stop: None },
                IpBlock::Range { start, stop } => Out { cidr: None, start: Some(start), stop: Some(stop) },
            };
            out.serialize(s)
        }
    }

    pub(crate) fn serialize<S: Serializer>(v: &[IpBlock], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| Elem(*b)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpBlock>, D::Error> {
        let v = Option::<Vec<Elem>>::deserialize(d)?.unwrap_or_default();
        Ok(v.into_iter().map(|e| e.0).collect())
    }
}

/// MetalLB address strings ("CIDR" or "start-end") as `Vec<IpBlock>`.
pub(crate) mod metallb_addresses {
    use super::*;

    struct Elem(IpBlock);

    impl<'de> Deserialize<'de> for Elem {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Elem;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an address range string such as \"192.168.1.0/24\" or \"192.168.1.10-192.168.1.20\"")
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Elem, E> {
                    parse_metallb_address(s).map(Elem).map_err(E::custom)
                }
            }
            d.deserialize_str(V)
        }
    }

    pub(crate) fn serialize<S: Serializer>(v: &[IpBlock], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| b.to_string()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpBlock>, D::Error> {
        let v = Option::<Vec<Elem>>::deserialize(d)?.unwrap_or_default();
        Ok(v.into_iter().map(|e| e.0).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// String-typed scalars parsed in a visitor: one generic element type, several `with` modules.
// ---------------------------------------------------------------------------------------------

/// A value parsed from a YAML/JSON string scalar.
pub(crate) trait StrValue: Sized {
    const EXPECTING: &'static str;
    fn parse(s: &str) -> Result<Self, String>;
}

impl StrValue for IpNet {
    const EXPECTING: &'static str = "a CIDR string such as \"10.0.0.0/24\"";
    fn parse(s: &str) -> Result<Self, String> {
        parse_cidr(s)
    }
}

impl StrValue for IpAddr {
    const EXPECTING: &'static str = "an IP address string";
    fn parse(s: &str) -> Result<Self, String> {
        parse_ip(s)
    }
}

impl StrValue for Ipv4Addr {
    const EXPECTING: &'static str = "an IPv4 address string";
    fn parse(s: &str) -> Result<Self, String> {
        Ipv4Addr::from_str(s.trim()).map_err(|_| format!("invalid IPv4 address {s:?}"))
    }
}

impl StrValue for PeerAddress {
    const EXPECTING: &'static str = "an IP address string, optionally with a %zone";
    fn parse(s: &str) -> Result<Self, String> {
        PeerAddress::from_str(s)
    }
}

impl StrValue for GoDuration {
    const EXPECTING: &'static str = "a duration string such as \"90s\" or \"1m30s\"";
    fn parse(s: &str) -> Result<Self, String> {
        GoDuration::from_str(s)
    }
}

/// `Some(T)` for a parsed string, `None` for an empty string (treated as unset).
pub(crate) struct Elem<T>(pub Option<T>);

impl<'de, T: StrValue> Deserialize<'de> for Elem<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: StrValue> Visitor<'_> for V<T> {
            type Value = Elem<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Elem<T>, E> {
                if s.trim().is_empty() {
                    return Ok(Elem(None));
                }
                T::parse(s).map(|v| Elem(Some(v))).map_err(E::custom)
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

macro_rules! str_with_modules {
    ($req:ident, $opt:ident, $vec:ident, $ty:ty) => {
        #[allow(dead_code)]
        pub(crate) mod $req {
            use super::*;
            pub(crate) fn serialize<S: Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(v)
            }
            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                Elem::<$ty>::deserialize(d)?
                    .0
                    .ok_or_else(|| de::Error::custom(concat!("empty string, expected ", stringify!($ty))))
            }
        }
        #[allow(dead_code)]
        pub(crate) mod $opt {
            use super::*;
            pub(crate) fn serialize<S: Serializer>(v: &Option<$ty>, s: S) -> Result<S::Ok, S::Error> {
                match v {
                    Some(v) => s.collect_str(v),
                    None => s.serialize_none(),
                }
            }
            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
                Ok(Option::<Elem<$ty>>::deserialize(d)?.and_then(|e| e.0))
            }
        }
        #[allow(dead_code)]
        pub(crate) mod $vec {
            use super::*;
            pub(crate) fn serialize<S: Serializer>(v: &[$ty], s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(v.iter().map(|x| x.to_string()))
            }
            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<$ty>, D::Error> {
                // `null` is an empty list, as in Kubernetes JSON.
                let v = Option::<Vec<Elem<$ty>>>::deserialize(d)?.unwrap_or_default();
                Ok(v.into_iter().filter_map(|e| e.0).collect())
            }
        }
    };
}

str_with_modules!(cidr, opt_cidr, vec_cidr, IpNet);
str_with_modules!(ip, opt_ip, vec_ip, IpAddr);
str_with_modules!(ipv4, opt_ipv4, vec_ipv4, Ipv4Addr);
str_with_modules!(peer_address, opt_peer_address, vec_peer_address, PeerAddress);
str_with_modules!(duration, opt_duration, vec_duration, GoDuration);

// ---------------------------------------------------------------------------------------------
// PeerAddress
// ---------------------------------------------------------------------------------------------

/// A BGP peer address: an IP with an optional IPv6 zone (`fe80::1%eth0`), as accepted by
/// Cilium's `CiliumBGPPeer.peerAddress` pattern (`bgp_cluster_types.go`: `(%.+)?`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddress {
    pub addr: IpAddr,
    pub zone: Option<String>,
}

impl FromStr for PeerAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (a, zone) = match t.split_once('%') {
            Some((a, z)) if !z.is_empty() => (a, Some(z.to_string())),
            Some(_) => return Err(format!("invalid IP address {s:?}: empty zone after '%'")),
            None => (t, None),
        };
        let addr = IpAddr::from_str(a).map_err(|_| format!("invalid IP address {s:?}"))?;
        if zone.is_some() && addr.is_ipv4() {
            return Err(format!("invalid IP address {s:?}: a zone is only valid for IPv6"));
        }
        Ok(PeerAddress { addr, zone })
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.zone {
            Some(z) => write!(f, "{}%{z}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl Serialize for PeerAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// ---------------------------------------------------------------------------------------------
// GoDuration
// ---------------------------------------------------------------------------------------------

/// A Kubernetes `metav1.Duration`: a Go `time.ParseDuration` string such as `"90s"`, `"1m30s"`,
/// `"500ms"` (MetalLB `BGPPeer.holdTime`, `keepaliveTime`, `connectTime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;
    /// Go's grammar: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or `0`; units ns, us, µs, ms, s, m, h.
    /// Negative durations make no sense for BGP timers and are rejected.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration {s:?} (expected e.g. \"90s\", \"1m30s\", \"500ms\")");
        let mut rest = s.trim();
        if let Some(r) = rest.strip_prefix('+') {
            rest = r;
        }
        if rest.starts_with('-') {
            return Err(format!("invalid duration {s:?}: negative durations are not allowed"));
        }
        if rest == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: u128 = 0; // nanoseconds
        while !rest.is_empty() {
            let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
            if num_len == 0 {
                return Err(bad());
            }
            let (num, tail) = rest.split_at(num_len);
            let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let unit_ns: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(bad()),
            };
            let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
            if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
                return Err(bad());
            }
            let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| bad())? };
            let mut value = int.checked_mul(unit_ns).ok_or_else(bad)?;
            // Fraction: at most 18 significant digits are meaningful at nanosecond resolution.
            let mut scale = unit_ns;
            for d in frac_part.chars().take(18) {
                scale /= 10;
                let digit = u128::from(d.to_digit(10).ok_or_else(bad)?);
                value = value.checked_add(digit * scale).ok_or_else(bad)?;
            }
            total = total.checked_add(value).ok_or_else(bad)?;
            rest = tail;
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
        // The remainder of a division by 1e9 always fits in u32.
        let nanos = (total % 1_000_000_000) as u32;
        Ok(GoDuration(Duration::new(secs, nanos)))
    }
}

impl fmt::Display for GoDuration {
    /// Seconds when whole, else milliseconds when whole, else nanoseconds: always re-parsable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}ns", d.as_nanos())
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// A Kubernetes port number, 1-65535, checked in the visitor so that an out-of-range number is
/// reported at its own line.
pub(crate) mod port {
    use super::*;

    pub(crate) struct PortVisitor;
    impl Visitor<'_> for PortVisitor {
        type Value = u16;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a port number (1-65535)")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
            match u16::try_from(v) {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(E::custom(format!("port {v} is out of range 1-65535"))),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
            match u16::try_from(v) {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(E::custom(format!("port {v} is out of range 1-65535"))),
            }
        }
    }

    pub(crate) fn serialize<S: Serializer>(v: &u16, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(*v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        d.deserialize_i64(PortVisitor)
    }
}

pub(crate) mod opt_port {
    use super::*;

    struct P(u16);
    impl<'de> Deserialize<'de> for P {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_i64(port::PortVisitor).map(P)
        }
    }

    pub(crate) fn serialize<S: Serializer>(v: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.serialize_u16(*p),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        Ok(Option::<P>::deserialize(d)?.map(|p| p.0))
    }
}

/// Kubernetes `IntOrString` as used by `Service.spec.ports[].targetPort`: a number (1-65535) or
/// the name of a container port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPort::Number(n) => write!(f, "{n}"),
            TargetPort::Name(s) => f.write_str(s),
        }
    }
}

impl Serialize for TargetPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TargetPort::Number(n) => s.serialize_u16(*n),
            TargetPort::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TargetPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (1-65535) or a port name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TargetPort, E> {
                port::PortVisitor.visit_i64(v).map(TargetPort::Number)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TargetPort, E> {
                port::PortVisitor.visit_u64(v).map(TargetPort::Number)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetPort, E> {
                // Kubernetes IntOrString accepts a number written as a string, e.g. "8080".
                match v.parse::<i64>() {
                    Ok(n) => self.visit_i64(n),
                    Err(_) => Ok(TargetPort::Name(v.to_string())),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.0.10.0/24").map(|n| n.to_string()), Ok("10.0.10.0/24".to_string()));
        assert_eq!(parse_cidr("2004::0/64").map(|n| n.to_string()), Ok("2004::/64".to_string()));
        assert!(parse_cidr("10.0.0.300/24").unwrap_err().contains("invalid CIDR \"10.0.0.300/24\""));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0.1").unwrap_err().contains("missing"));
        // Host bits are kept; validation normalises them with a warning.
        assert_eq!(parse_cidr("198.51.100.10/24").map(|n| n.addr().to_string()), Ok("198.51.100.10".into()));
    }

    #[test]
    fn metallb_address_forms() {
        let r = parse_metallb_address("192.168.9.1-192.168.9.5").unwrap();
        assert_eq!(r, IpBlock::Range { start: "192.168.9.1".parse().unwrap(), stop: "192.168.9.5".parse().unwrap() });
        let r = parse_metallb_address("fc00::1 - fc00::5").unwrap();
        assert_eq!(r.first(), "fc00::1".parse::<IpAddr>().unwrap());
        assert_eq!(r.last(), "fc00::5".parse::<IpAddr>().unwrap());
        assert!(matches!(parse_metallb_address("fc00:f853:0ccd:e799::/124"), Ok(IpBlock::Cidr(_))));
        let e = parse_metallb_address("1.2.3.4-1.2.3.300").unwrap_err();
        assert!(e.contains("invalid end IP \"1.2.3.300\""), "{e}");
        let e = parse_metallb_address("1.2.3.9-1.2.3.4").unwrap_err();
        assert!(e.contains("after"), "{e}");
        let e = parse_metallb_address("1.2.3.4-fc00::1").unwrap_err();
        assert!(e.contains("different IP families"), "{e}");
        assert!(parse_metallb_address("1.2.3.4").is_err());
    }

    #[test]
    fn ip_block_geometry() {
        let c = IpBlock::Cidr("10.0.0.0/24".parse().unwrap());
        assert_eq!(c.first().to_string(), "10.0.0.0");
        assert_eq!(c.last().to_string(), "10.0.0.255");
        assert!(c.contains("10.0.0.7".parse().unwrap()));
        assert!(!c.contains("10.0.1.0".parse().unwrap()));
        assert!(!c.contains("::a00:7".parse().unwrap()));
        let r = IpBlock::range("10.0.0.250".parse().unwrap(), "10.0.1.5".parse().unwrap()).unwrap();
        assert!(c.overlaps(&r));
        let v6 = IpBlock::Cidr("::/0".parse().unwrap());
        assert!(!c.overlaps(&v6));
    }

    #[test]
    fn peer_address_zone() {
        let p: PeerAddress = "fe80::1%eth0".parse().unwrap();
        assert_eq!(p.zone.as_deref(), Some("eth0"));
        assert_eq!(p.to_string(), "fe80::1%eth0");
        assert!("10.0.0.1%eth0".parse::<PeerAddress>().is_err());
        assert!("fe80::1%".parse::<PeerAddress>().is_err());
        assert_eq!("fd00:10:0:0::1".parse::<PeerAddress>().unwrap().to_string(), "fd00:10::1");
    }

    #[test]
    fn go_durations() {
        let d = |s: &str| s.parse::<GoDuration>().map(|d| d.0);
        assert_eq!(d("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert_eq!(d(".5s"), Ok(Duration::from_millis(500)));
        for bad in ["", "90", "s", "1x", "-1s", "1..5s", "."] {
            assert!(d(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(d("99999999999999999999999h").is_err());
        assert_eq!(GoDuration(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(GoDuration(Duration::from_secs(90)).to_string(), "90s");
    }
}
