//! Unit tests of `desired` and `plan`: which leases become which entries, and which changes
//! move the kernel there.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::desired::{desired_state, SkippedPeer, ThisHost};
use super::plan::{plan, Plan};
use crate::config::NetworkConfig;
use crate::lease::{Lease, LeaseAttrs, LeaseId, LeaseSet};
use crate::model::{
    ArpEntry, DirectRoute, FdbEntry, KernelContext, KernelState, MacAddr, MainTable, Nexthop, NexthopSupport, RouteEntry,
};

fn config() -> NetworkConfig {
    NetworkConfig::parse(r#"{"Network":"10.5.0.0/16"}"#).unwrap()
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, last])
}

fn lease(subnet: &str, public_ip: [u8; 4], mac_last: u8) -> Lease {
    Lease {
        ipv6_subnet: None,
        subnet: Some(subnet.parse().unwrap()),
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
    LeaseSet { revision: Some(1), leases: leases.into_iter().map(|l| (l.id(), l)).collect(), ..Default::default() }
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
    let config = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#).unwrap();
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
    let config = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#).unwrap();
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
    let (state, skipped) = desired(vec![lease("10.5.1.0/24", [198, 18, 0, 11], 1), lease("10.5.2.0/24", [198, 18, 0, 12], 2)]);
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
    let misaligned = Lease { subnet: Ipv4Network::new(Ipv4Addr::new(10, 5, 7, 1), 24).ok(), ..lease("10.5.7.0/24", unknown, 15) };
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
    let (state, _) =
        desired(vec![lease_at("10.5.2.0/24", [198, 18, 0, 12], 2, (6, 8)), lease_at("10.5.3.0/24", [198, 18, 0, 13], 2, (5, 8))]);
    assert_eq!(routed(&state), ["10.5.3.0/24"], "same MAC age: the key created earlier wins");
    let (state, _) =
        desired(vec![lease_at("10.5.3.0/24", [198, 18, 0, 13], 2, (5, 5)), lease_at("10.5.2.0/24", [198, 18, 0, 12], 2, (5, 5))]);
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
    let peer = |subnet: LeaseId| SkippedPeer { subnet, reason: String::new() }.key();
    assert_eq!(peer("10.5.2.2/32".parse().unwrap()), "10.5.2.2-32");
    assert_eq!(peer(LeaseId::Ipv4(Ipv4Network::new(Ipv4Addr::new(10, 5, 7, 1), 24).unwrap())), "10.5.7.1-24");
    assert_eq!(peer("fd00:5:0:9::5/64".parse().unwrap()), "fd00:5:0:9::5-64", "an IPv6-only lease's key");
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
    let form = |state: &KernelState| state.routes.iter().map(|r| (r.subnet.to_string(), r.nexthop.is_some())).collect::<Vec<_>>();

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
