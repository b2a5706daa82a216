//! Faults, on real parts: hosts that die, hosts that race, peers that vanish while a daemon is
//! down. Each test prints the figure it measured.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lab::{poll, Host, Lab};
use serde_json::Value;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";
const DEADLINE: Duration = Duration::from_secs(30);

fn subnet_of(lab: &Lab, n: usize) -> String {
    let env = lab.wait_subnet_env(n, DEADLINE);
    let (gateway, prefix) = lab::parse_cidr(&env["FLANNEL_SUBNET"]);
    format!("{}/{prefix}", lab::nth_address(gateway, prefix, 0))
}

fn key_of(subnet: &str) -> String {
    format!("{SUBNETS}{}", subnet.replace('/', "-"))
}

/// Routes, ARP and FDB entries on flannel.1 that mention `subnet` or `public_ip`.
fn entries_for(host: &Host, subnet: &str, public_ip: &str) -> usize {
    let vtep = subnet.split('/').next().unwrap();
    let list = |v: Value| v.as_array().cloned().unwrap_or_default();
    let routes = list(host.ip_json(&["route", "show", "dev", "flannel.1"])).iter().filter(|r| r["dst"] == subnet).count();
    let arp = list(host.ip_json(&["neigh", "show", "dev", "flannel.1"])).iter().filter(|n| n["dst"] == vtep).count();
    let fdb = list(host.bridge_json(&["fdb", "show", "dev", "flannel.1"])).iter().filter(|f| f["dst"] == public_ip).count();
    routes + arp + fdb
}

#[test]
fn a_dead_host_s_entries_go_within_a_second_of_its_lease_expiring() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let hosts: Vec<usize> = (0..3).map(|_| lab.add_host()).collect();
    let mut daemons: Vec<_> = hosts.iter().map(|&n| lab.start_weftd(n, &["--subnet-lease-ttl", "4s"])).collect();
    let dead = hosts[2];
    let subnet = subnet_of(&lab, dead);
    let public_ip = lab.host(dead).underlay_ip.to_string();
    for &n in &hosts[..2] {
        subnet_of(&lab, n);
        poll("the peer's three entries", DEADLINE, || (entries_for(lab.host(n), &subnet, &public_ip) == 3).then_some(()));
    }

    daemons[2].kill9();
    let key = key_of(&subnet);
    poll("the dead host's lease to expire", DEADLINE, || lab.etcd_get(&key).is_none().then_some(()));
    let expired = Instant::now();
    for &n in &hosts[..2] {
        poll("the peers to drop the dead host", DEADLINE, || (entries_for(lab.host(n), &subnet, &public_ip) == 0).then_some(()));
    }
    let cleanup = expired.elapsed();
    println!(
        "figure: dead host's route, ARP and FDB entries removed from both peers {} ms after its lease expired",
        cleanup.as_millis()
    );
    assert!(cleanup <= Duration::from_secs(1), "cleanup took {cleanup:?}");
}

#[test]
fn twenty_hosts_racing_for_sixteen_subnets_never_share_one() {
    let mut lab = Lab::new();
    lab.put_network_config(
        r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.16.0","Backend":{"Type":"vxlan"}}"#,
    );
    let hosts: Vec<usize> = (0..20).map(|_| lab.add_host()).collect();
    let started = Instant::now();
    let mut daemons: Vec<_> = hosts.iter().map(|&n| lab.start_weftd(n, &[])).collect();

    let mut exited = Vec::new();
    poll("16 leases and 4 exits", Duration::from_secs(60), || {
        for (i, daemon) in daemons.iter_mut().enumerate() {
            if !exited.contains(&i) && daemon.wait_exit(Duration::ZERO).is_some() {
                exited.push(i);
            }
        }
        let written = hosts.iter().filter(|&&n| lab.host(n).subnet_env().is_some()).count();
        (written == 16 && exited.len() == 4).then_some(())
    });
    let settled = started.elapsed();

    let leases = lab.etcd_get_prefix(SUBNETS);
    let owners: BTreeSet<String> =
        leases.iter().map(|(_, v)| serde_json::from_str::<Value>(v).unwrap()["PublicIP"].to_string()).collect();
    let files: BTreeSet<String> =
        hosts.iter().filter(|&&n| lab.host(n).subnet_env().is_some()).map(|&n| subnet_of(&lab, n)).collect();
    println!(
        "figure: {} subnets leased to {} distinct hosts, {} hosts refused, settled in {} ms",
        leases.len(),
        owners.len(),
        exited.len(),
        settled.as_millis()
    );
    assert_eq!((leases.len(), owners.len(), files.len()), (16, 16, 16), "no two hosts may share a subnet");
    for &i in &exited {
        assert!(!daemons[i].wait_exit(Duration::ZERO).unwrap().success(), "a refused host exits non-zero");
    }
    let refusals = (1..=20).filter(|&n| {
        std::fs::read_to_string(lab.dir().join(format!("weftd-h{n}.log"))).unwrap_or_default().contains("out of subnets")
    });
    assert_eq!(refusals.count(), 4, "each refused host says why");
}

#[test]
fn a_peer_removed_while_a_daemon_was_down_is_gone_when_it_returns() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (a, b) = (lab.add_host(), lab.add_host());
    let mut daemon_a = lab.start_weftd(a, &[]);
    let mut daemon_b = lab.start_weftd(b, &[]);
    let subnet_b = subnet_of(&lab, b);
    let ip_b = lab.host(b).underlay_ip.to_string();
    subnet_of(&lab, a);
    poll("A to program B", DEADLINE, || (entries_for(lab.host(a), &subnet_b, &ip_b) == 3).then_some(()));

    daemon_a.terminate();
    daemon_b.terminate();
    lab.etcd_del(&key_of(&subnet_b));
    assert_eq!(entries_for(lab.host(a), &subnet_b, &ip_b), 3, "entries stay while A is down");
    let _daemon_a = lab.start_weftd(a, &[]);
    let started = Instant::now();
    poll("A to remove B's stale entries", DEADLINE, || (entries_for(lab.host(a), &subnet_b, &ip_b) == 0).then_some(()));
    println!("figure: stale peer entries removed {} ms after the daemon restarted", started.elapsed().as_millis());
}
