//! ARP (RFC 826) over Ethernet, as pure functions on byte buffers: recognise a request for an
//! address we own, build the reply, and build gratuitous ARP announcements (RFC 5227 §3: a
//! request whose sender and target protocol addresses are both the announced address).

use std::net::Ipv4Addr;

use pnet_base::MacAddr;
use pnet_packet::Packet;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};

/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
pub const FRAME_LEN: usize = 42;

/// An ARP request as the responder cares about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRequest {
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Parses an Ethernet frame; `Some` only for a well-formed IPv4-over-Ethernet ARP request.
pub fn parse_request(frame: &[u8]) -> Option<ArpRequest> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Arp {
        return None;
    }
    let arp = ArpPacket::new(eth.payload())?;
    let well_formed = arp.get_hardware_type() == ArpHardwareTypes::Ethernet
        && arp.get_protocol_type() == EtherTypes::Ipv4
        && arp.get_hw_addr_len() == 6
        && arp.get_proto_addr_len() == 4;
    if !well_formed || arp.get_operation() != ArpOperations::Request {
        return None;
    }
    Some(ArpRequest {
        sender_mac: arp.get_sender_hw_addr(),
        sender_ip: arp.get_sender_proto_addr(),
        target_ip: arp.get_target_proto_addr(),
    })
}

#[allow(clippy::too_many_arguments)]
fn build(
    eth_dst: MacAddr,
    eth_src: MacAddr,
    op: ArpOperation,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> [u8; FRAME_LEN] {
    let mut buf = [0u8; FRAME_LEN];
    {
        let mut eth = MutableEthernetPacket::new(&mut buf).expect("buffer fits an Ethernet header");
        eth.set_destination(eth_dst);
        eth.set_source(eth_src);
        eth.set_ethertype(EtherTypes::Arp);
    }
    let mut arp = MutableArpPacket::new(&mut buf[14..]).expect("buffer fits an ARP packet");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(op);
    arp.set_sender_hw_addr(sender_mac);
    arp.set_sender_proto_addr(sender_ip);
    arp.set_target_hw_addr(target_mac);
    arp.set_target_proto_addr(target_ip);
    buf
}

/// The reply to `req`, saying `req.target_ip` is at `our_mac` (unicast to the asker).
pub fn reply(req: &ArpRequest, our_mac: MacAddr) -> [u8; FRAME_LEN] {
    build(req.sender_mac, our_mac, ArpOperations::Reply, our_mac, req.target_ip, req.sender_mac, req.sender_ip)
}

/// Gratuitous ARP announcing `ip` at `our_mac`, broadcast, in the request form (RFC 5227 §3)
/// or the reply form (which some old stacks only honour); senders send both.
pub fn gratuitous(ip: Ipv4Addr, our_mac: MacAddr, as_reply: bool) -> [u8; FRAME_LEN] {
    let op = if as_reply { ArpOperations::Reply } else { ArpOperations::Request };
    let target_mac = if as_reply { MacAddr::broadcast() } else { MacAddr::zero() };
    build(MacAddr::broadcast(), our_mac, op, our_mac, ip, target_mac, ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A request from 10.0.0.1 (02:00:00:00:00:01) for 10.0.0.100, as arping sends it.
    const REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06, // Ethernet
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // htype, ptype, hlen, plen, op=request
        0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 1, // sender
        0, 0, 0, 0, 0, 0, 10, 0, 0, 100, // target
    ];

    #[test]
    fn parses_a_request_and_builds_the_reply_byte_for_byte() {
        let req = parse_request(&REQUEST).expect("a request");
        assert_eq!(req.target_ip, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(req.sender_ip, Ipv4Addr::new(10, 0, 0, 1));
        let ours = MacAddr::new(0x02, 0, 0, 0, 0, 0x02);
        let r = reply(&req, ours);
        let want: [u8; 42] = [
            0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x06, //
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02, //
            0x02, 0, 0, 0, 0, 0x02, 10, 0, 0, 100, //
            0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 1,
        ];
        assert_eq!(r, want);
        assert_eq!(parse_request(&r), None, "a reply is not a request");
    }

    #[test]
    fn gratuitous_forms_and_garbage() {
        let mac = MacAddr::new(2, 0, 0, 0, 0, 9);
        let g = gratuitous(Ipv4Addr::new(10, 0, 0, 7), mac, false);
        let req = parse_request(&g).expect("the request form parses as a request");
        assert_eq!((req.sender_ip, req.target_ip), (Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(&g[..6], &[0xff; 6]);
        let r = gratuitous(Ipv4Addr::new(10, 0, 0, 7), mac, true);
        assert_eq!(&r[20..22], &[0, 2]);
        assert_eq!(parse_request(&REQUEST[..30]), None);
        let mut ipv4 = REQUEST;
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse_request(&ipv4), None);
        let mut bad_len = REQUEST;
        bad_len[18] = 8;
        assert_eq!(parse_request(&bad_len), None);
    }
}
