//! Socket calls std lacks, for BGP and BFD. The TCP MD5 signature option (RFC 2385), Linux
//! `TCP_MD5SIG` (`include/uapi/linux/tcp.h`: `struct tcp_md5sig`).
//!
//! Set the key for a peer address on a socket *before* `connect` (dialling out) or on the
//! listening socket (accepting): the kernel then signs every segment to and from that address,
//! and silently drops unsigned or wrongly signed ones.
//!
//! [`ttl`]: receiving datagrams with their TTL / Hop Limit, setting the outgoing TTL / Hop Limit
//! and the minimum accepted one (GTSM, RFC 5082).
//!
//! [`rtnl`]: installing, removing and listing routes over rtnetlink (for BGP import).

pub mod rtnl;
pub mod ttl;

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// `TCP_MD5SIG_MAXKEYLEN`.
pub const MAX_KEY_LEN: usize = 80;

/// Mirror of the kernel's `struct tcp_md5sig` (216 bytes on every Linux architecture).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MAX_KEY_LEN],
}

/// Sets (or, with an empty `key`, removes) the MD5 key for `peer` on `socket`.
pub fn set_md5_key(socket: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key is {} bytes; the kernel takes at most {MAX_KEY_LEN}", key.len()),
        ));
    }
    let mut sig = TcpMd5Sig {
        // An all-zero sockaddr_storage is a valid (AF_UNSPEC) value; the address is written below.
        addr: sockaddr_zeroed(),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    write_addr(&mut sig.addr, peer);
    #[allow(unsafe_code)]
    // SAFETY: `sig` is a properly initialised `struct tcp_md5sig` that lives across the call, its
    // size is passed as the option length, and the kernel only reads from the pointer.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// `TCP_USER_TIMEOUT` (RFC 5482 §2, Linux `tcp(7)`): the connection fails when sent data stays
/// unacknowledged for `ms` milliseconds (0: the kernel default, about 15 minutes of
/// retransmissions).
pub fn set_user_timeout(socket: &impl std::os::fd::AsFd, ms: u32) -> io::Result<()> {
    let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
    ttl::set_int(socket, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

/// The `TCP_USER_TIMEOUT` in milliseconds.
pub fn user_timeout(socket: &impl std::os::fd::AsFd) -> io::Result<u32> {
    ttl::get_int(socket, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT).map(|v| u32::try_from(v).unwrap_or(0))
}

fn sockaddr_zeroed() -> libc::sockaddr_storage {
    #[allow(unsafe_code)]
    // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
    unsafe {
        std::mem::zeroed()
    }
}

/// Writes `ip` into a sockaddr_storage as `sockaddr_in` / `sockaddr_in6` (port 0).
fn write_addr(storage: &mut libc::sockaddr_storage, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.octets()) },
                sin_zero: [0; 8],
            };
            copy_into(storage, &sin);
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.octets() },
                sin6_scope_id: 0,
            };
            copy_into(storage, &sin6);
        }
    }
}

fn copy_into<T>(storage: &mut libc::sockaddr_storage, value: &T) {
    assert!(std::mem::size_of::<T>() <= std::mem::size_of::<libc::sockaddr_storage>());
    #[allow(unsafe_code)]
    // SAFETY: T (sockaddr_in or sockaddr_in6) fits in sockaddr_storage (asserted above), both
    // are plain old data, and the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (value as *const T).cast::<u8>(),
            (storage as *mut libc::sockaddr_storage).cast::<u8>(),
            std::mem::size_of::<T>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_matches_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn keys_are_set_on_real_sockets_and_bounded() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_md5_key(&l, "127.0.0.2".parse().unwrap(), b"secret").unwrap();
        set_md5_key(&l, "::1".parse().unwrap(), b"secret").unwrap_err(); // v6 peer on a v4 socket
        let e = set_md5_key(&l, "127.0.0.2".parse().unwrap(), &[b'x'; 81]).unwrap_err();
        assert!(e.to_string().contains("at most 80"));
    }

    #[test]
    fn user_timeout_is_set() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_user_timeout(&l, 9000).unwrap();
        assert_eq!(user_timeout(&l).unwrap(), 9000);
    }
}
