//! Unit tests of the underlay choice: flanneld's rules, one case each.

use super::*;
use crate::netlink::Ipv6Address;

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(super) fn link(index: u32, name: &str, addresses: &[&str]) -> Ipv4Link {
    Ipv4Link { name: name.to_string(), index, mtu: 1500, addresses: addresses.iter().map(|a| ip(a)).collect() }
}

/// lo, eth0 with two addresses (as in issue 12), eth1 with a link-local one first.
pub(super) fn host() -> HostView {
    HostView {
        links: vec![
            link(1, "lo", &["127.0.0.1"]),
            link(2, "eth0", &["192.168.78.11", "10.99.0.11"]),
            link(3, "eth1", &["169.254.3.3", "172.16.0.11", "172.16.1.11"]),
            link(4, "eth2", &[]),
        ],
        can_reach: None,
        default_route: Some(RouteHop { interface: Some(2), source: None }),
        ipv6: None,
    }
}

pub(super) fn iface(values: &[&str]) -> UnderlayChoice {
    UnderlayChoice { ifaces: values.iter().map(|v| v.to_string()).collect(), ..UnderlayChoice::default() }
}

pub(super) fn regex(patterns: &[&str]) -> UnderlayChoice {
    UnderlayChoice { iface_regex: patterns.iter().map(|p| regex::Regex::new(p).unwrap()).collect(), ..UnderlayChoice::default() }
}

/// (interface, local address, PublicIP) or the error's text.
type Picked = Result<(String, Option<Ipv4Addr>, Option<Ipv4Addr>), String>;

fn pick(choice: &UnderlayChoice, host: &HostView) -> Picked {
    choose(choice, host).map(|c| (c.underlay.name, c.underlay.ip, c.underlay.public_ip)).map_err(|e| e.to_string())
}

fn ok(name: &str, local: &str, public: &str) -> Picked {
    Ok((name.to_string(), Some(ip(local)), Some(ip(public))))
}

#[test]
fn usable_addresses_put_global_before_link_local_and_drop_the_rest() {
    let all = ["169.254.1.1", "127.0.0.2", "10.0.0.1", "224.0.0.5", "0.0.0.0", "255.255.255.255", "192.0.2.1"];
    let addresses: Vec<Ipv4Addr> = all.iter().map(|a| ip(a)).collect();
    assert_eq!(usable_addresses(&addresses), [ip("10.0.0.1"), ip("192.0.2.1"), ip("169.254.1.1")]);
}

#[test]
fn iface_by_address_uses_that_address_not_the_interfaces_first() {
    assert_eq!(pick(&iface(&["10.99.0.11"]), &host()), ok("eth0", "10.99.0.11", "10.99.0.11"));
    assert_eq!(pick(&iface(&["::ffff:10.99.0.11"]), &host()), ok("eth0", "10.99.0.11", "10.99.0.11"));
    // Any address counts for an exact match, as in flanneld: even a loopback one.
    assert_eq!(pick(&iface(&["127.0.0.1"]), &host()), ok("lo", "127.0.0.1", "127.0.0.1"));
}

#[test]
fn iface_by_name_uses_its_first_usable_address() {
    assert_eq!(pick(&iface(&["eth0"]), &host()), ok("eth0", "192.168.78.11", "192.168.78.11"));
    assert_eq!(pick(&iface(&["eth1"]), &host()), ok("eth1", "172.16.0.11", "172.16.0.11"));
    let link_local_only = HostView { links: vec![link(5, "ll0", &["169.254.9.9"])], ..HostView::default() };
    assert_eq!(pick(&iface(&["ll0"]), &link_local_only), ok("ll0", "169.254.9.9", "169.254.9.9"));
}

#[test]
fn repeated_iface_is_tried_in_order_and_misses_are_reported() {
    let chosen = choose(&iface(&["nope0", "10.1.2.3", "lo", "eth2", "eth1", "eth0"]), &host()).unwrap();
    assert_eq!((chosen.underlay.name.as_str(), chosen.underlay.ip), ("eth1", Some(ip("172.16.0.11"))));
    let skipped: Vec<String> = chosen.skipped.iter().map(Miss::to_string).collect();
    assert_eq!(
        skipped,
        [
            "--iface=nope0: no interface is named \"nope0\"",
            "--iface=10.1.2.3: no interface has the IPv4 address 10.1.2.3",
            "--iface=lo: interface lo has no usable IPv4 address (global or link-local)",
            "--iface=eth2: interface eth2 has no usable IPv4 address (global or link-local)",
        ]
    );
}

#[test]
fn iface_regex_matches_addresses_across_all_interfaces_before_names() {
    assert_eq!(pick(&regex(&[r"^10\.99\."]), &host()), ok("eth0", "10.99.0.11", "10.99.0.11"));
    // "1" matches eth0's first address: addresses are tried before the name eth1.
    assert_eq!(pick(&regex(&["1"]), &host()), ok("eth0", "192.168.78.11", "192.168.78.11"));
    // Only eth1's second address matches: that address, not eth1's first.
    assert_eq!(pick(&regex(&[r"\.1\.11$"]), &host()), ok("eth1", "172.16.1.11", "172.16.1.11"));
    // Link-local addresses are matched after global ones on the same interface.
    assert_eq!(pick(&regex(&[r"^(169|172)\."]), &host()), ok("eth1", "172.16.0.11", "172.16.0.11"));
    // No address matches: the name does, and the interface's first usable address is used.
    assert_eq!(pick(&regex(&["^eth1$"]), &host()), ok("eth1", "172.16.0.11", "172.16.0.11"));
    // Loopback addresses are not matched by pattern.
    assert!(pick(&regex(&[r"^127\."]), &host()).is_err());
}

#[test]
fn iface_regex_stops_at_the_first_name_match_as_flanneld_does() {
    let error = pick(
        &regex(&["^eth[12]$"]),
        &HostView { links: vec![link(4, "eth2", &[]), link(3, "eth1", &["10.0.0.1"])], ..HostView::default() },
    );
    assert!(error.unwrap_err().contains("--iface-regex=^eth[12]$: interface eth2 has no usable IPv4 address"));
}

#[test]
fn iface_then_regex_then_can_reach_is_the_fallback_order() {
    let mut host = host();
    host.can_reach = Some((ip("198.51.100.1"), Ok(RouteHop { interface: Some(3), source: Some(ip("172.16.1.11")) })));
    let mut choice = regex(&["^nomatch$", r"^10\.99\."]);
    choice.ifaces = vec!["eth9".into()];
    choice.can_reach = Some(ip("198.51.100.1"));
    assert_eq!(pick(&choice, &host), ok("eth0", "10.99.0.11", "10.99.0.11"));
    choice.iface_regex.pop();
    assert_eq!(pick(&choice, &host), ok("eth1", "172.16.1.11", "172.16.1.11"));
    choice.ifaces.push("eth0".into());
    assert_eq!(pick(&choice, &host), ok("eth0", "192.168.78.11", "192.168.78.11"));
}

#[test]
fn can_reach_uses_the_routes_interface_and_preferred_source() {
    let mut host = host();
    let choice = UnderlayChoice { can_reach: Some(ip("198.51.100.1")), ..UnderlayChoice::default() };
    host.can_reach = Some((ip("198.51.100.1"), Ok(RouteHop { interface: Some(2), source: Some(ip("10.99.0.11")) })));
    assert_eq!(pick(&choice, &host), ok("eth0", "10.99.0.11", "10.99.0.11"));
    host.can_reach = Some((ip("198.51.100.1"), Ok(RouteHop { interface: Some(3), source: None })));
    assert_eq!(pick(&choice, &host), ok("eth1", "172.16.0.11", "172.16.0.11"));
    host.can_reach = Some((ip("198.51.100.1"), Err(Errno::ENETUNREACH)));
    let error = pick(&choice, &host).unwrap_err();
    assert!(error.contains("--iface-can-reach=198.51.100.1: the kernel has no route to it (ENETUNREACH"), "{error}");
    host.can_reach = Some((ip("198.51.100.1"), Ok(RouteHop { interface: Some(9), source: None })));
    assert!(pick(&choice, &host).unwrap_err().contains("(index 9) no longer exists"));
}

#[test]
fn public_ip_is_advertised_while_the_interface_flag_gives_the_local_address() {
    let mut choice = iface(&["10.99.0.11"]);
    choice.public_ip = Some(ip("203.0.113.7"));
    assert_eq!(pick(&choice, &host()), ok("eth0", "10.99.0.11", "203.0.113.7"));
}

#[test]
fn public_ip_alone_selects_the_interface_holding_it() {
    let choice = UnderlayChoice { public_ip: Some(ip("10.99.0.11")), ..UnderlayChoice::default() };
    let mut host = host();
    host.default_route = Some(RouteHop { interface: Some(3), source: None });
    assert_eq!(pick(&choice, &host), ok("eth0", "10.99.0.11", "10.99.0.11"));
}

#[test]
fn public_ip_alone_that_no_interface_holds_is_an_error_that_says_what_to_do() {
    let choice = UnderlayChoice { public_ip: Some(ip("203.0.113.7")), ..UnderlayChoice::default() };
    let error = pick(&choice, &host()).unwrap_err();
    assert!(error.starts_with("--public-ip=203.0.113.7: no interface has this address"), "{error}");
    assert!(error.contains("eth0:[192.168.78.11 10.99.0.11]"), "{error}");
    assert!(error.contains("--iface=<name or address>"), "{error}");
}

#[test]
fn the_default_route_gives_its_interfaces_first_usable_address() {
    assert_eq!(pick(&UnderlayChoice::default(), &host()), ok("eth0", "192.168.78.11", "192.168.78.11"));
    let mut host = host();
    host.default_route = Some(RouteHop { interface: Some(3), source: Some(ip("172.16.1.11")) });
    assert_eq!(pick(&UnderlayChoice::default(), &host), ok("eth1", "172.16.0.11", "172.16.0.11"));
    host.default_route = Some(RouteHop { interface: None, source: None });
    let error = pick(&UnderlayChoice::default(), &host).unwrap_err();
    assert!(error.contains("the IPv4 default route: the route has no single output interface"), "{error}");
    host.default_route = None;
    let error = pick(&UnderlayChoice::default(), &host).unwrap_err();
    assert!(error.starts_with("there is no IPv4 default route"), "{error}");
}

#[test]
fn nothing_matching_lists_every_miss_and_what_is_available() {
    let mut choice = regex(&[r"^10\.98\."]);
    choice.ifaces = vec!["10.99.0.12".into()];
    let error = pick(&choice, &host()).unwrap_err();
    assert_eq!(
        error,
        "no interface matches --iface/--iface-regex/--iface-can-reach (--iface=10.99.0.12: no interface has the IPv4 \
         address 10.99.0.12; --iface-regex=^10\\.98\\.: matches no interface's IPv4 address or name); available \
         interfaces: lo:[], eth0:[192.168.78.11 10.99.0.11], eth1:[172.16.0.11 172.16.1.11 169.254.3.3], eth2:[]; \
         give an interface name or one of its IPv4 addresses with --iface, or a pattern for either with --iface-regex"
    );
}

#[test]
fn an_interface_with_mtu_zero_is_skipped() {
    let mut host = host();
    host.links[1].mtu = 0;
    let error = pick(&iface(&["eth0"]), &host).unwrap_err();
    assert!(error.contains("--iface=eth0: interface eth0 reports an MTU of 0"), "{error}");
}

// IPv6: the config enables it, so the host view has IPv6 addresses.

use crate::netlink::Ipv6AddressFlags;

pub(super) const PERMANENT: Ipv6AddressFlags = Ipv6AddressFlags { permanent: true, ..NONE };
pub(super) const NONE: Ipv6AddressFlags =
    Ipv6AddressFlags { permanent: false, deprecated: false, tentative: false, temporary: false, dad_failed: false };

pub(super) fn v6(index: u32, address: &str, flags: Ipv6AddressFlags) -> Ipv6Address {
    Ipv6Address { index, ip: address.parse().unwrap(), flags }
}

/// [`host`] plus eth3 (IPv4 and only a link-local IPv6 address) and eth4 (no IPv6), every link's IPv6 addresses
/// (eth0's in an order its ranking must change), and both default routes by eth0.
pub(super) fn host6() -> HostView {
    let mut host = host();
    host.links.push(link(5, "eth3", &["172.17.0.11"]));
    host.links.push(link(6, "eth4", &["172.18.0.11"]));
    let addresses = vec![
        v6(1, "::1", PERMANENT),
        v6(2, "fe80::2", PERMANENT),
        v6(2, "fd18::99", Ipv6AddressFlags { deprecated: true, ..PERMANENT }),
        v6(2, "2001:db8::2", NONE),
        v6(2, "fd18::66", Ipv6AddressFlags { dad_failed: true, ..PERMANENT }),
        v6(2, "fd18::77", Ipv6AddressFlags { tentative: true, ..PERMANENT }),
        v6(2, "fd18::11", PERMANENT),
        v6(3, "fe80::3", PERMANENT),
        v6(3, "fd19::11", PERMANENT),
        v6(4, "fd20::11", PERMANENT),
        v6(5, "fe80::5", PERMANENT),
    ];
    host.ipv6 = Some(Ipv6View { addresses, default_route: Some(RouteHop { interface: Some(2), source: None }), only: false });
    host
}

/// (interface, IPv4 local, IPv6 local, PublicIPv6) or the error's text.
type Picked6 = Result<(String, Option<Ipv4Addr>, Option<Ipv6Addr>, Option<Ipv6Addr>), String>;

fn pick6(choice: &UnderlayChoice, host: &HostView) -> Picked6 {
    let chosen = choose(choice, host).map_err(|e| e.to_string())?;
    let u = chosen.underlay;
    Ok((u.name, u.ip, u.ipv6, u.public_ipv6))
}

fn ok6(name: &str, local: &str, ipv6: &str, public_ipv6: &str) -> Picked6 {
    Ok((name.to_string(), Some(ip(local)), Some(ipv6.parse().unwrap()), Some(public_ipv6.parse().unwrap())))
}

pub(super) fn with(mut choice: UnderlayChoice, public_ip: Option<&str>, public_ipv6: Option<&str>) -> UnderlayChoice {
    choice.public_ip = public_ip.map(ip);
    choice.public_ipv6 = public_ipv6.map(|a| a.parse().unwrap());
    choice
}

#[test]
fn ipv6_addresses_rank_global_clean_permanent_first_and_never_take_a_failed_one() {
    let addresses = host6().ipv6.unwrap().addresses;
    let ranked: Vec<String> = ipv6::usable_ipv6(&addresses, 2).iter().map(|a| ipv6::Listed(*a).to_string()).collect();
    assert_eq!(ranked, ["fd18::11", "2001:db8::2", "fd18::99(deprecated)", "fd18::77(tentative)"], "link-local never");
    let odd = [
        v6(7, "ff02::1", PERMANENT),
        v6(7, "::ffff:10.0.0.1", PERMANENT),
        v6(7, "fd18::8", Ipv6AddressFlags { temporary: true, ..NONE }),
        v6(7, "fe80::7", NONE),
    ];
    let ranked: Vec<String> = ipv6::usable_ipv6(&odd, 7).iter().map(|a| ipv6::Listed(*a).to_string()).collect();
    assert_eq!(ranked, ["fd18::8(temporary)"]);
}

#[test]
fn ipv6_choices_by_flanneld_rules_and_better() {
    let none = UnderlayChoice::default;
    let mut other_default = host6();
    other_default.ipv6.as_mut().unwrap().default_route = Some(RouteHop { interface: Some(3), source: None });
    let mut no_default = host6();
    no_default.ipv6.as_mut().unwrap().default_route = None;
    let mut can_reach = host6();
    can_reach.can_reach = Some((ip("198.51.100.1"), Ok(RouteHop { interface: Some(3), source: None })));
    let reach = UnderlayChoice { can_reach: Some(ip("198.51.100.1")), ..none() };
    #[rustfmt::skip]
    let cases: Vec<(&str, UnderlayChoice, HostView, Picked6)> = vec![
        ("default routes", none(), host6(), ok6("eth0", "192.168.78.11", "fd18::11", "fd18::11")),
        ("by name", iface(&["eth0"]), host6(), ok6("eth0", "192.168.78.11", "fd18::11", "fd18::11")),
        ("only link-local", iface(&["eth3"]), host6(), Err("--iface=eth3: interface eth3 has no usable IPv6 address".into())),
        ("by IPv6 address", iface(&["fd19::11"]), host6(), ok6("eth1", "172.16.0.11", "fd19::11", "fd19::11")),
        ("exact, even deprecated", iface(&["fd18::99"]), host6(), ok6("eth0", "192.168.78.11", "fd18::99", "fd18::99")),
        ("no IPv4 there: next", iface(&["fd20::11", "eth1"]), host6(), ok6("eth1", "172.16.0.11", "fd19::11", "fd19::11")),
        ("no IPv6 there: next", iface(&["eth2", "eth4", "10.99.0.11"]), host6(), ok6("eth0", "10.99.0.11", "fd18::11", "fd18::11")),
        ("regex, IPv6", regex(&["^fd19:"]), host6(), ok6("eth1", "172.16.0.11", "fd19::11", "fd19::11")),
        ("regex, IPv4", regex(&[r"^10\.99\."]), host6(), ok6("eth0", "10.99.0.11", "fd18::11", "fd18::11")),
        ("regex, both", regex(&[r"^(10\.99\.|2001:)"]), host6(), ok6("eth0", "10.99.0.11", "2001:db8::2", "2001:db8::2")),
        ("regex, name", regex(&["^eth1$"]), host6(), ok6("eth1", "172.16.0.11", "fd19::11", "fd19::11")),
        ("can reach", reach, can_reach, ok6("eth1", "172.16.0.11", "fd19::11", "fd19::11")),
        ("public IPv6 held", with(none(), None, Some("2001:db8::2")), host6(), ok6("eth0", "192.168.78.11", "2001:db8::2", "2001:db8::2")),
        ("public IPv6 alone", with(none(), None, Some("fd19::11")), other_default.clone(), ok6("eth1", "172.16.0.11", "fd19::11", "fd19::11")),
        ("public IPv6, NAT", with(iface(&["eth0"]), None, Some("2001:db8:f::1")), host6(), ok6("eth0", "192.168.78.11", "fd18::11", "2001:db8:f::1")),
        ("public IP", with(none(), Some("172.16.0.11"), None), host6(), ok6("eth1", "172.16.0.11", "fd19::11", "fd19::11")),
        ("public IP and IPv6", with(none(), Some("172.16.0.11"), Some("fd18::11")), host6(), ok6("eth1", "172.16.0.11", "fd19::11", "fd18::11")),
        ("routes differ", none(), other_default, Err("the IPv4 default route leaves by eth0 but the IPv6 default route by eth1: both families must use one underlay interface".into())),
        ("no IPv6 default", none(), no_default, Err("the network config enables IPv6, and there is no IPv6 default route to take its underlay address from (the IPv4 default route leaves by eth0;".into())),
        ("public IPv6 not held", with(none(), None, Some("fd18::5")), host6(), Err("--public-ipv6=fd18::5: no interface has this address".into())),
        ("no such IPv6", iface(&["fd18::5"]), host6(), Err("--iface=fd18::5: no interface has the IPv6 address fd18::5".into())),
        ("IPv4 missing", iface(&["fd20::11"]), host6(), Err("--iface=fd20::11: interface eth2 has no usable IPv4 address".into())),
        ("IPv6 missing", iface(&["eth4"]), host6(), Err("--iface=eth4: interface eth4 has no usable IPv6 address".into())),
        ("regex, nothing", regex(&["^fd99:"]), host6(), Err("--iface-regex=^fd99:: matches no interface's IPv4 or IPv6 address or name".into())),
    ];
    check(cases, pick6);
}

/// Runs each case through `pick`: an error must contain the expected text, anything else equal it.
pub(super) fn check<T: PartialEq + std::fmt::Debug>(
    cases: Vec<(&str, UnderlayChoice, HostView, Result<T, String>)>,
    pick: impl Fn(&UnderlayChoice, &HostView) -> Result<T, String>,
) {
    for (case, choice, host, expected) in cases {
        match (pick(&choice, &host), expected) {
            (Err(error), Err(expected)) => assert!(error.contains(&expected), "{case}: {error}"),
            (got, expected) => assert_eq!(got, expected, "{case}"),
        }
    }
}

#[test]
fn an_ipv4_only_config_never_looks_at_ipv6() {
    // No IPv6 view: an IPv6 --iface is a miss that says why, --public-ipv6 is not advertised,
    // and nothing needs an IPv6 address or default route.
    let error = pick6(&iface(&["fd18::11"]), &host()).unwrap_err();
    assert!(error.contains("--iface=fd18::11: an IPv6 address, and the network config does not enable IPv6"), "{error}");
    let choice = with(UnderlayChoice::default(), None, Some("fd18::11"));
    assert_eq!(pick6(&choice, &host()), Ok(("eth0".into(), Some(ip("192.168.78.11")), None, None)));
}

#[test]
fn errors_list_every_interfaces_ipv6_addresses_after_its_ipv4_ones() {
    let error = pick6(&iface(&["nope0"]), &host6()).unwrap_err();
    assert!(
        error.contains(
            "available interfaces: lo:[], eth0:[192.168.78.11 10.99.0.11 fd18::11 2001:db8::2 fd18::99(deprecated) \
             fd18::77(tentative) fe80::2], eth1:[172.16.0.11 172.16.1.11 169.254.3.3 fd19::11 fe80::3], eth2:[fd20::11], \
             eth3:[172.17.0.11 fe80::5], eth4:[172.18.0.11];"
        ),
        "{error}"
    );
}

#[test]
fn a_kept_interface_keeps_its_ipv6_address_while_it_holds_it() {
    let addresses = host6().ipv6.unwrap().addresses;
    let held = "2001:db8::2".parse().unwrap();
    let underlay = Underlay { index: 2, ipv6: Some(held), public_ipv6: Some(held), ..Underlay::example() };
    assert_eq!(ipv6::kept_ipv6(&underlay, &addresses), Some((held, held)));
    let gone = "2001:db8::3".parse().unwrap();
    let best = "fd18::11".parse().unwrap();
    let nat = "2001:db8:f::1".parse().unwrap();
    let moved = Underlay { ipv6: Some(gone), public_ipv6: Some(gone), ..underlay.clone() };
    assert_eq!(ipv6::kept_ipv6(&moved, &addresses), Some((best, best)), "the public address follows");
    let apart = Underlay { ipv6: Some(gone), public_ipv6: Some(nat), ..underlay.clone() };
    assert_eq!(ipv6::kept_ipv6(&apart, &addresses), Some((best, nat)), "--public-ipv6 stays");
    assert_eq!(ipv6::kept_ipv6(&Underlay { index: 9, ..underlay }, &addresses), None);
}

#[test]
fn only_flags_that_ipv6_addresses_could_satisfy_wait_for_the_config() {
    assert!(!iface(&["eth0", "10.0.0.1", "::ffff:10.0.0.1"]).may_need_ipv6());
    assert!(!UnderlayChoice { public_ip: Some(ip("10.0.0.1")), ..UnderlayChoice::default() }.may_need_ipv6());
    assert!(iface(&["eth0", "fd18::11"]).may_need_ipv6());
    assert!(regex(&["^eth"]).may_need_ipv6());
    assert!(with(UnderlayChoice::default(), None, Some("fd18::11")).may_need_ipv6());
}
