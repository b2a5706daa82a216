//! `weftd status` run in a host's namespace against a real cluster, as an operator would.

use std::process::Output;
use std::time::Duration;

use lab::{poll, Lab};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

fn status(lab: &Lab, n: usize, extra: &[&str]) -> Output {
    status_via(lab, n, &lab.etcd_endpoint(), extra)
}

fn status_via(lab: &Lab, n: usize, endpoint: &str, extra: &[&str]) -> Output {
    let bin = lab::weftd_bin();
    let mut args = vec![bin.to_str().unwrap(), "status", "--etcd-endpoints", endpoint, "--iface", "eth0"];
    args.extend_from_slice(extra);
    lab.host(n).exec(&args)
}

fn json_status(lab: &Lab, n: usize) -> (i32, Value) {
    let out = status(lab, n, &["--json"]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {out:?}"));
    (out.status.code().unwrap(), json)
}

#[test]
fn status_reports_every_lease_and_each_peer_s_kernel_entries() {
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let hosts: Vec<usize> = (0..3).map(|_| lab.add_host()).collect();
    let mut daemons: Vec<_> = hosts.iter().map(|&n| lab.start_weftd(n, &[])).collect();
    let (code, json) = poll("a healthy status with all three leases", DEADLINE, || {
        Some(json_status(&lab, hosts[0]))
            .filter(|(code, json)| *code == 0 && json["leases"].as_array().is_some_and(|l| l.len() == 3))
    });
    assert_eq!(code, 0);
    let leases = json["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 3, "{json:#}");
    assert_eq!(leases.iter().filter(|l| l["this_host"] == true).count(), 1);
    for peer in leases.iter().filter(|l| l["this_host"] == false) {
        assert_eq!(
            (&peer["route"], &peer["arp"], &peer["fdb"]),
            (&Value::from("ok"), &Value::from("ok"), &Value::from("ok")),
            "{peer}"
        );
        assert!(peer["expires_in_seconds"].as_i64().unwrap() > 86000, "{peer}");
    }
    let table = String::from_utf8(status(&lab, hosts[0], &[]).stdout).unwrap();
    assert!(
        table.contains("(this host)") && table.trim_end().ends_with("healthy") && table.matches(" ok ").count() >= 4,
        "{table}"
    );

    // With the daemon stopped, a hand-deleted route stays missing, and status says so.
    daemons[0].terminate();
    let host = lab.host(hosts[0]);
    let route = host.ip_json(&["route", "show", "dev", "flannel.1"])[0]["dst"].as_str().unwrap().to_string();
    assert!(host.exec(&["ip", "route", "del", &route]).status.success());
    let (code, json) = json_status(&lab, hosts[0]);
    assert_eq!(code, 1, "an unhealthy host exits 1");
    let broken = json["leases"].as_array().unwrap().iter().find(|l| l["subnet"] == route.as_str()).unwrap();
    assert_eq!(broken["route"], "missing");
    assert_eq!(broken["arp"], "ok");
    assert!(String::from_utf8(status(&lab, hosts[0], &[]).stdout).unwrap().contains("MISSING"));

    // Errors are one clear line and exit 2.
    let out = status(&lab, hosts[0], &["--etcd-prefix", "/nothing/here"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), stderr.lines().count()), (Some(2), 1), "{stderr}");
    assert!(stderr.contains("no network config at /nothing/here/config"), "{stderr}");
    let out = status_via(&lab, hosts[0], "http://198.18.0.250:2379", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("weftd status: cannot reach etcd at http://198.18.0.250:2379"), "{stderr}");
}
