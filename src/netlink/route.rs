//! Routes: the kernel's route lookup and default route (for the underlay choice), and our
//! peers' routes of either family, through the VXLAN device or direct (`ip route`, `ip -6 route`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use nix::errno::Errno;
use rtnetlink::RouteMessageBuilder;

use super::family::KernelFamily;
use super::{found, request_error, Kernel, NetlinkError};
use crate::model::{DirectRoute, RouteEntry, Subnet};

/// The main routing table's id (`RT_TABLE_MAIN`).
pub(super) const MAIN_TABLE: u32 = 254;

/// Where the kernel sends packets for one destination: a route's output interface and preferred
/// source, either of which a route may lack (a multipath or unreachable route has no interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteHop {
    pub interface: Option<u32>,
    pub source: Option<Ipv4Addr>,
}

impl Kernel {
    /// `ip route get <destination>`: the route the kernel would use, or (inner `Err`) the
    /// kernel's reason for having none, e.g. `ENETUNREACH`.
    ///
    /// # Errors
    /// The request failed without an answer from the kernel.
    pub async fn route_get(&self, destination: Ipv4Addr) -> Result<Result<RouteHop, Errno>, NetlinkError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(destination, 32).build();
        match self.handle.route().get(query).execute().try_next().await.map_err(request_error("get route")) {
            Ok(Some(route)) => Ok(Ok(route_hop(&route))),
            Ok(None) => Ok(Err(Errno::ENETUNREACH)),
            Err(error) => match error.errno() {
                Some(errno) => Ok(Err(errno)),
                None => Err(error),
            },
        }
    }

    /// `ip -4 route show default`: the main table's first default route (the kernel lists the
    /// lowest metric first), or `None` when there is none.
    ///
    /// # Errors
    /// The route dump failed.
    pub async fn default_route(&self) -> Result<Option<RouteHop>, NetlinkError> {
        self.first_default_route(RouteMessageBuilder::<Ipv4Addr>::new().build()).await
    }

    /// `ip -6 route show default`: the main table's first IPv6 default route (lowest metric
    /// first), or `None` when there is none. Its `source` is always `None` ([`RouteHop`] holds
    /// an IPv4 preferred source only; the underlay choice takes none from this route).
    ///
    /// # Errors
    /// The route dump failed.
    pub async fn default_route_v6(&self) -> Result<Option<RouteHop>, NetlinkError> {
        self.first_default_route(RouteMessageBuilder::<Ipv6Addr>::new().build()).await
    }

    /// The main table's first /0 route among those a dump of `query`'s family gives.
    async fn first_default_route(&self, query: RouteMessage) -> Result<Option<RouteHop>, NetlinkError> {
        let routes: Vec<RouteMessage> =
            self.handle.route().get(query).execute().try_collect().await.map_err(request_error("dump routes"))?;
        Ok(routes.iter().find(|r| r.header.destination_prefix_length == 0 && route_table(r) == MAIN_TABLE).map(route_hop))
    }

    /// `ip route replace <subnet> nhid <id>`, or in flanneld's form `ip route replace <subnet>
    /// via <gateway> dev <device> onlink` (`ip -6 route` for an IPv6 subnet).
    ///
    /// # Errors
    /// The kernel refused the route.
    pub async fn replace_route<A: KernelFamily>(&self, index: u32, entry: RouteEntry<A>) -> Result<(), NetlinkError> {
        let route = match entry.nexthop {
            Some(id) => nexthop_route::<A>(entry.subnet, id),
            None => route_message::<A>(entry.subnet, entry.gateway).output_interface(index).onlink().build(),
        };
        self.handle.route().add(route).replace().execute().await.map_err(request_error("replace route"))
    }

    /// `ip route del <subnet> nhid <id>`, or `ip route del <subnet> via <gateway> dev <device>`
    /// for a route in flanneld's form; a route already gone is success. The kernel answers an
    /// id that no longer exists with EINVAL: the route went with its nexthop, so that too is
    /// "already gone".
    ///
    /// # Errors
    /// The kernel refused the deletion.
    pub async fn delete_route<A: KernelFamily>(&self, index: u32, entry: RouteEntry<A>) -> Result<(), NetlinkError> {
        match entry.nexthop {
            Some(id) => match self.delete_route_message(nexthop_route::<A>(entry.subnet, id)).await {
                Err(e) if e.errno() == Some(Errno::EINVAL) => Ok(()),
                result => result.map(|_| ()),
            },
            None => {
                let route = route_message::<A>(entry.subnet, entry.gateway).output_interface(index).build();
                self.delete_route_message(route).await.map(|_| ())
            }
        }
    }

    /// `ip route replace <subnet> via <peer's PublicIP>`: the kernel picks the device, as for
    /// flanneld's direct routes.
    ///
    /// # Errors
    /// The kernel refused the route (e.g. `ENETUNREACH`: the gateway is not on-link).
    pub async fn replace_direct_route<A: KernelFamily>(&self, entry: DirectRoute<A>) -> Result<(), NetlinkError> {
        let route = route_message::<A>(entry.subnet, entry.gateway).build();
        self.handle.route().add(route).replace().execute().await.map_err(request_error("replace direct route"))
    }

    /// `ip route del <subnet> via <peer's PublicIP>`; a route already gone is success.
    ///
    /// # Errors
    /// The kernel refused the deletion.
    pub async fn delete_direct_route<A: KernelFamily>(&self, entry: DirectRoute<A>) -> Result<(), NetlinkError> {
        self.delete_route_message(route_message::<A>(entry.subnet, entry.gateway).build()).await.map(|_| ())
    }

    /// `ip route del` for the route `message` describes, whoever wrote it (flanneld, `ip`, or
    /// us): any protocol and scope. Whether there was such a route.
    async fn delete_route_message(&self, mut message: RouteMessage) -> Result<bool, NetlinkError> {
        message.header.protocol = RouteProtocol::Unspec;
        message.header.scope = RouteScope::NoWhere;
        found(self.handle.route().del(message).execute().await.map_err(request_error("delete route")))
    }
}

/// A main-table route of family `A` with nothing in it: what `RouteMessageBuilder::<Ipv4Addr>
/// ::new()` gives, for either family (as a dump request: every route of the family).
pub(super) fn family_route<A: KernelFamily>() -> RouteMessageBuilder<IpAddr> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new();
    builder.get_mut().header.address_family = A::ADDRESS_FAMILY;
    builder
}

/// A main-table route to `subnet` of family `A`, with nothing else yet.
fn route_to<A: KernelFamily>(subnet: A::Network) -> RouteMessageBuilder<IpAddr> {
    let mut builder = family_route::<A>();
    let message = builder.get_mut();
    message.header.destination_prefix_length = subnet.prefix_len();
    message.attributes.push(RouteAttribute::Destination(subnet.network_address().route_address()));
    builder
}

/// `<subnet> nhid <id>`: a peer route that points at a nexthop object.
fn nexthop_route<A: KernelFamily>(subnet: A::Network, id: u32) -> RouteMessage {
    route_to::<A>(subnet).nhid(id).build()
}

/// `<subnet> via <gateway>`.
fn route_message<A: KernelFamily>(subnet: A::Network, gateway: A) -> RouteMessageBuilder<IpAddr> {
    let mut builder = route_to::<A>(subnet);
    builder.get_mut().attributes.push(RouteAttribute::Gateway(gateway.route_address()));
    builder
}

/// The table a route is in: `RTA_TABLE` when present (ids above 255 live only there).
pub(super) fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn route_hop(route: &RouteMessage) -> RouteHop {
    let source = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    });
    RouteHop { interface: route_oif(route), source }
}

/// A route's output interface; `None` for one without (multipath, or hidden behind a nexthop).
pub(super) fn route_oif(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        _ => None,
    })
}

/// The id of the nexthop object a route points at, if it points at one.
pub(super) fn route_nexthop_id(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::NhId(id) => Some(*id),
        _ => None,
    })
}

/// A route's gateway of family `A`, if it names one itself.
pub(super) fn route_gateway<A: KernelFamily>(route: &RouteMessage) -> Option<A> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(address) => A::from_route_address(address),
        _ => None,
    })
}

/// A route's destination prefix of family `A`; `None` for a default route (no `RTA_DST`).
pub(super) fn route_destination<A: KernelFamily>(route: &RouteMessage) -> Option<A::Network> {
    let destination = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(address) => A::from_route_address(address),
        _ => None,
    })?;
    A::network(destination, route.header.destination_prefix_length)
}
