//! BPF_PROG_TEST_RUN golden-packet tests of the east-west ClusterIP translation
//! (`tc_svc.bpf.c`): a pod's packet to ClusterIP:port leaves DNATed to a backend pod's
//! address and target port, checksums included (TCP; UDP with and without a checksum), the
//! backend's reply gets the ClusterIP back as its source, conntrack keeps a flow on its backend,
//! everything else passes untouched, and on a real interface the ingress program sits before the
//! overlay's in the TCX chain. Needs root (CI runs as root).
//!
//! Expected frames are built from scratch (`common::tcp_packet` and friends compute every
//! checksum), so a byte-for-byte match checks the incremental checksum updates too.

mod common;

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use aya::programs::SchedClassifier;
use aya::programs::tc::TcAttachType;
use common::*;
use halyard_datapath::hash::flow_hash;
use halyard_datapath::lb::CtTimeouts;
use halyard_datapath::maglev::{L4Proto, MaglevBackend, MaglevSeed, build_table};
use halyard_datapath::maps::{
    CT4_ENTRY_LEN, CT4_KEY_LEN, Ct4Key, IPPROTO_TCP, IPPROTO_UDP, Lb4Backend, Lb4Key, Lb4Service, MAGLEV_M, MapBytes,
    SVC_F_AFFINITY,
};
use halyard_datapath::overlay::{Overlay, OverlayConfig, TunnelProtocol};
use halyard_datapath::svc::{ClusterIp, ClusterIpConfig, ClusterIpMaps, EwCounter, MAP_EW_CT};

/// TCX_NEXT (-1) as BPF_PROG_TEST_RUN reports it.
const TCX_NEXT: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;

const SEED: u32 = 0x5eed_1234;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const BE1: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
const BE2: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);
const BE3: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);

struct Lab {
    fs: Bpffs,
    svc: ClusterIp,
    maps: ClusterIpMaps,
}

fn lab(tag: &str) -> Lab {
    let fs = Bpffs::new(tag);
    let svc = ClusterIp::load(ClusterIpConfig { pin_dir: fs.pin_dir(), hash_seed: SEED }).expect("load tc_svc");
    let maps = svc.maps().expect("open the ClusterIP maps");
    Lab { fs, svc, maps }
}

impl Lab {
    /// VIP:port/proto -> `backends` (ids 1..), every Maglev slot on `slot_owner`'s id.
    fn service(&mut self, svc_id: u32, port: u16, proto: u8, backends: &[(u32, Ipv4Addr, u16)], slot_owner: u32) {
        for (id, addr, bport) in backends {
            self.maps.upsert_backend(*id, &Lb4Backend::new(*addr, *bport)).unwrap();
        }
        self.maps.set_maglev(svc_id, &vec![slot_owner; MAGLEV_M]).unwrap();
        let s = Lb4Service { svc_id, backends: backends.len() as u16, mode: 0, flags: 0 };
        self.maps.upsert_service(&Lb4Key::new(VIP, port, proto), &s).unwrap();
    }

    fn send_from_pod(&mut self, pkt: &[u8]) -> (u32, Vec<u8>) {
        test_run(self.svc.prog_from_pod().unwrap(), pkt)
    }

    fn send_to_pod(&mut self, pkt: &[u8]) -> (u32, Vec<u8>) {
        test_run(self.svc.prog_to_pod().unwrap(), pkt)
    }

    fn counter(&self, c: EwCounter) -> u64 {
        self.maps.counters().unwrap().into_iter().find(|(k, ..)| *k == c).unwrap().1
    }
}

/// Ethernet + IPv4 + UDP with its checksum computed (RFC 768: over the pseudo-header).
fn udp_csum_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let c = match csum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    frame(ipv4_header(src, dst, 17, udp.len(), 0), &udp)
}

/// The IPv4 header checksum and the L4 checksum (pseudo-header included) both verify.
fn assert_checksums_valid(f: &[u8]) {
    assert_eq!(csum(&f[14..34]), 0, "IPv4 header checksum");
    let l4 = &f[34..];
    if f[23] == 17 && l4[6..8] == [0, 0] {
        return; // UDP without a checksum
    }
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&f[26..34]);
    pseudo.extend_from_slice(&[0, f[23]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    assert_eq!(csum(&pseudo), 0, "L4 checksum");
}

#[test]
fn tcp_to_a_cluster_ip_is_dnated_and_the_reply_translated_back() {
    let Some(()) = require_root("tcp_to_a_cluster_ip") else { return };
    let mut l = lab("ew-tcp");
    l.service(1, 80, IPPROTO_TCP, &[(1, BE2, 8080)], 1);

    let syn = tcp_packet(POD_A, 40000, VIP, 80, b"hello service");
    let (rc, out) = l.send_from_pod(&syn);
    assert_eq!(rc, TCX_NEXT, "handed on to the next program (the overlay)");
    assert_eq!(out, tcp_packet(POD_A, 40000, BE2, 8080, b"hello service"), "DNATed frame differs");
    assert_checksums_valid(&out);
    assert_eq!((l.counter(EwCounter::Dnat), l.counter(EwCounter::CtNew)), (1, 1));

    // Conntrack and the reverse entry: (backend -> client) gives back VIP:80.
    let ct = l.maps.ct_entries().unwrap();
    assert_eq!(ct.len(), 1);
    assert_eq!(ct[0].0, Ct4Key::new(POD_A, 40000, VIP, 80, IPPROTO_TCP));
    assert_eq!((ct[0].1.backend_id, ct[0].1.svc_id), (1, 1));
    let rev = l.maps.rev_entries().unwrap();
    assert_eq!(rev.len(), 1);
    assert_eq!(rev[0].0, Ct4Key::new(BE2, 8080, POD_A, 40000, IPPROTO_TCP));
    assert_eq!((rev[0].1.vip(), rev[0].1.port()), (VIP, 80));

    // The reply, at egress of the client's veth: from the ClusterIP, byte for byte.
    let synack = tcp_packet_flags(BE2, 8080, POD_A, 40000, 0x12, b"hi");
    let (rc, back) = l.send_to_pod(&synack);
    assert_eq!(rc, TCX_NEXT);
    assert_eq!(back, tcp_packet_flags(VIP, 80, POD_A, 40000, 0x12, b"hi"), "reply not translated back");
    assert_checksums_valid(&back);
    assert_eq!(l.counter(EwCounter::RevNat), 1);

    // The flow's next packet: conntrack hit, same rewrite; no new reverse entry.
    let ack = tcp_packet_flags(POD_A, 40000, VIP, 80, 0x10, b"more");
    let (_, out) = l.send_from_pod(&ack);
    assert_eq!(out, tcp_packet_flags(POD_A, 40000, BE2, 8080, 0x10, b"more"));
    assert_eq!(l.counter(EwCounter::CtHit), 1);
    assert_eq!(l.maps.rev_entries().unwrap().len(), 1);
}

#[test]
fn udp_with_and_without_a_checksum() {
    let Some(()) = require_root("udp_with_and_without_a_checksum") else { return };
    let mut l = lab("ew-udp");
    l.service(2, 53, IPPROTO_UDP, &[(1, BE3, 5353)], 1);

    // With a checksum: updated incrementally, as if computed afresh.
    let q = udp_csum_packet(POD_A, 41000, VIP, 53, b"query?");
    let (rc, out) = l.send_from_pod(&q);
    assert_eq!(rc, TCX_NEXT);
    assert_eq!(out, udp_csum_packet(POD_A, 41000, BE3, 5353, b"query?"));
    assert_checksums_valid(&out);
    let (rc, back) = l.send_to_pod(&udp_csum_packet(BE3, 5353, POD_A, 41000, b"answer"));
    assert_eq!(rc, TCX_NEXT);
    assert_eq!(back, udp_csum_packet(VIP, 53, POD_A, 41000, b"answer"));

    // Without one (0: none, RFC 768): stays none both ways; only the IPv4 checksum changes.
    let q = udp_packet(POD_A, 41001, VIP, 53, b"query?");
    let (_, out) = l.send_from_pod(&q);
    assert_eq!(out, udp_packet(POD_A, 41001, BE3, 5353, b"query?"));
    assert_eq!(&out[40..42], &[0, 0]);
    let (_, back) = l.send_to_pod(&udp_packet(BE3, 5353, POD_A, 41001, b"answer"));
    assert_eq!(back, udp_packet(VIP, 53, POD_A, 41001, b"answer"));
    assert_eq!(l.counter(EwCounter::Dnat), 2);
    assert_eq!(l.counter(EwCounter::RevNat), 2);
}

#[test]
fn other_traffic_passes_untouched() {
    let Some(()) = require_root("other_traffic_passes_untouched") else { return };
    let mut l = lab("ew-miss");
    l.service(1, 80, IPPROTO_TCP, &[(1, BE2, 8080)], 1);

    let mut from_pod = vec![
        tcp_packet(POD_A, 40000, BE2, 8080, b"straight to a pod"),
        tcp_packet(POD_A, 40000, VIP, 81, b"another port"),
        udp_csum_packet(POD_A, 40000, VIP, 80, b"another protocol"),
        udp_packet(POD_A, 40000, Ipv4Addr::new(8, 8, 8, 8), 53, b"outside"),
    ];
    // A fragment and a packet with IP options, to the service: left to the stack.
    let mut frag = tcp_packet(POD_A, 40000, VIP, 80, b"fragment");
    frag[20..22].copy_from_slice(&0x2000u16.to_be_bytes()); // more fragments
    frag[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&frag[14..34]);
    frag[24..26].copy_from_slice(&c.to_be_bytes());
    from_pod.push(frag);
    let plain = tcp_packet(POD_A, 40000, VIP, 80, b"options");
    let mut opts = plain[..34].to_vec();
    opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL (RFC 791)
    opts.extend_from_slice(&plain[34..]);
    opts[14] = 0x46;
    let tot = (opts.len() - 14) as u16;
    opts[16..18].copy_from_slice(&tot.to_be_bytes());
    opts[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&opts[14..38]);
    opts[24..26].copy_from_slice(&c.to_be_bytes());
    from_pod.push(opts);
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    from_pod.push(arp);
    for f in &from_pod {
        let (rc, out) = l.send_from_pod(f);
        assert_eq!((rc, &out), (TCX_NEXT, f), "from the pod: changed a packet that is not for a ClusterIP");
    }
    assert_eq!(l.counter(EwCounter::PassNoService), 4);
    assert_eq!(l.counter(EwCounter::PassOther), 3);
    assert!(l.maps.ct_entries().unwrap().is_empty());

    // To the pod: a backend's packet that answers no translated flow.
    let reply = tcp_packet_flags(BE2, 8080, POD_A, 40000, 0x12, b"");
    let (rc, out) = l.send_to_pod(&reply);
    assert_eq!((rc, out), (TCX_NEXT, reply.clone()));
    assert_eq!(l.counter(EwCounter::PassNoRev), 1);

    // A stale reverse entry (its conntrack entry gone) does not rewrite either.
    l.send_from_pod(&tcp_packet(POD_A, 40000, VIP, 80, b""));
    let mut ct: BpfHashMap<MapData, [u8; CT4_KEY_LEN], [u8; CT4_ENTRY_LEN]> =
        BpfHashMap::try_from(Map::from_map_data(MapData::from_pin(l.fs.pin_dir().join(MAP_EW_CT)).unwrap()).unwrap())
            .unwrap();
    ct.remove(&Ct4Key::new(POD_A, 40000, VIP, 80, IPPROTO_TCP).to_bytes()).unwrap();
    assert_eq!(l.maps.rev_entries().unwrap().len(), 1);
    let (rc, out) = l.send_to_pod(&reply);
    assert_eq!((rc, out), (TCX_NEXT, reply.clone()), "a reverse entry without its flow rewrote a packet");
    // ... and the agent's aging removes it.
    l.maps.ct_expire(halyard_datapath::lb::monotonic_ns(), &CtTimeouts::default()).unwrap();
    assert!(l.maps.rev_entries().unwrap().is_empty());
}

#[test]
fn conntrack_keeps_the_backend_until_it_goes() {
    let Some(()) = require_root("conntrack_keeps_the_backend_until_it_goes") else { return };
    let mut l = lab("ew-ct");
    l.service(1, 80, IPPROTO_TCP, &[(1, BE1, 8080), (2, BE2, 8080)], 1);
    let dst = |f: &[u8]| Ipv4Addr::new(f[30], f[31], f[32], f[33]);

    let (_, out) = l.send_from_pod(&tcp_packet(POD_A, 40000, VIP, 80, b""));
    assert_eq!(dst(&out), BE1);
    // The table now sends everything to backend 2: the established flow stays on 1, a new one
    // goes to 2.
    l.maps.set_maglev(1, &vec![2; MAGLEV_M]).unwrap();
    let (_, out) = l.send_from_pod(&tcp_packet_flags(POD_A, 40000, VIP, 80, 0x10, b"data"));
    assert_eq!(dst(&out), BE1, "conntrack must keep the flow on its backend");
    let (_, out) = l.send_from_pod(&tcp_packet(POD_A, 40001, VIP, 80, b""));
    assert_eq!(dst(&out), BE2);
    // Its replies still come back from the ClusterIP.
    let (_, back) = l.send_to_pod(&tcp_packet_flags(BE1, 8080, POD_A, 40000, 0x10, b"x"));
    assert_eq!(back, tcp_packet_flags(VIP, 80, POD_A, 40000, 0x10, b"x"));

    // Backend 1 leaves (its slot emptied): the flow moves to what Maglev says.
    l.maps.remove_backend(1).unwrap();
    let (_, out) = l.send_from_pod(&tcp_packet_flags(POD_A, 40000, VIP, 80, 0x10, b"data"));
    assert_eq!(dst(&out), BE2);
    // A reply from the old backend is no longer translated: the flow is on backend 2 now.
    let late = tcp_packet_flags(BE1, 8080, POD_A, 40000, 0x10, b"x");
    assert_eq!(l.send_to_pod(&late).1, late);
    // The agent's aging drops the old backend's reverse entry and keeps the live ones.
    assert_eq!(l.maps.rev_entries().unwrap().len(), 3);
    l.maps.ct_expire(halyard_datapath::lb::monotonic_ns(), &CtTimeouts::default()).unwrap();
    let mut rev: Vec<Ct4Key> = l.maps.rev_entries().unwrap().into_iter().map(|(k, _)| k).collect();
    rev.sort();
    assert_eq!(
        rev,
        vec![Ct4Key::new(BE2, 8080, POD_A, 40000, IPPROTO_TCP), Ct4Key::new(BE2, 8080, POD_A, 40001, IPPROTO_TCP)]
    );

    // FIN marks the flow closing; a new SYN on the same ports chooses again.
    l.maps.upsert_backend(1, &Lb4Backend::new(BE1, 8080)).unwrap();
    l.maps.set_maglev(1, &vec![1; MAGLEV_M]).unwrap();
    let (_, out) = l.send_from_pod(&tcp_packet_flags(POD_A, 40000, VIP, 80, 0x11, b""));
    assert_eq!(dst(&out), BE2, "FIN still goes where the flow was");
    let (_, out) = l.send_from_pod(&tcp_packet(POD_A, 40000, VIP, 80, b""));
    assert_eq!(dst(&out), BE1, "a SYN after FIN is a new connection");
    assert_eq!(l.counter(EwCounter::CtNew), 4);

    // Idle flows age out with their reverse entries (TCP after 6 h).
    let later = halyard_datapath::lb::monotonic_ns() + 7 * 3600 * 1_000_000_000;
    assert_eq!(l.maps.ct_expire(later, &CtTimeouts::default()).unwrap(), 2);
    assert!(l.maps.ct_entries().unwrap().is_empty());
    assert!(l.maps.rev_entries().unwrap().is_empty());
}

#[test]
fn maglev_spreads_flows_as_the_rust_hash_predicts() {
    let Some(()) = require_root("maglev_spreads_flows") else { return };
    let mut l = lab("ew-maglev");
    let backends = [(1, BE1, 8080), (2, BE2, 8080), (3, BE3, 8080)];
    for (id, addr, port) in backends {
        l.maps.upsert_backend(id, &Lb4Backend::new(addr, port)).unwrap();
    }
    let mb: Vec<MaglevBackend> =
        backends.iter().map(|(id, a, p)| MaglevBackend::new(*id, std::net::IpAddr::V4(*a), *p, L4Proto::Tcp)).collect();
    let table = build_table(&mb, MAGLEV_M as u32, &MaglevSeed::default()).unwrap();
    l.maps.set_maglev(7, &table).unwrap();
    l.maps
        .upsert_service(&Lb4Key::new(VIP, 80, IPPROTO_TCP), &Lb4Service { svc_id: 7, backends: 3, mode: 0, flags: 0 })
        .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for sport in 30000..30300u16 {
        let (_, out) = l.send_from_pod(&tcp_packet(POD_A, sport, VIP, 80, b""));
        let got = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
        let want_id = table[(flow_hash(POD_A, sport, 80, IPPROTO_TCP, SEED, false) as usize) % MAGLEV_M];
        let want = backends.iter().find(|b| b.0 == want_id).unwrap().1;
        assert_eq!(got, want, "flow from port {sport}");
        *seen.entry(got).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "300 flows over 3 backends: {seen:?}");

    // ClientIP session affinity: the source port is left out of the hash.
    l.maps
        .upsert_service(
            &Lb4Key::new(VIP, 80, IPPROTO_TCP),
            &Lb4Service { svc_id: 7, backends: 3, mode: 0, flags: SVC_F_AFFINITY },
        )
        .unwrap();
    let mut one = std::collections::BTreeSet::new();
    for sport in 31000..31050u16 {
        let (_, out) = l.send_from_pod(&tcp_packet(POD_A, sport, VIP, 80, b""));
        one.insert(Ipv4Addr::new(out[30], out[31], out[32], out[33]));
    }
    assert_eq!(one.len(), 1, "affinity: one client, one backend: {one:?}");
}

#[test]
fn a_cluster_ip_without_backends_drops() {
    let Some(()) = require_root("a_cluster_ip_without_backends_drops") else { return };
    let mut l = lab("ew-none");
    l.maps
        .upsert_service(&Lb4Key::new(VIP, 80, IPPROTO_TCP), &Lb4Service { svc_id: 1, backends: 0, mode: 0, flags: 0 })
        .unwrap();
    assert_eq!(l.send_from_pod(&tcp_packet(POD_A, 40000, VIP, 80, b"")).0, TC_ACT_SHOT);
    assert_eq!(l.counter(EwCounter::DropNoBackend), 1);
}

/// This thread inside a fresh network namespace until dropped.
struct ThreadNetns {
    name: String,
    home: std::fs::File,
}

impl ThreadNetns {
    fn enter(tag: &str) -> Self {
        let name = format!("hl-ew-{tag}-{}", std::process::id());
        let st = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(st.success(), "ip netns add {name}");
        let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let ns = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns");
        Self { name, home }
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

fn tcx_chain(ifname: &str, hook: TcAttachType) -> Vec<u32> {
    SchedClassifier::query_tcx(ifname, hook).expect("query TCX").1.iter().map(|p| p.id()).collect()
}

#[test]
fn the_translation_runs_before_the_overlay_in_the_tcx_chain() {
    let Some(()) = require_root("the_translation_runs_before_the_overlay") else { return };
    let _ns = ThreadNetns::enter("chain");
    let o = Command::new("ip").args(["link", "add", "lxc0", "type", "veth", "peer", "name", "pod0"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fs = Bpffs::new("ew-chain");
    let ocfg = OverlayConfig {
        pin_dir: fs.pin_dir(),
        protocol: TunnelProtocol::Vxlan,
        node_ipv4: Ipv4Addr::new(192, 168, 50, 2),
        vni: 2,
        port: 8472,
        vxlan_ifindex: 1,
        uplink_ifindex: 0,
    };
    // The overlay attaches first (as when the agent's overlay thread wins the race) ...
    let mut ovl = Overlay::load(ocfg).unwrap();
    assert_eq!(ovl.attach_tx("lxc0").unwrap(), "tcx");
    let cfg = ClusterIpConfig { pin_dir: fs.pin_dir(), hash_seed: SEED };
    let mut svc = ClusterIp::load(cfg.clone()).unwrap();
    assert_eq!(svc.attach("lxc0").unwrap(), ("tcx", "tcx"));
    let ovl_id = ovl.tx().unwrap().info().unwrap().id();
    let in_id = svc.prog_from_pod().unwrap().info().unwrap().id();
    let out_id = svc.prog_to_pod().unwrap().info().unwrap().id();
    // ... and the translation still runs before it.
    assert_eq!(tcx_chain("lxc0", TcAttachType::Ingress), vec![in_id, ovl_id]);
    assert_eq!(tcx_chain("lxc0", TcAttachType::Egress), vec![out_id]);

    // A restarted agent swaps new programs into the pinned links: same places.
    let mut again = ClusterIp::load(cfg).unwrap();
    assert_eq!(again.attach("lxc0").unwrap(), ("replaced", "replaced"));
    let in2 = again.prog_from_pod().unwrap().info().unwrap().id();
    assert_ne!(in2, in_id);
    assert_eq!(tcx_chain("lxc0", TcAttachType::Ingress), vec![in2, ovl_id]);
    drop(svc);
    drop(again);
    // The pins hold the links: nothing detached when the loader went away.
    assert_eq!(tcx_chain("lxc0", TcAttachType::Ingress).len(), 2);
}
