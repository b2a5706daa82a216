//! The kernel entries the leases ask for: a pure function of the leases, our own identity and
//! the kernel's facts (main table, nexthop support). Which leases are programmed, and which are
//! skipped and why, is decided here and nowhere else.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::config::NetworkConfig;
use crate::lease::{subnet_key, Lease, LeaseSet, BACKEND_VXLAN};
use crate::model::{vtep_address, ArpEntry, DirectRoute, FdbEntry, KernelContext, KernelState, MacAddr, RouteEntry};

/// A peer lease we cannot program, and why; logged once by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPeer {
    pub subnet: Ipv4Network,
    /// The rule the lease breaks, in words an operator can act on.
    pub reason: String,
}

impl SkippedPeer {
    /// The lease's key as written under `<prefix>/subnets/`, e.g. `10.5.3.2-32`: its address
    /// as given (a misaligned key keeps its host bits), so the operator can find and delete it.
    pub fn key(&self) -> String {
        format!("{}-{}", self.subnet.ip(), self.subnet.prefix())
    }
}

/// What identifies this host among the leases, so no lease can point our own subnet, address
/// or MAC into the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThisHost {
    /// Our lease's subnet, if we hold one.
    pub subnet: Option<Ipv4Network>,
    /// Our PublicIP: the underlay address peers send our VXLAN packets to.
    pub public_ip: Ipv4Addr,
    /// Our VXLAN device's MAC (our lease's VtepMAC), if we know it.
    pub vtep_mac: Option<MacAddr>,
}

/// The entries every peer lease needs on this host. Only leases the allocator could have handed
/// out are programmed, each VtepMAC has one owner, and every destination is a plausible host
/// (`check_peer`); the rest come back as [`SkippedPeer`]s. With `Backend.DirectRouting`,
/// a peer whose PublicIP the main table reaches on-link gets a direct route instead of VXLAN
/// entries. A VXLAN route points at a nexthop where the kernel allows it, and names its gateway
/// itself (flanneld's form) where it does not.
///
/// Where two leases conflict the established one wins (`by_establishment`), whatever the
/// map order, so every host programs the same peers. O(n log n) in the number of leases.
pub fn desired_state(
    config: &NetworkConfig,
    us: &ThisHost,
    leases: &LeaseSet,
    context: &KernelContext,
) -> (KernelState, Vec<SkippedPeer>) {
    let mut state = KernelState::default();
    let mut skipped = Vec::new();
    let mut mac_owners: HashMap<MacAddr, Ipv4Network> = HashMap::with_capacity(leases.leases.len());
    for lease in by_establishment(leases, us.subnet) {
        if let Err(reason) = check_peer(config, us, lease).and_then(|()| claim_vtep_mac(&mut mac_owners, lease)) {
            skipped.push(SkippedPeer { subnet: lease.subnet, reason });
            continue;
        }
        let public_ip = lease.attrs.public_ip;
        if config.backend.direct_routing && context.main_table.on_link(public_ip) {
            state.direct_routes.insert(DirectRoute { subnet: lease.subnet, gateway: public_ip });
            continue;
        }
        let vtep = vtep_address(lease.subnet);
        let mac = lease.attrs.backend_data.vtep_mac;
        state.arp.insert(ArpEntry { ip: vtep, mac });
        state.fdb.insert(FdbEntry { mac, dst: public_ip });
        let nexthop = context.nexthops.for_gateway(vtep);
        state.nexthops.extend(nexthop);
        state.routes.insert(RouteEntry { subnet: lease.subnet, gateway: vtep, onlink: true, nexthop: nexthop.map(|n| n.id) });
    }
    (state, skipped)
}

/// The peer leases (ours left out), the established first: the one that has advertised its
/// VtepMAC longest ([`LeaseSet::mac_since`]), so a key that copies a MAC later never takes it
/// however old the key; then the key etcd created earliest (flanneld's renewals rewrite a key
/// but keep its create revision), then the lower subnet, a total order every host computes
/// alike.
fn by_establishment(leases: &LeaseSet, own_subnet: Option<Ipv4Network>) -> Vec<&Lease> {
    let mut peers: Vec<&Lease> = leases.leases.values().filter(|l| Some(l.subnet) != own_subnet).collect();
    peers.sort_unstable_by_key(|l| (leases.mac_since(l), l.create_revision, l.subnet));
    peers
}

/// The rules one lease must meet on its own: the vxlan backend, a subnet the allocator could
/// have handed out, a plausible destination, and a VtepMAC that is not ours.
fn check_peer(config: &NetworkConfig, us: &ThisHost, lease: &Lease) -> Result<(), String> {
    // flanneld compares exactly: it ignores "VXLAN".
    if lease.attrs.backend_type != BACKEND_VXLAN {
        return Err(format!("backend type {:?} is not vxlan", lease.attrs.backend_type));
    }
    check_subnet(config, lease.subnet)?;
    check_destination(config, us, lease.attrs.public_ip)?;
    let mac = lease.attrs.backend_data.vtep_mac;
    if us.vtep_mac == Some(mac) {
        return Err(format!("its VtepMAC {mac} is this host's own VXLAN device's MAC"));
    }
    Ok(())
}

/// A subnet the allocator could have handed out: inside the Network, of SubnetLen, aligned,
/// between SubnetMin and SubnetMax. Such subnets never overlap unless equal, so a peer that
/// passes cannot cover our subnet, another lease's or its VTEP address (the subnet's `.0`).
fn check_subnet(config: &NetworkConfig, subnet: Ipv4Network) -> Result<(), String> {
    let network = config.network;
    if !network.contains(subnet.ip()) || subnet.prefix() < network.prefix() {
        return Err(format!("subnet is outside the Network {network}"));
    }
    let len = config.subnet_len;
    if subnet.prefix() != len {
        return Err(format!("subnet is a /{}, but the config's SubnetLen gives every host a /{len}", subnet.prefix()));
    }
    if subnet.ip() != subnet.network() {
        return Err(format!("{} is not the first address of a /{len} (that is {})", subnet.ip(), subnet.network()));
    }
    let (min, max) = (config.subnet_min, config.subnet_max);
    if subnet.ip() < min || subnet.ip() > max {
        return Err(format!("subnet is outside SubnetMin..SubnetMax ({min}..{max}), where no host gets a lease"));
    }
    Ok(())
}

/// A PublicIP VXLAN packets can be sent to: not ours, and not loopback, unspecified, broadcast,
/// multicast or an overlay address (that would send the tunnel into itself).
fn check_destination(config: &NetworkConfig, us: &ThisHost, ip: Ipv4Addr) -> Result<(), String> {
    let rule = if ip == us.public_ip {
        "is this host's own address"
    } else if ip.is_loopback() {
        "is a loopback address"
    } else if ip.is_unspecified() {
        "is the unspecified address"
    } else if ip.is_broadcast() {
        "is the broadcast address"
    } else if ip.is_multicast() {
        "is a multicast address"
    } else if config.network.contains(ip) {
        "is inside the overlay Network"
    } else {
        return Ok(());
    };
    Err(format!("its PublicIP {ip} {rule}"))
}

/// Gives the lease its VtepMAC unless an established lease already has it: one MAC with two
/// FDB destinations would flip between them at every pass.
fn claim_vtep_mac(owners: &mut HashMap<MacAddr, Ipv4Network>, lease: &Lease) -> Result<(), String> {
    let mac = lease.attrs.backend_data.vtep_mac;
    match owners.entry(mac) {
        Entry::Occupied(owner) => Err(format!("its VtepMAC {mac} belongs to the established lease {}", subnet_key(*owner.get()))),
        Entry::Vacant(free) => {
            free.insert(lease.subnet);
            Ok(())
        }
    }
}
