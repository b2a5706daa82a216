//! A peer lease the kernel refuses costs that peer only: a host started after it still becomes
//! ready, reaches every other peer, logs the refusal once and shows it in status and metrics.

use lab::http;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use lab::{poll, Host, Lab};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);
const HEALTHZ: u16 = 9311;
const METRICS: u16 = 9312;
const SUBNETS: &str = "/coreos.com/network/subnets/";
/// Its gateway, 10.5.200.0, is made a local address on the host under test: the kernel then
/// refuses the peer's nexthop and route ("Nexthop has invalid gateway", EINVAL).
const ROUTE_REFUSED: &str = "10.5.200.0/24";
/// VtepMAC ff:ff:ff:ff:ff:ff: the kernel refuses its FDB entry (EOPNOTSUPP). Once lease
/// parsing rejects non-unicast MACs, the lease is skipped before the kernel sees it; what this
/// test asserts of it holds either way.
const MAC_REFUSED: &str = "10.5.201.0/24";

fn lease(public_ip: Ipv4Addr, mac: &str) -> String {
    format!(r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#)
}

fn key(subnet: &str) -> String {
    format!("{SUBNETS}{}", subnet.replace('/', "-"))
}

fn scrape(host: &Host) -> Option<BTreeMap<String, f64>> {
    let (_, body) = http::get(host, METRICS, "/metrics").filter(|(status, _)| *status == 200)?;
    let samples = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty());
    Some(samples.filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?)))).collect())
}

fn wait_metric(host: &Host, name: &str, want: impl Fn(f64) -> bool) -> f64 {
    poll(&format!("{name} to reach the expected value"), DEADLINE, || scrape(host)?.get(name).copied().filter(|v| want(*v)))
}

/// Kernel entries on host's flannel.1 that mention `vtep` (route gateway/dst, ARP, nexthop).
fn entries_for(host: &Host, subnet: &str) -> Vec<String> {
    let vtep = subnet.split('/').next().unwrap();
    let routes = host.ip_json(&["route", "show", "dev", "flannel.1"]);
    let neigh = host.ip_json(&["neigh", "show", "dev", "flannel.1"]);
    let all = routes.as_array().unwrap().iter().chain(neigh.as_array().unwrap());
    all.map(Value::to_string).filter(|e| e.contains(&format!("\"{vtep}\"")) || e.contains(&format!("\"{subnet}\""))).collect()
}

/// Log lines at WARN or ERROR that mention the subnet, in its key or CIDR form.
fn complaints(log: &str, subnet: &str) -> Vec<String> {
    let net = subnet.split('/').next().unwrap();
    log.lines().filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains(net)).map(str::to_string).collect()
}

fn weftd_status(lab: &Lab, host: &Host) -> (Option<i32>, Value) {
    let bin = lab::weftd_bin();
    let endpoint = lab.etcd_endpoint();
    let args = [bin.to_str().unwrap(), "status", "--json", "--etcd-endpoints", &endpoint, "--iface", "eth0"];
    let out = host.exec(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {out:?}"));
    (out.status.code(), json)
}

#[test]
fn a_refused_peer_never_holds_back_readiness_or_other_peers() {
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let (a, b) = (lab.add_host(), lab.add_host());
    let _peer = lab.start_weftd(b, &[]);
    lab.wait_subnet_env(b, DEADLINE);
    lab.etcd_put(&key(ROUTE_REFUSED), &lease(Ipv4Addr::new(198, 18, 0, 201), "02:00:00:00:c8:01"));
    lab.etcd_put(&key(MAC_REFUSED), &lease(Ipv4Addr::new(198, 18, 0, 202), "ff:ff:ff:ff:ff:ff"));
    let host = lab.host(a).clone();
    // Another program holds the refused peer's gateway address on this host.
    host.exec_ok(&["ip", "addr", "add", "10.5.200.0/32", "dev", "lo"]);

    let (healthz, metrics) = (HEALTHZ.to_string(), METRICS.to_string());
    let args = ["--healthz-port", &healthz, "--metrics-port", &metrics, "--resync-interval", "1s"];
    let daemon = lab.start_weftd(a, &args);
    // Written despite the refused peers.
    let env = lab.wait_subnet_env(a, DEADLINE);
    assert!(env.contains_key("FLANNEL_SUBNET"), "{env:?}");
    poll("/readyz to answer 200", DEADLINE, || (http::get(&host, HEALTHZ, "/readyz")?.0 == 200).then_some(()));

    let b_vtep: Ipv4Addr = lab.host(b).subnet_env().unwrap()["FLANNEL_SUBNET"].split('/').next().unwrap().parse().unwrap();
    let b_vtep = Ipv4Addr::from(u32::from(b_vtep) - 1);
    poll("host a to ping host b over the overlay", DEADLINE, || host.ping(b_vtep).then_some(()));

    // The refusals last: several resync passes later each was logged once, not once a pass.
    let runs = wait_metric(&host, "weft_reconcile_runs_total", |_| true);
    wait_metric(&host, "weft_reconcile_runs_total", |v| v >= runs + 4.0);
    let log = daemon.log();
    assert_eq!(complaints(&log, ROUTE_REFUSED).len(), 1, "{:#?}", complaints(&log, ROUTE_REFUSED));
    assert!(complaints(&log, MAC_REFUSED).len() <= 1, "{:#?}", complaints(&log, MAC_REFUSED));
    assert_eq!(entries_for(&host, MAC_REFUSED), Vec::<String>::new(), "no route or ARP entry into a MAC without FDB entry");
    let routes = host.ip_json(&["route", "show", ROUTE_REFUSED]);
    assert_eq!(routes, serde_json::json!([]), "no route for the peer whose nexthop the kernel refuses");

    let m = scrape(&host).expect("/metrics answers");
    assert!(m["weft_peers_failing"] >= 1.0, "{m:#?}");
    let refused = |kind: &str| m[&format!("weft_kernel_entries_refused{{kind=\"{kind}\"}}")];
    assert_eq!(refused("nexthop") + refused("route"), 1.0, "{m:#?}");
    assert_eq!(m["weft_peers"], 1.0, "only host b is programmed");

    let (code, status) = weftd_status(&lab, &host);
    let row = status["leases"].as_array().unwrap().iter().find(|l| l["subnet"] == ROUTE_REFUSED).expect("the lease is listed");
    assert_eq!((code, row["route"].as_str()), (Some(1), Some("missing")), "{status:#}");

    // The address goes: the peer's entries are written and the end of the failure logged once.
    host.exec_ok(&["ip", "addr", "del", "10.5.200.0/32", "dev", "lo"]);
    lab.etcd_del(&key(MAC_REFUSED));
    wait_metric(&host, "weft_peers_failing", |v| v == 0.0);
    wait_metric(&host, "weft_peers", |v| v == 2.0);
    assert!(!entries_for(&host, ROUTE_REFUSED).is_empty(), "the peer's route and ARP entry are written");
    let cleared = |log: &str| log.lines().filter(|l| l.contains("no longer fails") && l.contains("10.5.200.0")).count();
    assert_eq!(cleared(&daemon.log()), 1, "{}", daemon.log());
}
