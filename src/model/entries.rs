//! The kernel entries weft owns on this host, one type per kernel object, each documented by
//! the `ip`/`bridge` command that writes it.
//!
//! Each is generic over its address family `A` ([`Family`]), IPv4 by default: `ArpEntry` is
//! the IPv4 entry it always was, `ArpEntry<Ipv6Addr>` its IPv6 twin (an NDP entry).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::family::Family;
use super::mac::MacAddr;
use super::names::nexthop_id;

/// `ip neigh replace <ip> lladdr <mac> dev flannel.1 nud permanent`
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArpEntry<A: Family = Ipv4Addr> {
    pub ip: A,
    pub mac: MacAddr,
}

/// `bridge fdb replace <mac> dev flannel.1 dst <public ip> self permanent`
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry<A: Family = Ipv4Addr> {
    pub mac: MacAddr,
    /// The peer's public address; for an IPv6 device, its PublicIPv6, as flanneld's dual-stack has it.
    pub dst: A,
}

/// `ip route replace <subnet> nhid <id of the gateway's nexthop>`, or in flanneld's form,
/// `ip route replace <subnet> via <subnet .0> dev flannel.1 onlink`
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteEntry<A: Family = Ipv4Addr> {
    pub subnet: A::Network,
    pub gateway: A,
    pub onlink: bool,
    /// The id of the [`Nexthop`] the route points at; `None` for a route that names its gateway.
    pub nexthop: Option<u32>,
}

/// `ip nexthop add id <id> via <gateway> dev flannel.1 onlink`: what a peer's route points at
/// where the kernel has nexthop objects (see `netlink/nexthop.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nexthop<A: Family = Ipv4Addr> {
    pub id: u32,
    pub gateway: A,
}

impl<A: Family> Nexthop<A> {
    /// The nexthop weftd writes for `gateway`, with the id [`nexthop_id`] gives it.
    pub fn for_gateway(gateway: A) -> Self {
        Self { id: nexthop_id(gateway), gateway }
    }
}

/// `ip route replace <subnet> via <peer's PublicIP>`: with `Backend.DirectRouting`, the route
/// to a peer this host reaches without a gateway; its packets skip VXLAN, as flanneld's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirectRoute<A: Family = Ipv4Addr> {
    pub subnet: A::Network,
    pub gateway: A,
}

/// The ARP, FDB, nexthop and route entries on our VXLAN device, and the direct routes to peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelState<A: Family = Ipv4Addr> {
    pub arp: BTreeSet<ArpEntry<A>>,
    pub fdb: BTreeSet<FdbEntry<A>>,
    pub nexthops: BTreeSet<Nexthop<A>>,
    pub routes: BTreeSet<RouteEntry<A>>,
    pub direct_routes: BTreeSet<DirectRoute<A>>,
}

// By hand: a derived `Default` would ask `A: Default`, which no address type is.
impl<A: Family> Default for KernelState<A> {
    fn default() -> Self {
        Self {
            arp: BTreeSet::new(),
            fdb: BTreeSet::new(),
            nexthops: BTreeSet::new(),
            routes: BTreeSet::new(),
            direct_routes: BTreeSet::new(),
        }
    }
}

impl<A: Family> KernelState<A> {
    /// Every entry of every kind.
    pub fn entry_count(&self) -> usize {
        self.arp.len() + self.fdb.len() + self.nexthops.len() + self.routes.len() + self.direct_routes.len()
    }

    /// One route per programmed peer, through VXLAN or direct.
    pub fn peer_count(&self) -> usize {
        self.routes.len() + self.direct_routes.len()
    }
}

/// The set of `entries`, built at once (every tree node full, where inserting thousands one by
/// one leaves nodes partly empty). Sorted in place first: `BTreeSet`'s own stable sort then
/// finds one run and never touches its scratch copy of the entries (peak RSS at thousands of
/// peers).
pub fn set_of<T: Ord>(mut entries: Vec<T>) -> BTreeSet<T> {
    entries.sort_unstable();
    entries.into_iter().collect()
}
