//! The kernel entries the leases ask for: a pure function of the leases, our own identity and
//! the kernel's facts (main table, nexthop support). Which leases are programmed, and which are
//! skipped and why, is decided here and nowhere else.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::config::NetworkConfig;
use crate::lease::{lease_key, BackendType, Lease, LeaseId, LeaseSet};
use crate::model::{
    set_of, vtep_address, ArpEntry, DirectRoute, Family, FdbEntry, KernelContext, KernelState, MacAddr, Nexthop, RouteEntry,
    Subnet,
};

/// A peer lease we cannot program, and why; logged once by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPeer {
    /// What names the lease among the leases: its IPv4 subnet, or an IPv6-only lease's IPv6 one.
    pub subnet: LeaseId,
    /// The rule the lease breaks, in words an operator can act on; for its IPv6 part alone,
    /// starting "its IPv6 part".
    pub reason: String,
}

impl SkippedPeer {
    /// The lease's key as written under `<prefix>/subnets/`, e.g. `10.5.3.2-32` (or an
    /// IPv6-only `fd00:5:0:3::-64`): its address as given (a misaligned key keeps its host
    /// bits), so the operator can find and delete it.
    pub fn key(&self) -> String {
        match self.subnet {
            LeaseId::Ipv4(subnet) => format!("{}-{}", subnet.ip(), subnet.prefix()),
            LeaseId::Ipv6(subnet) => format!("{}-{}", subnet.ip(), subnet.prefix()),
        }
    }

    /// The lease's whole key name in `leases`: as [`SkippedPeer::key`], with a dual-stack key's
    /// IPv6 part (`10.5.3.0-24&fd00:5:0:3::-64`), so the operator finds the key that etcd has.
    pub fn key_in(&self, leases: &LeaseSet) -> String {
        if let Some(name) = leases.keys.get(&self.subnet) {
            return name.clone();
        }
        match (self.subnet, leases.leases.get(&self.subnet).and_then(|lease| lease.ipv6_subnet)) {
            (LeaseId::Ipv4(_), Some(v6)) => format!("{}&{}-{}", self.key(), v6.ip(), v6.prefix()),
            _ => self.key(),
        }
    }
}

/// What identifies this host among the leases in family `A`, so no lease can point our own
/// subnet, address or MAC into the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThisHost<A: Family = Ipv4Addr> {
    /// Our lease's subnet of this family, if we hold one.
    pub subnet: Option<A::Network>,
    /// Our PublicIP (PublicIPv6): the underlay address peers send our VXLAN packets to.
    pub public_ip: A,
    /// Our VXLAN device's MAC of this family (the lease's VtepMAC), if we know it.
    pub vtep_mac: Option<MacAddr>,
}

/// One family's part of a peer lease: what its VXLAN entries are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPart<A: Family> {
    /// The subnet as its key writes it (host bits kept).
    pub subnet: A::Network,
    pub public_ip: A,
    pub vtep_mac: MacAddr,
}

/// The subnets the allocator hands out in one family: from the config's Network, SubnetLen,
/// SubnetMin and SubnetMax (or their IPv6 twins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation<A: Family> {
    pub network: A::Network,
    pub subnet_len: u8,
    pub min: A,
    pub max: A,
}

/// An address family as the leases carry it: where in a lease its part is, and which of the
/// config's fields allocate it.
pub trait LeaseFamily: Family {
    /// The config's field names for this family, for messages: `("", "Network")` or
    /// `("IPv6", "IPv6Network")`.
    const FIELDS: (&'static str, &'static str);

    /// This family's part of `lease`: `Ok(None)` when the lease has none (an IPv4-only peer
    /// under a dual-stack config), `Err` with the reason when it has a broken one.
    fn part(lease: &Lease) -> Result<Option<PeerPart<Self>>, String>;

    /// The subnets the config hands out in this family; `None` when it is not enabled.
    fn allocation(config: &NetworkConfig) -> Option<Allocation<Self>>;

    /// The etcd revision since which `lease` has advertised its VtepMAC of this family.
    fn mac_since(leases: &LeaseSet, lease: &Lease) -> i64;
}

impl LeaseFamily for Ipv4Addr {
    const FIELDS: (&'static str, &'static str) = ("", "Network");

    fn part(lease: &Lease) -> Result<Option<PeerPart<Self>>, String> {
        // A lease with an IPv4 subnet has a BackendData (see `Lease::check_main_part`).
        let (Some(subnet), Some(data)) = (lease.subnet, &lease.attrs.backend_data) else { return Ok(None) };
        Ok(Some(PeerPart { subnet, public_ip: lease.attrs.public_ip, vtep_mac: data.vtep_mac }))
    }

    fn allocation(config: &NetworkConfig) -> Option<Allocation<Self>> {
        let v4 = config.ipv4?;
        Some(Allocation { network: v4.network, subnet_len: v4.subnet_len, min: v4.subnet_min, max: v4.subnet_max })
    }

    fn mac_since(leases: &LeaseSet, lease: &Lease) -> i64 {
        leases.mac_since(lease)
    }
}

impl LeaseFamily for Ipv6Addr {
    const FIELDS: (&'static str, &'static str) = ("IPv6", "IPv6Network");

    fn part(lease: &Lease) -> Result<Option<PeerPart<Self>>, String> {
        let attrs = &lease.attrs;
        if let Some(problem) = &attrs.ipv6_error {
            return Err(format!("its IPv6 part cannot be read: {problem}"));
        }
        match (lease.ipv6_subnet, attrs.public_ipv6, &attrs.backend_v6_data) {
            // A PublicIPv6 alone makes no IPv6 peer: flanneld writes it with IPv6 off too.
            (None, _, None) => Ok(None),
            (Some(subnet), Some(public_ip), Some(data)) => Ok(Some(PeerPart { subnet, public_ip, vtep_mac: data.vtep_mac })),
            (None, _, Some(_)) => {
                Err("its IPv6 part is unusable: its value has a BackendV6Data but its key no IPv6 subnet".into())
            }
            (Some(_), _, _) => {
                Err("its IPv6 part is unusable: its key has an IPv6 subnet but its value no PublicIPv6 and BackendV6Data".into())
            }
        }
    }

    fn allocation(config: &NetworkConfig) -> Option<Allocation<Self>> {
        let v6 = config.ipv6?;
        Some(Allocation { network: v6.network, subnet_len: v6.subnet_len, min: v6.subnet_min, max: v6.subnet_max })
    }

    fn mac_since(leases: &LeaseSet, lease: &Lease) -> i64 {
        leases.ipv6_mac_since(lease)
    }
}

/// The entries every peer lease needs on this host in family `A` (the IPv4 entries on
/// flannel.1, or the IPv6 ones on flannel-v6.1). Only leases the allocator could have handed
/// out are programmed, each VtepMAC has one owner, and every destination is a plausible host
/// (`check_peer`); the rest come back as [`SkippedPeer`]s. A lease without a part of this
/// family is left out silently. With `Backend.DirectRouting`, a peer whose public address the
/// main table reaches on-link gets a direct route instead of VXLAN entries. A VXLAN route
/// points at a nexthop where the kernel allows it, and names its gateway itself (flanneld's
/// form) where it does not. Empty when the config does not enable the family.
///
/// Where two leases conflict the established one wins (`by_establishment`), whatever the
/// map order, so every host programs the same peers. O(n log n) in the number of leases.
pub fn desired_state<A: LeaseFamily>(
    config: &NetworkConfig,
    us: &ThisHost<A>,
    leases: &LeaseSet,
    context: &KernelContext<A>,
) -> (KernelState<A>, Vec<SkippedPeer>) {
    let mut state = Entries::default();
    let mut skipped = Vec::new();
    let Some(allocation) = A::allocation(config) else { return (KernelState::default(), skipped) };
    let peers = by_establishment(leases, us);
    let mut held = Held::with_capacity(peers.len());
    for (at, lease) in peers.iter().copied().enumerate() {
        let part = match checked_part(config, &allocation, us, lease).and_then(|p| held.claim(&peers, at, p)) {
            Ok(Some(part)) => part,
            Ok(None) => continue,
            Err(reason) => {
                skipped.push(SkippedPeer { subnet: lease.id(), reason });
                continue;
            }
        };
        if config.backend.direct_routing && context.main_table.on_link(part.public_ip) {
            state.direct_routes.push(DirectRoute { subnet: part.subnet, gateway: part.public_ip });
            continue;
        }
        let vtep = vtep_address(part.subnet);
        state.arp.push(ArpEntry { ip: vtep, mac: part.vtep_mac });
        state.fdb.push(FdbEntry { mac: part.vtep_mac, dst: part.public_ip });
        let nexthop = held.nexthop(context, vtep);
        state.nexthops.extend(nexthop);
        state.routes.push(RouteEntry { subnet: part.subnet, gateway: vtep, onlink: true, nexthop: nexthop.map(|n| n.id) });
    }
    // The claims' tables go before the sets are built: 0.5 MB at 5,000 peers, at the peak.
    drop(held);
    (state.into_state(), skipped)
}

/// A desired state's entries as they are found, in lease order, before they become sets.
struct Entries<A: Family> {
    arp: Vec<ArpEntry<A>>,
    fdb: Vec<FdbEntry<A>>,
    nexthops: Vec<Nexthop<A>>,
    routes: Vec<RouteEntry<A>>,
    direct_routes: Vec<DirectRoute<A>>,
}

// By hand: a derived `Default` would ask `A: Default`, which no address type is.
impl<A: Family> Default for Entries<A> {
    fn default() -> Self {
        Self { arp: Vec::new(), fdb: Vec::new(), nexthops: Vec::new(), routes: Vec::new(), direct_routes: Vec::new() }
    }
}

impl<A: Family> Entries<A> {
    /// The sets, each built at once from its sorted entries: that fills every tree node, where
    /// inserting one by one in lease order left them partly empty (the IPv6 state of 5,000
    /// dual-stack peers took 1.5 MB that way, against 1.1 MB for the same state read back).
    fn into_state(self) -> KernelState<A> {
        KernelState {
            arp: set_of(self.arp),
            fdb: set_of(self.fdb),
            nexthops: set_of(self.nexthops),
            routes: set_of(self.routes),
            direct_routes: set_of(self.direct_routes),
        }
    }
}

/// The lease's part of family `A` if it meets every rule on its own (see [`check_peer`]).
fn checked_part<A: LeaseFamily>(
    config: &NetworkConfig,
    allocation: &Allocation<A>,
    us: &ThisHost<A>,
    lease: &Lease,
) -> Result<Option<PeerPart<A>>, String> {
    // flanneld compares exactly: it ignores "VXLAN".
    if lease.attrs.backend_type != BackendType::Vxlan {
        return Err(format!("backend type {:?} is not vxlan", lease.attrs.backend_type.as_str()));
    }
    let Some(part) = A::part(lease)? else { return Ok(None) };
    check_peer(config, allocation, us, &part).map_err(|reason| match A::FIELDS.0 {
        "" => reason,
        family => format!("its {family} part: {reason}"),
    })?;
    Ok(Some(part))
}

/// The peer leases (ours, the one whose part of family `A` is our subnet, left out), the established first: the one that has advertised its
/// VtepMAC of this family longest ([`LeaseSet::mac_since`]), so a key that copies a MAC later never takes it
/// however old the key; then the key etcd created earliest (flanneld's renewals rewrite a key
/// but keep its create revision), then the lower subnet, a total order every host computes
/// alike.
fn by_establishment<'s, A: LeaseFamily>(leases: &'s LeaseSet, us: &ThisHost<A>) -> Vec<&'s Lease> {
    let ours = |l: &Lease| us.subnet.is_some() && matches!(A::part(l), Ok(Some(part)) if Some(part.subnet) == us.subnet);
    let mut peers: Vec<&Lease> = leases.leases.values().filter(|l| !ours(l)).collect();
    peers.sort_unstable_by_key(|l| (A::mac_since(leases, l), l.create_revision, l.id()));
    peers
}

/// The rules one family's part must meet on its own: a subnet the allocator could have
/// handed out, a plausible destination, and a VtepMAC that is not ours.
fn check_peer<A: LeaseFamily>(
    config: &NetworkConfig,
    allocation: &Allocation<A>,
    us: &ThisHost<A>,
    part: &PeerPart<A>,
) -> Result<(), String> {
    check_subnet(allocation, part.subnet)?;
    check_destination(config, us, part.public_ip)?;
    let mac = part.vtep_mac;
    if us.vtep_mac == Some(mac) {
        return Err(format!("its VtepMAC {mac} is this host's own VXLAN device's MAC"));
    }
    Ok(())
}

/// A subnet the allocator could have handed out: inside the Network, of SubnetLen, aligned,
/// between SubnetMin and SubnetMax. Such subnets never overlap unless equal, so a peer that
/// passes cannot cover our subnet, another lease's or its VTEP address (the subnet's first).
fn check_subnet<A: LeaseFamily>(allocation: &Allocation<A>, subnet: A::Network) -> Result<(), String> {
    let (family, network_field) = A::FIELDS;
    let network = allocation.network;
    if !network.holds(subnet.written_address()) || subnet.prefix_len() < network.prefix_len() {
        return Err(format!("subnet is outside the {network_field} {network}"));
    }
    let len = allocation.subnet_len;
    if subnet.prefix_len() != len {
        return Err(format!(
            "subnet is a /{}, but the config's {family}SubnetLen gives every host a /{len}",
            subnet.prefix_len()
        ));
    }
    if subnet.written_address() != subnet.network_address() {
        return Err(format!(
            "{} is not the first address of a /{len} (that is {})",
            subnet.written_address(),
            subnet.network_address()
        ));
    }
    let (min, max) = (allocation.min, allocation.max);
    if subnet.written_address() < min || subnet.written_address() > max {
        return Err(format!("subnet is outside {family}SubnetMin..{family}SubnetMax ({min}..{max}), where no host gets a lease"));
    }
    Ok(())
}

/// A public address VXLAN packets can be sent to: not ours, not one no host has (loopback,
/// multicast…), and not an overlay address (that would send the tunnel into itself).
fn check_destination<A: LeaseFamily>(config: &NetworkConfig, us: &ThisHost<A>, ip: A) -> Result<(), String> {
    let field = if A::FIELDS.0.is_empty() { "PublicIP" } else { "PublicIPv6" };
    let in_overlay = A::allocation(config).is_some_and(|a| a.network.holds(ip));
    let rule = if ip == us.public_ip {
        "is this host's own address"
    } else if let Some(rule) = ip.unreachable_as_peer() {
        rule
    } else if in_overlay {
        "is inside the overlay Network"
    } else {
        return Ok(());
    };
    Err(format!("its {field} {ip} {rule}"))
}

/// What the established leases already hold in one family: each VtepMAC (one MAC with two FDB
/// destinations would flip between them at every pass), each subnet (an IPv6 subnet comes from
/// a key's name, and two keys can name one), and each nexthop id (an IPv6 id is a fold of the
/// gateway, and two gateways can fold to one).
struct Held<A: Family> {
    /// Owners by their place in the peers' establishment order: a `u32` where a `LeaseId`
    /// would take 18 bytes, at thousands of entries per table.
    macs: HashMap<MacAddr, u32>,
    subnets: HashMap<A::Network, u32>,
    nexthop_ids: HashMap<u32, A>,
}

impl<A: Family> Held<A> {
    fn with_capacity(leases: usize) -> Self {
        Self {
            macs: HashMap::with_capacity(leases),
            subnets: HashMap::with_capacity(leases),
            nexthop_ids: HashMap::with_capacity(leases),
        }
    }

    /// Gives `peers[at]` its part's VtepMAC and subnet unless an established lease (one before
    /// it in `peers`) holds either.
    fn claim(&mut self, peers: &[&Lease], at: usize, part: Option<PeerPart<A>>) -> Result<Option<PeerPart<A>>, String> {
        let Some(part) = part else { return Ok(None) };
        let family = if A::HOST_PREFIX == 32 { String::new() } else { "IPv6 ".to_string() };
        let owner = |at: &u32| lease_key(peers[*at as usize].id(), None);
        if let Some(owner) = self.macs.get(&part.vtep_mac).map(owner) {
            return Err(format!("its {family}VtepMAC {} belongs to the established lease {owner}", part.vtep_mac));
        }
        if let Some(owner) = self.subnets.get(&part.subnet).map(owner) {
            return Err(format!("its {family}subnet {} belongs to the established lease {owner}", part.subnet));
        }
        // Fewer than 2^32 leases: a listing of that many is far past any etcd response limit.
        let at = at as u32;
        self.macs.insert(part.vtep_mac, at);
        self.subnets.insert(part.subnet, at);
        Ok(Some(part))
    }

    /// The nexthop for `gateway` where the kernel allows one and no established peer's gateway
    /// holds its id; `None` gives the route flanneld's form (it names its gateway itself).
    fn nexthop(&mut self, context: &KernelContext<A>, gateway: A) -> Option<Nexthop<A>> {
        let nexthop = context.nexthops.for_gateway(gateway)?;
        match self.nexthop_ids.entry(nexthop.id) {
            Entry::Occupied(holder) => (*holder.get() == gateway).then_some(nexthop),
            Entry::Vacant(free) => {
                free.insert(gateway);
                Some(nexthop)
            }
        }
    }
}
