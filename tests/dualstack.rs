//! The dual-stack overlay end to end: real `weftd` processes in host namespaces with an IPv6
//! underlay, checked as an operator would: pings over both families between containers, and
//! flannel-v6.1's device, address, `accept_ra`, neighbours, FDB and routes (`ip -6`, `bridge`)
//! against the leases in etcd. Every daemon runs with `--resync-interval 1h`, so a repair must
//! come from a kernel notification, never from the periodic resync.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::time::Duration;

use lab::dualstack::{has, list, Ipv6Tables};
use lab::{poll, Host, Lab, Weftd};
use serde_json::Value;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";
const CONVERGE: Duration = Duration::from_secs(20);
const DEVICE: &str = "flannel-v6.1";
const SLOW_RESYNC: [&str; 2] = ["--resync-interval", "1h"];

/// `hosts` dual-stack hosts, their weftds all started at once, and a container on each.
fn cluster(hosts: usize) -> (Lab, Vec<Weftd>) {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let numbers: Vec<usize> = (0..hosts).map(|_| lab.add_host()).collect();
    let daemons: Vec<Weftd> = numbers.iter().map(|&n| lab.start_weftd(n, &SLOW_RESYNC)).collect();
    for &n in &numbers {
        poll(&format!("host {n}'s subnet.env with its IPv6 subnet"), CONVERGE, || {
            lab.host(n).subnet_env().filter(|env| env.contains_key("FLANNEL_IPV6_SUBNET") && env.contains_key("FLANNEL_MTU"))
        });
    }
    for &n in &numbers {
        lab.attach_container(n);
    }
    (lab, daemons)
}

/// A dual-stack lease as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lease {
    key: String,
    public_ip: String,
    /// The IPv6 subnet (`fd00:5:3::/64`).
    ipv6_subnet: String,
    public_ipv6: String,
    v6_mac: String,
}

/// Every lease with an IPv6 part.
fn leases(lab: &Lab) -> Vec<Lease> {
    lab.etcd_get_prefix(SUBNETS)
        .into_iter()
        .filter_map(|(key, value)| {
            let (_, ipv6) = key.strip_prefix(SUBNETS)?.split_once('&')?;
            let v: Value = serde_json::from_str(&value).ok()?;
            Some(Lease {
                key: key.clone(),
                public_ip: v["PublicIP"].as_str()?.to_string(),
                ipv6_subnet: ipv6.replace('-', "/"),
                public_ipv6: v["PublicIPv6"].as_str()?.to_string(),
                v6_mac: v["BackendV6Data"]["VtepMAC"].as_str()?.to_string(),
            })
        })
        .collect()
}

fn lease_of(lab: &Lab, n: usize) -> Lease {
    let ip = lab.host(n).underlay_ip.to_string();
    leases(lab).into_iter().find(|l| l.public_ip == ip).unwrap_or_else(|| panic!("host {n} has no dual-stack lease"))
}

/// The IPv6 tables design.md §4 gives host `n`, from the leases in etcd (every other lease's).
fn expected_tables(lab: &Lab, n: usize) -> Ipv6Tables {
    let own = lab.host(n).underlay_ip.to_string();
    let peers: Vec<Lease> = leases(lab).into_iter().filter(|l| l.public_ip != own).collect();
    Ipv6Tables::of_peers(peers.iter().map(|l| (l.ipv6_subnet.as_str(), l.public_ipv6.as_str(), l.v6_mac.as_str())))
}

fn wait_tables_match(lab: &Lab, n: usize) {
    poll(&format!("host {n}'s {DEVICE} tables to match the leases"), CONVERGE, || {
        let (actual, expected) = (lab.host(n).ipv6_tables(), expected_tables(lab, n));
        (actual == expected && !expected.routes.is_empty()).then_some(())
    });
}

/// Container N's IPv6 address (the lab gives it one from FLANNEL_IPV6_SUBNET).
fn container_ipv6(lab: &Lab, n: usize) -> Ipv6Addr {
    lab.container(n).ipv6.unwrap_or_else(|| panic!("container {n} has no IPv6 address"))
}

fn ping_all_pairs(lab: &Lab, hosts: &[usize]) {
    for &from in hosts {
        for &to in hosts.iter().filter(|&&to| to != from) {
            let (v4, v6) = (lab.container(to).ip, container_ipv6(lab, to));
            poll(&format!("container {from} to ping {v4}"), CONVERGE, || lab.container_ping(from, v4).then_some(()));
            poll(&format!("container {from} to ping {v6}"), CONVERGE, || lab.container_ping(from, v6).then_some(()));
        }
    }
}

/// The nexthop id of the route to `subnet` on flannel-v6.1 (weftd's routes point at nexthops).
fn route_nexthop_id(host: &Host, subnet: &str) -> u64 {
    let routes = host.ip_json(&["-6", "route", "show", subnet]);
    routes[0]["nhid"].as_u64().unwrap_or_else(|| panic!("route {subnet} has no nexthop: {routes}"))
}

#[test]
fn three_dual_stack_hosts_started_together_reach_each_other_over_both_families() {
    let (lab, _daemons) = cluster(3);
    ping_all_pairs(&lab, &[1, 2, 3]);
    for n in 1..=3 {
        wait_tables_match(&lab, n);
        let host = lab.host(n);
        let lease = lease_of(&lab, n);
        let tables = host.ipv6_tables();
        assert_eq!((tables.neighbours.len(), tables.fdb.len(), tables.routes.len()), (2, 2, 2), "host {n}: {tables:?}");
        for (subnet, _, _) in &tables.routes {
            let id = route_nexthop_id(host, subnet);
            assert_eq!(id & 0xF000_0000, 0xE000_0000, "an IPv6 nexthop id: {id:#x}");
            let nexthop = &host.ip_json(&["nexthop", "show", "id", &id.to_string()])[0];
            assert_eq!((nexthop["dev"].as_str(), has(nexthop, "flags", "onlink")), (Some(DEVICE), true), "{nexthop}");
        }

        let link = host.link_details(DEVICE).expect("flannel-v6.1");
        let info = &link["linkinfo"]["info_data"];
        assert_eq!((info["id"].as_u64(), info["port"].as_u64(), info["learning"].as_bool()), (Some(1), Some(8472), Some(false)));
        assert_eq!(info["local6"].as_str(), Some(lease.public_ipv6.as_str()), "local is the public IPv6: {info}");
        assert_eq!(info["link"].as_str(), Some("eth0"));
        assert_eq!(link["mtu"].as_u64(), Some(1500 - 70), "the underlay's MTU less IPv6 VXLAN's headers");
        assert_eq!(link["address"].as_str(), Some(lease.v6_mac.as_str()), "the lease advertises flannel-v6.1's MAC");
        let v4_mac = host.link_details("flannel.1").expect("flannel.1")["address"].clone();
        assert_ne!(link["address"], v4_mac, "each device has a MAC of its own");
        assert!(has(&link, "flags", "UP"));

        let vtep = lease.ipv6_subnet.replace("/64", "");
        let global = host.global_ipv6_addresses(DEVICE);
        assert_eq!(global, [(vtep, 128)], "the lease's IPv6 network address as a /128");
        assert_eq!(host.sysctl(&format!("net/ipv6/conf/{DEVICE}/accept_ra")).as_deref(), Some("0"));
    }
}

#[test]
fn hand_deleted_ipv6_route_neighbour_fdb_nexthop_and_device_are_restored() {
    let (lab, _daemons) = cluster(2);
    wait_tables_match(&lab, 1);
    let host = lab.host(1).clone();
    let tables = host.ipv6_tables();
    let (route, _, _) = tables.routes.first().unwrap().clone();
    let (vtep, _) = tables.neighbours.first().unwrap().clone();
    let (mac, dst) = tables.fdb.first().unwrap().clone();

    host.exec_ok(&["ip", "-6", "route", "del", &route]);
    wait_tables_match(&lab, 1);
    host.exec_ok(&["ip", "-6", "neigh", "del", &vtep, "dev", DEVICE]);
    wait_tables_match(&lab, 1);
    host.exec_ok(&["bridge", "fdb", "del", &mac, "dev", DEVICE, "dst", &dst, "self"]);
    wait_tables_match(&lab, 1);

    // Deleting a nexthop takes its route with it and sends only a nexthop notification.
    let nexthop = route_nexthop_id(&host, &route);
    host.exec_ok(&["ip", "nexthop", "del", "id", &nexthop.to_string()]);
    wait_tables_match(&lab, 1);
    assert_eq!(route_nexthop_id(&host, &route), nexthop, "the same nexthop id comes back");

    let mac_before = host.link_details(DEVICE).unwrap()["address"].clone();
    host.exec_ok(&["ip", "link", "del", DEVICE]);
    wait_tables_match(&lab, 1);
    let link = host.link_details(DEVICE).unwrap();
    assert_eq!(link["address"], mac_before, "a recreated device keeps its MAC");
    assert_eq!(host.sysctl(&format!("net/ipv6/conf/{DEVICE}/accept_ra")).as_deref(), Some("0"));
    let peer = container_ipv6(&lab, 2);
    poll("container 1 to ping container 2 over IPv6", CONVERGE, || lab.container_ping(1, peer).then_some(()));

    // Another program's changes to the device's MAC and MTU are set back in place.
    host.exec_ok(&["ip", "link", "set", DEVICE, "address", "02:11:22:33:44:55", "mtu", "1300"]);
    host.wait_link(DEVICE, "flannel-v6.1's MAC and MTU set back", CONVERGE, |l| {
        l["address"] == mac_before && l["mtu"].as_u64() == Some(1430)
    });
}

#[test]
fn a_departed_peers_ipv6_entries_go_and_the_ipv6_mac_survives_restarts() {
    let (lab, mut daemons) = cluster(3);
    wait_tables_match(&lab, 1);
    let departed = lease_of(&lab, 3);
    daemons.pop().unwrap().terminate();
    lab.etcd_del(&departed.key);
    for n in 1..=2 {
        wait_tables_match(&lab, n);
        assert_eq!(lab.host(n).ipv6_tables().routes.len(), 1, "host {n}: only host 2's IPv6 route is left");
        let nexthops = list(lab.host(n).ip_json(&["nexthop", "show", "dev", DEVICE]));
        assert_eq!(nexthops.len(), 1, "host {n}: the departed peer's nexthop goes too: {nexthops:?}");
    }

    // A restart adopts the device as it is; a device deleted while weftd was down comes back
    // with the same MAC, and the lease still advertises it.
    let host = lab.host(1).clone();
    let mac = host.link_details(DEVICE).unwrap()["address"].clone();
    daemons.remove(0).terminate();
    host.exec_ok(&["ip", "link", "del", DEVICE]);
    let _restarted = lab.start_weftd(1, &SLOW_RESYNC);
    host.wait_link(DEVICE, "flannel-v6.1 back", CONVERGE, |l| l["address"] == mac);
    assert_eq!(Some(lease_of(&lab, 1).v6_mac.as_str()), mac.as_str());
    wait_tables_match(&lab, 2);
    let peer = container_ipv6(&lab, 1);
    poll("container 2 to ping container 1 over IPv6", CONVERGE, || lab.container_ping(2, peer).then_some(()));
}

#[test]
fn flannel_v6_changed_by_another_program_or_set_down_is_repaired_and_follows_the_underlay_mtu() {
    let (lab, daemons) = cluster(2);
    wait_tables_match(&lab, 1);
    let host = lab.host(1).clone();
    let lease = lease_of(&lab, 1);
    let info = |l: &Value, key: &str| l["linkinfo"]["info_data"][key].clone();

    // Another program changes the local address in place, then replaces the device with one of
    // another VNI, port and MAC while weftd is paused (the notifications wait in its socket).
    host.exec_ok(&["ip", "link", "set", DEVICE, "type", "vxlan", "local", "fd18::99"]);
    host.wait_link(DEVICE, "flannel-v6.1's local set back", CONVERGE, |l| info(l, "local6") == lease.public_ipv6.as_str());
    let pid = daemons[0].pid().to_string();
    let signal = |name: &str| assert!(std::process::Command::new("kill").args([name, &pid]).status().unwrap().success());
    signal("-STOP");
    host.exec_ok(&["ip", "link", "del", DEVICE]);
    let add =
        format!("ip link add {DEVICE} address 02:11:22:33:44:66 type vxlan id 7 local fd18::99 dev eth0 dstport 4789 nolearning");
    host.exec_ok(&add.split(' ').collect::<Vec<_>>());
    host.exec_ok(&["ip", "link", "set", DEVICE, "up"]);
    signal("-CONT");
    let link = host.wait_link(DEVICE, "flannel-v6.1 recreated as weft wants it", CONVERGE, |l| {
        info(l, "id") == 1 && info(l, "port") == 8472 && info(l, "local6") == lease.public_ipv6.as_str()
    });
    assert_eq!(link["address"].as_str(), Some(lease.v6_mac.as_str()));
    assert_eq!(host.sysctl(&format!("net/ipv6/conf/{DEVICE}/accept_ra")).as_deref(), Some("0"));
    wait_tables_match(&lab, 1);

    host.exec_ok(&["ip", "link", "set", DEVICE, "down"]);
    host.wait_link(DEVICE, "flannel-v6.1 up again", CONVERGE, |l| has(l, "flags", "UP"));
    let peer = container_ipv6(&lab, 2);
    poll("container 1 to ping container 2 over IPv6", CONVERGE, || lab.container_ping(1, peer).then_some(()));

    // IPv6 VXLAN headers are 20 bytes longer, so containers get the IPv6 device's MTU.
    host.exec_ok(&["ip", "link", "set", "eth0", "mtu", "1400"]);
    host.wait_link(DEVICE, "flannel-v6.1's MTU to follow eth0 (1330)", CONVERGE, |l| l["mtu"] == 1330);
    poll("subnet.env FLANNEL_MTU=1330", CONVERGE, || {
        (host.subnet_env()?.get("FLANNEL_MTU").map(String::as_str) == Some("1330")).then_some(())
    });
}

#[test]
fn a_readdressed_ipv6_underlay_moves_the_ipv6_vtep_and_the_lease_and_peers_follow() {
    let (lab, _daemons) = cluster(2);
    wait_tables_match(&lab, 2);
    let host = lab.host(1).clone();
    let old = host.underlay_ipv6.to_string();
    let new = "fd18::99";
    host.exec_ok(&["ip", "-6", "addr", "add", &format!("{new}/64"), "dev", "eth0", "nodad"]);
    host.exec_ok(&["ip", "-6", "addr", "del", &format!("{old}/64"), "dev", "eth0"]);
    let info = |l: &Value| l["linkinfo"]["info_data"]["local6"].clone();
    host.wait_link(DEVICE, "flannel-v6.1's local to follow eth0", CONVERGE, |l| info(l) == new);
    poll("host 1's lease to advertise its new PublicIPv6", CONVERGE, || (lease_of(&lab, 1).public_ipv6 == new).then_some(()));
    wait_tables_match(&lab, 2);
    assert!(lab.host(2).ipv6_tables().fdb.iter().any(|(_, dst)| dst == new), "host 2 sends host 1's IPv6 frames to {new}");
    let peer = container_ipv6(&lab, 1);
    poll("container 2 to ping container 1 over IPv6", CONVERGE, || lab.container_ping(2, peer).then_some(()));
}

#[test]
fn ipv6_nexthop_routes_stay_managed_without_compat_mode_and_a_stray_ipv6_nexthop_goes() {
    let (lab, mut daemons) = cluster(2);
    wait_tables_match(&lab, 1);
    let host = lab.host(1).clone();
    let nexthops =
        || list(host.ip_json(&["nexthop", "show", "dev", DEVICE])).iter().filter_map(|n| n["id"].as_u64()).collect::<Vec<_>>();

    // A nexthop named the way weftd names them, for an IPv6 subnet no lease holds, is removed.
    let held: BTreeSet<String> = leases(&lab).into_iter().map(|l| l.ipv6_subnet).collect();
    let free = (0xff00..=0xffffu32).map(|n| format!("fd00:5:0:{n:x}::")).find(|s| !held.contains(&format!("{s}/64"))).unwrap();
    let stray = weft::model::nexthop_id(free.parse::<Ipv6Addr>().unwrap()).to_string();
    let peer_nexthop = nexthops();
    host.exec_ok(&["ip", "nexthop", "add", "id", &stray, "via", &free, "dev", DEVICE, "onlink"]);
    poll("the stray IPv6 nexthop to go", CONVERGE, || (nexthops() == peer_nexthop).then_some(()));

    // With nexthop_compat_mode=0 a route names only its nexthop id; weftd still knows it. (The
    // one switch, under ipv4, is for both families.)
    let subnet = lease_of(&lab, 2).ipv6_subnet;
    let nexthop = route_nexthop_id(&host, &subnet);
    let set = host.exec(&["sh", "-c", "echo 0 > /proc/sys/net/ipv4/nexthop_compat_mode"]);
    assert!(set.status.success(), "cannot set nexthop_compat_mode in {}", host.ns);
    let route_nhid = || host.ip_json(&["-6", "route", "show", &subnet]).get(0).and_then(|r| r["nhid"].as_u64());
    host.exec_ok(&["ip", "-6", "route", "del", &subnet]);
    poll("the hand-deleted IPv6 route to come back", CONVERGE, || (route_nhid() == Some(nexthop)).then_some(()));
    let peer = container_ipv6(&lab, 2);
    poll("container 1 to ping container 2 over IPv6", CONVERGE, || lab.container_ping(1, peer).then_some(()));

    let departed = lease_of(&lab, 2);
    daemons.pop().unwrap().terminate();
    lab.etcd_del(&departed.key);
    poll("the departed peer's IPv6 route and nexthop to go", CONVERGE, || {
        (route_nhid().is_none() && nexthops().is_empty()).then_some(())
    });
}

#[test]
fn another_programs_nexthop_with_an_ipv6_peers_id_is_left_alone() {
    // As for IPv4: weftd leaves another program's nexthop with a peer's id be, routes that
    // peer in flanneld's form (`via <v6 network address> dev flannel-v6.1 onlink`), says so,
    // and when the peer goes only the route goes.
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (first, second) = (lab.add_host(), lab.add_host());
    let file = &lab.host(second).subnet_file;
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let env = "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.77.1/24\nFLANNEL_IPV6_NETWORK=fd00:5::/48\nFLANNEL_IPV6_SUBNET=fd00:5:0:77::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n";
    std::fs::write(file, env).unwrap();
    let host = lab.host(first).clone();
    let id = weft::model::nexthop_id("fd00:5:0:77::".parse::<Ipv6Addr>().unwrap()).to_string();
    host.exec_ok(&["ip", "nexthop", "add", "id", &id, "via", "fd18::1", "dev", "eth0"]);
    let foreign_nexthop = || host.ip_json(&["nexthop", "show", "id", &id])[0].clone();
    let before = foreign_nexthop();

    // Host 2 first, so host 1's random choice cannot take fd00:5:0:77::/64.
    let second_daemon = lab.start_weftd(second, &SLOW_RESYNC);
    poll("host 2 to lease fd00:5:0:77::/64", CONVERGE, || {
        (lab.host(second).subnet_env()?.get("FLANNEL_IPV6_SUBNET")? == "fd00:5:0:77::1/64").then_some(())
    });
    let mut daemons = vec![lab.start_weftd(first, &SLOW_RESYNC), second_daemon];
    poll("host 1's subnet.env", CONVERGE, || lab.host(first).subnet_env().filter(|e| e.contains_key("FLANNEL_IPV6_SUBNET")));
    lab.attach_container(first);
    lab.attach_container(second);
    wait_tables_match(&lab, first);
    let route = &host.ip_json(&["-6", "route", "show", "fd00:5:0:77::/64"])[0];
    assert!(route.get("nhid").is_none() && route["dev"] == DEVICE, "a flanneld-form route: {route}");
    assert_eq!(foreign_nexthop(), before, "the other program's nexthop is untouched");
    let peer = container_ipv6(&lab, second);
    poll("container 1 to ping container 2 over IPv6", CONVERGE, || lab.container_ping(first, peer).then_some(()));
    daemons[0].wait_log("another program's nexthop has this peer's id", CONVERGE);

    let departed = lease_of(&lab, second);
    daemons.pop().unwrap().terminate();
    lab.etcd_del(&departed.key);
    poll("the departed peer's IPv6 route to go", CONVERGE, || {
        host.ip_json(&["-6", "route", "show", "fd00:5:0:77::/64"]).as_array().is_some_and(|r| r.is_empty()).then_some(())
    });
    assert_eq!(foreign_nexthop(), before, "the other program's nexthop outlives the peer");
}
