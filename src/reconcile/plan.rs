//! The difference between the entries we want and those the kernel holds, as the changes that
//! close it: a pure function, so the ordering and keeping rules are tested without a kernel.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::model::{vtep_address, Family, KernelState, MacAddr, Nexthop};

/// What to change so the kernel matches the desired state. Additions use `replace`, so an entry
/// whose key is still wanted (same neighbour IP, same route prefix) is overwritten in place rather
/// than deleted first: traffic to that peer never sees a gap. Of one address family, IPv4 by
/// default, as the states it is planned from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<A: Family = Ipv4Addr> {
    /// New entries; for nexthops, only ids the kernel does not have yet.
    pub add: KernelState<A>,
    /// Nexthops of ours whose id is right but which point elsewhere: rewritten in place.
    pub rewrite_nexthops: BTreeSet<Nexthop<A>>,
    pub remove: KernelState<A>,
}

// By hand: a derived `Default` would ask `A: Default`, which no address type is.
impl<A: Family> Default for Plan<A> {
    fn default() -> Self {
        Self { add: KernelState::default(), rewrite_nexthops: BTreeSet::new(), remove: KernelState::default() }
    }
}

impl<A: Family> Plan<A> {
    pub fn change_count(&self) -> usize {
        self.add.entry_count() + self.rewrite_nexthops.len() + self.remove.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.change_count() == 0
    }

    /// The removals, less the old form of every peer whose new route could not be written
    /// (`failed` subnets): its old route, and for a VXLAN route the nexthop it points at, its
    /// ARP entry and that MAC's FDB entries, so the peer stays reachable the old way until a
    /// later pass succeeds.
    pub fn removals_keeping(&self, failed: &BTreeSet<A::Network>) -> KernelState<A> {
        let remove = &self.remove;
        let kept_vteps: BTreeSet<A> = failed.iter().map(|subnet| vtep_address(*subnet)).collect();
        let kept_macs: BTreeSet<MacAddr> = remove.arp.iter().filter(|e| kept_vteps.contains(&e.ip)).map(|e| e.mac).collect();
        let kept_route_nexthops = remove.routes.iter().filter(|r| failed.contains(&r.subnet)).filter_map(|r| r.nexthop);
        let kept_nexthops: BTreeSet<u32> =
            kept_vteps.iter().map(|vtep| Nexthop::for_gateway(*vtep).id).chain(kept_route_nexthops).collect();
        KernelState {
            arp: remove.arp.iter().filter(|e| !kept_vteps.contains(&e.ip)).copied().collect(),
            fdb: remove.fdb.iter().filter(|e| !kept_macs.contains(&e.mac)).copied().collect(),
            nexthops: remove.nexthops.iter().filter(|e| !kept_nexthops.contains(&e.id)).copied().collect(),
            routes: remove.routes.iter().filter(|e| !failed.contains(&e.subnet)).copied().collect(),
            direct_routes: remove.direct_routes.iter().filter(|e| !failed.contains(&e.subnet)).copied().collect(),
        }
    }
}

/// Computes the difference between what we want and what the kernel has. A route whose prefix
/// is still wanted as a VXLAN route is replaced, not removed (also to move between flanneld's
/// form and a nexthop); one that changes between VXLAN and direct is replaced by the new form
/// and then its old form removed, which deletes nothing but the old form.
pub fn plan<A: Family>(desired: &KernelState<A>, actual: &KernelState<A>) -> Plan<A> {
    let wanted_ips: BTreeSet<A> = desired.arp.iter().map(|e| e.ip).collect();
    let wanted_nexthop_ids: BTreeSet<u32> = desired.nexthops.iter().map(|e| e.id).collect();
    let held_nexthop_ids: BTreeSet<u32> = actual.nexthops.iter().map(|e| e.id).collect();
    let (rewrite_nexthops, new_nexthops) =
        desired.nexthops.difference(&actual.nexthops).partition(|e| held_nexthop_ids.contains(&e.id));
    let vxlan_prefixes: BTreeSet<A::Network> = desired.routes.iter().map(|e| e.subnet).collect();
    let direct_prefixes: BTreeSet<A::Network> = desired.direct_routes.iter().map(|e| e.subnet).collect();
    Plan {
        add: KernelState {
            arp: desired.arp.difference(&actual.arp).copied().collect(),
            fdb: desired.fdb.difference(&actual.fdb).copied().collect(),
            nexthops: new_nexthops,
            routes: desired.routes.difference(&actual.routes).copied().collect(),
            direct_routes: desired.direct_routes.difference(&actual.direct_routes).copied().collect(),
        },
        rewrite_nexthops,
        remove: KernelState {
            arp: actual.arp.iter().filter(|e| !wanted_ips.contains(&e.ip)).copied().collect(),
            // A MAC can hold several destinations, so an FDB entry is only right if both match.
            fdb: actual.fdb.difference(&desired.fdb).copied().collect(),
            nexthops: actual.nexthops.iter().filter(|e| !wanted_nexthop_ids.contains(&e.id)).copied().collect(),
            routes: actual.routes.iter().filter(|e| !vxlan_prefixes.contains(&e.subnet)).copied().collect(),
            direct_routes: actual.direct_routes.iter().filter(|e| !direct_prefixes.contains(&e.subnet)).copied().collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use ipnetwork::Ipv6Network;

    use super::*;
    use crate::model::{ArpEntry, FdbEntry, NexthopSupport, RouteEntry};

    /// A peer's IPv6 entries in weftd's form with nexthops: NDP, FDB, nexthop and route.
    fn ipv6_peer(subnet: &str, public_ipv6: &str, mac: u8) -> KernelState<Ipv6Addr> {
        let subnet: Ipv6Network = subnet.parse().unwrap();
        let (vtep, mac) = (vtep_address(subnet), MacAddr([2, 0, 0, 0, 0, mac]));
        let available = NexthopSupport::Available { taken: BTreeSet::new() };
        let nexthop = available.for_gateway(vtep).unwrap();
        KernelState {
            arp: [ArpEntry { ip: vtep, mac }].into(),
            fdb: [FdbEntry { mac, dst: public_ipv6.parse().unwrap() }].into(),
            nexthops: [nexthop].into(),
            routes: [RouteEntry { subnet, gateway: vtep, onlink: true, nexthop: Some(nexthop.id) }].into(),
            direct_routes: BTreeSet::new(),
        }
    }

    #[test]
    fn an_ipv6_state_is_planned_by_the_same_rules() {
        let (kept, departed) = (ipv6_peer("fd00:5:1::/64", "2001:db8::11", 1), ipv6_peer("fd00:5:2::/64", "2001:db8::12", 2));
        assert_eq!(kept.nexthops.first().unwrap().id, IPV6_ID_OF_FD00_5_1);
        let changes = plan(&kept, &departed);
        assert_eq!((changes.add.clone(), changes.remove.clone()), (kept.clone(), departed.clone()));
        assert!(changes.rewrite_nexthops.is_empty());
        let failed: BTreeSet<Ipv6Network> = departed.routes.iter().map(|r| r.subnet).collect();
        assert_eq!(changes.removals_keeping(&failed), KernelState::default(), "a peer whose new route failed keeps its old form");
        assert!(plan(&kept, &kept).is_empty());
    }

    /// `fd00:5:1::`'s id, pinned: once written, an id is in the kernel of a running host.
    const IPV6_ID_OF_FD00_5_1: u32 = 0xE100_AD00;
}
