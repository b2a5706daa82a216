//! `--ip-masq` and `--iptables-forward-rules` with IPv6 in the overlay: weftd installs flanneld's
//! chains through ip6tables too, with the IPv6 Network and its own IPv6 subnet, keeps its jumps
//! ahead of Docker's as for IPv4, and puts back what is deleted; an IPv4-only overlay leaves
//! ip6tables alone.

use std::time::Duration;

use ipnetwork::Ipv6Network;
use lab::{poll, Host, Lab};

const DUAL_STACK: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const IPV4_ONLY: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const DEADLINE: Duration = Duration::from_secs(20);
const MASQ: &str = "-m comment --comment \"flanneld masq\"";
const FORWARD: &str = "-m comment --comment \"flanneld forward\"";

/// Our IPv6 subnet from subnet.env's `FLANNEL_IPV6_SUBNET` (its first address, `…::1/64`).
fn own_ipv6_subnet(lab: &Lab, n: usize) -> Ipv6Network {
    let env = lab.wait_subnet_env(n, DEADLINE);
    let gateway: Ipv6Network =
        env.get("FLANNEL_IPV6_SUBNET").unwrap_or_else(|| panic!("no IPv6 subnet: {env:?}")).parse().unwrap();
    Ipv6Network::new(gateway.network(), gateway.prefix()).unwrap()
}

/// flanneld's IPv6 nat chain for our subnet `p` in fd00:5::/48, as `ip6tables -S` prints it.
fn expected_masquerade(p: Ipv6Network) -> Vec<String> {
    let n = "fd00:5::/48";
    [
        format!("-s {p} -d {n} {MASQ} -j RETURN"),
        format!("-s {n} -d {p} {MASQ} -j RETURN"),
        format!("! -s {n} -d {p} {MASQ} -j RETURN"),
        format!("-s {n} ! -d ff00::/8 {MASQ} -j MASQUERADE --random-fully"),
        format!("! -s {n} -d {n} {MASQ} -j MASQUERADE --random-fully"),
    ]
    .into_iter()
    .map(|rule| format!("-A FLANNEL-POSTRTG {rule}"))
    .collect()
}

fn expected_forward() -> Vec<String> {
    vec![
        format!("-A FLANNEL-FWD -s fd00:5::/48 {FORWARD} -j ACCEPT"),
        format!("-A FLANNEL-FWD -d fd00:5::/48 {FORWARD} -j ACCEPT"),
    ]
}

/// The jump into `chain` with `comment`, as `-S` prints it in `hook`.
fn jump(hook: &str, comment: &str, chain: &str) -> String {
    format!("-A {hook} {comment} -j {chain}")
}

/// Whether every chain of ours, and each jump at the top of its hook, is exactly flanneld's.
fn ipv6_rules_in_place(host: &Host, p: Ipv6Network) -> bool {
    let rules = |table: &str, chain: &str| host.firewall_rules("ip6tables", table, chain);
    let first = |table: &str, hook: &str| rules(table, hook).into_iter().next();
    let raw = [format!("-A FLANNEL-PRERTG -s fd00:5::/48 -d {p} {FORWARD} -j ACCEPT")];
    rules("nat", "FLANNEL-POSTRTG") == expected_masquerade(p)
        && rules("filter", "FLANNEL-FWD") == expected_forward()
        && rules("raw", "FLANNEL-PRERTG") == raw
        && first("nat", "POSTROUTING") == Some(jump("POSTROUTING", MASQ, "FLANNEL-POSTRTG"))
        && first("filter", "FORWARD") == Some(jump("FORWARD", FORWARD, "FLANNEL-FWD"))
        && first("filter", "DOCKER-USER") == Some(jump("DOCKER-USER", FORWARD, "FLANNEL-FWD"))
        && first("raw", "PREROUTING") == Some(jump("PREROUTING", FORWARD, "FLANNEL-PRERTG"))
}

#[test]
fn dual_stack_installs_flanneld_s_ip6tables_rules_and_restores_them() {
    let mut lab = Lab::new();
    lab.put_network_config(DUAL_STACK);
    let n = lab.add_host();
    let weftd = lab.start_weftd(n, &["--ip-masq", "-iptables-resync=1"]);
    let p = own_ipv6_subnet(&lab, n);
    let host = lab.host(n).clone();
    poll("flanneld's ip6tables rules", DEADLINE, || ipv6_rules_in_place(&host, p).then_some(()));
    // The IPv4 rules are there as ever, with the IPv4 Network.
    let ipv4_forward = host.firewall_rules("iptables", "filter", "FLANNEL-FWD");
    assert_eq!(ipv4_forward.first().map(String::as_str), Some(&*format!("-A FLANNEL-FWD -s 10.5.0.0/16 {FORWARD} -j ACCEPT")));
    assert_eq!(host.firewall_rules("iptables", "nat", "FLANNEL-POSTRTG").len(), 5);

    // A rule deleted by hand, and each jump, come back at the next check (every second here):
    // three times in a row within 2 s, which a check every 5 s would manage about once in
    // sixteen tries.
    let masq = expected_masquerade(p);
    for round in 1..=3 {
        host.delete_firewall_rule("ip6tables", "nat", &masq[3]);
        host.delete_firewall_rule("ip6tables", "nat", &jump("POSTROUTING", MASQ, "FLANNEL-POSTRTG"));
        host.delete_firewall_rule("ip6tables", "filter", &expected_forward()[1]);
        host.delete_firewall_rule("ip6tables", "filter", &jump("FORWARD", FORWARD, "FLANNEL-FWD"));
        host.delete_firewall_rule("ip6tables", "raw", &jump("PREROUTING", FORWARD, "FLANNEL-PRERTG"));
        poll(&format!("the deleted ip6tables rules to be restored (round {round})"), Duration::from_secs(2), || {
            ipv6_rules_in_place(&host, p).then_some(())
        });
    }
    // A whole chain flushed (a firewall reload) is refilled in order.
    host.exec_ok(&["ip6tables", "-w", "-t", "nat", "-F", "FLANNEL-POSTRTG"]);
    poll("the flushed chain to be refilled", Duration::from_secs(2), || ipv6_rules_in_place(&host, p).then_some(()));
    // What the README shows.
    for (table, chain) in [("nat", "FLANNEL-POSTRTG"), ("filter", "FLANNEL-FWD"), ("raw", "FLANNEL-PRERTG")] {
        println!("# ip6tables -t {table} -S {chain}\n{}", host.firewall_rules("ip6tables", table, chain).join("\n"));
    }
    let log = weftd.log();
    assert!(
        log.contains("ip6tables rules installed") && log.contains("ip6tables rules were missing or changed; restored"),
        "{log}"
    );
    assert!(!log.contains("cannot install"), "{log}");
}

#[test]
fn an_ipv4_only_overlay_creates_nothing_in_ip6tables() {
    let mut lab = Lab::new();
    lab.put_network_config(IPV4_ONLY);
    let n = lab.add_host();
    let weftd = lab.start_weftd(n, &["--ip-masq", "-iptables-resync=1"]);
    lab.wait_subnet_env(n, DEADLINE);
    let host = lab.host(n).clone();
    // The IPv4 check has run (its last chain is in place); a rule it restores after that shows
    // a later check came and went, long after any ip6tables check started with it would have.
    poll("the iptables rules", DEADLINE, || (!host.firewall_rules("iptables", "raw", "FLANNEL-PRERTG").is_empty()).then_some(()));
    let ipv4_jump = jump("FORWARD", FORWARD, "FLANNEL-FWD");
    host.delete_firewall_rule("iptables", "filter", &ipv4_jump);
    poll("the IPv4 jump to be restored", DEADLINE, || {
        host.firewall_rules("iptables", "filter", "FORWARD").contains(&ipv4_jump).then_some(())
    });
    for table in ["nat", "filter", "raw"] {
        let chains = host.firewall_chains("ip6tables", table);
        assert!(chains.iter().all(|c| !c.starts_with("FLANNEL") && c != "DOCKER-USER"), "ip6tables -t {table}: {chains:?}");
        let saved = String::from_utf8_lossy(&host.exec(&["ip6tables-save", "-t", table]).stdout).to_lowercase();
        assert!(!saved.contains("flannel"), "ip6tables-save -t {table}: {saved}");
    }
    assert!(!weftd.log().contains("ip6tables"), "{}", weftd.log());
}

/// What the IPv6 masquerade is for: a container reaching an underlay address that has no route
/// back to the overlay. Host 3 runs no weftd; only the masquerading host's container gets an
/// answer from it, with its own source address replaced by the host's.
#[test]
fn ipv6_masquerade_reaches_an_underlay_address_with_no_route_back() {
    let mut lab = Lab::new();
    lab.put_network_config(DUAL_STACK);
    let (masq, plain, bare) = (lab.add_host(), lab.add_host(), lab.add_host());
    let _masq = lab.start_weftd(masq, &["--ip-masq"]);
    let _plain = lab.start_weftd(plain, &["--iptables-forward-rules=false"]);
    let p = own_ipv6_subnet(&lab, masq);
    own_ipv6_subnet(&lab, plain);
    lab.attach_container(masq);
    lab.attach_container(plain);
    let host = lab.host(masq).clone();
    poll("flanneld's ip6tables rules", DEADLINE, || ipv6_rules_in_place(&host, p).then_some(()));
    assert!(lab.host(plain).firewall_chains("ip6tables", "nat").iter().all(|c| c != "FLANNEL-POSTRTG"), "no --ip-masq");

    let target = lab.host(bare).underlay_ipv6;
    poll("the masquerading host's container to reach the bare host over IPv6", DEADLINE, || {
        lab.container_ping(masq, target).then_some(())
    });
    assert!((0..3).all(|_| !lab.container_ping(plain, target)), "without --ip-masq the reply has no way back");
}

/// dockerd with `--ipv6` writes its chains in ip6tables as in iptables: when it (re)starts
/// after weftd, its FORWARD jump lands above ours, its RETURN ends DOCKER-USER and a
/// container's direct-access DROP is appended to raw PREROUTING. weftd moves its FORWARD jump
/// back above Docker's; the others stay first.
#[test]
fn ipv6_jumps_are_kept_ahead_of_dockers_chains() {
    let mut lab = Lab::new();
    lab.put_network_config(DUAL_STACK);
    let n = lab.add_host();
    let _weftd = lab.start_weftd(n, &["-iptables-resync=1"]);
    let p = own_ipv6_subnet(&lab, n);
    let host = lab.host(n).clone();
    let in_place = || {
        let rules = |table: &str, chain: &str| host.firewall_rules("ip6tables", table, chain);
        let first = |table: &str, hook: &str| rules(table, hook).into_iter().next();
        rules("filter", "FLANNEL-FWD") == expected_forward()
            && first("filter", "FORWARD") == Some(jump("FORWARD", FORWARD, "FLANNEL-FWD"))
            && first("filter", "DOCKER-USER") == Some(jump("DOCKER-USER", FORWARD, "FLANNEL-FWD"))
            && first("raw", "PREROUTING") == Some(jump("PREROUTING", FORWARD, "FLANNEL-PRERTG"))
    };
    poll("weftd's ip6tables jumps", DEADLINE, || in_place().then_some(()));
    assert!(host.firewall_chains("ip6tables", "nat").iter().all(|c| c != "FLANNEL-POSTRTG"), "no --ip-masq");

    let container = format!("{}/128", std::net::Ipv6Addr::from(u128::from(p.network()) + 2));
    let ip6tables = |table: &str, args: &[&str]| host.exec_ok(&[&["ip6tables", "-w", "-t", table], args].concat());
    ip6tables("filter", &["-N", "DOCKER-FORWARD"]);
    ip6tables("filter", &["-A", "DOCKER-USER", "-j", "RETURN"]);
    ip6tables("filter", &["-I", "FORWARD", "-j", "DOCKER-FORWARD"]);
    ip6tables("raw", &["-A", "PREROUTING", "-d", &container, "!", "-i", "cbr0", "-j", "DROP"]);
    poll("weftd's FORWARD jump to be moved above Docker's", Duration::from_secs(4), || in_place().then_some(()));
    let forward = host.firewall_rules("ip6tables", "filter", "FORWARD");
    assert_eq!(forward, [jump("FORWARD", FORWARD, "FLANNEL-FWD"), "-A FORWARD -j DOCKER-FORWARD".to_string()]);
    let docker_user = host.firewall_rules("ip6tables", "filter", "DOCKER-USER");
    assert_eq!(docker_user, [jump("DOCKER-USER", FORWARD, "FLANNEL-FWD"), "-A DOCKER-USER -j RETURN".to_string()]);
    assert_eq!(host.firewall_rules("ip6tables", "raw", "PREROUTING").len(), 2);
}
