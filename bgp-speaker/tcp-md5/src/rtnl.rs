//! A small rtnetlink client for unicast routes: replace, delete and dump routes of one protocol
//! in one table, many per `send` (RFC 3549; message layouts from linux/rtnetlink.h and
//! linux/netlink.h).
//!
//! Every request asks for an acknowledgement, and the kernel's extended ack message (for
//! example "Nexthop has invalid gateway") is part of the returned error. Requests go out in
//! batches of up to [`BATCH_BYTES`]; each batch's acks are read before the next batch, so the
//! socket's receive buffer never overflows.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ipnet::IpNet;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
/// Set on an NLMSG_ERROR that carries extended-ack attributes.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;

const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTN_UNICAST: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_TABLE_UNSPEC: u8 = 0;

const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
/// Requests per `send`.
pub const BATCH_BYTES: usize = 64 * 1024;

/// One route of ours: destination, gateway, table, metric and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: IpAddr,
}

/// Where our routes live and how they are marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub table: u32,
    pub protocol: u8,
    pub metric: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Replace(Route),
    Delete(IpNet),
}

#[derive(Debug)]
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

fn family(dst: &IpNet) -> u8 {
    match dst {
        IpNet::V4(_) => libc::AF_INET as u8,
        IpNet::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// Attributes of an rtnetlink message body from `off`: (type, payload).
fn attrs(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 4 > body.len() {
            return None;
        }
        let len = u16::from_ne_bytes([body[off], body[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([body[off + 2], body[off + 3]]) & 0x3fff;
        if len < 4 || off + len > body.len() {
            return None;
        }
        let data = &body[off + 4..off + len];
        off += align4(len);
        Some((kind, data))
    })
}

fn addr_of(data: &[u8]) -> Option<IpAddr> {
    match data.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
        _ => None,
    }
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        #[allow(unsafe_code)]
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(unsafe_code)]
        // SAFETY: `raw` is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Self::setup(fd)
    }

    fn setup(fd: OwnedFd) -> io::Result<Rtnl> {
        let one: libc::c_int = 1;
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK, NETLINK_GET_STRICT_CHK] {
            #[allow(unsafe_code)]
            // SAFETY: setsockopt with a pointer to a live c_int and its size. Failure only loses
            // detail (older kernels), so it is ignored.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        #[allow(unsafe_code)]
        // SAFETY: a zeroed sockaddr_nl is valid (pid 0: the kernel picks one).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        #[allow(unsafe_code)]
        // SAFETY: `sa` is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Rtnl { fd, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Appends one route request to `buf`; returns its sequence number.
    fn encode(&mut self, buf: &mut Vec<u8>, op: &Op, owner: &Owner) -> u32 {
        let seq = self.next_seq();
        let start = buf.len();
        let (kind, flags, dst) = match op {
            Op::Replace(r) => (RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, r.dst),
            Op::Delete(d) => (RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, *d),
        };
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        // struct rtmsg
        let table8 = if owner.table < 256 { owner.table as u8 } else { RT_TABLE_UNSPEC };
        buf.extend_from_slice(&[
            family(&dst),
            dst.prefix_len(),
            0,
            0,
            table8,
            owner.protocol,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ]);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        put_attr(buf, RTA_TABLE, &owner.table.to_ne_bytes());
        put_attr(buf, RTA_DST, &ip_bytes(&dst.network()));
        if let Op::Replace(r) = op {
            // A delete names no metric: it removes our route for the prefix whatever its
            // metric (an earlier run may have used another).
            put_attr(buf, RTA_PRIORITY, &owner.metric.to_ne_bytes());
            match (dst, r.gateway) {
                (IpNet::V4(_), IpAddr::V6(g)) => {
                    // RFC 8950: an IPv4 route through an IPv6 next hop (struct rtvia).
                    let mut via = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
                    via.extend_from_slice(&g.octets());
                    put_attr(buf, RTA_VIA, &via);
                }
                (_, g) => put_attr(buf, RTA_GATEWAY, &ip_bytes(&g)),
            }
        }
        let len = (buf.len() - start) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        seq
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        #[allow(unsafe_code)]
        // SAFETY: a zeroed sockaddr_nl is valid; pid 0 addresses the kernel.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        #[allow(unsafe_code)]
        // SAFETY: `sa` and `buf` are live for the call and their lengths are the ones passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                0,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(())
    }

    /// Reads one datagram (many netlink messages).
    fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        buf.resize(256 * 1024, 0);
        loop {
            #[allow(unsafe_code)]
            // SAFETY: reads into a live buffer of the given length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Ok(n as usize);
        }
    }

    /// Runs `ops`; the result of each, in order. Errors carry the kernel's message when it gave
    /// one. A failure of the socket itself fails the whole call.
    pub fn apply(&mut self, ops: &[Op], owner: &Owner) -> io::Result<Vec<Result<(), String>>> {
        let mut results = Vec::with_capacity(ops.len());
        let mut buf = Vec::with_capacity(BATCH_BYTES + 256);
        let mut rx = Vec::new();
        let mut i = 0;
        while i < ops.len() {
            buf.clear();
            let mut seqs = Vec::new();
            while i < ops.len() && buf.len() < BATCH_BYTES {
                seqs.push(self.encode(&mut buf, &ops[i], owner));
                i += 1;
            }
            self.send(&buf)?;
            let mut done: std::collections::HashMap<u32, Result<(), String>> = Default::default();
            while done.len() < seqs.len() {
                let n = self.recv(&mut rx)?;
                let mut off = 0;
                while off + NLMSG_HDRLEN <= n {
                    let len = u32::from_ne_bytes(rx[off..off + 4].try_into().unwrap()) as usize;
                    let kind = u16::from_ne_bytes([rx[off + 4], rx[off + 5]]);
                    let flags = u16::from_ne_bytes([rx[off + 6], rx[off + 7]]);
                    let seq = u32::from_ne_bytes(rx[off + 8..off + 12].try_into().unwrap());
                    if len < NLMSG_HDRLEN || off + len > n {
                        break;
                    }
                    if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
                        let body = &rx[off + NLMSG_HDRLEN..off + len];
                        let errno = -i32::from_ne_bytes(body[0..4].try_into().unwrap());
                        let res = if errno == 0 {
                            Ok(())
                        } else {
                            let mut msg = io::Error::from_raw_os_error(errno).to_string();
                            // With NETLINK_CAP_ACK the request is not echoed: the TLVs follow
                            // struct nlmsgerr (error + the request's header).
                            if flags & NLM_F_ACK_TLVS != 0 && body.len() > 4 + NLMSG_HDRLEN {
                                for (k, v) in attrs(&body[4 + NLMSG_HDRLEN..]) {
                                    if k == NLMSGERR_ATTR_MSG {
                                        let text = String::from_utf8_lossy(v);
                                        msg = format!("{}: {msg}", text.trim_end_matches('\0'));
                                    }
                                }
                            }
                            Err(msg)
                        };
                        done.insert(seq, res);
                    }
                    off += align4(len);
                }
            }
            for s in seqs {
                results.push(done.remove(&s).unwrap_or(Err("no acknowledgement".into())));
            }
        }
        Ok(results)
    }

    /// The routes of `owner` (its table and protocol) in the kernel, both families, each with
    /// its metric.
    pub fn dump(&mut self, owner: &Owner) -> io::Result<Vec<(Route, u32)>> {
        let mut out = Vec::new();
        for fam in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            let seq = self.next_seq();
            let mut buf = Vec::new();
            buf.extend_from_slice(&((NLMSG_HDRLEN + RTMSG_LEN) as u32).to_ne_bytes());
            buf.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
            buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&[fam, 0, 0, 0, 0, 0, 0, 0]);
            buf.extend_from_slice(&0u32.to_ne_bytes());
            self.send(&buf)?;
            let mut rx = Vec::new();
            'dump: loop {
                let n = self.recv(&mut rx)?;
                let mut off = 0;
                while off + NLMSG_HDRLEN <= n {
                    let len = u32::from_ne_bytes(rx[off..off + 4].try_into().unwrap()) as usize;
                    let kind = u16::from_ne_bytes([rx[off + 4], rx[off + 5]]);
                    let mseq = u32::from_ne_bytes(rx[off + 8..off + 12].try_into().unwrap());
                    if len < NLMSG_HDRLEN || off + len > n {
                        break;
                    }
                    let body = &rx[off + NLMSG_HDRLEN..off + len];
                    off += align4(len);
                    if mseq != seq {
                        continue;
                    }
                    match kind {
                        NLMSG_DONE => break 'dump,
                        NLMSG_ERROR => {
                            let errno = -i32::from_ne_bytes(body[0..4].try_into().unwrap_or([0; 4]));
                            if errno != 0 {
                                return Err(io::Error::from_raw_os_error(errno));
                            }
                            break 'dump;
                        }
                        RTM_NEWROUTE if body.len() >= RTMSG_LEN => {
                            if let Some(r) = parse_route(body, owner) {
                                out.push(r);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A dumped RTM_NEWROUTE body, if it is one of `owner`'s unicast routes with a gateway; with
/// its metric.
fn parse_route(body: &[u8], owner: &Owner) -> Option<(Route, u32)> {
    let (fam, dst_len, table8, proto, kind) = (body[0], body[1], body[4], body[5], body[7]);
    if proto != owner.protocol || kind != RTN_UNICAST {
        return None;
    }
    let mut table = table8 as u32;
    let mut dst = None;
    let mut gateway = None;
    let mut metric = 0;
    for (k, v) in attrs(&body[RTMSG_LEN..]) {
        match k {
            RTA_PRIORITY if v.len() == 4 => metric = u32::from_ne_bytes(v.try_into().ok()?),
            RTA_TABLE if v.len() == 4 => table = u32::from_ne_bytes(v.try_into().ok()?),
            RTA_DST => dst = addr_of(v),
            RTA_GATEWAY => gateway = addr_of(v),
            RTA_VIA if v.len() >= 2 => gateway = addr_of(&v[2..]),
            _ => {}
        }
    }
    if table != owner.table {
        return None;
    }
    let dst = dst.unwrap_or(if fam == libc::AF_INET6 as u8 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    });
    Some((Route { dst: IpNet::new(dst, dst_len).ok()?, gateway: gateway? }, metric))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_has_the_rtnetlink_layout() {
        let mut r = Rtnl { fd: std::fs::File::open("/dev/null").unwrap().into(), seq: 6 };
        let owner = Owner { table: 1000, protocol: 73, metric: 20 };
        let mut buf = Vec::new();
        let route = Route { dst: "10.1.2.0/24".parse().unwrap(), gateway: "192.0.2.1".parse().unwrap() };
        let seq = r.encode(&mut buf, &Op::Replace(route), &owner);
        assert_eq!(seq, 7);
        // nlmsghdr (16) + rtmsg (12) + RTA_TABLE (8) + RTA_DST (8) + RTA_PRIORITY (8) + RTA_GATEWAY (8)
        assert_eq!(buf.len(), 60);
        assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()), 60);
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), RTM_NEWROUTE);
        assert_eq!(u16::from_ne_bytes([buf[6], buf[7]]), 0x1 | 0x4 | 0x400 | 0x100);
        // family, dst_len, src_len, tos, table (unspec: > 255 goes in RTA_TABLE), protocol, scope, type
        assert_eq!(&buf[16..24], &[2, 24, 0, 0, 0, 73, 0, 1]);
        let a: Vec<(u16, Vec<u8>)> = attrs(&buf[28..]).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(a[0], (RTA_TABLE, 1000u32.to_ne_bytes().to_vec()));
        assert_eq!(a[1], (RTA_DST, vec![10, 1, 2, 0]));
        assert_eq!(a[2], (RTA_PRIORITY, 20u32.to_ne_bytes().to_vec()));
        assert_eq!(a[3], (RTA_GATEWAY, vec![192, 0, 2, 1]));
        // The parser reads back what the encoder wrote.
        let parsed = parse_route(&buf[16..], &owner).unwrap();
        assert_eq!(parsed, (route, 20));
        // A delete carries no metric and no gateway.
        let mut del = Vec::new();
        r.encode(&mut del, &Op::Delete(route.dst), &owner);
        assert_eq!(u16::from_ne_bytes([del[4], del[5]]), RTM_DELROUTE);
        let kinds: Vec<u16> = attrs(&del[28..]).map(|(k, _)| k).collect();
        assert_eq!(kinds, vec![RTA_TABLE, RTA_DST]);
        // An IPv4 route through an IPv6 next hop uses RTA_VIA (family + address).
        let mut buf = Vec::new();
        let via = Route { dst: "10.9.0.0/16".parse().unwrap(), gateway: "fd00::1".parse().unwrap() };
        r.encode(&mut buf, &Op::Replace(via), &owner);
        let a: Vec<(u16, Vec<u8>)> = attrs(&buf[28..]).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(a[3].0, RTA_VIA);
        assert_eq!(&a[3].1[0..2], &(libc::AF_INET6 as u16).to_ne_bytes());
        assert_eq!(parse_route(&buf[16..], &owner).unwrap(), (via, 20));
        // Another protocol's route is not ours.
        assert_eq!(parse_route(&buf[16..], &Owner { protocol: 186, ..owner }), None);
    }
}
