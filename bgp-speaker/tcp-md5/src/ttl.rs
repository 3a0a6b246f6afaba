//! The socket calls BFD and BGP need that `std` lacks: receiving a datagram with its TTL / Hop
//! Limit (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`, `recvmsg` control messages), setting the outgoing
//! TTL / Hop Limit of both families on one socket, and the minimum TTL / Hop Limit the kernel
//! accepts (`IP_MINTTL`, `IPV6_MINHOPCOUNT`), for BFD's TTL check (RFC 5881 §5) and GTSM
//! (RFC 5082 §3). Each `unsafe` block says why it is sound.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

pub(crate) fn set_int(sock: &impl AsFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
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

pub(crate) fn get_int(sock: &impl AsFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    #[allow(unsafe_code)]
    // SAFETY: `value` and `len` are live locals for the duration of the call; `len` holds the
    // size of `value`, so the kernel writes at most that many bytes into it (and updates `len`).
    // The fd is borrowed, so it is open.
    let rc = unsafe { libc::getsockopt(sock.as_fd().as_raw_fd(), level, name, (&raw mut value).cast(), &raw mut len) };
    if rc == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}

/// Sets the TTL of the packets a TCP or UDP socket sends (`IP_TTL`; on an IPv6 socket also
/// `IPV6_UNICAST_HOPS`). An IPv6 socket carries IPv4 traffic for v4-mapped peers, and that
/// uses the IPv4 option, so both are set there (Linux accepts `IPPROTO_IP` options on IPv6 TCP
/// sockets). Set it before `connect` to cover the SYN; a listening socket passes it to the
/// sockets it accepts and uses it for its SYN-ACKs.
pub fn set_ttl(sock: &impl AsFd, ipv6: bool, ttl: u8) -> io::Result<()> {
    set_int(sock, libc::IPPROTO_IP, libc::IP_TTL, libc::c_int::from(ttl))?;
    if ipv6 {
        set_unicast_hops_v6(sock, ttl)?;
    }
    Ok(())
}

/// GTSM (RFC 5082 §3): the kernel drops every received packet whose TTL (`IP_MINTTL`) or, on an
/// IPv6 socket, Hop Limit (`IPV6_MINHOPCOUNT`, and `IP_MINTTL` for v4-mapped peers) is below
/// `min`, before TCP sees it. 0 turns the check off. On a listening socket it applies to the
/// SYNs it receives and is inherited by the sockets it accepts.
pub fn set_min_ttl(sock: &impl AsFd, ipv6: bool, min: u8) -> io::Result<()> {
    set_int(sock, libc::IPPROTO_IP, libc::IP_MINTTL, libc::c_int::from(min))?;
    if ipv6 {
        set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, libc::c_int::from(min))?;
    }
    Ok(())
}

/// The minimum TTL set with [`set_min_ttl`] (`IP_MINTTL`; on an IPv6 socket the smaller of it
/// and `IPV6_MINHOPCOUNT`).
pub fn min_ttl(sock: &impl AsFd, ipv6: bool) -> io::Result<u8> {
    let mut v = get_int(sock, libc::IPPROTO_IP, libc::IP_MINTTL)?;
    if ipv6 {
        v = v.min(get_int(sock, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT)?);
    }
    Ok(u8::try_from(v).unwrap_or(0))
}

/// The TTL the socket sends with (`IP_TTL`; on an IPv6 socket `IPV6_UNICAST_HOPS`).
pub fn ttl(sock: &impl AsFd, ipv6: bool) -> io::Result<u8> {
    let v = if ipv6 {
        get_int(sock, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)?
    } else {
        get_int(sock, libc::IPPROTO_IP, libc::IP_TTL)?
    };
    Ok(u8::try_from(v).unwrap_or(0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_min_ttl_on_real_sockets() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_ttl(&v4, false, 1).unwrap();
        assert_eq!(ttl(&v4, false).unwrap(), 1);
        assert_eq!(min_ttl(&v4, false).unwrap(), 0);
        set_min_ttl(&v4, false, 254).unwrap();
        assert_eq!(min_ttl(&v4, false).unwrap(), 254);
        set_min_ttl(&v4, false, 0).unwrap();
        assert_eq!(min_ttl(&v4, false).unwrap(), 0);
        // IPv6 options on an IPv4 socket are refused.
        set_min_ttl(&v4, true, 255).unwrap_err();

        let Ok(v6) = std::net::TcpListener::bind("[::1]:0") else { return }; // no IPv6 here
        set_ttl(&v6, true, 255).unwrap();
        assert_eq!(ttl(&v6, true).unwrap(), 255);
        assert_eq!(ttl(&v6, false).unwrap(), 255, "IP_TTL too, for v4-mapped peers");
        set_min_ttl(&v6, true, 255).unwrap();
        assert_eq!(min_ttl(&v6, true).unwrap(), 255);
    }

    #[test]
    fn gtsm_drops_segments_below_the_minimum_on_loopback() {
        // Loopback delivers with the sender's TTL: 64 by default. A listener wanting 255 never
        // sees the SYN, so the connection times out; one wanting 64 accepts it.
        let strict = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_min_ttl(&strict, false, 255).unwrap();
        let addr = strict.local_addr().unwrap();
        let c = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300));
        assert!(c.is_err(), "a SYN with TTL 64 passed a minimum of 255");

        let ok = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_min_ttl(&ok, false, 64).unwrap();
        std::net::TcpStream::connect_timeout(&ok.local_addr().unwrap(), std::time::Duration::from_secs(2)).unwrap();
    }
}
