//! Mixed clusters with real weftd and etcd: IPv6 turned on (and off) host by host keeps every
//! host's IPv4 subnet and overlay, an IPv4-only host meeting dual-stack peers keeps their IPv4
//! entries, and a peer's broken IPv6 part never costs its IPv4 entries.

use std::net::Ipv4Addr;
use std::time::Duration;

use lab::dualstack::SUBNETS;
use lab::{poll, Lab};
use serde_json::Value;

const IPV4_ONLY: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const DUAL: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const CONVERGE: Duration = Duration::from_secs(20);
const DUAL_PEERS: &str = "the cluster has dual-stack peers";

/// The VTEP address (`10.5.3.0`) of the subnet a lease key names (`10.5.3.0-24&…`).
fn vtep(key: &str) -> Ipv4Addr {
    key.split('-').next().unwrap().parse().unwrap()
}

/// The README's roll-out: the config turns IPv6 on, running hosts only say a restart applies
/// it, each host restarted keeps its IPv4 subnet (its key gains an IPv6 part, the old key
/// deleted in the same transaction) while the others, still IPv4-only, keep reaching it. Then
/// IPv6 off again: the key loses its IPv6 part, the IPv4 subnet stays.
#[test]
fn turning_ipv6_on_then_off_host_by_host_keeps_every_ipv4_subnet() {
    let mut lab = Lab::new();
    lab.put_network_config(IPV4_ONLY);
    let (a, b) = (lab.add_host(), lab.add_host());
    let mut daemon_a = lab.start_weftd(a, &[]);
    let mut daemon_b = lab.start_weftd(b, &[]);
    let a_key = lab.wait_lease_key_of(a, CONVERGE, |k| !k.contains('&'));
    let b_key = lab.wait_lease_key_of(b, CONVERGE, |k| !k.contains('&'));

    lab.put_network_config(DUAL);
    daemon_a.wait_log("turns IPv6 on", CONVERGE);
    daemon_a.terminate();
    daemon_a = lab.start_weftd(a, &[]);
    let a_dual = lab.wait_lease_key_of(a, CONVERGE, |k| k.starts_with(&format!("{a_key}&fd00:5:")));
    lab.assert_moved_in_one_transaction(&a_key, &a_dual);
    assert_eq!(lab.lease_keys().len(), 2, "{:?}", lab.lease_keys());
    // The restarted daemon rewrites the IPv4-only file it finds once its first pass has run.
    poll("host a's subnet.env to gain FLANNEL_IPV6_SUBNET", CONVERGE, || {
        lab.host(a).subnet_env().filter(|env| env.contains_key("FLANNEL_IPV6_SUBNET"))
    });

    // Host b, still IPv4-only, follows a's key from plain to dual with its IPv4 entries kept.
    poll("host b to reach host a's VTEP over IPv4", CONVERGE, || lab.host(b).ping(vtep(&a_key)).then_some(()));
    poll("host a to reach host b's VTEP over IPv4", CONVERGE, || lab.host(a).ping(vtep(&b_key)).then_some(()));
    assert_eq!(daemon_b.log().matches(DUAL_PEERS).count(), 1, "said once");
    // The key's move (delete and put in one transaction) is a change to b, never a departure.
    let a_subnet = format!("subnet={}", a_key.replace('-', "/"));
    let says = |what: &str| daemon_b.log().lines().any(|l| l.contains(what) && l.contains(&a_subnet));
    poll("host b to log host a's lease as changed", CONVERGE, || says("peer changed").then_some(()));
    assert!(!says("peer removed"), "{}", daemon_b.log());

    daemon_b.terminate();
    let _daemon_b = lab.start_weftd(b, &[]);
    lab.wait_lease_key_of(b, CONVERGE, |k| k.starts_with(&format!("{b_key}&fd00:5:")));

    // IPv6 off again: a's key loses its IPv6 part, its IPv4 subnet stays.
    lab.put_network_config(IPV4_ONLY);
    daemon_a.wait_log("turns IPv6 off", CONVERGE);
    daemon_a.terminate();
    let _daemon_a = lab.start_weftd(a, &[]);
    lab.wait_lease_key_of(a, CONVERGE, |k| k == a_key);
    assert!(!lab.lease_keys().contains_key(&a_dual), "{:?}", lab.lease_keys());
    poll("host a to reach host b's VTEP over IPv4", CONVERGE, || lab.host(a).ping(vtep(&b_key)).then_some(()));
    assert!(lab.host(a).link_details("flannel-v6.1").is_none(), "flannel-v6.1 left from the dual-stack run is removed");
}

/// An IPv4-only host meeting peers with broken IPv6 parts (a misaligned IPv6 subnet in the
/// key, an unreadable PublicIPv6) keeps their IPv4 entries: routes there, pings answered. One
/// warning per key naming it and the rule, and one line saying the cluster is dual-stack.
#[test]
fn a_peers_broken_ipv6_part_never_costs_its_ipv4_entries() {
    let mut lab = Lab::new();
    lab.put_network_config(IPV4_ONLY);
    let (a, b) = (lab.add_host(), lab.add_host());
    let daemon_a = lab.start_weftd(a, &["--resync-interval", "1s"]);
    let mut daemon_b = lab.start_weftd(b, &[]);
    let b_key = lab.wait_lease_key_of(b, CONVERGE, |_| true);
    poll("host a to reach host b's VTEP", CONVERGE, || lab.host(a).ping(vtep(&b_key)).then_some(()));

    // b's lease, as b wrote it, moved to a dual-stack key whose IPv6 subnet has host bits set.
    daemon_b.kill9();
    let mut value: Value = serde_json::from_str(&lab.etcd_get(&format!("{SUBNETS}{b_key}")).unwrap()).unwrap();
    value["PublicIPv6"] = Value::from(lab.host(b).underlay_ipv6.to_string());
    value["BackendV6Data"] = serde_json::json!({"VNI": 1, "VtepMAC": "02:66:00:00:00:02"});
    let misaligned = format!("{b_key}&fd00:5:0:9::5-64");
    lab.etcd_del(&format!("{SUBNETS}{b_key}"));
    lab.etcd_put(&format!("{SUBNETS}{misaligned}"), &value.to_string());
    // A peer whose PublicIPv6 no one can read.
    // On a subnet neither host drew (their subnets are random).
    let a_key = lab.wait_lease_key_of(a, CONVERGE, |_| true);
    let free = (200..203).map(|o| format!("10.5.{o}.0-24")).find(|k| *k != a_key && *k != b_key).expect("a free /24");
    let unreadable = format!("{free}&fd00:5:0:c8::-64");
    let unreadable = unreadable.as_str();
    let junk = r#"{"PublicIP":"198.18.0.200","PublicIPv6":"junk","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:66:00:00:00:c8"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:66:00:00:01:c8"}}"#;
    lab.etcd_put(&format!("{SUBNETS}{unreadable}"), junk);

    let host = lab.host(a);
    let free_subnet = free.replace('-', "/");
    poll("a route to the unreadable peer's IPv4 subnet", CONVERGE, || {
        let routes = host.ip_json(&["-4", "route", "show", &free_subnet, "dev", "flannel.1"]);
        (routes.as_array().is_some_and(|r| r.len() == 1)).then_some(())
    });
    assert!(host.ping(vtep(&b_key)), "host b's IPv4 entries stay");
    for key in [misaligned.as_str(), unreadable] {
        poll(&format!("a warning naming {key}"), CONVERGE, || (daemon_a.warnings_naming(key) > 0).then_some(()));
    }
    // Several passes later: still one each, naming the rule.
    daemon_a.wait_passes(4, CONVERGE);
    let log = daemon_a.log();
    assert_eq!((daemon_a.warnings_naming(&misaligned), daemon_a.warnings_naming(unreadable)), (1, 1), "{log}");
    assert!(log.contains("has host bits set") && log.contains("cannot be read"), "{log}");
    assert_eq!(log.matches(DUAL_PEERS).count(), 1, "{log}");
}
