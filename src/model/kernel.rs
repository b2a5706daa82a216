//! What the kernel holds besides our entries that decides their form: facts read by
//! `netlink`'s snapshot and consulted by `reconcile`, which decides from them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::entries::Nexthop;

/// The main routing table's other IPv4 routes, each with whether it has a gateway: what
/// `ip route get` consults. flanneld's DirectRouting asks it whether a peer's PublicIP is
/// reached without a gateway, that is, on this host's own link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MainTable {
    routes: Vec<(Ipv4Network, bool)>,
}

impl MainTable {
    /// The table of these routes: each destination with whether the route has a gateway.
    pub fn new(routes: impl IntoIterator<Item = (Ipv4Network, bool)>) -> Self {
        Self { routes: routes.into_iter().collect() }
    }

    /// Whether the most specific route to `ip` has no gateway.
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        let best = self.routes.iter().filter(|(network, _)| network.contains(ip)).max_by_key(|(network, _)| network.prefix());
        best.is_some_and(|(_, has_gateway)| !has_gateway)
    }
}

/// Whether peer routes can point at nexthop objects: not on a kernel without them (before 5.3),
/// and not for a gateway whose id another program's nexthop already holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NexthopSupport {
    #[default]
    Unavailable,
    Available {
        /// The nexthop ids that nexthops of other programs hold.
        taken: BTreeSet<u32>,
    },
}

impl NexthopSupport {
    /// The nexthop for `gateway`, unless the kernel has none or its id is taken.
    pub fn for_gateway(&self, gateway: Ipv4Addr) -> Option<Nexthop> {
        let nexthop = Nexthop::for_gateway(gateway);
        matches!(self, Self::Available { taken } if !taken.contains(&nexthop.id)).then_some(nexthop)
    }
}

/// What the kernel holds besides our entries that decides their form: the main table (for
/// DirectRouting) and what nexthop objects allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelContext {
    pub main_table: MainTable,
    pub nexthops: NexthopSupport,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host on 198.18.0.0/24 with a default gateway.
    fn underlay_table() -> MainTable {
        MainTable::new([("0.0.0.0/0".parse().unwrap(), true), ("198.18.0.0/24".parse().unwrap(), false)])
    }

    #[test]
    fn on_link_follows_the_most_specific_route() {
        let mut table = underlay_table();
        assert!(table.on_link(Ipv4Addr::new(198, 18, 0, 12)));
        assert!(!table.on_link(Ipv4Addr::new(203, 0, 113, 5)), "through the default gateway");
        table.routes.push(("198.18.0.128/25".parse().unwrap(), true));
        assert!(!table.on_link(Ipv4Addr::new(198, 18, 0, 200)), "a more specific route with a gateway wins");
        assert!(!MainTable::default().on_link(Ipv4Addr::new(198, 18, 0, 12)), "no route at all");
    }
}
