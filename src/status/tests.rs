//! Unit tests of the assessment and the report: what status says for a given etcd and kernel.

use super::*;
use crate::lease::{LeaseAttrs, MacAddr};
use crate::model::{ArpEntry, DirectRoute, FdbEntry, MainTable, RouteEntry};

fn lease(subnet: &str, ip: [u8; 4], mac: u8) -> Lease {
    Lease {
        ipv6_subnet: None,
        subnet: Some(subnet.parse().unwrap()),
        attrs: LeaseAttrs::vxlan(Ipv4Addr::from(ip), 1, MacAddr([2, 0, 0, 0, 0, mac])),
        etcd_lease: Some(EtcdLeaseId(7)),
        mod_revision: 1,
        create_revision: 1,
    }
}

fn observed(kernel: Option<KernelState>) -> Observed {
    Observed {
        config: NetworkConfig::parse(r#"{"Network":"10.5.0.0/16"}"#).unwrap(),
        public_ip: Some(Ipv4Addr::new(198, 18, 0, 11)),
        public_ipv6: None,
        leases: vec![lease("10.5.1.0/24", [198, 18, 0, 11], 1), lease("10.5.2.0/24", [198, 18, 0, 12], 2)],
        ttls: [(EtcdLeaseId(7), Some(3600))].into(),
        malformed: vec![],
        kernel,
        device: None,
        underlay: Ok(underlay()),
        context: KernelContext::default(),
        ipv6: None,
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
    let wanted =
        device::desired_device(&observed.config, &underlay(), Ipv4Addr::new(198, 18, 0, 11), MacAddr([2, 0, 0, 0, 0, 1]));
    observed.device = Some(wanted.clone());
    assert!(assess(&observed).healthy, "the device as the lease asks");
    observed.device =
        Some(VxlanSpec { mac: MacAddr([2, 0x11, 0, 0, 0, 9]), local: Ipv4Addr::new(10, 0, 0, 9).into(), ..wanted.clone() });
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

const DUAL_STACK: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48"}"#;

/// Host `n` (198.18.0.1n, fd18::1n): 10.5.n.0/24 and fd00:5:0:n::/64, MACs 02::0n and 02::6n.
fn dual_lease(n: u8) -> Lease {
    let ipv6: Ipv6Addr = format!("fd18::{}", 10 + n).parse().unwrap();
    let mut lease = lease(&format!("10.5.{n}.0/24"), [198, 18, 0, 10 + n], n);
    lease.ipv6_subnet = Some(format!("fd00:5:0:{n}::/64").parse().unwrap());
    lease.attrs = lease.attrs.with_ipv6(ipv6, MacAddr([2, 0, 0, 0, 0, 0x60 + n]));
    lease
}

/// The IPv6 entries host 1 needs for host 2's lease.
fn correct_ipv6_kernel() -> KernelState<Ipv6Addr> {
    let vtep: Ipv6Addr = "fd00:5:0:2::".parse().unwrap();
    KernelState {
        arp: [ArpEntry { ip: vtep, mac: MacAddr([2, 0, 0, 0, 0, 0x62]) }].into(),
        fdb: [FdbEntry { mac: MacAddr([2, 0, 0, 0, 0, 0x62]), dst: "fd18::12".parse().unwrap() }].into(),
        routes: [RouteEntry { subnet: "fd00:5:0:2::/64".parse().unwrap(), gateway: vtep, onlink: true, nexthop: None }].into(),
        ..Default::default()
    }
}

fn dual_observed(ipv6_kernel: Option<KernelState<Ipv6Addr>>) -> Observed {
    let mut observed = observed(Some(correct_kernel()));
    observed.config = NetworkConfig::parse(DUAL_STACK).unwrap();
    observed.leases = vec![dual_lease(1), dual_lease(2)];
    observed.ipv6 = Some(ObservedFamily { kernel: ipv6_kernel, context: KernelContext::default(), device: None });
    observed
}

#[test]
fn an_ipv4_only_report_has_no_ipv6_in_json_or_text() {
    let status = assess(&observed(Some(correct_kernel())));
    let json = serde_json::to_string(&status).unwrap();
    assert!(!json.contains("ipv6") && !render(&status).to_lowercase().contains("ipv6"), "{json}\n{}", render(&status));
}

#[test]
fn a_dual_stack_report_checks_each_lease_s_ipv6_part() {
    let status = assess(&dual_observed(Some(correct_ipv6_kernel())));
    assert!(status.healthy, "{status:#?}");
    let v6 = status.ipv6.as_ref().unwrap();
    assert_eq!((v6.device.as_str(), v6.peers, v6.peers_ok, v6.unexplained), ("flannel-v6.1", 1, 1, 0));
    assert_eq!(v6.own_subnet, Some("fd00:5:0:1::/64".parse().unwrap()));
    assert_eq!(v6.public_ip, Some("fd18::11".parse().unwrap()));
    let peer = status.leases[1].ipv6.as_ref().unwrap();
    assert_eq!((peer.route, peer.neighbour, peer.fdb), (Check::Ok, Check::Ok, Check::Ok));
    assert_eq!(peer.vtep_mac.as_deref(), Some("02:00:00:00:00:62"));
    let own = status.leases[0].ipv6.as_ref().unwrap();
    assert_eq!(own.route, Check::NotApplicable);
    let text = render(&status);
    assert!(text.contains("ipv6       fd00:5::/48 (subnets /64, device flannel-v6.1)\n"), "{text}");
    assert!(text.contains("this host  fd18::11 -> fd00:5:0:1::/64\n"), "{text}");
    assert!(text.contains("peers      ipv4 1 of 1 ok, 0 skipped; ipv6 1 of 1 ok, 0 skipped\n"), "{text}");
    let row = text.lines().find(|l| l.starts_with("fd00:5:0:2::/64")).unwrap();
    assert!(
        row.contains("10.5.2.0/24") && row.contains("fd18::12") && row.split_whitespace().filter(|w| *w == "ok").count() == 3,
        "{row}"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["leases"][1]["ipv6"]["neighbour"], "ok");
    assert_eq!(json["ipv6"]["peers_ok"], 1);
}

#[test]
fn missing_ipv6_entries_a_missing_device_and_leftovers_are_named() {
    let mut kernel = correct_ipv6_kernel();
    kernel.arp.clear();
    let stray = RouteEntry {
        subnet: "fd00:5:0:9::/64".parse().unwrap(),
        gateway: "fd00:5:0:9::".parse().unwrap(),
        onlink: true,
        nexthop: None,
    };
    kernel.routes.insert(stray);
    let status = assess(&dual_observed(Some(kernel)));
    assert!(!status.healthy);
    let peer = status.leases[1].ipv6.as_ref().unwrap();
    assert_eq!((peer.route, peer.neighbour, peer.fdb), (Check::Ok, Check::Missing, Check::Ok));
    assert_eq!((status.ipv6.as_ref().unwrap().peers_ok, status.ipv6.as_ref().unwrap().unexplained), (0, 1));
    assert_eq!(status.leases[1].arp, Check::Ok, "the IPv4 side is unaffected");
    let text = render(&status);
    assert!(text.contains("1 entries on flannel-v6.1 are not explained by any lease\n"), "{text}");
    assert!(text.contains("ipv6 0 of 1 ok"), "{text}");
    let status = assess(&dual_observed(None));
    assert!(!status.healthy && !status.ipv6.as_ref().unwrap().device_present);
    assert!(render(&status).contains("flannel-v6.1 does not exist\n"), "{}", render(&status));
}

#[test]
fn an_ipv4_only_peer_and_a_broken_ipv6_part_keep_their_ipv4_checks() {
    let mut observed = dual_observed(Some(KernelState::default()));
    let mut v4_only = lease("10.5.3.0/24", [198, 18, 0, 13], 3);
    v4_only.etcd_lease = None;
    let mut broken = dual_lease(4);
    broken.attrs.backend_v6_data = None;
    observed.leases.extend([v4_only, broken]);
    let status = assess(&observed);
    let v4_only = status.leases[2].ipv6.as_ref().unwrap();
    assert_eq!((v4_only.subnet, v4_only.skipped.as_deref(), v4_only.route), (None, None, Check::NotApplicable));
    let broken = status.leases[3].ipv6.as_ref().unwrap();
    assert!(broken.skipped.as_deref().is_some_and(|r| r.starts_with("its IPv6 part is unusable")), "{broken:?}");
    assert_eq!(status.leases[3].skipped, None, "its IPv4 part is still programmed");
    assert_eq!(status.leases[3].route, Check::Missing);
    let v6 = status.ipv6.as_ref().unwrap();
    assert_eq!((v6.peers, v6.skipped), (1, 1));
    let text = render(&status);
    assert!(
        !text.lines().any(|l| l.starts_with("-") && l.contains("10.5.3.0/24")),
        "an IPv4-only lease has no IPv6 row:\n{text}"
    );
    assert!(text.contains("(skipped: its IPv6 part is unusable"), "{text}");
}

#[test]
fn ipv6_device_drift_is_reported() {
    let mut observed = dual_observed(Some(correct_ipv6_kernel()));
    let underlay = Underlay { public_ipv6: Some("fd18::11".parse().unwrap()), ..underlay() };
    observed.underlay = Ok(underlay.clone());
    let wanted =
        device::desired_ipv6_device(&observed.config, &underlay, "fd18::11".parse().unwrap(), MacAddr([2, 0, 0, 0, 0, 0x61]));
    observed.ipv6.as_mut().unwrap().device = Some(wanted.clone());
    let status = assess(&observed);
    assert!(status.device_drift.is_empty() && status.healthy, "{status:#?}");
    observed.ipv6.as_mut().unwrap().device = Some(VxlanSpec { mtu: 1300, ..wanted });
    let status = assess(&observed);
    assert_eq!(status.device_drift, ["flannel-v6.1: mtu 1300, should be 1430"]);
    assert!(!status.healthy);
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
