//! weftd behind `etcd grpc-proxy`, as some clusters run etcd, end to end: leases, watches and
//! renewals go through the proxy, the overlay works, and nothing is written again. The proxy can also share one etcd watch
//! among clients and answer a joining client "created" itself, in a header that names no
//! cluster (cluster id 0); weftd does not take that for a replaced store (`etcd::store`'s unit
//! tests). In this lab the proxy did not share weftd's watches (its
//! `etcd_grpc_proxy_watchers_coalescing_total` stayed 0), so that answer is not seen here.

use std::collections::BTreeMap;
use std::time::Duration;

use lab::{poll, Lab};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";
const CONVERGE: Duration = Duration::from_secs(30);

/// Every lease key's mod revision (`etcdctl get --prefix -w fields`).
fn mod_revisions(lab: &Lab) -> BTreeMap<String, i64> {
    let out = lab.etcdctl(&["get", "--prefix", SUBNETS, "-w", "fields"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |line: &str, name: &str| line.strip_prefix(&format!("\"{name}\" : ")).map(str::to_string);
    let mut revisions = BTreeMap::new();
    let mut key = None;
    for line in text.lines() {
        if let Some(k) = field(line, "Key") {
            key = Some(k.trim_matches('"').to_string());
        } else if let Some(rev) = field(line, "ModRevision") {
            let k = key.take().expect("etcdctl prints a key's Key before its ModRevision");
            revisions.insert(k, rev.parse().expect("a mod revision"));
        }
    }
    revisions
}

#[test]
fn weftd_behind_grpc_proxy_keeps_its_lease_and_reaches_its_peers() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let proxy = lab.start_grpc_proxy();
    // Another client already watching the leases through the proxy, as a second daemon or an
    // operator's `etcdctl watch` would be.
    lab.watch_through_proxy(&proxy, SUBNETS);
    let hosts = [lab.add_host(), lab.add_host()];
    let endpoints = format!("--etcd-endpoints={proxy}");
    // One after the other: the second's watch starts where the first's already is.
    let mut daemons = Vec::new();
    for &n in &hosts {
        let weftd = lab.start_weftd(n, &[&endpoints]);
        lab.wait_subnet_env(n, CONVERGE);
        weftd.wait_log("watching leases", CONVERGE);
        daemons.push(weftd);
    }
    let leases = mod_revisions(&lab);
    assert_eq!(leases.keys().filter(|k| !k.contains("grpc-proxy-probe")).count(), 2, "{leases:?}");
    let (a, b) = (lab.attach_container(hosts[0]), lab.attach_container(hosts[1]));
    poll("a container on host a to ping one on host b", CONVERGE, || lab.container_ping(hosts[0], b).then_some(()));
    poll("a container on host b to ping one on host a", CONVERGE, || lab.container_ping(hosts[1], a).then_some(()));
    // Passes on, and nothing was rewritten: no store taken for replaced, no lease written again.
    for weftd in &daemons {
        weftd.wait_passes(2, CONVERGE);
        let log = weftd.log();
        assert!(!log.contains("another cluster id"), "host {}: {log}", weftd.n);
    }
    assert_eq!(mod_revisions(&lab), leases, "the leases were written again");
}
