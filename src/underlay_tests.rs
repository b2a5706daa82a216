//! Unit tests of the underlay choice: flanneld's rules, one case each.

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn link(index: u32, name: &str, addresses: &[&str]) -> Ipv4Link {
    Ipv4Link { name: name.to_string(), index, mtu: 1500, addresses: addresses.iter().map(|a| ip(a)).collect() }
}

/// lo, eth0 with two addresses (as in issue 12), eth1 with a link-local one first.
fn host() -> HostView {
    HostView {
        links: vec![
            link(1, "lo", &["127.0.0.1"]),
            link(2, "eth0", &["192.168.78.11", "10.99.0.11"]),
            link(3, "eth1", &["169.254.3.3", "172.16.0.11", "172.16.1.11"]),
            link(4, "eth2", &[]),
        ],
        can_reach: None,
        default_route: Some(RouteHop { interface: Some(2), source: None }),
    }
}

fn iface(values: &[&str]) -> UnderlayChoice {
    UnderlayChoice { ifaces: values.iter().map(|v| v.to_string()).collect(), ..UnderlayChoice::default() }
}

fn regex(patterns: &[&str]) -> UnderlayChoice {
    UnderlayChoice { iface_regex: patterns.iter().map(|p| regex::Regex::new(p).unwrap()).collect(), ..UnderlayChoice::default() }
}

/// (interface, local address, PublicIP) or the error's text.
fn pick(choice: &UnderlayChoice, host: &HostView) -> Result<(String, Ipv4Addr, Ipv4Addr), String> {
    choose(choice, host).map(|c| (c.underlay.name, c.underlay.ip, c.underlay.public_ip)).map_err(|e| e.to_string())
}

fn ok(name: &str, local: &str, public: &str) -> Result<(String, Ipv4Addr, Ipv4Addr), String> {
    Ok((name.to_string(), ip(local), ip(public)))
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
    assert_eq!((chosen.underlay.name.as_str(), chosen.underlay.ip), ("eth1", ip("172.16.0.11")));
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
