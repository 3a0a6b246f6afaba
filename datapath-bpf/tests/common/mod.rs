//! Shared by the datapath's privileged tests: a private bpffs, packet builders, checksums.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Skips (returns None) unless root: loading BPF needs CAP_BPF/CAP_NET_ADMIN. CI runs as root.
pub fn require_root(test: &str) -> Option<()> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).unwrap_or("1").to_string())
        })
        .unwrap_or_default();
    if uid == "0" {
        Some(())
    } else {
        eprintln!("SKIP {test}: needs root (loads BPF programs)");
        None
    }
}

/// A bpffs mounted on a fresh temporary directory, unmounted and removed on drop.
#[derive(Debug)]
pub struct Bpffs {
    pub dir: PathBuf,
}

impl Bpffs {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("halyard-bpffs-{tag}-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir).status().unwrap();
        assert!(st.success(), "mount -t bpf on {}", dir.display());
        Self { dir }
    }
    pub fn pin_dir(&self) -> PathBuf {
        self.dir.join("halyard")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn is_dir(p: &Path) -> bool {
    p.is_dir()
}

/// RFC 1071 checksum over `data`.
pub fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const NH_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

/// A 20-byte IPv4 header with a correct checksum.
pub fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize, frag_off: u16) -> Vec<u8> {
    let mut ip = vec![0x45, 0x00];
    ip.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34]);
    ip.extend_from_slice(&frag_off.to_be_bytes());
    ip.extend_from_slice(&[64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

/// Ethernet + IPv4 + TCP (SYN, no options) + `payload`.
pub fn tcp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    tcp_packet_flags(src, sport, dst, dport, 0x02, payload)
}

/// Ethernet + IPv4 + TCP with the given flags (no options) + `payload`.
pub fn tcp_packet_flags(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&1u32.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let c = csum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    frame(ipv4_header(src, dst, 6, tcp.len(), 0), &tcp)
}

pub fn udp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    frame(ipv4_header(src, dst, 17, udp.len(), 0), &udp)
}

pub fn frame(ip: Vec<u8>, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// Runs `prog` once on `pkt` under BPF_PROG_TEST_RUN (output room: the packet plus 256 bytes
/// for encapsulation): its return value and the packet it left.
pub fn test_run<P>(prog: &P, pkt: &[u8]) -> (u32, Vec<u8>)
where
    P: for<'a> aya::programs::TestRun<Opts<'a> = aya::programs::TestRunOptions<'a>, Result = aya::TestRunResult>,
{
    let mut out = vec![0u8; pkt.len() + 256];
    let mut opts = aya::programs::TestRunOptions::new();
    opts.data_in = Some(pkt);
    opts.data_out = Some(&mut out);
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}
