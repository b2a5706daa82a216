//! What the overlay depends on vanishing or changing under a running weftd: the underlay NIC
//! deleted and created again, readdressed, and flannel.1 changed by another program. Every
//! daemon runs with `--resync-interval 1h`, so what repairs the overlay is a kernel
//! notification, never the periodic resync.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::{poll, Lab, Weftd};
use serde_json::Value;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";
const CONVERGE: Duration = Duration::from_secs(20);
/// How soon after the change the overlay must work again (a notification, not the resync).
const PROMPT: Duration = Duration::from_secs(3);
const SLOW_RESYNC: [&str; 2] = ["--resync-interval", "1h"];

/// Two hosts with weftd (`--resync-interval 1h` plus `extra`) and a container each, pinging
/// both ways under `config`. Returns the containers' IPs.
fn pinging_pair_with(config: &str, extra: &[&str]) -> (Lab, Vec<Weftd>, [Ipv4Addr; 2]) {
    let mut lab = Lab::new();
    lab.put_network_config(config);
    let hosts = [lab.add_host(), lab.add_host()];
    let args = [&SLOW_RESYNC[..], extra].concat();
    let daemons: Vec<Weftd> = hosts.iter().map(|&n| lab.start_weftd(n, &args)).collect();
    for n in hosts {
        lab.wait_subnet_env(n, CONVERGE);
    }
    let ips = [lab.attach_container(1), lab.attach_container(2)];
    assert_pings(&lab, ips, CONVERGE);
    (lab, daemons, ips)
}

/// [`pinging_pair_with`] the default config.
fn pinging_pair() -> (Lab, Vec<Weftd>, [Ipv4Addr; 2]) {
    pinging_pair_with(CONFIG, &[])
}

/// Both containers reach each other within `deadline`.
fn assert_pings(lab: &Lab, ips: [Ipv4Addr; 2], deadline: Duration) {
    poll("container 1 to ping container 2", deadline, || lab.container_ping(1, ips[1]).then_some(()));
    poll("container 2 to ping container 1", deadline, || lab.container_ping(2, ips[0]).then_some(()));
}

/// Host N's lease in etcd: its key and value.
fn lease_of(lab: &Lab, public_ip: Ipv4Addr) -> Option<(String, Value)> {
    lab.etcd_get_prefix(SUBNETS).into_iter().find_map(|(key, value)| {
        let value: Value = serde_json::from_str(&value).ok()?;
        (value["PublicIP"] == public_ip.to_string()).then_some((key, value))
    })
}

fn vtep_mac(lease: &Value) -> String {
    lease["BackendData"]["VtepMAC"].as_str().unwrap().to_string()
}

fn up(link: &Value) -> bool {
    link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"))
}

fn info(link: &Value, key: &str) -> Value {
    link["linkinfo"]["info_data"][key].clone()
}

#[test]
fn a_deleted_nic_that_comes_back_gets_the_overlay_back_at_once() {
    let (lab, _daemons, ips) = pinging_pair();
    let host = lab.host(1);
    host.unplug_underlay();
    poll("flannel.1 to go with eth0", PROMPT, || host.try_ip_json(&["link", "show", "flannel.1"]).is_err().then_some(()));
    // The NIC stays away a while, as in the report (a driver reload, a cable).
    std::thread::sleep(Duration::from_secs(2));
    lab.replug_underlay(1);
    let back = Instant::now();
    assert_pings(&lab, ips, PROMPT);
    let elapsed = back.elapsed();
    let link = host.wait_vxlan("flannel.1 on the new eth0", PROMPT, |l| info(l, "link") == "eth0");
    assert_eq!(info(&link, "local"), host.underlay_ip.to_string());
    let (_, lease) = lease_of(&lab, host.underlay_ip).expect("host 1's lease");
    assert_eq!(link["address"].as_str(), Some(vtep_mac(&lease).as_str()), "the device comes back with the lease's MAC");
    eprintln!("containers pinged again {elapsed:?} after eth0 returned");
}

#[test]
fn a_readdressed_nic_moves_the_vtep_and_the_lease_and_peers_follow() {
    let (lab, _daemons, ips) = pinging_pair();
    let (old_ip, new_ip) = (lab.host(1).underlay_ip, Ipv4Addr::new(198, 18, 0, 31));
    let (key, before) = lease_of(&lab, old_ip).expect("host 1's lease");
    let host = lab.host(1);
    host.exec_ok(&["ip", "addr", "del", &format!("{old_ip}/24"), "dev", "eth0"]);
    host.exec_ok(&["ip", "addr", "add", &format!("{new_ip}/24"), "dev", "eth0"]);

    // The lease is rewritten once etcd answers from the new address.
    let (new_key, after) = poll("host 1's lease to carry the new PublicIP", PROMPT, || lease_of(&lab, new_ip));
    assert_eq!(new_key, key, "same subnet");
    assert_eq!(vtep_mac(&after), vtep_mac(&before), "same VTEP MAC");
    assert!(lease_of(&lab, old_ip).is_none(), "the old PublicIP is advertised nowhere");
    host.wait_vxlan("flannel.1 with local 198.18.0.31", PROMPT, |l| info(l, "local") == new_ip.to_string());
    let mac = vtep_mac(&after);
    poll("host 2's FDB entry for host 1 to follow", PROMPT, || {
        let fdb = lab.host(2).bridge_json(&["fdb", "show", "dev", "flannel.1"]);
        let dsts: Vec<&str> =
            fdb.as_array()?.iter().filter(|e| e["mac"] == mac.as_str()).filter_map(|e| e["dst"].as_str()).collect();
        (dsts == [new_ip.to_string()]).then_some(())
    });
    assert_pings(&lab, ips, PROMPT);
}

#[test]
fn flannel_1_changed_by_another_program_is_repaired() {
    let (lab, daemons, ips) = pinging_pair();
    let host = lab.host(1);
    let (_, lease) = lease_of(&lab, host.underlay_ip).expect("host 1's lease");
    let mac = vtep_mac(&lease);

    // MAC: peers point at the lease's, so the device is set back (the lease stays as it is).
    host.exec_ok(&["ip", "link", "set", "flannel.1", "address", "02:11:22:33:44:55"]);
    host.wait_vxlan("flannel.1's MAC set back to the lease's", PROMPT, |l| l["address"] == mac.as_str());
    assert_eq!(vtep_mac(&lease_of(&lab, host.underlay_ip).unwrap().1), mac);

    host.exec_ok(&["ip", "link", "set", "flannel.1", "mtu", "1300"]);
    host.wait_vxlan("flannel.1's MTU set back", PROMPT, |l| l["mtu"] == 1450);

    // Another program changes the local address in place, then replaces the device with one of
    // another VNI, port and MAC. weftd recreates flannel.1 the moment it goes, so it is paused
    // meanwhile (as if busy); the notifications wait in its socket.
    host.exec_ok(&["ip", "link", "set", "flannel.1", "type", "vxlan", "local", "198.18.0.99"]);
    host.wait_vxlan("flannel.1's local address set back", PROMPT, |l| info(l, "local") == host.underlay_ip.to_string());
    let pid = daemons[0].pid().to_string();
    let signal = |name: &str| assert!(std::process::Command::new("kill").args([name, &pid]).status().unwrap().success());
    signal("-STOP");
    host.exec_ok(&["ip", "link", "del", "flannel.1"]);
    let add =
        "ip link add flannel.1 address 02:11:22:33:44:66 type vxlan id 7 local 198.18.0.99 dev eth0 dstport 4789 nolearning";
    host.exec_ok(&add.split(' ').collect::<Vec<_>>());
    host.exec_ok(&["ip", "link", "set", "flannel.1", "up"]);
    signal("-CONT");
    let link = host.wait_vxlan("flannel.1 recreated as weft wants it", PROMPT, |l| {
        info(l, "id") == 1 && info(l, "port") == 8472 && info(l, "local") == host.underlay_ip.to_string()
    });
    assert_eq!(link["address"], mac.as_str());
    assert_pings(&lab, ips, PROMPT);
}

#[test]
fn status_reports_device_drift_while_it_lasts() {
    let (lab, mut daemons, _ips) = pinging_pair();
    let host = lab.host(1);
    let mac = vtep_mac(&lease_of(&lab, host.underlay_ip).expect("host 1's lease").1);
    let status = || {
        let bin = lab::weftd_bin();
        let endpoint = lab.etcd_endpoint();
        host.exec(&[bin.to_str().unwrap(), "status", "--etcd-endpoints", &endpoint, "--iface", "eth0"])
    };
    // With the daemon stopped (it leaves the datapath in place) the drift lasts.
    daemons[0].terminate();
    host.exec_ok(&["ip", "link", "set", "flannel.1", "address", "02:11:22:33:44:55", "mtu", "1300"]);
    let out = status();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("drift      flannel.1: MAC 02:11:22:33:44:55, lease says {mac}\n")), "{text}");
    assert!(text.contains("drift      flannel.1: mtu 1300, should be 1450\n"), "{text}");

    daemons[0] = lab.start_weftd(1, &SLOW_RESYNC);
    let text = poll("a healthy status once weftd repaired the device", CONVERGE, || {
        let out = status();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(!text.contains("drift"), "{text}");
}

#[test]
fn flannel_1_set_down_by_hand_is_set_up_again() {
    let (lab, _daemons, ips) = pinging_pair();
    let host = lab.host(1);
    host.exec_ok(&["ip", "link", "set", "flannel.1", "down"]);
    host.wait_vxlan("flannel.1 up again", PROMPT, up);
    assert_pings(&lab, ips, PROMPT);
}

#[test]
fn flannel_1_deleted_by_hand_is_recreated_and_reprogrammed() {
    let (lab, _daemons, ips) = pinging_pair();
    lab.host(1).exec_ok(&["ip", "link", "del", "flannel.1"]);
    lab.host(1).wait_vxlan("flannel.1 back", PROMPT, up);
    assert_pings(&lab, ips, PROMPT);
}

#[test]
fn underlay_mtu_change_is_followed_by_flannel_1_and_the_subnet_file() {
    let (lab, _daemons, _ips) = pinging_pair();
    let host = lab.host(1);
    host.exec_ok(&["ip", "link", "set", "eth0", "mtu", "1400"]);
    host.wait_vxlan("flannel.1's MTU to follow eth0 (1350)", PROMPT, |l| l["mtu"] == 1350);
    // Containers take their MTU from the subnet file: it must not promise more than flannel.1 carries.
    poll("subnet.env FLANNEL_MTU=1350", PROMPT, || {
        (host.subnet_env()?.get("FLANNEL_MTU").map(String::as_str) == Some("1350")).then_some(())
    });
}

#[test]
fn a_nic_gone_for_a_while_that_returns_with_another_address_is_followed() {
    let (lab, _daemons, ips) = pinging_pair();
    let host = lab.host(1);
    let (key, _) = lease_of(&lab, host.underlay_ip).expect("host 1's lease");
    host.unplug_underlay();
    std::thread::sleep(Duration::from_secs(6));
    let new_ip = Ipv4Addr::new(198, 18, 0, 41);
    lab.replug_underlay_at(1, new_ip);
    let (new_key, _) = poll("host 1's lease to carry 198.18.0.41", PROMPT, || lease_of(&lab, new_ip));
    assert_eq!(new_key, key, "same subnet");
    host.wait_vxlan("flannel.1 local 198.18.0.41", PROMPT, |l| info(l, "local") == new_ip.to_string());
    assert_pings(&lab, ips, PROMPT);
}

#[test]
fn a_renamed_nic_keeps_the_overlay_working() {
    let (lab, _daemons, ips) = pinging_pair();
    let host = lab.host(1);
    host.exec_ok(&["ip", "link", "set", "eth0", "down"]);
    host.exec_ok(&["ip", "link", "set", "eth0", "name", "wan0"]);
    host.exec_ok(&["ip", "link", "set", "wan0", "up"]);
    assert_pings(&lab, ips, PROMPT);
}

#[test]
fn a_renamed_then_readdressed_nic_is_followed() {
    let (lab, _daemons, ips) = pinging_pair();
    let host = lab.host(1);
    host.exec_ok(&["ip", "link", "set", "eth0", "name", "wan0"]);
    let new_ip = Ipv4Addr::new(198, 18, 0, 51);
    // Deleting the primary first: deleting it after adding would take the secondary with it.
    host.exec_ok(&["ip", "addr", "del", &format!("{}/24", host.underlay_ip), "dev", "wan0"]);
    host.exec_ok(&["ip", "addr", "add", "198.18.0.51/24", "dev", "wan0"]);
    poll("host 1's lease to carry 198.18.0.51", PROMPT, || lease_of(&lab, new_ip));
    assert_pings(&lab, ips, PROMPT);
}

#[test]
fn a_nic_readdressed_into_another_subnet_is_followed() {
    let (lab, _daemons, ips) = pinging_pair();
    let host = lab.host(1);
    // The underlay is one L2 segment: on-link routes both ways make the new subnet reachable.
    lab.host(2).exec_ok(&["ip", "route", "add", "198.19.0.0/24", "dev", "eth0"]);
    lab.etcd_ns_ip(&["route", "add", "198.19.0.0/24", "dev", "eth0"]);
    let new_ip = Ipv4Addr::new(198, 19, 0, 31);
    host.exec_ok(&["ip", "addr", "flush", "dev", "eth0"]);
    host.exec_ok(&["ip", "addr", "add", "198.19.0.31/24", "dev", "eth0"]);
    host.exec_ok(&["ip", "route", "add", "198.18.0.0/24", "dev", "eth0"]);
    poll("host 1's lease to carry 198.19.0.31", Duration::from_secs(8), || lease_of(&lab, new_ip));
    host.wait_vxlan("flannel.1 local 198.19.0.31", PROMPT, |l| info(l, "local") == new_ip.to_string());
    assert_pings(&lab, ips, PROMPT);
}

#[test]
fn readdress_and_mtu_change_at_once() {
    let (lab, _daemons, ips) = pinging_pair();
    let host = lab.host(1);
    let new_ip = Ipv4Addr::new(198, 18, 0, 61);
    let script = format!(
        "ip addr del {}/24 dev eth0 && ip addr add 198.18.0.61/24 dev eth0 && ip link set eth0 mtu 1400",
        host.underlay_ip
    );
    host.exec_ok(&["sh", "-c", &script]);
    poll("host 1's lease to carry 198.18.0.61", PROMPT, || lease_of(&lab, new_ip));
    host.wait_vxlan("flannel.1 local .61 and mtu 1350", PROMPT, |l| info(l, "local") == new_ip.to_string() && l["mtu"] == 1350);
    assert_pings(&lab, ips, PROMPT);
}

#[test]
fn vni_and_port_changed_in_the_config_with_both_daemons_restarted() {
    let (mut lab, mut daemons, _ips) = pinging_pair();
    for d in &mut daemons {
        d.terminate();
    }
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":7,"Port":4789}}"#);
    let _daemons: Vec<Weftd> = [1, 2].iter().map(|&n| lab.start_weftd(n, &SLOW_RESYNC)).collect();
    for n in [1, 2] {
        poll("flannel.7 on each host", CONVERGE, || {
            let l = lab.host(n).try_ip_json(&["-d", "link", "show", "flannel.7"]).ok()?;
            (info(&l[0], "port") == 4789).then_some(())
        });
    }
    let _ = &mut lab;
    // The old device's routes must not linger and shadow the new ones.
    let routes = lab.host(1).ip_json(&["route", "show", "10.5.0.0/16"]);
    let devs: Vec<&str> = routes.as_array().unwrap().iter().filter_map(|r| r["dev"].as_str()).collect();
    assert!(!devs.contains(&"flannel.1"), "routes still via flannel.1: {routes}");
    let ping_ips = [lab.container(1).ip, lab.container(2).ip];
    assert_pings(&lab, ping_ips, CONVERGE);
}
