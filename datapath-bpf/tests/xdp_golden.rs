//! BPF_PROG_TEST_RUN golden-packet tests of the XDP (and tc) load balancer: build a packet, fill the
//! maps, run the real verified program in the kernel, compare the output bytes and verdict.
//! Needs root (CI runs as root); each test mounts its own bpffs.

mod common;

use std::net::Ipv4Addr;

use aya::programs::{TestRun, TestRunOptions};
#[allow(unused_imports)]
use common::tcp_packet_flags;
use common::*;
use halyard_datapath::hash::flow_hash;
use halyard_datapath::lb::LbMaps;
use halyard_datapath::loader::{Datapath, DatapathConfig};
use halyard_datapath::maglev::{L4Proto, MaglevBackend, MaglevSeed, build_table};
use halyard_datapath::maps::{Counter, ForwardingMode, IPPROTO_TCP, Lb4Backend, Lb4Key, Lb4Service, MAGLEV_M};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 7);
const SEED: u32 = 0x1234_5678;

struct Lab {
    _fs: Bpffs,
    dp: Datapath,
    maps: LbMaps,
}

fn lab(tag: &str) -> Lab {
    let fs = Bpffs::new(tag);
    let cfg = DatapathConfig { pin_dir: fs.pin_dir(), node_ipv4: NODE, hash_seed: SEED, geneve_vni: 2 };
    let dp = Datapath::load(cfg).expect("load datapath");
    let maps = dp.maps().expect("open maps");
    Lab { _fs: fs, dp, maps }
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
    let mut out = vec![0u8; pkt.len() + 256];
    let prog = l.dp.xdp_lb().unwrap();
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(pkt);
    opts.data_out = Some(&mut out);
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
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
    let prog = l.dp.tc_lb().unwrap();
    let mut out = vec![0u8; pkt.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&pkt);
    opts.data_out = Some(&mut out);
    let r = prog.test_run(opts).expect("tc test run");
    out.truncate(r.data_size_out as usize);
    assert_eq!(r.return_value, 7, "TC_ACT_REDIRECT");
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
