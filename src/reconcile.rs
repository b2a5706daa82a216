//! Desired kernel state as a pure function of the leases, and the plan that moves the kernel there.
//!
//! The reconciler never replays lease events: it compares the whole desired state with what the
//! kernel holds on our device and applies the difference. A restart, a missed watch event or a
//! hand-deleted route all end in the same state.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::config::NetworkConfig;
use crate::lease::{subnet_key, Lease, LeaseSet, BACKEND_VXLAN};
use crate::model::{vtep_address, MacAddr};
// The entries and kernel facts moved to `model`; re-exported so callers keep their paths until
// this module is reshaped.
pub use crate::model::{
    ArpEntry, DirectRoute, FdbEntry, KernelContext, KernelState, MainTable, Nexthop, NexthopSupport, RouteEntry,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseAttrs;

    fn config() -> NetworkConfig {
        NetworkConfig::parse(r#"{"Network":"10.5.0.0/16"}"#).unwrap()
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    fn lease(subnet: &str, public_ip: [u8; 4], mac_last: u8) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs::vxlan(Ipv4Addr::from(public_ip), 1, mac(mac_last)),
            etcd_lease: Some(crate::lease::EtcdLeaseId(7)),
            mod_revision: 1,
            create_revision: 1,
        }
    }

    /// `lease`, its key created at etcd revision `created` and last written at `modified`.
    fn lease_at(subnet: &str, public_ip: [u8; 4], mac_last: u8, (created, modified): (i64, i64)) -> Lease {
        Lease { create_revision: created, mod_revision: modified, ..lease(subnet, public_ip, mac_last) }
    }

    fn lease_set(leases: Vec<Lease>) -> LeaseSet {
        LeaseSet { revision: Some(1), leases: leases.into_iter().map(|l| (l.subnet, l)).collect(), ..Default::default() }
    }

    const OWN_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

    fn desired(leases: Vec<Lease>) -> (KernelState, Vec<SkippedPeer>) {
        desired_in(&lab_kernel(), leases)
    }

    fn desired_in(context: &KernelContext, leases: Vec<Lease>) -> (KernelState, Vec<SkippedPeer>) {
        desired_state(&config(), &us(), &lease_set(leases), context)
    }

    /// This host: 10.5.1.0/24 at OWN_IP, its device's MAC `mac(1)`.
    fn us() -> ThisHost {
        ThisHost { subnet: Some("10.5.1.0/24".parse().unwrap()), public_ip: OWN_IP, vtep_mac: Some(mac(1)) }
    }

    /// This host before it holds a lease.
    fn no_lease_yet() -> ThisHost {
        ThisHost { subnet: None, vtep_mac: None, ..us() }
    }

    /// Why `subnet`'s lease was skipped; empty if it was not.
    fn reason_for(skipped: &[SkippedPeer], subnet: &str) -> String {
        skipped.iter().find(|s| s.subnet.to_string() == subnet).map(|s| s.reason.clone()).unwrap_or_default()
    }

    /// The subnets that got a route.
    fn routed(state: &KernelState) -> Vec<String> {
        state.routes.iter().map(|r| r.subnet.to_string()).collect()
    }

    /// 198.18.0.0/24 on-link, everything else through a default gateway.
    fn underlay_table() -> MainTable {
        MainTable::new([("0.0.0.0/0".parse().unwrap(), true), ("198.18.0.0/24".parse().unwrap(), false)])
    }

    /// That main table, on a kernel with nexthop objects and no other program's nexthops.
    fn lab_kernel() -> KernelContext {
        KernelContext { main_table: underlay_table(), nexthops: NexthopSupport::Available { taken: BTreeSet::new() } }
    }

    #[test]
    fn direct_routing_routes_on_link_peers_directly_and_the_rest_through_vxlan() {
        let config =
            NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#).unwrap();
        let leases = lease_set(vec![lease("10.5.2.0/24", [198, 18, 0, 12], 2), lease("10.5.3.0/24", [203, 0, 113, 5], 3)]);
        let (state, skipped) = desired_state(&config, &no_lease_yet(), &leases, &lab_kernel());
        assert!(skipped.is_empty());
        let direct = DirectRoute { subnet: "10.5.2.0/24".parse().unwrap(), gateway: Ipv4Addr::new(198, 18, 0, 12) };
        assert_eq!(state.direct_routes, BTreeSet::from([direct]));
        assert_eq!(state.routes.iter().map(|r| r.subnet.to_string()).collect::<Vec<_>>(), ["10.5.3.0/24"]);
        let vxlan_entries = (state.arp.len(), state.fdb.len(), state.nexthops.len());
        assert_eq!((vxlan_entries, state.peer_count()), ((1, 1, 1), 2), "no VXLAN entries for the direct peer");
    }

    #[test]
    fn a_peer_changing_form_gets_the_new_route_and_loses_the_old_entries() {
        let config =
            NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#).unwrap();
        let leases = lease_set(vec![lease("10.5.2.0/24", [198, 18, 0, 12], 2)]);
        let (direct, _) = desired_state(&config, &no_lease_yet(), &leases, &lab_kernel());
        let (vxlan, _) = desired(vec![lease("10.5.2.0/24", [198, 18, 0, 12], 2)]);
        let to_direct = plan(&direct, &vxlan);
        assert_eq!((to_direct.add.direct_routes.len(), to_direct.add.entry_count()), (1, 1));
        assert_eq!(to_direct.remove, vxlan, "the VXLAN route, nexthop, ARP and FDB entries go");
        let to_vxlan = plan(&vxlan, &direct);
        assert_eq!((&to_vxlan.add, &to_vxlan.remove), (&vxlan, &direct));

        let failed = BTreeSet::from(["10.5.2.0/24".parse().unwrap()]);
        assert_eq!(to_direct.removals_keeping(&failed), KernelState::default(), "the VXLAN form stays whole");
        assert_eq!(to_direct.removals_keeping(&BTreeSet::new()), vxlan);
        assert_eq!(to_vxlan.removals_keeping(&failed), KernelState::default(), "the direct route stays");
    }

    #[test]
    fn each_peer_gets_arp_fdb_and_route_but_not_us() {
        let (state, skipped) =
            desired(vec![lease("10.5.1.0/24", [198, 18, 0, 11], 1), lease("10.5.2.0/24", [198, 18, 0, 12], 2)]);
        assert!(skipped.is_empty());
        let vtep = Ipv4Addr::new(10, 5, 2, 0);
        assert_eq!(state.arp, BTreeSet::from([ArpEntry { ip: vtep, mac: mac(2) }]));
        assert_eq!(state.fdb, BTreeSet::from([FdbEntry { mac: mac(2), dst: Ipv4Addr::new(198, 18, 0, 12) }]));
        assert_eq!(
            state.routes,
            BTreeSet::from([RouteEntry {
                subnet: "10.5.2.0/24".parse().unwrap(),
                gateway: vtep,
                onlink: true,
                nexthop: Some(u32::from(vtep))
            }])
        );
        assert_eq!(state.nexthops, BTreeSet::from([Nexthop::for_gateway(vtep)]));
    }

    #[test]
    fn unusable_peers_are_skipped_with_a_reason() {
        let mut other_backend = lease("10.5.4.0/24", [198, 18, 0, 14], 4);
        other_backend.attrs.backend_type = "host-gw".into();
        let (state, skipped) = desired(vec![
            lease("10.6.3.0/24", [198, 18, 0, 13], 3),
            other_backend,
            lease("10.5.5.0/24", [198, 18, 0, 11], 5),
            lease("10.5.6.0/24", [198, 18, 0, 16], 6),
        ]);
        let reason = |subnet: &str| reason_for(&skipped, subnet);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(reason("10.6.3.0/24").contains("outside the Network"));
        assert!(reason("10.5.4.0/24").contains("not vxlan"));
        assert!(reason("10.5.5.0/24").contains("own address"));
        assert_eq!(state.entry_count(), 4, "ARP, FDB, nexthop and route of the one good peer");
    }

    #[test]
    fn only_subnets_the_allocator_could_hand_out_are_programmed() {
        let config = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.99.0"}"#).unwrap();
        let unknown = [198, 18, 0, 99];
        // The bad leases are all older than the good one: their age buys them nothing.
        let misaligned =
            Lease { subnet: Ipv4Network::new(Ipv4Addr::new(10, 5, 7, 1), 24).unwrap(), ..lease("10.5.7.0/24", unknown, 15) };
        let mut leases = vec![
            lease_at("10.5.2.2/32", unknown, 10, (1, 1)),
            lease_at("10.5.2.2/31", unknown, 11, (2, 2)),
            lease_at("10.5.1.0/25", unknown, 12, (3, 3)),
            lease_at("10.5.0.0/16", unknown, 13, (4, 4)),
            lease_at("10.5.0.0/24", unknown, 14, (5, 5)),
            lease_at("10.5.200.0/24", unknown, 16, (6, 6)),
            lease_at("10.5.2.0/24", [198, 18, 0, 12], 2, (50, 50)),
        ];
        leases.push(misaligned);
        let (state, skipped) = desired_state(&config, &us(), &lease_set(leases), &lab_kernel());
        assert_eq!(routed(&state), ["10.5.2.0/24"]);
        assert_eq!(state.arp.iter().map(|e| e.ip).collect::<Vec<_>>(), [Ipv4Addr::new(10, 5, 2, 0)], "one VTEP address");
        for (subnet, rule) in [
            ("10.5.2.2/32", "is a /32, but the config's SubnetLen gives every host a /24"),
            ("10.5.2.2/31", "is a /31"),
            ("10.5.1.0/25", "is a /25"),
            ("10.5.0.0/16", "is a /16"),
            ("10.5.0.0/24", "outside SubnetMin..SubnetMax (10.5.1.0..10.5.99.0)"),
            ("10.5.200.0/24", "outside SubnetMin..SubnetMax"),
            ("10.5.7.1/24", "10.5.7.1 is not the first address of a /24 (that is 10.5.7.0)"),
        ] {
            assert!(reason_for(&skipped, subnet).contains(rule), "{subnet}: {skipped:?}");
        }
        assert_eq!(skipped.len(), 7);
    }

    #[test]
    fn a_vtep_mac_stays_with_the_established_lease_whatever_the_key_order() {
        let (older, newer) = ((5, 5), (9, 9));
        for (low_key_age, high_key_age, owner, newcomer) in
            [(older, newer, "10.5.2.0/24", "10.5.3.0/24"), (newer, older, "10.5.3.0/24", "10.5.2.0/24")]
        {
            let (state, skipped) = desired(vec![
                lease_at("10.5.2.0/24", [198, 18, 0, 12], 2, low_key_age),
                lease_at("10.5.3.0/24", [198, 18, 0, 13], 2, high_key_age),
            ]);
            assert_eq!(routed(&state), [owner]);
            let owner_key = owner.replace('/', "-");
            assert_eq!(
                reason_for(&skipped, newcomer),
                format!("its VtepMAC 02:00:00:00:00:02 belongs to the established lease {owner_key}")
            );
            assert_eq!(state.fdb.len(), 1, "one destination for the MAC: {:?}", state.fdb);
        }
    }

    #[test]
    fn a_mac_stays_with_the_lease_that_advertised_it_first_however_old_the_other_key() {
        // 10.5.3.0/24's key is older, but copied the MAC at revision 40, after 10.5.2.0/24 had it.
        let mut leases = lease_set(vec![
            lease_at("10.5.2.0/24", [198, 18, 0, 12], 2, (20, 20)),
            lease_at("10.5.3.0/24", [198, 18, 0, 13], 2, (5, 40)),
        ]);
        let (state, skipped) = desired_state(&config(), &us(), &leases, &lab_kernel());
        assert_eq!(routed(&state), ["10.5.2.0/24"]);
        assert!(reason_for(&skipped, "10.5.3.0/24").contains("belongs to the established lease 10.5.2.0-24"), "{skipped:?}");
        // Rewritten since (a renewal by put) with the same MAC: it still counts from revision 20.
        leases.mac_since = [("10.5.2.0/24".parse().unwrap(), 20), ("10.5.3.0/24".parse().unwrap(), 40)].into();
        leases.leases.values_mut().for_each(|l| l.mod_revision = 60);
        let (state, _) = desired_state(&config(), &us(), &leases, &lab_kernel());
        assert_eq!(routed(&state), ["10.5.2.0/24"]);
    }

    #[test]
    fn ties_in_mac_age_go_to_the_older_key_then_the_lower_subnet() {
        let (state, _) = desired(vec![
            lease_at("10.5.2.0/24", [198, 18, 0, 12], 2, (6, 8)),
            lease_at("10.5.3.0/24", [198, 18, 0, 13], 2, (5, 8)),
        ]);
        assert_eq!(routed(&state), ["10.5.3.0/24"], "same MAC age: the key created earlier wins");
        let (state, _) = desired(vec![
            lease_at("10.5.3.0/24", [198, 18, 0, 13], 2, (5, 5)),
            lease_at("10.5.2.0/24", [198, 18, 0, 12], 2, (5, 5)),
        ]);
        assert_eq!(routed(&state), ["10.5.2.0/24"], "a full tie: the lower subnet");
    }

    #[test]
    fn a_skipped_lease_claims_no_mac_and_ours_is_never_given_away() {
        let (state, skipped) = desired(vec![
            lease_at("10.5.2.0/24", [127, 0, 0, 1], 2, (1, 1)),
            lease_at("10.5.3.0/24", [198, 18, 0, 13], 2, (9, 9)),
            lease_at("10.5.4.0/24", [198, 18, 0, 14], 1, (2, 2)),
        ]);
        assert_eq!(routed(&state), ["10.5.3.0/24"], "the older lease is refused, so the MAC is free");
        assert_eq!(reason_for(&skipped, "10.5.4.0/24"), "its VtepMAC 02:00:00:00:00:01 is this host's own VXLAN device's MAC");
        assert_eq!(skipped.len(), 2);
    }

    #[test]
    fn nonsense_destinations_are_skipped() {
        let cases = [
            ([127, 0, 0, 1], "its PublicIP 127.0.0.1 is a loopback address"),
            ([0, 0, 0, 0], "its PublicIP 0.0.0.0 is the unspecified address"),
            ([255, 255, 255, 255], "its PublicIP 255.255.255.255 is the broadcast address"),
            ([224, 0, 0, 1], "its PublicIP 224.0.0.1 is a multicast address"),
            ([10, 5, 2, 2], "its PublicIP 10.5.2.2 is inside the overlay Network"),
        ];
        let leases =
            cases.iter().enumerate().map(|(i, (ip, _))| lease(&format!("10.5.{}.0/24", i + 10), *ip, i as u8 + 10)).collect();
        let (state, skipped) = desired(leases);
        assert_eq!(state, KernelState::default());
        for (i, (_, reason)) in cases.iter().enumerate() {
            assert_eq!(reason_for(&skipped, &format!("10.5.{}.0/24", i + 10)), *reason);
        }
    }

    #[test]
    fn a_skipped_peer_is_named_by_its_key_as_written() {
        let peer = |subnet: Ipv4Network| SkippedPeer { subnet, reason: String::new() }.key();
        assert_eq!(peer("10.5.2.2/32".parse().unwrap()), "10.5.2.2-32");
        assert_eq!(peer(Ipv4Network::new(Ipv4Addr::new(10, 5, 7, 1), 24).unwrap()), "10.5.7.1-24");
    }

    #[test]
    fn plan_adds_missing_and_removes_unexplained_entries() {
        let (want, _) = desired(vec![lease("10.5.2.0/24", [198, 18, 0, 12], 2)]);
        let (stale, _) = desired(vec![lease("10.5.3.0/24", [198, 18, 0, 13], 3)]);
        let p = plan(&want, &stale);
        assert_eq!(p.add, want);
        assert_eq!(p.remove, stale);
        assert!(plan(&want, &want).is_empty());
    }

    #[test]
    fn changed_mac_replaces_arp_in_place_and_drops_the_old_fdb_entry() {
        let (old, _) = desired(vec![lease("10.5.2.0/24", [198, 18, 0, 12], 2)]);
        let (new, _) = desired(vec![lease("10.5.2.0/24", [198, 18, 0, 12], 9)]);
        let p = plan(&new, &old);
        assert_eq!(p.add.arp.len() + p.add.fdb.len(), 2);
        assert!(p.add.routes.is_empty());
        assert!(p.remove.arp.is_empty(), "ARP is replaced in place, not deleted");
        assert_eq!(p.remove.fdb, old.fdb, "the old MAC's FDB entry must go");
    }

    #[test]
    fn a_route_without_onlink_is_replaced_not_deleted() {
        let (want, _) = desired(vec![lease("10.5.2.0/24", [198, 18, 0, 12], 2)]);
        let mut actual = want.clone();
        let route = *actual.routes.iter().next().unwrap();
        actual.routes = BTreeSet::from([RouteEntry { onlink: false, ..route }]);
        let p = plan(&want, &actual);
        assert_eq!(p.add.routes, want.routes);
        assert!(p.remove.routes.is_empty());
    }

    #[test]
    fn routes_take_flanneld_form_without_nexthops_or_where_another_program_holds_the_id() {
        let peers = || vec![lease("10.5.2.0/24", [198, 18, 0, 12], 2), lease("10.5.3.0/24", [198, 18, 0, 13], 3)];
        let form =
            |state: &KernelState| state.routes.iter().map(|r| (r.subnet.to_string(), r.nexthop.is_some())).collect::<Vec<_>>();

        let old_kernel = KernelContext { main_table: underlay_table(), nexthops: NexthopSupport::Unavailable };
        let (state, _) = desired_in(&old_kernel, peers());
        assert_eq!(form(&state), [("10.5.2.0/24".into(), false), ("10.5.3.0/24".into(), false)]);
        assert!(state.nexthops.is_empty());

        let taken = BTreeSet::from([Nexthop::for_gateway(Ipv4Addr::new(10, 5, 3, 0)).id]);
        let shared = KernelContext { main_table: underlay_table(), nexthops: NexthopSupport::Available { taken } };
        let (state, _) = desired_in(&shared, peers());
        assert_eq!(form(&state), [("10.5.2.0/24".into(), true), ("10.5.3.0/24".into(), false)]);
        assert_eq!(state.nexthops, BTreeSet::from([Nexthop::for_gateway(Ipv4Addr::new(10, 5, 2, 0))]));
    }

    #[test]
    fn a_flanneld_form_route_moves_to_a_nexthop_in_place_and_stray_nexthops_go() {
        let (want, _) = desired(vec![lease("10.5.2.0/24", [198, 18, 0, 12], 2)]);
        let mut actual = want.clone();
        actual.routes = actual.routes.iter().map(|r| RouteEntry { nexthop: None, ..*r }).collect();
        actual.nexthops = BTreeSet::from([Nexthop::for_gateway(Ipv4Addr::new(10, 5, 9, 0))]);
        let p = plan(&want, &actual);
        assert_eq!((&p.add.routes, &p.add.nexthops), (&want.routes, &want.nexthops), "route replaced, nexthop added");
        assert_eq!(p.remove, KernelState { nexthops: actual.nexthops.clone(), ..Default::default() }, "only the stray nexthop");
    }

    #[test]
    fn a_nexthop_pointing_elsewhere_is_rewritten_in_place_and_a_failed_switch_keeps_the_nexthop_its_route_uses() {
        let (want, _) = desired(vec![lease("10.5.2.0/24", [198, 18, 0, 12], 2)]);
        let vtep_nexthop = *want.nexthops.first().unwrap();
        let mut actual = want.clone();
        actual.nexthops = BTreeSet::from([Nexthop { gateway: Ipv4Addr::new(10, 5, 9, 0), ..vtep_nexthop }]);
        let p = plan(&want, &actual);
        assert_eq!(p.rewrite_nexthops, want.nexthops, "same id, right gateway again");
        assert!(p.add.nexthops.is_empty() && p.remove.nexthops.is_empty(), "{p:?}");

        // The peer's old VXLAN route points at a hand-made nexthop 0.0.0.7; a switch to a
        // direct route fails: the route and the nexthop it points at both stay.
        let old_nexthop = Nexthop { id: 7, gateway: Ipv4Addr::new(10, 5, 2, 0) };
        let old_route = RouteEntry { nexthop: Some(7), ..*want.routes.first().unwrap() };
        let to_direct = Plan {
            remove: KernelState { nexthops: [old_nexthop].into(), routes: [old_route].into(), ..Default::default() },
            ..Default::default()
        };
        let failed = BTreeSet::from([old_route.subnet]);
        assert_eq!(to_direct.removals_keeping(&failed), KernelState::default());
    }
}
