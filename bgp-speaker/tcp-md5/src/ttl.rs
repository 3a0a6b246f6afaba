//! The socket calls BFD needs that `std` lacks: receiving a datagram with its TTL / Hop Limit
//! (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`, `recvmsg` control messages) and setting the IPv6 Hop
//! Limit, for BFD's TTL check (RFC 5881 §5) and GTSM (RFC 5082). Each `unsafe` block says why
//! it is sound.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

fn set_int(sock: &impl AsFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `value` is a live c_int for the duration of the call and its exact size is passed;
    // the kernel only reads from the pointer. The fd is borrowed, so it is open.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Asks for the TTL (IPv4) and Hop Limit (IPv6) of every received datagram as a control message.
/// On an IPv6 socket both are set: IPv4 packets reach a dual-stack socket as v4-mapped addresses
/// and carry `IP_TTL`, IPv6 packets carry `IPV6_HOPLIMIT`.
pub fn set_recv_ttl(sock: &impl AsFd, ipv6: bool) -> io::Result<()> {
    set_int(sock, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
    if ipv6 {
        set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
    }
    Ok(())
}

/// `IPV6_UNICAST_HOPS` (std only has the IPv4 `IP_TTL`).
pub fn set_unicast_hops_v6(sock: &impl AsFd, hops: u8) -> io::Result<()> {
    set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, libc::c_int::from(hops))
}

/// One datagram from a non-blocking socket: its length, source, and TTL / Hop Limit (`None`
/// when the kernel gave none: the socket lacks [`set_recv_ttl`]). `WouldBlock` when none waits.
pub fn recv_with_ttl(sock: &impl AsFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // Control buffer, 8-byte aligned as cmsghdr requires; room for two int-sized messages.
    let mut control = [0u64; 16];
    #[allow(unsafe_code)]
    // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    #[allow(unsafe_code)]
    // SAFETY: msghdr is plain old data (pointers may be null); all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>() as _;
    #[allow(unsafe_code)]
    // SAFETY: every pointer in `msg` points into a live local (`addr`, `iov`, `control`) or into
    // `buf`, with the matching length; the kernel writes at most those lengths.
    let n = unsafe { libc::recvmsg(sock.as_fd().as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = sockaddr_to_std(&addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address"))?;
    let mut ttl = None;
    #[allow(unsafe_code)]
    // SAFETY: `msg` was filled by recvmsg above; CMSG_FIRSTHDR / CMSG_NXTHDR stay within
    // msg_control[..msg_controllen] (they return null at the end), and we read a c_int of data
    // only when cmsg_len says the message holds one. `control` outlives the loop.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let hdr = &*cmsg;
            let is_ttl = (hdr.cmsg_level == libc::IPPROTO_IP && hdr.cmsg_type == libc::IP_TTL)
                || (hdr.cmsg_level == libc::IPPROTO_IPV6 && hdr.cmsg_type == libc::IPV6_HOPLIMIT);
            if is_ttl && hdr.cmsg_len as usize >= libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize {
                let v = libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned();
                ttl = u8::try_from(v).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((n as usize, from, ttl))
}

fn sockaddr_to_std(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // The family decides the layout; the fields are read from the storage's bytes (no casts).
    #[allow(unsafe_code)]
    // SAFETY: sockaddr_storage is plain old data of exactly this size; viewing it as bytes is
    // sound (every byte was initialised: zeroed, then written by the kernel).
    let b: &[u8] = unsafe {
        std::slice::from_raw_parts(
            (addr as *const libc::sockaddr_storage).cast::<u8>(),
            size_of::<libc::sockaddr_storage>(),
        )
    };
    let port = u16::from_be_bytes([b[2], b[3]]);
    match libc::c_int::from(addr.ss_family) {
        libc::AF_INET => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])), port)),
        libc::AF_INET6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}
