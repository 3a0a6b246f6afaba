//! BPF_PROG_TEST_RUN golden-packet tests of the pod overlay (`tc_overlay.bpf.c`): Geneve
//! encapsulation byte by byte (RFC 8926), its decapsulation, VXLAN (RFC 7348) through the tunnel
//! key, and everything that must pass untouched. Needs root (CI runs as root).
//!
//! The Geneve path asks the kernel's FIB for the next hop, so those tests move their thread into
//! a private network namespace (one veth "uplink" with a permanent neighbour), and back out
//! before it is deleted; nothing touches the host's own namespace.

mod common;

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;

use common::*;
use halyard_datapath::maps::{TUN_F_LOCAL, Tunnel4Value};
use halyard_datapath::overlay::{Cidr4, Overlay, OverlayConfig, OvlCounter, TunnelMap, TunnelProtocol};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 3);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 5);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);
const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const VNI: u32 = 2;

/// This thread inside a fresh network namespace until dropped.
struct ThreadNetns {
    name: String,
    home: std::fs::File,
}

impl ThreadNetns {
    fn enter(tag: &str) -> Self {
        let name = format!("hl-ovl-{tag}-{}", std::process::id());
        let st = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(st.success(), "ip netns add {name}");
        let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let ns = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns");
        Self { name, home }
    }

    fn ip(&self, args: &[&str]) -> String {
        // Children inherit the calling thread's namespace.
        let o = Command::new("ip").args(args).output().unwrap();
        assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A veth "uplink" ul0 (NODE/24, MAC UPLINK_MAC) with a permanent neighbour REMOTE -> NH_MAC.
    fn uplink(&self) -> u32 {
        self.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"]);
        self.ip(&["link", "set", "ul0", "address", "02:00:00:00:00:02"]);
        self.ip(&["addr", "add", &format!("{NODE}/24"), "dev", "ul0"]);
        self.ip(&["link", "set", "ul0", "up"]);
        self.ip(&["link", "set", "ul1", "up"]);
        // bpf_fib_lookup answers only for devices that forward (the agent turns it on).
        let o = Command::new("sysctl").args(["-qw", "net.ipv4.conf.ul0.forwarding=1"]).output().unwrap();
        assert!(o.status.success(), "sysctl: {}", String::from_utf8_lossy(&o.stderr));
        self.ip(&[
            "neigh",
            "replace",
            &REMOTE.to_string(),
            "lladdr",
            "02:00:00:00:00:03",
            "dev",
            "ul0",
            "nud",
            "permanent",
        ]);
        let j = self.ip(&["-j", "link", "show", "ul0"]);
        let i = j.find("\"ifindex\":").unwrap() + 10;
        j[i..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }
}

impl Drop for ThreadNetns {
    fn drop(&mut self) {
        let _ = rustix::thread::move_into_link_name_space(
            self.home.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        );
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

struct Lab {
    _fs: Bpffs,
    ovl: Overlay,
    map: TunnelMap,
}

fn lab(tag: &str, protocol: TunnelProtocol, uplink_ifindex: u32) -> Lab {
    let fs = Bpffs::new(tag);
    let cfg = OverlayConfig {
        pin_dir: fs.pin_dir(),
        protocol,
        node_ipv4: NODE,
        vni: VNI,
        port: protocol.default_port(),
        vxlan_ifindex: 1,
        uplink_ifindex,
    };
    let ovl = Overlay::load(cfg).expect("load overlay");
    let mut map = ovl.tunnels().expect("open hl_tunnel");
    map.upsert(Cidr4::new(Ipv4Addr::new(10, 244, 1, 0), 24), &Tunnel4Value::new(REMOTE, 0)).unwrap();
    map.upsert(Cidr4::new(Ipv4Addr::new(10, 244, 0, 0), 24), &Tunnel4Value::new(NODE, TUN_F_LOCAL)).unwrap();
    Lab { _fs: fs, ovl, map }
}

fn run(l: &mut Lab, rx: bool, pkt: &[u8]) -> (u32, Vec<u8>) {
    test_run(if rx { l.ovl.rx().unwrap() } else { l.ovl.tx().unwrap() }, pkt)
}

fn counter(l: &Lab, c: OvlCounter) -> u64 {
    l.map.counters().unwrap().into_iter().find(|(k, ..)| *k == c).unwrap().1
}

/// The Geneve frame the overlay must produce for `pkt` (inner IPv4 without its Ethernet header).
fn geneve_frame(pkt: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6], daddr: Ipv4Addr, sport: u16, vni: u32) -> Vec<u8> {
    let inner = &pkt[14..];
    let total = 20 + 8 + 8 + inner.len();
    let mut outer = vec![0x45, 0x00];
    outer.extend_from_slice(&(total as u16).to_be_bytes());
    outer.extend_from_slice(&[0, 0, 0x40, 0x00, 64, 17, 0, 0]); // id 0, DF, TTL 64, UDP
    outer.extend_from_slice(&NODE.octets());
    outer.extend_from_slice(&daddr.octets());
    let c = csum(&outer);
    outer[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&outer);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&6081u16.to_be_bytes());
    f.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4, RFC 8926 §3.3)
    // Geneve base header (RFC 8926 §3.4): version 0, no options, no O/C flags, proto 0x0800, VNI.
    f.extend_from_slice(&[0x00, 0x00, 0x08, 0x00]);
    f.extend_from_slice(&[(vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0]);
    f.extend_from_slice(inner);
    f
}

#[test]
fn geneve_encapsulation_byte_by_byte() {
    let Some(()) = require_root("geneve_encapsulation_byte_by_byte") else { return };
    let ns = ThreadNetns::enter("enc");
    let uplink = ns.uplink();
    let mut l = lab("ovl-enc", TunnelProtocol::Geneve, uplink);
    let pkt = tcp_packet(POD_A, 40000, POD_B, 8080, b"hello pod");
    let (rc, out) = run(&mut l, false, &pkt);
    assert_eq!(rc, TC_ACT_REDIRECT, "redirected out of the uplink: {:?}", l.map.counters().unwrap());
    // The source port comes from the skb's flow hash: 0xc000 | 14 bits, the same for the flow.
    let sport = u16::from_be_bytes([out[34], out[35]]);
    assert!(sport >= 0xc000, "source port {sport:#x}");
    assert_eq!(out, geneve_frame(&pkt, NH_MAC, UPLINK_MAC, REMOTE, sport, VNI), "Geneve frame differs");
    let (_, again) = run(&mut l, false, &pkt);
    assert_eq!(u16::from_be_bytes([again[34], again[35]]), sport, "one flow, one source port");
    assert_eq!(counter(&l, OvlCounter::EncapGeneve), 2);
}

#[test]
fn geneve_without_a_neighbour_goes_to_redirect_neigh_and_unreachable_is_dropped() {
    let Some(()) = require_root("geneve_without_a_neighbour") else { return };
    let ns = ThreadNetns::enter("neigh");
    let uplink = ns.uplink();
    let mut l = lab("ovl-neigh", TunnelProtocol::Geneve, uplink);
    // A node on the uplink's subnet without a neighbour entry: the kernel resolves it.
    l.map
        .upsert(Cidr4::new(Ipv4Addr::new(10, 244, 2, 0), 24), &Tunnel4Value::new(Ipv4Addr::new(192, 168, 50, 9), 0))
        .unwrap();
    let (rc, _) = run(&mut l, false, &tcp_packet(POD_A, 40000, Ipv4Addr::new(10, 244, 2, 1), 80, b""));
    assert_eq!(rc, TC_ACT_REDIRECT);
    assert_eq!(counter(&l, OvlCounter::EncapNoNeigh), 1);
    // A node with no route at all: dropped and counted.
    l.map
        .upsert(Cidr4::new(Ipv4Addr::new(10, 244, 3, 0), 24), &Tunnel4Value::new(Ipv4Addr::new(172, 31, 0, 1), 0))
        .unwrap();
    let (rc, _) = run(&mut l, false, &tcp_packet(POD_A, 40000, Ipv4Addr::new(10, 244, 3, 1), 80, b""));
    assert_eq!(rc, TC_ACT_SHOT);
    assert_eq!(counter(&l, OvlCounter::DropFib), 1);
}

#[test]
fn geneve_decapsulation_strips_to_the_inner_packet() {
    let Some(()) = require_root("geneve_decapsulation_strips_to_the_inner_packet") else { return };
    let mut l = lab("ovl-dec", TunnelProtocol::Geneve, 1);
    let inner = tcp_packet(POD_B, 8080, POD_A, 40000, b"reply");
    // From the remote node (its MAC) to this node's uplink MAC.
    let wire = geneve_frame(&inner, UPLINK_MAC, NH_MAC, NODE, 0xc123, VNI);
    let (rc, out) = run(&mut l, true, &wire);
    assert_eq!(rc, TC_ACT_OK, "handed to the stack, which routes it to the pod");
    let mut want = wire[..14].to_vec();
    want.extend_from_slice(&inner[14..]);
    assert_eq!(out, want, "outer IPv4/UDP/Geneve removed, Ethernet kept");
    assert_eq!(counter(&l, OvlCounter::DecapGeneve), 1);

    // Not ours: another VNI, another destination, another port: untouched.
    for f in [
        geneve_frame(&inner, UPLINK_MAC, NH_MAC, NODE, 0xc123, 77),
        geneve_frame(&inner, UPLINK_MAC, NH_MAC, Ipv4Addr::new(192, 168, 50, 99), 0xc123, VNI),
        udp_packet(REMOTE, 5000, NODE, 6082, &[0; 16]),
    ] {
        let (rc, out) = run(&mut l, true, &f);
        assert_eq!((rc, out), (TC_ACT_OK, f));
    }
    // A critical option we do not understand: dropped (RFC 8926 §3.5).
    let mut crit = wire.clone();
    crit[14 + 20 + 8 + 1] = 0x40;
    assert_eq!(run(&mut l, true, &crit).0, TC_ACT_SHOT);
    assert_eq!(counter(&l, OvlCounter::DropCritical), 1);
    // An option (4 bytes, non-critical) is skipped along with the header.
    let mut opt = wire[..14 + 20 + 8].to_vec();
    opt.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0, 0, VNI as u8, 0]);
    opt.extend_from_slice(&[0x01, 0x4b, 0x01, 0x00]); // class 0x014B, type 1, no data
    opt.extend_from_slice(&inner[14..]);
    let tot = (opt.len() - 14) as u16;
    opt[16..18].copy_from_slice(&tot.to_be_bytes());
    opt[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&opt[14..34]);
    opt[24..26].copy_from_slice(&c.to_be_bytes());
    let (rc, out) = run(&mut l, true, &opt);
    assert_eq!((rc, out), (TC_ACT_OK, want));
}

#[test]
fn encap_then_decap_round_trips() {
    let Some(()) = require_root("encap_then_decap_round_trips") else { return };
    let ns = ThreadNetns::enter("rt");
    let uplink = ns.uplink();
    let mut l = lab("ovl-rt", TunnelProtocol::Geneve, uplink);
    let pkt = udp_packet(POD_A, 5353, POD_B, 53, b"query");
    let (rc, wire) = run(&mut l, false, &pkt);
    assert_eq!(rc, TC_ACT_REDIRECT);
    // Decapsulate it as if this node were the remote one (outer destination = NODE).
    let mut rewired = wire.clone();
    rewired[30..34].copy_from_slice(&NODE.octets()); // address the frame to the lab's node
    rewired[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&rewired[14..34]);
    rewired[24..26].copy_from_slice(&c.to_be_bytes());
    let (rc, out) = run(&mut l, true, &rewired);
    assert_eq!(rc, TC_ACT_OK);
    assert_eq!(&out[14..], &pkt[14..], "the inner packet comes out unchanged");
}

#[test]
fn no_tunnel_entry_passes_untouched() {
    let Some(()) = require_root("no_tunnel_entry_passes_untouched") else { return };
    for protocol in [TunnelProtocol::Geneve, TunnelProtocol::Vxlan] {
        let mut l = lab(&format!("ovl-miss-{}", protocol.as_str()), protocol, 1);
        let mut frames = vec![
            tcp_packet(POD_A, 40000, Ipv4Addr::new(192, 168, 50, 3), 22, b"to a node"),
            tcp_packet(POD_A, 40000, Ipv4Addr::new(10, 244, 0, 9), 80, b"to a local pod"),
            udp_packet(POD_A, 40000, Ipv4Addr::new(8, 8, 8, 8), 53, b"outside"),
        ];
        // And ARP.
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&CLIENT_MAC);
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        frames.push(arp);
        for f in frames {
            let (rc, out) = run(&mut l, false, &f);
            assert_eq!((rc, &out), (TC_ACT_OK, &f), "{protocol:?}");
        }
        assert_eq!(counter(&l, OvlCounter::PassNoTunnel), 3);
        assert_eq!(counter(&l, OvlCounter::PassNotIpv4), 1);
    }
}

#[test]
fn vxlan_sets_the_tunnel_key_and_redirects_the_frame_unchanged() {
    let Some(()) = require_root("vxlan_sets_the_tunnel_key") else { return };
    let mut l = lab("ovl-vx", TunnelProtocol::Vxlan, 0);
    let pkt = tcp_packet(POD_A, 40000, POD_B, 8080, b"hello pod");
    let (rc, out) = run(&mut l, false, &pkt);
    assert_eq!(rc, TC_ACT_REDIRECT, "to the VXLAN device");
    assert_eq!(out, pkt, "the kernel's VXLAN device adds the headers");
    assert_eq!(counter(&l, OvlCounter::EncapVxlan), 1);
    // Receive side: the decapsulated frame is addressed to the other node's veth MAC.
    let (rc, out) = run(&mut l, true, &pkt);
    assert_eq!((rc, out), (TC_ACT_OK, pkt));
    assert_eq!(counter(&l, OvlCounter::RxVxlan), 1, "marked PACKET_HOST for the stack");
}

#[test]
fn tunnel_map_round_trips_entries() {
    let Some(()) = require_root("tunnel_map_round_trips_entries") else { return };
    let mut l = lab("ovl-map", TunnelProtocol::Vxlan, 0);
    let e = l.map.entries().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[&Cidr4::new(Ipv4Addr::new(10, 244, 1, 0), 24)].remote(), REMOTE);
    l.map.remove(Cidr4::new(Ipv4Addr::new(10, 244, 1, 0), 24)).unwrap();
    l.map.remove(Cidr4::new(Ipv4Addr::new(10, 244, 1, 0), 24)).unwrap(); // absent: fine
    assert_eq!(l.map.entries().unwrap().len(), 1);
    // Reopened from the pin (the CLI's and a restarted agent's view).
    let again = TunnelMap::open(&l.ovl.config().pin_dir).unwrap();
    assert_eq!(again.entries().unwrap().len(), 1);
}
