//! BPF_PROG_TEST_RUN golden-packet tests of the XDP (and tc) load balancer: build a packet, fill the
//! maps, run the real verified program in the kernel, compare the output bytes and verdict.
//! Needs root (CI runs as root); each test mounts its own bpffs.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

#[allow(unused_imports)]
use common::tcp_packet_flags;
use common::*;
use halyard_datapath::hash::{flow_hash, flow_hash6};
use halyard_datapath::lb::LbMaps;
use halyard_datapath::lb6::Lb6Maps;
use halyard_datapath::loader::{Datapath, DatapathConfig};
use halyard_datapath::maglev::{L4Proto, MaglevBackend, MaglevSeed, build_table};
use halyard_datapath::maps::{
    CT_F_CLOSING, Counter, ForwardingMode, IPPROTO_TCP, Lb4Backend, Lb4Key, Lb4Service, Lb6Backend, Lb6Key, MAGLEV_M,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 7);
const SEED: u32 = 0x1234_5678;
const SEED6: u32 = 0x9abc_def0;
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x60, 0, 0, 0, 0, 7);

struct Lab {
    _fs: Bpffs,
    dp: Datapath,
    maps: LbMaps,
    maps6: Lb6Maps,
}

fn lab(tag: &str) -> Lab {
    lab_with(tag, NODE6)
}

/// A datapath with this node's IPv4 address `NODE` and IPv6 address `node6` (unspecified: no
/// IPv6 address), the IPv4 seed `SEED` and the IPv6 one `SEED6`.
fn lab_with(tag: &str, node6: Ipv6Addr) -> Lab {
    let fs = Bpffs::new(tag);
    let cfg = DatapathConfig {
        pin_dir: fs.pin_dir(),
        node_ipv4: NODE,
        hash_seed: SEED,
        geneve_vni: 2,
        node_ipv6: node6,
        hash_seed6: SEED6,
    };
    let dp = Datapath::load(cfg).expect("load datapath");
    let maps = dp.maps().expect("open maps");
    let maps6 = dp.maps6().expect("open IPv6 maps");
    Lab { _fs: fs, dp, maps, maps6 }
}

fn backend_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, i as u8)
}

/// Service 1 on VIP:80/TCP with backends 1..=n (ids = last octet), static next hop, whole table.
fn add_service(l: &mut Lab, mode: ForwardingMode, ids: &[u32]) -> Vec<u32> {
    for &i in ids {
        l.maps.upsert_backend(i, &Lb4Backend::new(backend_ip(i), 8080).with_static_next_hop(NH_MAC, 0)).unwrap();
    }
    let table = table_for(ids);
    l.maps.set_maglev(1, &table).unwrap();
    l.maps
        .upsert_service(
            &Lb4Key::new(VIP, 80, IPPROTO_TCP),
            &Lb4Service { svc_id: 1, backends: ids.len() as u16, mode: mode as u8, flags: 0 },
        )
        .unwrap();
    table
}

fn table_for(ids: &[u32]) -> Vec<u32> {
    let backends: Vec<_> =
        ids.iter().map(|&i| MaglevBackend::new(i, backend_ip(i).into(), 8080, L4Proto::Tcp)).collect();
    build_table(&backends, MAGLEV_M as u32, &MaglevSeed::default()).unwrap()
}

fn run(l: &mut Lab, pkt: &[u8]) -> (u32, Vec<u8>) {
    test_run(l.dp.xdp_lb().unwrap(), pkt)
}

fn counter(l: &Lab, c: Counter) -> u64 {
    l.maps.counters().unwrap().into_iter().find(|(k, ..)| *k == c).unwrap().1
}

/// Which backend the datapath must pick for a new flow, computed in Rust.
fn expected_backend(table: &[u32], sport: u16) -> u32 {
    let h = flow_hash(CLIENT, sport, 80, IPPROTO_TCP, SEED, false);
    table[(h % MAGLEV_M as u32) as usize]
}

#[test]
fn miss_passes_untouched() {
    let Some(()) = require_root("miss_passes_untouched") else { return };
    let mut l = lab("miss");
    add_service(&mut l, ForwardingMode::DsrIpip, &[1, 2, 3]);
    let pkt = tcp_packet(CLIENT, 40000, Ipv4Addr::new(10, 96, 0, 99), 80, b"x");
    let (rc, out) = run(&mut l, &pkt);
    assert_eq!(rc, XDP_PASS);
    assert_eq!(out, pkt);
    let pkt = tcp_packet(CLIENT, 40000, VIP, 81, b"x"); // right VIP, wrong port
    assert_eq!(run(&mut l, &pkt).0, XDP_PASS);
    assert_eq!(counter(&l, Counter::PassNoService), 2);
}

#[test]
fn ipip_dsr_encapsulation_byte_by_byte() {
    let Some(()) = require_root("ipip_dsr_encapsulation_byte_by_byte") else { return };
    let mut l = lab("ipip");
    let table = add_service(&mut l, ForwardingMode::DsrIpip, &[1, 2, 3]);
    let pkt = tcp_packet(CLIENT, 40001, VIP, 80, b"hello");
    let (rc, out) = run(&mut l, &pkt);
    assert_eq!(rc, XDP_TX);
    let be = expected_backend(&table, 40001);
    let inner = &pkt[14..];
    let mut want = Vec::new();
    want.extend_from_slice(&NH_MAC); // to the next hop
    want.extend_from_slice(&LB_MAC); // from us (the frame's old destination)
    want.extend_from_slice(&[0x08, 0x00]);
    let mut outer = vec![0x45, 0x00];
    outer.extend_from_slice(&((20 + inner.len()) as u16).to_be_bytes());
    outer.extend_from_slice(&[0, 0, 0x40, 0x00, 64, 4, 0, 0]); // id 0, DF, TTL 64, IPIP
    outer.extend_from_slice(&NODE.octets());
    outer.extend_from_slice(&backend_ip(be).octets());
    let c = csum(&outer);
    outer[10..12].copy_from_slice(&c.to_be_bytes());
    want.extend_from_slice(&outer);
    want.extend_from_slice(inner); // the client's packet, unchanged (DSR)
    assert_eq!(out, want, "IPIP frame differs");
    assert_eq!(counter(&l, Counter::CtNew), 1);
    assert_eq!(counter(&l, Counter::Tx), 1);
}

#[test]
fn geneve_dsr_encapsulation_byte_by_byte() {
    let Some(()) = require_root("geneve_dsr_encapsulation_byte_by_byte") else { return };
    let mut l = lab("geneve");
    let table = add_service(&mut l, ForwardingMode::DsrGeneve, &[1, 2, 3]);
    let pkt = tcp_packet(CLIENT, 40002, VIP, 80, b"hello");
    let (rc, out) = run(&mut l, &pkt);
    assert_eq!(rc, XDP_TX);
    let be = expected_backend(&table, 40002);
    let h = flow_hash(CLIENT, 40002, 80, IPPROTO_TCP, SEED, false);
    let inner = &pkt[14..];
    let total = 20 + 8 + 8 + 12 + inner.len();
    let mut outer = vec![0x45, 0x00];
    outer.extend_from_slice(&(total as u16).to_be_bytes());
    outer.extend_from_slice(&[0, 0, 0x40, 0x00, 64, 17, 0, 0]);
    outer.extend_from_slice(&NODE.octets());
    outer.extend_from_slice(&backend_ip(be).octets());
    let c = csum(&outer);
    outer[10..12].copy_from_slice(&c.to_be_bytes());
    let mut want = Vec::new();
    want.extend_from_slice(&NH_MAC);
    want.extend_from_slice(&LB_MAC);
    want.extend_from_slice(&[0x08, 0x00]);
    want.extend_from_slice(&outer);
    // UDP: source port from the flow hash, destination 6081, no checksum.
    want.extend_from_slice(&(((h & 0x3fff) | 0xc000) as u16).to_be_bytes());
    want.extend_from_slice(&6081u16.to_be_bytes());
    want.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    want.extend_from_slice(&[0, 0]);
    // Geneve base header (RFC 8926 §3.4): ver 0, opt len 3 words, C bit, proto 0x0800, VNI 2.
    want.extend_from_slice(&[0x03, 0x40, 0x08, 0x00, 0x00, 0x00, 0x02, 0x00]);
    // Cilium's DSR option: class 0x014B, type 0x81, length 2 words, VIP, port, pad.
    want.extend_from_slice(&[0x01, 0x4b, 0x81, 0x02]);
    want.extend_from_slice(&VIP.octets());
    want.extend_from_slice(&80u16.to_be_bytes());
    want.extend_from_slice(&[0, 0]);
    want.extend_from_slice(inner);
    assert_eq!(out, want, "Geneve frame differs");
}

/// The backend the datapath chose, read from the outer destination of an IPIP frame.
fn chosen(out: &[u8]) -> u32 {
    out[14 + 19] as u32
}

#[test]
fn maglev_selection_matches_rust_and_spreads() {
    let Some(()) = require_root("maglev_selection_matches_rust_and_spreads") else { return };
    let mut l = lab("spread");
    let table = add_service(&mut l, ForwardingMode::DsrIpip, &[1, 2, 3]);
    let mut counts = [0u32; 4];
    for sport in 20000..23000u16 {
        let (rc, out) = run(&mut l, &tcp_packet(CLIENT, sport, VIP, 80, b""));
        assert_eq!(rc, XDP_TX);
        let b = chosen(&out);
        assert_eq!(b, expected_backend(&table, sport), "flow from port {sport}");
        counts[b as usize] += 1;
    }
    for (b, c) in counts.iter().enumerate().skip(1) {
        assert!((850..=1150).contains(c), "backend {b} got {c} of 3000 flows: {counts:?}");
    }
}

#[test]
fn established_flow_keeps_its_backend_after_removal_from_the_table() {
    let Some(()) = require_root("established_flow_keeps_its_backend") else { return };
    let mut l = lab("ct");
    add_service(&mut l, ForwardingMode::DsrIpip, &[1, 2, 3]);
    // Find flows going to backend 2.
    let flows: Vec<u16> =
        (30000..30200u16).filter(|&p| chosen(&run(&mut l, &tcp_packet(CLIENT, p, VIP, 80, b"")).1) == 2).collect();
    assert!(!flows.is_empty());
    // Backend 2 leaves the service: new table without it, but its backend entry stays (draining).
    l.maps.set_maglev(1, &table_for(&[1, 3])).unwrap();
    for &p in &flows {
        assert_eq!(chosen(&run(&mut l, &tcp_packet(CLIENT, p, VIP, 80, b"more")).1), 2, "established flow {p} moved");
    }
    assert!(counter(&l, Counter::CtHit) >= flows.len() as u64);
    // New flows never go to 2.
    for p in 40000..40300u16 {
        assert_ne!(chosen(&run(&mut l, &tcp_packet(CLIENT, p, VIP, 80, b"")).1), 2);
    }
    // Once the backend itself is deleted, its flows are re-balanced instead of black-holed.
    l.maps.remove_backend(2).unwrap();
    for &p in &flows {
        let (rc, out) = run(&mut l, &tcp_packet(CLIENT, p, VIP, 80, b""));
        assert_eq!(rc, XDP_TX);
        assert_ne!(chosen(&out), 2);
    }
}

#[test]
fn service_without_backends_drops() {
    let Some(()) = require_root("service_without_backends_drops") else { return };
    let mut l = lab("nobe");
    l.maps
        .upsert_service(
            &Lb4Key::new(VIP, 80, IPPROTO_TCP),
            &Lb4Service { svc_id: 9, backends: 0, mode: ForwardingMode::DsrIpip as u8, flags: 0 },
        )
        .unwrap();
    assert_eq!(run(&mut l, &tcp_packet(CLIENT, 1, VIP, 80, b"")).0, XDP_DROP);
    assert_eq!(counter(&l, Counter::DropNoBackend), 1);
}

#[test]
fn fragments_options_icmp_and_non_ip_pass_to_the_stack() {
    let Some(()) = require_root("fragments_options_icmp_and_non_ip_pass") else { return };
    let mut l = lab("pass");
    add_service(&mut l, ForwardingMode::DsrIpip, &[1]);
    // Non-first fragment of a service flow: no ports, passed (documented).
    let frag = frame(ipv4_header(CLIENT, VIP, 6, 8, 0x0010), &[0; 8]);
    assert_eq!(run(&mut l, &frag), (XDP_PASS, frag.clone()));
    // First fragment (MF set) too: the rest could not follow it.
    let first = frame(ipv4_header(CLIENT, VIP, 6, 20, 0x2000), &[0; 20]);
    assert_eq!(run(&mut l, &first).0, XDP_PASS);
    // IPv4 options (IHL 6).
    let mut opt = tcp_packet(CLIENT, 5, VIP, 80, b"");
    opt[14] = 0x46;
    opt.splice(34..34, [1, 1, 1, 1]);
    assert_eq!(run(&mut l, &opt).0, XDP_PASS);
    // ICMP echo to the VIP.
    let icmp = frame(ipv4_header(CLIENT, VIP, 1, 8, 0), &[8, 0, 0, 0, 0, 1, 0, 1]);
    assert_eq!(run(&mut l, &icmp), (XDP_PASS, icmp.clone()));
    // ARP.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(run(&mut l, &arp), (XDP_PASS, arp.clone()));
    // Truncated TCP header.
    let mut short = tcp_packet(CLIENT, 5, VIP, 80, b"");
    short.truncate(36);
    assert_eq!(run(&mut l, &short).0, XDP_PASS);
    assert_eq!(counter(&l, Counter::PassFragment), 2);
    assert_eq!(counter(&l, Counter::PassIpOptions), 1);
    assert_eq!(counter(&l, Counter::PassNotIpv4), 1);
    assert_eq!(counter(&l, Counter::DropMalformed), 1);
    assert_eq!(counter(&l, Counter::Tx), 0);
}

#[test]
fn udp_service_is_keyed_by_protocol() {
    let Some(()) = require_root("udp_service_is_keyed_by_protocol") else { return };
    let mut l = lab("udp");
    add_service(&mut l, ForwardingMode::DsrIpip, &[1, 2]);
    // TCP/80 is a service; UDP/80 to the same VIP is not.
    assert_eq!(run(&mut l, &udp_packet(CLIENT, 9, VIP, 80, b"q")).0, XDP_PASS);
}

#[test]
fn tc_lb_produces_the_same_ipip_frame() {
    let Some(()) = require_root("tc_lb_produces_the_same_ipip_frame") else { return };
    let mut l = lab("tc");
    add_service(&mut l, ForwardingMode::DsrIpip, &[1, 2, 3]);
    let pkt = tcp_packet(CLIENT, 40001, VIP, 80, b"hello");
    let (xrc, xout) = run(&mut l, &pkt);
    assert_eq!(xrc, XDP_TX);
    let (rc, out) = run_tc(&mut l, &pkt);
    assert_eq!(rc, 7, "TC_ACT_REDIRECT");
    assert_eq!(out, xout, "tc and XDP must build the same frame");
}

#[test]
fn fin_marks_the_flow_closing_and_a_new_syn_chooses_again() {
    let Some(()) = require_root("fin_marks_the_flow_closing") else { return };
    let mut l = lab("fin");
    add_service(&mut l, ForwardingMode::DsrIpip, &[1, 2, 3]);
    // A flow on backend 2, then backend 2 leaves the table (draining).
    let p = (50000..50300u16).find(|&p| chosen(&run(&mut l, &tcp_packet(CLIENT, p, VIP, 80, b"")).1) == 2).unwrap();
    l.maps.set_maglev(1, &table_for(&[1, 3])).unwrap();
    let ack = 0x10;
    assert_eq!(chosen(&run(&mut l, &tcp_packet_flags(CLIENT, p, VIP, 80, ack, b"data")).1), 2);
    let entry =
        |l: &Lab| l.maps.ct_entries().unwrap().into_iter().find(|(k, _)| u16::from_be_bytes(k.sport) == p).unwrap().1;
    assert_eq!(entry(&l).flags & halyard_datapath::maps::CT_F_CLOSING, 0);
    assert!(entry(&l).last_seen_ns >= entry(&l).created_ns);
    // FIN: still the same backend (the close completes there), now marked closing.
    assert_eq!(chosen(&run(&mut l, &tcp_packet_flags(CLIENT, p, VIP, 80, 0x11, b"")).1), 2);
    assert_ne!(entry(&l).flags & halyard_datapath::maps::CT_F_CLOSING, 0);
    // The client reuses the port for a new connection: a fresh choice, never the drained backend.
    assert_ne!(chosen(&run(&mut l, &tcp_packet(CLIENT, p, VIP, 80, b"")).1), 2);
    // The agent's aging removes idle entries by their timeouts.
    let now = halyard_datapath::lb::monotonic_ns();
    let t = halyard_datapath::lb::CtTimeouts {
        tcp: std::time::Duration::from_secs(3600),
        closing: std::time::Duration::ZERO,
        other: std::time::Duration::ZERO,
    };
    let before = l.maps.ct_entries().unwrap().len();
    assert_eq!(l.maps.ct_expire(now, &t).unwrap(), 0, "nothing closing or idle past an hour yet");
    assert_eq!(l.maps.ct_expire(now + 3_700_000_000_000, &t).unwrap(), before);
    assert!(l.maps.ct_entries().unwrap().is_empty());
}

/// TCP checksum of an IPv4 frame (Ethernet + 20-byte IP header), recomputed from scratch.
fn tcp_csum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..34];
    let tcp = &frame[34..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(tcp);
    csum(&pseudo) == 0 && csum(ip) == 0
}

#[test]
fn snat_translates_both_ways_with_valid_checksums() {
    let Some(()) = require_root("snat_translates_both_ways") else { return };
    let mut l = lab("snat");
    add_service(&mut l, ForwardingMode::Snat, &[1, 2, 3]);
    let pkt = tcp_packet(CLIENT, 40100, VIP, 80, b"GET /");
    let (rc, out) = run(&mut l, &pkt);
    assert_eq!(rc, XDP_TX);
    assert_eq!(out.len(), pkt.len(), "SNAT changes no length");
    let be = chosen_snat(&out);
    assert!((1..=3).contains(&be));
    // Request: node:nat_port -> backend:8080, same payload, valid checksums.
    assert_eq!(&out[26..30], &NODE.octets(), "source is this node");
    assert_eq!(&out[30..34], &backend_ip(be).octets());
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), 8080, "DNAT to the backend's port");
    let nport = u16::from_be_bytes([out[34], out[35]]);
    assert!((32768..61000).contains(&nport), "SNAT port {nport}");
    assert!(tcp_csum_ok(&out), "checksums after SNAT");
    assert_eq!(&out[54..], b"GET /");
    // The reverse entry exists and the flow's conntrack entry holds the port.
    let nat = l.maps.nat_entries().unwrap();
    assert_eq!(nat.len(), 1);
    assert_eq!(u16::from_be_bytes(nat[0].0.nport), nport);
    // Reply from the backend to node:nat_port becomes VIP:80 -> client:40100.
    let reply = tcp_packet_flags(backend_ip(be), 8080, NODE, nport, 0x12, b"200 OK");
    let (rc, back) = run(&mut l, &reply);
    // No route to the client from the test's namespace FIB, or one: either way the rewrite is done.
    assert!(rc == XDP_TX || rc == XDP_PASS || rc == 4 || rc == XDP_DROP, "rc {rc}");
    assert_eq!(&back[26..30], &VIP.octets());
    assert_eq!(&back[30..34], &CLIENT.octets());
    assert_eq!(u16::from_be_bytes([back[34], back[35]]), 80);
    assert_eq!(u16::from_be_bytes([back[36], back[37]]), 40100);
    assert!(tcp_csum_ok(&back), "checksums after reverse SNAT");
    assert_eq!(counter(&l, Counter::SnatReply), 1);
    // The same flow again keeps its port and backend.
    let (_, again) = run(&mut l, &tcp_packet_flags(CLIENT, 40100, VIP, 80, 0x10, b"more"));
    assert_eq!(u16::from_be_bytes([again[34], again[35]]), nport);
    assert_eq!(chosen_snat(&again), be);
    // A packet to the node's address that is no SNAT reply passes untouched.
    let other = tcp_packet(backend_ip(be), 8080, NODE, 22, b"");
    assert_eq!(run(&mut l, &other), (XDP_PASS, other.clone()));
}

fn chosen_snat(out: &[u8]) -> u32 {
    out[33] as u32
}

// ===== SNAT and hybrid in the tc variant: the same bytes as XDP, on the same shared maps =====

const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

fn run_tc(l: &mut Lab, pkt: &[u8]) -> (u32, Vec<u8>) {
    test_run(l.dp.tc_lb().unwrap(), pkt)
}

/// The tc verdict that corresponds to an XDP one.
fn tc_verdict(xdp: u32) -> u32 {
    match xdp {
        XDP_TX | XDP_REDIRECT => TC_ACT_REDIRECT,
        XDP_PASS => TC_ACT_OK,
        XDP_DROP => TC_ACT_SHOT,
        other => panic!("unexpected XDP verdict {other}"),
    }
}

/// Runs `pkt` through XDP in `x` and through tc in `t`; both must give the same bytes and matching
/// verdicts. Returns the XDP result.
fn same_on_both(x: &mut Lab, t: &mut Lab, pkt: &[u8], what: &str) -> (u32, Vec<u8>) {
    let (xrc, xout) = run(x, pkt);
    let (trc, tout) = run_tc(t, pkt);
    assert_eq!(trc, tc_verdict(xrc), "{what}: verdicts (XDP {xrc}, tc {trc})");
    assert_eq!(tout, xout, "{what}: tc and XDP must produce the same frame");
    (xrc, xout)
}

/// Ethernet + IPv4 + UDP with a real checksum (0xffff if it computes to zero) + `payload`.
fn udp_packet_csum(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = udp_packet(src, sport, dst, dport, payload);
    let c = match l4_sum(&f, 17) {
        0 => 0xffff,
        c => c,
    };
    f[40..42].copy_from_slice(&c.to_be_bytes());
    f
}

/// The RFC 1071 sum over the pseudo-header and L4 segment of an IPv4 frame (0 when it verifies).
fn l4_sum(frame: &[u8], proto: u8) -> u16 {
    let ip = &frame[14..34];
    let l4 = &frame[34..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    csum(&pseudo)
}

fn udp_csum_ok(frame: &[u8]) -> bool {
    csum(&frame[14..34]) == 0 && frame[40..42] != [0, 0] && l4_sum(frame, 17) == 0
}

fn ports(frame: &[u8]) -> (u16, u16) {
    (u16::from_be_bytes([frame[34], frame[35]]), u16::from_be_bytes([frame[36], frame[37]]))
}

/// The UDP/53 service (id 2) of the hybrid tests: same backends, SNAT.
fn add_udp_snat_service(l: &mut Lab, ids: &[u32]) {
    l.maps.set_maglev(2, &table_for(ids)).unwrap();
    l.maps
        .upsert_service(
            &Lb4Key::new(VIP, 53, halyard_datapath::maps::IPPROTO_UDP),
            &Lb4Service { svc_id: 2, backends: ids.len() as u16, mode: ForwardingMode::Snat as u8, flags: 0 },
        )
        .unwrap();
}

#[test]
fn tc_snat_translates_both_ways_like_xdp() {
    let Some(()) = require_root("tc_snat_translates_both_ways_like_xdp") else { return };
    // Two independent datapaths with empty maps: XDP in one, tc in the other. The same flows must
    // get the same backend, the same claimed port and the same bytes, both ways.
    let mut x = lab("snat-x");
    let mut t = lab("snat-t");
    add_service(&mut x, ForwardingMode::Snat, &[1, 2, 3]);
    add_service(&mut t, ForwardingMode::Snat, &[1, 2, 3]);
    let flows: Vec<u16> = (40100..40116).collect();
    let mut seen = [0u32; 4];
    for &sport in &flows {
        let pkt = tcp_packet(CLIENT, sport, VIP, 80, b"GET /");
        let (rc, out) = same_on_both(&mut x, &mut t, &pkt, &format!("request from port {sport}"));
        assert_eq!(rc, XDP_TX);
        let be = chosen_snat(&out);
        seen[be as usize] += 1;
        assert_eq!(&out[..6], &NH_MAC, "to the backend's next hop");
        assert_eq!(&out[26..30], &NODE.octets(), "source is this node");
        assert_eq!(&out[30..34], &backend_ip(be).octets());
        let (nport, bport) = ports(&out);
        assert_eq!(bport, 8080, "DNAT to the backend's port");
        assert!((32768..61000).contains(&nport), "SNAT port {nport}");
        assert!(tcp_csum_ok(&out), "checksums after SNAT");
        assert_eq!(&out[54..], b"GET /");

        // The reply: backend:8080 -> node:nport becomes VIP:80 -> client:sport.
        let reply = tcp_packet_flags(backend_ip(be), 8080, NODE, nport, 0x12, b"200 OK");
        let (_, back) = same_on_both(&mut x, &mut t, &reply, &format!("reply to port {sport}"));
        assert_eq!(&back[26..30], &VIP.octets());
        assert_eq!(&back[30..34], &CLIENT.octets());
        assert_eq!(ports(&back), (80, sport));
        assert!(tcp_csum_ok(&back), "checksums after reverse SNAT");
        assert_eq!(&back[54..], b"200 OK");
    }
    assert!(seen.iter().skip(1).filter(|&&n| n > 0).count() >= 2, "flows spread: {seen:?}");
    // Both hooks left the same state behind.
    let (mut xn, mut tn) = (x.maps.nat_entries().unwrap(), t.maps.nat_entries().unwrap());
    xn.sort_by_key(|(k, _)| format!("{k:?}"));
    tn.sort_by_key(|(k, _)| format!("{k:?}"));
    assert_eq!(format!("{xn:?}"), format!("{tn:?}"), "reverse entries");
    assert_eq!(tn.len(), flows.len());
    assert_eq!(counter(&t, Counter::SnatReply), flows.len() as u64);
    assert_eq!(counter(&t, Counter::CtNew), flows.len() as u64);
    // An established flow keeps its port and backend (conntrack hit, no new claim).
    let (_, first) = run_tc(&mut t, &tcp_packet(CLIENT, flows[0], VIP, 80, b""));
    let (_, again) = same_on_both(&mut x, &mut t, &tcp_packet_flags(CLIENT, flows[0], VIP, 80, 0x10, b"more"), "ack");
    assert_eq!(ports(&again).0, ports(&first).0);
    assert_eq!(chosen_snat(&again), chosen_snat(&first));
    assert_eq!(t.maps.nat_entries().unwrap().len(), flows.len());
    // A packet to the node's address that is no SNAT reply passes untouched.
    let other = tcp_packet(backend_ip(1), 8080, NODE, 22, b"");
    assert_eq!(run_tc(&mut t, &other), (TC_ACT_OK, other.clone()));
    // Neither is a reply to a port nobody claimed, nor one from the wrong backend port.
    let stray = tcp_packet(backend_ip(1), 8080, NODE, 32767, b"");
    assert_eq!(run_tc(&mut t, &stray), (TC_ACT_OK, stray.clone()));
}

#[test]
fn tc_and_xdp_share_snat_state() {
    let Some(()) = require_root("tc_and_xdp_share_snat_state") else { return };
    // One datapath: a flow translated by XDP is answered through tc and the reverse, as when an
    // interface moves from one hook to the other under open connections.
    let mut l = lab("snat-share");
    add_service(&mut l, ForwardingMode::Snat, &[1, 2, 3]);
    let (rc, out) = run(&mut l, &tcp_packet(CLIENT, 41000, VIP, 80, b"x"));
    assert_eq!(rc, XDP_TX);
    let (be, nport) = (chosen_snat(&out), ports(&out).0);
    let (_, back) = run_tc(&mut l, &tcp_packet_flags(backend_ip(be), 8080, NODE, nport, 0x12, b""));
    assert_eq!((&back[26..30], &back[30..34], ports(&back)), (&VIP.octets()[..], &CLIENT.octets()[..], (80, 41000)));
    assert!(tcp_csum_ok(&back));
    // tc continues the flow XDP started: same backend, same port, no second claim.
    let (trc, tout) = run_tc(&mut l, &tcp_packet_flags(CLIENT, 41000, VIP, 80, 0x10, b"y"));
    assert_eq!(trc, TC_ACT_REDIRECT);
    assert_eq!((chosen_snat(&tout), ports(&tout).0), (be, nport));
    // And the other way round: a flow tc started, answered through XDP.
    let (trc, tout) = run_tc(&mut l, &tcp_packet(CLIENT, 41001, VIP, 80, b"x"));
    assert_eq!(trc, TC_ACT_REDIRECT);
    let (be2, nport2) = (chosen_snat(&tout), ports(&tout).0);
    assert_ne!((be2, nport2), (be, nport));
    let (_, back) = run(&mut l, &tcp_packet_flags(backend_ip(be2), 8080, NODE, nport2, 0x12, b""));
    assert_eq!(ports(&back), (80, 41001));
    assert!(tcp_csum_ok(&back));
    assert_eq!(l.maps.nat_entries().unwrap().len(), 2);
    assert_eq!(counter(&l, Counter::SnatReply), 2);
}

#[test]
fn tc_hybrid_udp_snat_and_tcp_dsr_like_xdp() {
    let Some(()) = require_root("tc_hybrid_udp_snat_and_tcp_dsr_like_xdp") else { return };
    // Hybrid mode as the agent programs it: TCP/80 is DSR (Geneve), UDP/53 on the same VIP SNAT.
    let mut x = lab("hyb-x");
    let mut t = lab("hyb-t");
    for l in [&mut x, &mut t] {
        add_service(l, ForwardingMode::DsrGeneve, &[1, 2, 3]);
        add_udp_snat_service(l, &[1, 2, 3]);
    }
    // TCP: the Geneve frame, identical.
    let (rc, out) = same_on_both(&mut x, &mut t, &tcp_packet(CLIENT, 42000, VIP, 80, b"hello"), "tcp dsr");
    assert_eq!(rc, XDP_TX);
    assert_eq!(out[14 + 9], 17, "outer UDP (Geneve)");
    // UDP with a checksum: translated, the checksum still verifies.
    for sport in 42000..42008u16 {
        let q = udp_packet_csum(CLIENT, sport, VIP, 53, b"query");
        let (rc, out) = same_on_both(&mut x, &mut t, &q, &format!("udp from {sport}"));
        assert_eq!(rc, XDP_TX);
        assert_eq!(out.len(), q.len());
        assert_eq!(&out[26..30], &NODE.octets());
        let be = chosen_snat(&out);
        let (nport, bport) = ports(&out);
        assert_eq!(bport, 8080);
        assert!(udp_csum_ok(&out), "UDP checksum after SNAT (from {sport})");
        let r = udp_packet_csum(backend_ip(be), 8080, NODE, nport, b"answer");
        let (_, back) = same_on_both(&mut x, &mut t, &r, &format!("udp reply to {sport}"));
        assert_eq!((&back[26..30], &back[30..34]), (&VIP.octets()[..], &CLIENT.octets()[..]));
        assert_eq!(ports(&back), (53, sport));
        assert!(udp_csum_ok(&back), "UDP checksum after reverse SNAT (to {sport})");
    }
    // UDP without a checksum (0, allowed over IPv4) keeps none, both ways.
    let q = udp_packet(CLIENT, 42100, VIP, 53, b"q");
    let (_, out) = same_on_both(&mut x, &mut t, &q, "udp without checksum");
    assert_eq!(&out[40..42], &[0, 0], "no checksum stays no checksum");
    assert_eq!(csum(&out[14..34]), 0);
    let r = udp_packet(backend_ip(chosen_snat(&out)), 8080, NODE, ports(&out).0, b"a");
    let (_, back) = same_on_both(&mut x, &mut t, &r, "udp reply without checksum");
    assert_eq!(&back[40..42], &[0, 0]);
    assert_eq!(ports(&back), (53, 42100));
    // Only the UDP flows took SNAT ports.
    assert_eq!(t.maps.nat_entries().unwrap().len(), 9);
    assert_eq!(counter(&t, Counter::SnatReply), 9);
}

#[test]
fn tc_snat_truncated_packet_is_not_rewritten() {
    let Some(()) = require_root("tc_snat_truncated_packet_is_not_rewritten") else { return };
    // A TCP header cut before its checksum field: the parser has its ports and flags, but the
    // checksum cannot be updated, so neither hook sends it on (XDP and tc drop it alike).
    let mut x = lab("trunc-x");
    let mut t = lab("trunc-t");
    add_service(&mut x, ForwardingMode::Snat, &[1]);
    add_service(&mut t, ForwardingMode::Snat, &[1]);
    let mut short = tcp_packet(CLIENT, 43000, VIP, 80, b"");
    short.truncate(14 + 20 + 16);
    let (rc, _) = same_on_both(&mut x, &mut t, &short, "truncated");
    assert_eq!(rc, XDP_DROP);
    assert_eq!(counter(&t, Counter::DropEncap), 1);
}

/// This thread inside a fresh network namespace until dropped (so the FIB the programs consult
/// is the test's own; nothing touches the host's namespace).
struct ThreadNetns {
    name: String,
    home: std::fs::File,
}

impl ThreadNetns {
    fn enter(tag: &str) -> Self {
        use std::os::fd::AsFd;
        let name = format!("hl-lb-{tag}-{}", std::process::id());
        let st = std::process::Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(st.success(), "ip netns add {name}");
        let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let ns = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns");
        Self { name, home }
    }

    /// Runs a command in this namespace (children inherit the calling thread's).
    fn sh(&self, cmd: &str, args: &[&str]) {
        let o = std::process::Command::new(cmd).args(args).output().unwrap();
        assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for ThreadNetns {
    fn drop(&mut self) {
        use std::os::fd::AsFd;
        let _ = rustix::thread::move_into_link_name_space(
            self.home.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        );
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[test]
fn tc_snat_next_hops_by_fib_like_xdp() {
    let Some(()) = require_root("tc_snat_next_hops_by_fib_like_xdp") else { return };
    // Backends without a static next hop, and replies to clients: both hooks ask the FIB. A
    // private namespace holds an uplink (NODE/24) with the backends on-link, the clients behind a
    // gateway, and permanent neighbours; one client subnet's gateway has no neighbour entry.
    let ns = ThreadNetns::enter("snat-fib");
    let gw = Ipv4Addr::new(192, 168, 50, 1);
    let gw_mac = [0x02, 0, 0, 0, 0, 0x0a];
    let be_mac = |i: u32| [0x02, 0, 0, 0, 1, i as u8];
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    ns.sh("ip", &["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"]);
    ns.sh("ip", &["link", "set", "ul0", "address", &mac(LB_MAC)]);
    ns.sh("ip", &["addr", "add", &format!("{NODE}/24"), "dev", "ul0"]);
    ns.sh("ip", &["link", "set", "ul0", "up"]);
    ns.sh("ip", &["link", "set", "ul1", "up"]);
    ns.sh("ip", &["link", "set", "lo", "up"]);
    // The programs run on lo here (BPF_PROG_TEST_RUN's device): the FIB answers only for a
    // forwarding ingress device, as the agent arranges on LB interfaces.
    ns.sh("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    ns.sh("ip", &["route", "add", "10.0.1.0/24", "dev", "ul0"]);
    ns.sh("ip", &["route", "add", "192.168.60.0/24", "via", &gw.to_string()]);
    ns.sh("ip", &["route", "add", "192.168.61.0/24", "via", "192.168.50.9"]);
    ns.sh("ip", &["neigh", "replace", &gw.to_string(), "lladdr", &mac(gw_mac), "dev", "ul0", "nud", "permanent"]);
    for i in 1..=3 {
        let a = backend_ip(i).to_string();
        ns.sh("ip", &["neigh", "replace", &a, "lladdr", &mac(be_mac(i)), "dev", "ul0", "nud", "permanent"]);
    }

    let mut x = lab("fib-x");
    let mut t = lab("fib-t");
    for l in [&mut x, &mut t] {
        for i in 1..=3 {
            l.maps.upsert_backend(i, &Lb4Backend::new(backend_ip(i), 8080)).unwrap();
        }
        l.maps.set_maglev(1, &table_for(&[1, 2, 3])).unwrap();
        l.maps
            .upsert_service(
                &Lb4Key::new(VIP, 80, IPPROTO_TCP),
                &Lb4Service { svc_id: 1, backends: 3, mode: ForwardingMode::Snat as u8, flags: 0 },
            )
            .unwrap();
    }
    for sport in 44000..44006u16 {
        let (rc, out) =
            same_on_both(&mut x, &mut t, &tcp_packet(CLIENT, sport, VIP, 80, b"req"), &format!("request {sport}"));
        assert_eq!(rc, XDP_REDIRECT, "to ul0, not back out of the ingress device");
        let be = chosen_snat(&out);
        assert_eq!((&out[..6], &out[6..12]), (&be_mac(be)[..], &LB_MAC[..]), "MACs from the FIB");
        assert!(tcp_csum_ok(&out));
        let reply = tcp_packet_flags(backend_ip(be), 8080, NODE, ports(&out).0, 0x12, b"resp");
        let (rc, back) = same_on_both(&mut x, &mut t, &reply, &format!("reply {sport}"));
        assert_eq!(rc, XDP_REDIRECT);
        assert_eq!((&back[..6], &back[6..12]), (&gw_mac[..], &LB_MAC[..]), "to the client's gateway");
        assert_eq!(
            (&back[26..30], &back[30..34], ports(&back)),
            (&VIP.octets()[..], &CLIENT.octets()[..], (80, sport))
        );
        assert!(tcp_csum_ok(&back));
    }
    // A client whose gateway is unresolved: the translated reply goes to the stack, which resolves
    // the neighbour and forwards it (counted as such), identically in both hooks.
    let far = Ipv4Addr::new(192, 168, 61, 7);
    let (_, out) = same_on_both(&mut x, &mut t, &tcp_packet(far, 44100, VIP, 80, b""), "far request");
    let reply = tcp_packet_flags(backend_ip(chosen_snat(&out)), 8080, NODE, ports(&out).0, 0x12, b"");
    let (rc, back) = same_on_both(&mut x, &mut t, &reply, "far reply");
    assert_eq!(rc, XDP_PASS);
    assert_eq!((&back[30..34], ports(&back)), (&far.octets()[..], (80, 44100)));
    assert!(tcp_csum_ok(&back));
    assert_eq!(counter(&t, Counter::PassNoNeigh), 1);
    assert_eq!(counter(&t, Counter::SnatReply), 7);
    drop(ns);
}

/// A named network namespace (not entered), deleted on drop.
struct NamedNetns(String);

impl NamedNetns {
    fn new(tag: &str) -> Self {
        let name = format!("hl-lb-{tag}-{}", std::process::id());
        let st = std::process::Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(st.success(), "ip netns add {name}");
        Self(name)
    }

    fn ip(&self, args: &[&str]) -> String {
        let o = std::process::Command::new("ip").arg("-n").arg(&self.0).args(args).output().unwrap();
        assert!(o.status.success(), "ip -n {} {args:?}: {}", self.0, String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn mac(&self, dev: &str) -> String {
        let out = self.ip(&["-br", "link", "show", dev]);
        out.split_whitespace().nth(2).unwrap().to_string()
    }

    /// Runs `f` on a thread inside this namespace.
    fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let ns = std::fs::File::open(path).unwrap();
            rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
                .expect("setns");
            f()
        })
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn tc_snat_carries_real_tcp_over_veth_with_checksum_offload() {
    let Some(()) = require_root("tc_snat_carries_real_tcp_over_veth_with_checksum_offload") else { return };
    // veth keeps its checksum offload on, so the client's and the backend's segments arrive as
    // CHECKSUM_PARTIAL (only the pseudo-header sum in the field) and as large GSO packets.
    tc_snat_real_tcp_over_veth("ofl", true);
}

#[test]
fn tc_snat_carries_real_tcp_over_veth_with_software_checksums() {
    let Some(()) = require_root("tc_snat_carries_real_tcp_over_veth_with_software_checksums") else { return };
    // Offload off: full checksums in every segment, which the receivers verify in software.
    tc_snat_real_tcp_over_veth("sw", false);
}

/// client ns ─veth─ [lb0  LB ns (this thread), tc_lb on both ingresses  lb1] ─veth─ backend ns,
/// one SNAT service, one backend echoing 1 MiB back over a real TCP connection.
fn tc_snat_real_tcp_over_veth(tag: &str, offload: bool) {
    use std::io::{Read, Write};
    let node = Ipv4Addr::new(10, 0, 1, 254);
    let lbns = ThreadNetns::enter(&format!("{tag}-lb"));
    let cli = NamedNetns::new(&format!("{tag}-cli"));
    let be = NamedNetns::new(&format!("{tag}-be"));
    lbns.sh("ip", &["link", "add", "lb0", "type", "veth", "peer", "name", "cl0", "netns", &cli.0]);
    lbns.sh("ip", &["link", "add", "lb1", "type", "veth", "peer", "name", "be0", "netns", &be.0]);
    lbns.sh("ip", &["addr", "add", "192.168.60.1/24", "dev", "lb0"]);
    lbns.sh("ip", &["addr", "add", &format!("{node}/24"), "dev", "lb1"]);
    for d in ["lo", "lb0", "lb1"] {
        lbns.sh("ip", &["link", "set", d, "up"]);
    }
    lbns.sh("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    cli.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "cl0"]);
    cli.ip(&["link", "set", "cl0", "up"]);
    cli.ip(&["route", "add", &format!("{VIP}/32"), "via", "192.168.60.1"]);
    be.ip(&["addr", "add", &format!("{}/24", backend_ip(1)), "dev", "be0"]);
    be.ip(&["link", "set", "be0", "up"]);
    if !offload {
        for (ns, dev) in [(&cli, "cl0"), (&be, "be0")] {
            let st = std::process::Command::new("ip")
                .args(["netns", "exec", &ns.0, "ethtool", "-K", dev, "tx", "off"])
                .output()
                .unwrap();
            assert!(st.status.success(), "ethtool: {}", String::from_utf8_lossy(&st.stderr));
        }
    }
    // Resolved neighbours, as the agent keeps for backend next hops.
    lbns.sh(
        "ip",
        &["neigh", "replace", &CLIENT.to_string(), "lladdr", &cli.mac("cl0"), "dev", "lb0", "nud", "permanent"],
    );
    lbns.sh(
        "ip",
        &["neigh", "replace", &backend_ip(1).to_string(), "lladdr", &be.mac("be0"), "dev", "lb1", "nud", "permanent"],
    );

    let fs = Bpffs::new(&format!("veth-{tag}"));
    let cfg =
        DatapathConfig { pin_dir: fs.pin_dir(), node_ipv4: node, hash_seed: SEED, geneve_vni: 2, ..Default::default() };
    let mut dp = Datapath::load(cfg).expect("load datapath");
    let mut maps = dp.maps().unwrap();
    maps.upsert_backend(1, &Lb4Backend::new(backend_ip(1), 8080)).unwrap();
    maps.set_maglev(1, &table_for(&[1])).unwrap();
    maps.upsert_service(
        &Lb4Key::new(VIP, 80, IPPROTO_TCP),
        &Lb4Service { svc_id: 1, backends: 1, mode: ForwardingMode::Snat as u8, flags: 0 },
    )
    .unwrap();
    dp.attach_tc_lb("lb0").expect("attach lb0");
    dp.attach_tc_lb("lb1").expect("attach lb1");

    // The backend echoes everything back; the client sends 1 MiB and checks it comes back whole.
    let server = be.spawn(|| {
        let l = std::net::TcpListener::bind("0.0.0.0:8080").unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
        peer
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let client = cli.spawn(|| {
        let addr = std::net::SocketAddr::from((VIP, 80));
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
        let mut w = s.try_clone().unwrap();
        let to_send = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&to_send).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read the echo");
        writer.join().unwrap();
        got == data
    });
    assert!(client.join().unwrap(), "the echo came back whole");
    let peer = server.join().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(node), "the backend saw this node as the client");
    assert!(peer.port() >= 32768, "from an SNAT port: {peer}");
    assert_eq!(maps.nat_entries().unwrap().len(), 1);
    let c = |k| maps.counters().unwrap().into_iter().find(|(c, ..)| *c == k).unwrap().1;
    assert!(c(Counter::SnatReply) > 0 && c(Counter::Redirect) > c(Counter::SnatReply));
    assert_eq!(c(Counter::PassNoNeigh) + c(Counter::DropEncap) + c(Counter::DropFib), 0);
    drop(dp);
    drop(lbns);
}

// ===== DSR by IPv4 option (`--dsr-dispatch opt`): LB side in XDP and tc, backend side in tc_decap =====

/// Service `svc_id` on VIP:`port`/UDP with backends `ids` (the same backend entries, port 8080).
fn add_udp_service(l: &mut Lab, svc_id: u32, port: u16, mode: ForwardingMode, ids: &[u32]) {
    l.maps.set_maglev(svc_id, &table_for(ids)).unwrap();
    l.maps
        .upsert_service(
            &Lb4Key::new(VIP, port, halyard_datapath::maps::IPPROTO_UDP),
            &Lb4Service { svc_id, backends: ids.len() as u16, mode: mode as u8, flags: 0 },
        )
        .unwrap();
}

/// The RFC 1071 sum over the pseudo-header and L4 segment of an IPv4 frame whose header is
/// `ihl * 4` bytes long (0 when the checksum verifies).
fn l4_sum_ihl(frame: &[u8]) -> u16 {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    let ip = &frame[14..14 + ihl];
    let l4 = &frame[14 + ihl..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, ip[9]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    csum(&pseudo)
}

/// What the LB must send for `pkt` (a frame with a 20-byte IPv4 header, TCP or UDP) in DsrOpt
/// mode, built here from scratch: to the next hop, from us; the destination DNATed to
/// `be`:8080; Cilium's option (0x9a, 8, service port, service address) after the 20-byte
/// header, ihl 7, tot_len + 8; both checksums computed anew (a UDP checksum of 0 stays 0).
fn dsr_opt_expected(pkt: &[u8], be: Ipv4Addr, vport: u16) -> Vec<u8> {
    let proto = pkt[14 + 9];
    let mut ip = pkt[14..34].to_vec();
    ip[0] = 0x47;
    let tot = u16::from_be_bytes([ip[2], ip[3]]) + 8;
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[16..20].copy_from_slice(&be.octets());
    ip.extend_from_slice(&[0x9a, 0x08]);
    ip.extend_from_slice(&vport.to_be_bytes());
    ip.extend_from_slice(&VIP.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut l4 = pkt[34..].to_vec();
    l4[2..4].copy_from_slice(&8080u16.to_be_bytes());
    let at = if proto == 6 { 16 } else { 6 };
    if proto == 6 || l4[at..at + 2] != [0, 0] {
        l4[at..at + 2].copy_from_slice(&[0, 0]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(&l4);
        let c = match csum(&pseudo) {
            0 if proto == 17 => 0xffff,
            c => c,
        };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let mut want = Vec::new();
    want.extend_from_slice(&NH_MAC);
    want.extend_from_slice(&LB_MAC);
    want.extend_from_slice(&[0x08, 0x00]);
    want.extend_from_slice(&ip);
    want.extend_from_slice(&l4);
    want
}

fn run_decap(l: &mut Lab, pkt: &[u8]) -> (u32, Vec<u8>) {
    test_run(l.dp.tc_decap().unwrap(), pkt)
}

#[test]
fn dsr_opt_tcp_frame_byte_by_byte_in_xdp_and_tc() {
    let Some(()) = require_root("dsr_opt_tcp_frame_byte_by_byte_in_xdp_and_tc") else { return };
    let mut x = lab("opt-tcp-x");
    let mut t = lab("opt-tcp-t");
    let table = add_service(&mut x, ForwardingMode::DsrOpt, &[1, 2, 3]);
    add_service(&mut t, ForwardingMode::DsrOpt, &[1, 2, 3]);
    for (sport, flags, payload) in
        [(40003u16, 0x02, &b""[..]), (40004, 0x18, b"GET / HTTP/1.1\r\n\r\n"), (40005, 0x11, b"x")]
    {
        let pkt = tcp_packet_flags(CLIENT, sport, VIP, 80, flags, payload);
        let (rc, out) = same_on_both(&mut x, &mut t, &pkt, &format!("tcp from {sport}"));
        assert_eq!(rc, XDP_TX);
        let be = expected_backend(&table, sport);
        assert_eq!(out, dsr_opt_expected(&pkt, backend_ip(be), 80), "DSR-option frame from {sport} differs");
        // The same facts, one by one.
        assert_eq!(out.len(), pkt.len() + 8);
        assert_eq!(out[14], 0x47, "IPv4, ihl 7");
        assert_eq!(u16::from_be_bytes([out[16], out[17]]) as usize, out.len() - 14, "tot_len");
        assert_eq!(&out[26..30], &CLIENT.octets(), "the client stays the source (DSR)");
        assert_eq!(&out[30..34], &backend_ip(be).octets(), "DNAT to the backend");
        assert_eq!(&out[34..42], &[0x9a, 8, 0, 80, 10, 96, 0, 10], "Cilium's option: VIP:80");
        assert_eq!(u16::from_be_bytes([out[44], out[45]]), 8080, "DNAT to the backend's port");
        assert_eq!(csum(&out[14..42]), 0, "IPv4 header checksum over the 28 bytes");
        assert_eq!(l4_sum_ihl(&out), 0, "TCP checksum");
        assert_eq!(&out[62..], payload);
    }
    assert_eq!(counter(&x, Counter::Tx), 3);
    assert_eq!(counter(&t, Counter::Redirect), 3);
    // A packet that arrives with IP options (even ours) is still the stack's.
    let (_, again) = run(&mut x, &tcp_packet(CLIENT, 40006, VIP, 80, b""));
    let mut to_vip = again.clone();
    to_vip[30..34].copy_from_slice(&VIP.octets());
    assert_eq!(run(&mut x, &to_vip), (XDP_PASS, to_vip.clone()));
    assert_eq!(counter(&x, Counter::PassIpOptions), 1);
}

#[test]
fn dsr_opt_udp_frame_byte_by_byte_in_xdp_and_tc() {
    let Some(()) = require_root("dsr_opt_udp_frame_byte_by_byte_in_xdp_and_tc") else { return };
    let mut x = lab("opt-udp-x");
    let mut t = lab("opt-udp-t");
    for l in [&mut x, &mut t] {
        add_service(l, ForwardingMode::DsrOpt, &[1, 2, 3]);
        add_udp_service(l, 2, 53, ForwardingMode::DsrOpt, &[1, 2, 3]);
    }
    let table = table_for(&[1, 2, 3]);
    for sport in 45000..45006u16 {
        let q = udp_packet_csum(CLIENT, sport, VIP, 53, b"query");
        let (rc, out) = same_on_both(&mut x, &mut t, &q, &format!("udp from {sport}"));
        assert_eq!(rc, XDP_TX);
        let h = flow_hash(CLIENT, sport, 53, halyard_datapath::maps::IPPROTO_UDP, SEED, false);
        let be = table[(h % MAGLEV_M as u32) as usize];
        assert_eq!(out, dsr_opt_expected(&q, backend_ip(be), 53), "UDP DSR-option frame from {sport} differs");
        assert_eq!((out[14], &out[34..42]), (0x47, &[0x9a, 8, 0, 53, 10, 96, 0, 10][..]));
        assert_eq!(u16::from_be_bytes([out[16], out[17]]) as usize, out.len() - 14);
        assert_eq!(u16::from_be_bytes([out[44], out[45]]), 8080);
        assert_eq!(u16::from_be_bytes([out[46], out[47]]) as usize, out.len() - 42, "UDP length unchanged");
        assert_eq!(csum(&out[14..42]), 0);
        assert_ne!(&out[48..50], &[0, 0]);
        assert_eq!(l4_sum_ihl(&out), 0, "UDP checksum");
    }
    // Without a UDP checksum: none after the DNAT either.
    let q = udp_packet(CLIENT, 45100, VIP, 53, b"q");
    let (rc, out) = same_on_both(&mut x, &mut t, &q, "udp without checksum");
    assert_eq!(rc, XDP_TX);
    assert_eq!(&out[48..50], &[0, 0]);
    assert_eq!(out, dsr_opt_expected(&q, Ipv4Addr::from(<[u8; 4]>::try_from(&out[30..34]).unwrap()), 53));
}

#[test]
fn tc_decap_turns_the_dsr_option_back_into_the_client_packet() {
    let Some(()) = require_root("tc_decap_turns_the_dsr_option_back_into_the_client_packet") else { return };
    let mut l = lab("opt-decap");
    add_service(&mut l, ForwardingMode::DsrOpt, &[1, 2, 3]);
    add_udp_service(&mut l, 2, 53, ForwardingMode::DsrOpt, &[1, 2, 3]);
    let packets = [
        tcp_packet(CLIENT, 46000, VIP, 80, b""),
        tcp_packet_flags(CLIENT, 46001, VIP, 80, 0x18, b"hello, backend"),
        udp_packet_csum(CLIENT, 46002, VIP, 53, b"query"),
        udp_packet(CLIENT, 46003, VIP, 53, b"no checksum"),
    ];
    for (i, pkt) in packets.iter().enumerate() {
        let (rc, wire) = run(&mut l, pkt);
        assert_eq!((rc, wire[14]), (XDP_TX, 0x47), "packet {i} through the LB");
        let (rc, back) = run_decap(&mut l, &wire);
        assert_eq!(rc, TC_ACT_OK, "packet {i}: handed to the stack");
        // The client's packet exactly, in the frame it arrived in.
        let mut want = wire[..14].to_vec();
        want.extend_from_slice(&pkt[14..]);
        assert_eq!(back, want, "packet {i}: not the client's packet again");
        assert_eq!(csum(&back[14..34]), 0, "packet {i}: IPv4 checksum");
        if back[14 + 9] == 6 || back[40..42] != [0, 0] {
            assert_eq!(l4_sum_ihl(&back), 0, "packet {i}: L4 checksum");
        }
    }
    assert_eq!(counter(&l, Counter::Decap), packets.len() as u64);

    // Not ours, left untouched: another option, a fragment, ICMP, a truncated TCP header, and a
    // packet without options to a local port.
    let (_, wire) = run(&mut l, &tcp_packet(CLIENT, 46010, VIP, 80, b"data"));
    let with_ip_csum = |mut f: Vec<u8>| {
        f[24..26].copy_from_slice(&[0, 0]);
        let c = csum(&f[14..42]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    let mut router_alert = wire.clone();
    router_alert[34..42].copy_from_slice(&[0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]);
    let mut fragment = wire.clone();
    fragment[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    let mut icmp = wire.clone();
    icmp[23] = 1;
    let mut short = with_ip_csum(wire.clone());
    short.truncate(14 + 28 + 12);
    for f in [with_ip_csum(router_alert), with_ip_csum(fragment), with_ip_csum(icmp), short] {
        assert_eq!(run_decap(&mut l, &f), (TC_ACT_OK, f.clone()));
    }
    let plain = tcp_packet(CLIENT, 46011, backend_ip(1), 22, b"");
    assert_eq!(run_decap(&mut l, &plain), (TC_ACT_OK, plain.clone()));
    assert_eq!(counter(&l, Counter::Decap), packets.len() as u64);
}

#[test]
fn tc_decap_strips_ipip_and_geneve_back_to_the_client_packet() {
    let Some(()) = require_root("tc_decap_strips_ipip_and_geneve_back_to_the_client_packet") else { return };
    for mode in [ForwardingMode::DsrIpip, ForwardingMode::DsrGeneve] {
        let mut l = lab(&format!("decap-{}", mode.as_str()));
        add_service(&mut l, mode, &[1, 2, 3]);
        let pkt = tcp_packet(CLIENT, 47000, VIP, 80, b"hello");
        let (rc, wire) = run(&mut l, &pkt);
        assert_eq!(rc, XDP_TX);
        let (rc, back) = run_decap(&mut l, &wire);
        assert_eq!(rc, TC_ACT_OK);
        let mut want = wire[..14].to_vec();
        want.extend_from_slice(&pkt[14..]);
        assert_eq!(back, want, "{}: the client's packet again", mode.as_str());
        assert_eq!(counter(&l, Counter::Decap), 1);
    }
}

#[test]
fn bench_entries_undo_the_dsr_option() {
    let Some(()) = require_root("bench_entries_undo_the_dsr_option") else { return };
    // The benchmark entries must hand `repeat` the packet they were given, so every run takes
    // the same (hit) path: the LB's frame, then the backend's restore. Only the MACs stay those of
    // the forwarded frame (next hop, from us), which the LB does not look at.
    let mut l = lab("opt-bench");
    add_service(&mut l, ForwardingMode::DsrOpt, &[1, 2, 3]);
    add_udp_service(&mut l, 2, 53, ForwardingMode::DsrOpt, &[1, 2, 3]);
    let forwarded = |pkt: &[u8]| {
        let mut f = NH_MAC.to_vec();
        f.extend_from_slice(&LB_MAC);
        f.extend_from_slice(&pkt[12..]);
        f
    };
    for pkt in [tcp_packet(CLIENT, 48000, VIP, 80, b"bench"), udp_packet_csum(CLIENT, 48001, VIP, 53, b"bench")] {
        assert_eq!(test_run(l.dp.xdp_lb_bench().unwrap(), &pkt), (XDP_TX, forwarded(&pkt)), "XDP bench entry");
        assert_eq!(test_run(l.dp.tc_lb_bench().unwrap(), &pkt), (TC_ACT_REDIRECT, forwarded(&pkt)), "tc bench entry");
    }
    // IPIP and Geneve as before.
    for mode in [ForwardingMode::DsrIpip, ForwardingMode::DsrGeneve] {
        add_service(&mut l, mode, &[1, 2, 3]);
        let pkt = tcp_packet(CLIENT, 48002, VIP, 80, b"bench");
        assert_eq!(test_run(l.dp.xdp_lb_bench().unwrap(), &pkt), (XDP_TX, forwarded(&pkt)), "{}", mode.as_str());
        assert_eq!(
            test_run(l.dp.tc_lb_bench().unwrap(), &pkt),
            (TC_ACT_REDIRECT, forwarded(&pkt)),
            "{}",
            mode.as_str()
        );
    }
}

#[test]
fn tc_dsr_opt_carries_real_tcp_over_veth_with_checksum_offload() {
    let Some(()) = require_root("tc_dsr_opt_carries_real_tcp_over_veth_with_checksum_offload") else { return };
    // Offload on: the client's segments reach the LB as CHECKSUM_PARTIAL GSO packets (the option
    // shrinks their segment size by 8 bytes), and the backend's tc_decap gets them as such too.
    tc_dsr_opt_real_tcp_over_veth("optofl", true);
}

#[test]
fn tc_dsr_opt_carries_real_tcp_over_veth_with_software_checksums() {
    let Some(()) = require_root("tc_dsr_opt_carries_real_tcp_over_veth_with_software_checksums") else { return };
    // Offload off: full-size segments with full checksums, which the backend verifies in software.
    // The option adds 8 bytes, so the client's route to the VIP leaves that headroom (as a DSR
    // deployment must: nothing fragments).
    tc_dsr_opt_real_tcp_over_veth("optsw", false);
}

/// client ns ─veth─ [lb0  LB ns (this thread), tc_lb on lb0's ingress  lb1] ─veth─ backend ns with
/// tc_decap on its uplink and the VIP on lo. One DSR-option service (backend port 8080 on the
/// wire, 80 again after tc_decap); the backend echoes 1 MiB back over a real TCP connection; its
/// replies leave from the VIP and the LB namespace merely routes them.
fn tc_dsr_opt_real_tcp_over_veth(tag: &str, offload: bool) {
    use std::io::{Read, Write};
    let node = Ipv4Addr::new(10, 0, 1, 254);
    let lbns = ThreadNetns::enter(&format!("{tag}-lb"));
    let cli = NamedNetns::new(&format!("{tag}-cli"));
    let be = NamedNetns::new(&format!("{tag}-be"));
    lbns.sh("ip", &["link", "add", "lb0", "type", "veth", "peer", "name", "cl0", "netns", &cli.0]);
    lbns.sh("ip", &["link", "add", "lb1", "type", "veth", "peer", "name", "be0", "netns", &be.0]);
    lbns.sh("ip", &["addr", "add", "192.168.60.1/24", "dev", "lb0"]);
    lbns.sh("ip", &["addr", "add", &format!("{node}/24"), "dev", "lb1"]);
    for d in ["lo", "lb0", "lb1"] {
        lbns.sh("ip", &["link", "set", d, "up"]);
    }
    lbns.sh("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    cli.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "cl0"]);
    cli.ip(&["link", "set", "cl0", "up"]);
    if offload {
        cli.ip(&["route", "add", &format!("{VIP}/32"), "via", "192.168.60.1"]);
    } else {
        cli.ip(&["route", "add", &format!("{VIP}/32"), "via", "192.168.60.1", "mtu", "lock", "1492"]);
    }
    be.ip(&["addr", "add", &format!("{}/24", backend_ip(1)), "dev", "be0"]);
    be.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    for d in ["lo", "be0"] {
        be.ip(&["link", "set", d, "up"]);
    }
    be.ip(&["route", "add", "default", "via", &node.to_string()]);
    if !offload {
        for (ns, dev) in [(&cli, "cl0"), (&be, "be0")] {
            let st = std::process::Command::new("ip")
                .args(["netns", "exec", &ns.0, "ethtool", "-K", dev, "tx", "off"])
                .output()
                .unwrap();
            assert!(st.status.success(), "ethtool: {}", String::from_utf8_lossy(&st.stderr));
        }
    }
    lbns.sh(
        "ip",
        &["neigh", "replace", &CLIENT.to_string(), "lladdr", &cli.mac("cl0"), "dev", "lb0", "nud", "permanent"],
    );
    lbns.sh(
        "ip",
        &["neigh", "replace", &backend_ip(1).to_string(), "lladdr", &be.mac("be0"), "dev", "lb1", "nud", "permanent"],
    );

    let fs = Bpffs::new(&format!("veth-{tag}"));
    let cfg =
        DatapathConfig { pin_dir: fs.pin_dir(), node_ipv4: node, hash_seed: SEED, geneve_vni: 2, ..Default::default() };
    let mut dp = Datapath::load(cfg).expect("load datapath");
    let mut maps = dp.maps().unwrap();
    maps.upsert_backend(1, &Lb4Backend::new(backend_ip(1), 8080)).unwrap();
    maps.set_maglev(1, &table_for(&[1])).unwrap();
    maps.upsert_service(
        &Lb4Key::new(VIP, 80, IPPROTO_TCP),
        &Lb4Service { svc_id: 1, backends: 1, mode: ForwardingMode::DsrOpt as u8, flags: 0 },
    )
    .unwrap();
    dp.attach_tc_lb("lb0").expect("attach lb0");

    // The backend: tc_decap on its uplink (its own pins), then a server on port 80 that echoes.
    let be_fs = Bpffs::new(&format!("veth-{tag}-be"));
    let be_pin = be_fs.pin_dir();
    let be_maps = be
        .spawn(move || {
            let cfg = DatapathConfig {
                pin_dir: be_pin,
                node_ipv4: Ipv4Addr::UNSPECIFIED,
                hash_seed: 0,
                geneve_vni: 2,
                ..Default::default()
            };
            let mut dp = Datapath::load(cfg).expect("load the backend's datapath");
            dp.attach_tc_decap("be0").expect("attach tc_decap");
            dp.maps().unwrap()
        })
        .join()
        .unwrap();
    let server = be.spawn(|| {
        let l = std::net::TcpListener::bind("0.0.0.0:80").unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let local = s.local_addr().unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
        (peer, local)
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let client = cli.spawn(|| {
        let addr = std::net::SocketAddr::from((VIP, 80));
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
        let mut w = s.try_clone().unwrap();
        let to_send = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&to_send).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read the echo");
        writer.join().unwrap();
        got == data
    });
    assert!(client.join().unwrap(), "the echo came back whole");
    let (peer, local) = server.join().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(CLIENT), "DSR keeps the client's address");
    assert_eq!(local, std::net::SocketAddr::from((VIP, 80)), "the backend's stack saw VIP:80, not :8080");
    let c = |m: &LbMaps, k| m.counters().unwrap().into_iter().find(|(c, ..)| *c == k).unwrap().1;
    assert!(c(&maps, Counter::Redirect) > 0, "the LB forwarded");
    assert_eq!(c(&maps, Counter::DropEncap) + c(&maps, Counter::DropFib) + c(&maps, Counter::PassNoNeigh), 0);
    assert!(c(&be_maps, Counter::Decap) >= c(&maps, Counter::Redirect), "every forwarded packet restored");
    assert_eq!(c(&be_maps, Counter::DropEncap), 0);
    drop(dp);
    drop(lbns);
}

// ===== IPv6: frontends, backends, conntrack and SNAT in their own maps, Maglev tables shared =====

/// IPv6 service id: in the same id space (and the same Maglev outer map) as the IPv4 ones.
const SVC6: u32 = 7;

/// IPv6 backend `i` (ids 11.. in these tests, beside the IPv4 ids 1..: one id space).
fn backend6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, i as u16)
}

fn table6_for(ids: &[u32], proto: L4Proto) -> Vec<u32> {
    let backends: Vec<_> = ids.iter().map(|&i| MaglevBackend::new(i, backend6(i).into(), 8080, proto)).collect();
    build_table(&backends, MAGLEV_M as u32, &MaglevSeed::default()).unwrap()
}

/// Service SVC6 on [VIP6]:80/TCP with IPv6 backends `ids` (port 8080, static next hop).
fn add_service6(l: &mut Lab, mode: ForwardingMode, ids: &[u32]) -> Vec<u32> {
    for &i in ids {
        l.maps6.upsert_backend(i, &Lb6Backend::new(backend6(i), 8080).with_static_next_hop(NH_MAC, 0)).unwrap();
    }
    let table = table6_for(ids, L4Proto::Tcp);
    l.maps.set_maglev(SVC6, &table).unwrap();
    l.maps6
        .upsert_service(
            &Lb6Key::new(VIP6, 80, IPPROTO_TCP),
            &Lb4Service { svc_id: SVC6, backends: ids.len() as u16, mode: mode as u8, flags: 0 },
        )
        .unwrap();
    table
}

/// Service `svc_id` on [VIP6]:`port`/UDP over the same IPv6 backend entries.
fn add_udp_service6(l: &mut Lab, svc_id: u32, port: u16, mode: ForwardingMode, ids: &[u32]) {
    l.maps.set_maglev(svc_id, &table6_for(ids, L4Proto::Udp)).unwrap();
    l.maps6
        .upsert_service(
            &Lb6Key::new(VIP6, port, halyard_datapath::maps::IPPROTO_UDP),
            &Lb4Service { svc_id, backends: ids.len() as u16, mode: mode as u8, flags: 0 },
        )
        .unwrap();
}

/// Which backend the datapath must pick for a new IPv6 flow from CLIENT6:`sport`, computed in Rust.
fn expected_backend6(table: &[u32], sport: u16, dport: u16, proto: u8) -> u32 {
    let h = flow_hash6(CLIENT6, sport, dport, proto, SEED6);
    table[(h % MAGLEV_M as u32) as usize]
}

/// A 40-byte IPv6 header.
fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, nexthdr: u8, payload_len: usize, tclass: u8, flow: u32) -> Vec<u8> {
    let w0 = (6u32 << 28) | ((tclass as u32) << 20) | (flow & 0xfffff);
    let mut ip = w0.to_be_bytes().to_vec();
    ip.extend_from_slice(&(payload_len as u16).to_be_bytes());
    ip.extend_from_slice(&[nexthdr, 64]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip
}

/// The RFC 1071 sum of the IPv6 pseudo-header (RFC 8200 §8.1) and `l4` (0 when it verifies).
fn sum6(src: &[u8], dst: &[u8], nexthdr: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, nexthdr]);
    pseudo.extend_from_slice(l4);
    csum(&pseudo)
}

/// Ethernet (0x86DD) + `ip` + `l4`.
fn frame6(ip: Vec<u8>, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// Ethernet + IPv6 (traffic class 0x28, flow label 0x12345) + TCP with `flags` and a valid
/// checksum + `payload`.
fn tcp6_packet_flags(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&1u32.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let c = sum6(&src.octets(), &dst.octets(), 6, &tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    frame6(ipv6_header(src, dst, 6, tcp.len(), 0x28, 0x12345), &tcp)
}

fn tcp6_packet(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    tcp6_packet_flags(src, sport, dst, dport, 0x02, payload)
}

/// Ethernet + IPv6 + UDP with a valid checksum (mandatory over IPv6) + `payload`.
fn udp6_packet(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let c = match sum6(&src.octets(), &dst.octets(), 17, &udp) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    frame6(ipv6_header(src, dst, 17, udp.len(), 0, 0), &udp)
}

/// Whether the TCP/UDP checksum of an IPv6 frame verifies; the upper-layer header starts at
/// `l4_off` (54 without extension headers) and is protocol `proto`.
fn l4_ok6(frame: &[u8], l4_off: usize, proto: u8) -> bool {
    sum6(&frame[22..38], &frame[38..54], proto, &frame[l4_off..]) == 0
}

fn ports6(frame: &[u8]) -> (u16, u16) {
    (u16::from_be_bytes([frame[54], frame[55]]), u16::from_be_bytes([frame[56], frame[57]]))
}

/// The backend id in the last byte of an IPv6 frame's destination (the outer one if encapsulated).
fn chosen6(out: &[u8]) -> u32 {
    out[53] as u32
}

/// The frame's first 32-bit IPv6 word: (traffic class, flow label).
fn class_and_label(frame: &[u8]) -> (u8, u32) {
    let w = u32::from_be_bytes([frame[14], frame[15], frame[16], frame[17]]);
    assert_eq!(w >> 28, 6, "IPv6");
    (((w >> 20) & 0xff) as u8, w & 0xfffff)
}

/// What the LB must send for `pkt` in IP6IP6 mode, built here: to the next hop, from us; an outer
/// IPv6 header (the inner traffic class, the flow label from the flow hash, next header 41, hop
/// limit 64, this node to the backend) in front of the client's packet, unchanged.
fn ip6ip6_expected(pkt: &[u8], be: Ipv6Addr, hash: u32) -> Vec<u8> {
    let inner = &pkt[14..];
    let (tclass, _) = class_and_label(pkt);
    let mut want = NH_MAC.to_vec();
    want.extend_from_slice(&LB_MAC);
    want.extend_from_slice(&[0x86, 0xdd]);
    want.extend_from_slice(&ipv6_header(NODE6, be, 41, inner.len(), tclass, hash & 0xfffff));
    want.extend_from_slice(inner);
    want
}

/// The same in Geneve mode: outer IPv6 (next header UDP), UDP from the flow hash's port to 6081
/// with the checksum computed here over the whole datagram, the Geneve base header (version 0,
/// 6 option words, C bit, protocol 0x86DD, VNI 2), Cilium's IPv6 DSR option (class 0x014B, type
/// 0x81, 5 words: the VIP, the port, padding), then the client's packet.
fn geneve6_expected(pkt: &[u8], be: Ipv6Addr, hash: u32, vport: u16) -> Vec<u8> {
    let inner = &pkt[14..];
    let (tclass, _) = class_and_label(pkt);
    let mut udp = Vec::new();
    udp.extend_from_slice(&(((hash & 0x3fff) | 0xc000) as u16).to_be_bytes());
    udp.extend_from_slice(&6081u16.to_be_bytes());
    udp.extend_from_slice(&((8 + 8 + 24 + inner.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&[0x06, 0x40, 0x86, 0xdd, 0x00, 0x00, 0x02, 0x00]);
    udp.extend_from_slice(&[0x01, 0x4b, 0x81, 0x05]);
    udp.extend_from_slice(&VIP6.octets());
    udp.extend_from_slice(&vport.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(inner);
    let c = match sum6(&NODE6.octets(), &be.octets(), 17, &udp) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut want = NH_MAC.to_vec();
    want.extend_from_slice(&LB_MAC);
    want.extend_from_slice(&[0x86, 0xdd]);
    want.extend_from_slice(&ipv6_header(NODE6, be, 17, udp.len(), tclass, hash & 0xfffff));
    want.extend_from_slice(&udp);
    want
}

#[test]
fn ipv6_ip6ip6_dsr_frame_byte_by_byte_in_xdp_and_tc() {
    let Some(()) = require_root("ipv6_ip6ip6_dsr_frame_byte_by_byte_in_xdp_and_tc") else { return };
    let mut x = lab("v6-ipip-x");
    let mut t = lab("v6-ipip-t");
    let table = add_service6(&mut x, ForwardingMode::DsrIpip, &[11, 12, 13]);
    add_service6(&mut t, ForwardingMode::DsrIpip, &[11, 12, 13]);
    for (sport, flags, payload) in [(40001u16, 0x02, &b""[..]), (40002, 0x18, b"GET / HTTP/1.1\r\n\r\n")] {
        let pkt = tcp6_packet_flags(CLIENT6, sport, VIP6, 80, flags, payload);
        let (rc, out) = same_on_both(&mut x, &mut t, &pkt, &format!("tcp from {sport}"));
        assert_eq!(rc, XDP_TX);
        let be = expected_backend6(&table, sport, 80, IPPROTO_TCP);
        let h = flow_hash6(CLIENT6, sport, 80, IPPROTO_TCP, SEED6);
        assert_eq!(out, ip6ip6_expected(&pkt, backend6(be), h), "IP6IP6 frame from {sport} differs");
        // The same facts, one by one.
        assert_eq!(out.len(), pkt.len() + 40);
        assert_eq!(u16::from_be_bytes([out[18], out[19]]) as usize, pkt.len() - 14, "outer payload length");
        assert_eq!((out[20], out[21]), (41, 64), "next header IPv6, hop limit 64");
        assert_eq!(class_and_label(&out), (0x28, h & 0xfffff), "inner traffic class, flow label from the hash");
        assert_eq!((&out[22..38], &out[38..54]), (&NODE6.octets()[..], &backend6(be).octets()[..]));
        assert_eq!(&out[54..], &pkt[14..], "the client's packet, unchanged (DSR)");
    }
    assert_eq!(counter(&x, Counter::Tx), 2);
    assert_eq!(counter(&x, Counter::CtNew), 2);
    assert_eq!(counter(&t, Counter::Redirect), 2);
}

#[test]
fn ipv6_geneve_dsr_frame_byte_by_byte_in_xdp_and_tc() {
    let Some(()) = require_root("ipv6_geneve_dsr_frame_byte_by_byte_in_xdp_and_tc") else { return };
    let mut x = lab("v6-gen-x");
    let mut t = lab("v6-gen-t");
    for l in [&mut x, &mut t] {
        add_service6(l, ForwardingMode::DsrGeneve, &[11, 12, 13]);
        add_udp_service6(l, 8, 53, ForwardingMode::DsrGeneve, &[11, 12, 13]);
    }
    let tcp_table = table6_for(&[11, 12, 13], L4Proto::Tcp);
    let udp_table = table6_for(&[11, 12, 13], L4Proto::Udp);
    let cases = [
        (tcp6_packet(CLIENT6, 41000, VIP6, 80, b"hello"), 41000u16, 80u16, IPPROTO_TCP, &tcp_table),
        (tcp6_packet_flags(CLIENT6, 41001, VIP6, 80, 0x18, &[0xab; 301]), 41001, 80, IPPROTO_TCP, &tcp_table),
        (udp6_packet(CLIENT6, 41002, VIP6, 53, b"query"), 41002, 53, 17, &udp_table),
        (udp6_packet(CLIENT6, 41003, VIP6, 53, b"odd"), 41003, 53, 17, &udp_table),
    ];
    for (pkt, sport, vport, proto, table) in cases {
        let (rc, out) = same_on_both(&mut x, &mut t, &pkt, &format!("from {sport}"));
        assert_eq!(rc, XDP_TX);
        let be = expected_backend6(table, sport, vport, proto);
        let h = flow_hash6(CLIENT6, sport, vport, proto, SEED6);
        assert_eq!(out, geneve6_expected(&pkt, backend6(be), h, vport), "Geneve frame from {sport} differs");
        // One by one: lengths, next header, hop limit, and a UDP checksum that verifies over the
        // IPv6 pseudo-header and the whole datagram (the inner segment included).
        let udp_len = 8 + 8 + 24 + pkt.len() - 14;
        assert_eq!(u16::from_be_bytes([out[18], out[19]]) as usize, udp_len, "outer payload length");
        assert_eq!((out[20], out[21]), (17, 64), "next header UDP, hop limit 64");
        assert_eq!(u16::from_be_bytes([out[58], out[59]]) as usize, udp_len, "UDP length");
        assert_eq!(u16::from_be_bytes([out[56], out[57]]), 6081);
        assert_ne!(&out[60..62], &[0, 0], "a UDP checksum is mandatory over IPv6");
        assert!(l4_ok6(&out, 54, 17), "outer UDP checksum from {sport}");
        assert_eq!(&out[62..66], &[0x06, 0x40, 0x86, 0xdd]);
        assert_eq!(&out[70..74], &[0x01, 0x4b, 0x81, 0x05], "Cilium's DSR option, 5 words");
        assert_eq!((&out[74..90], &out[90..92]), (&VIP6.octets()[..], &vport.to_be_bytes()[..]));
        assert_eq!(&out[94..], &pkt[14..]);
    }
}

#[test]
fn ipv6_maglev_selection_matches_rust_and_spreads() {
    let Some(()) = require_root("ipv6_maglev_selection_matches_rust_and_spreads") else { return };
    let mut l = lab("v6-spread");
    let table = add_service6(&mut l, ForwardingMode::DsrIpip, &[11, 12, 13]);
    let mut counts = std::collections::BTreeMap::<u32, u32>::new();
    for sport in 20000..23000u16 {
        let (rc, out) = run(&mut l, &tcp6_packet(CLIENT6, sport, VIP6, 80, b""));
        assert_eq!(rc, XDP_TX);
        let b = chosen6(&out);
        assert_eq!(b, expected_backend6(&table, sport, 80, IPPROTO_TCP), "flow from port {sport}");
        *counts.entry(b).or_default() += 1;
    }
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![11, 12, 13]);
    for (b, c) in &counts {
        assert!((850..=1150).contains(c), "backend {b} got {c} of 3000 flows: {counts:?}");
    }
    // Other clients too: the whole source address is hashed.
    for i in 0..300u16 {
        let src = Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, i.wrapping_mul(7919));
        let (_, out) = run(&mut l, &tcp6_packet(src, 50000, VIP6, 80, b""));
        let h = flow_hash6(src, 50000, 80, IPPROTO_TCP, SEED6);
        assert_eq!(chosen6(&out), table[(h % MAGLEV_M as u32) as usize], "client {src}");
    }
}

#[test]
fn ipv6_established_flow_keeps_its_backend_after_removal_from_the_table() {
    let Some(()) = require_root("ipv6_established_flow_keeps_its_backend") else { return };
    let mut l = lab("v6-ct");
    add_service6(&mut l, ForwardingMode::DsrIpip, &[11, 12, 13]);
    let flows: Vec<u16> =
        (30000..30200u16).filter(|&p| chosen6(&run(&mut l, &tcp6_packet(CLIENT6, p, VIP6, 80, b"")).1) == 12).collect();
    assert!(!flows.is_empty());
    assert_eq!(l.maps6.ct_entries().unwrap().len(), 200, "one IPv6 conntrack entry per flow");
    assert!(l.maps.ct_entries().unwrap().is_empty(), "none in the IPv4 table");
    // Backend 12 leaves the service (draining: its entry stays).
    l.maps.set_maglev(SVC6, &table6_for(&[11, 13], L4Proto::Tcp)).unwrap();
    for &p in &flows {
        let ack = tcp6_packet_flags(CLIENT6, p, VIP6, 80, 0x10, b"more");
        assert_eq!(chosen6(&run(&mut l, &ack).1), 12, "established flow {p} moved");
    }
    assert!(counter(&l, Counter::CtHit) >= flows.len() as u64);
    for p in 40000..40300u16 {
        assert_ne!(chosen6(&run(&mut l, &tcp6_packet(CLIENT6, p, VIP6, 80, b"")).1), 12);
    }
    // Once the backend is deleted its flows are re-balanced, not black-holed.
    l.maps6.remove_backend(12).unwrap();
    for &p in &flows {
        let (rc, out) = run(&mut l, &tcp6_packet_flags(CLIENT6, p, VIP6, 80, 0x10, b""));
        assert_eq!(rc, XDP_TX);
        assert_ne!(chosen6(&out), 12);
    }
    // FIN marks a flow closing; the agent's aging removes it.
    let p = flows[0];
    run(&mut l, &tcp6_packet_flags(CLIENT6, p, VIP6, 80, 0x11, b""));
    let closing = l.maps6.ct_entries().unwrap().into_iter().filter(|(_, e)| e.flags & CT_F_CLOSING != 0).count();
    assert_eq!(closing, 1);
    let t = halyard_datapath::lb::CtTimeouts {
        tcp: std::time::Duration::from_secs(3600),
        closing: std::time::Duration::ZERO,
        other: std::time::Duration::ZERO,
    };
    let now = halyard_datapath::lb::monotonic_ns();
    let before = l.maps6.ct_entries().unwrap().len();
    assert_eq!(l.maps6.ct_expire(now + 1_000_000_000, &t).unwrap(), 1, "only the closing flow");
    assert_eq!(l.maps6.ct_entries().unwrap().len(), before - 1);
}

#[test]
fn ipv6_icmpv6_ndp_extension_headers_and_fragments_pass_untouched() {
    let Some(()) = require_root("ipv6_icmpv6_ndp_extension_headers_and_fragments_pass_untouched") else { return };
    let mut x = lab("v6-pass-x");
    let mut t = lab("v6-pass-t");
    add_service6(&mut x, ForwardingMode::DsrGeneve, &[11]);
    add_service6(&mut t, ForwardingMode::DsrGeneve, &[11]);
    let tcp = &tcp6_packet(CLIENT6, 5000, VIP6, 80, b"x")[54..];
    // An extension header (8 bytes, next header TCP) in front of a TCP segment to the service.
    let with_ext = |nh: u8| {
        let mut ext = vec![6, 0, 1, 4, 0, 0, 0, 0];
        if nh == 44 {
            ext = vec![6, 0, 0, 0, 0, 0, 0, 1]; // Fragment: offset 0, M flag set
        }
        let mut l4 = ext;
        l4.extend_from_slice(tcp);
        frame6(ipv6_header(CLIENT6, VIP6, nh, l4.len(), 0, 0), &l4)
    };
    let icmp_echo = frame6(ipv6_header(CLIENT6, VIP6, 58, 8, 0, 0), &[128, 0, 0, 0, 0, 1, 0, 1]);
    // A neighbour solicitation for the VIP (RFC 4861 §4.3) to its solicited-node address.
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&VIP6.octets());
    let snm = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x0010);
    let ndp = frame6(ipv6_header(CLIENT6, snm, 58, ns.len(), 0, 0), &ns);
    // A non-first fragment (offset 8, no ports).
    let mut later = vec![6, 0, 0, 0x40, 0, 0, 0, 1];
    later.extend_from_slice(&[0; 16]);
    let frag_later = frame6(ipv6_header(CLIENT6, VIP6, 44, later.len(), 0, 0), &later);
    let mut truncated = tcp6_packet(CLIENT6, 5001, VIP6, 80, b"");
    truncated.truncate(14 + 40 + 3);
    let mut short_ip = tcp6_packet(CLIENT6, 5002, VIP6, 80, b"");
    short_ip.truncate(14 + 30);
    let cases = [
        ("ICMPv6 echo to the VIP", icmp_echo),
        ("NDP neighbour solicitation", ndp),
        ("Hop-by-Hop options", with_ext(0)),
        ("Routing header", with_ext(43)),
        ("Destination options", with_ext(60)),
        ("first fragment", with_ext(44)),
        ("later fragment", frag_later),
        ("no next header", frame6(ipv6_header(CLIENT6, VIP6, 59, 0, 0, 0), &[])),
        ("truncated TCP header", truncated),
    ];
    for (what, f) in &cases {
        let (rc, out) = same_on_both(&mut x, &mut t, f, what);
        assert_eq!((rc, &out), (XDP_PASS, f), "{what}: passed untouched");
    }
    // A frame cut inside the IPv6 header (XDP only: BPF_PROG_TEST_RUN builds no skb from it).
    assert_eq!(run(&mut x, &short_ip), (XDP_PASS, short_ip.clone()));
    for l in [&x, &t] {
        assert_eq!(counter(l, Counter::PassNoService), 3, "ICMPv6, NDP, no next header");
        assert_eq!(counter(l, Counter::PassIpOptions), 3, "extension headers");
        assert_eq!(counter(l, Counter::PassFragment), 2);
        assert_eq!(counter(l, Counter::Tx) + counter(l, Counter::Redirect) + counter(l, Counter::CtNew), 0);
    }
    assert_eq!(
        (counter(&x, Counter::DropMalformed), counter(&t, Counter::DropMalformed)),
        (2, 1),
        "truncated (passed)"
    );
    // Still the service, on the right port and protocol only.
    assert_eq!(run(&mut x, &tcp6_packet(CLIENT6, 5003, VIP6, 81, b"")).0, XDP_PASS);
    assert_eq!(run(&mut x, &udp6_packet(CLIENT6, 5004, VIP6, 80, b"")).0, XDP_PASS);
    let other_vip = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x11);
    assert_eq!(run(&mut x, &tcp6_packet(CLIENT6, 5005, other_vip, 80, b"")).0, XDP_PASS);
    assert_eq!(counter(&x, Counter::PassNoService), 6);
}

#[test]
fn ipv4_and_ipv6_services_share_ids_and_the_maglev_map_without_mixing() {
    let Some(()) = require_root("ipv4_and_ipv6_services_share_ids_and_the_maglev_map") else { return };
    // Both families on one node: IPv4 service 1 (backends 1..3) and IPv6 service 7 (backends
    // 11..13), tables in the one Maglev map. Each family finds only its own backends.
    let mut l = lab("v6-mixed");
    let t4 = add_service(&mut l, ForwardingMode::DsrIpip, &[1, 2, 3]);
    let t6 = add_service6(&mut l, ForwardingMode::DsrIpip, &[11, 12, 13]);
    let mut ids = l.maps.maglev_ids().unwrap();
    ids.sort();
    assert_eq!(ids, vec![1, SVC6]);
    for sport in 42000..42100u16 {
        let (rc, out4) = run(&mut l, &tcp_packet(CLIENT, sport, VIP, 80, b""));
        assert_eq!((rc, chosen(&out4)), (XDP_TX, expected_backend(&t4, sport)));
        let (rc, out6) = run(&mut l, &tcp6_packet(CLIENT6, sport, VIP6, 80, b""));
        assert_eq!((rc, chosen6(&out6)), (XDP_TX, expected_backend6(&t6, sport, 80, IPPROTO_TCP)));
    }
    assert_eq!((l.maps.ct_entries().unwrap().len(), l.maps6.ct_entries().unwrap().len()), (100, 100));
    // An IPv6 frontend whose table names IPv4 backend slots finds no IPv6 backend there: dropped
    // (counted), never sent to an address of the wrong family.
    l.maps.set_maglev(SVC6, &table_for(&[1, 2, 3])).unwrap();
    let (rc, _) = run(&mut l, &tcp6_packet(CLIENT6, 43000, VIP6, 80, b""));
    assert_eq!(rc, XDP_DROP);
    assert_eq!(counter(&l, Counter::DropNoBackend), 1);
    // A service without backends drops, as for IPv4.
    l.maps6
        .upsert_service(
            &Lb6Key::new(VIP6, 443, IPPROTO_TCP),
            &Lb4Service { svc_id: 9, backends: 0, mode: ForwardingMode::DsrIpip as u8, flags: 0 },
        )
        .unwrap();
    assert_eq!(run(&mut l, &tcp6_packet(CLIENT6, 1, VIP6, 443, b"")).0, XDP_DROP);
    assert_eq!(counter(&l, Counter::DropNoBackend), 2);
}

#[test]
fn ipv6_frontend_without_a_node_address_is_dropped() {
    let Some(()) = require_root("ipv6_frontend_without_a_node_address_is_dropped") else { return };
    // No IPv6 address for this node: it could neither encapsulate nor SNAT (the agent programs no
    // IPv6 frontend then; the datapath refuses anyway).
    let mut l = lab_with("v6-nonode", Ipv6Addr::UNSPECIFIED);
    add_service6(&mut l, ForwardingMode::DsrGeneve, &[11]);
    assert_eq!(run(&mut l, &tcp6_packet(CLIENT6, 1, VIP6, 80, b"")).0, XDP_DROP);
    assert_eq!(run_tc(&mut l, &tcp6_packet(CLIENT6, 2, VIP6, 80, b"")).0, TC_ACT_SHOT);
    assert_eq!(counter(&l, Counter::DropEncap), 2);
    // IPv4 is unaffected.
    add_service(&mut l, ForwardingMode::DsrGeneve, &[1]);
    assert_eq!(run(&mut l, &tcp_packet(CLIENT, 1, VIP, 80, b"")).0, XDP_TX);
}

#[test]
fn ipv6_snat_translates_both_ways_like_xdp() {
    let Some(()) = require_root("ipv6_snat_translates_both_ways_like_xdp") else { return };
    // Hybrid as the agent programs it: TCP/80 SNAT here (UDP/53 too); XDP in one datapath, tc in
    // the other: the same backend, port, bytes and reverse entries.
    let mut x = lab("v6-snat-x");
    let mut t = lab("v6-snat-t");
    for l in [&mut x, &mut t] {
        add_service6(l, ForwardingMode::Snat, &[11, 12, 13]);
        add_udp_service6(l, 8, 53, ForwardingMode::Snat, &[11, 12, 13]);
    }
    let mut seen = std::collections::BTreeSet::new();
    for sport in 44000..44012u16 {
        for udp in [false, true] {
            let (proto, vport) = if udp { (17u8, 53u16) } else { (IPPROTO_TCP, 80) };
            let pkt = if udp {
                udp6_packet(CLIENT6, sport, VIP6, 53, b"query")
            } else {
                tcp6_packet(CLIENT6, sport, VIP6, 80, b"GET /")
            };
            let what = format!("{} request from {sport}", if udp { "UDP" } else { "TCP" });
            let (rc, out) = same_on_both(&mut x, &mut t, &pkt, &what);
            assert_eq!(rc, XDP_TX, "{what}");
            assert_eq!(out.len(), pkt.len(), "SNAT changes no length");
            let be = chosen6(&out);
            seen.insert(be);
            assert_eq!(&out[..6], &NH_MAC);
            assert_eq!(&out[22..38], &NODE6.octets(), "{what}: source is this node");
            assert_eq!(&out[38..54], &backend6(be).octets());
            let (nport, bport) = ports6(&out);
            assert_eq!(bport, 8080, "DNAT to the backend's port");
            assert!((32768..61000).contains(&nport), "SNAT port {nport}");
            assert!(l4_ok6(&out, 54, proto), "{what}: checksum after SNAT");
            assert_eq!((out[20], out[21]), (pkt[20], pkt[21]), "next header and hop limit kept");
            // The reply: backend:8080 -> node:nport becomes VIP:vport -> client:sport.
            let reply = if udp {
                udp6_packet(backend6(be), 8080, NODE6, nport, b"answer")
            } else {
                tcp6_packet_flags(backend6(be), 8080, NODE6, nport, 0x12, b"200 OK")
            };
            let (_, back) = same_on_both(&mut x, &mut t, &reply, &format!("reply to {what}"));
            assert_eq!((&back[22..38], &back[38..54]), (&VIP6.octets()[..], &CLIENT6.octets()[..]));
            assert_eq!(ports6(&back), (vport, sport));
            assert!(l4_ok6(&back, 54, proto), "{what}: checksum after reverse SNAT");
            assert_eq!(&back[54 + if udp { 8 } else { 20 }..], if udp { &b"answer"[..] } else { b"200 OK" });
        }
    }
    assert!(seen.len() >= 2, "flows spread: {seen:?}");
    let (mut xn, mut tn) = (x.maps6.nat_entries().unwrap(), t.maps6.nat_entries().unwrap());
    xn.sort_by_key(|(k, _)| format!("{k:?}"));
    tn.sort_by_key(|(k, _)| format!("{k:?}"));
    assert_eq!(format!("{xn:?}"), format!("{tn:?}"), "reverse entries");
    assert_eq!(tn.len(), 24);
    assert!(tn.iter().all(|(k, _)| k.node == NODE6.octets()));
    assert!(x.maps.nat_entries().unwrap().is_empty(), "none in the IPv4 map");
    assert_eq!(counter(&t, Counter::SnatReply), 24);
    // An established flow keeps its port and backend.
    let (_, first) = run(&mut x, &tcp6_packet(CLIENT6, 44000, VIP6, 80, b""));
    let (_, again) = run(&mut x, &tcp6_packet_flags(CLIENT6, 44000, VIP6, 80, 0x10, b"more"));
    assert_eq!((ports6(&again).0, chosen6(&again)), (ports6(&first).0, chosen6(&first)));
    // A packet to this node's address that is no SNAT reply passes untouched.
    let other = tcp6_packet(backend6(11), 8080, NODE6, 22, b"");
    assert_eq!(run(&mut x, &other), (XDP_PASS, other.clone()));
    assert_eq!(run_tc(&mut t, &other), (TC_ACT_OK, other.clone()));
    // The agent's aging frees a flow's port with it.
    let now = halyard_datapath::lb::monotonic_ns();
    let zero = halyard_datapath::lb::CtTimeouts {
        tcp: std::time::Duration::ZERO,
        closing: std::time::Duration::ZERO,
        other: std::time::Duration::ZERO,
    };
    assert_eq!(t.maps6.ct_expire(now + 1_000_000_000, &zero).unwrap(), 24);
    assert!(t.maps6.nat_entries().unwrap().is_empty(), "SNAT ports released");
}

/// What the LB must send for `pkt` (an IPv6 frame, TCP or UDP) in DsrOpt mode, built here: to the
/// next hop, from us; the destination DNATed to `be`:8080 with the checksum computed anew; then
/// Cilium's Destination Options header (next header 60 in the IPv6 header, payload_len + 24: the
/// upper-layer protocol, hdrlen 2, type 0x1B, length 20, the VIP, the port, padding).
fn dsr_opt6_expected(pkt: &[u8], be: Ipv6Addr, vport: u16) -> Vec<u8> {
    let proto = pkt[20];
    let mut ip = pkt[14..54].to_vec();
    let plen = u16::from_be_bytes([ip[4], ip[5]]) + 24;
    ip[4..6].copy_from_slice(&plen.to_be_bytes());
    ip[6] = 60;
    ip[24..40].copy_from_slice(&be.octets());
    let mut l4 = pkt[54..].to_vec();
    l4[2..4].copy_from_slice(&8080u16.to_be_bytes());
    let at = if proto == 6 { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&[0, 0]);
    let c = match sum6(&ip[8..24], &be.octets(), proto, &l4) {
        0 if proto == 17 => 0xffff,
        c => c,
    };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    let mut want = NH_MAC.to_vec();
    want.extend_from_slice(&LB_MAC);
    want.extend_from_slice(&[0x86, 0xdd]);
    want.extend_from_slice(&ip);
    want.extend_from_slice(&[proto, 2, 0x1b, 20]);
    want.extend_from_slice(&VIP6.octets());
    want.extend_from_slice(&vport.to_be_bytes());
    want.extend_from_slice(&[0, 0]);
    want.extend_from_slice(&l4);
    want
}

#[test]
fn ipv6_dsr_extension_header_frames_byte_by_byte_in_xdp_and_tc() {
    let Some(()) = require_root("ipv6_dsr_extension_header_frames_byte_by_byte_in_xdp_and_tc") else { return };
    let mut x = lab("v6-opt-x");
    let mut t = lab("v6-opt-t");
    for l in [&mut x, &mut t] {
        add_service6(l, ForwardingMode::DsrOpt, &[11, 12, 13]);
        add_udp_service6(l, 8, 53, ForwardingMode::DsrOpt, &[11, 12, 13]);
    }
    let tcp_table = table6_for(&[11, 12, 13], L4Proto::Tcp);
    let udp_table = table6_for(&[11, 12, 13], L4Proto::Udp);
    let cases = [
        (tcp6_packet(CLIENT6, 45000, VIP6, 80, b""), 45000u16, 80u16, IPPROTO_TCP, &tcp_table),
        (
            tcp6_packet_flags(CLIENT6, 45001, VIP6, 80, 0x18, b"GET / HTTP/1.1\r\n\r\n"),
            45001,
            80,
            IPPROTO_TCP,
            &tcp_table,
        ),
        (udp6_packet(CLIENT6, 45002, VIP6, 53, b"query"), 45002, 53, 17, &udp_table),
    ];
    for (pkt, sport, vport, proto, table) in cases {
        let (rc, out) = same_on_both(&mut x, &mut t, &pkt, &format!("from {sport}"));
        assert_eq!(rc, XDP_TX);
        let be = expected_backend6(table, sport, vport, proto);
        assert_eq!(out, dsr_opt6_expected(&pkt, backend6(be), vport), "DSR extension header frame from {sport}");
        assert_eq!(out.len(), pkt.len() + 24);
        assert_eq!(u16::from_be_bytes([out[18], out[19]]) as usize, out.len() - 54, "payload length");
        assert_eq!((out[20], out[21]), (60, 64), "next header: Destination Options; hop limit kept");
        assert_eq!(&out[22..38], &CLIENT6.octets(), "the client stays the source (DSR)");
        assert_eq!(&out[54..58], &[proto, 2, 0x1b, 20]);
        assert!(l4_ok6(&out, 78, proto), "L4 checksum over the pseudo-header to the backend");
        assert_eq!(u16::from_be_bytes([out[80], out[81]]), 8080);
    }
    assert_eq!(counter(&x, Counter::Tx), 3);
    // A packet arriving with the extension header (ours included) is the stack's at the LB.
    let (_, wire) = run(&mut x, &tcp6_packet(CLIENT6, 45003, VIP6, 80, b""));
    let mut to_vip = wire.clone();
    to_vip[38..54].copy_from_slice(&VIP6.octets());
    assert_eq!(run(&mut x, &to_vip), (XDP_PASS, to_vip.clone()));
}

#[test]
fn tc_decap_turns_ipv6_dsr_frames_back_into_the_client_packet() {
    let Some(()) = require_root("tc_decap_turns_ipv6_dsr_frames_back_into_the_client_packet") else { return };
    for mode in [ForwardingMode::DsrIpip, ForwardingMode::DsrGeneve, ForwardingMode::DsrOpt] {
        let mut l = lab(&format!("v6-decap-{}", mode.as_str()));
        add_service6(&mut l, mode, &[11, 12, 13]);
        add_udp_service6(&mut l, 8, 53, mode, &[11, 12, 13]);
        let packets = [
            tcp6_packet(CLIENT6, 46000, VIP6, 80, b""),
            tcp6_packet_flags(CLIENT6, 46001, VIP6, 80, 0x18, b"hello, backend"),
            udp6_packet(CLIENT6, 46002, VIP6, 53, b"query"),
        ];
        for (i, pkt) in packets.iter().enumerate() {
            let (rc, wire) = run(&mut l, pkt);
            assert_eq!(rc, XDP_TX, "{}: packet {i} through the LB", mode.as_str());
            assert_ne!(wire[14..], pkt[14..]);
            let (rc, back) = run_decap(&mut l, &wire);
            assert_eq!(rc, TC_ACT_OK, "{}: packet {i} handed to the stack", mode.as_str());
            // The client's packet exactly, in the frame it arrived in.
            let mut want = wire[..14].to_vec();
            want.extend_from_slice(&pkt[14..]);
            assert_eq!(back, want, "{}: packet {i} is not the client's packet again", mode.as_str());
            assert!(l4_ok6(&back, 54, back[20]));
        }
        assert_eq!(counter(&l, Counter::Decap), packets.len() as u64, "{}", mode.as_str());
    }
    // Left alone: IPv6 to a local port, Geneve carrying IPv4 (not IPv6) over IPv6, another
    // Destination Options header, a truncated one, ICMPv6.
    let mut l = lab("v6-decap-other");
    add_service6(&mut l, ForwardingMode::DsrOpt, &[11]);
    let plain = tcp6_packet(CLIENT6, 46010, backend6(11), 22, b"");
    let (_, wire) = run(&mut l, &tcp6_packet(CLIENT6, 46011, VIP6, 80, b"data"));
    let mut other_opt = wire.clone();
    other_opt[56] = 0x1e; // another option type
    let mut short = wire.clone();
    short.truncate(14 + 40 + 20);
    let icmp = frame6(ipv6_header(CLIENT6, backend6(11), 58, 8, 0, 0), &[128, 0, 0, 0, 0, 1, 0, 1]);
    let mut geneve_v4 = udp6_packet(NODE6, 50000, backend6(11), 6081, &[0, 0, 0x08, 0x00, 0, 0, 2, 0, 0x45]);
    geneve_v4[60..62].copy_from_slice(&[0, 0]);
    for f in [plain, other_opt, short, icmp, geneve_v4] {
        assert_eq!(run_decap(&mut l, &f), (TC_ACT_OK, f.clone()));
    }
    assert_eq!(counter(&l, Counter::Decap), 0);
}

#[test]
fn ipv6_next_hops_by_fib_like_xdp() {
    let Some(()) = require_root("ipv6_next_hops_by_fib_like_xdp") else { return };
    // Backends without a static next hop and replies to clients: bpf_fib_lookup(AF_INET6). A
    // private namespace: an uplink with this node's address and the backends on-link, clients
    // behind a gateway, permanent neighbours; one client prefix's gateway has none.
    let ns = ThreadNetns::enter("v6-fib");
    let gw: Ipv6Addr = "fd00:50::1".parse().unwrap();
    let gw_mac = [0x02, 0, 0, 0, 0, 0x0a];
    let be_mac = |i: u32| [0x02, 0, 0, 0, 1, i as u8];
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    ns.sh("ip", &["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"]);
    ns.sh("ip", &["link", "set", "ul0", "address", &mac(LB_MAC)]);
    for d in ["lo", "ul0", "ul1"] {
        ns.sh("ip", &["link", "set", d, "up"]);
    }
    ns.sh("ip", &["-6", "addr", "add", &format!("{NODE6}/64"), "dev", "ul0", "nodad"]);
    // The programs run on lo here: the FIB answers only for a forwarding ingress device.
    ns.sh("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
    ns.sh("ip", &["-6", "route", "add", "fd00:1::/64", "dev", "ul0"]);
    ns.sh("ip", &["-6", "route", "add", "2001:db8:60::/48", "via", &gw.to_string(), "dev", "ul0"]);
    ns.sh("ip", &["-6", "route", "add", "2001:db8:61::/48", "via", "fd00:50::9", "dev", "ul0"]);
    ns.sh("ip", &["-6", "neigh", "replace", &gw.to_string(), "lladdr", &mac(gw_mac), "dev", "ul0", "nud", "permanent"]);
    for i in 11..=13 {
        let a = backend6(i).to_string();
        ns.sh("ip", &["-6", "neigh", "replace", &a, "lladdr", &mac(be_mac(i)), "dev", "ul0", "nud", "permanent"]);
    }
    let mut x = lab("v6-fib-x");
    let mut t = lab("v6-fib-t");
    for l in [&mut x, &mut t] {
        for i in 11..=13 {
            l.maps6.upsert_backend(i, &Lb6Backend::new(backend6(i), 8080)).unwrap();
        }
        l.maps.set_maglev(SVC6, &table6_for(&[11, 12, 13], L4Proto::Tcp)).unwrap();
        l.maps6
            .upsert_service(
                &Lb6Key::new(VIP6, 80, IPPROTO_TCP),
                &Lb4Service { svc_id: SVC6, backends: 3, mode: ForwardingMode::Snat as u8, flags: 0 },
            )
            .unwrap();
        l.maps.set_maglev(8, &table6_for(&[11, 12, 13], L4Proto::Tcp)).unwrap();
        l.maps6
            .upsert_service(
                &Lb6Key::new(VIP6, 8443, IPPROTO_TCP),
                &Lb4Service { svc_id: 8, backends: 3, mode: ForwardingMode::DsrIpip as u8, flags: 0 },
            )
            .unwrap();
    }
    for sport in 47000..47006u16 {
        let (rc, out) =
            same_on_both(&mut x, &mut t, &tcp6_packet(CLIENT6, sport, VIP6, 80, b"req"), &format!("request {sport}"));
        assert_eq!(rc, XDP_REDIRECT, "to ul0");
        let be = chosen6(&out);
        assert_eq!((&out[..6], &out[6..12]), (&be_mac(be)[..], &LB_MAC[..]), "MACs from the FIB");
        assert!(l4_ok6(&out, 54, IPPROTO_TCP));
        let reply = tcp6_packet_flags(backend6(be), 8080, NODE6, ports6(&out).0, 0x12, b"resp");
        let (rc, back) = same_on_both(&mut x, &mut t, &reply, &format!("reply {sport}"));
        assert_eq!(rc, XDP_REDIRECT);
        assert_eq!((&back[..6], &back[6..12]), (&gw_mac[..], &LB_MAC[..]), "to the client's gateway");
        assert_eq!(ports6(&back), (80, sport));
        assert!(l4_ok6(&back, 54, IPPROTO_TCP));
        // IP6IP6 DSR to the same backends, by the FIB as well.
        let (rc, enc) = same_on_both(&mut x, &mut t, &tcp6_packet(CLIENT6, sport, VIP6, 8443, b""), "ip6ip6");
        assert_eq!(rc, XDP_REDIRECT);
        assert_eq!(&enc[..6], &be_mac(chosen6(&enc))[..]);
    }
    // A client whose gateway is unresolved: the translated reply goes to the stack.
    let far: Ipv6Addr = "2001:db8:61::7".parse().unwrap();
    let (_, out) = same_on_both(&mut x, &mut t, &tcp6_packet(far, 47100, VIP6, 80, b""), "far request");
    let reply = tcp6_packet_flags(backend6(chosen6(&out)), 8080, NODE6, ports6(&out).0, 0x12, b"");
    let (rc, back) = same_on_both(&mut x, &mut t, &reply, "far reply");
    assert_eq!(rc, XDP_PASS);
    assert_eq!((&back[38..54], ports6(&back)), (&far.octets()[..], (80, 47100)));
    assert!(l4_ok6(&back, 54, IPPROTO_TCP));
    assert_eq!(counter(&t, Counter::PassNoNeigh), 1);
    drop(ns);
}
