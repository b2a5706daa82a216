//! Reading our state: the entries on our device, the direct routes to overlay subnets, and the
//! kernel facts that decide their form (the main table's other routes, nexthop ids others
//! hold), as `model` types. Which entries are ours is decided by `model`'s naming rules.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;

use ipnetwork::Ipv4Network;
use netlink_packet_route::neighbour::{NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAttribute, RouteFlags, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use rtnetlink::packet_core::{NetlinkPayload, NLM_F_DUMP};
use rtnetlink::RouteMessageBuilder;

use super::neighbour::{arp_entry, fdb_entry};
use super::nexthop::{self, NexthopRequest};
use super::route::{route_destination, route_gateway, route_nexthop_id, route_oif, route_table, MAIN_TABLE};
use super::{Kernel, NetlinkError};
use crate::model::{
    nexthop_gateway, nexthop_id, vtep_address, DirectRoute, KernelContext, KernelState, MainTable, Nexthop, NexthopSupport,
    RouteEntry,
};

impl Kernel {
    /// `ip neigh show dev`, `bridge fdb show dev`, `ip nexthop show dev` and `ip route show dev`
    /// for our device (index `index`), and the direct routes to subnets of `network`, as
    /// entries; and what decides their form: the main table's other routes and the nexthop ids
    /// others hold. Only permanent neighbours are ours; the kernel manages the rest.
    ///
    /// # Errors
    /// One of the dumps failed.
    pub async fn read_state(&self, index: u32, network: Ipv4Network) -> Result<(KernelState, KernelContext), NetlinkError> {
        let ours = move |n: &NeighbourMessage| n.header.ifindex == index && n.header.state == NeighbourState::Permanent;
        let neighbour_dump = |family| {
            let mut request = NeighbourMessage::default();
            request.header.family = family;
            RouteNetlinkMessage::GetNeighbour(request)
        };
        let arp = self
            .dump("dump neighbours", neighbour_dump(AddressFamily::Unspec), |m| match m {
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
        let route_dump = RouteNetlinkMessage::GetRoute(RouteMessageBuilder::<Ipv4Addr>::new().build());
        let main_routes = self
            .dump("dump routes", route_dump, |m| match m {
                RouteNetlinkMessage::NewRoute(r) => main_route(&r, index, network),
                _ => None,
            })
            .await?;
        let mut state = KernelState { arp, fdb, nexthops, ..KernelState::default() };
        let mut others = Vec::new();
        for route in main_routes {
            match route {
                MainRoute::Vxlan(entry) => {
                    state.routes.insert(entry);
                }
                MainRoute::Direct(entry) => {
                    state.direct_routes.insert(entry);
                }
                MainRoute::Other { destination, has_gateway } => others.push((destination, has_gateway)),
            }
        }
        Ok((state, KernelContext { main_table: MainTable::new(others), nexthops: nexthop_support }))
    }

    /// `ip nexthop show`: ours (on our device, with an id weftd gives: one that names an
    /// address of the overlay `network`), and the ids that other programs' nexthops hold.
    /// Nothing, and no support, on a kernel without nexthop objects.
    async fn read_nexthops(&self, index: u32, network: Ipv4Network) -> Result<(BTreeSet<Nexthop>, NexthopSupport), NetlinkError> {
        let (mut ours, mut taken) = (BTreeSet::new(), BTreeSet::new());
        if !self.nexthops.load(Ordering::Relaxed) {
            return Ok((ours, NexthopSupport::Unavailable));
        }
        let dump = NetlinkPayload::InnerMessage(NexthopRequest::Dump);
        let result = self
            .exchange("dump nexthops", dump, NLM_F_DUMP, |reply| {
                let Some(nexthop) = nexthop::parse(reply) else { return };
                if nexthop.device == Some(index) && network.contains(nexthop_gateway(nexthop.id)) {
                    // A gateway other than the one the id names (or none) is rewritten.
                    ours.insert(Nexthop { id: nexthop.id, gateway: nexthop.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED) });
                } else {
                    taken.insert(nexthop.id);
                }
            })
            .await;
        match result {
            Ok(()) => Ok((ours, NexthopSupport::Available { taken })),
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
enum MainRoute {
    Vxlan(RouteEntry),
    Direct(DirectRoute),
    Other { destination: Ipv4Network, has_gateway: bool },
}

fn main_route(route: &RouteMessage, index: u32, network: Ipv4Network) -> Option<MainRoute> {
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
    let destination = route_destination(route).unwrap_or(Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0 is valid"));
    Some(MainRoute::Other { destination, has_gateway })
}

/// A route to a subnet of the overlay `network` through a gateway on another device: a direct
/// route, ours or flanneld's (nothing else routes the overlay's subnets through the underlay).
pub(super) fn direct_route(route: &RouteMessage, network: Ipv4Network) -> Option<DirectRoute> {
    let subnet = route_destination(route)?;
    let gateway = route_gateway(route)?;
    (in_network(subnet, network) && route_nexthop_id(route).is_none()).then_some(DirectRoute { subnet, gateway })
}

/// Whether `subnet` is a subnet of the overlay `network` (and not the network itself).
fn in_network(subnet: Ipv4Network, network: Ipv4Network) -> bool {
    subnet.prefix() > network.prefix() && network.contains(subnet.network())
}

/// The entry for a main-table route of our device's: one that leaves through it or, where
/// `nexthop_compat_mode=0` hides a nexthop route's device and gateway, one that points at the
/// nexthop weftd names after the route's own subnet.
pub(super) fn our_route(route: &RouteMessage, index: u32, network: Ipv4Network) -> Option<RouteEntry> {
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
fn hidden_nexthop_route(route: &RouteMessage, network: Ipv4Network) -> Option<RouteEntry> {
    let id = route_nexthop_id(route)?;
    let subnet = route_destination(route)?;
    let gateway = vtep_address(subnet);
    let entry = RouteEntry { subnet, gateway, onlink: true, nexthop: Some(id) };
    (in_network(subnet, network) && nexthop_id(gateway) == id).then_some(entry)
}

/// A route on our device, with the nexthop it points at, if any (the kernel also shows that
/// nexthop's gateway and device on it).
fn route_entry(route: &RouteMessage) -> Option<RouteEntry> {
    Some(RouteEntry {
        subnet: route_destination(route)?,
        gateway: route_gateway(route)?,
        onlink: route.header.flags.contains(RouteFlags::Onlink),
        nexthop: route_nexthop_id(route),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::route::RouteAddress;

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
        let ecmp_default = main_route(&route("0.0.0.0/0", RouteAttribute::MultiPath(vec![])), 9, network);
        let destination = "0.0.0.0/0".parse().unwrap();
        assert_eq!(ecmp_default, Some(MainRoute::Other { destination, has_gateway: true }), "multipath has gateways");
        let connected = main_route(&route("198.18.0.0/24", RouteAttribute::Priority(0)), 9, network);
        let destination = "198.18.0.0/24".parse().unwrap();
        assert_eq!(connected, Some(MainRoute::Other { destination, has_gateway: false }));
        let vxlan = main_route(&route("10.5.3.0/24", gateway([10, 5, 3, 0])), 2, network);
        assert!(matches!(vxlan, Some(MainRoute::Vxlan(_))), "on our device: {vxlan:?}");
    }
}
