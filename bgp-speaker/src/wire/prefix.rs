//! Address families and IP prefixes as carried in NLRI / withdrawn routes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::buf::Reader;

// ===== Address family =====

/// Address Family Identifier (IANA "Address Family Numbers"; RFC 4760 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier (RFC 4760 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    pub const UNICAST: Safi = Safi(1);
    pub const MULTICAST: Safi = Safi(2);
}

/// An AFI/SAFI pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    pub afi: Afi,
    pub safi: Safi,
}

impl AfiSafi {
    pub const IPV4_UNICAST: AfiSafi = AfiSafi { afi: Afi::IPV4, safi: Safi::UNICAST };
    pub const IPV6_UNICAST: AfiSafi = AfiSafi { afi: Afi::IPV6, safi: Safi::UNICAST };

    pub const fn new(afi: Afi, safi: Safi) -> Self {
        Self { afi, safi }
    }
}

// ===== Prefixes =====

/// A prefix length larger than the address (`/33` for IPv4, `/129` for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("prefix length {len} exceeds {max}")]
pub struct PrefixLenError {
    pub len: u8,
    pub max: u8,
}

/// Decodes one `<length, prefix>` tuple (RFC 4271 §4.3, RFC 4760 §5) into the first
/// `ceil(len/8)` bytes of a 16-byte buffer. The trailing bits of the last octet are masked off:
/// RFC 4271 §4.3 says "the value of trailing bits is irrelevant", so we accept and canonicalize
/// rather than reject. A length above `max_bits` or a prefix that overruns the field is an error
/// (RFC 7606 §5.3).
fn decode_prefix_bytes(r: &mut Reader<'_>, max_bits: u8) -> Result<(u8, [u8; 16]), &'static str> {
    let len = r.u8().ok_or("truncated prefix length")?;
    if len > max_bits {
        return Err("prefix length exceeds the address length");
    }
    let nbytes = usize::from(len).div_ceil(8);
    let bytes = r.take(nbytes).ok_or("prefix overruns the field")?;
    let mut addr = [0u8; 16];
    addr[..nbytes].copy_from_slice(bytes);
    mask_bytes(&mut addr, len);
    Ok((len, addr))
}

fn mask_bytes(addr: &mut [u8], len: u8) {
    let len = usize::from(len);
    for (i, b) in addr.iter_mut().enumerate() {
        let bit = i * 8;
        if bit >= len {
            *b = 0;
        } else if len - bit < 8 {
            *b &= 0xffu8 << (8 - (len - bit));
        }
    }
}

macro_rules! prefix_type {
    ($(#[$m:meta])* $name:ident, $addr:ty, $bytes:literal, $bits:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            addr: $addr,
            len: u8,
        }

        impl $name {
            /// Builds a prefix, masking host bits (so `10.0.0.1/24` becomes `10.0.0.0/24`).
            pub fn new(addr: $addr, len: u8) -> Result<Self, PrefixLenError> {
                if len > $bits {
                    return Err(PrefixLenError { len, max: $bits });
                }
                let mut octets = addr.octets();
                mask_bytes(&mut octets, len);
                Ok(Self { addr: <$addr>::from(octets), len })
            }

            pub fn addr(&self) -> $addr {
                self.addr
            }

            pub fn prefix_len(&self) -> u8 {
                self.len
            }

            pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, &'static str> {
                let (len, bytes) = decode_prefix_bytes(r, $bits)?;
                let mut octets = [0u8; $bytes];
                octets.copy_from_slice(&bytes[..$bytes]);
                Ok(Self { addr: <$addr>::from(octets), len })
            }

            pub(crate) fn decode_all(buf: &[u8]) -> Result<Vec<Self>, &'static str> {
                let mut r = Reader::new(buf);
                let mut out = Vec::new();
                while !r.is_empty() {
                    out.push(Self::decode(&mut r)?);
                }
                Ok(out)
            }

            pub(crate) fn encode(&self, out: &mut Vec<u8>) {
                out.push(self.len);
                let n = usize::from(self.len).div_ceil(8);
                out.extend_from_slice(&self.addr.octets()[..n]);
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", self.addr, self.len)
            }
        }

        impl FromStr for $name {
            type Err = String;

            /// Parses `addr/len`; host bits are masked.
            fn from_str(s: &str) -> Result<Self, String> {
                let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?}: missing '/'"))?;
                let addr: $addr = a.parse().map_err(|e| format!("{s:?}: {e}"))?;
                let len: u8 = l.parse().map_err(|e| format!("{s:?}: {e}"))?;
                Self::new(addr, len).map_err(|e| format!("{s:?}: {e}"))
            }
        }
    };
}

prefix_type!(
    /// An IPv4 prefix. Invariant: `prefix_len() <= 32` and host bits are zero.
    Ipv4Prefix, Ipv4Addr, 4, 32
);
prefix_type!(
    /// An IPv6 prefix. Invariant: `prefix_len() <= 128` and host bits are zero.
    Ipv6Prefix, Ipv6Addr, 16, 128
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_trailing_bits_on_decode() {
        // 10.1.2.255/23: the low bit of the third octet and the whole fourth octet are host bits.
        let mut r = Reader::new(&[23, 10, 1, 3]);
        let p = Ipv4Prefix::decode(&mut r).unwrap();
        assert_eq!(p.to_string(), "10.1.2.0/23");
    }

    #[test]
    fn rejects_overlong_lengths() {
        assert!(Ipv4Prefix::decode(&mut Reader::new(&[33, 1, 2, 3, 4, 5])).is_err());
        assert!(Ipv6Prefix::decode(&mut Reader::new(&[129; 18])).is_err());
        assert!(Ipv4Prefix::decode(&mut Reader::new(&[24, 10, 0])).is_err());
        assert!(Ipv4Prefix::new(Ipv4Addr::LOCALHOST, 33).is_err());
    }

    #[test]
    fn zero_length_is_default_route() {
        let p = Ipv6Prefix::decode(&mut Reader::new(&[0])).unwrap();
        assert_eq!(p.to_string(), "::/0");
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out, [0]);
    }
}
