//! `/metrics` scraped from a running cluster, checked against what the cluster really is.

use lab::http;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lab::{poll, Host, Lab};

const DEADLINE: Duration = Duration::from_secs(20);
const PORT: u16 = 9302;

/// Every sample line of a scrape, `name{labels}` → value; `None` until /metrics answers 200.
fn try_scrape(host: &Host) -> Option<BTreeMap<String, f64>> {
    let (_, body) = http::get(host, PORT, "/metrics").filter(|(status, _)| *status == 200)?;
    let samples = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty());
    Some(
        samples
            .filter_map(|l| l.rsplit_once(' ').and_then(|(name, value)| Some((name.to_string(), value.parse().ok()?))))
            .collect(),
    )
}

fn scrape(host: &Host) -> BTreeMap<String, f64> {
    try_scrape(host).expect("/metrics answers")
}

fn wait_metric(host: &Host, name: &str, want: impl Fn(f64) -> bool) -> f64 {
    poll(&format!("{name} to reach the expected value"), DEADLINE, || try_scrape(host)?.get(name).copied().filter(|v| want(*v)))
}

#[test]
fn metrics_describe_the_cluster_and_count_repairs() {
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let hosts: Vec<usize> = (0..3).map(|_| lab.add_host()).collect();
    let _first = lab.start_weftd(hosts[0], &["--metrics-port", &PORT.to_string()]);
    let mut others: Vec<_> = hosts[1..].iter().map(|&n| lab.start_weftd(n, &[])).collect();
    let host = lab.host(hosts[0]).clone();

    wait_metric(&host, "weft_peers", |v| v == 2.0);
    let m = scrape(&host);
    for kind in ["arp", "fdb", "nexthop", "route"] {
        assert_eq!(m[&format!("weft_kernel_entries{{kind=\"{kind}\"}}")], 2.0, "{kind}");
    }
    assert!(m["weft_reconcile_runs_total"] >= 1.0);
    assert_eq!(m["weft_reconcile_errors_total"], 0.0);
    assert_eq!(m["weft_etcd_reconnects_total"], 0.0);
    assert_eq!(m["weft_watch_restarts_total"], 0.0);
    assert!(m["weft_lease_event_to_kernel_seconds_count"] >= 1.0, "peers arrived as lease events");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let expiry = m["weft_lease_expiry_timestamp_seconds"];
    assert!((expiry - (now + 86400.0)).abs() < 120.0, "lease expires in 24 h, not at {expiry}");

    // A route deleted by hand is a repair, not a lease change.
    let route = host.ip_json(&["route", "show", "dev", "flannel.1"])[0]["dst"].as_str().unwrap().to_string();
    assert!(host.exec(&["ip", "route", "del", &route]).status.success());
    wait_metric(&host, "weft_entries_repaired_total", |v| v >= 1.0);

    // A peer that leaves (daemon stopped, lease deleted) is no longer counted.
    others[1].terminate();
    let peer_ip = lab.host(hosts[2]).underlay_ip.to_string();
    let key = lab.etcd_get_prefix("/coreos.com/network/subnets/").into_iter().find(|(_, v)| v.contains(&peer_ip)).unwrap().0;
    lab.etcd_del(&key);
    wait_metric(&host, "weft_peers", |v| v == 1.0);
    assert_eq!(scrape(&host)["weft_kernel_entries{kind=\"fdb\"}"], 1.0);
}

#[test]
fn the_default_log_has_one_line_per_event_and_nothing_per_tick() {
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let (a, b) = (lab.add_host(), lab.add_host());
    let port = PORT.to_string();
    let args = ["--metrics-port", port.as_str(), "--resync-interval", "100ms"];
    let daemon = lab.start_weftd_env(a, &args, &[("RUST_LOG", "info")]);
    let _peer = lab.start_weftd(b, &[]);
    let host = lab.host(a).clone();
    daemon.wait_log("peer added", DEADLINE);
    daemon.wait_log("iptables rules installed", DEADLINE);
    let settled = daemon.log();
    let runs = wait_metric(&host, "weft_reconcile_runs_total", |_| true);
    wait_metric(&host, "weft_reconcile_runs_total", |v| v >= runs + 10.0);
    assert_eq!(daemon.log(), settled, "ten idle resyncs must log nothing at the default level");

    let peer_ip = lab.host(b).underlay_ip.to_string();
    let added: Vec<&str> = settled.lines().filter(|l| l.contains("peer added")).collect();
    assert_eq!(added.len(), 1, "{settled}");
    assert!(
        added[0].contains(&format!("public_ip={peer_ip}")) && added[0].contains("vtep_mac="),
        "key=value fields: {}",
        added[0]
    );
    for event in ["lease acquired", "wrote subnet file", "network config loaded", "iptables rules installed"] {
        assert_eq!(settled.matches(event).count(), 1, "{event} once:\n{settled}");
    }
}

/// A dual-stack cluster: the IPv6 series carry `family="ipv6"` and count the IPv6 entries, the
/// IPv4 series are the ones an IPv4-only cluster has, and a lease whose IPv6 part is broken
/// counts as an IPv6 skip only.
#[test]
fn metrics_count_each_family_apart() {
    let mut lab = Lab::new();
    lab.put_network_config(
        r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#,
    );
    let hosts: Vec<usize> = (0..2).map(|_| lab.add_host()).collect();
    let _first = lab.start_weftd(hosts[0], &["--metrics-port", &PORT.to_string()]);
    let _second = lab.start_weftd(hosts[1], &[]);
    let broken = r#"{"PublicIP":"198.18.0.92","PublicIPv6":"fd18::92","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:92"}}"#;
    lab.etcd_put("/coreos.com/network/subnets/10.5.92.0-24&fd00:5:0:92::-64", broken);
    let host = lab.host(hosts[0]).clone();

    wait_metric(&host, "weft_peers", |v| v == 2.0);
    wait_metric(&host, "weft_peers{family=\"ipv6\"}", |v| v == 1.0);
    let m = wait_metric_set(&host, "weft_peers_skipped{family=\"ipv6\"}", 1.0);
    assert_eq!(m["weft_peers_skipped"], 0.0, "the broken lease's IPv4 part is programmed");
    for kind in ["arp", "fdb", "route"] {
        assert_eq!(m[&format!("weft_kernel_entries{{kind=\"{kind}\"}}")], 2.0, "{kind}");
        assert_eq!(m[&format!("weft_kernel_entries{{kind=\"{kind}\",family=\"ipv6\"}}")], 1.0, "{kind}");
    }
    assert!(!m.contains_key("weft_peers{family=\"ipv4\"}"), "IPv4 series keep their labels");
}

/// The whole scrape once `name` reads `value`.
fn wait_metric_set(host: &Host, name: &str, value: f64) -> BTreeMap<String, f64> {
    poll(&format!("{name} to reach {value}"), DEADLINE, || try_scrape(host).filter(|m| m.get(name) == Some(&value)))
}
