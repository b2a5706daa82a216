//! The underlay of an IPv6-only network config (`"EnableIPv4": false`): IPv6 addresses and the
//! IPv6 default route alone choose it, so a host without any IPv4 can run.
//!
//! flanneld v0.20.2 (`pkg/ipmatch` `LookupExtIface` with its IPv6 stack), as weft reads it,
//! ranked as the dual-stack IPv6 side is (the `ipv6` submodule):
//! - an IPv6 `--iface` address selects the interface that holds it and that very address; a
//!   name selects that interface and its best usable IPv6 address; an IPv4 address is a miss
//!   (flanneld would look it up among IPv6 addresses and never find it);
//! - `--iface-regex`: the best usable IPv6 address, interface by interface, that the pattern
//!   matches; if none does, the first interface whose name it matches;
//! - `--iface-can-reach` takes an IPv4 destination, whose route an IPv6-only underlay must not
//!   depend on: a miss that says so;
//! - with none of those flags: `--public-ipv6` selects the interface that holds it, else the
//!   IPv6 default route's interface gives its best usable address; `--public-ip` does not count
//!   (the daemon warns that it is ignored);
//! - the lease's PublicIPv6 is `--public-ipv6` when given, else the chosen address.

use std::net::{IpAddr, Ipv6Addr};

use super::ipv6::{ipv6_holder, pattern_ipv6, with_ipv6};
use super::{route_link, with_mtu, Available, Found, HostView, Ipv6View, Miss, UnderlayChoice, UnderlayError};
use crate::netlink::Ipv4Link;

/// One `--iface`: an IPv6 address selects itself on whichever interface holds it; an IPv4 one
/// is a miss; anything else is an interface name.
pub(super) fn by_iface<'a>(value: &str, choice: &UnderlayChoice, host: &'a HostView) -> Result<Found<'a>, Miss> {
    let via = format!("--iface={value}");
    match value.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(_)) => Err(Miss::Ipv4AddressIpv6Only { value: value.to_string() }),
        Ok(IpAddr::V6(ip)) => {
            let link = held_by(host, ip).ok_or_else(|| Miss::NoSuchIpv6Address { value: value.to_string() })?;
            exactly(link, ip, &via)
        }
        Err(_) => {
            let link = host.links.iter().find(|l| l.name == value);
            let link = link.ok_or_else(|| Miss::NoSuchName { value: value.to_string() })?;
            best(link, choice, host, &via)
        }
    }
}

/// One `--iface-regex`: IPv6 addresses across every interface, then names. Like flanneld, the
/// first interface whose name matches is final even when it has no usable IPv6 address.
pub(super) fn by_pattern<'a>(pattern: &regex::Regex, choice: &UnderlayChoice, host: &'a HostView) -> Result<Found<'a>, Miss> {
    let via = format!("--iface-regex={}", pattern.as_str());
    if let Some((link, ip)) = host.ipv6.as_ref().and_then(|v6| pattern_ipv6(pattern, &host.links, v6)) {
        return exactly(link, ip, &via);
    }
    match host.links.iter().find(|l| pattern.is_match(&l.name)) {
        Some(link) => best(link, choice, host, &via),
        None => Err(Miss::NoPatternMatch { pattern: pattern.as_str().to_string(), families: "IPv6" }),
    }
}

/// No interface flag: the interface holding `--public-ipv6`, else the IPv6 default route's.
pub(super) fn by_default<'a>(choice: &UnderlayChoice, host: &'a HostView, v6: &Ipv6View) -> Result<Found<'a>, UnderlayError> {
    let available = || Available::of(host);
    let unusable = |miss| UnderlayError::Unusable { miss, available: available() };
    if let Some(public_ipv6) = choice.public_ipv6 {
        let link = held_by(host, public_ipv6)
            .ok_or_else(|| UnderlayError::PublicIpv6NotLocal { public_ipv6, available: available() })?;
        return exactly(link, public_ipv6, &format!("--public-ipv6={public_ipv6}")).map_err(unusable);
    }
    let hop = v6.default_route.ok_or_else(|| UnderlayError::NoIpv6OnlyDefaultRoute { available: available() })?;
    let via = "the IPv6 default route";
    route_link(&hop, &host.links, via).and_then(|link| best(link, choice, host, via)).map_err(unusable)
}

/// The interface holding `ip` among any of its IPv6 addresses.
fn held_by(host: &HostView, ip: Ipv6Addr) -> Option<&Ipv4Link> {
    host.ipv6.as_ref().and_then(|v6| ipv6_holder(&host.links, v6, ip))
}

/// `link` with `ip` as its local IPv6 address, as a flag named it.
fn exactly<'a>(link: &'a Ipv4Link, ip: Ipv6Addr, via: &str) -> Result<Found<'a>, Miss> {
    with_mtu(link, None, via).map(|found| Found { ipv6: Some(ip), ..found })
}

/// `link` with its best usable IPv6 address (`--public-ipv6` when it holds it); a miss without
/// one. `host` has its IPv6 view (the config is IPv6 only).
fn best<'a>(link: &'a Ipv4Link, choice: &UnderlayChoice, host: &HostView, via: &str) -> Result<Found<'a>, Miss> {
    with_mtu(link, None, via).and_then(|found| with_ipv6(found, choice, host, via))
}

#[cfg(test)]
#[path = "ipv6_only_tests.rs"]
mod tests;
