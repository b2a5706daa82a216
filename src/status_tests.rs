//! Unit tests of `weftd status`'s assessment and report.

use super::*;
use crate::lease::{LeaseAttrs, MacAddr};
use crate::model::{ArpEntry, DirectRoute, FdbEntry, MainTable, RouteEntry};

fn lease(subnet: &str, ip: [u8; 4], mac: u8) -> Lease {
    Lease {
        ipv6_subnet: None,
        subnet: subnet.parse().unwrap(),
        attrs: LeaseAttrs::vxlan(Ipv4Addr::from(ip), 1, MacAddr([2, 0, 0, 0, 0, mac])),
        etcd_lease: Some(EtcdLeaseId(7)),
        mod_revision: 1,
        create_revision: 1,
    }
}

fn observed(kernel: Option<KernelState>) -> Observed {
    Observed {
        config: NetworkConfig::parse(r#"{"Network":"10.5.0.0/16"}"#).unwrap(),
        public_ip: Ipv4Addr::new(198, 18, 0, 11),
        leases: vec![lease("10.5.1.0/24", [198, 18, 0, 11], 1), lease("10.5.2.0/24", [198, 18, 0, 12], 2)],
        ttls: [(EtcdLeaseId(7), Some(3600))].into(),
        malformed: vec![],
        kernel,
        device: None,
        underlay: Ok(underlay()),
        context: KernelContext::default(),
        names: None,
    }
}

fn underlay() -> Underlay {
    Underlay::example()
}

fn correct_kernel() -> KernelState {
    let vtep = Ipv4Addr::new(10, 5, 2, 0);
    KernelState {
        arp: [ArpEntry { ip: vtep, mac: MacAddr([2, 0, 0, 0, 0, 2]) }].into(),
        fdb: [FdbEntry { mac: MacAddr([2, 0, 0, 0, 0, 2]), dst: Ipv4Addr::new(198, 18, 0, 12) }].into(),
        routes: [RouteEntry { subnet: "10.5.2.0/24".parse().unwrap(), gateway: vtep, onlink: true, nexthop: None }].into(),
        ..Default::default()
    }
}

#[test]
fn a_correct_kernel_is_healthy() {
    let status = assess(&observed(Some(correct_kernel())));
    assert!(status.healthy, "{status:?}");
    assert_eq!(status.own_subnet, Some("10.5.1.0/24".parse().unwrap()));
    assert!(status.leases[0].this_host && status.leases[0].route == Check::NotApplicable);
    assert_eq!((status.leases[1].route, status.leases[1].arp, status.leases[1].fdb), (Check::Ok, Check::Ok, Check::Ok));
    assert!(render(&status).contains("healthy") && render(&status).contains("1h00m00s"));
}

#[test]
fn missing_and_wrong_entries_are_named() {
    let mut kernel = correct_kernel();
    kernel.routes.clear();
    kernel.fdb = [FdbEntry { mac: MacAddr([2, 0, 0, 0, 0, 2]), dst: Ipv4Addr::new(198, 18, 0, 99) }].into();
    let status = assess(&observed(Some(kernel)));
    assert!(!status.healthy);
    assert_eq!((status.leases[1].route, status.leases[1].arp, status.leases[1].fdb), (Check::Missing, Check::Ok, Check::Wrong));
    assert!(render(&status).contains("MISSING") && render(&status).contains("NOT healthy"));
    assert!(!assess(&observed(None)).healthy, "no device is not healthy");
}

#[test]
fn a_direct_peer_needs_its_direct_route_and_no_vxlan_entries() {
    let mut observed = observed(Some(KernelState::default()));
    observed.config = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"DirectRouting":true}}"#).unwrap();
    observed.context.main_table = MainTable::new(["198.18.0.0/24".parse().map(|n| (n, false)).unwrap()]);
    let peer = |status: &Status| (status.leases[1].direct, status.leases[1].route, status.leases[1].arp);
    let status = assess(&observed);
    assert_eq!(peer(&status), (true, Check::Missing, Check::NotApplicable));
    let direct = DirectRoute { subnet: "10.5.2.0/24".parse().unwrap(), gateway: Ipv4Addr::new(198, 18, 0, 12) };
    observed.kernel = Some(KernelState { direct_routes: [direct].into(), ..Default::default() });
    let status = assess(&observed);
    assert_eq!(peer(&status), (true, Check::Ok, Check::NotApplicable));
    assert!(status.healthy && render(&status).contains("(direct route)"), "{}", render(&status));
    observed.kernel = Some(correct_kernel());
    assert_eq!(peer(&assess(&observed)).1, Check::Wrong, "a VXLAN route where a direct one belongs");
}

#[test]
fn device_drift_is_reported_while_it_lasts() {
    let mut observed = observed(Some(correct_kernel()));
    let wanted = device::desired_device(&observed.config, &underlay(), MacAddr([2, 0, 0, 0, 0, 1]));
    observed.device = Some(wanted.clone());
    assert!(assess(&observed).healthy, "the device as the lease asks");
    observed.device =
        Some(VxlanSpec { mac: MacAddr([2, 0x11, 0, 0, 0, 9]), local: Ipv4Addr::new(10, 0, 0, 9), ..wanted.clone() });
    let status = assess(&observed);
    assert!(!status.healthy);
    assert_eq!(
        status.device_drift,
        ["flannel.1: MAC 02:11:00:00:00:09, lease says 02:00:00:00:00:01", "flannel.1: local 10.0.0.9, underlay has 198.18.0.11"]
    );
    let text = render(&status);
    assert!(text.contains("drift      flannel.1: local 10.0.0.9, underlay has 198.18.0.11\n"), "{text}");
    // Without an underlay (`--public-ip` given, the NIC gone or renamed) the problem is
    // shown, and the device is still checked against the config and the lease.
    observed.underlay = Err("no usable underlay interface: no interface matches --iface [\"eth0\"]".into());
    observed.device = Some(VxlanSpec { mtu: 1300, port: 4789, ..wanted.clone() });
    let status = assess(&observed);
    assert_eq!(status.device_drift, ["flannel.1: dstport 4789, config says 8472"], "the MTU follows the missing underlay");
    observed.device = Some(VxlanSpec { underlay_index: None, ..wanted.clone() });
    assert!(assess(&observed).device_drift.is_empty(), "a device bound to no link stands in for the missing one");
    assert!(
        render(&status).contains("underlay   no usable underlay interface: no interface matches --iface"),
        "{}",
        render(&status)
    );
}

#[test]
fn with_names_this_hosts_names_are_listed() {
    let mut observed = observed(Some(correct_kernel()));
    let key = |key: &str, value: &str| NameKey { key: key.into(), value: value.into(), etcd_lease: Some(EtcdLeaseId(9)) };
    let keys = vec![
        key("/skydns/local/weft/db/0123456789ab", r#"{"host":"10.5.1.2","ttl":30}"#),
        key("/skydns/local/weft/db/0123456789ab-6379-tcp", r#"{"host":"10.5.1.2","port":6379,"ttl":30}"#),
        key("/skydns/local/weft/web/abcdefabcdef", r#"{"host":"10.5.2.7","ttl":30}"#),
    ];
    observed.names = Some(("weft.local".parse().unwrap(), keys));
    let status = assess(&observed);
    let names = status.names.as_deref().unwrap();
    assert_eq!(names.len(), 1, "only this host's: {names:?}");
    assert!(
        render(&status).contains("names published by this host: 1\ndb                       10.5.1.2        6379/tcp\n"),
        "{}",
        render(&status)
    );
    assert!(assess(&self::observed(None)).names.is_none(), "without --names, no names section");
}
