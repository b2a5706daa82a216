//! The difference between the entries we want and those the kernel holds, as the changes that
//! close it: a pure function, so the ordering and keeping rules are tested without a kernel.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::model::{vtep_address, KernelState, MacAddr, Nexthop};

/// What to change so the kernel matches the desired state. Additions use `replace`, so an entry
/// whose key is still wanted (same neighbour IP, same route prefix) is overwritten in place rather
/// than deleted first: traffic to that peer never sees a gap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// New entries; for nexthops, only ids the kernel does not have yet.
    pub add: KernelState,
    /// Nexthops of ours whose id is right but which point elsewhere: rewritten in place.
    pub rewrite_nexthops: BTreeSet<Nexthop>,
    pub remove: KernelState,
}

impl Plan {
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
    pub fn removals_keeping(&self, failed: &BTreeSet<Ipv4Network>) -> KernelState {
        let remove = &self.remove;
        let kept_vteps: BTreeSet<Ipv4Addr> = failed.iter().map(|subnet| vtep_address(*subnet)).collect();
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
pub fn plan(desired: &KernelState, actual: &KernelState) -> Plan {
    let wanted_ips: BTreeSet<Ipv4Addr> = desired.arp.iter().map(|e| e.ip).collect();
    let wanted_nexthop_ids: BTreeSet<u32> = desired.nexthops.iter().map(|e| e.id).collect();
    let held_nexthop_ids: BTreeSet<u32> = actual.nexthops.iter().map(|e| e.id).collect();
    let (rewrite_nexthops, new_nexthops) =
        desired.nexthops.difference(&actual.nexthops).partition(|e| held_nexthop_ids.contains(&e.id));
    let vxlan_prefixes: BTreeSet<Ipv4Network> = desired.routes.iter().map(|e| e.subnet).collect();
    let direct_prefixes: BTreeSet<Ipv4Network> = desired.direct_routes.iter().map(|e| e.subnet).collect();
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
