//! Reading our state: the entries on our device, the direct routes to overlay subnets, and the
//! kernel facts that decide their form (the main table's other routes, nexthop ids others
//! hold), as `model` types, for either family (one device each). Which entries are ours is
//! decided by `model`'s naming rules.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use netlink_packet_route::neighbour::{NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAttribute, RouteFlags, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use rtnetlink::packet_core::{NetlinkPayload, NLM_F_DUMP};

use super::family::KernelFamily;
use super::neighbour::{arp_entry, fdb_entry};
use super::nexthop::{self, NexthopRequest};
use super::route::{family_route, route_destination, route_gateway, route_nexthop_id, route_oif, route_table, MAIN_TABLE};
use super::{Kernel, NetlinkError};
use crate::model::{
    nexthop_id, set_of, vtep_address, DirectRoute, KernelContext, KernelState, MainTable, Nexthop, NexthopSupport, RouteEntry,
    Subnet,
};

impl Kernel {
    /// `ip neigh show dev`, `bridge fdb show dev`, `ip nexthop show dev` and `ip route show dev`
    /// (`ip -6 …` for IPv6) for our device of family `A` (index `index`), and the direct routes
    /// to subnets of `network`, as entries; and what decides their form: the main table's other
    /// routes and the nexthop ids others hold. Only permanent neighbours are ours; the kernel
    /// manages the rest.
    ///
    /// # Errors
    /// One of the dumps failed.
    pub async fn read_state<A: KernelFamily>(
        &self,
        index: u32,
        network: A::Network,
    ) -> Result<(KernelState<A>, KernelContext<A>), NetlinkError> {
        let ours = move |n: &NeighbourMessage| n.header.ifindex == index && n.header.state == NeighbourState::Permanent;
        let neighbour_dump = |family| {
            let mut request = NeighbourMessage::default();
            request.header.family = family;
            RouteNetlinkMessage::GetNeighbour(request)
        };
        let arp = self
            .dump("dump neighbours", neighbour_dump(A::ADDRESS_FAMILY), |m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if ours(&n) => arp_entry(&n),
                _ => None,
            })
            .await?;
        let fdb = self
            .dump("dump fdb", neighbour_dump(AddressFamily::Bridge), |m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if ours(&n) => fdb_entry(&n),
                _ => None,
            })
            .await?;
        let (nexthops, nexthop_support) = self.read_nexthops(index, network).await?;
        let route_dump = RouteNetlinkMessage::GetRoute(family_route::<A>().build());
        let main_routes = self
            .dump("dump routes", route_dump, |m| match m {
                RouteNetlinkMessage::NewRoute(r) => main_route(&r, index, network),
                _ => None,
            })
            .await?;
        let (mut routes, mut direct_routes, mut others) = (Vec::new(), Vec::new(), Vec::new());
        for route in main_routes {
            match route {
                MainRoute::Vxlan(entry) => routes.push(entry),
                MainRoute::Direct(entry) => direct_routes.push(entry),
                MainRoute::Other { destination, has_gateway } => others.push((destination, has_gateway)),
            }
        }
        // Built at once (full tree nodes), as `dump` builds the others.
        let (routes, direct_routes) = (set_of(routes), set_of(direct_routes));
        let state = KernelState { arp, fdb, nexthops, routes, direct_routes };
        Ok((state, KernelContext { main_table: MainTable::new(others), nexthops: nexthop_support }))
    }

    /// `ip nexthop show`: ours (on our device, with an id weftd gives a peer of the overlay
    /// `network`: `KernelFamily::nexthop_of_network`), and the ids that other programs'
    /// nexthops hold. Nothing, and no support, on a kernel without nexthop objects.
    async fn read_nexthops<A: KernelFamily>(
        &self,
        index: u32,
        network: A::Network,
    ) -> Result<(BTreeSet<Nexthop<A>>, NexthopSupport), NetlinkError> {
        let (mut ours, mut taken) = (Vec::new(), BTreeSet::new());
        if !self.nexthops.load(Ordering::Relaxed) {
            return Ok((BTreeSet::new(), NexthopSupport::Unavailable));
        }
        let dump = NetlinkPayload::InnerMessage(NexthopRequest::Dump);
        let result = self
            .exchange("dump nexthops", dump, NLM_F_DUMP, |reply| {
                let Some(nexthop) = nexthop::parse(reply) else { return };
                let gateway = A::nexthop_of_network(nexthop.id, nexthop.gateway, network);
                match gateway.filter(|_| nexthop.device == Some(index)) {
                    // A gateway other than the one the id names (or none) is rewritten.
                    Some(gateway) => ours.push(Nexthop { id: nexthop.id, gateway }),
                    None => {
                        taken.insert(nexthop.id);
                    }
                }
            })
            .await;
        match result {
            // Built at once (full tree nodes), as `dump` builds its sets.
            Ok(()) => Ok((set_of(ours), NexthopSupport::Available { taken })),
            Err(e) if e.errno() == Some(Errno::EOPNOTSUPP) => {
                self.without_nexthops(&e);
                Ok((BTreeSet::new(), NexthopSupport::Unavailable))
            }
            Err(e) => Err(e),
        }
    }
}

/// A main-table route, as the reconciler sorts them.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum MainRoute<A: KernelFamily> {
    Vxlan(RouteEntry<A>),
    Direct(DirectRoute<A>),
    Other { destination: A::Network, has_gateway: bool },
}

fn main_route<A: KernelFamily>(route: &RouteMessage, index: u32, network: A::Network) -> Option<MainRoute<A>> {
    if route_table(route) != MAIN_TABLE {
        return None;
    }
    if let Some(entry) = our_route(route, index, network) {
        return Some(MainRoute::Vxlan(entry));
    }
    if let Some(entry) = direct_route(route, network) {
        return Some(MainRoute::Direct(entry));
    }
    if route.header.kind != RouteType::Unicast {
        return None; // blackhole, unreachable and the like reach nothing on-link
    }
    let has_gateway = route.attributes.iter().any(|a| {
        matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::NhId(_) | RouteAttribute::MultiPath(_) | RouteAttribute::Via(_))
    });
    let destination = route_destination::<A>(route).or_else(|| A::network(A::MIN, 0))?;
    Some(MainRoute::Other { destination, has_gateway })
}

/// A route to a subnet of the overlay `network` through a gateway on another device: a direct
/// route, ours or flanneld's (nothing else routes the overlay's subnets through the underlay).
pub(super) fn direct_route<A: KernelFamily>(route: &RouteMessage, network: A::Network) -> Option<DirectRoute<A>> {
    let subnet = route_destination::<A>(route)?;
    let gateway = route_gateway(route)?;
    (in_network(subnet, network) && route_nexthop_id(route).is_none()).then_some(DirectRoute { subnet, gateway })
}

/// Whether `subnet` is a subnet of the overlay `network` (and not the network itself).
fn in_network<N: Subnet>(subnet: N, network: N) -> bool {
    subnet.prefix_len() > network.prefix_len() && network.holds(subnet.network_address())
}

/// The entry for a main-table route of our device's: one that leaves through it or, where
/// `nexthop_compat_mode=0` hides a nexthop route's device and gateway, one that points at the
/// nexthop weftd names after the route's own subnet.
pub(super) fn our_route<A: KernelFamily>(route: &RouteMessage, index: u32, network: A::Network) -> Option<RouteEntry<A>> {
    if route_table(route) != MAIN_TABLE {
        return None;
    }
    match route_oif(route) {
        Some(oif) if oif == index => route_entry(route),
        Some(_) => None,
        None => hidden_nexthop_route(route, network),
    }
}

/// A route that names only a nexthop id, if the id is the one weftd gives the nexthop for the
/// route's subnet (a subnet of the overlay `network`): the gateway, which is always the subnet's
/// VTEP address. weftd writes that nexthop `onlink` on our device (or, when another program
/// holds the id, a route in flanneld's form instead), so the route is ours.
fn hidden_nexthop_route<A: KernelFamily>(route: &RouteMessage, network: A::Network) -> Option<RouteEntry<A>> {
    let id = route_nexthop_id(route)?;
    let subnet = route_destination::<A>(route)?;
    let gateway = vtep_address(subnet);
    let entry = RouteEntry { subnet, gateway, onlink: true, nexthop: Some(id) };
    (in_network(subnet, network) && nexthop_id(gateway) == id).then_some(entry)
}

/// A route on our device, with the nexthop it points at, if any (the kernel also shows that
/// nexthop's gateway and device on it).
fn route_entry<A: KernelFamily>(route: &RouteMessage) -> Option<RouteEntry<A>> {
    Some(RouteEntry {
        subnet: route_destination::<A>(route)?,
        gateway: route_gateway(route)?,
        onlink: route.header.flags.contains(RouteFlags::Onlink),
        nexthop: route_nexthop_id(route),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use ipnetwork::Ipv4Network;
    use netlink_packet_route::route::RouteAddress;
    use rtnetlink::RouteMessageBuilder;

    fn route(destination: &str, extra: RouteAttribute) -> RouteMessage {
        let network: Ipv4Network = destination.parse().unwrap();
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(network.network(), network.prefix()).build();
        route.attributes.extend([RouteAttribute::Oif(2), extra]);
        route
    }

    #[test]
    fn main_table_routes_are_sorted_by_what_they_are() {
        let network: Ipv4Network = "10.5.0.0/16".parse().unwrap();
        let gateway = |ip: [u8; 4]| RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::from(ip)));
        let direct = main_route(&route("10.5.2.0/24", gateway([198, 18, 0, 12])), 9, network);
        let subnet = "10.5.2.0/24".parse().unwrap();
        assert_eq!(direct, Some(MainRoute::Direct(DirectRoute { subnet, gateway: Ipv4Addr::new(198, 18, 0, 12) })));
        let ecmp_default = main_route::<Ipv4Addr>(&route("0.0.0.0/0", RouteAttribute::MultiPath(vec![])), 9, network);
        let destination = "0.0.0.0/0".parse().unwrap();
        assert_eq!(ecmp_default, Some(MainRoute::Other { destination, has_gateway: true }), "multipath has gateways");
        let connected = main_route::<Ipv4Addr>(&route("198.18.0.0/24", RouteAttribute::Priority(0)), 9, network);
        let destination = "198.18.0.0/24".parse().unwrap();
        assert_eq!(connected, Some(MainRoute::Other { destination, has_gateway: false }));
        let vxlan = main_route::<Ipv4Addr>(&route("10.5.3.0/24", gateway([10, 5, 3, 0])), 2, network);
        assert!(matches!(vxlan, Some(MainRoute::Vxlan(_))), "on our device: {vxlan:?}");
    }
}
