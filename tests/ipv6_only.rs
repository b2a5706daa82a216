//! IPv6-only networks (`"EnableIPv4": false`) end to end: real `weftd` processes in host
//! namespaces on the lab's IPv6 underlay and a real etcd, checked as an operator would: the
//! subnet.env bytes, the lease keys and values in etcd byte for byte against flanneld v0.20.2's
//! IPv6-only shape, flannel-v6.1 (and no flannel.1) with its neighbours, FDB entries and routes
//! (`ip -6 -j`, `bridge -j`), and pings between containers over IPv6. Every daemon runs with
//! `--resync-interval 1h`, so a repair must come from a kernel notification.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::time::Duration;

use lab::dualstack::{Ipv6Tables, DEVICE6, SUBNETS};
use lab::ipv6_only::ipv6_only_lease_value;
use lab::lease_moves::ipv6_only_subnet_env;
use lab::{poll, Lab, Weftd};
use serde_json::Value;

const CONFIG: &str = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const CONVERGE: Duration = Duration::from_secs(20);
const SLOW_RESYNC: [&str; 2] = ["--resync-interval", "1h"];
/// The key flanneld v0.20.2 writes for an IPv6-only host over etcd, and the subnet it names.
const FLANNELD_KEY: &str = "0.0.0.0-0&fd00:5:0:99::-64";
const FLANNELD_SUBNET: &str = "fd00:5:0:99::/64";

/// A lab with the IPv6-only config and `hosts` hosts, nothing started yet.
fn lab_with_hosts(hosts: usize) -> Lab {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    for _ in 0..hosts {
        lab.add_host();
    }
    lab
}

/// Starts weftd on every host of `lab` at once, waits for each subnet.env and attaches a
/// container to each host from it.
fn start_all(lab: &mut Lab) -> Vec<Weftd> {
    let numbers: Vec<usize> = lab.hosts().iter().map(|h| h.n).collect();
    let daemons = numbers.iter().map(|&n| lab.start_weftd(n, &SLOW_RESYNC)).collect();
    for &n in &numbers {
        lab.wait_ipv6_subnet_env(n, CONVERGE);
    }
    for &n in &numbers {
        lab.attach_container_ipv6_only(n);
    }
    daemons
}

fn cluster(hosts: usize) -> (Lab, Vec<Weftd>) {
    let mut lab = lab_with_hosts(hosts);
    let daemons = start_all(&mut lab);
    (lab, daemons)
}

/// A lease with an IPv6 part as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lease6 {
    /// The key's last element (`fd00:5:0:9::-64`).
    key: String,
    /// The IPv6 subnet (`fd00:5:0:9::/64`).
    subnet: String,
    public_ipv6: String,
    mac: String,
    /// The value as etcd holds it.
    value: String,
}

/// Every lease key with a readable IPv6 part, weft's (`fd00:5:0:9::-64`) and flanneld's
/// (`0.0.0.0-0&fd00:5:0:9::-64`) alike.
fn leases(lab: &Lab) -> Vec<Lease6> {
    let parse = |key: String, value: String| {
        let v: Value = serde_json::from_str(&value).ok()?;
        Some(Lease6 {
            subnet: key.rsplit('&').next()?.replace('-', "/"),
            public_ipv6: v["PublicIPv6"].as_str()?.to_string(),
            mac: v["BackendV6Data"]["VtepMAC"].as_str()?.to_string(),
            key,
            value,
        })
    };
    lab.lease_keys().into_iter().filter_map(|(key, value)| parse(key, value)).collect()
}

/// Host N's lease, found by its PublicIPv6; panics unless there is exactly one.
fn own_lease(lab: &Lab, n: usize) -> Lease6 {
    let ip = lab.host(n).underlay_ipv6.to_string();
    let own: Vec<Lease6> = leases(lab).into_iter().filter(|l| l.public_ipv6 == ip).collect();
    assert_eq!(own.len(), 1, "host {n} ({ip}) holds exactly one lease: {own:?}");
    own[0].clone()
}

/// The tables design.md §4 gives host N: an entry set per other lease in etcd.
fn expected_tables(lab: &Lab, n: usize) -> Ipv6Tables {
    let own = lab.host(n).underlay_ipv6.to_string();
    let peers: Vec<Lease6> = leases(lab).into_iter().filter(|l| l.public_ipv6 != own).collect();
    Ipv6Tables::of_peers(peers.iter().map(|l| (l.subnet.as_str(), l.public_ipv6.as_str(), l.mac.as_str())))
}

fn wait_tables_match(lab: &Lab, n: usize) -> Ipv6Tables {
    poll(&format!("host {n}'s {DEVICE6} tables to match the leases"), CONVERGE, || {
        let (actual, expected) = (lab.host(n).ipv6_tables(), expected_tables(lab, n));
        (actual == expected && !expected.routes.is_empty()).then_some(actual)
    })
}

fn container_ipv6(lab: &Lab, n: usize) -> Ipv6Addr {
    lab.container(n).ipv6.unwrap_or_else(|| panic!("container {n} has no IPv6 address"))
}

fn wait_container_ping(lab: &Lab, from: usize, to: usize) {
    let dst = container_ipv6(lab, to);
    poll(&format!("container {from} to ping container {to} at {dst}"), CONVERGE, || lab.container_ping(from, dst).then_some(()));
}

fn subnet_env_text(lab: &Lab, n: usize) -> String {
    std::fs::read_to_string(&lab.host(n).subnet_file).unwrap_or_else(|e| panic!("host {n}'s subnet.env: {e}"))
}

/// Host N's device, lease key and value, and subnet.env, as an IPv6-only host's must be.
fn check_host(lab: &Lab, n: usize) {
    let host = lab.host(n);
    let link = host.link_details(DEVICE6).unwrap_or_else(|| panic!("host {n} has no {DEVICE6}"));
    assert!(host.link_details("flannel.1").is_none(), "host {n}: an IPv6-only host has no flannel.1");
    let (mac, mtu) = (link["address"].as_str().unwrap(), link["mtu"].as_u64().unwrap());
    assert_eq!(mtu, 1500 - 70, "host {n}: the underlay's MTU less IPv6 VXLAN's headers");
    assert_eq!(link["linkinfo"]["info_data"]["local6"].as_str(), Some(host.underlay_ipv6.to_string().as_str()));

    let lease = own_lease(lab, n);
    assert_eq!(Some(lease.key.clone()), lab.own_ipv6_only_key(n), "host {n}: the key is the IPv6 part alone");
    assert!(lease.key.starts_with("fd00:5:0:") && lease.key.ends_with("::-64"), "host {n}: {}", lease.key);
    assert_eq!(lab.etcd_get(&format!("{SUBNETS}{}", lease.key)), Some(ipv6_only_lease_value(host.underlay_ipv6, mac)));
    assert_eq!(subnet_env_text(lab, n), ipv6_only_subnet_env(&lease.subnet, mtu), "host {n}'s subnet.env");

    let vtep = lease.subnet.replace("/64", "");
    assert_eq!(host.global_ipv6_addresses(DEVICE6), [(vtep, 128)], "host {n}: the lease's network address as a /128");
    assert_eq!(host.sysctl(&format!("net/ipv6/conf/{DEVICE6}/accept_ra")).as_deref(), Some("0"));
}

#[test]
fn three_ipv6_only_hosts_started_together_reach_each_other_over_ipv6() {
    let (lab, _daemons) = cluster(3);
    for from in 1..=3 {
        for to in (1..=3).filter(|&to| to != from) {
            wait_container_ping(&lab, from, to);
        }
    }
    let subnets: BTreeSet<String> = (1..=3).map(|n| own_lease(&lab, n).subnet).collect();
    assert_eq!(subnets.len(), 3, "every host has an IPv6 subnet of its own: {subnets:?}");
    let keys: BTreeSet<String> = lab.lease_keys().into_keys().collect();
    let own_keys: BTreeSet<String> = (1..=3).filter_map(|n| lab.own_ipv6_only_key(n)).collect();
    assert_eq!(keys, own_keys, "etcd holds the three hosts' keys and nothing else");
    for n in 1..=3 {
        let tables = wait_tables_match(&lab, n);
        assert_eq!((tables.neighbours.len(), tables.fdb.len(), tables.routes.len()), (2, 2, 2), "host {n}: {tables:?}");
        check_host(&lab, n);
    }
}

#[test]
fn a_hand_deleted_ipv6_route_comes_back_and_a_restart_keeps_the_subnet() {
    let (lab, mut daemons) = cluster(2);
    let host = lab.host(1).clone();
    let (route, _, _) = wait_tables_match(&lab, 1).routes.first().unwrap().clone();
    host.exec_ok(&["ip", "-6", "route", "del", &route]);
    wait_tables_match(&lab, 1);
    wait_container_ping(&lab, 1, 2);

    // A restart takes the same lease back; the device deleted while weftd was down shows when
    // the new weftd has come up.
    let (lease, env) = (own_lease(&lab, 1), subnet_env_text(&lab, 1));
    daemons.remove(0).terminate();
    host.exec_ok(&["ip", "link", "del", DEVICE6]);
    let _restarted = lab.start_weftd(1, &SLOW_RESYNC);
    host.wait_link(DEVICE6, "flannel-v6.1 back", CONVERGE, |l| l["address"] == lease.mac.as_str());
    wait_tables_match(&lab, 1);
    assert_eq!(own_lease(&lab, 1), lease, "the same key and value after the restart");
    assert_eq!(subnet_env_text(&lab, 1), env);
    check_host(&lab, 1);
    wait_tables_match(&lab, 2);
    wait_container_ping(&lab, 2, 1);
}

#[test]
fn a_departed_ipv6_only_peer_loses_its_route_neighbour_and_fdb_entry_on_the_others() {
    let (lab, mut daemons) = cluster(3);
    let departed = own_lease(&lab, 3);
    for n in 1..=2 {
        wait_tables_match(&lab, n);
    }
    daemons.pop().unwrap().terminate();
    lab.etcd_del(&format!("{SUBNETS}{}", departed.key));
    for n in 1..=2 {
        let tables = poll(&format!("host {n} to drop host 3's entries"), CONVERGE, || {
            Some(lab.host(n).ipv6_tables()).filter(|t| t.routes.len() == 1 && t == &expected_tables(&lab, n))
        });
        let gone = Ipv6Tables::of_peers([(departed.subnet.as_str(), departed.public_ipv6.as_str(), departed.mac.as_str())]);
        assert!(tables.routes.is_disjoint(&gone.routes), "host {n}: {tables:?}");
        assert!(tables.neighbours.is_disjoint(&gone.neighbours) && tables.fdb.is_disjoint(&gone.fdb), "host {n}: {tables:?}");
    }
    wait_container_ping(&lab, 1, 2);
}

/// flanneld v0.20.2's IPv6-only lease value for the test's hand-written key.
fn flanneld_value() -> String {
    ipv6_only_lease_value("fd18::99".parse().unwrap(), "0e:11:22:33:44:99")
}

/// `ip -4 route` in host N's namespace, and whether it has flannel.1.
fn ipv4_state(lab: &Lab, n: usize) -> (Value, bool) {
    let host = lab.host(n);
    (host.ip_json(&["-4", "route", "show", "table", "all"]), host.link_details("flannel.1").is_some())
}

fn wait_flanneld_peer(lab: &Lab, present: bool) {
    for n in 1..=2 {
        poll(&format!("host {n}: the flanneld host's route present: {present}"), CONVERGE, || {
            let tables = lab.host(n).ipv6_tables();
            let has_route = tables.routes.iter().any(|(subnet, _, _)| subnet == FLANNELD_SUBNET);
            (has_route == present && tables == expected_tables(lab, n)).then_some(())
        });
    }
}

#[test]
fn a_flanneld_written_ipv6_only_key_is_an_ipv6_peer_and_never_an_ipv4_route() {
    let mut lab = lab_with_hosts(2);
    // The key before any weftd starts: no host can draw its subnet, and the listing reads it.
    lab.etcd_put(&format!("{SUBNETS}{FLANNELD_KEY}"), &flanneld_value());
    for n in 1..=2 {
        lab.host(n).exec_ok(&["ip", "route", "add", "default", "via", "198.18.0.1", "dev", "eth0"]);
    }
    let before: Vec<(Value, bool)> = (1..=2).map(|n| ipv4_state(&lab, n)).collect();
    let _daemons = start_all(&mut lab);
    wait_flanneld_peer(&lab, true);
    let route = &lab.host(1).ip_json(&["-6", "route", "show", FLANNELD_SUBNET, "dev", DEVICE6]);
    assert_eq!(route.as_array().map(Vec::len), Some(1), "{route}");

    // Gone and back again through the watch.
    lab.etcd_del(&format!("{SUBNETS}{FLANNELD_KEY}"));
    wait_flanneld_peer(&lab, false);
    lab.etcd_put(&format!("{SUBNETS}{FLANNELD_KEY}"), &flanneld_value());
    wait_flanneld_peer(&lab, true);
    wait_container_ping(&lab, 1, 2);
    let after: Vec<(Value, bool)> = (1..=2).map(|n| ipv4_state(&lab, n)).collect();
    assert_eq!(after, before, "IPv4 routes (default via 198.18.0.1 kept, no 0.0.0.0/0 on flannel.1) and no flannel.1");
    assert_eq!(lab.etcd_get(&format!("{SUBNETS}{FLANNELD_KEY}")), Some(flanneld_value()), "weft leaves flanneld's key be");
}

#[test]
fn names_with_an_ipv6_only_config_stops_weftd_naming_enable_ipv4() {
    let lab = lab_with_hosts(1);
    // A socket that does not exist: weftd must not reach the machine's own docker.
    let docker_host = format!("unix://{}", lab.dir().join("no-docker.sock").display());
    let mut daemon = lab.start_weftd_env(1, &["--names"], &[("DOCKER_HOST", &docker_host)]);
    let status = daemon.wait_exit(CONVERGE).expect("weftd --names under an IPv6-only config must exit");
    let log = daemon.log();
    assert!(!status.success(), "{status:?}\n{log}");
    // The error itself says why: names need docker0's IPv4 address, which EnableIPv4 false takes
    // away (a bare refusal of IPv6-only configs would not name --names).
    let error = log.lines().filter(|l| l.contains("EnableIPv4")).find(|l| l.contains("names"));
    assert!(error.is_some(), "an error naming EnableIPv4 and --names:\n{log}");
}
