//! What the kernel holds besides our entries that decides their form: facts read by
//! `netlink`'s snapshot and consulted by `reconcile`, which decides from them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::entries::Nexthop;
use super::family::{Family, Subnet};

/// The main routing table's other routes of family `A` (IPv4 by default), each with whether it has a gateway: what
/// `ip route get` consults. flanneld's DirectRouting asks it whether a peer's PublicIP is
/// reached without a gateway, that is, on this host's own link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainTable<A: Family = Ipv4Addr> {
    routes: Vec<(A::Network, bool)>,
}

// By hand: a derived `Default` would ask `A: Default`, which no address type is.
impl<A: Family> Default for MainTable<A> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<A: Family> MainTable<A> {
    /// The table of these routes: each destination with whether the route has a gateway.
    pub fn new(routes: impl IntoIterator<Item = (A::Network, bool)>) -> Self {
        Self { routes: routes.into_iter().collect() }
    }

    /// Whether the most specific route to `ip` has no gateway.
    pub fn on_link(&self, ip: A) -> bool {
        let best = self.routes.iter().filter(|(network, _)| network.holds(ip)).max_by_key(|(network, _)| network.prefix_len());
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
    /// The nexthop for `gateway` (of either family: the ids do not overlap), unless the kernel
    /// has none or its id is taken.
    pub fn for_gateway<A: Family>(&self, gateway: A) -> Option<Nexthop<A>> {
        let nexthop = Nexthop::for_gateway(gateway);
        matches!(self, Self::Available { taken } if !taken.contains(&nexthop.id)).then_some(nexthop)
    }
}

/// What the kernel holds besides our entries that decides their form: the main table (for
/// DirectRouting) and what nexthop objects allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelContext<A: Family = Ipv4Addr> {
    pub main_table: MainTable<A>,
    pub nexthops: NexthopSupport,
}

// By hand: a derived `Default` would ask `A: Default`, which no address type is.
impl<A: Family> Default for KernelContext<A> {
    fn default() -> Self {
        Self { main_table: MainTable::default(), nexthops: NexthopSupport::default() }
    }
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
