//! The rules that name things, each written once: the VTEP address of a subnet, the nexthop
//! id of a gateway, the device of a VNI, and the MAC a new device gets. The kernel side
//! (`netlink`) recognises our entries by these same rules, so it never re-derives them.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::mac::MacAddr;

/// The VTEP address of a host's subnet: its network address (`10.5.52.0` for `10.5.52.0/24`),
/// as flanneld gives it. It is the address of that host's VXLAN device (as a /32), the
/// destination of its ARP entry on peers, and the gateway of their routes to the subnet.
pub fn vtep_address(subnet: Ipv4Network) -> Ipv4Addr {
    subnet.network()
}

/// The id weftd gives the nexthop for `gateway`: the address as a number, unique per peer and
/// the same after a restart, so it needs no bookkeeping. (An IPv6 gateway does not fit in the
/// 32-bit id; its rule will be its own.)
pub fn nexthop_id(gateway: Ipv4Addr) -> u32 {
    u32::from(gateway)
}

/// The gateway whose nexthop [`nexthop_id`] names `id`: how an id found in the kernel is
/// recognised as one weftd could have written.
pub fn nexthop_gateway(id: u32) -> Ipv4Addr {
    Ipv4Addr::from(id)
}

/// The name flanneld gives the VXLAN device of a VNI: `flannel.<vni>`.
pub fn device_name(vni: u32) -> String {
    format!("flannel.{vni}")
}

/// A stable, locally administered MAC for a new device, derived from the host's public IP and
/// the VNI, so a host that loses its device gets the same MAC back and its peers' ARP and FDB
/// entries stay valid.
pub fn derived_mac(public_ip: Ipv4Addr, vni: u32) -> MacAddr {
    // FNV-1a: tiny, stable across releases, and good enough to spread hosts over 46 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in public_ip.octets().into_iter().chain(vni.to_be_bytes()).chain(*b"weft") {
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
    fn a_nexthop_id_names_its_gateway() {
        let gateway = Ipv4Addr::new(10, 5, 3, 0);
        assert_eq!(nexthop_gateway(nexthop_id(gateway)), gateway);
        assert_eq!(vtep_address("10.5.3.0/24".parse().unwrap()), gateway);
    }
}
