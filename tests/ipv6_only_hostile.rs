//! Faults a reviewer found in IPv6-only networks (`"EnableIPv4": false`), each a test that
//! failed before its fix: hostile keys warned twice or with IPv4 wording, turning IPv4 on
//! renumbering the IPv6 subnet and orphaning the IPv6-only key, a restart taking over another
//! key that carries our PublicIPv6, and a log line printing `public_ip=0.0.0.0`. Real weftd and
//! etcd in lab namespaces; every daemon resyncs each second, so "still once" is checked after
//! counted passes, not after a sleep. Checked and holding (no test kept): a tiny IPv6SubnetMin..Max with
//! more hosts than subnets (distinct subnets, "out of IPv6 subnets" error), our key deleted or
//! overwritten (written back, same subnet), flanneld's `0.0.0.0-0&<ours>` (skipped, ours kept),
//! an IPv6-only key with an IPv4 value, `0.0.0.0-0&…` with BackendData, a dual-stack host seeing
//! IPv6-only peers, our VtepMAC on another key, a dual-stack and an IPv6-only key naming one
//! IPv6 subnet, `--ip-masq` (ip6tables only), `weftd status` and `/metrics`, lease expiry then
//! restart from subnet.env, turning IPv4 off.

use std::collections::BTreeSet;
use std::time::Duration;

use lab::dualstack::{DEVICE6, SUBNETS};
use lab::ipv6_only::ipv6_only_lease_value;
use lab::{poll, Host, Lab, Weftd};
use serde_json::Value;

const CONFIG: &str = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const DUAL: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const CONVERGE: Duration = Duration::from_secs(20);
/// A pass every second even when nothing changes: "still once" is then checked over passes.
const RESYNC: &[&str] = &["--resync-interval", "1s"];

fn rows(v: Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// One IPv6-only host with weftd running (`extra` flags) and subnet.env written; returns its own
/// key's last element.
fn one_host(config: &str, extra: &[&str]) -> (Lab, Weftd, String) {
    let mut lab = Lab::new();
    lab.put_network_config(config);
    let n = lab.add_host();
    let daemon = lab.start_weftd(n, &[RESYNC, extra].concat());
    lab.wait_ipv6_subnet_env(n, CONVERGE);
    let key = lab.own_ipv6_only_key(n).expect("an IPv6-only key");
    poll("our key in etcd", CONVERGE, || lab.etcd_get(&format!("{SUBNETS}{key}")).map(|_| ()));
    (lab, daemon, key)
}

fn v6_routes(host: &Host) -> BTreeSet<String> {
    rows(host.ip_json(&["-6", "route", "show", "dev", DEVICE6]))
        .iter()
        .filter_map(|r| r["dst"].as_str().map(str::to_string))
        .filter(|d| !d.starts_with("fe80"))
        .collect()
}

fn v4_flannel_routes(host: &Host) -> Vec<Value> {
    if host.link_details("flannel.1").is_none() {
        return Vec::new();
    }
    rows(host.ip_json(&["-4", "route", "show", "table", "all", "dev", "flannel.1"]))
}

/// Waits until `daemon` has run four more reconcile passes (each a full look at the leases).
fn settle(daemon: &Weftd) {
    daemon.wait_passes(4, CONVERGE);
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// flanneld's bogus `0.0.0.0-0` key alone (an IPv4 value): an IPv6-only host keeps running,
/// programs nothing for it (no flannel.1, no IPv4 route), and warns naming it once.
#[test]
fn the_bare_zero_key_is_warned_about_once_and_never_programmed() {
    let (lab, mut daemon, _key) = one_host(CONFIG, &[]);
    lab.etcd_put(
        &format!("{SUBNETS}0.0.0.0-0"),
        r#"{"PublicIP":"198.18.0.77","PublicIPv6":"fd18::77","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:11:22:33:44:77"},"BackendV6Data":{"VNI":1,"VtepMAC":"0e:11:22:33:44:78"}}"#,
    );
    settle(&daemon);
    assert!(daemon.is_running(), "{}", daemon.log());
    assert!(v4_flannel_routes(lab.host(1)).is_empty() && lab.host(1).link_details("flannel.1").is_none());
    let log = daemon.log();
    assert!(!log.contains("its IPv4 part is used"), "an IPv6-only host uses no IPv4 part:\n{log}");
    assert_eq!(count(&log, "0.0.0.0-0"), 1, "one warning naming the key:\n{log}");
}

/// An IPv6-only key with host bits (`fd00:5:0:55::1-64`): skipped, warned once by name.
#[test]
fn an_ipv6_only_key_with_host_bits_is_skipped_with_one_warning() {
    let (lab, daemon, _key) = one_host(CONFIG, &[]);
    let key = "fd00:5:0:55::1-64";
    lab.etcd_put(&format!("{SUBNETS}{key}"), &ipv6_only_lease_value("fd18::55".parse().unwrap(), "0e:11:22:33:44:55"));
    settle(&daemon);
    let routes = v6_routes(lab.host(1));
    assert!(routes.iter().all(|r| !r.starts_with("fd00:5:0:55:")), "{routes:?}");
    let log = daemon.log();
    assert_eq!(count(&log, key), 1, "one warning naming {key}:\n{log}");
}

/// An uppercase IPv6-only key: flanneld does not read it; weft warns once naming it, and the
/// warning describes the IPv6-only key form (not only `10.5.52.0-24`).
#[test]
fn an_uppercase_ipv6_only_key_is_warned_about_with_the_ipv6_only_form() {
    let (lab, daemon, _key) = one_host(CONFIG, &[]);
    let key = "FD00:5:0:55::-64";
    lab.etcd_put(&format!("{SUBNETS}{key}"), &ipv6_only_lease_value("fd18::55".parse().unwrap(), "0e:11:22:33:44:55"));
    settle(&daemon);
    let routes = v6_routes(lab.host(1));
    assert!(routes.iter().all(|r| !r.starts_with("fd00:5:0:55:")), "an unreadable key programmed: {routes:?}");
    let log = daemon.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(key)).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("fd00:") || warnings[0].contains("IPv6-only"),
        "the warning names the IPv6-only key form: {}",
        warnings[0]
    );
}

/// The lease keys in etcd whose value names `public_ipv6`.
fn keys_of(lab: &Lab, public_ipv6: &str) -> Vec<String> {
    let needle = format!(r#""PublicIPv6":"{public_ipv6}""#);
    lab.lease_keys().into_iter().filter(|(_, v)| v.contains(&needle)).map(|(k, _)| k).collect()
}

/// Turning IPv4 on (IPv6-only → dual-stack, weftd restarted): the host keeps its IPv6 subnet
/// (as turning IPv6 on keeps the IPv4 one) and its IPv6-only key does not linger beside the
/// new dual-stack key (two leases with one PublicIPv6 on every peer).
#[test]
fn turning_ipv4_on_keeps_the_ipv6_subnet_and_leaves_no_ipv6_only_key_behind() {
    let (lab, mut daemon, key) = one_host(CONFIG, &[]);
    let ip6 = lab.host(1).underlay_ipv6.to_string();
    daemon.terminate();
    lab.put_network_config(DUAL);
    let restarted = lab.start_weftd(1, RESYNC);
    let dual = poll("a dual-stack key of ours", CONVERGE, || keys_of(&lab, &ip6).into_iter().find(|k| k.contains('&')));
    settle(&restarted);
    assert_eq!(
        dual.split('&').nth(1),
        Some(key.as_str()),
        "the IPv6 subnet kept: was {key}, now {dual}; keys {:?}",
        lab.lease_keys().keys().collect::<Vec<_>>()
    );
    assert_eq!(keys_of(&lab, &ip6), std::slice::from_ref(&dual), "one key carries our PublicIPv6");
}

/// Another key carrying our PublicIPv6 (a stale or hostile lease on another etcd lease),
/// sorting before ours: after a restart weftd keeps its own subnet rather than taking over that
/// key and orphaning its own.
#[test]
fn a_restart_keeps_our_subnet_when_another_key_carries_our_public_ipv6() {
    let (lab, mut daemon, key) = one_host(CONFIG, &[]);
    let host_ip6 = lab.host(1).underlay_ipv6;
    let other = "fd00:5:0:1::-64";
    assert_ne!(key, other);
    // On an etcd lease of its own, as a host's key would be.
    let out = lab.etcdctl(&["lease", "grant", "3600"]);
    let id = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_string();
    let value = ipv6_only_lease_value(host_ip6, "0e:11:22:33:44:01");
    let out = lab.etcdctl(&["put", "--lease", &id, &format!("{SUBNETS}{other}"), &value]);
    assert!(out.status.success(), "{out:?}");
    daemon.wait_log(&format!("key={other}"), CONVERGE);
    settle(&daemon);
    let ours = lab.etcd_get(&format!("{SUBNETS}{key}")).expect("our key");
    assert!(!v6_routes(lab.host(1)).contains("fd00:5:0:1::/64"), "a lease with our PublicIPv6 routed into the tunnel");
    daemon.terminate();
    let restarted = lab.start_weftd(1, RESYNC);
    restarted.wait_log("lease acquired", CONVERGE);
    settle(&restarted);
    assert_eq!(
        lab.own_ipv6_only_key(1),
        Some(key.clone()),
        "subnet.env names our old subnet; keys {:?}",
        lab.lease_keys().keys().collect::<Vec<_>>()
    );
    // Neither key was rewritten: the other one was not taken over, ours was kept as it was.
    assert_eq!(lab.etcd_get(&format!("{SUBNETS}{other}")), Some(value), "the other key was taken over");
    assert_eq!(lab.etcd_get(&format!("{SUBNETS}{key}")), Some(ours), "our key: {:?}", lab.lease_keys());
}

/// Our key overwritten and written back: the "lease re-advertised" line names what an
/// IPv6-only lease advertises (PublicIPv6, the IPv6 VtepMAC), not `public_ip=0.0.0.0`.
#[test]
fn the_re_advertised_log_line_of_an_ipv6_only_lease_names_its_ipv6_part() {
    let (lab, daemon, key) = one_host(CONFIG, &[]);
    let value = lab.etcd_get(&format!("{SUBNETS}{key}")).unwrap();
    lab.etcd_put(&format!("{SUBNETS}{key}"), "not json");
    poll("our key written back", CONVERGE, || lab.etcd_get(&format!("{SUBNETS}{key}")).filter(|v| *v == value));
    let line = daemon.wait_log("lease re-advertised", CONVERGE);
    let line = line.lines().find(|l| l.contains("lease re-advertised")).unwrap_or(&line).to_string();
    let ip6 = lab.host(1).underlay_ipv6.to_string();
    assert!(!line.contains("public_ip=0.0.0.0") && line.contains(&ip6), "{line}");
}
