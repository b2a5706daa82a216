//! The rules that name things, each written once: the VTEP address of a subnet, the nexthop
//! id of a gateway, the device of a VNI, and the MAC a new device gets. The kernel side
//! (`netlink`) recognises our entries by these same rules, so it never re-derives them.

use std::net::Ipv4Addr;

use super::family::{Family, Subnet};
use super::mac::MacAddr;

/// The VTEP address of a host's subnet: its network address (`10.5.52.0` for `10.5.52.0/24`),
/// as flanneld gives it. It is the address of that host's VXLAN device (as a /32), the
/// destination of its ARP entry on peers, and the gateway of their routes to the subnet. The
/// same rule for an IPv6 subnet (`fd00:5:34::` for `fd00:5:34::/64`, as a /128).
pub fn vtep_address<N: Subnet>(subnet: N) -> N::Addr {
    subnet.network_address()
}

/// The id weftd gives the nexthop for `gateway`, the same after a restart, so it needs no
/// bookkeeping. The id space (kernel nexthop ids are 32 bits) is split by family:
/// - IPv4: the address as a number (`10.5.3.0` → `0x0a050300`), unique per peer. These ids are
///   in the kernels of running hosts, so this rule never changes.
/// - IPv6: `0xE000_0000` ([`super::family::IPV6_NEXTHOP_IDS`]) or-ed with the gateway folded
///   into 28 bits: the ids that in IPv4 terms name 224.0.0.0/4, a multicast gateway, which the
///   kernel refuses for a nexthop, so no IPv4 id is one. Unique among the subnets of an IPv6
///   network of at most 2^28 subnets (see `Family::nexthop_id` for `Ipv6Addr`).
pub fn nexthop_id<A: Family>(gateway: A) -> u32 {
    gateway.nexthop_id()
}

/// The IPv4 gateway whose nexthop [`nexthop_id`] names `id`: how an id found in the kernel is
/// recognised as one weftd could have written. (An IPv6 id keeps 28 bits of its gateway, so it
/// is recognised the other way: by comparing `nexthop_id` of the gateway the kernel reports.)
pub fn nexthop_gateway(id: u32) -> Ipv4Addr {
    Ipv4Addr::from(id)
}

/// The name flanneld gives the VXLAN device of a VNI: `flannel.<vni>`.
pub fn device_name(vni: u32) -> String {
    format!("flannel.{vni}")
}

/// The name flanneld gives the IPv6 VXLAN device of a VNI: `flannel-v6.<vni>`.
pub fn ipv6_device_name(vni: u32) -> String {
    format!("flannel-v6.{vni}")
}

/// A stable, locally administered MAC for a new device, derived from the host's public IP (of
/// the device's family: the IPv6 device's from the PublicIPv6, so the two devices differ) and
/// the VNI, so a host that loses its device gets the same MAC back and its peers' ARP and FDB
/// entries stay valid.
pub fn derived_mac(public_ip: impl Into<std::net::IpAddr>, vni: u32) -> MacAddr {
    let octets = match public_ip.into() {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    // FNV-1a: tiny, stable across releases, and good enough to spread hosts over 46 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in octets.into_iter().chain(vni.to_be_bytes()).chain(*b"weft") {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = hash.to_be_bytes();
    MacAddr([(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_mac_is_stable_unicast_and_local() {
        let a = derived_mac(Ipv4Addr::new(198, 18, 0, 11), 1);
        assert_eq!(a, derived_mac(Ipv4Addr::new(198, 18, 0, 11), 1));
        assert_ne!(a, derived_mac(Ipv4Addr::new(198, 18, 0, 12), 1));
        assert_ne!(a, derived_mac(Ipv4Addr::new(198, 18, 0, 11), 2));
        assert_eq!(a.0[0] & 0x01, 0, "unicast");
        assert_eq!(a.0[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn the_ipv6_device_gets_a_stable_mac_of_its_own() {
        let v4 = derived_mac(Ipv4Addr::new(198, 18, 0, 11), 1);
        assert_eq!(v4, MacAddr([0x6a, 0xa6, 0x84, 0xb9, 0x44, 0xf2]), "pinned: running hosts' peers hold it");
        let ipv6: std::net::Ipv6Addr = "fd18::11".parse().unwrap();
        let a = derived_mac(ipv6, 1);
        assert_eq!(a, derived_mac(ipv6, 1));
        assert_ne!(a, v4);
        assert_ne!(a, derived_mac("fd18::12".parse::<std::net::Ipv6Addr>().unwrap(), 1));
        assert_eq!((a.0[0] & 0x01, a.0[0] & 0x02), (0, 0x02), "unicast, locally administered");
    }

    #[test]
    fn a_nexthop_id_names_its_gateway() {
        let gateway = Ipv4Addr::new(10, 5, 3, 0);
        assert_eq!(nexthop_gateway(nexthop_id(gateway)), gateway);
        assert_eq!(vtep_address("10.5.3.0/24".parse::<ipnetwork::Ipv4Network>().unwrap()), gateway);
    }
}
