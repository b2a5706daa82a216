//! Smoke test of the namespace lab (the `lab` crate) itself (no weftd needed): wiring, etcd
//! access, containers, and that nothing is left behind after Drop. Needs root.

use lab::{netns_list, nth_address, parse_cidr, pids_mentioning, Lab};
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

#[test]
fn hosts_reach_each_other_and_etcd_then_everything_is_removed() {
    let lab = two_host_lab();
    let (id, dir, etcd_pid) = (lab.id().to_string(), lab.dir().to_path_buf(), lab.etcd_pid());
    assert_eq!(lab.namespaces().len(), 4, "underlay, etcd and two hosts: {:?}", lab.namespaces());
    drop(lab);

    let left: Vec<String> = netns_list().into_iter().filter(|ns| ns.starts_with(&id)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!Path::new(&format!("/proc/{etcd_pid}")).exists(), "etcd (pid {etcd_pid}) still exists");
    let procs = pids_mentioning(&dir.to_string_lossy());
    assert!(procs.is_empty(), "processes mentioning {} left behind: {procs:?}", dir.display());
    assert!(!dir.exists(), "lab dir {} left behind", dir.display());
}

/// Builds a lab with two hosts and checks the underlay and etcd on the way.
fn two_host_lab() -> Lab {
    let mut lab = Lab::new();
    let (a, b) = (lab.add_host(), lab.add_host());
    let (h1, h2) = (lab.host(a), lab.host(b));
    assert_eq!((h1.underlay_ip, h2.underlay_ip), (Ipv4Addr::new(198, 18, 0, 11), Ipv4Addr::new(198, 18, 0, 12)));
    assert!(h1.ping(h2.underlay_ip), "host 1 cannot ping host 2");
    assert!(h1.ping(lab.etcd_ip()), "host 1 cannot ping etcd");

    let addrs = h2.ip_json(&["addr", "show", "dev", "eth0"]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], "198.18.0.12", "{addrs}");
    let forwarding = h1.exec(&["sysctl", "-n", "net.ipv4.ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "1");

    check_etcd_round_trip(&lab);
    lab
}

fn check_etcd_round_trip(lab: &Lab) {
    let value = "-starts with a dash,\nspans lines";
    lab.etcd_put("/weft-smoke/a", value);
    lab.put_network_config(r#"{"Network":"10.5.0.0/16"}"#);
    assert_eq!(lab.etcd_get("/weft-smoke/a").as_deref(), Some(value));
    assert_eq!(lab.etcd_get("/weft-smoke/missing"), None);
    assert_eq!(lab.etcd_get("/coreos.com/network/config").as_deref(), Some(r#"{"Network":"10.5.0.0/16"}"#));

    lab.etcd_put("/weft-smoke/b", "");
    let all = lab.etcd_get_prefix("/weft-smoke/");
    let expected = [("/weft-smoke/a", value), ("/weft-smoke/b", "")].map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(all, expected);

    lab.etcd_del("/weft-smoke/a");
    assert_eq!(lab.etcd_get("/weft-smoke/a"), None);
    assert_eq!(lab.etcd_get("/weft-smoke/b").as_deref(), Some(""));
}

#[test]
fn container_uses_the_hosts_subnet_env() {
    let mut lab = Lab::new();
    let n = lab.add_host();
    let env = "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
    fs::write(&lab.host(n).subnet_file, env).unwrap();

    let ip = lab.attach_container(n);
    assert_eq!(ip, Ipv4Addr::new(10, 5, 7, 2));
    let gateway = Ipv4Addr::new(10, 5, 7, 1);
    assert!(lab.container_ping(n, gateway), "container cannot ping its bridge");
    assert!(lab.container_ping(n, lab.host(n).underlay_ip), "container cannot reach its host's eth0");

    let host = lab.host(n);
    assert_eq!(host.ip_json(&["link", "show", "dev", "cbr0"])[0]["mtu"], 1450);
    let inside = lab.container(n).exec(&["ip", "-j", "link", "show", "dev", "eth0"]);
    let inside: serde_json::Value = serde_json::from_slice(&inside.stdout).unwrap();
    assert_eq!(inside[0]["mtu"], 1450);
    assert_eq!(host.subnet_env().unwrap()["FLANNEL_IPMASQ"], "false");
}

#[test]
fn address_helpers() {
    assert_eq!(parse_cidr("10.5.7.1/24"), (Ipv4Addr::new(10, 5, 7, 1), 24));
    assert_eq!(nth_address(Ipv4Addr::new(10, 5, 7, 1), 24, 2), Ipv4Addr::new(10, 5, 7, 2));
    assert_eq!(nth_address(Ipv4Addr::new(10, 5, 130, 9), 17, 1), Ipv4Addr::new(10, 5, 128, 1));
    assert_eq!(nth_address(Ipv4Addr::new(1, 2, 3, 4), 0, 0), Ipv4Addr::new(0, 0, 0, 0));
}
