//! IPv6 neighbor discovery (RFC 4861) for the addresses we own, as pure functions on Ethernet
//! frames: recognise a Neighbor Solicitation (§4.3) for a target, build the solicited Neighbor
//! Advertisement (§4.4, §7.2.4), and build unsolicited advertisements with the Override flag
//! for takeover (§7.2.6) — Override set, unlike Cilium, so that caches really move.

use std::net::Ipv6Addr;

/// An NS as the responder cares about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solicitation {
    pub src_mac: [u8; 6],
    /// `::` during duplicate address detection.
    pub src_ip: Ipv6Addr,
    pub target: Ipv6Addr,
}

const ETH: usize = 14;
const IP6: usize = 40;
const ICMP_NS: u8 = 135;
const ICMP_NA: u8 = 136;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Parses an Ethernet frame; `Some` only for a valid NS (hop limit 255, code 0, RFC 4861 §7.1.1).
pub fn parse_solicitation(frame: &[u8]) -> Option<Solicitation> {
    if frame.len() < ETH + IP6 + 24 || frame[12..14] != [0x86, 0xdd] {
        return None;
    }
    let ip = &frame[ETH..];
    let (next_header, hop_limit) = (ip[6], ip[7]);
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if next_header != 58 || hop_limit != 255 || payload_len < 24 || ip.len() < IP6 + payload_len {
        return None;
    }
    let icmp = &ip[IP6..IP6 + payload_len];
    if icmp[0] != ICMP_NS || icmp[1] != 0 {
        return None;
    }
    let src_ip = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
    let dst_ip = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
    if checksum(&src_ip, &dst_ip, icmp) != 0 {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
    if target.is_multicast() {
        return None;
    }
    let src_mac = <[u8; 6]>::try_from(&frame[6..12]).ok()?;
    Some(Solicitation { src_mac, src_ip, target })
}

/// RFC 4443 §2.3 checksum over the IPv6 pseudo-header and `icmp` (0 when `icmp` carries a valid one).
fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn advert(eth_dst: [u8; 6], ip_dst: Ipv6Addr, target: Ipv6Addr, mac: [u8; 6], solicited: bool) -> Vec<u8> {
    let mut icmp = vec![0u8; 32];
    icmp[0] = ICMP_NA;
    // R=0 (not a router), S as asked, O=1 (override).
    icmp[4] = if solicited { 0x60 } else { 0x20 };
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 2; // Target Link-Layer Address option
    icmp[25] = 1; // length in units of 8 octets
    icmp[26..32].copy_from_slice(&mac);
    let c = checksum(&target, &ip_dst, &icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::with_capacity(ETH + IP6 + icmp.len());
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&target.octets()); // the owned address answers for itself
    f.extend_from_slice(&ip_dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The multicast MAC for an IPv6 multicast address (RFC 2464 §7).
fn multicast_mac(ip: &Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The solicited advertisement answering `ns` (to all-nodes when the asker is doing DAD).
pub fn advertisement(ns: &Solicitation, mac: [u8; 6]) -> Vec<u8> {
    if ns.src_ip.is_unspecified() {
        advert(multicast_mac(&ALL_NODES), ALL_NODES, ns.target, mac, false)
    } else {
        advert(ns.src_mac, ns.src_ip, ns.target, mac, true)
    }
}

/// An unsolicited advertisement (Override set) to all nodes, sent when we take `target` over.
pub fn unsolicited(target: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    advert(multicast_mac(&ALL_NODES), ALL_NODES, target, mac, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns_frame(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let mut icmp = vec![0u8; 32];
        icmp[0] = ICMP_NS;
        icmp[8..24].copy_from_slice(&target.octets());
        icmp[24] = 1;
        icmp[25] = 1;
        icmp[26..32].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        let o = target.octets();
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]));
        let c = checksum(&src, &dst, &icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = Vec::new();
        f.extend_from_slice(&multicast_mac(&dst));
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn solicitation_round_trip_and_advert_fields() {
        let src: Ipv6Addr = "fd00::10".parse().unwrap();
        let target: Ipv6Addr = "fd00:20::5".parse().unwrap();
        let f = ns_frame(src, target);
        let ns = parse_solicitation(&f).expect("a valid NS");
        assert_eq!((ns.src_ip, ns.target, ns.src_mac), (src, target, [2, 0, 0, 0, 0, 1]));
        let mac = [2, 0, 0, 0, 0, 9];
        let na = advertisement(&ns, mac);
        assert_eq!(&na[..6], &[2, 0, 0, 0, 0, 1], "unicast back to the asker");
        assert_eq!(na[ETH + 7], 255, "hop limit 255");
        let icmp = &na[ETH + IP6..];
        assert_eq!(icmp[0], ICMP_NA);
        assert_eq!(icmp[4], 0x60, "Solicited and Override");
        assert_eq!(&icmp[26..32], &mac);
        assert_eq!(checksum(&target, &src, icmp), 0, "valid checksum");
        let u = unsolicited(target, mac);
        assert_eq!(&u[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(u[ETH + IP6 + 4], 0x20, "Override only");
    }

    #[test]
    fn rejects_bad_hop_limit_checksum_and_dad_goes_to_all_nodes() {
        let src: Ipv6Addr = "fd00::10".parse().unwrap();
        let target: Ipv6Addr = "fd00:20::5".parse().unwrap();
        let mut f = ns_frame(src, target);
        f[ETH + 7] = 64;
        assert_eq!(parse_solicitation(&f), None, "hop limit must be 255");
        let mut f = ns_frame(src, target);
        let last = f.len() - 1;
        f[last] ^= 1;
        assert_eq!(parse_solicitation(&f), None, "bad checksum");
        assert_eq!(parse_solicitation(&f[..50]), None);
        let dad = ns_frame(Ipv6Addr::UNSPECIFIED, target);
        let ns = parse_solicitation(&dad).unwrap();
        let na = advertisement(&ns, [2, 0, 0, 0, 0, 9]);
        assert_eq!(&na[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    }
}
