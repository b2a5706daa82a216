//! Unit tests of the rule sets, the listing parser and the jump placement.

use super::apply::TableListing;
use super::docker::{jump_placement, JumpPlacement};
use super::*;

use ipnetwork::{Ipv4Network, Ipv6Network};

fn v4(cidr: &str) -> Ipv4Network {
    cidr.parse().unwrap()
}

fn v6(cidr: &str) -> Ipv6Network {
    cidr.parse().unwrap()
}

#[test]
fn a_table_listing_knows_every_chain_and_its_rules_and_refuses_an_empty_one() {
    let lines: Vec<String> = [
        "-P FORWARD DROP",
        "-N DOCKER-USER",
        "-N FLANNEL-FWD",
        "-A FORWARD -j DOCKER-USER",
        "-A FLANNEL-FWD -s 10.5.0.0/16 -j ACCEPT",
    ]
    .map(String::from)
    .to_vec();
    let listing = TableListing::parse(&lines).unwrap();
    assert_eq!(listing.rules("FORWARD"), Some(&["-j DOCKER-USER".to_string()][..]));
    assert_eq!(listing.rules("DOCKER-USER"), Some(&[][..]));
    assert_eq!(listing.rules("FLANNEL-FWD").map(<[String]>::len), Some(1));
    assert_eq!(listing.rules("FLANNEL-PRERTG"), None);
    // What the crate returns for a listing that failed: no chains at all.
    assert_eq!(TableListing::parse(&[String::new()]), None);
}

#[test]
fn masquerade_rules_are_flanneld_s_in_order() {
    let set = masquerade_rules(v4("10.5.0.0/16"), v4("10.5.72.0/24"));
    assert_eq!((set.table, set.hooks, set.chain), ("nat", &["POSTROUTING"][..], "FLANNEL-POSTRTG"));
    assert_eq!(set.jump, "-m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG");
    assert_eq!(
        set.rules,
        [
            "-s 10.5.72.0/24 -d 10.5.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN",
            "-s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment \"flanneld masq\" -j RETURN",
            "! -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment \"flanneld masq\" -j RETURN",
            "-s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
            "! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
        ]
    );
}

#[test]
fn forward_rules_accept_the_network_both_ways() {
    let set = forward_rules(v4("10.5.0.0/16"));
    assert_eq!((set.table, set.hooks, set.chain), ("filter", &["FORWARD", "DOCKER-USER"][..], "FLANNEL-FWD"));
    assert_eq!(set.rules.len(), 2);
    assert!(set.rules[0].starts_with("-s 10.5.0.0/16 ") && set.rules[1].starts_with("-d 10.5.0.0/16 "));
}

#[test]
fn direct_routing_rules_accept_only_the_overlay_into_our_subnet() {
    let set = direct_routing_rules(v4("10.5.0.0/16"), v4("10.5.72.0/24"));
    assert_eq!((set.table, set.hooks, set.chain), ("raw", &["PREROUTING"][..], "FLANNEL-PRERTG"));
    assert_eq!(set.rules, ["-s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment \"flanneld forward\" -j ACCEPT"]);
}

#[test]
fn only_dockers_rules_preempt_the_jump_and_an_operators_rules_above_it_stay() {
    let jump = "-m comment --comment \"flanneld forward\" -j FLANNEL-FWD";
    let docker_drop = "-d 10.5.72.2/32 ! -i docker0 -j DROP";
    assert_eq!(jump_placement(&[jump, docker_drop], jump), JumpPlacement::InPlace);
    assert_eq!(jump_placement(&["-j DOCKER-USER", jump], jump), JumpPlacement::InPlace);
    let forward = ["-j DOCKER-USER", "-j DOCKER-FORWARD", "-o docker0 -j ACCEPT", jump];
    assert_eq!(jump_placement(&forward, jump), JumpPlacement::Preempted { docker_rule: 1 });
    assert_eq!(jump_placement(&["-s 10.5.0.9/32 -j DROP", "-j RETURN", jump], jump), JumpPlacement::Preempted { docker_rule: 1 });
    // An operator's rules, with conditions of their own, are theirs to keep above ours.
    assert_eq!(jump_placement(&["-s 10.5.0.9/32 -d 10.5.1.2/32 -p icmp -j DROP", jump], jump), JumpPlacement::InPlace);
    assert_eq!(jump_placement(&["-p tcp -j REJECT --reject-with tcp-reset", jump], jump), JumpPlacement::InPlace);
    assert_eq!(jump_placement(&["-d 10.5.0.0/16 -j RETURN", jump], jump), JumpPlacement::InPlace);
    assert_eq!(jump_placement(&[docker_drop], jump), JumpPlacement::Unlisted);
    assert_eq!(jump_placement(&["-j DROPPER", jump], jump), JumpPlacement::InPlace, "a chain named DROPPER is a jump");
}

#[test]
fn ipv6_rules_are_the_same_chains_with_ipv6_networks_and_ipv6_multicast() {
    let (n, p) = (v6("fd00:5::/48"), v6("fd00:5:0:7::/64"));
    let c = "-m comment --comment \"flanneld masq\"";
    let masq = masquerade_rules(n, p);
    assert_eq!((masq.table, masq.hooks, masq.chain), ("nat", &["POSTROUTING"][..], "FLANNEL-POSTRTG"));
    assert_eq!(masq.jump, format!("{c} -j FLANNEL-POSTRTG"));
    assert_eq!(
        masq.rules,
        [
            format!("-s fd00:5:0:7::/64 -d fd00:5::/48 {c} -j RETURN"),
            format!("-s fd00:5::/48 -d fd00:5:0:7::/64 {c} -j RETURN"),
            format!("! -s fd00:5::/48 -d fd00:5:0:7::/64 {c} -j RETURN"),
            format!("-s fd00:5::/48 ! -d ff00::/8 {c} -j MASQUERADE --random-fully"),
            format!("! -s fd00:5::/48 -d fd00:5::/48 {c} -j MASQUERADE --random-fully"),
        ]
    );
    let forward = forward_rules(n);
    assert_eq!((forward.table, forward.chain), ("filter", "FLANNEL-FWD"));
    assert_eq!(
        forward.rules,
        [
            "-s fd00:5::/48 -m comment --comment \"flanneld forward\" -j ACCEPT",
            "-d fd00:5::/48 -m comment --comment \"flanneld forward\" -j ACCEPT"
        ]
    );
    assert_eq!(
        direct_routing_rules(n, p).rules,
        ["-s fd00:5::/48 -d fd00:5:0:7::/64 -m comment --comment \"flanneld forward\" -j ACCEPT"]
    );
}

#[test]
fn the_family_names_the_command() {
    assert_eq!((<Ipv4Addr as Firewall>::COMMAND, <Ipv4Addr as Firewall>::IPV6), ("iptables", false));
    assert_eq!((<Ipv6Addr as Firewall>::COMMAND, <Ipv6Addr as Firewall>::IPV6), ("ip6tables", true));
}

#[test]
fn wanted_rules_follow_the_flags_and_need_our_subnet_only_for_masquerade_and_raw() {
    let chains = |sets: Vec<RuleSet>| sets.iter().map(|s| s.chain).collect::<Vec<_>>();
    let (n, p) = (v6("fd00:5::/48"), Some(v6("fd00:5:0:7::/64")));
    assert_eq!(chains(wanted_rules(n, p, true, true)), ["FLANNEL-POSTRTG", "FLANNEL-FWD", "FLANNEL-PRERTG"]);
    assert_eq!(chains(wanted_rules(n, p, true, false)), ["FLANNEL-POSTRTG"]);
    assert_eq!(chains(wanted_rules(n, p, false, true)), ["FLANNEL-FWD", "FLANNEL-PRERTG"]);
    assert_eq!(chains(wanted_rules(n, None, true, true)), ["FLANNEL-FWD"]);
    assert!(wanted_rules(v4("10.5.0.0/16"), Some(v4("10.5.72.0/24")), false, false).is_empty());
}

#[test]
fn our_subnet_of_each_family_comes_from_our_lease_with_host_bits_cleared() {
    let mut lease = Lease {
        subnet: Some(v4("10.5.72.0/24")),
        ipv6_subnet: None,
        attrs: crate::lease::LeaseAttrs::vxlan("198.18.0.11".parse().unwrap(), 1, crate::lease::MacAddr([2, 0, 0, 0, 0, 1])),
        etcd_lease: None,
        mod_revision: 1,
        create_revision: 1,
    };
    assert_eq!(<Ipv4Addr as Firewall>::own_subnet(&lease), Some(v4("10.5.72.0/24")));
    assert_eq!(<Ipv6Addr as Firewall>::own_subnet(&lease), None, "an IPv4-only lease");
    lease.ipv6_subnet = Some(v6("fd00:5:0:7::5/64"));
    assert_eq!(<Ipv6Addr as Firewall>::own_subnet(&lease).map(|s| s.to_string()), Some("fd00:5:0:7::/64".into()));
    assert_eq!(<Ipv4Addr as Firewall>::dns_server(&lease), Some(Ipv4Addr::new(10, 5, 72, 1)), "docker0's address");
    assert_eq!(<Ipv6Addr as Firewall>::dns_server(&lease), None, "the DNS server listens on IPv4 only");
}

#[test]
fn dns_rules_accept_the_host_and_its_containers_and_drop_everyone_else() {
    let set = dns_rules(v4("10.5.72.0/24"), Ipv4Addr::new(10, 5, 72, 1));
    assert_eq!((set.table, set.hooks, set.chain), ("filter", &["INPUT"][..], "WEFT-DNS"));
    let c = "-m comment --comment \"weft dns\"";
    assert_eq!(
        set.rules,
        [
            format!("-d 10.5.72.1/32 -i lo -p udp -m udp --dport 53 {c} -j ACCEPT"),
            format!("-d 10.5.72.1/32 -i lo -p tcp -m tcp --dport 53 {c} -j ACCEPT"),
            format!("-s 10.5.72.0/24 -d 10.5.72.1/32 -p udp -m udp --dport 53 {c} -j ACCEPT"),
            format!("-s 10.5.72.0/24 -d 10.5.72.1/32 -p tcp -m tcp --dport 53 {c} -j ACCEPT"),
            format!("-d 10.5.72.1/32 -p udp -m udp --dport 53 {c} -j DROP"),
            format!("-d 10.5.72.1/32 -p tcp -m tcp --dport 53 {c} -j DROP"),
        ]
    );
}
