//! The two address families as types: what an entry needs to know of its family (its network
//! type, the host prefix, how a gateway becomes a nexthop id), so the entries are written once
//! and an IPv6 entry is the same type with another parameter.
//!
//! Sealed: weft's rules (the nexthop id space above all) are decided for these two families
//! only, so no other crate may add a third.

use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::Ipv4Addr {}
    impl Sealed for std::net::Ipv6Addr {}
    impl Sealed for ipnetwork::Ipv4Network {}
    impl Sealed for ipnetwork::Ipv6Network {}
}

/// An address family, named by its address type (`Ipv4Addr` or `Ipv6Addr`).
pub trait Family: sealed::Sealed + Copy + Ord + Hash + Debug + Display + Send + Sync + 'static {
    /// The family's prefix type: `Ipv4Network` or `Ipv6Network`.
    type Network: Subnet<Addr = Self>;

    /// The prefix length of one host, in bits: 32 or 128 (a VTEP address is assigned as one).
    const HOST_PREFIX: u8;

    /// The family's name where a report names it: `ipv4` or `ipv6` (the `family` label of
    /// weftd's metrics, the keys of `weftd status --json`).
    const NAME: &'static str;

    /// The id weftd gives the nexthop for this gateway; `nexthop_id` in the `names` module says
    /// which id space each family has.
    fn nexthop_id(self) -> u32;

    /// Why VXLAN packets cannot be sent to this address as a peer's public address (loopback,
    /// unspecified, multicast, broadcast, link-local, IPv4-mapped), in words; `None` if they can.
    fn unreachable_as_peer(self) -> Option<&'static str>;
}

/// A prefix of one family, named by its network type (`Ipv4Network` or `Ipv6Network`).
pub trait Subnet: sealed::Sealed + Copy + Ord + Hash + Debug + Display + Send + Sync + 'static {
    /// The family's address type.
    type Addr: Family<Network = Self>;

    /// The first address of the prefix (`10.5.52.0` for `10.5.52.0/24`).
    fn network_address(self) -> Self::Addr;

    /// The address as written, host bits kept (`10.5.52.1` for a key `10.5.52.1-24`).
    fn written_address(self) -> Self::Addr;

    /// Whether `ip` is inside the prefix.
    fn holds(self, ip: Self::Addr) -> bool;

    /// The prefix length, in bits.
    fn prefix_len(self) -> u8;
}

/// The first IPv6 nexthop id: ids from here to `0xEFFF_FFFF` are the IPv6 ones. In IPv4 terms
/// they name 224.0.0.0/4, multicast, which the kernel refuses as a nexthop's gateway ("Nexthop
/// has invalid gateway"), so no IPv4 nexthop weftd writes (or ever wrote) has one of them.
pub const IPV6_NEXTHOP_IDS: u32 = 0xE000_0000;

/// The bits an IPv6 nexthop id keeps of its gateway: 28.
const IPV6_NEXTHOP_BITS: u32 = 28;

impl Family for Ipv4Addr {
    type Network = Ipv4Network;
    const HOST_PREFIX: u8 = 32;
    const NAME: &'static str = "ipv4";

    fn nexthop_id(self) -> u32 {
        u32::from(self)
    }

    fn unreachable_as_peer(self) -> Option<&'static str> {
        match self {
            ip if ip.is_loopback() => Some("is a loopback address"),
            ip if ip.is_unspecified() => Some("is the unspecified address"),
            ip if ip.is_broadcast() => Some("is the broadcast address"),
            ip if ip.is_multicast() => Some("is a multicast address"),
            _ => None,
        }
    }
}

impl Family for Ipv6Addr {
    type Network = Ipv6Network;
    const HOST_PREFIX: u8 = 128;
    const NAME: &'static str = "ipv6";

    /// The 128 bits folded by XOR into 28 (in 28-bit pieces from the low end), in the IPv6
    /// range. Two gateways that differ only within 28 contiguous bits (the subnets of one IPv6
    /// network with at most 2^28 of them) fold to different ids: the two pieces such a window
    /// can touch land on disjoint bits of the fold.
    fn nexthop_id(self) -> u32 {
        let mut bits = u128::from(self);
        let mut folded = 0u32;
        while bits != 0 {
            // Truncation is the point: the low 28 bits of what is left.
            folded ^= (bits as u32) & ((1 << IPV6_NEXTHOP_BITS) - 1);
            bits >>= IPV6_NEXTHOP_BITS;
        }
        IPV6_NEXTHOP_IDS | folded
    }

    fn unreachable_as_peer(self) -> Option<&'static str> {
        match self {
            ip if ip.is_loopback() => Some("is a loopback address"),
            ip if ip.is_unspecified() => Some("is the unspecified address"),
            ip if ip.is_multicast() => Some("is a multicast address"),
            // fe80::/10: valid only with an interface, which a lease cannot name.
            ip if ip.is_unicast_link_local() => Some("is a link-local address"),
            ip if ip.to_ipv4_mapped().is_some() => Some("is an IPv4-mapped address"),
            _ => None,
        }
    }
}

/// `Subnet` for a network type of `ipnetwork`, whose methods of these names it forwards to.
macro_rules! subnet {
    ($network:ty, $addr:ty) => {
        impl Subnet for $network {
            type Addr = $addr;

            fn network_address(self) -> $addr {
                self.network()
            }

            fn written_address(self) -> $addr {
                self.ip()
            }

            fn holds(self, ip: $addr) -> bool {
                self.contains(ip)
            }

            fn prefix_len(self) -> u8 {
                self.prefix()
            }
        }
    };
}

subnet!(Ipv4Network, Ipv4Addr);
subnet!(Ipv6Network, Ipv6Addr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_nexthop_ids_stay_in_their_range_and_apart() {
        let network: Ipv6Network = "fd00:5::/48".parse().unwrap();
        let gateway = |n: u16| Ipv6Addr::from(u128::from(network.network()) | (u128::from(n) << 64));
        let ids: std::collections::BTreeSet<u32> = (0..=u16::MAX).map(|n| gateway(n).nexthop_id()).collect();
        assert_eq!(ids.len(), 65_536, "every /64 of a /48 has its own id");
        assert!(ids.iter().all(|id| id & 0xF000_0000 == IPV6_NEXTHOP_IDS), "all in 224.0.0.0/4's ids");
        let multicast = |id: u32| Ipv4Addr::from(id).is_multicast();
        assert!(ids.iter().all(|id| multicast(*id)));
        assert!(!multicast(Ipv4Addr::new(10, 5, 3, 0).nexthop_id()), "IPv4 ids are the address, unchanged");
    }

    #[test]
    fn ipv6_nexthop_ids_differ_across_a_28_bit_window_that_straddles_two_pieces() {
        let base = u128::from("fd00::".parse::<Ipv6Addr>().unwrap());
        // Bits 70..98: pieces 56..84 and 84..112 of the fold.
        let ids: std::collections::BTreeSet<u32> =
            (0..4096u128).map(|n| Ipv6Addr::from(base | (n * 0x1_0003) << 70).nexthop_id()).collect();
        assert_eq!(ids.len(), 4096);
    }
}
