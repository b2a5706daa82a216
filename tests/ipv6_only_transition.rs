//! IPv4 turned off (and on again) host by host with real weftd and etcd on the lab's underlay:
//! each host restarted under `"EnableIPv4": false` keeps its IPv6 subnet (its dual-stack key
//! loses its IPv4 part in one transaction) while its peers, still dual-stack, keep reaching it
//! over IPv6; `weftd status` on an IPv6-only host, healthy and then not; and IPv4 turned back
//! on, which keeps every IPv6 subnet the same way.

use std::time::Duration;

use lab::dualstack::{Ipv6Tables, DEVICE6, SUBNETS};
use lab::ipv6_only::ipv6_only_lease_value;
use lab::lease_moves::ipv6_only_subnet_env;
use lab::{poll, Host, Lab, Weftd};
use serde_json::Value;

const DUAL: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const IPV6_ONLY: &str = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const CONVERGE: Duration = Duration::from_secs(20);

/// A host's lease as a peer sees it: both parts of its key and its value.
#[derive(Debug, Clone)]
struct Seen {
    /// The key's last element.
    key: String,
    /// The IPv4 subnet (`10.5.3.0/24`), if the key has an IPv4 part.
    subnet: Option<String>,
    /// The IPv6 subnet (`fd00:5:0:9::/64`).
    ipv6_subnet: String,
    value: Value,
}

impl Seen {
    fn of(lab: &Lab, key: String) -> Seen {
        let value = serde_json::from_str(&lab.etcd_get(&format!("{SUBNETS}{key}")).unwrap()).unwrap();
        let (subnet, ipv6) = match key.split_once('&') {
            Some((v4, v6)) => (Some(v4.replace('-', "/")), v6),
            None => (None, key.as_str()),
        };
        Seen { ipv6_subnet: ipv6.replace('-', "/"), subnet, value, key }
    }

    /// The IPv6 entries design.md §4 gives its peers.
    fn ipv6_tables(&self) -> Ipv6Tables {
        let (ip, mac) = (self.value["PublicIPv6"].as_str().unwrap(), self.value["BackendV6Data"]["VtepMAC"].as_str().unwrap());
        Ipv6Tables::of_peers([(self.ipv6_subnet.as_str(), ip, mac)])
    }
}

/// Host N's lease once its key has an IPv4 part exactly when `dual`.
fn wait_lease(lab: &Lab, n: usize, dual: bool) -> Seen {
    Seen::of(lab, lab.wait_lease_key_of_ipv6(n, CONVERGE, |k| k.contains('&') == dual))
}

/// Whether `host` has any of `peer`'s IPv4 entries on flannel.1: the route to its subnet, the
/// neighbour of its VTEP address, the FDB entry of its VtepMAC.
fn has_ipv4_entries(host: &Host, peer: &Seen) -> bool {
    let subnet = peer.subnet.as_deref().expect("a lease with an IPv4 part");
    let vtep = subnet.split('/').next().unwrap();
    let mac = peer.value["BackendData"]["VtepMAC"].as_str().unwrap();
    let route = host.try_ip_json(&["-4", "route", "show", subnet]).ok().and_then(|r| r.as_array().cloned()).unwrap_or_default();
    let neigh = host.try_ip_json(&["-4", "neigh", "show", vtep]).ok().and_then(|r| r.as_array().cloned()).unwrap_or_default();
    let fdb = host.bridge_json(&["fdb", "show"]);
    let fdb_has = fdb.as_array().is_some_and(|f| f.iter().any(|e| e["mac"] == mac));
    !route.is_empty() || !neigh.is_empty() || fdb_has
}

fn wait_container_ping6(lab: &Lab, from: usize, to: usize) {
    let dst = lab.container(to).ipv6.unwrap_or_else(|| panic!("container {to} has no IPv6 address"));
    poll(&format!("container {from} to ping container {to} at {dst}"), CONVERGE, || lab.container_ping(from, dst).then_some(()));
}

/// Restarts host N's weftd under the IPv6-only config written before, and checks its move:
/// the key is `before`'s IPv6 part alone (the old key deleted in the same transaction), the
/// value flanneld's IPv6-only bytes with the same MAC, subnet.env the IPv6 lines alone with the
/// same FLANNEL_IPV6_SUBNET, and flannel.1 (with its old subnet's address and the peers' old
/// IPv4 entries) gone. The restarted daemon.
fn restart_ipv6_only(lab: &Lab, n: usize, daemon: &mut Weftd, before: &Seen) -> Weftd {
    daemon.wait_log("network config in etcd turns IPv4 off", CONVERGE);
    let env_before = lab.host(n).subnet_env().unwrap();
    daemon.terminate();
    let restarted = lab.start_weftd(n, &[]);
    let after = wait_lease(lab, n, false);
    assert_eq!((after.key.as_str(), &after.ipv6_subnet), (before.key.split_once('&').unwrap().1, &before.ipv6_subnet));
    lab.assert_moved_in_one_transaction(&before.key, &after.key);
    let host = lab.host(n);
    let mac6 = before.value["BackendV6Data"]["VtepMAC"].as_str().unwrap();
    assert_eq!(lab.etcd_get(&format!("{SUBNETS}{}", after.key)), Some(ipv6_only_lease_value(host.underlay_ipv6, mac6)));
    let mtu = env_before["FLANNEL_MTU"].parse().unwrap();
    let want = ipv6_only_subnet_env(&after.ipv6_subnet, mtu);
    assert!(want.contains(&format!("FLANNEL_IPV6_SUBNET={}\n", env_before["FLANNEL_IPV6_SUBNET"])), "{want}");
    poll(&format!("host {n}'s subnet.env to hold the IPv6 lines alone"), CONVERGE, || {
        std::fs::read_to_string(&host.subnet_file).ok().filter(|text| *text == want)
    });
    assert!(host.link_details("flannel.1").is_none(), "host {n}: flannel.1 left from the dual-stack run is removed");
    restarted
}

/// The README's roll-out in reverse of IPv6's: the config turns IPv4 off, and each host
/// restarted keeps its IPv6 subnet while the others, still dual-stack, keep reaching it.
#[test]
fn turning_ipv4_off_host_by_host_keeps_every_ipv6_subnet() {
    let mut lab = Lab::new();
    lab.put_network_config(DUAL);
    let (a, b) = (lab.add_host(), lab.add_host());
    let mut daemon_a = lab.start_weftd(a, &[]);
    let mut daemon_b = lab.start_weftd(b, &[]);
    let (dual_a, dual_b) = (wait_lease(&lab, a, true), wait_lease(&lab, b, true));
    for n in [a, b] {
        lab.wait_ipv6_subnet_env(n, CONVERGE);
        lab.attach_container(n);
    }
    wait_container_ping6(&lab, a, b);
    wait_container_ping6(&lab, b, a);
    poll("host b to hold host a's IPv4 entries", CONVERGE, || has_ipv4_entries(lab.host(b), &dual_a).then_some(()));

    lab.put_network_config(IPV6_ONLY);
    let _daemon_a = restart_ipv6_only(&lab, a, &mut daemon_a, &dual_a);
    // Host b, still dual-stack, keeps a's IPv6 entries and drops its IPv4 ones.
    poll("host b to drop host a's IPv4 entries", CONVERGE, || (!has_ipv4_entries(lab.host(b), &dual_a)).then_some(()));
    assert_eq!(lab.host(b).ipv6_tables(), dual_a.ipv6_tables(), "host b's IPv6 entries for host a stay");
    assert!(daemon_b.is_running());
    wait_container_ping6(&lab, b, a);
    wait_container_ping6(&lab, a, b);

    let _daemon_b = restart_ipv6_only(&lab, b, &mut daemon_b, &dual_b);
    poll("host a's IPv6 entries for host b", CONVERGE, || (lab.host(a).ipv6_tables() == dual_b.ipv6_tables()).then_some(()));
    wait_container_ping6(&lab, a, b);
    wait_container_ping6(&lab, b, a);
    let keys = lab.lease_keys();
    assert!(keys.len() == 2 && keys.keys().all(|k| k.starts_with("fd00:5:0:") && !k.contains('&')), "{keys:?}");
}

/// `weftd status` on an IPv6-only host, run with weftd's flags in its namespace: healthy with
/// its peer's three entries ok; with weftd stopped and the peer's route deleted, MISSING and
/// exit 1.
#[test]
fn weftd_status_on_an_ipv6_only_host_is_healthy_and_names_its_peers() {
    let mut lab = Lab::new();
    lab.put_network_config(IPV6_ONLY);
    let (a, b) = (lab.add_host(), lab.add_host());
    let mut daemon_a = lab.start_weftd(a, &[]);
    let _daemon_b = lab.start_weftd(b, &[]);
    let (lease_a, lease_b) = (wait_lease(&lab, a, false), wait_lease(&lab, b, false));
    let peer = |json: &Value| -> Value {
        let leases = json["leases"].as_array().cloned().unwrap_or_default();
        leases.into_iter().find(|l| l["ipv6"]["subnet"] == lease_b.ipv6_subnet.as_str()).unwrap_or_default()
    };
    let (_, json) = poll("a healthy status naming host b", CONVERGE, || {
        Some(lab.weftd_status_json(a)).filter(|(code, json)| *code == 0 && peer(json)["ipv6"]["route"] == "ok")
    });
    assert_eq!(json["network"], Value::Null, "{json:#}");
    let checks = &peer(&json)["ipv6"];
    assert_eq!((&checks["neighbour"], &checks["fdb"]), (&Value::from("ok"), &Value::from("ok")), "{json:#}");

    let out = lab.weftd_status(a, &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("network    IPv6 only (EnableIPv4 false, vxlan VNI 1)\n"), "{text}");
    let this_host = format!("this host  {} -> {}\n", lab.host(a).underlay_ipv6, lease_a.ipv6_subnet);
    assert!(text.contains(&this_host), "{text}");
    let row = text.lines().find(|l| l.starts_with(&lease_b.ipv6_subnet)).unwrap_or_else(|| panic!("a row for b: {text}"));
    assert_eq!(row.split_whitespace().filter(|w| *w == "ok").count(), 3, "{row}");
    assert!(text.contains("peers      ipv6 1 of 1 ok, 0 skipped\n") && text.ends_with("\nhealthy\n"), "{text}");

    // weftd would put a deleted route back at once: stop it first.
    daemon_a.terminate();
    lab.host(a).exec_ok(&["ip", "-6", "route", "del", &lease_b.ipv6_subnet, "dev", DEVICE6]);
    let (code, json) = lab.weftd_status_json(a);
    assert_eq!((code, &peer(&json)["ipv6"]["route"]), (1, &Value::from("missing")), "{json:#}");
    let out = lab.weftd_status(a, &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("MISSING") && text.contains("ipv6 0 of 1 ok") && text.ends_with("NOT healthy\n"), "{text}");
}

/// IPv4 on again, the roll-out in reverse: each host restarted dual-stack should keep its
/// IPv6 subnet, its key `fd00:5:0:9::-64` becoming `10.5.3.0-24&fd00:5:0:9::-64` in one
/// transaction, while its IPv6-only peers keep reaching it.
#[test]
fn turning_ipv4_back_on_keeps_every_ipv6_subnet() {
    let mut lab = Lab::new();
    lab.put_network_config(IPV6_ONLY);
    let (a, b) = (lab.add_host(), lab.add_host());
    let mut daemon_a = lab.start_weftd(a, &[]);
    let _daemon_b = lab.start_weftd(b, &[]);
    let only_a = wait_lease(&lab, a, false);
    for n in [a, b] {
        lab.wait_ipv6_subnet_env(n, CONVERGE);
        lab.attach_container_ipv6_only(n);
    }
    wait_container_ping6(&lab, b, a);

    lab.put_network_config(DUAL);
    daemon_a.wait_log("network config in etcd turns IPv4 on", CONVERGE);
    daemon_a.terminate();
    let _daemon_a = lab.start_weftd(a, &[]);
    let dual_a = wait_lease(&lab, a, true);
    assert_eq!(dual_a.ipv6_subnet, only_a.ipv6_subnet, "the IPv6 subnet is kept: {:?}", lab.lease_keys());
    lab.assert_moved_in_one_transaction(&only_a.key, &dual_a.key);
    poll("host b's IPv6 entries for host a", CONVERGE, || (lab.host(b).ipv6_tables() == dual_a.ipv6_tables()).then_some(()));
    wait_container_ping6(&lab, b, a);
}
