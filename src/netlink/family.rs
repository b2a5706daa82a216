//! What the kernel needs to know of an address family: the `AF_INET`/`AF_INET6` number a
//! request carries and how its addresses are spelled in netlink attributes. Every kernel object
//! has one code path for both families; this trait is where they differ.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use netlink_packet_route::neighbour::NeighbourAddress;
use netlink_packet_route::route::RouteAddress;
use netlink_packet_route::AddressFamily;

use crate::model::Family;

/// An address family as netlink spells it: implemented for `Ipv4Addr` and `Ipv6Addr`, the two
/// [`Family`] types.
pub trait KernelFamily: Family + Into<IpAddr> {
    /// `AF_INET` or `AF_INET6`, as a request's header carries it.
    const ADDRESS_FAMILY: AddressFamily;
    /// The lowest address: with [`KernelFamily::MAX`], the bounds of "any address" in an
    /// ordered set.
    const MIN: Self;
    /// The highest address.
    const MAX: Self;

    /// The address of this family in `ip`, if it is one.
    fn from_ip(ip: IpAddr) -> Option<Self>;

    /// The address in network byte order (4 or 16 bytes), as FDB dumps and nexthop attributes
    /// carry it; `None` for another length.
    fn from_bytes(bytes: &[u8]) -> Option<Self>;

    /// The prefix `address/prefix_len`; `None` for a length the family has no room for.
    fn network(address: Self, prefix_len: u8) -> Option<Self::Network>;

    /// Whether the kernel's nexthop `id`, with `gateway` (if it has one), is one weftd writes
    /// for a peer of the overlay `network`; then the gateway it has, unspecified when it has
    /// none of this family (the plan rewrites a nexthop of ours that points elsewhere).
    fn nexthop_of_network(id: u32, gateway: Option<IpAddr>, network: Self::Network) -> Option<Self>;

    /// The address as a route attribute carries it.
    fn route_address(self) -> RouteAddress {
        RouteAddress::from(self.into())
    }

    /// The address as a neighbour attribute carries it.
    fn neighbour_address(self) -> NeighbourAddress {
        match self.into() {
            IpAddr::V4(ip) => NeighbourAddress::Inet(ip),
            IpAddr::V6(ip) => NeighbourAddress::Inet6(ip),
        }
    }

    /// The address a route attribute carries, if it is of this family.
    fn from_route_address(address: &RouteAddress) -> Option<Self> {
        match address {
            RouteAddress::Inet(ip) => Self::from_ip(IpAddr::V4(*ip)),
            RouteAddress::Inet6(ip) => Self::from_ip(IpAddr::V6(*ip)),
            _ => None,
        }
    }

    /// The address a neighbour attribute carries, if it is of this family. FDB dumps carry it
    /// as raw bytes (`Other`): the bridge family has no IP address family of its own.
    fn from_neighbour_address(address: &NeighbourAddress) -> Option<Self> {
        match address {
            NeighbourAddress::Inet(ip) => Self::from_ip(IpAddr::V4(*ip)),
            NeighbourAddress::Inet6(ip) => Self::from_ip(IpAddr::V6(*ip)),
            NeighbourAddress::Other(bytes) => Self::from_bytes(bytes),
            _ => None,
        }
    }
}

impl KernelFamily for Ipv4Addr {
    const ADDRESS_FAMILY: AddressFamily = AddressFamily::Inet;
    const MIN: Self = Ipv4Addr::UNSPECIFIED;
    const MAX: Self = Ipv4Addr::BROADCAST;

    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        }
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 4]>::try_from(bytes).ok().map(Ipv4Addr::from)
    }

    fn network(address: Self, prefix_len: u8) -> Option<Ipv4Network> {
        Ipv4Network::new(address, prefix_len).ok()
    }

    /// An IPv4 id is the gateway's address (`nexthop_id`), so the id alone says whether it
    /// is ours, whatever gateway someone gave it by hand.
    fn nexthop_of_network(id: u32, gateway: Option<IpAddr>, network: Ipv4Network) -> Option<Self> {
        let gateway = gateway.and_then(Self::from_ip).unwrap_or(Ipv4Addr::UNSPECIFIED);
        network.contains(crate::model::nexthop_gateway(id)).then_some(gateway)
    }
}

impl KernelFamily for Ipv6Addr {
    const ADDRESS_FAMILY: AddressFamily = AddressFamily::Inet6;
    const MIN: Self = Ipv6Addr::UNSPECIFIED;
    const MAX: Self = Ipv6Addr::from_bits(u128::MAX);

    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        }
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(Ipv6Addr::from)
    }

    fn network(address: Self, prefix_len: u8) -> Option<Ipv6Network> {
        Ipv6Network::new(address, prefix_len).ok()
    }

    /// An IPv6 id keeps only 28 bits of its gateway, so the gateway must be there, in the
    /// overlay, and fold to the id. A nexthop of ours that someone pointed elsewhere is then
    /// another program's: its id is taken, and that peer's route names its gateway itself.
    fn nexthop_of_network(id: u32, gateway: Option<IpAddr>, network: Ipv6Network) -> Option<Self> {
        let gateway = Self::from_ip(gateway?)?;
        (network.contains(gateway) && crate::model::nexthop_id(gateway) == id).then_some(gateway)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_in_their_family_only() {
        let v6: Ipv6Addr = "fd00:5:1::".parse().unwrap();
        assert_eq!(Ipv6Addr::from_neighbour_address(&NeighbourAddress::Other(v6.octets().to_vec())), Some(v6));
        assert_eq!(Ipv4Addr::from_neighbour_address(&NeighbourAddress::Other(v6.octets().to_vec())), None);
        assert_eq!(Ipv4Addr::from_route_address(&v6.route_address()), None);
        assert_eq!(Ipv6Addr::from_route_address(&v6.route_address()), Some(v6));
        assert_eq!(Ipv6Addr::network(v6, 129), None);
    }

    #[test]
    fn a_nexthop_is_ours_by_its_id_and_gateway() {
        let network: Ipv6Network = "fd00:5::/32".parse().unwrap();
        let gateway: Ipv6Addr = "fd00:5:1::".parse().unwrap();
        let id = crate::model::nexthop_id(gateway);
        assert_eq!(Ipv6Addr::nexthop_of_network(id, Some(gateway.into()), network), Some(gateway));
        assert_eq!(Ipv6Addr::nexthop_of_network(id + 1, Some(gateway.into()), network), None, "another id");
        assert_eq!(Ipv6Addr::nexthop_of_network(id, None, network), None, "no gateway to check the id against");
        let outside: Ipv6Addr = "fd01::".parse().unwrap();
        assert_eq!(Ipv6Addr::nexthop_of_network(crate::model::nexthop_id(outside), Some(outside.into()), network), None);
        let v4: Ipv4Network = "10.5.0.0/16".parse().unwrap();
        let id = u32::from(Ipv4Addr::new(10, 5, 3, 0));
        assert_eq!(Ipv4Addr::nexthop_of_network(id, None, v4), Some(Ipv4Addr::UNSPECIFIED), "ours, to be rewritten");
        let elsewhere = IpAddr::V4(Ipv4Addr::new(10, 5, 9, 0));
        assert_eq!(Ipv4Addr::nexthop_of_network(id, Some(elsewhere), v4), Some(Ipv4Addr::new(10, 5, 9, 0)));
    }
}
