//! The overlay end to end: real `weftd` processes in host namespaces against a real etcd,
//! checked the way an operator would — `ip`, `bridge`, `etcdctl` and ping between containers.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use lab::{poll, Host, Lab, Weftd};
use serde_json::Value;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";
const CONVERGE: Duration = Duration::from_secs(20);

/// A lab with `hosts` hosts and CONFIG, and one weftd per host, all started at the same moment.
fn cluster(hosts: usize) -> (Lab, Vec<Weftd>) {
    cluster_with(hosts, &[])
}

/// `cluster`, every weftd given the `extra` flags.
fn cluster_with(hosts: usize, extra: &[&str]) -> (Lab, Vec<Weftd>) {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let numbers: Vec<usize> = (0..hosts).map(|_| lab.add_host()).collect();
    let daemons: Vec<Weftd> = numbers.iter().map(|&n| lab.start_weftd(n, extra)).collect();
    for &n in &numbers {
        wait_subnet_env(&lab, n);
    }
    (lab, daemons)
}

fn wait_subnet_env(lab: &Lab, n: usize) -> String {
    lab.wait_subnet_env(n, CONVERGE)["FLANNEL_SUBNET"].clone()
}

/// What `ip neigh`, `bridge fdb` and `ip route` show on flannel.1.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tables {
    arp: BTreeSet<(String, String)>,
    fdb: BTreeSet<(String, String)>,
    routes: BTreeSet<(String, String, bool)>,
}

fn str_field(entry: &Value, key: &str) -> String {
    entry[key].as_str().unwrap_or_default().to_string()
}

fn has_flag(entry: &Value, key: &str, flag: &str) -> bool {
    match &entry[key] {
        Value::Array(flags) => flags.iter().any(|f| f.as_str().is_some_and(|f| f.eq_ignore_ascii_case(flag))),
        Value::String(s) => s.eq_ignore_ascii_case(flag),
        _ => false,
    }
}

fn kernel_tables(host: &Host) -> Tables {
    let list = |v: Value| v.as_array().cloned().unwrap_or_default();
    let mut tables = Tables::default();
    for n in list(host.ip_json(&["neigh", "show", "dev", "flannel.1"])) {
        if has_flag(&n, "state", "PERMANENT") {
            tables.arp.insert((str_field(&n, "dst"), str_field(&n, "lladdr")));
        }
    }
    for f in list(host.bridge_json(&["fdb", "show", "dev", "flannel.1"])) {
        tables.fdb.insert((str_field(&f, "mac"), str_field(&f, "dst")));
    }
    for r in list(host.ip_json(&["route", "show", "dev", "flannel.1"])) {
        tables.routes.insert((str_field(&r, "dst"), str_field(&r, "gateway"), has_flag(&r, "flags", "onlink")));
    }
    tables
}

/// A lease as stored in etcd: (subnet, PublicIP, VtepMAC).
fn leases(lab: &Lab) -> Vec<(String, String, String)> {
    lab.etcd_get_prefix(SUBNETS)
        .into_iter()
        .filter_map(|(key, value)| {
            let subnet = key.strip_prefix(SUBNETS)?.replace('-', "/");
            let v: Value = serde_json::from_str(&value).ok()?;
            Some((subnet, v["PublicIP"].as_str()?.to_string(), v["BackendData"]["VtepMAC"].as_str()?.to_string()))
        })
        .collect()
}

/// The tables design.md §1 specifies for host `n`, from the leases in etcd: for every other
/// lease, ARP `.0 → VtepMAC`, FDB `VtepMAC → PublicIP`, route `subnet via .0 onlink`.
fn expected_tables(lab: &Lab, n: usize) -> Tables {
    let own_ip = lab.host(n).underlay_ip.to_string();
    let mut tables = Tables::default();
    for (subnet, public_ip, mac) in leases(lab).into_iter().filter(|l| l.1 != own_ip) {
        let vtep = subnet.split('/').next().unwrap().to_string();
        tables.arp.insert((vtep.clone(), mac.clone()));
        tables.fdb.insert((mac, public_ip));
        tables.routes.insert((subnet, vtep, true));
    }
    tables
}

fn wait_tables_match(lab: &Lab, n: usize) {
    poll(&format!("host {n}'s flannel.1 tables to match the leases"), CONVERGE, || {
        (kernel_tables(lab.host(n)) == expected_tables(lab, n)).then_some(())
    });
}

fn wait_ping(lab: &Lab, from: usize, to: Ipv4Addr) {
    poll(&format!("container {from} to ping {to}"), CONVERGE, || lab.container_ping(from, to).then_some(()));
}

fn ping_all_pairs(lab: &Lab, hosts: &[usize]) {
    for &from in hosts {
        for &to in hosts.iter().filter(|&&to| to != from) {
            wait_ping(lab, from, lab.container(to).ip);
        }
    }
}

fn lease_key_of(lab: &Lab, n: usize) -> String {
    let subnet = wait_subnet_env(lab, n);
    let (gateway, prefix) = lab::parse_cidr(&subnet);
    let network = lab::nth_address(gateway, prefix, 0);
    format!("{SUBNETS}{network}-{prefix}")
}

/// The link as `ip -d -j link show flannel.1` reports it.
fn vxlan_link(host: &Host) -> Value {
    host.ip_json(&["-d", "link", "show", "flannel.1"])[0].clone()
}

#[test]
fn three_hosts_started_together_reach_each_other() {
    let (mut lab, _daemons) = cluster(3);
    for n in 1..=3 {
        lab.attach_container(n);
    }
    ping_all_pairs(&lab, &[1, 2, 3]);
    for n in 1..=3 {
        wait_tables_match(&lab, n);
        let tables = kernel_tables(lab.host(n));
        assert_eq!((tables.arp.len(), tables.fdb.len(), tables.routes.len()), (2, 2, 2), "host {n}: {tables:?}");
    }
}

#[test]
fn device_and_etcd_values_are_what_flanneld_writes() {
    let (lab, _daemons) = cluster(2);
    let subnets: BTreeSet<String> = (1..=2).map(|n| wait_subnet_env(&lab, n)).collect();
    assert_eq!(subnets.len(), 2, "hosts must get distinct subnets");
    for n in 1..=2 {
        let host = lab.host(n);
        let key = lease_key_of(&lab, n);
        let value = lab.etcd_get(&key).unwrap_or_else(|| panic!("no lease at {key}"));
        // Byte for byte what flanneld writes: field names, order, types, null PublicIPv6.
        let link = vxlan_link(host);
        let mac = link["address"].as_str().unwrap();
        let flanneld = format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#,
            host.underlay_ip
        );
        assert_eq!(value, flanneld, "the lease value must match flanneld's, with flannel.1's MAC");
        assert_eq!(etcd_lease_of(&lab, &key).1, 24 * 3600, "leases live 24 h by default, as flanneld's");

        let vxlan = &link["linkinfo"]["info_data"];
        assert_eq!(link["mtu"], 1450, "underlay MTU 1500 - 50");
        assert_eq!(vxlan["id"], 1);
        assert_eq!(vxlan["port"], 8472);
        assert_eq!(vxlan["local"], host.underlay_ip.to_string());
        assert_eq!(vxlan["learning"], false);
        let address = &host.ip_json(&["-4", "addr", "show", "flannel.1"])[0]["addr_info"][0];
        let (gateway, _) = lab::parse_cidr(&wait_subnet_env(&lab, n));
        assert_eq!(address["local"], lab::nth_address(gateway, 24, 0).to_string());
        assert_eq!(address["prefixlen"], 32);
        assert_eq!(
            host.subnet_env().unwrap().into_iter().collect::<Vec<_>>(),
            [
                ("FLANNEL_IPMASQ".to_string(), "false".to_string()),
                ("FLANNEL_MTU".to_string(), "1450".to_string()),
                ("FLANNEL_NETWORK".to_string(), "10.5.0.0/16".to_string()),
                ("FLANNEL_SUBNET".to_string(), wait_subnet_env(&lab, n)),
            ]
        );
        let text = std::fs::read_to_string(&host.subnet_file).unwrap();
        let order: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
        assert_eq!(order, ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"]);
    }
}

#[test]
fn a_late_host_joins_and_its_deleted_lease_is_removed_everywhere() {
    let (mut lab, mut daemons) = cluster(3);
    let late = lab.add_host();
    daemons.push(lab.start_weftd(late, &[]));
    wait_subnet_env(&lab, late);
    for n in 1..=late {
        lab.attach_container(n);
    }
    ping_all_pairs(&lab, &[1, 2, 3, late]);

    // Stop the late host's daemon (its lease stays), then delete its lease as an operator would.
    daemons[late - 1].terminate();
    let key = lease_key_of(&lab, late);
    lab.etcd_del(&key);
    let late_ip = lab.host(late).underlay_ip.to_string();
    for n in 1..late {
        wait_tables_match(&lab, n);
        let tables = kernel_tables(lab.host(n));
        assert!(tables.fdb.iter().all(|(_, dst)| *dst != late_ip), "host {n} kept an FDB entry for the late host");
        assert_eq!(tables.routes.len(), 2, "host {n}: {tables:?}");
    }
}

#[test]
fn restarts_keep_the_subnet_and_subnet_env_names_the_subnet_to_ask_for() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let first = lab.add_host();
    let mut daemon = lab.start_weftd(first, &[]);
    let subnet = wait_subnet_env(&lab, first);
    assert!(daemon.terminate().success(), "SIGTERM must be a clean exit");
    assert!(
        lab.host(first).ip_json(&["link", "show", "flannel.1"]).as_array().is_some_and(|l| l.len() == 1),
        "shutdown must leave the device"
    );
    std::fs::remove_file(&lab.host(first).subnet_file).unwrap();
    let _daemon = lab.start_weftd(first, &[]);
    assert_eq!(wait_subnet_env(&lab, first), subnet, "a restarted daemon keeps its lease");

    // Our own lease deleted behind our back: weftd takes the same subnet again.
    let key = lease_key_of(&lab, first);
    lab.etcd_del(&key);
    poll("the deleted lease to be re-acquired", CONVERGE, || lab.etcd_get(&key));

    // A host whose subnet.env (from an earlier life) names a free subnet gets that subnet.
    let free = free_subnets(&lab, 1).remove(0);
    let second = lab.add_host();
    let file = &lab.host(second).subnet_file;
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let subnet_env = format!("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET={}\nFLANNEL_MTU=1450\n", free.replace(".0/", ".1/"));
    std::fs::write(file, subnet_env).unwrap();
    let _second = lab.start_weftd(second, &[]);
    poll(&format!("host 2 to lease {free}"), CONVERGE, || lab.etcd_get(&format!("{SUBNETS}{}", free.replace('/', "-"))));
    assert_eq!(wait_subnet_env(&lab, second), free.replace(".0/", ".1/"));
}

#[test]
fn hand_deleted_route_arp_fdb_and_device_are_restored() {
    // No periodic resync within the test: every repair must come from a kernel notification.
    let (mut lab, _daemons) = cluster_with(2, &["--resync-interval", "1h"]);
    lab.attach_container(1);
    lab.attach_container(2);
    wait_tables_match(&lab, 1);
    let host = lab.host(1).clone();
    let tables = kernel_tables(&host);
    let (route, _, _) = tables.routes.iter().next().unwrap().clone();
    let (vtep, _) = tables.arp.iter().next().unwrap().clone();
    let (mac, dst) = tables.fdb.iter().next().unwrap().clone();

    // Routes point at nexthop objects, so `ip route del` takes the subnet alone.
    host.exec_ok(&["ip", "route", "del", &route]);
    host.exec_ok(&["ip", "neigh", "del", &vtep, "dev", "flannel.1"]);
    host.exec_ok(&["bridge", "fdb", "del", &mac, "dev", "flannel.1", "dst", &dst, "self"]);
    wait_tables_match(&lab, 1);

    // Deleting a nexthop takes its route with it and sends only a nexthop notification.
    let nexthop = route_nexthop_id(&host, &route);
    host.exec_ok(&["ip", "nexthop", "del", "id", &nexthop.to_string()]);
    wait_tables_match(&lab, 1);
    assert_eq!(route_nexthop_id(&host, &route), nexthop, "the same nexthop id comes back");

    // The peer's nexthop pointed elsewhere by hand is pointed back, under the same id.
    let nexthop_gateway = |id: u64| host.ip_json(&["nexthop", "show", "id", &id.to_string()])[0]["gateway"].clone();
    let vtep_gateway = nexthop_gateway(nexthop);
    host.exec_ok(&["ip", "nexthop", "replace", "id", &nexthop.to_string(), "via", "10.5.254.254", "dev", "flannel.1", "onlink"]);
    poll("the peer's nexthop to point at its VTEP again", CONVERGE, || (nexthop_gateway(nexthop) == vtep_gateway).then_some(()));

    // A nexthop named the way weftd names them, for a subnet no lease holds, and a route to
    // another such subnet through the peer's nexthop, are removed; the peer's stays.
    let free = free_subnets(&lab, 2);
    let stray_gateway = free[0].trim_end_matches("/24");
    let stray = u32::from(stray_gateway.parse::<Ipv4Addr>().unwrap()).to_string();
    host.exec_ok(&["ip", "nexthop", "add", "id", &stray, "via", stray_gateway, "dev", "flannel.1", "onlink"]);
    host.exec_ok(&["ip", "route", "add", &free[1], "nhid", &nexthop.to_string()]);
    poll("the stray nexthop and route to go", CONVERGE, || {
        let stray_route = host.ip_json(&["route", "show", &free[1]]).as_array().is_some_and(|r| !r.is_empty());
        (our_nexthops(&host) == [nexthop] && !stray_route).then_some(())
    });
    wait_tables_match(&lab, 1);

    let mac_before = vxlan_link(&host)["address"].clone();
    host.exec_ok(&["ip", "link", "del", "flannel.1"]);
    wait_tables_match(&lab, 1);
    assert_eq!(vxlan_link(&host)["address"], mac_before, "a recreated device keeps its MAC");
    wait_ping(&lab, 1, lab.container(2).ip);
    wait_ping(&lab, 2, lab.container(1).ip);
}

#[test]
fn more_peers_than_one_listing_page_are_all_programmed() {
    // weftd lists leases 500 at a time, every page at the first page's revision.
    const PEERS: u32 = 1200;
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#);
    let peers: Vec<(String, String)> = (0..PEERS)
        .map(|i| {
            let (hi, lo) = (i / 256, i % 256);
            let value = format!(
                r#"{{"PublicIP":"100.{}.{lo}.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:{hi:02x}:{lo:02x}"}}}}"#,
                64 + hi
            );
            (format!("{SUBNETS}10.{}.{lo}.0-24", 100 + hi), value)
        })
        .collect();
    lab.etcd_put_all(&peers);
    let n = lab.add_host();
    let _weftd = lab.start_weftd(n, &[]);
    wait_subnet_env(&lab, n);
    wait_tables_match(&lab, n);
    assert_eq!(kernel_tables(lab.host(n)).routes.len(), PEERS as usize, "a route for every peer");
}

/// The nexthop object a route points at: weftd names it after the gateway (the peer subnet's
/// network address as a number).
fn route_nexthop_id(host: &Host, subnet: &str) -> u64 {
    let routes = host.ip_json(&["route", "show", subnet]);
    let route = &routes[0];
    let gateway: Ipv4Addr = route["gateway"].as_str().expect("route has a gateway").parse().unwrap();
    let id = route["nhid"].as_u64().unwrap_or_else(|| panic!("route {subnet} has no nexthop: {route}"));
    assert_eq!(id, u64::from(u32::from(gateway)), "nexthop id is the gateway as a number");
    let nexthop = &host.ip_json(&["nexthop", "show", "id", &id.to_string()])[0];
    assert_eq!(nexthop["dev"], "flannel.1");
    id
}

/// Two hosts with a container each and host 1's tables programmed: the lab, its daemons,
/// host 1, and host 2's lease key and subnet.
fn two_peers() -> (Lab, Vec<Weftd>, Host, String, String) {
    let (mut lab, daemons) = cluster(2);
    lab.attach_container(1);
    lab.attach_container(2);
    wait_tables_match(&lab, 1);
    let host = lab.host(1).clone();
    let peer = lease_key_of(&lab, 2);
    let subnet = peer.strip_prefix(SUBNETS).unwrap().replace('-', "/");
    (lab, daemons, host, peer, subnet)
}

/// Stops the last daemon, deletes its lease `peer` and waits until `host` has no route to
/// `subnet`.
fn remove_last_peer(lab: &Lab, daemons: &mut Vec<Weftd>, host: &Host, peer: &str, subnet: &str) {
    daemons.pop().unwrap().terminate();
    lab.etcd_del(peer);
    poll(&format!("the departed peer's route to {subnet} and its nexthop to go"), CONVERGE, || {
        let route_gone = host.ip_json(&["route", "show", subnet]).as_array().is_some_and(|r| r.is_empty());
        (route_gone && our_nexthops(host).is_empty()).then_some(())
    });
}

/// `count` subnets of CONFIG's Network that no lease holds (the hosts' subnets are random).
fn free_subnets(lab: &Lab, count: usize) -> Vec<String> {
    let held: BTreeSet<String> = leases(lab).into_iter().map(|l| l.0).collect();
    (200..=255).map(|third| format!("10.5.{third}.0/24")).filter(|s| !held.contains(s)).take(count).collect()
}

/// The ids of the nexthops on flannel.1.
fn our_nexthops(host: &Host) -> Vec<u64> {
    let nexthops = host.ip_json(&["nexthop", "show", "dev", "flannel.1"]);
    nexthops.as_array().into_iter().flatten().filter_map(|n| n["id"].as_u64()).collect()
}

#[test]
fn nexthop_routes_stay_managed_when_nexthop_compat_mode_is_turned_off() {
    // With nexthop_compat_mode=0 route dumps and notifications name only a route's nexthop id,
    // not its device or gateway. weftd still knows its routes by the id, so it repairs them and
    // removes a departed peer's, even when the mode is switched after they were written.
    let (lab, mut daemons, host, peer, subnet) = two_peers();
    let nexthop = route_nexthop_id(&host, &subnet);
    let set = host.exec(&["sh", "-c", "echo 0 > /proc/sys/net/ipv4/nexthop_compat_mode"]);
    assert!(set.status.success(), "cannot set nexthop_compat_mode in {}", host.ns);
    let route_nhid = || host.ip_json(&["route", "show", &subnet]).get(0).and_then(|r| r["nhid"].as_u64());

    host.exec_ok(&["ip", "route", "del", &subnet]);
    poll("the hand-deleted route to come back", CONVERGE, || (route_nhid() == Some(nexthop)).then_some(()));
    wait_ping(&lab, 1, lab.container(2).ip);

    remove_last_peer(&lab, &mut daemons, &host, &peer, &subnet);
    let shown = host.exec(&["ip", "nexthop", "show", "id", &nexthop.to_string()]);
    assert!(!shown.status.success(), "its nexthop is gone too: {}", String::from_utf8_lossy(&shown.stdout));
}

#[test]
fn another_programs_nexthop_with_a_peers_id_is_left_alone() {
    // weftd names a peer's nexthop after its gateway. When some other program already holds
    // that id on another device, weftd leaves the nexthop be and routes the peer in flanneld's
    // form; when the peer goes, only the route goes.
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (first, second) = (lab.add_host(), lab.add_host());
    let file = &lab.host(second).subnet_file;
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.77.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
        .unwrap();
    let host = lab.host(first).clone();
    let id = u32::from(Ipv4Addr::new(10, 5, 77, 0)).to_string();
    let foreign = ["ip", "nexthop", "add", "id", id.as_str(), "via", "198.18.0.1", "dev", "eth0"];
    host.exec_ok(&foreign);
    let foreign_nexthop = || host.ip_json(&["nexthop", "show", "id", &id])[0].clone();
    let before = foreign_nexthop();

    // Host 2 first, so host 1's random choice cannot take 10.5.77.0/24.
    let second_daemon = lab.start_weftd(second, &[]);
    assert_eq!(wait_subnet_env(&lab, second), "10.5.77.1/24");
    let mut daemons = vec![lab.start_weftd(first, &[]), second_daemon];
    wait_subnet_env(&lab, first);
    lab.attach_container(first);
    lab.attach_container(second);
    wait_tables_match(&lab, first);
    let route = &host.ip_json(&["route", "show", "10.5.77.0/24"])[0];
    assert!(route.get("nhid").is_none() && route["dev"] == "flannel.1", "a flanneld-form route: {route}");
    assert_eq!(foreign_nexthop(), before, "the other program's nexthop is untouched");
    wait_ping(&lab, first, lab.container(second).ip);
    daemons[0].wait_log("another program's nexthop has this peer's id", CONVERGE);

    remove_last_peer(&lab, &mut daemons, &host, &format!("{SUBNETS}10.5.77.0-24"), "10.5.77.0/24");
    assert_eq!(foreign_nexthop(), before, "the other program's nexthop outlives the peer");
}

/// Where the kernel sends `host`'s packets for `destination`: (gateway, device); empty strings
/// while it has no route.
fn path_to(host: &Host, destination: &str) -> (String, String) {
    let Ok(routes) = host.try_ip_json(&["route", "get", destination]) else { return Default::default() };
    (routes[0]["gateway"].as_str().unwrap_or("").to_string(), str_field(&routes[0], "dev"))
}

#[test]
fn direct_routing_follows_main_table_changes_at_once() {
    // A route that takes the peer's PublicIP off-link (through a gateway) moves the peer to
    // VXLAN, and removing it moves the peer back, without waiting for a lease change or the
    // periodic resync (an hour here).
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#);
    let (first, second) = (lab.add_host(), lab.add_host());
    let _daemons = [lab.start_weftd(first, &["--resync-interval", "1h"]), lab.start_weftd(second, &[])];
    let (host, peer_ip) = (lab.host(first).clone(), lab.host(second).underlay_ip.to_string());
    let subnet = poll("host 2's lease", CONVERGE, || leases(&lab).into_iter().find(|l| l.1 == peer_ip).map(|l| l.0));
    let vtep = subnet.split('/').next().unwrap().to_string();
    let peer_address = vtep.replace(".0", ".1"); // any address in the peer's subnet
    let direct = (peer_ip.clone(), "eth0".to_string());
    poll("a direct route to host 2's subnet", CONVERGE, || (path_to(&host, &peer_address) == direct).then_some(()));

    let (peer_host_route, router) = (format!("{peer_ip}/32"), lab.etcd_ip().to_string());
    host.exec_ok(&["ip", "route", "add", &peer_host_route, "via", &router]);
    let vxlan = (vtep, "flannel.1".to_string());
    poll("host 2 to move to VXLAN", CONVERGE, || (path_to(&host, &peer_address) == vxlan).then_some(()));
    wait_tables_match(&lab, first);

    host.exec_ok(&["ip", "route", "del", &peer_host_route, "via", &router]);
    poll("host 2 to be direct again", CONVERGE, || (path_to(&host, &peer_address) == direct).then_some(()));
    assert_eq!(kernel_tables(&host), Tables::default(), "no VXLAN entries left");
}

#[test]
fn direct_routing_routes_on_link_peers_around_the_tunnel_and_back_when_turned_off() {
    // Every lab host is on one underlay link, so with DirectRouting a peer's subnet is routed
    // `via <its PublicIP>` with no ARP, FDB or VXLAN route, as flanneld does it.
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#);
    let (first, second) = (lab.add_host(), lab.add_host());
    let mut daemons = vec![lab.start_weftd(first, &[]), lab.start_weftd(second, &[])];
    for n in [first, second] {
        wait_subnet_env(&lab, n);
        lab.attach_container(n);
    }
    let host = lab.host(first).clone();
    let peer = lease_key_of(&lab, second);
    let subnet = peer.strip_prefix(SUBNETS).unwrap().replace('-', "/");
    let (peer_ip, peer_container) = (lab.host(second).underlay_ip.to_string(), lab.container(second).ip.to_string());
    let path = || path_to(&host, &peer_container);
    let direct = (peer_ip.clone(), "eth0".to_string());
    poll("a direct route to host 2's subnet", CONVERGE, || (path() == direct).then_some(()));
    let tables = kernel_tables(&host);
    assert!(tables.arp.is_empty() && tables.fdb.is_empty() && tables.routes.is_empty(), "no VXLAN entries: {tables:?}");
    wait_ping(&lab, first, lab.container(second).ip);
    wait_ping(&lab, second, lab.container(first).ip);

    host.exec_ok(&["ip", "route", "del", &subnet]);
    poll("the hand-deleted direct route to come back", CONVERGE, || (path() == direct).then_some(()));

    // Restarted without DirectRouting, host 1 goes back to VXLAN and leaves no direct route.
    daemons[0].terminate();
    lab.put_network_config(CONFIG);
    daemons[0] = lab.start_weftd(first, &[]);
    wait_tables_match(&lab, first);
    assert_eq!(path(), (subnet.split('/').next().unwrap().to_string(), "flannel.1".to_string()));
    wait_ping(&lab, first, lab.container(second).ip);

    // And with DirectRouting again, direct once more, with no nexthop left behind.
    daemons[0].terminate();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#);
    daemons[0] = lab.start_weftd(first, &[]);
    poll("the direct route again", CONVERGE, || (path() == direct && kernel_tables(&host) == Tables::default()).then_some(()));
    let nexthops = host.exec(&["ip", "nexthop", "show"]);
    assert!(String::from_utf8_lossy(&nexthops.stdout).trim().is_empty(), "{}", String::from_utf8_lossy(&nexthops.stdout));

    // The peer leaves: its direct route goes.
    remove_last_peer(&lab, &mut daemons, &host, &peer, &subnet);
}

#[test]
fn flanneld_form_routes_are_taken_over_in_place_and_removed_with_their_peer() {
    // A host moving from flanneld has flanneld's routes (their own gateway, no nexthop): weftd
    // replaces each with its nexthop form in place, and removes it when the peer leaves.
    let (lab, mut daemons, host, peer, subnet) = two_peers();
    let vtep = subnet.split('/').next().unwrap().to_string();
    daemons[0].terminate();
    host.exec_ok(&["ip", "route", "del", &subnet]);
    host.exec_ok(&["ip", "nexthop", "flush"]);
    host.exec_ok(&["ip", "route", "add", &subnet, "via", &vtep, "dev", "flannel.1", "onlink"]);
    daemons[0] = lab.start_weftd(1, &[]);
    poll("flanneld's route to point at a nexthop", CONVERGE, || {
        host.ip_json(&["route", "show", &subnet])[0].get("nhid").is_some().then_some(())
    });
    route_nexthop_id(&host, &subnet);
    wait_tables_match(&lab, 1);
    wait_ping(&lab, 1, lab.container(2).ip);

    remove_last_peer(&lab, &mut daemons, &host, &peer, &subnet);
}

#[test]
fn malformed_peer_leases_are_skipped_and_good_peers_kept() {
    let (mut lab, daemons) = cluster(2);
    lab.attach_container(1);
    lab.attach_container(2);
    wait_ping(&lab, 1, lab.container(2).ip);
    let good = kernel_tables(lab.host(1));

    let free: Vec<String> = free_subnets(&lab, 3).iter().map(|s| s.replace('/', "-")).collect();
    lab.etcd_put(&format!("{SUBNETS}{}", free[0]), "this is not json");
    lab.etcd_put(
        &format!("{SUBNETS}{}", free[1]),
        r#"{"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#,
    );
    lab.etcd_put(
        &format!("{SUBNETS}{}", free[2]),
        r#"{"PublicIP":"198.18.0.99","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"not-a-mac"}}"#,
    );
    lab.etcd_put(
        &format!("{SUBNETS}10.9.0.0-24"),
        r#"{"PublicIP":"198.18.0.98","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}}"#,
    );
    lab.etcd_put(&format!("{SUBNETS}garbage-key"), "{}");
    // A good peer's value overwritten with garbage keeps its last good entries.
    lab.etcd_put(&lease_key_of(&lab, 2), "{broken");

    let log = daemons[0].wait_log("10.9.0.0/24", CONVERGE);
    for key in free.iter().map(String::as_str).chain(["garbage-key"]) {
        let warnings = poll(&format!("a warning for {key}"), CONVERGE, || {
            let count = daemons[0].log().lines().filter(|l| l.contains("malformed lease") && l.contains(key)).count();
            (count > 0).then_some(count)
        });
        assert_eq!(warnings, 1, "exactly one warning for {key}:\n{log}");
    }
    assert!(daemons[0].log().contains("outside the Network"), "{}", daemons[0].log());
    assert_eq!(kernel_tables(lab.host(1)), good, "good peer entries must be kept");
    wait_ping(&lab, 1, lab.container(2).ip);
    let mut daemons = daemons;
    assert!(daemons[0].is_running() && daemons[1].is_running());
}

#[test]
fn a_bad_network_config_is_a_clear_error_and_a_missing_one_is_waited_for() {
    let mut lab = Lab::new();
    let n = lab.add_host();
    let cases = [
        ("not json at all", "not valid JSON"),
        (r#"{"Network":"10.5.0.0/16","SubnetLen":31}"#, "\"SubnetLen\" must be at most 30"),
        (r#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}"#, "Backend.Type \"udp\" is not supported"),
    ];
    for (config, message) in cases {
        lab.put_network_config(config);
        let mut daemon = lab.start_weftd(n, &[]);
        let status = daemon.wait_exit(CONVERGE).unwrap_or_else(|| panic!("weftd kept running with config {config}"));
        assert!(!status.success(), "config {config} must be fatal");
        assert!(daemon.log().contains(message), "log must say {message:?}:\n{}", daemon.log());
    }

    lab.etcd_del(lab::NETWORK_CONFIG_KEY);
    let daemon = lab.start_weftd(n, &[]);
    daemon.wait_log("network config not found", CONVERGE);
    lab.put_network_config(CONFIG);
    wait_subnet_env(&lab, n);
}

#[test]
fn flanneld_environment_variables_are_read() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let n = lab.add_host();
    let bin = lab::weftd_bin();
    let bin = bin.to_str().unwrap();
    let run = |env: &str| lab.host(n).exec(&["env", env, bin, "--etcd-endpoints", "http://127.0.0.1:1"]);
    let out = run("FLANNELD_SUBNET_LEASE_RENEW_MARGIN=0");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--subnet-lease-renew-margin"), "{out:?}");
    let out = run("FLANNELD_IFACE_REGEX=[unclosed");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--iface-regex \"[unclosed\" is not a valid regular expression"),
        "{out:?}"
    );
    let out = run("FLANNELD_IFACE=no-such-interface");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-interface"), "{out:?}");

    // A variable really configures the daemon: its leases land under FLANNELD_ETCD_PREFIX.
    lab.etcd_put("/other/net/config", CONFIG);
    let _daemon = lab.start_weftd_env(n, &[], &[("FLANNELD_ETCD_PREFIX", "/other/net")]);
    poll("a lease under /other/net/subnets/", CONVERGE, || {
        let leases = lab.etcd_get_prefix("/other/net/subnets/");
        (leases.len() == 1).then_some(())
    });
    assert!(lab.etcd_get_prefix(SUBNETS).is_empty(), "nothing may be written under the default prefix");
}

/// Without --iface, weftd takes the default route's interface, or with --iface-can-reach the
/// one the kernel would use to reach that address. Both hosts here have a decoy default route.
#[test]
fn the_underlay_is_the_default_routes_interface_or_the_one_that_reaches_iface_can_reach() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let hosts = [lab.add_host(), lab.add_host()];
    for &n in &hosts {
        let host = lab.host(n);
        host.exec_ok(&["ip", "link", "add", "decoy0", "up", "type", "veth", "peer", "decoy1"]);
        host.exec_ok(&["ip", "addr", "add", &format!("203.0.113.{n}/24"), "dev", "decoy0"]);
        host.exec_ok(&["ip", "route", "add", "default", "dev", "decoy0"]);
    }
    let etcd_ip = lab.etcd_ip().to_string();
    let _reaching = lab.start_weftd_picking_iface(hosts[0], &[], &[("FLANNELD_IFACE_CAN_REACH", &etcd_ip)]);
    let _defaulting = lab.start_weftd_picking_iface(hosts[1], &[], &[]);
    let public_ips = poll("both hosts' leases", CONVERGE, || {
        let ips: BTreeSet<String> = leases(&lab).into_iter().map(|l| l.1).collect();
        (ips.len() == 2).then_some(ips)
    });
    let expected = BTreeSet::from([lab.host(hosts[0]).underlay_ip.to_string(), format!("203.0.113.{}", hosts[1])]);
    assert_eq!(public_ips, expected, "host 1 reaches etcd through eth0; host 2 follows its default route to decoy0");
    let underlay_of = |n: usize| vxlan_link(lab.host(n))["linkinfo"]["info_data"]["link"].as_str().map(String::from);
    assert_eq!(underlay_of(hosts[0]).as_deref(), Some("eth0"));
    assert_eq!(underlay_of(hosts[1]).as_deref(), Some("decoy0"));
}

/// The etcd lease a key is attached to (0 for none) and its granted TTL in seconds.
fn etcd_lease_of(lab: &Lab, key: &str) -> (i64, i64) {
    let out = lab.etcdctl(&["get", key, "-w", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("etcdctl get {key}: {out:?}"));
    let id = json["kvs"][0]["lease"].as_i64().unwrap_or(0);
    if id == 0 {
        return (0, 0);
    }
    let out = lab.etcdctl(&["lease", "timetolive", &format!("{id:x}"), "-w", "json"]);
    let ttl: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("etcdctl lease timetolive: {out:?}"));
    (id, ttl["granted-ttl"].as_i64().unwrap_or(0))
}

#[test]
fn reservations_are_honoured_leases_renew_and_exhaustion_is_a_clear_error() {
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.3.0"}"#);
    let (first, second, third) = (lab.add_host(), lab.add_host(), lab.add_host());
    let reservation = |ip: Ipv4Addr| {
        format!(r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}}}}"#)
    };
    lab.etcd_put(&format!("{SUBNETS}10.5.3.0-24"), &reservation(lab.host(first).underlay_ip));
    lab.etcd_put(&format!("{SUBNETS}10.5.2.0-24"), &reservation(Ipv4Addr::new(198, 18, 0, 99)));

    // The host a reservation names takes it, and it stays a reservation (no etcd lease).
    let _first = lab.start_weftd(first, &[]);
    assert_eq!(wait_subnet_env(&lab, first), "10.5.3.1/24");
    let key = format!("{SUBNETS}10.5.3.0-24");
    poll("host 1 to write its MAC into its reservation", CONVERGE, || {
        lab.etcd_get(&key).filter(|v| !v.contains("02:00:00:00:00:09"))
    });
    assert_eq!(etcd_lease_of(&lab, &key).0, 0, "a reservation must not get an expiring lease");

    // Another host never takes someone else's reservation; its lease renews before the TTL.
    let mut second_daemon = lab.start_weftd(second, &["--subnet-lease-ttl", "3s"]);
    assert_eq!(wait_subnet_env(&lab, second), "10.5.1.1/24");
    let key = format!("{SUBNETS}10.5.1.0-24");
    let (lease, ttl) = etcd_lease_of(&lab, &key);
    assert_eq!(ttl, 3, "the lease carries --subnet-lease-ttl");
    poll("three renewals (more than one TTL)", CONVERGE, || {
        (second_daemon.log().matches("lease renewed").count() >= 3).then_some(())
    });
    assert_eq!(etcd_lease_of(&lab, &key).0, lease, "the same lease is kept alive past its TTL");

    // The third host finds no free subnet: a clear error and a non-zero exit.
    let mut third_daemon = lab.start_weftd(third, &[]);
    let status = third_daemon.wait_exit(CONVERGE).expect("weftd must exit when out of subnets");
    assert!(!status.success());
    assert!(third_daemon.log().contains("out of subnets"), "{}", third_daemon.log());
    assert!(second_daemon.is_running());
}

#[test]
fn a_peer_whose_vtep_mac_changed_leaves_no_stale_fdb_entry() {
    let (lab, mut daemons) = cluster(2);
    wait_tables_match(&lab, 1);
    daemons[1].terminate();
    let key = lease_key_of(&lab, 2);
    let peer_ip = lab.host(2).underlay_ip;
    let new_mac = "02:aa:bb:cc:dd:ee";
    let value = format!(
        r#"{{"PublicIP":"{peer_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{new_mac}"}}}}"#
    );
    lab.etcd_put(&key, &value);
    wait_tables_match(&lab, 1);
    let tables = kernel_tables(lab.host(1));
    assert_eq!(tables.fdb, BTreeSet::from([(new_mac.to_string(), peer_ip.to_string())]), "only the new MAC may remain");
    assert!(tables.arp.iter().all(|(_, mac)| mac == new_mac), "{tables:?}");
}
