//! Unit tests of the IPv6-only underlay choice: each rule of the `ipv6_only` module doc, on the
//! dual-stack tests' host with its IPv4 side made misleading, so that looking at it would show.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netlink::{Ipv6AddressFlags, RouteHop};
use crate::underlay::lookup::kept;
use crate::underlay::tests::{host6, iface, ip, regex, v6, with, PERMANENT};
use crate::underlay::{choose, HostView, Miss, Underlay, UnderlayChoice};

/// The dual-stack tests' host (eth0: fd18::11 best, 2001:db8::2, fd18::99 deprecated…; eth1:
/// fd19::11; eth2: fd20::11 and no IPv4; eth3: link-local only; eth4: no IPv6) read for an
/// IPv6-only config: the IPv6 default route by eth0, the IPv4 one by eth1 (never looked at), and
/// an `ip route get` answer by eth1 that must not be followed.
fn host() -> HostView {
    let mut host = host6();
    host.ipv6.as_mut().unwrap().only = true;
    host.default_route = Some(RouteHop { interface: Some(3), source: None });
    host.can_reach = Some((ip("198.51.100.1"), Ok(RouteHop { interface: Some(3), source: Some(ip("172.16.1.11")) })));
    host
}

/// (interface, IPv4 local, PublicIP, IPv6 local, PublicIPv6) or the error's text.
type Picked = Result<(String, Option<Ipv4Addr>, Option<Ipv4Addr>, Ipv6Addr, Ipv6Addr), String>;

fn pick(choice: &UnderlayChoice, host: &HostView) -> Picked {
    let u = choose(choice, host).map_err(|e| e.to_string())?.underlay;
    Ok((u.name, u.ip, u.public_ip, u.ipv6.unwrap(), u.public_ipv6.unwrap()))
}

/// Chosen with no IPv4 side at all.
fn ok(name: &str, ipv6: &str, public_ipv6: &str) -> Picked {
    Ok((name.to_string(), None, None, ipv6.parse().unwrap(), public_ipv6.parse().unwrap()))
}

fn check(cases: Vec<(&str, UnderlayChoice, HostView, Picked)>) {
    super::super::tests::check(cases, pick);
}

#[test]
fn iface_takes_ipv6_addresses_and_names_and_refuses_ipv4_addresses() {
    #[rustfmt::skip]
    check(vec![
        ("by name", iface(&["eth0"]), host(), ok("eth0", "fd18::11", "fd18::11")),
        ("by IPv6 address", iface(&["fd19::11"]), host(), ok("eth1", "fd19::11", "fd19::11")),
        ("exact, even deprecated", iface(&["fd18::99"]), host(), ok("eth0", "fd18::99", "fd18::99")),
        ("no IPv4 needed", iface(&["fd20::11"]), host(), ok("eth2", "fd20::11", "fd20::11")),
        ("no IPv4 needed, by name", iface(&["eth2"]), host(), ok("eth2", "fd20::11", "fd20::11")),
        ("IPv4 address", iface(&["10.99.0.11"]), host(), Err("--iface=10.99.0.11: an IPv4 address, and the network config is IPv6 only (EnableIPv4 is false); give one of the interface's IPv6 addresses or its name".into())),
        ("IPv4-mapped", iface(&["::ffff:10.99.0.11"]), host(), Err("--iface=::ffff:10.99.0.11: an IPv4 address, and the network config is IPv6 only".into())),
        ("only link-local", iface(&["eth3"]), host(), Err("--iface=eth3: interface eth3 has no usable IPv6 address".into())),
        ("no such IPv6", iface(&["fd18::5"]), host(), Err("--iface=fd18::5: no interface has the IPv6 address fd18::5".into())),
        ("no such name", iface(&["nope0"]), host(), Err("--iface=nope0: no interface is named \"nope0\"".into())),
    ]);
}

#[test]
fn iface_misses_are_skipped_in_order() {
    let chosen = choose(&iface(&["10.99.0.11", "eth3", "eth4", "eth1"]), &host()).unwrap();
    assert_eq!((chosen.underlay.name.as_str(), chosen.underlay.ipv6), ("eth1", Some("fd19::11".parse().unwrap())));
    let skipped: Vec<String> = chosen.skipped.iter().map(Miss::to_string).collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(skipped[0].starts_with("--iface=10.99.0.11: an IPv4 address"), "{skipped:?}");
    assert!(skipped[1].starts_with("--iface=eth3: interface eth3 has no usable IPv6 address"), "{skipped:?}");
    assert!(skipped[2].starts_with("--iface=eth4: interface eth4 has no usable IPv6 address"), "{skipped:?}");
}

#[test]
fn iface_regex_matches_ipv6_addresses_then_names_never_ipv4_addresses() {
    #[rustfmt::skip]
    check(vec![
        ("IPv6 address", regex(&["^fd19:"]), host(), ok("eth1", "fd19::11", "fd19::11")),
        ("best match on the interface", regex(&["^(2001|fd18):"]), host(), ok("eth0", "fd18::11", "fd18::11")),
        ("one address", regex(&["^2001:"]), host(), ok("eth0", "2001:db8::2", "2001:db8::2")),
        ("name", regex(&["^eth2$"]), host(), ok("eth2", "fd20::11", "fd20::11")),
        ("first name is final", regex(&["^eth[34]$"]), host(), Err("--iface-regex=^eth[34]$: interface eth3 has no usable IPv6 address".into())),
        ("IPv4 address", regex(&[r"^10\.99\."]), host(), Err(r"--iface-regex=^10\.99\.: matches no interface's IPv6 address or name".into())),
        ("link-local", regex(&["^fe80:"]), host(), Err("--iface-regex=^fe80:: matches no interface's IPv6 address or name".into())),
    ]);
}

#[test]
fn can_reach_takes_an_ipv4_destination_and_says_it_cannot_be_followed() {
    let mut choice = iface(&["nope0"]);
    choice.can_reach = Some(ip("198.51.100.1"));
    let error = pick(&choice, &host()).unwrap_err();
    assert_eq!(
        error,
        "no interface matches --iface/--iface-regex/--iface-can-reach (--iface=nope0: no interface is named \"nope0\"; \
         --iface-can-reach=198.51.100.1: an IPv4 destination needs an IPv4 route, and the network config is IPv6 only \
         (EnableIPv4 is false); choose the interface with --iface=<name or IPv6 address> or --iface-regex); available \
         interfaces: lo:[], eth0:[fd18::11 2001:db8::2 fd18::99(deprecated) fd18::77(tentative) fe80::2], \
         eth1:[fd19::11 fe80::3], eth2:[fd20::11], eth3:[fe80::5], eth4:[]; give an interface name or one of its IPv6 \
         addresses with --iface, or a pattern for either with --iface-regex"
    );
    // A flag before it that matches wins, as for IPv4.
    choice.iface_regex = regex(&["^fd20:"]).iface_regex;
    assert_eq!(pick(&choice, &host()), ok("eth2", "fd20::11", "fd20::11"));
}

#[test]
fn without_interface_flags_public_ipv6_or_the_ipv6_default_route_decides() {
    let none = UnderlayChoice::default;
    let mut no_default = host();
    no_default.ipv6.as_mut().unwrap().default_route = None;
    let mut multipath = host();
    multipath.ipv6.as_mut().unwrap().default_route = Some(RouteHop { interface: None, source: None });
    let mut by_eth2 = host();
    by_eth2.ipv6.as_mut().unwrap().default_route = Some(RouteHop { interface: Some(4), source: None });
    #[rustfmt::skip]
    check(vec![
        ("IPv6 default route", none(), host(), ok("eth0", "fd18::11", "fd18::11")),
        ("by an interface without IPv4", none(), by_eth2, ok("eth2", "fd20::11", "fd20::11")),
        ("public IPv6 held", with(none(), None, Some("fd19::11")), host(), ok("eth1", "fd19::11", "fd19::11")),
        ("public IPv6 held, default route gone", with(none(), None, Some("fd19::11")), no_default.clone(), ok("eth1", "fd19::11", "fd19::11")),
        ("public IP ignored", with(none(), Some("172.16.0.11"), None), host(), ok("eth0", "fd18::11", "fd18::11")),
        ("public IP held nowhere, ignored", with(none(), Some("203.0.113.7"), None), host(), ok("eth0", "fd18::11", "fd18::11")),
        ("public IPv6 not held", with(none(), None, Some("fd18::5")), host(), Err("--public-ipv6=fd18::5: no interface has this address".into())),
        ("no route", none(), no_default, Err("there is no IPv6 default route to take the underlay from, and the network config is IPv6 only (EnableIPv4 is false) (available interfaces: lo:[], eth0:[fd18::11 ".into())),
        ("no route: what to do", none(), host_without_default(), Err("; choose one with --iface=<name or IPv6 address> or --iface-regex, or add an IPv6 default route".into())),
        ("multipath", none(), multipath, Err("the IPv6 default route: the route has no single output interface".into())),
    ]);
}

fn host_without_default() -> HostView {
    let mut host = host();
    host.ipv6.as_mut().unwrap().default_route = None;
    host
}

#[test]
fn public_ipv6_is_advertised_and_preferred_on_the_chosen_interface() {
    #[rustfmt::skip]
    check(vec![
        ("NAT", with(iface(&["eth0"]), None, Some("2001:db8:f::1")), host(), ok("eth0", "fd18::11", "2001:db8:f::1")),
        ("held by it", with(iface(&["eth0"]), None, Some("2001:db8::2")), host(), ok("eth0", "2001:db8::2", "2001:db8::2")),
        ("public IP with a flag, ignored", with(iface(&["eth1"]), Some("203.0.113.7"), None), host(), ok("eth1", "fd19::11", "fd19::11")),
    ]);
}

#[test]
fn an_interface_with_mtu_zero_is_skipped() {
    let mut host = host();
    host.links[1].mtu = 0;
    let error = pick(&iface(&["fd18::11"]), &host).unwrap_err();
    assert!(error.contains("--iface=fd18::11: interface eth0 reports an MTU of 0"), "{error}");
    let error = pick(&UnderlayChoice::default(), &host).unwrap_err();
    assert!(error.contains("the IPv6 default route: interface eth0 reports an MTU of 0"), "{error}");
}

#[test]
fn the_interface_in_use_is_kept_by_its_ipv6_address_alone() {
    let host = host();
    let (eth0, addresses) = (&host.links[1], &host.ipv6.as_ref().unwrap().addresses);
    let addr = |s: &str| Some(s.parse::<Ipv6Addr>().unwrap());
    let only = Underlay {
        index: 2,
        ip: None,
        public_ip: None,
        ipv6: addr("2001:db8::2"),
        public_ipv6: addr("2001:db8::2"),
        ..Underlay::example()
    };
    let held = kept(&only, eth0, addresses).unwrap();
    assert_eq!((held.name.as_str(), held.ip, held.public_ip, held.ipv6), ("eth0", None, None, addr("2001:db8::2")));
    let moved = Underlay { ipv6: addr("fd18::3"), public_ipv6: addr("fd18::3"), ..only.clone() };
    assert_eq!(kept(&moved, eth0, addresses).map(|u| (u.ipv6, u.public_ipv6)), Some((addr("fd18::11"), addr("fd18::11"))));
    // Without a usable IPv6 address an IPv6-only underlay has nothing left; a dual-stack one
    // keeps advertising its last IPv6 address while IPv4 carries on.
    let link_local = [v6(2, "fe80::2", PERMANENT), v6(2, "fd18::66", Ipv6AddressFlags { dad_failed: true, ..PERMANENT })];
    assert_eq!(kept(&only, eth0, &link_local), None);
    let dual = Underlay { index: 2, ipv6: addr("2001:db8::2"), public_ipv6: addr("2001:db8::2"), ..Underlay::example() };
    let dual_eth0 = crate::underlay::tests::link(2, "eth0", &["198.18.0.11"]);
    assert_eq!(kept(&dual, &dual_eth0, &link_local).map(|u| u.ipv6), Some(addr("2001:db8::2")));
}
