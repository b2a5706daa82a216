//! `weftd status` run in a host's namespace against a real cluster, as an operator would.

use std::process::Output;
use std::time::Duration;

use lab::dns::NetnsResolvConf;
use lab::{poll, Lab};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

fn status(lab: &Lab, n: usize, extra: &[&str]) -> Output {
    lab.weftd_status(n, extra)
}

fn json_status(lab: &Lab, n: usize) -> (i32, Value) {
    lab.weftd_status_json(n)
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
    let out = lab.weftd_status_via(hosts[0], "http://198.18.0.250:2379", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("weftd status: cannot reach etcd at http://198.18.0.250:2379"), "{stderr}");
    // Each cause once: the etcd error is not repeated after the text that quotes it.
    let causes: Vec<&str> = stderr.trim_end().split(": ").collect();
    let once: std::collections::BTreeSet<&str> = causes.iter().copied().collect();
    assert_eq!(once.len(), causes.len(), "{stderr}");
}

const DUAL_STACK: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;

/// The lease in `json` of the host whose FLANNEL_IPV6_SUBNET is `env_subnet` (`fd00:5:0:7::1/64`).
fn lease_by_ipv6<'j>(json: &'j Value, env_subnet: &str) -> &'j Value {
    let subnet = env_subnet.replace("::1/", "::/");
    json["leases"].as_array().unwrap().iter().find(|l| l["ipv6"]["subnet"] == subnet.as_str()).unwrap()
}

#[test]
fn status_shows_both_families_of_a_dual_stack_cluster() {
    let mut lab = Lab::new();
    lab.put_network_config(DUAL_STACK);
    let hosts: Vec<usize> = (0..2).map(|_| lab.add_host()).collect();
    let mut daemons: Vec<_> = hosts.iter().map(|&n| lab.start_weftd(n, &[])).collect();
    let envs: Vec<_> = hosts.iter().map(|&n| lab.wait_subnet_env(n, DEADLINE)).collect();
    // An IPv4-only peer (a flanneld with IPv6 off), and one whose IPv6 part is broken: status
    // names both, and the IPv4 side of each is checked as usual.
    let subnets = "/coreos.com/network/subnets/";
    let v4_only = r#"{"PublicIP":"198.18.0.91","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:91"}}"#;
    lab.etcd_put(&format!("{subnets}10.5.91.0-24"), v4_only);
    let broken = r#"{"PublicIP":"198.18.0.92","PublicIPv6":"fd18::92","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:92"}}"#;
    lab.etcd_put(&format!("{subnets}10.5.92.0-24&fd00:5:0:92::-64"), broken);

    let (_, json) = poll("host 0's status with both peers' IPv6 entries right", DEADLINE, || {
        Some(json_status(&lab, hosts[0])).filter(|(_, json)| json["ipv6"]["peers_ok"] == 1)
    });
    let v6 = &json["ipv6"];
    assert_eq!(
        (&v6["network"], &v6["device"], &v6["device_present"]),
        (&Value::from("fd00:5::/48"), &Value::from("flannel-v6.1"), &Value::from(true)),
        "{json:#}"
    );
    assert_eq!(v6["own_subnet"], envs[0]["FLANNEL_IPV6_SUBNET"].replace("::1/", "::/").as_str());
    assert_eq!(v6["public_ip"], lab.host(hosts[0]).underlay_ipv6.to_string().as_str());
    assert_eq!(
        (&v6["peers"], &v6["skipped"], &v6["unexplained"]),
        (&Value::from(1), &Value::from(1), &Value::from(0)),
        "{json:#}"
    );
    let peer = lease_by_ipv6(&json, &envs[1]["FLANNEL_IPV6_SUBNET"]);
    assert_eq!(peer["ipv6"]["public_ip"], lab.host(hosts[1]).underlay_ipv6.to_string().as_str());
    for check in ["route", "neighbour", "fdb"] {
        assert_eq!(peer["ipv6"][check], "ok", "{check}: {peer:#}");
    }
    let by_subnet = |subnet: &str| json["leases"].as_array().unwrap().iter().find(|l| l["subnet"] == subnet).unwrap().clone();
    let (v4_only, broken) = (by_subnet("10.5.91.0/24"), by_subnet("10.5.92.0/24"));
    assert_eq!(
        (&v4_only["route"], &v4_only["ipv6"]["subnet"], &v4_only["ipv6"]["skipped"]),
        (&Value::from("ok"), &Value::Null, &Value::Null)
    );
    let reason = broken["ipv6"]["skipped"].as_str().unwrap();
    assert!(reason.starts_with("its IPv6 part is unusable"), "{reason}");
    assert_eq!((&broken["route"], &broken["skipped"]), (&Value::from("ok"), &Value::Null), "its IPv4 part is programmed");
    let table = String::from_utf8(status(&lab, hosts[0], &[]).stdout).unwrap();
    assert!(table.contains("ipv6       fd00:5::/48 (subnets /64, device flannel-v6.1)\n"), "{table}");
    assert!(table.contains("peers      ipv4 3 of 3 ok, 0 skipped; ipv6 1 of 1 ok, 1 skipped\n"), "{table}");

    // With the daemon stopped, a hand-deleted IPv6 route stays missing; the IPv4 side is fine.
    daemons[0].terminate();
    let host = lab.host(hosts[0]);
    let peer_v6 = peer["ipv6"]["subnet"].as_str().unwrap().to_string();
    assert!(host.exec(&["ip", "-6", "route", "del", &peer_v6, "dev", "flannel-v6.1"]).status.success());
    let (code, json) = json_status(&lab, hosts[0]);
    assert_eq!(code, 1, "an unhealthy host exits 1: {json:#}");
    let peer = lease_by_ipv6(&json, &envs[1]["FLANNEL_IPV6_SUBNET"]);
    assert_eq!(
        (&peer["ipv6"]["route"], &peer["ipv6"]["neighbour"], &peer["route"]),
        (&Value::from("missing"), &Value::from("ok"), &Value::from("ok"))
    );
    let table = String::from_utf8(status(&lab, hosts[0], &[]).stdout).unwrap();
    assert!(table.contains("ipv6 0 of 1 ok") && table.contains("MISSING"), "{table}");
}

/// A static weftd looks host names up in /etc/hosts and DNS alone, whatever nsswitch.conf
/// names: other NSS modules would come from the host's glibc, not the one weftd was linked
/// with. Here nsswitch.conf names only a module that does not exist, which glibc's own
/// reading would follow and find nothing.
#[test]
fn an_etcd_endpoint_named_in_etc_hosts_is_found_whatever_nsswitch_conf_names() {
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let n = lab.add_host();
    let hosts = format!("{} etcd.weft.test\n", lab.etcd_ip());
    let files = [("hosts", hosts.as_str()), ("nsswitch.conf", "hosts: weftnosuchmodule\n")];
    let _etc = NetnsResolvConf::write_files(&lab.host(n).ns, &files);
    let out = lab.weftd_status_via(n, "http://etcd.weft.test:2379", &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("10.5.0.0/16"), "the config was read through etcd.weft.test: {stdout}{stderr}");
    assert!(!stderr.contains("cannot reach etcd"), "{stderr}");
}
