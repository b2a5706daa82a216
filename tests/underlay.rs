//! Underlay choice end to end (issue 12, part 1): real `weftd`s in host namespaces whose NICs
//! hold several addresses, checked the way an operator would — the lease's PublicIP in etcd and
//! the `local` and `dev` of `ip -d link show flannel.1`.

use std::time::Duration;

use lab::underlay6::UnderlayCase;
use lab::{Host, Lab};
use serde_json::Value;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";
const CONVERGE: Duration = Duration::from_secs(20);

/// Host N's second address on eth0 (its first is the lab's 198.18.0.(10+N)).
fn second_address(n: usize) -> String {
    format!("10.99.0.{}", 10 + n)
}

/// Gives the host a second NIC, `nic1` (a veth whose peer stays in the host), holding a
/// link-local address first and `10.98.0.(10+N)` after it.
fn add_second_nic(host: &Host) -> String {
    let address = format!("10.98.0.{}", 10 + host.n);
    host.exec_ok(&["ip", "link", "add", "nic1", "type", "veth", "peer", "name", "nic1p"]);
    host.exec_ok(&["ip", "addr", "add", &format!("169.254.{}.1/16", host.n), "dev", "nic1"]);
    host.exec_ok(&["ip", "addr", "add", &format!("{address}/24"), "dev", "nic1"]);
    host.exec_ok(&["ip", "link", "set", "nic1p", "up"]);
    host.exec_ok(&["ip", "link", "set", "nic1", "up"]);
    address
}

/// One way of naming the underlay, and what weftd must make of it: (interface, VXLAN local,
/// lease PublicIP).
type Case = UnderlayCase<(String, String, String)>;

fn case(what: &'static str, flags: &[&str], dev: &str, local: &str, public: &str) -> Case {
    Case {
        what,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        env: Vec::new(),
        expected: (dev.to_string(), local.to_string(), public.to_string()),
    }
}

/// Adds one host per case (eth0 with a second address) and returns the cases, in host order.
fn hosts_and_cases(lab: &mut Lab) -> Vec<Case> {
    let n: Vec<usize> = (0..8).map(|_| lab.add_host()).collect();
    for &h in &n {
        lab.host(h).exec_ok(&["ip", "addr", "add", &format!("{}/24", second_address(h)), "dev", "eth0"]);
    }
    let first = |h: usize| lab.host(h).underlay_ip.to_string();
    let second = second_address;
    let nic_regex = add_second_nic(lab.host(n[5]));
    let nic_default = add_second_nic(lab.host(n[6]));
    lab.host(n[6]).exec_ok(&["ip", "route", "add", "default", "dev", "nic1"]);
    lab.host(n[7]).exec_ok(&["ip", "route", "add", "192.0.2.0/24", "dev", "eth0", "src", &second(n[7])]);
    vec![
        case("--iface=<eth0's second address>", &[&format!("--iface={}", second(n[0]))], "eth0", &second(n[0]), &second(n[0])),
        case("--iface-regex matching eth0's second address", &[r"--iface-regex=^10\.99\."], "eth0", &second(n[1]), &second(n[1])),
        case("--iface=eth0 (by name: its first address)", &["--iface=eth0"], "eth0", &first(n[2]), &first(n[2])),
        case(
            "--public-ip alone: the NIC holding it",
            &[&format!("--public-ip={}", second(n[3]))],
            "eth0",
            &second(n[3]),
            &second(n[3]),
        ),
        case(
            "--iface=<second address> with --public-ip",
            &[&format!("--iface={}", second(n[4])), "--public-ip=203.0.113.5"],
            "eth0",
            &second(n[4]),
            "203.0.113.5",
        ),
        case(
            "--iface-regex on a second NIC's name: its first global address",
            &["--iface-regex=^nic1$"],
            "nic1",
            &nic_regex,
            &nic_regex,
        ),
        case("default route on a second NIC: its first global address", &[], "nic1", &nic_default, &nic_default),
        case(
            "--iface and --iface-regex miss, --iface-can-reach: route's source",
            &["--iface=no-such-nic", r"--iface-regex=^10\.96\.", "--iface-can-reach=192.0.2.1"],
            "eth0",
            &second(n[7]),
            &second(n[7]),
        ),
    ]
}

/// What host `n` shows: flannel.1's underlay device and local, and its lease's PublicIP; `None`
/// until weftd has written subnet.env (after the device and the lease exist).
fn observe(lab: &Lab, n: usize) -> Option<(String, String, String)> {
    let host = lab.host(n);
    let subnet = host.subnet_env()?.get("FLANNEL_SUBNET")?.replace(".1/", ".0-");
    let lease: Value = serde_json::from_str(&lab.etcd_get(&format!("{SUBNETS}{subnet}"))?).ok()?;
    let link = host.try_ip_json(&["-d", "link", "show", "flannel.1"]).ok()?;
    let vxlan = &link[0]["linkinfo"]["info_data"];
    Some((vxlan["link"].as_str()?.to_string(), vxlan["local"].as_str()?.to_string(), lease["PublicIP"].as_str()?.to_string()))
}

#[test]
fn the_address_that_matched_is_the_vxlan_local_and_the_lease_public_ip() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let cases = hosts_and_cases(&mut lab);
    let wrong = lab.run_underlay_cases(&cases, CONVERGE, |n| observe(&lab, n));
    assert!(wrong.is_empty(), "want (dev, local, PublicIP):\n{}", wrong.join("\n"));
}

/// weftd's stderr when started in `host` with `flags`; it must exit non-zero before reaching
/// etcd (the endpoint is unreachable on purpose).
fn refused(host: &Host, flags: &[&str]) -> String {
    let bin = lab::weftd_bin();
    let args = [&[bin.to_str().unwrap(), "--etcd-endpoints", "http://127.0.0.1:1"], flags].concat();
    let out = host.exec(&args);
    assert!(!out.status.success(), "weftd {flags:?} must refuse to start: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_underlay_that_cannot_be_found_is_a_clear_error_listing_the_interfaces() {
    let mut lab = Lab::new();
    let n = lab.add_host();
    let host = lab.host(n);
    let (first, second) = (host.underlay_ip, second_address(n));
    host.exec_ok(&["ip", "addr", "add", &format!("{second}/24"), "dev", "eth0"]);
    let available = format!("lo:[], eth0:[{first} {second}]");

    let stderr = refused(host, &["--public-ip=203.0.113.9"]);
    assert!(stderr.contains("--public-ip=203.0.113.9: no interface has this address"), "{stderr}");
    assert!(stderr.contains(&available) && stderr.contains("--iface=<name or address>"), "{stderr}");

    let stderr = refused(host, &["--iface=10.99.0.250", "--iface=eth7", r"--iface-regex=^10\.97\."]);
    for part in [
        "--iface=10.99.0.250: no interface has the IPv4 address 10.99.0.250",
        "--iface=eth7: no interface is named \"eth7\"",
        r"--iface-regex=^10\.97\.: matches no interface's IPv4 address or name",
        &available,
    ] {
        assert!(stderr.contains(part), "missing {part:?} in {stderr}");
    }
}
