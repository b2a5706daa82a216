//! Hostile and careless leases (issue 13, parts 1 and 2): one etcd key must never cut anyone off.
//! Every kind of bad lease is written at once into a running two-host cluster; containers keep
//! pinging, no host programs anything for them, and each is warned about once, by its key.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::{poll, Lab, Weftd};
use serde_json::Value;

/// SubnetMax below the top of the Network, so a lease above it can be tried.
const CONFIG: &str = r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.99.0","Backend":{"Type":"vxlan"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";
const CONVERGE: Duration = Duration::from_secs(20);
/// A PublicIP no host has.
const NOBODY: &str = "198.18.0.99";

fn lease_value(public_ip: &str, mac: &str) -> String {
    format!(r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#)
}

/// Host n's subnet as (third octet, key name `10.5.N.0-24`), from its subnet.env.
fn subnet_of(lab: &Lab, n: usize) -> (u8, String) {
    let env = lab.wait_subnet_env(n, CONVERGE);
    let (gateway, prefix) = lab::parse_cidr(&env["FLANNEL_SUBNET"]);
    let network = lab::nth_address(gateway, prefix, 0);
    (network.octets()[2], format!("{network}-{prefix}"))
}

/// The VtepMAC host n's lease advertises.
fn vtep_mac_of(lab: &Lab, key: &str) -> String {
    let value: Value = serde_json::from_str(&lab.etcd_get(&format!("{SUBNETS}{key}")).expect("the host's lease")).unwrap();
    value["BackendData"]["VtepMAC"].as_str().unwrap().to_string()
}

fn wait_ping(lab: &Lab, from: usize, to: Ipv4Addr) {
    poll(&format!("container {from} to ping {to}"), CONVERGE, || lab.container_ping(from, to).then_some(()));
}

/// Every kind of lease weftd must refuse, as (key name, value): parts 1 and 2 of the issue.
fn hostile_leases(lab: &Lab) -> Vec<(String, String)> {
    let ((octet1, key1), (octet2, key2)) = (subnet_of(lab, 1), subnet_of(lab, 2));
    let container2 = lab.container(2).ip;
    let mut free = (1..=99u8).filter(|o| ![octet1, octet2].contains(o)).map(|o| format!("10.5.{o}.0-24"));
    let mut free = || free.next().unwrap();
    let unknown = |k: u8| lease_value(NOBODY, &format!("02:ee:00:00:00:{k:02x}"));
    let mut leases = vec![
        (format!("{container2}-32"), unknown(1)),
        (format!("{container2}-31"), unknown(2)),
        (format!("10.5.{octet1}.0-25"), unknown(3)),
        ("10.5.0.0-16".to_string(), unknown(4)),
        (free().replace(".0-24", ".1-24"), unknown(5)),
        ("10.5.0.0-24".to_string(), unknown(6)),
        ("10.5.200.0-24".to_string(), unknown(7)),
        (free(), lease_value(NOBODY, &vtep_mac_of(lab, &key1))),
        (free(), lease_value(NOBODY, &vtep_mac_of(lab, &key2))),
    ];
    for (k, public_ip) in ["127.0.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", &container2.to_string()].iter().enumerate() {
        leases.push((free(), lease_value(public_ip, &format!("02:ee:00:00:01:{k:02x}"))));
    }
    leases
}

/// `weftd status --json` on host n.
fn status_json(lab: &Lab, n: usize) -> Value {
    let bin = lab::weftd_bin();
    let endpoints = lab.etcd_endpoints();
    let out = lab.host(n).exec(&[bin.to_str().unwrap(), "status", "--json", "--etcd-endpoints", &endpoints, "--iface", "eth0"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {out:?}"))
}

/// Waits until every weftd has warned about every key, or `CONVERGE` passed (then the
/// assertions below say what is missing).
fn wait_warnings(daemons: &[Weftd], keys: &[&str]) {
    let deadline = Instant::now() + CONVERGE;
    while Instant::now() < deadline && !daemons.iter().all(|d| keys.iter().all(|k| d.warnings_naming(k) > 0)) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn leases_the_allocator_could_not_have_made_or_that_steal_a_vtep_are_refused_once_and_cut_nobody_off() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let hosts = [lab.add_host(), lab.add_host()];
    let daemons: Vec<Weftd> = hosts.iter().map(|&n| lab.start_weftd(n, &["--resync-interval", "1s"])).collect();
    for n in hosts {
        subnet_of(&lab, n);
        lab.attach_container(n);
    }
    wait_ping(&lab, 1, lab.container(2).ip);
    wait_ping(&lab, 2, lab.container(1).ip);
    let before = hosts.map(|n| lab.host(n).flannel_entries());
    let pings = [
        lab.start_ping(1, lab.container(2).ip, Duration::from_millis(100)),
        lab.start_ping(2, lab.container(1).ip, Duration::from_millis(100)),
    ];

    let hostile = hostile_leases(&lab);
    let started = Instant::now();
    lab.etcd_put_all(&hostile.iter().map(|(k, v)| (format!("{SUBNETS}{k}"), v.clone())).collect::<Vec<_>>());
    let keys: Vec<&str> = hostile.iter().map(|(k, _)| k.as_str()).collect();
    wait_warnings(&daemons, &keys);
    let warned_after = started.elapsed();
    // Three more passes (resync every second): a warning repeated, or an entry added late,
    // would show by then.
    for daemon in &daemons {
        daemon.wait_passes(3, CONVERGE);
    }

    let stats: Vec<_> = pings.into_iter().map(|p| p.finish()).collect();
    println!(
        "figure: {} hostile leases, all warned about {} ms after the put; pings {stats:?}",
        hostile.len(),
        warned_after.as_millis()
    );
    assert!(stats.iter().all(|s| s.lost == 0 && s.sent > 0), "containers must keep pinging: {stats:?}");
    for (i, n) in hosts.into_iter().enumerate() {
        let after = lab.host(n).flannel_entries();
        assert_eq!(after, before[i], "host {n} must program nothing for the hostile leases");
        for key in &keys {
            let count = daemons[i].warnings_naming(key);
            assert_eq!(count, 1, "host {n}: exactly one warning naming {key}, got {count}:\n{}", daemons[i].log());
        }
    }
    // `weftd status` shows each refused lease as skipped, or its key as malformed (keys
    // flanneld's grammar refuses: a /32, a misaligned address), for the reason logged.
    let status = status_json(&lab, 2);
    for key in &keys {
        let subnet = key.replace('-', "/");
        let lease = status["leases"].as_array().unwrap().iter().find(|l| l["subnet"].as_str() == Some(&subnet));
        let reason =
            lease.and_then(|l| l["skipped"].as_str()).or_else(|| status["malformed"][format!("{SUBNETS}{key}")].as_str());
        assert!(
            reason.is_some_and(|r| daemons[1].log().contains(r)),
            "status on host 2 must show {key} refused as logged: {lease:?}"
        );
    }
}

/// Where host n sends frames for `mac`: its FDB destinations on flannel.1.
fn fdb_destinations(lab: &Lab, n: usize, mac: &str) -> Vec<String> {
    let entry = format!("fdb {mac} dst ");
    lab.host(n).flannel_entries().iter().filter_map(|e| e.strip_prefix(entry.as_str()).map(str::to_string)).collect()
}

/// A key created before host 2 started, rewritten later with host 2's VtepMAC, does not take
/// that MAC though its key is older: the lease that advertised the MAC first keeps it. Host 1
/// sends host 2's MAC to host 2 alone throughout (sampled for 6 s at a 1 s resync), no ping is
/// lost, and host 1 warns once about the copy, by its key.
#[test]
fn an_older_key_that_copies_a_mac_later_does_not_take_it() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let h1 = lab.add_host();
    let mut daemons = vec![lab.start_weftd(h1, &["--resync-interval", "1s"])];
    let squat_name = format!("10.5.{}.0-24", if subnet_of(&lab, h1).0 == 99 { 98 } else { 99 });
    let squat = format!("{SUBNETS}{squat_name}");
    lab.etcd_put(&squat, &lease_value(NOBODY, "02:ee:00:00:00:01"));
    let h2 = lab.add_host();
    daemons.push(lab.start_weftd(h2, &["--resync-interval", "1s"]));
    for n in [h1, h2] {
        subnet_of(&lab, n);
        lab.attach_container(n);
    }
    wait_ping(&lab, 1, lab.container(2).ip);
    let mac2 = vtep_mac_of(&lab, &subnet_of(&lab, h2).1);
    let host2 = vec![lab.host(h2).underlay_ip.to_string()];
    poll("host 1 to send host 2's MAC to host 2", CONVERGE, || (fdb_destinations(&lab, h1, &mac2) == host2).then_some(()));

    let ping = lab.start_ping(1, lab.container(2).ip, Duration::from_millis(100));
    lab.etcd_put(&squat, &lease_value(NOBODY, &mac2));
    poll("host 1 to warn about the copy", CONVERGE, || (daemons[0].warnings_naming(&squat_name) > 0).then_some(()));
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        assert_eq!(fdb_destinations(&lab, h1, &mac2), host2, "host 1's FDB destinations for host 2's MAC after the copy");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = ping.finish();
    assert_eq!(stats.lost, 0, "pings from container 1 to container 2: {stats:?}");
    assert_eq!(daemons[0].warnings_naming(&squat_name), 1, "one warning about {squat_name}");
}
