//! The kernel entries weft owns on this host, one type per kernel object, each documented by
//! the `ip`/`bridge` command that writes it.
//!
//! IPv4 only (see the module note in `model`): an IPv6 peer adds entries keyed by `Ipv6Addr`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::mac::MacAddr;
use super::names::nexthop_id;

/// `ip neigh replace <ip> lladdr <mac> dev flannel.1 nud permanent`
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArpEntry {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// `bridge fdb replace <mac> dev flannel.1 dst <public ip> self permanent`
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub dst: Ipv4Addr,
}

/// `ip route replace <subnet> nhid <id of the gateway's nexthop>`, or in flanneld's form,
/// `ip route replace <subnet> via <subnet .0> dev flannel.1 onlink`
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteEntry {
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub onlink: bool,
    /// The id of the [`Nexthop`] the route points at; `None` for a route that names its gateway.
    pub nexthop: Option<u32>,
}

/// `ip nexthop add id <id> via <gateway> dev flannel.1 onlink`: what a peer's route points at
/// where the kernel has nexthop objects (see `netlink/nexthop.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nexthop {
    pub id: u32,
    pub gateway: Ipv4Addr,
}

impl Nexthop {
    /// The nexthop weftd writes for `gateway`, with the id [`nexthop_id`] gives it.
    pub fn for_gateway(gateway: Ipv4Addr) -> Self {
        Self { id: nexthop_id(gateway), gateway }
    }
}

/// `ip route replace <subnet> via <peer's PublicIP>`: with `Backend.DirectRouting`, the route
/// to a peer this host reaches without a gateway; its packets skip VXLAN, as flanneld's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirectRoute {
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
}

/// The ARP, FDB, nexthop and route entries on our VXLAN device, and the direct routes to peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelState {
    pub arp: BTreeSet<ArpEntry>,
    pub fdb: BTreeSet<FdbEntry>,
    pub nexthops: BTreeSet<Nexthop>,
    pub routes: BTreeSet<RouteEntry>,
    pub direct_routes: BTreeSet<DirectRoute>,
}

impl KernelState {
    /// Every entry of every kind.
    pub fn entry_count(&self) -> usize {
        self.arp.len() + self.fdb.len() + self.nexthops.len() + self.routes.len() + self.direct_routes.len()
    }

    /// One route per programmed peer, through VXLAN or direct.
    pub fn peer_count(&self) -> usize {
        self.routes.len() + self.direct_routes.len()
    }
}
