//! The underlay's IPv6 side end to end (issue 15, item 3): real `weftd`s under a dual-stack
//! config in host namespaces whose eth0 holds several IPv6 addresses, checked the way an
//! operator would — the lease's `PublicIP` and `PublicIPv6` with `etcdctl get`, flannel-v6.1's
//! `local` with `ip -d link`, and weftd's own words when both default routes do not leave by
//! one interface.

use std::time::Duration;

use lab::underlay6::UnderlayCase;
use lab::{Host, Lab};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const CONVERGE: Duration = Duration::from_secs(20);

/// Host N's address `fd18:<block>::(10+N)` (the lab's own is block 0).
fn v6(block: u16, host: &Host) -> String {
    format!("fd18:{block:x}::{:x}", 10 + host.n)
}

/// Adds, after the lab's `fd18::(10+N)`, a second permanent address (block 1), then a deprecated
/// one (block 2) and a dynamic one (block 4). The kernel lists the newest first, so flanneld
/// takes the dynamic one; weft the best, the newest clean permanent one: block 1.
fn several_addresses(host: &Host) {
    host.add_ipv6("eth0", &format!("{}/64", v6(1, host)), &[]);
    host.add_ipv6("eth0", &format!("{}/64", v6(2, host)), &["preferred_lft", "0"]);
    host.add_ipv6("eth0", &format!("{}/64", v6(4, host)), &["valid_lft", "3600", "preferred_lft", "3600"]);
}

/// Gives the host a second NIC, `nic1` (a veth whose peer stays in the host), holding
/// `fd18:3::(10+N)`.
fn second_nic(host: &Host) {
    host.exec_ok(&["ip", "link", "add", "nic1", "type", "veth", "peer", "name", "nic1p"]);
    host.exec_ok(&["ip", "link", "set", "nic1p", "up"]);
    host.exec_ok(&["ip", "link", "set", "nic1", "up"]);
    host.add_ipv6("nic1", &format!("{}/64", v6(3, host)), &[]);
}

/// One way of naming the IPv6 underlay, and the lease's (PublicIP, PublicIPv6) it must give.
type Case = UnderlayCase<(String, String)>;

/// Adds one host per case (eth0 with several IPv6 addresses) and returns the cases, in host order.
fn hosts_and_cases(lab: &mut Lab) -> Vec<Case> {
    let n: Vec<usize> = (0..6).map(|_| lab.add_host()).collect();
    for &h in &n {
        several_addresses(lab.host(h));
    }
    let host = |i: usize| lab.host(n[i]);
    let v4 = |i: usize| host(i).underlay_ip.to_string();
    for i in [4, 5] {
        host(i).exec_ok(&["ip", "route", "add", "default", "dev", "eth0"]);
        host(i).exec_ok(&["ip", "-6", "route", "add", "default", "dev", "eth0"]);
    }
    let case = |what, flags: &[String], env: &[(&'static str, String)], i: usize, public_ipv6: String| Case {
        what,
        flags: flags.to_vec(),
        env: env.to_vec(),
        expected: (v4(i), public_ipv6),
    };
    let nat = "2001:db8:99::1".to_string();
    vec![
        case("--public-ipv6 given (NAT)", &["--iface=eth0".into(), format!("--public-ipv6={nat}")], &[], 0, nat.clone()),
        case(
            "FLANNELD_PUBLIC_IPV6 alone: the NIC holding it",
            &[],
            &[("FLANNELD_PUBLIC_IPV6", v6(1, host(1)))],
            1,
            v6(1, host(1)),
        ),
        case(
            "-public-ipv6 <addr>, single dash",
            &["-iface".into(), "eth0".into(), "-public-ipv6".into(), v6(1, host(2))],
            &[],
            2,
            v6(1, host(2)),
        ),
        case("--iface=<IPv6 address>", &[format!("--iface={}", v6(1, host(3)))], &[], 3, v6(1, host(3))),
        case("default routes: the best address, not the first listed", &[], &[], 4, v6(1, host(4))),
        case("--iface-regex on IPv6 addresses", &[r"--iface-regex=^fd18:1::".into()], &[], 5, v6(1, host(5))),
    ]
}

/// Host N's lease (PublicIP, PublicIPv6), once it has one.
fn observe(lab: &Lab, n: usize) -> Option<(String, String)> {
    let lease = lab.own_dual_stack_lease(n)?;
    Some((lease["PublicIP"].as_str()?.to_string(), lease["PublicIPv6"].as_str()?.to_string()))
}

#[test]
fn the_lease_advertises_the_ipv6_address_flanneld_rules_choose() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let cases = hosts_and_cases(&mut lab);
    let wrong = lab.run_underlay_cases(&cases, CONVERGE, |n| observe(&lab, n));
    assert!(wrong.is_empty(), "want (PublicIP, PublicIPv6):\n{}", wrong.join("\n"));
}

#[test]
fn both_default_routes_must_leave_by_one_interface() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (apart, missing) = (lab.add_host(), lab.add_host());
    for n in [apart, missing] {
        lab.host(n).exec_ok(&["ip", "route", "add", "default", "dev", "eth0"]);
    }
    second_nic(lab.host(apart));
    lab.host(apart).exec_ok(&["ip", "-6", "route", "add", "default", "dev", "nic1"]);
    let expectations = [
        (apart, "the IPv4 default route leaves by eth0 but the IPv6 default route by nic1: both families must use one underlay interface"),
        (missing, "the network config enables IPv6, and there is no IPv6 default route to take its underlay address from (the IPv4 default route leaves by eth0;"),
    ];
    for (n, expected) in expectations {
        let mut daemon = lab.start_weftd_picking_iface(n, &[], &[]);
        let status = daemon.wait_exit(CONVERGE);
        let log = daemon.log();
        assert!(status.is_some_and(|s| !s.success()), "host {n}: weftd must refuse to start: {status:?}\n{log}");
        assert!(log.contains(expected), "host {n}: missing {expected:?} in\n{log}");
        // Every interface with its IPv6 addresses, as the IPv4 errors list them.
        let listing = format!("eth0:[{} {}", lab.host(n).underlay_ip, lab.host(n).underlay_ipv6);
        assert!(log.contains(&listing), "host {n}: missing {listing:?} in\n{log}");
    }
}

#[test]
fn a_readdressed_ipv6_underlay_is_advertised_without_waiting_for_the_resync() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let n = lab.add_host();
    // An hour's resync: only an address notification can make weftd look again in time.
    let _daemon = lab.start_weftd(n, &["--resync-interval", "1h"]);
    let host = lab.host(n);
    let public_ipv6 = |lab: &Lab| lab.own_dual_stack_lease(n).and_then(|l| l["PublicIPv6"].as_str().map(String::from));
    let first = host.underlay_ipv6.to_string();
    lab::poll("the lease to advertise the lab's IPv6 address", CONVERGE, || (public_ipv6(&lab)? == first).then_some(()));
    // The new address, and a deprecated one the kernel lists before it (newest first): the
    // lookup after the change ranks them as at start.
    let moved = v6(5, host);
    host.add_ipv6("eth0", &format!("{moved}/64"), &[]);
    host.add_ipv6("eth0", &format!("{}/64", v6(6, host)), &["preferred_lft", "0"]);
    host.del_ipv6("eth0", &format!("{first}/64"));
    lab::poll(&format!("the lease to advertise {moved}"), CONVERGE, || (public_ipv6(&lab)? == moved).then_some(()));
    // And the IPv6 VXLAN device sends from it.
    lab::poll(&format!("flannel-v6.1's local to be {moved}"), CONVERGE, || {
        let link = host.try_ip_json(&["-d", "link", "show", "flannel-v6.1"]).ok()?;
        (link[0]["linkinfo"]["info_data"]["local6"].as_str()? == moved).then_some(())
    });
}
