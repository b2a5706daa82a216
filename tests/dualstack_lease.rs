//! Dual-stack leases with real weftd and etcd: the key and value flanneld writes for a
//! dual-stack host, and subnet.env's IPv6 lines, checked byte for byte as an operator reads them
//! with `etcdctl get` and `cat`.

use std::collections::BTreeSet;
use std::time::Duration;

use lab::dualstack::{lease_value, SUBNETS};
use lab::{poll, Lab};
use serde_json::Value;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const CONVERGE: Duration = Duration::from_secs(20);

#[test]
fn a_dual_stack_host_writes_flannels_key_value_and_subnet_env() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let n = lab.add_host();
    let _daemon = lab.start_weftd(n, &[]);
    let env = lab.wait_subnet_env(n, CONVERGE);
    let (v4, v6) = (env["FLANNEL_SUBNET"].clone(), env["FLANNEL_IPV6_SUBNET"].clone());
    let text = std::fs::read_to_string(&lab.host(n).subnet_file).unwrap();
    let order: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(
        order,
        ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"],
        "{text}"
    );
    assert_eq!(env["FLANNEL_IPV6_NETWORK"], "fd00:5::/48");
    assert!(v6.starts_with("fd00:5:") && v6.ends_with("::1/64"), "{v6}");

    let leases = lab.etcd_get_prefix(SUBNETS);
    assert_eq!(leases.len(), 1, "{leases:?}");
    let (key, value) = &leases[0];
    let v4_key = v4.replace(".1/", ".0-");
    let v6_key = v6.replace("::1/", "::-");
    assert_eq!(key, &format!("{SUBNETS}{v4_key}&{v6_key}"));
    let attrs: Value = serde_json::from_str(value).unwrap();
    let (mac, mac6) = (attrs["BackendData"]["VtepMAC"].as_str().unwrap(), attrs["BackendV6Data"]["VtepMAC"].as_str().unwrap());
    assert_ne!(mac, mac6, "the IPv6 device is a device of its own");
    let host = lab.host(n);
    // flanneld's field order and spelling (design.md §4), byte for byte.
    let flannel = format!(
        r#"{{"PublicIP":"{}","PublicIPv6":"{}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#,
        host.underlay_ip, host.underlay_ipv6
    );
    assert_eq!(value, &flannel);
}

/// The key of a lease whose `FLANNEL_SUBNET`/`FLANNEL_IPV6_SUBNET` subnet.env names.
fn key_of_env(env: &std::collections::BTreeMap<String, String>) -> String {
    let v4 = env["FLANNEL_SUBNET"].replace(".1/", ".0-");
    match env.get("FLANNEL_IPV6_SUBNET") {
        Some(v6) => format!("{v4}&{}", v6.replace("::1/", "::-")),
        None => v4,
    }
}

/// A restart gets both subnets back: from its own lease (kill -9, no subnet.env left), then,
/// once the lease expired in etcd, from subnet.env's FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET.
/// Out of 255 IPv4 and 65,535 IPv6 subnets, chance would not pick the same pair again.
#[test]
fn a_restart_keeps_both_subnets_from_its_lease_then_from_subnet_env() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let n = lab.add_host();
    let ttl = ["--subnet-lease-ttl", "2s"];
    let mut daemon = lab.start_weftd(n, &ttl);
    let key = key_of_env(&lab.wait_subnet_env(n, CONVERGE));
    assert!(key.contains('&'), "{key}");
    lab.wait_lease_key_of(n, CONVERGE, |k| k == key);

    // kill -9 and no subnet.env: only the lease in etcd (same PublicIP) names our subnets.
    daemon.kill9();
    std::fs::remove_file(&lab.host(n).subnet_file).unwrap();
    let mut daemon = lab.start_weftd(n, &ttl);
    assert_eq!(key_of_env(&lab.wait_subnet_env(n, CONVERGE)), key, "from our own lease");
    assert_eq!(lab.lease_keys().keys().collect::<Vec<_>>(), [&key]);

    // kill -9 again and let the lease expire: only subnet.env names them now.
    daemon.kill9();
    poll("the lease to expire in etcd", CONVERGE, || lab.lease_keys().is_empty().then_some(()));
    let _daemon = lab.start_weftd(n, &ttl);
    lab.wait_lease_key_of(n, CONVERGE, |k| k == key);
    assert_eq!(lab.lease_keys().keys().collect::<Vec<_>>(), [&key], "from subnet.env");
}

/// A reservation (a key on no etcd lease) with both parts is taken over with both kept; an
/// IPv4-only one under a dual-stack config gains an IPv6 part: its key changes, the old key
/// goes, and it stays a reservation.
#[test]
fn reservations_keep_both_parts_and_an_ipv4_only_one_gains_an_ipv6_part() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (a, b) = (lab.add_host(), lab.add_host());
    let dual_key = "10.5.9.0-24&fd00:5:0:9::-64";
    let placeholder = "02:00:00:00:00:09";
    lab.etcd_put(&format!("{SUBNETS}{dual_key}"), &lease_value(lab.host(a), placeholder, Some(placeholder)));
    lab.etcd_put(&format!("{SUBNETS}10.5.8.0-24"), &lease_value(lab.host(b), placeholder, None));
    let _daemons = [lab.start_weftd(a, &[]), lab.start_weftd(b, &[])];

    let env = lab.wait_subnet_env(a, CONVERGE);
    assert_eq!((env["FLANNEL_SUBNET"].as_str(), env["FLANNEL_IPV6_SUBNET"].as_str()), ("10.5.9.1/24", "fd00:5:0:9::1/64"));
    let b_key = lab.wait_lease_key_of(b, CONVERGE, |k| k.starts_with("10.5.8.0-24&fd00:5:"));
    let keys = poll("both reservations rewritten with the hosts' own MACs", CONVERGE, || {
        let keys = lab.lease_keys();
        keys.values().all(|v| !v.contains(placeholder)).then_some(keys)
    });
    assert_eq!(keys.keys().collect::<Vec<_>>(), [&b_key, &dual_key.to_string()], "the IPv4-only key is gone");
    for key in [dual_key, &b_key] {
        assert_eq!(lab.etcd_key_lease(&format!("{SUBNETS}{key}")), Some((0, 0)), "{key} must stay a reservation");
    }
    let env = lab.wait_subnet_env(b, CONVERGE);
    assert_eq!(key_of_env(&env), b_key);
}

/// Two of three hosts at least will pick the same IPv6 subnet out of three; the later key
/// gives it up, so every host ends with its own. Twice over, subnet.env removed in between.
#[test]
fn hosts_started_at_once_never_share_an_ipv6_subnet() {
    let mut lab = Lab::new();
    lab.put_network_config(
        r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","IPv6SubnetMin":"fd00:5:0:1::","IPv6SubnetMax":"fd00:5:0:3::"}"#,
    );
    let hosts: Vec<usize> = (0..3).map(|_| lab.add_host()).collect();
    for round in 0..2 {
        let mut daemons: Vec<_> = hosts.iter().map(|&n| lab.start_weftd(n, &[])).collect();
        let subnets: BTreeSet<String> =
            hosts.iter().map(|&n| lab.wait_subnet_env(n, CONVERGE)["FLANNEL_IPV6_SUBNET"].clone()).collect();
        assert_eq!(subnets.len(), 3, "round {round}: {subnets:?}");
        let keys = poll("one key per host", CONVERGE, || Some(lab.lease_keys()).filter(|k| k.len() == 3));
        let ipv6: BTreeSet<&str> = keys.keys().filter_map(|k| k.split_once('&')).map(|(_, v6)| v6).collect();
        assert_eq!(ipv6.len(), 3, "round {round}: {keys:?}");
        daemons.iter_mut().for_each(|d| d.kill9());
        lab.etcd_del_prefix(SUBNETS);
        hosts.iter().for_each(|&n| std::fs::remove_file(&lab.host(n).subnet_file).unwrap());
    }
}
